//! One shard: read → plugin → sink → checkpoint, in that order, so output
//! is written before the position that produced it is committed. Between
//! batches the worker also takes new logic (hot swap, see `crate::swap`).

use super::Shared;
use crate::batch::PackedBatch;
use crate::checkpoint::Checkpoint;
use crate::kinesis::reader::{Prefetch, ReadBatch, ShardReader, StartPosition};
use crate::plugin::bindings::{ShardContext, ShutdownReason, State};
use crate::plugin::{Clock, InstanceSettings, Plugin, PluginError, PluginInstance, PluginOutput};
use crate::sink::Origin;
use crate::swap::{Change, Generation, OnRejectedState, ShardOutcome as SwapOutcome, ShardReport};
use anyhow::{bail, Context};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// How a shard's worker finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardOutcome {
    /// Read to its end (closed by a reshard); checkpointed as SHARD_END.
    Ended,
    /// Asked to stop; checkpointed where it was.
    Stopped,
}

/// Attempts at one batch before the shard stops with the error. (The
/// configurable failure policy is issue 5.)
const MAX_ATTEMPTS: u32 = 3;

/// Runs a plugin call on the blocking pool: wasm calls may take up to the
/// call timeout and must not stall the async readers of other shards.
async fn blocking<R: Send + 'static>(
    instance: PluginInstance,
    f: impl FnOnce(&mut PluginInstance) -> R + Send + 'static,
) -> anyhow::Result<(PluginInstance, R)> {
    tokio::task::spawn_blocking(move || {
        let mut instance = instance;
        let result = f(&mut instance);
        (instance, result)
    })
    .await
    .context("a plugin call panicked the host thread")
}

/// What woke the worker up.
enum Event {
    Stop,
    Generation(Arc<Generation>),
    Read(ReadBatch),
}

