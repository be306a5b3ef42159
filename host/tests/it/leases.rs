//! The checkpoint seam's fencing, with a test double for a lease store:
//! once a commit is refused as "lease lost", the shard's worker stops, its
//! plugin hears `lease-lost`, nothing more of that shard is written (output
//! or checkpoint), and the other shards go on.

use crate::common::emulators::*;
use crate::common::*;
use host::checkpoint::{Checkpoint, CheckpointStore, CommitError, ShardKey, SqliteStore, Tenure};
use host::consumer::Consumer;
use host::local::LocalOptions;
use host::sink::{OutputFormat, Sink};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// SQLite underneath; commits of `fenced` are refused after `allowed` of them,
/// as a lease store refuses a worker whose lease another worker took.
#[derive(Debug)]
struct FencedStore {
    inner: SqliteStore,
    fenced: String,
    allowed: u32,
    attempts: AtomicU32,
}

#[async_trait::async_trait]
impl CheckpointStore for FencedStore {
    async fn load(&self, key: &ShardKey) -> anyhow::Result<Option<Checkpoint>> {
        self.inner.load(&key.application, &key.stream, &key.shard_id)
    }

    async fn commit(&self, key: &ShardKey, _tenure: Tenure, checkpoint: &Checkpoint) -> Result<(), CommitError> {
        if key.shard_id == self.fenced && self.attempts.fetch_add(1, Ordering::SeqCst) >= self.allowed {
            return Err(CommitError::LeaseLost { shard_id: key.shard_id.clone(), reason: "taken by worker-2".into() });
        }
        Ok(self.inner.commit(&key.application, &key.stream, &key.shard_id, checkpoint)?)
    }

    fn location(&self) -> String {
        "fenced".into()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_stops_only_that_shard_and_nothing_more_is_written_for_it() {
    let f = fixture(LocalOptions::default()).await;
    f.stream("fenced", 2).await;
    f.put_numbered("fenced", 0, 800).await;
    let shards = host::kinesis::admin::shards(&f.client, &f.name("fenced")).await.expect("shards");
    let fenced = shards[0].shard_id().to_string();
    let mut config = f.config("fenced", "{}");
    config.batch_size = 20;
    let store =
        Arc::new(FencedStore { inner: f.store(), fenced: fenced.clone(), allowed: 3, attempts: AtomicU32::new(0) });
    let sink = Sink::file(&f.out_path(), OutputFormat::Json).expect("sink");
    let (stop, _) = tokio::sync::watch::channel(false);
    let source = Arc::new(host::kinesis::reader::Polling {
        client: f.client.clone(),
        stream: config.stream.clone(),
        batch_size: config.batch_size,
        idle_time: config.idle_time,
    });
    let consumer = Consumer::with_source(source, load(&f.engine, "echo"), store.clone(), Arc::new(sink), config);
    let report = consumer.run(stop).await.expect("the run goes on without the lost shard");

    assert_eq!(report.shards_lost.keys().collect::<Vec<_>>(), [&fenced]);
    assert!(report.shards_lost[&fenced].contains("taken by worker-2"), "{:?}", report.shards_lost);
    assert_eq!(store.attempts.load(Ordering::SeqCst), 4, "three commits, one refused, then no more tries");
    let mut per_shard: BTreeMap<String, usize> = BTreeMap::new();
    for line in json_lines(&std::fs::read_to_string(f.out_path()).unwrap_or_default()) {
        *per_shard.entry(line["shard"].as_str().unwrap_or_default().to_string()).or_default() += 1;
    }
    // Output before position: the batch whose commit was refused was written
    // (at-least-once; the new owner replays it), and nothing after it.
    assert_eq!(per_shard.get(&fenced), Some(&80), "{per_shard:?}");
    let other = shards[1].shard_id().to_string();
    assert_eq!(per_shard.get(&other).copied().unwrap_or(0) + 80, report.records as usize);
    assert!(per_shard.get(&other).copied().unwrap_or(0) > 80, "the other shard read everything it has");
    let checkpoints: BTreeMap<String, Checkpoint> =
        f.store().list("test", &f.name("fenced")).expect("list").into_iter().collect();
    let kept = checkpoints[&fenced].sequence_number.clone().expect("checkpointed");
    let shard_lines: Vec<serde_json::Value> = json_lines(&std::fs::read_to_string(f.out_path()).unwrap_or_default())
        .into_iter()
        .filter(|l| l["shard"] == fenced.as_str())
        .collect();
    assert_eq!(
        shard_lines[59]["sequence_numbers"][1].as_str(),
        Some(kept.as_str()),
        "the checkpoint stayed at the third batch"
    );
    f.stop().await;
}
