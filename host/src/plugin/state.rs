//! Per-instance store data: the WASI sandbox, resource limits, and the host
//! side of `kinesis:processor/host` (output, logs, clock).

use super::bindings::{v1, v2, LogLevel, OutputBatch};
use super::error::BudgetExceeded;
use super::limits::PluginLimits;
use super::output::PluginOutput;
use super::stdio::PluginStdio;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The time source behind the `now-millis` import.
#[derive(Debug, Clone)]
pub enum Clock {
    /// Wall-clock time.
    System,
    /// A clock the caller sets, e.g. `host test` replaying recorded arrival times.
    Manual(Arc<AtomicI64>),
}

impl Clock {
    /// A manual clock starting at `millis`, plus the handle that moves it.
    pub fn manual(millis: i64) -> (Clock, Arc<AtomicI64>) {
        let handle = Arc::new(AtomicI64::new(millis));
        (Clock::Manual(handle.clone()), handle)
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_millis(&self) -> i64 {
        match self {
            Clock::System => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            Clock::Manual(millis) => millis.load(Ordering::Relaxed),
        }
    }
}

/// Data of one instance's `Store`.
pub struct HostState {
    /// Sandboxed WASI: no files, env, args, network or inherited stdio.
    wasi: WasiCtx,
    /// WASI resources (streams) owned by the instance.
    table: ResourceTable,
    /// Memory cap, checked by wasmtime on every `memory.grow`.
    pub(crate) memory: MemoryCap,
    /// Output of the call in progress; released only if the call succeeds.
    pub(crate) output: PluginOutput,
    /// Budgets per call.
    limits: PluginLimits,
    /// Log lines written by the call in progress.
    log_lines: u32,
    /// Log lines dropped over budget during the call in progress.
    pub(crate) logs_dropped: u32,
    /// Source of `now-millis`.
    clock: Clock,
    /// `plugin@shard`, attributed to every log line.
    label: Arc<str>,
    /// The plugin's stderr: forwarded to the log, its tail kept for error
    /// lines (panic messages and tracebacks land here).
    pub(crate) stderr: PluginStdio,
    /// When the call in progress must end: waits inside it stop here
    /// (`deadline.rs`), as the epoch stops running code.
    call_deadline: Option<std::time::Instant>,
}

impl HostState {
    /// Fresh state for one instance.
    pub fn new(limits: &PluginLimits, clock: Clock, label: Arc<str>) -> Self {
        let stderr = PluginStdio::new("stderr", label.clone());
        let mut wasi = WasiCtx::builder();
        wasi.stdout(PluginStdio::new("stdout", label.clone()))
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        HostState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            memory: MemoryCap::new(limits.memory_bytes),
            output: PluginOutput::default(),
            limits: limits.clone(),
            log_lines: 0,
            logs_dropped: 0,
            clock,
            label,
            stderr,
            call_deadline: None,
        }
    }

    /// The WASI resource table and the deadline of the call in progress.
    pub(crate) fn table_and_deadline(&mut self) -> (&mut ResourceTable, Option<std::time::Instant>) {
        (&mut self.table, self.call_deadline)
    }

    /// Resets per-call budgets; called before every export call.
    pub(crate) fn begin_call(&mut self) {
        self.call_deadline = std::time::Instant::now().checked_add(self.limits.call_timeout);
        self.output.clear();
        self.log_lines = 0;
        self.logs_dropped = 0;
    }

    /// Checks the budget for `records` more records of `bytes` more bytes,
    /// before the host copies or reserves anything for them.
    fn check_output_budget(&self, records: usize, bytes: usize) -> wasmtime::Result<()> {
        let records = self.output.len().saturating_add(records);
        let bytes = self.output.byte_len().saturating_add(bytes);
        if records > self.limits.max_output_records || bytes > self.limits.max_output_bytes {
            return Err(wasmtime::Error::new(BudgetExceeded::Output {
                max_records: self.limits.max_output_records,
                max_bytes: self.limits.max_output_bytes,
            }));
        }
        Ok(())
    }
}

/// The budget of one instance (all its core instances together): linear
/// memory summed over every memory it has, and counts of instances,
/// memories and tables, and table elements. Growing past it traps with a
/// typed error (rather than `memory.grow` returning -1, which Rust turns
/// into an abort that says nothing about why); instantiating past a count
/// fails the instantiation.
#[derive(Debug, Clone)]
pub struct MemoryCap {
    /// Most bytes of linear memory, all memories together.
    max_bytes: usize,
    /// Bytes reserved so far, all memories together.
    used_bytes: usize,
    /// What the last granted growth added, given back if it then failed.
    last_growth: usize,
}

impl MemoryCap {
    pub(crate) fn new(max_bytes: usize) -> Self {
        MemoryCap { max_bytes, used_bytes: 0, last_growth: 0 }
    }
}

