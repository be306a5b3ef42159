//! The failure policy against hostile and broken plugins and input, in a
//! running consumer on real emulators: each fault is contained, said
//! clearly, and set aside (dead-letter sink) or stops only its own shard;
//! every other record goes through exactly once.

use crate::common::emulators::*;
use crate::common::*;
use host::consumer::{Consumer, ConsumerConfig, RunReport};
use host::dead_letter::DeadLetterSink;
use host::kinesis::admin;
use host::kinesis::producer::{put_all, Outgoing};
use host::local::LocalOptions;
use host::plugin::PluginLimits;
use host::policy::FailurePolicy;
use host::progress::Progress;
use host::sink::{Destination, OutputFormat, Sink};
use host::source::StartPosition;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Every poison command of the `faulty` fixture, and what its dead letter must say.
const POISON: [(&str, &str); 10] = [
    ("trap", "crash"),
    ("loop", "time limit"),
    ("sleep", "time limit"),
    ("sleep-loop", "time limit"),
    ("alloc", "memory"),
    ("emit-flood", "output"),
    ("log-flood", "log"),
    ("fail", "poison record"),
    ("retry", "try again later"),
    ("bad-index", "bad index"),
];

/// Tight limits, so hostile records are caught fast.
fn limits() -> PluginLimits {
    PluginLimits {
        memory_bytes: 48 << 20,
        call_timeout: Duration::from_millis(300),
        max_output_bytes: 4 << 20,
        ..PluginLimits::default()
    }
}

fn dead_letters_path(f: &Fixture) -> PathBuf {
    f.dir.path().join("dead-letters.jsonl")
}

fn with_dead_letters(f: &Fixture, mut config: ConsumerConfig) -> ConsumerConfig {
    let sink = DeadLetterSink::file(&dead_letters_path(f)).expect("dead-letter sink");
    config.failure = FailurePolicy { retries: 1, dead_letter: Some(Arc::new(sink)), ..FailurePolicy::default() };
    config
}

async fn run_with(f: &Fixture, plugin: &str, config: ConsumerConfig) -> (anyhow::Result<RunReport>, Arc<Progress>) {
    let plugin = load(&f.engine, plugin);
    let sink = Sink::file(&f.out_path(), OutputFormat::Json).expect("sink");
    let progress = Arc::new(Progress::default());
    let (stop, _) = tokio::sync::watch::channel(false);
    let report = Consumer::new(f.client.clone(), plugin, f.store(), Arc::new(sink), config)
        .progress(progress.clone())
        .run(stop)
        .await;
    (report, progress)
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    json_lines(&std::fs::read_to_string(path).unwrap_or_default())
}

/// Output data per record, counted.
fn output_counts(f: &Fixture) -> BTreeMap<String, u32> {
    let mut counts = BTreeMap::new();
    for line in lines(&f.out_path()) {
        let data = line["data"]
            .as_str()
            .map(str::to_string)
            .or_else(|| line["data_base64"].as_str().map(|b| format!("base64:{b}")));
        *counts.entry(data.unwrap_or_default()).or_insert(0) += 1;
    }
    counts
}

