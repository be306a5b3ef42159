//! Every command-line argument of `host`, in one place.

use crate::plugin::{CompiledCache, PluginLimits};
use crate::sink::OutputFormat;
use crate::swap::control::ControlAddr;
use crate::swap::OnRejectedState;
use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// Runs sandboxed WebAssembly stream processors over Amazon Kinesis.
#[derive(Debug, Parser)]
#[command(name = "host", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log filter for the host's own diagnostics (stderr), e.g. `info`,
    /// `host=debug,plugin=info`.
    #[arg(long, global = true, env = "HOST_LOG", default_value = "warn")]
    pub log: String,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume a Kinesis stream: every shard through its own plugin
    /// instance, with durable checkpoints.
    Run(Box<RunArgs>),
    /// Create, list, describe or delete streams.
    #[command(subcommand)]
    Stream(StreamCommand),
    /// Put records: seed 000's IP sources, seed 001's JSON documents, or a
    /// steady rate.
    Produce(ProduceArgs),
    /// Measure `host run` end to end on the in-process emulator, beside a
    /// bare GetRecords loop and seed 000's boto3 worker in the same run.
    BenchStream(BenchStreamArgs),
    /// Measure hot swaps on the in-process emulator: file write to the new
    /// logic's first batch, and the stall per shard, beside a stop + restart.
    BenchSwap(BenchSwapArgs),
    /// Everything at once, no AWS account: the embedded endpoint, a stream,
    /// seed 000's producers and a consumer with the plugin, printing live.
    Dev(Box<DevArgs>),
    /// Hot-swap the logic of a running `host run --control-addr`, roll the
    /// last swap back, or show which logic runs.
    Swap(SwapArgs),
    /// Serve a Kinesis-compatible endpoint in-process (no AWS account, no
    /// Docker): for the AWS CLI, boto3, and `host run --endpoint-url`.
    Local(LocalArgs),
    /// Replay records from a JSON-lines file through a plugin offline and
    /// print what it emits: how plugin authors test before deploying.
    Test(Box<TestArgs>),
    /// Measure records/s through a plugin per batch size, beside the same
    /// counting compiled natively, and print the table.
    Bench(Box<BenchArgs>),
}

/// Which plugin, with which config and limits.
#[derive(Debug, Args)]
pub struct PluginArgs {
    /// The processor component (`.wasm` built for wasm32-wasip2).
    #[arg(long, value_name = "FILE")]
    pub plugin: PathBuf,

    /// The plugin's JSON config, e.g. '{"window_seconds": 60}'.
    #[arg(long, value_name = "JSON", conflicts_with = "config_file")]
    pub config: Option<String>,

    /// Read the plugin's JSON config from a file.
    #[arg(long, value_name = "FILE")]
    pub config_file: Option<PathBuf>,

    /// Most linear memory one plugin instance may use, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = (PluginLimits::default().memory_bytes >> 20) as u64)]
    pub memory_limit_mb: u64,

    /// Longest one plugin call may run, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = PluginLimits::default().call_timeout.as_millis() as u64)]
    pub call_timeout_ms: u64,

    /// Most output one plugin call may emit, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = (PluginLimits::default().max_output_bytes >> 20) as u64)]
    pub max_output_mb: u64,

    /// Where compiled plugins are cached (default: the user cache directory).
    #[arg(long, value_name = "DIR", env = "HOST_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Compile the plugin every time instead of using the cache.
    #[arg(long)]
    pub no_cache: bool,
}

