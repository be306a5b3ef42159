//! State across resharding (`consumer/inherit.rs`): the counter's and the
//! buffered counter's per-key, per-window output stays exact across a split
//! and a merge made with the SDK's SplitShard and MergeShards, mid-stream on
//! both emulators, with restarts and with kill -9 in between; a plugin built
//! for kinesis:processor@0.1.0 behaves as documented (children start empty,
//! with a warning).

use crate::common::emulators::*;
use crate::common::*;
use host::consumer::{Consumer, ConsumerConfig};
use host::kinesis::admin;
use host::kinesis::producer::{put_all, Outgoing};
use host::local::LocalOptions;
use host::sink::{OutputFormat, Sink};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Event times start at a minute of 2030, ahead of any wall clock, so only
/// event time (never the idle timer) closes the buffered counter's windows.
const T0: i64 = 1_893_456_000_000;
/// Records per phase; a phase spans 40 s of event time.
const PER_PHASE: i64 = 400;

/// Phase `p`'s records: keys k0..k7, event time (the data) every 100 ms.
fn phase(p: i64) -> Vec<Outgoing> {
    (0..PER_PHASE)
        .map(|i| Outgoing {
            partition_key: format!("k{}", i % 8),
            data: time(T0 + (p * PER_PHASE + i) * 100).into_bytes(),
        })
        .collect()
}

/// A record far ahead in event time: it closes every window before it.
fn closing_record() -> Vec<Outgoing> {
    vec![Outgoing { partition_key: "flush".into(), data: time(T0 + 3_600_000).into_bytes() }]
}

fn time(millis: i64) -> String {
    kinesis_processor_sdk::helpers::time::format_timestamp_millis(millis)
}

/// The true count per (window start, key) of phases `0..phases`.
fn expected(phases: i64) -> BTreeMap<(String, String), u64> {
    let mut want = BTreeMap::new();
    for p in 0..phases {
        for (i, record) in phase(p).iter().enumerate() {
            let millis = T0 + (p * PER_PHASE + i as i64) * 100;
            let window = time(millis - millis.rem_euclid(60_000));
            *want.entry((window, record.partition_key.clone())).or_insert(0) += 1;
        }
    }
    want
}

/// The plugin outputs in a JSON-lines sink file.
fn outputs(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    json_lines(&text)
        .iter()
        .filter_map(|line| serde_json::from_str(line["data"].as_str().unwrap_or_default()).ok())
        .filter(|v: &serde_json::Value| v["key"] != "flush")
        .collect()
}

fn cell(v: &serde_json::Value) -> (String, String) {
    (v["window_start"].as_str().unwrap_or_default().into(), v["key"].as_str().unwrap_or_default().into())
}

/// The counter's highest count per (window, key): its running totals, so
/// a count repeated after a kill -9 (output is at-least-once) changes nothing.
pub fn counted(path: &Path) -> BTreeMap<(String, String), u64> {
    let mut got = BTreeMap::new();
    for v in outputs(path) {
        let count = got.entry(cell(&v)).or_insert(0);
        *count = v["count"].as_u64().unwrap_or(0).max(*count);
    }
    got
}

/// The buffered counter's final plus corrections per (window, key); a
/// second final for one window fails the test.
fn buffered(path: &Path) -> BTreeMap<(String, String), u64> {
    let mut finals = BTreeMap::new();
    let mut got = BTreeMap::new();
    for v in outputs(path) {
        let key = cell(&v);
        match v["kind"].as_str() {
            Some("final") => {
                assert!(finals.insert(key.clone(), ()).is_none(), "two finals for {key:?}");
                *got.entry(key).or_insert(0) += v["count"].as_u64().unwrap_or(0);
            }
            _ => *got.entry(key).or_insert(0) += v["late"].as_u64().unwrap_or(0),
        }
    }
    got
}

/// Splits the stream's first open shard at the middle of its range.
pub(crate) async fn split(f: &Fixture, stream: &str) {
    let open = open_shards(f, stream).await;
    let range = open[0].hash_key_range().expect("range");
    let start: u128 = range.starting_hash_key().parse().expect("hash");
    let end: u128 = range.ending_hash_key().parse().expect("hash");
    f.client
        .split_shard()
        .stream_name(stream)
        .shard_to_split(open[0].shard_id())
        .new_starting_hash_key((start + (end - start) / 2 + 1).to_string())
        .send()
        .await
        .expect("split");
    admin::wait_active(&f.client, stream, Duration::from_secs(20)).await.expect("active");
}

/// Merges the stream's two open shards.
async fn merge(f: &Fixture, stream: &str) {
    let mut open = open_shards(f, stream).await;
    assert_eq!(open.len(), 2, "the split made two children");
    open.sort_by_key(|s| s.hash_key_range().map(|r| r.starting_hash_key().parse::<u128>().unwrap_or(0)));
    f.client
        .merge_shards()
        .stream_name(stream)
        .shard_to_merge(open[0].shard_id())
        .adjacent_shard_to_merge(open[1].shard_id())
        .send()
        .await
        .expect("merge");
    admin::wait_active(&f.client, stream, Duration::from_secs(20)).await.expect("active");
}

