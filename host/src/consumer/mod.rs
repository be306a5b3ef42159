//! `host run`: one worker per shard, started when the shard's parents have
//! been read to their end, re-synced as the stream reshards, with a status
//! line and an orderly shutdown.
//!
//! A [`Consumer`] is built from its parts (a record source, the logic, a
//! checkpoint store, a sink, the config) and run until its [`Shutdown`] is
//! triggered or a stop rule is met. The pieces: `scheduler` (which shards
//! start), `status` (the status line), `stop_rules`, `shard` (one shard's
//! loop), `worker` (its plugin, position and commits), `handover` (its half
//! of a hot swap). The failure policy is `crate::policy`.

mod handover;
mod inherit;
mod leases;
mod scheduler;
mod shard;
mod status;
mod stop_rules;
mod worker;

use crate::checkpoint::{CheckpointStore, ShardKey};
use crate::kinesis::reader::Polling;
use crate::ownership::{Listing, Ownership, Solo};
use crate::plugin::bindings::ShardContext;
use crate::plugin::{Clock, InstanceSettings, Plugin, PluginLimits};
use crate::policy::FailurePolicy;
use crate::progress::Progress;
use crate::shutdown::Shutdown;
use crate::sink::Sink;
use crate::source::{is_stream_deleted, RecordSource, ShardInfo, StartPosition};
use crate::swap::{SwapHub, SwapPolicy};
use leases::{apply, release, start_shards};
use scheduler::Scheduler;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

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
            context: ShardContext::new(&self.stream, shard_id, &self.application),
            limits: self.limits.clone(),
            clock: Clock::System,
        }
    }

    /// The checkpoint key of `shard_id`.
    pub fn key(&self, shard_id: &str) -> ShardKey {
        ShardKey::new(&self.application, &self.stream, shard_id)
    }
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

/// Triggers a stop signal when dropped.
struct TriggerOnDrop(Shutdown);

impl Drop for TriggerOnDrop {
    fn drop(&mut self) {
        self.0.trigger();
    }
}

/// How a shard's worker finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardExit {
    /// Read to its end (closed by a reshard); checkpointed as SHARD_END.
    Ended,
    /// Asked to stop; checkpointed where it was.
    Stopped,
    /// Stopped right before a record the plugin cannot process (no
    /// dead-letter sink); the message says which and what to do.
    Poisoned(String),
    /// Another worker owns the shard now: a commit was refused, the plugin
    /// was shut down with `lease-lost` and nothing more was written.
    LeaseLost(String),
}

/// What a run did.
#[derive(Debug, Default)]
pub struct RunReport {
    pub records: u64,
    /// Reads retried after throttling or network faults.
    pub retried_reads: u64,
    /// Iterators that expired and were replaced.
    pub expired_iterators: u64,
    /// Records with the KPL magic bytes that were not valid aggregates.
    pub corrupt_aggregates: u64,
    /// Shards read to their end (closed by a reshard).
    pub shards_ended: Vec<String>,
    /// Shards stopped before a poison record (no dead-letter sink), with why.
    pub shards_stopped: BTreeMap<String, String>,
    /// Shards dropped because another worker took them, with why.
    pub shards_lost: BTreeMap<String, String>,
}

/// Everything a shard's worker needs, shared.
pub(crate) struct Shared {
    pub source: Arc<dyn RecordSource>,
    /// The logic in force; workers take new generations between batches.
    pub swaps: Arc<SwapHub>,
    pub store: Arc<dyn CheckpointStore>,
    pub sink: Arc<Sink>,
    pub config: ConsumerConfig,
    pub progress: Arc<Progress>,
    /// Triggered to stop: workers finish the batch in flight, checkpoint
    /// and shut down. Workers trigger it too (`max_records`).
    pub shutdown: Shutdown,
    /// Whether a shard is still this host's under a task's take: output is
    /// written only while it is.
    pub ownership: Arc<dyn Ownership>,
}

/// A consumer of one stream, ready to run.
pub struct Consumer {
    source: Arc<dyn RecordSource>,
    logic: Arc<SwapHub>,
    store: Arc<dyn CheckpointStore>,
    sink: Arc<Sink>,
    config: ConsumerConfig,
    /// Shared with `/metrics` and the swap coordinator when they run.
    progress: Arc<Progress>,
    /// Where status lines go (stderr for `host run`).
    status: Box<dyn FnMut(String) + Send>,
    /// Which shards this host runs: all ([`Solo`]) or its share of a group's.
    ownership: Arc<dyn Ownership>,
}

