//! The lease keeper behind the consumer's two seams: a [`CheckpointStore`]
//! whose commits are fenced by the lease and its take (position and state
//! in one conditional write), and an [`Ownership`] that keeps the leases on
//! three timers of its own, apart from the consumer's loop: renewals,
//! scans (takes, hand-off requests, cleanup) and expiry.

use super::keeper::{bounded, CommitFailed, LeaseKeeper};
use super::{Commit, LeaseError, LeaseTable, PreSwapRef, StateRef, StateWrite, SHARD_END};
use crate::checkpoint::{Checkpoint, CheckpointStore, CommitError, PreSwapPoint, ShardKey, Tenure};
use crate::ownership::{Changes, Listing, Ownership};
use crate::progress::LeaseCounts;
use crate::shutdown::Shutdown;
use crate::source::ShardInfo;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The longest wait between two attempts of a commit. A commit rides out
/// table errors while its take lasts (a lease duration from the last
/// renewal), then the shard stops: every attempt is fenced, so retrying is
/// safe, and past that point another worker may hold the shard.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);

/// The biggest plugin state a lease carries (chunks are written before each
/// commit: bigger states would make every commit slow and costly).
pub const MAX_STATE_BYTES: usize = 16 * 1024 * 1024;

/// One worker of a group: its keeper and the table.
pub struct LeaseStore {
    table: Arc<dyn LeaseTable>,
    /// Holds no lock across table calls: renewals, takes and commits of
    /// different leases go on side by side.
    keeper: LeaseKeeper,
    lease_duration: Duration,
    /// Shards whose lease exists (created or seen), so listings create only new ones.
    known: Mutex<BTreeSet<String>>,
    /// Per shard: the state version of its last commit or load.
    versions: Mutex<BTreeMap<String, u64>>,
    /// Per shard: the logic of its last commit or load, and how many
    /// commits in a row it has made (a group's probation shows in them).
    logics: Mutex<BTreeMap<String, (String, u64)>>,
    /// Per shard: where its current take writes its state.
    slots: Mutex<BTreeMap<String, slots::Slots>>,
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
            keeper: LeaseKeeper::new(worker_id, lease_duration),
            lease_duration,
            known: Mutex::default(),
            versions: Mutex::default(),
            logics: Mutex::default(),
            slots: Mutex::default(),
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
    async fn put_state(
        &self,
        shard: &str,
        tenure: Tenure,
        (tag, layout, bytes): (&str, u32, &[u8]),
    ) -> Result<StateRef, CommitError> {
        let mut delay = Duration::from_millis(100);
        loop {
            let error = match self.table.put_state(shard, tag, layout, bytes).await {
                Ok(state) => return Ok(state),
                Err(LeaseError::Table(e)) => e,
                Err(conflict) => return Err(CommitError::Store(conflict.into())),
            };
            self.retry_while_held(shard, tenure, &mut delay, "writing the state", error).await?;
        }
    }

    /// Waits before another attempt of a write that the table did not
    /// answer, or stops the shard once its take ran out unrenewed.
    async fn retry_while_held(
        &self,
        shard: &str,
        tenure: Tenure,
        delay: &mut Duration,
        what: &str,
        error: anyhow::Error,
    ) -> Result<(), CommitError> {
        if !self.keeper.valid(shard, tenure) {
            return Err(CommitError::LeaseLost {
                shard_id: shard.into(),
                reason: format!(
                    "its lease went {:?} without a renewal, so another worker may hold it now ({what} failed: \
                     {error:#})",
                    self.lease_duration
                ),
            });
        }
        tracing::warn!(shard, "{what} failed, retrying in {delay:?}: {error:#}");
        tokio::time::sleep(*delay).await;
        *delay = (*delay * 2).min(MAX_RETRY_DELAY);
        Ok(())
    }

    /// Commits for the take `tenure`, riding out table errors while the
    /// take lasts. A write whose answer was lost is found by its nonce.
    async fn commit_fenced(&self, shard: &str, tenure: Tenure, commit: &Commit) -> Result<(), CommitError> {
        let mut delay = Duration::from_millis(100);
        loop {
            let error = match self.keeper.commit(self.table.as_ref(), shard, tenure, commit).await {
                Ok(_) => return Ok(()),
                Err(CommitFailed::Lost(reason)) => {
                    return Err(CommitError::LeaseLost { shard_id: shard.into(), reason });
                }
                Err(CommitFailed::Unknown(e)) => e,
                Err(CommitFailed::Denied(e)) => return Err(CommitError::Store(e)),
            };
            self.retry_while_held(shard, tenure, &mut delay, "the lease commit", error).await?;
        }
    }

