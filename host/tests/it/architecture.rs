//! The dependency rules of ARCHITECTURE.md, checked on the source: no import
//! circle between the host's modules, the layering rules, clap only in the
//! CLI, and files small enough to read (`main.rs` only dispatches).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Top-level module → the top-level modules it names through `crate::`.
type Edges = BTreeMap<String, BTreeSet<String>>;

/// The import graph, and every source file (path under `src`, text).
fn graph() -> (Edges, Vec<(PathBuf, String)>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut edges = Edges::new();
    let mut texts = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&src).expect("under src");
        let module =
            rel.components().next().and_then(|c| c.as_os_str().to_str()).unwrap_or_default().trim_end_matches(".rs");
        let text = std::fs::read_to_string(&file).expect("read");
        let targets = edges.entry(module.to_string()).or_default();
        for (i, _) in text.match_indices("crate::") {
            let name: String = text[i + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() && name != module {
                targets.insert(name);
            }
        }
        texts.push((rel.to_path_buf(), text));
    }
    (edges, texts)
}

fn reaches(edges: &Edges, from: &str, to: &str, seen: &mut BTreeSet<String>) -> bool {
    edges
        .get(from)
        .is_some_and(|next| next.iter().any(|n| n == to || (seen.insert(n.clone()) && reaches(edges, n, to, seen))))
}

#[test]
fn modules_form_no_import_circle_and_keep_their_layers() {
    let (edges, _) = graph();
    for (module, targets) in &edges {
        for target in targets {
            assert!(
                !reaches(&edges, target, module, &mut BTreeSet::new()),
                "import circle: {module} → {target} → … → {module}"
            );
        }
    }
    let leaves = ["progress", "shutdown", "backoff", "private", "loopback"];
    for leaf in leaves {
        assert!(edges.get(leaf).is_none_or(|t| t.is_empty()), "{leaf} is a leaf: it imports {:?}", edges.get(leaf));
    }
    let forbidden: [(&str, &[&str]); 10] = [
        ("plugin", &["kinesis", "checkpoint", "sink", "consumer", "source", "policy", "swap"]),
        ("checkpoint", &["plugin", "consumer", "kinesis"]),
        ("policy", &["kinesis", "checkpoint", "consumer", "source", "swap"]),
        ("swap", &["consumer"]),
        ("source", &["kinesis", "consumer", "checkpoint"]),
        ("progress", &["consumer", "swap", "metrics", "kinesis", "plugin"]),
        ("consumer", &["lease"]),
        ("lease", &["consumer", "plugin", "kinesis", "policy", "swap", "sink", "group"]),
        ("group", &["consumer", "kinesis", "sink", "policy"]),
        ("swap", &["lease", "group"]),
    ];
    for (module, never) in forbidden {
        for target in never {
            assert!(!edges.get(module).is_some_and(|t| t.contains(*target)), "{module} must not import {target}");
        }
    }
}

#[test]
fn clap_stays_in_the_cli_and_files_stay_small() {
    let (_, texts) = graph();
    for (path, text) in &texts {
        let in_cli = path.starts_with("cli") || path == Path::new("main.rs");
        assert!(in_cli || !text.contains("clap::"), "{} uses clap outside the CLI layer", path.display());
        let lines = text.lines().count();
        assert!(lines <= 460, "{} has {lines} lines; split it by concern", path.display());
    }
    let main = texts.iter().find(|(p, _)| p == Path::new("main.rs")).map(|(_, t)| t.lines().count());
    assert!(main.is_some_and(|n| n < 100), "main.rs only dispatches: {main:?} lines");
}

#[test]
fn a_test_that_cannot_run_is_recorded_not_silently_passed() {
    // Every skip goes through `common::skip` (the ledger `make test` lists,
    // fatal under CI), never a bare "skipped" line before an early return.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it");
    let mut files = Vec::new();
    sources(&dir, &mut files);
    let bare: Vec<String> = files
        .iter()
        .filter(|f| !f.ends_with("common/skip.rs"))
        .filter(|f| std::fs::read_to_string(f).is_ok_and(|t| t.contains(concat!("eprintln!(\"", "skipped"))))
        .map(|f| f.display().to_string())
        .collect();
    assert!(bare.is_empty(), "skips that bypass common::skip: {bare:?}");
}
