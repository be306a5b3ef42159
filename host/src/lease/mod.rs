//! Leases: how several hosts share a stream's shards (issue 11, first step:
//! the protocol, against an in-memory table; the DynamoDB table is next).
//!
//! A lease is one item per shard: an owner, a counter, and the checkpoint.
//! Every write is conditional on the counter the writer last saw (and on
//! the owner, where it matters), and every write moves the counter. So a
//! worker that was paused or cut off while another took its lease cannot
//! commit any more: its condition fails. Nobody compares wall clocks: a
//! lease is expired when its counter has not moved for the lease duration
//! on the observer's own clock (KCL's rule).
//!
//! - [`LeaseTable`]: the conditional writes (`InMemoryTable` here).
//! - [`keeper::LeaseKeeper`]: one worker's view: renew what it owns, take
//!   expired or free leases up to its fair share, commit, release.

pub mod keeper;
mod memory;

pub use memory::InMemoryTable;

/// One shard's lease, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The shard id (the table's only key).
    pub key: String,
    /// The worker that holds it; `None` when free (released or new).
    pub owner: Option<String>,
    /// Moves on every write; the fencing token of conditional writes.
    pub counter: u64,
    /// Last sequence number processed, committed with the state.
    pub checkpoint: Option<String>,
    /// Version of the plugin state committed with the checkpoint (grows by
    /// one per commit; never goes back).
    pub state_version: u64,
}

impl Lease {
    /// A free lease for a new shard.
    pub fn new(key: &str) -> Self {
        Lease { key: key.into(), owner: None, counter: 0, checkpoint: None, state_version: 0 }
    }
}

/// A conditional write whose condition no longer holds: someone else wrote
/// the lease since the writer last saw it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lease {key} changed since it was read (counter {expected} expected)")]
pub struct Conflict {
    pub key: String,
    pub expected: u64,
}

/// What can go wrong with a lease write.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The condition failed (fencing): not an error of the table.
    #[error(transparent)]
    Conflict(#[from] Conflict),
    /// The table could not be reached or refused the call.
    #[error(transparent)]
    Table(#[from] anyhow::Error),
}

/// The lease table: every write conditional, every write moves the counter.
#[async_trait::async_trait]
pub trait LeaseTable: Send + Sync {
    /// Creates a free lease for `key` unless one exists (idempotent).
    async fn create(&self, key: &str) -> Result<(), LeaseError>;

    /// Every lease.
    async fn scan(&self) -> Result<Vec<Lease>, LeaseError>;

    /// Takes a lease seen with `counter` (free, expired, or handed over).
    async fn take(&self, key: &str, counter: u64, me: &str) -> Result<Lease, LeaseError>;

    /// Renews a lease `me` holds at `counter`.
    async fn renew(&self, key: &str, counter: u64, me: &str) -> Result<Lease, LeaseError>;

    /// Commits position and state version, fenced by owner and counter.
    async fn checkpoint(
        &self,
        key: &str,
        counter: u64,
        me: &str,
        checkpoint: &str,
        state_version: u64,
    ) -> Result<Lease, LeaseError>;

    /// Gives a lease up (SIGTERM, hand-off), fenced by owner and counter.
    async fn release(&self, key: &str, counter: u64, me: &str) -> Result<Lease, LeaseError>;
}
