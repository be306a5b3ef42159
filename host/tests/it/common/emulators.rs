//! Both emulators behind one fixture: ferrokinesis in-process, and
//! kinesis-mock (npm `kinesis-local`) at `KINESIS_MOCK_URL`, which `make
//! test` starts. `on_both_emulators!(name)` declares a test for each.

use super::*;
use host::checkpoint::SqliteStore;
use host::consumer::{ConsumerConfig, RunReport};
use host::kinesis::producer::{put_all, Outgoing};
use host::kinesis::{admin, connect, AwsOptions};
use host::local::{LocalKinesis, LocalOptions};
use host::plugin::{PluginEngine, PluginLimits};
use host::sink::{OutputFormat, Sink};
use host::source::StartPosition;
use std::sync::Arc;
use std::time::Duration;

/// Which emulator a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emulator {
    /// `ferrokinesis`, in this process.
    Ferrokinesis,
    /// kinesis-mock (npm `kinesis-local`) at `KINESIS_MOCK_URL`, started by
    /// `make test` (host/tests/with-emulators.sh).
    KinesisMock,
}

pub struct Fixture {
    /// The in-process emulator, when that is the target.
    pub local: Option<LocalKinesis>,
    pub client: aws_sdk_kinesis::Client,
    pub engine: PluginEngine,
    pub dir: tempfile::TempDir,
    /// Appended to stream names: kinesis-mock is shared by parallel tests.
    pub suffix: String,
    /// Ends the suite naming this test if it hangs.
    pub _watched: super::watchdog::Watched,
}

/// The fixture, or `None` (a skip, see [`super::skip`]) when kinesis-mock is not running.
pub async fn fixture_on(emulator: Emulator, options: LocalOptions) -> Option<Fixture> {
    let watched = super::watchdog::watch();
    let (local, url) = match emulator {
        Emulator::Ferrokinesis => {
            let local = LocalKinesis::start(LocalOptions { port: 0, ..options }).await.expect("emulator starts");
            let url = local.endpoint_url();
            (Some(local), url)
        }
        Emulator::KinesisMock => match std::env::var("KINESIS_MOCK_URL") {
            Ok(url) => (None, url),
            Err(_) => {
                super::skip("", "kinesis-mock is not running (KINESIS_MOCK_URL unset); `make test` starts it");
                return None;
            }
        },
    };
    let client = connect(&AwsOptions { endpoint_url: Some(url), ..Default::default() }).await.expect("client");
    let suffix = format!(
        "-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() % 1_000_000_000)
            .unwrap_or(0)
    );
    Some(Fixture {
        local,
        client,
        engine: PluginEngine::new().expect("engine"),
        dir: tempfile::tempdir().expect("tempdir"),
        suffix,
        _watched: watched,
    })
}

pub async fn fixture(options: LocalOptions) -> Fixture {
    fixture_on(Emulator::Ferrokinesis, options).await.expect("ferrokinesis always runs")
}

/// Declares a behaviour test for both emulators.
#[macro_export]
macro_rules! on_both_emulators {
    ($name:ident) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ferrokinesis() {
                if let Some(f) = fixture_on(Emulator::Ferrokinesis, LocalOptions::default()).await {
                    $crate::common::within(super::$name(f)).await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn kinesis_mock() {
                if let Some(f) = fixture_on(Emulator::KinesisMock, LocalOptions::default()).await {
                    $crate::common::within(super::$name(f)).await;
                }
            }
        }
    };
}

impl Fixture {
    /// The stream's real name (with this fixture's suffix).
    pub fn name(&self, stream: &str) -> String {
        format!("{stream}{}", self.suffix)
    }

    pub async fn stream(&self, name: &str, shards: i32) {
        let name = self.name(name);
        admin::create(&self.client, &name, shards).await.expect("create");
        admin::wait_active(&self.client, &name, Duration::from_secs(20)).await.expect("active");
    }

    pub async fn stop(self) {
        if let Some(local) = self.local {
            local.stop().await;
        }
    }

    /// Puts `n` records numbered from `from`, spread over 16 keys.
    pub async fn put_numbered(&self, stream: &str, from: u64, n: u64) {
        let records: Vec<Outgoing> = (from..from + n)
            .map(|i| Outgoing { partition_key: format!("key-{}", i % 16), data: format!("n-{i}").into_bytes() })
            .collect();
        put_all(&self.client, &self.name(stream), &records).await.expect("put");
    }

    pub fn config(&self, stream: &str, plugin_config: &str) -> ConsumerConfig {
        ConsumerConfig {
            application: "test".into(),
            stream: self.name(stream),
            start: StartPosition::TrimHorizon,
            batch_size: 100,
            idle_time: Duration::from_millis(50),
            timer_interval: Duration::from_millis(200),
            checkpoint_every: 1,
            max_records: None,
            idle_exit: Some(Duration::from_millis(1500)),
            shard_sync_interval: Duration::from_millis(300),
            status_interval: Duration::from_secs(3600),
            plugin_config: plugin_config.into(),
            limits: PluginLimits::default(),
            failure: Default::default(),
        }
    }

    pub fn store(&self) -> SqliteStore {
        SqliteStore::open(&self.dir.path().join("checkpoints.db")).expect("store")
    }

    pub fn out_path(&self) -> std::path::PathBuf {
        self.dir.path().join("out.jsonl")
    }

    /// Runs the consumer with `plugin` until it stops by itself.
    pub async fn run(&self, plugin: &str, config: ConsumerConfig) -> anyhow::Result<RunReport> {
        let plugin = load(&self.engine, plugin);
        let sink = Sink::file(&self.out_path(), OutputFormat::Json).expect("sink");
        let (stop, _) = tokio::sync::watch::channel(false);
        host::consumer::Consumer::new(self.client.clone(), plugin, self.store(), Arc::new(sink), config).run(stop).await
    }
}
