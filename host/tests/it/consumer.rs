//! `host run`'s consumer against a real Kinesis API: the `ferrokinesis`
//! emulator in-process, driven through `aws-sdk-kinesis`. Covers multiple
//! shards, every start position, resharding, restarts from checkpoints,
//! throttling and expired iterators.

use crate::common::emulators::*;
use crate::common::*;
use host::consumer::Consumer;
use host::kinesis::producer::{put_all, Outgoing};
use host::kinesis::{admin, connect, AwsOptions};
use host::local::LocalOptions;
use host::sink::{OutputFormat, Sink};
use host::source::StartPosition;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Echo outputs as (key, record number) in file order.
fn echoed(path: &Path) -> Vec<(String, u64)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    json_lines(&text)
        .iter()
        .map(|v| {
            let data = v["data"].as_str().unwrap_or_default();
            let n = data.rsplit("n-").next().and_then(|n| n.parse().ok()).unwrap_or(u64::MAX);
            (v["key"].as_str().unwrap_or_default().to_string(), n)
        })
        .collect()
}

/// Checks that every record in `expected` was echoed exactly once and that
/// per key (hence per shard) they came in order.
fn assert_exactly_once_in_order(got: &[(String, u64)], expected: impl Iterator<Item = u64>) {
    let mut seen = BTreeMap::new();
    for (_, n) in got {
        *seen.entry(*n).or_insert(0) += 1;
    }
    let want: BTreeMap<u64, i32> = expected.map(|n| (n, 1)).collect();
    assert_eq!(seen, want, "every record exactly once");
    let mut last_per_key: BTreeMap<&str, u64> = BTreeMap::new();
    for (key, n) in got {
        if let Some(prev) = last_per_key.insert(key, *n) {
            assert!(prev < *n, "{key}: {prev} before {n}: out of order");
        }
    }
}

on_both_emulators!(reads_every_shard_of_a_multi_shard_stream);
async fn reads_every_shard_of_a_multi_shard_stream(f: Fixture) {
    f.stream("multi", 4).await;
    f.put_numbered("multi", 0, 800).await;
    let report = f.run("echo", f.config("multi", "{}")).await.expect("runs");
    assert_eq!(report.records, 800);
    assert_exactly_once_in_order(&echoed(&f.out_path()), 0..800);
    let checkpoints = f.store().list("test", &f.name("multi")).expect("list");
    assert_eq!(checkpoints.len(), 4, "one checkpoint per shard");
    f.stop().await;
}

