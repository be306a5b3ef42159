//! The failure policy: what happens to a batch the plugin fails on. One
//! implementation, run by `host run`'s shard workers and by `host test`, so
//! an author sees offline exactly what production does to a bad record.
//!
//! A failure is retried (`--retries`, back-off with jitter, from the state
//! before it); a failure naming record `i` keeps the records before `i`; a
//! failure naming none is bisected until the records that fail alone are
//! found. Those are poison: dead-lettered, or the shard stops right before
//! them. Every step that keeps records is checkpointed before the next call,
//! because a failed instance is rebuilt from the last checkpoint.
//!
//! The policy knows nothing of Kinesis or checkpoint stores: it drives a
//! [`PolicyShard`], which the worker and the replay implement.

use crate::batch::{PackedBatch, Position};
use crate::dead_letter::{DeadLetter, DeadLetterReason, DeadLetterSink, LetterSource};
use crate::plugin::{PluginError, PluginOutput, Processed};
use crate::progress::Progress;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// What a shard does when the plugin fails (`--retries`, `--dead-letter`,
/// `--max-record-age`).
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
    /// The logic crashing on this many records in a row is a bug, not bad
    /// data: the shard stops instead of dead-lettering the stream (0: no
    /// limit). A record the logic refuses (a `ProcessError`) never counts.
    pub crash_limit: u32,
}

/// The default `--crash-limit`.
pub const CRASH_LIMIT: u32 = 3;

impl Default for FailurePolicy {
    fn default() -> Self {
        FailurePolicy { retries: 3, dead_letter: None, max_record_age: None, crash_limit: CRASH_LIMIT }
    }
}

/// What a batch came to.
#[derive(Debug)]
pub enum BatchVerdict {
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

/// Progress since the last checkpoint.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Uncommitted {
    /// Batches processed since the last commit.
    pub batches: u32,
    /// Records processed since the last commit.
    pub records: u64,
}

/// One shard's moving parts, as the policy drives them.
#[allow(async_fn_in_trait)] // used generically, never as `dyn`
pub trait PolicyShard {
    /// The stream and shard, for messages and dead letters.
    fn names(&self) -> (&str, &str);

    /// A record as messages name it: by sequence number in a run (a
    /// replay names the input line it came from).
    fn describe(&self, sequence_number: &str, _sub_sequence_number: u64, partition_key: &[u8]) -> String {
        format!("record {sequence_number} (partition key {:?})", String::from_utf8_lossy(partition_key))
    }

    /// Content hash of the plugin in force (on dead letters).
    fn plugin_sha256(&self) -> String;

    /// Counters: retries and dead letters are counted here.
    fn progress(&self) -> &Progress;

    /// The clock records' ages are measured against (ms since the epoch).
    fn now_millis(&self) -> i64;

    /// One `process` call. The outer error is the host's; the inner one the
    /// plugin's (after a trap the instance has been rebuilt).
    async fn process(&mut self, batch: Arc<PackedBatch>) -> anyhow::Result<Result<Processed, PluginError>>;

    /// Releases `output` (the first `count` records of `slice` produced it)
    /// and moves the position past those records.
    async fn accept(&mut self, slice: &PackedBatch, count: usize, output: &PluginOutput) -> anyhow::Result<()>;

    /// Moves the position past a record that was set aside.
    fn skip_to(&mut self, position: Position);

    /// Fails when this shard's output may no longer be written here (a
    /// lease lost or run out): dead letters are output too.
    fn may_write(&self) -> anyhow::Result<()> {
        Ok(())
    }

    /// Snapshots the plugin and commits position and state together; clears
    /// [`Uncommitted`].
    async fn commit(&mut self) -> anyhow::Result<()>;

    /// Rebuilds the instance from the last checkpoint after a reported
    /// failure (a trap has already done so).
    fn reset(&mut self, failure: &PluginError) -> anyhow::Result<()>;

    /// Waits before retry `attempt` (real time in a run, none in a replay).
    async fn back_off(&mut self, attempt: u32);

    /// New logic is still on probation: a failure rolls the swap back.
    fn in_probation(&self) -> bool;

    /// What was processed since the last checkpoint.
    fn uncommitted(&mut self) -> &mut Uncommitted;

    /// Drops the progress since the last checkpoint (reading resumes there).
    fn forget_uncommitted(&mut self);
}

/// The policy of one shard, with what it remembers between batches.
#[derive(Debug)]
pub struct Policy {
    pub config: FailurePolicy,
    /// Commit a checkpoint every this many batches.
    checkpoint_every: u32,
    /// After a `Replay`: records to go during which every batch is
    /// checkpointed, so the failing batch is met with nothing uncommitted.
    careful_records: u64,
    /// Records in a row the logic crashed on (each one alone, so poison).
    crashes: u32,
}

