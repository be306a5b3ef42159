//! The lease protocol against the in-memory table with a fake clock: one
//! behaviour per test here; random schedules of crashes, pauses and table
//! faults with the protocol's invariants in `schedules`.

mod schedules;

use super::*;
use crate::lease::faulty::{Fault, FaultyTable};
use crate::lease::{Commit, InMemoryTable, SHARD_END};
use std::collections::BTreeSet;

pub(super) const LEASE: Duration = Duration::from_secs(3);
pub(super) const TICK: Duration = Duration::from_millis(500);

/// A clock the test moves by hand, shared by every worker (frozen ones too:
/// a stopped process's monotonic clock goes on).
#[derive(Clone)]
pub(super) struct FakeTime(Arc<Mutex<Instant>>);

impl FakeTime {
    pub(super) fn new() -> Self {
        FakeTime(Arc::new(Mutex::new(Instant::now())))
    }
    pub(super) fn clock(&self) -> Clock {
        let time = self.0.clone();
        Arc::new(move || *time.lock().expect("clock"))
    }
    pub(super) fn advance(&self, by: Duration) {
        *self.0.lock().expect("clock") += by;
    }
}

pub(super) fn keeper(id: &str, time: &FakeTime) -> LeaseKeeper {
    LeaseKeeper::with_clock(id, LEASE, time.clock())
}

pub(super) async fn table_with<T: LeaseTable>(shards: usize, table: T) -> T {
    for i in 0..shards {
        table.create(&format!("shard-{i}"), &[]).await.expect("create");
    }
    table
}

/// One round of each keeper: expiry, renewals, a scan; hand-offs asked of
/// it carried out (commit, release).
async fn round(table: &dyn LeaseTable, keepers: &[LeaseKeeper]) -> usize {
    let mut taken = 0;
    for keeper in keepers {
        keeper.expire();
        let renewed = keeper.renew(table).await;
        let scanned = keeper.scan_and_take(table, None).await.expect("scan");
        taken += scanned.taken.len();
        for (key, tenure) in renewed.hand_off.into_iter().chain(scanned.hand_off) {
            if keeper.valid(&key, tenure) {
                keeper.commit(table, &key, tenure, &Commit::position("1", 1)).await.expect("commit before hand-off");
                keeper.release(table, &key, tenure).await;
            }
        }
    }
    taken
}

fn counts(keepers: &[LeaseKeeper]) -> Vec<usize> {
    let mut counts: Vec<usize> = keepers.iter().map(|k| k.held().len()).collect();
    counts.sort();
    counts
}

fn tenure(keeper: &LeaseKeeper, key: &str) -> Tenure {
    keeper.tenure(key).expect("held")
}

#[tokio::test]
async fn a_frozen_worker_cannot_commit_after_its_lease_was_taken() {
    let time = FakeTime::new();
    let table = table_with(1, InMemoryTable::default()).await;
    let (a, b) = (keeper("a", &time), keeper("b", &time));
    assert_eq!(a.scan_and_take(&table, None).await.expect("scan").taken.len(), 1);
    let t = tenure(&a, "shard-0");
    a.commit(&table, "shard-0", t, &Commit::position("10", 1)).await.expect("a holds it");
    // a freezes; b watches the counter stand still for a lease, then takes it.
    assert!(b.scan_and_take(&table, None).await.expect("scan").taken.is_empty(), "a is live");
    time.advance(LEASE);
    assert!(!a.valid("shard-0", t), "by a's own clock, its take ran out");
    assert_eq!(b.scan_and_take(&table, None).await.expect("scan").taken.len(), 1, "expired by b's clock");
    b.commit(&table, "shard-0", tenure(&b, "shard-0"), &Commit::position("11", 2)).await.expect("b holds it");
    // a wakes up and tries to commit what it did before freezing.
    let late = a.commit(&table, "shard-0", t, &Commit::position("12", 2)).await;
    assert!(matches!(late, Err(CommitFailed::Lost(_))), "{late:?}");
    let lost = a.expire();
    assert_eq!(lost.iter().map(|(k, t, _)| (k.as_str(), *t)).collect::<Vec<_>>(), [("shard-0", t)]);
    let lease = table.scan().await.expect("scan").remove(0);
    assert_eq!((lease.owner.as_deref(), lease.checkpoint.as_deref(), lease.state_version), (Some("b"), Some("11"), 2));
}