    /// Creates the leases of listed shards not seen yet, a few at a time.
    async fn create_new(&self, shards: &[ShardInfo]) -> anyhow::Result<()> {
        let new: Vec<(String, Vec<String>)> = {
            let known = self.known.lock().map_err(|_| anyhow::anyhow!("lease store lock poisoned"))?;
            shards
                .iter()
                .filter(|s| !known.contains(&s.shard_id))
                .map(|s| (s.shard_id.clone(), s.parents().map(String::from).collect()))
                .collect()
        };
        let mut creates = Vec::with_capacity(new.len());
        for (shard, parents) in new {
            let table = self.table.clone();
            creates.push(async move { table.create(&shard, &parents).await.map(|()| shard) });
        }
        let created: Vec<Result<String, LeaseError>> = bounded(creates).await;
        let mut known = self.known.lock().map_err(|_| anyhow::anyhow!("lease store lock poisoned"))?;
        for created in created {
            known.insert(created?);
        }
        Ok(())
    }

    /// Registers new shards, scans, takes, asks, and deletes the leases of
    /// shards gone from the stream that nobody needs.
    async fn scan_round(&self, listing: &Listing) -> anyhow::Result<Changes> {
        self.create_new(&listing.shards).await?;
        let listed: BTreeSet<String> = listing.shards.iter().map(|s| s.shard_id.clone()).collect();
        let scanned = self.keeper.scan_and_take(self.table.as_ref(), Some((&listed, listing.at))).await?;
        for (key, counter) in &scanned.cleanup {
            match self.table.delete(key, *counter).await {
                Ok(()) => tracing::info!(shard = %key, "deleted the lease of a shard gone from the stream"),
                Err(LeaseError::Conflict(_)) => {}
                Err(e) => {
                    tracing::debug!(shard = %key, "deleting a lease of a shard gone from the stream failed (tried again later): {e}")
                }
            }
        }
        Ok(Changes {
            taken: scanned.taken.into_iter().map(|l| l.key).collect(),
            lost: Vec::new(),
            hand_off: scanned.hand_off,
        })
    }

    /// One round of everything at once (`host leases import`, tests):
    /// expiry, renewals, then a scan with `shards` as the listing.
    pub async fn cycle(&self, shards: &[ShardInfo]) -> anyhow::Result<Changes> {
        let mut changes = Changes { lost: self.keeper.expire(), ..Changes::default() };
        let renewed = self.keeper.renew(self.table.as_ref()).await;
        changes.lost.extend(renewed.lost);
        changes.hand_off.extend(renewed.hand_off);
        let scanned = self.scan_round(&Listing::now(shards.to_vec())).await?;
        changes.taken = scanned.taken;
        changes.hand_off.extend(scanned.hand_off);
        Ok(changes)
    }

    /// The lease duration this worker works with.
    pub fn lease_duration(&self) -> Duration {
        self.lease_duration
    }

    /// Commits in a row under `logic`, this one included.
    fn logic_commits(&self, shard: &str, logic: Option<&str>) -> u64 {
        let Some(logic) = logic else { return 0 };
        let logics = self.logics.lock();
        match logics.as_deref().ok().and_then(|l| l.get(shard)) {
            Some((last, commits)) if last == logic => commits.saturating_add(1),
            _ => 1,
        }
    }

    /// A lease's pre-swap point with its state. A passing error fails the
    /// load (tried again, as for the state itself); one whose chunks are
    /// gone or corrupt is left out with a warning: the checkpoint stands
    /// without it, and a rollback then carries the state over.
    async fn load_pre_swap(&self, shard: &str, pre: &PreSwapRef) -> Result<Option<Arc<PreSwapPoint>>, LeaseError> {
        let state = match &pre.state {
            None => None,
            Some(state) => match self.table.get_state(shard, state).await {
                Ok(bytes) => Some((layout_of(state), bytes)),
                Err(LeaseError::Denied(e)) => {
                    tracing::warn!(shard, "its pre-swap state is unreadable; a rollback will not replay it: {e:#}");
                    return Ok(None);
                }
                Err(e) => return Err(e),
            },
        };
        Ok(Some(Arc::new(PreSwapPoint {
            id: rand::random(),
            logic: pre.logic.clone(),
            sequence_number: pre.checkpoint.clone(),
            sub_sequence_number: pre.sub_sequence,
            state,
        })))
    }

