//! One logic for a group of workers sharing a lease table.
//!
//! The lease table's deployment item (`lease::logic`) names the component
//! every worker runs. This module is where it meets a host's hot swap:
//! - [`starting_logic`]: what a worker starts with (the group's logic; its
//!   `--plugin` only seeds a new table);
//! - [`publish`]: checks a component as a swap does, stores it, and makes
//!   it the group's (`host swap --lease-table`, and `--watch`/SIGHUP on a
//!   worker);
//! - [`follow`] (`follow.rs`): each worker reads the item once a second
//!   (or when a shard start asks) and hands a new deployment to its own swap coordinator,
//!   which switches every shard at a batch boundary; a failure in probation
//!   on any worker is written back as the group's rollback;
//! - [`progress`] (`progress.rs`): which shard runs which logic, from the
//!   lease items' `logic` (written with each checkpoint).

mod follow;
mod progress;
mod worker;

pub use follow::follow;
pub use progress::{progress, GroupProgress};
pub use worker::{requested_rollback, GroupRun};

use crate::lease::logic::{load_component, short, store_component, SwapRules, MAX_CONFIG_BYTES};
use crate::lease::{Conflict, Deployment, DeploymentChange, LeaseError, LeaseTable};
use crate::plugin::{CompiledCache, InstanceSettings, Plugin, PluginEngine};
use crate::swap::PluginSource;
use anyhow::Context;
use std::path::Path;
use std::sync::Arc;

/// A deployment's rules as this host's swap policy.
pub fn policy(rules: SwapRules) -> crate::swap::SwapPolicy {
    crate::swap::SwapPolicy {
        probation_batches: rules.probation_batches,
        on_rejected_state: if rules.fresh_on_rejected_state {
            crate::swap::OnRejectedState::Fresh
        } else {
            crate::swap::OnRejectedState::Refuse
        },
    }
}

/// What loading and checking components needs.
#[derive(Clone)]
pub struct Loader {
    pub engine: PluginEngine,
    pub cache: Option<CompiledCache>,
}

impl Loader {
    /// The component a deployment names, from the table (hash checked),
    /// compiled (or from the compiled cache, keyed by the same hash).
    pub async fn load(&self, table: &dyn LeaseTable, deployment: &Deployment) -> anyhow::Result<Arc<Plugin>> {
        let logic = &deployment.logic;
        let bytes = load_component(table, logic)
            .await
            .with_context(|| format!("cannot read the group's logic {} ({})", logic.short(), logic.name))?;
        let (engine, cache, name) = (self.engine.clone(), self.cache.clone(), logic.name.clone());
        let plugin =
            tokio::task::spawn_blocking(move || Plugin::from_bytes(&engine, Path::new(&name), &bytes, cache.as_ref()))
                .await
                .context("loading the group's logic panicked")?
                .with_context(|| format!("cannot load the group's logic {} ({})", logic.short(), logic.name))?;
        Ok(Arc::new(plugin))
    }
}

/// What a worker starts with.
pub struct Starting {
    /// The group's logic.
    pub plugin: Arc<Plugin>,
    /// After a swap: the logic before it (during a canary, the other
    /// shards run it).
    pub base: Option<Arc<Plugin>>,
    pub deployment: Deployment,
}

/// The logic a worker starts with, and the deployment it comes from: the
/// group's, whatever `--plugin` says (one line when they differ); a table
/// without logic is seeded with `--plugin` and `config`.
pub async fn starting_logic(
    table: &dyn LeaseTable,
    loader: &Loader,
    plugin: Option<&Path>,
    config: &str,
    rules: SwapRules,
    me: &str,
) -> anyhow::Result<Starting> {
    for _ in 0..3 {
        if let Some(deployment) = table.deployment().await.context("cannot read the group's logic")? {
            let running = loader.load(table, &deployment).await?;
            if let Some(path) = plugin {
                let given = std::fs::read(path).map(|b| crate::lease::logic::sha256(&b)).unwrap_or_default();
                if given != deployment.logic.sha256 {
                    eprintln!(
                        "note: this worker runs the group's logic {} ({}, deployment {}), not --plugin {}: \
                         `host swap --lease-table` changes the group's logic",
                        deployment.logic.short(),
                        deployment.logic.name,
                        deployment.number,
                        path.display()
                    );
                }
            }
            if deployment.config != config && config != "{}" {
                eprintln!(
                    "note: this worker gives its plugin the group's config ({}), not its own --config",
                    deployment.config
                );
            }
            // The logic before a swap: a rollback returns to it (shards
            // taken in probation replay from their pre-swap points of it),
            // and during a canary the other shards run it.
            let base = match &deployment.previous {
                Some(previous) if deployment.change == DeploymentChange::Swap || !deployment.canary.is_empty() => {
                    let before = Deployment { logic: previous.clone(), ..deployment.clone() };
                    Some(loader.load(table, &before).await?)
                }
                _ => None,
            };
            return Ok(Starting { plugin: running, base, deployment });
        }
        let Some(path) = plugin else {
            anyhow::bail!(
                "the lease table has no logic yet: give --plugin FILE to seed it (the first worker's becomes the group's)"
            );
        };
        if config.len() > MAX_CONFIG_BYTES {
            anyhow::bail!("--config is {} bytes; a group's config may have {MAX_CONFIG_BYTES}", config.len());
        }
        let bytes = std::fs::read(path).with_context(|| format!("cannot read --plugin {}", path.display()))?;
        let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
        let logic = store_component(table, &name, &bytes).await.context("cannot store the plugin in the table")?;
        match table.deploy(&Deployment::first(logic, config, rules, me)).await {
            Ok(()) => eprintln!(
                "the group's logic is now {} ({name}), seeded by this worker",
                short(&crate::lease::logic::sha256(&bytes))
            ),
            // Another worker seeded it first: run that one.
            Err(LeaseError::Conflict(_)) => continue,
            Err(e) => return Err(anyhow::Error::new(e).context("cannot seed the group's logic")),
        }
    }
    anyhow::bail!("the group's logic kept changing while this worker started; start it again")
}

