//! Counter: counts records per key in fixed windows of the record's own
//! time, and after each batch emits the counts that changed (seed 000's
//! CounterWorker, without its unbounded memory).
//!
//! Config (JSON, all optional):
//! - `key_field`: JSON field of the data to count by (default: partition key);
//! - `time_field`: JSON field with the event time (ISO-8601 or epoch ms);
//! - `event_time`: `"auto"` (time_field, else the data as an ISO-8601
//!   timestamp, else arrival time) or `"arrival"`;
//! - `window_seconds`: window size (default 60);
//! - `retention_windows`: how many windows back from the newest to keep
//!   (default 1440, one day of minutes); older ones are dropped.
//!
//! Output: one record per changed (window, key), keyed by the counted key:
//! `{"window_start":"2018-07-29T22:36:00Z","key":"8.8.8.8","count":7}`.
//!
//! Across resharding the counts go on: a split's children keep their share
//! of the parent's counts (`keep_counts_of`), a merge's child adds its
//! parents' (`merge_counts`), so a key's count after a reshard includes the
//! records before it.

use kinesis_processor_sdk::helpers::count::{
    keep_counts_of, merge_counts, range_field, retention_windows_setting, seconds_setting, write_count_head,
    CountsState, WindowCounts,
};
use kinesis_processor_sdk::helpers::select::{KeySelector, Selector, SelectorConfig};
use kinesis_processor_sdk::helpers::time::window_start;
use kinesis_processor_sdk::{export_processor, Batch, Output, ProcessError, Processor, ShardContext, Snapshot};
use serde::Deserialize;

/// The counter's settings; unknown fields are an error so typos surface.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CounterConfig {
    key_field: Option<String>,
    time_field: Option<String>,
    event_time: Option<String>,
    window_seconds: Option<u64>,
    retention_windows: Option<u64>,
}

/// Per-shard counting state.
pub struct Counter {
    /// Picks key and event time from each record.
    selector: Selector,
    /// Window size in milliseconds.
    window_millis: i64,
    /// Windows kept behind the newest one.
    retention_windows: i64,
    /// The counts.
    counts: WindowCounts,
    /// Start of the newest window seen, for retention.
    newest_window: i64,
    /// Where it runs: which keys are this shard's after a split.
    shard: ShardContext,
    /// Counting by partition key (so a split can divide the counts by key).
    by_partition_key: bool,
}

impl Counter {
    /// Emits the changed counts into `out`.
    fn emit_changed(&mut self, out: &mut Output) {
        self.counts.drain_changed(|window, key, count| {
            out.emit_with(key, |buf| {
                write_count_head(buf, window, key, Some(count));
                if cfg!(feature = "v2") {
                    buf.extend_from_slice(br#","logic":"v2""#);
                }
                buf.push(b'}');
            })
        });
    }
}

impl Processor for Counter {
    const NAME: &'static str = "counter";
    const STATE_VERSION: u32 = 1;

    fn init(config: &str, shard: &ShardContext) -> Result<Self, String> {
        let config: CounterConfig = serde_json::from_str(config).map_err(|e| format!("invalid counter config: {e}"))?;
        let (key, time) = SelectorConfig {
            key_field: config.key_field,
            time_field: config.time_field,
            event_time: config.event_time,
        }
        .selectors()?;
        let by_partition_key = key == KeySelector::PartitionKey;
        Ok(Counter {
            shard: shard.clone(),
            by_partition_key,
            selector: Selector::new(key, time),
            window_millis: seconds_setting(config.window_seconds, 60, 1, "window_seconds")?,
            retention_windows: retention_windows_setting(config.retention_windows)?,
            counts: WindowCounts::new(),
            newest_window: i64::MIN,
        })
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Output) -> Result<(), ProcessError> {
        for (index, record) in batch.iter().enumerate() {
            // The v2 test fixture has a bug to find: it traps on these keys
            // (rollback tests); the shipped counter has no such code.
            if cfg!(feature = "v2") && record.partition_key().starts_with("v2-trap") {
                panic!("counter v2: trap on key {}", record.partition_key());
            }
            let counted = self.selector.with_key_and_time(&record, |key, time| {
                let window = window_start(time, self.window_millis);
                self.counts.add(window, key, 1);
                window
            });
            match counted {
                Ok(window) => self.newest_window = self.newest_window.max(window),
                Err(e) => {
                    // Keep what the records before it counted, then name the poison record.
                    self.emit_changed(out);
                    return Err(ProcessError::fatal(e.to_string()).at_record(index));
                }
            }
        }
        self.emit_changed(out);
        let oldest_kept = self.newest_window.saturating_sub(self.retention_windows * self.window_millis);
        if self.counts.first_window().is_some_and(|w| w <= oldest_kept) {
            self.counts.split_off_before(oldest_kept + 1);
        }
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        let state = CountsState { windows: self.counts.to_snapshot(), range: range_field(&self.shard.hash_key_range) };
        serde_json::to_vec(&state).unwrap_or_default()
    }

    fn restore(&mut self, state: &[u8], version: u32) -> Result<(), String> {
        if version != Self::STATE_VERSION {
            return Err(format!("counter cannot read state version {version} (it writes {})", Self::STATE_VERSION));
        }
        let state: CountsState = serde_json::from_slice(state).map_err(|e| format!("counter state is corrupt: {e}"))?;
        self.newest_window = state.windows.iter().map(|(w, _)| *w).max().unwrap_or(i64::MIN);
        self.counts = WindowCounts::from_snapshot(state.windows);
        keep_counts_of(&mut self.counts, state.range.as_ref(), &self.shard, self.by_partition_key);
        Ok(())
    }

