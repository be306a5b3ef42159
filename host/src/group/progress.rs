//! Which shard runs which logic, from the lease items: each commit names
//! the logic that wrote it, and a worker commits as soon as a shard
//! switches (or starts under logic other than its checkpoint's).

use crate::lease::{Deployment, Lease, LeaseTable};
use anyhow::Context;

/// The group's deployment and where each live shard stands.
#[derive(Debug, Clone)]
pub struct GroupProgress {
    pub deployment: Option<Deployment>,
    /// Every lease, by shard id.
    pub leases: Vec<Lease>,
}

impl GroupProgress {
    /// Leases a live worker runs (held, not at their shard's end) that
    /// the deployment is for: every one, or its canary's.
    pub fn running(&self) -> impl Iterator<Item = &Lease> {
        let canary = self.deployment.as_ref().map(|d| &d.canary).filter(|c| !c.is_empty());
        self.leases.iter().filter(move |l| l.owner.is_some() && !l.ended() && canary.is_none_or(|c| c.contains(&l.key)))
    }

    /// (running shards on the deployment's logic, running shards).
    pub fn on_logic(&self) -> (usize, usize) {
        let Some(deployment) = &self.deployment else { return (0, self.running().count()) };
        let on = self.running().filter(|l| l.logic.as_deref() == Some(deployment.logic.sha256.as_str())).count();
        (on, self.running().count())
    }

    /// Running shards not yet on the deployment's logic, with their owners.
    pub fn behind(&self) -> Vec<String> {
        let sha = self.deployment.as_ref().map(|d| d.logic.sha256.as_str());
        self.running()
            .filter(|l| l.logic.as_deref() != sha)
            .map(|l| format!("{} ({})", l.key, l.owner.as_deref().unwrap_or("-")))
            .collect()
    }
}

/// Reads the deployment and every lease.
pub async fn progress(table: &dyn LeaseTable) -> anyhow::Result<GroupProgress> {
    let deployment = table.deployment().await.context("cannot read the group's logic")?;
    let leases = table.scan().await.context("cannot read the leases")?;
    Ok(GroupProgress { deployment, leases })
}
