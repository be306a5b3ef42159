//! Several `host run` processes sharing a stream through a DynamoDB lease
//! table (dynalite, from npm, started by `make test`), on the in-process
//! Kinesis emulator: balance, kill -9, SIGTERM, a late joiner, SIGSTOP, and
//! the errors a user sees. Counts are checked against a single host's run
//! over the same stream (the reference), per key and window.

use crate::common::*;
use host::aws::AwsOptions;
use host::checkpoint::{Checkpoint, CheckpointStore, ShardKey};
use host::lease::{DynamoTable, Lease, LeaseStore, LeaseTable, TableSetup};
use host::local::{LocalKinesis, LocalOptions};
use host::ownership::Ownership;
use host::source::ShardInfo;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Lease duration in these tests (seconds): short, so failover is quick.
const LEASE: u64 = 3;

/// The DynamoDB emulator, or `None` (the test is skipped) outside `make test`.
pub(crate) fn dynalite() -> Option<String> {
    match std::env::var("DYNALITE_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            skip("", "dynalite is not running (DYNALITE_URL unset); `make test` starts it");
            None
        }
    }
}

/// A fresh lease table on dynalite for stream `s`: the connection options,
/// its name, and the table; `None` (skipped) outside `make test`.
async fn dynalite_table(prefix: &str) -> Option<(AwsOptions, String, Arc<DynamoTable>)> {
    let options = AwsOptions { endpoint_url: Some(dynalite()?), ..AwsOptions::default() };
    let name = format!("{prefix}-{}", std::process::id());
    let table = DynamoTable::connect(&options, &name, "s", TableSetup::CreateIfMissing).await.expect("table");
    Some((options, name, Arc::new(table)))
}

/// A group of workers on one stream and one lease table.
pub(crate) struct Group {
    pub(crate) _local: LocalKinesis,
    pub(crate) kinesis: String,
    pub(crate) dynamo: String,
    pub(crate) stream: String,
    pub(crate) table: String,
    pub(crate) dir: tempfile::TempDir,
    /// Worker id → its process (None once it ended).
    pub(crate) workers: BTreeMap<String, Option<Spawned>>,
    pub(crate) leases: DynamoTable,
    /// Ends the suite naming this test if it hangs.
    pub(crate) _watched: watchdog::Watched,
}

/// Which DynamoDB holds the lease table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Dynamo {
    /// dynalite (npm), started by `make test`.
    Dynalite,
    /// The one `host local` embeds, on the Kinesis endpoint's own port.
    Embedded,
    /// Some endpoint the test runs itself.
    At(String),
}

impl Group {
    pub(crate) async fn new(name: &str, shards: u32) -> Option<Group> {
        Group::on(Dynamo::Dynalite, name, shards).await
    }

    pub(crate) async fn on(dynamo: Dynamo, name: &str, shards: u32) -> Option<Group> {
        let watched = watchdog::watch();
        let local = LocalKinesis::start(LocalOptions { port: 0, ..LocalOptions::default() }).await.expect("emulator");
        let kinesis = local.endpoint_url();
        let dynamo = match dynamo {
            Dynamo::Dynalite => dynalite()?,
            Dynamo::Embedded => kinesis.clone(),
            Dynamo::At(url) => url,
        };
        let stream = name.to_string();
        let created = host(
            &["stream", "create", &stream, "--shards", &shards.to_string(), "--wait", "--endpoint-url", &kinesis],
            "",
        );
        assert_eq!(created.code, 0, "{}", created.stderr);
        let table = format!("{name}-{}", std::process::id());
        let options = AwsOptions { endpoint_url: Some(dynamo.clone()), ..AwsOptions::default() };
        let leases = DynamoTable::connect(&options, &table, &stream, TableSetup::CreateIfMissing).await.expect("table");
        let dir = tempfile::tempdir().expect("tempdir");
        Some(Group {
            _local: local,
            kinesis,
            dynamo,
            stream,
            table,
            dir,
            workers: BTreeMap::new(),
            leases,
            _watched: watched,
        })
    }

