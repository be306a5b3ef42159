//! Enhanced fan-out: records pushed per shard through SubscribeToShard (an
//! HTTP event stream), to a registered stream consumer with its own read
//! throughput. A subscription lasts up to 5 minutes on AWS; the feed then
//! subscribes again after the last record it delivered, and backs off when
//! the service says the shard is still subscribed or throttles. At a shard's
//! end the event names the children, and the feed ends like a polling one.

use super::client::{describe_error, error_code, is_transient};
use super::reader::{push_unpacked, Incoming};
use crate::backoff::backoff;
use crate::batch::{PackedBatch, Position};
use crate::source::{ReadBatch, ReaderStats, RecordSource, ShardFeed, ShardInfo, SourceError, StartPosition};
use anyhow::{bail, Context};
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::{ConsumerStatus, ShardIteratorType, StartingPosition, SubscribeToShardEventStream};
use aws_sdk_kinesis::Client;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long to wait for a new consumer to become ACTIVE.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(60);

/// The fan-out record source: one subscription per open shard feed.
#[derive(Debug, Clone)]
pub struct FanOut {
    pub client: Client,
    pub stream: String,
    /// The registered consumer's ARN.
    pub consumer_arn: String,
    /// At least this often an (empty) batch is handed over when nothing is
    /// pushed, so timers and idle checks run as with polling.
    pub idle_time: Duration,
    /// A subscription silent this long is replaced (AWS pushes an event
    /// every few seconds even when idle; KCL restarts one after 35 s).
    pub silence: Duration,
}

/// How long a subscription may stay silent before it is replaced.
pub const SILENCE: Duration = Duration::from_secs(30);

