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
mod tests;
