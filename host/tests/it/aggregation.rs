//! KPL-aggregated records (`kinesis/aggregate.rs`): written by AWS's own
//! aggregation library (aws-kinesis-agg, Python) through boto3 on both
//! emulators, they reach the plugin as their user records, each with its
//! own key; a corrupt one passes through whole and is counted; a checkpoint
//! inside an aggregate resumes after the last user record committed; and
//! `host produce --aggregate` records keep the counter exact across a kill -9.

use crate::common::emulators::*;
use crate::common::*;
use host::dead_letter::DeadLetterSink;
use host::local::LocalOptions;
use host::policy::FailurePolicy;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// Runs tests/scripts/kpl_put.py against the fixture's endpoint.
fn kpl_put(python: &str, f: &Fixture, stream: &str, args: &[&str]) {
    let endpoint = f
        .local
        .as_ref()
        .map(|l| l.endpoint_url())
        .or_else(|| std::env::var("KINESIS_MOCK_URL").ok())
        .expect("an endpoint");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/kpl_put.py");
    let out = Command::new(python).arg(script).args([endpoint.as_str(), stream]).args(args).output().expect("python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// (key, data) of each output in a JSON-lines sink file.
fn outputs(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    json_lines(&text)
        .iter()
        .map(|v| (v["key"].as_str().unwrap_or_default().into(), v["data"].as_str().unwrap_or_default().into()))
        .collect()
}

/// What echo prints for user records `range`: `k{n % 7} : n-{n}`.
fn echoed(range: impl Iterator<Item = u64>) -> Vec<(String, String)> {
    range.map(|n| (format!("k{}", n % 7), format!("k{} : n-{n}", n % 7))).collect()
}

/// What the faulty plugin passes for user records `range`: their data.
fn passed(range: impl Iterator<Item = u64>) -> Vec<(String, String)> {
    range.map(|n| (format!("k{}", n % 7), format!("n-{n}"))).collect()
}

on_both_emulators!(aggregated_records_reach_the_plugin_one_user_record_at_a_time);
async fn aggregated_records_reach_the_plugin_one_user_record_at_a_time(f: Fixture) {
    let Some(python) = python_with("boto3, aws_kinesis_agg") else { return };
    f.stream("agg", 1).await;
    let stream = f.name("agg");
    kpl_put(&python, &f, &stream, &["8", "50", "--corrupt"]);
    let report = f.run("echo", f.config("agg", "{}")).await.expect("runs");
    let got = outputs(&f.out_path());
    assert_eq!(got.len(), 401, "400 user records and the corrupt record whole");
    assert_eq!(got[..400], echoed(0..400)[..], "each user record once, in order, with its own key");
    assert_eq!(got[400].0, "junk");
    assert!(got[400].1.starts_with("junk : base64:84mawm5vd"), "passed through whole: {}", got[400].1);
    assert_eq!(report.corrupt_aggregates, 1);
    assert_eq!(report.records, 401);
    f.stop().await;
}

/// A checkpoint inside an aggregate: the faulty plugin fails on user record
/// 7 of the third aggregate, so the shard stops with the checkpoint at user
/// record 6; the next run (with a dead-letter sink) starts at record 7 of
/// that aggregate. Nothing is lost or processed twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_inside_an_aggregate_resumes_after_the_last_user_record_committed() {
    let Some(python) = python_with("boto3, aws_kinesis_agg") else { return };
    let f = fixture(LocalOptions::default()).await;
    f.stream("inside", 1).await;
    let stream = f.name("inside");
    kpl_put(&python, &f, &stream, &["5", "20", "2:7"]);
    let report = f.run("faulty", f.config("inside", "{}")).await.expect("runs");
    assert_eq!(report.shards_stopped.len(), 1, "stopped before the poison record: {report:?}");
    let checkpoints = f.store().list("test", &stream).expect("list");
    assert_eq!(checkpoints[0].1.sub_sequence_number, 6, "committed inside the aggregate: {checkpoints:?}");
    assert_eq!(outputs(&f.out_path()), passed(0..47));

    let letters = f.dir.path().join("letters.jsonl");
    let mut config = f.config("inside", "{}");
    config.failure = FailurePolicy {
        retries: 0,
        dead_letter: Some(Arc::new(DeadLetterSink::file(&letters).expect("sink"))),
        max_record_age: None,
    };
    let report = f.run("faulty", config).await.expect("runs");
    assert!(report.shards_stopped.is_empty(), "{report:?}");
    let expected: Vec<_> = passed(0..47).into_iter().chain(passed(48..100)).collect();
    assert_eq!(outputs(&f.out_path()), expected, "every user record once, the poison one set aside");
    let letters = std::fs::read_to_string(&letters).unwrap_or_default();
    assert_eq!(json_lines(&letters).len(), 1, "{letters}");
    assert_eq!(json_lines(&letters)[0]["sub_sequence_number"], 7, "{letters}");
    f.stop().await;
}

/// `host produce --aggregate` while `host run` counts; a kill -9 mid-stream,
/// a restart: every user record is counted exactly once in state, so the
/// highest count of each (window, key) adds up to what was produced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_over_aggregated_records_stay_exact_across_a_kill_9() {
    let f = fixture(LocalOptions::default()).await;
    f.stream("kpl-kill", 1).await;
    let stream = f.name("kpl-kill");
    let url = f.local.as_ref().map(|l| l.endpoint_url()).unwrap_or_default();
    let db = f.dir.path().join("cp.db").display().to_string();
    let sink = format!("file:{}", f.out_path().display());
    let counter = plugin_path("counter").display().to_string();
    // Temporary paths and names hold no spaces.
    let line = format!(
        "run --plugin {counter} --stream {stream} --endpoint-url {url} --start-position TRIM_HORIZON \
         --checkpoint-db {db} --sink {sink} --output json --batch-size 5 --idle-time-ms 50 --status-interval 0"
    );
    let mut args: Vec<&str> = line.split_whitespace().collect();
    let producer = format!("produce --stream {stream} --endpoint-url {url} --rate 1500 --count 4000 --aggregate 40");
    let producer = spawn_host(&producer.split_whitespace().collect::<Vec<_>>());
    let mut consumer = spawn_host(&args);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    consumer.kill().expect("kill -9");
    assert_ne!(wait(consumer).await.code, 0, "killed");
    let produced = wait(producer).await;
    assert_eq!(produced.code, 0, "{}", produced.stderr);
    args.extend(["--idle-exit", "3"]);
    let restarted = wait(spawn_host(&args)).await;
    assert_eq!(restarted.code, 0, "{}", restarted.stderr);
    assert_eq!(counted_in_state(&f.out_path()), 4000, "every user record counted once");
    f.stop().await;
}
