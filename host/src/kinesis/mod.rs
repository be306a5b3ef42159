//! Everything that talks to Kinesis through `aws-sdk-kinesis`: the client
//! (AWS conventions), stream administration, producers, shard reading and
//! KPL aggregation.

pub mod admin;
pub mod aggregate;
pub mod client;
pub mod fanout;
mod packed_read;
pub mod producer;
pub mod reader;

pub use client::{connect, describe_error, AwsOptions};
