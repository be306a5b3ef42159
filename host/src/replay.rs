//! `host test`: replays recorded records through a plugin offline, with a
//! virtual clock, timers and checkpoints, exactly as `host run` would call
//! it, under the same failure policy (`crate::policy`): retries, bisecting,
//! dead letters, and the stop before a poison record.

use crate::batch::{InputRecord, PackedBatch};
use crate::plugin::bindings::{ShardContext, ShutdownReason};
use crate::plugin::{
    Clock, InstanceSettings, Plugin, PluginError, PluginInstance, PluginLimits, PluginOutput, Processed,
};
use crate::policy::{BatchVerdict, FailurePolicy, Policy, PolicyShard, Uncommitted};
use crate::progress::Progress;
use crate::sink::WriterSink;
use anyhow::{bail, Context};
use base64::Engine as _;
use serde::Deserialize;
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// One line of a replay file (the Kinesis record fields, camelCase).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ReplayLine {
    partition_key: String,
    /// Text, or any JSON value (written out compactly as the data).
    data: Option<serde_json::Value>,
    data_base64: Option<String>,
    #[serde(alias = "arrival")]
    approximate_arrival_timestamp: Option<TimeValue>,
    sequence_number: Option<String>,
    sub_sequence_number: Option<u64>,
}

/// A time as epoch milliseconds or ISO-8601 text.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TimeValue {
    Millis(i64),
    Text(String),
}

/// Reads JSON-lines records. Lines without an arrival time take the previous
/// record's (the first takes `start_millis`); sequence numbers are generated
/// in order when absent. Errors name the line.
pub fn read_records(reader: impl BufRead, source: &str, start_millis: i64) -> anyhow::Result<Vec<InputRecord>> {
    let mut records = Vec::new();
    let mut arrival = start_millis;
    for (index, line) in reader.lines().enumerate() {
        let at = || format!("{source}:{}", index + 1);
        let line = line.with_context(at)?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: ReplayLine = serde_json::from_str(&line)
            .with_context(|| format!("{}: not a record (expected {{\"partitionKey\": …, \"data\": …}})", at()))?;
        let data = match (parsed.data, parsed.data_base64) {
            (Some(serde_json::Value::String(text)), None) => text.into_bytes(),
            (Some(value), None) => value.to_string().into_bytes(),
            (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .with_context(|| format!("{}: `dataBase64` is not valid base64", at()))?,
            (None, None) => bail!("{}: a record needs `data` or `dataBase64`", at()),
            (Some(_), Some(_)) => bail!("{}: give `data` or `dataBase64`, not both", at()),
        };
        if let Some(time) = parsed.approximate_arrival_timestamp {
            arrival = match time {
                TimeValue::Millis(ms) => ms,
                TimeValue::Text(text) => kinesis_processor_sdk::helpers::time::parse_timestamp_millis(text.as_bytes())
                    .with_context(|| format!("{}: arrival time {text:?} is not ISO-8601", at()))?,
            };
        }
        let sequence_number = parsed.sequence_number.unwrap_or_else(|| format!("49{:054}", records.len() + 1));
        records.push(InputRecord {
            partition_key: parsed.partition_key,
            data,
            sequence_number,
            sub_sequence_number: parsed.sub_sequence_number.unwrap_or(0),
            arrival_millis: arrival,
        });
    }
    Ok(records)
}

/// How a replay runs.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// The plugin's JSON config.
    pub config: String,
    /// Resource caps per instance.
    pub limits: PluginLimits,
    /// Records per `process` call.
    pub batch_size: usize,
    /// Virtual time between timer calls (ms).
    pub timer_interval_millis: i64,
    /// Virtual time the clock runs on after the last record, firing timers (ms).
    pub drain_millis: i64,
    /// How the instance is shut down at the end.
    pub end: ShutdownReason,
    /// Checkpoint, drop the instance and restore a new one every N batches:
    /// the same final output proves snapshot/restore loses nothing.
    pub restart_every: Option<usize>,
    /// The production failure policy (retries without the back-off wait:
    /// replay time is virtual).
    pub failure: FailurePolicy,
}

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    /// Records fed to the plugin.
    pub records: usize,
    /// Batches read from the input (each goes through the failure policy).
    pub batches: usize,
    /// `on-timer` calls.
    pub timer_calls: usize,
    /// Output records written to the sink.
    pub emitted: u64,
    /// Instances restored from a checkpoint (`restart_every`).
    pub restarts: usize,
    /// Plugin calls retried by the failure policy.
    pub retries: u64,
    /// Records set aside to the dead-letter sink.
    pub dead_letters: u64,
    /// Set when the shard stopped before a poison record (no dead-letter
    /// sink), with the same message `host run` gives.
    pub stopped: Option<String>,
    /// One line per failed timer or shutdown call.
    pub failures: Vec<String>,
}

/// The shard id a replay runs as.
pub const REPLAY_SHARD: &str = "shardId-000000000000";

