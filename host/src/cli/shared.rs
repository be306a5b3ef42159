//! What several commands share: the plugin and AWS arguments, hot swap
//! wiring, signals, and the async runtime.

use crate::plugin::{CompiledCache, InstanceSettings, Plugin, PluginEngine, PluginLimits};
use crate::progress::Progress;
use crate::shutdown::Shutdown;
use crate::swap::control::{token_file, ControlAddr};
use crate::swap::{OnRejectedState, PluginSource, SwapContext, SwapHub, SwapPolicy, SwapRequest};
use anyhow::{bail, Context};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Which plugin, with which config and limits.
#[derive(Debug, Args)]
pub struct PluginArgs {
    /// The processor component (`.wasm` built for wasm32-wasip2). With
    /// --lease-table it seeds a new table; a group runs its own logic.
    #[arg(long, value_name = "FILE")]
    pub plugin: Option<PathBuf>,

    /// The plugin's JSON config, e.g. '{"window_seconds": 60}'.
    #[arg(long, value_name = "JSON", conflicts_with = "config_file")]
    pub config: Option<String>,

    /// Read the plugin's JSON config from a file.
    #[arg(long, value_name = "FILE")]
    pub config_file: Option<PathBuf>,

    /// Most linear memory one plugin instance may use, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = (PluginLimits::default().memory_bytes >> 20) as u64)]
    pub memory_limit_mb: u64,

    /// Longest one plugin call may run, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = PluginLimits::default().call_timeout.as_millis() as u64)]
    pub call_timeout_ms: u64,

    /// Most output one plugin call may emit, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = (PluginLimits::default().max_output_bytes >> 20) as u64)]
    pub max_output_mb: u64,

    /// Where compiled plugins are cached (default: the user cache directory).
    #[arg(long, value_name = "DIR", env = "HOST_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// The most the cache may take, in MiB: a new entry lets the least
    /// recently used ones go.
    #[arg(long, value_name = "MIB", env = "HOST_CACHE_MAX_MB", default_value_t = crate::plugin::DEFAULT_MAX_BYTES >> 20)]
    pub cache_max_mb: u64,

    /// Compile the plugin every time instead of using the cache.
    #[arg(long)]
    pub no_cache: bool,
}

impl PluginArgs {
    /// The config string, checked to be JSON so a typo is caught here
    /// rather than reported by the plugin.
    pub fn config_json(&self) -> anyhow::Result<String> {
        let (text, origin) = match (&self.config, &self.config_file) {
            (Some(text), _) => (text.clone(), "--config".to_string()),
            (None, Some(path)) => (
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read --config-file {}", path.display()))?,
                format!("--config-file {}", path.display()),
            ),
            (None, None) => return Ok("{}".into()),
        };
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&text) {
            bail!("{origin} is not valid JSON ({e}); pass an object such as '{{\"window_seconds\": 60}}'");
        }
        Ok(text)
    }

    /// The per-instance limits.
    pub fn limits(&self) -> anyhow::Result<PluginLimits> {
        if self.memory_limit_mb == 0 || self.call_timeout_ms == 0 || self.max_output_mb == 0 {
            bail!("--memory-limit-mb, --call-timeout-ms and --max-output-mb must be at least 1");
        }
        Ok(PluginLimits {
            memory_bytes: usize::try_from(self.memory_limit_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX),
            call_timeout: Duration::from_millis(self.call_timeout_ms),
            max_output_bytes: usize::try_from(self.max_output_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX),
            ..PluginLimits::default()
        })
    }

    /// The compiled-component cache, unless disabled.
    pub fn cache(&self) -> Option<CompiledCache> {
        if self.no_cache {
            return None;
        }
        let max_bytes = self.cache_max_mb.saturating_mul(1 << 20);
        self.cache_dir
            .clone()
            .or_else(CompiledCache::default_dir)
            .map(|d| CompiledCache::new(d).with_max_bytes(max_bytes))
    }
}

