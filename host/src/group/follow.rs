//! A worker following the group's deployment: it reads the deployment item
//! once a second (or when a starting shard asks) and hands each new logic to this host's swap
//! coordinator (which switches every shard at a batch boundary). When new
//! logic fails here (a shard refused it, or it failed in probation), the
//! worker writes the group's rollback; one conditional write decides it,
//! however many workers see a failure at once.

use crate::lease::logic::load_component;
use crate::lease::{Deployment, DeploymentChange, LeaseTable};
use crate::shutdown::Shutdown;
use crate::swap::{PluginSource, ShardSwap, SwapHub, SwapOutcome, SwapRequest, SwapResult};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// What a worker follows the group with.
pub struct Follower {
    pub table: Arc<dyn LeaseTable>,
    /// The logic this host runs now.
    pub hub: Arc<SwapHub>,
    /// This host's swap coordinator: every swap of the host goes through it.
    pub requests: mpsc::Sender<SwapRequest>,
    /// Everything the coordinator did, requested or on its own (probation).
    pub results: mpsc::UnboundedReceiver<SwapResult>,
    /// This worker's id, written with a rollback it decides.
    pub me: String,
    /// How often the deployment item is read: a new deployment is seen
    /// within this.
    pub every: Duration,
    /// Where the deployment in force is shown (metrics).
    pub progress: Arc<crate::progress::Progress>,
    /// Loads the logic a rollback may return to.
    pub loader: super::Loader,
}

