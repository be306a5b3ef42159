//! Buffered counter: counts like `counter`, but holds each window until it
//! is complete and emits it once, so late and out-of-order records (seed
//! 000's lagging producer) land in the right window before anyone sees it.
//!
//! A window `[start, start + size)` is complete when the watermark passes its
//! end. Watermark = newest event time seen − `allowed_lateness_seconds`; when
//! input stops, the timer moves it to `now − allowed_lateness_seconds` after
//! `idle_timeout_seconds` without records, so the last windows still close.
//! A record older than the watermark is never dropped: it is counted into its
//! window and emitted as a correction with the window's new total.
//!
//! Config (JSON, all optional): the counter's `key_field`, `time_field`,
//! `event_time`, `window_seconds`, plus `allowed_lateness_seconds` (default
//! 30), `idle_timeout_seconds` (default 10) and `retention_windows` (closed
//! windows kept for corrections with totals, default 1440).
//!
//! Across resharding, held windows go on in the children instead of being
//! flushed at the parent's end: a split's children keep their share (by
//! partition key), a merge's child adds both parents' windows and takes the
//! older watermark, and a record for a window one parent already emitted is
//! a correction there, never a second final.
//!
//! Output, keyed by the counted key:
//! `{"window_start":"…","key":"8.8.8.8","count":30,"kind":"final"}` once per
//! window and key, and `{"…","count":31,"kind":"correction","late":1}` for
//! late records (`count` is `null` when the window is past retention).

use kinesis_processor_sdk::helpers::count::{
    keep_counts_of, range_field, retention_windows_setting, seconds_setting, write_count_head, WindowCounts,
    WindowSnapshot,
};
use kinesis_processor_sdk::helpers::select::{KeySelector, Selector, SelectorConfig};
use kinesis_processor_sdk::helpers::time::window_start;
use kinesis_processor_sdk::{
    export_processor, log, Batch, LogLevel, Output, ProcessError, Processor, ShardContext, ShutdownReason, Snapshot,
};
use serde::{Deserialize, Serialize};

/// Settings; unknown fields are an error so typos surface.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BufferedCounterConfig {
    key_field: Option<String>,
    time_field: Option<String>,
    event_time: Option<String>,
    window_seconds: Option<u64>,
    allowed_lateness_seconds: Option<u64>,
    idle_timeout_seconds: Option<u64>,
    retention_windows: Option<u64>,
}

/// Everything that must survive a restart, as one serializable value.
#[derive(Debug, Default, Serialize, Deserialize)]
struct BufferedState {
    /// Open windows: counted, not yet emitted.
    open: Vec<WindowSnapshot>,
    /// Closed windows kept for correction totals.
    closed: Vec<WindowSnapshot>,
    /// Event time before which windows are complete (ms); `None` before any record.
    watermark: Option<i64>,
    /// Newest event time seen (ms).
    max_event_time: Option<i64>,
    /// Host time of the last timer tick that had seen input (ms).
    last_active_tick: Option<i64>,
    /// Whether records arrived since the previous timer tick.
    input_since_tick: bool,
    /// Oldest window start whose count is still kept (retention).
    #[serde(default)]
    retained_from: Option<i64>,
    /// The hash-key range of the shard that wrote it (see `CountsState::range`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    range: Option<[String; 2]>,
}

/// Per-shard state of the buffered counter.
pub struct BufferedCounter {
    selector: Selector,
    window_millis: i64,
    lateness_millis: i64,
    idle_millis: i64,
    retention_windows: i64,
    /// Windows still collecting records.
    open: WindowCounts,
    /// Emitted windows, kept so corrections can carry the new total.
    closed: WindowCounts,
    watermark: Option<i64>,
    max_event_time: Option<i64>,
    last_active_tick: Option<i64>,
    input_since_tick: bool,
    /// Closed windows at or after this start are kept, so a correction
    /// for them can carry the window's total.
    retained_from: Option<i64>,
    /// Where it runs: which keys are this shard's after a split.
    shard: ShardContext,
    /// Counting by partition key (so a split can divide the windows by key).
    by_partition_key: bool,
}