on_both_emulators!(restarts_resume_from_the_checkpoint_with_state_restored);
async fn restarts_resume_from_the_checkpoint_with_state_restored(f: Fixture) {
    f.stream("resume", 2).await;
    f.put_numbered("resume", 0, 300).await;
    let mut config = f.config("resume", r#"{"event_time": "arrival"}"#);
    config.max_records = Some(100);
    config.batch_size = 50;
    let first = f.run("counter", config.clone()).await.expect("first run");
    assert!(first.records >= 100 && first.records < 300, "stopped early: {}", first.records);
    f.put_numbered("resume", 300, 100).await;
    config.max_records = None;
    let second = f.run("counter", config).await.expect("second run");
    assert_eq!(first.records + second.records, 400, "nothing read twice, nothing lost");
    // The counter's state carried over: the last count per (window, key)
    // is its total (the puts may straddle a minute of arrival time).
    let last = highest_counts(&f.out_path());
    let mut per_key: BTreeMap<&str, u64> = BTreeMap::new();
    for ((_, key), count) in &last {
        *per_key.entry(key).or_insert(0) += count;
    }
    assert_eq!(per_key.values().sum::<u64>(), 400, "{last:?}");
    assert!(per_key.values().all(|&c| c == 25), "16 keys x 25: {last:?}");
    f.stop().await;
}

on_both_emulators!(every_start_position);
async fn every_start_position(f: Fixture) {
    f.stream("positions", 1).await;
    f.put_numbered("positions", 0, 10).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let middle =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    f.put_numbered("positions", 10, 10).await;
    // Sequence numbers of records 0..20, from a TRIM_HORIZON read.
    let shard = admin::shards(&f.client, &f.name("positions")).await.expect("shards")[0].shard_id().to_string();
    let mut reader = host::kinesis::reader::ShardReader::open(
        f.client.clone(),
        &f.name("positions"),
        &shard,
        StartPosition::TrimHorizon,
        100,
    )
    .await
    .expect("reader");
    let all = reader.next_batch().await.expect("batch").records.to_records();
    assert_eq!(all.len(), 20);
    let seq5 = all[5].sequence_number.clone();

    let run_from = |app: &'static str, start: StartPosition| {
        let mut config = f.config("positions", "{}");
        config.application = app.into();
        config.start = start;
        config
    };
    let cases: Vec<(&str, StartPosition, Vec<u64>)> = vec![
        ("trim", StartPosition::TrimHorizon, (0..20).collect()),
        ("at-ts", StartPosition::AtTimestamp(middle), (10..20).collect()),
        ("at-seq", StartPosition::AtSequenceNumber(seq5.clone()), (5..20).collect()),
        ("after-seq", StartPosition::AfterSequenceNumber(seq5), (6..20).collect()),
    ];
    for (app, start, want) in cases {
        let _ = std::fs::remove_file(f.out_path());
        f.run("echo", run_from(app, start)).await.expect("runs");
        let got: Vec<u64> = echoed(&f.out_path()).into_iter().map(|(_, n)| n).collect();
        assert_eq!(got, want, "{app}");
    }
    // LATEST: only what is written after the consumer started.
    let _ = std::fs::remove_file(f.out_path());
    let config = run_from("latest", StartPosition::Latest);
    let consumer = f.run("echo", config);
    let producer = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        f.put_numbered("positions", 20, 5).await;
    };
    let (result, ()) = tokio::join!(consumer, producer);
    result.expect("runs");
    let got: Vec<u64> = echoed(&f.out_path()).into_iter().map(|(_, n)| n).collect();
    assert_eq!(got, (20..25).collect::<Vec<_>>(), "LATEST");
    f.stop().await;
}