/// The worker of one shard.
pub(crate) async fn run_shard(
    shared: Arc<Shared>,
    shard_id: String,
    checkpoint: Option<Checkpoint>,
    has_parent: bool,
) -> anyhow::Result<ShardOutcome> {
    let config = &shared.config;
    let start = match checkpoint.as_ref().and_then(|c| c.sequence_number.clone()) {
        Some(seq) => StartPosition::AfterSequenceNumber(seq),
        // A child of a reshard is read from its first record, or records
        // between the parent's end and "now" would be lost.
        None if has_parent => StartPosition::TrimHorizon,
        None => config.start.clone(),
    };
    let state = checkpoint.as_ref().and_then(|c| c.state.clone()).map(|(version, bytes)| State { version, bytes });
    let settings = InstanceSettings {
        config: config.plugin_config.clone(),
        context: ShardContext {
            stream_name: config.stream.clone(),
            shard_id: shard_id.clone(),
            application: config.application.clone(),
        },
        limits: config.limits.clone(),
        clock: Clock::System,
    };
    // Subscribing before reading the current generation: a swap published
    // in between is seen as a change, never missed.
    let mut generations = shared.swaps.subscribe();
    let generation = generations.borrow_and_update().clone();
    let (plugin, instance_settings) = (generation.plugin.clone(), settings.clone());
    let instance = tokio::task::spawn_blocking(move || PluginInstance::start(plugin, instance_settings, state))
        .await
        .context("starting the plugin panicked")??;
    tracing::info!(shard = %shard_id, start = ?start, plugin = %generation.plugin.sha256(), "shard worker started");
    let mut reader = open_reader(&shared, &shard_id, start.clone()).await?;
    let mut worker = Worker {
        shared: shared.clone(),
        shard_id,
        settings,
        instance: Some(instance),
        committed: checkpoint.and_then(|c| c.sequence_number),
        position: None,
        uncommitted_batches: 0,
        generation: generation.id,
        pre_swap: None,
        probation: 0,
        start,
    };
    worker.announce();
    let _registered = Registered(&shared, worker.shard_id.clone());
    let mut stop = shared.stop.clone();
    let mut next_timer = Instant::now() + config.timer_interval;
    let mut attempts = 0u32;
    loop {
        let event = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => Event::Stop,
            Ok(()) = generations.changed() => Event::Generation(generations.borrow_and_update().clone()),
            read = reader.next() => Event::Read(read?),
        };
        let read = match event {
            Event::Stop => {
                worker.finish(ShutdownReason::Requested).await?;
                return Ok(ShardOutcome::Stopped);
            }
            Event::Generation(generation) => {
                match worker.take_generation(&generation).await? {
                    // A rollback replays from the pre-swap checkpoint.
                    Some(resume) => reader = open_reader(&shared, &worker.shard_id, resume).await?,
                    // The new logic gets its first batch now, not after the idle wait.
                    None => reader.poll_now(),
                }
                continue;
            }
            Event::Read(read) => read,
        };
        let ReadBatch { records, shard_ended, stats } = read;
        let progress = &shared.progress;
        progress.retried_reads.fetch_add(stats.retried, Ordering::Relaxed);
        progress.expired_iterators.fetch_add(stats.expired_iterators, Ordering::Relaxed);
        if let Ok(mut behind) = progress.behind.lock() {
            behind.insert(worker.shard_id.clone(), records.millis_behind_latest());
        }
        if !records.is_empty() {
            if let Ok(mut last) = progress.last_record.lock() {
                last.insert(worker.shard_id.clone(), Instant::now());
            }
            match worker.process(records).await? {
                Ok(()) => {
                    attempts = 0;
                    worker.probation = worker.probation.saturating_sub(1);
                    // The budget is checked here, per batch, so it stops the
                    // run within one batch per shard.
                    if config.max_records.is_some_and(|max| progress.records.load(Ordering::Relaxed) >= max) {
                        let _ = shared.stop_tx.send(true);
                    }
                }
                Err(e) if worker.probation > 0 && worker.pre_swap.is_some() => {
                    // New logic failing on its first batches: undo the swap
                    // here at once; the coordinator then undoes it everywhere.
                    let generation = worker.generation;
                    tracing::warn!(shard = %worker.shard_id, "the new logic failed on its first batches: {e}; rolling back");
                    let resume = worker.roll_back(generation).await?;
                    shared.swaps.report(ShardReport {
                        shard_id: worker.shard_id.clone(),
                        generation,
                        outcome: SwapOutcome::RolledBack { reason: e.to_string() },
                    });
                    reader = open_reader(&shared, &worker.shard_id, resume).await?;
                    continue;
                }
                Err(e) => {
                    attempts += 1;
                    if attempts >= MAX_ATTEMPTS {
                        bail!("giving up after {attempts} attempts at the same batch: {e}");
                    }
                    tracing::warn!(shard = %worker.shard_id, attempt = attempts, "{e}; retrying from the last checkpoint");
                    // The instance is back at the checkpoint's state: so must
                    // the position be. Dropping the reader drops what it read ahead.
                    let resume = worker.resume_position();
                    worker.position = None;
                    worker.uncommitted_batches = 0;
                    drop(reader);
                    tokio::time::sleep(crate::kinesis::reader::backoff(attempts)).await;
                    reader = open_reader(&shared, &worker.shard_id, resume).await?;
                    continue;
                }
            }
        }
        if Instant::now() >= next_timer {
            worker.timer().await?;
            next_timer = Instant::now() + config.timer_interval;
        }
        if shard_ended {
            worker.finish(ShutdownReason::ShardEnded).await?;
            return Ok(ShardOutcome::Ended);
        }
    }
}

/// Opens the shard at `start` and lets it read ahead of the worker.
async fn open_reader(shared: &Shared, shard_id: &str, start: StartPosition) -> anyhow::Result<Prefetch> {
    let config = &shared.config;
    let reader = ShardReader::open(shared.client.clone(), &config.stream, shard_id, start, config.batch_size).await?;
    if let Ok(mut retrying) = shared.progress.retrying.lock() {
        retrying.insert(shard_id.to_string(), reader.retrying.clone());
    }
    Ok(reader.prefetch(config.idle_time))
}

