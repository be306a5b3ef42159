//! `host new NAME --lang rust|python|js`: each project builds with its own
//! `./build.sh` from a clean directory (its unit test included) and `host
//! test` on its sample input prints what its README says.

use crate::common::*;
use std::path::Path;
use std::process::Command;

/// Makes a project in a fresh folder, builds it, and replays its records.
fn new_builds_and_passes_host_test(lang: &str, env: &[(&str, String)]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let project = dir.path().join(format!("my-{lang}"));
    let made = host(&["new", &format!("my-{lang}"), "--lang", lang, "--dir", &project.display().to_string()], "");
    assert_eq!(made.code, 0, "{}", made.stderr);
    assert!(made.stderr.contains("./build.sh"), "says what to do next: {}", made.stderr);
    let mut build = Command::new(project.join("build.sh"));
    build.current_dir(&project).env_remove("CARGO_TARGET_DIR");
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
}

#[test]
fn a_new_rust_project_builds_and_passes_host_test() {
    new_builds_and_passes_host_test("rust", &[]);
}

#[test]
fn a_new_python_project_builds_and_passes_host_test() {
    let cpy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pyenv/bin/componentize-py");
    if !cpy.is_file() {
        assert!(std::env::var_os("CI").is_none(), "CI must install componentize-py into target/pyenv (.ci/run)");
        eprintln!("skipped: no componentize-py in target/pyenv");
        return;
    }
    new_builds_and_passes_host_test("python", &[("COMPONENTIZE_PY", cpy.display().to_string())]);
}

#[test]
fn a_new_javascript_project_builds_and_passes_host_test() {
    if Command::new("npm").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "CI must have node and npm");
        eprintln!("skipped: no npm");
        return;
    }
    new_builds_and_passes_host_test("js", &[]);
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
