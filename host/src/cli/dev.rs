//! `host dev`: the embedded endpoint, a stream, seed 000's producers and a
//! consumer with the plugin, in one process, output printed as it comes.

use super::shared::{seconds, stop_on_signals, HotSwapArgs, PluginArgs};
use crate::checkpoint::SqliteStore;
use crate::consumer::Consumer;
use crate::dead_letter::DeadLetterSink;
use crate::kinesis::producer::{produce, ProducePlan, Source};
use crate::lease::{DynamoTable, LeaseStore, TableSetup};
use crate::policy::FailurePolicy;
use crate::progress::Progress;
use crate::shutdown::Shutdown;
use crate::sink::{OutputFormat, Sink};
use crate::source::StartPosition;
use anyhow::Context;
use clap::Args;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// `host dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    #[command(flatten)]
    pub plugin: PluginArgs,

    /// Port of the embedded endpoint on 127.0.0.1 (0: any free port), for
    /// the AWS CLI or boto3 alongside.
    #[arg(long, default_value_t = 4567)]
    pub port: u16,

    /// The stream to create and consume.
    #[arg(long, default_value = "seed")]
    pub stream: String,

    /// Its shards.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=64))]
    pub shards: i32,

    /// Seconds the 8.8.8.9 producer lags behind its own timestamps (seed
    /// 000's late, out-of-order records).
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0)]
    pub lag: f64,

    /// Put these records into the stream (once, in order) instead of
    /// running seed 000's producers: `host test`'s input format, or raw
    /// lines with `--input-format lines`.
    #[arg(long, value_name = "FILE")]
    pub input: Option<std::path::PathBuf>,

    /// How `--input` is read: `json` or `lines` (each line one record's data).
    #[arg(long, value_enum, default_value_t = super::test::InputFormat::Json, requires = "input")]
    pub input_format: super::test::InputFormat,

    /// With `--input-format lines`: every record's partition key, or
    /// `field:NAME` to take it from field NAME of each (JSON) line.
    #[arg(long, value_name = "KEY", default_value = "line", requires = "input")]
    pub partition_key: String,

    /// Where records the plugin cannot process go (file:PATH), as in `host
    /// run`; without it such a record stops its shard.
    #[arg(long, value_name = "SINK", help_heading = "Failure policy")]
    pub dead_letter: Option<String>,

    /// Extra attempts at a batch after a retryable plugin error or a trap.
    #[arg(long, value_name = "N", default_value_t = 3, help_heading = "Failure policy")]
    pub retries: u32,

    /// Crashes on this many records in a row stop the shard as a bug (0: never).
    #[arg(long, value_name = "N", default_value_t = crate::policy::CRASH_LIMIT, help_heading = "Failure policy")]
    pub crash_limit: u32,

    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,

    /// How plugin output is printed.
    #[arg(long, value_name = "FORMAT", default_value = "plain", value_parser = super::output_format())]
    pub output: OutputFormat,

    /// Run this many workers sharing the stream through a lease table in
    /// the embedded DynamoDB (3 s leases), each with its status line: which
    /// worker holds which shard.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub workers: u32,

    #[command(flatten)]
    pub hot_swap: HotSwapArgs,

    #[command(flatten)]
    pub retrieval: super::retrieval::RetrievalArgs,
}