/// Most timer calls fired in one gap between records; a longer gap jumps.
const MAX_TICKS_PER_GAP: i64 = 10_000;

/// Replays `records` through a fresh instance of `plugin` under the
/// production failure policy, writing output to `sink` and each failure to
/// `diagnostics` as it happens.
pub async fn replay<W: Write>(
    plugin: Arc<Plugin>,
    records: &[InputRecord],
    options: &ReplayOptions,
    sink: &mut WriterSink<W>,
    diagnostics: &mut dyn FnMut(&str),
) -> anyhow::Result<ReplayReport> {
    let start = records.first().map_or(0, |r| r.arrival_millis);
    let (clock, time) = Clock::manual(start);
    let settings = InstanceSettings {
        config: options.config.clone(),
        context: ShardContext {
            stream_name: "replay".into(),
            shard_id: REPLAY_SHARD.into(),
            application: "host-test".into(),
        },
        limits: options.limits.clone(),
        clock,
    };
    let instance = PluginInstance::start(plugin.clone(), settings.clone(), None)?;
    let interval = options.timer_interval_millis.max(1);
    let mut replayer = Replayer {
        instance,
        sink,
        diagnostics,
        time,
        interval,
        next_tick: start + interval,
        report: ReplayReport::default(),
        progress: Progress::default(),
        uncommitted: Uncommitted::default(),
    };
    let mut policy = Policy::new(options.failure.clone(), 1);
    let batch_size = options.batch_size.max(1);
    let mut now = start;
    let mut last_arrival = start;
    for (index, chunk) in records.chunks(batch_size).enumerate() {
        // A poller hands over records soon after the first of them arrives;
        // the rest arrived while it worked. Timers fire for the time before
        // the batch, so only real gaps in arrivals look like idle input.
        let batch_time = chunk.first().map_or(now, |r| r.arrival_millis).max(now);
        replayer.advance_to(batch_time)?;
        now = batch_time;
        last_arrival = last_arrival.max(chunk.iter().map(|r| r.arrival_millis).max().unwrap_or(now));
        let first = index * batch_size;
        let mut batch = PackedBatch::default();
        batch
            .repack(chunk, 0)
            .with_context(|| format!("batch {} (records {}..{})", index + 1, first + 1, first + chunk.len()))?;
        replayer.report.batches += 1;
        replayer.report.records += chunk.len();
        match policy.handle(&mut replayer, batch).await? {
            BatchVerdict::Done => {}
            BatchVerdict::Stopped(reason) => {
                // As `host run` does: the shard stops right before the record.
                replayer.report.stopped = Some(reason);
                break;
            }
            // Every batch is committed and nothing is ever swapped here.
            verdict @ (BatchVerdict::Replay | BatchVerdict::RollBack(_)) => {
                anyhow::bail!("the replay cannot {verdict:?}")
            }
        }
        if options.restart_every.is_some_and(|n| n > 0 && (index + 1) % n == 0) {
            // Shut down as a hot swap or restart would, then continue on
            // a fresh instance restored from the snapshot just committed.
            let state = replayer.instance.committed_state().cloned();
            let fresh = PluginInstance::start(plugin.clone(), settings.clone(), state)?;
            let mut old = std::mem::replace(&mut replayer.instance, fresh);
            replayer.emit(&old.shutdown(ShutdownReason::Requested)?)?;
            replayer.report.restarts += 1;
        }
    }
    let end = match replayer.report.stopped {
        Some(_) => ShutdownReason::Requested,
        None => {
            replayer.advance_to(now.max(last_arrival) + options.drain_millis)?;
            options.end
        }
    };
    let Replayer { mut instance, sink, mut report, diagnostics, progress, .. } = replayer;
    match instance.shutdown(end) {
        Ok(output) => sink.write(&output).context("cannot write output")?,
        Err(e) => {
            let line = format!("shutdown: {e}");
            diagnostics(&line);
            report.failures.push(line);
        }
    }
    sink.flush().context("cannot write output")?;
    report.emitted = sink.written();
    report.retries = progress.plugin_retries.load(Ordering::Relaxed);
    report.dead_letters = progress.dead_letters.lock().map(|d| d.values().sum()).unwrap_or(0);
    Ok(report)
}

/// Runs a replay to its end on this thread. The policy is async (it is
/// `host run`'s), but nothing in a replay waits on I/O or timers, so no
/// async runtime is needed, and none may be: WASI's blocking calls (a
/// plugin's stderr) start their own and refuse to run inside another.
pub fn run_to_end<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut context) {
            std::task::Poll::Ready(output) => return output,
            std::task::Poll::Pending => std::thread::park(),
        }
    }
}

/// The moving parts of one replay.
struct Replayer<'a, W: Write> {
    instance: PluginInstance,
    sink: &'a mut WriterSink<W>,
    diagnostics: &'a mut dyn FnMut(&str),
    /// The virtual clock the plugin reads.
    time: Arc<AtomicI64>,
    /// Timer period (ms).
    interval: i64,
    /// When the next timer call is due.
    next_tick: i64,
    report: ReplayReport,
    /// Retries and dead letters, counted by the policy.
    progress: Progress,
    uncommitted: Uncommitted,
}

