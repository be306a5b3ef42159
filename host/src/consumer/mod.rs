//! `host run`: one worker per shard, started when the shard's parents have
//! been read to their end, re-synced as the stream reshards, with a status
//! line and an orderly shutdown.

mod worker;

use crate::checkpoint::CheckpointStore;
use crate::dead_letter::DeadLetterSink;
use crate::kinesis::admin;
use crate::kinesis::reader::StartPosition;
use crate::plugin::bindings::ShardContext;
use crate::plugin::{Clock, InstanceSettings, Plugin, PluginLimits};
use crate::sink::Sink;
use crate::swap::{SwapCounts, SwapHub, SwapPolicy};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use worker::ShardOutcome;

/// Everything `host run` is told.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Names this consumer's checkpoints (several apps can read one stream).
    pub application: String,
    pub stream: String,
    /// Where a shard without a checkpoint starts (children of a reshard
    /// always start at their beginning).
    pub start: StartPosition,
    /// Records per GetRecords call (1–10,000).
    pub batch_size: i32,
    /// Wait between polls once caught up; no wait while behind.
    pub idle_time: Duration,
    /// Period of the plugin's timer.
    pub timer_interval: Duration,
    /// Commit a checkpoint every this many batches.
    pub checkpoint_every: u32,
    /// Stop after this many records in total.
    pub max_records: Option<u64>,
    /// Stop once every shard is caught up and has read nothing this long.
    pub idle_exit: Option<Duration>,
    /// How often the stream's shard list is re-read.
    pub shard_sync_interval: Duration,
    /// How often the status line is printed.
    pub status_interval: Duration,
    /// The plugin's JSON config.
    pub plugin_config: String,
    pub limits: PluginLimits,
    /// What happens when the plugin fails on a batch.
    pub failure: FailurePolicy,
}

/// What a shard does when the plugin fails (see `worker.rs` for the steps).
#[derive(Debug, Clone)]
pub struct FailurePolicy {
    /// Extra attempts at a batch after a retryable error or a trap, with
    /// exponential back-off and jitter, before its records count as poison.
    pub retries: u32,
    /// Where poison (and expired) records go. Without one, a poison record
    /// stops its shard, right before the record.
    pub dead_letter: Option<Arc<DeadLetterSink>>,
    /// Records older than this when read go to the dead-letter sink unprocessed.
    pub max_record_age: Option<Duration>,
}

impl Default for FailurePolicy {
    fn default() -> Self {
        FailurePolicy { retries: 3, dead_letter: None, max_record_age: None }
    }
}

impl ConsumerConfig {
    /// `host run`'s defaults for reading `stream` as `application`.
    pub fn new(application: &str, stream: &str) -> Self {
        ConsumerConfig {
            application: application.into(),
            stream: stream.into(),
            start: StartPosition::Latest,
            batch_size: 1000,
            idle_time: Duration::from_millis(1000),
            timer_interval: Duration::from_millis(1000),
            checkpoint_every: 1,
            max_records: None,
            idle_exit: None,
            shard_sync_interval: Duration::from_secs(10),
            status_interval: Duration::from_secs(5),
            plugin_config: "{}".into(),
            limits: PluginLimits::default(),
            failure: FailurePolicy::default(),
        }
    }

    /// What the plugin instances of `shard_id` start with (the swap
    /// coordinator's probe instance uses its own name).
    pub fn instance_settings(&self, shard_id: &str) -> InstanceSettings {
        InstanceSettings {
            config: self.plugin_config.clone(),
            context: ShardContext {
                stream_name: self.stream.clone(),
                shard_id: shard_id.to_string(),
                application: self.application.clone(),
            },
            limits: self.limits.clone(),
            clock: Clock::System,
        }
    }
}

/// Counters shared by the workers and the status line.
#[derive(Debug, Default)]
pub struct Progress {
    /// Records processed (and checkpointed or about to be) in this run.
    pub records: AtomicU64,
    /// Per shard: millis behind latest at the last read.
    pub behind: Mutex<BTreeMap<String, i64>>,
    /// Per shard: when it last read any record (for `--idle-exit`).
    pub last_record: Mutex<BTreeMap<String, Instant>>,
    /// GetRecords calls retried after throttling or network faults.
    pub retried_reads: AtomicU64,
    /// Shard iterators replaced after expiring.
    pub expired_iterators: AtomicU64,
    /// Per shard: records processed.
    pub records_by_shard: Mutex<BTreeMap<String, u64>>,
    /// Per shard: set while its reader backs off (see `ShardReader::retrying`).
    pub retrying: Mutex<BTreeMap<String, Arc<std::sync::atomic::AtomicBool>>>,
    /// Per shard: content hash of the plugin it runs.
    pub plugin_by_shard: Mutex<BTreeMap<String, String>>,
    /// Hot swaps by outcome and the hash of the logic asked for.
    pub swaps: SwapCounts,
    /// Records set aside, per (shard, reason).
    pub dead_letters: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Plugin calls retried after a retryable error or a trap.
    pub plugin_retries: AtomicU64,
    /// Shards stopped before a poison record, with the reason.
    pub stopped_shards: Mutex<BTreeMap<String, String>>,
}