impl FanOut {
    /// Finds the stream consumer `name`, registering it (and waiting until
    /// it is ACTIVE) unless `register` is false.
    pub async fn connect(
        client: Client,
        stream: &str,
        name: &str,
        register: bool,
        idle_time: Duration,
    ) -> anyhow::Result<FanOut> {
        let summary = client.describe_stream_summary().stream_name(stream).send().await.map_err(|e| match error_code(&e) {
            Some("ResourceNotFoundException") => {
                anyhow::anyhow!("stream `{stream}` does not exist; create it with `host stream create` or check --region/--endpoint-url")
            }
            _ => anyhow::anyhow!("cannot describe stream `{stream}`: {}", describe_error(&e)),
        })?;
        let stream_arn = summary.stream_description_summary().map(|s| s.stream_arn().to_string()).unwrap_or_default();
        let deadline = tokio::time::Instant::now() + ACTIVE_TIMEOUT;
        let mut registered = false;
        loop {
            let described = client.describe_stream_consumer().stream_arn(&stream_arn).consumer_name(name).send().await;
            match described {
                Ok(out) => {
                    let consumer = out.consumer_description().context("the endpoint described no consumer")?;
                    if consumer.consumer_status() == &ConsumerStatus::Active {
                        let consumer_arn = consumer.consumer_arn().to_string();
                        tracing::info!(consumer = %consumer_arn, "enhanced fan-out consumer is active");
                        return Ok(FanOut { client, stream: stream.into(), consumer_arn, idle_time, silence: SILENCE });
                    }
                }
                Err(e) if error_code(&e) == Some("ResourceNotFoundException") && !register => bail!(
                    "stream consumer `{name}` is not registered on stream `{stream}`; drop --no-register to register it, or register it yourself (aws kinesis register-stream-consumer)"
                ),
                Err(e) if error_code(&e) == Some("ResourceNotFoundException") && !registered => {
                    match client.register_stream_consumer().stream_arn(&stream_arn).consumer_name(name).send().await {
                        // Another host registered it first: fine, wait for it.
                        Err(e) if error_code(&e) == Some("ResourceInUseException") => {}
                        Err(e) => bail!("cannot register stream consumer `{name}`: {}", describe_error(&e)),
                        Ok(_) => tracing::info!(consumer = %name, "registered the enhanced fan-out consumer"),
                    }
                    registered = true;
                }
                Err(e) if error_code(&e) == Some("ResourceNotFoundException") || is_transient(&e) => {}
                Err(e) => bail!("cannot describe stream consumer `{name}`: {}", describe_error(&e)),
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("stream consumer `{name}` did not become ACTIVE within {} s", ACTIVE_TIMEOUT.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[async_trait::async_trait]
impl RecordSource for FanOut {
    async fn shards(&self) -> anyhow::Result<Vec<ShardInfo>> {
        super::reader::list_shards(&self.client, &self.stream).await
    }

    async fn open(&self, shard_id: &str, start: StartPosition) -> anyhow::Result<Box<dyn ShardFeed>> {
        let mut subscription = Subscription {
            source: self.clone(),
            shard_id: shard_id.to_string(),
            skip: None,
            floor: match &start {
                StartPosition::After(p) => Some((p.sequence_number.clone(), true)),
                StartPosition::AtSequenceNumber(seq) => Some((seq.clone(), true)),
                StartPosition::AfterSequenceNumber(seq) => Some((seq.clone(), false)),
                _ => None,
            },
            resume: start,
            retrying: Arc::default(),
        };
        // The first subscription is made here, so a bad position or a
        // missing shard is this call's error, as with polling.
        let first = subscription.subscribe().await?;
        let (tx, batches) = mpsc::channel(1);
        let retrying = subscription.retrying.clone();
        let task = tokio::spawn(async move { subscription.run(first, tx).await });
        Ok(Box::new(Pushed { batches, task, shard_id: shard_id.to_string(), retrying }))
    }
}

type Events = aws_sdk_kinesis::primitives::event_stream::EventReceiver<
    SubscribeToShardEventStream,
    aws_sdk_kinesis::types::error::SubscribeToShardEventStreamError,
>;

/// One shard's subscriptions, one after another.
struct Subscription {
    source: FanOut,
    shard_id: String,
    /// Where the next subscription starts: moves past every record delivered.
    resume: StartPosition,
    /// User records to drop at the start (a checkpoint inside an aggregate).
    skip: Option<Position>,
    /// Records before this sequence number (and at it, unless the flag
    /// says it may come) are dropped: the start asked for, then the last
    /// record handed over. A subscription that starts earlier than asked
    /// (ferrokinesis 0.7 ignores the starting sequence number) hands nothing
    /// twice and nothing from before a checkpoint.
    floor: Option<(String, bool)>,
    retrying: Arc<AtomicBool>,
}

impl Subscription {
    fn starting_position(&self) -> anyhow::Result<StartingPosition> {
        let (kind, sequence, timestamp) = match &self.resume {
            StartPosition::Latest => (ShardIteratorType::Latest, None, None),
            StartPosition::TrimHorizon => (ShardIteratorType::TrimHorizon, None, None),
            StartPosition::AtTimestamp(ms) => (ShardIteratorType::AtTimestamp, None, Some(DateTime::from_millis(*ms))),
            StartPosition::AtSequenceNumber(seq) => (ShardIteratorType::AtSequenceNumber, Some(seq.clone()), None),
            StartPosition::AfterSequenceNumber(seq) => {
                (ShardIteratorType::AfterSequenceNumber, Some(seq.clone()), None)
            }
            // At the record, dropping its user records up to the checkpoint.
            StartPosition::After(p) => (ShardIteratorType::AtSequenceNumber, Some(p.sequence_number.clone()), None),
        };
        Ok(StartingPosition::builder().r#type(kind).set_sequence_number(sequence).set_timestamp(timestamp).build()?)
    }

    /// Subscribes at `resume`, riding out ResourceInUse (the previous
    /// subscription of this consumer to the shard is still closing) and
    /// throttling with back-off.
    async fn subscribe(&mut self) -> anyhow::Result<Events> {
        if let StartPosition::After(position) = &self.resume {
            self.skip = Some(position.clone());
        }
        let mut attempt = 0u32;
        loop {
            let request = self
                .source
                .client
                .subscribe_to_shard()
                .consumer_arn(&self.source.consumer_arn)
                .shard_id(&self.shard_id)
                .starting_position(self.starting_position()?);
            match request.send().await {
                Ok(out) => return Ok(out.event_stream),
                Err(e) => {
                    let code = error_code(&e);
                    let retry =
                        is_transient(&e) || matches!(code, Some("ResourceInUseException" | "LimitExceededException"));
                    if code == Some("ResourceNotFoundException") && attempt > 0 {
                        return Err(SourceError::StreamDeleted { stream: self.source.stream.clone() }.into());
                    }
                    if !retry || attempt >= 30 {
                        bail!("cannot subscribe to {} at {:?}: {}", self.shard_id, self.resume, describe_error(&e));
                    }
                    attempt += 1;
                    self.retrying.store(true, Ordering::Relaxed);
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
    }

    /// Hands batches to the worker until the shard ends or the feed is dropped.
    async fn run(mut self, first: Events, tx: mpsc::Sender<anyhow::Result<ReadBatch>>) {
        let mut events = Forwarded::start(first);
        let mut heard = tokio::time::Instant::now();
        loop {
            let mut stats = ReaderStats::default();
            let next = tokio::time::timeout(self.source.idle_time, events.recv()).await;
            if next.is_ok() {
                heard = tokio::time::Instant::now();
            }
            let read = match next {
                Err(_) if heard.elapsed() >= self.source.silence => {
                    tracing::debug!(shard = %self.shard_id, "subscription silent for {:?}, subscribing again", heard.elapsed());
                    heard = tokio::time::Instant::now();
                    match self.subscribe().await {
                        Ok(again) => {
                            events = Forwarded::start(again);
                            continue;
                        }
                        Err(e) => Err(e),
                    }
                }
                // Nothing pushed for a while: an empty batch, as a caught-up poll gives.
                Err(_) => Ok(ReadBatch::default()),
                Ok(Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(event)))) => {
                    self.retrying.store(false, Ordering::Relaxed);
                    self.batch(&event, &mut stats)
                }
                Ok(Ok(Some(_))) => continue,
                // The subscription ended (5 minutes on AWS) or failed: again, after the last record.
                Ok(Ok(None)) | Ok(Err(_)) => {
                    if let Ok(Err(e)) = &next {
                        tracing::debug!(shard = %self.shard_id, "subscription failed, subscribing again: {e}");
                        stats.retried += 1;
                    }
                    match self.subscribe().await {
                        Ok(again) => {
                            events = Forwarded::start(again);
                            continue;
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            let last = read.as_ref().map_or(true, |r| r.shard_ended);
            if tx.send(read).await.is_err() || last {
                return;
            }
        }
    }

    /// One pushed event as a batch; moves `resume` past its records.
    fn batch(
        &mut self,
        event: &aws_sdk_kinesis::types::SubscribeToShardEvent,
        stats: &mut ReaderStats,
    ) -> anyhow::Result<ReadBatch> {
        let mut records = PackedBatch::with_capacity(event.records().len(), 0);
        for r in event.records() {
            let below = |(floor, may_equal): &(String, bool)| {
                let (seq, floor) = (r.sequence_number(), floor.as_str());
                sequence_after(floor, seq) || (!may_equal && seq == floor)
            };
            if self.floor.as_ref().is_some_and(below) {
                continue;
            }
            let record = Incoming {
                partition_key: r.partition_key().unwrap_or_default(),
                data: r.data().as_ref(),
                sequence_number: r.sequence_number(),
                arrival_millis: r.approximate_arrival_timestamp().and_then(|t| t.to_millis().ok()).unwrap_or(0),
            };
            push_unpacked(&mut records, &record, &mut self.skip, stats)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", self.shard_id))?;
        }
        if let Some(last) = event.records().last() {
            // At the last record, all of it dropped: AFTER_SEQUENCE_NUMBER
            // would do on AWS, but emulators differ on it (ferrokinesis 0.7
            // starts such a subscription at the shard's first record).
            let sequence_number = last.sequence_number().to_string();
            if self.floor.as_ref().is_none_or(|(floor, _)| sequence_after(&sequence_number, floor)) {
                self.floor = Some((sequence_number.clone(), false));
                self.resume = StartPosition::After(Position { sequence_number, sub_sequence_number: u64::MAX });
            }
        }
        records.set_millis_behind_latest(event.millis_behind_latest());
        // The last event of a closed shard names its children; on AWS it
        // has no continuation, on emulators it comes once nothing is left.
        let shard_ended = !event.child_shards().is_empty()
            && (event.continuation_sequence_number().is_empty() || event.records().is_empty());
        Ok(ReadBatch { records, shard_ended, stats: *stats })
    }
}

/// A subscription's next event, or why it failed (for a debug line).
type Event = Result<Option<SubscribeToShardEventStream>, String>;

/// A subscription's events, read on a task of their own: waiting for one
/// with a timeout must not cancel a read half-way through a message.
struct Forwarded {
    events: mpsc::Receiver<Event>,
    task: tokio::task::JoinHandle<()>,
}

impl Forwarded {
    fn start(mut receiver: Events) -> Forwarded {
        let (tx, events) = mpsc::channel(1);
        let task = tokio::spawn(async move {
            loop {
                let event = receiver.recv().await.map_err(|e| format!("{e}"));
                let last = !matches!(event, Ok(Some(_)));
                if tx.send(event).await.is_err() || last {
                    return;
                }
            }
        });
        Forwarded { events, task }
    }

    /// The next event; `Ok(None)` once the subscription ended.
    async fn recv(&mut self) -> Event {
        self.events.recv().await.unwrap_or(Ok(None))
    }
}

impl Drop for Forwarded {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether sequence number `a` comes after `b` (decimal strings of up to
/// 128 digits: the longer is larger, equal lengths compare as text).
fn sequence_after(a: &str, b: &str) -> bool {
    (a.len(), a) > (b.len(), b)
}

/// The worker's end of a subscription.
struct Pushed {
    batches: mpsc::Receiver<anyhow::Result<ReadBatch>>,
    task: tokio::task::JoinHandle<()>,
    shard_id: String,
    retrying: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl ShardFeed for Pushed {
    async fn next(&mut self) -> anyhow::Result<ReadBatch> {
        match self.batches.recv().await {
            Some(read) => read,
            None => bail!("the subscription of {} stopped after the shard's end or an error", self.shard_id),
        }
    }

    /// Records are pushed as they arrive: there is no wait to cut short.
    fn poll_now(&self) {}

    fn retrying(&self) -> Arc<AtomicBool> {
        self.retrying.clone()
    }
}

impl Drop for Pushed {
    fn drop(&mut self) {
        self.task.abort();
    }
}
