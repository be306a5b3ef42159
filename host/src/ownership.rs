//! The ownership seam: which shards this host may run. One host alone runs
//! them all ([`Solo`]); a group of hosts shares them through leases
//! (`lease::LeaseStore`). The consumer starts [`Ownership::keep`] (which
//! renews, scans and takes in the background, apart from the consumer's
//! loop), asks [`Ownership::owns`] before it starts a shard, and reacts to
//! the [`Changes`] it sends: shards lost (stop at once, write nothing),
//! shards asked for (finish the batch, commit, release), shards taken
//! (start them).
//!
//! Every shard task runs under the [`Tenure`] (the take) it started from;
//! [`Ownership::holds`] answers for that take only, so a task left over
//! from before a lease was lost and taken back never passes for the new one.

use crate::checkpoint::Tenure;
use crate::progress::LeaseCounts;
use crate::shutdown::Shutdown;
use crate::source::ShardInfo;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, watch};

/// What changed for this host.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Shards this host took (start them, under [`Ownership::owns`]'s take).
    pub taken: Vec<String>,
    /// Takes this host no longer holds (stop their tasks at once; their
    /// commits would be refused), with why.
    pub lost: Vec<(String, Tenure, String)>,
    /// Takes another host asked for: finish the batch, commit, release.
    pub hand_off: Vec<(String, Tenure)>,
}

impl Changes {
    /// Nothing to act on.
    pub fn is_empty(&self) -> bool {
        self.taken.is_empty() && self.lost.is_empty() && self.hand_off.is_empty()
    }
}

/// The stream's shards as last listed, and when: a lease is taken as gone
/// from the stream only by a listing made after the lease was first seen.
#[derive(Debug, Clone)]
pub struct Listing {
    pub shards: Vec<ShardInfo>,
    pub at: Instant,
}

impl Listing {
    /// `shards`, listed now.
    pub fn now(shards: Vec<ShardInfo>) -> Self {
        Listing { shards, at: Instant::now() }
    }
}

/// Who runs which shard.
#[async_trait::async_trait]
pub trait Ownership: Send + Sync {
    /// Keeps this host's share in the background until `stop`: reads the
    /// latest listing from `listing` (empty until the first one) and sends
    /// what changes on `changes`.
    fn keep(
        self: Arc<Self>,
        listing: watch::Receiver<Arc<Listing>>,
        changes: mpsc::UnboundedSender<Changes>,
        stop: Shutdown,
    ) -> tokio::task::JoinHandle<()>;

    /// The take under which this host may run `shard_id` now, if any.
    fn owns(&self, shard_id: &str) -> Option<Tenure>;

    /// Whether `shard_id` is still this host's under `tenure`, by this
    /// host's own clock (output is written only while it is).
    fn holds(&self, shard_id: &str, tenure: Tenure) -> bool;

    /// A shard stopped here for good (handed off, read to its end): let
    /// others have it. Called after its last commit.
    async fn release(&self, shard_id: &str, tenure: Tenure) -> anyhow::Result<()>;

    /// A clean stop: every shard's last commit is done; let them all go.
    async fn release_all(&self) -> anyhow::Result<()>;

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
    fn keep(
        self: Arc<Self>,
        _listing: watch::Receiver<Arc<Listing>>,
        _changes: mpsc::UnboundedSender<Changes>,
        _stop: Shutdown,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async {})
    }

    fn owns(&self, _shard_id: &str) -> Option<Tenure> {
        Some(Tenure::SOLE)
    }

    fn holds(&self, _shard_id: &str, _tenure: Tenure) -> bool {
        true
    }

    async fn release(&self, _shard_id: &str, _tenure: Tenure) -> anyhow::Result<()> {
        Ok(())
    }

    async fn release_all(&self) -> anyhow::Result<()> {
        Ok(())
    }

    fn summary(&self) -> Option<String> {
        None
    }

    fn counts(&self) -> Option<LeaseCounts> {
        None
    }
}
