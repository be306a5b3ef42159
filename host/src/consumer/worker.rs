//! One shard's moving parts between batches: its plugin instance, the
//! position processed up to, and commits of position + state through the
//! checkpoint store. Output is written before the position that produced it
//! is committed. The failure policy drives it through `PolicyShard`.

use super::Shared;
use crate::batch::PackedBatch;
use crate::checkpoint::{Checkpoint, CommitError, ShardKey, Tenure};
use crate::plugin::bindings::{ShutdownReason, State};
use crate::plugin::{Clock, InstanceSettings, PluginError, PluginInstance, PluginOutput, Processed};
use crate::policy::{PolicyShard, Uncommitted};
use crate::progress::Progress;
use crate::sink::Origin;
use crate::source::{Position, StartPosition};
use anyhow::Context;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Runs a plugin call on the blocking pool: wasm calls may take up to the
/// call timeout and must not stall the async readers of other shards.
pub(super) async fn blocking<R: Send + 'static>(
    instance: PluginInstance,
    f: impl FnOnce(&mut PluginInstance) -> R + Send + 'static,
) -> anyhow::Result<(PluginInstance, R)> {
    tokio::task::spawn_blocking(move || {
        let mut instance = instance;
        let result = f(&mut instance);
        (instance, result)
    })
    .await
    .context("a plugin call panicked the host thread")
}

/// A shard's moving parts between batches.
pub(super) struct Worker {
    pub shared: Arc<Shared>,
    pub shard_id: String,
    /// The shard's checkpoint key.
    pub key: ShardKey,
    /// What this shard's instances start with (also new logic's).
    pub settings: InstanceSettings,
    /// `None` only while a call runs on the blocking pool.
    pub instance: Option<PluginInstance>,
    /// The user record of the last committed checkpoint.
    pub committed: Option<Position>,
    /// The user record processed up to but not yet committed.
    pub position: Option<Position>,
    /// Batches and records since the last commit.
    pub uncommitted: Uncommitted,
    /// The generation of logic this shard runs.
    pub generation: u64,
    /// Set by a swap, until the next one: what a rollback returns to.
    pub pre_swap: Option<super::handover::PreSwap>,
    /// Batches the new logic has yet to get through before a failure is
    /// an ordinary failure instead of a reason to roll back.
    pub probation: u32,
    /// Where the shard is read from when nothing is committed (a rollback
    /// to before any checkpoint replays from there).
    pub start: StartPosition,
    /// The take this task runs under: it writes output and commits only
    /// while this host holds the shard under it.
    pub tenure: Tenure,
}

impl Worker {
    pub fn take(&mut self) -> anyhow::Result<PluginInstance> {
        self.instance.take().context("plugin instance lost after a failed call")
    }

    pub fn instance(&self) -> anyhow::Result<&PluginInstance> {
        self.instance.as_ref().context("plugin instance lost after a failed call")
    }

    /// Where reading resumes to match the last checkpoint.
    pub fn resume_position(&self) -> StartPosition {
        match &self.committed {
            Some(position) => StartPosition::After(position.clone()),
            None => self.start.clone(),
        }
    }

    /// Publishes which logic this shard runs (swap hub, metrics).
    pub fn announce(&self) {
        // Probation first: a swap answered once every shard runs it finds
        // each shard's probation already listed.
        self.note_probation();
        self.shared.swaps.running(&self.shard_id, self.generation);
        if let (Ok(instance), Ok(mut plugins)) = (self.instance(), self.shared.progress.plugin_by_shard.lock()) {
            plugins.insert(self.shard_id.clone(), instance.plugin().sha256().to_string());
        }
    }

    /// Writes output to the sink, labelled with where it came from (JSON
    /// lines show it). Borrows fields, not the worker, across the await: the
    /// worker is not `Sync`.
    async fn write(&mut self, output: &PluginOutput, batch: Option<(&str, &str)>) -> anyhow::Result<()> {
        self.still_ours()?;
        let plugin_sha256 = self.instance()?.plugin().sha256().to_string();
        let origin = Origin { shard_id: &self.shard_id, plugin_sha256: &plugin_sha256, batch };
        self.shared.sink.write(output, &origin).await
    }

