//! The shard's half of a hot swap: at a batch boundary, commit, hand the
//! state to the new logic and retire the old instance; or go back to the
//! logic and state before the last swap (rollback). The coordinator's half
//! is `crate::swap`.

use super::worker::Worker;
use crate::checkpoint::PreSwapPoint;
use crate::plugin::bindings::{ShutdownReason, State};
use crate::plugin::{Plugin, PluginError, PluginInstance};
use crate::source::{Position, StartPosition};
use crate::swap::{Change, Generation, OnRejectedState, ShardReport, ShardSwap};
use anyhow::Context;
use std::sync::Arc;
use std::time::Instant;

/// What undoing the last swap of a shard needs.
pub(super) struct PreSwap {
    /// The logic before it, when this host has it at hand (a shard taken
    /// from another worker may name logic this one has yet to load).
    pub plugin: Option<Arc<Plugin>>,
    /// Its state and checkpoint at the swap (also kept in a lease table,
    /// so another worker that takes the shard can undo the swap too).
    pub point: Arc<PreSwapPoint>,
}

impl PreSwap {
    /// Where the shard stood: the state and checkpoint of `logic` at the swap.
    pub fn new(logic: &str, plugin: Option<Arc<Plugin>>, state: Option<State>, committed: Option<&Position>) -> Self {
        let point = PreSwapPoint {
            id: rand::random(),
            logic: logic.to_string(),
            sequence_number: committed.map(|p| p.sequence_number.clone()),
            sub_sequence_number: committed.map_or(0, |p| p.sub_sequence_number),
            state: state.map(|s| (s.version, s.bytes)),
        };
        PreSwap { plugin, point: Arc::new(point) }
    }

    fn state(&self) -> Option<State> {
        self.point.state.clone().map(|(version, bytes)| State { version, bytes })
    }

    fn committed(&self) -> Option<Position> {
        let sequence_number = self.point.sequence_number.clone()?;
        Some(Position { sequence_number, sub_sequence_number: self.point.sub_sequence_number })
    }

    /// The logic before the swap, if this host has it now.
    pub fn plugin(&self, swaps: &crate::swap::SwapHub) -> Option<Arc<Plugin>> {
        self.plugin.clone().or_else(|| swaps.known(&self.point.logic))
    }
}

impl Worker {
    /// Takes a newly published generation at this batch boundary. Returns
    /// where to read from when it rolled the shard back (a replay).
    pub async fn take_generation(&mut self, generation: &Generation) -> anyhow::Result<Option<StartPosition>> {
        if generation.id <= self.generation {
            return Ok(None);
        }
        let target = generation.plugin_for(&self.shard_id).clone();
        if let Change::Rollback { .. } = generation.change {
            // Back to the logic this shard ran before its last swap: its
            // pre-swap state and checkpoint (whichever swap, canary or not,
            // brought it onto the logic undone).
            if self.pre_swap.as_ref().is_some_and(|p| p.point.logic == target.sha256()) {
                let resume = self.roll_back(generation.id, target).await?;
                self.report(generation.id, ShardSwap::RolledBack { reason: "the swap was rolled back".into() });
                self.announce();
                return Ok(Some(resume));
            }
        }
        if self.instance()?.plugin().sha256() == target.sha256() {
            // Already there (e.g. this shard rolled back on its own first).
            self.generation = generation.id;
            self.announce();
            return Ok(None);
        }
        let outcome = self.switch(generation, target).await?;
        self.report(generation.id, outcome);
        self.announce();
        Ok(None)
    }

    /// New logic failed on its first batches: undo the swap here at once
    /// (the coordinator then undoes it everywhere). Returns where to replay from.
    pub async fn roll_back_failed(&mut self, failure: PluginError) -> anyhow::Result<StartPosition> {
        let generation = self.generation;
        tracing::warn!(shard = %self.shard_id, "the new logic failed on its first batches: {failure}; rolling back");
        // In probation only while the logic before is at hand.
        let before = self.pre_swap.as_ref().and_then(|p| p.plugin(&self.shared.swaps));
        let why = format!("{failure}; the host rolls the swap back");
        self.shared.swaps.probation_failed(&self.shard_id, generation, why);
        let resume = self.roll_back(generation, before.context("the logic before the swap is not at hand")?).await?;
        self.report(generation, ShardSwap::RolledBack { reason: failure.to_string() });
        Ok(resume)
    }

