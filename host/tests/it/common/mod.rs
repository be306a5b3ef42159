//! Shared by the integration tests: where the plugin components are, how to
//! run the `host` binary, and seed-shaped input.
#![allow(dead_code)]

#[macro_use]
pub mod emulators;
pub mod skip;
pub mod watchdog;

pub use skip::skip;

use host::plugin::{CompiledCache, Plugin, PluginEngine};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

/// The workspace's target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// A plugin component built by `make plugins`; fails the test with the fix if absent.
pub fn plugin_path(crate_name: &str) -> PathBuf {
    let path = target_dir().join("wasm32-wasip2/plugin").join(format!("{}.wasm", crate_name.replace('-', "_")));
    assert!(path.is_file(), "{} is missing: run `make plugins` (or `make test`) first", path.display());
    path
}

/// A component built outside cargo (`make python-plugins`, `make
/// js-plugins`): `None` when it is not there, recorded as a skip of `what`
/// (see [`skip`]; under CI its absence fails the test).
pub fn built_plugin(name: &str, how: &str) -> Option<PathBuf> {
    let path = target_dir().join("wasm32-wasip2/plugin").join(format!("{}.wasm", name.replace('-', "_")));
    if path.is_file() {
        return Some(path);
    }
    skip(name, &format!("{} is missing ({how})", path.display()));
    None
}

/// One compiled-component cache for the whole test run, so each plugin
/// compiles once.
pub fn cache_dir() -> PathBuf {
    target_dir().join("test-plugin-cache")
}

/// Loads a plugin through the library.
pub fn load(engine: &PluginEngine, crate_name: &str) -> Arc<Plugin> {
    let cache = CompiledCache::new(cache_dir());
    Arc::new(Plugin::load(engine, &plugin_path(crate_name), Some(&cache)).expect("plugin loads"))
}

/// What a run of the `host` binary printed.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `host` with `args`, feeding `stdin`.
pub fn host(args: &[&str], stdin: &str) -> Run {
    let mut child = host_command(args, Stdio::piped()).spawn().expect("host starts");
    let mut input = child.stdin.take().expect("stdin");
    // A host that exits early (e.g. on a bad plugin) closes its stdin; that is fine.
    let _ = input.write_all(stdin.as_bytes());
    drop(input);
    let mut spawned = Spawned::from(child);
    spawned.what = format!("`host {}`", args.join(" "));
    spawned.finish()
}

/// How long a `host` process of a test may run: a hang fails its test
/// (naming the command and what it printed) instead of stalling the suite.
pub const PROCESS_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Runs a test's body for at most [`PROCESS_LIMIT`]: a hang fails the test
/// by name instead of stalling the suite.
pub async fn within<F: std::future::Future>(body: F) -> F::Output {
    match tokio::time::timeout(PROCESS_LIMIT, body).await {
        Ok(out) => out,
        Err(_) => panic!("the test still ran after {PROCESS_LIMIT:?}"),
    }
}

/// A child process whose stdout and stderr are read as it writes them (so
/// a chatty process never blocks on a full pipe while a test waits for it).
pub struct Spawned {
    child: Child,
    /// The command line, for the message when it hangs.
    what: String,
    stdout: Option<std::thread::JoinHandle<String>>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl From<Child> for Spawned {
    fn from(mut child: Child) -> Self {
        let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
            pipe.map(|mut pipe| {
                std::thread::spawn(move || {
                    let mut text = Vec::new();
                    let _ = pipe.read_to_end(&mut text);
                    String::from_utf8_lossy(&text).into_owned()
                })
            })
        };
        let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
        let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
        Spawned { what: format!("process {}", child.id()), child, stdout, stderr }
    }
}

impl std::ops::Deref for Spawned {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.child
    }
}

