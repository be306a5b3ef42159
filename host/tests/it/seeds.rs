//! The seeds' scenarios through the real components and the `host test`
//! binary: seed 000's echo and counters (with a lagging producer), seed
//! 001's JSON documents, shuffled and late input, and snapshot/restore.

use crate::common::*;
use std::collections::BTreeMap;

fn plugin(name: &str) -> String {
    plugin_path(name).display().to_string()
}

#[test]
fn echo_prints_partition_key_and_data_like_seed_000() {
    let records = seed000(20, 0);
    let run = host(&["test", "--plugin", &plugin("echo"), "--batch-size", "25"], &seed000_jsonl(&records));
    assert_eq!(run.code, 0, "{}", run.stderr);
    let want: Vec<String> =
        records.iter().map(|r| format!("{} : {}", r.ip, python_isoformat(r.stamped_millis))).collect();
    assert_eq!(run.stdout.lines().collect::<Vec<_>>(), want);
    assert!(want[0].starts_with("8.8.8.8 : 2018-07-29T22:35:30.000000"), "{}", want[0]);
}

#[test]
fn echo_shows_binary_data_as_base64() {
    let run = host(&["test", "--plugin", &plugin("echo")], r#"{"partitionKey": "k", "dataBase64": "AP8="}"#);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout.trim(), "k : base64:AP8=");
}

/// The last count the counter emitted for each (window, key).
fn last_counts(stdout: &str) -> BTreeMap<(String, String), u64> {
    let mut last = BTreeMap::new();
    for v in json_lines(stdout) {
        let key = (
            v["window_start"].as_str().unwrap_or_default().to_string(),
            v["key"].as_str().unwrap_or_default().to_string(),
        );
        let count = v["count"].as_u64().unwrap_or_default();
        let previous = last.insert(key.clone(), count);
        assert!(previous.is_none_or(|p| p < count), "counts only grow: {key:?} {previous:?} -> {count}");
    }
    last
}

#[test]
fn counter_counts_seed_000_per_minute_of_the_records_own_time() {
    // Three minutes of both producers; 8.8.8.9 lags 20 s, so its records
    // arrive after later 8.8.8.8 ones, yet count in the minute they were stamped.
    let records = seed000(180, 20);
    let run = host(&["test", "--plugin", &plugin("counter"), "--batch-size", "25"], &seed000_jsonl(&records));
    assert_eq!(run.code, 0, "{}", run.stderr);
    let want = expected_minute_counts(&records);
    assert_eq!(last_counts(&run.stdout), want);
    // The seed's own figures: 30 per minute from the 2 s producer, 12 from the 5 s one.
    assert_eq!(want[&("2018-07-29T22:36:00Z".to_string(), "8.8.8.8".to_string())], 30);
    assert_eq!(want[&("2018-07-29T22:36:00Z".to_string(), "8.8.8.9".to_string())], 12);
}

/// Counts per (window start, key).
type Counts = BTreeMap<(String, String), u64>;

/// (final counts, late records per window and key) of buffered-counter output.
fn buffered_output(stdout: &str) -> (Counts, Counts) {
    let (mut finals, mut late) = (BTreeMap::new(), BTreeMap::new());
    for v in json_lines(stdout) {
        let key = (
            v["window_start"].as_str().unwrap_or_default().to_string(),
            v["key"].as_str().unwrap_or_default().to_string(),
        );
        match v["kind"].as_str() {
            Some("final") => assert!(
                finals.insert(key, v["count"].as_u64().unwrap_or_default()).is_none(),
                "window emitted twice: {v}"
            ),
            Some("correction") => {
                let seen = late.entry(key.clone()).or_insert(0);
                *seen += v["late"].as_u64().unwrap_or_default();
                let total = finals.get(&key).copied().unwrap_or_default() + *seen;
                assert_eq!(v["count"].as_u64(), Some(total), "a correction carries the new total: {v}");
            }
            other => panic!("unknown kind {other:?} in {v}"),
        }
    }
    (finals, late)
}

#[test]
fn buffered_counter_emits_each_window_once_despite_a_lagging_producer() {
    let records = seed000(180, 20);
    let run = host(
        &[
            "test",
            "--plugin",
            &plugin("buffered-counter"),
            "--config",
            r#"{"allowed_lateness_seconds": 30, "idle_timeout_seconds": 10}"#,
            "--batch-size",
            "5",
            // Windows close by watermark and then by the idle timer, not by shard end.
            "--end",
            "requested",
        ],
        &seed000_jsonl(&records),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let (finals, late) = buffered_output(&run.stdout);
    assert_eq!(finals, expected_minute_counts(&records));
    assert!(late.is_empty(), "lateness 30 s covers a 20 s lag: {late:?}");
    let starts: Vec<String> =
        json_lines(&run.stdout).iter().map(|v| v["window_start"].as_str().unwrap_or_default().to_owned()).collect();
    assert!(starts.windows(2).all(|w| w[0] <= w[1]), "windows are emitted in time order");
}

#[test]
fn buffered_counter_turns_records_later_than_allowed_into_corrections() {
    let records = seed000(240, 90);
    let run = host(
        &[
            "test",
            "--plugin",
            &plugin("buffered-counter"),
            "--config",
            r#"{"allowed_lateness_seconds": 10}"#,
            "--batch-size",
            "5",
        ],
        &seed000_jsonl(&records),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let (finals, late) = buffered_output(&run.stdout);
    assert!(late.values().sum::<u64>() > 0, "a 90 s lag beyond 10 s lateness must produce corrections");
    let mut totals = finals.clone();
    for (key, n) in &late {
        *totals.entry(key.clone()).or_insert(0) += n;
    }
    assert_eq!(totals, expected_minute_counts(&records), "nothing dropped: finals + corrections = produced");
}

#[test]
fn buffered_counter_is_exact_under_shuffled_input() {
    // Records stamped in order but written to the shard out of order: each
    // block of 10 (about 14 s) is shuffled; arrival follows shard order.
    let mut records = seed000(240, 0);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for block in records.chunks_mut(10) {
        for i in (1..block.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            block.swap(i, (seed % (i as u64 + 1)) as usize);
        }
    }
    let mut arrival = 0;
    for r in &mut records {
        arrival = arrival.max(r.stamped_millis);
        r.arrival_millis = arrival;
    }
    let run = host(
        &[
            "test",
            "--plugin",
            &plugin("buffered-counter"),
            "--config",
            r#"{"allowed_lateness_seconds": 30}"#,
            "--batch-size",
            "7",
        ],
        &seed000_jsonl(&records),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let (finals, late) = buffered_output(&run.stdout);
    assert!(late.is_empty(), "{late:?}");
    assert_eq!(finals, expected_minute_counts(&records));
}

#[test]
fn snapshot_restore_continue_gives_the_same_output_as_an_uninterrupted_run() {
    let input = seed000_jsonl(&seed000(240, 20));
    for (name, config) in [("counter", "{}"), ("buffered-counter", r#"{"allowed_lateness_seconds": 30}"#)] {
        let args = |restart: Option<&'static str>| {
            let mut a = vec![
                "test".to_string(),
                "--plugin".into(),
                plugin(name),
                "--config".into(),
                config.into(),
                "--batch-size".into(),
                "6".into(),
            ];
            if let Some(n) = restart {
                a.extend(["--restart-every".to_string(), n.to_string()]);
            }
            a
        };
        let whole = host(&args(None).iter().map(String::as_str).collect::<Vec<_>>(), &input);
        let restarted = host(&args(Some("2")).iter().map(String::as_str).collect::<Vec<_>>(), &input);
        assert_eq!(whole.code, 0, "{}", whole.stderr);
        assert_eq!(restarted.code, 0, "{}", restarted.stderr);
        assert!(
            restarted.stderr.contains("restarts") && !restarted.stderr.contains(" 0 restarts"),
            "{}",
            restarted.stderr
        );
        assert!(!whole.stdout.is_empty());
        assert_eq!(whole.stdout, restarted.stdout, "{name}: restored instances must continue exactly");
    }
}

/// Seed 001's 25 JSON documents `{"number", "name", "age"}` with key `a01`.
fn seed001() -> (String, BTreeMap<String, u64>) {
    let names = ["james", "stefan", "pete", "tom", "frank", "peter", "ruan"];
    let mut lines = String::new();
    let mut per_name = BTreeMap::new();
    for number in 1..=25u64 {
        let name = names[(number * 5 % 7) as usize];
        let age = 20 + number * 7 % 31;
        *per_name.entry(name.to_string()).or_insert(0) += 1;
        let data = format!(r#"{{"number": {number}, "name": "{name}", "age": {age}}}"#);
        lines +=
            &serde_json::json!({"partitionKey": "a01", "data": data, "arrival": SEED_START + number as i64 * 1000})
                .to_string();
        lines.push('\n');
    }
    (lines, per_name)
}

#[test]
fn seed_001_documents_echo_and_count_by_json_field() {
    let (input, per_name) = seed001();
    let echo = host(&["test", "--plugin", &plugin("echo"), "--batch-size", "5"], &input);
    assert_eq!(echo.code, 0, "{}", echo.stderr);
    let lines: Vec<&str> = echo.stdout.lines().collect();
    assert_eq!(lines.len(), 25);
    assert!(lines[0].starts_with(r#"a01 : {"number": 1, "name": "#), "{}", lines[0]);

    let counter = host(
        &["test", "--plugin", &plugin("counter"), "--config", r#"{"key_field": "name"}"#, "--batch-size", "5"],
        &input,
    );
    assert_eq!(counter.code, 0, "{}", counter.stderr);
    let mut got = BTreeMap::new();
    for ((_, name), count) in last_counts(&counter.stdout) {
        *got.entry(name).or_insert(0) += count;
    }
    assert_eq!(got, per_name);
}

/// The README's quickstart files give the seed's figures.
#[test]
fn readme_examples_give_the_seed_figures() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let input = std::fs::read_to_string(examples.join("seed000-lagging.jsonl")).expect("example file");
    let run = host(&["test", "--plugin", &plugin("counter"), "--batch-size", "25"], &input);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let counts = last_counts(&run.stdout);
    assert_eq!(counts[&("2018-07-29T22:36:00Z".to_string(), "8.8.8.8".to_string())], 30);
    assert_eq!(counts[&("2018-07-29T22:36:00Z".to_string(), "8.8.8.9".to_string())], 12);

    let run = host(
        &["test", "--plugin", &plugin("buffered-counter"), "--config", r#"{"allowed_lateness_seconds": 30}"#],
        &input,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let (finals, late) = buffered_output(&run.stdout);
    assert!(late.is_empty());
    assert_eq!(finals, counts, "the buffered counter's finals are the counter's last counts");

    let input = std::fs::read_to_string(examples.join("seed001-documents.jsonl")).expect("example file");
    let run = host(&["test", "--plugin", &plugin("counter"), "--config", r#"{"key_field": "name"}"#], &input);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(last_counts(&run.stdout).values().sum::<u64>(), 25);
}

/// The template a plugin author copies builds to a working component.
#[test]
fn the_template_keeps_its_totals_across_restarts() {
    let input: String = ["a", "b", "a", "c", "a", "b"]
        .iter()
        .map(|k| format!("{{\"partitionKey\": \"{k}\", \"data\": \"x\"}}\n"))
        .collect();
    let run =
        host(&["test", "--plugin", &plugin("processor-template"), "--batch-size", "2", "--restart-every", "1"], &input);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "1\n1\n2\n1\n3\n2\n");
}
