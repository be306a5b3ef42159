//! `host leases import`: a single host's SQLite checkpoints and plugin state
//! moved into a lease table, so a user grows from one machine to many
//! without reprocessing. The import is a worker of the group for a moment:
//! it takes each lease, commits the shard's checkpoint and state through the
//! same fenced write as a run, and releases it.

use super::{LeaseStore, LeaseTable};
use crate::checkpoint::{Checkpoint, CheckpointStore, ShardKey};
use crate::ownership::Ownership;
use crate::source::ShardInfo;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What an import did.
#[derive(Debug, Default)]
pub struct Imported {
    /// Shards whose checkpoint (and state) now live in the table.
    pub shards: Vec<String>,
    /// Shards left as they were, with why (the table already had a checkpoint).
    pub skipped: Vec<(String, String)>,
}

/// Imports `rows` (shard → checkpoint, as the SQLite store lists them) for
/// `stream`, whose current shards are `shards`. Gives up after
/// `patience` if live workers hold the leases.
pub async fn import(
    store: &LeaseStore,
    table: &dyn LeaseTable,
    rows: Vec<(String, Checkpoint)>,
    shards: &[ShardInfo],
    key: impl Fn(&str) -> ShardKey,
    patience: Duration,
) -> anyhow::Result<Imported> {
    let mut imported = Imported::default();
    let mut pending: BTreeMap<String, Checkpoint> = rows.into_iter().collect();
    let deadline = Instant::now() + patience;
    // Shards the stream no longer lists (aged out) still get their lease.
    let mut all = shards.to_vec();
    for shard in pending.keys().filter(|id| !shards.iter().any(|s| &s.shard_id == *id)) {
        all.push(ShardInfo { shard_id: shard.clone(), parent: None, adjacent_parent: None, hash_range: None });
    }
    while !pending.is_empty() {
        store.cycle(&all).await?;
        for shard in pending.keys().cloned().collect::<Vec<_>>() {
            let lease = table.get(&shard).await?;
            if let Some(lease) = lease.filter(|l| l.checkpoint.is_some() || l.state_version > 0) {
                let why = format!("the table already has checkpoint {}", lease.checkpoint.unwrap_or_default());
                imported.skipped.push((shard.clone(), why));
                pending.remove(&shard);
                continue;
            }
            if !store.owns(&shard) {
                continue;
            }
            if let Some(checkpoint) = pending.remove(&shard) {
                store.commit(&key(&shard), &checkpoint).await?;
                imported.shards.push(shard);
            }
        }
        if pending.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            store.release_all().await?;
            anyhow::bail!(
                "shards {} are held by running workers: stop every `host run --lease-table` on this table, then import",
                pending.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        tokio::time::sleep(store.interval()).await;
    }
    store.release_all().await?;
    Ok(imported)
}
