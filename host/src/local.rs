//! An embedded Kinesis- and DynamoDB-compatible endpoint, in-process: the
//! `ferrokinesis` emulator for Kinesis and `dynoxide` for DynamoDB (lease
//! tables), on one port, told apart by the request's `X-Amz-Target`. For
//! `host local`, `host dev`, and the integration tests. It answers local
//! programs only: a request a web page could send is refused.

use anyhow::Context;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
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
    /// How long a SubscribeToShard subscription lasts, in milliseconds (5
    /// minutes, as on AWS; tests shorten it to see re-subscriptions).
    pub subscription_ms: u64,
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
            subscription_ms: 300_000,
            region: "us-east-1".into(),
        }
    }
}

/// A running endpoint; stopped on [`LocalKinesis::stop`] or drop.
pub struct LocalKinesis {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// Stops the embedded DynamoDB (its own loopback listener, reached
    /// only through this endpoint).
    dynamo_shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    /// DynamoDB calls served, by operation (for `host-bench leases`).
    dynamo_calls: Calls,
}

/// DynamoDB calls by operation name: how many, and their request bytes.
type Calls = std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, (u64, u64)>>>;

/// Where the router sends DynamoDB calls, and their count.
#[derive(Clone)]
struct Dynamo {
    addr: SocketAddr,
    calls: Calls,
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
            subscribe_to_shard_session_ms: options.subscription_ms,
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
        let (addr, dynamo_shutdown) = start_dynamodb(options.data_dir.as_deref()).await?;
        let dynamo = Dynamo { addr, calls: Calls::default() };
        let dynamo_calls = dynamo.calls.clone();
        let (app, _store) = ferrokinesis::create_app(store_options);
        let app = app.layer(axum::middleware::from_fn_with_state(dynamo, route_dynamodb));
        // Room for a PutRecord of a 10 MiB record (base64 in JSON), as
        // Kinesis allows once a stream's max record size is raised.
        let app = app.layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BODY_BYTES));
        // Outermost: a web page never reaches the streams or lease items.
        let app = app.layer(axum::middleware::from_fn(only_local_programs));
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
        Ok(LocalKinesis {
            addr,
            shutdown: Some(shutdown),
            server: Some(server),
            dynamo_shutdown: Some(dynamo_shutdown),
            dynamo_calls,
        })
    }

    /// `http://127.0.0.1:PORT`, for `--endpoint-url`.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// DynamoDB calls served so far, by operation (`UpdateItem`, `Scan`, …).
    pub fn dynamodb_calls(&self) -> std::collections::BTreeMap<String, u64> {
        let calls = self.dynamo_calls.lock().map(|c| c.clone()).unwrap_or_default();
        calls.into_iter().map(|(op, (n, _))| (op, n)).collect()
    }

    /// The request bytes of the DynamoDB calls served so far, by operation.
    pub fn dynamodb_bytes(&self) -> std::collections::BTreeMap<String, u64> {
        let calls = self.dynamo_calls.lock().map(|c| c.clone()).unwrap_or_default();
        calls.into_iter().map(|(op, (_, bytes))| (op, bytes)).collect()
    }

    /// Stops serving and waits for open connections to close.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(shutdown) = self.dynamo_shutdown.take() {
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
        if let Some(shutdown) = self.dynamo_shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Starts dynoxide on a loopback port of its own (in memory, or in
/// `data_dir/dynamodb.sqlite`); returns its address and its stop.
async fn start_dynamodb(
    data_dir: Option<&std::path::Path>,
) -> anyhow::Result<(SocketAddr, tokio::sync::oneshot::Sender<()>)> {
    let db = match data_dir {
        Some(dir) => {
            let path = dir.join("dynamodb.sqlite");
            dynoxide::Database::new(&path.to_string_lossy())
                .map_err(|e| anyhow::anyhow!("cannot open the embedded DynamoDB at {}: {e}", path.display()))?
        }
        None => dynoxide::Database::memory().map_err(|e| anyhow::anyhow!("cannot start the embedded DynamoDB: {e}"))?,
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.context("embedded DynamoDB listener")?;
    let addr = listener.local_addr()?;
    let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(dynoxide::server::serve_with_shutdown(listener, db, async {
        let _ = stopped.await;
    }));
    Ok((addr, shutdown))
}

/// Refuses what a web page could send (see [`crate::loopback`]) with
/// 403, in the JSON error shape the AWS SDKs read; answers no CORS
/// preflight and grants no origin.
async fn only_local_programs(request: Request, next: Next) -> Response {
    if let Err(why) = crate::loopback::from_local_program(request.headers()) {
        static REFUSED: crate::loopback::Refusals = crate::loopback::Refusals::new();
        if let Some(count) = REFUSED.count() {
            tracing::warn!("host local: refused {} {} ({count} so far): {why}", request.method(), request.uri().path());
        }
        let body = serde_json::json!({"__type": "AccessDeniedException", "message": why});
        return (axum::http::StatusCode::FORBIDDEN, axum::Json(body)).into_response();
    }
    let mut response = next.run(request).await;
    let granted: Vec<_> =
        response.headers().keys().filter(|name| name.as_str().starts_with("access-control-")).cloned().collect();
    for name in granted {
        response.headers_mut().remove(name);
    }
    response
}

/// Sends DynamoDB calls (by their `X-Amz-Target`) to the embedded DynamoDB;
/// everything else is Kinesis.
async fn route_dynamodb(State(dynamo): State<Dynamo>, request: Request, next: Next) -> Response {
    let target = request.headers().get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let Some((_, op)) = target.split_once('.').filter(|(service, _)| service.starts_with("DynamoDB")) else {
        return next.run(request).await;
    };
    let length = request.headers().get("content-length").and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Ok(mut calls) = dynamo.calls.lock() {
        let tally = calls.entry(op.to_string()).or_default();
        tally.0 += 1;
        tally.1 += length.unwrap_or(0);
    }
    match forward(dynamo.addr, request).await {
        Ok(response) => response,
        Err(e) => (axum::http::StatusCode::BAD_GATEWAY, format!("embedded DynamoDB: {e:#}")).into_response(),
    }
}

/// One request to the embedded DynamoDB and its answer, over loopback.
async fn forward(addr: SocketAddr, request: Request) -> anyhow::Result<Response> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, MAX_REQUEST_BODY_BYTES).await.context("reading the request")?;
    let stream = tokio::net::TcpStream::connect(addr).await.context("connecting")?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let response = sender.send_request(hyper::Request::from_parts(parts, http_body_util::Full::new(body))).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.context("reading the answer")?.to_bytes();
    Ok(Response::from_parts(parts, axum::body::Body::from(body)))
}
