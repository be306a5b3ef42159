//! The shared wasmtime engine: compilation settings, the linker with the
//! host's imports, and the epoch ticker that enforces call timeouts.

use super::bindings::{v1, v2};
use super::error::PluginError;
use super::state::HostState;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine};

/// How often the epoch advances; call timeouts are rounded up to it.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// One per process: compiled code, the linker and the ticker are shared by
/// every plugin and instance.
#[derive(Clone)]
pub struct PluginEngine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    engine: Engine,
    /// Host imports (WASI, sandboxed, plus `kinesis:processor/host`), built once.
    linker: Linker<HostState>,
    /// Advances the epoch so running calls can be interrupted at their
    /// deadline; held for its `Drop`, which stops the thread.
    _ticker: EpochTicker,
}

impl PluginEngine {
    /// Builds the engine and starts its ticker thread.
    pub fn new() -> Result<Self, PluginError> {
        Self::build().map_err(|e| PluginError::Engine(format!("{e:#}")))
    }

    fn build() -> wasmtime::Result<Self> {
        let mut config = Config::new();
        // Deadlines by epoch: a loop-header check, far cheaper than fuel.
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        super::deadline::bound_waits(&mut linker)?;
        // Both package versions' imports: a component built for either links.
        v2::ProcessorWorld::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)?;
        v1::ProcessorWorld::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)?;
        let ticker = EpochTicker::start(engine.clone())
            .map_err(|e| wasmtime::format_err!("cannot start the epoch ticker thread: {e}"))?;
        Ok(PluginEngine { inner: Arc::new(EngineInner { engine, linker, _ticker: ticker }) })
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The linker with every import a processor may use.
    pub fn linker(&self) -> &Linker<HostState> {
        &self.inner.linker
    }

    /// Epoch ticks covering `timeout` (at least one).
    pub fn deadline_ticks(&self, timeout: Duration) -> u64 {
        (timeout.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64).max(1)
    }
}

/// A thread that increments the engine's epoch every [`EPOCH_TICK`]; stopped
/// and joined when the engine is dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new().name("wasm-epoch".into()).spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })?;
        Ok(EpochTicker { stop, thread: Some(thread) })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
