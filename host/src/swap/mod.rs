//! Hot swap: new processor logic for a running host, without losing or
//! repeating a record, and with the plugin's state handed over.
//!
//! The pieces: a trigger (`file_watch.rs`: the file changed; SIGHUP; the control
//! endpoint in `control.rs`) sends a [`SwapRequest`] to the [`coordinate`]
//! task. It compiles and checks the new component off the hot path (a bad
//! file, a wrong world or a failing `init` leave the old logic running), then
//! publishes a new [`Generation`] on the [`SwapHub`]. Each shard's worker
//! takes it at its next batch boundary: commit, old `snapshot` → new
//! `restore`, continue from the same sequence number. A worker keeps what it
//! needs to undo the swap ([`PreSwap`]): if the new logic fails within its
//! first batches, or on `host swap --rollback`, the shard goes back to the old
//! plugin with its pre-swap state and replays from the pre-swap checkpoint.

pub mod control;
mod coordinator;
pub mod file_watch;
pub mod project_watch;
mod request;

pub use coordinator::{check, coordinate, SwapContext};
pub use request::{PluginSource, SwapOutcome, SwapRequest, SwapResult};

use crate::plugin::Plugin;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};

/// What a swap does when the new plugin rejects the running plugin's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnRejectedState {
    /// Keep the old logic running (and its state): the swap is refused.
    #[default]
    Refuse,
    /// Start the new logic with empty state.
    Fresh,
}

/// How swaps behave in a run.
#[derive(Debug, Clone, Copy)]
pub struct SwapPolicy {
    /// When the new plugin's `restore` rejects the old state.
    pub on_rejected_state: OnRejectedState,
    /// Batches per shard the new logic must process without failing; a
    /// failure within them rolls the swap back.
    pub probation_batches: u32,
}

impl Default for SwapPolicy {
    fn default() -> Self {
        SwapPolicy { on_rejected_state: OnRejectedState::Refuse, probation_batches: 3 }
    }
}

/// Why a generation replaced the one before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The plugin the run started with.
    Initial,
    /// New logic, state handed over from the running one.
    Swap,
    /// Undo of generation `of`: back to the plugin before it, with the
    /// pre-swap state, replaying from the pre-swap checkpoint.
    Rollback { of: u64 },
}

/// The logic every shard should run. Workers compare ids to notice changes.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Increases by one per published change.
    pub id: u64,
    pub plugin: Arc<Plugin>,
    pub change: Change,
    /// A canary: only these shards run `plugin`; the others run `base`.
    pub only: Option<Arc<BTreeSet<String>>>,
    /// What shards outside `only` run (the logic before the canary).
    pub base: Option<Arc<Plugin>>,
    /// SHA-256 of the logic a rollback of this swap returns to.
    pub returns_to: Option<String>,
}

impl Generation {
    /// The logic `shard_id` runs under this generation.
    pub fn plugin_for(&self, shard_id: &str) -> &Arc<Plugin> {
        match (&self.only, &self.base) {
            (Some(only), Some(base)) if !only.contains(shard_id) => base,
            _ => &self.plugin,
        }
    }
}

/// How one shard took (or refused) a generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum ShardSwap {
    /// Switched at a batch boundary; `stall_micros` is how long the shard
    /// did not process because of it.
    Switched { stall_micros: u64, fresh_state: bool },
    /// Went back to the previous plugin and its pre-swap state.
    RolledBack { reason: String },
    /// Kept the logic it had.
    Refused { reason: String },
    /// Did not reach a batch boundary in time (a slow sink, a back-off):
    /// not the new logic's fault, but it did not switch.
    Late { reason: String },
}

/// A worker's word on a generation.
#[derive(Debug, Clone)]
pub struct ShardReport {
    pub shard_id: String,
    pub generation: u64,
    pub outcome: ShardSwap,
    /// After a rollback in probation: the logic the shard went back to.
    pub back_to: Option<Arc<Plugin>>,
}

