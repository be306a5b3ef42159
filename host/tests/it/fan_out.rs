//! Enhanced fan-out (`kinesis/fanout.rs`): the consumer reading through
//! SubscribeToShard instead of GetRecords, with everything else the same.
//! Every record once, in order per shard, across re-subscriptions (short
//! subscriptions on ferrokinesis), a split, a restart and a kill -9 (counts
//! exact in state);
//! registration is idempotent and `--no-register` names a missing consumer
//! (on both emulators; records flow on ferrokinesis only, see below).

use crate::common::emulators::*;
use crate::common::*;
use host::consumer::Consumer;
use host::kinesis::fanout::FanOut;
use host::local::LocalOptions;
use host::sink::{OutputFormat, Sink};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Echo outputs `key-K : n-N` as N per key, in file order.
fn by_key(path: &std::path::Path) -> BTreeMap<String, Vec<u64>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut got: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    // The run may be writing the last line as this reads.
    for v in text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()) {
        let data = v["data"].as_str().unwrap_or_default();
        let n = data.rsplit("n-").next().and_then(|n| n.parse().ok()).unwrap_or(u64::MAX);
        got.entry(v["key"].as_str().unwrap_or_default().to_string()).or_default().push(n);
    }
    got
}

/// Records 0..n as `put_numbered` spreads them: key-(i % 16), in order.
fn expected(n: u64) -> BTreeMap<String, Vec<u64>> {
    let mut want: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for i in 0..n {
        want.entry(format!("key-{}", i % 16)).or_default().push(i);
    }
    want
}

/// Runs echo through fan-out until `stop` is sent.
async fn consume(f: &Fixture, stream: &str, stop: tokio::sync::watch::Sender<bool>) {
    let mut config = f.config(stream, "{}");
    config.idle_exit = None;
    let source = FanOut::connect(f.client.clone(), &config.stream, "fan-out-test", true, Duration::from_millis(200))
        .await
        .expect("consumer registered");
    let sink = Sink::file(&f.out_path(), OutputFormat::Json).expect("sink");
    let store: Arc<dyn host::checkpoint::CheckpointStore> = Arc::new(f.store());
    let consumer = Consumer::with_source(Arc::new(source), load(&f.engine, "echo"), store, Arc::new(sink), config);
    consumer.run(stop).await.expect("runs");
}

/// Waits until the output holds records 0..n (or a minute passes).
async fn until_output(f: &Fixture, n: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline
        && by_key(&f.out_path()).values().map(Vec::len).sum::<usize>() < n as usize
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// On ferrokinesis only: kinesis-mock 0.6.2 pushes the records a shard
/// holds when subscribed, then nothing more on that subscription, and
/// answers a new one with ResourceInUse while the old one lasts (5 min).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_delivers_every_record_once_across_resubscriptions_a_split_and_a_restart() {
    let f = fixture(LocalOptions { subscription_ms: 1500, ..LocalOptions::default() }).await;
    f.stream("push", 2).await;
    let stream = f.name("push");
    f.put_numbered("push", 0, 300).await;
    let (stop, _) = tokio::sync::watch::channel(false);
    let producer = async {
        until_output(&f, 300).await;
        // Longer than a subscription on ferrokinesis (1.5 s here): records
        // after this come through a new one.
        tokio::time::sleep(Duration::from_millis(1800)).await;
        crate::reshard::split(&f, &stream).await;
        f.put_numbered("push", 300, 300).await;
        until_output(&f, 600).await;
        let _ = stop.send(true);
    };
    tokio::join!(consume(&f, "push", stop.clone()), producer);
    assert_eq!(by_key(&f.out_path()), expected(600), "every record once, in order per key, across the split");
    // A restart goes on from the checkpoints through new subscriptions.
    f.put_numbered("push", 600, 100).await;
    let (stop, _) = tokio::sync::watch::channel(false);
    tokio::join!(consume(&f, "push", stop.clone()), async {
        until_output(&f, 700).await;
        let _ = stop.send(true);
    });
    assert_eq!(by_key(&f.out_path()), expected(700), "nothing lost or repeated across the restart");
    f.stop().await;
}

on_both_emulators!(registration_is_idempotent_and_no_register_names_a_missing_consumer);
async fn registration_is_idempotent_and_no_register_names_a_missing_consumer(f: Fixture) {
    f.stream("register", 1).await;
    let stream = f.name("register");
    let idle = Duration::from_millis(200);
    let first = FanOut::connect(f.client.clone(), &stream, "twice", true, idle).await.expect("registers");
    let second = FanOut::connect(f.client.clone(), &stream, "twice", true, idle).await.expect("finds it");
    assert_eq!(first.consumer_arn, second.consumer_arn);
    let existing = FanOut::connect(f.client.clone(), &stream, "twice", false, idle).await.expect("exists");
    assert_eq!(existing.consumer_arn, first.consumer_arn);
    let err = FanOut::connect(f.client.clone(), &stream, "nobody", false, idle).await.expect_err("missing");
    assert!(err.to_string().contains("stream consumer `nobody` is not registered"), "{err}");
    f.stop().await;
}

/// `host run --retrieval fan-out` with the counter as a process, killed
/// with -9 mid-stream and restarted: every record is counted exactly once
/// in state (a batch processed but not checkpointed is replayed onto the
/// state committed with the checkpoint, never onto a later one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_run_with_fan_out_counts_exactly_once_across_a_kill_9() {
    let f = fixture(LocalOptions { subscription_ms: 1500, ..LocalOptions::default() }).await;
    f.stream("push-kill", 2).await;
    let stream = f.name("push-kill");
    let url = f.local.as_ref().map(|l| l.endpoint_url()).unwrap_or_default();
    let db = f.dir.path().join("cp.db").display().to_string();
    let sink = format!("file:{}", f.out_path().display());
    let counter = plugin_path("counter").display().to_string();
    // Temporary paths and names hold no spaces.
    let line = format!(
        "run --plugin {counter} --stream {stream} --endpoint-url {url} --start-position TRIM_HORIZON \
         --checkpoint-db {db} --sink {sink} --output json --retrieval fan-out --status-interval 0"
    );
    let mut args: Vec<&str> = line.split_whitespace().collect();
    let producer = format!("produce --stream {stream} --endpoint-url {url} --rate 500 --count 1500");
    let producer = spawn_host(&producer.split_whitespace().collect::<Vec<_>>());
    let mut consumer = spawn_host(&args);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    consumer.kill().expect("kill -9");
    assert_ne!(wait(consumer).await.code, 0, "killed");
    let before = counted_in_state(&f.out_path());
    assert!(before < 1500, "killed mid-stream, not after the last record");
    eprintln!("killed after {before} records counted");
    assert_eq!(wait(producer).await.code, 0);
    args.extend(["--idle-exit", "3"]);
    let restarted = wait(spawn_host(&args)).await;
    assert_eq!(restarted.code, 0, "{}", restarted.stderr);
    assert_eq!(counted_in_state(&f.out_path()), 1500, "every record counted once");
    f.stop().await;
}
