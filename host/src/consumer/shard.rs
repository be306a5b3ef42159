//! One shard's loop: read → plugin (under the failure policy) → sink →
//! checkpoint, in that order. Between batches it takes new logic (hot swap),
//! fires the plugin's timer, and stops on request, at the shard's end, or
//! when another worker has taken the shard (a commit fenced by its lease).

use super::handover::PreSwap;
use super::inherit::{self, Started};
use super::scheduler::{ShardSignal, Start};
use super::worker::{state_of, Worker};
use super::{ShardExit, Shared};
use crate::checkpoint::{is_lease_lost, Checkpoint, CommitError};
use crate::plugin::bindings::ShutdownReason;
use crate::policy::{BatchVerdict, Policy};
use crate::progress::Progress;
use crate::source::{Position, ReadBatch, ShardFeed, StartPosition};
use crate::swap::Generation;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// What woke the worker up.
enum Event {
    /// Stop: the run ends, or another host asked for the shard.
    Stop,
    /// Another host took the shard.
    Lost,
    Generation(Arc<Generation>),
    Read(ReadBatch),
}

/// Runs the shard until it stops, ends, is poisoned or is lost.
pub(crate) async fn run(shared: Arc<Shared>, mut start: Start) -> anyhow::Result<ShardExit> {
    let config = &shared.config;
    let mut signal = start.signal.clone();
    if let Some(exit) = look_first(&shared, &start, &mut signal).await {
        return Ok(exit);
    }
    let mut settings = config.instance_settings(&start.shard_id);
    inherit::describe(&mut settings, &start.info);
    // Subscribing before reading the current generation: a swap published
    // in between is seen as a change, never missed.
    let mut generations = shared.swaps.subscribe();
    let generation = generations.borrow_and_update().clone();
    let running = generation.plugin_for(&start.shard_id).clone();
    rewind_to_pre_swap(&shared, &mut start, running.sha256());
    let committed = start.checkpoint.as_ref().and_then(|c| {
        let sequence_number = c.sequence_number.clone()?;
        Some(Position { sequence_number, sub_sequence_number: c.sub_sequence_number })
    });
    // A child of a reshard is read from its first record, or records
    // between the parent's end and "now" would be lost.
    let origin = if start.has_parent { StartPosition::TrimHorizon } else { config.start.clone() };
    let position = match committed.clone() {
        Some(position) => StartPosition::After(position),
        None => origin.clone(),
    };
    let Started { instance, inherited } =
        inherit::start_instance(&shared, running.clone(), settings.clone(), &start).await?;
    // In a group, a shard whose store does not name the logic that runs it
    // (the group moved on while the shard was elsewhere, or the shard never
    // committed: an idle one) commits at once, so the group sees it.
    let stored = start.checkpoint.as_ref().and_then(|c| c.logic.as_deref());
    let logic_moved = shared.swaps.is_followed() && stored != Some(running.sha256());
    let returns_to = generation.returns_to.as_deref();
    let (pre_swap, probation) =
        adopt_pre_swap(&shared, start.checkpoint.as_ref(), committed.as_ref(), running.sha256(), returns_to);
    let Start { shard_id, tenure, .. } = start;
    tracing::info!(shard = %shard_id, start = ?position, plugin = %running.sha256(), probation, "shard worker started");
    let mut worker = Worker {
        key: config.key(&shard_id),
        shared: shared.clone(),
        shard_id,
        settings,
        instance: Some(instance),
        committed,
        position: None,
        uncommitted: Default::default(),
        generation: generation.id,
        pre_swap,
        probation,
        start: origin,
        tenure,
    };
    worker.announce();
    let _registered = Registered(&shared, worker.shard_id.clone());
    let run = async {
        if let Some(state) = inherited {
            worker.store_checkpoint(false, Some((state.version, state.bytes))).await?;
        } else if logic_moved {
            worker.commit_state().await?;
        }
        drive(&mut worker, position, &mut generations, &mut signal).await
    };
    match run.await {
        Err(e) if is_lease_lost(&e) => {
            worker.lose_lease().await;
            Ok(ShardExit::LeaseLost(format!("{e:#}")))
        }
        exit => exit,
    }
}