/// Core instances one component may make. The Python and JavaScript
/// components have under 40; wasmtime's default is 10,000.
pub const MAX_CORE_INSTANCES: usize = 200;
/// Linear memories (each reserves address space; wasmtime's default
/// allows 10,000). A Python component has a handful.
pub const MAX_MEMORIES: usize = 16;
/// Tables (wasmtime's default: 10,000).
pub const MAX_TABLES: usize = 64;
/// Elements of any one table: function references; a million is far
/// beyond any real processor and bounds host memory.
pub const MAX_TABLE_ELEMENTS: usize = 1_000_000;

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current);
        let total = self.used_bytes.saturating_add(growth);
        if total > self.max_bytes {
            return Err(wasmtime::Error::new(BudgetExceeded::Memory { max_bytes: self.max_bytes }));
        }
        self.used_bytes = total;
        self.last_growth = growth;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.used_bytes = self.used_bytes.saturating_sub(std::mem::take(&mut self.last_growth));
        Ok(())
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        MAX_CORE_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl HostState {
    fn emit(&mut self, key: String, data: Vec<u8>) -> wasmtime::Result<()> {
        self.check_output_budget(1, key.len().saturating_add(data.len()))?;
        self.output.push(&key, &data);
        Ok(())
    }

    fn emit_batch(&mut self, batch: OutputBatch) -> wasmtime::Result<()> {
        // Checked first: the index says how many entries the host reserves.
        let records = batch.index.len() / kinesis_processor_sdk::wire::OutputEntry::ENCODED_LEN;
        self.check_output_budget(records, batch.payload.len())?;
        if !self.output.extend_packed(&batch.payload, &batch.index) {
            return Err(wasmtime::Error::new(BudgetExceeded::MalformedOutput));
        }
        Ok(())
    }

    fn log(&mut self, level: LogLevel, message: String) -> wasmtime::Result<()> {
        self.log_lines += 1;
        if self.log_lines > self.limits.max_log_lines {
            self.logs_dropped += 1;
            // A plugin that keeps logging far past its budget is looping.
            if self.log_lines > self.limits.max_log_lines.saturating_mul(10) {
                return Err(wasmtime::Error::new(BudgetExceeded::Logs(self.limits.max_log_lines)));
            }
            return Ok(());
        }
        let plugin = &*self.label;
        let message = super::text::from_plugin(&message, super::text::MAX_MESSAGE);
        match level {
            LogLevel::Trace => tracing::trace!(target: "plugin", plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(target: "plugin", plugin, "{message}"),
            LogLevel::Info => tracing::info!(target: "plugin", plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(target: "plugin", plugin, "{message}"),
            LogLevel::Error => tracing::error!(target: "plugin", plugin, "{message}"),
        }
        Ok(())
    }
}

/// The `host` interface of one package version: both versions' functions
/// are the same (on shared types), so both delegate to `HostState`'s.
macro_rules! host_interface {
    ($host:path) => {
        impl $host for HostState {
            fn emit(&mut self, key: String, data: Vec<u8>) -> wasmtime::Result<()> {
                HostState::emit(self, key, data)
            }

            fn emit_batch(&mut self, batch: OutputBatch) -> wasmtime::Result<()> {
                HostState::emit_batch(self, batch)
            }

            fn log(&mut self, level: LogLevel, message: String) -> wasmtime::Result<()> {
                HostState::log(self, level, message)
            }

            fn now_millis(&mut self) -> wasmtime::Result<i64> {
                Ok(self.clock.now_millis())
            }
        }
    };
}

impl v2::kinesis::processor::types::Host for HostState {}
host_interface!(v2::kinesis::processor::host::Host);
host_interface!(v1::kinesis::processor::host::Host);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_past_the_budget_is_refused_before_the_host_copies_it() {
        let limits = PluginLimits { max_output_records: 10, max_output_bytes: 100, ..PluginLimits::default() };
        let mut state = HostState::new(&limits, Clock::System, "t".into());
        let entry = |bytes: &mut Vec<u8>| {
            kinesis_processor_sdk::wire::OutputEntry { key_offset: 0, key_len: 1, data_offset: 1, data_len: 1 }
                .encode(bytes)
        };
        let mut index = Vec::new();
        for _ in 0..100_000 {
            entry(&mut index);
        }
        let refused = state.emit_batch(OutputBatch { payload: b"kd".to_vec(), index });
        assert!(refused.is_err_and(|e| e.downcast_ref::<BudgetExceeded>().is_some()));
        assert!(state.output.is_empty(), "nothing of it was taken in");
        let refused = state.emit_batch(OutputBatch { payload: vec![0; 101], index: Vec::new() });
        assert!(refused.is_err());
        assert!(state.emit("k".into(), vec![0; 101]).is_err());
        assert!(state.output.is_empty());
        let mut index = Vec::new();
        entry(&mut index);
        assert!(state.emit_batch(OutputBatch { payload: b"kd".to_vec(), index }).is_ok());
        assert_eq!(state.output.len(), 1);
        let limits = PluginLimits { memory_bytes: 10 << 16, ..PluginLimits::default() };
        let mut cap = HostState::new(&limits, Clock::System, "t".into()).memory;
        assert!(cap.memory_growing(0, 6 << 16, None).is_ok_and(|granted| granted));
        cap.memory_grow_failed(wasmtime::Error::msg("mmap failed")).expect("given back");
        assert!(cap.memory_growing(0, 6 << 16, None).is_ok_and(|granted| granted), "a failed growth is given back");
        assert!(cap.memory_growing(0, 5 << 16, None).is_err(), "two memories together past the budget");
        assert!(cap.memory_growing(0, 4 << 16, None).is_ok_and(|granted| granted));
        assert!(cap.memory_growing(6 << 16, 7 << 16, None).is_err(), "the budget is spent");
    }
}