/// Takes the shard off the swap hub's list when the worker ends, however.
struct Registered<'a>(&'a Shared, String);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.swaps.left(&self.1);
    }
}

/// What undoing the last swap of a shard needs.
struct PreSwap {
    /// The swap's generation.
    generation: u64,
    /// The logic before it.
    plugin: Arc<Plugin>,
    /// Its state at the swap.
    state: Option<State>,
    /// The checkpoint position at the swap.
    committed: Option<String>,
}

/// A shard's moving parts between batches.
struct Worker {
    shared: Arc<Shared>,
    shard_id: String,
    /// What this shard's instances start with (also new logic's).
    settings: InstanceSettings,
    /// `None` only while a call runs on the blocking pool.
    instance: Option<PluginInstance>,
    /// Sequence number of the last committed checkpoint.
    committed: Option<String>,
    /// Sequence number processed up to but not yet committed.
    position: Option<String>,
    uncommitted_batches: u32,
    /// The generation of logic this shard runs.
    generation: u64,
    /// Set by a swap, until the next one: what a rollback returns to.
    pre_swap: Option<PreSwap>,
    /// Batches the new logic has yet to get through before a failure is
    /// an ordinary failure instead of a reason to roll back.
    probation: u32,
    /// Where the shard began reading in this run (a rollback to before any
    /// checkpoint replays from there).
    start: StartPosition,
}

impl Worker {
    fn take(&mut self) -> anyhow::Result<PluginInstance> {
        self.instance.take().context("plugin instance lost after a failed call")
    }

    fn instance(&self) -> anyhow::Result<&PluginInstance> {
        self.instance.as_ref().context("plugin instance lost after a failed call")
    }

    /// Where reading resumes to match the last checkpoint.
    fn resume_position(&self) -> StartPosition {
        match &self.committed {
            Some(seq) => StartPosition::AfterSequenceNumber(seq.clone()),
            None => self.start.clone(),
        }
    }

    /// Publishes which logic this shard runs (swap hub, metrics).
    fn announce(&self) {
        self.shared.swaps.running(&self.shard_id, self.generation);
        if let (Ok(instance), Ok(mut plugins)) = (self.instance(), self.shared.progress.plugin_by_shard.lock()) {
            plugins.insert(self.shard_id.clone(), instance.plugin().sha256().to_string());
        }
    }

    /// Writes output to the sink, labelled with where it came from (JSON
    /// lines show it). Borrows fields, not the worker, across the await: the
    /// worker is not `Sync`.
    async fn write(&mut self, output: &PluginOutput, batch: Option<(&str, &str)>) -> anyhow::Result<()> {
        let plugin_sha256 = self.instance()?.plugin().sha256().to_string();
        let origin = Origin { shard_id: &self.shard_id, plugin_sha256: &plugin_sha256, batch };
        self.shared.sink.write(output, &origin).await
    }

    /// Processes one batch. The outer error stops the shard (sink or store
    /// failure); the inner one is the plugin's, and the batch may be retried.
    async fn process(&mut self, records: PackedBatch) -> anyhow::Result<Result<(), PluginError>> {
        let first = records.view().get(0).map(|r| r.sequence_number().to_string());
        let last = records.last_sequence_number();
        let count = records.len() as u64;
        let instance = self.take()?;
        let (instance, result) = blocking(instance, move |instance| instance.process(records.as_wit())).await?;
        self.instance = Some(instance);
        let processed = match result {
            Ok(processed) => processed,
            Err(trap) => return Ok(Err(trap)),
        };
        if let Some(failure) = processed.failure {
            return Ok(Err(failure));
        }
        self.write(&processed.output, first.as_deref().zip(last.as_deref())).await?;
        self.shared.progress.records.fetch_add(count, Ordering::Relaxed);
        if let Ok(mut by_shard) = self.shared.progress.records_by_shard.lock() {
            *by_shard.entry(self.shard_id.clone()).or_insert(0) += count;
        }
        self.position = last;
        self.uncommitted_batches += 1;
        if self.uncommitted_batches >= self.shared.config.checkpoint_every.max(1) {
            self.commit().await?;
        }
        Ok(Ok(()))
    }