on_both_emulators!(hostile_records_are_dead_lettered_and_everything_else_goes_through_once);
async fn hostile_records_are_dead_lettered_and_everything_else_goes_through_once(f: Fixture) {
    f.stream("hostile", 2).await;
    // 150 good records, the poison ones spread among them (and over both
    // shards), plus non-UTF-8 data, which is not poison.
    let mut records: Vec<Outgoing> = Vec::new();
    for i in 0..150u64 {
        records.push(Outgoing { partition_key: format!("key-{}", i % 16), data: format!("n-{i}").into_bytes() });
        if i % 15 == 7 {
            let (command, _) = POISON[(i / 15) as usize];
            records.push(Outgoing { partition_key: format!("poison-{command}"), data: command.as_bytes().to_vec() });
        }
    }
    records.push(Outgoing { partition_key: "binary".into(), data: vec![0xff, 0xfe, 0x00, 0x80] });
    put_all(&f.client, &f.name("hostile"), &records).await.expect("put");
    let mut config = with_dead_letters(&f, f.config("hostile", "{}"));
    config.limits = limits();
    let (report, progress) = run_with(&f, "faulty", config).await;
    let report = report.expect("the host stays up");
    assert!(report.shards_stopped.is_empty(), "{:?}", report.shards_stopped);

    // Exactly the poison records are dead letters, each saying what happened.
    let letters = lines(&dead_letters_path(&f));
    let mut by_data: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for letter in letters {
        let data = letter["data"].as_str().unwrap_or_default().to_string();
        assert!(by_data.insert(data.clone(), letter).is_none(), "{data} was dead-lettered twice");
    }
    assert_eq!(by_data.keys().cloned().collect::<Vec<_>>(), {
        let mut want: Vec<String> = POISON.iter().map(|(c, _)| c.to_string()).collect();
        want.sort();
        want
    });
    for (command, says) in POISON {
        let letter = &by_data[command];
        assert_eq!(letter["reason"], "poison", "{letter}");
        assert!(letter["error"].as_str().unwrap_or_default().contains(says), "{command}: {letter}");
        assert_eq!(letter["partition_key"], format!("poison-{command}"), "{letter}");
        assert_eq!(letter["stream"], f.name("hostile"));
        assert!(letter["sequence_number"].as_str().is_some_and(|s| !s.is_empty()), "{letter}");
        assert!(letter["shard_id"].as_str().is_some_and(|s| s.starts_with("shardId-")), "{letter}");
        assert_eq!(letter["plugin_sha256"].as_str().map(str::len), Some(64), "{letter}");
        assert!(letter["arrival_millis"].as_i64().is_some_and(|t| t > 0), "{letter}");
    }
    // Every other record went through exactly once, on both shards.
    let mut want: BTreeMap<String, u32> = (0..150).map(|i| (format!("n-{i}"), 1)).collect();
    want.insert("base64://4AgA==".into(), 1);
    assert_eq!(output_counts(&f), want);
    let counted: u64 = progress.dead_letters.lock().expect("counts").values().sum();
    assert_eq!(counted, POISON.len() as u64, "every dead letter is counted");
    let by_shard = progress.records_by_shard.lock().expect("records").clone();
    assert_eq!(by_shard.len(), 2, "both shards worked: {by_shard:?}");
    f.stop().await;
}

