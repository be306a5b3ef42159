//! The flags that make `host run` one worker of a group sharing a stream
//! through a DynamoDB lease table.

use super::shared::{seconds, AwsArgs};
use crate::lease::{DynamoTable, LeaseStore, TableSetup};
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
        let worker_id = self.worker_id.clone().unwrap_or_else(default_worker_id);
        let store = LeaseStore::new(Arc::new(dynamo), &worker_id, duration, format!("DynamoDB table {table}"));
        store.check_worker_id().await?;
        eprintln!("worker {worker_id} joins the group of lease table {table}");
        Ok(Some(Arc::new(store)))
    }
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
