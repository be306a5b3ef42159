//! `host local`: a Kinesis- and DynamoDB-compatible endpoint in-process
//! (DynamoDB for lease tables: `host run --lease-table` needs no other).

use super::shared::until_interrupted;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// `host local`.
#[derive(Debug, Args)]
pub struct LocalArgs {
    /// Port on 127.0.0.1.
    #[arg(long, default_value_t = 4567)]
    pub port: u16,

    /// Keep streams and records in this directory across restarts (in
    /// memory when absent).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Most open shards across all streams.
    #[arg(long, default_value_t = 256)]
    pub shard_limit: u32,

    /// Throttle like AWS (1 MB/s or 1000 records/s in, 5 reads/s per shard).
    #[arg(long)]
    pub enforce_limits: bool,

    /// Seconds before a shard iterator expires.
    #[arg(long, default_value_t = 300)]
    pub iterator_ttl_seconds: u64,

    /// The region in stream ARNs. The endpoint plays one region: clients
    /// signing for any region see the same streams.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub region: String,
}

impl LocalArgs {
    pub async fn execute(self) -> anyhow::Result<ExitCode> {
        let args = self;
        let endpoint = crate::local::LocalKinesis::start(crate::local::LocalOptions {
            port: args.port,
            data_dir: args.data_dir.clone(),
            shard_limit: args.shard_limit,
            enforce_limits: args.enforce_limits,
            iterator_ttl_seconds: args.iterator_ttl_seconds,
            region: args.region.clone(),
            ..Default::default()
        })
        .await?;
        eprintln!(
            "Kinesis and DynamoDB endpoint on {} ({}, region {}); use --endpoint-url {} (any credentials). Ctrl-C stops.",
            endpoint.endpoint_url(),
            match &args.data_dir {
                Some(dir) => format!("data in {}", dir.display()),
                None => "in memory".to_string(),
            },
            args.region,
            endpoint.endpoint_url()
        );
        until_interrupted().await?;
        endpoint.stop().await;
        Ok(ExitCode::SUCCESS)
    }
}