/// A group worker starting a shard last run under other logic first looks
/// at the group's (the group may have moved on before this worker noticed):
/// it never starts the shard under logic the group has left. Waits as long
/// as the table cannot be read; `Some` when the shard stopped meanwhile.
async fn look_first(
    shared: &Shared,
    start: &Start,
    signal: &mut tokio::sync::watch::Receiver<ShardSignal>,
) -> Option<ShardExit> {
    let stored = start.checkpoint.as_ref().and_then(|c| c.logic.as_deref());
    let current = shared.swaps.current();
    if stored.is_none_or(|l| l == current.plugin_for(&start.shard_id).sha256()) {
        return None;
    }
    let mut waited = 0;
    while !shared.swaps.refresh(std::time::Duration::from_secs(10)).await {
        waited += 10;
        match *signal.borrow() {
            ShardSignal::Drop => {
                return Some(ShardExit::LeaseLost("another worker took the lease while it waited to start".into()));
            }
            ShardSignal::Run if !shared.shutdown.is_triggered() => {}
            _ => return Some(ShardExit::Stopped),
        }
        tracing::warn!(
            shard = %start.shard_id,
            "not started yet: it last ran other logic, and this worker could not bring in the group's for {waited} s"
        );
    }
    None
}

/// The group rolled back while nobody held the shard: its lease names the
/// logic undone and keeps a pre-swap point of the logic that runs now. The
/// shard starts from that point (its state, replaying from its checkpoint),
/// as it would have on the worker that made the swap; the start's commit
/// says so.
fn rewind_to_pre_swap(shared: &Shared, start: &mut Start, running: &str) {
    let Some(checkpoint) = start.checkpoint.as_mut().filter(|_| shared.swaps.is_followed()) else { return };
    let Some(point) = checkpoint.pre_swap.clone() else { return };
    if point.logic != running || checkpoint.logic.as_deref().is_none_or(|l| l == running) {
        return;
    }
    tracing::info!(
        shard = %start.shard_id,
        "the group rolled back while no worker held it: back to its pre-swap point (replaying from {:?})",
        point.sequence_number
    );
    *checkpoint = Checkpoint {
        sequence_number: point.sequence_number.clone(),
        sub_sequence_number: point.sub_sequence_number,
        state: point.state.clone(),
        ..Checkpoint::default()
    };
}

/// In a group, what undoing the swap that brought a taken shard onto the
/// logic it runs needs, and how much of its probation is left: the
/// pre-swap point its last owner kept in the lease; or, when the group
/// moved on while the shard was elsewhere, the shard's checkpoint itself
/// (starting it is the swap). Only a point of the logic a rollback returns
/// to (`returns_to`) counts. Probation counts commits here: a commit covers
/// one or more batches.
fn adopt_pre_swap(
    shared: &Shared,
    checkpoint: Option<&Checkpoint>,
    committed: Option<&Position>,
    running: &str,
    returns_to: Option<&str>,
) -> (Option<PreSwap>, u32) {
    let Some(checkpoint) = checkpoint.filter(|_| shared.swaps.is_followed()) else { return (None, 0) };
    let Some(returns_to) = returns_to else { return (None, 0) };
    let probation = shared.swaps.policy().probation_batches;
    match checkpoint.logic.as_deref() {
        Some(logic) if logic == running => {
            let Some(point) = checkpoint.pre_swap.clone().filter(|p| p.logic == returns_to) else { return (None, 0) };
            // The switch's own commit is the first under the logic.
            let left = u64::from(probation).saturating_add(1).saturating_sub(checkpoint.logic_commits);
            let plugin = shared.swaps.known(&point.logic);
            (Some(PreSwap { plugin, point }), u32::try_from(left).unwrap_or(probation))
        }
        Some(logic) if logic == returns_to => {
            let plugin = shared.swaps.known(logic);
            (Some(PreSwap::new(logic, plugin, state_of(Some(checkpoint)), committed)), probation)
        }
        _ => (None, 0),
    }
}

