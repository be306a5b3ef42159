//! Leases: how several hosts share a stream's shards (issue 11).
//!
//! A lease is one item per shard: an owner, a counter, and the checkpoint.
//! Every write is conditional on the counter the writer last saw (and on
//! the owner, where it matters), and every write moves the counter. So a
//! worker that was paused or cut off while another took its lease cannot
//! commit any more: its condition fails. Nobody compares wall clocks: a
//! lease is expired when its counter has not moved for the lease duration
//! on the observer's own clock (KCL's rule).
//!
//! - [`LeaseTable`]: the conditional writes ([`InMemoryTable`] for tests,
//!   [`DynamoTable`] for a run).
//! - [`keeper::LeaseKeeper`]: one worker's view: renew what it owns, take
//!   expired or free leases up to its fair share, ask the most loaded worker
//!   for a hand-off, commit, release.
//! - [`LeaseStore`]: the keeper behind the consumer's seams (a
//!   `CheckpointStore` whose commits are fenced, and an `Ownership`).

mod dynamo;
#[cfg(test)]
mod faulty;
pub mod import;
pub mod keeper;
pub mod logic;
mod memory;
mod store;
mod view;

pub use dynamo::{DynamoTable, TableSetup};
pub use logic::{ComponentRef, Deployment, DeploymentChange};
pub use memory::InMemoryTable;
pub use store::LeaseStore;
pub use view::render_table;

/// The `checkpoint` of a shard read to its end (KCL's sentinel).
pub const SHARD_END: &str = "SHARD_END";

/// One shard's lease, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lease {
    /// The shard id (the table's only key).
    pub key: String,
    /// The worker that holds it; `None` when free (released or new).
    pub owner: Option<String>,
    /// Moves on every write; the fencing token of conditional writes.
    pub counter: u64,
    /// Last sequence number processed (or [`SHARD_END`]), committed with the state.
    pub checkpoint: Option<String>,
    /// Its sub-sequence number (aggregated records); 0 for plain records.
    pub sub_sequence: u64,
    /// Grows by one per commit; never goes back.
    pub state_version: u64,
    /// The plugin state committed with the checkpoint.
    pub state: Option<StateRef>,
    /// The shards it was split or merged from: it is taken only after they ended.
    pub parents: Vec<String>,
    /// A worker that asked for this lease (balancing): the owner releases it
    /// after its next commit, and only that worker takes it while fresh.
    pub hand_off_to: Option<String>,
    /// Owner changes since the last checkpoint (KCL's attribute; > 0 after a
    /// take means the last owner's uncommitted work is read again).
    pub owner_switches: u64,
    /// When the last write happened, by the writer's clock (ms since the
    /// epoch): for the operator only, never for expiry.
    pub updated_millis: Option<u64>,
    /// A random number the last write chose: a writer whose answer was lost
    /// (or whose SDK retried a write that had landed, and got a failed
    /// condition back) reads the lease and finds its own write by it.
    pub nonce: u64,
    /// SHA-256 of the logic that wrote the checkpoint and state (group
    /// logic): written in the same conditional update as they are.
    pub logic: Option<String>,
    /// Commits in a row under that logic: past a deployment's probation,
    /// the shard has passed it.
    pub logic_commits: u64,
    /// When the first of them was written (ms since the epoch, the
    /// writer's clock): for the operator only.
    pub logic_since_millis: Option<u64>,
    /// Where the shard stood before the swap onto `logic`: a rollback on
    /// whichever worker holds the shard then replays from there.
    pub pre_swap: Option<PreSwapRef>,
}

/// A lease's pre-swap point: position, state and logic before the last
/// swap. Its state chunks live under a tag of their own (`<take>.p0` or
/// `.p1`), which the take's later commits never overwrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreSwapRef {
    /// SHA-256 of the logic before the swap.
    pub logic: String,
    pub checkpoint: Option<String>,
    pub sub_sequence: u64,
    pub state: Option<StateRef>,
}

