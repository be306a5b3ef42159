//! The failure policy against a fake plugin: no wasm, no emulator. Each
//! record's data says how the fake treats it.

use super::*;
use crate::batch::InputRecord;
use crate::plugin::TrapCause;
use std::collections::BTreeMap;

/// A plugin and shard in one: `ok` records pass, `fail` fails naming its
/// index, `crash` traps (no index), `flaky` fails retryably until it has
/// been tried `flaky_for` times.
#[derive(Default)]
struct Fake {
    progress: Progress,
    /// Sequence numbers whose output was released, in order.
    accepted: Vec<String>,
    /// Position committed at each commit.
    commits: Vec<Option<String>>,
    position: Option<String>,
    uncommitted: Uncommitted,
    resets: u32,
    calls: u32,
    flaky_for: u32,
    flaky_tries: BTreeMap<String, u32>,
    probation: bool,
    forgotten: u32,
    /// Fails every call as if `init` could not run (not a record failure).
    broken: bool,
}

fn failed(retryable: bool, record_index: Option<u32>) -> PluginError {
    PluginError::Failed { plugin: "fake".into(), retryable, message: "fake failure".into(), record_index }
}

impl PolicyShard for Fake {
    fn names(&self) -> (&str, &str) {
        ("stream", "shardId-1")
    }

    fn plugin_sha256(&self) -> String {
        "fakehash".into()
    }

    fn progress(&self) -> &Progress {
        &self.progress
    }

    fn now_millis(&self) -> i64 {
        1_000_000
    }

    async fn process(&mut self, batch: Arc<PackedBatch>) -> anyhow::Result<Result<Processed, PluginError>> {
        self.calls += 1;
        if self.broken {
            return Ok(Err(PluginError::RestoreRejected { plugin: "fake".into(), version: 1, message: "no".into() }));
        }
        let mut output = PluginOutput::default();
        for (i, record) in batch.view().iter().enumerate() {
            let seq = record.sequence_number().to_string();
            match record.data() {
                b"fail" => return Ok(Ok(Processed { output, failure: Some(failed(false, Some(i as u32))) })),
                b"crash" => {
                    return Ok(Err(PluginError::Trapped {
                        plugin: "fake".into(),
                        call: "process",
                        cause: TrapCause::Crash,
                        detail: None,
                        recovery: "rebuilt".into(),
                    }))
                }
                b"flaky" => {
                    let tries = self.flaky_tries.entry(seq.clone()).or_insert(0);
                    *tries += 1;
                    if *tries <= self.flaky_for {
                        return Ok(Ok(Processed { output, failure: Some(failed(true, Some(i as u32))) }));
                    }
                }
                _ => {}
            }
            output.push("k", seq.as_bytes());
        }
        Ok(Ok(Processed { output, failure: None }))
    }

    async fn accept(&mut self, slice: &PackedBatch, count: usize, output: &PluginOutput) -> anyhow::Result<()> {
        assert_eq!(output.len(), count, "output of exactly the accepted records");
        let view = slice.view();
        for i in 0..count {
            let seq = view.get(i).map(|r| r.sequence_number().to_string()).unwrap_or_default();
            self.accepted.push(seq.clone());
            self.position = Some(seq);
        }
        Ok(())
    }

    fn skip_to(&mut self, position: crate::batch::Position) {
        self.position = Some(position.sequence_number);
    }

    async fn commit(&mut self) -> anyhow::Result<()> {
        self.commits.push(self.position.clone());
        self.uncommitted = Uncommitted::default();
        Ok(())
    }

    fn reset(&mut self, _failure: &PluginError) -> anyhow::Result<()> {
        self.resets += 1;
        Ok(())
    }

    async fn back_off(&mut self, _attempt: u32) {}

    fn in_probation(&self) -> bool {
        self.probation
    }

    fn uncommitted(&mut self) -> &mut Uncommitted {
        &mut self.uncommitted
    }

    fn forget_uncommitted(&mut self) {
        self.forgotten += 1;
        self.position = None;
        self.uncommitted = Uncommitted::default();
    }
}

/// A batch of records with sequence numbers 1.. and the given data.
fn batch(data: &[&str]) -> PackedBatch {
    let records: Vec<InputRecord> = data
        .iter()
        .enumerate()
        .map(|(i, d)| InputRecord {
            partition_key: format!("key-{}", i + 1),
            data: d.as_bytes().to_vec(),
            sequence_number: (i + 1).to_string(),
            sub_sequence_number: 0,
            arrival_millis: 1_000_000 - (i as i64) * 1000,
        })
        .collect();
    let mut batch = PackedBatch::default();
    batch.repack(&records, 0).expect("fits");
    batch
}

