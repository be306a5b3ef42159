//! The `host` binary's error paths: every bad input is one line on stderr
//! naming what is wrong and what to do, with a non-zero exit.

use crate::common::*;

fn one_error_line(run: &Run) -> &str {
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line on stderr, got:\n{}", run.stderr);
    assert!(lines[0].starts_with("error: "), "{}", lines[0]);
    lines[0]
}

#[test]
fn bad_plugin_paths_and_files_are_one_line() {
    let run = host(&["test", "--plugin", "/nonexistent/counter.wasm"], "");
    assert_eq!(run.code, 2);
    assert!(one_error_line(&run).contains("does not exist; build it with `make plugins`"));

    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"not a component at all").expect("write");
    let run = host(&["test", "--plugin", garbage.to_str().unwrap_or_default()], "");
    assert_eq!(run.code, 2);
    assert!(one_error_line(&run).contains("is not a WebAssembly file"));
}

#[test]
fn bad_configs_are_one_line_naming_the_setting() {
    let counter = plugin_path("counter").display().to_string();
    let run = host(&["test", "--plugin", &counter, "--config", "{window_seconds: 5}"], "");
    assert_eq!(run.code, 2);
    assert!(one_error_line(&run).contains("--config is not valid JSON"));

    let run = host(&["test", "--plugin", &counter, "--config", r#"{"window_seconds": 0}"#], "");
    assert_eq!(run.code, 2);
    assert!(one_error_line(&run).contains("`window_seconds` must be at least 1"));

    let run = host(&["test", "--plugin", &counter, "--memory-limit-mb", "0"], "");
    assert_eq!(run.code, 2);
    assert!(one_error_line(&run).contains("must be at least 1"));
}

#[test]
fn bad_input_is_one_line_naming_the_line() {
    let counter = plugin_path("counter").display().to_string();
    let run =
        host(&["test", "--plugin", &counter], "{\"partitionKey\": \"a\", \"data\": \"x\"}\n{\"data\": \"no key\"}\n");
    assert_eq!(run.code, 2);
    assert!(one_error_line(&run).contains("stdin:2: not a record"));

    let run = host(&["test", "--plugin", &counter, "--input", "/nonexistent/records.jsonl"], "");
    assert_eq!(run.code, 2);
    assert!(one_error_line(&run).contains("cannot open --input /nonexistent/records.jsonl"));
}

/// `host test` applies `host run`'s failure policy: a record that crashes
/// the plugin every time is retried, then stops the shard right before it
/// (exit 1, one line saying what to do), or goes to the dead letters.
#[test]
fn a_crashing_record_stops_the_replay_or_is_dead_lettered_as_in_host_run() {
    let faulty = plugin_path("faulty").display().to_string();
    let input = "{\"partitionKey\": \"k\", \"data\": \"before\"}\n{\"partitionKey\": \"k\", \"data\": \"trap\"}\n{\"partitionKey\": \"k\", \"data\": \"after\"}\n";
    let run = host(&["test", "--plugin", &faulty, "--batch-size", "1"], input);
    assert_eq!(run.code, 1, "a poison record without dead letters fails the run");
    assert_eq!(run.stdout, "before\n");
    let errors: Vec<&str> = run.stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(errors[0].contains("shard shardId-000000000000 stopped: the record of stdin:2 "), "{}", errors[0]);
    assert!(errors[0].contains("plugin `faulty` crashed in `process`: faulty: trap on record 0"), "{}", errors[0]);
    assert!(errors[0].contains("Pass --dead-letter file:PATH"), "{}", errors[0]);
    assert!(run.stderr.contains("3 retried calls"), "{}", run.stderr);
    let dir = tempfile::tempdir().expect("tempdir");
    let dl = dir.path().join("dl.jsonl");
    let run = host(
        &["test", "--plugin", &faulty, "--batch-size", "1", "--dead-letter", &format!("file:{}", dl.display())],
        input,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "before\nafter\n");
    let letters = json_lines(&std::fs::read_to_string(&dl).unwrap_or_default());
    assert_eq!(letters.len(), 1);
    assert_eq!((letters[0]["data"].as_str(), letters[0]["reason"].as_str()), (Some("trap"), Some("poison")));
    assert!(run.stderr.contains("dead-lettered the record of stdin:2 (partition key \"k\")"), "{}", run.stderr);
}

/// Error lines name the input line a record came from (blank lines and
/// reshard lines counted), not its place in a batch.
#[test]
fn a_refused_record_is_named_by_its_input_line() {
    let faulty = plugin_path("faulty").display().to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("in.jsonl");
    let ok = "{\"partitionKey\": \"k\", \"data\": \"ok\"}";
    let text =
        format!("{ok}\n\n{ok}\n{{\"reshard\": \"split\"}}\n{ok}\n{{\"partitionKey\": \"k\", \"data\": \"fail\"}}\n");
    std::fs::write(&file, text).expect("write");
    let input = file.display().to_string();
    let run = host(&["test", "--plugin", &faulty, "--input", &input], "");
    assert_eq!(run.code, 1, "{}", run.stderr);
    let wanted = format!("stopped: the record of {input}:6 (partition key \"k\") fails: plugin `faulty` refused it: ");
    assert!(run.stderr.contains(&wanted), "{}", run.stderr);
}

#[test]
fn json_output_carries_keys() {
    let echo = plugin_path("echo").display().to_string();
    let run =
        host(&["test", "--plugin", &echo, "--output", "json"], "{\"partitionKey\": \"8.8.8.8\", \"data\": \"hi\"}\n");
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(json_lines(&run.stdout), vec![serde_json::json!({"key": "8.8.8.8", "data": "8.8.8.8 : hi"})]);
}

#[test]
fn the_control_endpoint_stays_on_loopback() {
    let counter = plugin_path("counter").display().to_string();
    let run = host(&["run", "--plugin", &counter, "--stream", "s", "--control-addr", "0.0.0.0:7070"], "");
    assert_eq!(run.code, 2, "{}", run.stderr);
    // clap's own error: one line, then its pointer to --help.
    let first = run.stderr.lines().next().unwrap_or_default();
    assert!(first.starts_with("error: ") && first.contains("is not a loopback address"), "{}", run.stderr);
    let run = host(&["swap", "--control-addr", "127.0.0.1:1", "--rollback"], "");
    assert_eq!(run.code, 2, "{}", run.stderr);
    let line = one_error_line(&run);
    assert!(
        line.contains("no control token for 127.0.0.1:1")
            && line.contains("is `host run --control-addr 127.0.0.1:1` running"),
        "{}",
        run.stderr
    );
}

#[test]
fn bad_failure_policy_flags_are_one_line() {
    let counter = plugin_path("counter").display().to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("cp.db").display().to_string();
    let base =
        ["run", "--plugin", &counter, "--stream", "s", "--endpoint-url", "http://127.0.0.1:1", "--checkpoint-db", &db];
    let with = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        host(&args, "")
    };
    let run = with(&["--dead-letter", "s3://bucket"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        one_error_line(&run).contains("--dead-letter \"s3://bucket\" must be `file:PATH` or `kinesis:STREAM`"),
        "{}",
        run.stderr
    );
    let run = with(&["--max-record-age", "60"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(one_error_line(&run).contains("--max-record-age needs --dead-letter"), "{}", run.stderr);
    let run = with(&["--max-record-age", "-1", "--dead-letter", "file:/dev/null"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        one_error_line(&run).contains("--max-record-age must be a non-negative number of seconds"),
        "{}",
        run.stderr
    );
}

/// A stop that is not a shard's end (Ctrl-C, `--idle-exit`) leaves the
/// buffered counter's incomplete windows in its saved state; it says so on
/// stderr rather than leaving them to look lost.
#[test]
fn the_buffered_counter_says_what_it_holds_when_stopped() {
    let buffered = plugin_path("buffered-counter").display().to_string();
    let input =
        "{\"partitionKey\": \"8.8.8.8\", \"data\": \"2018-07-29T22:35:46\", \"arrival\": \"2018-07-29T22:35:47Z\"}\n";
    let run = host(&["test", "--plugin", &buffered, "--end", "requested", "--drain-seconds", "0"], input);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "", "the window is incomplete: nothing emitted");
    assert!(
        run.stderr.contains("holding 1 incomplete window(s) from 2018-07-29T22:35:00Z in the saved state"),
        "{}",
        run.stderr
    );
    // At a shard's end the window goes on in the children's state, not out.
    let ended = host(&["test", "--plugin", &buffered, "--drain-seconds", "0"], input);
    assert_eq!(ended.stdout, "", "{}", ended.stdout);
    assert!(ended.stderr.contains("its child shards go on counting them"), "{}", ended.stderr);
    // Idle input closes it (the default drain runs the clock on 120 s).
    let drained = host(&["test", "--plugin", &buffered], input);
    assert!(drained.stdout.contains("\"count\":1"), "{}", drained.stdout);
}

#[test]
fn files_that_hold_payloads_or_state_are_the_users_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let mode = |name: &str| std::fs::metadata(dir.path().join(name)).expect(name).permissions().mode() & 0o777;
    let store = host::checkpoint::SqliteStore::open(&dir.path().join("cp.db")).expect("store");
    let sink = host::sink::Sink::file(&dir.path().join("out.jsonl"), host::sink::OutputFormat::Json).expect("sink");
    let letters = host::dead_letter::DeadLetterSink::file(&dir.path().join("dead.jsonl")).expect("dead letters");
    for name in ["cp.db", "cp.db-wal", "out.jsonl", "dead.jsonl"] {
        assert_eq!(mode(name), 0o600, "{name}");
    }
    drop((store, sink, letters));
}

/// A new author's logic that crashes on every record is a bug, not bad
/// data: the replay stops after a few crashes in a row (exit 1) instead of
/// dead-lettering its whole input, and dead letters are hard to miss.
#[test]
fn logic_that_crashes_record_after_record_stops_instead_of_dead_lettering_everything() {
    let faulty = plugin_path("faulty").display().to_string();
    let line = |data: &str| format!("{{\"partitionKey\": \"k\", \"data\": \"{data}\"}}\n");
    let input: String = std::iter::once(line("fine")).chain((0..50).map(|_| line("trap"))).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let dl = dir.path().join("dl.jsonl");
    let dead_letter = format!("file:{}", dl.display());
    let run = host(&["test", "--plugin", &faulty, "--dead-letter", &dead_letter, "--retries", "0"], &input);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.stdout, "fine\n");
    assert!(run.stderr.contains("the logic looks broken: it crashed on 3 records in a row"), "{}", run.stderr);
    assert_eq!(json_lines(&std::fs::read_to_string(&dl).unwrap_or_default()).len(), 2, "not the whole input");
    assert!(run.stderr.contains("warning: 2 of 51 records went to the dead-letter sink"), "{}", run.stderr);
    // --crash-limit 0 sets every one aside; /dev/null takes them.
    let all = host(
        &["test", "--plugin", &faulty, "--dead-letter", "file:/dev/null", "--retries", "0", "--crash-limit", "0"],
        &input,
    );
    assert_eq!(all.code, 0, "{}", all.stderr);
    assert!(all.stderr.contains("warning: 50 of 51 records went to the dead-letter sink"), "{}", all.stderr);
}

/// `--expect FILE` compares what the replay prints; `--restart-every N`
/// compares it with a run without restarts; raw lines are records too, and
/// JSON data keeps its key order.
#[test]
fn host_test_checks_output_against_expectations_and_restarts() {
    let faulty = plugin_path("faulty").display().to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let expected = dir.path().join("expected.txt");
    let input =
        "{\"partitionKey\": \"k\", \"data\": {\"b\": 1, \"a\": 2}}\n{\"partitionKey\": \"k\", \"data\": \"x\"}\n";
    std::fs::write(&expected, "{\"b\":1,\"a\":2}\nx\n").expect("write");
    let expect = expected.display().to_string();
    let run = host(&["test", "--plugin", &faulty, "--expect", &expect], input);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("the output matches") && run.stdout.is_empty(), "{}", run.stderr);
    std::fs::write(&expected, "{\"b\":1,\"a\":2}\ny\n").expect("write");
    let run = host(&["test", "--plugin", &faulty, "--expect", &expect], input);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("the output differs from") && run.stderr.contains("\n-y\n+x\n"), "{}", run.stderr);

    // A `snapshot` that leaves the count out: restarts change the output.
    let counts =
        "{\"partitionKey\": \"k\", \"data\": \"a\"}\n".repeat(3) + "{\"partitionKey\": \"k\", \"data\": \"count\"}\n";
    let restarts = ["test", "--plugin", &faulty, "--batch-size", "1", "--restart-every", "1"];
    let good = host(&restarts, &counts);
    assert_eq!(good.code, 0, "{}", good.stderr);
    assert!(good.stdout.ends_with("3\n"), "{}", good.stdout);
    let forgetful = [&restarts[..], &["--config", r#"{"forget_state": true}"#]].concat();
    let bad = host(&forgetful, &counts);
    assert_eq!(bad.code, 1, "{}", bad.stderr);
    assert!(bad.stderr.contains("differs from the output without"), "{}", bad.stderr);
    assert!(bad.stderr.contains("\n-3\n+0\n"), "{}", bad.stderr);

    // Raw lines, keyed by a field of each.
    let lines = "{\"ip\": \"1.2.3.4\", \"status\": 500}\n\n{\"ip\": \"5.6.7.8\", \"status\": 200}\n";
    let raw =
        ["test", "--plugin", &faulty, "--input-format", "lines", "--partition-key", "field:ip", "--output", "json"];
    let run = host(&raw, lines);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let out = json_lines(&run.stdout);
    assert_eq!((out.len(), out[1]["key"].as_str()), (2, Some("5.6.7.8")), "{}", run.stdout);
    assert_eq!(out[0]["data"], "{\"ip\": \"1.2.3.4\", \"status\": 500}");
    let run = host(&raw, "not json\n");
    assert_eq!(run.code, 2);
    assert!(one_error_line(&run).contains("stdin:1: not a JSON object"), "{}", run.stderr);
}

/// The compiled cache keeps to its bound (least recently used entries go
/// first), and `host cache show|clean` report and empty it.
#[test]
fn the_compiled_cache_keeps_to_its_bound_and_cleans() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache").display().to_string();
    let input = "{\"partitionKey\": \"k\", \"data\": \"x\"}\n";
    let entries = || std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0);
    for plugin in ["echo", "faulty", "counter"] {
        let path = plugin_path(plugin).display().to_string();
        let run = host(&["test", "--plugin", &path, "--cache-dir", &cache, "--cache-max-mb", "1"], input);
        assert_eq!(run.code, 0, "{}", run.stderr);
    }
    assert_eq!(entries(), 1, "each entry is most of a MiB: only the newest fits");
    let unbounded = plugin_path("echo").display().to_string();
    assert_eq!(host(&["test", "--plugin", &unbounded, "--cache-dir", &cache], input).code, 0);
    assert_eq!(entries(), 2, "the default bound (1 GiB) holds both");
    let shown = host(&["cache", "show", "--cache-dir", &cache], "");
    assert!(shown.stdout.contains("2 compiled component(s)"), "{}", shown.stdout);
    let cleaned = host(&["cache", "clean", "--cache-dir", &cache], "");
    assert_eq!(cleaned.code, 0, "{}", cleaned.stderr);
    assert!(cleaned.stdout.contains("removed 2 compiled component(s)"), "{}", cleaned.stdout);
    assert_eq!(entries(), 0);
}
