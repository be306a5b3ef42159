//! `host test`: replays recorded records through a plugin offline, with a
//! virtual clock, timers and checkpoints, exactly as `host run` would call
//! it, under the same failure policy (`crate::policy`): retries, bisecting,
//! dead letters, and the stop before a poison record. Reshard lines in the
//! input split or merge the replayed shard (`reshard.rs`): children start
//! from their parents' final states as under `host run`.

mod input;
mod reshard;

pub use input::{read_input, read_lines, read_records, Format, InputReader, Item, LineKey, ReplayInput, Reshard};

use crate::batch::{InputRecord, PackedBatch};
use crate::plugin::bindings::{ShardContext, ShutdownReason, State};
use crate::plugin::{
    start_child, Clock, Inheritance, InstanceSettings, Plugin, PluginError, PluginInstance, PluginLimits, PluginOutput,
    Processed,
};
use crate::policy::{BatchVerdict, FailurePolicy, Policy, PolicyShard, Uncommitted};
use crate::progress::Progress;
use crate::sink::WriterSink;
use anyhow::Context;
use kinesis_processor_sdk::HashKeyRange;
use std::io::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

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
    /// Set when a shard stopped before a poison record (no dead-letter
    /// sink): which, with the same message `host run` gives.
    pub stopped: Option<(String, String)>,
    /// Shards replayed: 1, plus the children of each reshard.
    pub shards: usize,
    /// One line per child that started without its parents' state (a
    /// plugin built for 0.1.0, or one without `merge`).
    pub dropped_states: Vec<String>,
    /// One line per failed timer or shutdown call.
    pub failures: Vec<String>,
}

/// The shard id a replay starts with; a reshard's children are numbered
/// after it, as Kinesis numbers them.
pub const REPLAY_SHARD: &str = "shardId-000000000000";

/// Most timer calls fired in one gap between records; a longer gap jumps.
const MAX_TICKS_PER_GAP: i64 = 10_000;

