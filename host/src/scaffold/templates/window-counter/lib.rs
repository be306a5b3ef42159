//! {{name}}: counts records per partition key in windows of the record's
//! own time (the timestamp its data starts with, else its arrival) and,
//! after each batch, emits each count that changed (start from here):
//! `{"window_start":"2018-07-29T22:35:00Z","key":"8.8.8.8","count":2}`.
//!
//! Config (JSON, all optional): `{"window_seconds": 60, "keep_windows": 60}`.
//! The counts are the state: snapshot/restore carry them across restarts
//! and hot swaps, a split keeps each child's own keys, a merge adds both
//! parents'.

use kinesis_processor_sdk::helpers::state::retain_own_keys;
use kinesis_processor_sdk::helpers::time::{format_timestamp_millis, parse_leading_timestamp, window_start};
use kinesis_processor_sdk::{export_processor, Batch, Output, ProcessError, Processor, ShardContext, Snapshot};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

/// The settings, parsed once: a typo is an error at `init`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "sixty")]
    window_seconds: u32,
    #[serde(default = "sixty")]
    keep_windows: u32,
}

fn sixty() -> u32 {
    60
}

/// Window start (ms since the epoch) → partition key → count. The JSON of
/// this map is the state (window starts as strings), the same in Rust,
/// Python and JavaScript.
type Counts = BTreeMap<i64, BTreeMap<String, u64>>;

/// One per shard.
pub struct App {
    window_millis: i64,
    /// Windows older than the newest by more than this many are dropped.
    keep_windows: i64,
    counts: Counts,
    /// Which keys this shard owns (after a split, a child keeps its own).
    shard: ShardContext,
}

impl App {
    /// A state `snapshot` wrote, of this layout version.
    fn parse(bytes: &[u8], version: u32, what: &str) -> Result<Counts, String> {
        if bytes.is_empty() {
            return Ok(Counts::new());
        }
        if version != Self::STATE_VERSION {
            return Err(format!("cannot read {what} of version {version} (this writes {})", Self::STATE_VERSION));
        }
        serde_json::from_slice(bytes).map_err(|e| format!("{what} is corrupt: {e}"))
    }
}

impl Processor for App {
    const NAME: &'static str = "{{name}}";
    /// Bump it when the layout of `snapshot` changes (and read the old one in `restore`).
    const STATE_VERSION: u32 = 1;

    fn init(config: &str, shard: &ShardContext) -> Result<Self, String> {
        let config: Config = serde_json::from_str(config).map_err(|e| format!("invalid config: {e}"))?;
        if config.window_seconds == 0 || config.keep_windows == 0 {
            return Err("invalid config: `window_seconds` and `keep_windows` must be at least 1".into());
        }
        Ok(App {
            window_millis: i64::from(config.window_seconds) * 1000,
            keep_windows: i64::from(config.keep_windows),
            counts: Counts::new(),
            shard: shard.clone(),
        })
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Output) -> Result<(), ProcessError> {
        let mut changed = BTreeSet::new();
        for record in batch.iter() {
            let time = parse_leading_timestamp(record.data()).unwrap_or(record.approximate_arrival_millis());
            let window = window_start(time, self.window_millis);
            let key = record.partition_key();
            *self.counts.entry(window).or_default().entry(key.to_string()).or_default() += 1;
            changed.insert((window, key));
        }
        for (window, key) in changed {
            let count = self.counts[&window][key];
            let key_json = serde_json::to_string(key).unwrap_or_default();
            let start = format_timestamp_millis(window);
            out.emit(key, format!(r#"{{"window_start":"{start}","key":{key_json},"count":{count}}}"#).as_bytes());
        }
        // Windows too old to change again are forgotten (the state stays small).
        if let Some(&newest) = self.counts.keys().next_back() {
            let oldest_kept = newest.saturating_sub(self.keep_windows.saturating_mul(self.window_millis));
            self.counts.retain(|&window, _| window > oldest_kept);
        }
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&self.counts).unwrap_or_default()
    }

    fn restore(&mut self, state: &[u8], version: u32) -> Result<(), String> {
        self.counts = Self::parse(state, version, "the saved state")?;
        for keys in self.counts.values_mut() {
            retain_own_keys(keys, &self.shard);
        }
        self.counts.retain(|_, keys| !keys.is_empty());
        Ok(())
    }

    fn merge(&mut self, parents: &[Snapshot]) -> Result<(), String> {
        self.counts = Counts::new();
        for (index, parent) in parents.iter().enumerate() {
            for (window, keys) in Self::parse(&parent.bytes, parent.version, &format!("parent {index}'s state"))? {
                for (key, count) in keys {
                    *self.counts.entry(window).or_default().entry(key).or_default() += count;
                }
            }
        }
        Ok(())
    }
}

export_processor!(App);

#[cfg(test)]
mod tests {
    use super::*;
    use kinesis_processor_sdk::{BatchBuilder, HashKeyRange};

