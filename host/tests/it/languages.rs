//! Processors written in Python (`plugins/sdk-python`, componentize-py, `make
//! python-plugins`) and JavaScript (`plugins/sdk-js`, componentize-js, `make
//! js-plugins`): the examples give the Rust plugins' output on the seeds'
//! inputs, through `host test` with restarts and through `host run`; a hot
//! swap from the Rust counter to the Python one carries the counts; an
//! author's exception is named in the error line.

use crate::common::emulators::*;
use crate::common::*;
use host::local::LocalOptions;
use std::path::Path;
use std::time::{Duration, Instant};

/// The languages with an SDK: (file prefix, how the component is built).
const LANGUAGES: [(&str, &str); 2] = [
    ("py", "`make python-plugins` builds it with componentize-py from target/pyenv"),
    ("js", "`make js-plugins` builds it with componentize-js (npm)"),
];

/// `lang`'s build of `name`, if there (see [`built_plugin`]).
fn built(lang: &str, name: &str) -> Option<String> {
    let how = LANGUAGES.iter().find(|(l, _)| *l == lang).map_or("", |(_, how)| how);
    built_plugin(&format!("{lang}-{name}"), how).map(|p| p.display().to_string())
}

fn python(name: &str) -> Option<String> {
    built("py", name)
}

fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name);
    std::fs::read_to_string(path).expect("example input")
}

