//! The ownership seam: which shards this host may run. One host alone runs
//! them all ([`Solo`]); a group of hosts shares them through leases
//! (`lease::LeaseStore`). The consumer asks [`Ownership::owns`] before it
//! starts a shard, runs [`Ownership::cycle`] on a timer, and reacts to what
//! the cycle reports: shards lost (stop at once, write nothing), shards
//! asked for (finish the batch, commit, release).

use crate::progress::LeaseCounts;
use crate::source::ShardInfo;
use std::time::Duration;

/// What a cycle changed for this host.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Shards this host took (start them).
    pub taken: Vec<String>,
    /// Shards another host took (stop them; their commits would be refused).
    pub lost: Vec<String>,
    /// Shards another host asked for: finish the batch, commit, release.
    pub hand_off: Vec<String>,
}

/// Who runs which shard.
#[async_trait::async_trait]
pub trait Ownership: Send + Sync {
    /// One round with the shards of the latest listing: register new
    /// shards, renew, take, ask. Called every [`Ownership::interval`].
    async fn cycle(&self, shards: &[ShardInfo]) -> anyhow::Result<Changes>;

    /// Whether this host may run `shard_id` now.
    fn owns(&self, shard_id: &str) -> bool;

    /// A shard stopped here for good (handed off, read to its end): let
    /// others have it. Called after its last commit.
    async fn release(&self, shard_id: &str) -> anyhow::Result<()>;

    /// A clean stop: every shard's last commit is done; let them all go.
    async fn release_all(&self) -> anyhow::Result<()>;

    /// How often [`Ownership::cycle`] runs.
    fn interval(&self) -> Duration;

    /// A short summary for the status line, if there is anything to say.
    fn summary(&self) -> Option<String>;

    /// What the leases did, for `/metrics` (none for a single host).
    fn counts(&self) -> Option<LeaseCounts>;
}

/// One host runs every shard; nothing to coordinate.
#[derive(Debug, Default, Clone, Copy)]
pub struct Solo;

#[async_trait::async_trait]
impl Ownership for Solo {
    async fn cycle(&self, _shards: &[ShardInfo]) -> anyhow::Result<Changes> {
        Ok(Changes::default())
    }

    fn owns(&self, _shard_id: &str) -> bool {
        true
    }

    async fn release(&self, _shard_id: &str) -> anyhow::Result<()> {
        Ok(())
    }

    async fn release_all(&self) -> anyhow::Result<()> {
        Ok(())
    }

    fn interval(&self) -> Duration {
        Duration::from_secs(3600)
    }

    fn summary(&self) -> Option<String> {
        None
    }

    fn counts(&self) -> Option<LeaseCounts> {
        None
    }
}
