//! The scan: which leases this worker takes, which it asks others for,
//! which are gone from the stream and may be deleted.

use super::{bounded, timed, Held, Inner, LeaseKeeper, Scanned, Seen, TakeKind, Wrote, AT_ONCE};
use crate::checkpoint::Tenure;
use crate::lease::{Lease, LeaseError, LeaseTable};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

impl LeaseKeeper {
    /// Scans the table; takes free, expired and handed-over leases up to
    /// the fair share; asks the busiest workers for hand-offs until this one
    /// would reach the share; lists what may be cleaned up. `listed` is the
    /// stream's latest listing and when it was made: a lease it lacks, first
    /// seen before it was made, is of a shard gone from the stream.
    pub async fn scan_and_take(
        &self,
        table: &dyn LeaseTable,
        listed: Option<(&BTreeSet<String>, Instant)>,
    ) -> Result<Scanned, LeaseError> {
        let leases = match timed(self.call_timeout() * 3, table.scan()).await {
            Ok(leases) => leases,
            Err(e) => {
                self.lock().failed += 1;
                return Err(e);
            }
        };
        let now = self.now();
        let mut scanned = Scanned::default();
        let mut takeable: Vec<(Lease, TakeKind)> = Vec::new();
        // Leases this worker may take beyond the handed-over ones.
        let mut room: usize;
        let mut asks: Vec<(String, String)> = Vec::new();
        {
            let mut inner = self.lock();
            let keys: BTreeSet<&str> = leases.iter().map(|l| l.key.as_str()).collect();
            inner.seen.retain(|k, _| keys.contains(k.as_str()));
            for lease in &leases {
                let seen = inner.seen.entry(lease.key.clone()).or_insert(Seen {
                    counter: lease.counter,
                    since: now,
                    first: now,
                });
                if seen.counter != lease.counter {
                    *seen = Seen { counter: lease.counter, since: now, first: seen.first };
                }
            }
            let seen = inner.seen.clone();
            let gone = |key: &str| {
                listed.is_some_and(|(listed, at)| !listed.contains(key) && seen.get(key).is_some_and(|s| s.first < at))
            };
            let stale = |lease: &Lease| {
                seen.get(&lease.key).is_some_and(|s| now.saturating_duration_since(s.since) >= self.lease_duration)
            };
            let ended: BTreeSet<&str> = leases.iter().filter(|l| l.ended()).map(|l| l.key.as_str()).collect();
            // A child waits for each parent the stream still lists until it
            // ended; a parent gone from the stream (trimmed unfinished) or
            // from the table blocks nobody.
            let active: Vec<&Lease> = leases
                .iter()
                .filter(|l| {
                    !l.ended()
                        && !gone(&l.key)
                        && l.parents.iter().all(|p| !keys.contains(p.as_str()) || ended.contains(p.as_str()) || gone(p))
                })
                .collect();
            // Leases of shards gone from the stream go once nobody runs them
            // and every child has its own checkpoint (or inherited state).
            for lease in leases.iter().filter(|l| gone(&l.key)) {
                let unowned = match &lease.owner {
                    None => true,
                    Some(owner) => stale(lease) || (owner == &self.me && !inner.held.contains_key(&lease.key)),
                };
                let children_started = leases
                    .iter()
                    .filter(|c| c.parents.contains(&lease.key))
                    .all(|c| c.checkpoint.is_some() || c.state_version > 0);
                if unowned && children_started {
                    scanned.cleanup.push((lease.key.clone(), lease.counter));
                }
            }
            for lease in leases.iter().filter(|l| l.hand_off_to.is_some()) {
                if let Some(held) = inner.held.get(&lease.key) {
                    if lease.owner.as_deref() == Some(self.me.as_str()) {
                        scanned.hand_off.push((lease.key.clone(), held.tenure));
                    }
                }
            }
            let mut load: BTreeMap<&str, Vec<&Lease>> = BTreeMap::from([(self.me.as_str(), Vec::new())]);
            // Hand-offs asked for and not yet carried out, by asker: an
            // asker is a live worker even before it holds anything, and
            // what it asked for is as good as its own. Not on a lease that
            // expired: its owner will hand nothing over, and an asker that
            // died since would count as live for good.
            let mut pending: BTreeMap<&str, usize> = BTreeMap::new();
            for lease in &active {
                if let (Some(_), Some(to), false) = (&lease.owner, &lease.hand_off_to, stale(lease)) {
                    *pending.entry(to.as_str()).or_default() += 1;
                }
                match (&lease.owner, &lease.hand_off_to) {
                    _ if inner.held.contains_key(&lease.key) => load.entry(self.me.as_str()).or_default().push(lease),
                    (None, Some(to)) if to == &self.me => takeable.push(((*lease).clone(), TakeKind::HandedOff)),
                    (None, Some(_)) if !stale(lease) => {}
                    (None, _) => takeable.push(((*lease).clone(), TakeKind::Free)),
                    (Some(_), _) if stale(lease) => takeable.push(((*lease).clone(), TakeKind::Expired)),
                    (Some(owner), _) => load.entry(owner).or_default().push(lease),
                }
            }
            for asker in pending.keys() {
                load.entry(asker).or_default();
            }
            inner.workers = load.len();
            scanned.workers = load.len();
            if inner.closing {
                return Ok(scanned);
            }
            let share = active.len().div_ceil(load.len());
            // Handed-over leases first: they were asked for and wait for us.
            // The rest in random order, so workers started together do not
            // all race for the same leases in the same order.
            rand::seq::SliceRandom::shuffle(takeable.as_mut_slice(), &mut rand::rng());
            takeable.sort_by_key(|(_, kind)| *kind != TakeKind::HandedOff);
            room = share.saturating_sub(inner.held.len());
            let handed = takeable.iter().filter(|(_, kind)| *kind == TakeKind::HandedOff).count();
            // What this worker will hold once it took what it may.
            let taking = handed + (takeable.len() - handed).min(room);
            // Still short once these are taken, with nothing else free: ask
            // the busiest workers (by what they will hold once the pending
            // hand-offs are done), one lease at a time, while one would hold
            // two or more than this worker (so nothing flaps back), until
            // this worker reaches its share. Leases in this id's
            // name that this keeper does not hold count as ours: asking for
            // more would flap.
            let projected = |owner: &str, held: &[&Lease]| {
                held.len() - held.iter().filter(|l| l.hand_off_to.is_some()).count()
                    + pending.get(owner).copied().unwrap_or(0)
            };
            let mut mine = load.get(self.me.as_str()).map_or(0, Vec::len).max(inner.held.len())
                + taking
                + pending.get(self.me.as_str()).copied().unwrap_or(0);

            let mut others: Vec<(&str, usize, Vec<&Lease>)> = load
                .iter()
                .filter(|(owner, _)| **owner != self.me)
                .map(|(owner, held)| {
                    let free = held.iter().filter(|l| l.hand_off_to.is_none()).copied().collect();
                    (*owner, projected(owner, held), free)
                })
                .collect();
            while mine < share {
                let Some((owner, load, free)) =
                    others.iter_mut().filter(|(_, _, free)| !free.is_empty()).max_by_key(|(_, load, _)| *load)
                else {
                    break;
                };
                if *load < mine + 2 {
                    break;
                }
                let Some(lease) = free.pop() else { break };
                asks.push((lease.key.clone(), (*owner).to_string()));
                *load -= 1;
                mine += 1;
            }
        }
        // The takes, a bounded number at a time: every handed-over lease,
        // then others until the room is filled (one another worker was
        // quicker for does not leave the room short until the next scan).
        let take = |(lease, kind): (Lease, TakeKind)| async move {
            let attempt =
                self.fenced(table, &lease.key, lease.counter, &[], |c, n| table.take(&lease.key, c, &self.me, n)).await;
            match attempt.wrote {
                Wrote::Landed(taken, sent) if taken.owner.as_deref() == Some(self.me.as_str()) => {
                    Some((*taken, kind, sent))
                }
                // Someone else was quicker, or no answer: the next scan sees.
                _ => None,
            }
        };
        let others = takeable.split_off(takeable.iter().take_while(|(_, k)| *k == TakeKind::HandedOff).count());
        let mut taken: Vec<Option<(Lease, TakeKind, Instant)>> = bounded(takeable.into_iter().map(take)).await;
        let mut others = others.into_iter();
        while room > 0 {
            let batch: Vec<(Lease, TakeKind)> = others.by_ref().take(room.min(AT_ONCE)).collect();
            if batch.is_empty() {
                break;
            }
            let got = bounded(batch.into_iter().map(take)).await;
            room = room.saturating_sub(got.iter().flatten().count());
            taken.extend(got);
        }
        {
            let mut inner = self.lock();
            for (lease, kind, sent) in taken.into_iter().flatten() {
                let tenure = Tenure(self.next_tenure.fetch_add(1, Ordering::Relaxed));
                let held = Held {
                    counter: lease.counter,
                    tenure,
                    renewed: sent,
                    busy: Arc::default(),
                    unconfirmed: VecDeque::new(),
                };
                inner.held.insert(lease.key.clone(), held);
                saw_own_write(&mut inner, &lease, sent);
                *inner.takes.entry(kind.label()).or_default() += 1;
                scanned.taken.push(lease);
            }
        }
        bounded(asks.into_iter().map(|(key, owner)| async move {
            if let Err(LeaseError::Table(e)) =
                timed(self.call_timeout(), table.request_hand_off(&key, &owner, &self.me)).await
            {
                tracing::debug!(shard = %key, "asking {owner} for a hand-off failed: {e:#}");
            }
        }))
        .await;
        Ok(scanned)
    }
}

/// Notes a write of ours as seen when it was sent: our own lease is not
/// fresh news to us at the next scan (after an outage it is found stale
/// and taken back at once).
pub(super) fn saw_own_write(inner: &mut Inner, lease: &Lease, sent: Instant) {
    if let Some(seen) = inner.seen.get_mut(&lease.key) {
        if lease.counter > seen.counter {
            seen.counter = lease.counter;
            seen.since = sent;
        }
    }
}
