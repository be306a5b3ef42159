//! Rust bindings for `wit/processor.wit`, generated at compile time.
//!
//! Every import is `trappable` so the host can stop a plugin that exceeds
//! its output or log budget with a trap instead of trusting it to behave.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "processor-world",
    imports: { default: trappable },
});

pub use exports::kinesis::processor::processor::Guest as ProcessorExports;
pub use kinesis::processor::types::{
    LogLevel, OutputBatch, ProcessError, ProcessorInfo, RecordBatch, ShardContext, ShutdownReason, State,
};

/// The interface name a component must export to be a processor.
pub const PROCESSOR_EXPORT: &str = "kinesis:processor/processor@0.1.0";
