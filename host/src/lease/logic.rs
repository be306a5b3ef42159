//! The group's logic: which component every worker of a lease table runs.
//!
//! One small item in the lease table (key [`LOGIC_KEY`], no shard id starts
//! with `!`) names the logic in force, the one before it (what a rollback
//! returns to) and a deployment number. Every change is a conditional write
//! on the number it read, so deployments have one total order however many
//! workers or operators write at once. The components themselves are
//! content-addressed chunks in the state table (key [`COMPONENT_KEY`], tag =
//! SHA-256): immutable, written before the item that points at them, and
//! checked against their hash on every load, so a half-written upload or a
//! tampered chunk is never run.

use super::{sha256_hex, LeaseError, LeaseTable, StateRef};

/// The lease-table key of the deployment item.
pub const LOGIC_KEY: &str = "!logic";
/// The state-table key under which components are stored.
pub const COMPONENT_KEY: &str = "!component";
/// The largest component a group may run (as the control endpoint's bound):
/// a size read from the table is checked against it before anything is
/// allocated by it.
pub const MAX_COMPONENT_BYTES: u64 = 128 << 20;
/// The most canary shards a deployment names (their ids ride in the item).
pub const MAX_CANARY_SHARDS: usize = 100;
/// The largest plugin config a deployment item carries (items are 400 KB).
pub const MAX_CONFIG_BYTES: usize = 64 << 10;

/// A component stored in the state table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentRef {
    /// Its SHA-256 (hex): the tag of its chunks, and what a load checks.
    pub sha256: String,
    /// Its size in bytes.
    pub len: u64,
    /// How many chunks hold it.
    pub chunks: u32,
    /// The file name it was published from, for messages only.
    pub name: String,
}

impl ComponentRef {
    /// The first 12 hex digits, as logs and tables show a logic.
    pub fn short(&self) -> &str {
        short(&self.sha256)
    }
}

/// The first 12 hex digits of a SHA-256.
pub fn short(sha256: &str) -> &str {
    &sha256[..sha256.len().min(12)]
}

/// How every worker swaps to a deployment's logic (the group's, so every
/// shard is judged alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwapRules {
    /// Batches each shard must get through on new logic; a failure within
    /// them rolls the whole group back.
    pub probation_batches: u32,
    /// When new logic rejects the running state: start it fresh (true), or
    /// refuse the swap (false).
    pub fresh_on_rejected_state: bool,
}

impl Default for SwapRules {
    fn default() -> Self {
        SwapRules { probation_batches: 3, fresh_on_rejected_state: false }
    }
}

/// Why the logic in force is what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeploymentChange {
    /// The first worker's `--plugin` (a new table).
    Seeded,
    /// `host swap --lease-table`, or `--watch`/SIGHUP on a worker.
    Swap,
    /// Deployment `of` was undone: by request, or because its logic failed
    /// on a shard within probation (`reason` says where and how).
    Rollback { of: u64, reason: String },
}

/// The group's logic in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    /// Moves by one per change: the fencing token of the deployment item.
    pub number: u64,
    /// What every shard runs.
    pub logic: ComponentRef,
    /// What ran before (a rollback returns to it).
    pub previous: Option<ComponentRef>,
    pub change: DeploymentChange,
    /// The plugin's JSON config every shard's `init` gets: the group's, so
    /// one logic means one config too.
    pub config: String,
    /// How workers swap to it.
    pub rules: SwapRules,
    /// The shards that run it while the rest stay on `previous` (a
    /// canary); empty: every shard runs it.
    pub canary: Vec<String>,
    /// Who wrote it (a worker id, or `host swap` and its machine).
    pub by: String,
    /// When, by the writer's clock (ms since the epoch): for operators only.
    pub at_millis: u64,
}

impl Deployment {
    /// The deployment after this one, running `logic`.
    pub fn next(&self, logic: ComponentRef, change: DeploymentChange, by: &str) -> Deployment {
        Deployment {
            number: self.number + 1,
            previous: Some(self.logic.clone()),
            logic,
            change,
            config: self.config.clone(),
            rules: self.rules,
            canary: Vec::new(),
            by: by.into(),
            at_millis: now_millis(),
        }
    }

    /// A canary's logic for every shard: the same logic and previous logic
    /// (a rollback still returns to what ran before the canary).
    pub fn promoted(&self, by: &str) -> Deployment {
        Deployment {
            number: self.number + 1,
            canary: Vec::new(),
            change: DeploymentChange::Swap,
            by: by.into(),
            at_millis: now_millis(),
            ..self.clone()
        }
    }

    /// The first deployment of a table.
    pub fn first(logic: ComponentRef, config: &str, rules: SwapRules, by: &str) -> Deployment {
        Deployment {
            number: 1,
            logic,
            previous: None,
            change: DeploymentChange::Seeded,
            config: config.into(),
            rules,
            canary: Vec::new(),
            by: by.into(),
            at_millis: now_millis(),
        }
    }

    /// One line for operators.
    pub fn describe(&self) -> String {
        let change = match &self.change {
            DeploymentChange::Seeded => "seeded by the first worker".to_string(),
            DeploymentChange::Swap => match &self.previous {
                Some(previous) => format!("swapped from {}", previous.short()),
                None => "swapped".to_string(),
            },
            DeploymentChange::Rollback { of, reason } => format!("rolled back deployment {of}: {reason}"),
        };
        let scope = match self.canary.len() {
            0 => String::new(),
            n => format!(" on {n} canary shard(s) ({})", self.canary.join(", ")),
        };
        let (number, short, name) = (self.number, self.logic.short(), &self.logic.name);
        format!("deployment {number}: {short} ({name}){scope}, {change}, by {}", self.by)
    }
}

/// Stores a component's bytes (idempotent: the same bytes land under the
/// same key). Refused past [`MAX_COMPONENT_BYTES`].
pub async fn store_component(table: &dyn LeaseTable, name: &str, bytes: &[u8]) -> Result<ComponentRef, LeaseError> {
    if bytes.len() as u64 > MAX_COMPONENT_BYTES {
        return Err(LeaseError::Denied(anyhow::anyhow!(
            "{name} is {} MiB, more than the {} MiB a group's component may have",
            bytes.len() >> 20,
            MAX_COMPONENT_BYTES >> 20
        )));
    }
    let sha256 = sha256_hex(bytes);
    match table.put_state(COMPONENT_KEY, &sha256, 0, bytes).await? {
        StateRef::Chunked { chunks, len, .. } => Ok(ComponentRef { sha256, len, chunks, name: name.into() }),
        StateRef::Inline { .. } => Err(anyhow::anyhow!("the table stored component {name} inline").into()),
    }
}

/// A component's bytes, checked against its hash and size.
pub async fn load_component(table: &dyn LeaseTable, component: &ComponentRef) -> Result<Vec<u8>, LeaseError> {
    let stored = StateRef::Chunked {
        layout: 0,
        tag: component.sha256.clone(),
        chunks: component.chunks,
        len: component.len,
        sha256: component.sha256.clone(),
    };
    let bytes = table.get_state(COMPONENT_KEY, &stored).await?;
    if bytes.len() as u64 != component.len || sha256_hex(&bytes) != component.sha256 {
        return Err(anyhow::anyhow!(
            "component {} ({}) in the state table does not match its hash: refusing to run it",
            component.short(),
            component.name
        )
        .into());
    }
    Ok(bytes)
}

/// Wall-clock milliseconds (display only).
pub(crate) fn now_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// SHA-256 of a component, hex: the name a group gives its logic.
pub fn sha256(bytes: &[u8]) -> String {
    sha256_hex(bytes)
}
