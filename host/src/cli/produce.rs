//! `host produce`: put seed 000's IP records, seed 001's documents, or a steady rate.

use super::shared::{seconds, AwsArgs};
use crate::kinesis::producer::{produce, ProducePlan, Source};
use clap::Args;
use std::process::ExitCode;
use std::time::Duration;

/// `host produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub aws: AwsArgs,

    /// The stream to put to.
    #[arg(long)]
    pub stream: String,

    /// Seed 000 producer: `IP:INTERVAL_SECONDS[:LAG_SECONDS]`, repeatable.
    /// Each puts its current UTC time every interval, sent LAG seconds after
    /// stamping. Default: 8.8.8.8:2 and 8.8.8.9:5.
    #[arg(long = "source", value_name = "IP:INTERVAL[:LAG]")]
    pub sources: Vec<crate::kinesis::producer::Source>,

    /// Seed 001 producer: put N JSON documents {"number","name","age"}.
    #[arg(long, value_name = "N", conflicts_with_all = ["sources", "rate"])]
    pub documents: Option<u64>,

    /// Seconds between documents.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    pub interval: f64,

    /// Load producer: this many records per second (16 IP keys, timestamped data).
    #[arg(long, value_name = "PER_SECOND", conflicts_with = "sources")]
    pub rate: Option<f64>,

    /// With --rate: pack up to N user records into each Kinesis record, as
    /// the KPL does (consumers de-aggregate them; see README).
    #[arg(long, value_name = "N", requires = "rate", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub aggregate: Option<u32>,

    /// Stop after this many records in total.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,

    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
}

impl ProduceArgs {
    pub async fn execute(self) -> anyhow::Result<ExitCode> {
        let args = self;
        let client = crate::kinesis::connect(&args.aws.options()).await?;
        let plan = if let Some(count) = args.documents {
            ProducePlan::Documents { count, interval: seconds(args.interval, "--interval")? }
        } else if let Some(per_second) = args.rate {
            ProducePlan::Rate { per_second, aggregate: args.aggregate.map(|n| n as usize) }
        } else if args.sources.is_empty() {
            ProducePlan::Sources(vec![
                Source { ip: "8.8.8.8".into(), interval: Duration::from_secs(2), lag: Duration::ZERO },
                Source { ip: "8.8.8.9".into(), interval: Duration::from_secs(5), lag: Duration::ZERO },
            ])
        } else {
            ProducePlan::Sources(args.sources.clone())
        };
        // Fail fast, with the fix, when the stream is not there.
        crate::kinesis::admin::shards(&client, &args.stream).await?;
        let duration = args.duration.map(|d| seconds(d, "--duration")).transpose()?;
        let echo = !matches!(plan, ProducePlan::Rate { .. });
        let put = produce(&client, &args.stream, plan, args.count, duration, move |r| {
            if echo {
                println!("{} : {}", r.partition_key, String::from_utf8_lossy(&r.data));
            }
        })
        .await?;
        eprintln!("put {put} records to {}", args.stream);
        Ok(ExitCode::SUCCESS)
    }
}
