//! The lease store against the in-memory table: states big and small,
//! cleared and kept, limits, aged-out leases.

use super::*;
use crate::lease::InMemoryTable;

fn store(table: &Arc<InMemoryTable>, id: &str) -> LeaseStore {
    LeaseStore::new(table.clone(), id, Duration::from_secs(3), "memory".into())
}

fn shard(id: &str) -> ShardInfo {
    ShardInfo { shard_id: id.into(), parent: None, adjacent_parent: None, hash_range: None }
}

fn checkpoint(seq: &str, state: Vec<u8>) -> Checkpoint {
    Checkpoint { sequence_number: Some(seq.into()), sub_sequence_number: 0, shard_end: false, state: Some((3, state)) }
}

#[tokio::test]
async fn big_and_small_states_move_to_the_next_owner_intact_and_old_versions_go() {
    let table = Arc::new(InMemoryTable::default());
    let (a, b) = (store(&table, "a"), store(&table, "b"));
    let key = ShardKey::new("app", "s", "s0");
    a.cycle(&[shard("s0")]).await.expect("cycle");
    assert!(a.owns("s0"));
    let big: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    for (i, state) in [vec![1u8; 100], big.clone(), vec![2u8; 1024 * 1024], big.clone()].into_iter().enumerate() {
        a.commit(&key, &checkpoint(&format!("{i}"), state)).await.expect("commit");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(table.stored_states(), 1, "only the committed version's chunks stay");
    a.release_all().await.expect("release");
    b.cycle(&[shard("s0")]).await.expect("cycle");
    assert!(b.owns("s0") && !a.owns("s0"));
    let loaded = b.load(&key).await.expect("load").expect("checkpoint");
    assert_eq!(loaded.sequence_number.as_deref(), Some("3"));
    assert_eq!(loaded.state, Some((3, big)), "the 4 MB state arrived byte for byte");
    // The next commit goes on from the version b loaded.
    b.commit(&key, &checkpoint("4", vec![9; 10])).await.expect("commit");
    assert_eq!(table.get("s0").await.expect("get").map(|l| l.state_version), Some(5));
    // a is fenced off: its late commit is a lost lease, not an error.
    let late = a.commit(&key, &checkpoint("9", vec![0; 10])).await;
    assert!(matches!(late, Err(CommitError::LeaseLost { .. })), "{late:?}");
}

#[tokio::test]
async fn an_ended_lease_of_a_shard_gone_from_the_stream_is_deleted_with_its_state() {
    let table = Arc::new(InMemoryTable::default());
    let a = store(&table, "a");
    a.cycle(&[shard("old"), shard("new")]).await.expect("cycle");
    let key = ShardKey::new("app", "s", "old");
    a.commit(&key, &checkpoint("5", vec![7; 100_000])).await.expect("a big state");
    let end = Checkpoint { sequence_number: None, sub_sequence_number: 0, shard_end: true, state: None };
    a.commit(&key, &end).await.expect("shard end");
    a.release("old").await.expect("released at its end, as a run does");
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
    };
    a.commit(&key, &checkpoint("1", vec![5; 10])).await.expect("commit");
    a.commit(&key, &bare("2", false)).await.expect("a rollback to before any state");
    assert_eq!(a.load(&key).await.expect("load").and_then(|c| c.state), None, "cleared");
    a.commit(&key, &checkpoint("3", vec![6; 10])).await.expect("commit");
    a.commit(&key, &bare("4", true)).await.expect("shard end");
    let end = a.load(&key).await.expect("load").expect("checkpoint");
    assert!(end.shard_end && end.state == Some((3, vec![6; 10])), "the last state stays: {end:?}");
}

#[tokio::test]
async fn a_state_over_the_limit_fails_with_the_limit_named_and_commits_nothing() {
    let table = Arc::new(InMemoryTable::default());
    let a = store(&table, "a");
    let key = ShardKey::new("app", "s", "s0");
    a.cycle(&[shard("s0")]).await.expect("cycle");
    let err = a.commit(&key, &checkpoint("1", vec![0; MAX_STATE_BYTES + 1])).await.expect_err("too big");
    assert!(err.to_string().contains("at most 16 MiB"), "{err}");
    assert!(!matches!(err, CommitError::LeaseLost { .. }));
    assert_eq!(table.get("s0").await.expect("get").and_then(|l| l.checkpoint), None);
}

