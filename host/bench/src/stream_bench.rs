//! `host bench-stream`: the consumer end to end on the in-process emulator,
//! beside baselines measured in the same run. It reports the records/s of
//! `host run`'s consumer (counter plugin) against a bare aws-sdk GetRecords
//! loop over the same stream and against seed 000's Python boto3 worker, the
//! put→emit latency at default settings, and the peak RSS of a `host run`
//! process reading 16 shards.

use crate::plugin_bench::{median, LineWriter};
use anyhow::Context;
use aws_sdk_kinesis::types::ShardIteratorType;
use host::checkpoint::SqliteStore;
use host::consumer::{Consumer, ConsumerConfig};
use host::kinesis::producer::{put_all, Outgoing};
use host::kinesis::{admin, connect, AwsOptions};
use host::local::{LocalKinesis, LocalOptions};
use host::plugin::Plugin;
use host::sink::{OutputFormat, Sink, WriterSink};
use host::source::StartPosition;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What to measure.
#[derive(Debug, Clone)]
pub struct StreamBenchOptions {
    /// Records in the throughput stream.
    pub records: usize,
    /// Shards of the throughput stream.
    pub shards: i32,
    /// Rounds of the throughput pair, alternating; medians are reported.
    pub rounds: usize,
    /// The counter component (for the throughput and RSS runs).
    pub counter: PathBuf,
    /// Python with boto3 for the seed's worker; `None` skips it.
    pub python: Option<String>,
    /// The seed worker script.
    pub seed_worker: PathBuf,
    /// Seconds of steady production for the latency run.
    pub latency_seconds: f64,
}

/// The figures.
#[derive(Debug, Default)]
pub struct StreamBenchReport {
    pub records: usize,
    /// Median records/s of `host run` over the rounds.
    pub host_rate: f64,
    /// Median records/s of the bare GetRecords loop over the rounds.
    pub bare_rate: f64,
    /// Every round's (bare, host) records/s, in order.
    pub rounds: Vec<(f64, f64)>,
    pub python_rate: Option<f64>,
    pub python_note: Option<String>,
    /// put→emit latency per read mode, in the order measured.
    pub latency: Vec<Latency>,
    pub rss_16_shards_mib: Option<f64>,
}

fn now_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// put→emit latency of one read mode.
#[derive(Debug, Clone)]
pub struct Latency {
    /// How records were read, e.g. `polling, 1 s idle poll (default)`.
    pub mode: String,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub samples: u64,
}

/// The read modes the latency run compares.
#[derive(Debug, Clone, Copy)]
enum ReadMode {
    /// GetRecords, waiting this long between polls of a caught-up shard.
    Polling(Duration),
    /// SubscribeToShard.
    FanOut,
}

/// `host run`'s defaults, but from the oldest record, 10,000 per read.
fn config(stream: &str, plugin_config: &str) -> ConsumerConfig {
    ConsumerConfig {
        start: StartPosition::TrimHorizon,
        batch_size: 10_000,
        status_interval: Duration::from_secs(3600),
        plugin_config: plugin_config.into(),
        ..ConsumerConfig::new("bench", stream)
    }
}

