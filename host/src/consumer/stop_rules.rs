//! When a run stops by itself: `--max-records` reached, or `--idle-exit`
//! (every running shard caught up and quiet that long).

use super::ConsumerConfig;
use crate::progress::Progress;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// True when the run has done what it was asked to.
pub(crate) fn reached(
    config: &ConsumerConfig,
    progress: &Progress,
    running: &HashSet<String>,
    started: Instant,
) -> bool {
    let records = progress.records.load(Ordering::Relaxed);
    if config.max_records.is_some_and(|max| records >= max) {
        return true;
    }
    let Some(idle) = config.idle_exit else { return false };
    // Idle means caught up (the last read reached the tip) *and* quiet: a
    // shard backing off from throttling has read nothing lately but is not idle.
    match (progress.last_record.lock(), progress.behind.lock(), progress.retrying.lock()) {
        (Ok(last), Ok(behind), Ok(retrying)) => {
            !running.is_empty()
                && running.iter().all(|s| {
                    behind.get(s) == Some(&0)
                        && !retrying.get(s).is_some_and(|r| r.load(Ordering::Relaxed))
                        && last.get(s).map_or(started.elapsed() >= idle, |t| t.elapsed() >= idle)
                })
        }
        _ => false,
    }
}
