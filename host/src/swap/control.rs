//! The control endpoint of a running host (`host run --control-addr`) and
//! its client (`host swap`). Off by default. Whoever reaches it can change
//! the running logic, which then gets the state and every record, so:
//! - it binds only to loopback or a unix socket (made 0600);
//! - every request needs the token the host writes at start into a 0600
//!   file of the user's ([`default_token_file`]), where `host swap` finds it;
//! - a request with an `Origin` header (a web page sent it) or a `Host`
//!   that is not loopback (a DNS-rebinding page) is refused before its body
//!   is read, and bodies are bounded ([`MAX_SWAP_BODY_BYTES`]);
//! - one swap or rollback at a time: another is refused while one runs.
//!
//! `POST /swap` (body: the component's bytes, header `x-plugin-name`),
//! `POST /rollback`, and `GET /status`. Answers are JSON: a [`SwapResult`]
//! (status 200 when the logic changed or already ran, 409 when refused;
//! 401/403 for a request refused at the door).

use super::{PluginSource, SwapHub, SwapOutcome, SwapRequest, SwapResult};
use anyhow::{bail, Context};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Largest component `/swap` takes (the Python components are ~20 MiB).
pub const MAX_SWAP_BODY_BYTES: usize = 128 << 20;

/// Longest token file `host swap` reads (the token is 64 hex digits).
const MAX_TOKEN_FILE_BYTES: u64 = 1024;

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

/// What a request must show before anything else is read.
#[derive(Clone)]
struct Door {
    /// The token written to `token_file` at start.
    token: Arc<str>,
    /// Named in refusals, so the caller knows where the token is.
    token_file: Arc<Path>,
    /// Requests refused so far (some logged).
    refused: Arc<crate::loopback::Refusals>,
}

/// A serving control endpoint. Dropping it removes its token file (the
/// listener itself ends with the runtime).
#[derive(Debug)]
pub struct ControlEndpoint {
    token_file: PathBuf,
}

impl ControlEndpoint {
    /// Where the token is.
    pub fn token_file(&self) -> &Path {
        &self.token_file
    }
}

impl Drop for ControlEndpoint {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.token_file);
    }
}

/// `$XDG_DATA_HOME/kinesis-wasm-host/control/<address>.token` (or the
/// platform's equivalent): where `host run` writes the token for `addr`
/// and `host swap` reads it, both as the same user.
pub fn default_token_file(addr: &ControlAddr) -> Option<PathBuf> {
    let name = match addr {
        ControlAddr::Tcp(socket) => {
            format!("tcp-{}-{}.token", socket.ip().to_string().replace(':', "_"), socket.port())
        }
        ControlAddr::Unix(path) => {
            use sha2::Digest;
            let absolute = std::path::absolute(path).unwrap_or_else(|_| path.clone());
            let digest = sha2::Sha256::digest(absolute.as_os_str().as_encoded_bytes());
            format!("unix-{}.token", &hex::encode(digest)[..16])
        }
    };
    crate::private::data_dir().map(|d| d.join("control").join(name))
}

/// The token file for `addr`: `given` (`--control-token-file`), else the
/// default one. `host run` writes it and `host swap` reads it.
pub fn token_file(addr: &ControlAddr, given: Option<&Path>) -> anyhow::Result<PathBuf> {
    match given {
        Some(file) => Ok(file.to_path_buf()),
        None => default_token_file(addr).ok_or_else(|| {
            anyhow::anyhow!("no data directory to keep the control token in (is HOME set?); give --control-token-file")
        }),
    }
}

/// Binds `addr` (so a taken port fails `host run` at start), writes a new
/// token to `token_file` (0600, its directory made private if it is the
/// default one), and serves the endpoint on a task until the run ends.
pub async fn serve(
    addr: &ControlAddr,
    token_file: &Path,
    requests: mpsc::Sender<SwapRequest>,
    hub: Arc<SwapHub>,
) -> anyhow::Result<ControlEndpoint> {
    let mut token = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut token);
    let token = hex::encode(token);
    let door = Door { token: token.as_str().into(), token_file: token_file.into(), refused: Default::default() };
    let changes = axum::Router::new()
        .route("/swap", post(swap))
        .route("/rollback", post(rollback))
        .route_layer(axum::middleware::from_fn_with_state(Arc::new(tokio::sync::Mutex::new(())), one_at_a_time));
    let app = axum::Router::new()
        .route("/status", get(status))
        .merge(changes)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_SWAP_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(door, admit))
        .with_state(Control { requests, hub });
    let write_token = || -> anyhow::Result<()> {
        if let Some(dir) = token_file.parent().filter(|d| !d.as_os_str().is_empty()) {
            if default_token_file(addr).as_deref() == Some(token_file) {
                crate::private::private_dir(dir, "give --control-token-file a path of your own")
                    .map_err(|why| anyhow::anyhow!("cannot use {} for the control token: {why}", dir.display()))?;
            }
        }
        crate::private::write_private_file(token_file, token.as_bytes()).map_err(|why| anyhow::anyhow!("{why}"))?;
        Ok(())
    };
    match addr {
        ControlAddr::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on --control-addr {addr}"))?;
            write_token()?;
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
            // Connecting needs write permission on the socket: this user's only.
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .with_context(|| format!("cannot make the control socket {} private", path.display()))?;
            write_token()?;
            tokio::spawn(async move { axum::serve(listener, app).await });
        }
    }
    Ok(ControlEndpoint { token_file: token_file.to_path_buf() })
}

