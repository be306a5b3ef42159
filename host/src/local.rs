//! An embedded Kinesis-compatible endpoint (the `ferrokinesis` emulator,
//! in-process): `host local`, and the integration tests' Kinesis.

use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Largest request body the endpoint takes: a 10 MiB record, base64
/// encoded, with room for the JSON around it.
const MAX_REQUEST_BODY_BYTES: usize = 16 << 20;

/// How the embedded endpoint behaves.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Persist streams and records here (WAL + snapshots); in memory when `None`.
    pub data_dir: Option<PathBuf>,
    /// Most open shards across all streams.
    pub shard_limit: u32,
    /// How long a new stream stays CREATING, in milliseconds.
    pub create_stream_ms: u64,
    /// How long a reshard keeps the stream UPDATING, in milliseconds.
    pub update_stream_ms: u64,
    /// Throttle reads and writes like AWS does per shard.
    pub enforce_limits: bool,
    /// Seconds before a shard iterator expires.
    pub iterator_ttl_seconds: u64,
    /// The one region the endpoint plays (in every ARN). Streams are not
    /// kept per region: a client signing for another region sees the same
    /// streams, as with kinesalite and kinesis-mock.
    pub region: String,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            port: 4567,
            data_dir: None,
            shard_limit: 256,
            create_stream_ms: 50,
            update_stream_ms: 50,
            enforce_limits: false,
            iterator_ttl_seconds: 300,
            region: "us-east-1".into(),
        }
    }
}

/// A running endpoint; stopped on [`LocalKinesis::stop`] or drop.
pub struct LocalKinesis {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl LocalKinesis {
    /// Binds and starts serving on the current tokio runtime.
    pub async fn start(options: LocalOptions) -> anyhow::Result<LocalKinesis> {
        let store_options = ferrokinesis::store::StoreOptions {
            create_stream_ms: options.create_stream_ms,
            delete_stream_ms: options.create_stream_ms,
            update_stream_ms: options.update_stream_ms,
            shard_limit: options.shard_limit,
            enforce_limits: options.enforce_limits,
            iterator_ttl_seconds: options.iterator_ttl_seconds,
            durable: options.data_dir.clone().map(|state_dir| ferrokinesis::store::DurableStateOptions {
                state_dir,
                snapshot_interval_secs: 30,
                max_retained_bytes: None,
            }),
            aws_region: options.region.clone(),
            ..Default::default()
        };
        if let Some(dir) = &options.data_dir {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create --data-dir {}", dir.display()))?;
        }
        let (app, _store) = ferrokinesis::create_app(store_options);
        // Room for a PutRecord of a 10 MiB record (base64 in JSON), as
        // Kinesis allows once a stream's max record size is raised.
        let app = app.layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BODY_BYTES));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.port)).await.with_context(|| {
            format!("cannot listen on 127.0.0.1:{} (is another endpoint running there?)", options.port)
        })?;
        let addr = listener.local_addr()?;
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        // Plain HTTP/1.1, as the AWS SDKs speak to an `http://` endpoint.
        // (ferrokinesis' own server brings OpenTelemetry, gRPC and TOML
        // along; axum alone serves its router.)
        let serve = axum::serve(listener, app).with_graceful_shutdown(async {
            let _ = stopped.await;
        });
        let server = tokio::spawn(async move { serve.await });
        Ok(LocalKinesis { addr, shutdown: Some(shutdown), server: Some(server) })
    }

    /// `http://127.0.0.1:PORT`, for `--endpoint-url`.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and waits for open connections to close.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

impl Drop for LocalKinesis {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}