    fn report(&self, generation: u64, outcome: ShardSwap) {
        let back_to = match outcome {
            ShardSwap::RolledBack { .. } => self.instance.as_ref().map(|i| i.plugin().clone()),
            _ => None,
        };
        self.shared.swaps.report(ShardReport { shard_id: self.shard_id.clone(), generation, outcome, back_to });
    }

    /// Commits the exact position and state, starts the new logic from that
    /// state, and retires the old instance. If the new logic cannot start
    /// (or rejects the state under `--on-rejected-state refuse`), the old
    /// one keeps running, untouched.
    async fn switch(&mut self, generation: &Generation, plugin: Arc<Plugin>) -> anyhow::Result<ShardSwap> {
        let started = Instant::now();
        self.commit_state().await?;
        let state = self.instance()?.committed_state().cloned();
        let (settings, handed) = (self.settings.clone(), state.clone());
        let on_rejected = self.shared.swaps.policy().on_rejected_state;
        let new = tokio::task::spawn_blocking(move || {
            match PluginInstance::start(plugin.clone(), settings.clone(), handed) {
                Err(PluginError::RestoreRejected { .. }) if on_rejected == OnRejectedState::Fresh => {
                    PluginInstance::start(plugin, settings, None).map(|i| (i, true))
                }
                started => started.map(|i| (i, false)),
            }
        })
        .await
        .context("starting the new plugin panicked")?;
        let (new, fresh_state) = match new {
            Ok(new) => new,
            Err(e) => return Ok(ShardSwap::Refused { reason: e.to_string() }),
        };
        let old = self.instance.replace(new).context("plugin instance lost after a failed call")?;
        // A rollback of this swap returns to `returns_to`. A shard that
        // runs other logic now (a canary the swap goes over) keeps the
        // pre-swap point it has of that logic: the rollback goes back there.
        let returns_to = generation.returns_to.as_deref();
        let chained = self.pre_swap.as_ref().is_some_and(|p| Some(p.point.logic.as_str()) == returns_to)
            && Some(old.plugin().sha256()) != returns_to;
        if let Change::Rollback { .. } = generation.change {
            // Back to earlier logic with the state carried (this shard had
            // no point of it): nothing to undo, no probation.
            self.pre_swap = None;
            self.probation = 0;
        } else {
            if !chained {
                let before = old.plugin();
                self.pre_swap =
                    Some(PreSwap::new(before.sha256(), Some(before.clone()), state, self.committed.as_ref()));
            }
            self.probation = self.shared.swaps.policy().probation_batches;
        }
        self.generation = generation.id;
        // The stored position and state now belong to the new logic: the
        // commit says so (a group counts the switched shards by it), and
        // the store never pairs the position with state the new logic refused.
        self.commit_state().await?;
        let stall_micros = started.elapsed().as_micros() as u64;
        // Like a stop: the old logic's last word goes out; its state lives on.
        self.shut_down_instance(old, ShutdownReason::Requested).await?;
        Ok(ShardSwap::Switched { stall_micros, fresh_state })
    }

    /// Back to the logic and state before the last swap; rewinds the stored
    /// checkpoint to the pre-swap one and returns where to replay from.
    async fn roll_back(&mut self, generation: u64, plugin: Arc<Plugin>) -> anyhow::Result<StartPosition> {
        let pre = self.pre_swap.take().context("no swap to roll back")?;
        let (settings, state) = (self.settings.clone(), pre.state());
        let instance = tokio::task::spawn_blocking(move || PluginInstance::start(plugin, settings, state))
            .await
            .context("restarting the previous plugin panicked")?
            .with_context(|| format!("cannot restart the previous plugin on {}", self.shard_id))?;
        // The failed or unwanted logic gets no last call: it is being undone.
        self.instance = Some(instance);
        crate::policy::PolicyShard::forget_uncommitted(self);
        self.committed = pre.committed();
        self.store_checkpoint(false, pre.point.state.clone()).await?;
        self.probation = 0;
        self.generation = generation;
        let resume = self.resume_position();
        tracing::info!(shard = %self.shard_id, plugin = %pre.point.logic, from = ?resume, "back on the logic before the swap, replaying from its pre-swap checkpoint");
        Ok(resume)
    }
}
