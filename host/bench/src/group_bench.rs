//! `host-bench group-swap`: new logic for a group of `host run` workers
//! (real processes) on the in-process endpoint, Kinesis and its embedded
//! DynamoDB, under production: the time from `host swap --lease-table` to
//! every shard on the new logic and the longest stall of a shard, over
//! several swaps, beside a rolling restart of the same group (what a KCL
//! application does to deploy) measured in the same run.

use crate::lease_bench::{balance, stop, Group, LeaseBenchOptions, Worker};
use anyhow::Context;
use host::kinesis::producer::{produce, ProducePlan};
use host::kinesis::{admin, connect, AwsOptions};
use host::lease::{DynamoTable, LeaseTable, TableSetup};
use host::local::{LocalKinesis, LocalOptions};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What to measure.
#[derive(Debug, Clone)]
pub struct GroupBenchOptions {
    /// The two logics swapped between.
    pub counter: PathBuf,
    pub counter_v2: PathBuf,
    /// The workers' --lease-duration, seconds.
    pub lease_seconds: u64,
    /// Swaps to time.
    pub rounds: usize,
    pub shards: i32,
    pub workers: usize,
    /// The `host` binary.
    pub host: PathBuf,
}

/// The figures.
#[derive(Debug, Default)]
pub struct GroupBenchReport {
    pub lease_seconds: u64,
    pub shards: i32,
    pub workers: usize,
    /// Per swap: `host swap` started → every shard's lease names the new logic.
    pub switched: Vec<Duration>,
    /// Per swap: the longest stall of a shard (workers' own measure).
    pub stall: Vec<Duration>,
    /// The rolling restart: first SIGTERM → every worker restarted and the
    /// group balanced again.
    pub rolling: Duration,
    /// The longest a shard had no running owner during it.
    pub rolling_stall: Duration,
}