/// The loop proper; a lost lease surfaces as an error from a commit.
async fn drive(
    worker: &mut Worker,
    position: StartPosition,
    generations: &mut tokio::sync::watch::Receiver<Arc<Generation>>,
    signal: &mut tokio::sync::watch::Receiver<ShardSignal>,
) -> anyhow::Result<ShardExit> {
    let shared = worker.shared.clone();
    let config = &shared.config;
    let mut policy = Policy::new(config.failure.clone(), config.checkpoint_every);
    let mut feed = open(&shared, &worker.shard_id, position).await?;
    let mut stop = shared.shutdown.subscribe();
    let mut next_timer = Instant::now() + config.timer_interval;
    loop {
        let event = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => Event::Stop,
            Ok(signal) = signal.wait_for(|s| *s != ShardSignal::Run) => match *signal {
                ShardSignal::Drop => Event::Lost,
                _ => Event::Stop,
            },
            Ok(()) = generations.changed() => Event::Generation(generations.borrow_and_update().clone()),
            read = feed.next() => Event::Read(read?),
        };
        let read = match event {
            Event::Stop => {
                worker.finish(ShutdownReason::Requested).await?;
                return Ok(ShardExit::Stopped);
            }
            Event::Lost => {
                let reason = "another worker took the lease (seen at renewal)".to_string();
                return Err(CommitError::LeaseLost { shard_id: worker.shard_id.clone(), reason }.into());
            }
            Event::Generation(generation) => {
                match worker.take_generation(&generation).await? {
                    // A rollback replays from the pre-swap checkpoint.
                    Some(resume) => feed = open(&shared, &worker.shard_id, resume).await?,
                    // The new logic gets its first batch now, not after the idle wait.
                    None => feed.poll_now(),
                }
                continue;
            }
            Event::Read(read) => read,
        };
        let ReadBatch { records, shard_ended, stats } = read;
        note_read(&shared.progress, &worker.shard_id, &records, stats);
        if !records.is_empty() {
            let shard_id = worker.shard_id.clone();
            let verdict = busy(&shared.progress, &shard_id, policy.handle(worker, records)).await?;
            match verdict {
                BatchVerdict::Done => {
                    if worker.probation > 0 {
                        worker.probation -= 1;
                        worker.note_probation();
                    }
                    // The budget is checked here, per batch, so it stops the
                    // run within one batch per shard.
                    if config.max_records.is_some_and(|max| shared.progress.records.load(Ordering::Relaxed) >= max) {
                        shared.shutdown.trigger();
                    }
                }
                BatchVerdict::RollBack(failure) => {
                    // The shard stays listed on probation until it takes the
                    // coordinator's rollback: a waiting `host swap` never
                    // sees it as passed in between.
                    let resume = worker.roll_back_failed(failure).await?;
                    feed = open(&shared, &worker.shard_id, resume).await?;
                    continue;
                }
                BatchVerdict::Stopped(reason) => {
                    if crate::policy::PolicyShard::in_probation(worker) {
                        let why = format!("the shard stopped: {reason}");
                        shared.swaps.probation_failed(&worker.shard_id, worker.generation, why);
                    }
                    worker.finish(ShutdownReason::Requested).await?;
                    return Ok(ShardExit::Poisoned(reason));
                }
                BatchVerdict::Replay => {
                    // Dropping the feed drops what it read ahead.
                    drop(feed);
                    feed = open(&shared, &worker.shard_id, worker.resume_position()).await?;
                    continue;
                }
            }
        }
        if Instant::now() >= next_timer {
            worker.timer().await?;
            next_timer = Instant::now() + config.timer_interval;
        }
        if shard_ended {
            worker.finish(ShutdownReason::ShardEnded).await?;
            return Ok(ShardExit::Ended);
        }
    }
}

/// Counts what a read rode out and where the shard stands.
fn note_read(
    progress: &Progress,
    shard_id: &str,
    records: &crate::batch::PackedBatch,
    stats: crate::source::ReaderStats,
) {
    progress.retried_reads.fetch_add(stats.retried, Ordering::Relaxed);
    progress.expired_iterators.fetch_add(stats.expired_iterators, Ordering::Relaxed);
    progress.corrupt_aggregates.fetch_add(stats.corrupt_aggregates, Ordering::Relaxed);
    if let Ok(mut behind) = progress.behind.lock() {
        behind.insert(shard_id.to_string(), records.millis_behind_latest());
    }
    if let Ok(mut caught_up) = progress.caught_up.lock() {
        if records.is_empty() && records.millis_behind_latest() == 0 {
            caught_up.insert(shard_id.to_string());
        } else {
            caught_up.remove(shard_id);
        }
    }
    if !records.is_empty() {
        if let Ok(mut last) = progress.last_record.lock() {
            last.insert(shard_id.to_string(), Instant::now());
        }
    }
}

/// Runs `work` with the shard marked busy (not idle), and as active at its end.
async fn busy<T>(progress: &Progress, shard_id: &str, work: impl std::future::Future<Output = T>) -> T {
    if let Ok(mut busy) = progress.busy.lock() {
        busy.insert(shard_id.to_string());
    }
    let result = work.await;
    if let (Ok(mut busy), Ok(mut last)) = (progress.busy.lock(), progress.last_record.lock()) {
        busy.remove(shard_id);
        last.insert(shard_id.to_string(), Instant::now());
    }
    result
}

/// Opens the shard's feed at `start` and registers its back-off flag.
async fn open(shared: &Shared, shard_id: &str, start: StartPosition) -> anyhow::Result<Box<dyn ShardFeed>> {
    let feed = shared.source.open(shard_id, start).await?;
    if let Ok(mut retrying) = shared.progress.retrying.lock() {
        retrying.insert(shard_id.to_string(), feed.retrying());
    }
    Ok(feed)
}

/// Takes the shard off the swap hub's list when the worker ends, however.
struct Registered<'a>(&'a Shared, String);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.swaps.left(&self.1);
    }
}
