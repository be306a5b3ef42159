//! One worker's side of the lease protocol: each cycle it renews what it
//! holds, scans, takes free or expired leases up to its fair share
//! (`ceil(leases / live workers)`), and when none is free but a worker
//! holds two or more than it does, asks that worker for one (a hand-off).
//! Commits and releases are fenced by the counter it last wrote. Time is
//! passed in, so tests drive a fake clock.

use super::{Commit, Lease, LeaseError, LeaseTable};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// What a cycle changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cycle {
    /// Leases taken in this cycle, as stored after the take.
    pub taken: Vec<Lease>,
    /// Leases this worker held and found taken by another (renew refused).
    pub lost: Vec<String>,
    /// Held leases another worker asked for: finish the batch, commit,
    /// release.
    pub hand_off: Vec<String>,
    /// Workers seen live in this scan, this one included.
    pub workers: usize,
    /// Released leases of shards read to their end, as scanned: (key, counter).
    pub ended: Vec<(String, u64)>,
}

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
    /// How each lease taken so far was taken (counts for the status line).
    pub takes: BTreeMap<&'static str, u64>,
}

impl LeaseKeeper {
    /// A worker holding nothing yet.
    pub fn new(me: &str, lease_duration: Duration) -> Self {
        LeaseKeeper {
            me: me.into(),
            lease_duration,
            held: BTreeMap::new(),
            seen: BTreeMap::new(),
            takes: BTreeMap::new(),
        }
    }

    /// The worker's id.
    pub fn id(&self) -> &str {
        &self.me
    }

    /// The shards this worker holds.
    pub fn held(&self) -> impl Iterator<Item = &str> {
        self.held.keys().map(String::as_str)
    }

    /// Whether this worker holds `key`.
    pub fn holds(&self, key: &str) -> bool {
        self.held.contains_key(key)
    }

    /// Renews, scans, takes and asks, at `now` on this worker's clock.
    pub async fn cycle(&mut self, table: &dyn LeaseTable, now: Instant) -> Result<Cycle, LeaseError> {
        let mut cycle = Cycle::default();
        for (key, counter) in self.held.clone() {
            match table.renew(&key, counter, &self.me).await {
                Ok(lease) => {
                    self.held.insert(key.clone(), lease.counter);
                    if lease.hand_off_to.is_some() {
                        cycle.hand_off.push(key);
                    }
                }
                Err(LeaseError::Conflict(_)) => {
                    self.held.remove(&key);
                    cycle.lost.push(key);
                }
                Err(e) => return Err(e),
            }
        }
        let leases = table.scan().await?;
        let ended: BTreeSet<&str> = leases.iter().filter(|l| l.ended()).map(|l| l.key.as_str()).collect();
        cycle.ended =
            leases.iter().filter(|l| l.ended() && l.owner.is_none()).map(|l| (l.key.clone(), l.counter)).collect();
        let listed: BTreeSet<&str> = leases.iter().map(|l| l.key.as_str()).collect();
        // A child is nobody's until every parent still in the table ended.
        let active: Vec<&Lease> = leases
            .iter()
            .filter(|l| {
                !l.ended() && l.parents.iter().all(|p| !listed.contains(p.as_str()) || ended.contains(p.as_str()))
            })
            .collect();
        let mut takeable = Vec::new();
        let mut load: BTreeMap<&str, Vec<&Lease>> = BTreeMap::from([(self.me.as_str(), Vec::new())]);
        let mut asked = false;
        for lease in &active {
            let since = match self.seen.get(&lease.key) {
                Some((counter, since)) if *counter == lease.counter => *since,
                _ => now,
            };
            self.seen.insert(lease.key.clone(), (lease.counter, since));
            let stale = now.saturating_duration_since(since) >= self.lease_duration;
            asked |= lease.hand_off_to.as_deref() == Some(self.me.as_str());
            match (&lease.owner, &lease.hand_off_to) {
                _ if self.held.contains_key(&lease.key) => load.entry(&self.me).or_default().push(lease),
                (None, Some(to)) if to == &self.me => takeable.push((lease, TakeKind::HandedOff)),
                (None, Some(_)) if !stale => {}
                (None, _) => takeable.push((lease, TakeKind::Free)),
                (Some(_), _) if stale => takeable.push((lease, TakeKind::Expired)),
                (Some(owner), _) => load.entry(owner).or_default().push(lease),
            }
        }
        cycle.workers = load.len();
        let share = active.len().div_ceil(load.len());
        // Handed-over leases first: they were asked for and wait for us.
        takeable.sort_by_key(|(_, kind)| *kind != TakeKind::HandedOff);
        for (lease, kind) in takeable {
            if self.held.len() >= share && kind != TakeKind::HandedOff {
                break;
            }
            match table.take(&lease.key, lease.counter, &self.me).await {
                Ok(taken) => {
                    self.held.insert(taken.key.clone(), taken.counter);
                    *self.takes.entry(kind.label()).or_default() += 1;
                    cycle.taken.push(taken);
                }
                // Someone else was quicker: fine, next cycle sees it.
                Err(LeaseError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        // Still short and nothing free: ask the most loaded worker, if it
        // holds two or more than we do (so the move does not flap back).
        // Leases in this id's name that this keeper does not hold (a twin
        // with the same id, or a previous life's) count as ours: asking
        // for more would flap.
        let mine = load.get(self.me.as_str()).map_or(0, Vec::len).max(self.held.len());
        if mine < share && !asked && cycle.taken.is_empty() {
            let busiest = load.iter().filter(|(owner, _)| **owner != self.me).max_by_key(|(_, held)| held.len());
            if let Some((owner, held)) = busiest.filter(|(_, held)| held.len() >= mine + 2) {
                if let Some(lease) = held.iter().find(|l| l.hand_off_to.is_none()) {
                    match table.request_hand_off(&lease.key, owner, &self.me).await {
                        Ok(()) | Err(LeaseError::Conflict(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(cycle)
    }

    /// Commits a checkpoint of a held lease. A conflict means the lease is
    /// gone (another worker took it): it is dropped and the caller must
    /// stop the shard without writing anything more for it.
    pub async fn commit(&mut self, table: &dyn LeaseTable, key: &str, commit: &Commit) -> Result<Lease, LeaseError> {
        let Some(&counter) = self.held.get(key) else {
            return Err(super::Conflict { key: key.to_string(), expected: 0 }.into());
        };
        match table.checkpoint(key, counter, &self.me, commit).await {
            Ok(lease) => {
                self.held.insert(key.to_string(), lease.counter);
                Ok(lease)
            }
            Err(e) => {
                if matches!(e, LeaseError::Conflict(_)) {
                    self.held.remove(key);
                }
                Err(e)
            }
        }
    }

    /// Records that this worker's own write moved `key` to `counter` (a
    /// retried commit whose first attempt did land, checked by the caller).
    pub fn adopt(&mut self, key: &str, counter: u64) {
        self.held.insert(key.to_string(), counter);
    }

    /// Gives one held lease up (hand-off, shard end).
    pub async fn release(&mut self, table: &dyn LeaseTable, key: &str) -> Result<(), LeaseError> {
        let Some(counter) = self.held.remove(key) else { return Ok(()) };
        match table.release(key, counter, &self.me).await {
            Ok(_) | Err(LeaseError::Conflict(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Gives every held lease up (a clean stop), so others take them at once.
    pub async fn release_all(&mut self, table: &dyn LeaseTable) -> Result<(), LeaseError> {
        for key in self.held.keys().cloned().collect::<Vec<_>>() {
            self.release(table, &key).await?;
        }
        Ok(())
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

#[cfg(test)]
mod tests;
