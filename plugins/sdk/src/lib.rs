//! Write a Kinesis stream processor as a WebAssembly component.
//!
//! Implement [`Processor`] for a type and export it with
//! [`export_processor!`]; build with `cargo build --target wasm32-wasip2
//! --release` and run the `.wasm` with `host test` or `host run`.
//!
//! ```
//! use kinesis_processor_sdk::{export_processor, Batch, Output, ProcessError, Processor, ShardContext};
//!
//! struct Upper;
//!
//! impl Processor for Upper {
//!     const NAME: &'static str = "upper";
//!     fn init(_config: &str, _shard: &ShardContext) -> Result<Self, String> {
//!         Ok(Upper)
//!     }
//!     fn process(&mut self, batch: &Batch<'_>, out: &mut Output) -> Result<(), ProcessError> {
//!         for record in batch.iter() {
//!             out.emit(record.partition_key(), &record.data().to_ascii_uppercase());
//!         }
//!         Ok(())
//!     }
//! }
//!
//! export_processor!(Upper);
//! ```
//!
//! Natively (`cargo test`), the same type runs without wasm: build batches
//! with [`BatchBuilder`] and call the trait methods directly.
//!
//! The core API is the crate root: [`Processor`], [`Batch`]/[`Record`],
//! [`Output`], [`ProcessError`], [`log`], [`now_millis`]. [`helpers`] holds
//! optional building blocks the shipped counters use (time parsing and
//! windows, picking a key and event time from config, per-window counts).
//! [`wire`] is the packed batch layout, for hosts rather than authors.

// Lets the generated bindings name this crate by its public path, which is
// also how the export macro names it from a plugin crate.
extern crate self as kinesis_processor_sdk;

mod batch;
pub mod helpers;
mod output;
mod shard;

pub use batch::{Batch, BatchBuilder, Record};
pub use output::Output;
pub use shard::{hash_key, HashKeyRange, ShardContext};

/// The packed layout of batches and output as they cross the component
/// boundary (one payload buffer plus fixed-size index entries). Hosts and
/// tools use it; processor authors read records through [`Batch`].
pub mod wire {
    pub use crate::batch::{append_record, RecordEntry};
    pub use crate::output::OutputEntry;
}

/// A state as [`Processor::snapshot`] wrote it, with its layout version:
/// what [`Processor::merge`] gets from each parent shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub version: u32,
    /// Empty when the parent left no state.
    pub bytes: Vec<u8>,
}

/// Why a call failed; the host's failure policy decides what follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessError {
    /// True when retrying the same input may succeed.
    pub retryable: bool,
    /// What went wrong, for the operator.
    pub message: String,
    /// Index of the first failing record, when known: records before it are
    /// done and their output kept.
    pub record_index: Option<u32>,
}

impl ProcessError {
    /// A failure that will not go away on retry (a poison input).
    pub fn fatal(message: impl Into<String>) -> Self {
        ProcessError { retryable: false, message: message.into(), record_index: None }
    }

    /// A failure that may succeed if retried.
    pub fn retryable(message: impl Into<String>) -> Self {
        ProcessError { retryable: true, message: message.into(), record_index: None }
    }

    /// Names the record (batch index) that failed.
    pub fn at_record(mut self, index: usize) -> Self {
        self.record_index = Some(index as u32);
        self
    }
}

impl std::fmt::Display for ProcessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if let Some(index) = self.record_index {
            write!(f, " (record {index})")?;
        }
        Ok(())
    }
}

/// Why an instance is shut down (the KCL reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownReason {
    /// The shard was split or merged and read to its end; its last snapshot
    /// goes on in its children.
    ShardEnded,
    /// Another worker owns the shard now: emit nothing more.
    LeaseLost,
    /// The host is stopping or swapping logic: state goes on via snapshot.
    Requested,
}

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// A stream processor: one value per shard, fed batches in sequence order.
pub trait Processor: Sized + 'static {
    /// Name shown in logs and metrics.
    const NAME: &'static str;

    /// Version of the layout [`Processor::snapshot`] writes; bump it when
    /// the layout changes and migrate older versions in [`Processor::restore`].
    const STATE_VERSION: u32 = 0;

    /// Builds the processor from its JSON config (`{}` when none was given).
    /// Return a message naming the bad setting on error.
    fn init(config: &str, shard: &ShardContext) -> Result<Self, String>;

    /// Processes one batch; emit output into `out`. Output is kept only if
    /// this returns `Ok` (or, with `record_index`, up to that record).
    fn process(&mut self, batch: &Batch<'_>, out: &mut Output) -> Result<(), ProcessError>;

    /// Called periodically with the host clock: emit time-driven output here.
    fn on_timer(&mut self, _now_millis: i64, _out: &mut Output) -> Result<(), ProcessError> {
        Ok(())
    }

    /// All state needed to continue after a restart. Stateless by default.
    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Replaces the state with a snapshot of layout `version`. The default
    /// accepts only empty state, right for stateless processors.
    fn restore(&mut self, state: &[u8], version: u32) -> Result<(), String> {
        if state.is_empty() {
            Ok(())
        } else {
            Err(format!("{} keeps no state but was given {} bytes (version {version})", Self::NAME, state.len()))
        }
    }

    /// Takes over the final states of the shards merged into this one (in
    /// the order of [`ShardContext::parents`]), on a fresh instance, instead
    /// of [`Processor::restore`]. Their key sets are disjoint, so per-key
    /// state unions (and counts add): `helpers::state::merge_json_maps`
    /// does it for map-like state. An error stops the shard. The default
    /// accepts only parents without state, right for stateless processors.
    fn merge(&mut self, parents: &[Snapshot]) -> Result<(), String> {
        match parents.iter().find(|p| !p.bytes.is_empty()) {
            None => Ok(()),
            Some(_) => Err(format!(
                "{} keeps state but does not implement `Processor::merge`, so the state of merged shards would be lost",
                Self::NAME
            )),
        }
    }

    /// Last call on this instance; may emit final output. On
    /// [`ShutdownReason::ShardEnded`] the state was just snapshotted for
    /// the children: emit nothing they will emit again from it.
    fn shutdown(&mut self, _reason: ShutdownReason, _out: &mut Output) {}
}

/// Writes a log line through the host (stderr when run natively).
pub fn log(level: LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    glue::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// The host clock in milliseconds since the Unix epoch (the replayed clock
/// under `host test`).
pub fn now_millis() -> i64 {
    #[cfg(target_arch = "wasm32")]
    return wit::kinesis::processor::host::now_millis();
    #[cfg(not(target_arch = "wasm32"))]
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod wit {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "merging-processor-world",
        pub_export_macro: true,
        export_macro_name: "__export_processor_world",
        default_bindings_module: "::kinesis_processor_sdk::wit",
        runtime_path: "::kinesis_processor_sdk::__wit_bindgen::rt",
    });
}

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

#[cfg(target_arch = "wasm32")]
mod glue;
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub use glue::Glue;

/// Exports a [`Processor`] type as this component's processor.
///
/// Use once per plugin crate, at the crate root. Natively it expands to
/// nothing, so the same crate builds for unit tests.
#[macro_export]
macro_rules! export_processor {
    ($processor:ty) => {
        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        type __KinesisProcessorGlue = $crate::Glue<$processor>;
        #[cfg(target_arch = "wasm32")]
        $crate::wit::__export_processor_world!(__KinesisProcessorGlue with_types_in $crate::wit);
    };
}
