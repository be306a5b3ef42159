//! `--watch DIR`: the author's loop. Whenever a source of the project in
//! DIR changes, its own `./build.sh` runs (tests, then the component);
//! the component it writes is then swapped in by the plugin file's watch,
//! like any rebuild. A failing build is shown and the running logic stays.

use anyhow::Context;
use notify::{RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long the sources must be quiet before a build starts (an editor's
/// save is several writes).
const QUIET: Duration = Duration::from_millis(300);

/// The most of a failing build's output shown.
const MAX_SHOWN: usize = 64 * 1024;

/// A running project watch; dropping it stops it.
pub struct ProjectWatcher {
    /// Kept alive: dropping the watcher ends the notifications.
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ProjectWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether a changed path is a source of the project (not what a build
/// writes, not a tool's folder, not an editor's scratch file).
fn is_source(dir: &Path, path: &Path) -> bool {
    let Ok(relative) = path.strip_prefix(dir) else { return false };
    let skipped = ["target", "node_modules", ".venv", "__pycache__", ".git", "vendor"];
    if relative.components().any(|c| skipped.iter().any(|s| c.as_os_str() == *s)) {
        return false;
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let built = [".wasm", ".wasm.src", ".bundle.js", ".cwasm", "~", ".swp", ".tmp"];
    !name.starts_with('.') && !name.starts_with('#') && !built.iter().any(|b| name.ends_with(b))
}

/// Starts watching the project in `dir`: a change to its sources runs
/// `dir/build.sh`.
pub fn watch_project(dir: &Path) -> anyhow::Result<ProjectWatcher> {
    let dir = std::path::absolute(dir).with_context(|| format!("cannot resolve --watch {}", dir.display()))?;
    let script = dir.join("build.sh");
    if !script.is_file() {
        anyhow::bail!(
            "--watch {}: no build.sh there; give the folder `host new` made (or --watch alone for the plugin file)",
            dir.display()
        );
    }
    let (tx, mut changes) = mpsc::unbounded_channel::<PathBuf>();
    let root = dir.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        for path in event.paths.into_iter().filter(|p| is_source(&root, p)) {
            let _ = tx.send(path);
        }
    })
    .context("cannot start watching files")?;
    watcher
        .watch(&dir, RecursiveMode::Recursive)
        .with_context(|| format!("cannot watch {} for changes", dir.display()))?;
    eprintln!("watch: rebuilding with {} when a source in {} changes", script.display(), dir.display());
    let task = tokio::spawn(async move {
        while let Some(first) = changes.recv().await {
            // Every further change restarts the wait.
            loop {
                tokio::select! {
                    change = changes.recv() => if change.is_none() { return },
                    _ = tokio::time::sleep(QUIET) => break,
                }
            }
            let changed = first.strip_prefix(&dir).unwrap_or(&first).display().to_string();
            build(&dir, &script, &changed).await;
            // What the build itself touched is not a change of the author's.
            while changes.try_recv().is_ok() {}
        }
    });
    Ok(ProjectWatcher { _watcher: watcher, task })
}

/// Runs the project's build once, saying how it went.
async fn build(dir: &Path, script: &Path, changed: &str) {
    eprintln!("watch: {changed} changed; running ./build.sh");
    let started = Instant::now();
    let output = tokio::process::Command::new(script).current_dir(dir).kill_on_drop(true).output().await;
    match output {
        Ok(out) if out.status.success() => {
            eprintln!("watch: built in {:.1} s; the new component is swapped in", started.elapsed().as_secs_f64());
        }
        Ok(out) => {
            let said = String::from_utf8_lossy(&out.stderr);
            let from = (said.len().saturating_sub(MAX_SHOWN)..said.len()).find(|i| said.is_char_boundary(*i));
            eprintln!("{}", said[from.unwrap_or(0)..].trim_end());
            eprintln!("watch: ./build.sh failed ({}); the running logic stays", out.status);
        }
        Err(e) => eprintln!("watch: cannot run {}: {e}", script.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_the_authors_files_not_what_builds_write() {
        let dir = Path::new("/p");
        for source in ["/p/app.py", "/p/processor.js", "/p/src/lib.rs", "/p/test_app.py", "/p/records.jsonl"] {
            assert!(is_source(dir, Path::new(source)), "{source}");
        }
        for built in [
            "/p/my.wasm",
            "/p/my.wasm.src",
            "/p/my.bundle.js",
            "/p/.build-stamp",
            "/p/target/x.rs",
            "/p/node_modules/a/b.js",
            "/p/.venv/lib/x.py",
            "/p/__pycache__/app.cpython-311.pyc",
            "/p/.app.py.swp",
            "/p/app.py~",
            "/elsewhere/app.py",
        ] {
            assert!(!is_source(dir, Path::new(built)), "{built}");
        }
    }
}
