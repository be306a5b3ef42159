//! `host bench-swap`: how fast a hot swap takes effect and how long it stops
//! a shard, on the in-process emulator with `host run`'s default polling.
//!
//! A steady producer feeds a 4-shard stream; the consumer runs the counter
//! from a file that `--watch` watches. Each round writes the other version
//! (counter ↔ changed counter) over the file and measures the time from the
//! write to the first output line the new logic emits, and the longest stall
//! of a shard. The baseline, measured in the same run, is what one does
//! without hot swap: stop the host and start it again with the new file,
//! timed from the stop to the new logic's first output.

use crate::plugin_bench::{median, LineWriter};
use anyhow::Context;
use host::checkpoint::SqliteStore;
use host::consumer::{Consumer, ConsumerConfig};
use host::kinesis::producer::{put_all, Outgoing};
use host::kinesis::{admin, connect, AwsOptions};
use host::local::{LocalKinesis, LocalOptions};
use host::plugin::{CompiledCache, Plugin, PluginEngine};
use host::progress::Progress;
use host::sink::{OutputFormat, Sink, WriterSink};
use host::swap::{self, ShardSwap, SwapContext, SwapHub, SwapPolicy, SwapResult};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What to measure.
#[derive(Debug, Clone)]
pub struct SwapBenchOptions {
    /// The two versions to swap between.
    pub counter: PathBuf,
    pub changed: PathBuf,
    /// Swaps to time.
    pub rounds: usize,
    /// Records/s the producer puts while swapping.
    pub rate: u32,
}

/// One timed swap.
#[derive(Debug, Clone)]
pub struct SwapRound {
    /// Compile (or cache load) and `init` check of the new file.
    pub prepare_ms: f64,
    /// From writing the file to the new logic's first output.
    pub write_to_first_batch_ms: f64,
    /// Longest time a shard stopped processing for the switch.
    pub max_stall_ms: f64,
}

/// The figures.
#[derive(Debug, Default)]
pub struct SwapBenchReport {
    pub rounds: Vec<SwapRound>,
    /// Baseline: stop + start with the new file, to its first output.
    pub restart_ms: Vec<f64>,
}

/// Records when each plugin (by the `plugin` field of JSON lines) first wrote.
#[derive(Clone, Default)]
struct FirstSeen(Arc<Mutex<HashMap<String, Instant>>>);

impl FirstSeen {
    fn get(&self, short: &str) -> Option<Instant> {
        self.0.lock().ok()?.get(short).copied()
    }
}

impl FirstSeen {
    /// A sink writer that notes the first JSON line of each plugin.
    fn writer(&self) -> LineWriter<impl FnMut(&str) + Send + 'static> {
        let seen = self.clone();
        LineWriter::new(move |line: &str| {
            if let Some(at) = line.find("\"plugin\":\"") {
                let short: String = line[at + 10..].chars().take(19).collect();
                if let Ok(mut seen) = seen.0.lock() {
                    seen.entry(short).or_insert_with(Instant::now);
                }
            }
        })
    }
}

fn short(sha256: &str) -> String {
    format!("sha256:{}", &sha256[..sha256.len().min(12)])
}

