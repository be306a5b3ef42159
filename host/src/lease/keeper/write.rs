//! One fenced write and what came of it: every write carries a nonce, and
//! an answer that is not a clear yes is checked by reading the lease back.

use super::CommitFailed;
use super::{scan, LeaseKeeper, AT_ONCE, UNCONFIRMED};
use crate::checkpoint::Tenure;
use crate::lease::{Lease, LeaseError, LeaseTable};
use futures::stream::{FuturesUnordered, StreamExt};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How one write went.
#[derive(Debug)]
pub(super) enum Wrote {
    /// It landed (perhaps found by its nonce), sent at that instant.
    Landed(Box<Lease>, Instant),
    /// It did not land, but an earlier write of ours whose answer never
    /// came did (sent at that instant): the lease moved on; this write
    /// must be tried again at the new counter.
    Earlier(Box<Lease>, Instant),
    /// Its condition failed: someone else wrote the lease.
    Refused,
    /// Nobody knows: the table did not answer, nor the read after.
    Unknown(anyhow::Error),
    /// The table refused it for good; it did not land.
    Denied(anyhow::Error),
}

/// A valid take's counter, write lock and unconfirmed writes.
pub(super) struct Current {
    pub counter: u64,
    pub busy: Arc<tokio::sync::Mutex<()>>,
    pub unconfirmed: Vec<(u64, Instant)>,
}

/// One write: how it went, and its nonce and send time.
#[derive(Debug)]
pub(super) struct Attempt {
    pub wrote: Wrote,
    pub nonce: u64,
    pub sent: Instant,
}

impl LeaseKeeper {
    /// Runs one write fenced by `counter`, reading the lease back when the
    /// answer is not a clear yes. `unconfirmed` are earlier writes of ours
    /// whose outcome is unknown.
    pub(super) async fn fenced<F, Fut>(
        &self,
        table: &dyn LeaseTable,
        key: &str,
        counter: u64,
        unconfirmed: &[(u64, Instant)],
        write: F,
    ) -> Attempt
    where
        F: FnOnce(u64, u64) -> Fut,
        Fut: std::future::Future<Output = Result<Lease, LeaseError>>,
    {
        let nonce = rand::random::<u64>() | 1;
        let sent = self.now();
        let attempt = |wrote| Attempt { wrote, nonce, sent };
        let error = match timed(self.call_timeout(), write(counter, nonce)).await {
            Ok(lease) => return attempt(Wrote::Landed(Box::new(lease), sent)),
            Err(LeaseError::Conflict(conflict)) => anyhow::Error::new(conflict),
            Err(LeaseError::Table(e)) => e,
            Err(LeaseError::Denied(e)) => return attempt(Wrote::Denied(e)),
        };
        // Refused, or no answer: the write may have landed all the same (an
        // answer lost, or the SDK's retry of a write that had landed).
        attempt(match timed(self.call_timeout(), table.get(key)).await {
            Ok(Some(lease)) if lease.owner.as_deref() == Some(self.me.as_str()) => {
                if lease.nonce == nonce {
                    Wrote::Landed(Box::new(lease), sent)
                } else if let Some(&(_, at)) = unconfirmed.iter().find(|(n, _)| *n == lease.nonce) {
                    Wrote::Earlier(Box::new(lease), at)
                } else if lease.counter == counter {
                    // Nothing landed; the lease stands as we left it.
                    Wrote::Unknown(error)
                } else {
                    // A write in our name that is not ours: a twin process
                    // with the same worker id took it.
                    Wrote::Refused
                }
            }
            Ok(_) => Wrote::Refused,
            Err(_) => Wrote::Unknown(error),
        })
    }

    /// The counter, lock and unconfirmed writes of a valid take.
    pub(super) fn current(&self, key: &str, tenure: Tenure) -> Option<Current> {
        let now = self.now();
        let inner = self.lock();
        let held = inner.held.get(key).filter(|h| h.tenure == tenure && now < h.renewed + self.lease_duration)?;
        Some(Current {
            counter: held.counter,
            busy: held.busy.clone(),
            unconfirmed: held.unconfirmed.iter().copied().collect(),
        })
    }

    /// Applies how a write to a held take went; returns the lease when it
    /// landed, and why the take is over when it was refused or its answer
    /// came after the take's deadline (the take is not brought back: its
    /// task may have stopped already).
    pub(super) fn settle(&self, key: &str, tenure: Tenure, attempt: Attempt) -> Result<Lease, CommitFailed> {
        let now = self.now();
        let mut inner = self.lock();
        let Some(held) = inner.held.get_mut(key).filter(|h| h.tenure == tenure) else {
            return Err(CommitFailed::Lost("the take ended while the write was in flight".into()));
        };
        if now >= held.renewed + self.lease_duration {
            inner.held.remove(key);
            inner.lost += 1;
            let why = format!("not renewed for {:?} (the answer came too late)", self.lease_duration);
            return Err(CommitFailed::Lost(why));
        }
        let (lease, sent, ours) = match attempt.wrote {
            Wrote::Landed(lease, sent) => (lease, sent, true),
            Wrote::Earlier(lease, sent) => (lease, sent, false),
            Wrote::Unknown(e) => {
                if held.unconfirmed.len() >= UNCONFIRMED {
                    held.unconfirmed.pop_front();
                }
                held.unconfirmed.push_back((attempt.nonce, attempt.sent));
                inner.failed += 1;
                return Err(CommitFailed::Unknown(e));
            }
            Wrote::Denied(e) => {
                inner.failed += 1;
                return Err(CommitFailed::Denied(e));
            }
            Wrote::Refused => {
                inner.held.remove(key);
                inner.lost += 1;
                return Err(CommitFailed::Lost("another worker took the lease".into()));
            }
        };
        if lease.counter > held.counter {
            held.counter = lease.counter;
            held.renewed = held.renewed.max(sent);
            held.unconfirmed.clear();
        }
        scan::saw_own_write(&mut inner, &lease, sent);
        if ours {
            Ok(*lease)
        } else {
            // An earlier write of ours landed, not this one: it goes again.
            Err(CommitFailed::Unknown(anyhow::anyhow!(
                "an earlier write whose answer was lost had landed; this one goes again"
            )))
        }
    }
}

/// Runs `futures`, at most [`AT_ONCE`] at a time; their outputs in the
/// order they finish.
pub(crate) async fn bounded<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut running = FuturesUnordered::new();
    let mut done = Vec::new();
    for future in futures {
        if running.len() >= AT_ONCE {
            done.extend(running.next().await);
        }
        running.push(future);
    }
    while let Some(output) = running.next().await {
        done.push(output);
    }
    done
}

/// A table call that gives up after `limit`: its outcome is then unknown.
pub(super) async fn timed<T>(
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, LeaseError>>,
) -> Result<T, LeaseError> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => Err(LeaseError::Table(anyhow::anyhow!("the lease table did not answer within {limit:?}"))),
    }
}
