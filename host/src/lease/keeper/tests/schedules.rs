//! The lease protocol against the in-memory table with a fake clock, under
//! random schedules of commits, pauses (a frozen worker, as with SIGSTOP),
//! crashes (kill -9: the worker's memory is gone, its leases are not) and
//! table faults (calls refused after the SDK's retries, answers lost, SDK
//! retries of writes that landed). After every step:
//! - every lease a worker holds is run by it under that take, and it runs no
//!   shard it does not hold;
//! - no two workers hold one lease at once, each by its own clock (output
//!   is written only while held, so no two write a shard's output);
//! - no checkpoint goes back.

use super::*;
use crate::lease::faulty::FaultyTable;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SHARDS: usize = 8;

fn position(lease: Option<&Lease>) -> u64 {
    lease.and_then(|l| l.checkpoint.as_deref()).map_or(0, |c| c.parse().expect("a number"))
}

/// A simulated host: its keeper, the shard tasks it runs (take, position),
/// and how many ticks it stays frozen.
struct Host {
    keeper: LeaseKeeper,
    running: BTreeMap<String, (Tenure, u64)>,
    frozen: u32,
}

impl Host {
    fn new(id: &str, time: &FakeTime) -> Self {
        Host { keeper: keeper(id, time), running: BTreeMap::new(), frozen: 0 }
    }

    /// Stops the tasks of lost takes, as the consumer does.
    fn drop_lost(&mut self, lost: Vec<Lost>) {
        for (key, tenure, _) in lost {
            if self.running.get(&key).is_some_and(|(t, _)| *t == tenure) {
                self.running.remove(&key);
            }
        }
    }

    /// One round of a live host: expiry, renewals, a scan, hand-offs
    /// carried out (commit, release), tasks started for new takes.
    async fn round(&mut self, table: &FaultyTable) {
        let lost = self.keeper.expire();
        self.drop_lost(lost);
        let renewed = self.keeper.renew(table).await;
        self.drop_lost(renewed.lost);
        let mut hand_off = renewed.hand_off;
        if let Ok(scanned) = self.keeper.scan_and_take(table, None).await {
            hand_off.extend(scanned.hand_off);
        }
        for (key, tenure) in hand_off {
            if let Some(&(t, at)) = self.running.get(&key).filter(|(t, _)| *t == tenure) {
                // The last batch's commit, then the release; the task ends either way.
                let _ = self.keeper.commit(table, &key, t, &Commit::position(&(at + 1).to_string(), at + 1)).await;
                self.keeper.release(table, &key, t).await;
                self.running.remove(&key);
            }
        }
        for key in self.keeper.held() {
            let Some(tenure) = self.keeper.tenure(&key) else { continue };
            match self.running.get(&key) {
                Some((t, _)) if *t == tenure => {}
                Some((t, _)) => panic!("{key}: a task of take {t:?} still runs beside take {tenure:?}"),
                None => {
                    let at = position(table.inner.get(&key).await.expect("get").as_ref());
                    self.running.insert(key, (tenure, at));
                }
            }
        }
    }

    /// Each task writes its output (only while its take holds) and commits
    /// one record further. Returns the refused commits.
    async fn commit_all(&mut self, table: &FaultyTable) -> u32 {
        let mut refused = 0;
        for (key, (tenure, at)) in self.running.clone() {
            if !self.keeper.valid(&key, tenure) {
                // The output gate: the task stops without writing.
                self.running.remove(&key);
                refused += 1;
                continue;
            }
            let next = at + 1;
            match self.keeper.commit(table, &key, tenure, &Commit::position(&next.to_string(), next)).await {
                Ok(_) => {
                    self.running.insert(key, (tenure, next));
                }
                Err(CommitFailed::Lost(_)) => {
                    refused += 1;
                    self.running.remove(&key);
                }
                Err(CommitFailed::Unknown(_) | CommitFailed::Denied(_)) => {}
            }
        }
        refused
    }
}

