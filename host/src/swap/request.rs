//! What a trigger asks the swap coordinator for, and what comes of it:
//! the request, the new component's source, the outcome and the result
//! (logged, counted, and the control endpoint's answer).

use super::ShardSwap;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use tokio::sync::oneshot;

/// Where the new component comes from.
#[derive(Debug, Clone)]
pub enum PluginSource {
    /// A file on this machine (`--watch`, SIGHUP).
    Path(PathBuf),
    /// Bytes sent to the control endpoint; `name` labels it in messages.
    Bytes { name: String, bytes: Vec<u8> },
}

/// What a trigger asks for.
#[derive(Debug)]
pub enum SwapRequest {
    /// Run this component from the next batch on: on every shard, or on
    /// `only` these (a canary; the others keep the logic they run).
    Swap { source: PluginSource, only: Option<BTreeSet<String>>, reply: Option<oneshot::Sender<SwapResult>> },
    /// Undo the last swap; `to` names the logic to go back to when this
    /// host did not make that swap (a group's rollback on a worker that
    /// joined after it: shards with a pre-swap point of `to` replay from it).
    Rollback { to: Option<PluginSource>, reply: Option<oneshot::Sender<SwapResult>> },
}

/// What came of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SwapOutcome {
    /// New logic runs on every shard.
    Swapped,
    /// The file holds the logic already running.
    Unchanged,
    /// The previous logic runs again, from its pre-swap checkpoints.
    RolledBack,
    /// The logic that ran before runs on; the message says why.
    Refused,
}

impl SwapOutcome {
    /// The name in logs, metrics and the control endpoint's JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            SwapOutcome::Swapped => "swapped",
            SwapOutcome::Unchanged => "unchanged",
            SwapOutcome::RolledBack => "rolled-back",
            SwapOutcome::Refused => "refused",
        }
    }
}

impl std::fmt::Display for SwapOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer to a request (also logged, and the control endpoint's reply).
#[derive(Debug, Clone, Serialize)]
pub struct SwapResult {
    pub outcome: SwapOutcome,
    /// One line for the operator.
    pub message: String,
    /// Content hash of the logic running after the request.
    pub sha256: String,
    /// Per shard, how it took the change.
    pub shards: BTreeMap<String, ShardSwap>,
    /// Compile and check time of the new component.
    pub prepare_millis: u64,
    /// From the request to the last shard's switch.
    pub total_millis: u64,
    /// The generation running after the request (set when it settled).
    pub generation: u64,
    /// No request asked for it: new logic failed in probation and the
    /// coordinator rolled it back (a group then rolls back everywhere).
    #[serde(skip)]
    pub on_its_own: bool,
}
