//! One running processor: a store, its instance and the calls into it.
//!
//! Each call, and instantiation itself, runs under the memory budget and a
//! deadline. If a call traps, the
//! instance is thrown away (a trapped instance may hold half-updated state)
//! and a fresh one is started from the last checkpointed snapshot, so a bad
//! batch never leaks state into the next.

use super::bindings::{ProcessorInfo, RecordBatch, ShardContext, ShutdownReason, State};
use super::component::{first_line, Plugin};
use super::contract::Bindings;
use super::error::{BudgetExceeded, PluginError, TrapCause};
use super::limits::PluginLimits;
use super::output::PluginOutput;
use super::state::{Clock, HostState};
use super::text::{from_plugin, MAX_MESSAGE, MAX_NAME};
use std::sync::Arc;
use wasmtime::{Store, Trap};

/// Everything an instance is started with; kept to rebuild it.
#[derive(Debug, Clone)]
pub struct InstanceSettings {
    /// The user's JSON config string.
    pub config: String,
    /// Stream, shard, application, hash-key range and parents.
    pub context: ShardContext,
    /// Caps for memory, time, output and logs.
    pub limits: PluginLimits,
    /// Source of `now-millis`.
    pub clock: Clock,
}

/// A live store with its instance.
struct Live {
    store: Store<HostState>,
    bindings: Bindings,
}

/// A processor instance for one shard.
pub struct PluginInstance {
    plugin: Arc<Plugin>,
    settings: InstanceSettings,
    /// `None` after a trap whose rebuild failed; the next call retries it.
    live: Option<Live>,
    /// What the plugin said about itself at `init`.
    info: ProcessorInfo,
    /// Last checkpointed state: what a rebuild restores.
    committed: Option<State>,
    /// Epoch ticks per call (the call timeout).
    deadline_ticks: u64,
    /// Set by `shutdown`: no call may follow.
    shut_down: bool,
}

/// How a `process` call ended without a trap.
#[derive(Debug)]
pub struct Processed {
    /// Output to release: all of it on success; on a failure naming a
    /// record, what the plugin emitted for the records before it.
    pub output: PluginOutput,
    /// The plugin's error, if it reported one.
    pub failure: Option<PluginError>,
}

impl PluginInstance {
    /// Instantiates, `init`s and, with `state`, `restore`s a processor.
    pub fn start(plugin: Arc<Plugin>, settings: InstanceSettings, state: Option<State>) -> Result<Self, PluginError> {
        let deadline_ticks = plugin.engine().deadline_ticks(settings.limits.call_timeout);
        let (live, info) = instantiate(&plugin, &settings, state.as_ref(), deadline_ticks)?;
        Ok(PluginInstance {
            plugin,
            settings,
            live: Some(live),
            info,
            committed: state,
            deadline_ticks,
            shut_down: false,
        })
    }

    /// Name and state version the plugin reported.
    pub fn info(&self) -> &ProcessorInfo {
        &self.info
    }

    /// The loaded component.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// Runs one batch. `Err` means the plugin trapped (and was rebuilt from
    /// the last checkpoint); a reported failure comes back in [`Processed`].
    pub fn process(&mut self, batch: &RecordBatch) -> Result<Processed, PluginError> {
        let (result, mut output) = self.call("process", |b, s| b.process(s, batch))?;
        let Err(e) = result else { return Ok(Processed { output, failure: None }) };
        let batch_len = batch.index.len() / kinesis_processor_sdk::wire::RecordEntry::ENCODED_LEN;
        let record_index = match e.record_index {
            Some(i) if (i as usize) < batch_len => Some(i),
            Some(i) => {
                output.clear();
                return Ok(Processed {
                    output,
                    failure: Some(self.failed(
                        false,
                        format!("{} (and named record {i} of a {batch_len}-record batch)", e.message),
                        None,
                    )),
                });
            }
            None => {
                // Nothing is known to be done: none of the output may go out.
                output.clear();
                None
            }
        };
        Ok(Processed { output, failure: Some(self.failed(e.retryable, e.message, record_index)) })
    }

