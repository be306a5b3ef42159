//! Counts per key per time window: the state of the counter processors.
//!
//! Keys are interned once, so counting a record costs a window lookup and two
//! hash lookups without allocating. Cells touched since the last drain are
//! tracked, so a processor can emit only what changed.

use crate::{HashKeyRange, ShardContext, Snapshot};
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
    /// Key bytes → dense id: the one hash lookup per counted record.
    key_ids: FxHashMap<Box<[u8]>, u32>,
    /// Dense id → key text (validated UTF-8, once per new key).
    keys: Vec<Box<str>>,
    /// Dense id → that key's (window, cell) pairs, newest last: records
    /// mostly hit the newest window, so a search from the back ends at once.
    cells: Vec<Vec<(i64, Cell)>>,
    /// Window start (ms) → ids of keys counted in it; ordered so windows
    /// close in time order. Touched only when a (window, key) pair is new.
    windows: BTreeMap<i64, Vec<u32>>,
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

    fn key_id(&mut self, key: &[u8]) -> u32 {
        if let Some(&id) = self.key_ids.get(key) {
            return id;
        }
        let id = self.keys.len() as u32;
        self.keys.push(String::from_utf8_lossy(key).into());
        self.key_ids.insert(key.into(), id);
        self.cells.push(Vec::new());
        id
    }

    fn cell_mut(&mut self, window_start: i64, id: u32) -> &mut Cell {
        let list = &mut self.cells[id as usize];
        let pos = match list.iter().rposition(|(w, _)| *w == window_start) {
            Some(pos) => pos,
            None => {
                list.push((window_start, Cell::default()));
                self.windows.entry(window_start).or_default().push(id);
                list.len() - 1
            }
        };
        &mut list[pos].1
    }

    /// Adds `n` to (window, key) and returns the new count. Keys are bytes
    /// (a partition key straight from the batch); non-UTF-8 keys are shown
    /// with replacement characters.
    pub fn add(&mut self, window_start: i64, key: &[u8], n: u64) -> u64 {
        let id = self.key_id(key);
        let cell = self.cell_mut(window_start, id);
        cell.count += n;
        let count = cell.count;
        if !cell.changed {
            cell.changed = true;
            self.changed.push((window_start, id));
        }
        count
    }

    /// The count of (window, key), if the window is held.
    pub fn get(&self, window_start: i64, key: &str) -> Option<u64> {
        let id = *self.key_ids.get(key.as_bytes())?;
        self.cells[id as usize].iter().find(|(w, _)| *w == window_start).map(|(_, c)| c.count)
    }

    /// Whether (window, key) holds a count.
    pub fn contains(&self, window_start: i64, key: &[u8]) -> bool {
        self.key_ids.get(key).is_some_and(|&id| self.cells[id as usize].iter().any(|(w, _)| *w == window_start))
    }

    /// True when the window is held.
    pub fn has_window(&self, window_start: i64) -> bool {
        self.windows.contains_key(&window_start)
    }

    /// Calls `f(window, key, count)` for every cell changed since the last
    /// drain, ordered by window then key, and clears the marks.
    pub fn drain_changed(&mut self, mut f: impl FnMut(i64, &str, u64)) {
        let mut changed = std::mem::take(&mut self.changed);
        changed
            .sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| self.keys[a.1 as usize].cmp(&self.keys[b.1 as usize])));
        for &(window, id) in &changed {
            let list = &mut self.cells[id as usize];
            if let Some((_, cell)) = list.iter_mut().rev().find(|(w, _)| *w == window) {
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
        let mut out = Vec::with_capacity(removed.len());
        for (window, ids) in removed {
            let mut cells = Vec::with_capacity(ids.len());
            for id in ids {
                let list = &mut self.cells[id as usize];
                if let Some(pos) = list.iter().position(|(w, _)| *w == window) {
                    cells.push((self.keys[id as usize].to_string(), list.remove(pos).1.count));
                }
            }
            cells.sort_unstable();
            out.push((window, cells));
        }
        out
    }

    /// Keeps only the keys `keep` says yes to (e.g. a split child's own).
    pub fn retain_keys(&mut self, mut keep: impl FnMut(&str) -> bool) {
        let mut windows = self.to_snapshot();
        for (_, cells) in &mut windows {
            cells.retain(|(key, _)| keep(key));
        }
        windows.retain(|(_, cells)| !cells.is_empty());
        *self = WindowCounts::from_snapshot(windows);
    }

    /// Start of the oldest window held.
    pub fn first_window(&self) -> Option<i64> {
        self.windows.keys().next().copied()
    }

    /// Start of the newest window held.
    pub fn last_window(&self) -> Option<i64> {
        self.windows.keys().next_back().copied()
    }

    /// Number of windows held.
    pub fn window_count(&self) -> usize {
        self.windows.len()
    }

    /// All counts, for a snapshot (windows in order, keys sorted).
    pub fn to_snapshot(&self) -> Vec<WindowSnapshot> {
        self.windows
            .iter()
            .map(|(&window, ids)| {
                let mut cells: Vec<(String, u64)> = ids
                    .iter()
                    .filter_map(|&id| {
                        let cell = self.cells[id as usize].iter().find(|(w, _)| *w == window)?;
                        Some((self.keys[id as usize].to_string(), cell.1.count))
                    })
                    .collect();
                cells.sort_unstable();
                (window, cells)
            })
            .collect()
    }

    /// Counts from a snapshot; nothing is marked changed.
    pub fn from_snapshot(windows: Vec<WindowSnapshot>) -> Self {
        let mut counts = WindowCounts::new();
        for (window, cells) in windows {
            for (key, count) in cells {
                let id = counts.key_id(key.as_bytes());
                counts.cell_mut(window, id).count += count;
            }
        }
        counts
    }
}

