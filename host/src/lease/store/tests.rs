//! The lease store against the in-memory table: states big and small,
//! cleared and kept, limits, aged-out leases.

use super::*;
use crate::lease::faulty::{Fault, FaultyTable};
use crate::lease::InMemoryTable;
use std::time::Instant;

fn store(table: &Arc<impl LeaseTable + 'static>, id: &str) -> LeaseStore {
    LeaseStore::new(table.clone(), id, Duration::from_secs(3), "memory".into())
}

/// A commit under the store's current take of the shard (a take no task
/// could have when it holds none).
async fn commit(store: &LeaseStore, key: &ShardKey, checkpoint: &Checkpoint) -> Result<(), CommitError> {
    let tenure = store.owns(&key.shard_id).unwrap_or(Tenure(u64::MAX));
    store.commit(key, tenure, checkpoint).await
}

fn shard(id: &str) -> ShardInfo {
    ShardInfo { shard_id: id.into(), parent: None, adjacent_parent: None, hash_range: None }
}

fn checkpoint(seq: &str, state: Vec<u8>) -> Checkpoint {
    Checkpoint {
        sequence_number: Some(seq.into()),
        sub_sequence_number: 0,
        shard_end: false,
        state: Some((3, state)),
        ..Checkpoint::default()
    }
}

