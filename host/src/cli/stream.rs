//! `host stream create|list|describe|delete`: stream administration, as in the seeds.

use super::shared::AwsArgs;
use crate::kinesis::admin;
use clap::Subcommand;
use std::process::ExitCode;
use std::time::Duration;

/// `host stream …`.
#[derive(Debug, Subcommand)]
pub enum StreamCommand {
    /// Create a stream.
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        shards: i32,
        /// Wait until it is ACTIVE.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        aws: AwsArgs,
    },
    /// List streams.
    List {
        #[command(flatten)]
        aws: AwsArgs,
    },
    /// Show a stream's status and shards.
    Describe {
        name: String,
        #[command(flatten)]
        aws: AwsArgs,
    },
    /// Delete a stream.
    Delete {
        name: String,
        #[command(flatten)]
        aws: AwsArgs,
    },
}

impl StreamCommand {
    pub async fn execute(self) -> anyhow::Result<ExitCode> {
        match self {
            StreamCommand::Create { name, shards, wait, aws } => {
                let client = crate::kinesis::connect(&aws.options()).await?;
                if admin::create(&client, &name, shards).await? {
                    println!("stream {name} created with {shards} shard(s)");
                } else {
                    println!("stream {name} already exists");
                }
                if wait {
                    admin::wait_active(&client, &name, Duration::from_secs(300)).await?;
                    println!("stream {name} is active");
                }
            }
            StreamCommand::List { aws } => {
                let client = crate::kinesis::connect(&aws.options()).await?;
                for name in admin::list(&client).await? {
                    println!("{name}");
                }
            }
            StreamCommand::Describe { name, aws } => {
                let client = crate::kinesis::connect(&aws.options()).await?;
                print!("{}", admin::describe(&client, &name).await?);
            }
            StreamCommand::Delete { name, aws } => {
                let client = crate::kinesis::connect(&aws.options()).await?;
                admin::delete(&client, &name).await?;
                println!("stream {name} deleted");
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
