//! The flags that make `host run` one worker of a group sharing a stream
//! through a DynamoDB lease table.

use super::shared::{seconds, AwsArgs};
use crate::lease::{DynamoTable, LeaseStore, LeaseTable, TableSetup};
use anyhow::Context;
use clap::Args;
use std::sync::Arc;
use std::time::Duration;

/// `--lease-table` and its companions.
#[derive(Debug, Args)]
pub struct LeaseArgs {
    /// Share the stream with every host run with the same lease table:
    /// leases, checkpoints and plugin state live in this DynamoDB table
    /// (created when missing) instead of --checkpoint-db.
    #[arg(long, value_name = "NAME", help_heading = "Scale-out")]
    pub lease_table: Option<String>,

    /// This worker's name in the group (default: host name, pid and a
    /// random suffix). Two live workers must never share one.
    #[arg(long, value_name = "ID", requires = "lease_table", help_heading = "Scale-out")]
    pub worker_id: Option<String>,

    /// Seconds without renewal after which a worker's leases are taken by
    /// others (renewed every third of it).
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0, help_heading = "Scale-out")]
    pub lease_duration: f64,

    /// Never create the lease table (locked-down accounts): fail if missing.
    #[arg(long, requires = "lease_table", help_heading = "Scale-out")]
    pub no_create_table: bool,

    /// A DynamoDB-compatible endpoint (default: --endpoint-url).
    #[arg(long, value_name = "URL", env = "AWS_ENDPOINT_URL_DYNAMODB", help_heading = "Scale-out")]
    pub dynamodb_endpoint_url: Option<String>,
}

impl LeaseArgs {
    /// The lease store of this worker, when --lease-table is given.
    pub async fn open(&self, aws: &AwsArgs, stream: &str) -> anyhow::Result<Option<Arc<LeaseStore>>> {
        let Some(table) = &self.lease_table else { return Ok(None) };
        let duration = seconds(self.lease_duration, "--lease-duration")?;
        if duration < Duration::from_secs(1) {
            anyhow::bail!("--lease-duration must be at least 1 second (renewals go every third of it)");
        }
        let mut options = aws.options();
        if let Some(url) = &self.dynamodb_endpoint_url {
            options.endpoint_url = Some(url.clone());
        }
        let setup = if self.no_create_table { TableSetup::MustExist } else { TableSetup::CreateIfMissing };
        let dynamo = DynamoTable::connect(&options, table, stream, setup)
            .await
            .with_context(|| format!("cannot use the lease table `{table}`"))?;
        let duration = agreed_lease_duration(&dynamo, duration, table).await?;
        let worker_id = self.worker_id.clone().unwrap_or_else(default_worker_id);
        let store = LeaseStore::new(Arc::new(dynamo), &worker_id, duration, format!("DynamoDB table {table}"));
        store.check_worker_id().await?;
        eprintln!("worker {worker_id} joins the group of lease table {table}");
        Ok(Some(Arc::new(store)))
    }
}

/// The group's lease duration: the table's (set by its first worker), with
/// a line when this worker was given another.
pub(super) async fn agreed_lease_duration(
    table: &dyn LeaseTable,
    wanted: Duration,
    name: &str,
) -> anyhow::Result<Duration> {
    let agreed =
        table.lease_duration(wanted).await.with_context(|| format!("cannot read the lease duration of `{name}`"))?;
    if agreed != wanted {
        eprintln!(
            "warning: the lease table {name} has a lease duration of {agreed:?} (set by its first worker): using it, \
             not --lease-duration {wanted:?}, since every worker of a group must count expiry alike"
        );
    }
    Ok(agreed)
}

/// Host name, pid and a random suffix: unique across machines and restarts.
fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    format!("{host}-{}-{:04x}", std::process::id(), rand::random::<u16>())
}

/// `host leases`: what a lease table holds, and moving a single host's
/// checkpoints into one.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct LeasesArgs {
    #[command(subcommand)]
    pub command: Option<LeasesCommand>,

    #[command(flatten)]
    pub list: ListArgs,
}

/// `host leases --lease-table NAME --stream S`: optional here, so the
/// subcommand can go without them; checked when listing.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub aws: AwsArgs,

    /// The lease table to show.
    #[arg(long, value_name = "NAME")]
    pub lease_table: Option<String>,

    /// The stream whose leases the table holds.
    #[arg(long)]
    pub stream: Option<String>,

    /// A DynamoDB-compatible endpoint (default: --endpoint-url).
    #[arg(long, value_name = "URL", env = "AWS_ENDPOINT_URL_DYNAMODB")]
    pub dynamodb_endpoint_url: Option<String>,
}

