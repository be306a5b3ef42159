//! Bad plugins and bad files: each gets a clear, typed error, the instance
//! is rebuilt from its last checkpoint, and the host (and other instances)
//! carry on. Uses the `faulty` fixture component and hand-made binaries.

use crate::common::*;
use host::batch::{InputRecord, PackedBatch};
use host::plugin::bindings::ShardContext;
use host::plugin::{
    CacheOutcome, Clock, CompiledCache, InstanceSettings, Plugin, PluginEngine, PluginError, PluginInstance,
    PluginLimits, TrapCause,
};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn settings(config: &str) -> InstanceSettings {
    settings_timing_out_after(config, Duration::from_millis(250))
}

/// The sandbox's settings with another time limit per call.
fn settings_timing_out_after(config: &str, call_timeout: Duration) -> InstanceSettings {
    InstanceSettings {
        config: config.into(),
        context: ShardContext::new("s", "shardId-000000000000", "t"),
        limits: PluginLimits {
            memory_bytes: 48 << 20,
            call_timeout,
            max_output_bytes: 4 << 20,
            ..PluginLimits::default()
        },
        clock: Clock::System,
    }
}

fn records(data: &[&str]) -> Vec<InputRecord> {
    data.iter()
        .enumerate()
        .map(|(i, d)| InputRecord {
            partition_key: format!("k{i}"),
            data: d.as_bytes().to_vec(),
            sequence_number: format!("{}", 1000 + i),
            sub_sequence_number: 0,
            arrival_millis: 0,
        })
        .collect()
}

/// Processes `data` as one batch, returning emitted data or the error.
fn process(instance: &mut PluginInstance, data: &[&str]) -> Result<Vec<String>, PluginError> {
    let mut packer = PackedBatch::default();
    let batch = packer.repack(&records(data), 0).expect("packs");
    let processed = instance.process(batch)?;
    if let Some(failure) = processed.failure {
        return Err(failure);
    }
    Ok(processed.output.iter().map(|(_, d)| String::from_utf8_lossy(d).into_owned()).collect())
}

/// The `faulty` fixture counts records it passed; its snapshot is that count.
fn seen(instance: &mut PluginInstance) -> u64 {
    let state = instance.checkpoint().expect("snapshot");
    u64::from_le_bytes(state.bytes.try_into().expect("8 bytes"))
}

/// Runs one misbehaving record after a checkpoint and checks the trap, the
/// rebuild from the checkpoint, and that the instance works again.
fn contained(data: &str, want: TrapCause, detail: &str) {
    let engine = PluginEngine::new().expect("engine");
    // The cap under test trips first: a flood of host calls in a debug
    // build on a loaded machine can outlast 250 ms, the deadline's own test.
    let settings = match want {
        TrapCause::Timeout => settings("{}"),
        _ => settings_timing_out_after("{}", Duration::from_secs(5)),
    };
    let mut instance = PluginInstance::start(load(&engine, "faulty"), settings, None).expect("starts");
    assert_eq!(process(&mut instance, &["a", "b"]).expect("ok"), ["a", "b"]);
    assert_eq!(seen(&mut instance), 2, "checkpointed after two records");
    let started = Instant::now();
    let err = process(&mut instance, &["c", data, "d"]).expect_err("must trap");
    assert!(started.elapsed() < Duration::from_secs(10), "contained promptly: {:?}", started.elapsed());
    match &err {
        PluginError::Trapped { cause, detail: Some(d), recovery, call, .. } => {
            assert_eq!(*cause, want, "{err}");
            assert!(d.contains(detail), "detail {d:?} should mention {detail:?}");
            assert_eq!(*call, "process");
            assert!(recovery.contains("rebuilt from the last checkpoint"), "{recovery}");
        }
        other => panic!("expected a trap, got {other}"),
    }
    let line = err.to_string();
    assert!(!line.contains('\n'), "one line: {line}");
    // The record "c" counted before the trap is not kept: state is the checkpoint's.
    assert_eq!(seen(&mut instance), 2, "half-processed batch leaked state");
    assert_eq!(process(&mut instance, &["e"]).expect("works again"), ["e"]);
    assert_eq!(seen(&mut instance), 3);
}