impl Consumer {
    /// A consumer that polls `config.stream` with GetRecords.
    pub fn new(
        client: aws_sdk_kinesis::Client,
        logic: impl Into<Logic>,
        store: impl CheckpointStore + 'static,
        sink: Arc<Sink>,
        config: ConsumerConfig,
    ) -> Self {
        let source = Polling {
            client,
            stream: config.stream.clone(),
            batch_size: config.batch_size,
            idle_time: config.idle_time,
        };
        Consumer::with_source(Arc::new(source), logic, Arc::new(store), sink, config)
    }

    /// A consumer reading through any record source and checkpoint store.
    pub fn with_source(
        source: Arc<dyn RecordSource>,
        logic: impl Into<Logic>,
        store: Arc<dyn CheckpointStore>,
        sink: Arc<Sink>,
        config: ConsumerConfig,
    ) -> Self {
        Consumer {
            source,
            logic: logic.into().0,
            store,
            sink,
            config,
            progress: Arc::default(),
            status: Box::new(|_| {}),
            ownership: Arc::new(Solo),
        }
    }

    /// Runs only the shards `ownership` gives this host (one worker of a
    /// group sharing the stream through leases).
    pub fn ownership(mut self, ownership: Arc<dyn Ownership>) -> Self {
        self.ownership = ownership;
        self
    }

    /// Counts into `progress` (shared with metrics, swaps, the caller).
    pub fn progress(mut self, progress: Arc<Progress>) -> Self {
        self.progress = progress;
        self
    }

    /// Sends each status line to `status`.
    pub fn on_status(mut self, status: impl FnMut(String) + Send + 'static) -> Self {
        self.status = Box::new(status);
        self
    }