    /// Fires the timer with the host clock's `now`.
    pub fn on_timer(&mut self, now_millis: i64) -> Result<PluginOutput, PluginError> {
        let (result, output) = self.call("on-timer", |b, s| b.on_timer(s, now_millis))?;
        match result {
            Ok(()) => Ok(output),
            Err(e) => Err(self.failed(e.retryable, e.message, None)),
        }
    }

    /// Takes a snapshot and remembers it as the state to rebuild from.
    pub fn checkpoint(&mut self) -> Result<State, PluginError> {
        let (state, _) = self.call("snapshot", |b, s| b.snapshot(s))?;
        self.committed = Some(state.clone());
        Ok(state)
    }

    /// Drops the live instance; the next call starts a fresh one from the
    /// last checkpointed state. After a failure the plugin reported (no
    /// trap), its state may hold half of the batch: a retry starts clean.
    pub fn reset(&mut self) {
        self.live = None;
    }

    /// What it was started with (config, context, limits, clock).
    pub fn settings(&self) -> &InstanceSettings {
        &self.settings
    }

    /// The last checkpointed state.
    pub fn committed_state(&self) -> Option<&State> {
        self.committed.as_ref()
    }

    /// Last call: lets the plugin flush (on shard end), then drops the
    /// store; any later call fails with [`PluginError::ShutDown`].
    pub fn shutdown(&mut self, reason: ShutdownReason) -> Result<PluginOutput, PluginError> {
        let result = self.call("shutdown", |b, s| b.shutdown(s, reason));
        self.shut_down = true;
        self.live = None;
        Ok(result?.1)
    }

    /// Takes over the final states of the shards merged into this one
    /// (`merge`), on a fresh instance; `Ok(false)` when the component does
    /// not export `merge`. Follow with [`PluginInstance::checkpoint`]: the
    /// merged state is what a rebuild restores once committed.
    pub fn merge(&mut self, parents: &[State]) -> Result<bool, PluginError> {
        let (result, _) = self.call("merge", |b, s| b.merge(s, parents).transpose())?;
        match result {
            None => Ok(false),
            Some(Ok(())) => Ok(true),
            Some(Err(message)) => {
                // Whatever it half-took must not be snapshotted.
                self.live = None;
                let message = from_plugin(&message, MAX_MESSAGE);
                Err(PluginError::MergeRejected { plugin: self.info.name.clone(), message })
            }
        }
    }

    fn failed(&self, retryable: bool, message: String, record_index: Option<u32>) -> PluginError {
        let message = from_plugin(&message, MAX_MESSAGE);
        PluginError::Failed { plugin: self.info.name.clone(), retryable, message, record_index }
    }