impl PluginArgs {
    /// The config string, checked to be JSON so a typo is caught here
    /// rather than reported by the plugin.
    pub fn config_json(&self) -> anyhow::Result<String> {
        let (text, origin) = match (&self.config, &self.config_file) {
            (Some(text), _) => (text.clone(), "--config".to_string()),
            (None, Some(path)) => (
                std::fs::read_to_string(path).with_context(|| format!("cannot read --config-file {}", path.display()))?,
                format!("--config-file {}", path.display()),
            ),
            (None, None) => return Ok("{}".into()),
        };
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&text) {
            bail!("{origin} is not valid JSON ({e}); pass an object such as '{{\"window_seconds\": 60}}'");
        }
        Ok(text)
    }

    /// The per-instance limits.
    pub fn limits(&self) -> anyhow::Result<PluginLimits> {
        if self.memory_limit_mb == 0 || self.call_timeout_ms == 0 || self.max_output_mb == 0 {
            bail!("--memory-limit-mb, --call-timeout-ms and --max-output-mb must be at least 1");
        }
        Ok(PluginLimits {
            memory_bytes: usize::try_from(self.memory_limit_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX),
            call_timeout: Duration::from_millis(self.call_timeout_ms),
            max_output_bytes: usize::try_from(self.max_output_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX),
            ..PluginLimits::default()
        })
    }

    /// The compiled-component cache, unless disabled.
    pub fn cache(&self) -> Option<CompiledCache> {
        if self.no_cache {
            return None;
        }
        self.cache_dir.clone().or_else(CompiledCache::default_dir).map(CompiledCache::new)
    }
}

/// How the replayed shard ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EndReason {
    /// As if the shard was closed (split/merge): plugins flush everything.
    ShardEnded,
    /// As if the host stopped: state would carry over via snapshot.
    Requested,
}

/// `host test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    #[command(flatten)]
    pub plugin: PluginArgs,

    /// Records to replay, one JSON object per line: `partitionKey`, `data`
    /// (text or JSON) or `dataBase64`, and optional
    /// `approximateArrivalTimestamp` (ISO-8601 or epoch ms),
    /// `sequenceNumber`, `subSequenceNumber`. `-` reads stdin.
    #[arg(long, value_name = "FILE", default_value = "-")]
    pub input: PathBuf,

    /// Records per `process` call.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub batch_size: usize,

    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Plain)]
    pub output: OutputFormat,

    /// Virtual time between timer calls, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub timer_interval_ms: u64,

    /// Virtual seconds the clock runs on after the last record, firing timers,
    /// so time-driven output (idle windows) shows.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub drain_seconds: u64,

    /// How the shard ends after the input.
    #[arg(long, value_enum, default_value_t = EndReason::ShardEnded)]
    pub end: EndReason,

    /// Every N batches, snapshot the plugin, drop it and restore a fresh
    /// instance: output must be the same as without.
    #[arg(long, value_name = "N")]
    pub restart_every: Option<usize>,
}

/// `host bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub plugin: PluginArgs,

    /// Records per measurement.
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub records: usize,

    /// Batch sizes to measure, comma-separated.
    #[arg(long, value_name = "N,N,…", value_delimiter = ',', default_values_t = [1, 10, 100, 500, 10_000])]
    pub batch_sizes: Vec<usize>,

    /// Bytes of data per record.
    #[arg(long, value_name = "BYTES", default_value_t = 100)]
    pub record_size: usize,

    /// Exit non-zero when a target is missed (wasm within 2x of native and
    /// at least 2M records/s, at batch sizes of 100 and more).
    #[arg(long)]
    pub check: bool,
}

/// Which AWS account, region and endpoint (the usual AWS conventions).
#[derive(Debug, Clone, Args)]
pub struct AwsArgs {
    /// AWS region, e.g. eu-west-1.
    #[arg(long, env = "AWS_REGION")]
    pub region: Option<String>,

    /// Named profile from the AWS config files.
    #[arg(long, env = "AWS_PROFILE")]
    pub profile: Option<String>,

    /// A Kinesis-compatible endpoint, e.g. http://localhost:4567 (any
    /// credentials are accepted there).
    #[arg(long, value_name = "URL", env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
}

