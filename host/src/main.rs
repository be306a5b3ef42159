//! The `host` binary: parses arguments, sets up logging, runs a command and
//! turns any error into one line on stderr.

use anyhow::Context;
use clap::Parser;
use host::cli::{
    BenchArgs, BenchStreamArgs, BenchSwapArgs, Cli, DevArgs, Command, EndReason, LocalArgs, PluginArgs, ProduceArgs, RunArgs, StartAt, StreamCommand, SwapArgs,
    TestArgs,
};
use host::kinesis::reader::StartPosition;
use std::time::Duration;
use host::plugin::bindings::ShutdownReason;
use host::plugin::{Plugin, PluginEngine};
use host::replay::{read_records, replay, ReplayOptions};
use host::sink::WriterSink;
use std::io::BufReader;
use std::process::ExitCode;
use std::sync::Arc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The AWS credential chain warns about every provider it tries; our own
    // error says what is missing, so its chatter is hidden unless asked for.
    let directives = if cli.log.contains("aws_config") { cli.log.clone() } else { format!("{},aws_config=error", cli.log) };
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,aws_config=error"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
    let result = match cli.command {
        Command::Test(args) => test(*args),
        Command::Bench(args) => bench(*args),
        Command::Run(args) => block_on(run(*args)),
        Command::Stream(command) => block_on(stream(command)),
        Command::Produce(args) => block_on(produce(args)),
        Command::Local(args) => block_on(local(args)),
        Command::Swap(args) => block_on(swap(args)),
        Command::Dev(args) => block_on(dev(*args)),
        Command::BenchStream(args) => block_on(bench_stream(args)),
        Command::BenchSwap(args) => block_on(bench_swap(args)),
    };
    match result {
        Ok(code) => code,
        // A closed stdout (`host test … | head`) is the reader's choice, not an error.
        Err(e) if e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)) => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Loads the plugin named on the command line.
fn load_plugin(args: &PluginArgs) -> anyhow::Result<(PluginEngine, Arc<Plugin>)> {
    let engine = PluginEngine::new()?;
    let plugin = Plugin::load(&engine, &args.plugin, args.cache().as_ref())?;
    tracing::info!(plugin = %args.plugin.display(), sha256 = plugin.sha256(), cache = ?plugin.cache_outcome(), "plugin loaded");
    Ok((engine, Arc::new(plugin)))
}

fn test(args: TestArgs) -> anyhow::Result<ExitCode> {
    let config = args.plugin.config_json()?;
    let limits = args.plugin.limits()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let records = if args.input.as_os_str() == "-" {
        read_records(std::io::stdin().lock(), "stdin", now)?
    } else {
        let file = std::fs::File::open(&args.input)
            .with_context(|| format!("cannot open --input {}", args.input.display()))?;
        read_records(BufReader::new(file), &args.input.display().to_string(), now)?
    };
    let (_engine, plugin) = load_plugin(&args.plugin)?;
    let options = ReplayOptions {
        config,
        limits,
        batch_size: args.batch_size,
        timer_interval_millis: args.timer_interval_ms as i64,
        drain_millis: args.drain_seconds.saturating_mul(1000) as i64,
        end: match args.end {
            EndReason::ShardEnded => ShutdownReason::ShardEnded,
            EndReason::Requested => ShutdownReason::Requested,
        },
        restart_every: args.restart_every,
    };
    let stdout = std::io::stdout();
    let mut sink = WriterSink::new(std::io::LineWriter::new(stdout.lock()), args.output);
    let report = replay(plugin, &records, &options, &mut sink, &mut |line| eprintln!("error: {line}"))?;
    eprintln!(
        "{} records in {} batches, {} timer calls, {} restarts: {} output records, {} failed calls",
        report.records,
        report.batches,
        report.timer_calls,
        report.restarts,
        report.emitted,
        report.failures.len()
    );
    Ok(if report.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let config = args.plugin.config_json()?;
    let limits = args.plugin.limits()?;
    let (_engine, plugin) = load_plugin(&args.plugin)?;
    let records = host::bench::make_records(args.records, args.record_size);
    let rows = host::bench::run(&plugin, &config, &limits, &records, &args.batch_sizes, |line| eprintln!("{line}"))?;
    print!("{}", host::bench::render(&rows, args.record_size));
    let met = rows.iter().all(host::bench::BenchRow::meets_targets);
    Ok(if args.check && !met { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Runs an async command on a multi-threaded runtime.
fn block_on(future: impl std::future::Future<Output = anyhow::Result<ExitCode>>) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(future)
}

/// Sets `stop` on the first SIGINT or SIGTERM; a second SIGINT exits at once.
/// Returns at SIGINT (Ctrl-C) or SIGTERM.
async fn until_interrupted() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted.context("cannot wait for Ctrl-C"),
        _ = term.recv() => Ok(()),
    }
}

fn stop_on_signals(stop: tokio::sync::watch::Sender<bool>) {
    tokio::spawn(async move {
        if let Err(e) = until_interrupted().await {
            tracing::warn!("{e:#}; stop with SIGKILL");
            return;
        }
        eprintln!("stopping: finishing the batches in flight and checkpointing (Ctrl-C again to quit now)");
        let _ = stop.send(true);
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(130);
        }
    });
}

