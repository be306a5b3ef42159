//! A child shard's instance, started from its parents' final states: a
//! split's child `restore`s its one parent's, a merge's child `merge`s both
//! (when the component exports `merge`). `host run` and `host test` share it.

use super::bindings::State;
use super::component::Plugin;
use super::contract::Contract;
use super::error::PluginError;
use super::instance::{InstanceSettings, PluginInstance};
use std::sync::Arc;

/// How a child took its parents' state.
#[derive(Debug)]
pub enum Inheritance {
    /// The parents left no state: a fresh start, nothing lost.
    Nothing,
    /// Restored or merged; the child's state right after (to commit as its
    /// first checkpoint), and the bytes it was given.
    Took { state: State, given: usize },
    /// It started empty although the parents had state: why, and what to
    /// do, for a warning line.
    Dropped(String),
}

/// Starts the instance of a shard whose parents ended with `parents`' states
/// (in the order of the context's parent shard ids; empty bytes for none).
pub fn start_child(
    plugin: Arc<Plugin>,
    settings: InstanceSettings,
    mut parents: Vec<State>,
) -> Result<(PluginInstance, Inheritance), PluginError> {
    let given: usize = parents.iter().map(|s| s.bytes.len()).sum();
    let contract = plugin.contract();
    let from = settings.context.parent_shard_ids.join(" and ");
    let dropped = match contract {
        _ if given == 0 => Some(Inheritance::Nothing),
        Contract::V0_1 => Some(Inheritance::Dropped(format!(
            "starts without the state of {from} ({given} bytes): the plugin was built for {contract}, which cannot carry state across a split or merge; rebuild it against kinesis:processor@0.2.0 (the SDK's current version)"
        ))),
        Contract::V0_2 { merges: false } if parents.len() > 1 => Some(Inheritance::Dropped(format!(
            "starts without the state of {from} ({given} bytes): the plugin does not export kinesis:processor/merge@0.2.0, so the states of merged shards cannot be combined; implement `merge` (the Rust SDK's `Processor::merge`)"
        ))),
        Contract::V0_2 { .. } => None,
    };
    if let Some(inheritance) = dropped {
        return Ok((PluginInstance::start(plugin, settings, None)?, inheritance));
    }
    let mut instance = if parents.len() == 1 {
        PluginInstance::start(plugin, settings, parents.pop())?
    } else {
        let mut instance = PluginInstance::start(plugin, settings, None)?;
        instance.merge(&parents)?;
        instance
    };
    // What a rebuild restores from now on, and the child's first checkpoint.
    let state = instance.checkpoint()?;
    Ok((instance, Inheritance::Took { state, given }))
}