async fn wait_for(seen: &FirstSeen, short: &str, within: Duration) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(at) = seen.get(short) {
            return Ok(at);
        }
        anyhow::ensure!(Instant::now() < deadline, "the new logic ({short}) wrote nothing within {within:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Runs every measurement; `progress` gets a line per step.
pub async fn run(
    engine: &PluginEngine,
    options: &SwapBenchOptions,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<SwapBenchReport> {
    let local = LocalKinesis::start(LocalOptions { port: 0, ..LocalOptions::default() }).await?;
    let client = connect(&AwsOptions { endpoint_url: Some(local.endpoint_url()), ..Default::default() }).await?;
    admin::create(&client, "swap-bench", 4).await?;
    admin::wait_active(&client, "swap-bench", Duration::from_secs(30)).await?;
    let dir = tempfile::tempdir()?;
    // A fresh cache: the first swap to each version compiles it for real.
    let cache = CompiledCache::new(dir.path().join("cache"));
    let live = dir.path().join("live.wasm");
    let versions =
        [std::fs::read(&options.counter).context("--counter")?, std::fs::read(&options.changed).context("--changed")?];
    std::fs::write(&live, &versions[0])?;
    let hashes = versions.each_ref().map(|bytes| {
        use sha2::Digest;
        short(&hex::encode(sha2::Sha256::digest(bytes)))
    });

    let producing = Arc::new(AtomicBool::new(true));
    let producer = {
        let (client, producing, per_tick) = (client.clone(), producing.clone(), (options.rate / 50).max(1));
        tokio::spawn(async move {
            let mut n = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            while producing.load(Ordering::Relaxed) {
                tick.tick().await;
                let batch: Vec<Outgoing> = (n..n + per_tick as u64)
                    .map(|i| Outgoing { partition_key: format!("key-{i}"), data: format!("n-{i}").into_bytes() })
                    .collect();
                n += per_tick as u64;
                put_all(&client, "swap-bench", &batch).await?;
            }
            anyhow::Ok(())
        })
    };

    let mut report = SwapBenchReport::default();
    let seen = FirstSeen::default();
    let start_consumer = |plugin: Arc<Plugin>, db: &str| -> anyhow::Result<_> {
        let hub = SwapHub::new(plugin, SwapPolicy::default());
        let progress = Arc::new(Progress::default());
        let sink = Sink::Writer(Mutex::new(WriterSink::new(Box::new(seen.writer()), OutputFormat::Json)));
        let (stop, _) = tokio::sync::watch::channel(false);
        let consumer = Consumer::new(
            client.clone(),
            hub.clone(),
            SqliteStore::open(&dir.path().join(db))?,
            Arc::new(sink),
            ConsumerConfig::new("swap-bench", "swap-bench"),
        );
        let task = tokio::spawn(consumer.progress(progress.clone()).run(stop.clone()));
        Ok((hub, progress, stop, task))
    };

    progress(&format!(
        "hot swaps: {} rounds, {} records/s into 4 shards, default polling…",
        options.rounds, options.rate
    ));
    let first = Arc::new(Plugin::load(engine, &live, Some(&cache))?);
    let (hub, run_progress, stop, consumer) = start_consumer(first.clone(), "swap.db")?;
    let (requests, incoming) = tokio::sync::mpsc::channel(4);
    let (results_tx, mut results) = tokio::sync::mpsc::unbounded_channel::<SwapResult>();
    let context = SwapContext {
        engine: engine.clone(),
        cache: Some(cache.clone()),
        settings: ConsumerConfig::new("swap-bench", "swap-bench").instance_settings(""),
        progress: run_progress,
        shard_timeout: Duration::from_secs(30),
    };
    tokio::spawn(swap::coordinate(hub, context, incoming, move |result| {
        let _ = results_tx.send(result.clone());
    }));
    let _watcher = swap::file_watch::watch(&live, requests, Default::default())?;
    wait_for(&seen, &short(first.sha256()), Duration::from_secs(20)).await?;
    for round in 0..options.rounds {
        let (bytes, sha) = (&versions[(round + 1) % 2], &hashes[(round + 1) % 2]);
        tokio::time::sleep(Duration::from_millis(700)).await;
        let written = Instant::now();
        std::fs::write(&live, bytes)?;
        let result = tokio::time::timeout(Duration::from_secs(30), results.recv())
            .await
            .context("no swap result")?
            .context("coordinator gone")?;
        anyhow::ensure!(result.outcome == swap::SwapOutcome::Swapped, "round {round}: {}", result.message);
        let first_output = wait_for(&seen, sha, Duration::from_secs(20)).await?;
        let max_stall = result
            .shards
            .values()
            .filter_map(|o| match o {
                ShardSwap::Switched { stall_micros, .. } => Some(*stall_micros),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let measured = SwapRound {
            prepare_ms: result.prepare_millis as f64,
            write_to_first_batch_ms: first_output.saturating_duration_since(written).as_secs_f64() * 1000.0,
            max_stall_ms: max_stall as f64 / 1000.0,
        };
        progress(&format!(
            "  round {}: prepare {:.0} ms, write → first batch {:.0} ms, longest stall {:.1} ms",
            round + 1,
            measured.prepare_ms,
            measured.write_to_first_batch_ms,
            measured.max_stall_ms
        ));
        report.rounds.push(measured);
        // The next round's version was seen before: forget it, so its first
        // output after the swap is what gets timed.
        if let Ok(mut seen) = seen.0.lock() {
            seen.clear();
        }
    }
    let _ = stop.send(true);
    consumer.await.context("consumer panicked")??;

    progress("baseline: stop `host run` (SIGTERM) and start it again with the other file…");
    let exe = crate::host_binary()?;
    let url = local.endpoint_url();
    let files = [dir.path().join("counter.wasm"), dir.path().join("changed.wasm")];
    for (file, bytes) in files.iter().zip(&versions) {
        std::fs::write(file, bytes)?;
    }
    let mut running: Option<tokio::process::Child> = None;
    for round in 0..options.rounds.clamp(2, 6) {
        let (file, sha) = (&files[round % 2], &hashes[round % 2]);
        if let Ok(mut seen) = seen.0.lock() {
            seen.clear();
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        let stopped = Instant::now();
        if let Some(child) = running.take() {
            stop_process(child).await?;
        }
        running = Some(spawn_run(&exe, file, &url, &dir.path().join("restart.db"), seen.clone(), &cache)?);
        let first_output = wait_for(&seen, sha, Duration::from_secs(30)).await?;
        if round == 0 {
            continue; // the first start has no predecessor
        }
        let ms = first_output.saturating_duration_since(stopped).as_secs_f64() * 1000.0;
        progress(&format!("  restart {round}: SIGTERM → first batch of the new process {ms:.0} ms"));
        report.restart_ms.push(ms);
    }
    if let Some(child) = running.take() {
        stop_process(child).await?;
    }
    producing.store(false, Ordering::Relaxed);
    producer.await.context("producer panicked")??;
    local.stop().await;
    Ok(report)
}

/// `host run` as a user starts it, its JSON output watched for first lines.
fn spawn_run(
    exe: &std::path::Path,
    plugin: &std::path::Path,
    url: &str,
    db: &std::path::Path,
    seen: FirstSeen,
    cache: &CompiledCache,
) -> anyhow::Result<tokio::process::Child> {
    let mut child = tokio::process::Command::new(exe)
        .args(["run", "--plugin"])
        .arg(plugin)
        .args(["--stream", "swap-bench", "--endpoint-url", url, "--application", "swap-bench", "--checkpoint-db"])
        .arg(db)
        .args(["--output", "json", "--status-interval", "0", "--cache-dir"])
        .arg(cache.dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start `host run`")?;
    let stdout = child.stdout.take().context("no stdout")?;
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let mut writer = seen.writer();
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = writer.write_all(line.as_bytes()).and_then(|_| writer.write_all(b"\n"));
        }
    });
    Ok(child)
}

/// SIGTERM, then wait for the process to checkpoint and exit.
async fn stop_process(mut child: tokio::process::Child) -> anyhow::Result<()> {
    if let Some(pid) = child.id() {
        tokio::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().await.context("kill -TERM")?;
    }
    let status =
        tokio::time::timeout(Duration::from_secs(30), child.wait()).await.context("`host run` did not stop")??;
    anyhow::ensure!(status.success(), "`host run` exited with {status}");
    Ok(())
}

fn max(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(f64::NAN, f64::max)
}

/// The report as a Markdown table.
pub fn render(r: &SwapBenchReport) -> String {
    let write: Vec<f64> = r.rounds.iter().map(|x| x.write_to_first_batch_ms).collect();
    let stall: Vec<f64> = r.rounds.iter().map(|x| x.max_stall_ms).collect();
    let prepare: Vec<f64> = r.rounds.iter().map(|x| x.prepare_ms).collect();
    let restart = median(r.restart_ms.clone());
    let mut out = String::from("| measure | median | max | baseline (stop + restart) | swap / baseline | target |\n|---|---:|---:|---:|---:|---:|\n");
    out += &format!(
        "| file write → new logic's first batch ({} swaps) | {:.0} ms | {:.0} ms | {:.0} ms | {:.2} | < 500 ms |\n",
        write.len(),
        median(write.clone()),
        max(write.iter().copied()),
        restart,
        median(write.clone()) / restart
    );
    // A restart stops every shard from the signal to the new process's first batch.
    out += &format!(
        "| longest stall of a shard per swap | {:.1} ms | {:.1} ms | {restart:.0} ms (every shard) | {:.2} | < 50 ms |\n",
        median(stall.clone()),
        max(stall.iter().copied()),
        median(stall.clone()) / restart
    );
    out += &format!(
        "| compile (or cache load) + init check, off the hot path | {:.0} ms | {:.0} ms | | | |\n",
        median(prepare.clone()),
        max(prepare.iter().copied())
    );
    out
}
