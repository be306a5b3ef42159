//! A group worker's hot swap: its own triggers (`--watch`, SIGHUP, the
//! control endpoint) publish to the group instead of swapping this process
//! alone, and a follower brings the group's logic to this process.

use super::follow::Follower;
use super::{publish, Loader, PublishError, Published};
use crate::lease::{Deployment, DeploymentChange, LeaseTable};
use crate::plugin::InstanceSettings;
use crate::shutdown::Shutdown;
use crate::swap::{SwapHub, SwapOutcome, SwapRequest, SwapResult};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What a worker of a group needs to follow and change the group's logic.
pub struct GroupRun {
    pub table: Arc<dyn LeaseTable>,
    /// The deployment the worker started with.
    pub deployment: Deployment,
    /// The worker's id.
    pub me: String,
    /// How often the deployment item is read.
    pub every: Duration,
    pub loader: Loader,
    pub stop: Shutdown,
    /// After a swap: the logic before it (a rollback's; during a canary,
    /// what the shards outside it run).
    pub base: Option<Arc<crate::plugin::Plugin>>,
}

impl GroupRun {
    /// Starts the follower (feeding `coordinator`, hearing `results`) and
    /// returns where this worker's triggers send their requests.
    pub fn spawn(
        self,
        hub: Arc<SwapHub>,
        coordinator: mpsc::Sender<SwapRequest>,
        results: mpsc::UnboundedReceiver<SwapResult>,
        settings: InstanceSettings,
        progress: Arc<crate::progress::Progress>,
    ) -> mpsc::Sender<SwapRequest> {
        // Before any shard starts: each start must commit its logic's name.
        hub.followed();
        hub.set_policy(super::policy(self.deployment.rules));
        if let Some(base) = self.base.clone() {
            hub.remember(base.clone());
            hub.start_after_swap(base.sha256());
            if !self.deployment.canary.is_empty() {
                hub.start_canary(self.deployment.canary.iter().cloned().collect(), base);
            }
        }
        let follower = Follower {
            table: self.table.clone(),
            hub,
            requests: coordinator,
            results,
            me: self.me.clone(),
            every: self.every,
            progress,
            loader: self.loader.clone(),
        };
        tokio::spawn(super::follow(follower, self.deployment, self.stop));
        let (triggers, requests) = mpsc::channel(16);
        tokio::spawn(serve_triggers(self.table, self.loader, settings, self.me, requests));
        triggers
    }
}

/// Publishes what this worker's triggers ask for to the whole group.
async fn serve_triggers(
    table: Arc<dyn LeaseTable>,
    loader: Loader,
    settings: InstanceSettings,
    me: String,
    mut requests: mpsc::Receiver<SwapRequest>,
) {
    while let Some(request) = requests.recv().await {
        let started = Instant::now();
        let (result, reply) = match request {
            SwapRequest::Swap { source, reply, .. } => {
                let published = publish(
                    table.as_ref(),
                    &loader,
                    settings.clone(),
                    super::Publish { source, rules: None, canary: Vec::new(), promote: false },
                    &me,
                )
                .await;
                (published_result(published), reply)
            }
            SwapRequest::Rollback { reply, .. } => (requested_rollback(table.as_ref(), &me).await, reply),
        };
        let result = SwapResult { total_millis: started.elapsed().as_millis() as u64, ..result };
        eprintln!("swap: {}: {}", result.outcome, result.message);
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
    }
}

fn answer(outcome: SwapOutcome, message: String, sha256: &str) -> SwapResult {
    SwapResult {
        outcome,
        message,
        sha256: sha256.into(),
        shards: BTreeMap::new(),
        prepare_millis: 0,
        total_millis: 0,
        // Not this host's generation: the group's workers switch on their own.
        generation: 0,
        on_its_own: false,
    }
}

fn published_result(published: Result<Published, PublishError>) -> SwapResult {
    match published {
        Ok(Published::Deployed(deployment)) => answer(
            SwapOutcome::Swapped,
            format!("published to the group: {}; every worker switches within a lease scan", deployment.describe()),
            &deployment.logic.sha256,
        ),
        Ok(Published::Unchanged(deployment)) => answer(
            SwapOutcome::Unchanged,
            format!("the group runs this logic already ({})", deployment.describe()),
            &deployment.logic.sha256,
        ),
        Err(e) => answer(SwapOutcome::Refused, format!("{e:#}; the group's logic stays"), ""),
    }
}

/// The group's rollback of its last swap, asked for by an operator.
pub async fn requested_rollback(table: &dyn LeaseTable, me: &str) -> SwapResult {
    let current = match table.deployment().await {
        Ok(Some(current)) => current,
        Ok(None) => return answer(SwapOutcome::Refused, "the group has no logic to roll back".into(), ""),
        Err(e) => return answer(SwapOutcome::Refused, format!("cannot read the group's logic: {e:#}"), ""),
    };
    if current.change != DeploymentChange::Swap {
        let message = format!("the group's last change was no swap ({}): nothing to roll back", current.describe());
        return answer(SwapOutcome::Refused, message, &current.logic.sha256);
    }
    match super::roll_back(table, &current, &format!("requested by {me}"), me).await {
        Ok(Some(rollback)) => answer(SwapOutcome::RolledBack, rollback.describe(), &rollback.logic.sha256),
        Ok(None) => answer(SwapOutcome::Refused, "the group's logic changed meanwhile; try again".into(), ""),
        Err(e) => answer(SwapOutcome::Refused, format!("cannot write the group's rollback: {e:#}"), ""),
    }
}
