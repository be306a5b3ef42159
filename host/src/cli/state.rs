//! `host state show`: where each shard stands and the plugin state it
//! keeps, from a single host's SQLite checkpoints or a group's lease table,
//! so an author sees what `snapshot` saved.

use super::shared::AwsArgs;
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

/// The biggest state printed (a lease table's are at most 16 MiB).
const MAX_SHOWN: usize = 64 << 20;

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
            // Control characters escaped: a state never drives the terminal.
            Ok(text) => {
                let shown: String = text
                    .chars()
                    .map(|c| {
                        if c.is_control() && c != '\n' && c != '\t' {
                            c.escape_default().to_string()
                        } else {
                            c.into()
                        }
                    })
                    .collect();
                writeln!(out, "{shown}")?
            }
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
    use rusqlite::{params, Connection, OpenFlags};
    // Read-only: a wrong path is an error, never a file made or changed here.
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|_| {
            anyhow::anyhow!("no checkpoint file at {}: give the --checkpoint-db `host run` used", path.display())
        })?;
    let has_table: bool = conn
        .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'checkpoints'", [], |r| {
            r.get::<_, i64>(0)
        })
        .map(|n| n > 0)
        .unwrap_or(false);
    if !has_table {
        anyhow::bail!("{} holds no checkpoints: give the --checkpoint-db `host run` used", path.display());
    }
    // Sizes only: a state is read for the shard asked for alone.
    let mut stmt = conn.prepare(
        "SELECT shard_id, sequence_number, sub_sequence_number, shard_end, state_version, length(state)
         FROM checkpoints WHERE application = ?1 AND stream = ?2 ORDER BY shard_id",
    )?;
    let rows = stmt.query_map(params![args.application, args.stream], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, Option<String>>(1)?,
            row.get::<_, i64>(2)?,
            row.get::<_, i64>(3)? != 0,
            row.get::<_, Option<u32>>(4)?,
            row.get::<_, Option<i64>>(5)?,
        ))
    })?;
    let mut stored = Vec::new();
    for row in rows {
        let (shard, sequence, sub, ended, layout, len) = row?;
        let bytes = match (&args.shard, len) {
            (Some(wanted), Some(len)) if *wanted == shard && len <= MAX_SHOWN as i64 => Some(conn.query_row(
                "SELECT state FROM checkpoints WHERE application = ?1 AND stream = ?2 AND shard_id = ?3",
                params![args.application, args.stream, shard],
                |r| r.get::<_, Vec<u8>>(0),
            )?),
            (Some(wanted), Some(len)) if *wanted == shard => {
                anyhow::bail!(
                    "the state of {shard} is {len} bytes; `host state show` prints at most {} MiB",
                    MAX_SHOWN >> 20
                )
            }
            _ => None,
        };
        stored.push(Stored {
            position: position(sequence.as_deref(), u64::try_from(sub).unwrap_or(0), ended),
            state: layout.zip(len.map(|l| u64::try_from(l).unwrap_or(0))),
            bytes,
            shard,
        });
    }
    Ok(stored)
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
