//! `host-bench plugin` as a user runs it: the table, and one clear line for
//! a plugin that has no native twin. Needs `make plugins`.

use std::process::Command;

fn plugin(name: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.join("target/wasm32-wasip2/plugin").join(format!("{name}.wasm")).display().to_string()
}

fn bench(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_host-bench")).args(args).output().expect("host-bench runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn the_plugin_bench_prints_a_table_with_the_native_ratio() {
    let counter = plugin("counter");
    let (code, stdout, stderr) =
        bench(&["plugin", "--plugin", &counter, "--records", "20000", "--batch-sizes", "10,1000"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("| batch size | wasm records/s |"), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("| 1000 |")), "{stdout}");
    let (code, _, stderr) = bench(&["plugin", "--plugin", &plugin("echo"), "--records", "1000", "--batch-sizes", "10"]);
    assert_eq!(code, 2, "a plugin that is not the counter has no native twin");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("does not emit what the native counter emits"), "{stderr}");
}

#[test]
fn the_languages_bench_checks_the_counters_agree_and_prints_ratios_to_rust() {
    // The Rust counter in all three places: the table's machinery, cheaply
    // (the Python and JS components are measured by hand: README).
    let counter = plugin("counter");
    let (code, stdout, stderr) = bench(&[
        "languages",
        "--rust",
        &counter,
        "--python",
        &counter,
        "--js",
        &counter,
        "--records",
        "3000",
        "--rounds",
        "1",
    ]);
    assert_eq!(code, 0, "{stderr}");
    for language in ["Rust", "Python", "JavaScript"] {
        let row =
            stdout.lines().find(|l| l.starts_with(&format!("| {language} |"))).unwrap_or_else(|| panic!("{stdout}"));
        assert!(row.contains(" MB | "), "a component size: {row}");
        assert!(row.ends_with("x |") && row.contains(" MiB |"), "an RSS figure and its ratio: {row}");
    }
    // A processor that is not the counter cannot be compared with it.
    let (code, _, stderr) = bench(&[
        "languages",
        "--rust",
        &counter,
        "--python",
        &plugin("echo"),
        "--js",
        &counter,
        "--records",
        "500",
        "--rounds",
        "1",
    ]);
    assert_eq!(code, 2, "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors, ["error: the Python counter's output differs from the Rust one's"], "{stderr}");
    let (code, _, stderr) =
        bench(&["languages", "--rust", &counter, "--python", &counter, "--js", "/nonexistent/js_counter.wasm"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("the JavaScript counter /nonexistent/js_counter.wasm is missing: build it with `make plugins python-plugins js-plugins`"), "{stderr}");
}
