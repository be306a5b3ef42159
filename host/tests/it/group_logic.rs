//! One logic for a whole group (issue 21): `host swap --lease-table` moves
//! every worker's shards to new logic while records flow, with state
//! carried and counts exact; a worker that joins with an old file runs the
//! group's logic; new logic that fails on one worker's shard rolls the whole
//! group back; a component refused before publishing touches nothing.
//! Real processes, on the in-process Kinesis with dynalite and with the
//! embedded DynamoDB of `host local`.

use crate::common::*;
use crate::scale_out::{balanced, final_counts, Dynamo, Group};
use host::kinesis::producer::{put_all, Outgoing};
use host::lease::{DeploymentChange, LeaseTable};
use std::time::{Duration, Instant};

/// Lease duration of these groups (s): a deployment is seen within 0.4 of it.
const LEASE: u64 = 3;

fn sha256_of(plugin: &str) -> String {
    host::lease::logic::sha256(&std::fs::read(plugin_path(plugin)).expect("plugin built"))
}

impl Group {
    /// `host swap` against this group with `args`.
    fn swap(&self, args: &[&str]) -> Run {
        host(&self.swap_args(args).iter().map(String::as_str).collect::<Vec<_>>(), "")
    }

    /// `host swap` against this group with `args`, in the background.
    fn spawn_swap(&self, args: &[&str]) -> Spawned {
        spawn_host_with(&self.swap_args(args), &[])
    }

    fn swap_args(&self, args: &[&str]) -> Vec<String> {
        let group = [
            "swap",
            "--lease-table",
            &self.table,
            "--stream",
            &self.stream,
            "--endpoint-url",
            &self.kinesis,
            "--dynamodb-endpoint-url",
            &self.dynamo,
            "--timeout",
            "60",
        ];
        group.iter().chain(args).map(|a| a.to_string()).collect()
    }

