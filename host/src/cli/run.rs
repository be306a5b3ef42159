//! `host run`: consume a stream with a plugin, as one host or as one worker
//! of a group sharing the stream through DynamoDB leases.

use super::leases::LeaseArgs;
use super::shared::{seconds, stop_on_signals, AwsArgs, HotSwapArgs, PluginArgs};
use crate::checkpoint::{CheckpointStore, SqliteStore};
use crate::consumer::{Consumer, ConsumerConfig};
use crate::dead_letter::DeadLetterSink;
use crate::policy::FailurePolicy;
use crate::progress::Progress;
use crate::shutdown::Shutdown;
use crate::sink::{Destination, OutputFormat, Sink};
use crate::source::{is_stream_deleted, StartPosition};
use anyhow::Context;
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Start positions by their AWS names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StartAt {
    Latest,
    TrimHorizon,
    AtTimestamp,
    AtSequenceNumber,
    AfterSequenceNumber,
}

/// `host run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub plugin: PluginArgs,

    #[command(flatten)]
    pub aws: AwsArgs,

    /// The stream to consume.
    #[arg(long)]
    pub stream: String,

    /// Application name: checkpoints are kept per application, stream and shard.
    #[arg(long, default_value = "host")]
    pub application: String,

    /// Where shards without a checkpoint start.
    #[arg(long, value_enum, default_value_t = StartAt::Latest)]
    pub start_position: StartAt,

    /// For AT_TIMESTAMP: ISO-8601 time or epoch milliseconds.
    #[arg(long, value_name = "TIME")]
    pub start_timestamp: Option<String>,

    /// For AT/AFTER_SEQUENCE_NUMBER.
    #[arg(long, value_name = "SEQUENCE")]
    pub start_sequence_number: Option<String>,

    /// Records per GetRecords call (1–10000).
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub batch_size: i32,

    /// Wait between polls of a caught-up shard, in milliseconds (no wait while behind).
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub idle_time_ms: u64,

    /// The checkpoint store (SQLite).
    #[arg(long, value_name = "FILE", default_value = "checkpoints.db")]
    pub checkpoint_db: PathBuf,

    /// Commit a checkpoint every N batches.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub checkpoint_every: u32,

    /// Where plugin output goes: `stdout`, `file:PATH`, or `kinesis:STREAM`.
    #[arg(long, value_name = "SINK", default_value = "stdout")]
    pub sink: String,

    /// Output format for stdout and file sinks.
    #[arg(long, value_name = "FORMAT", default_value = "plain", value_parser = super::output_format())]
    pub output: OutputFormat,

    /// Period of the plugin's timer, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub timer_interval_ms: u64,

    /// Stop (cleanly, checkpointed) after this many records.
    #[arg(long, value_name = "N")]
    pub max_records: Option<u64>,

    /// Stop once every shard is caught up and has read no record for this
    /// many seconds.
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub idle_exit: Option<f64>,

    /// Seconds between status lines on stderr (0: none).
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    pub status_interval: f64,

    /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9464 (off by default).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Seconds between re-reads of the shard list (resharding).
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub shard_sync_interval: f64,

    /// Extra attempts at a batch after a retryable plugin error or a trap
    /// (back-off with jitter, instance rebuilt from the checkpoint first).
    #[arg(long, value_name = "N", default_value_t = 3, help_heading = "Failure policy")]
    pub retries: u32,

    /// Where records the plugin cannot process go (file:PATH, JSON lines;
    /// or kinesis:STREAM), so the shard moves on. Without it, such a record
    /// stops its shard right before it, and the other shards go on.
    #[arg(long, value_name = "SINK", help_heading = "Failure policy")]
    pub dead_letter: Option<String>,

    /// The logic crashing on this many records in a row is a bug, not bad
    /// data: the shard stops there instead of dead-lettering the stream (0:
    /// never). Records the logic refuses with a `ProcessError` never count.
    #[arg(long, value_name = "N", default_value_t = crate::policy::CRASH_LIMIT, help_heading = "Failure policy")]
    pub crash_limit: u32,

    /// Send records older than this many seconds (by arrival time) to the
    /// dead-letter sink unprocessed.
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true, help_heading = "Failure policy")]
    pub max_record_age: Option<f64>,

    #[command(flatten)]
    pub hot_swap: HotSwapArgs,

    #[command(flatten)]
    pub retrieval: super::retrieval::RetrievalArgs,

    #[command(flatten)]
    pub leases: LeaseArgs,
}

impl RunArgs {
    /// Where shards without a checkpoint start.
    fn start_position(&self) -> anyhow::Result<StartPosition> {
        let sequence = || {
            self.start_sequence_number.clone().ok_or_else(|| {
                anyhow::anyhow!("--start-position {:?} needs --start-sequence-number", self.start_position)
            })
        };
        Ok(match self.start_position {
            StartAt::Latest => StartPosition::Latest,
            StartAt::TrimHorizon => StartPosition::TrimHorizon,
            StartAt::AtSequenceNumber => StartPosition::AtSequenceNumber(sequence()?),
            StartAt::AfterSequenceNumber => StartPosition::AfterSequenceNumber(sequence()?),
            StartAt::AtTimestamp => {
                let text = self
                    .start_timestamp
                    .as_deref()
                    .context("--start-position AT_TIMESTAMP needs --start-timestamp (ISO-8601 or epoch ms)")?;
                let millis = text
                    .parse::<i64>()
                    .ok()
                    .or_else(|| kinesis_processor_sdk::helpers::time::parse_timestamp_millis(text.as_bytes()))
                    .with_context(|| {
                        format!("--start-timestamp {text:?} is neither ISO-8601 nor epoch milliseconds")
                    })?;
                StartPosition::AtTimestamp(millis)
            }
        })
    }