    /// Runs until `shutdown` is triggered, `max_records` or `idle_exit` is
    /// reached, or every shard has ended. A failing shard stops the run
    /// with its error (after the others stopped cleanly).
    pub async fn run(self, shutdown: impl Into<Shutdown>) -> anyhow::Result<RunReport> {
        let Consumer { source, logic, store, sink, config, progress, mut status, ownership } = self;
        let shutdown = shutdown.into();
        let shared = Arc::new(Shared {
            source: source.clone(),
            swaps: logic,
            store: store.clone(),
            sink,
            config: config.clone(),
            progress: progress.clone(),
            shutdown: shutdown.clone(),
            ownership: ownership.clone(),
        });
        // Leases are kept on timers of their own, so neither checkpoint
        // loads nor a slow listing ever delays a renewal.
        let (listing_tx, listing_rx) = tokio::sync::watch::channel(Arc::new(Listing::now(Vec::new())));
        let (changes_tx, mut changes_rx) = tokio::sync::mpsc::unbounded_channel();
        let stop_keeping = Shutdown::new();
        let keeping = ownership.clone().keep(listing_rx, changes_tx, stop_keeping.clone());
        // However the run ends (an error returns early), the leases stop
        // being kept with it: nobody renews a lease nothing runs.
        let _keeping_ends = TriggerOnDrop(stop_keeping.clone());
        let mut workers: JoinSet<(String, anyhow::Result<ShardExit>)> = JoinSet::new();
        let mut scheduler = Scheduler::default();
        let mut report = RunReport::default();
        let mut first_error: Option<anyhow::Error> = None;
        let started = Instant::now();
        let mut shards: Vec<ShardInfo> = Vec::new();
        let mut next_sync = Instant::now();
        let mut status_tick = tokio::time::interval(config.status_interval);
        status_tick.tick().await;
        let mut status_line = status::StatusLine::new();
        let mut stop_rx = shutdown.subscribe();
        loop {
            let mut start_now = false;
            if !shutdown.is_triggered() && Instant::now() >= next_sync {
                match source.shards().await {
                    Ok(listed) => {
                        listing_tx.send_replace(Arc::new(Listing::now(listed.clone())));
                        shards = listed;
                        start_now = true;
                        next_sync = Instant::now() + config.shard_sync_interval;
                    }
                    // At start, a listing that fails is the answer (no such
                    // stream, no endpoint). Later the running shards go on:
                    // their readers ride out an outage, and the listing is
                    // tried again.
                    Err(e) if scheduler.listed > 0 => {
                        tracing::warn!("re-listing shards failed, trying again shortly: {e:#}");
                        next_sync = Instant::now() + config.shard_sync_interval.min(Duration::from_secs(5));
                    }
                    Err(e) => return Err(e),
                }
            }
            if start_now && !shutdown.is_triggered() {
                start_shards(&mut scheduler, &shards, &shared, &mut workers).await?;
            }
            if scheduler.running.is_empty() && (shutdown.is_triggered() || scheduler.all_done()) {
                break;
            }
            let wake_in = next_sync.saturating_duration_since(Instant::now());
            tokio::select! {
                Some(changes) = changes_rx.recv() => {
                    // A lease taken is a write the table answered: a
                    // checkpoint that cannot be read after it (an outage
                    // right after the take) delays the shard, not the run.
                    scheduler.store_answered |= !changes.taken.is_empty();
                    // Lost takes stop even while the run winds down.
                    let start = apply(&changes, &mut scheduler, ownership.as_ref()).await;
                    if start && !shutdown.is_triggered() {
                        start_shards(&mut scheduler, &shards, &shared, &mut workers).await?;
                    }
                    if let Ok(mut leases) = progress.leases.lock() {
                        *leases = ownership.counts();
                    }
                }
                Some(joined) = workers.join_next(), if !workers.is_empty() => {
                    let (id, exit) = match joined {
                        Ok(pair) => pair,
                        Err(e) => (String::from("?"), Err(anyhow::anyhow!("a shard worker panicked: {e}"))),
                    };
                    let tenure = scheduler.tenure(&id).unwrap_or_default();
                    scheduler.exited(&id);
                    // Taken back under a new take while the old task wound
                    // down: the new take starts its own task now.
                    let retaken = !shutdown.is_triggered() && ownership.owns(&id).is_some_and(|t| t != tenure);
                    if let Ok(mut behind) = progress.behind.lock() {
                        behind.remove(&id);
                    }
                    if let Ok(mut caught_up) = progress.caught_up.lock() {
                        caught_up.remove(&id);
                    }
                    match exit {
                        Ok(ShardExit::Ended) => {
                            scheduler.ended.insert(id.clone());
                            report.shards_ended.push(id.clone());
                            // Nobody needs to hold an ended shard; its children may start.
                            release(ownership.as_ref(), &id, tenure).await;
                            next_sync = Instant::now();
                        }
                        // Stopped while the run goes on: handed off to another host.
                        Ok(ShardExit::Stopped) if !shutdown.is_triggered() => {
                            release(ownership.as_ref(), &id, tenure).await;
                        }
                        Ok(ShardExit::Stopped) => {}
                        Ok(ShardExit::Poisoned(reason)) => {
                            // Only this shard stops; the others go on.
                            tracing::error!(shard = %id, "{reason}");
                            if let Ok(mut stopped) = progress.stopped_shards.lock() {
                                stopped.insert(id.clone(), reason.clone());
                            }
                            report.shards_stopped.insert(id.clone(), reason.clone());
                            scheduler.parked.insert(id, reason);
                        }
                        Ok(ShardExit::LeaseLost(reason)) => {
                            tracing::warn!(shard = %id, "lease lost, shard dropped: {reason}");
                            if let Ok(mut lost) = progress.lost_shards.lock() {
                                lost.insert(id.clone(), reason.clone());
                            }
                            report.shards_lost.insert(id.clone(), reason.clone());
                            // The take it ran under still held (nothing runs
                            // it now): let it go rather than keep renewing it.
                            if ownership.owns(&id) == Some(tenure) {
                                release(ownership.as_ref(), &id, tenure).await;
                            }
                            if !retaken {
                                scheduler.lost.insert(id, reason);
                            }
                        }
                        Err(e) => {
                            // One failing shard stops the run: finish the others cleanly.
                            shutdown.trigger();
                            // A deleted stream is every shard's news, not this one's.
                            let e = if is_stream_deleted(&e) { e } else { e.context(format!("shard {id}")) };
                            first_error.get_or_insert(e);
                        }
                    }
                    if retaken && !shutdown.is_triggered() {
                        start_shards(&mut scheduler, &shards, &shared, &mut workers).await?;
                    }
                }
                _ = status_tick.tick() => {
                    if let Ok(mut leases) = progress.leases.lock() {
                        *leases = ownership.counts();
                    }
                    let mut line = status_line.render(&progress, scheduler.running.len());
                    if let Some(leases) = ownership.summary() {
                        line.push_str(&format!(", {leases}"));
                    }
                    status(line)
                }
                _ = stop_rx.changed() => {}
                _ = tokio::time::sleep(wake_in.max(Duration::from_millis(50))) => {}
            }
            if !shutdown.is_triggered() && stop_rules::reached(&config, &progress, &scheduler.running, started) {
                shutdown.trigger();
            }
        }
        // Every shard made its last commit: stop keeping the leases, then
        // let others have them at once (a clean stop hands over without
        // waiting for leases to expire).
        stop_keeping.trigger();
        if let Err(e) = keeping.await {
            tracing::warn!("the lease keeper ended badly: {e}");
        }
        if let Err(e) = ownership.release_all().await {
            tracing::warn!("releasing leases failed (others take them when they expire): {e:#}");
        }
        report.records = progress.records.load(Ordering::Relaxed);
        report.retried_reads = progress.retried_reads.load(Ordering::Relaxed);
        report.expired_iterators = progress.expired_iterators.load(Ordering::Relaxed);
        report.corrupt_aggregates = progress.corrupt_aggregates.load(Ordering::Relaxed);
        match first_error {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }
}
