//! Rust bindings for the contract, generated at compile time: the current
//! package (`wit/processor.wit`, 0.2.0) and the one before it
//! (`wit/0.1.0/processor.wit`), so components built for either run.
//!
//! Every type the two packages share is generated once (0.2.0's) and reused
//! by 0.1.0's bindings: a batch is packed once whatever the component was
//! built for. Only `shard-context` differs (0.2.0 added the hash-key range
//! and the parents); [`v1::ShardContext`] is 0.1.0's, written by hand.
//! Every import is `trappable` so the host can stop a plugin that exceeds
//! its output or log budget with a trap instead of trusting it to behave.

/// The current package, `kinesis:processor@0.2.0`.
pub mod v2 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "processor-world",
        imports: { default: trappable },
    });
}

/// The previous package, `kinesis:processor@0.1.0`, on 0.2.0's types.
pub mod v1 {
    wasmtime::component::bindgen!({
        path: "../wit/0.1.0",
        world: "processor-world",
        imports: { default: trappable },
        with: { "kinesis:processor/types@0.1.0": types },
    });

    /// 0.1.0's `types` interface: 0.2.0's types, but its own shard context.
    pub mod types {
        pub use super::super::v2::kinesis::processor::types::{
            LogLevel, OutputBatch, OutputEntry, ProcessError, ProcessorInfo, RecordBatch, RecordEntry, ShutdownReason,
            State,
        };

        /// 0.1.0's `shard-context`: no hash-key range, no parents.
        #[derive(
            wasmtime::component::ComponentType, wasmtime::component::Lift, wasmtime::component::Lower, Debug, Clone,
        )]
        #[component(record)]
        pub struct ShardContext {
            #[component(name = "stream-name")]
            pub stream_name: String,
            #[component(name = "shard-id")]
            pub shard_id: String,
            pub application: String,
        }

        /// What the generated linking code expects of an interface; it has
        /// no functions, so linking defines an empty instance of its name.
        pub trait Host {}
        impl<T: Host + ?Sized> Host for &mut T {}
        impl Host for crate::plugin::state::HostState {}
        /// See [`Host`].
        pub trait HostWithStore<T>: wasmtime::component::HasData {}
        impl<H: ?Sized + wasmtime::component::HasData, T> HostWithStore<T> for H {}

        /// Defines the interface's (empty) instance, as bindgen would.
        pub fn add_to_linker<T, D>(
            linker: &mut wasmtime::component::Linker<T>,
            _host_getter: fn(&mut T) -> D::Data<'_>,
        ) -> wasmtime::Result<()>
        where
            D: HostWithStore<T>,
            for<'a> D::Data<'a>: Host,
            T: 'static,
        {
            linker.instance("kinesis:processor/types@0.1.0")?;
            Ok(())
        }

        impl From<&super::super::ShardContext> for ShardContext {
            fn from(context: &super::super::ShardContext) -> Self {
                ShardContext {
                    stream_name: context.stream_name.clone(),
                    shard_id: context.shard_id.clone(),
                    application: context.application.clone(),
                }
            }
        }
    }
}

pub use v2::kinesis::processor::types::{
    HashKeyRange, LogLevel, OutputBatch, ProcessError, ProcessorInfo, RecordBatch, ShardContext, ShutdownReason, State,
};

/// The interface a component must export to be a processor of the current package.
pub const PROCESSOR_EXPORT: &str = "kinesis:processor/processor@0.2.0";
/// The same for components built for 0.1.0.
pub const PROCESSOR_EXPORT_V1: &str = "kinesis:processor/processor@0.1.0";
/// The optional interface that carries state across a merge (0.2.0).
pub const MERGE_EXPORT: &str = "kinesis:processor/merge@0.2.0";

impl HashKeyRange {
    /// Every hash key: what a shard of unknown range (or `host test`) gets.
    pub fn full() -> Self {
        HashKeyRange { starting_hash_key: "0".into(), ending_hash_key: u128::MAX.to_string() }
    }
}

impl ShardContext {
    /// A context for `shard_id` with the whole hash-key range and no parents.
    pub fn new(stream: &str, shard_id: &str, application: &str) -> Self {
        ShardContext {
            stream_name: stream.into(),
            shard_id: shard_id.into(),
            application: application.into(),
            hash_key_range: HashKeyRange::full(),
            parent_shard_ids: Vec::new(),
        }
    }
}