impl PluginArgs {
    /// Loads the plugin named on the command line (compiled cache unless
    /// `--no-cache`).
    pub fn load(&self) -> anyhow::Result<(PluginEngine, Arc<Plugin>)> {
        let engine = PluginEngine::new()?;
        let path = self.file()?;
        let plugin = Plugin::load(&engine, path, self.cache().as_ref())?;
        tracing::info!(plugin = %path.display(), sha256 = plugin.sha256(), cache = ?plugin.cache_outcome(), "plugin loaded");
        Ok((engine, Arc::new(plugin)))
    }

    /// The --plugin file, which every command but a group worker needs.
    pub fn file(&self) -> anyhow::Result<&std::path::Path> {
        self.plugin.as_deref().context("give --plugin FILE: the processor component (.wasm) to run")
    }
}

/// Which AWS account, region and endpoint (the usual AWS conventions).
#[derive(Debug, Clone, Args)]
pub struct AwsArgs {
    /// AWS region, e.g. eu-west-1.
    #[arg(long, env = "AWS_REGION")]
    pub region: Option<String>,

    /// Named profile from the AWS config files.
    #[arg(long, env = "AWS_PROFILE")]
    pub profile: Option<String>,

    /// A Kinesis-compatible endpoint, e.g. http://localhost:4567 (any
    /// credentials are accepted there).
    #[arg(long, value_name = "URL", env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
}

impl AwsArgs {
    /// The connection options.
    pub fn options(&self) -> crate::kinesis::AwsOptions {
        crate::kinesis::AwsOptions {
            region: self.region.clone(),
            profile: self.profile.clone(),
            endpoint_url: self.endpoint_url.clone(),
        }
    }
}

/// How a running host takes new logic (`host run`, `host dev`).
#[derive(Debug, Args)]
pub struct HotSwapArgs {
    /// Hot-swap the logic whenever the --plugin file changes on disk
    /// (SIGHUP also reloads it, with or without this flag). `--watch DIR`
    /// also runs DIR/build.sh (a `host new` project) whenever one of its
    /// sources changes, so a save is a test run, a build and a swap.
    #[arg(long, value_name = "DIR", num_args = 0..=1, help_heading = "Hot swap")]
    pub watch: Option<Option<PathBuf>>,

    /// Accept `host swap` on this address: 127.0.0.1:PORT, [::1]:PORT or
    /// unix:PATH (off by default; loopback only).
    #[arg(long, value_name = "ADDR", help_heading = "Hot swap")]
    pub control_addr: Option<ControlAddr>,

    /// Write the token `host swap` must send here (0600), instead of the
    /// user's data directory (give `host swap` the same path).
    #[arg(long, value_name = "FILE", requires = "control_addr", help_heading = "Hot swap")]
    pub control_token_file: Option<PathBuf>,

    /// When new logic rejects the running logic's state: refuse the swap,
    /// or start the new logic with fresh state.
    #[arg(long, value_name = "WHAT", default_value = "refuse", value_parser = on_rejected_state(), help_heading = "Hot swap")]
    pub on_rejected_state: OnRejectedState,

    /// Batches per shard new logic must get through; a failure within them
    /// rolls the swap back (previous plugin, pre-swap state and position).
    #[arg(long, value_name = "N", default_value_t = 3, help_heading = "Hot swap")]
    pub swap_probation: u32,
}

fn on_rejected_state() -> impl TypedValueParser<Value = OnRejectedState> {
    PossibleValuesParser::new(["refuse", "fresh"]).map(|s| {
        if s == "fresh" {
            OnRejectedState::Fresh
        } else {
            OnRejectedState::Refuse
        }
    })
}