/// Where the running logic is published and where workers answer.
pub struct SwapHub {
    current: watch::Sender<Arc<Generation>>,
    reports: mpsc::UnboundedSender<ShardReport>,
    /// Taken once, by the coordinator.
    pub(crate) report_rx: Mutex<Option<mpsc::UnboundedReceiver<ShardReport>>>,
    /// Per running shard: the generation it has taken (the coordinator waits
    /// for every shard to reach a new one).
    shards: Mutex<BTreeMap<String, u64>>,
    /// How swaps behave: the run's flags, or a group's deployment.
    policy: Mutex<SwapPolicy>,
    /// Set when something keeps this host's logic in line with a group's
    /// (`group::follow`): shards about to start ask it to look first.
    followed: std::sync::atomic::AtomicBool,
    /// A shard start asks the follower to look now.
    look: tokio::sync::Notify,
    /// Numbers the asks for a look.
    asked: std::sync::atomic::AtomicU64,
    /// The last ask a finished look began after: an asker waits for its
    /// own number, so a look already under way when it asked never counts.
    looked: watch::Sender<u64>,
    /// Logic this host ran or may roll back to: a shard taken in the
    /// middle of a deployment finds its pre-swap logic here.
    library: Mutex<Vec<Arc<Plugin>>>,
    /// Shards on probation for a generation: `host swap` waits for these
    /// to pass, or fails on one that failed.
    probation: Mutex<BTreeMap<String, Probation>>,
    /// The last request's or probation rollback's result: what a waiting
    /// `host swap` reads.
    last: Mutex<Option<SwapResult>>,
}

/// A shard's probation, as a waiting `host swap` reads it.
#[derive(Debug, Clone, Serialize)]
pub struct Probation {
    /// The generation whose logic is on probation.
    pub generation: u64,
    /// Batches left to pass (0 once it failed).
    pub left: u32,
    /// Why the new logic failed here (a rollback follows, or the shard stopped).
    pub failed: Option<String>,
}

/// The most components a hub keeps for rollbacks (each holds its compiled
/// code; a rollback needs the logic before the last swap).
const LIBRARY: usize = 4;

impl std::fmt::Debug for SwapHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwapHub").field("current", &self.current.borrow().id).finish_non_exhaustive()
    }
}

impl SwapHub {
    /// A hub whose first generation runs `plugin`.
    pub fn new(plugin: Arc<Plugin>, policy: SwapPolicy) -> Arc<Self> {
        let first = Generation { id: 0, plugin, change: Change::Initial, only: None, base: None, returns_to: None };
        let (current, _) = watch::channel(Arc::new(first));
        let (reports, report_rx) = mpsc::unbounded_channel();
        Arc::new(SwapHub {
            current,
            reports,
            report_rx: Mutex::new(Some(report_rx)),
            shards: Mutex::default(),
            policy: Mutex::new(policy),
            followed: Default::default(),
            look: Default::default(),
            asked: Default::default(),
            looked: watch::channel(0).0,
            library: Mutex::default(),
            probation: Mutex::default(),
            last: Mutex::default(),
        })
    }

    /// Keeps `plugin` at hand for a rollback to it.
    pub fn remember(&self, plugin: Arc<Plugin>) {
        if let Ok(mut library) = self.library.lock() {
            library.retain(|p| p.sha256() != plugin.sha256());
            library.push(plugin);
            let over = library.len().saturating_sub(LIBRARY);
            library.drain(..over);
        }
    }

    /// The logic with this SHA-256, if this host runs it or keeps it.
    pub fn known(&self, sha256: &str) -> Option<Arc<Plugin>> {
        let current = self.current();
        let running = [Some(&current.plugin), current.base.as_ref()].into_iter().flatten();
        if let Some(plugin) = running.into_iter().find(|p| p.sha256() == sha256) {
            return Some(plugin.clone());
        }
        self.library.lock().ok()?.iter().find(|p| p.sha256() == sha256).cloned()
    }

    /// The run starts in a canary: shards in `only` run the first
    /// generation's plugin, the others `base` (a group worker that joins
    /// while its group tries new logic on a few shards).
    pub fn start_canary(&self, only: BTreeSet<String>, base: Arc<Plugin>) {
        let first = self.current();
        let canary = Generation { only: Some(Arc::new(only)), base: Some(base), ..(*first).clone() };
        self.current.send_replace(Arc::new(canary));
    }

    /// The run starts in the middle of a swap whose rollback returns to
    /// `sha256` (a group worker joining during a deployment).
    pub fn start_after_swap(&self, sha256: &str) {
        let first = self.current();
        let after = Generation { returns_to: Some(sha256.to_string()), ..(*first).clone() };
        self.current.send_replace(Arc::new(after));
    }

    /// How the next swap behaves.
    pub fn policy(&self) -> SwapPolicy {
        self.policy.lock().map(|p| *p).unwrap_or_default()
    }

    /// A group's deployment says how its swaps behave.
    pub fn set_policy(&self, policy: SwapPolicy) {
        if let Ok(mut current) = self.policy.lock() {
            *current = policy;
        }
    }

