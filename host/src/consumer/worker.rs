//! One shard: read → plugin → sink → checkpoint, in that order, so output
//! is written before the position that produced it is committed.

use super::Shared;
use crate::batch::PackedBatch;
use crate::checkpoint::Checkpoint;
use crate::kinesis::reader::{Prefetch, ReadBatch, ShardReader, StartPosition};
use crate::plugin::bindings::{ShardContext, ShutdownReason, State};
use crate::plugin::{Clock, InstanceSettings, PluginError, PluginInstance, PluginOutput};
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
    let plugin = shared.plugin.clone();
    let instance = tokio::task::spawn_blocking(move || PluginInstance::start(plugin, settings, state))
        .await
        .context("starting the plugin panicked")??;
    tracing::info!(shard = %shard_id, start = ?start, "shard worker started");
    let mut reader = open_reader(&shared, &shard_id, start).await?;
    let mut worker = Worker {
        shared: shared.clone(),
        shard_id,
        instance: Some(instance),
        committed: checkpoint.and_then(|c| c.sequence_number),
        position: None,
        uncommitted_batches: 0,
    };
    let mut stop = shared.stop.clone();
    let mut next_timer = Instant::now() + config.timer_interval;
    let mut attempts = 0u32;
    loop {
        let read = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => None,
            read = reader.next() => Some(read?),
        };
        let Some(read) = read else {
            worker.finish(ShutdownReason::Requested).await?;
            return Ok(ShardOutcome::Stopped);
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
                    // The budget is checked here, per batch, so it stops the
                    // run within one batch per shard.
                    if config.max_records.is_some_and(|max| progress.records.load(Ordering::Relaxed) >= max) {
                        let _ = shared.stop_tx.send(true);
                    }
                }
                Err(e) => {
                    attempts += 1;
                    if attempts >= MAX_ATTEMPTS {
                        bail!("giving up after {attempts} attempts at the same batch: {e}");
                    }
                    tracing::warn!(shard = %worker.shard_id, attempt = attempts, "{e}; retrying from the last checkpoint");
                    // The instance is back at the checkpoint's state: so must
                    // the position be. Dropping the reader drops what it read ahead.
                    let resume = match &worker.committed {
                        Some(seq) => StartPosition::AfterSequenceNumber(seq.clone()),
                        None => StartPosition::TrimHorizon,
                    };
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

/// A shard's moving parts between batches.
struct Worker {
    shared: Arc<Shared>,
    shard_id: String,
    /// `None` only while a call runs on the blocking pool.
    instance: Option<PluginInstance>,
    /// Sequence number of the last committed checkpoint.
    committed: Option<String>,
    /// Sequence number processed up to but not yet committed.
    position: Option<String>,
    uncommitted_batches: u32,
}

impl Worker {
    fn take(&mut self) -> anyhow::Result<PluginInstance> {
        self.instance.take().context("plugin instance lost after a failed call")
    }

    /// Processes one batch. The outer error stops the shard (sink or store
    /// failure); the inner one is the plugin's, and the batch may be retried.
    async fn process(&mut self, records: PackedBatch) -> anyhow::Result<Result<(), PluginError>> {
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
        self.shared.sink.write(&processed.output).await?;
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
            Ok(output) => self.shared.sink.write(&output).await,
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
        let (_, output) = blocking(instance, move |i| shutdown_output(i, reason)).await?;
        self.shared.sink.write(&output?).await
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
}

/// The plugin's last call; its output still goes to the sink.
fn shutdown_output(instance: &mut PluginInstance, reason: ShutdownReason) -> anyhow::Result<PluginOutput> {
    Ok(instance.shutdown(reason)?)
}