#[tokio::test]
async fn a_lease_lost_and_taken_back_is_a_new_take_and_the_old_one_cannot_commit() {
    // The frozen-worker scenario: a holds the shard, freezes past its
    // lease; b takes it, works, stops cleanly (releases); a wakes up.
    let time = FakeTime::new();
    let table = table_with(1, InMemoryTable::default()).await;
    let (a, b) = (keeper("a", &time), keeper("b", &time));
    a.scan_and_take(&table, None).await.expect("scan");
    let old = tenure(&a, "shard-0");
    a.commit(&table, "shard-0", old, &Commit::position("10", 1)).await.expect("commit");
    b.scan_and_take(&table, None).await.expect("scan");
    time.advance(LEASE);
    b.scan_and_take(&table, None).await.expect("b takes it");
    let tb = tenure(&b, "shard-0");
    b.commit(&table, "shard-0", tb, &Commit::position("50", 2)).await.expect("b works");
    b.release(&table, "shard-0", tb).await;
    // a wakes: the expired take is reported lost, then the free lease is
    // taken back under a new take; the old task's late commit is refused
    // and the checkpoint stays where b left it.
    let lost = a.expire();
    assert_eq!(lost.len(), 1);
    let taken = a.scan_and_take(&table, None).await.expect("scan").taken;
    assert_eq!(taken.len(), 1, "free: taken back at once");
    let new = tenure(&a, "shard-0");
    assert_ne!(new, old, "a new take");
    let late = a.commit(&table, "shard-0", old, &Commit::position("11", 2)).await;
    assert!(matches!(late, Err(CommitFailed::Lost(_))), "the old take's commit: {late:?}");
    a.commit(&table, "shard-0", new, &Commit::position("51", 3)).await.expect("the new take commits");
    assert_eq!(table.get("shard-0").await.expect("get").and_then(|l| l.checkpoint).as_deref(), Some("51"));
}

#[tokio::test]
async fn each_renewal_succeeds_or_fails_on_its_own() {
    let time = FakeTime::new();
    let table = table_with(3, FaultyTable::new(0, 0)).await;
    let a = keeper("a", &time);
    assert_eq!(a.scan_and_take(&table, None).await.expect("scan").taken.len(), 3);
    time.advance(LEASE / 3);
    // Three renewals, the first refused after the SDK's retries.
    table.script(&[Fault::Refused, Fault::None, Fault::None]);
    let renewed = a.renew(&table).await;
    assert_eq!((renewed.failed, renewed.lost.len()), (1, 0), "{renewed:?}");
    let counters: Vec<u64> = table.scan().await.expect("scan").iter().map(|l| l.counter).collect();
    assert_eq!(counters.iter().filter(|c| **c == 2).count(), 2, "two renewed: {counters:?}");
    // The failed one is still held, and runs out at its own deadline.
    time.advance(LEASE - LEASE / 3 - Duration::from_millis(1));
    assert_eq!(a.held().len(), 3);
    assert_eq!(a.expire().len(), 0);
    time.advance(Duration::from_millis(1));
    assert_eq!(a.expire().len(), 1, "the one never renewed");
    assert_eq!(a.held().len(), 2);
}

