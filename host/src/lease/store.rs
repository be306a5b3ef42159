//! The lease keeper behind the consumer's two seams: a [`CheckpointStore`]
//! whose commits are fenced by the lease (position and state in one
//! conditional write), and an [`Ownership`] that renews, takes, hands off
//! and releases.

use super::keeper::LeaseKeeper;
use super::{Commit, LeaseError, LeaseTable, StateRef, StateWrite, SHARD_END};
use crate::checkpoint::{Checkpoint, CheckpointStore, CommitError, ShardKey};
use crate::ownership::{Changes, Ownership};
use crate::progress::LeaseCounts;
use crate::source::ShardInfo;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// States up to this size ride inside the lease item; bigger ones are chunks.
const INLINE_STATE: usize = 4 * 1024;
/// How long a commit rides out table errors (an outage, throttling) before
/// the shard fails. Retrying is safe: every attempt is fenced.
const COMMIT_PATIENCE: Duration = Duration::from_secs(120);
/// The longest wait between two attempts.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);
/// The biggest plugin state a lease carries (chunks are written before each
/// commit: bigger states would make every commit slow and costly).
pub const MAX_STATE_BYTES: usize = 16 * 1024 * 1024;

/// One worker of a group: its keeper and the table.
pub struct LeaseStore {
    table: Arc<dyn LeaseTable>,
    /// Renewals, takes and commits go through it one at a time, so a renewal
    /// and a commit of one lease never race on its counter.
    keeper: tokio::sync::Mutex<LeaseKeeper>,
    lease_duration: Duration,
    /// What the keeper held after its last write (for `owns`, which cannot wait).
    owned: Mutex<BTreeSet<String>>,
    /// Shards whose lease exists (created or seen), so listings create only new ones.
    known: Mutex<BTreeSet<String>>,
    /// Per shard: the state version of its last commit or load.
    versions: Mutex<BTreeMap<String, u64>>,
    /// Shards whose last known state is in chunks (their old chunks are
    /// deleted after the next commit, even if that one is inline).
    chunked: Mutex<BTreeSet<String>>,
    /// For the status line and metrics (`held` is filled in when read).
    stats: Mutex<LeaseCounts>,
    /// "dynamodb table NAME", for the operator.
    location: String,
    /// This worker's id (also inside the keeper, which is often locked).
    worker_id: String,
}

impl std::fmt::Debug for LeaseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseStore").field("location", &self.location).finish()
    }
}

impl LeaseStore {
    /// Worker `worker_id` of the group sharing `table`.
    pub fn new(table: Arc<dyn LeaseTable>, worker_id: &str, lease_duration: Duration, location: String) -> Self {
        LeaseStore {
            table,
            keeper: tokio::sync::Mutex::new(LeaseKeeper::new(worker_id, lease_duration)),
            lease_duration,
            owned: Mutex::default(),
            known: Mutex::default(),
            versions: Mutex::default(),
            chunked: Mutex::default(),
            stats: Mutex::new(LeaseCounts { workers: 1, ..LeaseCounts::default() }),
            location,
            worker_id: worker_id.into(),
        }
    }

    /// Refuses to start when another live worker already uses this id (its
    /// leases would be indistinguishable from ours). Leases left by an
    /// earlier run with the id are fine: their counters stand still.
    pub async fn check_worker_id(&self) -> anyhow::Result<()> {
        let mine = |leases: Vec<super::Lease>| -> BTreeMap<String, u64> {
            leases
                .into_iter()
                .filter(|l| l.owner.as_deref() == Some(&self.worker_id))
                .map(|l| (l.key, l.counter))
                .collect()
        };
        let before = mine(self.table.scan().await?);
        if before.is_empty() {
            return Ok(());
        }
        eprintln!(
            "worker id {} holds {} lease(s) in {}: checking for {:?} that no live worker uses it",
            self.worker_id,
            before.len(),
            self.location,
            self.lease_duration
        );
        tokio::time::sleep(self.lease_duration).await;
        let after = mine(self.table.scan().await?);
        if let Some(key) =
            after.iter().find(|(key, counter)| before.get(*key).is_some_and(|c| c != *counter)).map(|(k, _)| k)
        {
            anyhow::bail!(
                "worker id {} is live in the group (its lease on {key} is being renewed): give each worker its own \
                 --worker-id, or leave it out for a unique one",
                self.worker_id
            );
        }
        Ok(())
    }

