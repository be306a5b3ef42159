//! `host-bench leases`: a group of `host run` workers (real processes) on
//! the in-process endpoint, Kinesis and its embedded DynamoDB: time until
//! a group started at once is balanced, expiries while every worker lives
//! (spurious), failover after kill -9 and after SIGTERM, the lease
//! protocol's DynamoDB calls and request bytes per shard per minute when
//! idle, and records/s of the group beside 1 worker on the same stream,
//! measured in the same run. `--host` runs another build's `host` (an
//! older one, for a before/after).

use anyhow::Context;
use host::kinesis::producer::{produce, ProducePlan};
use host::kinesis::{admin, connect, AwsOptions};
use host::lease::{DynamoTable, LeaseTable, TableSetup};
use host::local::{LocalKinesis, LocalOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// What to measure.
#[derive(Debug, Clone)]
pub struct LeaseBenchOptions {
    /// The counter component the workers run.
    pub counter: PathBuf,
    /// `--lease-duration` of the workers, seconds.
    pub lease_seconds: u64,
    /// Failovers of each kind to time.
    pub rounds: usize,
    /// Shards of the stream.
    pub shards: i32,
    /// Records in the throughput stream (0: no throughput part).
    pub records: u64,
    /// Workers in the group.
    pub workers: usize,
    /// The endpoint's limit of open shards.
    pub shard_limit: u32,
    /// The `host` binary the workers run.
    pub host: PathBuf,
    /// How long to wait for a balance before reporting none.
    pub patience: Duration,
}

/// The figures.
#[derive(Debug, Default)]
pub struct LeaseBenchReport {
    /// The workers' lease duration, seconds.
    pub lease_seconds: u64,
    /// Shards of the streams.
    pub shards: i32,
    /// Workers in the group.
    pub workers: usize,
    /// From starting the group at once to every shard owned, none holding
    /// more than its share; `None`: not within the patience.
    pub balanced: Option<Duration>,
    /// The split when the patience ran out (or at balance).
    pub split: Vec<usize>,
    /// Leases taken as expired while every worker lived, and how long that
    /// was watched.
    pub spurious: u64,
    pub steady: Duration,
    /// kill -9 to every shard re-owned, per round.
    pub kill: Vec<Duration>,
    /// SIGTERM to every shard re-owned, per round.
    pub term: Vec<Duration>,
    /// DynamoDB calls per operation in the idle steady-state window.
    pub calls: BTreeMap<String, u64>,
    /// Their request bytes, per operation.
    pub bytes: BTreeMap<String, u64>,
    /// Length of that window.
    pub window: Duration,
    /// Records/s of one worker over the throughput stream.
    pub one: f64,
    /// Records/s of the group over the same stream.
    pub group: f64,
}

/// A worker process and its id.
pub(crate) struct Worker {
    /// Its `--worker-id`.
    pub(crate) id: String,
    /// The `host run` process.
    pub(crate) child: Child,
    /// Its stderr (status lines).
    pub(crate) log: PathBuf,
}

impl Worker {
    /// Leases it took as expired so far, from its last status line.
    fn expired(&self) -> u64 {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let Some(line) = log.lines().rev().find(|l| l.starts_with("status:")) else { return 0 };
        line.split(", ").filter_map(|part| part.strip_suffix(" expired")?.rsplit(' ').next()?.parse::<u64>().ok()).sum()
    }
}

/// Runs everything; `progress` gets a line per step.
pub async fn run(options: &LeaseBenchOptions, progress: impl Fn(String)) -> anyhow::Result<LeaseBenchReport> {
    let exe = options.host.clone();
    anyhow::ensure!(exe.is_file(), "{} is missing", exe.display());
    let shard_limit = options.shard_limit.max(2 * options.shards.max(0) as u32);
    let local = LocalKinesis::start(LocalOptions { port: 0, shard_limit, ..LocalOptions::default() }).await?;
    let url = local.endpoint_url();
    let aws = AwsOptions { endpoint_url: Some(url.clone()), ..AwsOptions::default() };
    let client = connect(&aws).await?;
    let dir = tempfile::tempdir()?;
    let mut report = LeaseBenchReport {
        lease_seconds: options.lease_seconds,
        shards: options.shards,
        workers: options.workers,
        ..LeaseBenchReport::default()
    };
    let lease = Duration::from_secs(options.lease_seconds);

    // A group started at once on a stream under production.
    admin::create(&client, "lease-bench", options.shards).await?;
    admin::wait_active(&client, "lease-bench", Duration::from_secs(60)).await?;
    let table = DynamoTable::connect(&aws, "lease-bench", "lease-bench", TableSetup::CreateIfMissing).await?;
    let group = Group { exe: &exe, url: &url, dir: dir.path(), options, stream: "lease-bench", table: "lease-bench" };
    let producer = {
        let client = client.clone();
        tokio::spawn(async move {
            produce(
                &client,
                "lease-bench",
                ProducePlan::Rate { per_second: 200.0, aggregate: None },
                None,
                None,
                |_| {},
            )
            .await
        })
    };
    let mut workers: Vec<Worker> = Vec::new();
    let mut next = 1;
    let start = Instant::now();
    for _ in 0..options.workers {
        workers.push(group.spawn(&format!("w{next}"), &[])?);
        next += 1;
    }
    let live = |workers: &[Worker]| workers.iter().map(|w| w.id.clone()).collect::<Vec<_>>();
    let (balanced_in, split) = balance(&table, &live(&workers), options.patience).await?;
    report.balanced = balanced_in.map(|_| start.elapsed());
    report.split = split;
    match report.balanced {
        Some(took) => progress(format!(
            "{} workers balanced over {} shards after {:.1} s ({:.1}× lease)",
            options.workers,
            options.shards,
            took.as_secs_f64(),
            took.as_secs_f64() / lease.as_secs_f64()
        )),
        None => {
            progress(format!("not balanced within {:?}: split {:?}; stopping here", options.patience, report.split));
            for worker in workers {
                let _ = stop(worker.child).await;
            }
            local.stop().await;
            return Ok(report);
        }
    }
    // Steady state: every worker lives, so no lease may be taken as expired.
    let expired = |workers: &[Worker]| workers.iter().map(Worker::expired).sum::<u64>();
    let before = expired(&workers);
    report.steady = Duration::from_secs(20);
    tokio::time::sleep(report.steady).await;
    report.spurious = expired(&workers) - before;
    progress(format!("steady state: {} lease(s) taken as expired in {:?}", report.spurious, report.steady));
    for round in 0..options.rounds {
        let victim = workers.remove(round % workers.len());
        let mut child = victim.child;
        let start = Instant::now();
        child.kill().await?;
        balance(&table, &live(&workers), Duration::from_secs(120)).await?.0.context("no failover within 120 s")?;
        report.kill.push(start.elapsed());
        progress(format!("kill -9 {}: shards re-owned after {:.2} s", victim.id, start.elapsed().as_secs_f64()));
        workers.push(group.spawn(&format!("w{next}"), &[])?);
        next += 1;
        balance(&table, &live(&workers), Duration::from_secs(120)).await?.0.context("no balance within 120 s")?;
    }
    for round in 0..options.rounds {
        let victim = workers.remove(round % workers.len());
        let start = Instant::now();
        // Timed from the signal to the shards' new owners, not to the exit.
        let exited = tokio::spawn(stop(victim.child));
        balance(&table, &live(&workers), Duration::from_secs(60)).await?.0.context("no hand-over within 60 s")?;
        report.term.push(start.elapsed());
        exited.await??;
        progress(format!("SIGTERM {}: shards re-owned after {:.2} s", victim.id, start.elapsed().as_secs_f64()));
        workers.push(group.spawn(&format!("w{next}"), &[])?);
        next += 1;
        balance(&table, &live(&workers), Duration::from_secs(120)).await?.0.context("no balance within 120 s")?;
    }
    // Idle: without records, what is left is the lease protocol.
    producer.abort();
    tokio::time::sleep(lease + Duration::from_secs(2)).await;
    let (calls, bytes) = (local.dynamodb_calls(), local.dynamodb_bytes());
    let before = expired(&workers);
    report.window = Duration::from_secs(30);
    tokio::time::sleep(report.window).await;
    report.spurious += expired(&workers) - before;
    report.steady += report.window;
    for (op, n) in local.dynamodb_calls() {
        let delta = n - calls.get(&op).copied().unwrap_or(0);
        if delta > 0 {
            report.calls.insert(op, delta);
        }
    }
    for (op, n) in local.dynamodb_bytes() {
        let delta = n - bytes.get(&op).copied().unwrap_or(0);
        if delta > 0 {
            report.bytes.insert(op, delta);
        }
    }
    progress(format!("idle: {:?} in {:?}", report.calls, report.window));
    for worker in workers {
        stop(worker.child).await?;
    }
    if options.records == 0 {
        local.stop().await;
        return Ok(report);
    }

    // Throughput: one worker, then the group, each over the whole stream.
    admin::create(&client, "lease-tput", options.shards).await?;
    admin::wait_active(&client, "lease-tput", Duration::from_secs(60)).await?;
    let put = produce(
        &client,
        "lease-tput",
        ProducePlan::Rate { per_second: 1e9, aggregate: None },
        Some(options.records),
        None,
        |_| {},
    )
    .await?;
    progress(format!("{put} records in lease-tput"));
    for (workers, table) in [(1usize, "tput-one"), (options.workers, "tput-group")] {
        let group = Group { exe: &exe, url: &url, dir: dir.path(), options, stream: "lease-tput", table };
        let start = Instant::now();
        let mut children = Vec::new();
        for i in 0..workers {
            let id = format!("{table}-{i}");
            children.push(
                group.spawn(&id, &["--start-position", "TRIM_HORIZON", "--idle-exit", "2", "--batch-size", "1000"])?,
            );
        }
        for worker in children {
            let status = worker.child.wait_with_output().await?;
            anyhow::ensure!(status.status.success(), "{} failed", worker.id);
        }
        // Each worker stops 2 s after its last record.
        let seconds = (start.elapsed().as_secs_f64() - 2.0).max(0.001);
        let rate = put as f64 / seconds;
        progress(format!("{workers} worker(s): {rate:.0} records/s"));
        if workers == 1 {
            report.one = rate;
        } else {
            report.group = rate;
        }
    }
    local.stop().await;
    Ok(report)
}

/// How to start a worker of one group.
pub(crate) struct Group<'a> {
    /// The `host` binary beside `host-bench`.
    pub(crate) exe: &'a Path,
    /// The in-process endpoint (Kinesis and DynamoDB).
    pub(crate) url: &'a str,
    /// Where the workers' output goes.
    pub(crate) dir: &'a Path,
    pub(crate) options: &'a LeaseBenchOptions,
    pub(crate) stream: &'a str,
    /// The group's lease table.
    pub(crate) table: &'a str,
}