/// Why a publish did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The component failed its check; the group runs on untouched.
    #[error("{0}")]
    Refused(String),
    /// The table has no logic to replace: no worker has run yet.
    #[error("the lease table has no logic yet: start a worker with --plugin first")]
    NoGroup,
    #[error(transparent)]
    Table(#[from] anyhow::Error),
}

/// What to publish.
#[derive(Debug)]
pub struct Publish {
    /// The component.
    pub source: PluginSource,
    /// Its swap rules (default: the group's).
    pub rules: Option<SwapRules>,
    /// Shards to try it on first (empty: all).
    pub canary: Vec<String>,
    /// The same logic as a canary in force means: promote it (an
    /// operator's `host swap` only; a worker's SIGHUP never promotes).
    pub promote: bool,
}

/// What came of a publish.
#[derive(Debug)]
pub enum Published {
    /// The new deployment.
    Deployed(Deployment),
    /// The group runs this logic already.
    Unchanged(Deployment),
}

/// Checks a component as a swap does (compile, contract, `init` with the
/// group's config on a probe instance), stores it and makes it the group's
/// logic. Nothing is written when the check fails.
pub async fn publish(
    table: &dyn LeaseTable,
    loader: &Loader,
    settings: InstanceSettings,
    request: Publish,
    by: &str,
) -> Result<Published, PublishError> {
    let Publish { source, rules, canary, promote } = request;
    let current = table.deployment().await.context("cannot read the group's logic")?.ok_or(PublishError::NoGroup)?;
    let (name, bytes) = match source {
        PluginSource::Bytes { name, bytes } => (name, bytes),
        PluginSource::Path(path) => {
            let bytes = std::fs::read(&path)
                .map_err(|e| PublishError::Refused(format!("cannot read {}: {e}", path.display())))?;
            let name =
                path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
            (name, bytes)
        }
    };
    let mut settings = settings;
    settings.config = current.config.clone();
    let (engine, cache) = (loader.engine.clone(), loader.cache.clone());
    let source = PluginSource::Bytes { name: name.clone(), bytes };
    let (checked, source) =
        tokio::task::spawn_blocking(move || (crate::swap::check(&engine, cache.as_ref(), settings, &source), source))
            .await
            .map_err(|e| PublishError::Table(anyhow::anyhow!("checking the component panicked: {e}")))?;
    checked.map_err(PublishError::Refused)?;
    let PluginSource::Bytes { bytes, .. } = source else { unreachable!("built as bytes above") };
    let logic = store_component(table, &name, &bytes).await.context("cannot store the component in the table")?;
    let mut current = current;
    loop {
        let next = if current.logic.sha256 != logic.sha256 {
            let mut next = current.next(logic.clone(), DeploymentChange::Swap, by);
            next.rules = rules.unwrap_or(next.rules);
            next.canary = canary.clone();
            if !current.canary.is_empty() {
                // Over a canary never promoted: what most shards run (and a
                // rollback returns to) is the logic before it.
                next.previous = current.previous.clone();
            }
            next
        } else if !current.canary.is_empty() && canary.is_empty() && promote {
            // The canary's logic, now for every shard.
            current.promoted(by)
        } else {
            return Ok(Published::Unchanged(current));
        };
        match table.deploy(&next).await {
            Ok(()) => return Ok(Published::Deployed(next)),
            // Someone deployed meanwhile: this one goes on top of theirs.
            Err(LeaseError::Conflict(Conflict { .. })) => {
                current =
                    table.deployment().await.context("cannot read the group's logic")?.ok_or(PublishError::NoGroup)?;
            }
            Err(e) => return Err(anyhow::Error::new(e).context("cannot write the group's logic").into()),
        }
    }
}

/// Makes the logic before `of` the group's again, unless the group has
/// moved past `of` (someone else decided first). Returns the rollback, if
/// this call wrote it.
pub async fn roll_back(
    table: &dyn LeaseTable,
    of: &Deployment,
    reason: &str,
    by: &str,
) -> Result<Option<Deployment>, LeaseError> {
    let Some(previous) = of.previous.clone() else { return Ok(None) };
    let next = of.next(previous, DeploymentChange::Rollback { of: of.number, reason: reason.into() }, by);
    match table.deploy(&next).await {
        Ok(()) => Ok(Some(next)),
        Err(LeaseError::Conflict(_)) => Ok(None),
        Err(e) => Err(e),
    }
}