impl BufferedCounter {
    /// Moves the watermark forward (never back) and emits every window it completes.
    fn advance_watermark(&mut self, to: i64, out: &mut Output) {
        if self.watermark.is_some_and(|w| w >= to) {
            return;
        }
        self.watermark = Some(to);
        // Window `w` is complete when `w + size <= to`; the first incomplete
        // window start is the next multiple of size above `to - size`.
        let first_open =
            window_start(to.saturating_sub(self.window_millis), self.window_millis).saturating_add(self.window_millis);
        for (window, cells) in self.open.split_off_before(first_open) {
            for (key, count) in cells {
                out.emit_with(&key, |buf| {
                    write_count_head(buf, window, &key, Some(count));
                    buf.extend_from_slice(b",\"kind\":\"final\"}");
                });
                self.closed.add(window, key.as_bytes(), count);
            }
        }
        // Closed windows were emitted; their change marks mean nothing.
        self.closed.drain_changed(|_, _, _| {});
        let keep_from = first_open.saturating_sub(self.retention_windows * self.window_millis);
        self.closed.split_off_before(keep_from);
        self.retained_from = Some(keep_from);
    }
}

impl Processor for BufferedCounter {
    const NAME: &'static str = "buffered-counter";
    const STATE_VERSION: u32 = 1;

    fn init(config: &str, shard: &ShardContext) -> Result<Self, String> {
        let config: BufferedCounterConfig =
            serde_json::from_str(config).map_err(|e| format!("invalid buffered-counter config: {e}"))?;
        let (key, time) = SelectorConfig {
            key_field: config.key_field,
            time_field: config.time_field,
            event_time: config.event_time,
        }
        .selectors()?;
        let by_partition_key = key == KeySelector::PartitionKey;
        Ok(BufferedCounter {
            shard: shard.clone(),
            by_partition_key,
            selector: Selector::new(key, time),
            window_millis: seconds_setting(config.window_seconds, 60, 1, "window_seconds")?,
            lateness_millis: seconds_setting(config.allowed_lateness_seconds, 30, 0, "allowed_lateness_seconds")?,
            idle_millis: seconds_setting(config.idle_timeout_seconds, 10, 0, "idle_timeout_seconds")?,
            retention_windows: retention_windows_setting(config.retention_windows)?,
            open: WindowCounts::new(),
            closed: WindowCounts::new(),
            watermark: None,
            max_event_time: None,
            last_active_tick: None,
            input_since_tick: false,
            retained_from: None,
        })
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Output) -> Result<(), ProcessError> {
        let mut late = WindowCounts::new();
        let mut failure = None;
        // Only after a merge are there emitted windows past the watermark
        // (one parent's clock ran ahead): a record for one is a correction.
        let closed_ahead = self
            .closed
            .last_window()
            .is_some_and(|w| self.watermark.is_none_or(|mark| w.saturating_add(self.window_millis) > mark));
        for (index, record) in batch.iter().enumerate() {
            let (window_millis, watermark, open) = (self.window_millis, self.watermark, &mut self.open);
            let closed = &self.closed;
            let selected = self.selector.with_key_and_time(&record, |key, time| {
                let window = window_start(time, window_millis);
                if watermark.is_some_and(|w| window.saturating_add(window_millis) <= w)
                    || (closed_ahead && closed.contains(window, key))
                {
                    late.add(window, key, 1);
                } else {
                    open.add(window, key, 1);
                }
                time
            });
            match selected {
                Ok(time) => self.max_event_time = Some(self.max_event_time.map_or(time, |t| t.max(time))),
                Err(e) => {
                    failure = Some(ProcessError::fatal(e.to_string()).at_record(index));
                    break;
                }
            }
        }
        if !batch.is_empty() {
            self.input_since_tick = true;
        }
        // Open windows are held, not emitted: their change marks are not needed.
        self.open.drain_changed(|_, _, _| {});
        late.drain_changed(|window, key, n| {
            // Within retention the window's total is known (even if no record
            // made it in time and no final was emitted); past it, only the delta.
            let retained = self.retained_from.is_some_and(|from| window >= from);
            let total = retained.then(|| self.closed.add(window, key.as_bytes(), n));
            out.emit_with(key, |buf| {
                write_count_head(buf, window, key, total);
                buf.extend_from_slice(format!(",\"kind\":\"correction\",\"late\":{n}}}").as_bytes());
            });
        });
        self.closed.drain_changed(|_, _, _| {});
        if let Some(max) = self.max_event_time {
            self.advance_watermark(max - self.lateness_millis, out);
        }
        failure.map_or(Ok(()), Err)
    }

