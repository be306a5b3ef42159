//! One shard: read → plugin → sink → checkpoint, in that order, so output
//! is written before the position that produced it is committed. Between
//! batches the worker also takes new logic (hot swap, see `crate::swap`).

use super::Shared;
use crate::batch::PackedBatch;
use crate::checkpoint::Checkpoint;
use crate::kinesis::reader::{Prefetch, ReadBatch, ShardReader, StartPosition};
use crate::plugin::bindings::{ShutdownReason, State};
use crate::dead_letter::{DeadLetter, DeadLetterReason};
use crate::plugin::{Clock, InstanceSettings, Plugin, PluginError, PluginInstance, PluginOutput, Processed};
use crate::sink::Origin;
use crate::swap::{Change, Generation, OnRejectedState, ShardOutcome as SwapOutcome, ShardReport};
use anyhow::Context;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// How a shard's worker finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardOutcome {
    /// Read to its end (closed by a reshard); checkpointed as SHARD_END.
    Ended,
    /// Asked to stop; checkpointed where it was.
    Stopped,
    /// Stopped right before a record the plugin cannot process (no
    /// dead-letter sink); the message says which and what to do.
    Poisoned(String),
}

/// What a batch came to.
enum BatchOutcome {
    /// Every record was processed or set aside.
    Done,
    /// New logic failed in probation: undo the swap.
    RollBack(PluginError),
    /// A poison record and no dead-letter sink: the shard stops before it.
    Stopped(String),
    /// A failure while earlier batches were not checkpointed: their effect
    /// on the state is lost with the failed instance, so reading resumes at
    /// the checkpoint (committing each batch until past this one).
    Replay,
}

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
    let settings = config.instance_settings(&shard_id);
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
        uncommitted_records: 0,
        careful_records: 0,
    };
    worker.announce();
    let _registered = Registered(&shared, worker.shard_id.clone());
    let mut stop = shared.stop.clone();
    let mut next_timer = Instant::now() + config.timer_interval;
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
            match worker.handle(records).await? {
                BatchOutcome::Done => {
                    worker.probation = worker.probation.saturating_sub(1);
                    // The budget is checked here, per batch, so it stops the
                    // run within one batch per shard.
                    if config.max_records.is_some_and(|max| progress.records.load(Ordering::Relaxed) >= max) {
                        let _ = shared.stop_tx.send(true);
                    }
                }
                BatchOutcome::RollBack(e) => {
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
                BatchOutcome::Stopped(reason) => {
                    worker.finish(ShutdownReason::Requested).await?;
                    return Ok(ShardOutcome::Poisoned(reason));
                }
                BatchOutcome::Replay => {
                    // Dropping the reader drops what it read ahead.
                    drop(reader);
                    reader = open_reader(&shared, &worker.shard_id, worker.resume_position()).await?;
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
    /// Records processed since the last checkpoint.
    uncommitted_records: u64,
    /// After a `Replay`: records to go during which every batch is
    /// checkpointed, so the failing batch is met with nothing uncommitted.
    careful_records: u64,
}

impl Worker {
    fn take(&mut self) -> anyhow::Result<PluginInstance> {
        self.instance.take().context("plugin instance lost after a failed call")
    }

    fn instance(&self) -> anyhow::Result<&PluginInstance> {
        self.instance.as_ref().context("plugin instance lost after a failed call")
    }

    /// After a failed call, the instance restarts from the last checkpoint
    /// (a trap has already made it do so; a reported failure has not).
    fn back_to_checkpoint(&mut self, failure: &PluginError) -> anyhow::Result<()> {
        if !matches!(failure, PluginError::Trapped { .. }) {
            self.instance.as_mut().context("plugin instance lost after a failed call")?.reset();
        }
        Ok(())
    }

    /// Drops the progress since the last checkpoint (reading resumes there).
    fn forget_uncommitted(&mut self) {
        self.position = None;
        self.uncommitted_batches = 0;
        self.uncommitted_records = 0;
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

    /// Runs one batch through the failure policy. A failure is retried
    /// (`--retries`, back-off with jitter, from the state before it); a
    /// failure naming record `i` keeps the records before `i`; a failure
    /// naming none is bisected until the records that fail alone are found.
    /// Those are poison: dead-lettered, or the shard stops before them.
    /// Every step that keeps records is checkpointed before the next call,
    /// because a failed instance is rebuilt from the last checkpoint.
    async fn handle(&mut self, batch: PackedBatch) -> anyhow::Result<BatchOutcome> {
        let retries = self.shared.config.failure.retries;
        let batch = self.set_aside_expired(batch).await?;
        let careful = self.careful_records > 0;
        self.careful_records = self.careful_records.saturating_sub(batch.len() as u64);
        let batch = Arc::new(batch);
        let n = batch.len();
        // Ranges still to run, the next one last; `true` once bisecting.
        let mut todo = vec![(0, n, false)];
        let mut failed_before = false;
        while let Some((mut lo, hi, bisecting)) = todo.pop() {
            let mut attempts = 0u32;
            while lo < hi {
                let slice = if (lo, hi) == (0, n) { batch.clone() } else { Arc::new(batch.slice(lo..hi)) };
                attempts += 1;
                let (output, failure) = match self.call_process(slice.clone()).await? {
                    Ok(processed) => (processed.output, processed.failure),
                    Err(trap) => (PluginOutput::default(), Some(trap)),
                };
                let Some(failure) = failure else {
                    self.accept(&slice, slice.len(), &output).await?;
                    if failed_before {
                        self.commit().await?;
                    }
                    lo = hi;
                    continue;
                };
                if self.probation > 0 && self.pre_swap.is_some() {
                    return Ok(BatchOutcome::RollBack(failure));
                }
                // Only the plugin failing *on records* makes records poison.
                // An instance that cannot even start again (state it cannot
                // restore, an init that fails) stops the shard with the reason.
                if !matches!(failure, PluginError::Failed { .. } | PluginError::Trapped { call: "process", .. }) {
                    return Err(anyhow::Error::new(failure).context(format!("the plugin of {} cannot go on", self.shard_id)));
                }
                if !failed_before && self.uncommitted_batches > 0 {
                    // The instance is rebuilt from the last checkpoint, which
                    // lacks the batches since: read them again.
                    self.back_to_checkpoint(&failure)?;
                    self.careful_records = self.uncommitted_records + n as u64;
                    self.forget_uncommitted();
                    tracing::warn!(shard = %self.shard_id, "{failure}; replaying from the last checkpoint");
                    return Ok(BatchOutcome::Replay);
                }
                failed_before = true;
                let retryable = matches!(failure, PluginError::Trapped { .. } | PluginError::Failed { retryable: true, .. });
                let index = match &failure {
                    PluginError::Failed { record_index: Some(i), .. } => Some(*i as usize),
                    _ => None,
                };
                if let Some(i) = index.filter(|i| *i > 0) {
                    // The plugin vouches for the records before `i`.
                    self.accept(&slice, i, &output).await?;
                    self.commit().await?;
                    lo += i;
                    attempts = 1;
                }
                self.back_to_checkpoint(&failure)?;
                if retryable && !bisecting && attempts <= retries {
                    self.shared.progress.plugin_retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(shard = %self.shard_id, attempt = attempts, "{failure}; retrying");
                    tokio::time::sleep(crate::kinesis::reader::backoff(attempts)).await;
                    continue;
                }
                if index.is_some() || hi - lo == 1 {
                    // Record `lo` fails on its own.
                    if let Some(stop) = self.poison(&batch, lo, &failure, attempts).await? {
                        return Ok(BatchOutcome::Stopped(stop));
                    }
                    lo += 1;
                    attempts = 0;
                    continue;
                }
                // Which record fails is unknown: halve the range, left first.
                let mid = lo + (hi - lo) / 2;
                todo.push((mid, hi, true));
                todo.push((lo, mid, true));
                break;
            }
        }
        if !failed_before {
            self.uncommitted_batches += 1;
            if careful || self.uncommitted_batches >= self.shared.config.checkpoint_every.max(1) {
                self.commit().await?;
            }
        }
        Ok(BatchOutcome::Done)
    }

    /// One `process` call on the blocking pool. The outer error is the
    /// host's; the inner one a trap (the instance was rebuilt).
    async fn call_process(&mut self, batch: Arc<PackedBatch>) -> anyhow::Result<Result<Processed, PluginError>> {
        let instance = self.take()?;
        let (instance, result) = blocking(instance, move |instance| instance.process(batch.as_wit())).await?;
        self.instance = Some(instance);
        Ok(result)
    }

    /// Releases the output of the first `count` records of `slice` and
    /// moves the position past them (the checkpoint follows by policy).
    async fn accept(&mut self, slice: &PackedBatch, count: usize, output: &PluginOutput) -> anyhow::Result<()> {
        let view = slice.view();
        let first = view.get(0).map(|r| r.sequence_number());
        let last = count.checked_sub(1).and_then(|i| view.get(i)).map(|r| r.sequence_number());
        self.write(output, first.zip(last)).await?;
        let progress = &self.shared.progress;
        progress.records.fetch_add(count as u64, Ordering::Relaxed);
        if let Ok(mut by_shard) = progress.records_by_shard.lock() {
            *by_shard.entry(self.shard_id.clone()).or_insert(0) += count as u64;
        }
        if let Some(last) = last {
            self.position = Some(last.to_string());
        }
        self.uncommitted_records += count as u64;
        Ok(())
    }

    /// A record the plugin fails on by itself. With a dead-letter sink it
    /// goes there (durably) and the checkpoint moves past it; without one,
    /// the shard stops right before it. Returns the stop message.
    async fn poison(&mut self, batch: &PackedBatch, index: usize, failure: &PluginError, attempts: u32) -> anyhow::Result<Option<String>> {
        let record = batch.view().get(index).context("poison record index out of the batch")?;
        let Some(sink) = self.shared.config.failure.dead_letter.clone() else {
            return Ok(Some(format!(
                "record {} (partition key {:?}) fails: {failure}; the shard stopped right before it. Pass --dead-letter file:PATH to set such records aside and go on, or fix the plugin: a restart resumes at this record",
                record.sequence_number(),
                String::from_utf8_lossy(record.partition_key_bytes())
            )));
        };
        let letter = self.letter(record, DeadLetterReason::Poison, failure.to_string(), attempts)?;
        tracing::warn!(shard = %self.shard_id, sequence_number = %letter.sequence_number, "dead-lettered: {failure}");
        sink.write(&[letter]).await?;
        self.count_dead_letters(DeadLetterReason::Poison, 1);
        self.position = Some(record.sequence_number().to_string());
        self.commit().await?;
        Ok(None)
    }

    /// Sends records older than `--max-record-age` to the dead-letter sink
    /// and returns the rest.
    async fn set_aside_expired(&mut self, batch: PackedBatch) -> anyhow::Result<PackedBatch> {
        let failure = &self.shared.config.failure;
        let (Some(age), Some(sink)) = (failure.max_record_age, failure.dead_letter.clone()) else { return Ok(batch) };
        let cutoff = Clock::System.now_millis() - age.as_millis() as i64;
        let view = batch.view();
        if view.iter().all(|r| r.approximate_arrival_millis() >= cutoff) {
            return Ok(batch);
        }
        let mut keep = PackedBatch::with_capacity(batch.len(), 0);
        keep.set_millis_behind_latest(batch.millis_behind_latest());
        let mut letters = Vec::new();
        for record in view.iter() {
            if record.approximate_arrival_millis() < cutoff {
                let error = format!("older than --max-record-age ({} s) when read", age.as_secs_f64());
                letters.push(self.letter(record, DeadLetterReason::Expired, error, 0)?);
            } else {
                keep.push_record(&record)?;
            }
        }
        sink.write(&letters).await?;
        self.count_dead_letters(DeadLetterReason::Expired, letters.len() as u64);
        if keep.is_empty() {
            // All of them: the checkpoint moves past the batch.
            self.position = batch.last_sequence_number();
            self.commit().await?;
        }
        Ok(keep)
    }

    fn letter(&self, record: kinesis_processor_sdk::Record<'_>, reason: DeadLetterReason, error: String, attempts: u32) -> anyhow::Result<DeadLetter> {
        let mut letter = DeadLetter {
            reason,
            stream: self.shared.config.stream.clone(),
            shard_id: self.shard_id.clone(),
            sequence_number: record.sequence_number().to_string(),
            sub_sequence_number: record.sub_sequence_number(),
            partition_key: String::from_utf8_lossy(record.partition_key_bytes()).into_owned(),
            arrival_millis: record.approximate_arrival_millis(),
            data: None,
            data_base64: None,
            error,
            attempts,
            plugin_sha256: self.instance()?.plugin().sha256().to_string(),
            dead_lettered_at_millis: Clock::System.now_millis(),
        };
        letter.set_data(record.data());
        Ok(letter)
    }

    fn count_dead_letters(&self, reason: DeadLetterReason, n: u64) {
        if let Ok(mut counts) = self.shared.progress.dead_letters.lock() {
            *counts.entry((self.shard_id.clone(), reason.as_str())).or_insert(0) += n;
        }
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
        self.uncommitted_records = 0;
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
        self.forget_uncommitted();
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