impl HotSwapArgs {
    /// Starts hot swap: every trigger (--watch, SIGHUP, --control-addr)
    /// feeds one coordinator, which checks new logic off the hot path and
    /// hands it to the shards at batch boundaries. Keep the returned
    /// triggers alive for the run.
    pub async fn start(
        &self,
        plugin_args: &PluginArgs,
        engine: PluginEngine,
        plugin: Arc<Plugin>,
        settings: InstanceSettings,
        progress: Arc<Progress>,
        group: Option<crate::group::GroupRun>,
    ) -> anyhow::Result<(Arc<SwapHub>, HotSwapTriggers)> {
        let policy = SwapPolicy { on_rejected_state: self.on_rejected_state, probation_batches: self.swap_probation };
        let hub = SwapHub::new(plugin, policy);
        let (swaps, swap_requests) = tokio::sync::mpsc::channel(16);
        let (results, results_rx) = tokio::sync::mpsc::unbounded_channel();
        let context = SwapContext {
            engine,
            cache: plugin_args.cache(),
            settings: settings.clone(),
            progress: progress.clone(),
            shard_timeout: Duration::from_secs(60),
        };
        tokio::spawn(crate::swap::coordinate(hub.clone(), context, swap_requests, move |result| {
            eprintln!("swap: {}: {}", result.outcome, result.message);
            let _ = results.send(result.clone());
        }));
        // A group worker's triggers publish to the group; the follower
        // alone swaps this process, to the group's logic.
        let triggers = match group {
            Some(group) => group.spawn(hub.clone(), swaps, results_rx, settings, progress),
            None => swaps,
        };
        let watcher = match &self.watch {
            Some(_) => Some(crate::swap::file_watch::watch(plugin_args.file()?, triggers.clone(), Default::default())?),
            None => None,
        };
        let project = match &self.watch {
            Some(Some(dir)) => Some(crate::swap::project_watch::watch_project(dir)?),
            _ => None,
        };
        let control = match &self.control_addr {
            Some(addr) => {
                let token_file = token_file(addr, self.control_token_file.as_deref())?;
                let control = crate::swap::control::serve(addr, &token_file, triggers.clone(), hub.clone()).await?;
                eprintln!("control: `host swap --control-addr {addr}` accepted (token in {})", token_file.display());
                Some(control)
            }
            None => None,
        };
        if let Some(path) = &plugin_args.plugin {
            reload_on_sighup(path.clone(), triggers);
        }
        Ok((hub, HotSwapTriggers { _watcher: watcher, _project: project, _control: control }))
    }
}

/// What keeps hot swap's triggers going: the file watcher and the control
/// endpoint's token (removed when this is dropped, at the end of the run).
pub struct HotSwapTriggers {
    _watcher: Option<crate::swap::file_watch::FileWatcher>,
    _project: Option<crate::swap::project_watch::ProjectWatcher>,
    _control: Option<crate::swap::control::ControlEndpoint>,
}

/// SIGHUP: swap to whatever the --plugin file holds now.
fn reload_on_sighup(path: PathBuf, swaps: tokio::sync::mpsc::Sender<SwapRequest>) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; use --watch or --control-addr to swap");
        return;
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            eprintln!("swap: SIGHUP: reloading {}", path.display());
            let request = SwapRequest::Swap { source: PluginSource::Path(path.clone()), only: None, reply: None };
            if swaps.send(request).await.is_err() {
                return;
            }
        }
    });
}

/// Runs an async command on a multi-threaded runtime.
pub fn block_on(future: impl std::future::Future<Output = anyhow::Result<ExitCode>>) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(future)
}

/// Returns at SIGINT (Ctrl-C) or SIGTERM.
pub async fn until_interrupted() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted.context("cannot wait for Ctrl-C"),
        _ = term.recv() => Ok(()),
    }
}

/// Triggers `shutdown` on the first SIGINT or SIGTERM; a second SIGINT
/// exits at once.
pub fn stop_on_signals(shutdown: Shutdown) {
    tokio::spawn(async move {
        if let Err(e) = until_interrupted().await {
            tracing::warn!("{e:#}; stop with SIGKILL");
            return;
        }
        eprintln!("stopping: finishing the batches in flight and checkpointing (Ctrl-C again to quit now)");
        shutdown.trigger();
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(130);
        }
    });
}

/// A duration given in seconds on the command line.
pub fn seconds(value: f64, flag: &str) -> anyhow::Result<Duration> {
    if !(value.is_finite() && value >= 0.0) {
        bail!("{flag} must be a non-negative number of seconds");
    }
    Ok(Duration::from_secs_f64(value))
}
