//! The lease protocol against the in-memory table with a fake clock, under
//! random schedules of commits, pauses (a frozen worker, as with SIGSTOP)
//! and crashes (kill -9: the worker's memory is gone, its leases are not).

use super::*;
use crate::lease::{Commit, InMemoryTable};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;

const LEASE: Duration = Duration::from_secs(3);
const TICK: Duration = Duration::from_secs(1);

/// A worker in the simulation: its keeper, where it is in each held shard,
/// and how many ticks it stays frozen.
struct Worker {
    keeper: LeaseKeeper,
    positions: BTreeMap<String, u64>,
    frozen: u32,
}

impl Worker {
    fn new(id: String) -> Self {
        Worker { keeper: LeaseKeeper::new(&id, LEASE), positions: BTreeMap::new(), frozen: 0 }
    }
}

async fn table_with(shards: usize) -> InMemoryTable {
    let table = InMemoryTable::default();
    for i in 0..shards {
        table.create(&format!("shard-{i}"), &[]).await.expect("create");
    }
    table
}

/// Runs one random schedule and checks the invariants after every step.
/// Returns how many late commits were refused and how many leases moved
/// from a live-looking owner to another worker, so the caller can check the
/// schedules did exercise fencing.
async fn schedule(seed: u64) -> (u32, u32) {
    let (mut refused, mut moved) = (0, 0);
    let mut rng = StdRng::seed_from_u64(seed);
    let table = table_with(8).await;
    let start = Instant::now();
    let mut workers: Vec<Worker> = (0..3).map(|i| Worker::new(format!("w{i}"))).collect();
    let mut next_id = 3;
    // Per shard: the newest committed (checkpoint, state version), which
    // must never go back; and every (shard, counter) a commit succeeded at.
    let mut committed: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut commit_slots: HashSet<(String, u64)> = HashSet::new();
    for step in 0..400u32 {
        let now = start + TICK * step;
        let w = rng.random_range(0..workers.len());
        match rng.random_range(0..100) {
            // kill -9: memory gone; a new process with a new id takes its place.
            0..3 => {
                workers[w] = Worker::new(format!("w{next_id}"));
                next_id += 1;
            }
            // Frozen for longer than a lease (SIGSTOP, a long GC, a partition).
            3..6 => workers[w].frozen = rng.random_range(4..8),
            // The frozen one "restarted" elsewhere with the same --worker-id:
            // two processes, one id; only the counter fences the zombie.
            6..8 if workers[w].frozen > 0 && workers.len() < 5 => {
                let twin = Worker::new(workers[w].keeper.id().to_string());
                workers.push(twin);
            }
            _ => {}
        }
        for worker in workers.iter_mut() {
            if worker.frozen > 0 {
                worker.frozen -= 1;
                continue;
            }
            let cycle = worker.keeper.cycle(&table, now).await.expect("cycle");
            for lease in cycle.taken {
                moved += u32::from(lease.counter > 1);
                let position = lease.checkpoint.as_deref().map_or(0, |c| c.parse().expect("number"));
                worker.positions.insert(lease.key.clone(), position);
            }
            for key in cycle.lost {
                worker.positions.remove(&key);
            }
            // Asked for a lease: let it go (its commits are in the table).
            for key in cycle.hand_off {
                worker.positions.remove(&key);
                worker.keeper.release(&table, &key).await.expect("release");
            }
        }
        // The chosen worker commits progress on each shard it believes it
        // holds, even when frozen (its commits then come late, as a resumed
        // process's would).
        let worker = &mut workers[w];
        for key in worker.positions.keys().cloned().collect::<Vec<_>>() {
            let position = worker.positions[&key] + 1;
            let version = position;
            let before = table.scan().await.expect("scan").into_iter().find(|l| l.key == key).map(|l| l.counter);
            match worker.keeper.commit(&table, &key, &Commit::position(&position.to_string(), version)).await {
                Ok(_) => {
                    worker.positions.insert(key.clone(), position);
                    let slot = (key.clone(), before.expect("exists"));
                    assert!(commit_slots.insert(slot), "seed {seed} step {step}: two commits at one counter of {key}");
                    let newest = committed.entry(key.clone()).or_insert((0, 0));
                    assert!(position > newest.0 && version > newest.1, "seed {seed} step {step}: {key} went back");
                    *newest = (position, version);
                }
                Err(LeaseError::Conflict(_)) => {
                    refused += 1;
                    worker.positions.remove(&key);
                }
                Err(e) => panic!("seed {seed}: {e}"),
            }
        }
        for lease in table.scan().await.expect("scan") {
            let stored = lease.checkpoint.as_deref().map_or(0, |c| c.parse::<u64>().expect("number"));
            let newest = committed.get(&lease.key).map_or(0, |c| c.0);
            assert_eq!(stored, newest, "seed {seed} step {step}: the table holds the newest commit of {}", lease.key);
        }
    }
    // Everyone awake again: within a few leases every shard is held by
    // exactly one live worker.
    let end = start + TICK * 400;
    for round in 0..30u32 {
        for worker in workers.iter_mut() {
            worker.frozen = 0;
            let cycle = worker.keeper.cycle(&table, end + TICK * round).await.expect("cycle");
            for key in cycle.hand_off {
                worker.keeper.release(&table, &key).await.expect("release");
            }
        }
        // A round may end between a release and the asker's take.
        if workers.iter().map(|w| w.keeper.held().count()).sum::<usize>() == 8 {
            break;
        }
    }
    let mut holders: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for worker in &workers {
        for key in worker.keeper.held() {
            holders.entry(key.to_string()).or_default().push(worker.keeper.id().to_string());
        }
    }
    assert_eq!(holders.len(), 8, "seed {seed}: every shard held: {holders:?}\n{:#?}", table.scan().await);
    assert!(holders.values().all(|h| h.len() == 1), "seed {seed}: one holder each: {holders:?}");
    (refused, moved)
}