/// Runs every measurement; `progress` gets a line per step.
pub async fn run(
    options: &StreamBenchOptions,
    counter: Arc<Plugin>,
    echo: Arc<Plugin>,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<StreamBenchReport> {
    let local = LocalKinesis::start(LocalOptions { port: 0, shard_limit: 1024, ..LocalOptions::default() }).await?;
    let url = local.endpoint_url();
    let client = connect(&AwsOptions { endpoint_url: Some(url.clone()), ..Default::default() }).await?;
    let dir = tempfile::tempdir()?;
    let mut report = StreamBenchReport { records: options.records, ..Default::default() };

    progress(&format!("putting {} records into {} shards…", options.records, options.shards));
    admin::create(&client, "throughput", options.shards).await?;
    admin::wait_active(&client, "throughput", Duration::from_secs(30)).await?;
    let records: Vec<Outgoing> = crate::plugin_bench::make_records(options.records, 100)
        .into_iter()
        .map(|r| Outgoing { partition_key: r.partition_key, data: r.data })
        .collect();
    for chunk in records.chunks(5_000) {
        put_all(&client, "throughput", chunk).await?;
    }

    // The two are taken in turn, round after round, so drift in the
    // machine or the emulator (allocator state, other load) hits both alike.
    for round in 1..=options.rounds.max(1) {
        progress(&format!("round {round}/{}: bare GetRecords loop…", options.rounds));
        let bare = bare_loop(&client, "throughput", options.records).await?;
        progress(&format!("round {round}/{}: host run (counter plugin, checkpoint every batch)…", options.rounds));
        let store = SqliteStore::open(&dir.path().join(format!("bench-{round}.db")))?;
        let host = host_run(&client, counter.clone(), store, options.records).await?;
        progress(&format!("  bare {bare:.0} records/s, host {host:.0} records/s ({:.2})", host / bare));
        report.rounds.push((bare, host));
    }
    report.bare_rate = median(report.rounds.iter().map(|r| r.0));
    report.host_rate = median(report.rounds.iter().map(|r| r.1));

    match &options.python {
        None => report.python_note = Some("skipped (--python none)".into()),
        Some(python) => {
            progress("seed 000's boto3 worker…");
            let out = tokio::process::Command::new(python)
                .arg(&options.seed_worker)
                .args(["--endpoint-url", &url, "--stream", "throughput", "--records", &options.records.to_string()])
                .output()
                .await;
            match out {
                Ok(out) if out.status.success() => {
                    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("seed worker output")?;
                    let seconds = v["seconds"].as_f64().unwrap_or(f64::NAN);
                    report.python_rate = Some(v["records"].as_f64().unwrap_or(0.0) / seconds);
                }
                Ok(out) => {
                    let err = String::from_utf8_lossy(&out.stderr);
                    report.python_note = Some(if err.contains("No module named 'boto3'") {
                        format!("skipped: boto3 is not installed for {python} (pip install boto3)")
                    } else {
                        format!("failed: {}", err.lines().last().unwrap_or_default())
                    });
                }
                Err(e) => report.python_note = Some(format!("skipped: cannot run {python}: {e}")),
            }
        }
    }

    admin::create(&client, "latency", 2).await?;
    admin::wait_active(&client, "latency", Duration::from_secs(30)).await?;
    let modes = [
        ("polling, 1 s idle poll (default)", ReadMode::Polling(Duration::from_millis(1000))),
        ("polling, --idle-time-ms 200", ReadMode::Polling(Duration::from_millis(200))),
        ("fan-out (SubscribeToShard)", ReadMode::FanOut),
    ];
    for (mode, read) in modes {
        progress(&format!("put→emit latency over {} s, {mode}…", options.latency_seconds));
        let store = SqliteStore::open(&dir.path().join(format!("latency-{}.db", report.latency.len())))?;
        let (p50_ms, p99_ms, samples) = latency(&client, echo.clone(), store, read, options.latency_seconds).await?;
        progress(&format!("  p50 {p50_ms:.0} ms, p99 {p99_ms:.0} ms ({samples} records)"));
        report.latency.push(Latency { mode: mode.into(), p50_ms, p99_ms, samples });
    }

    progress("RSS of `host run` with 16 shards…");
    report.rss_16_shards_mib = rss_16_shards(&client, &url, &options.counter, dir.path(), "rss16").await?;
    local.stop().await;
    Ok(report)
}

/// put→emit latency percentiles (ms) of echo reading the `latency` stream
/// from LATEST in `read` mode while 200 records/s come in.
async fn latency(
    client: &aws_sdk_kinesis::Client,
    echo: Arc<Plugin>,
    store: SqliteStore,
    read: ReadMode,
    seconds: f64,
) -> anyhow::Result<(f64, f64, u64)> {
    let histogram = Arc::new(Mutex::new(hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000, 3)?));
    // Echo lines are `key : <put millis>`: each one records now − put.
    let recorder = histogram.clone();
    let lines = LineWriter::new(move |line: &str| {
        if let Some(put) = line.rsplit(" : ").next().and_then(|t| t.trim().parse::<i64>().ok()) {
            if let Ok(mut h) = recorder.lock() {
                let _ = h.record((now_millis() - put).max(1) as u64);
            }
        }
    });
    let sink = Arc::new(Sink::Writer(Mutex::new(WriterSink::new(Box::new(lines), OutputFormat::Plain))));
    let mut config = config("latency", "{}");
    config.batch_size = 1000; // `host run`'s defaults
    config.start = StartPosition::Latest;
    let source: Arc<dyn host::source::RecordSource> = match read {
        ReadMode::Polling(idle) => {
            config.idle_time = idle;
            Arc::new(host::kinesis::reader::Polling {
                client: client.clone(),
                stream: "latency".into(),
                batch_size: config.batch_size,
                idle_time: idle,
            })
        }
        ReadMode::FanOut => Arc::new(
            host::kinesis::fanout::FanOut::connect(client.clone(), "latency", "bench", true, config.idle_time).await?,
        ),
    };
    let (stop, _) = tokio::sync::watch::channel(false);
    let stopper = stop.clone();
    let consumer = Consumer::with_source(source, echo, Arc::new(store), sink, config);
    let consumer_task = tokio::spawn(consumer.run(stop));
    tokio::time::sleep(Duration::from_secs(2)).await; // iterators at LATEST first
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut n = 0u64;
    while Instant::now() < deadline {
        tick.tick().await;
        let batch: Vec<Outgoing> = (0..4)
            .map(|i| Outgoing { partition_key: format!("k{}", n + i), data: now_millis().to_string().into_bytes() })
            .collect();
        n += 4;
        put_all(client, "latency", &batch).await?;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = stopper.send(true);
    consumer_task.await.context("latency consumer panicked")??;
    let h = histogram.lock().map_err(|_| anyhow::anyhow!("histogram lock"))?;
    Ok((h.value_at_quantile(0.5) as f64, h.value_at_quantile(0.99) as f64, h.len()))
}

/// Records/s of a bare aws-sdk loop reading every shard of `stream` from
/// TRIM_HORIZON to its tip, a task per shard: the floor any consumer pays.
async fn bare_loop(client: &aws_sdk_kinesis::Client, stream: &str, expected: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut readers = tokio::task::JoinSet::new();
    for shard in admin::shards(client, stream).await? {
        let client = client.clone();
        let (stream, shard_id) = (stream.to_string(), shard.shard_id().to_string());
        readers.spawn(async move {
            let mut iterator = client
                .get_shard_iterator()
                .stream_name(&stream)
                .shard_id(&shard_id)
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await?
                .shard_iterator()
                .map(str::to_string);
            let mut count = 0usize;
            while let Some(it) = iterator {
                let out = client.get_records().shard_iterator(it).limit(10_000).send().await?;
                count += out.records().len();
                // Touch the data as any consumer would.
                std::hint::black_box(out.records().iter().map(|r| r.data().as_ref().len()).sum::<usize>());
                if out.records().is_empty() && out.millis_behind_latest().unwrap_or(0) == 0 {
                    break;
                }
                iterator = out.next_shard_iterator().map(str::to_string);
            }
            anyhow::Ok(count)
        });
    }
    let mut count = 0;
    while let Some(read) = readers.join_next().await {
        count += read??;
    }
    anyhow::ensure!(count == expected, "the bare loop read {count} of {expected} records");
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// Records/s of `host run`'s consumer with the counter plugin, from
/// TRIM_HORIZON until `expected` records were processed and checkpointed.
async fn host_run(
    client: &aws_sdk_kinesis::Client,
    counter: Arc<Plugin>,
    store: SqliteStore,
    expected: usize,
) -> anyhow::Result<f64> {
    let sink = Arc::new(Sink::Writer(Mutex::new(WriterSink::new(Box::new(std::io::sink()), OutputFormat::Plain))));
    let mut run_config = config("throughput", "{}");
    run_config.max_records = Some(expected as u64);
    let (stop, _) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let run = Consumer::new(client.clone(), counter, store, sink, run_config).run(stop).await?;
    let elapsed = started.elapsed();
    anyhow::ensure!(run.records as usize >= expected, "host run processed {} of {expected} records", run.records);
    Ok(run.records as f64 / elapsed.as_secs_f64())
}

/// Peak RSS (VmHWM) of a `host run` process consuming a new 16-shard
/// stream named `stream`.
pub async fn rss_16_shards(
    client: &aws_sdk_kinesis::Client,
    url: &str,
    counter: &std::path::Path,
    dir: &std::path::Path,
    stream: &str,
) -> anyhow::Result<Option<f64>> {
    admin::create(client, stream, 16).await?;
    admin::wait_active(client, stream, Duration::from_secs(30)).await?;
    let records: Vec<Outgoing> = crate::plugin_bench::make_records(32_000, 100)
        .into_iter()
        .enumerate()
        .map(|(i, r)| Outgoing { partition_key: format!("key-{i}"), data: r.data })
        .collect();
    for chunk in records.chunks(5_000) {
        put_all(client, stream, chunk).await?;
    }
    let exe = crate::host_binary()?;
    let db = dir.join(format!("{stream}.db"));
    let child = tokio::process::Command::new(exe)
        .args(["run", "--plugin"])
        .arg(counter)
        .args(["--stream", stream, "--endpoint-url", url, "--start-position", "TRIM_HORIZON", "--checkpoint-db"])
        .arg(&db)
        .args(["--sink", "file:/dev/null", "--idle-exit", "2", "--status-interval", "0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("cannot start `host run`")?;
    let pid = child.id();
    let mut peak_kib = 0u64;
    let waiting = child.wait_with_output();
    tokio::pin!(waiting);
    let output = loop {
        tokio::select! {
            out = &mut waiting => break out?,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                if let Some(pid) = pid {
                    if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                        if let Some(kib) = status.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()) {
                            peak_kib = peak_kib.max(kib);
                        }
                    }
                }
            }
        }
    };
    anyhow::ensure!(output.status.success(), "`host run` failed: {}", String::from_utf8_lossy(&output.stderr));
    let stderr = String::from_utf8_lossy(&output.stderr);
    anyhow::ensure!(
        stderr.contains("stopped after 32000 records"),
        "the 16-shard run did not read everything: {stderr}"
    );
    Ok((peak_kib > 0).then(|| peak_kib as f64 / 1024.0))
}

/// The report as a Markdown table.
pub fn render(r: &StreamBenchReport, shards: i32) -> String {
    let mut out = String::from("| measure | host | baseline | host / baseline | target |\n|---|---:|---:|---:|---:|\n");
    out += &format!(
        "| records/s, {} records in {shards} shards (median of {} rounds) | {:.0} | {:.0} (bare aws-sdk GetRecords loop) | {:.2} | ≥ 1.0 |\n",
        r.records,
        r.rounds.len(),
        r.host_rate,
        r.bare_rate,
        r.host_rate / r.bare_rate
    );
    match r.python_rate {
        Some(py) => {
            out += &format!(
                "| records/s vs seed 000's worker | {:.0} | {py:.0} (Python boto3) | {:.1} | ≥ 10 |\n",
                r.host_rate,
                r.host_rate / py
            )
        }
        None => {
            out += &format!(
                "| records/s vs seed 000's worker | {:.0} | {} | – | ≥ 10 |\n",
                r.host_rate,
                r.python_note.as_deref().unwrap_or("skipped")
            )
        }
    }
    for l in &r.latency {
        out += &format!(
            "| put→emit latency p50 / p99, {} | {:.0} ms / {:.0} ms | | | ({} records) |\n",
            l.mode, l.p50_ms, l.p99_ms, l.samples
        );
    }
    if let Some(rss) = r.rss_16_shards_mib {
        out += &format!("| peak RSS of `host run`, 16 shards, counter plugin | {rss:.0} MiB | | | |\n");
    }
    out
}