#[test]
fn a_trap_is_contained_and_names_the_panic() {
    contained("trap", TrapCause::Crash, "faulty: trap on record 1");
}

#[test]
fn an_infinite_loop_hits_the_deadline() {
    contained("loop", TrapCause::Timeout, "limit 250 ms");
}

/// How long after its 250 ms deadline a call may end: the epoch ticks every
/// 5 ms and a wait's timer fires within a millisecond or two; the rest is
/// room for a loaded 2-core CI machine.
const DEADLINE_MARGIN: Duration = Duration::from_millis(150);

/// A call that waits in the host (WASI clocks + poll) rather than spinning
/// in wasm ends at its deadline with the same error as a busy loop.
fn stopped_at_the_deadline(data: &str) {
    let engine = PluginEngine::new().expect("engine");
    let mut instance = PluginInstance::start(load(&engine, "faulty"), settings("{}"), None).expect("starts");
    let started = Instant::now();
    let err = process(&mut instance, &["c", data]).expect_err("must trap");
    let took = started.elapsed();
    assert!(took < Duration::from_millis(250) + DEADLINE_MARGIN, "{data}: ended {took:?} after the call began");
    assert!(took >= Duration::from_millis(240), "{data}: not before its deadline: {took:?}");
    assert!(matches!(err, PluginError::Trapped { cause: TrapCause::Timeout, .. }), "{err}");
    assert!(err.to_string().contains("exceeded its time limit per call in `process`: limit 250 ms"), "{err}");
    assert_eq!(process(&mut instance, &["e"]).expect("rebuilt, works again"), ["e"]);
}

#[test]
fn a_loop_a_long_sleep_a_loop_of_short_sleeps_and_a_poll_all_end_at_the_deadline() {
    for data in ["loop", "sleep", "sleep-loop", "poll"] {
        stopped_at_the_deadline(data);
    }
}

#[test]
fn a_memory_bomb_hits_the_memory_cap() {
    contained("alloc", TrapCause::MemoryLimit, "48 MiB");
}

#[test]
fn an_output_flood_hits_the_output_cap() {
    contained("emit-flood", TrapCause::OutputLimit, "4194304 bytes");
}

#[test]
fn a_log_flood_is_stopped() {
    contained("log-flood", TrapCause::LogFlood, "log lines");
}

#[test]
fn a_reported_failure_keeps_output_before_the_named_record() {
    let engine = PluginEngine::new().expect("engine");
    let mut instance = PluginInstance::start(load(&engine, "faulty"), settings("{}"), None).expect("starts");
    let mut packer = PackedBatch::default();
    let processed = instance.process(packer.repack(&records(&["a", "fail", "b"]), 0).expect("packs")).expect("no trap");
    let out: Vec<_> = processed.output.iter().map(|(_, d)| d.to_vec()).collect();
    assert_eq!(out, vec![b"a".to_vec()]);
    match processed.failure {
        Some(PluginError::Failed { retryable: false, record_index: Some(1), message, .. }) => {
            assert!(message.contains("poison"), "{message}")
        }
        other => panic!("expected a failure at record 1, got {other:?}"),
    }
    // An index outside the batch is not believed: no output is released.
    let processed = instance.process(packer.repack(&records(&["a", "bad-index"]), 0).expect("packs")).expect("no trap");
    assert!(processed.output.is_empty());
    assert!(matches!(processed.failure, Some(PluginError::Failed { record_index: None, .. })));
}