    /// Fails with a lost lease once this host no longer holds the shard
    /// under this task's take (by its own clock: a lease not renewed for a
    /// lease duration may be another worker's by now).
    fn still_ours(&self) -> Result<(), CommitError> {
        if self.shared.ownership.holds(&self.shard_id, self.tenure) {
            return Ok(());
        }
        Err(CommitError::LeaseLost {
            shard_id: self.shard_id.clone(),
            reason: "this worker no longer holds its lease (lost, or not renewed in time)".into(),
        })
    }

    /// The plugin's timer; its output goes to the sink. A failing timer is
    /// only logged (timers are not part of the failure policy).
    pub async fn timer(&mut self) -> anyhow::Result<()> {
        let now = Clock::System.now_millis();
        let instance = self.take()?;
        let (instance, result) = blocking(instance, move |i| i.on_timer(now)).await?;
        self.instance = Some(instance);
        match result {
            Ok(output) => self.write(&output, None).await,
            Err(e) => {
                tracing::warn!(shard = %self.shard_id, "timer call failed: {e}");
                Ok(())
            }
        }
    }

    /// Snapshots the plugin and commits position + state in one write.
    pub async fn commit_state(&mut self) -> anyhow::Result<()> {
        let instance = self.take()?;
        let (instance, state) = blocking(instance, |i| i.checkpoint()).await?;
        self.instance = Some(instance);
        let state = state.with_context(|| format!("cannot snapshot the plugin of {}", self.shard_id))?;
        self.store_checkpoint(false, Some((state.version, state.bytes))).await?;
        self.committed = self.position.take().or(self.committed.take());
        self.uncommitted = Uncommitted::default();
        Ok(())
    }

    /// Writes the shard's checkpoint (the position processed up to) to the
    /// store. Returns an owned future, so no borrow of the worker (and its
    /// non-`Sync` plugin instance) lives across the await.
    pub fn store_checkpoint(
        &self,
        shard_end: bool,
        state: Option<(u32, Vec<u8>)>,
    ) -> impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static {
        let position = self.position.as_ref().or(self.committed.as_ref());
        let checkpoint = Checkpoint {
            sequence_number: position.map(|p| p.sequence_number.clone()),
            sub_sequence_number: position.map_or(0, |p| p.sub_sequence_number),
            shard_end,
            state,
            logic: self.instance.as_ref().map(|i| i.plugin().sha256().to_string()),
            logic_commits: 0,
            pre_swap: self.pre_swap.as_ref().map(|p| p.point.clone()),
        };
        let (store, key, tenure) = (self.shared.store.clone(), self.key.clone(), self.tenure);
        async move { Ok(store.commit(&key, tenure, &checkpoint).await?) }
    }

    /// The plugin's last call; its output goes to the sink.
    pub async fn shut_down(&mut self, reason: ShutdownReason) -> anyhow::Result<()> {
        let instance = self.take()?;
        self.shut_down_instance(instance, reason).await
    }

    pub async fn shut_down_instance(&mut self, instance: PluginInstance, reason: ShutdownReason) -> anyhow::Result<()> {
        let sha256 = instance.plugin().sha256().to_string();
        let (_, output) = blocking(instance, move |i| i.shutdown(reason)).await?;
        self.still_ours()?;
        let origin = Origin { shard_id: &self.shard_id, plugin_sha256: &sha256, batch: None };
        self.shared.sink.write(&output?, &origin).await
    }

    /// Commits what is pending and shuts the plugin down. At a shard's end
    /// the plugin's final output is written before SHARD_END is recorded.
    pub async fn finish(&mut self, reason: ShutdownReason) -> anyhow::Result<()> {
        if reason == ShutdownReason::ShardEnded {
            // The final state, taken before `shutdown`: what the children
            // start from (and everything processed, committed or not).
            let instance = self.take()?;
            let (instance, state) = blocking(instance, |i| i.checkpoint()).await?;
            let state = state.with_context(|| format!("cannot snapshot the plugin of {}", self.shard_id))?;
            self.shut_down_instance(instance, reason).await?;
            self.store_checkpoint(true, Some((state.version, state.bytes))).await?;
            tracing::info!(shard = %self.shard_id, "shard read to its end (SHARD_END checkpointed)");
            return Ok(());
        }
        if self.uncommitted.batches > 0 {
            self.commit_state().await?;
        }
        self.shut_down(reason).await
    }