fn seqs(range: std::ops::RangeInclusive<usize>, except: &[usize]) -> Vec<String> {
    range.filter(|i| !except.contains(i)).map(|i| i.to_string()).collect()
}

/// A dead-letter file and the sequence numbers in it.
struct Letters(tempfile::TempDir);

impl Letters {
    fn new() -> (Self, Arc<DeadLetterSink>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dl.jsonl");
        let client_free = DeadLetterSink::file(&path).expect("opens");
        (Letters(dir), Arc::new(client_free))
    }

    fn read(&self) -> Vec<(String, String)> {
        let text = std::fs::read_to_string(self.0.path().join("dl.jsonl")).unwrap_or_default();
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json");
                (
                    v["sequence_number"].as_str().unwrap_or_default().to_string(),
                    v["reason"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }
}

#[tokio::test]
async fn a_clean_batch_is_accepted_and_committed_once() {
    let mut fake = Fake::default();
    let verdict = Policy::new(FailurePolicy::default(), 1).handle(&mut fake, batch(&["ok"; 5])).await.expect("runs");
    assert!(matches!(verdict, BatchVerdict::Done));
    assert_eq!(fake.accepted, seqs(1..=5, &[]));
    assert_eq!(fake.commits, vec![Some("5".to_string())]);
    assert_eq!(fake.calls, 1);
}

#[tokio::test]
async fn without_dead_letters_the_shard_stops_right_before_the_poison_record() {
    let mut fake = Fake::default();
    let verdict = Policy::new(FailurePolicy::default(), 1)
        .handle(&mut fake, batch(&["ok", "ok", "fail", "ok"]))
        .await
        .expect("runs");
    let BatchVerdict::Stopped(reason) = verdict else { panic!("stops: {verdict:?}") };
    assert!(reason.starts_with("record 3 (partition key \"key-3\") fails: plugin `fake` refused it: "), "{reason}");
    assert!(reason.contains("Pass --dead-letter file:PATH"), "{reason}");
    assert_eq!(fake.accepted, seqs(1..=2, &[]), "records before the named one are kept");
    assert_eq!(fake.commits.last(), Some(&Some("2".to_string())), "and checkpointed before the stop");
}

#[tokio::test]
async fn an_unnamed_failure_is_bisected_to_the_records_that_fail_alone() {
    let (letters, sink) = Letters::new();
    let mut fake = Fake::default();
    let policy = FailurePolicy { dead_letter: Some(sink), ..FailurePolicy::default() };
    let data = ["ok", "ok", "crash", "ok", "ok", "ok", "crash", "ok"];
    let verdict = Policy::new(policy, 1).handle(&mut fake, batch(&data)).await.expect("runs");
    assert!(matches!(verdict, BatchVerdict::Done), "{verdict:?}");
    assert_eq!(fake.accepted, seqs(1..=8, &[3, 7]), "every other record, in order");
    assert_eq!(letters.read(), [("3".to_string(), "poison".to_string()), ("7".into(), "poison".into())]);
    assert_eq!(fake.commits.last(), Some(&Some("8".to_string())));
    let counted = fake.progress.dead_letters.lock().expect("lock").get(&("shardId-1".to_string(), "poison")).copied();
    assert_eq!(counted, Some(2));
    // Traps are retried (3 times) on the whole batch before bisecting.
    assert_eq!(fake.progress.plugin_retries.load(Ordering::Relaxed), 3);
}

#[tokio::test]
async fn a_retryable_failure_that_clears_loses_nothing() {
    let mut fake = Fake { flaky_for: 2, ..Fake::default() };
    let verdict =
        Policy::new(FailurePolicy::default(), 1).handle(&mut fake, batch(&["ok", "flaky", "ok"])).await.expect("runs");
    assert!(matches!(verdict, BatchVerdict::Done), "{verdict:?}");
    assert_eq!(fake.accepted, seqs(1..=3, &[]));
    assert_eq!(fake.progress.plugin_retries.load(Ordering::Relaxed), 2);
    assert_eq!(fake.resets, 2, "rebuilt from the checkpoint before each retry");
}

#[tokio::test]
async fn a_retryable_failure_that_never_clears_becomes_poison_after_the_retries() {
    let (letters, sink) = Letters::new();
    let mut fake = Fake { flaky_for: u32::MAX, ..Fake::default() };
    let policy = FailurePolicy { retries: 2, dead_letter: Some(sink), ..FailurePolicy::default() };
    let verdict = Policy::new(policy, 1).handle(&mut fake, batch(&["flaky", "ok"])).await.expect("runs");
    assert!(matches!(verdict, BatchVerdict::Done), "{verdict:?}");
    assert_eq!(fake.accepted, seqs(2..=2, &[]));
    assert_eq!(letters.read().len(), 1);
    assert_eq!(fake.flaky_tries.get("1"), Some(&3), "one try and two retries");
}

#[tokio::test]
async fn a_failure_after_uncommitted_batches_replays_from_the_checkpoint() {
    let mut fake = Fake::default();
    let mut policy = Policy::new(FailurePolicy::default(), 3);
    assert!(matches!(policy.handle(&mut fake, batch(&["ok", "ok"])).await.expect("runs"), BatchVerdict::Done));
    assert!(fake.commits.is_empty(), "not yet: every 3 batches");
    let verdict = policy.handle(&mut fake, batch(&["ok", "fail"])).await.expect("runs");
    assert!(matches!(verdict, BatchVerdict::Replay), "{verdict:?}");
    assert_eq!(fake.forgotten, 1);
    // Replayed, every batch is committed until past the failing one.
    assert!(matches!(policy.handle(&mut fake, batch(&["ok", "ok"])).await.expect("runs"), BatchVerdict::Done));
    assert_eq!(fake.commits.len(), 1, "committed at once while careful");
}

#[tokio::test]
async fn new_logic_failing_on_probation_asks_for_a_rollback() {
    let mut fake = Fake { probation: true, ..Fake::default() };
    let verdict =
        Policy::new(FailurePolicy::default(), 1).handle(&mut fake, batch(&["ok", "crash"])).await.expect("runs");
    assert!(matches!(verdict, BatchVerdict::RollBack(PluginError::Trapped { .. })), "{verdict:?}");
    assert!(fake.accepted.is_empty());
}

#[tokio::test]
async fn an_instance_that_cannot_restart_is_an_error_not_poison() {
    let (letters, sink) = Letters::new();
    let mut fake = Fake { broken: true, ..Fake::default() };
    let policy = FailurePolicy { dead_letter: Some(sink), ..FailurePolicy::default() };
    let error = Policy::new(policy, 1).handle(&mut fake, batch(&["ok"])).await.expect_err("stops");
    assert!(format!("{error:#}").contains("the plugin of shardId-1 cannot go on"), "{error:#}");
    assert!(letters.read().is_empty(), "no dead letters for a broken instance");
}

#[tokio::test]
async fn records_past_the_age_limit_are_set_aside_unprocessed() {
    let (letters, sink) = Letters::new();
    let mut fake = Fake::default();
    // Arrivals are 1000 ms apart counting back from "now": records 3.. are older than 1.5 s.
    let policy = FailurePolicy {
        dead_letter: Some(sink),
        max_record_age: Some(Duration::from_millis(1500)),
        ..FailurePolicy::default()
    };
    let verdict = Policy::new(policy, 1).handle(&mut fake, batch(&["ok"; 4])).await.expect("runs");
    assert!(matches!(verdict, BatchVerdict::Done));
    assert_eq!(fake.accepted, seqs(1..=2, &[]));
    assert_eq!(letters.read(), [("3".to_string(), "expired".to_string()), ("4".into(), "expired".into())]);
}

#[tokio::test]
async fn crashes_on_record_after_record_stop_the_shard_as_a_bug_while_refused_records_are_bad_data() {
    let (letters, sink) = Letters::new();
    let mut fake = Fake::default();
    let policy = FailurePolicy { dead_letter: Some(sink), ..FailurePolicy::default() };
    // A crash, then an ok record: not in a row. A refusal (`fail`) is bad
    // data and breaks a run of crashes; the third crash in a row stops.
    let data = ["ok", "crash", "ok", "crash", "fail", "crash", "crash", "crash", "ok"];
    let verdict = Policy::new(policy, 1).handle(&mut fake, batch(&data)).await.expect("runs");
    let BatchVerdict::Stopped(reason) = verdict else { panic!("stops: {verdict:?}") };
    assert!(reason.contains("looks broken") && reason.contains("3 records in a row"), "{reason}");
    assert!(reason.contains("record 8") && reason.contains("--crash-limit"), "{reason}");
    let set_aside: Vec<String> = letters.read().into_iter().map(|(seq, _)| seq).collect();
    assert_eq!(set_aside, ["2", "4", "5", "6", "7"]);
    assert_eq!(fake.accepted, seqs(1..=3, &[2]));
    assert_eq!(fake.commits.last(), Some(&Some("7".to_string())), "the shard stops right before record 8");

    // --crash-limit 0: every crashing record is set aside.
    let (letters, sink) = Letters::new();
    let mut fake = Fake::default();
    let policy = FailurePolicy { dead_letter: Some(sink), crash_limit: 0, ..FailurePolicy::default() };
    let verdict = Policy::new(policy, 1).handle(&mut fake, batch(&["crash"; 5])).await.expect("runs");
    assert!(matches!(verdict, BatchVerdict::Done), "{verdict:?}");
    assert_eq!(letters.read().len(), 5);
}
