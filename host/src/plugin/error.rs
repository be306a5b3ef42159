//! Everything that can go wrong between the host and a plugin, typed so
//! callers (the failure policy, the CLI) can branch on it.

use std::path::PathBuf;

/// Why a plugin could not be loaded, started or called.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The wasmtime engine could not be set up.
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),

    /// No file at the path.
    #[error("plugin file {path} does not exist; build it with `make plugins` or check the path")]
    NotFound { path: PathBuf },

    /// The file exists but cannot be read.
    #[error("cannot read plugin file {path}: {source}")]
    Unreadable { path: PathBuf, source: std::io::Error },

    /// The bytes are not WebAssembly at all.
    #[error("{path} is not a WebAssembly file (no `\\0asm` header); pass the `.wasm` built for wasm32-wasip2")]
    NotWasm { path: PathBuf },

    /// A core module, e.g. built for `wasm32-unknown-unknown` or `wasm32-wasip1`.
    #[error("{path} is a core WebAssembly module, not a component; build it with `--target wasm32-wasip2` (or wrap it with `wasm-tools component new`)")]
    CoreModule { path: PathBuf },

    /// Not valid or not compilable.
    #[error("{path} is not a valid WebAssembly component: {reason}")]
    Invalid { path: PathBuf, reason: String },

    /// A component, but of another world.
    #[error("{path} does not implement the processor world: {reason}; implement `kinesis:processor/processor@0.2.0` (see wit/processor.wit)")]
    WrongWorld { path: PathBuf, reason: String },

    /// It needs imports the sandbox does not give (e.g. HTTP).
    #[error("{path} needs an import the sandbox does not provide: {reason}; processors may use only WASI p2 CLI basics and `kinesis:processor/host`{}", import_hint(reason))]
    UnsupportedImport { path: PathBuf, reason: String },

    /// The plugin's `init` refused its config.
    #[error("plugin `{plugin}` rejected its config: {message}")]
    InitRejected { plugin: String, message: String },

    /// The plugin's `restore` refused a snapshot.
    #[error("plugin `{plugin}` rejected its saved state (version {version}): {message}")]
    RestoreRejected { plugin: String, version: u32, message: String },

    /// The plugin's `merge` refused its parents' states (a reshard).
    #[error("plugin `{plugin}` rejected the state of the shards merged into this one: {message}")]
    MergeRejected { plugin: String, message: String },

    /// The plugin returned a processing error (it did not crash).
    #[error("plugin `{plugin}` failed{}: {message}{}", record_index.map(|i| format!(" at record {i}")).unwrap_or_default(), if *retryable { " (retryable)" } else { "" })]
    Failed { plugin: String, retryable: bool, message: String, record_index: Option<u32> },

    /// A call after `shutdown` (a host bug, reported rather than hidden).
    #[error("plugin `{plugin}` was already shut down")]
    ShutDown { plugin: String },

    /// The plugin trapped, ran out of time or memory, or exceeded a budget.
    /// The instance was discarded and rebuilt from its last checkpoint.
    #[error("plugin `{plugin}` {cause} in `{call}`{}; {recovery}", detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
    Trapped { plugin: String, call: &'static str, cause: TrapCause, detail: Option<String>, recovery: String },
}

/// What stopped a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrapCause {
    /// Ran past the per-call deadline (a loop, or just too slow).
    Timeout,
    /// Grew memory past the instance limit.
    MemoryLimit,
    /// Emitted more output than one call may.
    OutputLimit,
    /// Logged without end.
    LogFlood,
    /// Panicked or hit any other wasm trap.
    Crash,
}

impl std::fmt::Display for TrapCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TrapCause::Timeout => "exceeded its time limit per call",
            TrapCause::MemoryLimit => "exceeded its memory limit",
            TrapCause::OutputLimit => "exceeded its output limit per call",
            TrapCause::LogFlood => "logged without end",
            TrapCause::Crash => "crashed",
        })
    }
}

/// A budget a host import enforces by trapping the call; recognised again
/// when the trap surfaces from the export call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BudgetExceeded {
    #[error("tried to grow memory past {} MiB", max_bytes >> 20)]
    Memory { max_bytes: usize },
    #[error("emitted more than {max_records} records or {max_bytes} bytes in one call")]
    Output { max_records: usize, max_bytes: usize },
    #[error("wrote more than {0} log lines in one call")]
    Logs(u32),
    #[error("emitted an output entry outside its payload or with a non-UTF-8 key")]
    MalformedOutput,
}

/// How to build without an import the sandbox refuses, when the toolchain
/// that adds it is known: jco / componentize-js add HTTP unless told not to.
fn import_hint(reason: &str) -> &'static str {
    if reason.contains("wasi:http/") {
        " (a JavaScript component built by jco or componentize-js imports HTTP unless built with \
         `jco componentize … --disable http fetch-event`, or componentize-js' \
         `disableFeatures: ['http', 'fetch-event']`)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_import_says_which_build_flags_drop_it() {
        let e = PluginError::UnsupportedImport {
            path: "app.wasm".into(),
            reason: "component imports instance `wasi:http/types@0.2.10`, but a matching implementation was not found"
                .into(),
        };
        let line = e.to_string();
        assert!(line.contains("wasi:http/types@0.2.10") && line.contains("--disable http fetch-event"), "{line}");
        let other = PluginError::UnsupportedImport { path: "a.wasm".into(), reason: "`wasi:sockets/tcp`".into() };
        assert!(!other.to_string().contains("jco"), "{other}");
    }
}
