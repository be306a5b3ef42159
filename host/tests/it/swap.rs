//! Hot swap in a running consumer, on real emulators: records flow while
//! the logic changes, and the output proves (by sequence numbers and the
//! plugin hash on every JSON line) that each record was processed exactly
//! once, by exactly one version, with the state carried across.

use crate::common::emulators::*;
use crate::common::*;
use host::consumer::RunReport;
use host::kinesis::admin;
use host::kinesis::producer::{put_all, Outgoing};
use host::kinesis::reader::ShardReader;
use host::local::LocalOptions;
use host::progress::Progress;
use host::sink::{OutputFormat, Sink};
use host::source::StartPosition;
use host::swap::{
    OnRejectedState, PluginSource, SwapContext, SwapHub, SwapOutcome, SwapPolicy, SwapRequest, SwapResult,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A consumer running with a swap coordinator, fed by a steady producer.
struct Running {
    requests: mpsc::Sender<SwapRequest>,
    consumer: tokio::task::JoinHandle<anyhow::Result<RunReport>>,
    producer: tokio::task::JoinHandle<u64>,
    producing: Arc<AtomicBool>,
    progress: Arc<Progress>,
    hub: Arc<SwapHub>,
}

impl Running {
    async fn start(f: &Fixture, stream: &str, plugin: &str, plugin_config: &str, policy: SwapPolicy) -> Running {
        let plugin = load(&f.engine, plugin);
        let hub = SwapHub::new(plugin, policy);
        let progress = Arc::new(Progress::default());
        let config = f.config(stream, plugin_config);
        let (requests, incoming) = mpsc::channel(4);
        let context = SwapContext {
            engine: f.engine.clone(),
            cache: Some(host::plugin::CompiledCache::new(cache_dir())),
            settings: config.instance_settings(""),
            progress: progress.clone(),
            shard_timeout: Duration::from_secs(30),
        };
        tokio::spawn(host::swap::coordinate(hub.clone(), context, incoming, |_| {}));
        let sink = Sink::file(&f.out_path(), OutputFormat::Json).expect("sink");
        let (stop, _) = tokio::sync::watch::channel(false);
        let consumer = host::consumer::Consumer::new(f.client.clone(), hub.clone(), f.store(), Arc::new(sink), config);
        let consumer = tokio::spawn(consumer.progress(progress.clone()).run(stop));
        // Numbered records, 20 every 40 ms, over 16 keys.
        let producing = Arc::new(AtomicBool::new(true));
        let (client, name, flag) = (f.client.clone(), f.name(stream), producing.clone());
        let producer = tokio::spawn(async move {
            let mut n = 0u64;
            while flag.load(Ordering::Relaxed) {
                let batch: Vec<Outgoing> = (n..n + 20)
                    .map(|i| Outgoing { partition_key: format!("key-{}", i % 16), data: format!("n-{i}").into_bytes() })
                    .collect();
                put_all(&client, &name, &batch).await.expect("put");
                n += 20;
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            n
        });
        Running { requests, consumer, producer, producing, progress, hub }
    }

    async fn ask(&self, request: impl FnOnce(oneshot::Sender<SwapResult>) -> SwapRequest) -> SwapResult {
        let (reply, answer) = oneshot::channel();
        self.requests.send(request(reply)).await.expect("coordinator runs");
        answer.await.expect("coordinator answers")
    }

    async fn swap_to(&self, plugin: &str) -> SwapResult {
        let path = plugin_path(plugin);
        self.ask(|reply| SwapRequest::Swap { source: PluginSource::Path(path), only: None, reply: Some(reply) }).await
    }

    async fn swap_bytes(&self, name: &str, bytes: Vec<u8>) -> SwapResult {
        self.ask(|reply| SwapRequest::Swap {
            source: PluginSource::Bytes { name: name.into(), bytes },
            only: None,
            reply: Some(reply),
        })
        .await
    }

    async fn rollback(&self) -> SwapResult {
        self.ask(|reply| SwapRequest::Rollback { to: None, reply: Some(reply) }).await
    }

    /// Stops producing, lets the consumer drain (it stops when idle) and
    /// returns how many records were produced.
    async fn finish(self) -> (u64, RunReport) {
        self.producing.store(false, Ordering::Relaxed);
        let produced = self.producer.await.expect("producer");
        let report = self.consumer.await.expect("consumer task").expect("consumer runs");
        (produced, report)
    }
}

fn sha256_of(plugin: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(plugin_path(plugin)).expect("plugin file")))
}

