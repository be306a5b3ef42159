//! `host run`, `host produce` and `host stream` as processes against the
//! emulator (in this test process): crash recovery with kill -9, seed 000
//! end to end, and the errors a user sees.

use crate::common::*;
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_then_restart_loses_nothing() {
    let _watched = watchdog::watch();
    let local = emulator().await;
    let url = local.endpoint_url();
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, out) = (dir.path().join("cp.db"), dir.path().join("out.jsonl"));
    let (db, out) = (db.to_str().unwrap_or_default().to_string(), format!("file:{}", out.display()));
    let created = host(&["stream", "create", "crash", "--shards", "2", "--wait", "--endpoint-url", &url], "");
    assert_eq!(created.code, 0, "{}", created.stderr);
    let echo = plugin_path("echo").display().to_string();
    let run_args = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "run",
            "--plugin",
            &echo,
            "--stream",
            "crash",
            "--endpoint-url",
            &url,
            "--start-position",
            "TRIM_HORIZON",
            "--checkpoint-db",
            &db,
            "--sink",
            &out,
            "--output",
            "json",
            "--batch-size",
            "25",
            "--idle-time-ms",
            "50",
            "--status-interval",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    // A steady producer: 1500 records over about 3 s.
    let producer =
        spawn_host(&["produce", "--stream", "crash", "--endpoint-url", &url, "--rate", "500", "--count", "1500"]);
    let args = run_args(&[]);
    let mut consumer = spawn_host(&args.iter().map(String::as_str).collect::<Vec<_>>());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    consumer.kill().expect("kill -9");
    let killed = wait(consumer).await;
    assert_ne!(killed.code, 0, "it was killed mid-stream");
    let produced = wait(producer).await;
    assert_eq!(produced.code, 0, "{}", produced.stderr);
    let args = run_args(&["--idle-exit", "2"]);
    let restarted = wait(spawn_host(&args.iter().map(String::as_str).collect::<Vec<_>>())).await;
    assert_eq!(restarted.code, 0, "{}", restarted.stderr);

    // Every record is there; a record appears twice only if its batch was
    // processed but not yet checkpointed at the kill: at most one batch per shard.
    let text = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap_or_default();
    let lines = json_lines(&text);
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for v in &lines {
        *seen.entry(v["data"].as_str().unwrap_or_default().to_string()).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 1500, "every produced record was processed");
    let duplicates: u32 = seen.values().map(|n| n - 1).sum();
    assert!(duplicates <= 2 * 25, "at most one batch per shard again, got {duplicates}");
    local.stop().await;
}