    pub async fn execute(self) -> anyhow::Result<ExitCode> {
        let args = self;
        let config = args.plugin.config_json()?;
        let limits = args.plugin.limits()?;
        let start = args.start_position()?;
        let sink = Destination::sink(&args.sink)?;
        let dead_letter = args.dead_letter.as_deref().map(Destination::dead_letter).transpose()?;
        let max_record_age = args.max_record_age.map(|s| seconds(s, "--max-record-age")).transpose()?;
        if max_record_age.is_some() && dead_letter.is_none() {
            anyhow::bail!(
                "--max-record-age needs --dead-letter file:PATH or kinesis:STREAM: skipped records must go somewhere"
            );
        }
        let status_interval = seconds(args.status_interval, "--status-interval")?;
        let idle_exit = args.idle_exit.map(|s| seconds(s, "--idle-exit")).transpose()?;
        let shard_sync_interval =
            seconds(args.shard_sync_interval, "--shard-sync-interval")?.max(Duration::from_millis(100));
        let client = crate::kinesis::connect(&args.aws.options()).await?;
        let leases = args.leases.open(&args.aws, &args.stream).await?;
        let store: Arc<dyn CheckpointStore> = match &leases {
            Some(leases) => leases.clone(),
            None => Arc::new(SqliteStore::open(&args.checkpoint_db)?),
        };
        let sink = Sink::open(&sink, args.output, &client)?;
        let dead_letter = dead_letter.map(|d| DeadLetterSink::open(&d, Some(&client))).transpose()?.map(Arc::new);
        let shutdown = Shutdown::new();
        // A group runs the logic its table names; one host runs --plugin.
        let (engine, plugin, config, group) = match &leases {
            Some(leases) => {
                let engine = crate::plugin::PluginEngine::new()?;
                let loader = crate::group::Loader { engine: engine.clone(), cache: args.plugin.cache() };
                let table = leases.table();
                let crate::group::Starting { plugin, base, deployment } = crate::group::starting_logic(
                    table.as_ref(),
                    &loader,
                    args.plugin.plugin.as_deref(),
                    &config,
                    crate::lease::logic::SwapRules {
                        probation_batches: args.hot_swap.swap_probation,
                        fresh_on_rejected_state: args.hot_swap.on_rejected_state == crate::swap::OnRejectedState::Fresh,
                    },
                    leases.worker_id(),
                )
                .await?;
                let config = deployment.config.clone();
                let group = crate::group::GroupRun {
                    table,
                    deployment,
                    me: leases.worker_id().to_string(),
                    // One small read a second: a deployment reaches every
                    // worker within a second, whatever the lease duration.
                    every: leases.scan_every().min(Duration::from_secs(1)),
                    loader,
                    stop: shutdown.clone(),
                    base,
                };
                (engine, plugin, config, Some(group))
            }
            None => {
                let (engine, plugin) = tokio::task::block_in_place(|| args.plugin.load())?;
                (engine, plugin, config, None)
            }
        };
        let consumer = ConsumerConfig {
            application: args.application.clone(),
            stream: args.stream.clone(),
            start,
            batch_size: args.batch_size,
            idle_time: Duration::from_millis(args.idle_time_ms),
            timer_interval: Duration::from_millis(args.timer_interval_ms.max(1)),
            checkpoint_every: args.checkpoint_every.max(1),
            max_records: args.max_records,
            idle_exit,
            shard_sync_interval,
            status_interval: if status_interval.is_zero() {
                Duration::from_secs(86_400 * 365)
            } else {
                status_interval
            },
            plugin_config: config,
            limits,
            failure: FailurePolicy {
                retries: args.retries,
                dead_letter,
                max_record_age,
                crash_limit: args.crash_limit,
            },
        };
        let progress = Arc::new(Progress::default());
        if let Some(addr) = args.metrics_addr {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot serve metrics on --metrics-addr {addr}"))?;
            let info = crate::metrics::MetricsInfo { stream: args.stream.clone() };
            tokio::spawn(crate::metrics::serve(listener, progress.clone(), info));
        }
        let settings = consumer.instance_settings("");
        let (hub, _triggers) =
            args.hot_swap.start(&args.plugin, engine, plugin, settings, progress.clone(), group).await?;
        stop_on_signals(shutdown.clone());
        let location = store.location();
        let source = args.retrieval.source(&client, &consumer).await?;
        let mut consumer = Consumer::with_source(source, hub, store, Arc::new(sink), consumer);
        if let Some(leases) = leases {
            consumer = consumer.ownership(leases);
        }
        let report =
            consumer.progress(progress.clone()).on_status(|line| eprintln!("status: {line}")).run(shutdown).await;
        let report = match report {
            Ok(report) => report,
            Err(e) if is_stream_deleted(&e) => {
                // Every shard stopped cleanly at what it had processed.
                let records = progress.records.load(std::sync::atomic::Ordering::Relaxed);
                eprintln!("error: {e}; stopped after {records} records, all checkpointed in {location}");
                return Ok(ExitCode::from(2));
            }
            Err(e) => return Err(e),
        };
        eprintln!("stopped after {} records; checkpoints in {location}", report.records);
        if !report.shards_stopped.is_empty() {
            for (shard, reason) in &report.shards_stopped {
                eprintln!("error: shard {shard} stopped: {reason}");
            }
            return Ok(ExitCode::from(1));
        }
        Ok(ExitCode::SUCCESS)
    }
}
