//! Hot swap: new processor logic for a running host, without losing or
//! repeating a record, and with the plugin's state handed over.
//!
//! The pieces: a trigger (`watch.rs`: the file changed; SIGHUP; the control
//! endpoint in `control.rs`) sends a [`SwapRequest`] to the [`coordinate`]
//! task. It compiles and checks the new component off the hot path (a bad
//! file, a wrong world or a failing `init` leave the old logic running), then
//! publishes a new [`Generation`] on the [`SwapHub`]. Each shard's worker
//! takes it at its next batch boundary: commit, old `snapshot` → new
//! `restore`, continue from the same sequence number. A worker keeps what it
//! needs to undo the swap ([`PreSwap`]): if the new logic fails within its
//! first batches, or on `host swap --rollback`, the shard goes back to the old
//! plugin with its pre-swap state and replays from the pre-swap checkpoint.

pub mod control;
pub mod watch;

use crate::plugin::{CompiledCache, InstanceSettings, Plugin, PluginEngine, PluginInstance};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch as watch_channel};

/// What a swap does when the new plugin rejects the running plugin's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnRejectedState {
    /// Keep the old logic running (and its state): the swap is refused.
    #[default]
    Refuse,
    /// Start the new logic with empty state.
    Fresh,
}

/// How swaps behave in a run.
#[derive(Debug, Clone, Copy)]
pub struct SwapPolicy {
    /// When the new plugin's `restore` rejects the old state.
    pub on_rejected_state: OnRejectedState,
    /// Batches per shard the new logic must process without failing; a
    /// failure within them rolls the swap back.
    pub probation_batches: u32,
}

impl Default for SwapPolicy {
    fn default() -> Self {
        SwapPolicy { on_rejected_state: OnRejectedState::Refuse, probation_batches: 3 }
    }
}

/// Why a generation replaced the one before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The plugin the run started with.
    Initial,
    /// New logic, state handed over from the running one.
    Swap,
    /// Undo of generation `of`: back to the plugin before it, with the
    /// pre-swap state, replaying from the pre-swap checkpoint.
    Rollback { of: u64 },
}

/// The logic every shard should run. Workers compare ids to notice changes.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Increases by one per published change.
    pub id: u64,
    pub plugin: Arc<Plugin>,
    pub change: Change,
}

/// How one shard took (or refused) a generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum ShardOutcome {
    /// Switched at a batch boundary; `stall_micros` is how long the shard
    /// did not process because of it.
    Switched { stall_micros: u64, fresh_state: bool },
    /// Went back to the previous plugin and its pre-swap state.
    RolledBack { reason: String },
    /// Kept the logic it had.
    Refused { reason: String },
}

/// A worker's word on a generation.
#[derive(Debug, Clone)]
pub struct ShardReport {
    pub shard_id: String,
    pub generation: u64,
    pub outcome: ShardOutcome,
}

/// Where the running logic is published and where workers answer.
pub struct SwapHub {
    current: watch_channel::Sender<Arc<Generation>>,
    reports: mpsc::UnboundedSender<ShardReport>,
    /// Taken once, by the coordinator.
    report_rx: Mutex<Option<mpsc::UnboundedReceiver<ShardReport>>>,
    /// Per running shard: the generation it has taken (the coordinator waits
    /// for every shard to reach a new one).
    shards: Mutex<BTreeMap<String, u64>>,
    pub policy: SwapPolicy,
}

impl std::fmt::Debug for SwapHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwapHub").field("current", &self.current.borrow().id).finish_non_exhaustive()
    }
}

impl SwapHub {
    /// A hub whose first generation runs `plugin`.
    pub fn new(plugin: Arc<Plugin>, policy: SwapPolicy) -> Arc<Self> {
        let (current, _) = watch_channel::channel(Arc::new(Generation { id: 0, plugin, change: Change::Initial }));
        let (reports, report_rx) = mpsc::unbounded_channel();
        Arc::new(SwapHub { current, reports, report_rx: Mutex::new(Some(report_rx)), shards: Mutex::default(), policy })
    }

    /// The generation in force.
    pub fn current(&self) -> Arc<Generation> {
        self.current.borrow().clone()
    }