    fn on_timer(&mut self, now_millis: i64, out: &mut Output) -> Result<(), ProcessError> {
        if self.input_since_tick || self.last_active_tick.is_none() {
            self.input_since_tick = false;
            self.last_active_tick = Some(now_millis);
        } else if self.last_active_tick.is_some_and(|t| now_millis - t >= self.idle_millis) {
            self.advance_watermark(now_millis - self.lateness_millis, out);
        }
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        let state = BufferedState {
            open: self.open.to_snapshot(),
            closed: self.closed.to_snapshot(),
            watermark: self.watermark,
            max_event_time: self.max_event_time,
            last_active_tick: self.last_active_tick,
            input_since_tick: self.input_since_tick,
            retained_from: self.retained_from,
            range: range_field(&self.shard.hash_key_range),
        };
        serde_json::to_vec(&state).unwrap_or_default()
    }

    fn restore(&mut self, state: &[u8], version: u32) -> Result<(), String> {
        if version != Self::STATE_VERSION {
            return Err(format!(
                "buffered-counter cannot read state version {version} (it writes {})",
                Self::STATE_VERSION
            ));
        }
        let state: BufferedState =
            serde_json::from_slice(state).map_err(|e| format!("buffered-counter state is corrupt: {e}"))?;
        self.open = WindowCounts::from_snapshot(state.open);
        self.closed = WindowCounts::from_snapshot(state.closed);
        keep_counts_of(&mut self.open, state.range.as_ref(), &self.shard, self.by_partition_key);
        keep_counts_of(&mut self.closed, state.range.as_ref(), &self.shard, self.by_partition_key);
        self.watermark = state.watermark;
        self.max_event_time = state.max_event_time;
        self.last_active_tick = state.last_active_tick;
        self.input_since_tick = state.input_since_tick;
        self.retained_from = state.retained_from;
        Ok(())
    }

    fn merge(&mut self, parents: &[Snapshot]) -> Result<(), String> {
        let (mut open, mut closed) = (Vec::new(), Vec::new());
        for (index, parent) in parents.iter().enumerate().filter(|(_, p)| !p.bytes.is_empty()) {
            if parent.version != Self::STATE_VERSION {
                return Err(format!("buffered-counter: parent {index}'s state is version {}", parent.version));
            }
            let state: BufferedState = serde_json::from_slice(&parent.bytes)
                .map_err(|e| format!("buffered-counter: parent {index}'s state is corrupt: {e}"))?;
            open.extend(state.open);
            closed.extend(state.closed);
            // The older watermark: no window is complete until it is
            // complete for both halves of the key space.
            self.watermark = min_some(self.watermark, state.watermark);
            self.max_event_time = self.max_event_time.max(state.max_event_time);
            self.last_active_tick = self.last_active_tick.max(state.last_active_tick);
            self.input_since_tick |= state.input_since_tick;
            self.retained_from = min_some(self.retained_from, state.retained_from);
        }
        self.open = WindowCounts::from_snapshot(open);
        self.closed = WindowCounts::from_snapshot(closed);
        Ok(())
    }

