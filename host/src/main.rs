//! The `host` binary: parses arguments, sets up logging, runs the command
//! and turns any error into one line on stderr and an exit code (0 ok; 1
//! some records or shards failed; 2 could not run).

use clap::Parser;
use host::cli::Cli;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The AWS credential chain warns about every provider it tries, and the
    // embedded DynamoDB about every refused conditional write (the lease
    // protocol's normal answer): hidden unless asked for.
    let mut directives = cli.log.clone();
    for quiet in ["aws_config", "dynoxide"] {
        if !directives.contains(quiet) {
            directives.push_str(&format!(",{quiet}=error"));
        }
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,aws_config=error,dynoxide=error"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
    match cli.command.execute() {
        Ok(code) => code,
        // A closed stdout (`host test … | head`) is the reader's choice, not an error.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