#[test]
fn python_and_javascript_examples_give_the_rust_plugins_output_on_the_seeds() {
    // Binary data, a key needing JSON escapes, a timestamp with an offset.
    let extra = concat!(
        r#"{"partitionKey": "k\"1", "dataBase64": "//79"}"#,
        "\n",
        r#"{"partitionKey": "k2", "data": "2018-07-29T23:35:46+01:00 GET /"}"#,
        "\n"
    );
    let lagging = example("seed000-lagging.jsonl") + extra;
    let documents = example("seed001-documents.jsonl");
    let cases = [
        ("echo", "{}", &lagging),
        ("counter", "{}", &lagging),
        ("counter", r#"{"window_seconds": 10}"#, &lagging),
        ("counter", r#"{"key_field": "name"}"#, &documents),
        ("counter", r#"{"key_field": "age", "time_field": "ts"}"#, &documents),
    ];
    for (lang, _) in LANGUAGES {
        for (name, config, input) in cases {
            let Some(built) = built(lang, name) else { continue };
            let rust = plugin_path(name).display().to_string();
            // Small batches and a restart every 3 (state through snapshot/restore).
            let args = |plugin: &str| {
                let args =
                    ["test", "--plugin", plugin, "--config", config, "--batch-size", "5", "--restart-every", "3"];
                host(&args, input)
            };
            let (want, got) = (args(&rust), args(&built));
            assert_eq!(want.code, 0, "{}", want.stderr);
            assert_eq!(got.code, 0, "{built} {config}: {}", got.stderr);
            assert!(got.stderr.contains("restarts"), "{}", got.stderr);
            assert!(!want.stdout.is_empty());
            assert_eq!(got.stdout, want.stdout, "{built} {config}: the same output as the Rust plugin");
        }
    }
}

#[test]
fn an_exception_is_named_and_a_record_error_keeps_its_index() {
    let input = |data: &str| {
        format!("{{\"partitionKey\": \"a\", \"data\": \"x\"}}\n{{\"partitionKey\": \"a\", \"data\": \"{data}\"}}\n")
    };
    let expected = [
        ("py", "init failed: ValueError: window_seconds must be positive (app.py:", "KeyError: 'a' (app.py:"),
        (
            "js",
            // The place is the author's file and line, mapped from the bundle's.
            "init failed: RangeError: window_seconds must be positive (Faulty@plugins/sdk-js/tests/faulty.js:16)",
            "TypeError: can't access property \"count\", lookup[record.partitionKey] is undefined \
             (process@plugins/sdk-js/tests/faulty.js:25)",
        ),
    ];
    for (lang, init_line, crash_line) in expected {
        let Some(faulty) = built(lang, "faulty") else { continue };
        let init = host(&["test", "--plugin", &faulty, "--config", r#"{"fail_in": "init"}"#], &input("x"));
        assert_eq!(init.code, 2, "{}", init.stderr);
        assert_eq!(init.stderr.trim().lines().count(), 1, "{}", init.stderr);
        assert!(init.stderr.contains(init_line), "{}", init.stderr);
        // A bug: retried, then the shard stops at the record, naming the exception.
        let crash = host(&["test", "--plugin", &faulty], &input("crash"));
        assert_eq!(crash.code, 1, "{}", crash.stderr);
        let last = crash.stderr.trim().lines().last().unwrap_or_default();
        assert!(last.contains(&format!("crashed in `process`: {crash_line}")), "{last}");
        assert!(crash.stderr.contains("3 retried calls"), "a bug is retried: {}", crash.stderr);
        // The author's ProcessError.at(i): the records before it are done.
        let bad = host(&["test", "--plugin", &faulty], &input("bad"));
        assert_eq!(bad.code, 1, "{}", bad.stderr);
        // Named by its input line (stdin's second), not its batch index.
        assert!(
            bad.stderr.contains("the record of stdin:2 (partition key \"a\") fails: plugin")
                && bad.stderr.contains("refused it: record 1 is bad"),
            "{}",
            bad.stderr
        );
        assert_eq!(bad.stdout.lines().count(), 1, "record 0 was emitted: {}", bad.stdout);
    }
    // SDK misuse is caught where the author's code calls the SDK, naming the
    // wrong type and the author's line, not the SDK's; the network says
    // there is none.
    let misuse = [
        ("py", "int-key", "TypeError: emit(key, data): the key must be a str, not int (1) (app.py:"),
        ("js", "object-data", "TypeError: emit(key, data): data must be a string or a Uint8Array, not an object"),
        ("js", "object-data", "(JSON.stringify(value) makes one) (process@plugins/sdk-js/tests/faulty.js:28)"),
        ("py", "network", "PermissionError: there is no network in the sandbox"),
        ("js", "network", "Error: there is no network in the sandbox"),
    ];
    for (lang, data, line) in misuse {
        let Some(faulty) = built(lang, "faulty") else { continue };
        let run = host(&["test", "--plugin", &faulty, "--retries", "0"], &input(data));
        assert_eq!(run.code, 1, "{}", run.stderr);
        let last = run.stderr.trim().lines().last().unwrap_or_default();
        assert!(last.contains(line) && !last.contains("_records.py"), "{last}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_and_javascript_counters_under_host_run_count_as_the_rust_one() {
    let f = fixture(LocalOptions::default()).await;
    f.stream("lang-run", 2).await;
    let stream = f.name("lang-run");
    f.put_numbered("lang-run", 0, 500).await;
    let url = f.local.as_ref().map(|l| l.endpoint_url()).unwrap_or_default();
    let plugins = [Some(plugin_path("counter").display().to_string()), built("py", "counter"), built("js", "counter")];
    let mut counts = Vec::new();
    for plugin in plugins.into_iter().flatten() {
        let out = f.dir.path().join(format!("{}.jsonl", counts.len()));
        let db = f.dir.path().join(format!("{}.db", counts.len()));
        let args = run_args(&plugin, &stream, &url, &db, &out);
        let extra = ["--idle-exit", "2", "--batch-size", "40", "--config", r#"{"event_time": "arrival"}"#];
        let run = wait(spawn_host_with(&args, &extra)).await;
        assert_eq!(run.code, 0, "{plugin}: {}", run.stderr);
        counts.push((plugin, highest_counts(&out)));
    }
    assert_eq!(counts[0].1.values().sum::<u64>(), 500);
    for (plugin, got) in &counts[1..] {
        assert_eq!(got, &counts[0].1, "{plugin} counts as the Rust counter");
    }
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_swap_from_the_rust_counter_to_the_python_one_carries_the_counts() {
    let Some(py) = python("counter") else { return };
    let f = fixture(LocalOptions::default()).await;
    f.stream("py-swap", 1).await;
    let stream = f.name("py-swap");
    let url = f.local.as_ref().map(|l| l.endpoint_url()).unwrap_or_default();
    let out = f.out_path();
    let control = format!("127.0.0.1:{}", free_port());
    let counter = plugin_path("counter").display().to_string();
    let args = run_args(&counter, &stream, &url, &f.dir.path().join("cp.db"), &out);
    let extra = ["--control-addr", &control, "--idle-time-ms", "200"];
    let consumer = spawn_host_with(&args, &extra);
    f.put_numbered("py-swap", 0, 200).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while counted_in_state(&out) < 200 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(counted_in_state(&out), 200, "the Rust counter counted the first records");
    let swapped = host(&["swap", "--control-addr", &control, "--plugin", &py, "--no-wait"], "");
    assert_eq!(swapped.code, 0, "{}", swapped.stderr);
    assert!(swapped.stdout.starts_with("swapped: now running"), "{}", swapped.stdout);
    f.put_numbered("py-swap", 200, 200).await;
    // Stopped once the Python counter has counted on (or after a minute):
    // an idle exit could come between the swap and these puts.
    let deadline = Instant::now() + Duration::from_secs(60);
    while counted_in_state(&out) < 400 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sigterm(&consumer);
    let run = wait(consumer).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    // Counts went on from the Rust counter's state: per (window, key) the
    // highest count adds up to every record, each counted once.
    assert_eq!(counted_in_state(&out), 400, "{}", std::fs::read_to_string(&out).unwrap_or_default());
    f.stop().await;
}

#[test]
fn the_sdks_build_against_the_current_contract() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let wit = std::fs::read_to_string(root.join("wit/processor.wit")).expect("wit");
    for copy in ["plugins/sdk-python/kinesis_processor/wit/processor.wit", "plugins/sdk-js/wit/processor.wit"] {
        let text = std::fs::read_to_string(root.join(copy)).expect("the SDK's copy");
        assert!(text == wit, "{copy} differs from wit/processor.wit: copy it");
    }
}
