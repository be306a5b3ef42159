//! Which shards run: a shard starts once this host owns it and its parents
//! were read to their end (by whichever host, or have aged out of the
//! stream); it is never started twice; a shard that stopped on poison is
//! not restarted in this run, nor one that lost its lease until it is taken
//! again.

use crate::checkpoint::{Checkpoint, CheckpointStore, ShardKey, Tenure};
use crate::source::ShardInfo;
use std::collections::{BTreeMap, HashMap, HashSet};
use tokio::sync::watch;

/// What the consumer tells one running shard beside the global shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShardSignal {
    /// Keep going.
    Run,
    /// Another host asked for it: finish the batch, commit, stop.
    Release,
    /// Another host took it: stop at once, write and commit nothing.
    Drop,
}

/// A shard to start, with where it stands.
#[derive(Debug)]
pub(crate) struct Start {
    pub shard_id: String,
    pub checkpoint: Option<Checkpoint>,
    /// A child of a reshard: without a checkpoint it starts at its first
    /// record, or records between the parent's end and "now" would be lost.
    pub has_parent: bool,
    /// Its parents and hash-key range, as listed.
    pub info: ShardInfo,
    /// Hand-off and loss, from the consumer.
    pub signal: watch::Receiver<ShardSignal>,
    /// The take it runs under: its commits and output count only while
    /// this host holds the shard under it.
    pub tenure: Tenure,
}

/// The shards of a run and where each is.
#[derive(Debug, Default)]
pub(crate) struct Scheduler {
    pub running: HashSet<String>,
    pub ended: HashSet<String>,
    /// Stopped before a poison record: not restarted in this run. With why.
    pub parked: BTreeMap<String, String>,
    /// Lost to another worker (or not renewed in time): not restarted until
    /// this host takes the lease again. They are not done: a worker whose
    /// shards were all lost stays in the group, idle.
    pub lost: BTreeMap<String, String>,
    /// Shards in the last listing.
    pub listed: usize,
    /// The take and signal of each running shard.
    pub signals: HashMap<String, (Tenure, watch::Sender<ShardSignal>)>,
    /// The store has answered a write of this run (a lease taken): it is
    /// configured right, so a read that fails now is an outage to ride out.
    pub store_answered: bool,
}

impl Scheduler {
    /// The shards of a listing that can start now (owned, parents ended);
    /// marks them running.
    pub async fn ready(
        &mut self,
        shards: &[ShardInfo],
        store: &dyn CheckpointStore,
        key: impl Fn(&str) -> ShardKey,
        owns: impl Fn(&str) -> Option<Tenure>,
    ) -> anyhow::Result<Vec<Start>> {
        self.listed = shards.len();
        let known: HashSet<&str> = shards.iter().map(|s| s.shard_id.as_str()).collect();
        let mut starts = Vec::new();
        for shard in shards {
            let id = &shard.shard_id;
            if self.running.contains(id)
                || self.ended.contains(id)
                || self.parked.contains_key(id)
                || self.lost.contains_key(id)
            {
                continue;
            }
            // The take before the loads: a task must not start under a take
            // newer than the checkpoint it loaded.
            let Some(tenure) = owns(id) else { continue };
            // Once the run is under way, a store that cannot be read now
            // (a DynamoDB outage) delays the shard instead of ending the run.
            let checkpoint = match store.load(&key(id)).await {
                Ok(checkpoint) => checkpoint,
                Err(e) if self.under_way() => {
                    tracing::warn!(shard = %id, "cannot read its checkpoint yet, trying again shortly: {e:#}");
                    continue;
                }
                Err(e) => return Err(e),
            };
            if checkpoint.as_ref().is_some_and(|c| c.shard_end) {
                self.ended.insert(id.clone());
                continue;
            }
            let mut waiting = false;
            let pending: Vec<&str> =
                shard.parents().filter(|p| known.contains(p) && !self.ended.contains(*p)).collect();
            for parent in pending {
                // Another host may have read it to its end.
                let ended = match store.shard_ended(&key(parent)).await {
                    Ok(ended) => ended,
                    Err(e) if self.under_way() => {
                        tracing::warn!(shard = %parent, "cannot read its checkpoint yet, trying again shortly: {e:#}");
                        false
                    }
                    Err(e) => return Err(e),
                };
                if ended {
                    self.ended.insert(parent.to_string());
                } else {
                    waiting = true;
                }
            }
            if waiting {
                continue;
            }
            // Asked again after the loads: the take may have ended meanwhile.
            if owns(id) != Some(tenure) {
                continue;
            }
            let has_parent = shard.parents().any(|p| known.contains(p));
            let (signal, receiver) = watch::channel(ShardSignal::Run);
            self.running.insert(id.clone());
            self.signals.insert(id.clone(), (tenure, signal));
            starts.push(Start {
                shard_id: id.clone(),
                checkpoint,
                has_parent,
                info: shard.clone(),
                signal: receiver,
                tenure,
            });
        }
        Ok(starts)
    }