async fn open_shards(f: &Fixture, stream: &str) -> Vec<aws_sdk_kinesis::types::Shard> {
    let shards = admin::shards(&f.client, stream).await.expect("shards");
    shards
        .into_iter()
        .filter(|s| s.sequence_number_range().and_then(|r| r.ending_sequence_number()).is_none())
        .collect()
}

async fn put(f: &Fixture, stream: &str, records: &[Outgoing]) {
    put_all(&f.client, stream, records).await.expect("put");
}

/// Runs `plugin` as `application` until idle, its output in `out`.
async fn consume(f: &Fixture, stream: &str, plugin: &str, application: &str, out: &Path, config: &str) {
    consume_until(f, stream, plugin, application, out, config, None).await
}

/// Runs `plugin` as `application` until `stop` is sent (or, without one,
/// until idle), its output in `out`.
async fn consume_until(
    f: &Fixture,
    stream: &str,
    plugin: &str,
    application: &str,
    out: &Path,
    config: &str,
    stop: Option<tokio::sync::watch::Sender<bool>>,
) {
    let mut settings: ConsumerConfig = f.config("", config);
    settings.stream = stream.into();
    settings.application = application.into();
    // Stopped by the test when it holds a stop signal (timing-proof), else idle.
    settings.idle_exit = stop.is_none().then_some(Duration::from_secs(4));
    let plugin = if plugin.ends_with(".wasm") {
        Arc::new(host::plugin::Plugin::load(&f.engine, Path::new(plugin), None).expect("fixture loads"))
    } else {
        load(&f.engine, plugin)
    };
    let sink = Sink::file(out, OutputFormat::Json).expect("sink");
    let stop = stop.unwrap_or_else(|| tokio::sync::watch::channel(false).0);
    Consumer::new(f.client.clone(), plugin, f.store(), Arc::new(sink), settings).run(stop).await.expect("runs");
}

const BUFFERED: &str = r#"{"allowed_lateness_seconds": 30}"#;

on_both_emulators!(counts_stay_exact_across_a_split_and_a_merge_mid_stream);
async fn counts_stay_exact_across_a_split_and_a_merge_mid_stream(f: Fixture) {
    f.stream("counts", 1).await;
    let stream = f.name("counts");
    put(&f, &stream, &phase(0)).await;
    let (counter_out, buffered_out) = (f.dir.path().join("counter.jsonl"), f.dir.path().join("buffered.jsonl"));
    let want = expected(3);
    let (stop, _) = tokio::sync::watch::channel(false);
    let resharder = async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        split(&f, &stream).await;
        put(&f, &stream, &phase(1)).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        merge(&f, &stream).await;
        put(&f, &stream, &phase(2)).await;
        put(&f, &stream, &closing_record()).await;
        // Stop once both outputs are complete (or after a minute, to fail).
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline && (counted(&counter_out) != want || buffered(&buffered_out) != want)
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let _ = stop.send(true);
    };
    tokio::join!(
        consume_until(&f, &stream, "counter", "counter", &counter_out, "{}", Some(stop.clone())),
        consume_until(&f, &stream, "buffered-counter", "buffered", &buffered_out, BUFFERED, Some(stop.clone())),
        resharder
    );
    assert_eq!(counted(&counter_out), want, "the counter's last counts are the true counts");
    assert_eq!(buffered(&buffered_out), want, "the buffered counter's windows add up exactly");
    let checkpoints = f.store().list("counter", &stream).expect("list");
    assert_eq!(checkpoints.iter().filter(|(_, c)| c.shard_end).count(), 3, "{checkpoints:?}");
    f.stop().await;
}

/// A split, a restart, a merge, a restart: each run reads a reshard it did
/// not see happen, from the checkpoints alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_then_a_merge_with_restarts_in_between_stays_exact() {
    let f = fixture(LocalOptions::default()).await;
    f.stream("restarts", 1).await;
    let stream = f.name("restarts");
    let (counter_out, buffered_out) = (f.dir.path().join("counter.jsonl"), f.dir.path().join("buffered.jsonl"));
    let legacy_out = f.dir.path().join("legacy.jsonl");
    let legacy = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/counter-0.1.0.wasm");
    let legacy = legacy.to_str().unwrap_or_default().to_string();
    for p in 0..3 {
        match p {
            1 => split(&f, &stream).await,
            2 => merge(&f, &stream).await,
            _ => {}
        }
        put(&f, &stream, &phase(p)).await;
        if p == 2 {
            put(&f, &stream, &closing_record()).await;
        }
        consume(&f, &stream, "counter", "counter", &counter_out, "{}").await;
        consume(&f, &stream, "buffered-counter", "buffered", &buffered_out, BUFFERED).await;
        consume(&f, &stream, &legacy, "legacy", &legacy_out, "{}").await;
    }
    let want = expected(3);
    assert_eq!(counted(&counter_out), want);
    assert_eq!(buffered(&buffered_out), want);
    // 0.1.0 (documented): a child of a reshard starts empty, so a window
    // that spans a reshard is counted anew in the child.
    let mut legacy = BTreeMap::new();
    for v in outputs(&legacy_out) {
        legacy.insert(cell(&v), v["count"].as_u64().unwrap_or(0));
    }
    let minute0 = (time(T0), "k0".to_string());
    assert_eq!(legacy[&minute0], 25, "the split's child's last count of minute 0 is its own records only");
    assert_eq!(want[&minute0], 75);
    f.stop().await;
}

