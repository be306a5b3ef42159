//! Adapts a [`Processor`] to the generated component bindings (wasm only).

use crate::wit::exports::kinesis::processor::merge::Guest as MergeGuest;
use crate::wit::exports::kinesis::processor::processor::Guest;
use crate::wit::kinesis::processor::{host, types};
use crate::{Batch, HashKeyRange, LogLevel, Output, ProcessError, Processor, ShardContext, ShutdownReason, Snapshot};
use std::any::Any;
use std::cell::RefCell;
use std::marker::PhantomData;

thread_local! {
    /// The shard's processor, created by `init`. A component instance serves
    /// one shard and is single-threaded, so one slot is all there is.
    static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    /// Reused across calls so steady-state calls allocate nothing here.
    static SCRATCH: RefCell<Output> = RefCell::new(Output::new());
}

/// Implements the exported interface for processor type `P`.
pub struct Glue<P>(PhantomData<P>);

fn with_processor<P: Processor, R>(f: impl FnOnce(&mut P, &mut Output) -> R) -> R {
    INSTANCE.with_borrow_mut(|slot| {
        let processor = slot
            .as_mut()
            .and_then(|boxed| boxed.downcast_mut::<P>())
            // The host always calls `init` first; anything else is a host bug.
            .expect("processor called before a successful init");
        SCRATCH.with_borrow_mut(|out| {
            out.clear();
            let result = f(processor, out);
            flush(out);
            result
        })
    })
}

/// Hands a call's output to the host in one `emit-batch` call.
fn flush(out: &mut Output) {
    if out.is_empty() {
        return;
    }
    // Lend the buffers to the call instead of copying them, then keep their
    // allocations for the next call.
    let batch = types::OutputBatch { payload: std::mem::take(&mut out.payload), index: std::mem::take(&mut out.index) };
    host::emit_batch(&batch);
    out.payload = batch.payload;
    out.index = batch.index;
}

fn to_wit_error(e: ProcessError) -> types::ProcessError {
    types::ProcessError { retryable: e.retryable, message: e.message, record_index: e.record_index }
}

pub(crate) fn log(level: LogLevel, message: &str) {
    let level = match level {
        LogLevel::Trace => types::LogLevel::Trace,
        LogLevel::Debug => types::LogLevel::Debug,
        LogLevel::Info => types::LogLevel::Info,
        LogLevel::Warn => types::LogLevel::Warn,
        LogLevel::Error => types::LogLevel::Error,
    };
    host::log(level, message);
}

impl<P: Processor> Guest for Glue<P> {
    fn init(config: String, context: types::ShardContext) -> Result<types::ProcessorInfo, String> {
        let range = &context.hash_key_range;
        let hash_key_range = HashKeyRange::parse(&range.starting_hash_key, &range.ending_hash_key)
            .ok_or_else(|| format!("the host gave an invalid hash-key range {range:?}"))?;
        let shard = ShardContext {
            stream: context.stream_name,
            shard_id: context.shard_id,
            application: context.application,
            hash_key_range,
            parents: context.parent_shard_ids,
        };
        let processor = P::init(&config, &shard)?;
        INSTANCE.with_borrow_mut(|slot| *slot = Some(Box::new(processor)));
        Ok(types::ProcessorInfo { name: P::NAME.to_string(), state_version: P::STATE_VERSION })
    }

    fn process(batch: types::RecordBatch) -> Result<(), types::ProcessError> {
        let view = Batch::new(&batch.payload, &batch.index, batch.millis_behind_latest);
        with_processor::<P, _>(|p, out| p.process(&view, out)).map_err(to_wit_error)
    }

    fn on_timer(now_millis: i64) -> Result<(), types::ProcessError> {
        with_processor::<P, _>(|p, out| p.on_timer(now_millis, out)).map_err(to_wit_error)
    }

    fn snapshot() -> types::State {
        let bytes = with_processor::<P, _>(|p, _| p.snapshot());
        types::State { version: P::STATE_VERSION, bytes }
    }

    fn restore(state: types::State) -> Result<(), String> {
        with_processor::<P, _>(|p, _| p.restore(&state.bytes, state.version))
    }

    fn shutdown(reason: types::ShutdownReason) {
        let reason = match reason {
            types::ShutdownReason::ShardEnded => ShutdownReason::ShardEnded,
            types::ShutdownReason::LeaseLost => ShutdownReason::LeaseLost,
            types::ShutdownReason::Requested => ShutdownReason::Requested,
        };
        with_processor::<P, _>(|p, out| p.shutdown(reason, out));
    }
}

impl<P: Processor> MergeGuest for Glue<P> {
    fn merge(parents: Vec<types::State>) -> Result<(), String> {
        let parents: Vec<Snapshot> =
            parents.into_iter().map(|s| Snapshot { version: s.version, bytes: s.bytes }).collect();
        with_processor::<P, _>(|p, _| p.merge(&parents))
    }
}