impl Group<'_> {
    pub(crate) fn spawn(&self, id: &str, extra: &[&str]) -> anyhow::Result<Worker> {
        let log = self.dir.join(format!("{id}.log"));
        let child = Command::new(self.exe)
            .args(["run", "--plugin"])
            .arg(&self.options.counter)
            .args(["--stream", self.stream, "--endpoint-url", self.url, "--lease-table", self.table, "--worker-id", id])
            .args(["--lease-duration", &self.options.lease_seconds.to_string(), "--status-interval", "1"])
            .args(["--idle-time-ms", "1000", "--shard-sync-interval", "10", "--sink"])
            .arg(format!("file:{}", self.dir.join(format!("{id}.out")).display()))
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .env("HOST_LOG", "host=error")
            .kill_on_drop(true)
            .spawn()
            .context("cannot start `host run`")?;
        Ok(Worker { id: id.to_string(), child, log })
    }
}

/// Waits until every open shard is owned by one of `live`, and none holds
/// more than its fair share: how long that took (`None`: not within
/// `limit`), and the split then.
pub(crate) async fn balance(
    table: &DynamoTable,
    live: &[String],
    limit: Duration,
) -> anyhow::Result<(Option<Duration>, Vec<usize>)> {
    let start = Instant::now();
    loop {
        let leases: Vec<_> = table.scan().await?.into_iter().filter(|l| !l.ended()).collect();
        let mut held: BTreeMap<&str, usize> = BTreeMap::new();
        let all_live = leases.iter().all(|l| l.owner.as_deref().is_some_and(|o| live.iter().any(|w| w == o)));
        for owner in leases.iter().filter_map(|l| l.owner.as_deref()) {
            *held.entry(owner).or_default() += 1;
        }
        let share = leases.len().div_ceil(live.len().max(1));
        let split = held.values().copied().collect();
        if !leases.is_empty() && all_live && held.values().all(|n| *n <= share) {
            return Ok((Some(start.elapsed()), split));
        }
        if start.elapsed() >= limit {
            return Ok((None, split));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// SIGTERM and wait for the clean exit.
pub(crate) async fn stop(mut child: Child) -> anyhow::Result<()> {
    if let Some(pid) = child.id() {
        Command::new("kill").args(["-TERM", &pid.to_string()]).status().await.context("kill -TERM")?;
    }
    let status =
        tokio::time::timeout(Duration::from_secs(30), child.wait()).await.context("a worker did not stop")??;
    anyhow::ensure!(status.success(), "a worker exited with {status}");
    Ok(())
}

fn median(values: &[Duration]) -> f64 {
    let mut v: Vec<f64> = values.iter().map(Duration::as_secs_f64).collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn max(values: &[Duration]) -> f64 {
    values.iter().map(Duration::as_secs_f64).fold(0.0, f64::max)
}

/// The report as a table, beside the targets and KCL's defaults.
pub fn render(r: &LeaseBenchReport) -> String {
    let lease = r.lease_seconds as f64;
    let minutes = r.window.as_secs_f64() / 60.0;
    let per_shard_minute = |n: u64| n as f64 / r.shards.max(1) as f64 / minutes.max(1e-9);
    let total: u64 = r.calls.values().sum();
    let ops: Vec<String> = r.calls.iter().map(|(op, n)| format!("{op} {n}")).collect();
    let writes = ["UpdateItem", "PutItem", "DeleteItem"];
    let written: u64 = r.bytes.iter().filter(|(op, _)| writes.contains(&op.as_str())).map(|(_, n)| *n).sum();
    let renewals = r.calls.get("UpdateItem").copied().unwrap_or(0);
    let kcl = 60.0 / (lease / 3.0);
    let mut out = format!(
        "lease duration {lease} s, {} shards, {} workers, counter plugin\n| measurement | figure | target |\n|---|---|---|\n",
        r.shards, r.workers
    );
    match r.balanced {
        Some(took) => out.push_str(&format!(
            "| started at once → balanced | {:.1} s ({:.1}× lease), split {:?} | ≤ 3 × lease = {:.0} s |\n",
            took.as_secs_f64(),
            took.as_secs_f64() / lease,
            r.split,
            3.0 * lease
        )),
        None => {
            out.push_str(&format!(
                "| started at once → balanced | not balanced; split {:?} | ≤ 3 × lease |\n",
                r.split
            ));
            return out;
        }
    }
    out.push_str(&format!(
        "| leases taken as expired while every worker lived ({:.0} s watched) | {} | 0 |\n\
         | kill -9 → shards re-owned ({} rounds) | median {:.2} s ({:.2}× lease), max {:.2} s | ≤ 2 × lease = {:.0} s |\n\
         | SIGTERM → shards re-owned ({} rounds) | median {:.2} s, max {:.2} s | ≤ one scan = {:.1} s |\n\
         | idle: lease-protocol DynamoDB calls per shard per minute | {:.1} ({}) | |\n\
         | idle: renewals (UpdateItem) per shard per minute | {:.1} | ≤ KCL's one per third of a lease = {kcl:.0} |\n\
         | idle: request bytes written per shard per minute | {:.0} B | |\n",
        r.steady.as_secs_f64(),
        r.spurious,
        r.kill.len(),
        median(&r.kill),
        median(&r.kill) / lease,
        max(&r.kill),
        2.0 * lease,
        r.term.len(),
        median(&r.term),
        max(&r.term),
        lease * 0.4,
        per_shard_minute(total),
        ops.join(", "),
        per_shard_minute(renewals),
        per_shard_minute(written),
    ));
    if r.one > 0.0 {
        out.push_str(&format!(
            "throughput over the same {}-shard stream: 1 worker {:.0} records/s, {} workers {:.0} records/s (ratio {:.2})\n",
            r.shards,
            r.one,
            r.workers,
            r.group,
            r.group / r.one.max(1e-9),
        ));
    }
    out
}
