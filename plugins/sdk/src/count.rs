//! Counts per key per time window: the state of the counter processors.
//!
//! Keys are interned once, so counting a record costs a window lookup and two
//! hash lookups without allocating. Cells touched since the last drain are
//! tracked, so a processor can emit only what changed.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One count and whether it changed since the last [`WindowCounts::drain_changed`].
#[derive(Debug, Clone, Copy, Default)]
struct Cell {
    count: u64,
    changed: bool,
}

/// Counts keyed by (window start, key).
#[derive(Debug, Default, Clone)]
pub struct WindowCounts {
    /// Key text → dense id, so cells hold a `u32` instead of a string.
    key_ids: FxHashMap<Box<str>, u32>,
    /// Dense id → key text.
    keys: Vec<Box<str>>,
    /// Window start (ms) → key id → cell; ordered so windows close in time order.
    windows: BTreeMap<i64, FxHashMap<u32, Cell>>,
    /// Cells changed since the last drain, in first-touch order.
    changed: Vec<(i64, u32)>,
}

/// A window's counts as stored in snapshots: `(window start ms, [(key, count)])`.
pub type WindowSnapshot = (i64, Vec<(String, u64)>);

impl WindowCounts {
    /// No counts.
    pub fn new() -> Self {
        Self::default()
    }

    fn key_id(&mut self, key: &str) -> u32 {
        if let Some(&id) = self.key_ids.get(key) {
            return id;
        }
        let id = self.keys.len() as u32;
        self.keys.push(key.into());
        self.key_ids.insert(key.into(), id);
        id
    }

    /// Adds `n` to (window, key) and returns the new count.
    pub fn add(&mut self, window_start: i64, key: &str, n: u64) -> u64 {
        let id = self.key_id(key);
        let cell = self.windows.entry(window_start).or_default().entry(id).or_default();
        cell.count += n;
        if !cell.changed {
            cell.changed = true;
            self.changed.push((window_start, id));
        }
        cell.count
    }

    /// The count of (window, key), if the window is held.
    pub fn get(&self, window_start: i64, key: &str) -> Option<u64> {
        let id = self.key_ids.get(key)?;
        self.windows.get(&window_start)?.get(id).map(|c| c.count)
    }

    /// True when the window is held.
    pub fn has_window(&self, window_start: i64) -> bool {
        self.windows.contains_key(&window_start)
    }

    /// Calls `f(window, key, count)` for every cell changed since the last
    /// drain, ordered by window then key, and clears the marks.
    pub fn drain_changed(&mut self, mut f: impl FnMut(i64, &str, u64)) {
        let mut changed = std::mem::take(&mut self.changed);
        changed.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| self.keys[a.1 as usize].cmp(&self.keys[b.1 as usize])));
        for &(window, id) in &changed {
            if let Some(cell) = self.windows.get_mut(&window).and_then(|w| w.get_mut(&id)) {
                cell.changed = false;
                f(window, &self.keys[id as usize], cell.count);
            }
        }
        changed.clear();
        self.changed = changed;
    }

    /// Removes and returns the windows starting before `start`, oldest first,
    /// each with its keys sorted.
    pub fn split_off_before(&mut self, start: i64) -> Vec<WindowSnapshot> {
        let kept = self.windows.split_off(&start);
        let removed = std::mem::replace(&mut self.windows, kept);
        self.changed.retain(|(window, _)| *window >= start);
        removed.into_iter().map(|(window, cells)| (window, self.sorted_cells(&cells))).collect()
    }

    fn sorted_cells(&self, cells: &FxHashMap<u32, Cell>) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> =
            cells.iter().map(|(&id, cell)| (self.keys[id as usize].to_string(), cell.count)).collect();
        out.sort_unstable();
        out
    }

    /// Start of the oldest window held.
    pub fn first_window(&self) -> Option<i64> {
        self.windows.keys().next().copied()
    }

    /// Number of windows held.
    pub fn window_count(&self) -> usize {
        self.windows.len()
    }

    /// All counts, for a snapshot (windows in order, keys sorted).
    pub fn to_snapshot(&self) -> Vec<WindowSnapshot> {
        self.windows.iter().map(|(&window, cells)| (window, self.sorted_cells(cells))).collect()
    }

    /// Counts from a snapshot; nothing is marked changed.
    pub fn from_snapshot(windows: Vec<WindowSnapshot>) -> Self {
        let mut counts = WindowCounts::new();
        for (window, cells) in windows {
            for (key, count) in cells {
                let id = counts.key_id(&key);
                counts.windows.entry(window).or_default().insert(id, Cell { count, changed: false });
            }
        }
        counts
    }
}

/// Writes `{"window_start":"…","key":"…","count":N` (no closing brace), the
/// common head of every counter output record.
pub fn write_count_head(buf: &mut Vec<u8>, window_start: i64, key: &str, count: Option<u64>) {
    let mut start = String::with_capacity(24);
    crate::time::write_timestamp_millis(&mut start, window_start);
    buf.extend_from_slice(b"{\"window_start\":\"");
    buf.extend_from_slice(start.as_bytes());
    buf.extend_from_slice(b"\",\"key\":");
    // A Vec<u8> writer cannot fail, and a &str always serializes.
    let _ = serde_json::to_writer(&mut *buf, key);
    buf.extend_from_slice(b",\"count\":");
    match count {
        Some(n) => buf.extend_from_slice(n.to_string().as_bytes()),
        None => buf.extend_from_slice(b"null"),
    }
}

/// The serialized form shared by both counters' snapshots.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CountsState {
    /// Counts per window.
    pub windows: Vec<WindowSnapshot>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_drains_changes_in_order() {
        let mut counts = WindowCounts::new();
        counts.add(60_000, "b", 1);
        counts.add(0, "a", 1);
        counts.add(60_000, "b", 2);
        let mut seen = Vec::new();
        counts.drain_changed(|w, k, c| seen.push((w, k.to_string(), c)));
        assert_eq!(seen, vec![(0, "a".into(), 1), (60_000, "b".into(), 3)]);
        counts.drain_changed(|_, _, _| panic!("nothing changed since"));
        assert_eq!(counts.add(0, "a", 1), 2);
    }

    #[test]
    fn splits_closed_windows_and_round_trips() {
        let mut counts = WindowCounts::new();
        for (w, k) in [(0, "x"), (0, "y"), (60_000, "x"), (120_000, "x")] {
            counts.add(w, k, 1);
        }
        let snapshot = counts.to_snapshot();
        let closed = counts.split_off_before(120_000);
        assert_eq!(closed, vec![(0, vec![("x".into(), 1), ("y".into(), 1)]), (60_000, vec![("x".into(), 1)])]);
        assert_eq!(counts.first_window(), Some(120_000));
        let restored = WindowCounts::from_snapshot(snapshot);
        assert_eq!(restored.get(0, "y"), Some(1));
        assert_eq!(restored.window_count(), 3);
    }

    #[test]
    fn count_head_is_json() {
        let mut buf = Vec::new();
        write_count_head(&mut buf, 60_000, "a\"b", Some(3));
        buf.push(b'}');
        let v: serde_json::Value = serde_json::from_slice(&buf).expect("valid json");
        assert_eq!(v["window_start"], "1970-01-01T00:01:00Z");
        assert_eq!(v["key"], "a\"b");
        assert_eq!(v["count"], 3);
    }
}
