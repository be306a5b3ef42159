//! The control endpoint of a running host (`host run --control-addr`) and
//! its client (`host swap`). Off by default. Whoever reaches it can change
//! the running logic, so it binds only to loopback or a unix socket.
//!
//! `POST /swap` (body: the component's bytes, header `x-plugin-name`),
//! `POST /rollback`, and `GET /status`. Answers are JSON: a [`SwapResult`]
//! (status 200 when the logic changed or already ran, 409 when refused).

use super::{PluginSource, SwapHub, SwapOutcome, SwapRequest, SwapResult};
use anyhow::{bail, Context};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Where the control endpoint listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlAddr {
    /// A loopback TCP address, e.g. `127.0.0.1:7070`.
    Tcp(SocketAddr),
    /// A unix socket, given as `unix:PATH`.
    Unix(PathBuf),
}

impl std::str::FromStr for ControlAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("`unix:` needs a socket path, e.g. unix:/run/host.sock".into());
            }
            return Ok(ControlAddr::Unix(PathBuf::from(path)));
        }
        let addr: SocketAddr =
            s.parse().map_err(|_| format!("`{s}` is neither HOST:PORT (e.g. 127.0.0.1:7070) nor unix:PATH"))?;
        if !addr.ip().is_loopback() {
            return Err(format!(
                "{addr} is not a loopback address; the control endpoint can change the running logic, so it listens only on 127.0.0.1, ::1 or a unix socket (unix:PATH)"
            ));
        }
        Ok(ControlAddr::Tcp(addr))
    }
}

impl std::fmt::Display for ControlAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlAddr::Tcp(addr) => write!(f, "{addr}"),
            ControlAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
struct Control {
    requests: mpsc::Sender<SwapRequest>,
    hub: Arc<SwapHub>,
}

/// Binds `addr` (so a taken port fails `host run` at start) and serves the
/// endpoint on a task until the run ends.
pub async fn serve(addr: &ControlAddr, requests: mpsc::Sender<SwapRequest>, hub: Arc<SwapHub>) -> anyhow::Result<()> {
    let app = axum::Router::new()
        .route("/swap", post(swap))
        .route("/rollback", post(rollback))
        .route("/status", get(status))
        // A component is rarely over a few MiB; 256 MiB is a generous cap.
        .layer(axum::extract::DefaultBodyLimit::max(256 << 20))
        .with_state(Control { requests, hub });
    match addr {
        ControlAddr::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on --control-addr {addr}"))?;
            tokio::spawn(async move { axum::serve(listener, app).await });
        }
        ControlAddr::Unix(path) => {
            // A socket file left by an earlier run would make bind fail.
            if std::fs::symlink_metadata(path).is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
            {
                let _ = std::fs::remove_file(path);
            }
            let listener = tokio::net::UnixListener::bind(path)
                .with_context(|| format!("cannot listen on --control-addr unix:{}", path.display()))?;
            tokio::spawn(async move { axum::serve(listener, app).await });
        }
    }
    Ok(())
}

async fn ask(
    control: &Control,
    request: impl FnOnce(oneshot::Sender<SwapResult>) -> SwapRequest,
) -> (StatusCode, axum::Json<serde_json::Value>) {
    let (reply, answer) = oneshot::channel();
    if control.requests.send(request(reply)).await.is_err() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"outcome": "refused", "message": "the host is stopping"})),
        );
    }
    match answer.await {
        Ok(result) => {
            let code = if result.outcome == SwapOutcome::Refused { StatusCode::CONFLICT } else { StatusCode::OK };
            (code, axum::Json(serde_json::to_value(&result).unwrap_or_default()))
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"outcome": "refused", "message": "the host is stopping"})),
        ),
    }
}

async fn swap(
    State(control): State<Control>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, axum::Json<serde_json::Value>) {
    let name = headers.get("x-plugin-name").and_then(|v| v.to_str().ok()).unwrap_or("uploaded.wasm").to_string();
    let source = PluginSource::Bytes { name, bytes: body.to_vec() };
    ask(&control, |reply| SwapRequest::Swap { source, reply: Some(reply) }).await
}

async fn rollback(State(control): State<Control>) -> (StatusCode, axum::Json<serde_json::Value>) {
    ask(&control, |reply| SwapRequest::Rollback { reply: Some(reply) }).await
}

async fn status(State(control): State<Control>) -> axum::Json<serde_json::Value> {
    let current = control.hub.current();
    axum::Json(serde_json::json!({
        "generation": current.id,
        "plugin": current.plugin.path().display().to_string(),
        "sha256": current.plugin.sha256(),
        "shards": control.hub.shards(),
    }))
}

/// What `host swap` asks.
#[derive(Debug, Clone)]
pub enum ControlCall {
    Swap { name: String, bytes: Vec<u8> },
    Rollback,
    Status,
}

/// Sends `call` to a running host; returns the HTTP status and JSON answer.
pub async fn call(addr: &ControlAddr, call: ControlCall) -> anyhow::Result<(u16, serde_json::Value)> {
    let (method, path, name, body) = match call {
        ControlCall::Swap { name, bytes } => ("POST", "/swap", Some(name), bytes),
        ControlCall::Rollback => ("POST", "/rollback", None, Vec::new()),
        ControlCall::Status => ("GET", "/status", None, Vec::new()),
    };
    let mut request = hyper::Request::builder().method(method).uri(path).header("host", "localhost");
    if let Some(name) = name {
        request = request.header("x-plugin-name", name);
    }
    let request = request.body(Full::new(bytes::Bytes::from(body))).context("cannot build the request")?;
    let unreachable = |e: std::io::Error| {
        anyhow::anyhow!("cannot reach a host at {addr}: {e}; is `host run --control-addr {addr}` running?")
    };
    let response = match addr {
        ControlAddr::Tcp(socket) => {
            send(TokioIo::new(tokio::net::TcpStream::connect(socket).await.map_err(unreachable)?), request).await?
        }
        ControlAddr::Unix(path) => {
            send(TokioIo::new(tokio::net::UnixStream::connect(path).await.map_err(unreachable)?), request).await?
        }
    };
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.context("the host's answer broke off")?.to_bytes();
    let value = serde_json::from_slice(&body).with_context(|| {
        format!("the host answered {status} with something other than JSON: {}", String::from_utf8_lossy(&body))
    })?;
    Ok((status, value))
}

async fn send<IO>(
    io: IO,
    request: hyper::Request<Full<bytes::Bytes>>,
) -> anyhow::Result<hyper::Response<hyper::body::Incoming>>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(io).await.context("control endpoint handshake")?;
    tokio::spawn(connection);
    match sender.send_request(request).await {
        Ok(response) => Ok(response),
        Err(e) => bail!("the control request failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_loopback_or_unix_sockets() {
        assert_eq!("127.0.0.1:7070".parse::<ControlAddr>(), Ok(ControlAddr::Tcp(([127, 0, 0, 1], 7070).into())));
        assert!(matches!("[::1]:7070".parse::<ControlAddr>(), Ok(ControlAddr::Tcp(_))));
        assert_eq!("unix:/run/h.sock".parse::<ControlAddr>(), Ok(ControlAddr::Unix("/run/h.sock".into())));
        assert!("0.0.0.0:7070".parse::<ControlAddr>().is_err_and(|e| e.contains("not a loopback address")));
        assert!("10.1.2.3:7070".parse::<ControlAddr>().is_err());
        assert!("unix:".parse::<ControlAddr>().is_err());
        assert!("localhost".parse::<ControlAddr>().is_err());
    }
}
