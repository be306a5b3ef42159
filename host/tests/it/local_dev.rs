//! The no-AWS-account path: `host local` serves the AWS CLI, boto3 and
//! `host run`, keeps its data with `--data-dir`, and the README's demo
//! (`make demo`, which runs `host dev`) prints the counter's output.

use crate::common::*;
use std::collections::BTreeMap;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_runs_seed_001_against_host_local() {
    let _watched = watchdog::watch();
    let Some(python) = python_with("boto3") else { return };
    let port = free_port();
    let local = spawn_host(&["local", "--port", &port.to_string()]);
    wait_for_port(port).await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/seed001_boto3.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(format!("http://127.0.0.1:{port}"))
        .env_remove("AWS_PROFILE")
        .output()
        .expect("python runs");
    sigterm(&local);
    let local = wait(local).await;
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary");
    assert_eq!(summary["records_read"], 26);
    assert_eq!(local.code, 0, "host local stops cleanly on SIGTERM: {}", local.stderr);
}

/// `host local` serves the SDKs and the CLI, not web pages: a CORS
/// preflight, a simple request a page can send without one (`text/plain`),
/// a Kinesis or DynamoDB call carrying an `Origin`, and one to a rebound
/// name are refused, and no answer grants an origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_local_refuses_what_a_web_page_could_send() {
    let _watched = watchdog::watch();
    let local = emulator().await;
    let port = local.addr().port();
    let ask = |head: String, body: &'static str| async move {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connects");
        raw_http(stream, &head, body.as_bytes()).await
    };
    let call = |target: &str, extra: &str, body: &'static str| {
        let json = if target.starts_with("DynamoDB") { "1.0" } else { "1.1" };
        let head = format!(
            "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Amz-Target: {target}\r\nContent-Type: application/x-amz-json-{json}\r\nAuthorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/kinesis/aws4_request, SignedHeaders=host, Signature=00\r\nX-Amz-Date: 20260101T000000Z\r\n{extra}Content-Length: {}",
            body.len()
        );
        ask(head, body)
    };
    // What the SDKs send passes, and grants no origin.
    let listed = call("Kinesis_20131202.ListStreams", "", "{}").await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert!(listed.body.contains("StreamNames"), "{}", listed.body);
    let tables = call("DynamoDB_20120810.ListTables", "", "{}").await;
    assert_eq!(tables.status, 200, "{}", tables.body);

    let page = "Origin: https://evil.example\r\n";
    let refused = [
        ("a CORS preflight", ask(format!("OPTIONS / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{page}Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: x-amz-target,content-type"), "").await),
        ("a simple request", ask(format!("POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{page}Content-Type: text/plain\r\nContent-Length: 2"), "{}").await),
        ("a Kinesis call from a page", call("Kinesis_20131202.ListStreams", page, "{}").await),
        ("a DynamoDB call from a page", call("DynamoDB_20120810.ListTables", page, "{}").await),
        ("a rebound name", ask(format!("POST / HTTP/1.1\r\nHost: evil.example:{port}\r\nX-Amz-Target: Kinesis_20131202.ListStreams\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: 2"), "{}").await),
    ];
    for (case, answer) in refused {
        assert_eq!(answer.status, 403, "{case}: {}", answer.body);
        assert!(answer.body.contains("AccessDeniedException"), "{case}: {}", answer.body);
        assert!(!answer.body.contains("StreamNames") && !answer.body.contains("TableNames"), "{case}: {}", answer.body);
    }
    for answer in [&listed, &tables] {
        assert!(!answer.head.to_ascii_lowercase().contains("access-control-"), "{}", answer.head);
    }
    local.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_local_data_dir_keeps_streams_and_records_across_a_restart() {
    let _watched = watchdog::watch();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("kinesis").display().to_string();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let local = spawn_host(&["local", "--port", &port.to_string(), "--data-dir", &data]);
    wait_for_port(port).await;
    assert_eq!(host(&["stream", "create", "kept", "--shards", "2", "--wait", "--endpoint-url", &url], "").code, 0);
    let produced =
        host(&["produce", "--stream", "kept", "--endpoint-url", &url, "--documents", "25", "--interval", "0"], "");
    assert_eq!(produced.code, 0, "{}", produced.stderr);
    sigterm(&local);
    assert_eq!(wait(local).await.code, 0);

    let local = spawn_host(&["local", "--port", &port.to_string(), "--data-dir", &data]);
    wait_for_port(port).await;
    let listed = host(&["stream", "list", "--endpoint-url", &url], "");
    assert_eq!(listed.stdout.trim(), "kept", "{}", listed.stderr);
    let echo = plugin_path("echo").display().to_string();
    let db = dir.path().join("cp.db").display().to_string();
    let read = host(
        &[
            "run",
            "--plugin",
            &echo,
            "--stream",
            "kept",
            "--endpoint-url",
            &url,
            "--start-position",
            "TRIM_HORIZON",
            "--checkpoint-db",
            &db,
            "--idle-exit",
            "1",
            "--status-interval",
            "0",
        ],
        "",
    );
    assert_eq!(read.code, 0, "{}", read.stderr);
    let numbers: std::collections::BTreeSet<u64> = read
        .stdout
        .lines()
        .filter_map(|l| l.split_once(" : "))
        .filter_map(|(_, doc)| serde_json::from_str::<serde_json::Value>(doc).ok()?["number"].as_u64())
        .collect();
    assert_eq!(numbers, (1..=25).collect(), "every document survived the restart: {}", read.stdout);
    sigterm(&local);
    wait(local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_demo_prints_the_counters_per_minute_counts() {
    let _watched = watchdog::watch();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    let first_command = readme.lines().skip_while(|l| !l.starts_with("```sh")).nth(1).unwrap_or_default().to_string();
    assert!(first_command.starts_with("make demo"), "the README's first command is the demo: {first_command}");
    // The demo as the README runs it, bounded, on a free port.
    let out = tokio::task::spawn_blocking(move || {
        // A user's shell, not this test's environment: the variables cargo
        // sets for a test would make the inner build recompile the host.
        let mut make = Command::new("make");
        // HOST= runs the host this test suite built, so `make test` need not
        // build the release one; everything else is the README's command.
        let host_bin = format!("HOST={}", env!("CARGO_BIN_EXE_host"));
        make.current_dir(&root)
            .args(["--no-print-directory", "demo", "DEMO_FLAGS=--duration 11 --port 0", &host_bin])
            .env_clear();
        for var in ["PATH", "HOME", "CARGO_HOME", "RUSTUP_HOME", "RUSTUP_TOOLCHAIN", "CI"] {
            if let Some(value) = std::env::var_os(var) {
                make.env(var, value);
            }
        }
        make.env("HOST_CACHE_DIR", cache_dir()).output().expect("make runs")
    })
    .await
    .expect("join");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("dev: Kinesis on http://127.0.0.1:"), "{stderr}");
    // The counter's lines: per (window, key), counts that only grow.
    let mut last: BTreeMap<(String, String), u64> = BTreeMap::new();
    for line in stdout.lines().filter(|l| l.starts_with("{\"window_start\"")) {
        let v: serde_json::Value = serde_json::from_str(line).expect("counter json");
        let key = (
            v["window_start"].as_str().unwrap_or_default().to_string(),
            v["key"].as_str().unwrap_or_default().to_string(),
        );
        let count = v["count"].as_u64().unwrap_or_default();
        let before = last.insert(key.clone(), count).unwrap_or(0);
        assert!(count > before, "{key:?}: {before} then {count}");
    }
    let total = |ip: &str| last.iter().filter(|((_, k), _)| k == ip).map(|(_, n)| n).sum::<u64>();
    // 11 s of seed 000's producers: 8.8.8.8 every 2 s, 8.8.8.9 every 5 s.
    assert!((4..=7).contains(&total("8.8.8.8")), "8.8.8.8: {} in {stdout}", total("8.8.8.8"));
    assert!((1..=3).contains(&total("8.8.8.9")), "8.8.8.9: {} in {stdout}", total("8.8.8.9"));
    assert!(
        stderr.contains(&format!("dev: stopped after {} records", total("8.8.8.8") + total("8.8.8.9"))),
        "{stderr}"
    );
}

/// `host local` plays one region, the one asked for (`--region`, else
/// `AWS_REGION`, else us-east-1): it is in every ARN, and a client signing
/// for another region sees the same streams (documented in the README).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_local_plays_the_region_it_is_given() {
    let _watched = watchdog::watch();
    let port = free_port();
    let local = spawn_host(&["local", "--port", &port.to_string(), "--region", "eu-west-1"]);
    wait_for_port(port).await;
    let url = format!("http://127.0.0.1:{port}");
    let client = |region: &str| {
        let options = host::kinesis::AwsOptions {
            region: Some(region.into()),
            endpoint_url: Some(url.clone()),
            ..Default::default()
        };
        async move { host::kinesis::connect(&options).await.expect("client") }
    };
    let eu = client("eu-west-1").await;
    host::kinesis::admin::create(&eu, "regional", 1).await.expect("create");
    host::kinesis::admin::wait_active(&eu, "regional", std::time::Duration::from_secs(10)).await.expect("active");
    let described = host::kinesis::admin::describe(&eu, "regional").await.expect("describe");
    assert!(described.contains("arn: arn:aws:kinesis:eu-west-1:"), "{described}");
    let us = client("us-east-1").await;
    assert!(host::kinesis::admin::list(&us).await.expect("list").contains(&"regional".to_string()), "one region");
    let stopped = Command::new("kill").args(["-TERM", &local.id().to_string()]).status().expect("kill");
    assert!(stopped.success());
    assert_eq!(wait(local).await.code, 0);
}

