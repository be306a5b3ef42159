//! The `host` binary: parses arguments, sets up logging, runs a command and
//! turns any error into one line on stderr.

use anyhow::Context;
use clap::Parser;
use host::cli::{BenchArgs, Cli, Command, EndReason, PluginArgs, TestArgs};
use host::plugin::bindings::ShutdownReason;
use host::plugin::{Plugin, PluginEngine};
use host::replay::{read_records, replay, ReplayOptions};
use host::sink::WriterSink;
use std::io::BufReader;
use std::process::ExitCode;
use std::sync::Arc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
    let result = match cli.command {
        Command::Test(args) => test(args),
        Command::Bench(args) => bench(args),
    };
    match result {
        Ok(code) => code,
        // A closed stdout (`host test … | head`) is the reader's choice, not an error.
        Err(e) if e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)) => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Loads the plugin named on the command line.
fn load_plugin(args: &PluginArgs) -> anyhow::Result<(PluginEngine, Arc<Plugin>)> {
    let engine = PluginEngine::new()?;
    let plugin = Plugin::load(&engine, &args.plugin, args.cache().as_ref())?;
    tracing::info!(plugin = %args.plugin.display(), sha256 = plugin.sha256(), cache = ?plugin.cache_outcome(), "plugin loaded");
    Ok((engine, Arc::new(plugin)))
}

fn test(args: TestArgs) -> anyhow::Result<ExitCode> {
    let config = args.plugin.config_json()?;
    let limits = args.plugin.limits()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let records = if args.input.as_os_str() == "-" {
        read_records(std::io::stdin().lock(), "stdin", now)?
    } else {
        let file = std::fs::File::open(&args.input)
            .with_context(|| format!("cannot open --input {}", args.input.display()))?;
        read_records(BufReader::new(file), &args.input.display().to_string(), now)?
    };
    let (_engine, plugin) = load_plugin(&args.plugin)?;
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
    };
    let stdout = std::io::stdout();
    let mut sink = WriterSink::new(std::io::LineWriter::new(stdout.lock()), args.output);
    let report = replay(plugin, &records, &options, &mut sink, &mut |line| eprintln!("error: {line}"))?;
    eprintln!(
        "{} records in {} batches, {} timer calls, {} restarts: {} output records, {} failed calls",
        report.records,
        report.batches,
        report.timer_calls,
        report.restarts,
        report.emitted,
        report.failures.len()
    );
    Ok(if report.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let config = args.plugin.config_json()?;
    let limits = args.plugin.limits()?;
    let (_engine, plugin) = load_plugin(&args.plugin)?;
    let records = host::bench::make_records(args.records, args.record_size);
    let rows = host::bench::run(&plugin, &config, &limits, &records, &args.batch_sizes, |line| eprintln!("{line}"))?;
    print!("{}", host::bench::render(&rows, args.record_size));
    let met = rows.iter().all(host::bench::BenchRow::meets_targets);
    Ok(if args.check && !met { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
