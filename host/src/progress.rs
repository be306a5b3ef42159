//! Run counters: what the shard workers, the swap coordinator, the status
//! line and the metrics endpoint all read or bump. A leaf module (it uses
//! nothing of the crate), so every part can depend on it without circles.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Counters shared by the workers, the status line and `/metrics`.
#[derive(Debug, Default)]
pub struct Progress {
    /// Records processed (and checkpointed or about to be) in this run.
    pub records: AtomicU64,
    /// Per shard: millis behind latest at the last read.
    pub behind: Mutex<BTreeMap<String, i64>>,
    /// Shards whose last read came back empty at the tip (0 ms behind), for
    /// `--idle-exit`. A batch with records never counts, whatever its
    /// millis-behind says: records put in one burst all read 0 ms behind.
    pub caught_up: Mutex<std::collections::BTreeSet<String>>,
    /// Per shard: when it last read any record (for `--idle-exit`).
    pub last_record: Mutex<BTreeMap<String, Instant>>,
    /// Shards whose plugin is working on a batch now: busy is not idle,
    /// however long a batch takes (retries, bisecting, a slow plugin).
    pub busy: Mutex<std::collections::BTreeSet<String>>,
    /// GetRecords calls retried after throttling or network faults.
    pub retried_reads: AtomicU64,
    /// Shard iterators replaced after expiring.
    pub expired_iterators: AtomicU64,
    /// Records with the KPL magic bytes that were not valid aggregates
    /// (delivered whole).
    pub corrupt_aggregates: AtomicU64,
    /// Per shard: records processed.
    pub records_by_shard: Mutex<BTreeMap<String, u64>>,
    /// Per shard: set while its reader backs off (a backing-off shard is
    /// neither caught up nor idle, whatever it last reported).
    pub retrying: Mutex<BTreeMap<String, Arc<AtomicBool>>>,
    /// Per shard: content hash of the plugin it runs.
    pub plugin_by_shard: Mutex<BTreeMap<String, String>>,
    /// Hot swaps by outcome and the hash of the logic asked for.
    pub swaps: SwapCounts,
    /// Records set aside, per (shard, reason).
    pub dead_letters: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Plugin calls retried after a retryable error or a trap.
    pub plugin_retries: AtomicU64,
    /// Shards stopped before a poison record, with the reason.
    pub stopped_shards: Mutex<BTreeMap<String, String>>,
    /// Shards whose lease another worker took (commits refused), with why.
    pub lost_shards: Mutex<BTreeMap<String, String>>,
    /// What this worker's leases did (a group worker only).
    pub leases: Mutex<Option<LeaseCounts>>,
}

impl Progress {
    /// Adds `n` to a per-shard counter map, ignoring a poisoned lock (the
    /// counters are for operators; a panic elsewhere must not spread here).
    pub fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K, n: u64) {
        if let Ok(mut map) = map.lock() {
            *map.entry(key).or_insert(0) += n;
        }
    }
}

/// Counts of swaps, for metrics: per (outcome, sha256 of the logic asked for).
#[derive(Debug, Default)]
pub struct SwapCounts {
    pub by_outcome: Mutex<BTreeMap<(&'static str, String), u64>>,
    /// Swap requests being carried out: a run is not idle while one is
    /// (`--idle-exit` must not end it between a SIGHUP and its outcome).
    pub in_flight: std::sync::atomic::AtomicU32,
    /// The group's deployment this worker runs (0: not a group worker).
    pub deployment: AtomicU64,
}

impl SwapCounts {
    /// Counts one finished swap request.
    pub fn count(&self, outcome: &'static str, sha256: &str) {
        Progress::bump(&self.by_outcome, (outcome, sha256.to_string()), 1);
    }
}

/// A group worker's leases, for the status line and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseCounts {
    /// Leases held now.
    pub held: usize,
    /// Workers seen live in the last scan, this one included.
    pub workers: usize,
    /// Leases taken so far, by how: free, handed-off, expired.
    pub taken: BTreeMap<&'static str, u64>,
    /// Leases lost to another worker (refused renewals and commits).
    pub lost: u64,
}
