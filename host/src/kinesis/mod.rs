//! Everything that talks to Kinesis through `aws-sdk-kinesis`: the client
//! (AWS conventions), stream administration, producers and shard reading.

pub mod admin;
pub mod client;
pub mod producer;
pub mod reader;

pub use client::{connect, describe_error, AwsOptions};
