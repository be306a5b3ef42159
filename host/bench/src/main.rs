//! `host-bench`: the benchmarks, outside the production binary (they link
//! the counter natively as the baseline). Each prints its figures and the
//! ratios against a baseline measured in the same run.
//!
//! - `host-bench plugin`: records/s through a plugin per batch size, beside
//!   the same counting compiled natively;
//! - `host-bench stream`: `host run`'s consumer end to end on the in-process
//!   emulator, beside a bare GetRecords loop and seed 000's boto3 worker;
//! - `host-bench swap`: hot-swap latency and stall, beside a stop + restart;
//! - `host-bench leases`: failover of a group of workers, the lease
//!   protocol's DynamoDB calls, 3 workers beside 1;
//! - `host-bench languages`: the counter in Rust, Python and JavaScript side
//!   by side (speed, size, first compile, memory), beside the Rust one.

mod group_bench;
mod languages_bench;
mod lease_bench;
mod plugin_bench;
mod stream_bench;
mod swap_bench;

use clap::{Args, Parser, Subcommand};
use host::plugin::{CompiledCache, Plugin, PluginEngine};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Measures the host; figures on stdout, progress on stderr.
#[derive(Debug, Parser)]
#[command(name = "host-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Records/s through a plugin per batch size, beside the same counting
    /// compiled natively, and the table.
    Plugin(Box<BenchArgs>),
    /// `host run` end to end on the in-process emulator, beside a bare
    /// GetRecords loop and seed 000's boto3 worker in the same run.
    Stream(BenchStreamArgs),
    /// Hot swaps on the in-process emulator: file write to the new logic's
    /// first batch, and the stall per shard, beside a stop + restart.
    Swap(BenchSwapArgs),
    /// A group of `host run --lease-table` workers on the in-process
    /// endpoint: failover after kill -9 and SIGTERM, DynamoDB calls in
    /// steady state, 3 workers beside 1.
    Leases(BenchLeasesArgs),
    /// New logic for a group of workers: `host swap --lease-table` against
    /// a rolling restart of the same group, in one run.
    GroupSwap(BenchGroupSwapArgs),
    /// The counter in Rust, Python and JavaScript side by side: `host test`
    /// records/s, component size, first compile, peak RSS with 16 shards,
    /// each beside the Rust counter's.
    Languages(BenchLanguagesArgs),
}

/// `host-bench languages`.
#[derive(Debug, Args)]
pub struct BenchLanguagesArgs {
    /// The Rust counter: the baseline.
    #[arg(long, value_name = "FILE", default_value = "target/wasm32-wasip2/plugin/counter.wasm")]
    pub rust: PathBuf,

    /// The Python SDK's counter (`make python-plugins`).
    #[arg(long, value_name = "FILE", default_value = "target/wasm32-wasip2/plugin/py_counter.wasm")]
    pub python: PathBuf,

    /// The JavaScript SDK's counter (`make js-plugins`).
    #[arg(long, value_name = "FILE", default_value = "target/wasm32-wasip2/plugin/js_counter.wasm")]
    pub js: PathBuf,

    /// Records `host test` replays.
    #[arg(long, default_value_t = 200_000)]
    pub records: usize,

    /// `host test` runs per counter, taken in turn; the best counts.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub rounds: u32,

    /// Records per `process` call.
    #[arg(long, default_value_t = 500)]
    pub batch_size: usize,
}

/// `host-bench leases`.
#[derive(Debug, Args)]
pub struct BenchLeasesArgs {
    /// The counter component.
    #[arg(long, value_name = "FILE", default_value = "target/wasm32-wasip2/plugin/counter.wasm")]
    pub counter: PathBuf,

    /// The workers' --lease-duration, seconds.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub lease_seconds: u64,

    /// Failovers of each kind (kill -9, SIGTERM) to time.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub rounds: u32,

    /// Shards of the streams.
    #[arg(long, default_value_t = 8)]
    pub shards: i32,

    /// Records in the throughput stream (0: skip that part).
    #[arg(long, default_value_t = 200_000)]
    pub records: u64,

    /// Workers in the group.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(2..=16))]
    pub workers: u64,

    /// The embedded endpoint's limit of open shards (raised to twice
    /// --shards when lower).
    #[arg(long, default_value_t = 256)]
    pub shard_limit: u32,

    /// The `host` binary the workers run (default: the one beside host-bench).
    #[arg(long, value_name = "FILE")]
    pub host: Option<PathBuf>,

    /// How long to wait for the group to balance before reporting none.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub patience: u64,
}

/// `host-bench group-swap`.
#[derive(Debug, Args)]
pub struct BenchGroupSwapArgs {
    /// The logic the group starts with.
    #[arg(long, value_name = "FILE", default_value = "target/wasm32-wasip2/plugin/counter.wasm")]
    pub counter: PathBuf,

    /// The logic swapped to (and back from, every other round).
    #[arg(long, value_name = "FILE", default_value = "target/wasm32-wasip2/plugin/counter_v2.wasm")]
    pub counter_v2: PathBuf,

    /// The workers' --lease-duration, seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub lease_seconds: u64,

    /// Swaps to time.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,

    /// Shards of the stream.
    #[arg(long, default_value_t = 8)]
    pub shards: i32,

