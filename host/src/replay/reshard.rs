//! A reshard line of `host test`'s input: the shards it names are read to
//! their end (a last snapshot, then `shutdown(shard-ended)`), and their
//! children start from those states, as under `host run` (`start_child`).

use super::{Lane, ReplayOptions, Replayer, Reshard};
use crate::plugin::bindings::{HashKeyRange as WitRange, ShardContext, ShutdownReason, State};
use crate::plugin::{Inheritance, Plugin};
use anyhow::{bail, Context};
use kinesis_processor_sdk::HashKeyRange;
use std::io::Write;
use std::sync::Arc;

/// Splits or merges the replay's open shards.
pub(super) fn apply<W: Write>(
    replayer: &mut Replayer<'_, W>,
    plugin: &Arc<Plugin>,
    options: &ReplayOptions,
    reshard: &Reshard,
) -> anyhow::Result<()> {
    let open: Vec<usize> = (0..replayer.lanes.len()).filter(|&i| !replayer.lanes[i].ended).collect();
    match reshard {
        Reshard::Split { shard, at } => {
            let parent = match shard {
                Some(id) => find(replayer, &open, id)?,
                None if open.len() == 1 => open[0],
                None => bail!("a split of one of {} open shards must name it: {}", open.len(), names(replayer, &open)),
            };
            let range = replayer.lanes[parent].range;
            let at = at.unwrap_or(range.start + (range.end - range.start) / 2 + 1);
            if at <= range.start || at > range.end {
                bail!(
                    "cannot split {} at {at}: not inside its hash-key range {}..={}",
                    id(replayer, parent),
                    range.start,
                    range.end
                );
            }
            let (state, now) = end(replayer, parent)?;
            let parent_id = id(replayer, parent);
            for range in [HashKeyRange { start: range.start, end: at - 1 }, HashKeyRange { start: at, end: range.end }]
            {
                child(replayer, plugin, options, range, vec![parent_id.clone()], vec![state.clone()], now)?;
            }
        }
        Reshard::Merge { shards } => {
            let (a, b) = match shards {
                Some([a, b]) => (find(replayer, &open, a)?, find(replayer, &open, b)?),
                None if open.len() == 2 => (open[0], open[1]),
                None => {
                    bail!("a merge of two of {} open shards must name them: {}", open.len(), names(replayer, &open))
                }
            };
            let (low, high) =
                if replayer.lanes[a].range.start < replayer.lanes[b].range.start { (a, b) } else { (b, a) };
            let (low_range, high_range) = (replayer.lanes[low].range, replayer.lanes[high].range);
            if low == high || low_range.end.checked_add(1) != Some(high_range.start) {
                bail!(
                    "cannot merge {} and {}: their hash-key ranges are not adjacent",
                    id(replayer, a),
                    id(replayer, b)
                );
            }
            // Parent first, as Kinesis lists a merge (ParentShardId, then AdjacentParentShardId).
            let (first, second) = (a, b);
            let (first_state, first_now) = end(replayer, first)?;
            let (second_state, second_now) = end(replayer, second)?;
            let range = HashKeyRange { start: low_range.start, end: high_range.end };
            let parents = vec![id(replayer, first), id(replayer, second)];
            child(
                replayer,
                plugin,
                options,
                range,
                parents,
                vec![first_state, second_state],
                first_now.max(second_now),
            )?;
        }
    }
    Ok(())
}

/// Reads a shard to its end: its final state, and its clock.
fn end<W: Write>(replayer: &mut Replayer<'_, W>, index: usize) -> anyhow::Result<(State, i64)> {
    replayer.current = index;
    let lane = &mut replayer.lanes[index];
    let state = lane.instance.checkpoint().context("cannot snapshot the plugin at the shard's end")?;
    let output = lane.instance.shutdown(ShutdownReason::ShardEnded);
    lane.ended = true;
    let now = lane.now.max(lane.last_arrival);
    match output {
        Ok(output) => replayer.emit(&output)?,
        Err(e) => replayer.fail(format!("shutdown: {e}")),
    }
    Ok((state, now))
}

/// Starts a child shard from its parents' states.
fn child<W: Write>(
    replayer: &mut Replayer<'_, W>,
    plugin: &Arc<Plugin>,
    options: &ReplayOptions,
    range: HashKeyRange,
    parents: Vec<String>,
    states: Vec<State>,
    now: i64,
) -> anyhow::Result<()> {
    let shard_id = format!("shardId-{:012}", replayer.lanes.len());
    let mut context = ShardContext::new("replay", &shard_id, "host-test");
    context.hash_key_range =
        WitRange { starting_hash_key: range.start.to_string(), ending_hash_key: range.end.to_string() };
    context.parent_shard_ids = parents;
    let (lane, inheritance) = Lane::start(plugin, options, context, now, replayer.interval, states)?;
    if let Inheritance::Dropped(why) = inheritance {
        replayer.report.dropped_states.push(format!("{shard_id} {why}"));
    }
    replayer.lanes.push(lane);
    Ok(())
}

fn id<W: Write>(replayer: &Replayer<'_, W>, index: usize) -> String {
    replayer.lanes[index].instance.settings().context.shard_id.clone()
}

fn names<W: Write>(replayer: &Replayer<'_, W>, open: &[usize]) -> String {
    open.iter().map(|&i| id(replayer, i)).collect::<Vec<_>>().join(", ")
}

fn find<W: Write>(replayer: &Replayer<'_, W>, open: &[usize], shard: &str) -> anyhow::Result<usize> {
    open.iter()
        .copied()
        .find(|&i| id(replayer, i) == shard)
        .with_context(|| format!("no open shard {shard} to reshard; open: {}", names(replayer, open)))
}
