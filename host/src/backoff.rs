//! Exponential back-off with jitter, shared by everything that retries
//! (reads, plugin calls), so shards never retry in step.

use std::time::Duration;

/// 100 ms doubling per attempt up to 5 s, then a random point in the upper
/// half of that.
pub fn backoff(attempt: u32) -> Duration {
    let cap = 100u64.saturating_mul(1 << attempt.min(6)).min(5_000);
    Duration::from_millis(rand::random_range(cap / 2..=cap))
}