fn short(sha: &str) -> String {
    format!("sha256:{}", &sha[..12])
}

/// Every sequence number of each shard, read back from the stream.
async fn sequence_numbers(f: &Fixture, stream: &str) -> BTreeMap<String, Vec<String>> {
    let mut all = BTreeMap::new();
    for shard in admin::shards(&f.client, &f.name(stream)).await.expect("shards") {
        let id = shard.shard_id().to_string();
        let mut reader = ShardReader::open(f.client.clone(), &f.name(stream), &id, StartPosition::TrimHorizon, 10_000)
            .await
            .expect("reader");
        let mut seqs = Vec::new();
        loop {
            let batch = reader.next_batch().await.expect("read");
            if batch.records.is_empty() {
                break;
            }
            seqs.extend(batch.records.to_records().into_iter().map(|r| r.sequence_number));
        }
        all.insert(id, seqs);
    }
    all
}

/// One processed batch as the output shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct BatchSeen {
    first: String,
    last: String,
    plugin: String,
}

/// Per shard, the batches in the order they were written.
fn batches(lines: &[serde_json::Value]) -> BTreeMap<String, Vec<BatchSeen>> {
    let mut out: BTreeMap<String, Vec<BatchSeen>> = BTreeMap::new();
    for line in lines {
        let Some(range) = line["sequence_numbers"].as_array() else { continue };
        let seen = BatchSeen {
            first: range[0].as_str().unwrap_or_default().into(),
            last: range[1].as_str().unwrap_or_default().into(),
            plugin: line["plugin"].as_str().unwrap_or_default().into(),
        };
        let shard = out.entry(line["shard"].as_str().unwrap_or_default().into()).or_default();
        if shard.last() != Some(&seen) {
            shard.push(seen);
        }
    }
    out
}

/// How many output lines each shard has from the logic `plugin` (short hash).
fn lines_by(f: &Fixture, plugin: &str) -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(f.out_path()).unwrap_or_default();
    let mut counts = BTreeMap::new();
    // The last line may be half-written: only whole lines count.
    for line in text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()) {
        if line["plugin"] == plugin {
            *counts.entry(line["shard"].as_str().unwrap_or_default().to_string()).or_insert(0) += 1;
        }
    }
    counts
}

