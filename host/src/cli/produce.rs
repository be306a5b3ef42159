//! `host produce`: put seed 000's IP records, seed 001's documents, a
//! steady rate, or an author's own records from a file.

use super::shared::{seconds, AwsArgs};
use super::test::InputFormat;
use crate::kinesis::producer::{produce, put_all, Outgoing, ProducePlan, Source};
use crate::replay::{Format, InputReader, Item, LineKey};
use anyhow::Context;
use clap::Args;
use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Kinesis' limits on one record (10 MiB of data where the stream allows
/// it; 1 MiB by default, which Kinesis itself then enforces).
const MAX_KEY_BYTES: usize = 256;
const MAX_DATA_BYTES: usize = 10 << 20;
/// What one PutRecords call may carry, keys and data together.
const MAX_REQUEST_BYTES: usize = 5 << 20;

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

    /// Put the records of FILE once, in order (`-`: stdin), in `host
    /// test`'s input format: JSON lines of `partitionKey` and `data` or
    /// `dataBase64`, or raw lines with `--input-format lines`.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["sources", "documents", "rate", "duration"])]
    pub file: Option<PathBuf>,

    /// How `--file` is read: `json` or `lines` (each line one record's data).
    #[arg(long, value_enum, default_value_t = InputFormat::Json, requires = "file")]
    pub input_format: InputFormat,

    /// With `--input-format lines`: every record's partition key, or
    /// `field:NAME` to take it from field NAME of each (JSON) line.
    #[arg(long, value_name = "KEY", default_value = "line", requires = "file")]
    pub partition_key: String,

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
        if let Some(file) = &args.file {
            crate::kinesis::admin::shards(&client, &args.stream).await?;
            let format = input_format(args.input_format, &args.partition_key)?;
            let put = put_file(&client, &args.stream, file, format, args.count).await?;
            eprintln!("put {put} records from {} to {}", file.display(), args.stream);
            return Ok(ExitCode::SUCCESS);
        }
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

/// How `--input-format` and `--partition-key` read a file.
pub(super) fn input_format(format: InputFormat, partition_key: &str) -> anyhow::Result<Format> {
    Ok(match format {
        InputFormat::Json => Format::Json,
        InputFormat::Lines => Format::Lines(LineKey::parse(partition_key)?),
    })
}

/// Puts the records of `file` (`-`: stdin) to `stream` once, in order, a
/// PutRecords batch at a time (the file is never held whole); at most
/// `count`. Returns how many it put.
pub(super) async fn put_file(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    file: &std::path::Path,
    format: Format,
    count: Option<u64>,
) -> anyhow::Result<u64> {
    let (reader, name): (Box<dyn std::io::BufRead + Send>, String) = if file.as_os_str() == "-" {
        (Box::new(BufReader::new(std::io::stdin())), "stdin".into())
    } else {
        let opened = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
        (Box::new(BufReader::new(opened)), file.display().to_string())
    };
    let mut input = InputReader::new(reader, &name, crate::plugin::Clock::System.now_millis(), format);
    let limit = count.unwrap_or(u64::MAX);
    let (mut batch, mut put, mut done) = (Vec::with_capacity(500), 0u64, false);
    let mut bytes = 0usize;
    // A bad line after some were put: say what was, so a rerun does not put them twice.
    let partial = |put: u64, e: anyhow::Error| match put {
        0 => e,
        n => e.context(format!("{n} record(s) before it were put already; nothing after them was")),
    };
    while !done {
        let item = if put + batch.len() as u64 >= limit {
            None
        } else {
            input.next().transpose().map_err(|e| partial(put, e))?
        };
        match item {
            Some(Item::Record(record)) => {
                let bad = if record.partition_key.is_empty() || record.partition_key.len() > MAX_KEY_BYTES {
                    Some(format!("{}: a partition key has 1 to {MAX_KEY_BYTES} bytes", input.at()))
                } else if record.data.len() > MAX_DATA_BYTES {
                    Some(format!(
                        "{}: {} bytes of data; a Kinesis record holds at most 10 MiB",
                        input.at(),
                        record.data.len()
                    ))
                } else {
                    None
                };
                if let Some(bad) = bad {
                    return Err(partial(put, anyhow::anyhow!(bad)));
                }
                let size = record.partition_key.len() + record.data.len();
                // A PutRecords call carries at most 500 records and 5 MiB.
                if !batch.is_empty() && bytes + size > MAX_REQUEST_BYTES {
                    put_all(client, stream, &batch).await.map_err(|e| partial(put, e))?;
                    put += batch.len() as u64;
                    batch.clear();
                    bytes = 0;
                }
                bytes += size;
                batch.push(Outgoing { partition_key: record.partition_key, data: record.data });
            }
            Some(Item::Reshard(_)) => {
                return Err(partial(
                    put,
                    anyhow::anyhow!(
                        "{}: a reshard line is for `host test`; a stream is resharded by Kinesis (UpdateShardCount)",
                        input.at()
                    ),
                ));
            }
            None => done = true,
        }
        if batch.len() >= 500 || (done && !batch.is_empty()) {
            put_all(client, stream, &batch).await.map_err(|e| partial(put, e))?;
            put += batch.len() as u64;
            if put % 10_000 < batch.len() as u64 {
                eprintln!("… {put} records put from {name}");
            }
            batch.clear();
            bytes = 0;
        }
    }
    Ok(put)
}