    /// Writes a big state's chunks, riding out table errors like a commit.
    async fn put_state(&self, shard: &str, version: u64, layout: u32, bytes: &[u8]) -> Result<StateRef, CommitError> {
        let mut delay = Duration::from_millis(100);
        let give_up = Instant::now() + COMMIT_PATIENCE;
        loop {
            match self.table.put_state(shard, version, layout, bytes).await {
                Ok(state) => return Ok(state),
                Err(e) if Instant::now() + delay < give_up => {
                    tracing::warn!(shard, "writing the state failed, retrying in {delay:?}: {e:#}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                }
                Err(LeaseError::Table(e)) => return Err(CommitError::Store(e)),
                Err(conflict) => return Err(CommitError::Store(conflict.into())),
            }
        }
    }

    fn note_owned(&self, keeper: &LeaseKeeper) {
        if let Ok(mut owned) = self.owned.lock() {
            *owned = keeper.held().map(String::from).collect();
        }
    }

    /// Commits, riding out table errors for a while. A retried write may
    /// have succeeded the first time (the answer was lost): the lease then
    /// shows this worker's commit, which counts as done.
    async fn commit_fenced(&self, shard: &str, commit: &Commit) -> Result<(), CommitError> {
        let mut delay = Duration::from_millis(100);
        let give_up = Instant::now() + COMMIT_PATIENCE;
        let mut retried = false;
        loop {
            let mut keeper = self.keeper.lock().await;
            if retried && !keeper.holds(shard) {
                // A renewal found the lease moved while this commit waited
                // (our own write may have landed unanswered) and dropped it:
                // the shard is being stopped. Adopting the lease now would
                // hold it with nothing running it; left alone, it expires
                // and is taken again, resuming from its last checkpoint.
                self.note_owned(&keeper);
                return Err(CommitError::LeaseLost {
                    shard_id: shard.into(),
                    reason: "dropped at renewal while the commit was retried".into(),
                });
            }
            let result = keeper.commit(self.table.as_ref(), shard, commit).await;
            match result {
                Ok(_) => {
                    self.note_owned(&keeper);
                    return Ok(());
                }
                Err(LeaseError::Conflict(conflict)) => {
                    if retried {
                        if let Ok(Some(lease)) = self.table.get(shard).await {
                            let me = Some(keeper.id());
                            if lease.owner.as_deref() == me && lease.state_version == commit.state_version {
                                keeper.adopt(shard, lease.counter);
                                self.note_owned(&keeper);
                                return Ok(());
                            }
                        }
                    }
                    self.note_owned(&keeper);
                    if let Ok(mut stats) = self.stats.lock() {
                        stats.lost += 1;
                    }
                    return Err(CommitError::LeaseLost {
                        shard_id: shard.into(),
                        reason: format!("another worker took the lease ({conflict})"),
                    });
                }
                Err(LeaseError::Table(e)) if Instant::now() + delay < give_up => {
                    drop(keeper);
                    tracing::warn!(shard, "lease commit failed, retrying in {delay:?}: {e:#}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                    retried = true;
                }
                Err(LeaseError::Table(e)) => return Err(CommitError::Store(e)),
            }
        }
    }
}

#[async_trait::async_trait]
impl CheckpointStore for LeaseStore {
    async fn load(&self, key: &ShardKey) -> anyhow::Result<Option<Checkpoint>> {
        let Some(lease) = self.table.get(&key.shard_id).await? else { return Ok(None) };
        if let Ok(mut versions) = self.versions.lock() {
            versions.insert(key.shard_id.clone(), lease.state_version);
        }
        if matches!(lease.state, Some(StateRef::Chunked { .. })) {
            if let Ok(mut chunked) = self.chunked.lock() {
                chunked.insert(key.shard_id.clone());
            }
        }
        if lease.checkpoint.is_none() && lease.state.is_none() {
            return Ok(None);
        }
        let state = match &lease.state {
            None => None,
            Some(state) => {
                let layout = match state {
                    StateRef::Inline { layout, .. } | StateRef::Chunked { layout, .. } => *layout,
                };
                Some((layout, self.table.get_state(&key.shard_id, state).await?))
            }
        };
        let shard_end = lease.ended();
        Ok(Some(Checkpoint {
            sequence_number: lease.checkpoint.filter(|c| c != SHARD_END),
            sub_sequence_number: lease.sub_sequence,
            shard_end,
            state,
        }))
    }

    async fn commit(&self, key: &ShardKey, checkpoint: &Checkpoint) -> Result<(), CommitError> {
        let shard = key.shard_id.as_str();
        let version = self.versions.lock().map(|v| v.get(shard).copied().unwrap_or(0)).unwrap_or(0) + 1;
        let state = match &checkpoint.state {
            None => None,
            Some((_, bytes)) if bytes.len() > MAX_STATE_BYTES => {
                return Err(CommitError::Store(anyhow::anyhow!(
                    "the plugin's state of shard {shard} is {} bytes; a lease table carries at most {} MiB per \
                     shard: keep less state, or run without --lease-table",
                    bytes.len(),
                    MAX_STATE_BYTES >> 20
                )));
            }
            Some((layout, bytes)) if bytes.len() <= INLINE_STATE => {
                Some(StateRef::Inline { layout: *layout, bytes: bytes.clone() })
            }
            // Chunks are written before the lease points at them, outside the
            // keeper's lock: a big state does not hold up other shards' renewals.
            Some((layout, bytes)) => Some(self.put_state(shard, version, *layout, bytes).await?),
        };
        let position =
            if checkpoint.shard_end { Some(SHARD_END.to_string()) } else { checkpoint.sequence_number.clone() };
        let write = match (&state, checkpoint.shard_end) {
            (Some(state), _) => StateWrite::Set(state.clone()),
            // A shard's end keeps its last state (for its children).
            (None, true) => StateWrite::Keep,
            (None, false) => StateWrite::Clear,
        };
        let commit = Commit {
            checkpoint: position,
            sub_sequence: checkpoint.sub_sequence_number,
            state_version: version,
            state: write,
        };
        self.commit_fenced(shard, &commit).await?;
        if let Ok(mut versions) = self.versions.lock() {
            versions.insert(shard.to_string(), version);
        }
        // Older versions (and chunks of refused commits) go in the background.
        let keep = match state {
            Some(StateRef::Chunked { tag, .. }) => Some(tag),
            // Inline now, or cleared: the chunks of earlier versions, if any, all go.
            Some(StateRef::Inline { .. }) => Some(format!("{version:020}")),
            None if !checkpoint.shard_end => Some(format!("{version:020}")),
            None => None,
        };
        let had_chunks = self.chunked.lock().map(|mut c| {
            let had = c.contains(shard);
            match &keep {
                Some(tag) if tag.contains('.') => c.insert(shard.to_string()),
                Some(_) => c.remove(shard),
                None => false,
            };
            had
        });
        let cleanup = keep.filter(|tag| tag.contains('.') || had_chunks.unwrap_or(true));
        if let Some(keep) = cleanup {
            let (table, shard) = (self.table.clone(), shard.to_string());
            tokio::spawn(async move {
                if let Err(e) = table.drop_states(&shard, &keep).await {
                    tracing::debug!(shard, "cleaning up old states failed (tried again next commit): {e}");
                }
            });
        }
        Ok(())
    }

    async fn shard_ended(&self, key: &ShardKey) -> anyhow::Result<bool> {
        // The lease alone: a parent's (possibly chunked) state is not fetched
        // each time a child checks on it.
        Ok(self.table.get(&key.shard_id).await?.is_some_and(|l| l.ended()))
    }

    fn location(&self) -> String {
        self.location.clone()
    }
}

#[async_trait::async_trait]
impl Ownership for LeaseStore {
    async fn cycle(&self, shards: &[ShardInfo]) -> anyhow::Result<Changes> {
        let new: Vec<&ShardInfo> = {
            let known = self.known.lock().map_err(|_| anyhow::anyhow!("lease store lock poisoned"))?;
            shards.iter().filter(|s| !known.contains(&s.shard_id)).collect()
        };
        for shard in new {
            let parents: Vec<String> = shard.parents().map(String::from).collect();
            self.table.create(&shard.shard_id, &parents).await?;
            if let Ok(mut known) = self.known.lock() {
                known.insert(shard.shard_id.clone());
            }
        }
        let mut keeper = self.keeper.lock().await;
        let cycle = keeper.cycle(self.table.as_ref(), Instant::now()).await;
        self.note_owned(&keeper);
        let cycle = cycle?;
        if let Ok(mut stats) = self.stats.lock() {
            stats.workers = cycle.workers;
            stats.lost += cycle.lost.len() as u64;
            stats.taken = keeper.takes.clone();
        }
        drop(keeper);
        // Ended shards the stream no longer lists (trimmed) need no lease:
        // whoever sees one first deletes it (conditional, so once).
        let listed: BTreeSet<&str> = shards.iter().map(|s| s.shard_id.as_str()).collect();
        for (key, counter) in cycle.ended.iter().filter(|(key, _)| !shards.is_empty() && !listed.contains(key.as_str()))
        {
            match self.table.delete(key, *counter).await {
                Ok(()) => tracing::info!(shard = %key, "deleted the lease of a shard that aged out of the stream"),
                Err(LeaseError::Conflict(_)) => {}
                Err(e) => tracing::debug!(shard = %key, "deleting an aged-out lease failed (tried again later): {e}"),
            }
        }
        Ok(Changes {
            taken: cycle.taken.into_iter().map(|l| l.key).collect(),
            lost: cycle.lost,
            hand_off: cycle.hand_off,
        })
    }

    fn owns(&self, shard_id: &str) -> bool {
        self.owned.lock().map(|o| o.contains(shard_id)).unwrap_or(false)
    }

    async fn release(&self, shard_id: &str) -> anyhow::Result<()> {
        let mut keeper = self.keeper.lock().await;
        let result = keeper.release(self.table.as_ref(), shard_id).await;
        self.note_owned(&keeper);
        Ok(result?)
    }

    async fn release_all(&self) -> anyhow::Result<()> {
        let mut keeper = self.keeper.lock().await;
        let result = keeper.release_all(self.table.as_ref()).await;
        self.note_owned(&keeper);
        Ok(result?)
    }

    fn interval(&self) -> Duration {
        self.lease_duration / 3
    }

    fn summary(&self) -> Option<String> {
        let counts = self.counts()?;
        let mut line =
            format!("worker {}: {} lease(s), {} worker(s) live", self.worker_id, counts.held, counts.workers);
        if !counts.taken.is_empty() {
            let taken: Vec<String> = counts.taken.iter().map(|(kind, n)| format!("{n} {kind}")).collect();
            line.push_str(&format!(", taken {}", taken.join(", ")));
        }
        if counts.lost > 0 {
            line.push_str(&format!(", {} lost", counts.lost));
        }
        Some(line)
    }

    fn counts(&self) -> Option<LeaseCounts> {
        let mut counts = self.stats.lock().map(|s| s.clone()).unwrap_or_default();
        counts.held = self.owned.lock().map(|o| o.len()).unwrap_or(0);
        Some(counts)
    }
}

#[cfg(test)]
mod tests;
