//! The record-source seam: where a shard's batches come from. The consumer
//! reads through [`RecordSource`] and [`ShardFeed`] only; polling
//! (GetRecords with read-ahead, `kinesis::reader::Polling`) implements them,
//! and a push source (SubscribeToShard) can sit beside it.

use crate::batch::PackedBatch;
pub use crate::batch::Position;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Where to start reading a shard (the AWS iterator types).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartPosition {
    /// Only records written from now on.
    Latest,
    /// The oldest record still retained.
    TrimHorizon,
    /// The first record at or after this time (ms since the epoch).
    AtTimestamp(i64),
    /// The record with this sequence number.
    AtSequenceNumber(String),
    /// The record after this sequence number.
    AfterSequenceNumber(String),
    /// The user record after this one (how checkpoints resume): read at its
    /// sequence number, dropping the user records up to its sub-sequence
    /// number, so a restart inside a KPL-aggregated record neither skips
    /// nor repeats any of its user records.
    After(Position),
}

/// One read's worth of a shard.
#[derive(Debug, Default)]
pub struct ReadBatch {
    /// Records in sequence order (possibly none), already in the WIT
    /// layout, with how far behind the tip the shard still is.
    pub records: PackedBatch,
    /// The shard is closed and every record has been read.
    pub shard_ended: bool,
    /// What this read had to ride out, for metrics and tests.
    pub stats: ReaderStats,
}

impl ReadBatch {
    /// How far behind the tip of the shard this read was.
    pub fn millis_behind_latest(&self) -> i64 {
        self.records.millis_behind_latest()
    }
}

/// Counts of the faults a read recovered from.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReaderStats {
    /// Reads retried after throttling or a network fault.
    pub retried: u64,
    /// Iterators replaced after they expired.
    pub expired_iterators: u64,
    /// Records with the KPL magic bytes that did not check out (bad MD5,
    /// undecodable): delivered as one plain record each, as KCL does.
    pub corrupt_aggregates: u64,
}

/// A shard as the scheduler sees it: who its parents are (children start
/// after them) and which partition keys it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    pub shard_id: String,
    /// The shard it was split from, or the first of the two it merged.
    pub parent: Option<String>,
    /// The other shard of a merge.
    pub adjacent_parent: Option<String>,
    /// Its hash-key range, as decimal 128-bit integers.
    pub hash_range: Option<(String, String)>,
}

impl ShardInfo {
    /// Its parents (one after a split, two after a merge), listed or not.
    pub fn parents(&self) -> impl Iterator<Item = &str> {
        self.parent.as_deref().into_iter().chain(self.adjacent_parent.as_deref())
    }
}

/// What a source reports that the consumer reacts to by itself.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The stream went away under a running consumer (DeleteStream): every
    /// shard stops; nothing more can be read.
    #[error("stream `{stream}` was deleted while it was being read")]
    StreamDeleted { stream: String },
}

/// True when `error` (anywhere in its chain) says the stream was deleted.
pub fn is_stream_deleted(error: &anyhow::Error) -> bool {
    error.chain().any(|c| matches!(c.downcast_ref::<SourceError>(), Some(SourceError::StreamDeleted { .. })))
}

/// A stream to read from: its shards, and a feed per shard.
#[async_trait::async_trait]
pub trait RecordSource: Send + Sync {
    /// Every shard of the stream still listed (open or within retention).
    async fn shards(&self) -> anyhow::Result<Vec<ShardInfo>>;

    /// Starts reading `shard_id` at `start`. Fails with the reason when the
    /// stream or shard does not exist or the position is invalid.
    async fn open(&self, shard_id: &str, start: StartPosition) -> anyhow::Result<Box<dyn ShardFeed>>;
}

/// One shard being read. Dropping it stops reading (and drops anything read
/// ahead), so reopening at a checkpoint never replays stale batches.
#[async_trait::async_trait]
pub trait ShardFeed: Send {
    /// The next batch, waiting for it if need be. After a batch with
    /// `shard_ended`, there is no next one.
    async fn next(&mut self) -> anyhow::Result<ReadBatch>;

    /// Cuts a wait for new records short (new logic wants its first batch now).
    fn poll_now(&self);

    /// Set while the feed backs off after throttling or a fault.
    fn retrying(&self) -> Arc<AtomicBool>;
}