/// Replays the input through `plugin` under the production failure policy,
/// one instance per shard (one shard until a reshard line splits or merges
/// it), writing output to `sink` and each failure to `diagnostics` as it
/// happens.
pub async fn replay<W: Write>(
    plugin: Arc<Plugin>,
    input: &ReplayInput,
    options: &ReplayOptions,
    sink: &mut WriterSink<W>,
    diagnostics: &mut dyn FnMut(&str),
) -> anyhow::Result<ReplayReport> {
    let records = &input.records;
    let start = records.first().map_or(0, |r| r.arrival_millis);
    let interval = options.timer_interval_millis.max(1);
    let context = ShardContext::new("replay", REPLAY_SHARD, "host-test");
    let (first, _) = Lane::start(&plugin, options, context, start, interval, Vec::new())?;
    let mut replayer = Replayer {
        lines: records.iter().zip(&input.lines).fold(Default::default(), |mut lines, (r, line)| {
            // Input may repeat a sequence number: the first line names it.
            lines.entry((r.sequence_number.as_str(), r.sub_sequence_number)).or_insert(line.as_str());
            lines
        }),
        lanes: vec![first],
        current: 0,
        sink,
        diagnostics,
        interval,
        report: ReplayReport::default(),
        progress: Progress::default(),
        uncommitted: Uncommitted::default(),
    };
    let mut from = 0;
    let mut ends = input.reshards.iter().map(|(at, r)| (*at, Some(r))).chain([(records.len(), None)]);
    let stopped = loop {
        let Some((until, reshard)) = ends.next() else { break false };
        let segment = &records[from..until.min(records.len())];
        from = until.min(records.len());
        if replayer.feed(&plugin, options, segment).await? {
            break true;
        }
        if let Some(reshard) = reshard {
            reshard::apply(&mut replayer, &plugin, options, reshard)?;
        }
    };
    let end = if stopped { ShutdownReason::Requested } else { options.end };
    for index in 0..replayer.lanes.len() {
        if replayer.lanes[index].ended {
            continue;
        }
        replayer.current = index;
        if !stopped {
            let lane = &replayer.lanes[index];
            replayer.advance_to(lane.now.max(lane.last_arrival) + options.drain_millis)?;
        }
        match replayer.lanes[index].instance.shutdown(end) {
            Ok(output) => replayer.emit(&output)?,
            Err(e) => replayer.fail(format!("shutdown: {e}")),
        }
    }
    let Replayer { sink, mut report, progress, lanes, .. } = replayer;
    sink.flush().context("cannot write output")?;
    report.emitted = sink.written();
    report.shards = lanes.len();
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

/// One shard of a replay: its instance, its virtual clock and timers.
struct Lane {
    instance: PluginInstance,
    /// The shard's hash-key range.
    range: HashKeyRange,
    /// The virtual clock the plugin reads.
    time: Arc<AtomicI64>,
    /// When the next timer call is due.
    next_tick: i64,
    /// The clock at the last batch.
    now: i64,
    /// The latest arrival time fed.
    last_arrival: i64,
    /// Batches fed (for `restart_every`).
    batches: usize,
    /// Read to its end by a reshard: its state went on in its children.
    ended: bool,
}

impl Lane {
    /// A shard's instance, started from its parents' final states (none for the first).
    fn start(
        plugin: &Arc<Plugin>,
        options: &ReplayOptions,
        context: ShardContext,
        now: i64,
        interval: i64,
        parents: Vec<State>,
    ) -> anyhow::Result<(Lane, Inheritance)> {
        let (clock, time) = Clock::manual(now);
        let range =
            HashKeyRange::parse(&context.hash_key_range.starting_hash_key, &context.hash_key_range.ending_hash_key)
                .unwrap_or_default();
        let settings =
            InstanceSettings { config: options.config.clone(), context, limits: options.limits.clone(), clock };
        let (instance, inheritance) = start_child(plugin.clone(), settings, parents)?;
        let lane =
            Lane { instance, range, time, next_tick: now + interval, now, last_arrival: now, batches: 0, ended: false };
        Ok((lane, inheritance))
    }
}

/// The moving parts of one replay.
struct Replayer<'a, W: Write> {
    /// Each record's input line (`FILE:LINE`) by sequence number: messages
    /// name the line, which the author can open.
    lines: std::collections::HashMap<(&'a str, u64), &'a str>,
    /// Every shard so far, in the order they were made.
    lanes: Vec<Lane>,
    /// The lane being fed.
    current: usize,
    sink: &'a mut WriterSink<W>,
    diagnostics: &'a mut dyn FnMut(&str),
    /// Timer period (ms).
    interval: i64,
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

    fn lane(&mut self) -> &mut Lane {
        &mut self.lanes[self.current]
    }

    /// Feeds each open shard its records of `segment` (by partition-key
    /// hash), in batches; true when a shard stopped before a poison record.
    async fn feed(
        &mut self,
        plugin: &Arc<Plugin>,
        options: &ReplayOptions,
        segment: &[InputRecord],
    ) -> anyhow::Result<bool> {
        let batch_size = options.batch_size.max(1);
        for index in 0..self.lanes.len() {
            if self.lanes[index].ended {
                continue;
            }
            self.current = index;
            let range = self.lanes[index].range;
            // Without reshards the one shard takes the input as it is.
            let mine: std::borrow::Cow<[InputRecord]> = if range.is_full() {
                segment.into()
            } else {
                segment.iter().filter(|r| range.contains_key(r.partition_key.as_bytes())).cloned().collect()
            };
            let mut policy = Policy::new(options.failure.clone(), 1);
            for chunk in mine.chunks(batch_size) {
                // A poller hands over records soon after the first of them arrives;
                // the rest arrived while it worked. Timers fire for the time before
                // the batch, so only real gaps in arrivals look like idle input.
                let now = self.lane().now;
                let batch_time = chunk.first().map_or(now, |r| r.arrival_millis).max(now);
                self.advance_to(batch_time)?;
                let lane = self.lane();
                lane.now = batch_time;
                lane.last_arrival =
                    lane.last_arrival.max(chunk.iter().map(|r| r.arrival_millis).max().unwrap_or(batch_time));
                lane.batches += 1;
                let number = lane.batches;
                let mut batch = PackedBatch::default();
                batch.repack(chunk, 0).with_context(|| format!("batch {number} of {}", self.shard_id()))?;
                self.report.batches += 1;
                self.report.records += chunk.len();
                match policy.handle(self, batch).await? {
                    BatchVerdict::Done => {}
                    BatchVerdict::Stopped(reason) => {
                        // As `host run` does: the shard stops right before the record.
                        self.report.stopped = Some((self.shard_id(), reason));
                        return Ok(true);
                    }
                    // Every batch is committed and nothing is ever swapped here.
                    verdict @ (BatchVerdict::Replay | BatchVerdict::RollBack(_)) => {
                        anyhow::bail!("the replay cannot {verdict:?}")
                    }
                }
                if options.restart_every.is_some_and(|n| n > 0 && number.is_multiple_of(n)) {
                    self.restart(plugin)?;
                }
            }
        }
        Ok(false)
    }

    /// Shuts the lane's instance down as a hot swap or restart would, then
    /// goes on with a fresh one restored from the snapshot just committed.
    fn restart(&mut self, plugin: &Arc<Plugin>) -> anyhow::Result<()> {
        let lane = self.lane();
        let settings = lane.instance.settings().clone();
        let state = lane.instance.committed_state().cloned();
        let fresh = PluginInstance::start(plugin.clone(), settings, state)?;
        let mut old = std::mem::replace(&mut lane.instance, fresh);
        self.emit(&old.shutdown(ShutdownReason::Requested)?)?;
        self.report.restarts += 1;
        Ok(())
    }

    fn shard_id(&self) -> String {
        self.lanes[self.current].instance.settings().context.shard_id.clone()
    }

    /// Fires every timer of the current lane due up to `until`, as a wall
    /// clock would have, then sets its clock to `until`.
    fn advance_to(&mut self, until: i64) -> anyhow::Result<()> {
        let interval = self.interval;
        let lane = self.lane();
        if (until - lane.next_tick) / interval > MAX_TICKS_PER_GAP {
            lane.next_tick = until - (until - lane.next_tick) % interval;
        }
        while self.lane().next_tick <= until {
            let lane = self.lane();
            let tick = lane.next_tick;
            lane.time.store(tick, Ordering::Relaxed);
            lane.next_tick += interval;
            self.report.timer_calls += 1;
            match self.lane().instance.on_timer(tick) {
                Ok(output) => self.emit(&output)?,
                Err(e) => self.fail(format!("timer at {}: {e}", fmt_time(tick))),
            }
        }
        self.lane().time.store(until, Ordering::Relaxed);
        Ok(())
    }
}

/// The replay as the failure policy sees it: calls go straight to the
/// instance (no blocking pool: nothing else runs), a commit is a snapshot
/// the instance keeps, and back-off takes no time.
impl<W: Write> PolicyShard for Replayer<'_, W> {
    fn names(&self) -> (&str, &str) {
        ("replay", &self.lanes[self.current].instance.settings().context.shard_id)
    }

    fn describe(&self, sequence_number: &str, sub_sequence_number: u64, partition_key: &[u8]) -> String {
        let key = String::from_utf8_lossy(partition_key);
        match self.lines.get(&(sequence_number, sub_sequence_number)) {
            Some(line) => format!("the record of {line} (partition key {key:?})"),
            None => format!("record {sequence_number} (partition key {key:?})"),
        }
    }

    fn plugin_sha256(&self) -> String {
        self.lanes[self.current].instance.plugin().sha256().to_string()
    }

    fn progress(&self) -> &Progress {
        &self.progress
    }

    fn now_millis(&self) -> i64 {
        self.lanes[self.current].time.load(Ordering::Relaxed)
    }

    async fn process(&mut self, batch: Arc<PackedBatch>) -> anyhow::Result<Result<Processed, PluginError>> {
        Ok(self.lane().instance.process(batch.as_wit()))
    }

    async fn accept(&mut self, _slice: &PackedBatch, _count: usize, output: &PluginOutput) -> anyhow::Result<()> {
        self.emit(output)
    }

    fn skip_to(&mut self, _position: crate::batch::Position) {}

    async fn commit(&mut self) -> anyhow::Result<()> {
        self.lane().instance.checkpoint().context("cannot snapshot the plugin")?;
        self.uncommitted = Uncommitted::default();
        Ok(())
    }

    fn reset(&mut self, failure: &PluginError) -> anyhow::Result<()> {
        if !matches!(failure, PluginError::Trapped { .. }) {
            self.lane().instance.reset();
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
