//! `host test`: replay a JSON-lines file through a plugin offline, under
//! the failure policy `host run` applies, with the same messages and exit codes.

use super::shared::PluginArgs;
use crate::dead_letter::DeadLetterSink;
use crate::plugin::bindings::ShutdownReason;
use crate::policy::FailurePolicy;
use crate::replay::{read_input, replay, ReplayOptions};
use crate::sink::{Destination, OutputFormat, WriterSink};
use anyhow::Context;
use clap::{Args, ValueEnum};
use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// How the replayed shard ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EndReason {
    /// As if the shard was closed (split/merge): its last state goes on in
    /// its children, so held output stays held.
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
    /// `sequenceNumber`, `subSequenceNumber`. A line `{"reshard": "split"}`
    /// or `{"reshard": "merge"}` reshards there (optional `shard`, `at`,
    /// `shards`): records after it go to the children by partition-key
    /// hash, which start from their parents' state. `-` reads stdin.
    #[arg(long, value_name = "FILE", default_value = "-")]
    pub input: PathBuf,

    /// Records per `process` call.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub batch_size: usize,

    /// Output format.
    #[arg(long, value_name = "FORMAT", default_value = "plain", value_parser = super::output_format())]
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

    /// Extra attempts at a batch after a retryable plugin error or a trap
    /// (as `host run`; no back-off wait, replay time is virtual).
    #[arg(long, value_name = "N", default_value_t = 3, help_heading = "Failure policy")]
    pub retries: u32,

    /// Where records the plugin cannot process go (file:PATH, JSON lines),
    /// so the replay moves on. Without it, such a record stops the shard
    /// right before it, exactly as in `host run`.
    #[arg(long, value_name = "SINK", help_heading = "Failure policy")]
    pub dead_letter: Option<String>,
}

impl TestArgs {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let args = self;
        let config = args.plugin.config_json()?;
        let limits = args.plugin.limits()?;
        let dead_letter = match args.dead_letter.as_deref().map(Destination::dead_letter).transpose()? {
            Some(destination) => Some(Arc::new(DeadLetterSink::open(&destination, None)?)),
            None => None,
        };
        let now = crate::plugin::Clock::System.now_millis();
        let input = if args.input.as_os_str() == "-" {
            read_input(std::io::stdin().lock(), "stdin", now)?
        } else {
            let file = std::fs::File::open(&args.input)
                .with_context(|| format!("cannot open --input {}", args.input.display()))?;
            read_input(BufReader::new(file), &args.input.display().to_string(), now)?
        };
        let (_engine, plugin) = args.plugin.load()?;
        let options = ReplayOptions {
            config,
            limits,
            batch_size: args.batch_size,
            timer_interval_millis: args.timer_interval_ms as i64,
            drain_millis: args.drain_seconds.saturating_mul(1000) as i64,
            end: match args.end {
                EndReason::ShardEnded => ShutdownReason::ShardEnded,
                EndReason::Requested => ShutdownReason::Requested,
            },
            restart_every: args.restart_every,
            failure: FailurePolicy { retries: args.retries, dead_letter, max_record_age: None },
        };
        let stdout = std::io::stdout();
        let mut sink = WriterSink::new(std::io::LineWriter::new(stdout.lock()), args.output);
        let report = crate::replay::run_to_end(replay(plugin, &input, &options, &mut sink, &mut |line| {
            eprintln!("error: {line}")
        }))?;
        for line in &report.dropped_states {
            eprintln!("warning: {line}");
        }
        let shards = match report.shards {
            1 => String::new(),
            n => format!(" over {n} shards ({} reshards)", input.reshards.len()),
        };
        eprintln!(
            "{} records in {} batches{shards}, {} timer calls, {} restarts: {} output records, {} retried calls, {} dead letters, {} failed calls",
            report.records,
            report.batches,
            report.timer_calls,
            report.restarts,
            report.emitted,
            report.retries,
            report.dead_letters,
            report.failures.len()
        );
        if let Some((shard, reason)) = &report.stopped {
            eprintln!("error: shard {shard} stopped: {reason}");
            return Ok(ExitCode::from(1));
        }
        Ok(if report.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
    }
}