#[tokio::test]
async fn a_write_whose_answer_was_lost_is_recognised_by_its_nonce() {
    let time = FakeTime::new();
    let table = table_with(1, FaultyTable::new(0, 0)).await;
    let a = keeper("a", &time);
    // The take lands, the answer is lost; the read-back finds it.
    table.script(&[Fault::None, Fault::LostAnswer]);
    assert_eq!(a.scan_and_take(&table, None).await.expect("scan").taken.len(), 1, "the take landed");
    let t = tenure(&a, "shard-0");
    // The SDK retried a renewal that had landed: ConditionalCheckFailed,
    // which is no lost lease.
    time.advance(LEASE / 3);
    table.script(&[Fault::RetriedAfterLanding]);
    let renewed = a.renew(&table).await;
    assert!(renewed.lost.is_empty() && renewed.failed == 0, "{renewed:?}");
    // A commit whose answer was lost, then one whose read-back failed too
    // (unknown), whose next attempt finds the lease moved by the first.
    table.script(&[Fault::LostAnswer]);
    a.commit(&table, "shard-0", t, &Commit::position("5", 1)).await.expect("recognised");
    table.script(&[Fault::LostAnswer, Fault::Refused]);
    let unknown = a.commit(&table, "shard-0", t, &Commit::position("6", 2)).await;
    assert!(matches!(unknown, Err(CommitFailed::Unknown(_))), "{unknown:?}");
    time.advance(LEASE / 3);
    table.script(&[Fault::None, Fault::None]);
    let renewed = a.renew(&table).await;
    assert!(renewed.lost.is_empty(), "the renewal found the unknown commit landed: {renewed:?}");
    a.commit(&table, "shard-0", t, &Commit::position("6", 2)).await.expect("and goes on");
    let lease = table.get("shard-0").await.expect("get").expect("lease");
    assert_eq!((lease.owner.as_deref(), lease.checkpoint.as_deref()), (Some("a"), Some("6")));
    assert!(a.valid("shard-0", t));
    // A renewal lands unanswered and unread; the next commit is refused and
    // its read-back finds that renewal, not itself: the commit did not land
    // and must say so (it goes again at the new counter), never pass for done.
    time.advance(LEASE / 3);
    table.script(&[Fault::LostAnswer, Fault::Refused]);
    assert_eq!(a.renew(&table).await.failed, 1);
    table.script(&[Fault::None, Fault::None]);
    let again = a.commit(&table, "shard-0", t, &Commit::position("7", 3)).await;
    assert!(matches!(again, Err(CommitFailed::Unknown(_))), "{again:?}");
    assert_eq!(table.inner.get("shard-0").await.expect("get").and_then(|l| l.checkpoint).as_deref(), Some("6"));
    a.commit(&table, "shard-0", t, &Commit::position("7", 3)).await.expect("the retry lands");
    assert_eq!(table.inner.get("shard-0").await.expect("get").and_then(|l| l.checkpoint).as_deref(), Some("7"));
}

#[tokio::test]
async fn a_worker_cut_off_from_the_table_stops_at_its_deadline_and_takes_its_leases_again_after() {
    let time = FakeTime::new();
    let table = table_with(2, FaultyTable::new(0, 0)).await;
    let a = keeper("a", &time);
    a.scan_and_take(&table, None).await.expect("scan");
    table.cut_off(true);
    for _ in 0..5 {
        time.advance(LEASE / 6);
        let renewed = a.renew(&table).await;
        assert!(renewed.lost.is_empty(), "an unanswered renewal is no loss");
        assert!(a.scan_and_take(&table, None).await.is_err());
        assert!(a.expire().is_empty() && a.tenure("shard-0").is_some(), "still within its lease");
    }
    time.advance(LEASE / 6);
    assert_eq!(a.expire().len(), 2, "a lease duration without a renewal: both dropped");
    assert!(a.tenure("shard-0").is_none() && a.tenure("shard-1").is_none());
    // Back: the leases in its own name stood still for a lease duration.
    table.cut_off(false);
    time.advance(TICK);
    let taken = a.scan_and_take(&table, None).await.expect("scan").taken;
    assert_eq!(taken.len(), 2, "taken again");
    assert_eq!(a.stats().0.get("expired"), Some(&2));
}

