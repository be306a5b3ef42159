//! Where a shard stands: the position processed up to and the plugin's
//! state, committed together so a restart (or another worker) resumes with
//! both or neither.
//!
//! [`CheckpointStore`] is the seam: the shard worker loads and commits
//! through it and knows nothing of the storage. [`SqliteStore`] is the one
//! host implementation; a lease store (DynamoDB) fences commits by lease
//! and answers [`CommitError::LeaseLost`] when another worker owns the shard.
//! A store knows nothing of plugins: state is opaque bytes with a version.

mod sqlite;

pub use sqlite::SqliteStore;

/// Where a shard stands.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// Last sequence number fully processed.
    pub sequence_number: Option<String>,
    /// Its sub-sequence (aggregated records); 0 for plain records.
    pub sub_sequence_number: u64,
    /// The shard was read to its end and the plugin shut down (children may start).
    pub shard_end: bool,
    /// The plugin's state with its layout version, if it has been snapshotted.
    pub state: Option<(u32, Vec<u8>)>,
    /// SHA-256 of the logic whose position and state these are, where the
    /// store keeps it (a lease table: group logic); `None` when unknown.
    pub logic: Option<String>,
    /// Commits in a row under `logic` (a group's probation shows in them).
    pub logic_commits: u64,
    /// Where the shard stood before the swap that brought it onto `logic`,
    /// where the store keeps it (a lease table): a rollback on whichever
    /// worker holds the shard then replays from there.
    pub pre_swap: Option<std::sync::Arc<PreSwapPoint>>,
}

/// A shard's position, state and logic just before a swap: what a
/// rollback returns to. Kept until the next swap or rollback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreSwapPoint {
    /// Names this point for the store (which writes its state once).
    pub id: u64,
    /// SHA-256 of the logic before the swap.
    pub logic: String,
    /// The checkpoint then; `None` when the shard had processed nothing.
    pub sequence_number: Option<String>,
    pub sub_sequence_number: u64,
    /// That logic's state then, with its layout version.
    pub state: Option<(u32, Vec<u8>)>,
}

/// Names one shard's checkpoint: several applications may read one stream,
/// each with its own positions and state.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardKey {
    pub application: String,
    pub stream: String,
    pub shard_id: String,
}

impl ShardKey {
    /// The key of `shard_id` in `application`'s view of `stream`.
    pub fn new(application: &str, stream: &str, shard_id: &str) -> Self {
        ShardKey { application: application.into(), stream: stream.into(), shard_id: shard_id.into() }
    }
}

/// Which take of a shard's lease a shard task runs under. A lease store
/// refuses a commit (and the task its output) from any take but the one it
/// holds now: a task started before the lease was lost and taken back must
/// not write over its successor. One host alone has a single take,
/// [`Tenure::SOLE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Tenure(pub u64);

impl Tenure {
    /// The take of a host that runs every shard (no leases).
    pub const SOLE: Tenure = Tenure(0);
}

/// Why a commit did not happen. Callers branch on it: a lost lease stops
/// the shard quietly (someone else has it), anything else is an error.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Another worker owns the shard now; this worker must not write output
    /// or state for it again.
    #[error("shard {shard_id} is no longer ours: {reason}")]
    LeaseLost { shard_id: String, reason: String },
    /// The store could not write (I/O, network, corrupt file, …).
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// The durable home of checkpoints. Commits are atomic: position and state
/// move together or not at all.
#[async_trait::async_trait]
pub trait CheckpointStore: Send + Sync + std::fmt::Debug {
    /// The checkpoint of a shard, if it has one.
    async fn load(&self, key: &ShardKey) -> anyhow::Result<Option<Checkpoint>>;

    /// Commits position and state in one write, for the task running under
    /// `tenure`. Fails with [`CommitError::LeaseLost`] when this worker no
    /// longer holds the shard under that take.
    async fn commit(&self, key: &ShardKey, tenure: Tenure, checkpoint: &Checkpoint) -> Result<(), CommitError>;

    /// Whether a shard was read to its end (children wait for it). A store
    /// that keeps state apart from the position answers without reading it.
    async fn shard_ended(&self, key: &ShardKey) -> anyhow::Result<bool> {
        Ok(self.load(key).await?.is_some_and(|c| c.shard_end))
    }

    /// Where the checkpoints are, for the operator ("checkpoints in …").
    fn location(&self) -> String;
}

/// True when `error` (anywhere in its chain) is a lost lease.
pub fn is_lease_lost(error: &anyhow::Error) -> bool {
    error.chain().any(|c| matches!(c.downcast_ref::<CommitError>(), Some(CommitError::LeaseLost { .. })))
}

/// A shared store is a store (a lease store is also the run's ownership).
#[async_trait::async_trait]
impl<T: CheckpointStore + ?Sized> CheckpointStore for std::sync::Arc<T> {
    async fn load(&self, key: &ShardKey) -> anyhow::Result<Option<Checkpoint>> {
        (**self).load(key).await
    }

    async fn commit(&self, key: &ShardKey, tenure: Tenure, checkpoint: &Checkpoint) -> Result<(), CommitError> {
        (**self).commit(key, tenure, checkpoint).await
    }

    async fn shard_ended(&self, key: &ShardKey) -> anyhow::Result<bool> {
        (**self).shard_ended(key).await
    }

    fn location(&self) -> String {
        (**self).location()
    }
}