impl Policy {
    /// The policy for a shard that checkpoints every `checkpoint_every` batches.
    pub fn new(config: FailurePolicy, checkpoint_every: u32) -> Self {
        Policy { config, checkpoint_every: checkpoint_every.max(1), careful_records: 0, crashes: 0 }
    }

    /// Runs one batch through the plugin under the policy.
    pub async fn handle<S: PolicyShard>(&mut self, shard: &mut S, batch: PackedBatch) -> anyhow::Result<BatchVerdict> {
        let retries = self.config.retries;
        let batch = self.set_aside_expired(shard, batch).await?;
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
                let (output, failure) = match shard.process(slice.clone()).await? {
                    Ok(processed) => (processed.output, processed.failure),
                    Err(trap) => (PluginOutput::default(), Some(trap)),
                };
                let Some(failure) = failure else {
                    self.accept(shard, &slice, slice.len(), &output).await?;
                    if failed_before {
                        shard.commit().await?;
                    }
                    lo = hi;
                    continue;
                };
                // New logic that crashes is a failed swap; a record it refuses
                // (a `ProcessError`) is bad data, for the failure policy.
                if shard.in_probation() && !matches!(failure, PluginError::Failed { .. }) {
                    return Ok(BatchVerdict::RollBack(failure));
                }
                // Only the plugin failing *on records* makes records poison.
                // An instance that cannot even start again (state it cannot
                // restore, an init that fails) stops the shard with the reason.
                if !matches!(failure, PluginError::Failed { .. } | PluginError::Trapped { call: "process", .. }) {
                    let shard_id = shard.names().1.to_string();
                    return Err(anyhow::Error::new(failure).context(format!("the plugin of {shard_id} cannot go on")));
                }
                let pending = *shard.uncommitted();
                if !failed_before && pending.batches > 0 {
                    // The instance is rebuilt from the last checkpoint, which
                    // lacks the batches since: read them again.
                    shard.reset(&failure)?;
                    self.careful_records = pending.records + n as u64;
                    shard.forget_uncommitted();
                    tracing::warn!(shard = %shard.names().1, "{failure}; replaying from the last checkpoint");
                    return Ok(BatchVerdict::Replay);
                }
                failed_before = true;
                let retryable =
                    matches!(failure, PluginError::Trapped { .. } | PluginError::Failed { retryable: true, .. });
                let index = match &failure {
                    PluginError::Failed { record_index: Some(i), .. } => Some(*i as usize),
                    _ => None,
                };
                if let Some(i) = index.filter(|i| *i > 0) {
                    // The plugin vouches for the records before `i`.
                    self.accept(shard, &slice, i, &output).await?;
                    shard.commit().await?;
                    lo += i;
                    attempts = 1;
                }
                shard.reset(&failure)?;
                if retryable && !bisecting && attempts <= retries {
                    shard.progress().plugin_retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(shard = %shard.names().1, attempt = attempts, "{failure}; retrying");
                    shard.back_off(attempts).await;
                    continue;
                }
                if index.is_some() || hi - lo == 1 {
                    // Record `lo` fails on its own. Crashes on record after
                    // record are the logic's bug: the shard stops here.
                    self.crashes = if matches!(failure, PluginError::Trapped { .. }) { self.crashes + 1 } else { 0 };
                    if self.config.crash_limit > 0 && self.crashes >= self.config.crash_limit {
                        return Ok(BatchVerdict::Stopped(self.broken(shard, &batch, lo, &failure)?));
                    }
                    if let Some(stop) = self.poison(shard, &batch, lo, &failure, attempts).await? {
                        return Ok(BatchVerdict::Stopped(stop));
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
            shard.uncommitted().batches += 1;
            if careful || shard.uncommitted().batches >= self.checkpoint_every {
                shard.commit().await?;
            }
        }
        Ok(BatchVerdict::Done)
    }

    async fn accept<S: PolicyShard>(
        &mut self,
        shard: &mut S,
        slice: &PackedBatch,
        count: usize,
        output: &PluginOutput,
    ) -> anyhow::Result<()> {
        shard.accept(slice, count, output).await?;
        shard.uncommitted().records += count as u64;
        if count > 0 {
            self.crashes = 0;
        }
        Ok(())
    }

    /// The stop message of logic that crashed on `crash_limit` records in a row.
    fn broken<S: PolicyShard>(
        &self,
        shard: &S,
        batch: &PackedBatch,
        index: usize,
        failure: &PluginError,
    ) -> anyhow::Result<String> {
        let view = batch.view();
        let Some(record) = view.get(index) else { anyhow::bail!("record index {index} out of the batch") };
        Ok(format!(
            "the logic looks broken: it crashed on {} records in a row (a bug, not bad data), the last was {}: \
             {}. The shard stopped right before it instead of dead-lettering the stream: fix the plugin (a \
             `ProcessError` refuses a bad record), and a restart resumes at this record (--crash-limit N sets how \
             many crashes in a row mean broken; 0 never stops)",
            self.crashes,
            shard.describe(record.sequence_number(), record.sub_sequence_number(), record.partition_key_bytes()),
            about_record(failure)
        ))
    }

    /// A record the plugin fails on by itself. With a dead-letter sink it
    /// goes there (durably) and the checkpoint moves past it; without one,
    /// the shard stops right before it. Returns the stop message.
    async fn poison<S: PolicyShard>(
        &self,
        shard: &mut S,
        batch: &PackedBatch,
        index: usize,
        failure: &PluginError,
        attempts: u32,
    ) -> anyhow::Result<Option<String>> {
        let view = batch.view();
        let Some(record) = view.get(index) else { anyhow::bail!("poison record index {index} out of the batch") };
        let named =
            shard.describe(record.sequence_number(), record.sub_sequence_number(), record.partition_key_bytes());
        let Some(sink) = self.config.dead_letter.clone() else {
            return Ok(Some(format!(
                "{named} fails: {}; the shard stopped right before it. Pass --dead-letter file:PATH to set such records aside and go on, or fix the plugin: a restart resumes at this record",
                about_record(failure)
            )));
        };
        let letter = letter(shard, &record, DeadLetterReason::Poison, failure.to_string(), attempts);
        tracing::warn!(shard = %shard.names().1, sequence_number = %letter.sequence_number, "dead-lettered {named}: {}", about_record(failure));
        shard.may_write()?;
        sink.write(&[letter]).await?;
        count_dead_letters(shard, DeadLetterReason::Poison, 1);
        shard.skip_to(Position {
            sequence_number: record.sequence_number().to_string(),
            sub_sequence_number: record.sub_sequence_number(),
        });
        shard.commit().await?;
        Ok(None)
    }

    /// Sends records older than `--max-record-age` to the dead-letter sink
    /// and returns the rest.
    async fn set_aside_expired<S: PolicyShard>(
        &self,
        shard: &mut S,
        batch: PackedBatch,
    ) -> anyhow::Result<PackedBatch> {
        let (Some(age), Some(sink)) = (self.config.max_record_age, self.config.dead_letter.clone()) else {
            return Ok(batch);
        };
        let last = batch.last_position();
        let (keep, old) = batch.split_older_than(shard.now_millis() - age.as_millis() as i64);
        if old.is_empty() {
            return Ok(keep);
        }
        let error = format!("older than --max-record-age ({} s) when read", age.as_secs_f64());
        let letters: Vec<DeadLetter> =
            old.view().iter().map(|r| letter(shard, &r, DeadLetterReason::Expired, error.clone(), 0)).collect();
        shard.may_write()?;
        sink.write(&letters).await?;
        count_dead_letters(shard, DeadLetterReason::Expired, letters.len() as u64);
        if let (true, Some(last)) = (keep.is_empty(), last) {
            // All of them: the checkpoint moves past the batch.
            shard.skip_to(last);
            shard.commit().await?;
        }
        Ok(keep)
    }
}

fn letter<S: PolicyShard>(
    shard: &S,
    record: &kinesis_processor_sdk::Record<'_>,
    reason: DeadLetterReason,
    error: String,
    attempts: u32,
) -> DeadLetter {
    let (stream, shard_id) = shard.names();
    let sha256 = shard.plugin_sha256();
    let from = LetterSource { stream, shard_id, plugin_sha256: &sha256 };
    DeadLetter::from_record(record, from, reason, error, attempts, crate::plugin::Clock::System.now_millis())
}

fn count_dead_letters<S: PolicyShard>(shard: &S, reason: DeadLetterReason, n: u64) {
    Progress::bump(&shard.progress().dead_letters, (shard.names().1.to_string(), reason.as_str()), n);
}

/// A failure as said of the one record it names: without the batch index
/// of a `ProcessError` (the record is named beside it).
fn about_record(failure: &PluginError) -> String {
    match failure {
        PluginError::Failed { plugin, message, retryable, .. } => {
            format!("plugin `{plugin}` refused it{}: {message}", if *retryable { " (retryable)" } else { "" })
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
