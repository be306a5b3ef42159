//! `host test`: replay a JSON-lines file through a plugin offline, under
//! the failure policy `host run` applies, with the same messages and exit codes.

use super::shared::PluginArgs;
use crate::dead_letter::DeadLetterSink;
use crate::plugin::bindings::ShutdownReason;
use crate::policy::FailurePolicy;
use crate::replay::{read_input, read_lines, replay, LineKey, ReplayOptions};
use crate::sink::{Destination, OutputFormat, WriterSink};
use anyhow::Context;
use clap::{Args, ValueEnum};
use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// How `host test` reads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InputFormat {
    /// One JSON record object per line (`partitionKey`, `data`, …).
    Json,
    /// One record per line: the line is the data.
    Lines,
}

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

    /// How `--input` is read: `json` (one record object per line, above),
    /// or `lines` (each line is one record's data, as it is).
    #[arg(long, value_enum, default_value_t = InputFormat::Json)]
    pub input_format: InputFormat,

    /// With `--input-format lines`: every record's partition key, or
    /// `field:NAME` to take it from field NAME of each line (JSON).
    #[arg(long, value_name = "KEY", default_value = "line")]
    pub partition_key: String,

    /// What the replay must print (as with `--output plain` unless
    /// `--output` says otherwise): exit 1 with a diff when it differs.
    #[arg(long, value_name = "FILE")]
    pub expect: Option<PathBuf>,

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
    /// instance: the output must be the same as without (the replay runs
    /// twice and compares; exit 1 with a diff when it differs).
    #[arg(long, value_name = "N")]
    pub restart_every: Option<usize>,

    /// Extra attempts at a batch after a retryable plugin error or a trap
    /// (as `host run`; no back-off wait, replay time is virtual).
    #[arg(long, value_name = "N", default_value_t = 3, help_heading = "Failure policy")]
    pub retries: u32,

    /// The logic crashing on this many records in a row is a bug, not bad
    /// data: the replay stops there, exit 1 (0: never). Records refused with
    /// a `ProcessError` never count.
    #[arg(long, value_name = "N", default_value_t = crate::policy::CRASH_LIMIT, help_heading = "Failure policy")]
    pub crash_limit: u32,

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
        let expected = match &args.expect {
            Some(path) => Some(read_expected(path)?),
            None => None,
        };
        let input = args.read_input()?;
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
            failure: FailurePolicy {
                retries: args.retries,
                dead_letter: dead_letter.clone(),
                max_record_age: None,
                crash_limit: args.crash_limit,
            },
        };
        // What restarts must not change: the same replay without them (its
        // dead letters go nowhere; the run below writes them).
        let unrestarted = match args.restart_every {
            Some(n) if n > 0 => {
                let quiet = ReplayOptions {
                    restart_every: None,
                    failure: FailurePolicy {
                        dead_letter: dead_letter.as_ref().map(|_| discard()).transpose()?,
                        ..options.failure.clone()
                    },
                    ..options.clone()
                };
                let mut sink = WriterSink::new(Vec::new(), args.output);
                crate::replay::run_to_end(replay(plugin.clone(), &input, &quiet, &mut sink, &mut |_| {}))?;
                Some(String::from_utf8_lossy(&sink.into_inner()).into_owned())
            }
            _ => None,
        };
        // Printed as it comes (unless it is only compared), kept when compared.
        let out = Tee {
            print: expected.is_none().then(|| std::io::LineWriter::new(std::io::stdout())),
            keep: (expected.is_some() || unrestarted.is_some()).then(Vec::new),
        };
        let mut sink = WriterSink::new(out, args.output);
        let report = crate::replay::run_to_end(replay(plugin, &input, &options, &mut sink, &mut |line| {
            eprintln!("error: {line}")
        }))?;
        let printed = String::from_utf8_lossy(&sink.into_inner().keep.unwrap_or_default()).into_owned();
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
        if report.dead_letters > 0 {
            eprintln!(
                "warning: {} of {} records went to the dead-letter sink ({}), not through the logic: look at them before you ship",
                report.dead_letters,
                report.records,
                args.dead_letter.as_deref().unwrap_or_default()
            );
        }
        let mut failed = !report.failures.is_empty();
        if let Some((shard, reason)) = &report.stopped {
            eprintln!("error: shard {shard} stopped: {reason}");
            failed = true;
        }
        if let Some(without) = &unrestarted {
            if *without != printed {
                eprintln!(
                    "error: the output with a restart every {} batch(es) differs from the output without: does \
                     `snapshot` keep everything `restore` needs? (logic that reads the real clock or random numbers \
                     itself differs from run to run too: use the host's `now_millis`)\n{}",
                    args.restart_every.unwrap_or_default(),
                    diff(without, &printed, "without restarts", "with restarts")
                );
                failed = true;
            }
        }
        if let (Some(expected), Some(path)) = (&expected, &args.expect) {
            if *expected == printed {
                eprintln!("the output matches {} ({} lines)", path.display(), printed.lines().count());
            } else {
                let name = path.display().to_string();
                eprintln!("error: the output differs from {name}:\n{}", diff(expected, &printed, &name, "output"));
                failed = true;
            }
        }
        Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
    }

    /// The records to replay, as `--input-format` says.
    fn read_input(&self) -> anyhow::Result<crate::replay::ReplayInput> {
        let now = crate::plugin::Clock::System.now_millis();
        let (reader, name): (Box<dyn std::io::BufRead>, String) = if self.input.as_os_str() == "-" {
            (Box::new(BufReader::new(std::io::stdin())), "stdin".into())
        } else {
            let file = std::fs::File::open(&self.input)
                .with_context(|| format!("cannot open --input {}", self.input.display()))?;
            (Box::new(BufReader::new(file)), self.input.display().to_string())
        };
        match self.input_format {
            InputFormat::Json => read_input(reader, &name, now),
            InputFormat::Lines => read_lines(reader, &name, now, &LineKey::parse(&self.partition_key)?),
        }
    }
}