    fn shutdown(&mut self, reason: ShutdownReason, _out: &mut Output) {
        // Held windows are never flushed early: at a shard's end they go on
        // in its children (the state just snapshotted), at a stop they wait
        // in the saved state. Say so, or they look lost.
        let Some(first) = self.open.first_window() else { return };
        let first = kinesis_processor_sdk::helpers::time::format_timestamp_millis(first);
        let count = self.open.window_count();
        let message = match reason {
            ShutdownReason::ShardEnded => {
                format!("shard ended holding {count} incomplete window(s) from {first}: its child shards go on counting them")
            }
            _ => format!(
                "holding {count} incomplete window(s) from {first} in the saved state: the next run emits them once complete"
            ),
        };
        log(LogLevel::Warn, &message);
    }
}

/// The smaller of two optional values, ignoring a missing one.
fn min_some(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

export_processor!(BufferedCounter);

#[cfg(test)]
mod tests {
    use super::*;
    use kinesis_processor_sdk::helpers::time::parse_timestamp_millis;
    use kinesis_processor_sdk::{BatchBuilder, HashKeyRange};
    use std::collections::BTreeMap;

    /// (window_start, key) → (final count, sum of corrections' late counts).
    type Tally = BTreeMap<(String, String), (u64, u64)>;

    fn tally(out: &Output, into: &mut Tally) {
        for (_, data) in out.iter() {
            let v: serde_json::Value = serde_json::from_slice(data).expect("json");
            let slot = into
                .entry((
                    v["window_start"].as_str().unwrap_or_default().into(),
                    v["key"].as_str().unwrap_or_default().into(),
                ))
                .or_default();
            match v["kind"].as_str() {
                Some("final") => {
                    assert_eq!(slot.0, 0, "window emitted twice: {v}");
                    slot.0 = v["count"].as_u64().unwrap_or_default();
                }
                Some("correction") => slot.1 += v["late"].as_u64().unwrap_or_default(),
                other => panic!("unknown kind {other:?}"),
            }
        }
    }

    fn ts(text: &str) -> i64 {
        parse_timestamp_millis(text.as_bytes()).expect("timestamp")
    }

    /// Seed 000 with lag: 8.8.8.8 every 2 s, 8.8.8.9 every 5 s but delivered
    /// `lag` seconds late, interleaved by arrival time.
    fn lagging_records(lag: i64) -> Vec<(String, String, i64)> {
        let start = ts("2018-07-29T22:35:30");
        let mut records = Vec::new();
        for i in 0..90 {
            let t = start + i * 2000;
            records.push(("8.8.8.8".to_string(), t, t));
        }
        for i in 0..36 {
            let t = start + i * 5000;
            records.push(("8.8.8.9".to_string(), t, t + lag * 1000));
        }
        records.sort_by_key(|r| r.2);
        records
            .into_iter()
            .map(|(ip, t, arrival)| (ip, kinesis_processor_sdk::helpers::time::format_timestamp_millis(t), arrival))
            .collect()
    }

    fn expected(records: &[(String, String, i64)]) -> Tally {
        let mut want = Tally::new();
        for (ip, t, _) in records {
            let w = kinesis_processor_sdk::helpers::time::format_timestamp_millis(window_start(ts(t), 60_000));
            want.entry((w, ip.clone())).or_default().0 += 1;
        }
        want
    }

    fn run(counter: &mut BufferedCounter, records: &[(String, String, i64)], batch_size: usize, got: &mut Tally) {
        for chunk in records.chunks(batch_size) {
            let mut batch = BatchBuilder::new();
            for (ip, t, arrival) in chunk {
                batch.push(ip, t.as_bytes(), *arrival);
            }
            let mut out = Output::new();
            counter.process(&batch.batch(), &mut out).expect("process");
            let now = chunk.last().map(|r| r.2).unwrap_or_default();
            counter.on_timer(now, &mut out).expect("timer");
            tally(&out, got);
        }
    }

    fn drain(counter: &mut BufferedCounter, from: i64, got: &mut Tally) {
        let mut out = Output::new();
        for tick in 1..=120 {
            counter.on_timer(from + tick * 1000, &mut out).expect("timer");
        }
        tally(&out, got);
    }

    #[test]
    fn lagging_producer_lands_in_the_right_windows() {
        let records = lagging_records(20);
        let mut counter =
            BufferedCounter::init(r#"{"allowed_lateness_seconds": 30}"#, &ShardContext::default()).expect("init");
        let mut got = Tally::new();
        run(&mut counter, &records, 5, &mut got);
        drain(&mut counter, records.last().map(|r| r.2).unwrap_or_default(), &mut got);
        assert_eq!(got, expected(&records), "every window final, exact, no corrections");
    }

    #[test]
    fn shuffled_input_gives_the_same_windows() {
        let mut records = lagging_records(0);
        // Deterministic shuffle within a 20 s displacement (xorshift).
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for i in (1..records.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let j = i.saturating_sub((seed % 8) as usize);
            records.swap(i, j);
        }
        let mut counter =
            BufferedCounter::init(r#"{"allowed_lateness_seconds": 60}"#, &ShardContext::default()).expect("init");
        let mut got = Tally::new();
        run(&mut counter, &records, 7, &mut got);
        drain(&mut counter, records.iter().map(|r| r.2).max().unwrap_or_default(), &mut got);
        assert_eq!(got, expected(&records));
    }

    #[test]
    fn records_later_than_the_lateness_become_corrections() {
        let records = lagging_records(90);
        let mut counter =
            BufferedCounter::init(r#"{"allowed_lateness_seconds": 10}"#, &ShardContext::default()).expect("init");
        let mut got = Tally::new();
        run(&mut counter, &records, 5, &mut got);
        drain(&mut counter, records.last().map(|r| r.2).unwrap_or_default(), &mut got);
        let corrections: u64 = got.values().map(|(_, late)| late).sum();
        assert!(corrections > 0, "a 90 s lag beyond 10 s lateness must produce corrections");
        // Nothing dropped: finals plus corrections add up to what was produced.
        let total: u64 = got.values().map(|(f, late)| f + late).sum();
        assert_eq!(total, records.len() as u64);
        for (key, (f, late)) in &got {
            assert_eq!(f + late, expected(&records)[key].0, "{key:?}");
        }
    }

    #[test]
    fn snapshot_restore_continue_equals_uninterrupted() {
        let records = lagging_records(20);
        let config = r#"{"allowed_lateness_seconds": 30}"#;
        let mut whole = BufferedCounter::init(config, &ShardContext::default()).expect("init");
        let mut want = Tally::new();
        run(&mut whole, &records, 5, &mut want);

        let (first, second) = records.split_at(records.len() / 2 + 3);
        let mut before = BufferedCounter::init(config, &ShardContext::default()).expect("init");
        let mut got = Tally::new();
        run(&mut before, first, 5, &mut got);
        let state = before.snapshot();
        drop(before);
        let mut after = BufferedCounter::init(config, &ShardContext::default()).expect("init");
        after.restore(&state, BufferedCounter::STATE_VERSION).expect("restore");
        run(&mut after, second, 5, &mut got);
        assert_eq!(got, want);
        assert!(after.restore(b"{not json", 1).unwrap_err().contains("corrupt"));
        assert!(after.restore(&state, 99).unwrap_err().contains("version 99"));
    }

    /// Ten keys, a record each per second for five minutes, 20 s late for
    /// odd keys (so windows stay open across the reshards below).
    fn many_keys() -> Vec<(String, String, i64)> {
        let start = ts("2018-07-29T22:35:30");
        let mut records: Vec<_> = (0..300)
            .map(|n| {
                let t = start + n * 1000;
                let key = format!("10.0.0.{}", n % 10);
                let lag = if n % 2 == 1 { 20_000 } else { 0 };
                (key, kinesis_processor_sdk::helpers::time::format_timestamp_millis(t), t + lag)
            })
            .collect();
        records.sort_by_key(|r| r.2);
        records
    }

    fn context(range: HashKeyRange, parents: &[&str]) -> ShardContext {
        ShardContext {
            hash_key_range: range,
            parents: parents.iter().map(|p| p.to_string()).collect(),
            ..ShardContext::default()
        }
    }

    #[test]
    fn windows_stay_exact_across_a_split_then_a_merge() {
        let records = many_keys();
        let config = r#"{"allowed_lateness_seconds": 30}"#;
        let (first, rest) = records.split_at(100);
        let (second, third) = rest.split_at(100);
        let mut got = Tally::new();
        let mut parent = BufferedCounter::init(config, &ShardContext::default()).expect("init");
        run(&mut parent, first, 5, &mut got);
        let mut out = Output::new();
        let state = parent.snapshot();
        parent.shutdown(ShutdownReason::ShardEnded, &mut out);
        assert!(out.is_empty(), "held windows go on in the children, not flushed at the end");

        let half = u128::MAX / 2;
        let ranges = [HashKeyRange { start: 0, end: half }, HashKeyRange { start: half + 1, end: u128::MAX }];
        let mut children: Vec<BufferedCounter> = ranges
            .iter()
            .map(|&range| {
                let mut child = BufferedCounter::init(config, &context(range, &["p"])).expect("init");
                child.restore(&state, BufferedCounter::STATE_VERSION).expect("restore");
                child
            })
            .collect();
        for (child, range) in children.iter_mut().zip(ranges) {
            let mine: Vec<_> = second.iter().filter(|r| range.contains_key(r.0.as_bytes())).cloned().collect();
            assert!(!mine.is_empty(), "both halves get keys");
            run(child, &mine, 5, &mut got);
        }
        let states: Vec<Snapshot> = children
            .iter()
            .map(|c| Snapshot { version: BufferedCounter::STATE_VERSION, bytes: c.snapshot() })
            .collect();
        let mut merged = BufferedCounter::init(config, &context(HashKeyRange::default(), &["c1", "c2"])).expect("init");
        merged.merge(&states).expect("merge");
        run(&mut merged, third, 5, &mut got);
        drain(&mut merged, records.last().map(|r| r.2).unwrap_or_default(), &mut got);
        // `tally` fails on a second final; every (window, key) adds up.
        let want = expected(&records);
        assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
        for (key, (count, _)) in &want {
            let (fin, late) = got[key];
            assert_eq!(fin + late, *count, "{key:?}");
        }
    }

    #[test]
    fn a_window_one_parent_emitted_takes_corrections_after_a_merge() {
        let config = r#"{"allowed_lateness_seconds": 30}"#;
        let records = |key: &str, from: &str, to: &str| -> Vec<(String, String, i64)> {
            (ts(from)..=ts(to))
                .step_by(10_000)
                .map(|t| (key.to_string(), kinesis_processor_sdk::helpers::time::format_timestamp_millis(t), t))
                .collect()
        };
        let mut got = Tally::new();
        // Parent `a` is ahead: its watermark closed 22:35 to 22:38; `b` is behind.
        let mut a = BufferedCounter::init(config, &ShardContext::default()).expect("init");
        run(&mut a, &records("a", "2018-07-29T22:35:00", "2018-07-29T22:40:00"), 5, &mut got);
        let mut b = BufferedCounter::init(config, &ShardContext::default()).expect("init");
        run(&mut b, &records("b", "2018-07-29T22:35:00", "2018-07-29T22:36:00"), 5, &mut got);
        assert_eq!(got[&("2018-07-29T22:37:00Z".to_string(), "a".to_string())], (6, 0));
        let states = [a.snapshot(), b.snapshot()].map(|bytes| Snapshot { version: 1, bytes });
        let mut merged = BufferedCounter::init(config, &context(HashKeyRange::default(), &["a", "b"])).expect("init");
        merged.merge(&states).expect("merge");
        assert_eq!(merged.watermark, b.watermark, "the older watermark");
        // A record for a window `a` already emitted: a correction, not a second final.
        run(&mut merged, &records("a", "2018-07-29T22:37:10", "2018-07-29T22:37:10"), 5, &mut got);
        drain(&mut merged, ts("2018-07-29T22:41:00"), &mut got);
        assert_eq!(got[&("2018-07-29T22:37:00Z".to_string(), "a".to_string())], (6, 1));
        assert_eq!(got[&("2018-07-29T22:36:00Z".to_string(), "b".to_string())].0, 1, "b's held window closes once");
    }
}