    /// Runs an export under fresh budgets; on a trap, rebuilds and reports.
    fn call<R>(
        &mut self,
        name: &'static str,
        f: impl FnOnce(&Bindings, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<(R, PluginOutput), PluginError> {
        if self.shut_down {
            return Err(PluginError::ShutDown { plugin: self.info.name.clone() });
        }
        if self.live.is_none() {
            let (live, info) = instantiate(&self.plugin, &self.settings, self.committed.as_ref(), self.deadline_ticks)?;
            self.live = Some(live);
            self.info = info;
        }
        let Some(live) = self.live.as_mut() else { unreachable!("instantiated above") };
        live.store.data_mut().begin_call();
        live.store.set_epoch_deadline(self.deadline_ticks);
        match f(&live.bindings, &mut live.store) {
            Ok(value) => Ok((value, std::mem::take(&mut live.store.data_mut().output))),
            Err(error) => {
                let (cause, detail) = classify(&error, live.store.data(), &self.settings.limits);
                self.live = None;
                let recovery =
                    match instantiate(&self.plugin, &self.settings, self.committed.as_ref(), self.deadline_ticks) {
                        Ok((live, _)) => {
                            self.live = Some(live);
                            match &self.committed {
                                Some(_) => "instance rebuilt from the last checkpoint".to_string(),
                                None => "instance rebuilt with fresh state (no checkpoint yet)".to_string(),
                            }
                        }
                        Err(e) => format!("rebuilding the instance failed too: {e}"),
                    };
                Err(PluginError::Trapped { plugin: self.info.name.clone(), call: name, cause, detail, recovery })
            }
        }
    }
}

/// Creates a store and instance, then runs `init` and `restore`.
fn instantiate(
    plugin: &Plugin,
    settings: &InstanceSettings,
    state: Option<&State>,
    deadline_ticks: u64,
) -> Result<(Live, ProcessorInfo), PluginError> {
    let label: Arc<str> = format!("{}@{}", plugin.path().display(), settings.context.shard_id).into();
    let mut store =
        Store::new(plugin.engine().engine(), HostState::new(&settings.limits, settings.clock.clone(), label));
    store.limiter(|state| &mut state.memory);
    store.set_epoch_deadline(deadline_ticks);
    store.epoch_deadline_trap();
    let plugin_name = || plugin.path().display().to_string();
    let trapped = |call: &'static str, error: wasmtime::Error, store: &Store<HostState>| {
        let (cause, detail) = classify(&error, store.data(), &settings.limits);
        PluginError::Trapped {
            plugin: plugin_name(),
            call,
            cause,
            detail,
            recovery: "the instance was not started".into(),
        }
    };
    // Instantiation runs code too (core start functions): under the same
    // deadline as any call, waits included.
    store.data_mut().begin_call();
    let bindings = match plugin.pre().instantiate(&mut store) {
        Ok(instance) => match plugin.indices().load(&mut store, &instance) {
            Ok(bindings) => bindings,
            Err(e) => {
                let reason = first_line(&e);
                return Err(PluginError::WrongWorld { path: plugin.path().to_path_buf(), reason });
            }
        },
        Err(e) => return Err(trapped("instantiate", e, &store)),
    };
    store.data_mut().begin_call();
    let mut info = match bindings.init(&mut store, &settings.config, &settings.context) {
        Ok(Ok(info)) => info,
        Ok(Err(message)) => {
            let message = from_plugin(&message, MAX_MESSAGE);
            return Err(PluginError::InitRejected { plugin: plugin_name(), message });
        }
        Err(e) => return Err(trapped("init", e, &store)),
    };
    // The name goes into every error and log line about this plugin.
    info.name = from_plugin(&info.name, MAX_NAME);
    if let Some(state) = state {
        store.data_mut().begin_call();
        store.set_epoch_deadline(deadline_ticks);
        match bindings.restore(&mut store, state) {
            Ok(Ok(())) => {}
            Ok(Err(message)) => {
                let message = from_plugin(&message, MAX_MESSAGE);
                return Err(PluginError::RestoreRejected { plugin: info.name, version: state.version, message });
            }
            Err(e) => return Err(trapped("restore", e, &store)),
        }
    }
    Ok((Live { store, bindings }, info))
}

/// Names what stopped a call, with the detail an operator needs (bounded
/// and on one line: it may quote the plugin's own panic message).
fn classify(error: &wasmtime::Error, state: &HostState, limits: &PluginLimits) -> (TrapCause, Option<String>) {
    let (cause, detail) = classify_unbounded(error, state, limits);
    (cause, detail.map(|d| from_plugin(&d, MAX_MESSAGE)))
}

fn classify_unbounded(
    error: &wasmtime::Error,
    state: &HostState,
    limits: &PluginLimits,
) -> (TrapCause, Option<String>) {
    if let Some(budget) = error.downcast_ref::<BudgetExceeded>() {
        let cause = match budget {
            BudgetExceeded::Memory { .. } => TrapCause::MemoryLimit,
            BudgetExceeded::Output { .. } => TrapCause::OutputLimit,
            BudgetExceeded::Logs(_) => TrapCause::LogFlood,
            BudgetExceeded::MalformedOutput => TrapCause::Crash,
        };
        return (cause, Some(budget.to_string()));
    }
    if let Some(Trap::Interrupt) = error.downcast_ref::<Trap>() {
        return (TrapCause::Timeout, Some(format!("limit {} ms", limits.call_timeout.as_millis())));
    }
    let detail = state.stderr.take_summary().unwrap_or_else(|| first_line(error));
    (TrapCause::Crash, Some(detail))
}
