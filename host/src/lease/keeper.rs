//! One worker's side of the lease protocol, as operations the store runs on
//! timers of their own, never under one lock across table calls:
//! - [`LeaseKeeper::renew`]: every held lease not written lately, a bounded
//!   number at a time; each succeeds or fails on its own;
//! - [`LeaseKeeper::expire`]: a lease not renewed for a lease duration, by
//!   this worker's clock, is dropped (its task stops) before any other worker
//!   can see it expire;
//! - [`LeaseKeeper::scan_and_take`]: takes free or expired leases up to the
//!   fair share (`ceil(leases / live workers)`) and asks the busiest workers
//!   for as many hand-offs as the imbalance needs;
//! - [`LeaseKeeper::commit`] and [`LeaseKeeper::release`].
//!
//! Every take starts a [`Tenure`]: a commit is accepted only from the
//! tenure that holds the lease now. Every write carries a nonce; a write
//! whose answer was lost (or whose SDK retry came back as a failed
//! condition) is read back and recognised as ours. Time comes from the
//! keeper's clock, so tests drive a fake one.

use super::{Commit, Lease, LeaseError, LeaseTable};
use crate::checkpoint::Tenure;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Table calls of one kind (renewals, takes, hand-off requests) in flight
/// at once.
const AT_ONCE: usize = 16;
/// Writes of unknown outcome remembered per lease.
const UNCONFIRMED: usize = 8;

/// How a lease is taken, for the operator's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeKind {
    /// Nobody held it (new, released at a clean stop).
    Free,
    /// Released to this worker at its request.
    HandedOff,
    /// Its owner stopped renewing it for a lease duration.
    Expired,
}

/// This worker's clock (a fake one in tests).
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// A take this worker holds.
#[derive(Debug, Clone)]
struct Held {
    /// The counter after this worker's last write that is known to have landed.
    counter: u64,
    /// The take: the task started from it is the only one that may write.
    tenure: Tenure,
    /// When that write was sent: the lease is this worker's until a lease
    /// duration after (others count from when they saw it land, later).
    renewed: Instant,
    /// Writes to one lease go one at a time: a renewal and a commit would
    /// race on its counter. Other leases are not held up.
    busy: Arc<tokio::sync::Mutex<()>>,
    /// Writes whose answer never came, (nonce, sent): a read that finds
    /// one of them landed counts it.
    unconfirmed: VecDeque<(u64, Instant)>,
}

/// A lease as this worker last scanned it.
#[derive(Debug, Clone, Copy)]
struct Seen {
    counter: u64,
    /// When this worker first saw that counter.
    since: Instant,
    /// When this worker first saw the lease at all.
    first: Instant,
}

/// What the keeper knows, behind a lock never held across a table call.
#[derive(Debug, Default)]
struct Inner {
    held: BTreeMap<String, Held>,
    seen: BTreeMap<String, Seen>,
    /// Leases taken so far, by how.
    takes: BTreeMap<&'static str, u64>,
    /// Takes lost: refused writes, and leases gone a lease duration unrenewed.
    lost: u64,
    /// Workers seen live in the last scan, this one included.
    workers: usize,
    /// Table calls that failed (after the SDK's retries) or went unanswered.
    failed: u64,
    /// A clean stop began: take nothing more.
    closing: bool,
}

/// A renewal's outcome: none when it was not tried (the take ended, or a
/// commit is writing the lease).
type Renewal = (String, Tenure, Option<Result<Lease, CommitFailed>>);

/// A lost take, with why.
pub type Lost = (String, Tenure, String);

/// What a renewal round changed.
#[derive(Debug, Default)]
pub struct Renewed {
    /// Takes whose renewal was refused.
    pub lost: Vec<Lost>,
    /// Takes another worker asked for.
    pub hand_off: Vec<(String, Tenure)>,
    /// Renewals that failed and will be tried again.
    pub failed: usize,
}

/// What a scan changed.
#[derive(Debug, Default)]
pub struct Scanned {
    /// Leases taken, as stored after the take.
    pub taken: Vec<Lease>,
    /// Held takes another worker asked for.
    pub hand_off: Vec<(String, Tenure)>,
    /// Leases of shards gone from the stream that nobody needs any more:
    /// (key, counter as scanned), to delete.
    pub cleanup: Vec<(String, u64)>,
    /// Workers seen live, this one included.
    pub workers: usize,
}