impl Lease {
    /// A free lease for a new shard.
    pub fn new(key: &str, parents: &[String]) -> Self {
        Lease { key: key.into(), parents: parents.to_vec(), ..Lease::default() }
    }

    /// The shard was read to its end: nobody needs to hold it any more.
    pub fn ended(&self) -> bool {
        self.checkpoint.as_deref() == Some(SHARD_END)
    }
}

/// Where a committed state lives: chunks in the state table, and the lease
/// holds the pointer, so a renewal (billed by the item's size) never
/// rewrites a state. `Inline` is read from tables written before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateRef {
    /// The snapshot itself, with the plugin's layout version.
    Inline { layout: u32, bytes: Vec<u8> },
    /// `chunks` chunks `len` bytes in all, whose SHA-256 is `sha256`
    /// (checked on load), stored under `tag`: the state version and a
    /// random part, so a fenced-off writer's chunks can never overwrite the
    /// ones a commit points to.
    Chunked { layout: u32, tag: String, chunks: u32, len: u64, sha256: String },
}

/// A commit: position and state, written in one conditional update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Sequence number processed up to, or [`SHARD_END`]; `None` keeps the
    /// position (a state-only commit before the first record).
    pub checkpoint: Option<String>,
    pub sub_sequence: u64,
    /// The new state version (the lease's + 1).
    pub state_version: u64,
    /// What happens to the state.
    pub state: StateWrite,
    /// SHA-256 of the logic whose position and state these are.
    pub logic: Option<String>,
    /// Commits in a row under that logic, this one included.
    pub logic_commits: u64,
    /// What happens to the pre-swap point.
    pub pre_swap: PreSwapWrite,
}

/// What a commit does to the lease's pre-swap point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreSwapWrite {
    /// Leaves it (this take wrote it already).
    Keep,
    /// Removes it (no swap to undo: none yet, or it was rolled back).
    Clear,
    /// Replaces it (a swap, or a take's first commit after one).
    Set(PreSwapRef),
}

/// What a commit does to the lease's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateWrite {
    /// Leaves it as it is (a shard's end: its last state stays for its
    /// children).
    Keep,
    /// Removes it (the plugin has none, e.g. a rollback to before any).
    Clear,
    /// Replaces it.
    Set(StateRef),
}

impl Commit {
    /// A commit of position alone (tests; states are opaque here).
    pub fn position(checkpoint: &str, state_version: u64) -> Self {
        Commit {
            checkpoint: Some(checkpoint.into()),
            sub_sequence: 0,
            state_version,
            state: StateWrite::Keep,
            logic: None,
            logic_commits: 0,
            pre_swap: PreSwapWrite::Keep,
        }
    }
}

/// A conditional write whose condition no longer holds: someone else wrote
/// the lease since the writer last saw it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lease {key} changed since it was read (counter {expected} expected)")]
pub struct Conflict {
    /// The lease written.
    pub key: String,
    /// The counter the writer expected (0 for writes not fenced by one).
    pub expected: u64,
}

