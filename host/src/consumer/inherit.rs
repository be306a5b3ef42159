//! State follows resharding: a shard without a checkpoint of its own whose
//! parents ended starts from their final states (committed with their
//! SHARD_END, by whichever worker read them). A split's child `restore`s its
//! parent's state; a merge's child `merge`s both parents'. The inherited
//! state is committed as the child's first checkpoint before its first
//! record, so a restart (or another worker) never inherits twice.

use super::scheduler::Start;
use super::worker::state_of;
use super::Shared;
use crate::plugin::bindings::{HashKeyRange, State};
use crate::plugin::{start_child, Inheritance, InstanceSettings, Plugin, PluginInstance};
use crate::source::ShardInfo;
use anyhow::Context;
use std::sync::Arc;

/// Gives an instance's context the shard's hash-key range and parents.
pub(super) fn describe(settings: &mut InstanceSettings, info: &ShardInfo) {
    if let Some((start, end)) = &info.hash_range {
        settings.context.hash_key_range =
            HashKeyRange { starting_hash_key: start.clone(), ending_hash_key: end.clone() };
    }
    settings.context.parent_shard_ids = info.parents().map(str::to_string).collect();
}

/// A started instance, and the state to commit as the shard's first
/// checkpoint when it was inherited.
pub(super) struct Started {
    pub instance: PluginInstance,
    pub inherited: Option<State>,
}

/// Starts the shard's instance: from its own checkpoint, else from its
/// parents' final states, else fresh.
pub(super) async fn start_instance(
    shared: &Shared,
    plugin: Arc<Plugin>,
    settings: InstanceSettings,
    start: &Start,
) -> anyhow::Result<Started> {
    let parents = settings.context.parent_shard_ids.clone();
    if start.checkpoint.is_some() || parents.is_empty() {
        let state = state_of(start.checkpoint.as_ref());
        let instance = blocking(move || PluginInstance::start(plugin, settings, state)).await?;
        return Ok(Started { instance, inherited: None });
    }
    let mut states = Vec::with_capacity(parents.len());
    for parent in &parents {
        let checkpoint = shared
            .store
            .load(&shared.config.key(parent))
            .await
            .with_context(|| format!("cannot read the checkpoint of {parent}, parent of {}", start.shard_id))?;
        // Only an ended parent's state is final; one that aged out of the
        // stream unfinished left records nobody read, and no state to trust.
        let state = checkpoint.filter(|c| c.shard_end).and_then(|c| c.state);
        let (version, bytes) = state.unwrap_or_default();
        states.push(State { version, bytes });
    }
    let (instance, inheritance) = blocking(move || start_child(plugin, settings, states)).await?;
    let shard = &start.shard_id;
    let inherited = match inheritance {
        Inheritance::Nothing => None,
        Inheritance::Dropped(why) => {
            tracing::warn!(shard = %shard, "{why}");
            None
        }
        Inheritance::Took { state, given } => {
            let from = parents.join(" and ");
            tracing::info!(shard = %shard, "starts from the state of {from} ({given} bytes in, {} kept)", state.bytes.len());
            Some(state)
        }
    };
    Ok(Started { instance, inherited })
}

/// Runs a start (`init`, `restore`, `merge`: wasm) on the blocking pool.
async fn blocking<T: Send + 'static>(
    start: impl FnOnce() -> Result<T, crate::plugin::PluginError> + Send + 'static,
) -> anyhow::Result<T> {
    Ok(tokio::task::spawn_blocking(start).await.context("starting the plugin panicked")??)
}