impl AwsArgs {
    /// The connection options.
    pub fn options(&self) -> crate::kinesis::AwsOptions {
        crate::kinesis::AwsOptions {
            region: self.region.clone(),
            profile: self.profile.clone(),
            endpoint_url: self.endpoint_url.clone(),
        }
    }
}

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
    #[arg(long, value_enum, default_value_t = OutputFormat::Plain)]
    pub output: OutputFormat,

    /// Period of the plugin's timer, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub timer_interval_ms: u64,

    /// Stop (cleanly, checkpointed) after this many records.
    #[arg(long, value_name = "N")]
    pub max_records: Option<u64>,

    /// Stop once every shard is caught up and has read no record for this
    /// many seconds.
    #[arg(long, value_name = "SECONDS")]
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

    /// Send records older than this many seconds (by arrival time) to the
    /// dead-letter sink unprocessed.
    #[arg(long, value_name = "SECONDS", help_heading = "Failure policy")]
    pub max_record_age: Option<f64>,

    #[command(flatten)]
    pub hot_swap: HotSwapArgs,
}

/// How a running host takes new logic (`host run`, `host dev`).
#[derive(Debug, Args)]
pub struct HotSwapArgs {
    /// Hot-swap the logic whenever the --plugin file changes on disk
    /// (SIGHUP also reloads it, with or without this flag).
    #[arg(long, help_heading = "Hot swap")]
    pub watch: bool,

    /// Accept `host swap` on this address: 127.0.0.1:PORT, [::1]:PORT or
    /// unix:PATH (off by default; loopback only).
    #[arg(long, value_name = "ADDR", help_heading = "Hot swap")]
    pub control_addr: Option<ControlAddr>,

    /// When new logic rejects the running logic's state: refuse the swap,
    /// or start the new logic with fresh state.
    #[arg(long, value_enum, default_value_t = OnRejectedState::Refuse, help_heading = "Hot swap")]
    pub on_rejected_state: OnRejectedState,

    /// Batches per shard new logic must get through; a failure within them
    /// rolls the swap back (previous plugin, pre-swap state and position).
    #[arg(long, value_name = "N", default_value_t = 3, help_heading = "Hot swap")]
    pub swap_probation: u32,
}

/// `host swap`: talk to a running `host run --control-addr`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["plugin", "rollback", "status"])))]
pub struct SwapArgs {
    /// The running host's control address (its --control-addr).
    #[arg(long, value_name = "ADDR", env = "HOST_CONTROL_ADDR")]
    pub control_addr: ControlAddr,

    /// Swap to this component (sent to the host, which checks it first).
    #[arg(long, value_name = "FILE")]
    pub plugin: Option<PathBuf>,

    /// Undo the last swap: previous plugin, its pre-swap state, replay from
    /// the pre-swap checkpoints.
    #[arg(long)]
    pub rollback: bool,

    /// Show which logic each shard runs.
    #[arg(long)]
    pub status: bool,
}

/// `host stream …`.
#[derive(Debug, Subcommand)]
pub enum StreamCommand {
    /// Create a stream.
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        shards: i32,
        /// Wait until it is ACTIVE.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        aws: AwsArgs,
    },
    /// List streams.
    List {
        #[command(flatten)]
        aws: AwsArgs,
    },
    /// Show a stream's status and shards.
    Describe {
        name: String,
        #[command(flatten)]
        aws: AwsArgs,
    },
    /// Delete a stream.
    Delete {
        name: String,
        #[command(flatten)]
        aws: AwsArgs,
    },
}

/// `host produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub aws: AwsArgs,

    /// The stream to put to.
    #[arg(long)]
    pub stream: String,

    /// Seed 000 producer: `IP:INTERVAL_SECONDS[:LAG_SECONDS]`, repeatable.
    /// Each puts its current UTC time every interval, sent LAG seconds after
    /// stamping. Default: 8.8.8.8:2 and 8.8.8.9:5.
    #[arg(long = "source", value_name = "IP:INTERVAL[:LAG]")]
    pub sources: Vec<crate::kinesis::producer::Source>,

    /// Seed 001 producer: put N JSON documents {"number","name","age"}.
    #[arg(long, value_name = "N", conflicts_with_all = ["sources", "rate"])]
    pub documents: Option<u64>,

    /// Seconds between documents.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    pub interval: f64,

    /// Load producer: this many records per second (16 IP keys, timestamped data).
    #[arg(long, value_name = "PER_SECOND", conflicts_with = "sources")]
    pub rate: Option<f64>,

    /// Stop after this many records in total.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,

    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
}

