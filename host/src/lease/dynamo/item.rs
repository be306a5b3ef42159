//! A lease as a DynamoDB item and back, with KCL's attribute names.

use super::Item;
use crate::lease::{Lease, StateRef};
use anyhow::Context;
use aws_sdk_dynamodb::types::AttributeValue;

/// The sort key of chunk `i` of the state tagged `tag`.
pub(super) fn chunk_key(tag: &str, i: usize) -> String {
    format!("{tag}.{i:05}")
}

pub(super) fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_string())
}

pub(super) fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// A lease from its item.
pub(super) fn lease_of(item: &Item) -> anyhow::Result<Lease> {
    let key = item.get("leaseKey").and_then(|k| k.as_s().ok()).context("a lease item without leaseKey")?.clone();
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    let number = |name: &str| -> anyhow::Result<u64> {
        match item.get(name) {
            None => Ok(0),
            Some(v) => {
                let text = v.as_n().map_err(|_| anyhow::anyhow!("{name} of lease {key} is not a number"))?;
                text.parse().with_context(|| format!("{name} of lease {key} is not a counter: {text}"))
            }
        }
    };
    let layout = number("stateLayout")? as u32;
    let state = if let Some(bytes) = item.get("stateInline").and_then(|v| v.as_b().ok()) {
        Some(StateRef::Inline { layout, bytes: bytes.as_ref().to_vec() })
    } else if let Some(sha256) = text("stateSha256") {
        Some(StateRef::Chunked {
            layout,
            tag: text("stateChunkTag").with_context(|| format!("lease {key} has a state hash but no stateChunkTag"))?,
            chunks: number("stateChunks")? as u32,
            len: number("stateLength")?,
            sha256,
        })
    } else {
        None
    };
    Ok(Lease {
        owner: text("leaseOwner"),
        counter: number("leaseCounter")?,
        checkpoint: text("checkpoint"),
        sub_sequence: number("checkpointSubSequenceNumber")?,
        state_version: number("stateVersion")?,
        state,
        parents: item.get("parentShardId").and_then(|v| v.as_ss().ok()).cloned().unwrap_or_default(),
        hand_off_to: text("handOffTo"),
        owner_switches: number("ownerSwitchesSinceCheckpoint")?,
        updated_millis: item.contains_key("updatedAtMillis").then(|| number("updatedAtMillis")).transpose()?,
        key,
    })
}