/// The table and stream a `host leases` command works on.
#[derive(Debug, Args)]
pub struct TableArgs {
    #[command(flatten)]
    pub aws: AwsArgs,

    /// The lease table.
    #[arg(long, value_name = "NAME")]
    pub lease_table: String,

    /// The stream whose leases the table holds.
    #[arg(long)]
    pub stream: String,

    /// A DynamoDB-compatible endpoint (default: --endpoint-url).
    #[arg(long, value_name = "URL", env = "AWS_ENDPOINT_URL_DYNAMODB")]
    pub dynamodb_endpoint_url: Option<String>,
}

/// `host leases` subcommands (without one: list).
#[derive(Debug, clap::Subcommand)]
pub enum LeasesCommand {
    /// Move a single host's SQLite checkpoints and plugin state into the
    /// lease table (stop the single host first; shards the table already
    /// has a checkpoint for are left as they are).
    Import(ImportArgs),
}

/// `host leases import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub table: TableArgs,

    /// The single host's checkpoint store.
    #[arg(long, value_name = "FILE")]
    pub from: std::path::PathBuf,

    /// The application whose checkpoints to move (`host run --application`).
    #[arg(long, default_value = "host")]
    pub application: String,

    /// The group's lease duration: leases of workers gone this long are
    /// taken over.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub lease_duration: f64,
}

impl TableArgs {
    pub(super) async fn open(&self, setup: TableSetup) -> anyhow::Result<DynamoTable> {
        let mut options = self.aws.options();
        if let Some(url) = &self.dynamodb_endpoint_url {
            options.endpoint_url = Some(url.clone());
        }
        DynamoTable::connect(&options, &self.lease_table, &self.stream, setup)
            .await
            .with_context(|| format!("cannot use the lease table `{}`", self.lease_table))
    }
}

impl LeasesArgs {
    pub async fn execute(self) -> anyhow::Result<std::process::ExitCode> {
        match self.command {
            Some(LeasesCommand::Import(args)) => args.execute().await,
            None => {
                let ListArgs { aws, lease_table, stream, dynamodb_endpoint_url } = self.list;
                let (Some(lease_table), Some(stream)) = (lease_table, stream) else {
                    anyhow::bail!("host leases needs --lease-table NAME and --stream STREAM (or `host leases import`)");
                };
                let table = TableArgs { aws, lease_table, stream, dynamodb_endpoint_url };
                let table = table.open(TableSetup::Inspect).await?;
                let deployment = crate::lease::LeaseTable::deployment(&table).await?;
                print!(
                    "{}",
                    crate::lease::render_table(&crate::lease::LeaseTable::scan(&table).await?, deployment.as_ref())
                );
                Ok(std::process::ExitCode::SUCCESS)
            }
        }
    }
}

impl ImportArgs {
    async fn execute(self) -> anyhow::Result<std::process::ExitCode> {
        if !self.from.exists() {
            anyhow::bail!("--from {}: no such checkpoint store", self.from.display());
        }
        let sqlite = crate::checkpoint::SqliteStore::open(&self.from)?;
        let rows = sqlite.list(&self.application, &self.table.stream)?;
        if rows.is_empty() {
            anyhow::bail!(
                "{} has no checkpoints of application `{}` on stream `{}` (see --application)",
                self.from.display(),
                self.application,
                self.table.stream
            );
        }
        let client = crate::kinesis::connect(&self.table.aws.options()).await?;
        let shards = crate::source::RecordSource::shards(&crate::kinesis::reader::Polling {
            client,
            stream: self.table.stream.clone(),
            batch_size: 1,
            idle_time: Duration::from_secs(1),
        })
        .await?;
        let table = Arc::new(self.table.open(TableSetup::CreateIfMissing).await?);
        let id = format!("import-{}", std::process::id());
        let duration = seconds(self.lease_duration, "--lease-duration")?;
        let duration = agreed_lease_duration(table.as_ref(), duration, table.name()).await?;
        let store = LeaseStore::new(table.clone(), &id, duration, format!("DynamoDB table {}", table.name()));
        let (app, stream) = (self.application.clone(), self.table.stream.clone());
        let key = |shard: &str| crate::checkpoint::ShardKey::new(&app, &stream, shard);
        let done = crate::lease::import::import(&store, table.as_ref(), rows, &shards, key, duration * 3).await?;
        for (shard, why) in &done.skipped {
            eprintln!("skipped {shard}: {why}");
        }
        eprintln!(
            "imported {} shard(s) from {} into {}: start `host run --lease-table {}` on each host",
            done.shards.len(),
            self.from.display(),
            table.name(),
            table.name()
        );
        Ok(std::process::ExitCode::SUCCESS)
    }
}