/// A refusal, in the JSON every answer has.
fn refused(code: StatusCode, message: String) -> Response {
    (code, axum::Json(serde_json::json!({"outcome": "refused", "message": message}))).into_response()
}

/// Refuses, before its body is read, a request a web page could have sent
/// or one without the token.
async fn admit(State(door): State<Door>, request: Request, next: Next) -> Response {
    let declared =
        request.headers().get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
    match door.check(request.headers()) {
        // Refused from its announced length, before any of it is read.
        Ok(()) if declared.is_some_and(|length: u64| length > MAX_SWAP_BODY_BYTES as u64) => refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "a body of {} bytes is more than the {} MiB a component may have here",
                declared.unwrap_or_default(),
                MAX_SWAP_BODY_BYTES >> 20
            ),
        ),
        Ok(()) => next.run(request).await,
        Err((code, message)) => {
            if let Some(count) = door.refused.count() {
                tracing::warn!(
                    "control endpoint: refused {} {} ({count} so far): {message}",
                    request.method(),
                    request.uri().path()
                );
            }
            refused(code, message)
        }
    }
}

impl Door {
    fn check(&self, headers: &HeaderMap) -> Result<(), (StatusCode, String)> {
        crate::loopback::from_local_program(headers).map_err(|why| (StatusCode::FORBIDDEN, why))?;
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !bool::from(subtle::ConstantTimeEq::ct_eq(given.as_bytes(), self.token.as_bytes())) {
            return Err((
                StatusCode::UNAUTHORIZED,
                format!(
                    "no valid token; use `host swap`, which sends the one this host wrote to {}",
                    self.token_file.display()
                ),
            ));
        }
        Ok(())
    }
}

/// One swap or rollback at a time: another waits for nothing, it is
/// refused (so no second component is read into memory meanwhile).
async fn one_at_a_time(State(busy): State<Arc<tokio::sync::Mutex<()>>>, request: Request, next: Next) -> Response {
    let Ok(_running) = busy.try_lock() else {
        return refused(
            StatusCode::CONFLICT,
            "another swap or rollback is in progress; try again when it has ended (`host swap --status`)".into(),
        );
    };
    next.run(request).await
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
    ask(&control, |reply| SwapRequest::Swap { source, only: None, reply: Some(reply) }).await
}

async fn rollback(State(control): State<Control>) -> (StatusCode, axum::Json<serde_json::Value>) {
    ask(&control, |reply| SwapRequest::Rollback { to: None, reply: Some(reply) }).await
}

async fn status(State(control): State<Control>) -> axum::Json<serde_json::Value> {
    // Probation and the last result before the generation: a generation
    // read as unchanged after them means nothing newer began in between.
    let probation = control.hub.probation();
    let last = control.hub.last();
    let current = control.hub.current();
    axum::Json(serde_json::json!({
        "generation": current.id,
        "plugin": current.plugin.path().display().to_string(),
        "sha256": current.plugin.sha256(),
        "shards": control.hub.shards(),
        "probation": probation,
        "last": last.map(|last| serde_json::json!({
            "generation": last.generation,
            "outcome": last.outcome,
            "message": last.message,
            "sha256": last.sha256,
        })),
    }))
}

/// What `host swap` asks.
#[derive(Debug, Clone)]
pub enum ControlCall {
    Swap { name: String, bytes: Vec<u8> },
    Rollback,
    Status,
}

/// Sends `call` to a running host, with the token read from `token_file`;
/// returns the HTTP status and JSON answer.
pub async fn call(
    addr: &ControlAddr,
    token_file: &Path,
    call: ControlCall,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let token = crate::private::read_private_file(token_file, MAX_TOKEN_FILE_BYTES).map_err(|why| {
        anyhow::anyhow!(
            "no control token for {addr}: {why}; is `host run --control-addr {addr}` running as this user? (or give --control-token-file, as to `host run`)"
        )
    })?;
    let token = String::from_utf8_lossy(&token).trim().to_string();
    let (method, path, name, body) = match call {
        ControlCall::Swap { name, bytes } => ("POST", "/swap", Some(name), bytes),
        ControlCall::Rollback => ("POST", "/rollback", None, Vec::new()),
        ControlCall::Status => ("GET", "/status", None, Vec::new()),
    };
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("authorization", format!("Bearer {token}"));
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

    #[test]
    fn the_door_wants_the_token_and_no_origin() {
        let door = Door { token: "t0k".into(), token_file: Path::new("/x/token").into(), refused: Default::default() };
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, value.parse().expect("header"));
            }
            map
        };
        let good = [("host", "localhost"), ("authorization", "Bearer t0k")];
        assert_eq!(door.check(&headers(&good)), Ok(()));
        let code = |pairs: &[(&'static str, &str)]| door.check(&headers(pairs)).err().map(|(code, _)| code);
        assert_eq!(code(&[good[0], good[1], ("origin", "https://evil.example")]), Some(StatusCode::FORBIDDEN));
        assert_eq!(code(&[("host", "evil.example"), good[1]]), Some(StatusCode::FORBIDDEN));
        assert_eq!(code(&[good[1]]), Some(StatusCode::FORBIDDEN), "no Host");
        assert_eq!(code(&[good[0]]), Some(StatusCode::UNAUTHORIZED));
        assert_eq!(code(&[good[0], ("authorization", "Bearer t0")]), Some(StatusCode::UNAUTHORIZED));
        assert_eq!(code(&[good[0], ("authorization", "t0k")]), Some(StatusCode::UNAUTHORIZED));
    }
}
