//! One worker's side of the lease protocol: each cycle it renews what it
//! holds, scans, and takes free or expired leases up to its fair share
//! (`ceil(leases / live workers)`); commits and releases are fenced by the
//! counter it last wrote. Time is passed in, so tests drive a fake clock.

use super::{Lease, LeaseError, LeaseTable};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// What a cycle changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cycle {
    /// Leases taken in this cycle, as stored after the take.
    pub taken: Vec<Lease>,
    /// Leases this worker held and found taken by another (renew refused).
    pub lost: Vec<String>,
}

/// One worker's view of the lease table.
#[derive(Debug)]
pub struct LeaseKeeper {
    /// This worker's id (host name + pid + random suffix in a run).
    me: String,
    /// A lease whose counter has not moved this long (on this worker's
    /// clock) is expired.
    lease_duration: Duration,
    /// Leases held: key → the counter after this worker's last write.
    held: BTreeMap<String, u64>,
    /// Every lease as last scanned: key → (counter, when this worker first
    /// saw that counter).
    seen: BTreeMap<String, (u64, Instant)>,
}

impl LeaseKeeper {
    /// A worker holding nothing yet.
    pub fn new(me: &str, lease_duration: Duration) -> Self {
        LeaseKeeper { me: me.into(), lease_duration, held: BTreeMap::new(), seen: BTreeMap::new() }
    }

    /// The worker's id.
    pub fn id(&self) -> &str {
        &self.me
    }

    /// The shards this worker holds.
    pub fn held(&self) -> impl Iterator<Item = &str> {
        self.held.keys().map(String::as_str)
    }

    /// Renews, scans and takes, at `now` on this worker's clock.
    pub async fn cycle(&mut self, table: &dyn LeaseTable, now: Instant) -> Result<Cycle, LeaseError> {
        let mut cycle = Cycle::default();
        for (key, counter) in self.held.clone() {
            match table.renew(&key, counter, &self.me).await {
                Ok(lease) => {
                    self.held.insert(key, lease.counter);
                }
                Err(LeaseError::Conflict(_)) => {
                    self.held.remove(&key);
                    cycle.lost.push(key);
                }
                Err(e) => return Err(e),
            }
        }
        let leases = table.scan().await?;
        let mut expired = Vec::new();
        let mut live: BTreeSet<&str> = BTreeSet::from([self.me.as_str()]);
        for lease in &leases {
            let since = match self.seen.get(&lease.key) {
                Some((counter, since)) if *counter == lease.counter => *since,
                _ => now,
            };
            self.seen.insert(lease.key.clone(), (lease.counter, since));
            let stale = now.saturating_duration_since(since) >= self.lease_duration;
            match &lease.owner {
                _ if self.held.contains_key(&lease.key) => {}
                None => expired.push(lease),
                Some(_) if stale => expired.push(lease),
                Some(owner) => {
                    live.insert(owner);
                }
            }
        }
        let share = leases.len().div_ceil(live.len());
        for lease in expired {
            if self.held.len() >= share {
                break;
            }
            match table.take(&lease.key, lease.counter, &self.me).await {
                Ok(taken) => {
                    self.held.insert(taken.key.clone(), taken.counter);
                    cycle.taken.push(taken);
                }
                // Someone else was quicker: fine, next cycle sees it.
                Err(LeaseError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(cycle)
    }

    /// Commits a checkpoint of a held lease. A conflict means the lease is
    /// gone (another worker took it): it is dropped and the caller must
    /// stop the shard without writing anything more for it.
    pub async fn commit(
        &mut self,
        table: &dyn LeaseTable,
        key: &str,
        checkpoint: &str,
        state_version: u64,
    ) -> Result<(), LeaseError> {
        let Some(&counter) = self.held.get(key) else {
            return Err(super::Conflict { key: key.to_string(), expected: 0 }.into());
        };
        match table.checkpoint(key, counter, &self.me, checkpoint, state_version).await {
            Ok(lease) => {
                self.held.insert(key.to_string(), lease.counter);
                Ok(())
            }
            Err(e) => {
                if matches!(e, LeaseError::Conflict(_)) {
                    self.held.remove(key);
                }
                Err(e)
            }
        }
    }

    /// Gives every held lease up (a clean stop), so others take them at once.
    pub async fn release_all(&mut self, table: &dyn LeaseTable) -> Result<(), LeaseError> {
        for (key, counter) in std::mem::take(&mut self.held) {
            match table.release(&key, counter, &self.me).await {
                Ok(_) | Err(LeaseError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