on_both_emulators!(a_split_and_a_merge_during_consumption_lose_nothing_and_keep_parents_first);
async fn a_split_and_a_merge_during_consumption_lose_nothing_and_keep_parents_first(f: Fixture) {
    f.stream("reshard", 2).await;
    f.put_numbered("reshard", 0, 200).await;
    let mut config = f.config("reshard", "{}");
    config.idle_exit = Some(Duration::from_secs(4));
    let consumer = f.run("echo", config);
    let resharder = async {
        tokio::time::sleep(Duration::from_millis(600)).await;
        // Split shard 0 at the middle of its hash range.
        let stream = f.name("reshard");
        let shards = admin::shards(&f.client, &stream).await.expect("shards");
        let range = shards[0].hash_key_range().expect("range");
        let start: u128 = range.starting_hash_key().parse().expect("hash");
        let end: u128 = range.ending_hash_key().parse().expect("hash");
        f.client
            .split_shard()
            .stream_name(&stream)
            .shard_to_split(shards[0].shard_id())
            .new_starting_hash_key((start + (end - start) / 2).to_string())
            .send()
            .await
            .expect("split");
        admin::wait_active(&f.client, &stream, Duration::from_secs(20)).await.expect("active");
        f.put_numbered("reshard", 200, 200).await;
        // Merge the two children back together.
        let open: Vec<_> = admin::shards(&f.client, &stream)
            .await
            .expect("shards")
            .into_iter()
            .filter(|s| s.sequence_number_range().and_then(|r| r.ending_sequence_number()).is_none())
            .collect();
        let children: Vec<_> = open.iter().filter(|s| s.parent_shard_id().is_some()).collect();
        assert_eq!(children.len(), 2, "the split made two children");
        let mut ordered = children.clone();
        ordered.sort_by_key(|s| s.hash_key_range().map(|r| r.starting_hash_key().parse::<u128>().unwrap_or(0)));
        f.client
            .merge_shards()
            .stream_name(&stream)
            .shard_to_merge(ordered[0].shard_id())
            .adjacent_shard_to_merge(ordered[1].shard_id())
            .send()
            .await
            .expect("merge");
        admin::wait_active(&f.client, &stream, Duration::from_secs(20)).await.expect("active");
        f.put_numbered("reshard", 400, 200).await;
    };
    let (report, ()) = tokio::join!(consumer, resharder);
    let report = report.expect("runs");
    assert_exactly_once_in_order(&echoed(&f.out_path()), 0..600);
    assert_eq!(report.records, 600);
    // The closed shards are checkpointed as ended; their children were read after them.
    let checkpoints = f.store().list("test", &f.name("reshard")).expect("list");
    let ended: Vec<&str> = checkpoints.iter().filter(|(_, c)| c.shard_end).map(|(s, _)| s.as_str()).collect();
    assert_eq!(ended.len(), 3, "the split parent and both merged children ended: {checkpoints:?}");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_writes_are_retried_and_nothing_is_lost() {
    // With AWS limits on, a shard takes 1000 records/s: 3000 at once are
    // partly rejected, and the rejected entries must be retried until all are in.
    let f = fixture(LocalOptions { enforce_limits: true, ..LocalOptions::default() }).await;
    f.stream("throttled", 1).await;
    let records: Vec<Outgoing> = (0..3000u64)
        .map(|i| Outgoing { partition_key: format!("key-{}", i % 16), data: format!("n-{i}").into_bytes() })
        .collect();
    let retried = put_all(&f.client, &f.name("throttled"), &records).await.expect("all put eventually");
    assert!(retried > 0, "the emulator must have throttled the writes");
    let mut config = f.config("throttled", "{}");
    config.batch_size = 500;
    let report = f.run("echo", config).await.expect("runs");
    assert_eq!(report.records, 3000);
    let got = echoed(&f.out_path());
    let mut numbers: Vec<u64> = got.iter().map(|(_, n)| *n).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (0..3000).collect::<Vec<_>>(), "every record exactly once");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_iterators_resume_after_the_last_record() {
    let f = fixture(LocalOptions { iterator_ttl_seconds: 1, ..LocalOptions::default() }).await;
    f.stream("expiring", 1).await;
    f.put_numbered("expiring", 0, 50).await;
    let mut config = f.config("expiring", "{}");
    // Idle longer than the iterator lives, so every idle poll finds it expired.
    config.idle_time = Duration::from_millis(1500);
    config.idle_exit = Some(Duration::from_secs(5));
    let consumer = f.run("echo", config);
    let more = async {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        f.put_numbered("expiring", 50, 50).await;
    };
    let (report, ()) = tokio::join!(consumer, more);
    let report = report.expect("runs");
    assert!(report.expired_iterators > 0, "iterators must have expired");
    assert_exactly_once_in_order(&echoed(&f.out_path()), 0..100);
    f.stop().await;
}

on_both_emulators!(a_missing_stream_is_a_clear_error);
async fn a_missing_stream_is_a_clear_error(f: Fixture) {
    let err = f.run("echo", f.config("nope", "{}")).await.expect_err("missing stream");
    let name = f.name("nope");
    assert!(
        format!("{err:#}")
            .contains(&format!("stream `{name}` does not exist; create it with `host stream create {name}")),
        "{err:#}"
    );
    f.stop().await;
}

on_both_emulators!(output_is_forwarded_to_another_stream);
async fn output_is_forwarded_to_another_stream(f: Fixture) {
    f.stream("source", 2).await;
    f.stream("counts", 1).await;
    f.put_numbered("source", 0, 160).await;
    let plugin = load(&f.engine, "counter");
    let sink = Sink::Stream { client: f.client.clone(), stream: f.name("counts") };
    let (stop, _) = tokio::sync::watch::channel(false);
    let config = f.config("source", r#"{"event_time": "arrival"}"#);
    Consumer::new(f.client.clone(), plugin, f.store(), Arc::new(sink), config).run(stop).await.expect("runs");
    // Read the forwarded counts back: keyed by the counted key, last count per key = 10.
    let shard = admin::shards(&f.client, &f.name("counts")).await.expect("shards")[0].shard_id().to_string();
    let mut reader = host::kinesis::reader::ShardReader::open(
        f.client.clone(),
        &f.name("counts"),
        &shard,
        StartPosition::TrimHorizon,
        10_000,
    )
    .await
    .expect("reader");
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        let batch = reader.next_batch().await.expect("read");
        if batch.records.is_empty() {
            break;
        }
        for record in batch.records.to_records() {
            let v: serde_json::Value = serde_json::from_slice(&record.data).expect("counter json");
            assert_eq!(v["key"].as_str(), Some(record.partition_key.as_str()), "keyed by the counted key");
            let count = v["count"].as_u64().unwrap_or_default();
            let entry = last.entry(record.partition_key).or_insert(0);
            *entry = (*entry).max(count);
        }
    }
    assert_eq!(last.len(), 16);
    assert!(last.values().all(|&c| c == 10), "{last:?}");
    f.stop().await;
}

/// Reads one HTTP/1.1 message (head + Content-Length or chunked body) from
/// `stream`, using `buf` for bytes read past it. `None` at a clean close.
async fn read_http_message(
    stream: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<(String, Vec<u8>)>> {
    use tokio::io::AsyncReadExt;
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let body_start = end + 4;
            let total = if let Some(len) = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
            {
                Some(body_start + len)
            } else if head.contains("transfer-encoding: chunked") {
                find(&buf[body_start..], b"0\r\n\r\n").map(|i| body_start + i + 5)
            } else {
                Some(body_start)
            };
            if let Some(total) = total.filter(|t| buf.len() >= *t) {
                let message: Vec<u8> = buf.drain(..total).collect();
                return Ok(Some((head, message)));
            }
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A proxy in front of `upstream` that answers three of every four of the
/// first 80 GetRecords with ProvisionedThroughputExceededException (a burst,
/// as AWS throttles past 5 reads/s per shard; neither emulator throttles
/// reads), then lets everything through. Returns its address and how many
/// reads it throttled.
async fn throttling_proxy(upstream: std::net::SocketAddr) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let throttled = Arc::new(AtomicU64::new(0));
    let count = throttled.clone();
    tokio::spawn(async move {
        let reads = Arc::new(AtomicU64::new(0));
        while let Ok((mut client, _)) = listener.accept().await {
            let (throttled, reads) = (count.clone(), reads.clone());
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else { return };
                let (mut from_client, mut from_server) = (Vec::new(), Vec::new());
                while let Ok(Some((head, request))) = read_http_message(&mut client, &mut from_client).await {
                    if head.contains("x-amz-target: kinesis_20131202.getrecords") && {
                        let n = reads.fetch_add(1, Ordering::Relaxed);
                        n < 80 && n % 4 != 3
                    } {
                        throttled.fetch_add(1, Ordering::Relaxed);
                        let body = r#"{"__type":"ProvisionedThroughputExceededException","message":"Rate exceeded for shard"}"#;
                        let response = format!(
                            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/x-amz-json-1.1\r\nx-amzn-requestid: throttled\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if client.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    if server.write_all(&request).await.is_err() {
                        return;
                    }
                    match read_http_message(&mut server, &mut from_server).await {
                        Ok(Some((_, response))) => {
                            if client.write_all(&response).await.is_err() {
                                return;
                            }
                        }
                        _ => return,
                    }
                }
            });
        }
    });
    (addr, throttled)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_reads_back_off_and_lose_nothing() {
    let f = fixture(LocalOptions::default()).await;
    f.stream("slowed", 2).await;
    f.put_numbered("slowed", 0, 400).await;
    let upstream = f.local.as_ref().map(|l| l.addr()).expect("in-process emulator");
    let (proxy, throttled) = throttling_proxy(upstream).await;
    let client = connect(&AwsOptions { endpoint_url: Some(format!("http://{proxy}")), ..Default::default() })
        .await
        .expect("client");
    let mut config = f.config("slowed", "{}");
    config.batch_size = 25;
    let sink = Sink::file(&f.out_path(), OutputFormat::Json).expect("sink");
    let (stop, _) = tokio::sync::watch::channel(false);
    let report = Consumer::new(client, load(&f.engine, "echo"), f.store(), Arc::new(sink), config)
        .run(stop)
        .await
        .expect("runs");
    assert!(throttled.load(std::sync::atomic::Ordering::Relaxed) > 0, "the proxy throttled reads");
    assert!(report.retried_reads > 0, "the reader retried them");
    assert_exactly_once_in_order(&echoed(&f.out_path()), 0..400);
    f.stop().await;
}