/// `host local`.
#[derive(Debug, Args)]
pub struct LocalArgs {
    /// Port on 127.0.0.1.
    #[arg(long, default_value_t = 4567)]
    pub port: u16,

    /// Keep streams and records in this directory across restarts (in
    /// memory when absent).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Most open shards across all streams.
    #[arg(long, default_value_t = 256)]
    pub shard_limit: u32,

    /// Throttle like AWS (1 MB/s or 1000 records/s in, 5 reads/s per shard).
    #[arg(long)]
    pub enforce_limits: bool,

    /// Seconds before a shard iterator expires.
    #[arg(long, default_value_t = 300)]
    pub iterator_ttl_seconds: u64,
}

/// `host bench-stream`.
#[derive(Debug, Args)]
pub struct BenchStreamArgs {
    /// The counter component.
    #[arg(long, value_name = "FILE", default_value = "target/wasm32-wasip2/plugin/counter.wasm")]
    pub counter: PathBuf,

    /// The echo component (latency run).
    #[arg(long, value_name = "FILE", default_value = "target/wasm32-wasip2/plugin/echo.wasm")]
    pub echo: PathBuf,

    /// Records in the throughput stream.
    #[arg(long, default_value_t = 200_000)]
    pub records: usize,

    /// Shards of the throughput stream.
    #[arg(long, default_value_t = 4)]
    pub shards: i32,

    /// Rounds of the throughput pair (bare loop, then `host run`), taken in
    /// turn; the report gives the median of each and their ratio.
    #[arg(long, default_value_t = 9, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub rounds: u32,

    /// Python with boto3 for seed 000's worker (`none` skips it).
    #[arg(long, default_value = "python3")]
    pub python: String,

    /// Seed 000's worker, ported to boto3.
    #[arg(long, value_name = "FILE", default_value = "host/benches/seed000_worker.py")]
    pub seed_worker: PathBuf,

    /// Seconds of steady production for the latency measurement.
    #[arg(long, default_value_t = 10.0)]
    pub latency_seconds: f64,
}

/// `host bench-swap`.
#[derive(Debug, Args)]
pub struct BenchSwapArgs {
    /// The logic the run starts with.
    #[arg(long, value_name = "FILE", default_value = "target/wasm32-wasip2/plugin/counter.wasm")]
    pub counter: PathBuf,

    /// The changed logic it swaps to and back from.
    #[arg(long, value_name = "FILE", default_value = "target/wasm32-wasip2/plugin/counter_v2.wasm")]
    pub changed: PathBuf,

    /// Swaps to time.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(2..=100))]
    pub rounds: u32,

    /// Records/s put into the 4-shard stream while swapping.
    #[arg(long, default_value_t = 400)]
    pub rate: u32,
}

/// `host dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    #[command(flatten)]
    pub plugin: PluginArgs,

    /// Port of the embedded endpoint on 127.0.0.1 (0: any free port), for
    /// the AWS CLI or boto3 alongside.
    #[arg(long, default_value_t = 4567)]
    pub port: u16,

    /// The stream to create and consume.
    #[arg(long, default_value = "seed")]
    pub stream: String,

    /// Its shards.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=64))]
    pub shards: i32,

    /// Seconds the 8.8.8.9 producer lags behind its own timestamps (seed
    /// 000's late, out-of-order records).
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0)]
    pub lag: f64,

    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,

    /// How plugin output is printed.
    #[arg(long, value_enum, default_value_t = OutputFormat::Plain)]
    pub output: OutputFormat,

    #[command(flatten)]
    pub hot_swap: HotSwapArgs,
}