/// The invariants, after a step. `awake`: the hosts that ran this step.
fn check(seed: u64, step: u32, hosts: &[Host], awake: &[bool]) {
    for host in hosts.iter().zip(awake).filter(|(_, awake)| **awake).map(|(h, _)| h) {
        let id = host.keeper.id();
        for key in host.keeper.held() {
            if let Some(tenure) = host.keeper.tenure(&key) {
                assert_eq!(
                    host.running.get(&key).map(|(t, _)| *t),
                    Some(tenure),
                    "seed {seed} step {step}: {id} holds {key} under {tenure:?} but does not run it"
                );
            }
        }
        for (key, (tenure, _)) in &host.running {
            assert!(
                host.keeper.valid(key, *tenure),
                "seed {seed} step {step}: {id} runs {key} under {tenure:?} without holding it"
            );
        }
    }
    for i in 0..SHARDS {
        let key = format!("shard-{i}");
        let holders: Vec<&str> =
            hosts.iter().filter(|h| h.keeper.tenure(&key).is_some()).map(|h| h.keeper.id()).collect();
        assert!(holders.len() <= 1, "seed {seed} step {step}: {key} held by {holders:?} at once");
    }
}

/// Runs one random schedule; returns (refused late commits, leases that
/// moved from a live-looking owner, faults injected).
///
/// Late commits stopped by the worker's own clock (the output gate) and
/// refused by the table are counted together.
async fn schedule(seed: u64) -> (u32, u32, u64) {
    let time = FakeTime::new();
    let table = table_with(SHARDS, FaultyTable::new(seed, 10)).await;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut hosts: Vec<Host> = (0..3).map(|i| Host::new(&format!("w{i}"), &time)).collect();
    let (mut next_id, mut refused, mut moved) = (3, 0, 0);
    let mut checkpoints: BTreeMap<String, u64> = BTreeMap::new();
    let mut owners: BTreeMap<String, Option<String>> = BTreeMap::new();
    for step in 0..400u32 {
        time.advance(TICK);
        let w = rng.random_range(0..hosts.len());
        match rng.random_range(0..100) {
            // kill -9: memory gone; a new process with a new id takes its place.
            0..2 => {
                hosts[w] = Host::new(&format!("w{next_id}"), &time);
                next_id += 1;
            }
            // Frozen for longer than a lease (SIGSTOP, a long GC, a partition).
            2..5 => hosts[w].frozen = rng.random_range(7..14),
            // The frozen one restarted elsewhere with the same --worker-id:
            // two processes, one id.
            5..7 if hosts[w].frozen > 0 && hosts.len() < 5 => {
                let twin = Host::new(hosts[w].keeper.id(), &time);
                hosts.push(twin);
            }
            _ => {}
        }
        let mut awake = Vec::new();
        for host in hosts.iter_mut() {
            awake.push(host.frozen == 0);
            if host.frozen > 0 {
                host.frozen -= 1;
                continue;
            }
            host.round(&table).await;
        }
        // The chosen worker commits, even when frozen: its commits then
        // come late, as a resumed process's in-flight work does.
        refused += hosts[w].commit_all(&table).await;
        check(seed, step, &hosts, &awake);
        for lease in table.inner.scan().await.expect("scan") {
            let at = position(Some(&lease));
            let before = checkpoints.insert(lease.key.clone(), at).unwrap_or(0);
            assert!(at >= before, "seed {seed} step {step}: {} went back from {before} to {at}", lease.key);
            let owner = owners.insert(lease.key.clone(), lease.owner.clone()).flatten();
            moved += u32::from(owner.is_some() && lease.owner.is_some() && owner != lease.owner);
        }
    }
    // Healthy again, everyone awake: within a few leases every shard is
    // held by exactly one worker, and run by it.
    let injected = table.injected.lock().expect("lock").values().sum();
    table.set_rate(0);
    for host in hosts.iter_mut() {
        host.frozen = 0;
    }
    let mut settled = false;
    for round in 0..40u32 {
        time.advance(TICK);
        for host in hosts.iter_mut() {
            host.round(&table).await;
        }
        check(seed, 400 + round, &hosts, &vec![true; hosts.len()]);
        let held: usize = hosts.iter().map(|h| h.running.len()).sum();
        if held == SHARDS {
            settled = true;
            break;
        }
    }
    assert!(settled, "seed {seed}: every shard run again: {:#?}", table.inner.scan().await);
    (refused, moved, injected)
}

#[tokio::test]
async fn random_crashes_pauses_and_table_faults_never_break_the_lease_invariants() {
    let (mut refused, mut moved, mut injected) = (0, 0, 0);
    for seed in 0..40 {
        let (r, m, i) = schedule(seed).await;
        refused += r;
        moved += m;
        injected += i;
    }
    // The schedules did what they are for: leases moved between workers,
    // late commits were refused, faults were injected.
    assert!(refused > 20 && moved > 20 && injected > 1000, "refused {refused}, moved {moved}, injected {injected}");
}