/// Why a commit did not land.
#[derive(Debug)]
pub enum CommitFailed {
    /// The take is over; the task must stop without writing.
    Lost(String),
    /// The table did not answer; the take still holds: try again.
    Unknown(anyhow::Error),
    /// The table refused the write for good (permissions, a missing table):
    /// trying again changes nothing.
    Denied(anyhow::Error),
}

/// One worker's view of the lease table.
pub struct LeaseKeeper {
    /// This worker's id (host name + pid + random suffix in a run).
    me: String,
    /// A lease whose counter has not moved this long is expired.
    lease_duration: Duration,
    inner: Mutex<Inner>,
    /// The number of the next take (0 is a sole host's).
    next_tenure: AtomicU64,
    clock: Clock,
}

impl std::fmt::Debug for LeaseKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseKeeper").field("me", &self.me).field("lease_duration", &self.lease_duration).finish()
    }
}

impl LeaseKeeper {
    /// A worker holding nothing yet, on the monotonic clock.
    pub fn new(me: &str, lease_duration: Duration) -> Self {
        LeaseKeeper::with_clock(me, lease_duration, Arc::new(Instant::now))
    }

    /// A worker holding nothing yet, on `clock`.
    pub fn with_clock(me: &str, lease_duration: Duration, clock: Clock) -> Self {
        LeaseKeeper { me: me.into(), lease_duration, inner: Mutex::default(), next_tenure: AtomicU64::new(1), clock }
    }

    /// The worker's id.
    pub fn id(&self) -> &str {
        &self.me
    }

    /// The lease duration this keeper works with.
    pub fn lease_duration(&self) -> Duration {
        self.lease_duration
    }

    /// How often renewals run: three per lease duration, as KCL's.
    pub fn renew_every(&self) -> Duration {
        self.lease_duration / 3
    }

    /// How often the table is scanned: every 0.4 lease duration. A counter
    /// first seen at one scan is expired at the third scan after (1.2 lease
    /// durations: never at the second, whatever the scans' jitter), so a
    /// dead worker's lease is taken within 1.6 lease durations.
    pub fn scan_every(&self) -> Duration {
        self.lease_duration * 2 / 5
    }

    /// The longest a table call may take before its outcome counts as unknown.
    fn call_timeout(&self) -> Duration {
        (self.lease_duration / 6).max(Duration::from_millis(200))
    }

    /// How soon a renewal that failed is tried again (while its take lasts).
    pub fn retry_after(&self) -> Duration {
        self.lease_duration / 12
    }

    fn now(&self) -> Instant {
        (self.clock)()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere must not stop the leases: the data stays usable.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The shards this worker holds (valid or not yet expired away).
    pub fn held(&self) -> Vec<String> {
        self.lock().held.keys().cloned().collect()
    }

    /// The take under which `key` is this worker's now, if it is.
    pub fn tenure(&self, key: &str) -> Option<Tenure> {
        let now = self.now();
        let inner = self.lock();
        inner.held.get(key).filter(|h| now < h.renewed + self.lease_duration).map(|h| h.tenure)
    }

    /// Whether `key` is this worker's under `tenure` now.
    pub fn valid(&self, key: &str, tenure: Tenure) -> bool {
        self.tenure(key) == Some(tenure)
    }

    /// Counters for the status line: takes by kind, lost, live workers,
    /// failed calls.
    pub fn stats(&self) -> (BTreeMap<&'static str, u64>, u64, usize, u64) {
        let inner = self.lock();
        (inner.takes.clone(), inner.lost, inner.workers, inner.failed)
    }

    /// The earliest instant a held lease runs out unrenewed.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.lock().held.values().map(|h| h.renewed + self.lease_duration).min()
    }

    /// Drops every take not renewed for a lease duration: from now on
    /// another worker may take it, so this one must not write for it.
    pub fn expire(&self) -> Vec<Lost> {
        let now = self.now();
        let mut inner = self.lock();
        let gone: Vec<String> =
            inner.held.iter().filter(|(_, h)| now >= h.renewed + self.lease_duration).map(|(k, _)| k.clone()).collect();
        let mut lost = Vec::new();
        for key in gone {
            if let Some(held) = inner.held.remove(&key) {
                inner.lost += 1;
                let why = format!("not renewed for {:?} (the lease table did not answer)", self.lease_duration);
                lost.push((key, held.tenure, why));
            }
        }
        lost
    }

