//! State across resharding, for map-like state (per-key values, snapshotted
//! as JSON). After a split both children get the parent's whole state and
//! keep their keys ([`retain_own_keys`]); after a merge the parents' key sets
//! are disjoint, so their maps union ([`merge_json_maps`]).
//!
//! ```
//! use kinesis_processor_sdk::helpers::state::{merge_json_maps, retain_own_keys};
//! use kinesis_processor_sdk::{ShardContext, Snapshot};
//! use std::collections::BTreeMap;
//!
//! let a = Snapshot { version: 1, bytes: br#"{"k1": 2}"#.to_vec() };
//! let b = Snapshot { version: 1, bytes: br#"{"k2": 3}"#.to_vec() };
//! let mut totals: BTreeMap<String, u64> = merge_json_maps(&[a, b], 1, |total, more| *total += more).unwrap();
//! assert_eq!(totals.values().sum::<u64>(), 5);
//! retain_own_keys(&mut totals, &ShardContext::default()); // the whole key space: keeps both
//! assert_eq!(totals.len(), 2);
//! ```

use crate::{ShardContext, Snapshot};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;

/// Merges parents' states that are JSON maps keyed by partition key (the
/// usual per-key state) into one; a key in several parents (not expected:
/// a merge's parents hold disjoint keys) is `combine`d. Empty states (a
/// parent without state) are skipped; a version other than `version` or a
/// map that does not parse is an error naming the parent's position.
pub fn merge_json_maps<V: DeserializeOwned>(
    parents: &[Snapshot],
    version: u32,
    mut combine: impl FnMut(&mut V, V),
) -> Result<BTreeMap<String, V>, String> {
    let mut merged = BTreeMap::new();
    for (index, parent) in parents.iter().enumerate().filter(|(_, p)| !p.bytes.is_empty()) {
        if parent.version != version {
            return Err(format!("parent {index}'s state is version {}, expected {version}", parent.version));
        }
        let map: BTreeMap<String, V> =
            serde_json::from_slice(&parent.bytes).map_err(|e| format!("parent {index}'s state is corrupt: {e}"))?;
        for (key, value) in map {
            match merged.get_mut(&key) {
                Some(existing) => combine(existing, value),
                None => {
                    merged.insert(key, value);
                }
            }
        }
    }
    Ok(merged)
}

/// Drops the entries whose key (a partition key) now belongs to another
/// shard: after a split, each child keeps only its share of the parent's.
pub fn retain_own_keys<V>(map: &mut BTreeMap<String, V>, shard: &ShardContext) {
    if !shard.hash_key_range.is_full() {
        map.retain(|key, _| shard.owns_key(key.as_bytes()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HashKeyRange;

    #[test]
    fn merges_disjoint_maps_and_names_bad_parents() {
        let a = Snapshot { version: 2, bytes: br#"{"a": 1, "b": 2}"#.to_vec() };
        let b = Snapshot { version: 2, bytes: br#"{"c": 3}"#.to_vec() };
        let merged: BTreeMap<String, u32> =
            merge_json_maps(&[a.clone(), Snapshot::default(), b], 2, |x, y| *x += y).expect("merge");
        assert_eq!(merged.len(), 3);
        let old = Snapshot { version: 1, ..a.clone() };
        let err = merge_json_maps::<u32>(&[a, old], 2, |_, _| {}).expect_err("version");
        assert!(err.contains("parent 1"), "{err}");
    }

    #[test]
    fn split_children_keep_their_own_keys() {
        let keys: BTreeMap<String, u32> = (0..100).map(|i| (format!("k{i}"), i)).collect();
        let half = u128::MAX / 2;
        let mut kept = 0;
        for range in [HashKeyRange { start: 0, end: half }, HashKeyRange { start: half + 1, end: u128::MAX }] {
            let mut mine = keys.clone();
            retain_own_keys(&mut mine, &ShardContext { hash_key_range: range, ..ShardContext::default() });
            assert!(mine.len() > 20 && mine.len() < 80, "{}", mine.len());
            kept += mine.len();
        }
        assert_eq!(kept, 100, "every key in exactly one child");
    }
}