    /// A worker's view of the generations, starting at the current one.
    pub fn subscribe(&self) -> watch_channel::Receiver<Arc<Generation>> {
        self.current.subscribe()
    }

    /// A worker records that it runs `generation`.
    pub fn running(&self, shard_id: &str, generation: u64) {
        if let Ok(mut shards) = self.shards.lock() {
            shards.insert(shard_id.to_string(), generation);
        }
    }

    /// A worker is gone.
    pub fn left(&self, shard_id: &str) {
        if let Ok(mut shards) = self.shards.lock() {
            shards.remove(shard_id);
        }
    }

    /// A worker tells how it took a generation.
    pub fn report(&self, report: ShardReport) {
        let _ = self.reports.send(report);
    }

    /// Shards and the generation each runs.
    pub fn shards(&self) -> BTreeMap<String, u64> {
        self.shards.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn publish(&self, plugin: Arc<Plugin>, change: Change) -> Arc<Generation> {
        let generation = Arc::new(Generation { id: self.current.borrow().id + 1, plugin, change });
        self.current.send_replace(generation.clone());
        generation
    }
}

/// Where the new component comes from.
#[derive(Debug, Clone)]
pub enum PluginSource {
    /// A file on this machine (`--watch`, SIGHUP).
    Path(PathBuf),
    /// Bytes sent to the control endpoint; `name` labels it in messages.
    Bytes { name: String, bytes: Vec<u8> },
}

/// What a trigger asks for.
#[derive(Debug)]
pub enum SwapRequest {
    /// Run this component from the next batch on.
    Swap { source: PluginSource, reply: Option<oneshot::Sender<SwapResult>> },
    /// Undo the last swap.
    Rollback { reply: Option<oneshot::Sender<SwapResult>> },
}

/// What came of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// New logic runs on every shard.
    Swapped,
    /// The file holds the logic already running.
    Unchanged,
    /// The previous logic runs again, from its pre-swap checkpoints.
    RolledBack,
    /// The logic that ran before runs on; the message says why.
    Refused,
}

