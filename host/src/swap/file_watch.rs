//! `--watch`: a swap whenever the plugin file changes on disk.
//!
//! The directory is watched, not the file, so an editor's or a build tool's
//! write-then-rename is seen too. Writes are debounced: a file closed after
//! writing, or renamed into place, is complete, and is taken after
//! `settle`; plain writes wait until the file has been quiet for `quiet`,
//! so a half-written component is never loaded (and if one were, the check
//! refuses it and the old logic keeps running).

use super::{PluginSource, SwapRequest};
use anyhow::Context;
use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long to wait after a change before loading.
#[derive(Debug, Clone, Copy)]
pub struct Debounce {
    /// After a close-after-write or a rename into place.
    pub settle: Duration,
    /// After other writes, measured from the last one.
    pub quiet: Duration,
}

impl Default for Debounce {
    fn default() -> Self {
        Debounce { settle: Duration::from_millis(20), quiet: Duration::from_millis(300) }
    }
}

/// A running watch; dropping it stops it.
pub struct FileWatcher {
    /// Kept alive: dropping the watcher ends the notifications.
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FileWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How complete a change says the file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileChange {
    /// Closed after writing, or renamed into place.
    Complete,
    /// Being written.
    Partial,
}

fn classify(kind: &EventKind) -> Option<FileChange> {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Some(FileChange::Complete),
        EventKind::Modify(ModifyKind::Name(_)) => Some(FileChange::Complete),
        EventKind::Create(_) | EventKind::Modify(_) => Some(FileChange::Partial),
        _ => None,
    }
}

/// Starts watching `path`; each settled change sends a swap request.
pub fn watch(path: &Path, requests: mpsc::Sender<SwapRequest>, debounce: Debounce) -> anyhow::Result<FileWatcher> {
    let path = std::path::absolute(path).with_context(|| format!("cannot resolve --watch path {}", path.display()))?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
    let name = path.file_name().map(|n| n.to_os_string()).context("--watch needs a file path")?;
    let (tx, mut changes) = mpsc::unbounded_channel::<FileChange>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if !event.paths.iter().any(|p| p.file_name() == Some(name.as_os_str())) {
            return;
        }
        if let Some(change) = classify(&event.kind) {
            let _ = tx.send(change);
        }
    })
    .context("cannot start watching files")?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("cannot watch {} for changes", dir.display()))?;
    let task = tokio::spawn(async move {
        while let Some(first) = changes.recv().await {
            let mut wait = if first == FileChange::Complete { debounce.settle } else { debounce.quiet };
            // Every further change restarts the wait.
            loop {
                tokio::select! {
                    change = changes.recv() => match change {
                        Some(FileChange::Complete) => wait = debounce.settle,
                        Some(FileChange::Partial) => wait = debounce.quiet,
                        None => return,
                    },
                    _ = tokio::time::sleep(wait) => break,
                }
            }
            if !path.exists() {
                continue; // deleted or moved away: nothing to load
            }
            tracing::info!(plugin = %path.display(), "plugin file changed; swapping");
            if requests
                .send(SwapRequest::Swap { source: PluginSource::Path(path.clone()), only: None, reply: None })
                .await
                .is_err()
            {
                return;
            }
        }
    });
    Ok(FileWatcher { _watcher: watcher, task })
}