/// The in-memory table, except that the first checkpoint write lands but
/// its answer is lost (DynamoDB killed between the write and the reply).
#[derive(Debug, Default)]
struct LostAnswer {
    inner: InMemoryTable,
    answered_once: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl LeaseTable for LostAnswer {
    async fn create(&self, key: &str, parents: &[String]) -> Result<(), LeaseError> {
        self.inner.create(key, parents).await
    }
    async fn scan(&self) -> Result<Vec<super::super::Lease>, LeaseError> {
        self.inner.scan().await
    }
    async fn get(&self, key: &str) -> Result<Option<super::super::Lease>, LeaseError> {
        self.inner.get(key).await
    }
    async fn take(&self, key: &str, counter: u64, me: &str) -> Result<super::super::Lease, LeaseError> {
        self.inner.take(key, counter, me).await
    }
    async fn renew(&self, key: &str, counter: u64, me: &str) -> Result<super::super::Lease, LeaseError> {
        self.inner.renew(key, counter, me).await
    }
    async fn checkpoint(
        &self,
        key: &str,
        counter: u64,
        me: &str,
        commit: &Commit,
    ) -> Result<super::super::Lease, LeaseError> {
        let lease = self.inner.checkpoint(key, counter, me, commit).await?;
        if self.answered_once.swap(true, std::sync::atomic::Ordering::SeqCst) {
            Ok(lease)
        } else {
            Err(LeaseError::Table(anyhow::anyhow!("connection reset before the answer")))
        }
    }
    async fn release(&self, key: &str, counter: u64, me: &str) -> Result<super::super::Lease, LeaseError> {
        self.inner.release(key, counter, me).await
    }
    async fn delete(&self, key: &str, counter: u64) -> Result<(), LeaseError> {
        self.inner.delete(key, counter).await
    }
    async fn request_hand_off(&self, key: &str, owner: &str, me: &str) -> Result<(), LeaseError> {
        self.inner.request_hand_off(key, owner, me).await
    }
    async fn put_state(&self, key: &str, version: u64, layout: u32, bytes: &[u8]) -> Result<StateRef, LeaseError> {
        self.inner.put_state(key, version, layout, bytes).await
    }
    async fn get_state(&self, key: &str, state: &StateRef) -> Result<Vec<u8>, LeaseError> {
        self.inner.get_state(key, state).await
    }
    async fn drop_states(&self, key: &str, keep: &str) -> Result<(), LeaseError> {
        self.inner.drop_states(key, keep).await
    }
}

#[tokio::test]
async fn a_lease_dropped_at_renewal_is_not_adopted_back_by_a_retried_commit() {
    // Seen in CI with DynamoDB killed -9 under a worker: the commit landed,
    // its answer was lost; the renewal then found the counter moved and
    // dropped the shard, but the retried commit adopted the lease back, so
    // the worker held a lease for a shard it no longer ran: stuck for good.
    let table = Arc::new(LostAnswer::default());
    let a = Arc::new(LeaseStore::new(table.clone(), "a", Duration::from_millis(400), "memory".into()));
    let key = ShardKey::new("app", "s", "s0");
    a.cycle(&[shard("s0")]).await.expect("cycle");
    assert!(a.owns("s0"));
    let committing = {
        let (a, key) = (a.clone(), key.clone());
        tokio::spawn(async move { a.commit(&key, &checkpoint("1", vec![1; 10])).await })
    };
    // The commit retries in 100 ms; the renewal comes first.
    tokio::time::sleep(Duration::from_millis(30)).await;
    let changes = a.cycle(&[shard("s0")]).await.expect("cycle");
    assert_eq!(changes.lost, ["s0"], "the renewal saw the counter moved");
    let commit = committing.await.expect("join");
    assert!(matches!(commit, Err(CommitError::LeaseLost { .. })), "{commit:?}");
    assert!(!a.owns("s0"), "not held while nothing runs it");
    // It expires and is taken again, resuming from the commit that landed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let changes = a.cycle(&[shard("s0")]).await.expect("cycle");
    assert_eq!(changes.taken, ["s0"]);
    let loaded = a.load(&key).await.expect("load").expect("checkpoint");
    assert_eq!(loaded.sequence_number.as_deref(), Some("1"));
}
