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
    let made = host(&["new", &format!("my-{lang}"), "--lang", lang, "--dir", &project.display().to_string()], "");
    assert_eq!(made.code, 0, "{}", made.stderr);
    assert!(made.stderr.contains("./build.sh"), "says what to do next: {}", made.stderr);
    let mut build = Command::new(project.join("build.sh"));
    // As in an author's shell: nothing of this test run's build or runner.
    build.current_dir(&project);
    for var in ["CARGO_TARGET_DIR", "COMPONENTIZE_PY", "RUSTC_BOOTSTRAP", "RUSTC_WORKSPACE_WRAPPER", "CLIPPY_ARGS"] {
        build.env_remove(var);
    }
    for (k, v) in env {
        build.env(k, v);
    }
    let built = build.output().expect("build.sh runs");
    assert!(built.status.success(), "{lang}: {}", String::from_utf8_lossy(&built.stderr));
    let wasm = project.join(format!("my-{lang}.wasm"));
    assert!(wasm.is_file(), "{lang}: no {}", wasm.display());
    let records = project.join("records.jsonl").display().to_string();
    let run = host(&["test", "--plugin", &wasm.display().to_string(), "--input", &records], "");
    assert_eq!(run.code, 0, "{}", run.stderr);
    let expected = std::fs::read_to_string(project.join("expected.txt")).expect("expected.txt");
    assert_eq!(run.stdout, expected, "{lang}");
    // A second `host new` into it is refused, naming the folder.
    let again = host(&["new", "my-x", "--dir", &project.display().to_string()], "");
    assert_eq!(again.code, 2);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    (dir, project)
}

#[test]
fn a_new_rust_project_builds_and_passes_host_test() {
    let _ = new_builds_and_passes_host_test("rust", &[]);
}

#[test]
fn a_new_python_project_builds_and_passes_host_test() {
    // As on a machine where componentize-py was never installed: its
    // `./build.sh` installs it (pinned) into the project's `.venv`.
    let venv = Command::new("python3").args(["-c", "import venv, ensurepip"]).output();
    if !venv.is_ok_and(|o| o.status.success()) {
        skip("", "python3 with venv and ensurepip is needed (apt-get install python3-venv)");
        return;
    }
    let path = std::env::var("PATH").unwrap_or_default();
    let path: Vec<&str> = path.split(':').filter(|dir| !Path::new(dir).join("componentize-py").exists()).collect();
    let (_dir, project) = new_builds_and_passes_host_test("python", &[("PATH", path.join(":"))]);
    assert!(project.join(".venv/bin/componentize-py").is_file(), "build.sh installed componentize-py in the project");
}

#[test]
fn a_new_javascript_project_builds_and_passes_host_test() {
    if Command::new("npm").arg("--version").output().is_err() {
        skip("", "node and npm are needed (apt-get install nodejs npm)");
        return;
    }
    let _ = new_builds_and_passes_host_test("js", &[]);
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