    /// A follower keeps this host's logic in line with a group's from now on.
    pub fn followed(&self) {
        self.followed.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether a group's follower keeps this host's logic (so each shard's
    /// stored logic must name what runs it).
    pub fn is_followed(&self) -> bool {
        self.followed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Has the follower (if any) look at the group's logic now, and waits
    /// until it has (at most `limit`): a shard taken from another worker
    /// must not start under logic the group has left.
    /// False when it had not looked by then.
    pub async fn refresh(&self, limit: std::time::Duration) -> bool {
        if !self.followed.load(std::sync::atomic::Ordering::Relaxed) {
            return true;
        }
        let mut looked = self.looked.subscribe();
        let ask = self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        self.look.notify_one();
        let answered = tokio::time::timeout(limit, looked.wait_for(|n| *n >= ask)).await;
        matches!(answered, Ok(Ok(_)))
    }

    /// Resolves when a shard start asks the follower to look.
    pub async fn look_asked(&self) {
        self.look.notified().await
    }

    /// The follower begins a look: the asks it answers.
    pub fn looking(&self) -> u64 {
        self.asked.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The follower has looked (and applied what it found), answering the
    /// asks made before it began (`looking`'s number).
    pub fn looked(&self, answered: u64) {
        self.looked.send_modify(|n| *n = (*n).max(answered));
    }

    /// The generation in force.
    pub fn current(&self) -> Arc<Generation> {
        self.current.borrow().clone()
    }

    /// A worker's view of the generations, starting at the current one.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Generation>> {
        self.current.subscribe()
    }

    /// A worker records that it runs `generation`.
    pub fn running(&self, shard_id: &str, generation: u64) {
        if let Ok(mut shards) = self.shards.lock() {
            shards.insert(shard_id.to_string(), generation);
        }
    }

    /// A worker is gone.
    pub fn left(&self, shard_id: &str) {
        if let Ok(mut shards) = self.shards.lock() {
            shards.remove(shard_id);
        }
        // A failure stays listed for a `host swap` waiting on it.
        if let Ok(mut probation) = self.probation.lock() {
            if probation.get(shard_id).is_some_and(|p| p.failed.is_none()) {
                probation.remove(shard_id);
            }
        }
    }

    /// A worker tells how many batches of probation it has left under
    /// `generation` (0: none, or passed).
    pub fn on_probation(&self, shard_id: &str, generation: u64, left: u32) {
        if let Ok(mut probation) = self.probation.lock() {
            match left {
                // A failure stays listed (a waiting `host swap` reads it by
                // its generation) until the shard's next probation.
                0 if probation.get(shard_id).is_some_and(|p| p.failed.is_some()) => None,
                0 => probation.remove(shard_id),
                left => probation.insert(shard_id.to_string(), Probation { generation, left, failed: None }),
            };
        }
    }

    /// The new logic of `generation` failed on a shard in probation.
    pub fn probation_failed(&self, shard_id: &str, generation: u64, why: String) {
        if let Ok(mut probation) = self.probation.lock() {
            probation.insert(shard_id.to_string(), Probation { generation, left: 0, failed: Some(why) });
        }
    }

    /// Shards on probation (or failed in it).
    pub fn probation(&self) -> BTreeMap<String, Probation> {
        self.probation.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// The coordinator records what came of a request or a probation
    /// rollback, and the generation it left running.
    pub(crate) fn settled(&self, result: &mut SwapResult) {
        result.generation = self.current().id;
        if let Ok(mut last) = self.last.lock() {
            *last = Some(result.clone());
        }
    }

    /// The last result.
    pub fn last(&self) -> Option<SwapResult> {
        self.last.lock().ok()?.clone()
    }

    /// A worker tells how it took a generation.
    pub fn report(&self, report: ShardReport) {
        let _ = self.reports.send(report);
    }

    /// Shards and the generation each runs.
    pub fn shards(&self) -> BTreeMap<String, u64> {
        self.shards.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub(crate) fn publish(
        &self,
        plugin: Arc<Plugin>,
        change: Change,
        only: Option<BTreeSet<String>>,
    ) -> Arc<Generation> {
        let current = self.current();
        // Shards outside a canary keep what they ran before any canary.
        let base = only.as_ref().map(|_| current.base.clone().unwrap_or_else(|| current.plugin.clone()));
        let before = current.base.as_ref().unwrap_or(&current.plugin);
        let returns_to = (change == Change::Swap).then(|| before.sha256().to_string());
        let id = current.id + 1;
        let generation = Arc::new(Generation { id, plugin, change, only: only.map(Arc::new), base, returns_to });
        self.current.send_replace(generation.clone());
        generation
    }
}
