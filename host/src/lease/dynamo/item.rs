//! A lease as a DynamoDB item and back, with KCL's attribute names.

use super::Item;
use crate::lease::store::MAX_STATE_BYTES;
use crate::lease::{Lease, StateRef};
use anyhow::Context;
use aws_sdk_dynamodb::types::AttributeValue;

/// The smallest chunk an item may claim (writers use 350 KiB), which bounds
/// the reads a chunk count may ask for.
const MIN_CHUNK: u64 = 4096;

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
    let small = |name: &str| -> anyhow::Result<u32> {
        let value = number(name)?;
        u32::try_from(value).map_err(|_| anyhow::anyhow!("{name} of lease {key} is out of range: {value}"))
    };
    let layout = small("stateLayout")?;
    let state = if let Some(bytes) = item.get("stateInline").and_then(|v| v.as_b().ok()) {
        Some(StateRef::Inline { layout, bytes: bytes.as_ref().to_vec() })
    } else if let Some(sha256) = text("stateSha256") {
        // Checked before anything is sized by them: a corrupt item must not
        // make every worker that takes the lease allocate without bound.
        let (len, chunks) = (number("stateLength")?, small("stateChunks")?);
        if len > MAX_STATE_BYTES as u64 {
            anyhow::bail!(
                "lease {key}: stateLength {len} is past the {} MiB a state may have; the item is corrupt",
                MAX_STATE_BYTES >> 20
            );
        }
        if u64::from(chunks) > len.div_ceil(MIN_CHUNK).max(1) {
            anyhow::bail!("lease {key}: {chunks} stateChunks for {len} bytes; the item is corrupt");
        }
        Some(StateRef::Chunked {
            layout,
            tag: text("stateChunkTag").with_context(|| format!("lease {key} has a state hash but no stateChunkTag"))?,
            chunks,
            len,
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
        nonce: number("leaseNonce")?,
        logic_commits: number("logicCommits")?,
        logic: text("logicSha256")
            .filter(|sha| sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(|sha| sha.to_ascii_lowercase()),
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(fields: &[(&str, AttributeValue)]) -> Item {
        let mut item: Item = fields.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        item.insert("leaseKey".into(), s("shardId-000000000000"));
        item
    }

    #[test]
    fn a_corrupt_state_length_or_chunk_count_is_refused_before_anything_is_sized_by_it() {
        let chunked = |len: u64, chunks: u64| {
            item(&[
                ("stateSha256", s("ab")),
                ("stateChunkTag", s("t")),
                ("stateLength", n(len)),
                ("stateChunks", n(chunks)),
            ])
        };
        assert!(lease_of(&chunked(1_000_000, 3)).is_ok(), "a state of 3 chunks of 350 KiB");
        let huge = lease_of(&chunked(1 << 60, 3)).expect_err("an exabyte");
        assert!(huge.to_string().contains("stateLength"), "{huge}");
        let many = lease_of(&chunked(1_000_000, 4_000_000)).expect_err("four million reads");
        assert!(many.to_string().contains("stateChunks"), "{many}");
        let wide = lease_of(&chunked(1_000_000, 1 << 40)).expect_err("past u32");
        assert!(wide.to_string().contains("out of range"), "{wide}");
    }
}