    /// Tells the hub how much probation is left here (none when a failure
    /// could not roll back), for a `host swap` that waits for it.
    pub fn note_probation(&self) {
        let left = if self.in_probation() { self.probation } else { 0 };
        self.shared.swaps.on_probation(&self.shard_id, self.generation, left);
    }

    /// Another worker owns the shard: the plugin hears `lease-lost` and
    /// whatever it emits then is dropped, since that worker now writes the
    /// shard's output.
    pub async fn lose_lease(&mut self) {
        if let Some(instance) = self.instance.take() {
            if let Ok((_, Err(e))) = blocking(instance, |i| i.shutdown(ShutdownReason::LeaseLost)).await {
                tracing::debug!(shard = %self.shard_id, "shutdown after a lost lease failed: {e}");
            }
        }
    }
}

impl PolicyShard for Worker {
    fn names(&self) -> (&str, &str) {
        (&self.shared.config.stream, &self.shard_id)
    }

    fn plugin_sha256(&self) -> String {
        self.instance().map(|i| i.plugin().sha256().to_string()).unwrap_or_default()
    }

    fn progress(&self) -> &Progress {
        &self.shared.progress
    }

    fn now_millis(&self) -> i64 {
        Clock::System.now_millis()
    }

    async fn process(&mut self, batch: Arc<PackedBatch>) -> anyhow::Result<Result<Processed, PluginError>> {
        let instance = self.take()?;
        let (instance, result) = blocking(instance, move |instance| instance.process(batch.as_wit())).await?;
        self.instance = Some(instance);
        Ok(result)
    }

    async fn accept(&mut self, slice: &PackedBatch, count: usize, output: &PluginOutput) -> anyhow::Result<()> {
        let view = slice.view();
        let first = view.get(0).map(|r| r.sequence_number());
        let last = count.checked_sub(1).and_then(|i| view.get(i));
        self.write(output, first.zip(last.as_ref().map(|r| r.sequence_number()))).await?;
        let progress = &self.shared.progress;
        progress.records.fetch_add(count as u64, Ordering::Relaxed);
        Progress::bump(&progress.records_by_shard, self.shard_id.clone(), count as u64);
        if let Some(last) = last {
            self.position = Some(Position {
                sequence_number: last.sequence_number().to_string(),
                sub_sequence_number: last.sub_sequence_number(),
            });
        }
        Ok(())
    }

    fn skip_to(&mut self, position: Position) {
        self.position = Some(position);
    }

    fn may_write(&self) -> anyhow::Result<()> {
        Ok(self.still_ours()?)
    }

    async fn commit(&mut self) -> anyhow::Result<()> {
        self.commit_state().await
    }

    fn reset(&mut self, failure: &PluginError) -> anyhow::Result<()> {
        if !matches!(failure, PluginError::Trapped { .. }) {
            self.instance.as_mut().context("plugin instance lost after a failed call")?.reset();
        }
        Ok(())
    }

    async fn back_off(&mut self, attempt: u32) {
        tokio::time::sleep(crate::backoff::backoff(attempt)).await;
    }

    fn in_probation(&self) -> bool {
        // A rollback needs the logic before at hand; without it a failure
        // goes to the failure policy (a group rollback still replays).
        self.probation > 0 && self.pre_swap.as_ref().is_some_and(|p| p.plugin(&self.shared.swaps).is_some())
    }

    fn uncommitted(&mut self) -> &mut Uncommitted {
        &mut self.uncommitted
    }

    fn forget_uncommitted(&mut self) {
        self.position = None;
        self.uncommitted = Uncommitted::default();
    }
}

/// The plugin state a checkpoint carries, as the plugin takes it back.
pub(super) fn state_of(checkpoint: Option<&Checkpoint>) -> Option<State> {
    checkpoint.and_then(|c| c.state.clone()).map(|(version, bytes)| State { version, bytes })
}
