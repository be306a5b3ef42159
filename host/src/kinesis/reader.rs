//! Reading one shard: GetRecords in a loop within Kinesis' limits, with
//! back-off and jitter when throttled, a fresh iterator (after the last
//! record read) when one expires, and retries on network faults.

use super::client::{describe_error, error_code, is_transient};
use super::packed_read::{PackResponse, Packing};
use crate::backoff::backoff;
use crate::batch::PackedBatch;
use crate::source::{Position, ReadBatch, ReaderStats, RecordSource, ShardFeed, ShardInfo, SourceError, StartPosition};
use anyhow::bail;
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::ShardIteratorType;
use aws_sdk_kinesis::Client;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Most records GetRecords returns per call.
pub const MAX_BATCH: i32 = 10_000;

/// Reads one shard from a start position onwards.
pub struct ShardReader {
    client: Client,
    stream: String,
    shard_id: String,
    /// Next iterator; `None` once the shard has ended.
    iterator: Option<String>,
    /// Where a fresh iterator must start (moves past every record read).
    resume: StartPosition,
    /// Records per GetRecords call.
    limit: i32,
    /// User records to drop at the start (a checkpoint inside an
    /// aggregated record), until a record past it is read.
    skip: Option<Position>,
    /// Set while a read is backing off after throttling or a fault: the
    /// shard is then neither caught up nor idle, whatever it last reported.
    pub retrying: Arc<AtomicBool>,
}

impl ShardReader {
    /// Gets the first iterator. Fails with the reason if the stream or
    /// shard does not exist or the position is invalid.
    pub async fn open(
        client: Client,
        stream: &str,
        shard_id: &str,
        start: StartPosition,
        limit: i32,
    ) -> anyhow::Result<Self> {
        let mut reader = ShardReader {
            client,
            stream: stream.to_string(),
            shard_id: shard_id.to_string(),
            iterator: None,
            skip: match &start {
                StartPosition::After(position) => Some(position.clone()),
                _ => None,
            },
            resume: start,
            limit: limit.clamp(1, MAX_BATCH),
            retrying: Default::default(),
        };
        reader.iterator = Some(reader.fresh_iterator().await?);
        Ok(reader)
    }

    /// The shard being read.
    pub fn shard_id(&self) -> &str {
        &self.shard_id
    }

    async fn fresh_iterator(&self) -> anyhow::Result<String> {
        let mut attempt = 0;
        loop {
            let request = self.client.get_shard_iterator().stream_name(&self.stream).shard_id(&self.shard_id);
            let request = match &self.resume {
                StartPosition::Latest => request.shard_iterator_type(ShardIteratorType::Latest),
                StartPosition::TrimHorizon => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
                StartPosition::AtTimestamp(ms) => {
                    request.shard_iterator_type(ShardIteratorType::AtTimestamp).timestamp(DateTime::from_millis(*ms))
                }
                StartPosition::AtSequenceNumber(seq) => {
                    request.shard_iterator_type(ShardIteratorType::AtSequenceNumber).starting_sequence_number(seq)
                }
                StartPosition::AfterSequenceNumber(seq) => {
                    request.shard_iterator_type(ShardIteratorType::AfterSequenceNumber).starting_sequence_number(seq)
                }
                // At the record, dropping its user records up to the checkpoint.
                StartPosition::After(position) => request
                    .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                    .starting_sequence_number(&position.sequence_number),
            };
            match request.send().await {
                Ok(out) => match out.shard_iterator() {
                    Some(it) => return Ok(it.to_string()),
                    None => bail!("the endpoint returned no shard iterator for {}", self.shard_id),
                },
                Err(e) if is_transient(&e) && attempt < 8 => {
                    attempt += 1;
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(e) => match error_code(&e) {
                    Some("ResourceNotFoundException") => bail!(
                        "stream `{}` or shard {} does not exist; create the stream with `host stream create` or check --region/--endpoint-url",
                        self.stream,
                        self.shard_id
                    ),
                    _ => bail!("cannot start reading {} at {:?}: {}", self.shard_id, self.resume, describe_error(&e)),
                },
            }
        }
    }

    /// Reads the next batch. Throttling and network faults are retried with
    /// back-off (a warning every few attempts); an expired iterator is
    /// replaced by one after the last record read.
    pub async fn next_batch(&mut self) -> anyhow::Result<ReadBatch> {
        let mut attempt = 0u32;
        let mut stats = ReaderStats::default();
        loop {
            let Some(iterator) = self.iterator.clone() else {
                return Ok(ReadBatch { shard_ended: true, stats, ..ReadBatch::default() });
            };
            // The reader owns GetRecords retries (no SDK retries): every
            // throttle is counted, backed off with jitter, and flagged, so a
            // shard backing off is never taken for an idle one.
            let no_sdk_retries = aws_sdk_kinesis::config::Builder::default()
                .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled());
            // A successful response is parsed straight into the batch.
            let packing = Arc::new(Mutex::new(Packing { skip: self.skip.take(), ..Packing::default() }));
            let sent = self
                .client
                .get_records()
                .shard_iterator(iterator)
                .limit(self.limit)
                .customize()
                .config_override(no_sdk_retries)
                .interceptor(PackResponse(packing.clone()))
                .send()
                .await;
            let packed = match packing.lock() {
                Ok(mut p) => {
                    self.skip = p.skip.take();
                    stats.corrupt_aggregates += p.stats.corrupt_aggregates;
                    p.packed.take()
                }
                Err(_) => bail!("the GetRecords parser of {} panicked", self.shard_id),
            };
            match sent {
                Ok(out) => {
                    let (mut records, last) = match packed {
                        Some(packed) => packed,
                        None => pack(&out.records, &mut self.skip, &mut stats)
                            .map(|b| (b, out.records.last().map(|r| r.sequence_number.clone()))),
                    }
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", self.shard_id))?;
                    if let Some(last) = last {
                        self.resume = StartPosition::AfterSequenceNumber(last);
                    }
                    records.set_millis_behind_latest(out.millis_behind_latest.unwrap_or(0));
                    self.iterator = out.next_shard_iterator;
                    self.retrying.store(false, Ordering::Relaxed);
                    return Ok(ReadBatch { records, shard_ended: self.iterator.is_none(), stats });
                }
                Err(e) if error_code(&e) == Some("ExpiredIteratorException") => {
                    tracing::info!(shard = %self.shard_id, "shard iterator expired; resuming after the last record read");
                    stats.expired_iterators += 1;
                    self.iterator = Some(self.fresh_iterator().await?);
                }
                Err(e) if is_transient(&e) => {
                    attempt += 1;
                    stats.retried += 1;
                    self.retrying.store(true, Ordering::Relaxed);
                    if attempt.is_multiple_of(5) {
                        tracing::warn!(shard = %self.shard_id, attempt, "still retrying GetRecords: {}", describe_error(&e));
                    }
                    tokio::time::sleep(backoff(attempt)).await;
                }
                // The shard was listed and read before: it went away with its stream.
                Err(e) if error_code(&e) == Some("ResourceNotFoundException") => {
                    return Err(SourceError::StreamDeleted { stream: self.stream.clone() }.into())
                }
                Err(e) => bail!("cannot read {}: {}", self.shard_id, describe_error(&e)),
            }
        }
    }
}