on_both_emulators!(without_a_dead_letter_sink_a_poison_record_stops_only_its_shard);
async fn without_a_dead_letter_sink_a_poison_record_stops_only_its_shard(f: Fixture) {
    f.stream("stopping", 2).await;
    let shards = admin::shards(&f.client, &f.name("stopping")).await.expect("shards");
    // One key per shard: find keys that hash to each (MD5 of the key, as Kinesis does).
    let key_for = |shard: usize| -> String {
        let range = shards[shard].hash_key_range().expect("range");
        let (lo, hi): (u128, u128) =
            (range.starting_hash_key().parse().expect("lo"), range.ending_hash_key().parse().expect("hi"));
        (0..)
            .map(|i| format!("k{i}"))
            .find(|k| {
                use md5::Digest;
                let h = u128::from_be_bytes(md5::Md5::digest(k.as_bytes()).into());
                (lo..=hi).contains(&h)
            })
            .expect("a key")
    };
    let (bad, good) = (key_for(0), key_for(1));
    let mut records = Vec::new();
    for i in 0..30 {
        records.push(Outgoing { partition_key: bad.clone(), data: format!("a-{i}").into_bytes() });
        records.push(Outgoing { partition_key: good.clone(), data: format!("b-{i}").into_bytes() });
        if i == 10 {
            records.push(Outgoing { partition_key: bad.clone(), data: b"fail".to_vec() });
        }
    }
    put_all(&f.client, &f.name("stopping"), &records).await.expect("put");
    let (report, _) = run_with(&f, "faulty", f.config("stopping", "{}")).await;
    let report = report.expect("the run itself ends cleanly");
    let stopped_shard = shards[0].shard_id();
    let reason = report.shards_stopped.get(stopped_shard).expect("the poisoned shard stopped");
    assert!(
        reason.contains("fails") && reason.contains("--dead-letter") && reason.contains("right before it"),
        "{reason}"
    );
    let got = output_counts(&f);
    // The other shard went through; the stopped one up to the poison record.
    assert!((0..30).all(|i| got.get(&format!("b-{i}")) == Some(&1)), "{got:?}");
    assert!((0..=10).all(|i| got.get(&format!("a-{i}")) == Some(&1)), "{got:?}");
    assert!((11..30).all(|i| !got.contains_key(&format!("a-{i}"))), "{got:?}");

    // Restarted with a dead-letter sink, it resumes exactly at the poison record.
    let (report, _) = run_with(&f, "faulty", with_dead_letters(&f, f.config("stopping", "{}"))).await;
    assert!(report.expect("runs").shards_stopped.is_empty());
    let got = output_counts(&f);
    assert!((0..30).all(|i| got.get(&format!("a-{i}")) == Some(&1)), "{got:?}");
    let letters = lines(&dead_letters_path(&f));
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["data"], "fail");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_older_than_max_record_age_are_set_aside_unprocessed() {
    let f = fixture(LocalOptions::default()).await;
    f.stream("aged", 1).await;
    f.put_numbered("aged", 0, 20).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    f.put_numbered("aged", 20, 20).await;
    let mut config = with_dead_letters(&f, f.config("aged", "{}"));
    config.failure.max_record_age = Some(Duration::from_secs(2));
    let (report, progress) = run_with(&f, "faulty", config).await;
    report.expect("runs");
    let letters = lines(&dead_letters_path(&f));
    let expired: Vec<&str> = letters.iter().filter_map(|l| l["data"].as_str()).collect();
    assert_eq!(expired, (0..20).map(|i| format!("n-{i}")).collect::<Vec<_>>());
    assert!(letters
        .iter()
        .all(|l| l["reason"] == "expired" && l["error"].as_str().unwrap_or_default().contains("--max-record-age")));
    let got = output_counts(&f);
    assert_eq!(got.len(), 20);
    assert!((20..40).all(|i| got.get(&format!("n-{i}")) == Some(&1)), "{got:?}");
    let shard = admin::shards(&f.client, &f.name("aged")).await.expect("shards")[0].shard_id().to_string();
    let expired = progress.dead_letters.lock().expect("counts").get(&(shard, "expired")).copied();
    assert_eq!(expired, Some(20), "counted in the metrics");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_1_mib_pass_or_are_set_aside_by_the_memory_cap() {
    let f = fixture(LocalOptions::default()).await;
    f.stream("big", 1).await;
    let one = vec![b'a'; (1 << 20) - 64];
    let records = [("small", b"before".to_vec()), ("one", one.clone()), ("small", b"after".to_vec())];
    let records: Vec<Outgoing> =
        records.into_iter().map(|(k, data)| Outgoing { partition_key: k.into(), data }).collect();
    put_all(&f.client, &f.name("big"), &records).await.expect("put");
    // Within the default limits a record of Kinesis' largest default size goes through…
    let (report, _) = run_with(&f, "faulty", with_dead_letters(&f, f.config("big", "{}"))).await;
    report.expect("runs");
    let got = output_counts(&f);
    assert_eq!(got.get(std::str::from_utf8(&one).expect("ascii")), Some(&1), "the 1 MiB record went through");
    assert_eq!((got.get("before"), got.get("after")), (Some(&1), Some(&1)));
    // …and under a memory cap it cannot fit, it alone is set aside, with why.
    let mut config = with_dead_letters(&f, f.config("big", "{}"));
    config.application = "capped".into();
    config.limits = PluginLimits { memory_bytes: 2 << 20, ..PluginLimits::default() };
    let (report, _) = run_with(&f, "faulty", config).await;
    report.expect("runs");
    let letters = lines(&dead_letters_path(&f));
    assert_eq!(letters.len(), 1, "only the 1 MiB record is set aside");
    assert_eq!(letters[0]["data"].as_str().map(str::len), Some(one.len()));
    assert!(letters[0]["error"].as_str().unwrap_or_default().contains("memory"), "{}", letters[0]["error"]);
    f.stop().await;
}

/// Kinesis takes records up to 10 MiB once a stream allows them; neither
/// emulator does, so the 10 MiB case runs through `host test`, the same
/// plugin runtime and failure policy: the record that does not fit the
/// memory cap fails alone with one clear line, is dead-lettered, and the
/// records around it go through.
#[test]
fn a_10_mib_record_over_the_memory_cap_fails_alone_with_a_clear_error() {
    let ten = "b".repeat((10 << 20) - 64);
    let input = format!(
        "{{\"partitionKey\": \"k\", \"data\": \"before\"}}\n{{\"partitionKey\": \"ten\", \"data\": \"{ten}\"}}\n{{\"partitionKey\": \"k\", \"data\": \"after\"}}\n"
    );
    let faulty = plugin_path("faulty").display().to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let dl = dir.path().join("dl.jsonl");
    let dead_letter = format!("file:{}", dl.display());
    let run = host(
        &["test", "--plugin", &faulty, "--batch-size", "1", "--memory-limit-mb", "16", "--dead-letter", &dead_letter],
        &input,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout.lines().filter(|l| !l.starts_with("bbbb")).collect::<Vec<_>>(), ["before", "after"]);
    let letters = lines(&dl);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["partition_key"], "ten");
    assert!(letters[0]["error"].as_str().unwrap_or_default().contains("memory"), "{}", letters[0]["error"]);
    // Without a dead-letter sink the shard stops right before it, as `host run` does.
    let run = host(&["test", "--plugin", &faulty, "--batch-size", "1", "--memory-limit-mb", "16"], &input);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let errors: Vec<&str> = run.stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(errors[0].contains("stopped: the record of stdin:2 ") && errors[0].contains("memory"), "{}", errors[0]);
    assert_eq!(run.stdout, "before\n");
    // Within the default limits it goes through.
    let run = host(&["test", "--plugin", &faulty, "--batch-size", "1"], &input);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.lines().any(|l| l.len() == ten.len()), "the 10 MiB record was echoed");
}