/// Hot swap: every trigger (--watch, SIGHUP, --control-addr) feeds one
/// coordinator, which checks new logic off the hot path and hands it to the
/// shards at batch boundaries. Keep the watcher alive for the run.
async fn start_hot_swap(
    args: &host::cli::HotSwapArgs,
    plugin_args: &PluginArgs,
    engine: PluginEngine,
    plugin: Arc<Plugin>,
    settings: host::plugin::InstanceSettings,
    progress: Arc<host::consumer::Progress>,
) -> anyhow::Result<(Arc<host::swap::SwapHub>, Option<host::swap::watch::FileWatcher>)> {
    let policy = host::swap::SwapPolicy { on_rejected_state: args.on_rejected_state, probation_batches: args.swap_probation };
    let hub = host::swap::SwapHub::new(plugin, policy);
    let (swaps, swap_requests) = tokio::sync::mpsc::channel(16);
    let context = host::swap::SwapContext {
        engine,
        cache: plugin_args.cache(),
        settings,
        progress,
        shard_timeout: Duration::from_secs(60),
    };
    tokio::spawn(host::swap::coordinate(hub.clone(), context, swap_requests, |result| {
        eprintln!("swap: {}: {}", result.outcome, result.message)
    }));
    let watcher = match args.watch {
        true => Some(host::swap::watch::watch(&plugin_args.plugin, swaps.clone(), Default::default())?),
        false => None,
    };
    if let Some(addr) = &args.control_addr {
        host::swap::control::serve(addr, swaps.clone(), hub.clone()).await?;
    }
    reload_on_sighup(plugin_args.plugin.clone(), swaps);
    Ok((hub, watcher))
}

