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
    if progress.swaps.in_flight.load(Ordering::Relaxed) > 0 {
        // A swap asked for is carried out (or refused) before an idle exit.
        return false;
    }
    // Idle means caught up (the last read came back empty at the tip) *and*
    // quiet: a shard backing off from throttling, or waiting on a slow read
    // after a batch, has read nothing lately but is not idle.
    match (progress.last_record.lock(), progress.caught_up.lock(), progress.retrying.lock(), progress.busy.lock()) {
        (Ok(last), Ok(caught_up), Ok(retrying), Ok(busy)) => {
            !running.is_empty()
                && running.iter().all(|s| {
                    caught_up.contains(s)
                        && !busy.contains(s)
                        && !retrying.get(s).is_some_and(|r| r.load(Ordering::Relaxed))
                        && last.get(s).map_or(started.elapsed() >= idle, |t| t.elapsed() >= idle)
                })
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_shard_is_idle_only_caught_up_quiet_and_not_busy() {
        let mut config = ConsumerConfig::new("app", "s");
        config.idle_exit = Some(Duration::from_millis(10));
        let progress = Progress::default();
        let running: HashSet<String> = ["a".to_string()].into();
        let long_ago = Instant::now() - Duration::from_secs(5);
        progress.caught_up.lock().expect("lock").insert("a".into());
        progress.last_record.lock().expect("lock").insert("a".into(), long_ago);
        assert!(reached(&config, &progress, &running, long_ago), "caught up and quiet");
        progress.busy.lock().expect("lock").insert("a".into());
        assert!(!reached(&config, &progress, &running, long_ago), "a slow batch is not idleness");
        progress.busy.lock().expect("lock").clear();
        progress.caught_up.lock().expect("lock").clear();
        assert!(
            !reached(&config, &progress, &running, long_ago),
            "not caught up (behind, or a read in flight after a batch) is not idle"
        );
        config.idle_exit = None;
        config.max_records = Some(3);
        progress.records.store(3, std::sync::atomic::Ordering::Relaxed);
        assert!(reached(&config, &progress, &running, long_ago), "--max-records");
    }
}
