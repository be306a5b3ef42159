//! `host state show`: where each shard stands and the plugin state it
//! keeps, from a single host's SQLite checkpoints or a group's lease table,
//! so an author sees what `snapshot` saved.

use super::shared::AwsArgs;
use crate::checkpoint::SqliteStore;
use crate::lease::{DynamoTable, LeaseTable, StateRef, TableSetup};
use anyhow::Context;
use base64::Engine as _;
use clap::{Args, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// `host state`.
#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Each shard's checkpoint and state size; with `--shard`, that
    /// shard's state itself on stdout (text, or `base64:` when not UTF-8).
    Show(ShowArgs),
}

/// `host state show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub aws: AwsArgs,

    /// The stream.
    #[arg(long)]
    pub stream: String,

    /// A single host's checkpoint file (`host run --checkpoint-db`).
    #[arg(long, value_name = "PATH", conflicts_with = "lease_table", required_unless_present = "lease_table")]
    pub checkpoint_db: Option<PathBuf>,

    /// Its application name (`host run --application`).
    #[arg(long, default_value = "host", requires = "checkpoint_db")]
    pub application: String,

    /// A group's lease table (`host run --lease-table`).
    #[arg(long, value_name = "NAME")]
    pub lease_table: Option<String>,

    /// A DynamoDB-compatible endpoint (default: --endpoint-url).
    #[arg(long, value_name = "URL", env = "AWS_ENDPOINT_URL_DYNAMODB", requires = "lease_table")]
    pub dynamodb_endpoint_url: Option<String>,

    /// Print this shard's state itself.
    #[arg(long, value_name = "SHARD_ID")]
    pub shard: Option<String>,
}

/// One shard as stored.
struct Stored {
    shard: String,
    position: String,
    /// Layout version and bytes; read only for the shard asked for.
    state: Option<(u32, u64)>,
    bytes: Option<Vec<u8>>,
}

impl StateCommand {
    pub async fn execute(self) -> anyhow::Result<ExitCode> {
        let StateCommand::Show(args) = self;
        let stored = match &args.checkpoint_db {
            Some(path) => from_sqlite(&args, path)?,
            None => from_table(&args).await?,
        };
        let Some(wanted) = &args.shard else {
            if stored.is_empty() {
                println!("no checkpoint of stream {} yet", args.stream);
            }
            for s in &stored {
                let state = match s.state {
                    Some((layout, len)) => format!("state v{layout}, {len} bytes"),
                    None => "no state".into(),
                };
                println!("{}  {}  {state}", s.shard, s.position);
            }
            return Ok(ExitCode::SUCCESS);
        };
        let Some(s) = stored.into_iter().find(|s| &s.shard == wanted) else {
            anyhow::bail!(
                "no checkpoint of shard {wanted} in stream {}: `host state show` lists the shards",
                args.stream
            );
        };
        eprintln!("{} at {}", s.shard, s.position);
        let Some(bytes) = s.bytes else {
            eprintln!("no state");
            return Ok(ExitCode::SUCCESS);
        };
        let mut out = std::io::stdout().lock();
        match std::str::from_utf8(&bytes) {
            Ok(text) => writeln!(out, "{text}")?,
            Err(_) => writeln!(out, "base64:{}", base64::engine::general_purpose::STANDARD.encode(&bytes))?,
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn position(sequence: Option<&str>, sub: u64, ended: bool) -> String {
    match (sequence, ended) {
        (_, true) => "SHARD_END".into(),
        (None, false) => "no records yet".into(),
        (Some(seq), false) if sub > 0 => format!("{seq} (user record {sub})"),
        (Some(seq), false) => seq.to_string(),
    }
}

fn from_sqlite(args: &ShowArgs, path: &std::path::Path) -> anyhow::Result<Vec<Stored>> {
    // Never made here: a wrong path is an error, not a new empty store.
    if !path.is_file() {
        anyhow::bail!("no checkpoint file at {}: give the --checkpoint-db `host run` used", path.display());
    }
    let store = SqliteStore::open(path)?;
    Ok(store
        .list(&args.application, &args.stream)?
        .into_iter()
        .map(|(shard, c)| Stored {
            position: position(c.sequence_number.as_deref(), c.sub_sequence_number, c.shard_end),
            state: c.state.as_ref().map(|(layout, bytes)| (*layout, bytes.len() as u64)),
            bytes: c.state.map(|(_, bytes)| bytes).filter(|_| args.shard.as_ref() == Some(&shard)),
            shard,
        })
        .collect())
}

async fn from_table(args: &ShowArgs) -> anyhow::Result<Vec<Stored>> {
    let name = args.lease_table.as_deref().context("give --checkpoint-db or --lease-table")?;
    let mut options = args.aws.options();
    if let Some(url) = &args.dynamodb_endpoint_url {
        options.endpoint_url = Some(url.clone());
    }
    let table = DynamoTable::connect(&options, name, &args.stream, TableSetup::Inspect)
        .await
        .with_context(|| format!("cannot use the lease table `{name}`"))?;
    let mut stored = Vec::new();
    for lease in table.scan().await? {
        let state = lease.state.as_ref().map(|s| match s {
            StateRef::Inline { layout, bytes } => (*layout, bytes.len() as u64),
            StateRef::Chunked { layout, len, .. } => (*layout, *len),
        });
        let bytes = match (&lease.state, args.shard.as_ref() == Some(&lease.key)) {
            (Some(state), true) => Some(table.get_state(&lease.key, state).await?),
            _ => None,
        };
        let sequence = lease.checkpoint.as_deref().filter(|c| *c != crate::lease::SHARD_END);
        stored.push(Stored {
            position: position(sequence, lease.sub_sequence, lease.ended()),
            shard: lease.key,
            state,
            bytes,
        });
    }
    Ok(stored)
}
