//! The group's deployment item in the lease table, and back. Everything
//! read from it is checked before use: a corrupt item must neither size an
//! allocation nor name a component that is not there.

use super::item::{n, s};
use super::{classify, DynamoTable, Item, FORMAT};
use crate::lease::logic::{
    ComponentRef, Deployment, DeploymentChange, SwapRules, LOGIC_KEY, MAX_CANARY_SHARDS, MAX_COMPONENT_BYTES,
    MAX_CONFIG_BYTES,
};
use crate::lease::{Conflict, LeaseError};
use anyhow::Context;
use aws_sdk_dynamodb::types::AttributeValue;

impl DynamoTable {
    pub(super) async fn read_deployment(&self) -> Result<Option<Deployment>, LeaseError> {
        let Some(item) = self.item(LOGIC_KEY).await? else { return Ok(None) };
        deployment_of(&item)
            .with_context(|| format!("the group's logic item `{LOGIC_KEY}` in `{}` is corrupt", self.table))
            .map(Some)
            .map_err(LeaseError::Denied)
    }

    pub(super) async fn write_deployment(&self, next: &Deployment) -> Result<(), LeaseError> {
        let mut put = self.client.put_item().table_name(&self.table).set_item(Some(item_of(next, &self.stream)));
        put = if next.number <= 1 {
            put.condition_expression("attribute_not_exists(leaseKey)")
        } else {
            put.condition_expression("deploymentNumber = :previous")
                .expression_attribute_values(":previous", n(next.number - 1))
        };
        match put.send().await {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                Err(Conflict { key: LOGIC_KEY.into(), expected: next.number.saturating_sub(1) }.into())
            }
            Err(e) => Err(classify(e, &self.table)),
        }
    }
}

fn put_component(item: &mut Item, prefix: &str, component: &ComponentRef) {
    item.insert(format!("{prefix}Sha256"), s(&component.sha256));
    item.insert(format!("{prefix}Length"), n(component.len));
    item.insert(format!("{prefix}Chunks"), n(u64::from(component.chunks)));
    item.insert(format!("{prefix}Name"), s(&component.name));
}

fn item_of(deployment: &Deployment, stream: &str) -> Item {
    let mut item = Item::new();
    item.insert("leaseKey".into(), s(LOGIC_KEY));
    item.insert(FORMAT.into(), n(1));
    item.insert("streamName".into(), s(stream));
    item.insert("deploymentNumber".into(), n(deployment.number));
    item.insert("deployedBy".into(), s(&deployment.by));
    item.insert("updatedAtMillis".into(), n(deployment.at_millis));
    put_component(&mut item, "logic", &deployment.logic);
    if let Some(previous) = &deployment.previous {
        put_component(&mut item, "previous", previous);
    }
    let change = match &deployment.change {
        DeploymentChange::Seeded => "seeded",
        DeploymentChange::Swap => "swap",
        DeploymentChange::Rollback { of, reason } => {
            item.insert("rollbackOf".into(), n(*of));
            item.insert("reason".into(), s(reason));
            "rollback"
        }
    };
    item.insert("change".into(), s(change));
    item.insert("pluginConfig".into(), s(&deployment.config));
    item.insert("probationBatches".into(), n(u64::from(deployment.rules.probation_batches)));
    let on_rejected = if deployment.rules.fresh_on_rejected_state { "fresh" } else { "refuse" };
    item.insert("onRejectedState".into(), s(on_rejected));
    if !deployment.canary.is_empty() {
        item.insert("canaryShards".into(), AttributeValue::Ss(deployment.canary.clone()));
    }
    item
}

fn component_of(item: &Item, prefix: &str) -> anyhow::Result<Option<ComponentRef>> {
    let Some(sha256) = item.get(&format!("{prefix}Sha256")).and_then(|v| v.as_s().ok()) else { return Ok(None) };
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        anyhow::bail!("{prefix}Sha256 is not a SHA-256: {sha256:?}");
    }
    let len = number(item, &format!("{prefix}Length"))?;
    let chunks = number(item, &format!("{prefix}Chunks"))?;
    if len == 0 || len > MAX_COMPONENT_BYTES {
        anyhow::bail!("{prefix}Length {len} is not a component's size (1 B to {} MiB)", MAX_COMPONENT_BYTES >> 20);
    }
    // Written in chunks of exactly CHUNK bytes: any other count is not ours.
    if chunks != len.div_ceil(super::CHUNK as u64) {
        anyhow::bail!("{prefix}Chunks {chunks} for {len} bytes");
    }
    let name = item.get(&format!("{prefix}Name")).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
    Ok(Some(ComponentRef { sha256: sha256.to_ascii_lowercase(), len, chunks: chunks as u32, name }))
}

