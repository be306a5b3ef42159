//! The buffered counter's tests: lagging and shuffled input, lateness,
//! snapshot/restore, and windows across a split and a merge.
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
    let states: Vec<Snapshot> =
        children.iter().map(|c| Snapshot { version: BufferedCounter::STATE_VERSION, bytes: c.snapshot() }).collect();
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
