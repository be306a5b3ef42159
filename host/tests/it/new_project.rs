//! `host new NAME --lang rust|python|js`: each project builds with its own
//! `./build.sh` from a clean directory (its unit test included) and `host
//! test` on its sample input prints what its README says.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Makes a project in a fresh folder, builds it, and replays its records;
/// returns the project's folder and its parent (removed when dropped).
fn new_builds_and_passes_host_test(lang: &str, env: &[(&str, String)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let project = dir.path().join(format!("my-{lang}"));
    new_project(&project, lang, "echo");
    template_builds_and_passes_host_test(&project, lang, env);
    (dir, project)
}

/// Builds a project `host new` made in `project` (its name the folder's),
/// and replays its records against its `expected.txt`.
pub fn template_builds_and_passes_host_test(project: &Path, lang: &str, env: &[(&str, String)]) {
    let name = project.file_name().expect("a folder name").to_string_lossy().into_owned();
    let built = build(project, env);
    assert!(built.status.success(), "{lang}: {}", String::from_utf8_lossy(&built.stderr));
    let wasm = project.join(format!("{name}.wasm"));
    assert!(wasm.is_file(), "{lang}: no {}", wasm.display());
    let records = project.join("records.jsonl").display().to_string();
    let run = host(&["test", "--plugin", &wasm.display().to_string(), "--input", &records], "");
    assert_eq!(run.code, 0, "{}", run.stderr);
    let expected = std::fs::read_to_string(project.join("expected.txt")).expect("expected.txt");
    assert_eq!(run.stdout, expected, "{lang}");
    let expect = project.join("expected.txt").display().to_string();
    let checked =
        host(&["test", "--plugin", &wasm.display().to_string(), "--input", &records, "--expect", &expect], "");
    assert_eq!(checked.code, 0, "{}", checked.stderr);
    // A second `host new` into it is refused, naming the folder.
    let again = host(&["new", "my-x", "--dir", &project.display().to_string()], "");
    assert_eq!(again.code, 2);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
}

/// `host new` of `template` into `project` (its name the folder's).
fn new_project(project: &Path, lang: &str, template: &str) {
    let name = project.file_name().expect("a folder name").to_string_lossy().into_owned();
    let folder = project.display().to_string();
    let made = host(&["new", &name, "--lang", lang, "--template", template, "--dir", &folder], "");
    assert_eq!(made.code, 0, "{}", made.stderr);
    assert!(made.stderr.contains("./build.sh"), "says what to do next: {}", made.stderr);
}

/// Runs the project's `./build.sh` as in an author's shell: nothing of
/// this test run's build or runner.
pub fn build(project: &Path, env: &[(&str, String)]) -> std::process::Output {
    let mut build = Command::new(project.join("build.sh"));
    build.current_dir(project);
    for var in ["CARGO_TARGET_DIR", "COMPONENTIZE_PY", "RUSTC_BOOTSTRAP", "RUSTC_WORKSPACE_WRAPPER", "CLIPPY_ARGS"] {
        build.env_remove(var);
    }
    for (k, v) in env {
        build.env(k, v);
    }
    build.output().expect("build.sh runs")
}

/// An author's mistakes, each shown by `./build.sh` where it is: a failing
/// test by its name, file and line; a syntax error by its file and line.
/// Undone, the build is up to date again without building.
fn mistakes_are_shown_where_they_are(
    project: &Path,
    env: &[(&str, String)],
    (test_file, failing_test, test_name): (&str, &str, &str),
    (source, broken_line, place): (&str, &str, &str),
) {
    let again = build(project, env);
    let said = String::from_utf8_lossy(&again.stderr).into_owned();
    assert!(again.status.success() && said.contains("up to date"), "nothing changed: {said}");
    for (file, added, needles) in
        [(test_file, failing_test, [test_name, test_file]), (source, broken_line, [place, source])]
    {
        let path = project.join(file);
        let before = std::fs::read_to_string(&path).expect("source");
        std::fs::write(&path, format!("{before}{added}")).expect("write");
        let broken = build(project, env);
        let said = String::from_utf8_lossy(&broken.stderr).into_owned();
        assert_eq!(broken.status.code(), Some(1), "{file}: {said}");
        for needle in needles {
            assert!(said.contains(needle), "{file}: `{needle}` not shown: {said}");
        }
        assert!(said.contains("was not built"), "{said}");
        std::fs::write(&path, before).expect("write");
    }
    let back = build(project, env);
    let said = String::from_utf8_lossy(&back.stderr).into_owned();
    assert!(back.status.success() && said.contains("up to date"), "undone: {said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_rust_project_builds_and_passes_host_test() {
    let _watched = watchdog::watch();
    // The projects share one target folder (as with CARGO_TARGET_DIR set
    // in an author's shell): the SDK's dependencies compile once.
    let target = tempfile::tempdir().expect("tempdir");
    let env = [("CARGO_TARGET_DIR", target.path().display().to_string())];
    let (dir, _) = new_builds_and_passes_host_test("rust", &env);
    authors_session(dir.path(), "rust", &env, "src/lib.rs", "src/lib.rs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_python_project_builds_and_passes_host_test() {
    let _watched = watchdog::watch();
    // As on a machine where componentize-py was never installed: its
    // `./build.sh` installs it (pinned) into the project's `.venv`.
    let venv = Command::new("python3").args(["-c", "import venv, ensurepip"]).output();
    if !venv.is_ok_and(|o| o.status.success()) {
        skip("", "python3 with venv and ensurepip is needed (apt-get install python3-venv)");
        return;
    }
    let path = std::env::var("PATH").unwrap_or_default();
    let path: Vec<&str> = path.split(':').filter(|dir| !Path::new(dir).join("componentize-py").exists()).collect();
    let env = [("PATH", path.join(":"))];
    let (_dir, project) = new_builds_and_passes_host_test("python", &env);
    assert!(project.join(".venv/bin/componentize-py").is_file(), "build.sh installed componentize-py in the project");
    mistakes_are_shown_where_they_are(
        &project,
        &env,
        (
            "test_app.py",
            "\n\nclass Broken(unittest.TestCase):\n    def test_two_is_three(self):\n        self.assertEqual(2, 3)\n",
            "test_two_is_three",
        ),
        ("app.py", "\ndef oops(:\n", "SyntaxError"),
    );
    // `host dev --watch DIR`: a save is a test run, a build and a swap.
    let (wasm, records) = (project.join("my-python.wasm"), project.join("records.jsonl"));
    let log_path = project.parent().expect("a parent").join("dev.log");
    let mut dev = Command::new(env!("CARGO_BIN_EXE_host"))
        .args(["dev", "--plugin", &wasm.display().to_string(), "--watch", &project.display().to_string()])
        .args(["--input", &records.display().to_string(), "--duration", "300", "--port", "0"])
        .env("HOST_CACHE_DIR", cache_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log"))
        .spawn()
        .expect("host dev starts");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let until = |what: &str| {
        let start = std::time::Instant::now();
        while !log().contains(what) {
            assert!(start.elapsed() < std::time::Duration::from_secs(120), "no `{what}`: {}", log());
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    until("dev: put 3 records");
    let app = project.join("app.py");
    let source = std::fs::read_to_string(&app).expect("app.py");
    std::fs::write(&app, format!("{source}\nVERSION = 2\n")).expect("write");
    until("swap: swapped");
    sigterm(&dev);
    assert!(dev.wait().expect("dev stops").success(), "{}", log());
    for line in ["watch: app.py changed; running ./build.sh", "watch: built in"] {
        assert!(log().contains(line), "`{line}` missing: {}", log());
    }
    // The other templates, with the componentize-py the first build installed.
    let tool = project.join(".venv/bin/componentize-py").display().to_string();
    let env = [env[0].clone(), ("COMPONENTIZE_PY", tool)];
    authors_session(project.parent().expect("a parent"), "python", &env, "app.py", "test_app.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_javascript_project_builds_and_passes_host_test() {
    let _watched = watchdog::watch();
    if Command::new("npm").arg("--version").output().is_err() {
        skip("", "node and npm are needed (apt-get install nodejs npm)");
        return;
    }
    // The unit tests run before any install or build.
    let fresh = tempfile::tempdir().expect("tempdir");
    let made = host(&["new", "fresh", "--lang", "js", "--dir", &fresh.path().display().to_string()], "");
    assert_eq!(made.code, 0, "{}", made.stderr);
    let tests = Command::new("node").arg("--test").current_dir(fresh.path()).output().expect("node runs");
    assert!(tests.status.success(), "node --test: {}", String::from_utf8_lossy(&tests.stdout));
    let (_dir, project) = new_builds_and_passes_host_test("js", &[]);
    mistakes_are_shown_where_they_are(
        &project,
        &[],
        ("processor.test.js", "\ntest('two is three', () => assert.equal(2, 3));\n", "two is three"),
        ("processor.js", "\nexport const oops = (;\n", "SyntaxError"),
    );
    // A bug in the author's code is named by its file and line there, not
    // the bundle's (the component carries build.mjs' line table).
    let source = project.join("processor.js");
    let text = std::fs::read_to_string(&source).expect("processor.js");
    let line = text.lines().position(|l| l.contains("out.emit(")).expect("an emit") + 1;
    std::fs::write(&source, text.replacen("out.emit(", "out.emitt(", 1)).expect("write");
    let wasm = project.join("my-js.wasm").display().to_string();
    std::fs::write(project.join("processor.test.js"), "").expect("no unit test of it");
    let built = build(&project, &[]);
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let crash = host(&["test", "--plugin", &wasm, "--retries", "0"], "{\"partitionKey\": \"k\", \"data\": \"x\"}\n");
    assert_eq!(crash.code, 1, "{}", crash.stderr);
    let wanted = format!("TypeError: out.emitt is not a function (process@processor.js:{line})");
    assert!(crash.stderr.contains(&wanted), "{wanted}: {}", crash.stderr);
    authors_session(project.parent().expect("a parent"), "js", &[], "processor.js", "processor.test.js").await;
}

/// A JavaScript project's build tools, taken from the first project built
/// in `dir` (`my-js`), as npm's cache would give them: the suite skips an
/// `npm ci` per project.
fn share_js_tools(dir: &Path, project: &Path) {
    let tools = dir.join("my-js/vendor/kinesis-processor/node_modules");
    if tools.is_dir() {
        std::os::unix::fs::symlink(&tools, project.join("vendor/kinesis-processor/node_modules")).expect("symlink");
    }
}

/// A new author's session with the other templates, in `dir`: `filter`
/// builds and matches its `expected.txt`; `window-counter` is made, edited
/// (a field added to its output, in the logic, the unit test and
/// `expected.txt`), built, checked with `host test --expect`, run with
/// `host run` on the embedded endpoint, edited again and `host swap`ped in:
/// its counts go on from the state of the logic before.
async fn authors_session(dir: &Path, lang: &str, env: &[(&str, String)], source: &str, unit_test: &str) {
    let filter = dir.join(format!("filter-{lang}"));
    new_project(&filter, lang, "filter");
    share_js_tools(dir, &filter);
    template_builds_and_passes_host_test(&filter, lang, env);
    let project = dir.join(format!("counts-{lang}"));
    // Built once edited: its output and expected.txt gain the same field.
    new_project(&project, lang, "window-counter");
    share_js_tools(dir, &project);
    let wasm = project.join(format!("counts-{lang}.wasm")).display().to_string();
    assert!(!Path::new(&wasm).exists());
    let records = project.join("records.jsonl").display().to_string();
    let edit = |version: u32| {
        let mut files = vec![source, unit_test, "expected.txt"];
        files.dedup();
        for file in files {
            let path = project.join(file);
            let text = std::fs::read_to_string(&path).expect("source");
            let from =
                if version == 1 { ",\"count\":".to_string() } else { format!(",\"v\":{},\"count\":", version - 1) };
            let edited = text.replace(&from, &format!(",\"v\":{version},\"count\":"));
            assert_ne!(edited, text, "{file} has the output line");
            std::fs::write(&path, edited).expect("write");
        }
        let built = build(&project, env);
        assert!(built.status.success(), "{lang}: {}", String::from_utf8_lossy(&built.stderr));
        let expect = project.join("expected.txt").display().to_string();
        let checked = host(&["test", "--plugin", &wasm, "--input", &records, "--expect", &expect], "");
        assert_eq!(checked.code, 0, "{lang}: {}{}", checked.stdout, checked.stderr);
    };
    edit(1);

    let local = emulator().await;
    let url = local.endpoint_url();
    let stream = format!("counts-{lang}");
    let created = host(&["stream", "create", &stream, "--shards", "1", "--wait", "--endpoint-url", &url], "");
    assert_eq!(created.code, 0, "{}", created.stderr);
    let put = || {
        let put = host(&["produce", "--stream", &stream, "--endpoint-url", &url, "--file", &records], "");
        assert_eq!(put.code, 0, "{}", put.stderr);
    };
    put();
    let out = dir.join(format!("counts-{lang}.out"));
    let control = format!("127.0.0.1:{}", free_port());
    let args = run_args(&wasm, &stream, &url, &dir.join(format!("counts-{lang}.db")), &out);
    let run = spawn_host_with(&args, &["--control-addr", &control, "--idle-time-ms", "100", "--swap-probation", "1"]);
    // The highest count per (window, key) of the output lines of logic `v`.
    let counts = |v: u32| {
        let mut counts = std::collections::BTreeMap::new();
        for line in std::fs::read_to_string(&out).unwrap_or_default().lines() {
            let Ok(line) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            let Ok(data) = serde_json::from_str::<serde_json::Value>(line["data"].as_str().unwrap_or_default()) else {
                continue;
            };
            if data["v"] == v {
                let place = (data["window_start"].to_string(), data["key"].to_string());
                let count = counts.entry(place).or_insert(0);
                *count = data["count"].as_u64().unwrap_or(0).max(*count);
            }
        }
        counts.into_values().collect::<Vec<u64>>()
    };
    let until = |v: u32, wanted: Vec<u64>| async move {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while counts(v) != wanted {
            assert!(std::time::Instant::now() < deadline, "{lang}: v{v} counted {:?}, not {wanted:?}", counts(v));
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    until(1, vec![2, 1, 1]).await;

    // The next version, swapped into the running host: the same records
    // again count on from the state of the version before.
    edit(2);
    let swap = spawn_host(&["swap", "--control-addr", &control, "--plugin", &wasm, "--probation-wait", "60"]);
    // Once the shard runs it (on probation), the records again: its first batch passes.
    until_on_probation(&control, std::time::Duration::from_secs(30)).await;
    put();
    let swapped = wait(swap).await;
    assert_eq!(swapped.code, 0, "{lang}: {}{}", swapped.stdout, swapped.stderr);
    assert!(swapped.stdout.starts_with("swapped: now running"), "{}", swapped.stdout);
    assert!(swapped.stdout.contains("passed probation on every shard"), "{}", swapped.stdout);
    until(2, vec![4, 2, 2]).await;
    sigterm(&run);
    let ran = wait(run).await;
    assert_eq!(ran.code, 0, "{lang}: {}", ran.stderr);
    local.stop().await;
}

#[test]
fn bad_names_are_one_line() {
    let bad = host(&["new", "My Processor", "--lang", "python"], "");
    assert_eq!(bad.code, 2);
    assert_eq!(bad.stderr.trim().lines().count(), 1, "{}", bad.stderr);
    assert!(bad.stderr.contains("lowercase letters"), "{}", bad.stderr);
    let lang = host(&["new", "x", "--lang", "cobol"], "");
    assert_eq!(lang.code, 2);
    assert!(lang.stderr.contains("rust") && lang.stderr.contains("python"), "{}", lang.stderr);
}