    /// Workers in the group.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=16))]
    pub workers: u64,
}

/// `host-bench plugin`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub plugin: host::cli::PluginArgs,

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

/// `host-bench stream`.
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

/// `host-bench swap`.
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

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter("warn,aws_config=error,dynoxide=error")
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::Plugin(args) => plugin(*args),
        Command::Stream(args) => runtime().and_then(|rt| rt.block_on(stream(args))),
        Command::Swap(args) => runtime().and_then(|rt| rt.block_on(swap(args))),
        Command::Leases(args) => runtime().and_then(|rt| rt.block_on(leases(args))),
        Command::GroupSwap(args) => runtime().and_then(|rt| rt.block_on(group_swap(args))),
        Command::Languages(args) => runtime().and_then(|rt| rt.block_on(languages(args))),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The `host` binary the process measurements run: the one built beside
/// this one (`cargo build --release -p host -p host-bench`, or `make bench-bin`).
fn host_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let host = exe.with_file_name("host");
    anyhow::ensure!(
        host.is_file(),
        "{} is missing: build it beside host-bench with `cargo build --release -p host -p host-bench`",
        host.display()
    );
    Ok(host)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn plugin(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let config = args.plugin.config_json()?;
    let limits = args.plugin.limits()?;
    let (_engine, plugin) = args.plugin.load()?;
    let records = plugin_bench::make_records(args.records, args.record_size);
    let rows = plugin_bench::run(&plugin, &config, &limits, &records, &args.batch_sizes, |line| eprintln!("{line}"))?;
    print!("{}", plugin_bench::render(&rows, args.record_size));
    let met = rows.iter().all(plugin_bench::BenchRow::meets_targets);
    Ok(if args.check && !met { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

async fn swap(args: BenchSwapArgs) -> anyhow::Result<ExitCode> {
    let engine = PluginEngine::new()?;
    let options = swap_bench::SwapBenchOptions {
        counter: args.counter,
        changed: args.changed,
        rounds: args.rounds as usize,
        rate: args.rate,
    };
    let report = swap_bench::run(&engine, &options, |line| eprintln!("{line}")).await?;
    print!("{}", swap_bench::render(&report));
    Ok(ExitCode::SUCCESS)
}

async fn stream(args: BenchStreamArgs) -> anyhow::Result<ExitCode> {
    let engine = PluginEngine::new()?;
    let cache = CompiledCache::default_dir().map(CompiledCache::new);
    let counter = Arc::new(Plugin::load(&engine, &args.counter, cache.as_ref())?);
    let echo = Arc::new(Plugin::load(&engine, &args.echo, cache.as_ref())?);
    let options = stream_bench::StreamBenchOptions {
        records: args.records,
        shards: args.shards,
        rounds: args.rounds as usize,
        counter: args.counter.clone(),
        python: (args.python != "none").then(|| args.python.clone()),
        seed_worker: args.seed_worker.clone(),
        latency_seconds: args.latency_seconds,
    };
    let report = stream_bench::run(&options, counter, echo, |line| eprintln!("{line}")).await?;
    print!("{}", stream_bench::render(&report, args.shards));
    Ok(ExitCode::SUCCESS)
}

async fn leases(args: BenchLeasesArgs) -> anyhow::Result<ExitCode> {
    let options = lease_bench::LeaseBenchOptions {
        counter: args.counter,
        lease_seconds: args.lease_seconds,
        rounds: args.rounds as usize,
        shards: args.shards,
        records: args.records,
        workers: args.workers as usize,
        shard_limit: args.shard_limit,
        host: match args.host {
            Some(host) => host,
            None => host_binary()?,
        },
        patience: std::time::Duration::from_secs(args.patience),
    };
    let report = lease_bench::run(&options, |line| eprintln!("{line}")).await?;
    print!("{}", lease_bench::render(&report));
    Ok(ExitCode::SUCCESS)
}

async fn group_swap(args: BenchGroupSwapArgs) -> anyhow::Result<ExitCode> {
    let options = group_bench::GroupBenchOptions {
        counter: args.counter,
        counter_v2: args.counter_v2,
        lease_seconds: args.lease_seconds,
        rounds: args.rounds as usize,
        shards: args.shards,
        workers: args.workers as usize,
        host: host_binary()?,
    };
    let report = group_bench::run(&options, |line| eprintln!("{line}")).await?;
    print!("{}", group_bench::render(&report));
    Ok(ExitCode::SUCCESS)
}

async fn languages(args: BenchLanguagesArgs) -> anyhow::Result<ExitCode> {
    let options = languages_bench::LanguagesBenchOptions {
        counters: vec![("Rust".into(), args.rust), ("Python".into(), args.python), ("JavaScript".into(), args.js)],
        records: args.records,
        rounds: args.rounds as usize,
        batch_size: args.batch_size,
    };
    for (language, path) in &options.counters {
        anyhow::ensure!(
            path.is_file(),
            "the {language} counter {} is missing: build it with `make plugins python-plugins js-plugins`",
            path.display()
        );
    }
    let rows = languages_bench::run(&options, |line| eprintln!("{line}")).await?;
    print!("{}", languages_bench::render(&rows, &options));
    Ok(ExitCode::SUCCESS)
}