    /// Some shard has started or ended in this run, or the store answered.
    fn under_way(&self) -> bool {
        self.store_answered
            || !self.running.is_empty()
            || !self.ended.is_empty()
            || !self.parked.is_empty()
            || !self.lost.is_empty()
    }

    /// Tells the shard's task running under `tenure` to release or drop;
    /// false when no task runs it under that take.
    pub fn signal(&self, shard_id: &str, tenure: Tenure, signal: ShardSignal) -> bool {
        self.signals.get(shard_id).is_some_and(|(t, s)| *t == tenure && s.send(signal).is_ok())
    }

    /// The take a running shard's task runs under.
    pub fn tenure(&self, shard_id: &str) -> Option<Tenure> {
        self.signals.get(shard_id).map(|(t, _)| *t)
    }

    /// A shard's worker ended.
    pub fn exited(&mut self, shard_id: &str) {
        self.running.remove(shard_id);
        self.signals.remove(shard_id);
    }

    /// Every listed shard has ended or is parked.
    pub fn all_done(&self) -> bool {
        self.listed > 0 && self.running.is_empty() && self.ended.len() + self.parked.len() >= self.listed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::SqliteStore;

    fn shard(id: &str, parent: Option<&str>, adjacent: Option<&str>) -> ShardInfo {
        ShardInfo {
            shard_id: id.into(),
            parent: parent.map(Into::into),
            adjacent_parent: adjacent.map(Into::into),
            hash_range: None,
        }
    }

    #[tokio::test]
    async fn children_wait_for_every_listed_parent_to_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("cp.db")).expect("store");
        let key = |id: &str| ShardKey::new("app", "s", id);
        let shards = [
            shard("a", None, None),
            shard("b", None, None),
            shard("c", Some("a"), Some("b")),
            shard("d", Some("gone"), None),
        ];
        let mut scheduler = Scheduler::default();
        let all = |_: &str| Some(Tenure::SOLE);
        let first: Vec<String> =
            scheduler.ready(&shards, &store, key, all).await.expect("ready").into_iter().map(|s| s.shard_id).collect();
        assert_eq!(first, ["a", "b", "d"], "d's parent aged out of the stream");
        scheduler.exited("a");
        scheduler.ended.insert("a".into());
        assert!(scheduler.ready(&shards, &store, key, all).await.expect("ready").is_empty(), "b has not ended");
        scheduler.exited("b");
        scheduler.ended.insert("b".into());
        let next = scheduler.ready(&shards, &store, key, all).await.expect("ready");
        assert_eq!(next.len(), 1);
        assert!(next[0].shard_id == "c" && next[0].has_parent && next[0].checkpoint.is_none());
        assert!(!scheduler.all_done());
    }

    /// A store that cannot be reached (DynamoDB down).
    #[derive(Debug)]
    struct Unreachable;

    #[async_trait::async_trait]
    impl CheckpointStore for Unreachable {
        async fn load(&self, _key: &ShardKey) -> anyhow::Result<Option<Checkpoint>> {
            anyhow::bail!("cannot reach the endpoint")
        }
        async fn commit(
            &self,
            _key: &ShardKey,
            _tenure: crate::checkpoint::Tenure,
            _checkpoint: &Checkpoint,
        ) -> Result<(), crate::checkpoint::CommitError> {
            Ok(())
        }
        fn location(&self) -> String {
            "nowhere".into()
        }
    }

    #[tokio::test]
    async fn an_unreadable_store_ends_a_run_at_its_start_but_not_after_a_lease_was_taken() {
        let key = |id: &str| ShardKey::new("app", "s", id);
        let shards = [shard("a", None, None)];
        let mut scheduler = Scheduler::default();
        let err = scheduler
            .ready(&shards, &Unreachable, key, |_| Some(Tenure::SOLE))
            .await
            .expect_err("a wrong endpoint is the answer");
        assert!(err.to_string().contains("cannot reach"), "{err}");
        // Taking a lease proved the table answers: an outage right after
        // the take delays the shard (tried again at the next listing).
        scheduler.store_answered = true;
        let starts =
            scheduler.ready(&shards, &Unreachable, key, |_| Some(Tenure::SOLE)).await.expect("delayed, not fatal");
        assert!(starts.is_empty() && scheduler.running.is_empty());
    }
}
