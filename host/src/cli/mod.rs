//! The command line: arguments parsed once into typed values, one file per
//! command (its arguments and its `execute`), and the pieces commands share
//! (`PluginArgs`, `AwsArgs`, `HotSwapArgs`, signals). The only module that
//! knows of clap; the library below it takes plain values.

mod cache;
mod dev;
mod leases;
mod local;
mod new;
mod produce;
mod retrieval;
mod run;
mod shared;
mod state;
mod stream;
mod swap;
mod test;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};
use std::process::ExitCode;

pub use shared::{AwsArgs, HotSwapArgs, PluginArgs};

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
    Run(Box<run::RunArgs>),
    /// Create, list, describe or delete streams.
    #[command(subcommand)]
    Stream(stream::StreamCommand),
    /// Put records: seed 000's IP sources, seed 001's JSON documents, or a
    /// steady rate.
    Produce(produce::ProduceArgs),
    /// Everything at once, no AWS account: the embedded endpoint, a stream,
    /// seed 000's producers and a consumer with the plugin, printing live.
    Dev(Box<dev::DevArgs>),
    /// Hot-swap the logic of a running `host run --control-addr`, roll the
    /// last swap back, or show which logic runs.
    Swap(swap::SwapArgs),
    /// Serve a Kinesis- and DynamoDB-compatible endpoint in-process (no AWS
    /// account, no Docker): for the AWS CLI, boto3, and `host run
    /// --endpoint-url` (with or without --lease-table).
    Local(local::LocalArgs),
    /// Replay records from a JSON-lines file through a plugin offline, under
    /// the same failure policy as `host run`, and print what it emits: how
    /// plugin authors test before deploying.
    Test(Box<test::TestArgs>),
    /// Show a lease table (which worker holds which shard, checkpoints,
    /// state sizes), or import a single host's checkpoints into one.
    Leases(Box<leases::LeasesArgs>),
    /// Start a processor project in Rust, Python or JavaScript: a
    /// template's logic (echo, filter, window-counter) with unit tests, a
    /// build script, sample input with its expected output, and the SDK.
    New(new::NewArgs),
    /// Show or empty the compiled-component cache.
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// Show where each shard stands and the plugin state it keeps.
    #[command(subcommand)]
    State(state::StateCommand),
}

impl Command {
    /// Runs the command. `Ok` carries the exit code (0 ok, 1 some records
    /// or shards failed); `Err` means it could not run (exit 2).
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        match self {
            Command::Test(args) => args.execute(),
            Command::Run(args) => shared::block_on(args.execute()),
            Command::Stream(command) => shared::block_on(command.execute()),
            Command::Produce(args) => shared::block_on(args.execute()),
            Command::Local(args) => shared::block_on(args.execute()),
            Command::Swap(args) => shared::block_on(args.execute()),
            Command::Dev(args) => shared::block_on(args.execute()),
            Command::Leases(args) => shared::block_on(args.execute()),
            Command::New(args) => args.execute(),
            Command::Cache(command) => command.execute(),
            Command::State(command) => shared::block_on(command.execute()),
        }
    }
}

/// `--output plain|json`.
pub fn output_format() -> impl TypedValueParser<Value = crate::sink::OutputFormat> {
    use crate::sink::OutputFormat;
    PossibleValuesParser::new(["plain", "json"])
        .map(|s| if s == "json" { OutputFormat::Json } else { OutputFormat::Plain })
}