    /// Renews every held lease not written for a sixth of a lease duration
    /// (a commit renews too), a bounded number at a time; a lease whose
    /// commit is in flight is left to the commit.
    pub async fn renew(&self, table: &dyn LeaseTable) -> Renewed {
        let now = self.now();
        let due: Vec<(String, Tenure)> = self
            .lock()
            .held
            .iter()
            .filter(|(_, h)| now.saturating_duration_since(h.renewed) >= self.lease_duration / 6)
            .map(|(k, h)| (k.clone(), h.tenure))
            .collect();
        let outcomes: Vec<Renewal> = bounded(due.into_iter().map(|(key, tenure)| async move {
            let Some(Current { counter, busy, unconfirmed }) = self.current(&key, tenure) else {
                return (key, tenure, None);
            };
            let Ok(_writing) = busy.try_lock() else { return (key, tenure, None) };
            let attempt = self
                .fenced(table, &key, counter, &unconfirmed, |counter, nonce| {
                    table.renew(&key, counter, &self.me, nonce)
                })
                .await;
            let settled = self.settle(&key, tenure, attempt);
            (key, tenure, Some(settled))
        }))
        .await;
        let mut renewed = Renewed::default();
        for (key, tenure, outcome) in outcomes {
            match outcome {
                None => {}
                Some(Ok(lease)) if lease.hand_off_to.is_some() => renewed.hand_off.push((key, tenure)),
                Some(Ok(_)) => {}
                Some(Err(CommitFailed::Lost(why))) => renewed.lost.push((key, tenure, why)),
                Some(Err(CommitFailed::Unknown(e) | CommitFailed::Denied(e))) => {
                    tracing::debug!(shard = %key, "renewal failed (tried again): {e:#}");
                    renewed.failed += 1;
                }
            }
        }
        renewed
    }
    /// Commits a checkpoint of `key` for its take `tenure`: one attempt.
    pub async fn commit(
        &self,
        table: &dyn LeaseTable,
        key: &str,
        tenure: Tenure,
        commit: &Commit,
    ) -> Result<Lease, CommitFailed> {
        let not_held = || {
            let why =
                format!("this worker no longer holds the lease (lost, or not renewed for {:?})", self.lease_duration);
            CommitFailed::Lost(why)
        };
        let busy = self.current(key, tenure).ok_or_else(not_held)?.busy;
        let _writing = busy.lock().await;
        let Current { counter, unconfirmed, .. } = self.current(key, tenure).ok_or_else(not_held)?;
        let attempt = self
            .fenced(table, key, counter, &unconfirmed, |counter, nonce| {
                table.checkpoint(key, counter, &self.me, nonce, commit)
            })
            .await;
        self.settle(key, tenure, attempt)
    }

    /// Gives one take up (hand-off, shard end). A failure only delays the
    /// next owner: the lease expires.
    pub async fn release(&self, table: &dyn LeaseTable, key: &str, tenure: Tenure) {
        let Some(Current { busy, .. }) = self.current(key, tenure) else {
            self.forget(key, tenure);
            return;
        };
        let _writing = busy.lock().await;
        let counter = {
            let mut inner = self.lock();
            match inner.held.get(key).filter(|h| h.tenure == tenure) {
                Some(held) => {
                    let counter = held.counter;
                    inner.held.remove(key);
                    counter
                }
                None => return,
            }
        };
        let nonce = rand::random::<u64>() | 1;
        if let Err(LeaseError::Table(e)) =
            timed(self.call_timeout(), table.release(key, counter, &self.me, nonce)).await
        {
            self.lock().failed += 1;
            tracing::debug!(shard = %key, "releasing the lease failed (it expires instead): {e:#}");
        }
    }

    /// Drops a take without a write (it is past its deadline anyway).
    fn forget(&self, key: &str, tenure: Tenure) {
        let mut inner = self.lock();
        if inner.held.get(key).is_some_and(|h| h.tenure == tenure) {
            inner.held.remove(key);
        }
    }

    /// A clean stop: takes nothing more, gives every held lease up.
    pub async fn release_all(&self, table: &dyn LeaseTable) {
        let held: Vec<(String, Tenure)> = {
            let mut inner = self.lock();
            inner.closing = true;
            inner.held.iter().map(|(k, h)| (k.clone(), h.tenure)).collect()
        };
        bounded(held.into_iter().map(|(key, tenure)| async move { self.release(table, &key, tenure).await })).await;
    }
}

impl TakeKind {
    /// Its name on the status line and in metrics.
    pub fn label(self) -> &'static str {
        match self {
            TakeKind::Free => "free",
            TakeKind::HandedOff => "handed-off",
            TakeKind::Expired => "expired",
        }
    }
}

mod scan;
mod write;

pub(crate) use write::bounded;
use write::{timed, Current, Wrote};

#[cfg(test)]
mod tests;
