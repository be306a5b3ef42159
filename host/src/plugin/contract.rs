//! Which package version a component was built for, and its calls made the
//! same whatever the version: the rest of the host speaks 0.2.0's types.

use super::bindings::{
    v1, v2, ProcessError, ProcessorInfo, RecordBatch, ShardContext, ShutdownReason, State, MERGE_EXPORT,
    PROCESSOR_EXPORT, PROCESSOR_EXPORT_V1,
};
use super::state::HostState;
use wasmtime::component::{Component, ComponentExportIndex, Func, Instance, InstancePre};
use wasmtime::Store;

/// The contract a component speaks, as seen at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contract {
    /// `kinesis:processor@0.1.0`: no hash-key range, no merge; children of a
    /// reshard start without their parents' state.
    V0_1,
    /// `kinesis:processor@0.2.0`; `merges` when it exports the optional
    /// `merge` interface.
    V0_2 { merges: bool },
}

impl std::fmt::Display for Contract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Contract::V0_1 => f.write_str("kinesis:processor@0.1.0"),
            Contract::V0_2 { merges: true } => f.write_str("kinesis:processor@0.2.0 (with merge)"),
            Contract::V0_2 { merges: false } => f.write_str("kinesis:processor@0.2.0"),
        }
    }
}

/// Where a component's exports are, found once at load.
pub(crate) enum Indices {
    V1(v1::ProcessorWorldIndices),
    V2 { world: v2::ProcessorWorldIndices, merge: Option<ComponentExportIndex> },
}

/// Says what the component exports instead, when it is not a processor of
/// either version.
pub(crate) fn check_exports(exports: &[&str]) -> Result<(), String> {
    if exports.contains(&PROCESSOR_EXPORT) || exports.contains(&PROCESSOR_EXPORT_V1) {
        return Ok(());
    }
    Err(match exports.iter().find(|name| name.starts_with("kinesis:processor/processor@")) {
        Some(other) => format!("it exports {other}, but this host speaks {PROCESSOR_EXPORT} and {PROCESSOR_EXPORT_V1}"),
        None if exports.is_empty() => "it exports nothing".into(),
        None => format!("it exports {} instead", exports.join(", ")),
    })
}

impl Indices {
    /// Finds the processor export of whichever version the component has
    /// (after [`check_exports`]); `Err` says what is wrong with it.
    pub fn new(component: &Component, exports: &[&str], pre: &InstancePre<HostState>) -> Result<Self, String> {
        if exports.contains(&PROCESSOR_EXPORT) {
            let world = v2::ProcessorWorldIndices::new(pre).map_err(|e| format!("{e:#}"))?;
            let merge = component
                .get_export_index(None, MERGE_EXPORT)
                .and_then(|interface| component.get_export_index(Some(&interface), "merge"));
            if exports.contains(&MERGE_EXPORT) && merge.is_none() {
                return Err(format!("it exports {MERGE_EXPORT} without its `merge` function"));
            }
            return Ok(Indices::V2 { world, merge });
        }
        check_exports(exports)?;
        v1::ProcessorWorldIndices::new(pre).map(Indices::V1).map_err(|e| format!("{e:#}"))
    }

    pub fn contract(&self) -> Contract {
        match self {
            Indices::V1(_) => Contract::V0_1,
            Indices::V2 { merge, .. } => Contract::V0_2 { merges: merge.is_some() },
        }
    }

    /// The exports of a new instance (type-checked here).
    pub fn load(&self, store: &mut Store<HostState>, instance: &Instance) -> wasmtime::Result<Bindings> {
        Ok(match self {
            Indices::V1(indices) => Bindings::V1(indices.load(&mut *store, instance)?),
            Indices::V2 { world, merge } => {
                let merge = match merge {
                    Some(index) => Some(
                        instance
                            .get_func(&mut *store, index)
                            .ok_or_else(|| wasmtime::format_err!("{MERGE_EXPORT}#merge is not a function"))?,
                    ),
                    None => None,
                };
                if let Some(func) = merge {
                    // Type-checked now, so a wrong signature fails the load, not a merge.
                    func.typed::<(&[State],), (Result<(), String>,)>(&*store)?;
                }
                Bindings::V2 { world: world.load(&mut *store, instance)?, merge }
            }
        })
    }
}

/// One instance's exports, of either version.
pub(crate) enum Bindings {
    V1(v1::ProcessorWorld),
    V2 { world: v2::ProcessorWorld, merge: Option<Func> },
}

/// Runs the same call on either version's exports (same types but `init`'s).
macro_rules! on_processor {
    ($bindings:expr, |$p:ident| $call:expr) => {
        match $bindings {
            Bindings::V1(world) => {
                let $p = world.kinesis_processor_processor();
                $call
            }
            Bindings::V2 { world, .. } => {
                let $p = world.kinesis_processor_processor();
                $call
            }
        }
    };
}

type Call<T> = wasmtime::Result<T>;

impl Bindings {
    pub fn init(
        &self,
        store: &mut Store<HostState>,
        config: &str,
        context: &ShardContext,
    ) -> Call<Result<ProcessorInfo, String>> {
        match self {
            Bindings::V1(world) => {
                world.kinesis_processor_processor().call_init(store, config, &v1::types::ShardContext::from(context))
            }
            Bindings::V2 { world, .. } => world.kinesis_processor_processor().call_init(store, config, context),
        }
    }

    pub fn process(&self, store: &mut Store<HostState>, batch: &RecordBatch) -> Call<Result<(), ProcessError>> {
        on_processor!(self, |p| p.call_process(store, batch))
    }

    pub fn on_timer(&self, store: &mut Store<HostState>, now_millis: i64) -> Call<Result<(), ProcessError>> {
        on_processor!(self, |p| p.call_on_timer(store, now_millis))
    }

    pub fn snapshot(&self, store: &mut Store<HostState>) -> Call<State> {
        on_processor!(self, |p| p.call_snapshot(store))
    }

    pub fn restore(&self, store: &mut Store<HostState>, state: &State) -> Call<Result<(), String>> {
        on_processor!(self, |p| p.call_restore(store, state))
    }

    pub fn shutdown(&self, store: &mut Store<HostState>, reason: ShutdownReason) -> Call<()> {
        on_processor!(self, |p| p.call_shutdown(store, reason))
    }

    /// `merge`, when the component exports it.
    pub fn merge(&self, store: &mut Store<HostState>, parents: &[State]) -> Option<Call<Result<(), String>>> {
        let Bindings::V2 { merge: Some(func), .. } = self else { return None };
        Some(
            func.typed::<(&[State],), (Result<(), String>,)>(&*store)
                .and_then(|f| f.call(store, (parents,)))
                .map(|(r,)| r),
        )
    }
}