impl std::ops::DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Spawned {
    /// Waits for the exit (at most [`PROCESS_LIMIT`], then kills it and
    /// fails the test) and collects what it printed.
    pub fn finish(mut self) -> Run {
        let deadline = std::time::Instant::now() + PROCESS_LIMIT;
        let status = loop {
            match self.child.try_wait().expect("wait") {
                Some(status) => break Some(status),
                None if std::time::Instant::now() >= deadline => break None,
                None => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        };
        let collect = |h: Option<std::thread::JoinHandle<String>>| h.and_then(|h| h.join().ok()).unwrap_or_default();
        let Some(status) = status else {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let stderr = collect(self.stderr.take());
            panic!("{} still ran after {PROCESS_LIMIT:?}, killed; it printed:\n{stderr}", self.what);
        };
        Run {
            code: status.code().unwrap_or(-1),
            stdout: collect(self.stdout.take()),
            stderr: collect(self.stderr.take()),
        }
    }
}

/// One produced record of seed 000: an IP, the UTC time it was stamped (the
/// data) and when Kinesis got it (later for a lagging producer).
#[derive(Debug, Clone)]
pub struct Stamped {
    pub ip: &'static str,
    pub stamped_millis: i64,
    pub arrival_millis: i64,
}

/// 2018-07-29T22:35:30Z, a few seconds before the seed's own run.
pub const SEED_START: i64 = 1_532_903_730_000;

/// Seed 000's producers: 8.8.8.8 every 2 s and 8.8.8.9 every 5 s for
/// `seconds`; 8.8.8.9 delivers `lag_seconds` late. Ordered by arrival, as a
/// shard would hold them.
pub fn seed000(seconds: i64, lag_seconds: i64) -> Vec<Stamped> {
    let mut records = Vec::new();
    for t in (0..seconds).step_by(2) {
        let at = SEED_START + t * 1000;
        records.push(Stamped { ip: "8.8.8.8", stamped_millis: at, arrival_millis: at });
    }
    for t in (0..seconds).step_by(5) {
        let at = SEED_START + t * 1000 + 137;
        records.push(Stamped { ip: "8.8.8.9", stamped_millis: at, arrival_millis: at + lag_seconds * 1000 });
    }
    records.sort_by_key(|r| (r.arrival_millis, r.ip));
    records
}

/// Python's `datetime.utcnow().isoformat()` of a time: no offset, microseconds.
pub fn python_isoformat(millis: i64) -> String {
    let text = kinesis_processor_sdk::helpers::time::format_timestamp_millis(millis);
    let text = text.trim_end_matches('Z');
    match text.split_once('.') {
        Some((whole, ms)) => format!("{whole}.{ms}000"),
        None => format!("{text}.000000"),
    }
}

/// Seed 000's records as `host test` input lines.
pub fn seed000_jsonl(records: &[Stamped]) -> String {
    records
        .iter()
        .map(|r| {
            serde_json::json!({
                "partitionKey": r.ip,
                "data": python_isoformat(r.stamped_millis),
                "approximateArrivalTimestamp": r.arrival_millis,
            })
            .to_string()
                + "\n"
        })
        .collect()
}

/// The per-minute counts seed 000's CounterWorker prints, computed directly:
/// (minute start as `YYYY-MM-DDTHH:MM:00Z`, ip) → count.
pub fn expected_minute_counts(records: &[Stamped]) -> std::collections::BTreeMap<(String, String), u64> {
    let mut counts = std::collections::BTreeMap::new();
    for r in records {
        let minute = r.stamped_millis - r.stamped_millis.rem_euclid(60_000);
        let key = (kinesis_processor_sdk::helpers::time::format_timestamp_millis(minute), r.ip.to_string());
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

/// Parses JSON output lines.
pub fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}"))).collect()
}

/// A valid component of another world (it exports `hello`, not the processor).
pub fn other_world_component() -> Vec<u8> {
    wat::parse_str(
        r#"(component
             (core module $m (func (export "f") (result i32) i32.const 7))
             (core instance $i (instantiate $m))
             (func (export "hello") (result u32) (canon lift (core func $i "f"))))"#,
    )
    .expect("wat")
}

/// Starts the `host` binary in the background, output captured.
pub fn spawn_host(args: &[&str]) -> Spawned {
    let mut spawned = Spawned::from(host_command(args, Stdio::null()).spawn().expect("host starts"));
    spawned.what = format!("`host {}`", args.join(" "));
    spawned
}

/// The `host` binary with the shared compiled cache, output captured.
fn host_command(args: &[&str], stdin: Stdio) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_host"));
    command
        .args(args)
        .env("HOST_CACHE_DIR", cache_dir())
        .env_remove("HOST_LOG")
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Waits for a process started by [`spawn_host`] (at most [`PROCESS_LIMIT`]).
pub async fn wait(child: impl Into<Spawned>) -> Run {
    let child = child.into();
    tokio::task::spawn_blocking(move || child.finish()).await.expect("join")
}

/// The highest count of each (window, key) in the counter's JSON-lines
/// sink file: its state's last word on every cell.
pub fn highest_counts(path: &std::path::Path) -> std::collections::BTreeMap<(String, String), u64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut highest = std::collections::BTreeMap::new();
    for v in json_lines(&text) {
        let counted: serde_json::Value = serde_json::from_str(v["data"].as_str().unwrap_or_default()).expect("json");
        let cell = (counted["window_start"].to_string(), counted["key"].to_string());
        let count = highest.entry(cell).or_insert(0);
        *count = counted["count"].as_u64().unwrap_or(0).max(*count);
    }
    highest
}