/// What can go wrong with a lease write.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The condition failed (fencing): not an error of the table.
    #[error(transparent)]
    Conflict(#[from] Conflict),
    /// The table could not be reached or refused the call for now
    /// (throttling, an outage): worth trying again.
    #[error(transparent)]
    Table(#[from] anyhow::Error),
    /// The table refused the call for good (permissions, a missing table,
    /// an invalid request): trying again changes nothing.
    #[error(transparent)]
    Denied(anyhow::Error),
}

/// The lease table: every write conditional, every write but a hand-off
/// request moves the counter.
#[async_trait::async_trait]
pub trait LeaseTable: Send + Sync + std::fmt::Debug {
    /// Creates a free lease for `key` unless one exists (idempotent).
    async fn create(&self, key: &str, parents: &[String]) -> Result<(), LeaseError>;

    /// Every lease.
    async fn scan(&self) -> Result<Vec<Lease>, LeaseError>;

    /// One lease, read consistently.
    async fn get(&self, key: &str) -> Result<Option<Lease>, LeaseError>;

    /// Takes a lease seen with `counter` (free, expired, or handed over);
    /// clears a hand-off request. Every write stores its `nonce`.
    async fn take(&self, key: &str, counter: u64, me: &str, nonce: u64) -> Result<Lease, LeaseError>;

    /// Renews a lease `me` holds at `counter`. The returned lease shows a
    /// hand-off request if another worker made one.
    async fn renew(&self, key: &str, counter: u64, me: &str, nonce: u64) -> Result<Lease, LeaseError>;

    /// Commits position and state, fenced by owner and counter.
    async fn checkpoint(
        &self,
        key: &str,
        counter: u64,
        me: &str,
        nonce: u64,
        commit: &Commit,
    ) -> Result<Lease, LeaseError>;

    /// Gives a lease up (SIGTERM, hand-off, shard end), fenced by owner and
    /// counter. A hand-off request stays, so the asker takes it.
    async fn release(&self, key: &str, counter: u64, me: &str, nonce: u64) -> Result<Lease, LeaseError>;

    /// Deletes a lease seen at `counter` (an ended shard that aged out of
    /// the stream), with its state chunks.
    async fn delete(&self, key: &str, counter: u64) -> Result<(), LeaseError>;

    /// Asks `owner` to hand `key` over to `me`, unless someone asked first.
    /// Does not move the counter: the owner goes on committing until it
    /// releases.
    async fn request_hand_off(&self, key: &str, owner: &str, me: &str) -> Result<(), LeaseError>;

    /// Stores a state as chunks in the state table under `tag`, replacing
    /// what the tag held.
    async fn put_state(&self, key: &str, tag: &str, layout: u32, bytes: &[u8]) -> Result<StateRef, LeaseError>;

    /// The group's lease duration, a property of the table: the first
    /// worker's `proposed` one is stored, and every worker gets the stored
    /// one (all must count expiry alike).
    async fn lease_duration(&self, proposed: std::time::Duration) -> Result<std::time::Duration, LeaseError>;

    /// Reads a state back (checking its hash).
    async fn get_state(&self, key: &str, state: &StateRef) -> Result<Vec<u8>, LeaseError>;

    /// The group's logic in force, if a worker or operator set one.
    async fn deployment(&self) -> Result<Option<Deployment>, LeaseError>;

    /// Writes `next` if the stored deployment is still number
    /// `next.number - 1` (none at all for 1); a [`Conflict`] otherwise.
    async fn deploy(&self, next: &Deployment) -> Result<(), LeaseError>;

    /// Deletes `key`'s chunks older than the state tagged `keep`: earlier
    /// versions, and other tags of its version (a fenced-off writer's).
    /// Newer ones stay: a cleanup running late must not delete them.
    async fn drop_states(&self, key: &str, keep: &str) -> Result<(), LeaseError>;
}

/// SHA-256 of a state, hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The tag prefix of one take's state chunks: the state version of its
/// first commit (so a later take's sort after it) and a random part (so a
/// fenced-off writer's never match). The take writes two slots under it,
/// `<prefix>.0` and `<prefix>.1`, in turn: never the one its lease points to.
pub(crate) fn take_prefix(version: u64) -> String {
    format!("{version:020}.{:016x}", rand::random::<u64>())
}

/// Whether the chunks tagged `tag` are superseded by the take (or state)
/// `keep`: tags of earlier versions, and other takes' of the same version.
/// Later ones stay: a cleanup running late must not delete them.
pub(crate) fn superseded(tag: &str, keep: &str) -> bool {
    let version = |t: &str| t.split('.').next().unwrap_or_default().to_string();
    let ours = tag == keep || tag.strip_prefix(keep).is_some_and(|rest| rest.starts_with('.'));
    !ours && version(tag) <= version(keep)
}