/// `host test` runs the production failure policy: for the same records in
/// the same batches, it bisects to the same poison records and writes the
/// same dead letters as `host run`'s consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_test_and_host_run_give_the_same_dead_letters_for_the_same_input() {
    let f = fixture(LocalOptions::default()).await;
    f.stream("same", 1).await;
    let data = |i: u64| match i {
        7 | 23 => "trap".to_string(),
        12 | 31 => "fail".to_string(),
        i => format!("n-{i}"),
    };
    let records: Vec<Outgoing> =
        (0..40).map(|i| Outgoing { partition_key: format!("key-{}", i % 5), data: data(i).into_bytes() }).collect();
    put_all(&f.client, &f.name("same"), &records).await.expect("put");
    let mut config = with_dead_letters(&f, f.config("same", "{}"));
    config.batch_size = 10;
    let (report, _) = run_with(&f, "faulty", config).await;
    report.expect("runs");
    let from_run = lines(&dead_letters_path(&f));
    // The same records, with their sequence numbers and arrival times, replayed.
    let shard =
        host::kinesis::admin::shards(&f.client, &f.name("same")).await.expect("shards")[0].shard_id().to_string();
    let mut reader = host::kinesis::reader::ShardReader::open(
        f.client.clone(),
        &f.name("same"),
        &shard,
        StartPosition::TrimHorizon,
        100,
    )
    .await
    .expect("reader");
    let mut input = String::new();
    for record in reader.next_batch().await.expect("read").records.to_records() {
        let line = serde_json::json!({
            "partitionKey": record.partition_key,
            "data": String::from_utf8_lossy(&record.data),
            "sequenceNumber": record.sequence_number,
            "approximateArrivalTimestamp": record.arrival_millis,
        });
        input.push_str(&format!("{line}\n"));
    }
    let dl = f.dir.path().join("test-dead-letters.jsonl");
    let faulty = plugin_path("faulty").display().to_string();
    let dead_letter = format!("file:{}", dl.display());
    let run = tokio::task::spawn_blocking(move || {
        host(
            &["test", "--plugin", &faulty, "--batch-size", "10", "--retries", "1", "--dead-letter", &dead_letter],
            &input,
        )
    })
    .await
    .expect("host test");
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("4 dead letters"), "{}", run.stderr);
    let from_test = lines(&dl);
    let comparable = |letters: &[serde_json::Value]| -> Vec<serde_json::Value> {
        letters
            .iter()
            .map(|l| {
                serde_json::json!([
                    l["sequence_number"],
                    l["partition_key"],
                    l["data"],
                    l["reason"],
                    l["error"],
                    l["attempts"],
                    l["plugin_sha256"]
                ])
            })
            .collect()
    };
    assert_eq!(from_run.len(), 4, "{from_run:?}");
    assert_eq!(comparable(&from_test), comparable(&from_run));
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_init_or_a_corrupt_snapshot_stops_with_the_reason_not_with_dead_letters() {
    let f = fixture(LocalOptions::default()).await;
    f.stream("broken", 1).await;
    f.put_numbered("broken", 0, 10).await;
    let (report, _) =
        run_with(&f, "faulty", with_dead_letters(&f, f.config("broken", r#"{"panic_in_init": true}"#))).await;
    let error = format!("{:#}", report.expect_err("cannot start"));
    assert!(error.contains("init") && error.contains("panic in init"), "{error}");

    // State the plugin cannot read back: the trap's rebuild fails, and the
    // shard stops with why; no record is blamed for it.
    put_all(&f.client, &f.name("broken"), &[Outgoing { partition_key: "k".into(), data: b"trap".to_vec() }])
        .await
        .expect("put");
    let (report, _) =
        run_with(&f, "faulty", with_dead_letters(&f, f.config("broken", r#"{"corrupt_snapshot": true}"#))).await;
    let error = format!("{:#}", report.expect_err("cannot go on"));
    assert!(error.contains("corrupt state"), "{error}");
    assert!(lines(&dead_letters_path(&f)).is_empty(), "no record was blamed");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_going_away_mid_stream_and_coming_back_loses_nothing() {
    let _watched = watchdog::watch();
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("kinesis");
    let options = LocalOptions { port: 0, data_dir: Some(data_dir.clone()), ..LocalOptions::default() };
    let local = host::local::LocalKinesis::start(options.clone()).await.expect("emulator");
    let port = local.addr().port();
    let client = host::kinesis::connect(&host::kinesis::AwsOptions {
        endpoint_url: Some(local.endpoint_url()),
        ..Default::default()
    })
    .await
    .expect("client");
    admin::create(&client, "outage", 2).await.expect("create");
    admin::wait_active(&client, "outage", Duration::from_secs(20)).await.expect("active");
    let numbered = |from: u64, n: u64| -> Vec<Outgoing> {
        (from..from + n)
            .map(|i| Outgoing { partition_key: format!("key-{}", i % 16), data: format!("n-{i}").into_bytes() })
            .collect()
    };
    put_all(&client, "outage", &numbered(0, 200)).await.expect("put");

    let out = dir.path().join("out.jsonl");
    let mut config = ConsumerConfig::new("test", "outage");
    config.start = host::source::StartPosition::TrimHorizon;
    config.batch_size = 50;
    config.idle_time = Duration::from_millis(50);
    config.idle_exit = Some(Duration::from_millis(2500));
    config.shard_sync_interval = Duration::from_millis(300);
    let progress = Arc::new(Progress::default());
    let (stop, _) = tokio::sync::watch::channel(false);
    let consumer = Consumer::new(
        client.clone(),
        load(&host::plugin::PluginEngine::new().expect("engine"), "faulty"),
        host::checkpoint::SqliteStore::open(&dir.path().join("cp.db")).expect("store"),
        Arc::new(Sink::file(&out, OutputFormat::Json).expect("sink")),
        config,
    );
    let consumer = tokio::spawn(consumer.progress(progress.clone()).run(stop));
    while progress.records.load(std::sync::atomic::Ordering::Relaxed) < 200 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The endpoint goes away; the readers back off and keep trying.
    local.stop().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    if consumer.is_finished() {
        panic!("the consumer must ride out the outage, but ended: {:?}", consumer.await.map(|r| r.map(|r| r.records)));
    }
    let local = host::local::LocalKinesis::start(LocalOptions { port, ..options }).await.expect("emulator is back");
    put_all(&client, "outage", &numbered(200, 200)).await.expect("put after the outage");
    let report = consumer.await.expect("task").expect("the run ends cleanly");
    assert_eq!(report.records, 400);
    assert!(report.retried_reads > 0, "reads were retried during the outage");
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for line in lines(&out) {
        *seen.entry(line["data"].as_str().unwrap_or_default().to_string()).or_insert(0) += 1;
    }
    assert_eq!(seen, (0..400).map(|i| (format!("n-{i}"), 1)).collect::<BTreeMap<_, _>>());
    local.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_can_go_to_another_stream() {
    let f = fixture(LocalOptions::default()).await;
    f.stream("source", 1).await;
    f.stream("letters", 1).await;
    let records = vec![
        Outgoing { partition_key: "k".into(), data: b"ok".to_vec() },
        Outgoing { partition_key: "bad-key".into(), data: b"fail".to_vec() },
    ];
    put_all(&f.client, &f.name("source"), &records).await.expect("put");
    let mut config = f.config("source", "{}");
    config.failure.dead_letter =
        Some(Arc::new(DeadLetterSink::open(&Destination::Kinesis(f.name("letters")), Some(&f.client)).expect("sink")));
    let (report, _) = run_with(&f, "faulty", config).await;
    report.expect("runs");
    let shard = admin::shards(&f.client, &f.name("letters")).await.expect("shards")[0].shard_id().to_string();
    let mut reader = host::kinesis::reader::ShardReader::open(
        f.client.clone(),
        &f.name("letters"),
        &shard,
        host::source::StartPosition::TrimHorizon,
        100,
    )
    .await
    .expect("reader");
    let letters = reader.next_batch().await.expect("read").records.to_records();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].partition_key, "bad-key", "keyed by the original key");
    let letter: serde_json::Value = serde_json::from_slice(&letters[0].data).expect("json");
    assert_eq!((letter["data"].as_str(), letter["reason"].as_str()), (Some("fail"), Some("poison")), "{letter}");
    f.stop().await;
}