    fn merge(&mut self, parents: &[Snapshot]) -> Result<(), String> {
        self.counts = merge_counts(parents, Self::STATE_VERSION).map_err(|e| format!("counter: {e}"))?;
        self.newest_window = self.counts.last_window().unwrap_or(i64::MIN);
        Ok(())
    }
}

export_processor!(Counter);

#[cfg(test)]
mod tests {
    use super::*;
    use kinesis_processor_sdk::{BatchBuilder, HashKeyRange};

    fn outputs(out: &Output) -> Vec<serde_json::Value> {
        out.iter().map(|(_, d)| serde_json::from_slice(d).expect("json output")).collect()
    }

    #[test]
    fn counts_per_ip_per_minute_of_data_time() {
        let mut counter = Counter::init("{}", &ShardContext::default()).expect("init");
        let mut batch = BatchBuilder::new();
        batch
            .push("8.8.8.8", b"2018-07-29T22:35:58.1", 0)
            .push("8.8.8.8", b"2018-07-29T22:36:00.2", 0)
            .push("8.8.8.9", b"2018-07-29T22:36:01.3", 0)
            .push("8.8.8.8", b"2018-07-29T22:36:02.4", 0);
        let mut out = Output::new();
        counter.process(&batch.batch(), &mut out).expect("process");
        let got = outputs(&out);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], serde_json::json!({"window_start": "2018-07-29T22:35:00Z", "key": "8.8.8.8", "count": 1}));
        assert_eq!(got[1], serde_json::json!({"window_start": "2018-07-29T22:36:00Z", "key": "8.8.8.8", "count": 2}));
        assert_eq!(got[2], serde_json::json!({"window_start": "2018-07-29T22:36:00Z", "key": "8.8.8.9", "count": 1}));
    }

    #[test]
    fn poison_record_keeps_counts_before_it() {
        let mut counter = Counter::init(r#"{"key_field": "name"}"#, &ShardContext::default()).expect("init");
        let mut batch = BatchBuilder::new();
        batch.push("a01", br#"{"name": "ruan"}"#, 0).push("a01", b"not json", 0);
        let mut out = Output::new();
        let err = counter.process(&batch.batch(), &mut out).expect_err("second record is poison");
        assert_eq!(err.record_index, Some(1));
        assert!(!err.retryable);
        assert_eq!(outputs(&out)[0]["key"], "ruan");
    }

    #[test]
    fn retention_drops_old_windows() {
        let mut counter =
            Counter::init(r#"{"retention_windows": 2, "event_time": "arrival"}"#, &ShardContext::default())
                .expect("init");
        let mut batch = BatchBuilder::new();
        for minute in 0..5 {
            batch.push("k", b"", minute * 60_000);
        }
        counter.process(&batch.batch(), &mut Output::new()).expect("process");
        assert_eq!(counter.counts.window_count(), 2);
    }

    #[test]
    fn bad_configs_are_init_errors() {
        for (config, needle) in [
            (r#"{"window_seconds": 0}"#, "window_seconds"),
            (r#"{"windows_seconds": 5}"#, "windows_seconds"),
            ("not json", "invalid counter config"),
        ] {
            let err = Counter::init(config, &ShardContext::default()).err().unwrap_or_default();
            assert!(err.contains(needle), "{config}: {err}");
        }
    }

    #[test]
    fn counts_go_on_across_a_split_and_a_merge() {
        let keys: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
        let batch_of = |keys: &[&String]| {
            let mut batch = BatchBuilder::new();
            for key in keys {
                batch.push(key, b"2018-07-29T22:35:10", 0);
            }
            batch
        };
        let all: Vec<&String> = keys.iter().collect();
        let mut parent = Counter::init("{}", &ShardContext::default()).expect("init");
        parent.process(&batch_of(&all).batch(), &mut Output::new()).expect("process");
        let state = parent.snapshot();
        let half = u128::MAX / 2;
        let ranges = [HashKeyRange { start: 0, end: half }, HashKeyRange { start: half + 1, end: u128::MAX }];
        let mut states = Vec::new();
        let mut last = std::collections::BTreeMap::new();
        for range in ranges {
            let shard = ShardContext { hash_key_range: range, ..ShardContext::default() };
            let mut child = Counter::init("{}", &shard).expect("init");
            child.restore(&state, Counter::STATE_VERSION).expect("restore");
            let mine: Vec<&String> = keys.iter().filter(|k| range.contains_key(k.as_bytes())).collect();
            assert_eq!(child.counts.to_snapshot()[0].1.len(), mine.len(), "keeps only its own keys");
            let mut out = Output::new();
            child.process(&batch_of(&mine).batch(), &mut out).expect("process");
            for v in outputs(&out) {
                last.insert(v["key"].as_str().unwrap_or_default().to_string(), v["count"].as_u64());
            }
            states.push(Snapshot { version: Counter::STATE_VERSION, bytes: child.snapshot() });
        }
        assert!(last.values().all(|c| *c == Some(2)), "each key counted before and after the split: {last:?}");
        let mut merged = Counter::init("{}", &ShardContext::default()).expect("init");
        merged.merge(&states).expect("merge");
        let mut out = Output::new();
        merged.process(&batch_of(&all).batch(), &mut out).expect("process");
        assert!(outputs(&out).iter().all(|v| v["count"] == 3), "{:?}", outputs(&out));
        assert!(merged.merge(&[Snapshot { version: 9, bytes: b"{}".to_vec() }]).is_err());
    }
}
