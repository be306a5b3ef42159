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
            memory: MemoryCap { max_bytes: limits.memory_bytes },
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

    fn check_output_budget(&self) -> wasmtime::Result<()> {
        if self.output.len() > self.limits.max_output_records || self.output.byte_len() > self.limits.max_output_bytes {
            return Err(wasmtime::Error::new(BudgetExceeded::Output {
                max_records: self.limits.max_output_records,
                max_bytes: self.limits.max_output_bytes,
            }));
        }
        Ok(())
    }
}

/// Caps linear memory; growing past the cap traps with a typed error
/// (rather than `memory.grow` returning -1, which Rust turns into an abort
/// that says nothing about why).
#[derive(Debug, Clone)]
pub struct MemoryCap {
    /// Most bytes one linear memory may have.
    max_bytes: usize,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            return Err(wasmtime::Error::new(BudgetExceeded::Memory { max_bytes: self.max_bytes }));
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        // Tables hold function references; a million entries is far beyond
        // any real processor and bounds host memory.
        Ok(desired <= 1_000_000)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl HostState {
    fn emit(&mut self, key: String, data: Vec<u8>) -> wasmtime::Result<()> {
        self.output.push(&key, &data);
        self.check_output_budget()
    }

    fn emit_batch(&mut self, batch: OutputBatch) -> wasmtime::Result<()> {
        if !self.output.extend_packed(&batch.payload, &batch.index) {
            return Err(wasmtime::Error::new(BudgetExceeded::MalformedOutput));
        }
        self.check_output_budget()
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