impl Outcome {
    /// The name in logs, metrics and the control endpoint's JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Swapped => "swapped",
            Outcome::Unchanged => "unchanged",
            Outcome::RolledBack => "rolled-back",
            Outcome::Refused => "refused",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer to a request (also logged, and the control endpoint's reply).
#[derive(Debug, Clone, Serialize)]
pub struct SwapResult {
    pub outcome: Outcome,
    /// One line for the operator.
    pub message: String,
    /// Content hash of the logic running after the request.
    pub sha256: String,
    /// Per shard, how it took the change.
    pub shards: BTreeMap<String, ShardOutcome>,
    /// Compile and check time of the new component.
    pub prepare_millis: u64,
    /// From the request to the last shard's switch.
    pub total_millis: u64,
}

/// Counts of swaps, for metrics: per (outcome, sha256 of the logic asked for).
#[derive(Debug, Default)]
pub struct SwapCounts {
    pub by_outcome: Mutex<BTreeMap<(&'static str, String), u64>>,
}

impl SwapCounts {
    fn count(&self, outcome: &'static str, sha256: &str) {
        if let Ok(mut counts) = self.by_outcome.lock() {
            *counts.entry((outcome, sha256.to_string())).or_insert(0) += 1;
        }
    }
}

/// What the coordinator needs to load and check new components.
pub struct SwapContext {
    pub engine: PluginEngine,
    pub cache: Option<CompiledCache>,
    /// The settings shards start instances with (the shard id is replaced
    /// by a probe name for the `init` check).
    pub settings: InstanceSettings,
    /// Where swaps are counted (metrics).
    pub progress: Arc<crate::consumer::Progress>,
    /// How long to wait for every shard to reach a batch boundary.
    pub shard_timeout: Duration,
}

/// Serves swap requests until `requests` closes. Also watches for a shard
/// rolling back on its own (new logic failing in probation) and rolls the
/// other shards back with it, so one logic runs everywhere.
pub async fn coordinate(
    hub: Arc<SwapHub>,
    context: SwapContext,
    mut requests: mpsc::Receiver<SwapRequest>,
    mut announce: impl FnMut(&SwapResult) + Send + 'static,
) {
    let Some(mut reports) = hub.report_rx.lock().ok().and_then(|mut r| r.take()) else {
        tracing::error!("swap coordinator started twice");
        return;
    };
    // The generation a rollback returns to: (plugin before the last swap, that swap's id).
    let mut undo: Option<(Arc<Plugin>, u64)> = None;
    loop {
        tokio::select! {
            request = requests.recv() => {
                let Some(request) = request else { return };
                let (result, reply) = match request {
                    SwapRequest::Swap { source, reply } => (swap(&hub, &context, &mut reports, &mut undo, source).await, reply),
                    SwapRequest::Rollback { reply } => (rollback(&hub, &context, &mut reports, &mut undo, "requested").await, reply),
                };
                log(&result);
                announce(&result);
                context.progress.swaps.count(result.outcome.as_str(), &result.sha256);
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
            Some(report) = reports.recv() => {
                // Outside a request, only a probation failure speaks up.
                if let ShardOutcome::RolledBack { reason } = &report.outcome {
                    if undo.as_ref().is_some_and(|(_, id)| *id == report.generation) {
                        let reason = format!("shard {} failed on the new logic: {reason}", report.shard_id);
                        let result = rollback(&hub, &context, &mut reports, &mut undo, &reason).await;
                        log(&result);
                        announce(&result);
                        context.progress.swaps.count(result.outcome.as_str(), &result.sha256);
                    }
                }
            }
        }
    }
}

fn log(result: &SwapResult) {
    match result.outcome {
        Outcome::Refused => tracing::warn!(sha256 = %result.sha256, "swap refused: {}", result.message),
        _ => tracing::info!(sha256 = %result.sha256, outcome = %result.outcome, "{}", result.message),
    }
}

fn short(sha256: &str) -> &str {
    &sha256[..sha256.len().min(12)]
}

impl SwapResult {
    /// A result without shard reports; the times run from `started`.
    fn new(outcome: Outcome, message: String, sha256: &str, started: Instant) -> Self {
        let millis = started.elapsed().as_millis() as u64;
        SwapResult { outcome, message, sha256: sha256.to_string(), shards: BTreeMap::new(), prepare_millis: millis, total_millis: millis }
    }

    fn with_shards(self, shards: BTreeMap<String, ShardOutcome>, prepare_millis: u64) -> Self {
        SwapResult { shards, prepare_millis, ..self }
    }
}

async fn swap(
    hub: &SwapHub,
    context: &SwapContext,
    reports: &mut mpsc::UnboundedReceiver<ShardReport>,
    undo: &mut Option<(Arc<Plugin>, u64)>,
    source: PluginSource,
) -> SwapResult {
    let started = Instant::now();
    let current = hub.current();
    let plugin = match prepare(context, source).await {
        Ok(plugin) => plugin,
        Err(message) => {
            let message = format!("{message}; the running logic ({}) stays", short(current.plugin.sha256()));
            return SwapResult::new(Outcome::Refused, message, "", started);
        }
    };
    let prepare_millis = started.elapsed().as_millis() as u64;
    let name = plugin.path().display().to_string();
    if plugin.sha256() == current.plugin.sha256() {
        let message = format!("{name} is the running logic ({}); nothing to do", short(plugin.sha256()));
        return SwapResult::new(Outcome::Unchanged, message, plugin.sha256(), started);
    }
    let generation = hub.publish(plugin.clone(), Change::Swap);
    let shards = collect(hub, reports, generation.id, context.shard_timeout).await;
    let failed: Vec<String> = shards
        .iter()
        .filter_map(|(shard, outcome)| match outcome {
            ShardOutcome::Switched { .. } => None,
            ShardOutcome::RolledBack { reason } | ShardOutcome::Refused { reason } => Some(format!("{shard}: {reason}")),
        })
        .collect();
    *undo = Some((current.plugin.clone(), generation.id));
    if !failed.is_empty() {
        // One logic everywhere: shards that did switch go back too.
        let back = rollback(hub, context, reports, undo, &failed.join("; ")).await;
        let message = format!("{name} was not taken by every shard ({}); {}", failed.join("; "), back.message);
        return SwapResult::new(Outcome::Refused, message, plugin.sha256(), started).with_shards(shards, prepare_millis);
    }
    let mut stall = 0;
    let mut fresh = 0;
    for outcome in shards.values() {
        if let ShardOutcome::Switched { stall_micros, fresh_state } = outcome {
            stall = stall.max(*stall_micros);
            fresh += usize::from(*fresh_state);
        }
    }
    let message = format!(
        "now running {name} ({}) on {} shard(s), was {}; longest stall {:.1} ms{}",
        short(plugin.sha256()),
        shards.len(),
        short(current.plugin.sha256()),
        stall as f64 / 1000.0,
        if fresh > 0 { format!("; {fresh} shard(s) started with fresh state (old state rejected)") } else { String::new() }
    );
    SwapResult::new(Outcome::Swapped, message, plugin.sha256(), started).with_shards(shards, prepare_millis)
}

async fn rollback(
    hub: &SwapHub,
    context: &SwapContext,
    reports: &mut mpsc::UnboundedReceiver<ShardReport>,
    undo: &mut Option<(Arc<Plugin>, u64)>,
    reason: &str,
) -> SwapResult {
    let started = Instant::now();
    let Some((plugin, of)) = undo.take() else {
        return SwapResult::new(Outcome::Refused, "there is no swap to roll back".into(), hub.current().plugin.sha256(), started);
    };
    let generation = hub.publish(plugin.clone(), Change::Rollback { of });
    let shards = collect(hub, reports, generation.id, context.shard_timeout).await;
    let message = format!(
        "rolled back to {} ({}) on {} shard(s), replaying from the pre-swap checkpoints ({reason})",
        plugin.path().display(),
        short(plugin.sha256()),
        shards.len()
    );
    SwapResult::new(Outcome::RolledBack, message, plugin.sha256(), started).with_shards(shards, 0)
}

/// Compiles and checks the new component on the blocking pool: the world
/// (at load) and an `init` with the run's config on a probe instance.
async fn prepare(context: &SwapContext, source: PluginSource) -> Result<Arc<Plugin>, String> {
    let engine = context.engine.clone();
    let cache = context.cache.clone();
    let mut settings = context.settings.clone();
    settings.context.shard_id = "swap-check".into();
    tokio::task::spawn_blocking(move || {
        let plugin = match &source {
            PluginSource::Path(path) => Plugin::load(&engine, path, cache.as_ref()),
            PluginSource::Bytes { name, bytes } => Plugin::from_bytes(&engine, std::path::Path::new(name), bytes, cache.as_ref()),
        }
        .map_err(|e| e.to_string())?;
        let plugin = Arc::new(plugin);
        match PluginInstance::start(plugin.clone(), settings, None) {
            Ok(_) => Ok(plugin),
            Err(e) => Err(format!("the new plugin failed its check: {e}")),
        }
    })
    .await
    .map_err(|e| format!("checking the new plugin panicked: {e}"))?
}

/// Waits until every running shard has taken `generation` (or left), and
/// gathers their reports.
async fn collect(
    hub: &SwapHub,
    reports: &mut mpsc::UnboundedReceiver<ShardReport>,
    generation: u64,
    timeout: Duration,
) -> BTreeMap<String, ShardOutcome> {
    let deadline = Instant::now() + timeout;
    let mut outcomes = BTreeMap::new();
    loop {
        let pending: Vec<String> = hub
            .shards()
            .into_iter()
            .filter(|(shard, taken)| *taken < generation && !outcomes.contains_key(shard))
            .map(|(shard, _)| shard)
            .collect();
        if pending.is_empty() {
            // Workers report before they mark the generation taken: what they
            // said is already queued.
            while let Ok(report) = reports.try_recv() {
                if report.generation == generation {
                    outcomes.insert(report.shard_id, report.outcome);
                }
            }
            return outcomes;
        }
        if Instant::now() >= deadline {
            for shard in pending {
                outcomes.insert(shard, ShardOutcome::Refused { reason: format!("did not reach a batch boundary within {timeout:?}") });
            }
            return outcomes;
        }
        tokio::select! {
            Some(report) = reports.recv() => {
                if report.generation == generation {
                    outcomes.insert(report.shard_id, report.outcome);
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
    }
}
