//! `host`: runs WebAssembly stream processors over Kinesis shards.
//!
//! Modules follow the data: `batch` (records packed for the plugin) →
//! `plugin` (the sandboxed processor) → `sink` (where output goes).
//! `replay` drives a plugin offline (`host test`); `bench` measures it.

pub mod batch;
pub mod bench;
pub mod cli;
pub mod plugin;
pub mod replay;
pub mod sink;
