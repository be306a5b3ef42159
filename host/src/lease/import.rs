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
    // Shards the stream no longer lists (aged out) get no lease: nobody
    // could read them, and a live lease of one would only wait to be
    // cleaned up.
    for shard in pending.keys().filter(|id| !shards.iter().any(|s| &s.shard_id == *id)).cloned().collect::<Vec<_>>() {
        pending.remove(&shard);
        imported.skipped.push((shard, "the stream no longer lists it (aged out)".into()));
    }
    while !pending.is_empty() {
        store.cycle(shards).await?;
        for shard in pending.keys().cloned().collect::<Vec<_>>() {
            let lease = table.get(&shard).await?;
            if let Some(lease) = lease.filter(|l| l.checkpoint.is_some() || l.state_version > 0) {
                let why = format!("the table already has checkpoint {}", lease.checkpoint.unwrap_or_default());
                imported.skipped.push((shard.clone(), why));
                pending.remove(&shard);
                continue;
            }
            let Some(tenure) = store.owns(&shard) else { continue };
            if let Some(checkpoint) = pending.remove(&shard) {
                store.commit(&key(&shard), tenure, &checkpoint).await?;
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
        tokio::time::sleep(store.lease_duration() / 3).await;
    }
    store.release_all().await?;
    Ok(imported)
}