/// `host dev`: the embedded endpoint, a stream, seed 000's producers and a
/// consumer with the plugin, in one process, output printed as it comes.
async fn dev(args: DevArgs) -> anyhow::Result<ExitCode> {
    use host::kinesis::producer::{produce, ProducePlan, Source};
    let config = args.plugin.config_json()?;
    let limits = args.plugin.limits()?;
    let lag = seconds(args.lag, "--lag")?;
    let duration = args.duration.map(|s| seconds(s, "--duration")).transpose()?;
    let (engine, plugin) = tokio::task::block_in_place(|| load_plugin(&args.plugin))?;
    let local = host::local::LocalKinesis::start(host::local::LocalOptions { port: args.port, ..Default::default() }).await?;
    let url = local.endpoint_url();
    let client = host::kinesis::connect(&host::kinesis::AwsOptions { endpoint_url: Some(url.clone()), ..Default::default() }).await?;
    host::kinesis::admin::create(&client, &args.stream, args.shards).await?;
    host::kinesis::admin::wait_active(&client, &args.stream, Duration::from_secs(30)).await?;
    let sources: Vec<Source> = vec![
        Source { ip: "8.8.8.8".into(), interval: Duration::from_secs(2), lag: Duration::ZERO },
        Source { ip: "8.8.8.9".into(), interval: Duration::from_secs(5), lag },
    ];
    eprintln!(
        "dev: Kinesis on {url} (stream `{}`, {} shard(s); the AWS CLI, boto3 and `host run --endpoint-url {url}` can join); \
         producing 8.8.8.8 every 2 s and 8.8.8.9 every 5 s{}; consuming with {}. {}",
        args.stream,
        args.shards,
        if lag.is_zero() { String::new() } else { format!(" ({} s late)", lag.as_secs_f64()) },
        args.plugin.plugin.display(),
        match duration {
            Some(d) => format!("Stopping after {} s.", d.as_secs_f64()),
            None => "Ctrl-C stops.".into(),
        }
    );
    let producer = {
        let (client, stream) = (client.clone(), args.stream.clone());
        tokio::spawn(async move { produce(&client, &stream, ProducePlan::Sources(sources), None, None, |_| {}).await })
    };
    let dir = tempfile::tempdir().context("cannot create a directory for the checkpoints")?;
    let consumer = host::consumer::ConsumerConfig {
        start: StartPosition::TrimHorizon,
        status_interval: Duration::from_secs(86_400 * 365),
        plugin_config: config,
        limits,
        ..host::consumer::ConsumerConfig::new("dev", &args.stream)
    };
    let progress = Arc::new(host::consumer::Progress::default());
    let settings = consumer.instance_settings("");
    let (hub, _watcher) = start_hot_swap(&args.hot_swap, &args.plugin, engine, plugin, settings, progress.clone()).await?;
    let (stop, _) = tokio::sync::watch::channel(false);
    stop_on_signals(stop.clone());
    if let Some(duration) = duration {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            let _ = stop.send(true);
        });
    }
    let store = host::checkpoint::CheckpointStore::open(&dir.path().join("checkpoints.db"))?;
    let sink = Arc::new(host::sink::Sink::stdout(args.output));
    let report = host::consumer::run(client, hub, store, sink, consumer, progress, stop, |_| {}).await;
    producer.abort();
    local.stop().await;
    let report = report?;
    eprintln!("dev: stopped after {} records", report.records);
    Ok(ExitCode::SUCCESS)
}

/// SIGHUP: swap to whatever the --plugin file holds now.
fn reload_on_sighup(path: std::path::PathBuf, swaps: tokio::sync::mpsc::Sender<host::swap::SwapRequest>) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; use --watch or --control-addr to swap");
        return;
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            eprintln!("swap: SIGHUP: reloading {}", path.display());
            let request = host::swap::SwapRequest::Swap { source: host::swap::PluginSource::Path(path.clone()), reply: None };
            if swaps.send(request).await.is_err() {
                return;
            }
        }
    });
}

async fn swap(args: SwapArgs) -> anyhow::Result<ExitCode> {
    use host::swap::control::{call, ControlCall};
    let request = match (&args.plugin, args.rollback) {
        (Some(path), _) => {
            let bytes = std::fs::read(path).with_context(|| format!("cannot read --plugin {}", path.display()))?;
            let name = std::path::absolute(path).unwrap_or_else(|_| path.clone()).display().to_string();
            ControlCall::Swap { name, bytes }
        }
        (None, true) => ControlCall::Rollback,
        (None, false) => ControlCall::Status,
    };
    let (status, answer) = call(&args.control_addr, request).await?;
    if args.status {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(ExitCode::SUCCESS);
    }
    let outcome = answer["outcome"].as_str().unwrap_or("?");
    let message = answer["message"].as_str().unwrap_or_default();
    if status == 200 {
        println!("{outcome}: {message}");
        Ok(ExitCode::SUCCESS)
    } else {
        anyhow::bail!("{outcome}: {message}")
    }
}

fn start_position(args: &RunArgs) -> anyhow::Result<StartPosition> {
    let sequence = || {
        args.start_sequence_number
            .clone()
            .ok_or_else(|| anyhow::anyhow!("--start-position {:?} needs --start-sequence-number", args.start_position))
    };
    Ok(match args.start_position {
        StartAt::Latest => StartPosition::Latest,
        StartAt::TrimHorizon => StartPosition::TrimHorizon,
        StartAt::AtSequenceNumber => StartPosition::AtSequenceNumber(sequence()?),
        StartAt::AfterSequenceNumber => StartPosition::AfterSequenceNumber(sequence()?),
        StartAt::AtTimestamp => {
            let text = args
                .start_timestamp
                .as_deref()
                .context("--start-position AT_TIMESTAMP needs --start-timestamp (ISO-8601 or epoch ms)")?;
            let millis = text
                .parse::<i64>()
                .ok()
                .or_else(|| kinesis_processor_sdk::time::parse_timestamp_millis(text.as_bytes()))
                .with_context(|| format!("--start-timestamp {text:?} is neither ISO-8601 nor epoch milliseconds"))?;
            StartPosition::AtTimestamp(millis)
        }
    })
}