#[tokio::test]
async fn random_crashes_and_pauses_never_let_two_workers_commit_or_a_checkpoint_go_back() {
    let (mut refused, mut moved) = (0, 0);
    for seed in 0..40 {
        let (r, m) = schedule(seed).await;
        refused += r;
        moved += m;
    }
    // The schedules did what they are for: leases moved between workers,
    // and late commits of frozen or replaced workers were refused.
    assert!(refused > 20 && moved > 20, "refused {refused}, moved {moved}");
}

#[tokio::test]
async fn a_frozen_worker_cannot_commit_after_its_lease_was_taken() {
    let table = table_with(1).await;
    let t0 = Instant::now();
    let mut a = LeaseKeeper::new("a", LEASE);
    let mut b = LeaseKeeper::new("b", LEASE);
    assert_eq!(a.cycle(&table, t0).await.expect("cycle").taken.len(), 1);
    a.commit(&table, "shard-0", &Commit::position("10", 1)).await.expect("a holds it");
    // a freezes; b watches the counter stand still for a lease, then takes it.
    assert!(b.cycle(&table, t0).await.expect("cycle").taken.is_empty(), "a is live");
    assert!(b.cycle(&table, t0 + LEASE).await.expect("cycle").taken.len() == 1, "expired by b's clock");
    b.commit(&table, "shard-0", &Commit::position("11", 2)).await.expect("b holds it");
    // a wakes up and tries to commit what it did before freezing.
    let late = a.commit(&table, "shard-0", &Commit::position("12", 2)).await;
    assert!(matches!(late, Err(LeaseError::Conflict(_))), "{late:?}");
    assert_eq!(a.held().count(), 0, "a dropped it");
    let lease = table.scan().await.expect("scan").remove(0);
    assert_eq!((lease.owner.as_deref(), lease.checkpoint.as_deref(), lease.state_version), (Some("b"), Some("11"), 2));
}

#[tokio::test]
async fn a_released_lease_is_taken_at_once_and_renewing_keeps_it() {
    let table = table_with(2).await;
    let t0 = Instant::now();
    let mut a = LeaseKeeper::new("a", LEASE);
    let mut b = LeaseKeeper::new("b", LEASE);
    assert_eq!(a.cycle(&table, t0).await.expect("cycle").taken.len(), 2, "alone: both");
    // Renewing every cycle keeps b from seeing them expire, however long.
    for s in 1..10 {
        a.cycle(&table, t0 + TICK * s).await.expect("cycle");
        assert!(b.cycle(&table, t0 + TICK * s).await.expect("cycle").taken.is_empty());
    }
    a.release_all(&table).await.expect("release");
    assert_eq!(b.cycle(&table, t0 + TICK * 10).await.expect("cycle").taken.len(), 2, "free leases go at once");
}

#[tokio::test]
async fn a_zombie_with_the_same_worker_id_is_fenced_by_the_counter_alone() {
    let table = table_with(1).await;
    let t0 = Instant::now();
    // Two processes with one --worker-id: the first freezes, the second
    // starts, sees the lease stand still for a lease duration, takes it.
    let mut zombie = LeaseKeeper::new("a", LEASE);
    let mut twin = LeaseKeeper::new("a", LEASE);
    assert_eq!(zombie.cycle(&table, t0).await.expect("cycle").taken.len(), 1);
    twin.cycle(&table, t0).await.expect("cycle");
    assert_eq!(twin.cycle(&table, t0 + LEASE).await.expect("cycle").taken.len(), 1);
    twin.commit(&table, "shard-0", &Commit::position("20", 5)).await.expect("the twin holds it");
    // The owner matches; only the counter tells the zombie's writes apart.
    let late = zombie.commit(&table, "shard-0", &Commit::position("7", 2)).await;
    assert!(matches!(late, Err(LeaseError::Conflict(_))), "{late:?}");
    let renewed = zombie.cycle(&table, t0 + LEASE).await.expect("cycle");
    assert!(renewed.lost.is_empty() && zombie.held().count() == 0, "dropped at the refused commit");
    let lease = table.scan().await.expect("scan").remove(0);
    assert_eq!((lease.checkpoint.as_deref(), lease.state_version), (Some("20"), 5));
}