    fn process(app: &mut App, records: &[(&str, &str)]) -> Vec<String> {
        let mut batch = BatchBuilder::new();
        for (key, data) in records {
            batch.push(key, data.as_bytes(), 0);
        }
        let mut out = Output::new();
        app.process(&batch.batch(), &mut out).expect("process");
        out.iter().map(|(_, data)| String::from_utf8_lossy(data).into_owned()).collect()
    }

    #[test]
    fn counts_per_key_and_window_across_batches() {
        let mut app = App::init("{}", &ShardContext::default()).expect("init");
        let first = process(&mut app, &[("a", "2018-07-29T22:35:46Z x"), ("b", "2018-07-29T22:35:50Z y")]);
        assert_eq!(first.len(), 2);
        let second = process(&mut app, &[("a", "2018-07-29T22:35:59Z z")]);
        assert_eq!(second, vec![r#"{"window_start":"2018-07-29T22:35:00Z","key":"a","count":2}"#]);
    }

    #[test]
    fn state_survives_a_restart_and_merges_add_up() {
        let mut app = App::init("{}", &ShardContext::default()).expect("init");
        process(&mut app, &[("a", "2018-07-29T22:35:46Z"), ("a", "2018-07-29T22:35:47Z")]);
        let state = app.snapshot();
        let mut again = App::init("{}", &ShardContext::default()).expect("init");
        again.restore(&state, App::STATE_VERSION).expect("restore");
        assert!(process(&mut again, &[("a", "2018-07-29T22:35:48Z")])[0].contains(r#""count":3"#));
        let mut merged = App::init("{}", &ShardContext::default()).expect("init");
        let parent = Snapshot { version: App::STATE_VERSION, bytes: state };
        merged.merge(&[parent.clone(), parent]).expect("merge");
        assert!(process(&mut merged, &[("a", "2018-07-29T22:35:49Z")])[0].contains(r#""count":5"#));
    }

    #[test]
    fn a_split_child_keeps_only_its_own_keys() {
        let mut app = App::init("{}", &ShardContext::default()).expect("init");
        process(&mut app, &[("a", "2018-07-29T22:35:46Z"), ("b", "2018-07-29T22:35:47Z")]);
        let state = app.snapshot();
        let half = u128::MAX / 2;
        let halves = [HashKeyRange { start: 0, end: half }, HashKeyRange { start: half + 1, end: u128::MAX }];
        let kept: usize = halves
            .into_iter()
            .map(|range| {
                let shard = ShardContext { hash_key_range: range, ..ShardContext::default() };
                let mut child = App::init("{}", &shard).expect("init");
                child.restore(&state, App::STATE_VERSION).expect("restore");
                child.counts.values().map(BTreeMap::len).sum::<usize>()
            })
            .sum();
        assert_eq!(kept, 2, "each key lives on in exactly one child");
    }
}