/// `host test` replays a split and a merge from reshard lines in its input,
/// with the same exact output, restarts included; a 0.1.0 plugin gets a
/// warning line per child that starts without its parents' state.
#[test]
fn host_test_replays_a_split_and_a_merge() {
    let mut input = String::new();
    for p in 0..3 {
        match p {
            1 => input.push_str("{\"reshard\": \"split\"}\n"),
            2 => input.push_str("{\"reshard\": \"merge\"}\n"),
            _ => {}
        }
        let mut records = phase(p);
        if p == 2 {
            records.extend(closing_record());
        }
        for r in records {
            let line = serde_json::json!({"partitionKey": r.partition_key, "data": String::from_utf8_lossy(&r.data)});
            input.push_str(&format!("{line}\n"));
        }
    }
    let want = expected(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.jsonl");
    for (plugin, config) in [("counter", "{}"), ("buffered-counter", BUFFERED)] {
        let path = plugin_path(plugin).display().to_string();
        for restart in ["0", "3"] {
            let args = ["test", "--plugin", &path, "--config", config, "--restart-every", restart, "--output", "json"];
            let run = host(&args, &input);
            assert_eq!(run.code, 0, "{plugin}: {}", run.stderr);
            assert!(run.stderr.contains("over 4 shards (2 reshards)"), "{}", run.stderr);
            std::fs::write(&out, &run.stdout).expect("write");
            let got = if plugin == "counter" { counted(&out) } else { buffered(&out) };
            assert_eq!(got, want, "{plugin} --restart-every {restart}");
        }
    }
    let legacy = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/counter-0.1.0.wasm");
    let run = host(&["test", "--plugin", &legacy.display().to_string()], &input);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let warnings: Vec<&str> = run.stderr.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), 3, "both split children and the merge child: {}", run.stderr);
    assert!(
        warnings[0].contains("built for kinesis:processor@0.1.0") && warnings[0].contains("rebuild"),
        "{warnings:?}"
    );
    let bad = host(&["test", "--plugin", &plugin_path("counter").display().to_string()], "{\"reshard\": \"merge\"}\n");
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("a merge of two of 1 open shards must name them"), "{}", bad.stderr);
}

/// `host run` processes: killed with -9 after the split, restarted after
/// the merge; the counts are still exact (a batch processed but not yet
/// checkpointed at the kill is processed again, with the same counts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_between_a_split_and_a_merge_keeps_counts_exact() {
    let f = fixture(LocalOptions::default()).await;
    f.stream("killed", 1).await;
    let stream = f.name("killed");
    let url = f.local.as_ref().map(|l| l.endpoint_url()).unwrap_or_default();
    let db = f.dir.path().join("cp.db").display().to_string();
    let out = f.dir.path().join("out.jsonl");
    let sink = format!("file:{}", out.display());
    let counter = plugin_path("counter").display().to_string();
    // Temporary paths and names hold no spaces.
    let line = format!(
        "run --plugin {counter} --stream {stream} --endpoint-url {url} --start-position TRIM_HORIZON \
         --checkpoint-db {db} --sink {sink} --output json --batch-size 25 --idle-time-ms 50 --status-interval 0"
    );
    let mut args: Vec<&str> = line.split_whitespace().collect();
    put(&f, &stream, &phase(0)).await;
    let mut consumer = spawn_host(&args);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    split(&f, &stream).await;
    put(&f, &stream, &phase(1)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    consumer.kill().expect("kill -9");
    let killed = wait(consumer).await;
    assert_ne!(killed.code, 0, "killed");
    merge(&f, &stream).await;
    put(&f, &stream, &phase(2)).await;
    put(&f, &stream, &closing_record()).await;
    args.extend(["--idle-exit", "3"]);
    let restarted = wait(spawn_host(&args)).await;
    assert_eq!(restarted.code, 0, "{}", restarted.stderr);
    assert_eq!(counted(&out), expected(3));
    f.stop().await;
}