#[tokio::test]
async fn a_released_lease_is_taken_at_once_and_renewing_keeps_it() {
    let time = FakeTime::new();
    let table = table_with(2, InMemoryTable::default()).await;
    let (a, b) = (keeper("a", &time), keeper("b", &time));
    assert_eq!(a.scan_and_take(&table, None).await.expect("scan").taken.len(), 2, "alone: both");
    // Renewing every third of a lease keeps b from seeing them expire.
    for _ in 0..20 {
        time.advance(LEASE / 3);
        assert!(a.renew(&table).await.lost.is_empty());
        assert!(b.scan_and_take(&table, None).await.expect("scan").taken.is_empty());
    }
    a.release_all(&table).await;
    assert_eq!(b.scan_and_take(&table, None).await.expect("scan").taken.len(), 2, "free leases go at once");
    assert!(a.scan_and_take(&table, None).await.expect("scan").taken.is_empty(), "a closing worker takes none");
}

#[tokio::test]
async fn a_zombie_with_the_same_worker_id_is_fenced_by_the_counter_alone() {
    let time = FakeTime::new();
    let table = table_with(1, InMemoryTable::default()).await;
    // Two processes with one --worker-id: the first freezes, the second
    // starts, sees the lease stand still for a lease duration, takes it.
    let (zombie, twin) = (keeper("a", &time), keeper("a", &time));
    zombie.scan_and_take(&table, None).await.expect("scan");
    let t = tenure(&zombie, "shard-0");
    twin.scan_and_take(&table, None).await.expect("scan");
    time.advance(LEASE);
    assert_eq!(twin.scan_and_take(&table, None).await.expect("scan").taken.len(), 1);
    twin.commit(&table, "shard-0", tenure(&twin, "shard-0"), &Commit::position("20", 5)).await.expect("twin holds it");
    // The zombie's clock says its take ran out; even a write tried anyway
    // is refused by the counter (the owner matches).
    assert!(matches!(zombie.commit(&table, "shard-0", t, &Commit::position("7", 2)).await, Err(CommitFailed::Lost(_))));
    let lease = table.scan().await.expect("scan").remove(0);
    assert_eq!((lease.checkpoint.as_deref(), lease.state_version), (Some("20"), 5));
}

#[tokio::test]
async fn newcomers_reach_their_share_in_a_few_rounds_and_then_nothing_moves() {
    let time = FakeTime::new();
    let table = table_with(12, InMemoryTable::default()).await;
    let mut keepers = vec![keeper("a", &time)];
    round(&table, &keepers).await;
    assert_eq!(counts(&keepers), [12], "alone: all of them");
    keepers.push(keeper("b", &time));
    keepers.push(keeper("c", &time));
    // Each newcomer asks for as many as it is short in one scan; the owner
    // hands them over at its next renewal; they take them at the next scan.
    let mut rounds = 0;
    while counts(&keepers) != [4, 4, 4] && rounds < 10 {
        time.advance(LEASE / 3);
        round(&table, &keepers).await;
        rounds += 1;
    }
    assert_eq!(counts(&keepers), [4, 4, 4], "balanced after {rounds} rounds");
    // One lease per round would take 8; the newcomer that asks first
    // cannot see the other, takes one too many and hands it on.
    assert!(rounds <= 5, "in {rounds} rounds");
    let expired: u64 = keepers.iter().map(|k| k.stats().0.get("expired").copied().unwrap_or(0)).sum();
    assert_eq!(expired, 0, "every move was a hand-off, none a steal");
    for _ in 0..20 {
        time.advance(LEASE / 3);
        assert_eq!(round(&table, &keepers).await, 0, "steady state: no lease changes hands");
    }
    keepers.push(keeper("d", &time));
    let mut rounds = 0;
    while counts(&keepers) != [3, 3, 3, 3] && rounds < 10 {
        time.advance(LEASE / 3);
        round(&table, &keepers).await;
        rounds += 1;
    }
    assert_eq!(counts(&keepers), [3, 3, 3, 3], "a 4th worker reaches its share");
    for _ in 0..20 {
        time.advance(LEASE / 3);
        let moved = round(&table, &keepers).await;
        assert_eq!(moved, 0, "no flapping after the join: {:?}", table.scan().await);
    }
}

