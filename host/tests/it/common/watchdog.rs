//! Ends the suite, naming the test, when a test hangs: a stuck await, a
//! child that never exits or a blocking call would otherwise stall CI until
//! its own limit cuts everything off without saying which test it was.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Longer than any test needs on a loaded 2-core machine (the slowest take
/// about two minutes), short enough that a hang costs minutes, not the CI limit.
pub const TEST_LIMIT: Duration = Duration::from_secs(600);

/// Running tests: id → (libtest's name for it, when it started).
fn running() -> &'static Mutex<BTreeMap<u64, (String, Instant)>> {
    static RUNNING: OnceLock<Mutex<BTreeMap<u64, (String, Instant)>>> = OnceLock::new();
    RUNNING.get_or_init(|| {
        std::thread::spawn(|| loop {
            std::thread::sleep(Duration::from_secs(5));
            let hung: Vec<String> = match running().lock() {
                Ok(map) => map.values().filter(|(_, t)| t.elapsed() > TEST_LIMIT).map(|(n, _)| n.clone()).collect(),
                Err(_) => continue,
            };
            if !hung.is_empty() {
                eprintln!("\nwatchdog: still running after {TEST_LIMIT:?}: {}; ending the suite", hung.join(", "));
                std::process::exit(101);
            }
        });
        Mutex::default()
    })
}

/// Held by a test's fixture for as long as the test runs.
pub struct Watched(u64);

/// Starts watching the calling test (libtest names its thread after it).
pub fn watch() -> Watched {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = std::thread::current().name().unwrap_or("a test").to_string();
    if let Ok(mut map) = running().lock() {
        map.insert(id, (name, Instant::now()));
    }
    Watched(id)
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Ok(mut map) = running().lock() {
            map.remove(&self.0);
        }
    }
}