/// Records counted in the counter's state: [`highest_counts`] summed. A
/// record counted twice (state rolled back wrong) or never shows in the sum.
pub fn counted_in_state(path: &std::path::Path) -> u64 {
    highest_counts(path).values().sum()
}

/// `host run` of `plugin` over `stream` at `url` from TRIM_HORIZON into the
/// JSON-lines file `out`, checkpoints in `db`, no status line; then `extra`.
pub fn run_args(plugin: &str, stream: &str, url: &str, db: &std::path::Path, out: &std::path::Path) -> Vec<String> {
    run_args_as(plugin, stream, url, db, (out, "json"))
}

/// [`run_args`] with the sink's `--output` format.
fn run_args_as(
    plugin: &str,
    stream: &str,
    url: &str,
    db: &std::path::Path,
    (out, format): (&std::path::Path, &str),
) -> Vec<String> {
    let (db, sink) = (db.display().to_string(), format!("file:{}", out.display()));
    [
        "run",
        "--plugin",
        plugin,
        "--stream",
        stream,
        "--endpoint-url",
        url,
        "--start-position",
        "TRIM_HORIZON",
        "--checkpoint-db",
        &db,
        "--sink",
        &sink,
        "--output",
        format,
        "--status-interval",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Starts `host` with `args` plus `extra`.
pub fn spawn_host_with(args: &[String], extra: &[&str]) -> Spawned {
    let all: Vec<&str> = args.iter().map(String::as_str).chain(extra.iter().copied()).collect();
    spawn_host(&all)
}

/// The embedded endpoint (Kinesis and DynamoDB) on a free port.
pub async fn emulator() -> host::local::LocalKinesis {
    host::local::LocalKinesis::start(host::local::LocalOptions { port: 0, ..Default::default() })
        .await
        .expect("emulator")
}

/// Asks `child` to stop (SIGTERM).
pub fn sigterm(child: &std::process::Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill -TERM");
    assert!(status.success());
}

/// What [`raw_http`] got back.
pub struct RawAnswer {
    pub status: u16,
    /// The status line and headers, as sent.
    pub head: String,
    pub body: String,
}

/// One raw HTTP/1.1 exchange: `head` (request line and headers, without
/// the blank line; `Connection: close` is added) and `body` written to
/// `stream` as given, the answer read to the end.
pub async fn raw_http<S>(mut stream: S, head: &str, body: &[u8]) -> RawAnswer
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = [format!("{head}\r\nConnection: close\r\n\r\n").as_bytes(), body].concat();
    // The server may answer (and close) before the whole body is sent.
    let _ = stream.write_all(&request).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer).to_string();
    let status = answer.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    RawAnswer { status, head: head.to_string(), body: body.to_string() }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

/// Waits until something accepts connections on 127.0.0.1:`port`.
pub async fn wait_for_port(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("nothing listens on 127.0.0.1:{port}");
}

/// Python with `modules` importable (`HOST_TEST_PYTHON`, else target/pyenv's,
/// where `make test` installs boto3 and aws-kinesis-agg, else `python3`);
/// `None`, recorded as a skip (see [`skip`]), when they are missing.
pub fn python_with(modules: &str) -> Option<String> {
    let pyenv = target_dir().join("pyenv/bin/python");
    let python = std::env::var("HOST_TEST_PYTHON").unwrap_or_else(|_| match pyenv.is_file() {
        true => pyenv.display().to_string(),
        false => "python3".into(),
    });
    let import = format!("import {modules}");
    if Command::new(&python).args(["-c", &import]).output().is_ok_and(|o| o.status.success()) {
        return Some(python);
    }
    skip("", &format!("{python} cannot {import} (`make test` installs it into target/pyenv)"));
    None
}

/// `host run` of `plugin` (a path) over `stream` from its start, SQLite
/// checkpoints in `db`, plain output to `out`, until idle for 1.5 s.
pub fn run_until_idle(plugin: &str, stream: &str, endpoint: &str, db: &std::path::Path, out: &std::path::Path) -> Run {
    let mut args = run_args_as(plugin, stream, endpoint, db, (out, "plain"));
    args.extend(["--idle-exit", "1.5", "--idle-time-ms", "100"].map(String::from));
    host(&args.iter().map(String::as_str).collect::<Vec<_>>(), "")
}

/// Waits (up to `within`) until a shard of the host at `control` is on
/// probation, not failed in it: a swap began and its first batch is awaited.
pub async fn until_on_probation(control: &str, within: std::time::Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let status = host(&["swap", "--control-addr", control, "--status"], "");
        let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap_or_default();
        if status["probation"].as_object().is_some_and(|p| p.values().any(|e| e["failed"].is_null())) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no shard went on probation: {status}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
