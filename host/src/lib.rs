//! `host`: runs WebAssembly stream processors over Kinesis shards.
//!
//! Modules follow the data: `kinesis` (the stream: reading shards, admin,
//! producers) → `batch` (records packed for the plugin) → `plugin` (the
//! sandboxed processor) → `sink` (where output goes) → `checkpoint` (the
//! durable position and state). `consumer` runs that path per shard.
//! `replay` drives a plugin offline (`host test`); `bench` measures it.

pub mod batch;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod consumer;
pub mod dead_letter;
pub mod kinesis;
pub mod local;
pub mod metrics;
pub mod plugin;
pub mod replay;
pub mod sink;
pub mod stream_bench;
pub mod swap;
pub mod swap_bench;