impl DevArgs {
    pub async fn execute(self) -> anyhow::Result<ExitCode> {
        let args = self;
        let config = args.plugin.config_json()?;
        let limits = args.plugin.limits()?;
        let lag = seconds(args.lag, "--lag")?;
        let duration = args.duration.map(|s| seconds(s, "--duration")).transpose()?;
        let (engine, plugin) = tokio::task::block_in_place(|| args.plugin.load())?;
        let local =
            crate::local::LocalKinesis::start(crate::local::LocalOptions { port: args.port, ..Default::default() })
                .await?;
        let url = local.endpoint_url();
        let client = crate::kinesis::connect(&crate::kinesis::AwsOptions {
            endpoint_url: Some(url.clone()),
            ..Default::default()
        })
        .await?;
        crate::kinesis::admin::create(&client, &args.stream, args.shards).await?;
        crate::kinesis::admin::wait_active(&client, &args.stream, Duration::from_secs(30)).await?;
        let sources: Vec<Source> = vec![
            Source { ip: "8.8.8.8".into(), interval: Duration::from_secs(2), lag: Duration::ZERO },
            Source { ip: "8.8.8.9".into(), interval: Duration::from_secs(5), lag },
        ];
        let producing = match &args.input {
            Some(file) => format!("putting the records of {}", file.display()),
            None => format!(
                "producing 8.8.8.8 every 2 s and 8.8.8.9 every 5 s{}",
                if lag.is_zero() { String::new() } else { format!(" ({} s late)", lag.as_secs_f64()) }
            ),
        };
        eprintln!(
        "dev: Kinesis on {url} (stream `{}`, {} shard(s); the AWS CLI, boto3 and `host run --endpoint-url {url}` can join); \
         {producing}; consuming with {}. {}",
        args.stream,
        args.shards,
        args.plugin.file()?.display(),
        match duration {
            Some(d) => format!("Stopping after {} s.", d.as_secs_f64()),
            None => "Ctrl-C stops.".into(),
        }
    );
        let shutdown = Shutdown::new();
        stop_on_signals(shutdown.clone());
        let producer = {
            let (client, stream) = (client.clone(), args.stream.clone());
            match &args.input {
                Some(file) => {
                    let (file, format) =
                        (file.clone(), super::produce::input_format(args.input_format, &args.partition_key)?);
                    let shutdown = shutdown.clone();
                    tokio::spawn(async move {
                        let put = super::produce::put_file(&client, &stream, &file, format, None).await;
                        match &put {
                            Ok(n) => eprintln!("dev: put {n} records from {}", file.display()),
                            // Stops the run: it ends with the error.
                            Err(_) => shutdown.trigger(),
                        }
                        put
                    })
                }
                None => tokio::spawn(async move {
                    produce(&client, &stream, ProducePlan::Sources(sources), None, None, |_| {}).await
                }),
            }
        };
        let dir = tempfile::tempdir().context("cannot create a directory for the checkpoints")?;
        let dead_letter = args.dead_letter.as_deref().map(crate::sink::Destination::dead_letter).transpose()?;
        let dead_letter = dead_letter.map(|d| DeadLetterSink::open(&d, Some(&client))).transpose()?.map(Arc::new);
        let consumer = crate::consumer::ConsumerConfig {
            start: StartPosition::TrimHorizon,
            status_interval: Duration::from_secs(86_400 * 365),
            plugin_config: config,
            limits,
            failure: FailurePolicy {
                retries: args.retries,
                dead_letter,
                max_record_age: None,
                crash_limit: args.crash_limit,
            },
            ..crate::consumer::ConsumerConfig::new("dev", &args.stream)
        };
        let progress = Arc::new(Progress::default());
        let settings = consumer.instance_settings("");
        let (hub, _triggers) =
            args.hot_swap.start(&args.plugin, engine, plugin, settings, progress.clone(), None).await?;
        if let Some(duration) = duration {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                tokio::time::sleep(duration).await;
                shutdown.trigger();
            });
        }
        let sink = Arc::new(Sink::stdout(args.output));
        let source = args.retrieval.source(&client, &consumer).await?;
        let report = if args.workers == 1 {
            let store = Arc::new(SqliteStore::open(&dir.path().join("checkpoints.db"))?);
            Consumer::with_source(source, hub, store, sink, consumer).progress(progress).run(shutdown).await
        } else {
            group(&url, args.workers, source, hub, sink, consumer, shutdown).await
        };
        let put = if producer.is_finished() {
            producer.await.ok()
        } else {
            producer.abort();
            None
        };
        local.stop().await;
        if let (Some(Err(e)), Some(_)) = (put, &args.input) {
            return Err(e);
        }
        let report = report?;
        eprintln!("dev: stopped after {} records", report.records);
        Ok(ExitCode::SUCCESS)
    }
}

/// `--workers N`: N consumers in this process, each a worker of one lease
/// group in the embedded DynamoDB; their records add up in one report.
async fn group(
    url: &str,
    workers: u32,
    source: Arc<dyn crate::source::RecordSource>,
    hub: Arc<crate::swap::SwapHub>,
    sink: Arc<Sink>,
    config: crate::consumer::ConsumerConfig,
    shutdown: Shutdown,
) -> anyhow::Result<crate::consumer::RunReport> {
    let options = crate::kinesis::AwsOptions { endpoint_url: Some(url.to_string()), ..Default::default() };
    let table = DynamoTable::connect(&options, "dev-leases", &config.stream, TableSetup::CreateIfMissing).await?;
    let table: Arc<dyn crate::lease::LeaseTable> = Arc::new(table);
    let lease = super::leases::agreed_lease_duration(table.as_ref(), Duration::from_secs(3), "dev-leases").await?;
    let config = crate::consumer::ConsumerConfig { status_interval: Duration::from_secs(5), ..config };
    let mut runs = tokio::task::JoinSet::new();
    for i in 1..=workers {
        let id = format!("worker-{i}");
        let store = Arc::new(LeaseStore::new(table.clone(), &id, lease, "dev-leases".into()));
        let consumer = Consumer::with_source(source.clone(), hub.clone(), store.clone(), sink.clone(), config.clone())
            .ownership(store)
            .on_status(move |line| eprintln!("dev: {line}"));
        runs.spawn(consumer.run(shutdown.clone()));
    }
    let mut total = crate::consumer::RunReport::default();
    while let Some(report) = runs.join_next().await {
        let report = report.context("a dev worker panicked")??;
        total.records += report.records;
    }
    Ok(total)
}
