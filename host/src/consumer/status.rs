//! The periodic status line of a running host: records so far, records per
//! second over the interval since the last line (not a capacity: a caught-up
//! host shows the producers' rate), shards running, and how far behind each is.

use crate::progress::Progress;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Remembers the last line's count, for the rate.
#[derive(Debug)]
pub(crate) struct StatusLine {
    last: (Instant, u64),
}

impl StatusLine {
    pub fn new() -> Self {
        StatusLine { last: (Instant::now(), 0) }
    }

    /// The line for now.
    pub fn render(&mut self, progress: &Progress, running: usize) -> String {
        let records = progress.records.load(Ordering::Relaxed);
        let interval = self.last.0.elapsed().as_secs_f64().max(1e-3);
        let rate = (records - self.last.1) as f64 / interval;
        self.last = (Instant::now(), records);
        let behind = progress
            .behind
            .lock()
            .map(|b| b.iter().map(|(s, ms)| format!("{s} {ms} ms")).collect::<Vec<_>>().join(", "))
            .unwrap_or_default();
        format!(
            "{records} records, {}/s over the last {} s, {running} {} running, behind: {}",
            rate_text(rate),
            rate_text(interval),
            if running == 1 { "shard" } else { "shards" },
            if behind.is_empty() { "-".into() } else { behind }
        )
    }
}

/// Records/s for the status line: whole numbers, but one decimal below 10
/// (seed 000's producers put one record every 2 and 5 s: "0/s" would lie).
fn rate_text(rate: f64) -> String {
    if rate < 10.0 {
        format!("{rate:.1}")
    } else {
        format!("{rate:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_rates_keep_a_decimal() {
        assert_eq!(rate_text(0.7), "0.7");
        assert_eq!(rate_text(0.0), "0.0");
        assert_eq!(rate_text(400.4), "400");
    }

    #[test]
    fn the_line_names_counts_and_lag() {
        let progress = Progress::default();
        progress.records.store(12, Ordering::Relaxed);
        progress.behind.lock().expect("lock").insert("shardId-1".into(), 40);
        let line = StatusLine::new().render(&progress, 1);
        assert!(line.starts_with("12 records, ") && line.contains("/s over the last "), "{line}");
        assert!(line.ends_with(" s, 1 shard running, behind: shardId-1 40 ms"), "{line}");
        assert!(StatusLine::new().render(&progress, 2).contains(", 2 shards running,"));
    }
}