    /// The table (the group's logic lives there too).
    pub fn table(&self) -> Arc<dyn LeaseTable> {
        self.table.clone()
    }

    /// This worker's id in the group.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// How often the table is scanned: the period a worker reads the
    /// group's logic on too.
    pub fn scan_every(&self) -> Duration {
        self.keeper.scan_every()
    }
}

#[async_trait::async_trait]
impl CheckpointStore for LeaseStore {
    async fn load(&self, key: &ShardKey) -> anyhow::Result<Option<Checkpoint>> {
        let Some(lease) = self.table.get(&key.shard_id).await? else { return Ok(None) };
        if let Ok(mut versions) = self.versions.lock() {
            versions.insert(key.shard_id.clone(), lease.state_version);
        }
        if let (Some(logic), Ok(mut logics)) = (&lease.logic, self.logics.lock()) {
            logics.insert(key.shard_id.clone(), (logic.clone(), lease.logic_commits));
        }
        if lease.checkpoint.is_none() && lease.state.is_none() {
            return Ok(None);
        }
        let state = match &lease.state {
            None => None,
            Some(state) => Some((layout_of(state), self.table.get_state(&key.shard_id, state).await?)),
        };
        let pre_swap = match &lease.pre_swap {
            None => None,
            Some(pre) => self.load_pre_swap(&key.shard_id, pre).await?,
        };
        let shard_end = lease.ended();
        Ok(Some(Checkpoint {
            sequence_number: lease.checkpoint.filter(|c| c != SHARD_END),
            sub_sequence_number: lease.sub_sequence,
            shard_end,
            state,
            logic: lease.logic,
            logic_commits: lease.logic_commits,
            pre_swap,
        }))
    }

    async fn commit(&self, key: &ShardKey, tenure: Tenure, checkpoint: &Checkpoint) -> Result<(), CommitError> {
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
            // Chunks are written before the lease points at them, outside any
            // lock: a big state does not hold up other shards' renewals.
            Some((layout, bytes)) => {
                let tag = self.slot(shard, tenure, version);
                Some(self.put_state(shard, tenure, (&tag, *layout, bytes)).await?)
            }
        };
        let pre_swap = self.pre_swap_write(shard, tenure, version, checkpoint.pre_swap.as_ref()).await?;
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
            logic: checkpoint.logic.clone(),
            logic_commits: self.logic_commits(shard, checkpoint.logic.as_deref()),
            pre_swap,
        };
        self.commit_fenced(shard, tenure, &commit).await?;
        if let Ok(mut versions) = self.versions.lock() {
            versions.insert(shard.to_string(), version);
        }
        if let (Some(logic), Ok(mut logics)) = (&commit.logic, self.logics.lock()) {
            logics.insert(shard.to_string(), (logic.clone(), commit.logic_commits));
        }
        let pre = checkpoint.pre_swap.as_ref().map(|p| p.id);
        self.committed(shard, tenure, state.is_some(), checkpoint.shard_end, pre);
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
    fn keep(
        self: Arc<Self>,
        listing: watch::Receiver<Arc<Listing>>,
        changes: mpsc::UnboundedSender<Changes>,
        stop: Shutdown,
    ) -> tokio::task::JoinHandle<()> {
        keeping::keep(self, listing, changes, stop)
    }

    fn owns(&self, shard_id: &str) -> Option<Tenure> {
        self.keeper.tenure(shard_id)
    }

    fn holds(&self, shard_id: &str, tenure: Tenure) -> bool {
        self.keeper.valid(shard_id, tenure)
    }

    async fn release(&self, shard_id: &str, tenure: Tenure) -> anyhow::Result<()> {
        self.keeper.release(self.table.as_ref(), shard_id, tenure).await;
        Ok(())
    }

    async fn release_all(&self) -> anyhow::Result<()> {
        self.keeper.release_all(self.table.as_ref()).await;
        Ok(())
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
        let (taken, lost, workers, _failed) = self.keeper.stats();
        let held = self.keeper.held().into_iter().filter(|k| self.keeper.tenure(k).is_some()).count();
        Some(LeaseCounts { held, workers: workers.max(1), taken, lost })
    }
}

/// A state's layout version.
fn layout_of(state: &StateRef) -> u32 {
    match state {
        StateRef::Inline { layout, .. } | StateRef::Chunked { layout, .. } => *layout,
    }
}

mod keeping;
mod slots;

#[cfg(test)]
mod tests;