/// Runs a cycle of each worker at `now`, releasing what each is asked for
/// (after its commit, as a running host does); returns the leases that
/// changed hands.
async fn round(table: &InMemoryTable, workers: &mut [LeaseKeeper], now: Instant) -> usize {
    let mut moved = 0;
    for worker in workers.iter_mut() {
        let cycle = worker.cycle(table, now).await.expect("cycle");
        moved += cycle.taken.len();
        for key in cycle.hand_off {
            worker.commit(table, &key, &Commit::position("1", 1)).await.expect("commit before hand-off");
            worker.release(table, &key).await.expect("release");
        }
    }
    moved
}

fn counts(workers: &[LeaseKeeper]) -> Vec<usize> {
    let mut counts: Vec<usize> = workers.iter().map(|w| w.held().count()).collect();
    counts.sort();
    counts
}

#[tokio::test]
async fn late_joiners_reach_their_share_by_hand_offs_and_then_nothing_moves() {
    let table = table_with(8).await;
    let t0 = Instant::now();
    let mut workers = vec![LeaseKeeper::new("a", LEASE)];
    round(&table, &mut workers, t0).await;
    assert_eq!(counts(&workers), [8], "alone: all of them");
    workers.push(LeaseKeeper::new("b", LEASE));
    workers.push(LeaseKeeper::new("c", LEASE));
    // One request per worker per cycle; each handed-over lease moves once.
    let mut tick = 1;
    while counts(&workers) != [2, 3, 3] && tick < 20 {
        round(&table, &mut workers, t0 + TICK * tick).await;
        tick += 1;
    }
    assert_eq!(counts(&workers), [2, 3, 3], "balanced after {tick} cycles");
    let expired: u64 = workers.iter().map(|w| w.takes.get("expired").copied().unwrap_or(0)).sum();
    assert_eq!(
        expired,
        0,
        "every move was a hand-off, none a steal: {:?}",
        workers.iter().map(|w| &w.takes).collect::<Vec<_>>()
    );
    for t in tick..tick + 10 {
        assert_eq!(round(&table, &mut workers, t0 + TICK * t).await, 0, "steady state: no lease changes hands");
    }
    workers.push(LeaseKeeper::new("d", LEASE));
    let mut tick = tick + 10;
    let joined = tick;
    while counts(&workers) != [2, 2, 2, 2] && tick < joined + 20 {
        round(&table, &mut workers, t0 + TICK * tick).await;
        tick += 1;
    }
    assert_eq!(counts(&workers), [2, 2, 2, 2], "a 4th worker reaches its share");
    for t in tick..tick + 10 {
        assert_eq!(round(&table, &mut workers, t0 + TICK * t).await, 0, "no flapping after the join");
    }
}

#[tokio::test]
async fn a_child_is_taken_only_after_its_parents_ended_and_ended_leases_count_for_nobody() {
    let table = InMemoryTable::default();
    for key in ["p0", "p1"] {
        table.create(key, &[]).await.expect("create");
    }
    table.create("merged", &["p0".into(), "p1".into()]).await.expect("create");
    let t0 = Instant::now();
    let mut a = LeaseKeeper::new("a", LEASE);
    let cycle = a.cycle(&table, t0).await.expect("cycle");
    assert_eq!(cycle.taken.iter().map(|l| l.key.as_str()).collect::<Vec<_>>(), ["p0", "p1"]);
    a.commit(&table, "p0", &Commit::position(crate::lease::SHARD_END, 1)).await.expect("p0 ended");
    a.release(&table, "p0").await.expect("release");
    assert!(a.cycle(&table, t0 + TICK).await.expect("cycle").taken.is_empty(), "p1 has not ended");
    a.commit(&table, "p1", &Commit::position(crate::lease::SHARD_END, 1)).await.expect("p1 ended");
    a.release(&table, "p1").await.expect("release");
    let mut b = LeaseKeeper::new("b", LEASE);
    let cycle = b.cycle(&table, t0 + TICK * 2).await.expect("cycle");
    assert_eq!(cycle.taken.iter().map(|l| l.key.as_str()).collect::<Vec<_>>(), ["merged"], "whoever read the parents");
}
