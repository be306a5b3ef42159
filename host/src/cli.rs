//! Every command-line argument of `host`, in one place.

use crate::plugin::{CompiledCache, PluginLimits};
use crate::sink::OutputFormat;
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
    /// Replay records from a JSON-lines file through a plugin offline and
    /// print what it emits: how plugin authors test before deploying.
    Test(TestArgs),
    /// Measure records/s through a plugin per batch size, beside the same
    /// counting compiled natively, and print the table.
    Bench(BenchArgs),
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