/// Packs a GetRecords response straight into the WIT batch layout: the
/// SDK's buffers are copied once, into the buffer the plugin will read.
pub(super) fn pack(
    records: &[aws_sdk_kinesis::types::Record],
    skip: &mut Option<Position>,
    stats: &mut ReaderStats,
) -> Result<PackedBatch, crate::batch::BatchTooLarge> {
    let bytes = records
        .iter()
        .map(|r| r.partition_key().map_or(0, str::len) + r.data().as_ref().len() + r.sequence_number().len())
        .sum();
    let mut batch = PackedBatch::with_capacity(records.len(), bytes);
    for r in records {
        let arrival = r.approximate_arrival_timestamp().and_then(|t| t.to_millis().ok()).unwrap_or(0);
        let record = Incoming {
            partition_key: r.partition_key().unwrap_or_default(),
            data: r.data().as_ref(),
            sequence_number: r.sequence_number(),
            arrival_millis: arrival,
        };
        push_unpacked(&mut batch, &record, skip, stats)?;
    }
    Ok(batch)
}

/// One Kinesis record as read, before de-aggregation.
pub(crate) struct Incoming<'a> {
    pub partition_key: &'a str,
    pub data: &'a [u8],
    pub sequence_number: &'a str,
    pub arrival_millis: i64,
}

/// Appends a record's user records (one for a plain record, each of a KPL
/// aggregate with its own key and sub-sequence number), minus those at or
/// before `skip`. A record with the magic bytes that does not check out is
/// appended whole and counted.
pub(crate) fn push_unpacked(
    batch: &mut PackedBatch,
    record: &Incoming<'_>,
    skip: &mut Option<Position>,
    stats: &mut ReaderStats,
) -> Result<(), crate::batch::BatchTooLarge> {
    let skipped = |sub: u64, skip: &Option<Position>| {
        skip.as_ref().is_some_and(|p| p.sequence_number == record.sequence_number && sub <= p.sub_sequence_number)
    };
    if skip.as_ref().is_some_and(|p| p.sequence_number != record.sequence_number) {
        // Past the checkpointed record: nothing more to drop.
        *skip = None;
    }
    let (seq, arrival) = (record.sequence_number.as_bytes(), record.arrival_millis);
    match super::aggregate::unpack(record.data) {
        super::aggregate::Unpacked::Aggregated(aggregate) => {
            for (sub, user) in aggregate.records.iter().enumerate() {
                if skipped(sub as u64, skip) {
                    continue;
                }
                // Indices were checked by `unpack`.
                let key = aggregate.partition_key_table[user.partition_key_index as usize].as_bytes();
                batch.push(key, &user.data, seq, sub as u64, arrival)?;
            }
        }
        unpacked => {
            if let super::aggregate::Unpacked::Corrupt(why) = unpacked {
                stats.corrupt_aggregates += 1;
                tracing::warn!(sequence_number = %record.sequence_number, "a record with the KPL magic bytes is not a valid aggregate ({why}): delivered as one plain record");
            }
            if !skipped(0, skip) {
                batch.push(record.partition_key.as_bytes(), record.data, seq, 0, arrival)?;
            }
        }
    }
    Ok(())
}