    async fn timer(&mut self) -> anyhow::Result<()> {
        let now = Clock::System.now_millis();
        let instance = self.take()?;
        let (instance, result) = blocking(instance, move |i| i.on_timer(now)).await?;
        self.instance = Some(instance);
        match result {
            Ok(output) => self.write(&output, None).await,
            Err(e) => {
                tracing::warn!(shard = %self.shard_id, "timer call failed: {e}");
                Ok(())
            }
        }
    }

    /// Snapshots the plugin and commits position + state in one transaction.
    async fn commit(&mut self) -> anyhow::Result<()> {
        let instance = self.take()?;
        let (instance, state) = blocking(instance, |i| i.checkpoint()).await?;
        self.instance = Some(instance);
        let state = state.with_context(|| format!("cannot snapshot the plugin of {}", self.shard_id))?;
        self.store_checkpoint(false, Some((state.version, state.bytes))).await?;
        self.committed = self.position.take().or(self.committed.take());
        self.uncommitted_batches = 0;
        Ok(())
    }

    /// Writes the shard's checkpoint (the position processed up to) to the
    /// store. A plain fn returning an owned future, so no borrow of the
    /// worker (and its non-`Sync` plugin instance) lives across the await.
    fn store_checkpoint(
        &self,
        shard_end: bool,
        state: Option<(u32, Vec<u8>)>,
    ) -> impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static {
        let checkpoint = Checkpoint {
            sequence_number: self.position.clone().or_else(|| self.committed.clone()),
            sub_sequence_number: 0,
            shard_end,
            state,
        };
        let store = self.shared.store.clone();
        let config = &self.shared.config;
        let (app, stream, shard) = (config.application.clone(), config.stream.clone(), self.shard_id.clone());
        async move {
            tokio::task::spawn_blocking(move || store.commit(&app, &stream, &shard, &checkpoint))
                .await
                .context("checkpoint commit panicked")?
        }
    }

    /// The plugin's last call; its output goes to the sink.
    async fn shut_down(&mut self, reason: ShutdownReason) -> anyhow::Result<()> {
        let instance = self.take()?;
        self.shut_down_instance(instance, reason).await
    }

    async fn shut_down_instance(&mut self, instance: PluginInstance, reason: ShutdownReason) -> anyhow::Result<()> {
        let sha256 = instance.plugin().sha256().to_string();
        let (_, output) = blocking(instance, move |i| shutdown_output(i, reason)).await?;
        let origin = Origin { shard_id: &self.shard_id, plugin_sha256: &sha256, batch: None };
        self.shared.sink.write(&output?, &origin).await
    }

    /// Commits what is pending and shuts the plugin down. At a shard's end
    /// the plugin's final output is written before SHARD_END is recorded.
    async fn finish(&mut self, reason: ShutdownReason) -> anyhow::Result<()> {
        if reason == ShutdownReason::ShardEnded {
            self.shut_down(reason).await?;
            self.store_checkpoint(true, None).await?;
            tracing::info!(shard = %self.shard_id, "shard read to its end (SHARD_END checkpointed)");
            return Ok(());
        }
        if self.uncommitted_batches > 0 {
            self.commit().await?;
        }
        self.shut_down(reason).await
    }