fn seconds(value: f64, flag: &str) -> anyhow::Result<Duration> {
    if !(value.is_finite() && value >= 0.0) {
        anyhow::bail!("{flag} must be a non-negative number of seconds");
    }
    Ok(Duration::from_secs_f64(value))
}

async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let config = args.plugin.config_json()?;
    let limits = args.plugin.limits()?;
    let start = start_position(&args)?;
    let store = host::checkpoint::CheckpointStore::open(&args.checkpoint_db)?;
    let client = host::kinesis::connect(&args.aws.options()).await?;
    let sink = match args.sink.split_once(':') {
        None if args.sink == "stdout" => host::sink::Sink::stdout(args.output),
        Some(("file", path)) => host::sink::Sink::file(std::path::Path::new(path), args.output)?,
        Some(("kinesis", stream)) if !stream.is_empty() => {
            host::sink::Sink::Stream { client: client.clone(), stream: stream.to_string() }
        }
        _ => anyhow::bail!("--sink {:?} must be `stdout`, `file:PATH` or `kinesis:STREAM`", args.sink),
    };
    let (engine, plugin) = tokio::task::block_in_place(|| load_plugin(&args.plugin))?;
    let status_interval = seconds(args.status_interval, "--status-interval")?;
    let consumer = host::consumer::ConsumerConfig {
        application: args.application.clone(),
        stream: args.stream.clone(),
        start,
        batch_size: args.batch_size,
        idle_time: Duration::from_millis(args.idle_time_ms),
        timer_interval: Duration::from_millis(args.timer_interval_ms.max(1)),
        checkpoint_every: args.checkpoint_every.max(1),
        max_records: args.max_records,
        idle_exit: args.idle_exit.map(|s| seconds(s, "--idle-exit")).transpose()?,
        shard_sync_interval: seconds(args.shard_sync_interval, "--shard-sync-interval")?.max(Duration::from_millis(100)),
        status_interval: if status_interval.is_zero() { Duration::from_secs(86_400 * 365) } else { status_interval },
        plugin_config: config,
        limits,
        failure: host::consumer::FailurePolicy {
            retries: args.retries,
            dead_letter: args.dead_letter.as_deref().map(|spec| host::dead_letter::DeadLetterSink::open(spec, &client)).transpose()?.map(Arc::new),
            max_record_age: args.max_record_age.map(|s| seconds(s, "--max-record-age")).transpose()?,
        },
    };
    if consumer.failure.max_record_age.is_some() && consumer.failure.dead_letter.is_none() {
        anyhow::bail!("--max-record-age needs --dead-letter file:PATH or kinesis:STREAM: skipped records must go somewhere");
    }
    let progress = Arc::new(host::consumer::Progress::default());
    if let Some(addr) = args.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot serve metrics on --metrics-addr {addr}"))?;
        let info = host::metrics::MetricsInfo { stream: args.stream.clone() };
        tokio::spawn(host::metrics::serve(listener, progress.clone(), info));
    }
    let settings = consumer.instance_settings("");
    let (hub, _watcher) = start_hot_swap(&args.hot_swap, &args.plugin, engine, plugin, settings, progress.clone()).await?;
    let (stop, _) = tokio::sync::watch::channel(false);
    stop_on_signals(stop.clone());
    let report = host::consumer::run(client, hub, store, Arc::new(sink), consumer, progress, stop, |line| {
        eprintln!("status: {line}")
    })
    .await?;
    eprintln!("stopped after {} records; checkpoints in {}", report.records, args.checkpoint_db.display());
    if !report.shards_stopped.is_empty() {
        for (shard, reason) in &report.shards_stopped {
            eprintln!("error: shard {shard} stopped: {reason}");
        }
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

async fn stream(command: StreamCommand) -> anyhow::Result<ExitCode> {
    use host::kinesis::admin;
    match command {
        StreamCommand::Create { name, shards, wait, aws } => {
            let client = host::kinesis::connect(&aws.options()).await?;
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
            let client = host::kinesis::connect(&aws.options()).await?;
            for name in admin::list(&client).await? {
                println!("{name}");
            }
        }
        StreamCommand::Describe { name, aws } => {
            let client = host::kinesis::connect(&aws.options()).await?;
            print!("{}", admin::describe(&client, &name).await?);
        }
        StreamCommand::Delete { name, aws } => {
            let client = host::kinesis::connect(&aws.options()).await?;
            admin::delete(&client, &name).await?;
            println!("stream {name} deleted");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn produce(args: ProduceArgs) -> anyhow::Result<ExitCode> {
    use host::kinesis::producer::{produce, ProducePlan, Source};
    let client = host::kinesis::connect(&args.aws.options()).await?;
    let plan = if let Some(count) = args.documents {
        ProducePlan::Documents { count, interval: seconds(args.interval, "--interval")? }
    } else if let Some(per_second) = args.rate {
        ProducePlan::Rate { per_second }
    } else if args.sources.is_empty() {
        ProducePlan::Sources(vec![
            Source { ip: "8.8.8.8".into(), interval: Duration::from_secs(2), lag: Duration::ZERO },
            Source { ip: "8.8.8.9".into(), interval: Duration::from_secs(5), lag: Duration::ZERO },
        ])
    } else {
        ProducePlan::Sources(args.sources.clone())
    };
    // Fail fast, with the fix, when the stream is not there.
    host::kinesis::admin::shards(&client, &args.stream).await?;
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

async fn local(args: LocalArgs) -> anyhow::Result<ExitCode> {
    let endpoint = host::local::LocalKinesis::start(host::local::LocalOptions {
        port: args.port,
        data_dir: args.data_dir.clone(),
        shard_limit: args.shard_limit,
        enforce_limits: args.enforce_limits,
        iterator_ttl_seconds: args.iterator_ttl_seconds,
        ..Default::default()
    })
    .await?;
    eprintln!(
        "Kinesis endpoint on {} ({}); use --endpoint-url {} (any credentials). Ctrl-C stops.",
        endpoint.endpoint_url(),
        match &args.data_dir {
            Some(dir) => format!("data in {}", dir.display()),
            None => "in memory".to_string(),
        },
        endpoint.endpoint_url()
    );
    until_interrupted().await?;
    endpoint.stop().await;
    Ok(ExitCode::SUCCESS)
}

async fn bench_swap(args: BenchSwapArgs) -> anyhow::Result<ExitCode> {
    let engine = PluginEngine::new()?;
    let options = host::swap_bench::SwapBenchOptions {
        counter: args.counter,
        changed: args.changed,
        rounds: args.rounds as usize,
        rate: args.rate,
    };
    let report = host::swap_bench::run(&engine, &options, |line| eprintln!("{line}")).await?;
    print!("{}", host::swap_bench::render(&report));
    Ok(ExitCode::SUCCESS)
}

async fn bench_stream(args: BenchStreamArgs) -> anyhow::Result<ExitCode> {
    let engine = PluginEngine::new()?;
    let cache = host::plugin::CompiledCache::default_dir().map(host::plugin::CompiledCache::new);
    let counter = Arc::new(Plugin::load(&engine, &args.counter, cache.as_ref())?);
    let echo = Arc::new(Plugin::load(&engine, &args.echo, cache.as_ref())?);
    let options = host::stream_bench::StreamBenchOptions {
        records: args.records,
        shards: args.shards,
        rounds: args.rounds as usize,
        counter: args.counter.clone(),
        echo: args.echo.clone(),
        python: (args.python != "none").then(|| args.python.clone()),
        seed_worker: args.seed_worker.clone(),
        latency_seconds: args.latency_seconds,
    };
    let report = host::stream_bench::run(&options, counter, echo, |line| eprintln!("{line}")).await?;
    print!("{}", host::stream_bench::render(&report, args.shards));
    Ok(ExitCode::SUCCESS)
}