/// Longest duration a counting setting accepts: a year, in seconds.
const MAX_SECONDS: u64 = 366 * 86_400;

/// Validates a duration setting given in seconds (`default` when absent),
/// returning milliseconds; `min` is the smallest value allowed.
pub fn seconds_setting(value: Option<u64>, default: u64, min: u64, field: &str) -> Result<i64, String> {
    match value.unwrap_or(default) {
        s if s < min => Err(format!("`{field}` must be at least {min}")),
        s if s > MAX_SECONDS => Err(format!("`{field}` must be at most a year ({MAX_SECONDS} s)")),
        s => Ok(s as i64 * 1000),
    }
}

/// Validates `retention_windows` (default 1440: a day of 1-minute windows).
pub fn retention_windows_setting(value: Option<u64>) -> Result<i64, String> {
    match value.unwrap_or(1440) {
        0 => Err("`retention_windows` must be at least 1".into()),
        n => Ok(n.min(1 << 30) as i64),
    }
}

/// Writes `{"window_start":"…","key":"…","count":N` (no closing brace), the
/// common head of every counter output record.
pub fn write_count_head(buf: &mut Vec<u8>, window_start: i64, key: &str, count: Option<u64>) {
    let mut start = String::with_capacity(24);
    crate::helpers::time::write_timestamp_millis(&mut start, window_start);
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
    /// The hash-key range of the shard that wrote it (decimal), so a child
    /// of a split tells its parent's state from its own; absent in states
    /// written before state followed resharding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<[String; 2]>,
}

/// A shard's hash-key range as [`CountsState::range`] stores it.
pub fn range_field(range: &HashKeyRange) -> Option<[String; 2]> {
    Some([range.start.to_string(), range.end.to_string()])
}

/// Which of a state's counts are this shard's, given the range the state
/// was written for (`None`: unknown). Its own state is all its own. After
/// a split, keyed by partition key: the keys the shard now holds; keyed by
/// a field of the data (any shard may see any key): all of it for the child
/// holding the parent's first hash key and none for the other, so every
/// count goes on in exactly one child.
pub fn keep_counts_of(
    counts: &mut WindowCounts,
    written_for: Option<&[String; 2]>,
    shard: &ShardContext,
    keys_are_partition_keys: bool,
) {
    let written_for = written_for.and_then(|[start, end]| HashKeyRange::parse(start, end));
    if written_for == Some(shard.hash_key_range) || shard.hash_key_range.is_full() {
        return;
    }
    if keys_are_partition_keys {
        counts.retain_keys(|key| shard.owns_key(key.as_bytes()));
    } else if written_for.is_some_and(|parent| !shard.hash_key_range.contains(parent.start)) {
        *counts = WindowCounts::new();
    }
}

/// The counts of a merge's parents, one [`CountsState`] each (empty bytes:
/// no state), added up; a version other than `version` is an error.
pub fn merge_counts(parents: &[Snapshot], version: u32) -> Result<WindowCounts, String> {
    let mut windows = Vec::new();
    for (index, parent) in parents.iter().enumerate().filter(|(_, p)| !p.bytes.is_empty()) {
        if parent.version != version {
            return Err(format!("parent {index}'s state is version {}, expected {version}", parent.version));
        }
        let state: CountsState =
            serde_json::from_slice(&parent.bytes).map_err(|e| format!("parent {index}'s state is corrupt: {e}"))?;
        windows.extend(state.windows);
    }
    // `from_snapshot` adds counts of a (window, key) met twice.
    Ok(WindowCounts::from_snapshot(windows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_drains_changes_in_order() {
        let mut counts = WindowCounts::new();
        counts.add(60_000, b"b", 1);
        counts.add(0, b"a", 1);
        counts.add(60_000, b"b", 2);
        let mut seen = Vec::new();
        counts.drain_changed(|w, k, c| seen.push((w, k.to_string(), c)));
        assert_eq!(seen, vec![(0, "a".into(), 1), (60_000, "b".into(), 3)]);
        counts.drain_changed(|_, _, _| panic!("nothing changed since"));
        assert_eq!(counts.add(0, b"a", 1), 2);
    }

    #[test]
    fn splits_closed_windows_and_round_trips() {
        let mut counts = WindowCounts::new();
        for (w, k) in [(0, "x"), (0, "y"), (60_000, "x"), (120_000, "x")] {
            counts.add(w, k.as_bytes(), 1);
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
