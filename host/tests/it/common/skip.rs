//! A test that cannot run here says so and is counted, instead of passing
//! without testing: [`skip`] prints one line past libtest's capture and adds
//! it to the skip ledger, whose lines `make test` lists in its closing
//! summary. Under `CI=true` a skip fails the test: CI must run everything.

use std::io::Write;
use std::path::PathBuf;

/// The ledger: `HOST_TEST_SKIPS` (set by `make test`, which empties it
/// first and prints it last), else `target/test-skips.txt`.
pub fn ledger() -> PathBuf {
    std::env::var_os("HOST_TEST_SKIPS").map(PathBuf::from).unwrap_or_else(|| super::target_dir().join("test-skips.txt"))
}

/// Records that the calling test (or the part of it named by `what`) did
/// not run, and why; panics under CI. libtest names a test's thread after
/// the test, so call this from the test's own thread.
pub fn skip(what: &str, reason: &str) {
    let test = std::thread::current().name().unwrap_or("a test").to_string();
    let line = if what.is_empty() { format!("{test}: {reason}") } else { format!("{test} ({what}): {reason}") };
    if std::env::var_os("CI").is_some() {
        panic!("cannot run under CI, where every test must: {line}");
    }
    // Straight to stderr: libtest captures only the print macros, and a
    // skip must show in a passing run.
    let _ = writeln!(std::io::stderr(), "skipped: {line}");
    let path = ledger();
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    // One write per line in append mode: tests in parallel do not interleave.
    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(&path) {
        let _ = file.write_all(format!("{line}\n").as_bytes());
    }
}