    /// Takes a newly published generation at this batch boundary. Returns
    /// where to read from when it rolled the shard back (a replay).
    async fn take_generation(&mut self, generation: &Generation) -> anyhow::Result<Option<StartPosition>> {
        if generation.id <= self.generation {
            return Ok(None);
        }
        if let Change::Rollback { of } = generation.change {
            if self.pre_swap.as_ref().is_some_and(|p| p.generation == of) {
                let resume = self.roll_back(generation.id).await?;
                self.report(generation.id, SwapOutcome::RolledBack { reason: "the swap was rolled back".into() });
                self.announce();
                return Ok(Some(resume));
            }
        }
        if self.instance()?.plugin().sha256() == generation.plugin.sha256() {
            // Already there (e.g. this shard rolled back on its own first).
            self.generation = generation.id;
            self.announce();
            return Ok(None);
        }
        let outcome = self.switch(generation).await?;
        self.report(generation.id, outcome);
        self.announce();
        Ok(None)
    }

    fn report(&self, generation: u64, outcome: SwapOutcome) {
        self.shared.swaps.report(ShardReport { shard_id: self.shard_id.clone(), generation, outcome });
    }

    /// Commits the exact position and state, starts the new logic from that
    /// state, and retires the old instance. If the new logic cannot start
    /// (or rejects the state under `--on-rejected-state refuse`), the old
    /// one keeps running, untouched.
    async fn switch(&mut self, generation: &Generation) -> anyhow::Result<SwapOutcome> {
        let started = Instant::now();
        self.commit().await?;
        let state = self.instance()?.committed_state().cloned();
        let (plugin, settings, handed) = (generation.plugin.clone(), self.settings.clone(), state.clone());
        let on_rejected = self.shared.swaps.policy.on_rejected_state;
        let new = tokio::task::spawn_blocking(move || match PluginInstance::start(plugin.clone(), settings.clone(), handed) {
            Err(PluginError::RestoreRejected { .. }) if on_rejected == OnRejectedState::Fresh => {
                PluginInstance::start(plugin, settings, None).map(|i| (i, true))
            }
            started => started.map(|i| (i, false)),
        })
        .await
        .context("starting the new plugin panicked")?;
        let (new, fresh_state) = match new {
            Ok(new) => new,
            Err(e) => return Ok(SwapOutcome::Refused { reason: e.to_string() }),
        };
        let old = self.instance.replace(new).context("plugin instance lost after a failed call")?;
        self.pre_swap = Some(PreSwap {
            generation: generation.id,
            plugin: old.plugin().clone(),
            state,
            committed: self.committed.clone(),
        });
        self.probation = self.shared.swaps.policy.probation_batches;
        self.generation = generation.id;
        if fresh_state {
            // The store must not pair the position with state the new logic refused.
            self.commit().await?;
        }
        let stall_micros = started.elapsed().as_micros() as u64;
        // Like a stop: the old logic's last word goes out; its state lives on.
        self.shut_down_instance(old, ShutdownReason::Requested).await?;
        Ok(SwapOutcome::Switched { stall_micros, fresh_state })
    }

    /// Back to the logic and state before the last swap; rewinds the stored
    /// checkpoint to the pre-swap one and returns where to replay from.
    async fn roll_back(&mut self, generation: u64) -> anyhow::Result<StartPosition> {
        let pre = self.pre_swap.take().context("no swap to roll back")?;
        let (plugin, settings, state) = (pre.plugin.clone(), self.settings.clone(), pre.state.clone());
        let instance = tokio::task::spawn_blocking(move || PluginInstance::start(plugin, settings, state))
            .await
            .context("restarting the previous plugin panicked")?
            .with_context(|| format!("cannot restart the previous plugin on {}", self.shard_id))?;
        // The failed or unwanted logic gets no last call: it is being undone.
        self.instance = Some(instance);
        self.position = None;
        self.uncommitted_batches = 0;
        self.committed = pre.committed;
        self.store_checkpoint(false, pre.state.map(|s| (s.version, s.bytes))).await?;
        self.probation = 0;
        self.generation = generation;
        Ok(self.resume_position())
    }
}

/// The plugin's last call; its output still goes to the sink.
fn shutdown_output(instance: &mut PluginInstance, reason: ShutdownReason) -> anyhow::Result<PluginOutput> {
    Ok(instance.shutdown(reason)?)
}