    /// A group on dynalite with `workers` started under production at
    /// `rate` for `seconds`, once balanced (each holding `low..=high`).
    pub(crate) async fn balanced(
        name: &str,
        shards: u32,
        workers: &[&str],
        (rate, seconds): (u32, u32),
        (low, high): (usize, usize),
    ) -> Option<(Group, Spawned)> {
        let mut group = Group::new(name, shards).await?;
        let produce = producer(&group, rate, seconds);
        for id in workers {
            group.start(id);
        }
        let took =
            group.until("the workers balance", Duration::from_secs(30), |o| balanced(o, workers, low, high)).await;
        eprintln!("{} workers balanced after {took:?}", workers.len());
        Some((group, produce))
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts worker `id` (counter plugin, short lease, output to its own file).
    pub(crate) fn start(&mut self, id: &str) {
        let dynamo = self.dynamo.clone();
        self.start_on(id, &dynamo);
    }

    /// Starts worker `id` with its DynamoDB calls going to `dynamo`.
    pub(crate) fn start_on(&mut self, id: &str, dynamo: &str) {
        self.start_with(id, dynamo, LEASE);
    }

    /// Starts worker `id` on `dynamo`, given `--lease-duration lease`.
    pub(crate) fn start_with(&mut self, id: &str, dynamo: &str, lease: u64) {
        self.start_running(id, dynamo, lease, "counter", &[]);
    }

    /// Starts worker `id` on `dynamo` with `--plugin plugin` and `extra` flags.
    pub(crate) fn start_running(&mut self, id: &str, dynamo: &str, lease: u64, plugin: &str, extra: &[&str]) {
        let out = format!("file:{}", self.path(&format!("out-{id}.jsonl")).display());
        let log = std::fs::File::create(self.path(&format!("log-{id}.txt"))).expect("log file");
        // A crate name, or a path to a component file.
        let counter = if plugin.contains('/') { plugin.to_string() } else { plugin_path(plugin).display().to_string() };
        let lease = lease.to_string();
        let child = Command::new(env!("CARGO_BIN_EXE_host"))
            .arg("run")
            .args(extra)
            .args([
                "--plugin",
                &counter,
                "--stream",
                &self.stream,
                "--endpoint-url",
                &self.kinesis,
                "--dynamodb-endpoint-url",
                dynamo,
                "--lease-table",
                &self.table,
                "--lease-duration",
                &lease,
                "--worker-id",
                id,
                "--start-position",
                "TRIM_HORIZON",
                "--sink",
                &out,
                "--idle-time-ms",
                "200",
                "--shard-sync-interval",
                "1",
                "--status-interval",
                "1",
            ])
            .env("HOST_CACHE_DIR", cache_dir())
            .env("HOST_LOG", "host=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("host run starts");
        self.workers.insert(id.to_string(), Some(child.into()));
    }

    pub(crate) fn pid(&self, id: &str) -> String {
        self.workers[id].as_ref().expect("running").id().to_string()
    }

    pub(crate) fn signal(&self, id: &str, signal: &str) {
        let status = Command::new("kill").args([signal, &self.pid(id)]).status().expect("kill");
        assert!(status.success(), "kill {signal} {id}");
    }

    /// kill -9: no clean-up of any kind.
    pub(crate) async fn kill(&mut self, id: &str) {
        let mut child = self.workers.get_mut(id).and_then(Option::take).expect("running");
        child.kill().expect("kill -9");
        tokio::task::spawn_blocking(move || child.wait()).await.expect("join").expect("wait");
    }

    /// SIGTERM and wait for the clean exit.
    pub(crate) async fn stop(&mut self, id: &str) -> i32 {
        self.signal(id, "-TERM");
        let child = self.workers.get_mut(id).and_then(Option::take).expect("running");
        wait(child).await.code
    }

    pub(crate) fn log(&self, id: &str) -> String {
        std::fs::read_to_string(self.path(&format!("log-{id}.txt"))).unwrap_or_default()
    }

    pub(crate) fn logs(&self) -> String {
        self.workers.keys().map(|id| format!("--- {id}\n{}", self.log(id))).collect()
    }

    pub(crate) async fn scan(&self) -> Vec<Lease> {
        self.leases.scan().await.expect("scan the lease table")
    }

    /// Shard → owner, for leases not read to their end.
    pub(crate) async fn owners(&self) -> BTreeMap<String, Option<String>> {
        self.scan().await.into_iter().filter(|l| !l.ended()).map(|l| (l.key, l.owner)).collect()
    }

    /// The owners once no hand-off is in flight (a balanced count can still
    /// have one asked for and not yet carried out), waiting up to 30 s.
    pub(crate) async fn settled_owners(&self) -> BTreeMap<String, Option<String>> {
        let start = Instant::now();
        loop {
            let leases = self.scan().await;
            if leases.iter().all(|l| l.hand_off_to.is_none()) {
                return leases.into_iter().filter(|l| !l.ended()).map(|l| (l.key, l.owner)).collect();
            }
            assert!(start.elapsed() < Duration::from_secs(30), "a hand-off stayed pending\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `done(owners)` holds; returns how long it took.
    pub(crate) async fn until(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&BTreeMap<String, Option<String>>) -> bool,
    ) -> Duration {
        let start = Instant::now();
        loop {
            let owners = self.owners().await;
            if done(&owners) {
                return start.elapsed();
            }
            assert!(start.elapsed() < limit, "{what}: not within {limit:?}; owners {owners:?}\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until no checkpoint has moved for 2 s (every record processed
    /// and committed once production stopped).
    pub(crate) async fn settle(&self) {
        let mut last = Vec::new();
        let mut still = Instant::now();
        let start = Instant::now();
        loop {
            let now: Vec<_> = self.scan().await.into_iter().map(|l| (l.key, l.checkpoint)).collect();
            if now != last {
                last = now;
                still = Instant::now();
            } else if still.elapsed() >= Duration::from_secs(2) {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "checkpoints never settled\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every output line of every worker.
    pub(crate) fn outputs(&self) -> Vec<(String, String, u64)> {
        self.workers.keys().flat_map(|id| count_lines(&self.path(&format!("out-{id}.jsonl")))).collect()
    }

    /// A single host (SQLite checkpoints in `db`) over the stream, output to `out`, until idle.
    pub(crate) fn single_host(&self, db: &std::path::Path, out: &std::path::Path) -> Run {
        let counter = plugin_path("counter").display().to_string();
        let run = run_until_idle(&counter, &self.stream, &self.kinesis, db, out);
        assert_eq!(run.code, 0, "{}", run.stderr);
        run
    }

    /// The counts a single host computes over the same stream.
    pub(crate) async fn reference(&self) -> BTreeMap<(String, String), u64> {
        let out = self.path("reference.jsonl");
        let run = self.single_host(&self.path("reference.db"), &out);
        std::fs::write(self.path("reference.log"), &run.stderr).expect("keep the reference's log");
        final_counts(&count_lines(&out))
    }

    /// Each shard's lease checkpoint beside the single host's (the
    /// reference run's SQLite checkpoints): every one moved to the end.
    pub(crate) async fn checkpoints_match_the_reference(&self) {
        let reference = host::checkpoint::SqliteStore::open(&self.path("reference.db")).expect("reference checkpoints");
        let want: BTreeMap<String, Option<String>> = reference
            .list("host", &self.stream)
            .expect("list")
            .into_iter()
            .map(|(shard, c)| (shard, c.sequence_number))
            .collect();
        let have: BTreeMap<String, Option<String>> =
            self.scan().await.into_iter().map(|l| (l.key, l.checkpoint)).collect();
        assert_eq!(have, want, "every checkpoint moved to the end of its shard\n{}", self.logs());
    }

    /// Records the workers processed, from their last lines ("stopped after N records").
    pub(crate) fn processed(&self) -> u64 {
        self.workers.keys().map(|id| stopped_after(&self.log(id))).sum()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        for child in self.workers.values_mut().filter_map(Option::as_mut) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// N of a run's "stopped after N records".
pub(crate) fn stopped_after(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| l.strip_prefix("stopped after ")?.split_whitespace().next()?.parse::<u64>().ok())
        .next_back()
        .unwrap_or(0)
}

/// (window, key, count) of each line of a counter's output file.
pub(crate) fn count_lines(path: &std::path::Path) -> Vec<(String, String, u64)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    json_lines(&text)
        .iter()
        .map(|v| {
            let text = |f: &str| v[f].as_str().unwrap_or_default().to_string();
            (text("window_start"), text("key"), v["count"].as_u64().unwrap_or(0))
        })
        .collect()
}

/// The last (largest) count of each key and window.
pub(crate) fn final_counts(lines: &[(String, String, u64)]) -> BTreeMap<(String, String), u64> {
    let mut counts = BTreeMap::new();
    for (window, key, count) in lines {
        let entry = counts.entry((window.clone(), key.clone())).or_insert(0);
        *entry = (*entry).max(*count);
    }
    counts
}

/// Lines that appear more than once: records whose effect was emitted twice.
pub(crate) fn duplicates(lines: &[(String, String, u64)]) -> Vec<(String, String, u64)> {
    let mut seen = BTreeSet::new();
    lines.iter().filter(|l| !seen.insert((*l).clone())).cloned().collect()
}

pub(crate) fn producer(group: &Group, rate: u32, seconds: u32) -> Spawned {
    spawn_host(&[
        "produce",
        "--stream",
        &group.stream,
        "--endpoint-url",
        &group.kinesis,
        "--rate",
        &rate.to_string(),
        "--duration",
        &seconds.to_string(),
    ])
}

pub(crate) fn held_by(owners: &BTreeMap<String, Option<String>>) -> BTreeMap<String, usize> {
    let mut held = BTreeMap::new();
    for owner in owners.values().flatten() {
        *held.entry(owner.clone()).or_insert(0) += 1;
    }
    held
}

/// Every shard owned, by live workers only, each holding `low..=high`.
pub(crate) fn balanced(owners: &BTreeMap<String, Option<String>>, live: &[&str], low: usize, high: usize) -> bool {
    let held = held_by(owners);
    owners.values().all(|o| o.as_deref().is_some_and(|o| live.contains(&o)))
        && live.iter().all(|w| (low..=high).contains(held.get(*w).unwrap_or(&0)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_balance_hold_still_and_survive_a_kill_9_with_exact_counts() {
    let Some(group) = Group::on(Dynamo::Dynalite, "scale-kill", 8).await else { return };
    kill_9_scenario(group).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_9_scenario_on_the_embedded_dynamodb_of_host_local() {
    let Some(group) = Group::on(Dynamo::Embedded, "scale-kill-embedded", 8).await else { return };
    kill_9_scenario(group).await;
}

/// 3 workers on 8 shards under production: balance, 10 s of no moves, a
/// kill -9, pickup within 2 lease durations plus a scan, exact counts.
async fn kill_9_scenario(mut group: Group) {
    let produce = producer(&group, 300, 24);
    for id in ["w1", "w2", "w3"] {
        group.start(id);
    }
    let took =
        group.until("3 workers balance", Duration::from_secs(30), |o| balanced(o, &["w1", "w2", "w3"], 2, 3)).await;
    eprintln!("balanced after {took:?}");
    // Steady state: no lease changes hands (once any hand-off asked for
    // while reaching the balance is done).
    let before = group.settled_owners().await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(group.owners().await, before, "steady state: no lease moved\n{}", group.logs());
    let victims: Vec<String> =
        before.iter().filter(|(_, o)| o.as_deref() == Some("w2")).map(|(shard, _)| shard.clone()).collect();
    group.kill("w2").await;
    let pickup = group
        .until("the killed worker's shards are picked up", Duration::from_secs(30), |o| {
            balanced(o, &["w1", "w3"], 4, 4)
        })
        .await;
    eprintln!("kill -9: {} shard(s) picked up after {pickup:?}", victims.len());
    // Within 2 lease durations plus a scan (a third of one), and slack for a
    // busy 2-core machine.
    assert!(pickup <= Duration::from_secs(2 * LEASE + 1 + 2), "pickup took {pickup:?}");
    assert_eq!(wait(produce).await.code, 0, "the producer");
    group.settle().await;
    for id in ["w1", "w3"] {
        assert_eq!(group.stop(id).await, 0, "clean stop of {id}\n{}", group.logs());
    }
    let lines = group.outputs();
    let reference = group.reference().await;
    assert!(reference.values().sum::<u64>() >= 7000, "the producer put ~7200 records: {reference:?}");
    assert_eq!(final_counts(&lines), reference, "every count exact across owners\n{}", group.logs());
    // Records emitted twice come only from the killed worker's uncommitted
    // batches: at most one batch per shard it held.
    let duplicated = duplicates(&lines);
    let killed_keys: BTreeSet<String> =
        count_lines(&group.path("out-w2.jsonl")).into_iter().map(|(_, key, _)| key).collect();
    assert!(duplicated.iter().all(|(_, key, _)| killed_keys.contains(key)), "duplicates only from w2: {duplicated:?}");
    eprintln!("kill -9: {} duplicated output line(s)", duplicated.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planned_moves_a_joiner_and_a_sigterm_duplicate_nothing() {
    let workers = ["w1", "w2", "w3"];
    let Some((mut group, produce)) = Group::balanced("scale-planned", 8, &workers, (300, 24), (2, 3)).await else {
        return;
    };
    group.start("w4");
    let joined = group
        .until("a 4th worker reaches its share", Duration::from_secs(30), |o| {
            balanced(o, &["w1", "w2", "w3", "w4"], 2, 2)
        })
        .await;
    eprintln!("a 4th worker reached its share by hand-offs after {joined:?}");
    let before = group.settled_owners().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(group.owners().await, before, "no flapping after the join\n{}", group.logs());
    let term = Instant::now();
    assert_eq!(group.stop("w3").await, 0, "clean stop\n{}", group.log("w3"));
    let pickup = group
        .until("SIGTERM'd worker's shards are picked up", Duration::from_secs(20), |o| {
            o.values().all(|owner| owner.as_deref().is_some_and(|w| w != "w3"))
        })
        .await;
    let pickup = term.elapsed().max(pickup);
    eprintln!("SIGTERM: shards picked up {pickup:?} after the signal");
    // Released at once: taken at the next cycle (a third of a lease), not at expiry.
    assert!(pickup < Duration::from_secs(LEASE), "pickup after SIGTERM took {pickup:?}");
    assert_eq!(wait(produce).await.code, 0, "the producer");
    group.settle().await;
    for id in ["w1", "w2", "w4"] {
        assert_eq!(group.stop(id).await, 0, "clean stop of {id}\n{}", group.logs());
    }
    let lines = group.outputs();
    assert_eq!(final_counts(&lines), group.reference().await, "every count exact\n{}", group.logs());
    assert_eq!(duplicates(&lines), vec![], "hand-offs and a clean stop emit nothing twice\n{}", group.logs());
    let handed: usize = ["w4"].iter().map(|id| group.log(id).matches("handed-off").count()).sum();
    assert!(handed > 0, "w4's status line counts handed-off leases\n{}", group.log("w4"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_frozen_past_its_lease_is_fenced_and_no_state_regresses() {
    let Some((mut group, produce)) = Group::balanced("scale-frozen", 4, &["w1", "w2"], (200, 20), (2, 2)).await else {
        return;
    };
    group.signal("w1", "-STOP");
    group.until("w2 takes the frozen worker's shards", Duration::from_secs(30), |o| balanced(o, &["w2"], 4, 4)).await;
    tokio::time::sleep(Duration::from_secs(LEASE)).await;
    group.signal("w1", "-CONT");
    // w1 wakes up believing it holds two shards: its commits are refused,
    // it drops them, and then (as a live worker with nothing) asks for its
    // share back by hand-offs.
    group.until("w1 is back in the group", Duration::from_secs(30), |o| balanced(o, &["w1", "w2"], 2, 2)).await;
    assert_eq!(wait(produce).await.code, 0, "the producer");
    group.settle().await;
    for id in ["w1", "w2"] {
        assert_eq!(group.stop(id).await, 0, "clean stop of {id}\n{}", group.logs());
    }
    let log = group.log("w1");
    // Dropped by a refused commit, or (frozen before its shards started)
    // by the keeper at the lease's deadline.
    let saw = log.contains("lease lost, shard dropped") || log.contains("no longer this worker's");
    assert!(saw, "w1 saw it lost its leases\n{log}");
    let lines = group.outputs();
    assert_eq!(final_counts(&lines), group.reference().await, "no record counted twice in state\n{}", group.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lease_tables_get_one_clear_line() {
    let _watched = watchdog::watch();
    let Some(dynamo) = dynalite() else { return };
    let local = LocalKinesis::start(LocalOptions { port: 0, ..LocalOptions::default() }).await.expect("emulator");
    let kinesis = local.endpoint_url();
    let created = host(&["stream", "create", "bad-leases", "--shards", "1", "--wait", "--endpoint-url", &kinesis], "");
    assert_eq!(created.code, 0, "{}", created.stderr);
    let run = |extra: &[&str]| {
        let counter = plugin_path("counter").display().to_string();
        let mut args = vec!["run", "--plugin", &counter, "--stream", "bad-leases", "--endpoint-url", &kinesis];
        args.extend_from_slice(extra);
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        host(&args.iter().map(String::as_str).collect::<Vec<_>>(), "")
    };
    let missing = format!("missing-{}", std::process::id());
    let no_create = run(&["--lease-table", &missing, "--dynamodb-endpoint-url", &dynamo, "--no-create-table"]);
    assert_eq!(no_create.code, 2);
    assert!(no_create.stderr.contains("does not exist and --no-create-table was given"), "{}", no_create.stderr);
    let down = run(&["--lease-table", "leases", "--dynamodb-endpoint-url", "http://127.0.0.1:9"]);
    assert_eq!(down.code, 2);
    assert!(down.stderr.contains("cannot reach the DynamoDB endpoint (connection refused)"), "{}", down.stderr);
    // A table of KCL's layout: same key, items without this host's marker.
    let kcl = format!("kcl-{}", std::process::id());
    let options = AwsOptions { endpoint_url: Some(dynamo.clone()), ..AwsOptions::default() };
    let other = DynamoTable::connect(&options, &kcl, "someone-else", TableSetup::CreateIfMissing).await.expect("table");
    other.create("shardId-000000000000", &[]).await.expect("lease");
    let foreign = run(&["--lease-table", &kcl, "--dynamodb-endpoint-url", &dynamo]);
    assert_eq!(foreign.code, 2);
    assert!(foreign.stderr.contains("holds the leases of stream `someone-else`"), "{}", foreign.stderr);
    // A real KCL application's table: the same key, items without our marker.
    let kcl_table = format!("kcl-app-{}", std::process::id());
    DynamoTable::connect(&options, &kcl_table, "bad-leases", TableSetup::CreateIfMissing).await.expect("table");
    let config = host::aws::sdk_config(&options).await.expect("config");
    let raw = aws_sdk_dynamodb::Client::new(&config);
    use aws_sdk_dynamodb::types::AttributeValue;
    raw.put_item()
        .table_name(&kcl_table)
        .item("leaseKey", AttributeValue::S("shardId-000000000000".into()))
        .item("leaseOwner", AttributeValue::S("kcl-worker".into()))
        .item("leaseCounter", AttributeValue::N("7".into()))
        .item("checkpoint", AttributeValue::S("TRIM_HORIZON".into()))
        .send()
        .await
        .expect("a KCL lease");
    let kcl_run = run(&["--lease-table", &kcl_table, "--dynamodb-endpoint-url", &dynamo]);
    assert_eq!(kcl_run.code, 2);
    assert!(kcl_run.stderr.contains("holds leases this host did not write"), "{}", kcl_run.stderr);
    // A worker id that a live worker uses: its lease keeps being renewed.
    let live_table = format!("live-{}", std::process::id());
    let live = DynamoTable::connect(&options, &live_table, "bad-leases", TableSetup::CreateIfMissing).await.expect("t");
    live.create("shardId-000000000000", &[]).await.expect("lease");
    let mut counter = live.take("shardId-000000000000", 0, "twin", 1).await.expect("take").counter;
    let renewer = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            match live.renew("shardId-000000000000", counter, "twin", 2).await {
                Ok(lease) => counter = lease.counter,
                Err(_) => return,
            }
        }
    });
    let dynamo2 = dynamo.clone();
    let twin = tokio::task::spawn_blocking(move || {
        let counter = plugin_path("counter").display().to_string();
        host(
            &[
                "run",
                "--plugin",
                &counter,
                "--stream",
                "bad-leases",
                "--endpoint-url",
                &kinesis,
                "--lease-table",
                &live_table,
                "--dynamodb-endpoint-url",
                &dynamo2,
                "--worker-id",
                "twin",
                "--lease-duration",
                "2",
            ],
            "",
        )
    })
    .await
    .expect("join");
    renewer.abort();
    assert_eq!(twin.code, 2);
    assert!(twin.stderr.contains("worker id twin is live in the group"), "{}", twin.stderr);
    for out in [&no_create, &down, &foreign, &kcl_run, &twin] {
        assert_eq!(out.stderr.trim().lines().filter(|l| l.starts_with("error")).count(), 1, "{}", out.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_hosts_checkpoints_move_into_a_lease_table_and_the_group_goes_on_from_them() {
    let Some(mut group) = Group::new("scale-import", 2).await else { return };
    let produce = |count: &str| {
        let put = host(
            &[
                "produce",
                "--stream",
                &group.stream,
                "--endpoint-url",
                &group.kinesis,
                "--rate",
                "2000",
                "--count",
                count,
            ],
            "",
        );
        assert_eq!(put.code, 0, "{}", put.stderr);
    };
    produce("1000");
    let db = group.path("single.db").display().to_string();
    group.single_host(&group.path("single.db"), &group.path("out-single.jsonl"));
    let table_args = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["leases"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[
            "--lease-table",
            &group.table,
            "--stream",
            &group.stream,
            "--endpoint-url",
            &group.kinesis,
            "--dynamodb-endpoint-url",
            &group.dynamo,
        ]);
        args.iter().map(|s| s.to_string()).collect()
    };
    let run = |args: Vec<String>| host(&args.iter().map(String::as_str).collect::<Vec<_>>(), "");
    let imported = run(table_args(&["import", "--from", &db, "--lease-duration", "3"]));
    assert_eq!(imported.code, 0, "{}", imported.stderr);
    assert!(imported.stderr.contains("imported 2 shard(s)"), "{}", imported.stderr);
    let listed = run(table_args(&[]));
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    // The group's logic first (none: no worker ran yet), then the leases.
    assert!(listed.stdout.starts_with("group logic: none yet"), "{}", listed.stdout);
    let lines: Vec<&str> = listed.stdout.lines().skip(1).collect();
    assert!(lines[0].starts_with("SHARD") && lines[0].contains("CHECKPOINT") && lines.len() == 3, "{}", listed.stdout);
    let checkpoints: Vec<&str> = lines[1..].iter().filter_map(|l| l.split_whitespace().nth(4)).collect();
    assert!(checkpoints.iter().all(|c| c.len() > 20), "sequence numbers: {}", listed.stdout);
    assert!(lines[1..].iter().all(|l| l.contains("B in 1 chunk(s), v1")), "{}", listed.stdout);
    // Importing again changes nothing: the table's checkpoints win.
    let again = run(table_args(&["import", "--from", &db, "--lease-duration", "3"]));
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.stderr.contains("imported 0 shard(s)") && again.stderr.contains("skipped"), "{}", again.stderr);
    // The group resumes where the single host stopped, with its state.
    produce("500");
    group.start("w1");
    group.until("w1 holds both shards", Duration::from_secs(20), |o| balanced(o, &["w1"], 2, 2)).await;
    group.settle().await;
    assert_eq!(group.stop("w1").await, 0, "{}", group.log("w1"));
    assert!(group.log("w1").contains("stopped after 500 records"), "nothing reprocessed:\n{}", group.log("w1"));
    let mut lines = count_lines(&group.path("out-single.jsonl"));
    lines.extend(group.outputs());
    assert_eq!(final_counts(&lines), group.reference().await, "counts go on from the imported state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_and_four_megabyte_states_move_between_workers_intact_through_dynamodb() {
    let Some((options, name, table)) = dynalite_table("big-state").await else { return };
    // No renewal loop runs here, so the lease must outlast a 4 MB write to
    // dynalite on a loaded CI machine: a long lease, not a fast machine.
    let worker = |id: &str| LeaseStore::new(table.clone(), id, Duration::from_secs(30), name.clone());
    let shards = [ShardInfo { shard_id: "shard-0".into(), parent: None, adjacent_parent: None, hash_range: None }];
    let key = ShardKey::new("app", "s", "shard-0");
    let mut owner = worker("a");
    for (round, size) in [1usize << 20, 4 << 20, 3000].into_iter().enumerate() {
        owner.cycle(&shards).await.expect("cycle");
        let tenure = owner.owns("shard-0").unwrap_or_else(|| panic!("round {round}: held"));
        let state: Vec<u8> = (0..size).map(|i| (i * 31 + round) as u8).collect();
        let checkpoint = Checkpoint {
            sequence_number: Some(format!("{round}")),
            sub_sequence_number: 0,
            shard_end: false,
            state: Some((2, state.clone())),
            ..Checkpoint::default()
        };
        owner.commit(&key, tenure, &checkpoint).await.expect("commit");
        owner.release_all().await.expect("release");
        // The next worker takes the released lease and restores exactly that state.
        let next = worker(&format!("w{round}"));
        next.cycle(&shards).await.expect("cycle");
        let loaded = next.load(&key).await.expect("load").expect("a checkpoint");
        assert_eq!(loaded.sequence_number.as_deref(), Some(format!("{round}").as_str()));
        assert!(loaded.state == Some((2, state)), "round {round}: the {size}-byte state arrived intact");
        owner = next;
    }
    let listed = table.scan().await.expect("scan");
    assert_eq!(listed[0].state_version, 3, "one version per commit, whoever made it");
    // A state never rides in the lease item, so a renewal (billed by the
    // item's size) rewrites a few small attributes only.
    let raw = aws_sdk_dynamodb::Client::new(&host::aws::sdk_config(&options).await.expect("config"));
    let items = raw.scan().table_name(&name).send().await.expect("scan the lease table");
    let item = items.items().first().expect("the lease");
    let size: usize = item.iter().map(|(k, v)| k.len() + format!("{v:?}").len()).sum();
    assert!(!item.contains_key("stateInline") && size < 1024, "a small lease item: {size} B, {item:?}");
    // The last take's one chunk stays; the earlier takes' are cleaned up.
    let mut left = usize::MAX;
    for _ in 0..50 {
        let chunks = raw.scan().table_name(format!("{name}-state")).send().await.expect("scan the state table");
        left = chunks.items().len();
        if left == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 1, "earlier takes' state chunks are deleted");
    // A chunk changed behind the lease's back is refused, not restored.
    let state: Vec<u8> = (0..1_000_000u32).map(|i| i as u8).collect();
    let checkpoint = Checkpoint {
        sequence_number: Some("9".into()),
        sub_sequence_number: 0,
        shard_end: false,
        state: Some((2, state)),
        ..Checkpoint::default()
    };
    owner.cycle(&shards).await.expect("cycle");
    owner.commit(&key, owner.owns("shard-0").expect("held"), &checkpoint).await.expect("commit");
    let Some(host::lease::StateRef::Chunked { tag, .. }) =
        table.get("shard-0").await.expect("get").and_then(|l| l.state)
    else {
        panic!("the state is in chunks")
    };
    let chunks = raw.scan().table_name(format!("{name}-state")).send().await.expect("scan the state table");
    let ours = |item: &&std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>| {
        item.get("chunk").and_then(|c| c.as_s().ok()).is_some_and(|c| c.starts_with(&tag))
    };
    let mut item = chunks.items().iter().find(ours).expect("a chunk of the committed state").clone();
    item.insert("data".into(), aws_sdk_dynamodb::types::AttributeValue::B(vec![0u8; 16].into()));
    raw.put_item().table_name(format!("{name}-state")).set_item(Some(item)).send().await.expect("tamper");
    let refused = owner.load(&key).await.expect_err("a tampered state is refused");
    assert!(format!("{refused:#}").contains("does not match its hash"), "{refused:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_during_the_run_starts_the_children_after_the_parent_ended_on_whichever_worker() {
    let Some((mut group, produce)) = Group::balanced("scale-split", 2, &["w1", "w2"], (200, 16), (1, 1)).await else {
        return;
    };
    let client =
        host::kinesis::connect(&AwsOptions { endpoint_url: Some(group.kinesis.clone()), ..AwsOptions::default() })
            .await
            .expect("client");
    let shards = host::kinesis::admin::shards(&client, &group.stream).await.expect("shards");
    let parent = shards[0].shard_id().to_string();
    let range = shards[0].hash_key_range().expect("range");
    let (start, end): (u128, u128) =
        (range.starting_hash_key().parse().expect("hash"), range.ending_hash_key().parse().expect("hash"));
    client
        .split_shard()
        .stream_name(&group.stream)
        .shard_to_split(&parent)
        .new_starting_hash_key((start + (end - start) / 2).to_string())
        .send()
        .await
        .expect("split");
    assert_eq!(wait(produce).await.code, 0, "the producer");
    group
        .until("the children are owned", Duration::from_secs(30), |o| o.len() == 3 && o.values().all(Option::is_some))
        .await;
    group.settle().await;
    let leases = group.scan().await;
    let ended = leases.iter().find(|l| l.key == parent).expect("the parent's lease");
    assert!(ended.ended() && ended.owner.is_none(), "the parent ended and was released: {ended:?}");
    let children: Vec<&Lease> = leases.iter().filter(|l| l.parents.contains(&parent)).collect();
    assert_eq!(children.len(), 2, "{leases:?}");
    assert!(children.iter().all(|c| c.checkpoint.is_some()), "both children were read: {children:?}");
    for id in ["w1", "w2"] {
        assert_eq!(group.stop(id).await, 0, "clean stop of {id}\n{}", group.logs());
    }
    let lines = group.outputs();
    // The children start from the parent's final state, read from its lease
    // whichever worker wrote it, so a window that spans the split counts on:
    // the highest count of each is the true one (the single host's, whose
    // own reshard handling `reshard.rs` checks against the true counts).
    assert_eq!(final_counts(&lines), group.reference().await, "every count as one host counts it\n{}", group.logs());
    let inherited = group.logs().matches("starts from the state of").count();
    assert_eq!(inherited, 2, "both children took the parent's state\n{}", group.logs());
    // Every record processed once: the parent's by its owner up to its end,
    // the children's from their start.
    let reference = stopped_after(&std::fs::read_to_string(group.path("reference.log")).unwrap_or_default());
    assert!(reference > 2000, "the producer put ~3200 records: {reference}");
    assert_eq!(group.processed(), reference, "each record processed exactly once\n{}", group.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dynamodb_outage_is_ridden_out_without_losing_a_commit() {
    // DynamoDB in a `host local` process of its own (state on disk), so it
    // can be killed and started again under a running worker.
    let data = tempfile::tempdir().expect("tempdir");
    let port = free_port().to_string();
    let serve =
        |data: &std::path::Path| spawn_host(&["local", "--port", &port, "--data-dir", &data.display().to_string()]);
    let mut dynamo = serve(data.path());
    wait_for_port(port.parse().expect("port")).await;
    let url = format!("http://127.0.0.1:{port}");
    // Needs no emulator of npm's: it runs on `host local`s alone.
    let mut group = Group::on(Dynamo::At(url), "scale-outage", 2).await.expect("a group on our own endpoints");
    let produce = producer(&group, 200, 16);
    group.start("w1");
    group.until("w1 holds both shards", Duration::from_secs(30), |o| balanced(o, &["w1"], 2, 2)).await;
    dynamo.kill().expect("kill -9 DynamoDB");
    dynamo.wait().expect("wait");
    tokio::time::sleep(Duration::from_secs(2 * LEASE)).await;
    let mut dynamo = serve(data.path());
    wait_for_port(port.parse().expect("port")).await;
    assert_eq!(wait(produce).await.code, 0, "the producer");
    group.settle().await;
    assert_eq!(group.stop("w1").await, 0, "the worker rode the outage out\n{}", group.log("w1"));
    let log = group.log("w1");
    assert!(log.contains("cannot reach the DynamoDB endpoint"), "the outage was logged\n{log}");
    let lines = group.outputs();
    assert_eq!(final_counts(&lines), group.reference().await, "no commit lost or doubled\n{log}");
    let _ = dynamo.kill();
    let _ = dynamo.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_of_an_ended_shard_that_aged_out_is_deleted_from_dynamodb() {
    let Some((_, name, table)) = dynalite_table("aged-out").await else { return };
    let store = LeaseStore::new(table.clone(), "a", Duration::from_secs(3), name.clone());
    let shard = |id: &str| ShardInfo { shard_id: id.into(), parent: None, adjacent_parent: None, hash_range: None };
    store.cycle(&[shard("old"), shard("new")]).await.expect("cycle");
    let end = Checkpoint {
        sequence_number: Some("1".into()),
        sub_sequence_number: 0,
        shard_end: true,
        state: None,
        ..Checkpoint::default()
    };
    let tenure = store.owns("old").expect("held");
    store.commit(&ShardKey::new("app", "s", "old"), tenure, &end).await.expect("shard end");
    store.release("old", tenure).await.expect("release");
    store.cycle(&[shard("new")]).await.expect("the listing no longer has it");
    let keys: Vec<String> = table.scan().await.expect("scan").into_iter().map(|l| l.key).collect();
    assert_eq!(keys, ["new"], "the aged-out lease is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_frozen_while_its_leases_moved_away_and_came_back_runs_every_lease_it_holds() {
    // The scenario as a user met it: w1 frozen until w2 holds both shards,
    // w2 stopped cleanly (releasing both), w1 woken, more records. Before,
    // w1 took both leases back but ran one: the other's checkpoint stood
    // still and its counts stayed short, for good.
    let Some(mut group) = Group::on(Dynamo::Embedded, "scale-woken", 2).await else { return };
    let first = producer(&group, 200, 4);
    group.start("w1");
    let joining = Instant::now();
    while !group.log("w1").contains("joins the group") {
        assert!(joining.elapsed() < Duration::from_secs(30), "w1 never joined\n{}", group.log("w1"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The lease duration is the table's: w2 is told 10 s, says so, uses 3 s.
    let dynamo = group.dynamo.clone();
    group.start_with("w2", &dynamo, 10);
    group.until("the workers balance", Duration::from_secs(30), |o| balanced(o, &["w1", "w2"], 1, 1)).await;
    assert!(group.log("w2").contains("has a lease duration of 3s"), "{}", group.log("w2"));
    assert_eq!(wait(first).await.code, 0, "the producer");
    group.signal("w1", "-STOP");
    group.until("w2 holds both", Duration::from_secs(30), |o| balanced(o, &["w2"], 2, 2)).await;
    assert_eq!(group.stop("w2").await, 0, "clean stop of w2\n{}", group.log("w2"));
    group.signal("w1", "-CONT");
    let second = producer(&group, 200, 4);
    group.until("w1 holds both again", Duration::from_secs(30), |o| balanced(o, &["w1"], 2, 2)).await;
    assert_eq!(wait(second).await.code, 0, "the producer");
    group.settle().await;
    assert_eq!(group.stop("w1").await, 0, "clean stop of w1\n{}", group.log("w1"));
    let lines = group.outputs();
    let reference = group.reference().await;
    assert!(reference.values().sum::<u64>() >= 1500, "the producer put ~1600 records: {reference:?}");
    assert_eq!(final_counts(&lines), reference, "every count exact\n{}", group.logs());
    group.checkpoints_match_the_reference().await;
}

/// A TCP proxy in front of an endpoint that can black-hole: while cut, it
/// accepts connections and reads what comes but forwards nothing either
/// way (a network partition, not a refused connection). Healing drops the
/// connections that were cut, as a partition's end resets them.
struct BlackHole {
    url: String,
    cut: Arc<std::sync::atomic::AtomicBool>,
    /// Bumped at each heal: connections cut before it close.
    heals: tokio::sync::watch::Sender<u64>,
    _task: tokio::task::JoinHandle<()>,
}

impl BlackHole {
    async fn start(target: &str) -> BlackHole {
        let target = target.trim_start_matches("http://").to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (heals, _) = tokio::sync::watch::channel(0u64);
        let (cut2, heals2) = (cut.clone(), heals.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&target).await else { continue };
                tokio::spawn(Self::pump(client, server, cut2.clone(), heals2.subscribe()));
            }
        });
        BlackHole { url, cut, heals, _task: task }
    }

    async fn pump(
        client: tokio::net::TcpStream,
        server: tokio::net::TcpStream,
        cut: Arc<std::sync::atomic::AtomicBool>,
        mut heals: tokio::sync::watch::Receiver<u64>,
    ) {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client_read, mut client_write) = client.into_split();
        let (mut server_read, mut server_write) = server.into_split();
        let (mut up, mut down) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
        let mut was_cut = false;
        loop {
            tokio::select! {
                read = client_read.read(&mut up) => {
                    let Ok(n @ 1..) = read else { return };
                    if cut.load(Ordering::SeqCst) { was_cut = true; continue; }
                    if server_write.write_all(&up[..n]).await.is_err() { return }
                }
                read = server_read.read(&mut down) => {
                    let Ok(n @ 1..) = read else { return };
                    if cut.load(Ordering::SeqCst) { was_cut = true; continue; }
                    if client_write.write_all(&down[..n]).await.is_err() { return }
                }
                _ = heals.changed() => if was_cut || cut.load(Ordering::SeqCst) { return },
            }
        }
    }

    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn heal(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
        self.heals.send_modify(|n| *n += 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_from_dynamodb_stops_writing_at_its_lease_and_rejoins_when_healed() {
    let Some(mut group) = Group::on(Dynamo::Embedded, "scale-partition", 4).await else { return };
    let proxy = BlackHole::start(&group.dynamo).await;
    let produce = producer(&group, 200, 24);
    let proxied = proxy.url.clone();
    group.start_on("w1", &proxied);
    group.start("w2");
    group.until("the workers balance", Duration::from_secs(30), |o| balanced(o, &["w1", "w2"], 2, 2)).await;
    let out = group.path("out-w1.jsonl");
    let size = || std::fs::metadata(&out).map_or(0, |m| m.len());
    proxy.cut();
    let cut_at = Instant::now();
    let taken = group
        .until("w2 takes the cut-off worker's shards", Duration::from_secs(4 * LEASE), |o| balanced(o, &["w2"], 4, 4))
        .await;
    eprintln!("partition: w2 held every shard {taken:?} after the cut");
    // From a lease duration after the cut (its last renewal was before),
    // w1 writes nothing more, while records keep coming.
    tokio::time::sleep_until((cut_at + Duration::from_secs(LEASE) + Duration::from_millis(200)).into()).await;
    let stopped = size();
    tokio::time::sleep_until((cut_at + Duration::from_secs(3 * LEASE)).into()).await;
    assert_eq!(size(), stopped, "w1 wrote output after its lease ran out\n{}", group.log("w1"));
    proxy.heal();
    let rejoined = Instant::now();
    group.until("w1 rejoins", Duration::from_secs(30), |o| balanced(o, &["w1", "w2"], 2, 2)).await;
    eprintln!("partition: w1 back to its share {:?} after the heal", rejoined.elapsed());
    assert_eq!(wait(produce).await.code, 0, "the producer");
    group.settle().await;
    for id in ["w1", "w2"] {
        assert_eq!(
            group.stop(id).await,
            0,
            "clean stop of {id}: an outage makes a worker idle, never exit\n{}",
            group.logs()
        );
    }
    let log = group.log("w1");
    assert!(log.contains("not renewed"), "w1 said why it stopped its shards\n{log}");
    let lines = group.outputs();
    assert_eq!(final_counts(&lines), group.reference().await, "every count exact\n{}", group.logs());
    group.checkpoints_match_the_reference().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_duration_is_the_tables_set_by_its_first_worker() {
    let Some((_, _, table)) = dynalite_table("duration").await else { return };
    let first = table.lease_duration(Duration::from_secs(3)).await.expect("set");
    let second = table.lease_duration(Duration::from_secs(10)).await.expect("read");
    assert_eq!((first, second), (Duration::from_secs(3), Duration::from_secs(3)));
    assert!(table.scan().await.expect("scan").is_empty(), "the setting is no lease");
}