fn number(item: &Item, name: &str) -> anyhow::Result<u64> {
    let text = item.get(name).and_then(|v| v.as_n().ok()).with_context(|| format!("{name} is missing"))?;
    text.parse().with_context(|| format!("{name} is not a number: {text}"))
}

fn deployment_of(item: &Item) -> anyhow::Result<Deployment> {
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
    let change = match text("change").as_str() {
        "seeded" => DeploymentChange::Seeded,
        "swap" => DeploymentChange::Swap,
        "rollback" => DeploymentChange::Rollback { of: number(item, "rollbackOf")?, reason: text("reason") },
        other => anyhow::bail!("change {other:?} is none of seeded, swap, rollback"),
    };
    let mut canary = item.get("canaryShards").and_then(|v| v.as_ss().ok()).cloned().unwrap_or_default();
    if canary.len() > MAX_CANARY_SHARDS || canary.iter().any(|id| id.len() > 256) {
        anyhow::bail!("canaryShards names more than {MAX_CANARY_SHARDS} shards, or ids past 256 bytes");
    }
    canary.sort();
    let config = text("pluginConfig");
    if config.len() > MAX_CONFIG_BYTES {
        anyhow::bail!("pluginConfig is {} bytes, past the {MAX_CONFIG_BYTES} a deployment carries", config.len());
    }
    let deployment_number = number(item, "deploymentNumber")?;
    if deployment_number == 0 || deployment_number > 1 << 53 {
        anyhow::bail!("deploymentNumber {deployment_number} is out of range");
    }
    Ok(Deployment {
        number: deployment_number,
        logic: component_of(item, "logic")?.context("logicSha256 is missing")?,
        previous: component_of(item, "previous")?,
        change,
        config,
        canary,
        rules: SwapRules {
            probation_batches: u32::try_from(number(item, "probationBatches")?)
                .context("probationBatches is out of range")?,
            fresh_on_rejected_state: text("onRejectedState") == "fresh",
        },
        by: text("deployedBy"),
        at_millis: number(item, "updatedAtMillis").unwrap_or(0),
    })
}

/// Whether a lease-table item is the deployment (scans skip it).
pub(super) fn is_deployment(item: &Item) -> bool {
    item.get("leaseKey").and_then(|k| k.as_s().ok()).is_some_and(|k| k == LOGIC_KEY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component(sha: char) -> ComponentRef {
        ComponentRef { sha256: sha.to_string().repeat(64), len: 1000, chunks: 1, name: "v.wasm".into() }
    }

    #[test]
    fn a_deployment_goes_to_an_item_and_back() {
        let first = Deployment::first(component('a'), "{}", SwapRules::default(), "w1");
        let next = first.next(component('b'), DeploymentChange::Rollback { of: 7, reason: "trap".into() }, "w2");
        let mut canary = first.next(component('c'), DeploymentChange::Swap, "w3");
        canary.canary = vec!["shard-1".into(), "shard-2".into()];
        let promoted = canary.promoted("op");
        assert_eq!((promoted.previous.as_ref(), promoted.canary.len()), (Some(&component('a')), 0));
        for deployment in [first, next, canary, promoted] {
            assert_eq!(deployment_of(&item_of(&deployment, "s")).expect("parses"), deployment);
        }
    }

    #[test]
    fn a_corrupt_deployment_item_is_refused_before_anything_is_sized_by_it() {
        let good = item_of(&Deployment::first(component('a'), "{}", SwapRules::default(), "w1"), "s");
        let with = |name: &str, value| {
            let mut item = good.clone();
            item.insert(name.to_string(), value);
            deployment_of(&item).expect_err(name).to_string()
        };
        assert!(with("logicLength", n(1 << 40)).contains("logicLength"));
        assert!(with("logicChunks", n(1 << 30)).contains("logicChunks"));
        assert!(with("logicSha256", s("../etc")).contains("not a SHA-256"));
        assert!(with("change", s("explode")).contains("explode"));
        assert!(with("deploymentNumber", s("x")).contains("deploymentNumber"));
    }
}