/// Arrival times from the embedded endpoint are milliseconds, as AWS gives
/// (ferrokinesis 0.7.0 stored whole seconds; host/vendor/ferrokinesis is
/// patched). `--max-record-age`, latency and event-time fallback rely on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_endpoint_gives_millisecond_arrival_times() {
    let _watched = watchdog::watch();
    use host::kinesis::producer::{put_all, Outgoing};
    let local = emulator().await;
    let options = host::kinesis::AwsOptions { endpoint_url: Some(local.endpoint_url()), ..Default::default() };
    let client = host::kinesis::connect(&options).await.expect("client");
    host::kinesis::admin::create(&client, "ms", 1).await.expect("create");
    host::kinesis::admin::wait_active(&client, "ms", std::time::Duration::from_secs(10)).await.expect("active");
    for i in 0..10 {
        let record = Outgoing { partition_key: "k".into(), data: format!("{i}").into_bytes() };
        put_all(&client, "ms", &[record]).await.expect("put");
        tokio::time::sleep(std::time::Duration::from_millis(37)).await;
    }
    let shard = host::kinesis::admin::shards(&client, "ms").await.expect("shards")[0].shard_id().to_string();
    let start = host::source::StartPosition::TrimHorizon;
    let mut reader =
        host::kinesis::reader::ShardReader::open(client.clone(), "ms", &shard, start, 100).await.expect("reader");
    let arrivals: Vec<i64> =
        reader.next_batch().await.expect("read").records.to_records().iter().map(|r| r.arrival_millis).collect();
    assert_eq!(arrivals.len(), 10);
    assert!(arrivals.iter().any(|ms| ms % 1000 != 0), "whole seconds only: {arrivals:?}");
    assert!(arrivals.windows(2).all(|w| w[0] <= w[1]), "in order: {arrivals:?}");
    let spread = arrivals[9] - arrivals[0];
    assert!((300..3000).contains(&spread), "10 puts 37 ms apart span {spread} ms: {arrivals:?}");
    local.stop().await;
}

