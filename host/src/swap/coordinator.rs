//! The swap coordinator: the one task that serves swap requests. It checks
//! new logic off the hot path, publishes it, collects every shard's answer
//! and rolls back everywhere when any shard refused or failed in probation.

use super::{Change, PluginSource, ShardReport, ShardSwap, SwapHub, SwapOutcome, SwapRequest, SwapResult};
use crate::plugin::{CompiledCache, InstanceSettings, Plugin, PluginEngine, PluginInstance};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What the coordinator needs to load and check new components.
pub struct SwapContext {
    pub engine: PluginEngine,
    pub cache: Option<CompiledCache>,
    /// The settings shards start instances with (the shard id is replaced
    /// by a probe name for the `init` check).
    pub settings: InstanceSettings,
    /// Where swaps are counted (metrics).
    pub progress: Arc<crate::progress::Progress>,
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
                context.progress.swaps.in_flight.fetch_add(1, Ordering::Relaxed);
                let (mut result, reply) = match request {
                    SwapRequest::Swap { source, only, reply } => (swap(&hub, &context, &mut reports, &mut undo, source, only).await, reply),
                    SwapRequest::Rollback { to, reply } => {
                        if let Some(to) = to {
                            // Back to `to`, whether this host made the swap or not.
                            match prepare(&context, to).await {
                                Ok(plugin) if undo.as_ref().is_none_or(|(p, _)| p.sha256() != plugin.sha256()) => {
                                    undo = Some((plugin, hub.current().id));
                                }
                                Ok(_) => {}
                                Err(e) => tracing::warn!("cannot load the logic to roll back to: {e}"),
                            }
                        }
                        (rollback(&hub, &context, &mut reports, &mut undo, "requested").await, reply)
                    }
                };
                hub.settled(&mut result);
                log(&result);
                announce(&result);
                context.progress.swaps.count(result.outcome.as_str(), &result.sha256);
                context.progress.swaps.in_flight.fetch_sub(1, Ordering::Relaxed);
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
            Some(report) = reports.recv() => {
                // Outside a request, only a probation failure speaks up.
                if let ShardSwap::RolledBack { reason } = &report.outcome {
                    // A shard this host took in probation (from a worker
                    // that made the swap) names the logic it went back to:
                    // the swap's own, or it is not followed.
                    let current = hub.current();
                    if undo.as_ref().is_none_or(|(_, id)| *id != report.generation) && report.generation == current.id {
                        if let Some(back_to) = report.back_to.clone() {
                            if current.returns_to.as_deref() == Some(back_to.sha256()) {
                                undo = Some((back_to, report.generation));
                            }
                        }
                    }
                    if undo.as_ref().is_some_and(|(_, id)| *id == report.generation) {
                        let reason = format!("shard {} failed on the new logic: {reason}", report.shard_id);
                        let mut result = rollback(&hub, &context, &mut reports, &mut undo, &reason).await;
                        result.on_its_own = true;
                        hub.settled(&mut result);
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
        SwapOutcome::Refused => tracing::warn!(sha256 = %result.sha256, "swap refused: {}", result.message),
        _ => tracing::info!(sha256 = %result.sha256, outcome = %result.outcome, "{}", result.message),
    }
}

fn short(sha256: &str) -> &str {
    &sha256[..sha256.len().min(12)]
}

impl SwapResult {
    /// A result without shard reports; the times run from `started`.
    fn new(outcome: SwapOutcome, message: String, sha256: &str, started: Instant) -> Self {
        let millis = started.elapsed().as_millis() as u64;
        SwapResult {
            outcome,
            message,
            sha256: sha256.to_string(),
            shards: BTreeMap::new(),
            prepare_millis: millis,
            total_millis: millis,
            generation: 0,
            on_its_own: false,
        }
    }

    fn with_shards(self, shards: BTreeMap<String, ShardSwap>, prepare_millis: u64) -> Self {
        SwapResult { shards, prepare_millis, ..self }
    }
}

async fn swap(
    hub: &SwapHub,
    context: &SwapContext,
    reports: &mut mpsc::UnboundedReceiver<ShardReport>,
    undo: &mut Option<(Arc<Plugin>, u64)>,
    source: PluginSource,
    only: Option<std::collections::BTreeSet<String>>,
) -> SwapResult {
    let started = Instant::now();
    let current = hub.current();
    let plugin = match prepare(context, source).await {
        Ok(plugin) => plugin,
        Err(message) => {
            let message = format!("{message}; the running logic ({}) stays", short(current.plugin.sha256()));
            return SwapResult::new(SwapOutcome::Refused, message, "", started);
        }
    };
    let prepare_millis = started.elapsed().as_millis() as u64;
    let name = plugin.path().display().to_string();
    if plugin.sha256() == current.plugin.sha256() && current.only.as_deref() == only.as_ref() {
        let message = format!("{name} is the running logic ({}); nothing to do", short(plugin.sha256()));
        return SwapResult::new(SwapOutcome::Unchanged, message, plugin.sha256(), started);
    }
    // What a rollback returns to: the logic before this swap (before the
    // canary, when this widens one).
    let before = current.base.clone().unwrap_or_else(|| current.plugin.clone());
    hub.remember(before.clone());
    let generation = hub.publish(plugin.clone(), Change::Swap, only);
    let shards = collect(hub, reports, generation.id, context.shard_timeout).await;
    let failed: Vec<String> = shards
        .iter()
        .filter_map(|(shard, outcome)| match outcome {
            ShardSwap::Switched { .. } => None,
            ShardSwap::RolledBack { reason } | ShardSwap::Refused { reason } | ShardSwap::Late { reason } => {
                Some(format!("{shard}: {reason}"))
            }
        })
        .collect();
    *undo = Some((before.clone(), generation.id));
    if !failed.is_empty() {
        // One logic everywhere: shards that did switch go back too.
        let back = rollback(hub, context, reports, undo, &failed.join("; ")).await;
        let message = format!("{name} was not taken by every shard ({}); {}", failed.join("; "), back.message);
        return SwapResult::new(SwapOutcome::Refused, message, plugin.sha256(), started)
            .with_shards(shards, prepare_millis);
    }
    let mut stall = 0;
    let mut fresh = 0;
    for outcome in shards.values() {
        if let ShardSwap::Switched { stall_micros, fresh_state } = outcome {
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
        if fresh > 0 {
            format!("; {fresh} shard(s) started with fresh state (old state rejected)")
        } else {
            String::new()
        }
    );
    SwapResult::new(SwapOutcome::Swapped, message, plugin.sha256(), started).with_shards(shards, prepare_millis)
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
        return SwapResult::new(
            SwapOutcome::Refused,
            "there is no swap to roll back".into(),
            hub.current().plugin.sha256(),
            started,
        );
    };
    let generation = hub.publish(plugin.clone(), Change::Rollback { of }, None);
    let shards = collect(hub, reports, generation.id, context.shard_timeout).await;
    let message = format!(
        "rolled back to {} ({}) on {} shard(s), replaying from the pre-swap checkpoints ({reason})",
        plugin.path().display(),
        short(plugin.sha256()),
        shards.len()
    );
    SwapResult::new(SwapOutcome::RolledBack, message, plugin.sha256(), started).with_shards(shards, 0)
}

/// Compiles and checks the new component on the blocking pool: the world
/// (at load) and an `init` with the run's config on a probe instance.
async fn prepare(context: &SwapContext, source: PluginSource) -> Result<Arc<Plugin>, String> {
    let (engine, cache, settings) = (context.engine.clone(), context.cache.clone(), context.settings.clone());
    tokio::task::spawn_blocking(move || check(&engine, cache.as_ref(), settings, &source))
        .await
        .map_err(|e| format!("checking the new plugin panicked: {e}"))?
}

/// Loads a component and checks it as a swap does before anything runs
/// it: the world (at load) and an `init` with `settings`' config on a
/// probe instance. Blocking (compiles). The error is one line.
pub fn check(
    engine: &PluginEngine,
    cache: Option<&CompiledCache>,
    mut settings: InstanceSettings,
    source: &PluginSource,
) -> Result<Arc<Plugin>, String> {
    settings.context.shard_id = "swap-check".into();
    let plugin = match source {
        PluginSource::Path(path) => Plugin::load(engine, path, cache),
        PluginSource::Bytes { name, bytes } => Plugin::from_bytes(engine, std::path::Path::new(name), bytes, cache),
    }
    .map_err(|e| e.to_string())?;
    let plugin = Arc::new(plugin);
    match PluginInstance::start(plugin.clone(), settings, None) {
        Ok(_) => Ok(plugin),
        Err(e) => Err(format!("the new plugin failed its check: {e}")),
    }
}

/// Waits until every running shard has taken `generation` (or left), and
/// gathers their reports.
async fn collect(
    hub: &SwapHub,
    reports: &mut mpsc::UnboundedReceiver<ShardReport>,
    generation: u64,
    timeout: Duration,
) -> BTreeMap<String, ShardSwap> {
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
                outcomes.insert(
                    shard,
                    ShardSwap::Late { reason: format!("did not reach a batch boundary within {timeout:?}") },
                );
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