/// Follows the group's logic from `current` (the one the worker started
/// with) until `stop`.
pub async fn follow(mut f: Follower, mut current: Deployment, stop: Shutdown) {
    let mut stopped = stop.subscribe();
    let mut tick = tokio::time::interval(f.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // New logic failed here and the group's rollback is not written yet.
    let mut failure: Option<String> = None;
    f.hub.followed();
    let hub = f.hub.clone();
    // The asks the look under way answers (taken when it began).
    let mut answering: Option<u64> = None;
    loop {
        if let Some(answered) = answering.take() {
            // The last look is done: whoever asked before it began may go on.
            hub.looked(answered);
        }
        let heard = tokio::select! {
            // A failure already reported goes first: a tick must not swap
            // the shards back onto logic that just failed.
            biased;
            Some(result) = f.results.recv() => Some(result),
            _ = tick.tick() => None,
            _ = hub.look_asked() => None,
            _ = stopped.wait_for(|s| *s) => return,
        };
        if let Some(result) = heard {
            let ours = current.change == DeploymentChange::Swap
                && current.previous.as_ref().is_some_and(|p| p.sha256 == result.sha256);
            if result.on_its_own && ours {
                failure = Some(result.message);
                f.roll_back_group(&current, &mut failure).await;
            }
            continue;
        }
        let began = hub.looking();
        let latest = match f.table.deployment().await {
            Ok(Some(latest)) => latest,
            Ok(None) => {
                answering = Some(began);
                continue;
            }
            Err(e) => {
                tracing::warn!("cannot read the group's logic, trying again in {:?}: {e:#}", f.every);
                continue;
            }
        };
        if latest.number > current.number {
            eprintln!("group: {}", latest.describe());
            current = latest;
            failure = None;
        } else if failure.is_some() {
            f.roll_back_group(&current, &mut failure).await;
            continue;
        }
        f.hub.set_policy(super::policy(current.rules));
        f.progress.swaps.deployment.store(current.number, std::sync::atomic::Ordering::Relaxed);
        f.keep_previous(&current).await;
        // A look that read the table and brought its logic here answers
        // every ask made before it began; one that could not answers none.
        if f.runs(&current) {
            answering = Some(began);
        } else {
            match f.apply(&current).await {
                Ok(()) => answering = Some(began),
                Err(Failed::Logic(reason)) if current.change == DeploymentChange::Swap => {
                    failure = Some(reason);
                    f.roll_back_group(&current, &mut failure).await;
                }
                // Not the logic's fault (the table, a slow shard, a stop):
                // tried again at the next look, never written as a failure.
                Err(Failed::Logic(reason) | Failed::Transient(reason)) => {
                    tracing::warn!(
                        "cannot run the group's logic {} yet, trying again: {reason}",
                        current.logic.short()
                    );
                }
            }
        }
    }
}

/// Why this host could not run a deployment.
enum Failed {
    /// The logic failed: a shard refused it or it failed its check. The
    /// group rolls back.
    Logic(String),
    /// Something else (the table, a slow shard, a stop): try again.
    Transient(String),
}

impl Follower {
    /// Whether this host runs `deployment` as it says: its logic, on the
    /// shards it names (every shard, or its canary).
    fn runs(&self, deployment: &Deployment) -> bool {
        let current = self.hub.current();
        let canary: Option<BTreeSet<String>> =
            (!deployment.canary.is_empty()).then(|| deployment.canary.iter().cloned().collect());
        current.plugin.sha256() == deployment.logic.sha256 && current.only.as_deref() == canary.as_ref()
    }

    /// Keeps the logic before a swap at hand (this host may not have run
    /// it): a shard taken in probation rolls back to it.
    async fn keep_previous(&self, deployment: &Deployment) {
        let Some(previous) = deployment.previous.as_ref().filter(|_| deployment.change == DeploymentChange::Swap)
        else {
            return;
        };
        if self.hub.known(&previous.sha256).is_some() {
            return;
        }
        let before = Deployment { logic: previous.clone(), ..deployment.clone() };
        match self.loader.load(self.table.as_ref(), &before).await {
            Ok(plugin) => self.hub.remember(plugin),
            Err(e) => tracing::warn!("cannot load the logic before the group's swap (tried again later): {e:#}"),
        }
    }

    /// Runs `deployment`'s logic on this host: a rollback undoes the last
    /// swap where this host made it (pre-swap state and checkpoints),
    /// anything else is a swap.
    async fn apply(&self, deployment: &Deployment) -> Result<(), Failed> {
        if let DeploymentChange::Rollback { .. } = deployment.change {
            // A host that did not make that swap (it joined later) is
            // given the logic: shards it took with a pre-swap point of it
            // replay from there, the others carry their state over.
            let bytes = load_component(self.table.as_ref(), &deployment.logic)
                .await
                .map_err(|e| Failed::Transient(format!("{e:#}")))?;
            let to = PluginSource::Bytes { name: deployment.logic.name.clone(), bytes };
            let result = self
                .ask(|reply| SwapRequest::Rollback { to: Some(to), reply: Some(reply) })
                .await
                .map_err(Failed::Transient)?;
            if result.outcome == SwapOutcome::RolledBack && result.sha256 == deployment.logic.sha256 {
                return Ok(());
            }
        }
        let bytes = load_component(self.table.as_ref(), &deployment.logic)
            .await
            .map_err(|e| Failed::Transient(format!("{e:#}")))?;
        let source = PluginSource::Bytes { name: deployment.logic.name.clone(), bytes };
        let only = (!deployment.canary.is_empty()).then(|| deployment.canary.iter().cloned().collect());
        let result = self
            .ask(|reply| SwapRequest::Swap { source, only, reply: Some(reply) })
            .await
            .map_err(Failed::Transient)?;
        match result.outcome {
            SwapOutcome::Swapped | SwapOutcome::Unchanged => Ok(()),
            SwapOutcome::Refused | SwapOutcome::RolledBack => {
                // Each shard's own word is the reason; the message repeats it.
                let (mut refused, mut late) = (Vec::new(), Vec::new());
                for (shard, outcome) in &result.shards {
                    match outcome {
                        ShardSwap::Refused { reason } | ShardSwap::RolledBack { reason } => {
                            refused.push(format!("{shard}: {reason}"))
                        }
                        ShardSwap::Late { reason } => late.push(format!("{shard}: {reason}")),
                        ShardSwap::Switched { .. } => {}
                    }
                }
                Err(match (refused.is_empty(), late.is_empty()) {
                    (false, _) => Failed::Logic(refused.join("; ")),
                    (true, false) => Failed::Transient(late.join("; ")),
                    // The component itself was refused (its check failed here).
                    (true, true) => Failed::Logic(result.message),
                })
            }
        }
    }

    async fn ask(
        &self,
        request: impl FnOnce(oneshot::Sender<SwapResult>) -> SwapRequest,
    ) -> Result<SwapResult, String> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(request(reply)).await.map_err(|_| "the host is stopping".to_string())?;
        answer.await.map_err(|_| "the host is stopping".to_string())
    }

    /// Writes the group's rollback of `failed` for `failure`; keeps the
    /// failure to try again when the table could not be written.
    async fn roll_back_group(&self, failed: &Deployment, failure: &mut Option<String>) {
        let Some(reason) = failure.clone() else { return };
        let mut reason = format!("worker {}: {reason}", self.me);
        // The deployment item stays small whatever a plugin's error says.
        if reason.len() > 1000 {
            let end = (0..=1000).rev().find(|i| reason.is_char_boundary(*i)).unwrap_or(0);
            reason.truncate(end);
            reason.push('…');
        }
        match super::roll_back(self.table.as_ref(), failed, &reason, &self.me).await {
            Ok(Some(rollback)) => {
                eprintln!("group: deployment {} failed here; {}", failed.number, rollback.describe());
                *failure = None;
            }
            // Someone else moved the group on first: it follows that.
            Ok(None) => *failure = None,
            Err(e) => tracing::warn!("cannot write the group's rollback yet, trying again: {e:#}"),
        }
    }
}
