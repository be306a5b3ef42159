//! Error types returned by the Kinesis emulator.

pub use ferrokinesis_core::error::*;