/// `host dev --workers 2`: two workers in one process share the demo stream
/// through a lease table in the embedded DynamoDB; each status line says
/// which shards it holds, and the counts are whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_dev_with_two_workers_shares_the_stream_and_shows_who_holds_what() {
    let _watched = watchdog::watch();
    let counter = plugin_path("counter").display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        host(&["dev", "--plugin", &counter, "--workers", "2", "--shards", "4", "--duration", "12", "--port", "0"], "")
    })
    .await
    .expect("join");
    assert_eq!(out.code, 0, "{}", out.stderr);
    for worker in ["worker-1", "worker-2"] {
        assert!(out.stderr.contains(&format!("{worker}: 2 lease(s), 2 worker(s) live")), "{worker}: {}", out.stderr);
    }
    let mut last: BTreeMap<(String, String), u64> = BTreeMap::new();
    for v in json_lines(&out.stdout) {
        let key = (v["window_start"].as_str().unwrap_or_default().into(), v["key"].as_str().unwrap_or_default().into());
        let count = v["count"].as_u64().unwrap_or_default();
        let before = last.insert(key, count).unwrap_or(0);
        assert!(count > before, "counts only grow, across hand-offs: {}", out.stdout);
    }
    let total: u64 = last.values().sum();
    assert!(total >= 6, "12 s of seed 000's producers: {}", out.stdout);
    assert!(out.stderr.contains(&format!("dev: stopped after {total} records")), "{}", out.stderr);
}

/// `host dev --input FILE` puts the author's records (not the demo's) and
/// takes `host run`'s failure policy flags: a refused record goes to
/// `--dead-letter`, and the rest is printed in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_dev_runs_an_authors_own_records_with_dead_letters() {
    let _watched = watchdog::watch();
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("mine.jsonl");
    std::fs::write(
        &input,
        "{\"partitionKey\": \"a\", \"data\": \"one\"}\n{\"partitionKey\": \"a\", \"data\": \"fail\"}\n{\"partitionKey\": \"a\", \"data\": \"two\"}\n",
    )
    .expect("write");
    let letters = dir.path().join("dl.jsonl");
    let (faulty, input, dead) = (
        plugin_path("faulty").display().to_string(),
        input.display().to_string(),
        format!("file:{}", letters.display()),
    );
    let out = tokio::task::spawn_blocking(move || {
        host(
            &["dev", "--plugin", &faulty, "--input", &input, "--dead-letter", &dead, "--duration", "4", "--port", "0"],
            "",
        )
    })
    .await
    .expect("join");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "one\ntwo\n", "{}", out.stderr);
    assert!(out.stderr.contains("dev: put 3 records from") && !out.stderr.contains("8.8.8.8"), "{}", out.stderr);
    let letters = json_lines(&std::fs::read_to_string(&letters).unwrap_or_default());
    assert_eq!((letters.len(), letters[0]["data"].as_str()), (1, Some("fail")), "{letters:?}");
}