    /// Output lines of worker `id` from line `from` on.
    fn lines_of(&self, id: &str, from: usize) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.path(&format!("out-{id}.jsonl"))).unwrap_or_default();
        json_lines(&text).into_iter().skip(from).collect()
    }

    /// Every per-key, per-window count of the workers equals a single host's.
    async fn assert_counts_exact(&self) {
        let counts = final_counts(&self.outputs());
        let reference = self.reference().await;
        let off: Vec<_> = reference
            .iter()
            .filter(|(k, v)| counts.get(*k) != Some(*v))
            .map(|(k, v)| format!("{k:?}: {v} expected, {:?} counted", counts.get(k)))
            .collect();
        assert!(off.is_empty() && counts.len() == reference.len(), "counts off: {off:?}\n{}", self.logs());
    }

    /// Waits until every lease not at its end names `sha` as its logic.
    async fn all_on(&self, sha: &str, limit: Duration) {
        let start = Instant::now();
        loop {
            let leases = self.scan().await;
            if leases.iter().filter(|l| !l.ended()).all(|l| l.logic.as_deref() == Some(sha)) {
                return;
            }
            let logics: Vec<_> = leases.iter().map(|l| (l.key.clone(), l.logic.clone())).collect();
            assert!(start.elapsed() < limit, "not every shard on {sha}: {logics:?}\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_command_moves_a_group_to_new_logic_with_exact_counts_through_a_kill_9_and_a_join() {
    let workers = ["w1", "w2", "w3"];
    let Some((mut group, produce)) = Group::balanced("group-swap", 8, &workers, (200, 14), (2, 3)).await else {
        return;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let v2_file = plugin_path("counter-v2").display().to_string();
    let swapping = group.spawn_swap(&["--plugin", &v2_file, "--probation-wait", "6"]);
    // kill -9 during the deployment: as soon as it is published.
    let start = Instant::now();
    while group.leases.deployment().await.ok().flatten().is_none_or(|d| d.number < 2) {
        assert!(start.elapsed() < Duration::from_secs(30), "never published\n{}", group.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    group.kill("w1").await;
    let swapped = wait(swapping).await;
    assert_eq!(swapped.code, 0, "{}\n{}\n{}", swapped.stdout, swapped.stderr, group.logs());
    eprintln!("host swap --lease-table:\n{}{}", swapped.stdout, swapped.stderr);
    assert!(swapped.stdout.contains("every running shard (8) switched"), "{}", swapped.stdout);
    // Shards that get records pass probation; the producer's keys may
    // leave some idle, and those stay on it.
    let passed = swapped.stdout.lines().find_map(|l| {
        let rest = l.strip_prefix("swapped: ")?;
        if rest.starts_with("every running shard passed") {
            return Some(8);
        }
        rest.split('/').next()?.parse::<usize>().ok()
    });
    assert!(passed.is_some_and(|n| n >= 4), "most shards passed probation: {}", swapped.stdout);
    assert!(swapped.stderr.contains("8/8 running shard(s)"), "progress shown: {}", swapped.stderr);
    let v2 = sha256_of("counter-v2");
    // Whatever a worker writes from now on comes from v2.
    let seen: Vec<usize> = workers.iter().map(|id| group.lines_of(id, 0).len()).collect();
    // A worker started with the old file runs the group's logic, and says
    // so; the others hand it its share.
    group.start_running("w4", &group.dynamo.clone(), LEASE, "counter", &[]);
    let live = ["w2", "w3", "w4"];
    group.until("w4 gets its share by hand-offs", Duration::from_secs(30), |o| balanced(o, &live, 2, 3)).await;
    wait(produce).await;
    group.all_on(&v2, Duration::from_secs(30)).await;
    group.settle().await;
    for id in ["w2", "w3", "w4"] {
        assert_eq!(group.stop(id).await, 0, "{id} stops cleanly\n{}", group.logs());
    }
    assert!(group.log("w4").contains("runs the group's logic"), "{}", group.log("w4"));
    for (id, from) in workers.iter().zip(&seen).chain([(&"w4", &0)]) {
        let old: Vec<_> = group.lines_of(id, *from).into_iter().filter(|l| l["logic"] != "v2").collect();
        assert!(
            old.is_empty(),
            "{id} wrote {} line(s) with the old logic after the swap: {:?}",
            old.len(),
            old.first()
        );
    }
    group.assert_counts_exact().await;
    let listed = host(
        &["leases", "--lease-table", &group.table, "--stream", &group.stream, "--dynamodb-endpoint-url", &group.dynamo],
        "",
    );
    assert!(
        listed.stdout.contains("group logic: deployment 2") && listed.stdout.contains(&v2[..12]),
        "{}",
        listed.stdout
    );
    assert!(!listed.stdout.contains("not the group's"), "{}", listed.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_logic_failing_on_one_workers_shard_rolls_the_whole_group_back_and_refusals_touch_nothing() {
    let Some(mut group) = Group::on(Dynamo::Embedded, "group-trap", 4).await else { return };
    let flags = ["--swap-probation", "1000", "--retries", "0", "--on-rejected-state", "fresh"];
    // w1 runs a file of its own: SIGHUP after it changes publishes to the group.
    let own = group.path("w1-plugin.wasm");
    std::fs::copy(plugin_path("echo"), &own).expect("copy");
    let dynamo = group.dynamo.clone();
    group.start_running("w1", &dynamo, LEASE, &own.display().to_string(), &flags);
    group.start_running("w2", &dynamo, LEASE, "echo", &flags);
    group.until("the workers balance", Duration::from_secs(30), |o| balanced(o, &["w1", "w2"], 2, 2)).await;
    let echo = sha256_of("echo");
    let deployment = |group: &Group| {
        let leases = group.leases.clone();
        async move { leases.deployment().await.expect("read").expect("seeded") }
    };
    assert_eq!(deployment(&group).await.logic.sha256, echo, "the first worker's --plugin seeded the group");

    // Refused before anything is published: one line, non-zero, no change.
    let garbage = group.path("garbage.wasm");
    std::fs::write(&garbage, b"not a component").expect("write");
    let refused = group.swap(&["--plugin", &garbage.display().to_string()]);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("refused") && refused.stderr.contains("not a WebAssembly"), "{}", refused.stderr);
    let other = group.path("other-world.wasm");
    std::fs::write(&other, other_world_component()).expect("write");
    let wrong = group.swap(&["--plugin", &other.display().to_string()]);
    assert_ne!(wrong.code, 0);
    assert_eq!(wrong.stderr.trim().lines().count(), 1, "one line: {}", wrong.stderr);
    assert!(wrong.stderr.contains("refused"), "{}", wrong.stderr);
    assert_eq!(deployment(&group).await.number, 1, "nothing published");
    let no_swap = group.swap(&["--rollback"]);
    assert_ne!(no_swap.code, 0, "nothing to roll back: {}", no_swap.stderr);

    // Faulty traps on the record "trap": whichever worker's shard gets it,
    // the whole group goes back to echo.
    // `host swap` is still waiting for probation when the trap comes.
    let faulty = plugin_path("faulty").display().to_string();
    let swapping = group.spawn_swap(&["--plugin", &faulty, "--probation-wait", "60"]);
    group.all_on(&sha256_of("faulty"), Duration::from_secs(30)).await;
    let client = host::kinesis::connect(&host::aws::AwsOptions {
        endpoint_url: Some(group.kinesis.clone()),
        ..Default::default()
    })
    .await
    .expect("client");
    put_all(&client, &group.stream, &[Outgoing { partition_key: "k".into(), data: b"trap".to_vec() }])
        .await
        .expect("put");
    let start = Instant::now();
    let rolled = loop {
        let now = deployment(&group).await;
        if now.number > 2 {
            break now;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no group rollback\n{}", group.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let swapped = wait(swapping).await;
    assert_eq!(swapped.code, 1, "host swap fails with the group's rollback\n{}{}", swapped.stdout, swapped.stderr);
    let line = swapped.stderr.lines().find(|l| l.starts_with("error:")).unwrap_or_default();
    assert!(line.contains("rolled deployment 2 back") && line.contains("shardId-") && line.contains("trap"), "{line}");
    match &rolled.change {
        DeploymentChange::Rollback { of: 2, reason } => assert!(reason.contains("trap"), "{reason}"),
        other => panic!("a rollback of deployment 2, not {other:?}"),
    }
    assert_eq!(rolled.logic.sha256, echo);
    group.all_on(&echo, Duration::from_secs(30)).await;
    let status = group.swap(&["--status"]);
    assert!(status.stdout.contains("rolled back deployment 2") && status.stdout.contains("trap"), "{}", status.stdout);
    // Per shard: its logic, its worker, and since when it runs that logic.
    let rows: Vec<&str> = status.stdout.lines().filter(|l| l.starts_with("shardId-")).collect();
    assert!(status.stdout.contains("SINCE") && rows.len() == 4, "{}", status.stdout);
    for row in rows {
        assert!(row.contains(&echo[..12]) && row.contains(" ago") && row.contains(" w"), "{row}");
    }

    // An operator's rollback of a good swap.
    assert_eq!(group.swap(&["--plugin", &faulty, "--no-wait"]).code, 0);
    group.all_on(&sha256_of("faulty"), Duration::from_secs(30)).await;
    let back = group.swap(&["--rollback"]);
    assert_eq!(back.code, 0, "{}\n{}", back.stderr, group.logs());
    group.all_on(&echo, Duration::from_secs(30)).await;

    // SIGHUP on one worker publishes its file to the whole group.
    let before = deployment(&group).await.number;
    std::fs::copy(plugin_path("counter"), &own).expect("copy");
    group.signal("w1", "-HUP");
    group.all_on(&sha256_of("counter"), Duration::from_secs(30)).await;
    let now = deployment(&group).await;
    assert_eq!((now.number, now.by.as_str()), (before + 1, "w1"), "{}", now.describe());
    for id in ["w1", "w2"] {
        assert_eq!(group.stop(id).await, 0, "{id} stops cleanly\n{}", group.logs());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_runs_on_one_shard_first_and_a_faulty_canary_rolls_back_that_shard_alone() {
    let Some(mut group) = Group::on(Dynamo::Embedded, "group-canary", 4).await else { return };
    for id in ["w1", "w2"] {
        group.start_running(id, &group.dynamo.clone(), LEASE, "counter", &["--swap-probation", "2"]);
    }
    group.until("the workers balance", Duration::from_secs(30), |o| balanced(o, &["w1", "w2"], 2, 2)).await;
    // Records all along (stopped at the end), so every shard keeps committing.
    let mut produce = crate::scale_out::producer(&group, 200, 120);
    let (v1, v2) = (sha256_of("counter"), sha256_of("counter-v2"));
    group.all_on(&v1, Duration::from_secs(30)).await;

    // --canary 1: one shard on v2 while the others stay on v1, then all.
    let v2_file = plugin_path("counter-v2").display().to_string();
    let swapping = group.spawn_swap(&["--plugin", &v2_file, "--canary", "1", "--probation-wait", "20"]);
    // While the deployment is the canary (read after the leases), at most
    // one shard runs v2; and one does before the rest follows.
    let (start, mut saw_canary) = (Instant::now(), false);
    loop {
        let logics: Vec<_> = group.scan().await.into_iter().filter_map(|l| l.logic).collect();
        let on_v2 = logics.iter().filter(|l| **l == v2).count();
        let now = group.leases.deployment().await.expect("read").expect("deployment");
        if now.number >= 3 {
            break;
        }
        if now.number == 2 {
            assert_eq!(now.canary.len(), 1, "{}", now.describe());
            assert!(on_v2 <= 1, "the canary is one shard: {logics:?}");
            saw_canary |= on_v2 == 1;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "never promoted\n{}", group.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A poll can miss a short canary; host swap's own progress cannot.
    eprintln!("the canary was seen alone by the test: {saw_canary}");
    let swapped = wait(swapping).await;
    assert_eq!(swapped.code, 0, "{}{}\n{}", swapped.stdout, swapped.stderr, group.logs());
    assert!(
        swapped.stdout.contains("on 1 canary shard(s)") && swapped.stdout.contains("published deployment 3"),
        "{}",
        swapped.stdout
    );
    // Its canary phase: the one shard, and only it, through probation first.
    let alone = swapped.stderr.lines().any(|l| l.starts_with("1/1 running shard(s) on") && l.contains(", 1 through"));
    assert!(alone, "the canary passed alone before the rest: {}", swapped.stderr);
    group.all_on(&v2, Duration::from_secs(30)).await;

    // A canary that fails (faulty cannot read the counter's state) rolls
    // back its one shard; the others never leave v2.
    let before: std::collections::BTreeMap<String, u64> =
        group.scan().await.into_iter().map(|l| (l.key, l.logic_commits)).collect();
    let faulty = plugin_path("faulty").display().to_string();
    let failed = group.swap(&["--plugin", &faulty, "--canary", "1", "--probation-wait", "20"]);
    assert_eq!(failed.code, 1, "{}{}\n{}", failed.stdout, failed.stderr, group.logs());
    let rolled = group.leases.deployment().await.expect("read").expect("deployment");
    let shard = match &rolled.change {
        DeploymentChange::Rollback { of: 4, reason } => {
            let shard =
                before.keys().find(|k| reason.contains(k.as_str())).expect("the reason names the shard").clone();
            assert!(failed.stderr.contains(&shard), "{}", failed.stderr);
            shard
        }
        other => panic!("a rollback of deployment 4, not {other:?}"),
    };
    group.all_on(&v2, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for lease in group.scan().await.into_iter().filter(|l| l.key != shard) {
        assert!(lease.logic_commits > before[&lease.key], "{} stayed on v2 throughout: {lease:?}", lease.key);
    }
    let _ = produce.kill();
    let _ = produce.wait();
    for id in ["w1", "w2"] {
        assert_eq!(group.stop(id).await, 0, "{id} stops cleanly\n{}", group.logs());
    }
}

/// A partition key (`v2-trap-N`) that lands on `shard` of `stream`.
async fn trap_key_on(client: &aws_sdk_kinesis::Client, stream: &str, shard: &str) -> String {
    use md5::{Digest, Md5};
    let listed = client.list_shards().stream_name(stream).send().await.expect("list shards");
    let range = listed.shards().iter().find(|s| s.shard_id() == shard).and_then(|s| s.hash_key_range()).expect("range");
    let (low, high): (u128, u128) =
        (range.starting_hash_key().parse().expect("number"), range.ending_hash_key().parse().expect("number"));
    (0..)
        .map(|i| format!("v2-trap-{i}"))
        .find(|key| (low..=high).contains(&u128::from_be_bytes(Md5::digest(key.as_bytes()).into())))
        .expect("some key lands on every shard")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_taken_during_probation_rolls_back_on_its_new_owner_from_its_pre_swap_point() {
    moved_during_probation("group-moved", Trap::OnATakenShard).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_while_no_worker_holds_a_shard_replays_it_from_its_pre_swap_point_when_taken() {
    moved_during_probation("group-orphan", Trap::BeforeTheTakes).await;
}

/// When v2's bug shows in `moved_during_probation`.
#[derive(PartialEq)]
enum Trap {
    /// On a shard w2 took from w1 (in probation there too).
    OnATakenShard,
    /// On one of w2's own, while w1's shards have no live owner.
    BeforeTheTakes,
}

/// Two workers swap to v2 with a long probation; w1 dies with its shards
/// in probation; v2 traps; the group rolls back; every shard replays from
/// where it stood at the swap, whoever holds it, and the counts are exact.
async fn moved_during_probation(name: &str, trap: Trap) {
    let workers = ["w1", "w2"];
    let Some((mut group, produce)) = Group::balanced(name, 4, &workers, (200, 16), (2, 2)).await else {
        return;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (v1, v2) = (sha256_of("counter"), sha256_of("counter-v2"));
    let v2_file = plugin_path("counter-v2").display().to_string();
    let swapped = group.swap(&["--plugin", &v2_file, "--swap-probation", "1000", "--no-wait"]);
    assert_eq!(swapped.code, 0, "{}{}", swapped.stdout, swapped.stderr);
    group.all_on(&v2, Duration::from_secs(30)).await;
    // v2 counts on every shard for a while, then w1 dies: its shards'
    // pre-swap points are in their leases.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let owners = group.owners().await;
    let of = |id: &str| -> Vec<String> {
        owners.iter().filter(|(_, o)| o.as_deref() == Some(id)).map(|(shard, _)| shard.clone()).collect()
    };
    let (moved, kept) = (of("w1"), of("w2"));
    assert_eq!((moved.len(), kept.len()), (2, 2), "{owners:?}");
    group.kill("w1").await;
    if trap == Trap::OnATakenShard {
        group.until("w2 takes w1's shards", Duration::from_secs(30), |o| balanced(o, &["w2"], 4, 4)).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let client = host::kinesis::connect(&host::aws::AwsOptions {
        endpoint_url: Some(group.kinesis.clone()),
        ..Default::default()
    })
    .await
    .expect("client");
    let on = if trap == Trap::OnATakenShard { &moved[0] } else { &kept[0] };
    let key = trap_key_on(&client, &group.stream, on).await;
    put_all(&client, &group.stream, &[Outgoing { partition_key: key, data: b"boom".to_vec() }]).await.expect("put");
    let start = Instant::now();
    while group.leases.deployment().await.expect("read").is_none_or(|d| d.number < 3) {
        assert!(start.elapsed() < Duration::from_secs(30), "no group rollback\n{}", group.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rolled = group.leases.deployment().await.expect("read").expect("deployment");
    match &rolled.change {
        DeploymentChange::Rollback { of: 2, reason } => {
            assert!(reason.contains(on) && reason.contains("trap"), "{reason}")
        }
        other => panic!("a rollback of deployment 2, not {other:?}"),
    }
    group.until("w2 holds every shard", Duration::from_secs(30), |o| balanced(o, &["w2"], 4, 4)).await;
    group.all_on(&v1, Duration::from_secs(30)).await;
    wait(produce).await;
    group.settle().await;
    assert_eq!(group.stop("w2").await, 0, "w2 stops cleanly\n{}", group.logs());
    let log = group.log("w2");
    for shard in &moved {
        // Rolled back by w2 after it took the shard, or taken after the
        // group's rollback: either way, from the point w1 kept in the lease.
        let replayed = log.lines().any(|l| {
            l.contains(shard.as_str())
                && (l.contains("back on the logic before the swap") || l.contains("while no worker held it"))
        });
        assert!(replayed, "{shard}, taken from w1 in probation, replayed from its pre-swap point on w2\n{log}");
    }
    group.assert_counts_exact().await;
    // Each shard's state, as the group keeps it.
    let table = ["state", "show", "--lease-table", &group.table, "--stream", &group.stream];
    let table: Vec<&str> = table.into_iter().chain(["--dynamodb-endpoint-url", &group.dynamo]).collect();
    let listed = host(&table, "");
    assert_eq!(
        listed.stdout.lines().filter(|l| l.contains("state v1")).count(),
        4,
        "{}{}",
        listed.stdout,
        listed.stderr
    );
    let one = host(&[&table[..], &["--shard", moved[0].as_str()]].concat(), "");
    assert!(one.stdout.contains("\"windows\""), "the counter's own state: {}{}", one.stdout, one.stderr);
}