/// Waits (at most 60 s) until `shards` shards each have more output lines
/// from `plugin` than `since` counted.
async fn processed_more_by(f: &Fixture, plugin: &str, since: &BTreeMap<String, usize>, shards: usize) {
    let start = std::time::Instant::now();
    loop {
        let now = lines_by(f, plugin);
        let more = now.iter().filter(|(shard, n)| **n > since.get(*shard).copied().unwrap_or(0)).count();
        if more >= shards {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{plugin} processed nothing new on {shards} shards: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks that the batches of each shard tile its records exactly: no
/// record skipped, none in two batches. Returns, per shard, the plugin
/// that processed each record, in order.
fn assert_tiles(
    batches: &BTreeMap<String, Vec<BatchSeen>>,
    all: &BTreeMap<String, Vec<String>>,
) -> BTreeMap<String, Vec<String>> {
    let mut by_record = BTreeMap::new();
    for (shard, seqs) in all {
        let mut versions = Vec::new();
        let mut next = 0usize;
        for batch in batches.get(shard).map(Vec::as_slice).unwrap_or_default() {
            assert_eq!(seqs.get(next), Some(&batch.first), "{shard}: a batch starts at record {next}: {batch:?}");
            let end = seqs.iter().position(|s| *s == batch.last).expect("the batch's last record exists");
            assert!(end >= next, "{shard}: batch {batch:?} runs backwards");
            versions.extend(std::iter::repeat_n(batch.plugin.clone(), end + 1 - next));
            next = end + 1;
        }
        assert_eq!(next, seqs.len(), "{shard}: every record was processed ({} of {})", next, seqs.len());
        by_record.insert(shard.clone(), versions);
    }
    by_record
}

on_both_emulators!(swapping_counter_and_a_changed_counter_processes_every_record_exactly_once);
async fn swapping_counter_and_a_changed_counter_processes_every_record_exactly_once(f: Fixture) {
    f.stream("swaps", 2).await;
    let running = Running::start(&f, "swaps", "counter", r#"{"event_time": "arrival"}"#, SwapPolicy::default()).await;
    let (v1, v2) = (sha256_of("counter"), sha256_of("counter-v2"));
    // Each logic processes records on both shards before the next swap
    // (waited for, not slept: a loaded machine produces and reads slower).
    let mut current = short(&v1);
    let mut since = BTreeMap::new();
    for (round, plugin) in ["counter-v2", "counter", "counter-v2", "counter", "counter-v2"].into_iter().enumerate() {
        processed_more_by(&f, &current, &since, 2).await;
        let result = running.swap_to(plugin).await;
        assert_eq!(result.outcome, SwapOutcome::Swapped, "round {round}: {result:?}");
        assert_eq!(result.shards.len(), 2, "both shards switched: {result:?}");
        current = short(&sha256_of(plugin));
        since = lines_by(&f, &current);
    }
    processed_more_by(&f, &current, &since, 2).await;
    let progress = running.progress.clone();
    let (produced, report) = running.finish().await;
    assert_eq!(report.records, produced, "every produced record was processed once");

    let lines = json_lines(&std::fs::read_to_string(f.out_path()).expect("output"));
    let all = sequence_numbers(&f, "swaps").await;
    assert_eq!(all.values().map(Vec::len).sum::<usize>() as u64, produced);
    let versions = assert_tiles(&batches(&lines), &all);
    for (shard, versions) in &versions {
        let changes = versions.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(changes >= 4, "{shard}: the logic changed {changes} times along the records");
        assert_eq!(versions.first(), Some(&short(&v1)), "{shard} started on the counter");
        assert_eq!(versions.last(), Some(&short(&v2)), "{shard} ended on the changed counter");
    }
    // Each line says which logic wrote it, and the logic agrees.
    for line in &lines {
        let tagged = line["data"].as_str().is_some_and(|d| d.contains(r#""logic":"v2""#));
        assert_eq!(tagged, line["plugin"] == short(&v2), "{line}");
    }
    // The counts carried across every swap: per key, the last count of each
    // window adds up to what was produced for it.
    let mut last: BTreeMap<(String, String), u64> = BTreeMap::new();
    for line in &lines {
        let count: serde_json::Value = serde_json::from_str(line["data"].as_str().unwrap_or("{}")).expect("count json");
        let key = (
            count["key"].as_str().unwrap_or_default().to_string(),
            count["window_start"].as_str().unwrap_or_default().to_string(),
        );
        last.insert(key, count["count"].as_u64().unwrap_or_default());
    }
    let mut per_key: BTreeMap<String, u64> = BTreeMap::new();
    for ((key, _), n) in last {
        *per_key.entry(key).or_insert(0) += n;
    }
    let expected: BTreeMap<String, u64> =
        (0..16).map(|k| (format!("key-{k}"), (0..produced).filter(|i| i % 16 == k).count() as u64)).collect();
    assert_eq!(per_key, expected);
    let swaps = progress.swaps.by_outcome.lock().expect("counts").clone();
    assert_eq!(swaps.get(&("swapped", v2.clone())), Some(&3), "{swaps:?}");
    assert_eq!(swaps.get(&("swapped", v1.clone())), Some(&2), "{swaps:?}");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_a_wrong_world_or_a_failing_init_leave_the_old_logic_running() {
    let f = fixture(LocalOptions::default()).await;
    f.stream("refused", 2).await;
    let running = Running::start(&f, "refused", "counter", r#"{"window_seconds": 60}"#, SwapPolicy::default()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let broken = running.swap_bytes("broken.wasm", b"\0asm\x0d\0\x01\0garbage".to_vec()).await;
    assert_eq!(broken.outcome, SwapOutcome::Refused, "{broken:?}");
    assert!(broken.message.contains("broken.wasm") && broken.message.contains("stays"), "{}", broken.message);

    let not_wasm = running.swap_bytes("notes.txt", b"hello".to_vec()).await;
    assert_eq!(not_wasm.outcome, SwapOutcome::Refused, "{not_wasm:?}");
    assert!(not_wasm.message.contains("not a WebAssembly"), "{}", not_wasm.message);

    let wrong_world = other_world_component();
    let wrong = running.swap_bytes("other-world.wasm", wrong_world).await;
    assert_eq!(wrong.outcome, SwapOutcome::Refused, "{wrong:?}");
    assert!(wrong.message.contains("exports hello"), "{}", wrong.message);

    // `faulty` refuses the counter's config in `init`.
    let init = running.swap_to("faulty").await;
    assert_eq!(init.outcome, SwapOutcome::Refused, "{init:?}");
    assert!(init.message.contains("window_seconds"), "{}", init.message);

    tokio::time::sleep(Duration::from_millis(500)).await;
    let progress = running.progress.clone();
    let (produced, report) = running.finish().await;
    assert_eq!(report.records, produced);
    let lines = json_lines(&std::fs::read_to_string(f.out_path()).expect("output"));
    let counter = short(&sha256_of("counter"));
    assert!(lines.iter().all(|l| l["plugin"] == counter), "only the counter ever ran");
    assert_tiles(&batches(&lines), &sequence_numbers(&f, "refused").await);
    let refused: u64 = progress
        .swaps
        .by_outcome
        .lock()
        .expect("counts")
        .iter()
        .filter(|((o, _), _)| *o == "refused")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(refused, 4);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_state_refuses_the_swap_or_starts_fresh_as_configured() {
    let f = fixture(LocalOptions::default()).await;
    f.stream("states", 1).await;
    // `faulty` cannot read the counter's state.
    let running = Running::start(&f, "states", "counter", "{}", SwapPolicy::default()).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let refused = running.swap_to("faulty").await;
    assert_eq!(refused.outcome, SwapOutcome::Refused, "{refused:?}");
    assert!(refused.message.contains("corrupt state"), "the plugin's reason is passed on: {}", refused.message);
    let (_, report) = running.finish().await;
    assert!(report.records > 0);

    let f = fixture(LocalOptions::default()).await;
    f.stream("states", 1).await;
    let policy = SwapPolicy { on_rejected_state: OnRejectedState::Fresh, ..SwapPolicy::default() };
    let running = Running::start(&f, "states", "counter", "{}", policy).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let fresh = running.swap_to("faulty").await;
    assert_eq!(fresh.outcome, SwapOutcome::Swapped, "{fresh:?}");
    assert!(fresh.message.contains("fresh state"), "{}", fresh.message);
    processed_more_by(&f, &short(&sha256_of("faulty")), &BTreeMap::new(), 1).await;
    let (produced, report) = running.finish().await;
    assert_eq!(report.records, produced);
    let lines = json_lines(&std::fs::read_to_string(f.out_path()).expect("output"));
    assert!(lines.iter().any(|l| l["plugin"] == short(&sha256_of("faulty"))), "the new logic ran");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_logic_that_traps_is_rolled_back_and_its_records_replayed_by_the_old() {
    let f = fixture(LocalOptions::default()).await;
    f.stream("trapping", 2).await;
    // echo → faulty (echo keeps no state, so faulty starts fresh).
    let policy = SwapPolicy { on_rejected_state: OnRejectedState::Fresh, probation_batches: 1_000 };
    let running = Running::start(&f, "trapping", "echo", "{}", policy).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let swapped = running.swap_to("faulty").await;
    assert_eq!(swapped.outcome, SwapOutcome::Swapped, "{swapped:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A record the new logic traps on.
    put_all(&f.client, &f.name("trapping"), &[Outgoing { partition_key: "key-0".into(), data: b"trap".to_vec() }])
        .await
        .expect("put");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let progress = running.progress.clone();
    let (produced, _) = running.finish().await;

    let rolled: u64 = progress
        .swaps
        .by_outcome
        .lock()
        .expect("counts")
        .iter()
        .filter(|((o, _), _)| *o == "rolled-back")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(rolled, 1, "one host-wide rollback");
    let echo = short(&sha256_of("echo"));
    assert!(
        progress.plugin_by_shard.lock().expect("plugins").values().all(|sha| short(sha) == echo),
        "every shard is back on echo"
    );
    // Echo's output alone holds every record exactly once (the records the
    // failed logic saw were replayed from the pre-swap checkpoint).
    let lines = json_lines(&std::fs::read_to_string(f.out_path()).expect("output"));
    let mut echoed: BTreeMap<String, u32> = BTreeMap::new();
    for line in lines.iter().filter(|l| l["plugin"] == echo) {
        // Echo writes `key : data`.
        let data = line["data"].as_str().unwrap_or_default().rsplit(" : ").next().unwrap_or_default();
        *echoed.entry(data.to_string()).or_insert(0) += 1;
    }
    let mut expected: BTreeMap<String, u32> = (0..produced).map(|i| (format!("n-{i}"), 1)).collect();
    expected.insert("trap".into(), 1);
    let missing: Vec<&String> = expected.keys().filter(|k| !echoed.contains_key(*k)).collect();
    let twice: Vec<(&String, &u32)> = echoed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        missing.is_empty() && twice.is_empty() && echoed.len() == expected.len(),
        "missing {missing:?}, more than once {twice:?}"
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_on_demand_restores_the_pre_swap_state_and_replays() {
    let f = fixture(LocalOptions::default()).await;
    f.stream("undo", 2).await;
    let running = Running::start(&f, "undo", "counter", r#"{"event_time": "arrival"}"#, SwapPolicy::default()).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(running.swap_to("counter-v2").await.outcome, SwapOutcome::Swapped);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let back = running.rollback().await;
    assert_eq!(back.outcome, SwapOutcome::RolledBack, "{back:?}");
    assert!(back.message.contains("pre-swap"), "{}", back.message);
    let again = running.rollback().await;
    assert_eq!(again.outcome, SwapOutcome::Refused, "nothing left to undo: {again:?}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (produced, _) = running.finish().await;

    // The counter's own lines, read in order, end with counts that include
    // every record once: the v2 stretch was undone and replayed.
    let lines = json_lines(&std::fs::read_to_string(f.out_path()).expect("output"));
    let v1 = short(&sha256_of("counter"));
    let mut last: BTreeMap<(String, String), u64> = BTreeMap::new();
    for line in lines.iter().filter(|l| l["plugin"] == v1) {
        let count: serde_json::Value = serde_json::from_str(line["data"].as_str().unwrap_or("{}")).expect("json");
        last.insert(
            (
                count["key"].as_str().unwrap_or_default().into(),
                count["window_start"].as_str().unwrap_or_default().into(),
            ),
            count["count"].as_u64().unwrap_or_default(),
        );
    }
    let total: u64 = last.values().sum();
    assert_eq!(total, produced, "counts after the rollback cover every record exactly once");
    let keys: BTreeSet<&String> = last.keys().map(|(k, _)| k).collect();
    assert_eq!(keys.len(), 16);
    f.stop().await;
}

/// The counter's last count of each key and window in its own lines, in order.
fn last_counts_of(f: &Fixture, plugin: &str) -> BTreeMap<(String, String), u64> {
    let lines = json_lines(&std::fs::read_to_string(f.out_path()).expect("output"));
    let mut last = BTreeMap::new();
    for line in lines.iter().filter(|l| l["plugin"] == plugin) {
        let count: serde_json::Value = serde_json::from_str(line["data"].as_str().unwrap_or("{}")).expect("json");
        let text = |f: &str| count[f].as_str().unwrap_or_default().to_string();
        last.insert((text("key"), text("window_start")), count["count"].as_u64().unwrap_or_default());
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_of_a_swap_over_an_unpromoted_canary_takes_the_canary_back_to_before_it() {
    let f = fixture(LocalOptions::default()).await;
    f.stream("chain", 2).await;
    let policy = SwapPolicy { on_rejected_state: OnRejectedState::Fresh, ..SwapPolicy::default() };
    let running = Running::start(&f, "chain", "counter", "{}", policy).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let shards: Vec<String> = running.hub.shards().into_keys().collect();
    assert_eq!(shards.len(), 2);
    // A canary of v2 on one shard, never promoted; then echo for every shard over it.
    let canary: BTreeSet<String> = [shards[0].clone()].into();
    let path = plugin_path("counter-v2");
    let tried = running
        .ask(|reply| SwapRequest::Swap { source: PluginSource::Path(path), only: Some(canary), reply: Some(reply) })
        .await;
    assert_eq!(tried.outcome, SwapOutcome::Swapped, "{tried:#?}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let over = running.swap_to("echo").await;
    assert_eq!(over.outcome, SwapOutcome::Swapped, "{}", over.message);
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Its rollback returns every shard to the counter from before the
    // canary, the canary shard too: from its pre-canary point.
    let back = running.rollback().await;
    assert_eq!(back.outcome, SwapOutcome::RolledBack, "{back:?}");
    for shard in &shards {
        assert!(
            matches!(back.shards.get(shard), Some(host::swap::ShardSwap::RolledBack { .. })),
            "{shard} replayed from its pre-swap point: {back:?}"
        );
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (produced, _) = running.finish().await;
    let last = last_counts_of(&f, &short(&sha256_of("counter")));
    assert_eq!(last.values().sum::<u64>(), produced, "the counter's counts cover every record exactly once");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_endpoint_answers_on_a_unix_socket_one_swap_at_a_time() {
    use host::swap::control::{call, serve, ControlAddr, ControlCall};
    use std::os::unix::fs::PermissionsExt;
    let f = fixture(LocalOptions::default()).await;
    f.stream("socket", 1).await;
    let running = Running::start(&f, "socket", "counter", "{}", SwapPolicy::default()).await;
    let socket = f.dir.path().join("host.sock");
    let addr: ControlAddr = format!("unix:{}", socket.display()).parse().expect("unix address");
    let token = f.dir.path().join("control.token");
    let endpoint = serve(&addr, &token, running.requests.clone(), running.hub.clone()).await.expect("serves");
    assert_eq!(std::fs::metadata(&socket).expect("socket").permissions().mode() & 0o777, 0o600);
    let bytes = std::fs::read(plugin_path("counter-v2")).expect("plugin");
    let (status, answer) =
        call(&addr, &token, ControlCall::Swap { name: "counter-v2.wasm".into(), bytes }).await.expect("swap call");
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("swapped")), "{answer}");
    let (status, answer) = call(&addr, &token, ControlCall::Status).await.expect("status call");
    assert_eq!(status, 200);
    assert_eq!(answer["sha256"].as_str(), Some(sha256_of("counter-v2").as_str()), "{answer}");
    let nope = || ControlCall::Swap { name: "x.wasm".into(), bytes: b"nope".to_vec() };
    let (status, answer) = call(&addr, &token, nope()).await.expect("call");
    assert_eq!((status, answer["outcome"].as_str()), (409, Some("refused")), "{answer}");
    assert!(answer["message"].as_str().unwrap_or_default().contains("not a WebAssembly"), "{answer}");

    // While one swap's body is still arriving, another is refused at once
    // (not queued with its component in memory); after it, they pass again.
    let secret = std::fs::read_to_string(&token).expect("token");
    let mut slow = tokio::net::UnixStream::connect(&socket).await.expect("connects");
    let head = format!(
        "POST /swap HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {secret}\r\nContent-Length: 1000\r\n\r\n0asm"
    );
    tokio::io::AsyncWriteExt::write_all(&mut slow, head.as_bytes()).await.expect("writes");
    // Give the server time to take the slow request in before the probes
    // (a probe served first would make the slow one the refused one).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let busy = "another swap or rollback is in progress";
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, answer) = call(&addr, &token, nope()).await.expect("call");
        if answer["message"].as_str().unwrap_or_default().contains(busy) {
            break;
        }
        // The slow request was answered (refused behind a probe): start it again.
        let mut got = [0u8; 512];
        if slow.try_read(&mut got).is_ok() {
            slow = tokio::net::UnixStream::connect(&socket).await.expect("connects");
            tokio::io::AsyncWriteExt::write_all(&mut slow, head.as_bytes()).await.expect("writes");
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        }
        if std::time::Instant::now() > deadline {
            // Whatever the slow request got back says why it held nothing.
            let mut got = vec![0u8; 4096];
            let read =
                tokio::time::timeout(Duration::from_millis(200), tokio::io::AsyncReadExt::read(&mut slow, &mut got));
            let got = match read.await {
                Ok(Ok(n)) => String::from_utf8_lossy(&got[..n]).into_owned(),
                other => format!("{other:?}"),
            };
            panic!("a second swap was served beside the first: {answer}; the first got: {got}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, answer) = call(&addr, &token, ControlCall::Rollback).await.expect("call");
    assert_eq!(status, 409);
    assert!(answer["message"].as_str().unwrap_or_default().contains(busy), "{answer}");
    drop(slow);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, answer) = call(&addr, &token, nope()).await.expect("call");
        if answer["message"].as_str().unwrap_or_default().contains("not a WebAssembly") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the endpoint stayed busy: {answer}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(endpoint);
    assert!(!token.exists(), "the token goes with the endpoint");
    running.finish().await;
    f.stop().await;
}

#[tokio::test]
async fn a_shard_start_waits_for_the_followers_own_look_and_hears_when_none_came() {
    let hub = SwapHub::new(load(&host::plugin::PluginEngine::new().expect("engine"), "echo"), SwapPolicy::default());
    assert!(hub.refresh(Duration::from_millis(10)).await, "nothing follows a single host: no wait");
    hub.followed();
    assert!(!hub.refresh(Duration::from_millis(50)).await, "no follower looked: the start must not go on");
    // A look already under way when the start asks does not answer it.
    let begun = hub.looking();
    let follower = hub.clone();
    let looks = tokio::spawn(async move {
        follower.looked(begun);
        follower.look_asked().await;
        let answering = follower.looking();
        follower.looked(answering);
    });
    assert!(hub.refresh(Duration::from_secs(5)).await, "the follower's next look answers");
    looks.await.expect("follower");
}
