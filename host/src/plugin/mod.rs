//! The WebAssembly side: a thin layer over wasmtime's component model.
//!
//! `engine` (shared engine, linker, epoch ticker) → `component` (load and
//! validate a processor, `cache` of compiled code) → `instance` (one per
//! shard: store, `limits`, calls, rebuild on trap) with `state` (the host
//! imports) and `output` (what a call emitted).

pub mod bindings;
mod cache;
mod component;
mod contract;
mod deadline;
mod engine;
mod error;
mod instance;
mod limits;
mod lineage;
mod output;
mod state;
mod stdio;
pub(crate) mod text;

pub use cache::{CacheOutcome, CacheUsage, CompiledCache, DEFAULT_MAX_BYTES};
pub use component::Plugin;
pub use contract::Contract;
pub use engine::PluginEngine;
pub use error::{BudgetExceeded, PluginError, TrapCause};
pub use instance::{InstanceSettings, PluginInstance, Processed};
pub use limits::PluginLimits;
pub use lineage::{start_child, Inheritance};
pub use output::PluginOutput;
pub use state::Clock;
