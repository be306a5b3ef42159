//! Domain types mirroring the AWS Kinesis Data Streams data model.

pub use ferrokinesis_core::types::*;