/// The processor logic of a run: a plugin, behind the hub that hot swaps
/// it (a plain `Arc<Plugin>` converts into a hub nobody swaps).
#[derive(Debug, Clone)]
pub struct Logic(pub Arc<SwapHub>);

impl From<Arc<Plugin>> for Logic {
    fn from(plugin: Arc<Plugin>) -> Self {
        Logic(SwapHub::new(plugin, SwapPolicy::default()))
    }
}

impl From<Arc<SwapHub>> for Logic {
    fn from(hub: Arc<SwapHub>) -> Self {
        Logic(hub)
    }
}

/// What a run did.
#[derive(Debug, Default)]
pub struct RunReport {
    pub records: u64,
    /// Reads retried after throttling or network faults.
    pub retried_reads: u64,
    /// Iterators that expired and were replaced.
    pub expired_iterators: u64,
    /// Shards read to their end (closed by a reshard).
    pub shards_ended: Vec<String>,
    /// Shards stopped before a poison record (no dead-letter sink), with why.
    pub shards_stopped: BTreeMap<String, String>,
}

/// Everything a worker needs, shared.
pub(crate) struct Shared {
    pub client: aws_sdk_kinesis::Client,
    /// The logic in force; workers take new generations between batches.
    pub swaps: Arc<SwapHub>,
    pub store: CheckpointStore,
    pub sink: Arc<Sink>,
    pub config: ConsumerConfig,
    pub progress: Arc<Progress>,
    /// Set to stop: workers finish the batch in flight, checkpoint and shut down.
    pub stop: watch::Receiver<bool>,
    /// Lets a worker stop the run (`max_records` reached).
    pub stop_tx: watch::Sender<bool>,
}

