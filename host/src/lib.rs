//! `host`: runs WebAssembly stream processors over Kinesis shards.
//!
//! Modules follow the data: a `source` (the record-source seam; polling
//! lives in `kinesis`) → `batch` (records packed for the plugin) → `plugin`
//! (the sandboxed processor) under the failure `policy` → `sink` (where
//! output goes) → `checkpoint` (the durable position and state, behind the
//! checkpoint-store seam). `consumer` runs that path per shard; `swap`
//! changes the logic under it; `replay` drives it offline (`host test`).
//! `ownership` says which shards this host runs: all of them alone, or its
//! share of a group's, through DynamoDB leases (`lease`, which is also a
//! checkpoint store whose commits are fenced by the lease).
//! `progress`, `shutdown`, `private` (files only this user may touch) and
//! `loopback` (requests only a local program sends) are leaves everything
//! may use.
//! `cli` is the only module that knows of command-line arguments.

pub mod aws;
pub mod backoff;
pub mod batch;
pub mod checkpoint;
pub mod cli;
pub mod consumer;
pub mod dead_letter;
pub mod group;
pub mod kinesis;
pub mod lease;
pub mod local;
pub mod loopback;
pub mod metrics;
pub mod ownership;
pub mod plugin;
pub mod policy;
pub mod private;
pub mod progress;
pub mod replay;
pub mod scaffold;
pub mod shutdown;
pub mod sink;
pub mod source;
pub mod swap;
