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
    LogLevel, OutputBatch, OutputEntry, ProcessError, ProcessorInfo, RecordBatch, RecordEntry, ShardContext,
    ShutdownReason, State,
};

/// The interface name a component must export to be a processor.
pub const PROCESSOR_EXPORT: &str = "kinesis:processor/processor@0.1.0";

impl From<kinesis_processor_sdk::RecordEntry> for RecordEntry {
    fn from(e: kinesis_processor_sdk::RecordEntry) -> Self {
        RecordEntry {
            partition_key_offset: e.partition_key_offset,
            partition_key_len: e.partition_key_len,
            data_offset: e.data_offset,
            data_len: e.data_len,
            sequence_number_offset: e.sequence_number_offset,
            sequence_number_len: e.sequence_number_len,
            sub_sequence_number: e.sub_sequence_number,
            approximate_arrival_millis: e.approximate_arrival_millis,
        }
    }
}
