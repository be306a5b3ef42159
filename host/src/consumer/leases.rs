//! What the consumer does with the news of its leases: lost takes stop,
//! asked-for ones are handed off, taken ones start.

use super::scheduler::{Scheduler, ShardSignal};
use super::{shard, ShardExit, Shared};
use crate::checkpoint::Tenure;
use crate::ownership::{Changes, Ownership};
use crate::source::ShardInfo;
use std::sync::Arc;
use tokio::task::JoinSet;

/// Acts on what the leases did: drops lost takes, releases asked-for ones
/// (at once when no task runs them), lets taken ones start. True when a
/// shard may start now.
pub(super) async fn apply(changes: &Changes, scheduler: &mut Scheduler, ownership: &dyn Ownership) -> bool {
    for (id, tenure, why) in &changes.lost {
        if scheduler.signal(id, *tenure, ShardSignal::Drop) {
            tracing::warn!(shard = %id, "stopping the shard: its lease is no longer this worker's: {why}");
        } else {
            tracing::warn!(shard = %id, "its lease is no longer this worker's (it was not running yet): {why}");
        }
    }
    for (id, tenure) in &changes.hand_off {
        if !scheduler.signal(id, *tenure, ShardSignal::Release) && scheduler.tenure(id).is_none() {
            release(ownership, id, *tenure).await;
        }
    }
    for id in &changes.taken {
        // Lost earlier in this run and taken back: it may run again.
        scheduler.lost.remove(id);
    }
    !changes.taken.is_empty()
}

/// Starts every listed shard that may start now.
pub(super) async fn start_shards(
    scheduler: &mut Scheduler,
    shards: &[ShardInfo],
    shared: &Arc<Shared>,
    workers: &mut JoinSet<(String, anyhow::Result<ShardExit>)>,
) -> anyhow::Result<()> {
    let (config, ownership) = (&shared.config, shared.ownership.clone());
    let owns = |id: &str| ownership.owns(id);
    let starts = scheduler.ready(shards, shared.store.as_ref(), |id| config.key(id), owns).await?;
    for start in starts {
        let (shared, id) = (shared.clone(), start.shard_id.clone());
        workers.spawn(async move { (id, shard::run(shared, start).await) });
    }
    Ok(())
}

/// Releases one take; a failure only delays the next owner.
pub(super) async fn release(ownership: &dyn Ownership, shard_id: &str, tenure: Tenure) {
    if let Err(e) = ownership.release(shard_id, tenure).await {
        tracing::warn!(shard = %shard_id, "releasing the lease failed (it is taken when it expires): {e:#}");
    }
}
