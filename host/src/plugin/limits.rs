//! What one plugin instance may use. A plugin can slow its own shard down,
//! never the host or other shards.

use std::time::Duration;

/// Resource caps applied to every instance (one per shard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginLimits {
    /// Linear memory an instance may grow to, all its memories together;
    /// growing past it traps.
    pub memory_bytes: usize,
    /// Wall time one export call may run before it is interrupted.
    pub call_timeout: Duration,
    /// Bytes of output (keys + data) one call may emit.
    pub max_output_bytes: usize,
    /// Output records one call may emit.
    pub max_output_records: usize,
    /// Log lines one call may write; more are counted and dropped, and the
    /// call traps when it logs ten times the budget (a log loop).
    pub max_log_lines: u32,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            memory_bytes: 256 << 20,
            call_timeout: Duration::from_secs(10),
            max_output_bytes: 64 << 20,
            max_output_records: 1_000_000,
            max_log_lines: 1_000,
        }
    }
}
