//! Waiting inside a call is bounded by the call's deadline. The epoch
//! deadline interrupts only running wasm code; a plugin that sleeps (Rust's
//! `std::thread::sleep`, Python's `time.sleep`: `wasi:clocks` timers waited
//! on through `wasi:io/poll`) would hold its call, and a host thread, for as
//! long as it asked. So `poll` and `pollable.block` are replaced by versions
//! that stop waiting at the call's deadline and trap as the epoch does
//! (`Trap::Interrupt`), which the instance reports as the time limit.
//!
//! In this sandbox every other pollable is ready at once (no network, files
//! or stdin; stdout and stderr are in memory), so the clock is the only
//! thing a plugin can wait on, and every wait goes through these two calls.

use super::state::HostState;
use std::future::Future;
use std::time::Instant;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime::Trap;
use wasmtime_wasi::p2::bindings::sync::io::poll as sync_poll;
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi_io::bindings::wasi::io::poll as async_poll;

/// The WASI resource table of an instance, with the deadline of the call in
/// progress.
pub(crate) struct BoundedPoll<'a> {
    table: &'a mut ResourceTable,
    deadline: Option<Instant>,
}

struct BoundedPolls;

impl HasData for BoundedPolls {
    type Data<'a> = BoundedPoll<'a>;
}

/// Replaces WASI's `poll` and `pollable.block` in `linker` (which already has
/// WASI) with the bounded versions.
pub(crate) fn bound_waits(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let added = sync_poll::add_to_linker::<HostState, BoundedPolls>(linker, |state| {
        let (table, deadline) = state.table_and_deadline();
        BoundedPoll { table, deadline }
    });
    linker.allow_shadowing(false);
    added
}

/// Runs a wait until it ends or the deadline passes (then traps).
fn bounded<T>(deadline: Option<Instant>, wait: impl Future<Output = wasmtime::Result<T>>) -> wasmtime::Result<T> {
    wasmtime_wasi::runtime::in_tokio(async move {
        match deadline {
            None => wait.await,
            Some(deadline) => match tokio::time::timeout_at(deadline.into(), wait).await {
                Ok(result) => result,
                Err(_) => Err(wasmtime::Error::new(Trap::Interrupt)),
            },
        }
    })
}

impl sync_poll::Host for BoundedPoll<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        bounded(self.deadline, async_poll::Host::poll(&mut *self.table, pollables))
    }
}

impl sync_poll::HostPollable for BoundedPoll<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        wasmtime_wasi::runtime::in_tokio(async_poll::HostPollable::ready(&mut *self.table, pollable))
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        bounded(self.deadline, async_poll::HostPollable::block(&mut *self.table, pollable))
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        async_poll::HostPollable::drop(&mut *self.table, pollable)
    }
}
