//! KPL-aggregated records (`kinesis/aggregate.rs`): written by AWS's own
//! aggregation library (aws-kinesis-agg, Python) through boto3 on both
//! emulators, they reach the plugin as their user records, each with its
//! own key; a corrupt one passes through whole and is counted; a checkpoint
//! inside an aggregate resumes after the last user record committed; and
//! `host produce --aggregate` records keep the counter exact across a kill -9.

use crate::common::emulators::*;
use crate::common::*;
use host::dead_letter::DeadLetterSink;
use host::kinesis::producer::Outgoing;
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
        ..FailurePolicy::default()
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

/// The peak resident memory (VmHWM) of a running process, in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib * 1024)
}

/// One hostile aggregate from any producer: a 500 KB partition key and
/// 200,000 empty user records that would each copy it (100 GB unpacked).
/// `host run` does not unpack it: it is a corrupt aggregate, delivered
/// whole, counted, and dead-lettered when the processor refuses it; the 40
/// good records around it are processed, in order, and memory stays low.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_aggregate_is_dead_lettered_whole_and_the_shard_goes_on() {
    use md5::Digest;
    let f = fixture(LocalOptions::default()).await;
    f.stream("hostile", 1).await;
    let stream = f.name("hostile");
    // Written by hand: field 1 (the key table) once, then 200,000 empty
    // field-3 messages (user records of key 0, no data), then the MD5.
    let key = "k".repeat(500_000);
    let mut body = vec![0x0a];
    prost::encoding::encode_varint(key.len() as u64, &mut body);
    body.extend_from_slice(key.as_bytes());
    for _ in 0..200_000 {
        body.extend_from_slice(&[0x1a, 0x00]);
    }
    let hostile = [host::kinesis::aggregate::MAGIC.as_slice(), &body, &md5::Md5::digest(&body)].concat();
    assert!(hostile.len() < 1 << 20, "one Kinesis record: {} bytes", hostile.len());
    let good = |range: std::ops::Range<u64>| {
        range.map(|n| Outgoing { partition_key: format!("k{}", n % 7), data: format!("n-{n}").into_bytes() })
    };
    let records: Vec<Outgoing> =
        good(0..20).chain([Outgoing { partition_key: "evil".into(), data: hostile }]).chain(good(20..40)).collect();
    host::kinesis::producer::put_all(&f.client, &stream, &records).await.expect("put");

    let (db, out, letters) =
        (f.dir.path().join("cp.db"), f.dir.path().join("out.jsonl"), f.dir.path().join("letters.jsonl"));
    let url = f.local.as_ref().expect("in-process emulator").endpoint_url();
    let faulty = plugin_path("faulty").display().to_string();
    let args = run_args(&faulty, &stream, &url, &db, &out);
    let letters_arg = format!("file:{}", letters.display());
    let run = spawn_host_with(&args, &["--dead-letter", &letters_arg, "--retries", "0", "--idle-exit", "2"]);
    let pid = run.id();
    let watch = tokio::spawn(async move {
        let mut peak = 0;
        while let Some(now) = peak_rss(pid) {
            peak = peak.max(now);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        peak
    });
    let run = wait(run).await;
    let peak = watch.await.expect("watched");
    assert_eq!(run.code, 0, "{}", run.stderr);
    let expected: Vec<_> = passed(0..40).into_iter().collect();
    assert_eq!(outputs(&out), expected, "every good record, in order");
    let letters = json_lines(&std::fs::read_to_string(&letters).unwrap_or_default());
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["partition_key"], "evil", "{:?}", letters[0]["partition_key"]);
    assert!(run.stderr.contains("not a valid aggregate"), "counted and said: {}", run.stderr);
    eprintln!("peak RSS of host run: {} MiB", peak >> 20);
    assert!(peak > 0 && peak < 512 << 20, "peak RSS {} MiB (4.2 GB before the bound)", peak >> 20);
    f.stop().await;
}