/// Runs until `stop` is set, `max_records` or `idle_exit` is reached, or
/// every shard has ended. A failing shard stops the run with its error.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    client: aws_sdk_kinesis::Client,
    logic: impl Into<Logic>,
    store: CheckpointStore,
    sink: Arc<Sink>,
    config: ConsumerConfig,
    progress: Arc<Progress>,
    stop: watch::Sender<bool>,
    mut status: impl FnMut(String),
) -> anyhow::Result<RunReport> {
    let shared = Arc::new(Shared {
        client: client.clone(),
        swaps: logic.into().0,
        store: store.clone(),
        sink,
        config: config.clone(),
        progress: progress.clone(),
        stop: stop.subscribe(),
        stop_tx: stop.clone(),
    });
    let mut workers: JoinSet<(String, anyhow::Result<ShardOutcome>)> = JoinSet::new();
    let mut running: HashSet<String> = HashSet::new();
    let mut ended: HashSet<String> = HashSet::new();
    // Stopped before a poison record: not restarted in this run.
    let mut poisoned: HashSet<String> = HashSet::new();
    let mut report = RunReport::default();
    let mut first_error: Option<anyhow::Error> = None;
    let started = Instant::now();
    let mut next_sync = Instant::now();
    let mut status_tick = tokio::time::interval(config.status_interval);
    status_tick.tick().await;
    let mut last_status = (Instant::now(), 0u64);
    let mut stop_rx = stop.subscribe();
    let mut shard_count = 0usize;

    loop {
        let listed = if !*stop_rx.borrow() && Instant::now() >= next_sync {
            match admin::shards(&client, &config.stream).await {
                Ok(shards) => Some(shards),
                // At start, a listing that fails is the answer (no such
                // stream, no endpoint). Later the running shards go on: their
                // readers ride out an outage, and the listing is tried again.
                Err(e) if shard_count > 0 => {
                    tracing::warn!("re-listing shards failed, trying again shortly: {e:#}");
                    next_sync = Instant::now() + config.shard_sync_interval.min(Duration::from_secs(5));
                    None
                }
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        if let Some(shards) = listed {
            shard_count = shards.len();
            let known: HashSet<&str> = shards.iter().map(|s| s.shard_id()).collect();
            for shard in &shards {
                let id = shard.shard_id().to_string();
                if running.contains(&id) || ended.contains(&id) || poisoned.contains(&id) {
                    continue;
                }
                let checkpoint = store.load(&config.application, &config.stream, &id)?;
                if checkpoint.as_ref().is_some_and(|c| c.shard_end) {
                    ended.insert(id);
                    continue;
                }
                // A child starts only after its parents were read to the end
                // (or have aged out of the stream entirely).
                let parents: Vec<&str> =
                    [shard.parent_shard_id(), shard.adjacent_parent_shard_id()].into_iter().flatten().collect();
                if parents.iter().any(|p| known.contains(p) && !ended.contains(*p)) {
                    continue;
                }
                let has_parent = parents.iter().any(|p| known.contains(p));
                running.insert(id.clone());
                let shared = shared.clone();
                workers.spawn(async move {
                    let outcome = worker::run_shard(shared, id.clone(), checkpoint, has_parent).await;
                    (id, outcome)
                });
            }
            next_sync = Instant::now() + config.shard_sync_interval;
        }
        if running.is_empty() && (*stop_rx.borrow() || (shard_count > 0 && ended.len() + poisoned.len() >= shard_count)) {
            break;
        }
        let sync_in = next_sync.saturating_duration_since(Instant::now());
        tokio::select! {
            Some(joined) = workers.join_next(), if !workers.is_empty() => {
                let (id, outcome) = match joined {
                    Ok(pair) => pair,
                    Err(e) => (String::from("?"), Err(anyhow::anyhow!("a shard worker panicked: {e}"))),
                };
                running.remove(&id);
                match outcome {
                    Ok(ShardOutcome::Ended) => {
                        ended.insert(id.clone());
                        report.shards_ended.push(id);
                        next_sync = Instant::now();
                    }
                    Ok(ShardOutcome::Stopped) => {}
                    Ok(ShardOutcome::Poisoned(reason)) => {
                        // Only this shard stops; the others go on.
                        tracing::error!(shard = %id, "{reason}");
                        if let Ok(mut stopped) = progress.stopped_shards.lock() {
                            stopped.insert(id.clone(), reason.clone());
                        }
                        report.shards_stopped.insert(id.clone(), reason);
                        poisoned.insert(id);
                    }
                    Err(e) => {
                        // One failing shard stops the run: finish the others cleanly.
                        let _ = stop.send(true);
                        first_error.get_or_insert(e.context(format!("shard {id}")));
                    }
                }
            }
            _ = status_tick.tick() => {
                let records = progress.records.load(Ordering::Relaxed);
                let rate = (records - last_status.1) as f64 / last_status.0.elapsed().as_secs_f64().max(1e-3);
                last_status = (Instant::now(), records);
                let behind = progress.behind.lock().map(|b| b.iter().map(|(s, ms)| format!("{s} {ms} ms")).collect::<Vec<_>>().join(", ")).unwrap_or_default();
                status(format!("{records} records ({}/s), {} shards running, behind: {}", rate_text(rate), running.len(), if behind.is_empty() { "-".into() } else { behind }));
            }
            _ = stop_rx.changed() => {}
            _ = tokio::time::sleep(sync_in.max(Duration::from_millis(50))) => {}
        }
        let records = progress.records.load(Ordering::Relaxed);
        if config.max_records.is_some_and(|max| records >= max) && !*stop_rx.borrow() {
            let _ = stop.send(true);
        }
        if let Some(idle) = config.idle_exit {
            // Idle means caught up (the last read reached the tip) *and* quiet:
            // a shard backing off from throttling has read nothing lately but
            // is not idle.
            let all_idle = match (progress.last_record.lock(), progress.behind.lock(), progress.retrying.lock()) {
                (Ok(last), Ok(behind), Ok(retrying)) => Ok(!running.is_empty()
                    && running.iter().all(|s| {
                        behind.get(s) == Some(&0)
                            && !retrying.get(s).is_some_and(|r| r.load(Ordering::Relaxed))
                            && last.get(s).map_or(started.elapsed() >= idle, |t| t.elapsed() >= idle)
                    })),
                _ => Err(()),
            };
            if all_idle.unwrap_or(false) && !*stop_rx.borrow() {
                let _ = stop.send(true);
            }
        }
    }
    report.records = progress.records.load(Ordering::Relaxed);
    report.retried_reads = progress.retried_reads.load(Ordering::Relaxed);
    report.expired_iterators = progress.expired_iterators.load(Ordering::Relaxed);
    match first_error {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// Records/s for the status line: whole numbers, but one decimal below 10
/// (seed 000's producers put one record every 2 and 5 s: "0/s" would lie).
fn rate_text(rate: f64) -> String {
    if rate < 10.0 {
        format!("{rate:.1}")
    } else {
        format!("{rate:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::rate_text;

    #[test]
    fn slow_rates_keep_a_decimal() {
        assert_eq!(rate_text(0.7), "0.7");
        assert_eq!(rate_text(0.0), "0.0");
        assert_eq!(rate_text(400.4), "400");
    }
}