#[tokio::test]
async fn a_child_is_taken_only_after_its_parents_ended_and_ended_leases_count_for_nobody() {
    let time = FakeTime::new();
    let table = InMemoryTable::default();
    for key in ["p0", "p1"] {
        table.create(key, &[]).await.expect("create");
    }
    table.create("merged", &["p0".into(), "p1".into()]).await.expect("create");
    let a = keeper("a", &time);
    let mut taken: Vec<String> =
        a.scan_and_take(&table, None).await.expect("scan").taken.into_iter().map(|l| l.key).collect();
    taken.sort();
    assert_eq!(taken, ["p0", "p1"], "the parents, not the child");
    for (i, parent) in ["p0", "p1"].into_iter().enumerate() {
        let t = tenure(&a, parent);
        a.commit(&table, parent, t, &Commit::position(SHARD_END, 1)).await.expect("ended");
        a.release(&table, parent, t).await;
        let taken = a.scan_and_take(&table, None).await.expect("scan").taken;
        assert_eq!(taken.is_empty(), i == 0, "the child waits for both parents");
    }
}

#[tokio::test]
async fn a_parent_gone_from_the_stream_unfinished_does_not_block_its_children_and_is_cleaned_up() {
    let time = FakeTime::new();
    let table = InMemoryTable::default();
    table.create("parent", &[]).await.expect("create");
    table.create("child", &["parent".into()]).await.expect("create");
    let (a, b) = (keeper("a", &time), keeper("b", &time));
    let both: BTreeSet<String> = ["parent".into(), "child".into()].into();
    let listed_at = |time: &FakeTime| (time.clock())();
    // a holds the parent and dies before its end.
    let taken = a.scan_and_take(&table, Some((&both, listed_at(&time)))).await.expect("scan").taken;
    assert_eq!(taken.iter().map(|l| l.key.as_str()).collect::<Vec<_>>(), ["parent"]);
    time.advance(TICK);
    // The stream trims the parent (past its retention): b's listing lacks it.
    let children: BTreeSet<String> = ["child".into()].into();
    let scanned = b.scan_and_take(&table, Some((&children, listed_at(&time)))).await.expect("scan");
    assert!(scanned.taken.is_empty(), "b's listing is no newer than its first sight of the parent: it proves nothing");
    time.advance(TICK);
    let scanned = b.scan_and_take(&table, Some((&children, listed_at(&time)))).await.expect("scan");
    assert_eq!(scanned.taken.iter().map(|l| l.key.as_str()).collect::<Vec<_>>(), ["child"], "not blocked");
    assert!(scanned.cleanup.is_empty(), "the parent is still held by a live-looking owner");
    b.commit(&table, "child", tenure(&b, "child"), &Commit::position("1", 1)).await.expect("child runs");
    time.advance(LEASE);
    b.renew(&table).await;
    let scanned = b.scan_and_take(&table, Some((&children, listed_at(&time)))).await.expect("scan");
    assert_eq!(scanned.cleanup.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["parent"], "cleaned up");
    // A listing older than the lease's first sight proves nothing.
    let c = keeper("c", &time);
    let stale_listing = listed_at(&time);
    time.advance(TICK);
    let scanned = c.scan_and_take(&table, Some((&children, stale_listing))).await.expect("scan");
    assert!(scanned.cleanup.is_empty(), "{:?}", scanned.cleanup);
}