impl<W: Write> Replayer<'_, W> {
    fn emit(&mut self, output: &PluginOutput) -> anyhow::Result<()> {
        self.sink.write(output).context("cannot write output")
    }

    fn fail(&mut self, line: String) {
        (self.diagnostics)(&line);
        self.report.failures.push(line);
    }

    /// Fires every timer due up to `until`, as a wall clock would have,
    /// then sets the clock to `until`.
    fn advance_to(&mut self, until: i64) -> anyhow::Result<()> {
        if (until - self.next_tick) / self.interval > MAX_TICKS_PER_GAP {
            self.next_tick = until - (until - self.next_tick) % self.interval;
        }
        while self.next_tick <= until {
            let tick = self.next_tick;
            self.time.store(tick, Ordering::Relaxed);
            self.report.timer_calls += 1;
            match self.instance.on_timer(tick) {
                Ok(output) => self.emit(&output)?,
                Err(e) => self.fail(format!("timer at {}: {e}", fmt_time(tick))),
            }
            self.next_tick += self.interval;
        }
        self.time.store(until, Ordering::Relaxed);
        Ok(())
    }
}

/// The replay as the failure policy sees it: calls go straight to the
/// instance (no blocking pool: nothing else runs), a commit is a snapshot
/// the instance keeps, and back-off takes no time.
impl<W: Write> PolicyShard for Replayer<'_, W> {
    fn names(&self) -> (&str, &str) {
        ("replay", REPLAY_SHARD)
    }

    fn plugin_sha256(&self) -> String {
        self.instance.plugin().sha256().to_string()
    }

    fn progress(&self) -> &Progress {
        &self.progress
    }

    fn now_millis(&self) -> i64 {
        self.time.load(Ordering::Relaxed)
    }

    async fn process(&mut self, batch: Arc<PackedBatch>) -> anyhow::Result<Result<Processed, PluginError>> {
        Ok(self.instance.process(batch.as_wit()))
    }

    async fn accept(&mut self, _slice: &PackedBatch, _count: usize, output: &PluginOutput) -> anyhow::Result<()> {
        self.emit(output)
    }

    fn skip_to(&mut self, _sequence_number: &str) {}

    async fn commit(&mut self) -> anyhow::Result<()> {
        self.instance.checkpoint().context("cannot snapshot the plugin")?;
        self.uncommitted = Uncommitted::default();
        Ok(())
    }

    fn reset(&mut self, failure: &PluginError) -> anyhow::Result<()> {
        if !matches!(failure, PluginError::Trapped { .. }) {
            self.instance.reset();
        }
        Ok(())
    }

    async fn back_off(&mut self, _attempt: u32) {}

    fn in_probation(&self) -> bool {
        false
    }

    fn uncommitted(&mut self) -> &mut Uncommitted {
        &mut self.uncommitted
    }

    fn forget_uncommitted(&mut self) {
        self.uncommitted = Uncommitted::default();
    }
}

fn fmt_time(millis: i64) -> String {
    kinesis_processor_sdk::helpers::time::format_timestamp_millis(millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_text_json_and_base64_records() {
        let input = r#"{"partitionKey": "8.8.8.8", "data": "2018-07-29T22:35:46.694763", "approximateArrivalTimestamp": "2018-07-29T22:35:47Z"}
{"partitionKey": "a01", "data": {"name": "ruan"}}

{"partitionKey": "b", "dataBase64": "/w==", "arrival": 7, "sequenceNumber": "42"}
"#;
        let records = read_records(input.as_bytes(), "in.jsonl", 0).expect("valid");
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].arrival_millis, 1_532_903_747_000);
        assert_eq!(records[1].data, br#"{"name":"ruan"}"#);
        assert_eq!(records[1].arrival_millis, 1_532_903_747_000, "inherits the previous arrival");
        assert_eq!(records[2].data, vec![0xff]);
        assert_eq!(records[2].sequence_number, "42");
        assert!(records[0].sequence_number < records[1].sequence_number);
    }

    #[test]
    fn bad_lines_are_named() {
        for (input, needle) in [
            ("{\"data\": \"x\"}", "in.jsonl:1: not a record"),
            ("{\"partitionKey\": \"k\"}", "in.jsonl:1: a record needs `data`"),
            ("\n{\"partitionKey\": \"k\", \"dataBase64\": \"%%\"}", "in.jsonl:2: `dataBase64` is not valid base64"),
            ("{\"partitionKey\": \"k\", \"data\": \"x\", \"arrival\": \"soon\"}", "is not ISO-8601"),
        ] {
            let err = read_records(input.as_bytes(), "in.jsonl", 0).expect_err(input);
            assert!(format!("{err:#}").contains(needle), "{input}: {err:#}");
        }
    }
}