#[test]
fn init_failures_are_clear() {
    let engine = PluginEngine::new().expect("engine");
    let plugin = load(&engine, "faulty");
    let err = PluginInstance::start(plugin.clone(), settings(r#"{"fail_init": true}"#), None).err().expect("refused");
    assert!(matches!(&err, PluginError::InitRejected { message, .. } if message.contains("init refused")), "{err}");
    let err =
        PluginInstance::start(plugin.clone(), settings(r#"{"panic_in_init": true}"#), None).err().expect("panics");
    assert!(matches!(&err, PluginError::Trapped { call: "init", cause: TrapCause::Crash, .. }), "{err}");
    assert!(err.to_string().contains("panic in init as configured"), "{err}");
    let err = PluginInstance::start(load(&engine, "counter"), settings(r#"{"window_second": 5}"#), None)
        .err()
        .expect("bad config");
    assert!(err.to_string().contains("rejected its config") && err.to_string().contains("window_second"), "{err}");
}

#[test]
fn corrupt_state_is_refused_not_loaded() {
    let engine = PluginEngine::new().expect("engine");
    let plugin = load(&engine, "faulty");
    let mut writer =
        PluginInstance::start(plugin.clone(), settings(r#"{"corrupt_snapshot": true}"#), None).expect("starts");
    let state = writer.checkpoint().expect("snapshot");
    let err = PluginInstance::start(plugin.clone(), settings("{}"), Some(state)).err().expect("refused");
    assert!(matches!(&err, PluginError::RestoreRejected { message, .. } if message.contains("corrupt state")), "{err}");
    let counter = load(&engine, "counter");
    let bad = host::plugin::bindings::State { version: 1, bytes: b"{\"windows\": 7}".to_vec() };
    let err = PluginInstance::start(counter, settings("{}"), Some(bad)).err().expect("refused");
    assert!(err.to_string().contains("counter state is corrupt"), "{err}");
}

/// Loads bytes as a plugin and returns the one-line error.
fn load_error(engine: &PluginEngine, bytes: &[u8]) -> PluginError {
    Plugin::from_bytes(engine, Path::new("bad.wasm"), bytes, None).expect_err("must be refused")
}

#[test]
fn bad_files_are_refused_with_what_to_do() {
    let engine = PluginEngine::new().expect("engine");
    let err = Plugin::load(&engine, Path::new("/nonexistent/counter.wasm"), None).expect_err("missing");
    assert!(matches!(err, PluginError::NotFound { .. }) && err.to_string().contains("make plugins"), "{err}");

    let err = load_error(&engine, b"#!/bin/sh\necho not wasm\n");
    assert!(matches!(err, PluginError::NotWasm { .. }), "{err}");

    let core = wat::parse_str("(module (func (export \"process\")))").expect("wat");
    let err = load_error(&engine, &core);
    assert!(matches!(err, PluginError::CoreModule { .. }) && err.to_string().contains("wasm32-wasip2"), "{err}");

    let mut truncated = std::fs::read(plugin_path("counter")).expect("read");
    truncated.truncate(truncated.len() / 2);
    assert!(matches!(load_error(&engine, &truncated), PluginError::Invalid { .. }));

    let empty = wat::parse_str("(component)").expect("wat");
    let err = load_error(&engine, &empty);
    assert!(matches!(&err, PluginError::WrongWorld { reason, .. } if reason.contains("exports nothing")), "{err}");

    let other_world = other_world_component();
    let err = load_error(&engine, &other_world);
    assert!(matches!(&err, PluginError::WrongWorld { reason, .. } if reason.contains("exports hello")), "{err}");
    assert!(err.to_string().contains("kinesis:processor/processor@0.2.0"), "{err}");

    // After all of that, the same engine still runs a good plugin.
    let mut instance = PluginInstance::start(load(&engine, "echo"), settings("{}"), None).expect("starts");
    assert_eq!(process(&mut instance, &["still alive"]).expect("ok"), ["k0 : still alive"]);
}

#[test]
fn the_sandbox_grants_no_env_args_files_or_network() {
    let engine = PluginEngine::new().expect("engine");
    let mut instance = PluginInstance::start(load(&engine, "faulty"), settings("{}"), None).expect("starts");
    let out = process(&mut instance, &["probe-sandbox"]).expect("ok");
    assert_eq!(out, [r#"{"env":0,"args":0,"file":false,"net":false}"#]);
}

#[test]
fn compiled_components_are_cached_and_a_corrupt_cache_costs_only_a_compile() {
    let engine = PluginEngine::new().expect("engine");
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = CompiledCache::new(dir.path());
    let path = plugin_path("echo");
    assert_eq!(Plugin::load(&engine, &path, Some(&cache)).expect("loads").cache_outcome(), CacheOutcome::Compiled);
    let plugin = Plugin::load(&engine, &path, Some(&cache)).expect("loads");
    assert_eq!(plugin.cache_outcome(), CacheOutcome::Hit);
    for entry in std::fs::read_dir(dir.path()).expect("dir") {
        std::fs::write(entry.expect("entry").path(), b"garbage").expect("corrupt it");
    }
    let plugin = Plugin::load(&engine, &path, Some(&cache)).expect("still loads");
    assert_eq!(plugin.cache_outcome(), CacheOutcome::Compiled);
    let mut instance = PluginInstance::start(Arc::new(plugin), settings("{}"), None).expect("starts");
    assert_eq!(process(&mut instance, &["x"]).expect("ok"), ["k0 : x"]);
}

#[test]
fn huge_or_forging_plugin_strings_are_bounded_and_kept_on_one_line() {
    let engine = PluginEngine::new().expect("engine");
    let mut instance = PluginInstance::start(load(&engine, "faulty"), settings("{}"), None).expect("starts");
    // A 1 MiB error message with a newline in it.
    let line = process(&mut instance, &["huge-error"]).expect_err("fails").to_string();
    assert!(!line.contains('\n') && line.len() < 5000, "{} bytes", line.len());
    assert!(line.contains("faulty: huge\\nerror") && line.contains("more bytes)"), "{}", &line[..200]);
    // A log message that would forge a host log line of its own.
    let input = "{\"partitionKey\": \"k\", \"data\": \"forged-log\"}\n";
    let mut run = std::process::Command::new(env!("CARGO_BIN_EXE_host"))
        .args(["test", "--plugin", &plugin_path("faulty").display().to_string()])
        .env("HOST_LOG", "plugin=info")
        .env("HOST_CACHE_DIR", cache_dir())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("host starts");
    use std::io::Write;
    run.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("input");
    let out = run.wait_with_output().expect("host runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let logged: Vec<&str> = stderr.lines().filter(|l| l.contains("faulty: one")).collect();
    assert_eq!(logged.len(), 1, "{stderr}");
    assert!(logged[0].contains("faulty: one\\nERROR host: forged") && logged[0].len() < 5000, "{}", logged[0].len());
    assert!(!stderr.lines().any(|l| l.starts_with("ERROR host: forged")), "a forged line: {stderr}");
}

#[test]
fn a_planted_compiled_entry_is_recompiled_never_run() {
    let engine = PluginEngine::new().expect("engine");
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = CompiledCache::new(dir.path().join("cache")).with_key_file(dir.path().join("cache.key"));
    let (echo, counter) = (plugin_path("echo"), plugin_path("counter"));
    for wasm in [&echo, &counter] {
        assert_eq!(Plugin::load(&engine, wasm, Some(&cache)).expect("loads").cache_outcome(), CacheOutcome::Compiled);
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(cache.dir()).expect("dir").permissions());
    assert_eq!(mode & 0o777, 0o700, "the cache directory is the user's alone");
    // The attack: echo's compiled code copied over counter's entry.
    let entry = |wasm: &Path| {
        use sha2::Digest;
        let sha = hex::encode(sha2::Sha256::digest(std::fs::read(wasm).expect("wasm")));
        let mut found = std::fs::read_dir(cache.dir()).expect("dir").flatten().map(|e| e.path());
        found.find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&sha))).expect("entry")
    };
    std::fs::copy(entry(&echo), entry(&counter)).expect("plant");
    let plugin = Plugin::load(&engine, &counter, Some(&cache)).expect("loads");
    assert_eq!(plugin.cache_outcome(), CacheOutcome::Compiled, "the planted entry is refused and recompiled");
    let mut instance = PluginInstance::start(Arc::new(plugin), settings("{}"), None).expect("starts");
    let out = process(&mut instance, &["x"]).expect("ok");
    assert!(out.iter().all(|line| line.contains("\"count\"")), "the counter ran, not echo: {out:?}");
    assert_eq!(Plugin::load(&engine, &counter, Some(&cache)).expect("loads").cache_outcome(), CacheOutcome::Hit);
    // wasmtime's own serialized form, untagged, is refused the same way.
    let raw = wasmtime::component::Component::from_file(engine.engine(), &counter).expect("compiles");
    std::fs::write(entry(&counter), raw.serialize().expect("serialize")).expect("plant raw");
    assert_eq!(Plugin::load(&engine, &counter, Some(&cache)).expect("loads").cache_outcome(), CacheOutcome::Compiled);
    // A key others can read is no key: no cache, one warning, still loads.
    let key = dir.path().join("cache.key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).expect("chmod");
    assert_eq!(Plugin::load(&engine, &counter, Some(&cache)).expect("loads").cache_outcome(), CacheOutcome::Disabled);
}

#[test]
fn instances_per_shard_run_in_parallel_with_separate_state() {
    let engine = PluginEngine::new().expect("engine");
    let plugin = load(&engine, "faulty");
    let threads: Vec<_> = (0..4u64)
        .map(|shard| {
            let plugin = plugin.clone();
            std::thread::spawn(move || {
                let mut instance = PluginInstance::start(plugin, settings("{}"), None).expect("starts");
                let data: Vec<String> = (0..=shard).map(|i| format!("r{i}")).collect();
                let data: Vec<&str> = data.iter().map(String::as_str).collect();
                for _ in 0..10 {
                    process(&mut instance, &data).expect("ok");
                }
                // One shard traps; the others must not notice.
                if shard == 0 {
                    assert!(process(&mut instance, &["trap"]).is_err());
                }
                seen(&mut instance)
            })
        })
        .collect();
    let counts: Vec<u64> = threads.into_iter().map(|t| t.join().expect("thread")).collect();
    assert_eq!(counts, vec![0, 20, 30, 40], "shard 0 trapped before any checkpoint: fresh state");
}

/// A component that passes for a processor by name (it exports the
/// interface, whose functions take nothing: refused once instantiated) and
/// runs `core` (core modules and instances, after `imports`) when it is
/// instantiated: what a hostile component does before any call.
fn hostile_component(imports: &str, core: &str) -> Vec<u8> {
    let exports: String = ["init", "process", "on-timer", "snapshot", "restore", "shutdown"]
        .iter()
        .map(|name| format!("(export \"{name}\" (func $f))"))
        .collect();
    let text = format!(
        r#"(component
             {imports}
             {core}
             (core module $stub (func (export "f")))
             (core instance $stub (instantiate $stub))
             (func $f (canon lift (core func $stub "f")))
             (instance $processor {exports})
             (export "kinesis:processor/processor@0.2.0" (instance $processor)))"#
    );
    wat::parse_str(text).expect("wat")
}

/// Starts `bytes` as a plugin under `settings`: how it failed, and when.
fn start_hostile(bytes: &[u8], settings: InstanceSettings) -> (PluginError, Duration) {
    let engine = PluginEngine::new().expect("engine");
    let plugin = Plugin::from_bytes(&engine, Path::new("hostile.wasm"), bytes, None).expect("loads");
    let started = Instant::now();
    let err = PluginInstance::start(Arc::new(plugin), settings, None).err().expect("must not start");
    (err, started.elapsed())
}

#[test]
fn memory_is_one_budget_across_every_memory_of_a_component() {
    // Three memories of 25 MiB each: every one under the 48 MiB cap, 75 MiB
    // together.
    let core: String = (0..3)
        .map(|i| format!("(core module $m{i} (memory (export \"m\") 400)) (core instance (instantiate $m{i}))"))
        .collect();
    let (err, _) = start_hostile(&hostile_component("", &core), settings("{}"));
    assert!(matches!(&err, PluginError::Trapped { call: "instantiate", cause: TrapCause::MemoryLimit, .. }), "{err}");
    assert!(err.to_string().contains("48 MiB"), "{err}");
    // Two fit.
    let core: String = (0..2)
        .map(|i| format!("(core module $m{i} (memory (export \"m\") 300)) (core instance (instantiate $m{i}))"))
        .collect();
    let (err, _) = start_hostile(&hostile_component("", &core), settings("{}"));
    assert!(matches!(&err, PluginError::WrongWorld { .. }), "instantiated, then refused for its types: {err}");
}

#[test]
fn instances_memories_and_tables_are_counted() {
    let many = |what: &str, count: usize| -> String {
        let module = match what {
            "instances" => "(core module $m)".to_string(),
            "memories" => "(core module $m (memory 0))".to_string(),
            _ => format!("(core module $m {})", "(table 0 funcref)".repeat(70)),
        };
        let instances: String = (0..count).map(|_| "(core instance (instantiate $m))").collect();
        format!("{module} {instances}")
    };
    for (what, count) in [("instances", 300), ("memories", 20), ("tables", 1)] {
        let (err, _) = start_hostile(&hostile_component("", &many(what, count)), settings("{}"));
        assert!(matches!(&err, PluginError::Trapped { call: "instantiate", .. }), "{what}: {err}");
    }
    // A table past a million elements cannot be made either.
    let core = "(core module $m (table 2000000 funcref)) (core instance (instantiate $m))";
    let (err, _) = start_hostile(&hostile_component("", core), settings("{}"));
    assert!(matches!(&err, PluginError::Trapped { call: "instantiate", .. }), "{err}");
}

#[test]
fn a_start_function_that_waits_ends_at_the_call_deadline() {
    // The core start function sleeps 60 s on a WASI clock before any export
    // is called.
    let imports = r#"
        (import "wasi:io/poll@0.2.0" (instance $poll
            (export "pollable" (type (sub resource)))
            (export "[method]pollable.block" (func (param "self" (borrow 0))))))
        (alias export $poll "pollable" (type $pollable))
        (import "wasi:clocks/monotonic-clock@0.2.0" (instance $clock
            (export "pollable" (type (eq $pollable)))
            (export "subscribe-duration" (func (param "when" u64) (result (own 0))))))
        (core func $subscribe (canon lower (func $clock "subscribe-duration")))
        (core func $block (canon lower (func $poll "[method]pollable.block")))"#;
    let core = r#"
        (core module $sleeper
            (import "clock" "subscribe" (func $subscribe (param i64) (result i32)))
            (import "poll" "block" (func $block (param i32)))
            (func $start (call $block (call $subscribe (i64.const 60000000000))))
            (start $start))
        (core instance (instantiate $sleeper
            (with "clock" (instance (export "subscribe" (func $subscribe))))
            (with "poll" (instance (export "block" (func $block))))))"#;
    let (err, took) =
        start_hostile(&hostile_component(imports, core), settings_timing_out_after("{}", Duration::from_millis(500)));
    assert!(matches!(&err, PluginError::Trapped { call: "instantiate", cause: TrapCause::Timeout, .. }), "{err}");
    assert!(took < Duration::from_secs(20), "instantiation waited {took:?}");
}
