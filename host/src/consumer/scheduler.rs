//! Which shards run: a shard starts once its parents were read to their end
//! (or have aged out of the stream), is never started twice, and a shard
//! that stopped on poison or lost its lease is not restarted in this run.

use crate::checkpoint::{Checkpoint, CheckpointStore, ShardKey};
use crate::source::ShardInfo;
use std::collections::{BTreeMap, HashSet};

/// A shard to start, with where it stands.
#[derive(Debug)]
pub(crate) struct Start {
    pub shard_id: String,
    pub checkpoint: Option<Checkpoint>,
    /// A child of a reshard: without a checkpoint it starts at its first
    /// record, or records between the parent's end and "now" would be lost.
    pub has_parent: bool,
}

/// The shards of a run and where each is.
#[derive(Debug, Default)]
pub(crate) struct Scheduler {
    pub running: HashSet<String>,
    pub ended: HashSet<String>,
    /// Stopped before a poison record, or lost to another worker: not
    /// restarted in this run. With why.
    pub parked: BTreeMap<String, String>,
    /// Shards in the last listing.
    pub listed: usize,
}

impl Scheduler {
    /// The shards of a fresh listing that can start now; marks them running.
    pub async fn ready(
        &mut self,
        shards: &[ShardInfo],
        store: &dyn CheckpointStore,
        key: impl Fn(&str) -> ShardKey,
    ) -> anyhow::Result<Vec<Start>> {
        self.listed = shards.len();
        let known: HashSet<&str> = shards.iter().map(|s| s.shard_id.as_str()).collect();
        let mut starts = Vec::new();
        for shard in shards {
            let id = &shard.shard_id;
            if self.running.contains(id) || self.ended.contains(id) || self.parked.contains_key(id) {
                continue;
            }
            let checkpoint = store.load(&key(id)).await?;
            if checkpoint.as_ref().is_some_and(|c| c.shard_end) {
                self.ended.insert(id.clone());
                continue;
            }
            if shard.parents().any(|p| known.contains(p) && !self.ended.contains(p)) {
                continue;
            }
            let has_parent = shard.parents().any(|p| known.contains(p));
            self.running.insert(id.clone());
            starts.push(Start { shard_id: id.clone(), checkpoint, has_parent });
        }
        Ok(starts)
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
        let first: Vec<String> =
            scheduler.ready(&shards, &store, key).await.expect("ready").into_iter().map(|s| s.shard_id).collect();
        assert_eq!(first, ["a", "b", "d"], "d's parent aged out of the stream");
        scheduler.running.remove("a");
        scheduler.ended.insert("a".into());
        assert!(scheduler.ready(&shards, &store, key).await.expect("ready").is_empty(), "b has not ended");
        scheduler.running.remove("b");
        scheduler.ended.insert("b".into());
        let next = scheduler.ready(&shards, &store, key).await.expect("ready");
        assert_eq!(next.len(), 1);
        assert!(next[0].shard_id == "c" && next[0].has_parent && next[0].checkpoint.is_none());
        assert!(!scheduler.all_done());
    }
}