#[tokio::test]
async fn big_and_small_states_move_to_the_next_owner_intact_and_old_versions_go() {
    let table = Arc::new(InMemoryTable::default());
    let (a, b) = (store(&table, "a"), store(&table, "b"));
    let key = ShardKey::new("app", "s", "s0");
    a.cycle(&[shard("s0")]).await.expect("cycle");
    assert!(a.owns("s0").is_some());
    let big: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    for (i, state) in [vec![1u8; 100], big.clone(), vec![2u8; 1024 * 1024], big.clone()].into_iter().enumerate() {
        commit(&a, &key, &checkpoint(&format!("{i}"), state)).await.expect("commit");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(table.stored_states(), 2, "four commits, one take: its two slots, written in turn");
    a.release_all().await.expect("release");
    b.cycle(&[shard("s0")]).await.expect("cycle");
    assert!(b.owns("s0").is_some() && a.owns("s0").is_none());
    let loaded = b.load(&key).await.expect("load").expect("checkpoint");
    assert_eq!(loaded.sequence_number.as_deref(), Some("3"));
    assert_eq!(loaded.state, Some((3, big)), "the 4 MB state arrived byte for byte");
    // The next commit goes on from the version b loaded.
    commit(&b, &key, &checkpoint("4", vec![9; 10])).await.expect("commit");
    assert_eq!(table.get("s0").await.expect("get").map(|l| l.state_version), Some(5));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(table.stored_states(), 1, "b's first commit let a's take's slots go");
    // a is fenced off: its late commit is a lost lease, not an error.
    let late = commit(&a, &key, &checkpoint("9", vec![0; 10])).await;
    assert!(matches!(late, Err(CommitError::LeaseLost { .. })), "{late:?}");
}

#[tokio::test]
async fn an_ended_lease_of_a_shard_gone_from_the_stream_is_deleted_with_its_state() {
    let table = Arc::new(InMemoryTable::default());
    let a = store(&table, "a");
    a.cycle(&[shard("old"), shard("new")]).await.expect("cycle");
    let key = ShardKey::new("app", "s", "old");
    commit(&a, &key, &checkpoint("5", vec![7; 100_000])).await.expect("a big state");
    let end = Checkpoint {
        sequence_number: None,
        sub_sequence_number: 0,
        shard_end: true,
        state: None,
        ..Checkpoint::default()
    };
    commit(&a, &key, &end).await.expect("shard end");
    a.release("old", a.owns("old").expect("held")).await.expect("released at its end, as a run does");
    a.cycle(&[shard("old"), shard("new")]).await.expect("still listed: kept");
    assert!(table.get("old").await.expect("get").is_some());
    a.cycle(&[shard("new")]).await.expect("aged out");
    assert!(table.get("old").await.expect("get").is_none(), "the lease went");
    assert_eq!(table.stored_states(), 0, "and its chunks");
    assert!(table.get("new").await.expect("get").is_some(), "an open shard's lease stays");
}

#[tokio::test]
async fn a_commit_without_state_clears_it_but_a_shard_end_keeps_the_last_one() {
    let table = Arc::new(InMemoryTable::default());
    let a = store(&table, "a");
    a.cycle(&[shard("s0")]).await.expect("cycle");
    let key = ShardKey::new("app", "s", "s0");
    let bare = |seq: &str, shard_end| Checkpoint {
        sequence_number: Some(seq.into()),
        sub_sequence_number: 0,
        shard_end,
        state: None,
        ..Checkpoint::default()
    };
    commit(&a, &key, &checkpoint("1", vec![5; 10])).await.expect("commit");
    commit(&a, &key, &bare("2", false)).await.expect("a rollback to before any state");
    assert_eq!(a.load(&key).await.expect("load").and_then(|c| c.state), None, "cleared");
    commit(&a, &key, &checkpoint("3", vec![6; 10])).await.expect("commit");
    commit(&a, &key, &bare("4", true)).await.expect("shard end");
    let end = a.load(&key).await.expect("load").expect("checkpoint");
    assert!(end.shard_end && end.state == Some((3, vec![6; 10])), "the last state stays: {end:?}");
}

#[tokio::test]
async fn a_state_over_the_limit_fails_with_the_limit_named_and_commits_nothing() {
    let table = Arc::new(InMemoryTable::default());
    let a = store(&table, "a");
    let key = ShardKey::new("app", "s", "s0");
    a.cycle(&[shard("s0")]).await.expect("cycle");
    let err = commit(&a, &key, &checkpoint("1", vec![0; MAX_STATE_BYTES + 1])).await.expect_err("too big");
    assert!(err.to_string().contains("at most 16 MiB"), "{err}");
    assert!(!matches!(err, CommitError::LeaseLost { .. }));
    assert_eq!(table.get("s0").await.expect("get").and_then(|l| l.checkpoint), None);
}

#[tokio::test]
async fn a_commit_whose_answer_was_lost_is_found_by_its_nonce_and_the_shard_goes_on() {
    // Seen in CI with DynamoDB killed -9 under a worker: the commit landed,
    // its answer was lost, and the retry came back ConditionalCheckFailed.
    let table = Arc::new(FaultyTable::new(0, 0));
    let a = store(&table, "a");
    let key = ShardKey::new("app", "s", "s0");
    a.cycle(&[shard("s0")]).await.expect("cycle");
    let tenure = a.owns("s0").expect("held");
    table.script(&[Fault::LostAnswer]);
    a.commit(&key, tenure, &checkpoint("1", vec![1; 10])).await.expect("recognised as landed");
    table.script(&[Fault::RetriedAfterLanding]);
    a.commit(&key, tenure, &checkpoint("2", vec![2; 10])).await.expect("recognised as landed");
    assert_eq!(a.owns("s0"), Some(tenure), "still held under the same take");
    let changes = a.cycle(&[shard("s0")]).await.expect("cycle");
    assert!(changes.lost.is_empty(), "{changes:?}");
    let loaded = a.load(&key).await.expect("load").expect("checkpoint");
    assert_eq!((loaded.sequence_number.as_deref(), loaded.state), (Some("2"), Some((3, vec![2; 10]))));
}

#[tokio::test]
async fn a_commit_the_table_never_answers_ends_with_the_take_not_with_the_run() {
    let table = Arc::new(FaultyTable::new(0, 0));
    let a = Arc::new(LeaseStore::new(table.clone(), "a", Duration::from_millis(600), "memory".into()));
    let key = ShardKey::new("app", "s", "s0");
    a.cycle(&[shard("s0")]).await.expect("cycle");
    let tenure = a.owns("s0").expect("held");
    table.cut_off(true);
    let started = Instant::now();
    let commit = a.commit(&key, tenure, &checkpoint("1", vec![1; 10])).await;
    assert!(matches!(&commit, Err(CommitError::LeaseLost { reason, .. }) if reason.contains("renew")), "{commit:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "within about a lease: {:?}", started.elapsed());
    assert!(!a.holds("s0", tenure));
}

#[tokio::test]
async fn a_commit_the_table_refuses_for_good_fails_the_shard_at_once_with_the_reason() {
    let table = Arc::new(FaultyTable::new(0, 0));
    let a = store(&table, "a");
    let key = ShardKey::new("app", "s", "s0");
    a.cycle(&[shard("s0")]).await.expect("cycle");
    let tenure = a.owns("s0").expect("held");
    table.script(&[Fault::Denied]);
    let started = Instant::now();
    let commit = a.commit(&key, tenure, &Checkpoint { state: None, ..checkpoint("1", Vec::new()) }).await;
    assert!(matches!(&commit, Err(CommitError::Store(e)) if e.to_string().contains("AccessDenied")), "{commit:?}");
    assert!(started.elapsed() < Duration::from_millis(500), "not retried: {:?}", started.elapsed());
}

#[tokio::test]
async fn a_pre_swap_point_moves_with_the_lease_and_outlives_the_takers_cleanup() {
    let table = Arc::new(InMemoryTable::default());
    let (a, b) = (store(&table, "a"), store(&table, "b"));
    let key = ShardKey::new("app", "s", "s0");
    a.cycle(&[shard("s0")]).await.expect("cycle");
    let before = vec![1u8; 500_000];
    commit(&a, &key, &checkpoint("10", before.clone())).await.expect("commit");
    let (old, new) = ("a".repeat(64), "b".repeat(64));
    let point = Arc::new(PreSwapPoint {
        id: 7,
        logic: old.clone(),
        sequence_number: Some("10".into()),
        sub_sequence_number: 0,
        state: Some((3, before.clone())),
    });
    let swapped = |seq: &str, point: &Arc<PreSwapPoint>| Checkpoint {
        logic: Some(new.clone()),
        pre_swap: Some(point.clone()),
        ..checkpoint(seq, vec![2; 10])
    };
    for seq in ["11", "12", "13", "14"] {
        commit(&a, &key, &swapped(seq, &point)).await.expect("commit");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(table.stored_states(), 3, "the take's two slots and the pre-swap point, written once");
    a.release_all().await.expect("release");
    b.cycle(&[shard("s0")]).await.expect("cycle");
    let loaded = b.load(&key).await.expect("load").expect("checkpoint");
    assert_eq!((loaded.logic.as_deref(), loaded.logic_commits), (Some(new.as_str()), 4));
    let pre = loaded.pre_swap.expect("the pre-swap point came with the lease");
    assert_eq!(
        (&pre.logic, pre.sequence_number.as_deref(), &pre.state),
        (&old, Some("10"), &Some((3, before.clone())))
    );
    // The taker's first commit writes the point under its own take: its
    // cleanup of the last take's chunks leaves the point readable.
    commit(&b, &key, &swapped("15", &pre)).await.expect("commit");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(table.stored_states(), 2, "b's slot and b's copy of the point");
    let again = b.load(&key).await.expect("load").and_then(|c| c.pre_swap).expect("still there");
    assert_eq!(again.state, Some((3, before.clone())));
    // A rollback's commit (no point) clears it.
    commit(&b, &key, &checkpoint("10", before)).await.expect("commit");
    assert_eq!(b.load(&key).await.expect("load").and_then(|c| c.pre_swap), None);
}