/// Parses `host produce` lines `IP : TIMESTAMP` into (window start, ip) counts.
fn produced_counts(stdout: &str, window_ms: i64) -> BTreeMap<(String, String), u64> {
    let mut counts = BTreeMap::new();
    for line in stdout.lines() {
        let Some((ip, stamp)) = line.split_once(" : ") else { continue };
        let t = kinesis_processor_sdk::helpers::time::parse_timestamp_millis(stamp.as_bytes()).expect("timestamp");
        let w = kinesis_processor_sdk::helpers::time::format_timestamp_millis(t - t.rem_euclid(window_ms));
        *counts.entry((w, ip.to_string())).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_000_end_to_end_with_a_lagging_producer() {
    let _watched = watchdog::watch();
    let local = emulator().await;
    let url = local.endpoint_url();
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(host(&["stream", "create", "seed", "--shards", "1", "--wait", "--endpoint-url", &url], "").code, 0);
    // Seed 000 sped up 10x: 8.8.8.8 every 0.2 s, 8.8.8.9 every 0.5 s and 1.5 s late;
    // 5-second windows stand in for minutes.
    let config = r#"{"window_seconds": 5, "allowed_lateness_seconds": 3, "idle_timeout_seconds": 1}"#;
    let started = Instant::now();
    let producer = spawn_host(&[
        "produce",
        "--stream",
        "seed",
        "--endpoint-url",
        &url,
        "--source",
        "8.8.8.8:0.2",
        "--source",
        "8.8.8.9:0.5:1.5",
        "--duration",
        "8",
    ]);
    let consumers: Vec<Spawned> = [("counter", r#"{"window_seconds": 5}"#), ("buffered-counter", config)]
        .iter()
        .map(|(plugin, config)| {
            let db = dir.path().join(format!("{plugin}.db"));
            spawn_host(&[
                "run",
                "--plugin",
                &plugin_path(plugin).display().to_string(),
                "--config",
                config,
                "--stream",
                "seed",
                "--endpoint-url",
                &url,
                "--checkpoint-db",
                db.to_str().unwrap_or_default(),
                "--application",
                plugin,
                "--start-position",
                "TRIM_HORIZON",
                "--idle-time-ms",
                "200",
                "--timer-interval-ms",
                "250",
                // The last window (up to 5 s after the last record) closes at
                // its end + 3 s of lateness: idle for up to 8 s, then a margin.
                "--idle-exit",
                "10",
                "--status-interval",
                "1",
            ])
        })
        .collect();
    let produced = wait(producer).await;
    assert_eq!(produced.code, 0, "{}", produced.stderr);
    let mut runs = Vec::new();
    for child in consumers {
        runs.push(wait(child).await);
    }
    assert!(started.elapsed() < Duration::from_secs(60));
    let want = produced_counts(&produced.stdout, 5000);
    assert!(want.values().sum::<u64>() >= 50, "the producers ran: {want:?}");

    let (counter, buffered) = (&runs[0], &runs[1]);
    assert_eq!(counter.code, 0, "{}", counter.stderr);
    assert!(
        counter.stderr.contains("status: ") && counter.stderr.contains("behind: shardId-000000000000"),
        "{}",
        counter.stderr
    );
    let mut last = BTreeMap::new();
    for v in json_lines(&counter.stdout) {
        last.insert(
            (
                v["window_start"].as_str().unwrap_or_default().to_string(),
                v["key"].as_str().unwrap_or_default().to_string(),
            ),
            v["count"].as_u64().unwrap_or(0),
        );
    }
    assert_eq!(last, want, "the counter's last counts are what was produced");

    assert_eq!(buffered.code, 0, "{}", buffered.stderr);
    let mut finals = BTreeMap::new();
    for v in json_lines(&buffered.stdout) {
        let key = (
            v["window_start"].as_str().unwrap_or_default().to_string(),
            v["key"].as_str().unwrap_or_default().to_string(),
        );
        let n = if v["kind"] == "final" { v["count"].as_u64() } else { v["late"].as_u64() };
        *finals.entry(key).or_insert(0) += n.unwrap_or(0);
    }
    assert_eq!(finals, want, "finals (+ any corrections) are what was produced, each window once");
    local.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_errors_are_one_line() {
    let _watched = watchdog::watch();
    let local = emulator().await;
    let url = local.endpoint_url();
    let echo = plugin_path("echo").display().to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("cp.db").display().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["run", "--plugin", &echo, "--stream", "missing", "--endpoint-url", &url, "--checkpoint-db", &db],
            "stream `missing` does not exist",
        ),
        (
            vec![
                "run",
                "--plugin",
                &echo,
                "--stream",
                "s",
                "--endpoint-url",
                "http://127.0.0.1:1",
                "--checkpoint-db",
                &db,
            ],
            "cannot reach the Kinesis endpoint (connection refused)",
        ),
        (
            vec![
                "run",
                "--plugin",
                &echo,
                "--stream",
                "s",
                "--endpoint-url",
                &url,
                "--checkpoint-db",
                &db,
                "--sink",
                "s3:bucket",
            ],
            "--sink \"s3:bucket\" must be",
        ),
        (
            vec![
                "run",
                "--plugin",
                &echo,
                "--stream",
                "s",
                "--endpoint-url",
                &url,
                "--checkpoint-db",
                &db,
                "--start-position",
                "AT_TIMESTAMP",
            ],
            "needs --start-timestamp",
        ),
        (
            vec!["produce", "--stream", "missing", "--endpoint-url", &url, "--count", "1"],
            "stream `missing` does not exist",
        ),
        (vec!["stream", "delete", "missing", "--endpoint-url", &url], "stream `missing` does not exist"),
    ];
    for (args, needle) in cases {
        let run = wait(spawn_host(&args)).await;
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line, got {}", run.stderr);
        assert!(lines[0].starts_with("error: ") && lines[0].contains(needle), "{args:?}: {}", lines[0]);
    }
    // Missing credentials against real AWS (no endpoint): said before any call.
    let run = wait({
        let mut c = Command::new(env!("CARGO_BIN_EXE_host"));
        c.args(["stream", "list", "--region", "eu-west-1"])
            .env("HOME", dir.path())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ENDPOINT_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.spawn().expect("spawn")
    })
    .await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("no AWS credentials found") && run.stderr.contains("aws configure"), "{}", run.stderr);
    local.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_with_everything_checkpointed() {
    let _watched = watchdog::watch();
    let local = emulator().await;
    let url = local.endpoint_url();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("cp.db").display().to_string();
    let out = format!("file:{}", dir.path().join("out.txt").display());
    assert_eq!(host(&["stream", "create", "term", "--shards", "2", "--wait", "--endpoint-url", &url], "").code, 0);
    assert_eq!(
        host(&["produce", "--stream", "term", "--endpoint-url", &url, "--rate", "1000", "--count", "500"], "").code,
        0
    );
    let echo = plugin_path("echo").display().to_string();
    let args = [
        "run",
        "--plugin",
        &echo,
        "--stream",
        "term",
        "--endpoint-url",
        &url,
        "--start-position",
        "TRIM_HORIZON",
        "--checkpoint-db",
        &db,
        "--sink",
        &out,
        "--batch-size",
        "50",
        "--idle-time-ms",
        "100",
        "--status-interval",
        "0",
    ];
    let consumer = spawn_host(&args);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let term = Command::new("kill").args(["-TERM", &consumer.id().to_string()]).status().expect("kill -TERM");
    assert!(term.success());
    let stopped = tokio::time::timeout(Duration::from_secs(15), wait(consumer)).await.expect("stops promptly");
    assert_eq!(stopped.code, 0, "{}", stopped.stderr);
    assert!(stopped.stderr.contains("stopping: finishing the batches in flight"), "{}", stopped.stderr);
    assert!(stopped.stderr.contains("stopped after 500 records"), "{}", stopped.stderr);
    // Everything was checkpointed: a restart finds nothing new to do.
    let mut again: Vec<&str> = args.to_vec();
    again.extend(["--idle-exit", "1"]);
    let restarted = wait(spawn_host(&again)).await;
    assert!(restarted.stderr.contains("stopped after 0 records"), "{}", restarted.stderr);
    assert_eq!(std::fs::read_to_string(dir.path().join("out.txt")).unwrap_or_default().lines().count(), 500);
    local.stop().await;
}

/// `GET path` over plain HTTP/1.0.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("request");
    let mut body = String::new();
    stream.read_to_string(&mut body).expect("response");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_metrics_show_records_lag_and_the_plugin_hash() {
    let _watched = watchdog::watch();
    let local = emulator().await;
    let url = local.endpoint_url();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("cp.db").display().to_string();
    assert_eq!(host(&["stream", "create", "metered", "--shards", "2", "--wait", "--endpoint-url", &url], "").code, 0);
    assert_eq!(
        host(&["produce", "--stream", "metered", "--endpoint-url", &url, "--rate", "1000", "--count", "300"], "").code,
        0
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let addr = format!("127.0.0.1:{port}");
    let counter = plugin_path("counter");
    let consumer = spawn_host(&[
        "run",
        "--plugin",
        &counter.display().to_string(),
        "--stream",
        "metered",
        "--endpoint-url",
        &url,
        "--start-position",
        "TRIM_HORIZON",
        "--checkpoint-db",
        &db,
        "--sink",
        "file:/dev/null",
        "--metrics-addr",
        &addr,
        "--idle-exit",
        "4",
        "--status-interval",
        "0",
    ]);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let body = tokio::task::spawn_blocking(move || http_get(port, "/metrics")).await.expect("join");
    let run = wait(consumer).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(body.starts_with("HTTP/1.0 200") || body.starts_with("HTTP/1.1 200"), "{body}");
    let total: u64 = body
        .lines()
        .filter(|l| l.starts_with("host_records_processed_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(total, 300, "{body}");
    assert!(body.contains("host_millis_behind_latest{stream=\"metered\",shard=\"shardId-000000000000\"}"), "{body}");
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(&counter).expect("read")))
    };
    assert!(body.contains(&format!("sha256=\"{sha}\"")), "the plugin's content hash is exported: {body}");
    local.stop().await;
}

/// The first 12 digits of a plugin file's content hash, as JSON output shows it.
fn short_hash(path: &std::path::Path) -> String {
    use sha2::Digest;
    let sha = hex::encode(sha2::Sha256::digest(std::fs::read(path).expect("plugin")));
    format!("sha256:{}", &sha[..12])
}

/// Waits until `path` holds a line containing `needle`.
async fn wait_for_line(path: &std::path::Path, needle: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if std::fs::read_to_string(path).unwrap_or_default().lines().any(|l| l.contains(needle)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_and_host_swap_change_the_logic_of_a_running_host() {
    let _watched = watchdog::watch();
    let local = emulator().await;
    let url = local.endpoint_url();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("cp.db").display().to_string();
    let out_path = dir.path().join("out.jsonl");
    let live = dir.path().join("live.wasm");
    let (counter, v2) = (plugin_path("counter"), plugin_path("counter-v2"));
    std::fs::copy(&counter, &live).expect("copy");
    assert_eq!(host(&["stream", "create", "hot", "--shards", "2", "--wait", "--endpoint-url", &url], "").code, 0);
    let producer =
        spawn_host(&["produce", "--stream", "hot", "--endpoint-url", &url, "--rate", "100", "--count", "1200"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let control = format!("127.0.0.1:{port}");
    let consumer = spawn_host(&[
        "run",
        "--plugin",
        &live.display().to_string(),
        "--watch",
        "--control-addr",
        &control,
        "--stream",
        "hot",
        "--endpoint-url",
        &url,
        "--start-position",
        "TRIM_HORIZON",
        "--checkpoint-db",
        &db,
        "--sink",
        &format!("file:{}", out_path.display()),
        "--output",
        "json",
        "--idle-exit",
        "6",
        "--status-interval",
        "0",
    ]);
    assert!(wait_for_line(&out_path, &short_hash(&counter), Duration::from_secs(10)).await, "the counter runs");

    // --watch: the file is replaced in place, the new logic takes over.
    std::fs::copy(&v2, &live).expect("overwrite");
    assert!(wait_for_line(&out_path, &short_hash(&v2), Duration::from_secs(10)).await, "the changed counter took over");
    let status = host(&["swap", "--control-addr", &control, "--status"], "");
    assert_eq!(status.code, 0, "{}", status.stderr);
    let status: serde_json::Value = serde_json::from_str(&status.stdout).expect("status json");
    assert_eq!(format!("sha256:{}", &status["sha256"].as_str().unwrap_or_default()[..12]), short_hash(&v2), "{status}");

    // `host swap`: to the counter, then undone. Once production is over and
    // the consumer caught up (past its 1 s idle poll), so the rollback has
    // nothing to replay and every record is processed exactly once.
    let producer = wait(producer).await;
    assert_eq!(producer.code, 0, "{}", producer.stderr);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The shards are idle: no batch to pass probation with, no waiting.
    let counter_path = counter.display().to_string();
    let swapped = host(&["swap", "--control-addr", &control, "--plugin", &counter_path, "--no-wait"], "");
    assert_eq!(swapped.code, 0, "{}", swapped.stderr);
    assert!(swapped.stdout.starts_with("swapped: now running"), "{}", swapped.stdout);
    let undone = host(&["swap", "--control-addr", &control, "--rollback"], "");
    assert_eq!(undone.code, 0, "{}", undone.stderr);
    assert!(undone.stdout.starts_with("rolled-back: rolled back to"), "{}", undone.stdout);
    // A bad file is refused and said why, in one line; the logic stays.
    let refused = host(&["swap", "--control-addr", &control, "--plugin", "Cargo.toml"], "");
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.starts_with("error: refused:") && refused.stderr.contains("not a WebAssembly file"),
        "{}",
        refused.stderr
    );
    assert_eq!(refused.stderr.trim().lines().count(), 1, "{}", refused.stderr);

    let run = wait(consumer).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("stopped after 1200 records"), "{}", run.stderr);
    for line in ["swap: swapped: now running", "swap: rolled-back:", "swap: refused:"] {
        assert!(run.stderr.contains(line), "the host logs every swap ({line}): {}", run.stderr);
    }
    // Nowhere is a control endpoint without asking, and never off loopback.
    let unreachable = host(&["swap", "--control-addr", &control, "--status"], "");
    assert!(unreachable.stderr.contains("is `host run --control-addr"), "{}", unreachable.stderr);
    local.stop().await;
}

/// A single host's `host swap` waits for the new logic's probation: it
/// says when every shard passed, and exits 1 naming the failure when the
/// host rolled the swap back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_waits_for_probation_and_fails_on_its_rollback() {
    let _watched = watchdog::watch();
    let local = emulator().await;
    let url = local.endpoint_url();
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(host(&["stream", "create", "prob", "--shards", "1", "--wait", "--endpoint-url", &url], "").code, 0);
    let (counter, v2) = (plugin_path("counter"), plugin_path("counter-v2").display().to_string());
    let control = format!("127.0.0.1:{}", free_port());
    let out = dir.path().join("out.jsonl");
    let args = run_args(&counter.display().to_string(), "prob", &url, &dir.path().join("cp.db"), &out);
    // Fresh state for logic that rejects the running one (the faulty fixture, last).
    let extra = ["--control-addr", &control, "--idle-time-ms", "100", "--on-rejected-state", "fresh"];
    let consumer = spawn_host_with(&args, &extra);
    let producer =
        spawn_host(&["produce", "--stream", "prob", "--endpoint-url", &url, "--rate", "100", "--count", "100000"]);
    assert!(wait_for_line(&out, &short_hash(&counter), Duration::from_secs(20)).await, "the counter runs");

    // Records flow: the new logic's first batches pass.
    let swapped = host(&["swap", "--control-addr", &control, "--plugin", &v2], "");
    assert_eq!(swapped.code, 0, "{}", swapped.stderr);
    assert!(swapped.stdout.contains("passed probation on every shard"), "{}", swapped.stdout);
    sigterm(&producer);
    let _ = wait(producer).await;
    let undone = host(&["swap", "--control-addr", &control, "--rollback"], "");
    assert_eq!(undone.code, 0, "{}", undone.stderr);
    // The rollback replays from the pre-swap checkpoint: caught up once the
    // output stops growing (else replayed batches could pass probation).
    let mut size = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
        if now == size {
            break;
        }
        size = now;
    }

    // Idle now: the swap waits for a first batch, and that batch has a
    // record the new logic crashes on.
    let swap_then_put = |plugin: String, record: &'static str| {
        let (control, url, file) = (control.clone(), url.clone(), dir.path().join("one.jsonl"));
        async move {
            let waiting =
                spawn_host(&["swap", "--control-addr", &control, "--plugin", &plugin, "--probation-wait", "60"]);
            until_on_probation(&control, Duration::from_secs(20)).await;
            std::fs::write(&file, format!("{record}\n")).expect("write");
            let file = file.display().to_string();
            let put = host(&["produce", "--stream", "prob", "--endpoint-url", &url, "--file", &file], "");
            assert_eq!(put.code, 0, "{}", put.stderr);
            wait(waiting).await
        }
    };
    let waited = swap_then_put(v2.clone(), r#"{"partitionKey": "v2-trap-1", "data": "boom"}"#).await;
    assert_eq!(waited.code, 1, "{}{}", waited.stdout, waited.stderr);
    assert!(waited.stdout.starts_with("swapped: now running"), "{}", waited.stdout);
    let said = waited.stderr.lines().last().unwrap_or_default();
    assert!(
        said.starts_with("error: the new logic failed its probation on shard shardId-000000000000")
            && said.contains("trap on key v2-trap-1")
            && said.ends_with("the host rolls the swap back"),
        "{}",
        waited.stderr
    );

    // A record the new logic refuses, without dead letters, stops the
    // shard: no rollback (bad data is not a failed swap), but no pass either.
    let faulty = plugin_path("faulty").display().to_string();
    let waited = swap_then_put(faulty, r#"{"partitionKey": "k", "data": "fail"}"#).await;
    assert_eq!(waited.code, 1, "{}{}", waited.stdout, waited.stderr);
    // Said from the shard's failure, or, once the run ended with its only
    // shard, from the host's going away.
    let said = waited.stderr.lines().last().unwrap_or_default();
    assert!(
        said.contains("failed its probation on shard shardId-000000000000: the shard stopped:")
            || said.starts_with("error: the host stopped while the new logic was on probation"),
        "{said}"
    );
    let run = wait(consumer).await;
    assert_eq!(run.code, 1, "the shard stopped: {}", run.stderr);
    local.stop().await;
}

/// The control endpoint answers `host swap` only. A swap or rollback a
/// web page can send (an `Origin` header, `text/plain`: no preflight), one
/// without the token or with a wrong one, one to a non-loopback `Host` (DNS
/// rebinding) and an oversized body are refused and change nothing, while
/// `host swap`, which finds the token itself, keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_endpoint_refuses_web_pages_and_callers_without_its_token() {
    use std::os::unix::fs::PermissionsExt;
    let _watched = watchdog::watch();
    let local = emulator().await;
    let url = local.endpoint_url();
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(host(&["stream", "create", "door", "--shards", "1", "--wait", "--endpoint-url", &url], "").code, 0);
    let (counter, v2) = (plugin_path("counter"), plugin_path("counter-v2"));
    let port = free_port();
    let control = format!("127.0.0.1:{port}");
    let args = run_args(&counter.display().to_string(), "door", &url, &dir.path().join("cp.db"), &dir.path().join("o"));
    let consumer = spawn_host_with(&args, &["--control-addr", &control]);
    let addr: host::swap::control::ControlAddr = control.parse().expect("address");
    let token_file = host::swap::control::default_token_file(&addr).expect("a data directory");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !token_file.exists() {
        assert!(Instant::now() < deadline, "no token file at {}", token_file.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mode = std::fs::metadata(&token_file).expect("token file").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the token is the user's alone");
    let token = std::fs::read_to_string(&token_file).expect("token");
    let sha = |path: &std::path::Path| short_hash(path).trim_start_matches("sha256:").to_string();
    let running = || {
        let status = host(&["swap", "--control-addr", &control, "--status"], "");
        assert_eq!(status.code, 0, "{}", status.stderr);
        let status: serde_json::Value = serde_json::from_str(&status.stdout).expect("status json");
        status["sha256"].as_str().unwrap_or_default()[..12].to_string()
    };
    let bytes = std::fs::read(&v2).expect("plugin");
    let auth = format!("Authorization: Bearer {token}");
    let ask = |head: String, body: Vec<u8>| async move {
        let answer =
            raw_http(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connects"), &head, &body).await;
        (answer.status, answer.body)
    };
    let attempts = |what: &'static str| {
        let page = "Origin: https://evil.example\r\nContent-Type: text/plain";
        let len = bytes.len();
        vec![
            (
                format!("{what} from a web page"),
                format!("POST /{what} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{page}\r\nContent-Length: {len}"),
                403,
            ),
            (
                format!("{what} from a web page that has the token"),
                format!("POST /{what} HTTP/1.1\r\nHost: localhost\r\n{page}\r\n{auth}\r\nContent-Length: {len}"),
                403,
            ),
            (
                format!("{what} without the token"),
                format!("POST /{what} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len}"),
                401,
            ),
            (
                format!("{what} with a wrong token"),
                format!(
                    "POST /{what} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Length: {len}",
                    "0".repeat(64)
                ),
                401,
            ),
            (
                format!("{what} to a rebound name"),
                format!("POST /{what} HTTP/1.1\r\nHost: evil.example:{port}\r\n{auth}\r\nContent-Length: {len}"),
                403,
            ),
        ]
    };
    let refuse_all = |what: &'static str, expected_running: String| {
        let attempts = attempts(what);
        let bytes = bytes.clone();
        async move {
            for (case, head, code) in attempts {
                let (status, body) = ask(head, bytes.clone()).await;
                assert_eq!(status, code, "{case}: {body}");
                let answer: serde_json::Value = serde_json::from_str(&body).expect("a JSON refusal");
                assert_eq!(answer["outcome"], "refused", "{case}: {answer}");
            }
            assert_eq!(running(), expected_running, "the refused {what} calls changed nothing");
        }
    };
    assert_eq!(running(), sha(&counter));
    refuse_all("swap", sha(&counter)).await;
    let (status, _) = ask("GET /status HTTP/1.1\r\nHost: localhost".to_string(), Vec::new()).await;
    assert_eq!(status, 401, "even the status needs the token");
    // Larger than any component: refused from its length, unread.
    let (status, _) =
        ask(format!("POST /swap HTTP/1.1\r\nHost: localhost\r\n{auth}\r\nContent-Length: {}", 200 << 20), Vec::new())
            .await;
    assert_eq!(status, 413);

    let swapped = host(&["swap", "--control-addr", &control, "--plugin", &v2.display().to_string(), "--no-wait"], "");
    assert_eq!(swapped.code, 0, "{}", swapped.stderr);
    assert_eq!(running(), sha(&v2));
    refuse_all("rollback", sha(&v2)).await;
    let undone = host(&["swap", "--control-addr", &control, "--rollback"], "");
    assert_eq!(undone.code, 0, "{}", undone.stderr);
    assert_eq!(running(), sha(&counter));

    // A token file that is not the user's alone is not sent.
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let open = host(&["swap", "--control-addr", &control, "--status"], "");
    assert_eq!(open.code, 2);
    assert!(open.stderr.contains("only you can read"), "{}", open.stderr);

    sigterm(&consumer);
    let run = wait(consumer).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!token_file.exists(), "the token goes with the host");
    local.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_plugin_file() {
    let _watched = watchdog::watch();
    let local = emulator().await;
    let url = local.endpoint_url();
    let dir = tempfile::tempdir().expect("tempdir");
    let live = dir.path().join("live.wasm");
    std::fs::copy(plugin_path("counter"), &live).expect("copy");
    assert_eq!(host(&["stream", "create", "hup", "--shards", "1", "--wait", "--endpoint-url", &url], "").code, 0);
    let consumer = spawn_host(&[
        "run",
        "--plugin",
        &live.display().to_string(),
        "--stream",
        "hup",
        "--endpoint-url",
        &url,
        "--checkpoint-db",
        &dir.path().join("cp.db").display().to_string(),
        "--idle-exit",
        "4",
        "--status-interval",
        "0",
    ]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    std::fs::copy(plugin_path("counter-v2"), &live).expect("overwrite");
    let hup = Command::new("kill").args(["-HUP", &consumer.id().to_string()]).status().expect("kill -HUP");
    assert!(hup.success());
    let run = wait(consumer).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("swap: SIGHUP: reloading"), "{}", run.stderr);
    assert!(run.stderr.contains("swap: swapped: now running"), "{}", run.stderr);
    local.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_without_dead_letters_ends_the_run_with_exit_1_and_says_what_to_do() {
    let _watched = watchdog::watch();
    let local = emulator().await;
    let url = local.endpoint_url();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("cp.db").display().to_string();
    assert_eq!(host(&["stream", "create", "poisoned", "--shards", "1", "--wait", "--endpoint-url", &url], "").code, 0);
    let client =
        host::kinesis::connect(&host::kinesis::AwsOptions { endpoint_url: Some(url.clone()), ..Default::default() })
            .await
            .expect("client");
    let records: Vec<host::kinesis::producer::Outgoing> = ["a", "b", "fail", "c"]
        .iter()
        .map(|d| host::kinesis::producer::Outgoing { partition_key: "k".into(), data: d.as_bytes().to_vec() })
        .collect();
    host::kinesis::producer::put_all(&client, "poisoned", &records).await.expect("put");
    let faulty = plugin_path("faulty").display().to_string();
    let letters = dir.path().join("letters.jsonl");
    let args = [
        "run",
        "--plugin",
        &faulty,
        "--stream",
        "poisoned",
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
        "--retries",
        "0",
    ];
    let run = wait(spawn_host(&args)).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.stdout.lines().collect::<Vec<_>>(), ["a", "b"], "processed up to the poison record");
    let error =
        run.stderr.lines().find(|l| l.starts_with("error: shard shardId-000000000000 stopped:")).unwrap_or_default();
    assert!(error.contains("fails") && error.contains("--dead-letter file:PATH"), "{}", run.stderr);
    // The operator does what the line says; the run resumes at that record.
    let mut again = args.to_vec();
    let sink = format!("file:{}", letters.display());
    again.extend(["--dead-letter", &sink]);
    let run = wait(spawn_host(&again)).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout.lines().collect::<Vec<_>>(), ["c"]);
    let letter: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&letters).expect("letters").trim()).expect("json");
    assert_eq!(letter["data"], "fail");
    local.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_stream_under_a_run_is_one_line_with_what_was_checkpointed() {
    let _watched = watchdog::watch();
    let local = emulator().await;
    let url = local.endpoint_url();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("cp.db").display().to_string();
    let out = dir.path().join("out.txt");
    let sink = format!("file:{}", out.display());
    assert_eq!(host(&["stream", "create", "gone", "--shards", "2", "--wait", "--endpoint-url", &url], "").code, 0);
    let put = ["produce", "--stream", "gone", "--endpoint-url", &url, "--rate", "1000", "--count", "300"];
    assert_eq!(host(&put, "").code, 0);
    let echo = plugin_path("echo").display().to_string();
    let consumer = spawn_host(&[
        "run",
        "--plugin",
        &echo,
        "--stream",
        "gone",
        "--endpoint-url",
        &url,
        "--start-position",
        "TRIM_HORIZON",
        "--checkpoint-db",
        &db,
        "--sink",
        &sink,
        "--idle-time-ms",
        "100",
        "--status-interval",
        "0",
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&out).unwrap_or_default().lines().count() < 300 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(host(&["stream", "delete", "gone", "--endpoint-url", &url], "").code, 0);
    let run = tokio::time::timeout(Duration::from_secs(30), wait(consumer)).await.expect("stops by itself");
    assert_eq!(run.code, 2, "{}", run.stderr);
    let errors: Vec<&str> = run.stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert_eq!(
        errors[0],
        format!("error: stream `gone` was deleted while it was being read; stopped after 300 records, all checkpointed in {db}")
    );
    local.stop().await;
}

/// `host produce --file` puts an author's own records (JSON lines or raw
/// lines) into a stream once and in order, so `host run` there prints what
/// `host test` printed offline; a line that cannot be a record is one line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authors_own_records_go_into_a_stream_once_and_in_order() {
    let _watched = watchdog::watch();
    let local = emulator().await;
    let url = local.endpoint_url();
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(host(&["stream", "create", "own", "--shards", "1", "--wait", "--endpoint-url", &url], "").code, 0);
    let records = dir.path().join("records.jsonl");
    let text: String = (0..1234)
        .map(|i| format!("{{\"partitionKey\": \"k{}\", \"data\": {{\"n\": {i}, \"b\": \"x\"}}}}\n", i % 7))
        .collect();
    std::fs::write(&records, text).expect("write");
    let file = records.display().to_string();
    let put = host(&["produce", "--stream", "own", "--endpoint-url", &url, "--file", &file], "");
    assert_eq!(put.code, 0, "{}", put.stderr);
    assert!(put.stderr.contains("put 1234 records from"), "{}", put.stderr);
    let lines = host(
        &["produce", "--stream", "own", "--endpoint-url", &url, "--file", "-", "--input-format", "lines"],
        "GET /a 500\nGET /b 200\n",
    );
    assert_eq!(lines.code, 0, "{}", lines.stderr);
    let faulty = plugin_path("faulty").display().to_string();
    let offline = host(&["test", "--plugin", &faulty, "--input", &file], "");
    assert_eq!(offline.code, 0, "{}", offline.stderr);
    let out = dir.path().join("out.txt");
    let run = run_until_idle(&faulty, "own", &url, &dir.path().join("cp.db"), &out);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let streamed = std::fs::read_to_string(&out).expect("output");
    assert_eq!(streamed, format!("{}GET /a 500\nGET /b 200\n", offline.stdout), "once each, in order");
    // The state the run kept: faulty counts what it passed (8 bytes, not text).
    let db = dir.path().join("cp.db").display().to_string();
    let listed = host(&["state", "show", "--checkpoint-db", &db, "--stream", "own"], "");
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert!(
        listed.stdout.starts_with("shardId-000000000000  49") && listed.stdout.contains("state v1, 8 bytes"),
        "{}",
        listed.stdout
    );
    let shown =
        host(&["state", "show", "--checkpoint-db", &db, "--stream", "own", "--shard", "shardId-000000000000"], "");
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    use base64::Engine as _;
    let encoded = shown.stdout.trim().strip_prefix("base64:").expect("not text");
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).expect("base64");
    assert_eq!(u64::from_le_bytes(bytes.try_into().expect("8 bytes")), 1236, "every record put, counted once");
    let missing = host(&["state", "show", "--checkpoint-db", "/nonexistent/cp.db", "--stream", "own"], "");
    assert_eq!(missing.code, 2);
    assert!(missing.stderr.contains("no checkpoint file at /nonexistent/cp.db"), "{}", missing.stderr);
    // What cannot be put is one line, naming the line.
    let reshard = host(
        &["produce", "--stream", "own", "--endpoint-url", &url, "--file", "-"],
        "{\"partitionKey\": \"k\", \"data\": \"x\"}\n{\"reshard\": \"split\"}\n",
    );
    assert_eq!(reshard.code, 2);
    assert!(reshard.stderr.contains("stdin:2: a reshard line is for `host test`"), "{}", reshard.stderr);
    let long_key = format!("{{\"partitionKey\": \"{}\", \"data\": \"x\"}}\n", "k".repeat(300));
    let refused = host(&["produce", "--stream", "own", "--endpoint-url", &url, "--file", "-"], &long_key);
    assert_eq!(refused.code, 2);
    assert!(refused.stderr.contains("stdin:1: a partition key has 1 to 256 bytes"), "{}", refused.stderr);
    local.stop().await;
}