/// A shard reader running ahead of its worker on a task of its own: the
/// next GetRecords is in flight while the plugin works on the previous
/// batch, so reading and processing overlap (as KCL's prefetching does).
/// At most one batch waits in the queue. Dropping it stops the reader.
pub struct Prefetch {
    batches: mpsc::Receiver<anyhow::Result<ReadBatch>>,
    task: tokio::task::JoinHandle<()>,
    shard_id: String,
    /// Cuts the idle wait short (new logic wants its first batch now).
    wake: Arc<tokio::sync::Notify>,
    /// The reader's back-off flag.
    retrying: Arc<AtomicBool>,
}

impl ShardReader {
    /// Moves the reader onto its own task. After a batch that leaves the
    /// shard caught up (nothing behind, less than a full batch) it waits
    /// `idle_time` before the next read; Kinesis allows 5 reads/s per shard.
    pub fn prefetch(mut self, idle_time: Duration) -> Prefetch {
        let (tx, batches) = mpsc::channel(1);
        let (shard_id, limit) = (self.shard_id.clone(), self.limit as usize);
        let wake = Arc::new(tokio::sync::Notify::new());
        let woken = wake.clone();
        let retrying = self.retrying.clone();
        let task = tokio::spawn(async move {
            loop {
                let read = self.next_batch().await;
                let (last, caught_up) = match &read {
                    Ok(batch) => {
                        // A full batch means more is waiting, whatever
                        // MillisBehindLatest says (emulators report 0 with a backlog).
                        (batch.shard_ended, batch.millis_behind_latest() == 0 && batch.records.len() < limit)
                    }
                    Err(_) => (true, false),
                };
                if tx.send(read).await.is_err() || last {
                    return;
                }
                if caught_up {
                    tokio::select! {
                        _ = tokio::time::sleep(idle_time) => {}
                        _ = woken.notified() => {}
                    }
                }
            }
        });
        Prefetch { batches, task, shard_id, wake, retrying }
    }
}

#[async_trait::async_trait]
impl ShardFeed for Prefetch {
    async fn next(&mut self) -> anyhow::Result<ReadBatch> {
        match self.batches.recv().await {
            Some(read) => read,
            None => bail!("the reader of {} stopped after the shard's end or an error", self.shard_id),
        }
    }

    fn poll_now(&self) {
        self.wake.notify_one();
    }

    fn retrying(&self) -> Arc<AtomicBool> {
        self.retrying.clone()
    }
}

/// The stream's shards as the scheduler sees them (ListShards, paginated).
pub(crate) async fn list_shards(client: &Client, stream: &str) -> anyhow::Result<Vec<ShardInfo>> {
    let shards = super::admin::shards(client, stream).await?;
    Ok(shards
        .iter()
        .map(|s| ShardInfo {
            shard_id: s.shard_id().to_string(),
            parent: s.parent_shard_id().map(str::to_string),
            adjacent_parent: s.adjacent_parent_shard_id().map(str::to_string),
            hash_range: s
                .hash_key_range()
                .map(|r| (r.starting_hash_key().to_string(), r.ending_hash_key().to_string())),
        })
        .collect())
}

/// Polling retrieval: GetRecords per shard, each reader running one batch
/// ahead of its worker (`ShardReader::prefetch`).
#[derive(Debug, Clone)]
pub struct Polling {
    pub client: Client,
    pub stream: String,
    /// Records per GetRecords call (1–10,000).
    pub batch_size: i32,
    /// Wait between polls once caught up; no wait while behind.
    pub idle_time: Duration,
}

#[async_trait::async_trait]
impl RecordSource for Polling {
    async fn shards(&self) -> anyhow::Result<Vec<ShardInfo>> {
        list_shards(&self.client, &self.stream).await
    }

    async fn open(&self, shard_id: &str, start: StartPosition) -> anyhow::Result<Box<dyn ShardFeed>> {
        let reader = ShardReader::open(self.client.clone(), &self.stream, shard_id, start, self.batch_size).await?;
        Ok(Box::new(reader.prefetch(self.idle_time)))
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.task.abort();
    }
}