/// Output printed, kept, or both.
struct Tee {
    print: Option<std::io::LineWriter<std::io::Stdout>>,
    keep: Option<Vec<u8>>,
}

impl std::io::Write for Tee {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Some(print) = &mut self.print {
            print.write_all(bytes)?;
        }
        if let Some(keep) = &mut self.keep {
            keep.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.print.as_mut().map_or(Ok(()), |p| p.flush())
    }
}

/// The most of an `--expect` file read.
const MAX_EXPECTED: u64 = 256 << 20;

/// An `--expect` file, bounded (a FIFO or `/dev/zero` never ends).
fn read_expected(path: &std::path::Path) -> anyhow::Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path).with_context(|| format!("cannot read --expect {}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_EXPECTED + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read --expect {} (UTF-8 text expected)", path.display()))?;
    if text.len() as u64 > MAX_EXPECTED {
        anyhow::bail!("--expect {} is over {} MiB", path.display(), MAX_EXPECTED >> 20);
    }
    Ok(text)
}

/// A dead-letter sink that keeps nothing (a replay run only to compare).
fn discard() -> anyhow::Result<Arc<DeadLetterSink>> {
    Ok(Arc::new(DeadLetterSink::file(std::path::Path::new("/dev/null"))?))
}

/// A unified diff of `want` against `got`, at most 200 lines of it.
fn diff(want: &str, got: &str, want_name: &str, got_name: &str) -> String {
    // Bounded: a diff of two long, wholly different outputs would take hours.
    let diff = similar::TextDiff::configure().timeout(std::time::Duration::from_secs(2)).diff_lines(want, got);
    let text = diff.unified_diff().header(want_name, got_name).to_string();
    let lines: Vec<&str> = text.lines().collect();
    match lines.len() {
        0..=200 => text,
        n => format!("{}\n… {} more lines of diff", lines[..200].join("\n"), n - 200),
    }
}