/// Runs everything; `progress` gets a line per step.
pub async fn run(options: &GroupBenchOptions, progress: impl Fn(String)) -> anyhow::Result<GroupBenchReport> {
    let local = LocalKinesis::start(LocalOptions { port: 0, ..LocalOptions::default() }).await?;
    let url = local.endpoint_url();
    let aws = AwsOptions { endpoint_url: Some(url.clone()), ..AwsOptions::default() };
    let client = connect(&aws).await?;
    let dir = tempfile::tempdir()?;
    let (stream, table_name) = ("group-bench", "group-bench");
    admin::create(&client, stream, options.shards).await?;
    admin::wait_active(&client, stream, Duration::from_secs(60)).await?;
    let table = DynamoTable::connect(&aws, table_name, stream, TableSetup::CreateIfMissing).await?;
    let lease_options = LeaseBenchOptions {
        counter: options.counter.clone(),
        lease_seconds: options.lease_seconds,
        rounds: 0,
        shards: options.shards,
        records: 0,
        workers: options.workers,
        shard_limit: 256,
        host: options.host.clone(),
        patience: Duration::from_secs(60),
    };
    let group =
        Group { exe: &options.host, url: &url, dir: dir.path(), options: &lease_options, stream, table: table_name };
    let producer = {
        let client = client.clone();
        tokio::spawn(async move {
            let plan = ProducePlan::Rate { per_second: 200.0, aggregate: None };
            produce(&client, stream, plan, None, None, |_| {}).await
        })
    };
    let mut workers: Vec<Worker> = Vec::new();
    for i in 1..=options.workers {
        workers.push(group.spawn(&format!("w{i}"), &[])?);
    }
    let live = |workers: &[Worker]| workers.iter().map(|w| w.id.clone()).collect::<Vec<_>>();
    let (took, _) = balance(&table, &live(&workers), Duration::from_secs(60)).await?;
    took.context("the group did not balance within 60 s")?;
    progress(format!("{} workers balanced over {} shards", options.workers, options.shards));
    let mut report = GroupBenchReport {
        lease_seconds: options.lease_seconds,
        shards: options.shards,
        workers: options.workers,
        ..GroupBenchReport::default()
    };

    for round in 0..options.rounds {
        // Swaps land anywhere in the workers' look period, not right after
        // the last look (which the previous round's end would line up with).
        let jitter = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.subsec_nanos() % 1_000_000_000;
        tokio::time::sleep(Duration::from_nanos(u64::from(jitter))).await;
        let target = if round % 2 == 0 { &options.counter_v2 } else { &options.counter };
        let sha = host::lease::logic::sha256(&std::fs::read(target)?);
        let seen: Vec<usize> = workers.iter().map(|w| log_of(w).len()).collect();
        let start = Instant::now();
        let swap = tokio::process::Command::new(&options.host)
            .args(["swap", "--lease-table", table_name, "--stream", stream, "--endpoint-url", &url, "--no-wait"])
            .arg("--plugin")
            .arg(target)
            .output()
            .await?;
        anyhow::ensure!(swap.status.success(), "host swap failed: {}", String::from_utf8_lossy(&swap.stderr));
        let switched = all_on(&table, &sha, start, Duration::from_secs(60)).await?;
        report.switched.push(switched);
        report.stall.push(longest_stall(&workers, &seen).await);
        progress(format!(
            "swap {}: every shard on {} after {:.2} s, longest stall {:.1} ms",
            round + 1,
            &sha[..12],
            switched.as_secs_f64(),
            report.stall.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        ));
    }

    // The baseline: restart every worker in turn, as a deploy without hot
    // swap does, watching how long each shard goes without a running owner.
    let start = Instant::now();
    let mut unowned: BTreeMap<String, Instant> = BTreeMap::new();
    let mut longest = Duration::ZERO;
    for i in 0..workers.len() {
        let old = workers.remove(0);
        let stopping = old.id.clone();
        let stopped = tokio::spawn(stop(old.child));
        let replacement = group.spawn(&format!("r{}", i + 1), &[])?;
        workers.push(replacement);
        let ids = live(&workers);
        // Until the group is balanced again without the stopped worker.
        loop {
            let now = Instant::now();
            for lease in table.scan().await?.into_iter().filter(|l| !l.ended()) {
                let running = lease.owner.as_deref().is_some_and(|o| o != stopping && ids.iter().any(|w| w == o));
                if running {
                    if let Some(since) = unowned.remove(&lease.key) {
                        longest = longest.max(now - since);
                    }
                } else {
                    unowned.entry(lease.key).or_insert(now);
                }
            }
            let (done, split) = balance(&table, &ids, Duration::ZERO).await?;
            if done.is_some() && unowned.is_empty() {
                progress(format!("balanced again over {ids:?}: {split:?}"));
                break;
            }
            anyhow::ensure!(start.elapsed() < Duration::from_secs(300), "the rolling restart did not settle");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stopped.await.context("join")??;
        progress(format!("rolling restart: {stopping} replaced after {:.1} s", start.elapsed().as_secs_f64()));
    }
    report.rolling = start.elapsed();
    report.rolling_stall = longest;
    producer.abort();
    for worker in workers {
        stop(worker.child).await?;
    }
    Ok(report)
}

fn log_of(worker: &Worker) -> String {
    std::fs::read_to_string(&worker.log).unwrap_or_default()
}

/// Waits until every lease not at its end names `sha`; how long since `start`.
async fn all_on(table: &DynamoTable, sha: &str, start: Instant, limit: Duration) -> anyhow::Result<Duration> {
    loop {
        let leases = table.scan().await?;
        if leases.iter().filter(|l| !l.ended()).all(|l| l.logic.as_deref() == Some(sha)) {
            return Ok(start.elapsed());
        }
        anyhow::ensure!(start.elapsed() < limit, "not every shard on {} within {limit:?}", &sha[..12]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The longest stall the workers report for the swap just made (each
/// worker's `swap: swapped: … longest stall X ms` line after `seen`).
async fn longest_stall(workers: &[Worker], seen: &[usize]) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines: Vec<Option<f64>> = workers
            .iter()
            .zip(seen)
            .map(|(w, from)| {
                let log = log_of(w);
                let new = log.get(*from..).unwrap_or_default().to_string();
                new.lines()
                    .filter(|l| l.starts_with("swap: swapped:"))
                    .filter_map(|l| l.split("longest stall ").nth(1)?.split(' ').next()?.parse::<f64>().ok())
                    .reduce(f64::max)
            })
            .collect();
        if lines.iter().all(Option::is_some) || Instant::now() > deadline {
            let ms = lines.into_iter().flatten().fold(0.0, f64::max);
            return Duration::from_secs_f64(ms / 1000.0);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn median(values: &[Duration]) -> Duration {
    let mut v = values.to_vec();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// The report as a table, beside the targets and the rolling restart.
pub fn render(r: &GroupBenchReport) -> String {
    let lease = r.lease_seconds as f64;
    let max = |v: &[Duration]| v.iter().max().copied().unwrap_or_default();
    let (switched, stall) = (median(&r.switched), median(&r.stall));
    format!(
        "lease duration {lease} s, {} shards, {} workers, counter ↔ counter v2 under 200 records/s\n\
         | measurement | group swap (median, max of {}) | rolling restart | target |\n|---|---|---|---|\n\
         | command → every shard on the new logic | {:.2} s, {:.2} s | {:.1} s | ≤ lease + 1 s = {:.0} s |\n\
         | longest stall of a shard | {:.1} ms, {:.1} ms | {:.1} s without an owner | < 50 ms |\n\
         rolling restart / group swap: {:.1}× the time\n",
        r.shards,
        r.workers,
        r.switched.len(),
        switched.as_secs_f64(),
        max(&r.switched).as_secs_f64(),
        r.rolling.as_secs_f64(),
        lease + 1.0,
        stall.as_secs_f64() * 1000.0,
        max(&r.stall).as_secs_f64() * 1000.0,
        r.rolling_stall.as_secs_f64(),
        r.rolling.as_secs_f64() / switched.as_secs_f64().max(1e-9),
    )
}
