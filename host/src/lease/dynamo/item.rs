//! A lease as a DynamoDB item and back, with KCL's attribute names.

use super::Item;
use crate::lease::store::MAX_STATE_BYTES;
use crate::lease::{Lease, PreSwapRef, StateRef};
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
    let fields = Fields { item, key: &key };
    // The undo record of a swap: one that cannot be read is dropped (with a
    // warning), never the lease with it; a rollback then carries state over.
    let pre_swap = match item.get("preSwap").map(|value| pre_swap_of(&key, value)) {
        None => None,
        Some(Ok(pre)) => Some(pre),
        Some(Err(e)) => {
            tracing::warn!(shard = %key, "its preSwap is unreadable and left out: {e:#}");
            None
        }
    };
    Ok(Lease {
        owner: fields.text("leaseOwner"),
        counter: fields.number("leaseCounter")?,
        checkpoint: fields.text("checkpoint"),
        sub_sequence: fields.number("checkpointSubSequenceNumber")?,
        state_version: fields.number("stateVersion")?,
        state: fields.state()?,
        parents: item.get("parentShardId").and_then(|v| v.as_ss().ok()).cloned().unwrap_or_default(),
        hand_off_to: fields.text("handOffTo"),
        owner_switches: fields.number("ownerSwitchesSinceCheckpoint")?,
        updated_millis: item.contains_key("updatedAtMillis").then(|| fields.number("updatedAtMillis")).transpose()?,
        nonce: fields.number("leaseNonce")?,
        logic_commits: fields.number("logicCommits")?,
        // For the operator only: a bad one is as good as none.
        logic_since_millis: item
            .contains_key("logicSinceMillis")
            .then(|| fields.number("logicSinceMillis").ok())
            .flatten(),
        logic: fields.sha("logicSha256"),
        pre_swap,
        key,
    })
}

/// A lease's `preSwap` map.
fn pre_swap_of(key: &str, value: &AttributeValue) -> anyhow::Result<PreSwapRef> {
    let map = value.as_m().map_err(|_| anyhow::anyhow!("preSwap of lease {key} is not a map"))?;
    let inner = Fields { item: map, key };
    Ok(PreSwapRef {
        logic: inner.sha("logicSha256").with_context(|| format!("lease {key}: preSwap names no logic"))?,
        checkpoint: inner.text("checkpoint"),
        sub_sequence: inner.number("checkpointSubSequenceNumber")?,
        state: inner.state()?,
    })
}

/// The attributes of a lease item, or of its `preSwap` map (which uses the
/// same names), each checked before use.
struct Fields<'a> {
    item: &'a Item,
    /// The lease, for messages.
    key: &'a str,
}

impl Fields<'_> {
    fn text(&self, name: &str) -> Option<String> {
        self.item.get(name).and_then(|v| v.as_s().ok()).cloned()
    }

    /// A SHA-256 in hex (lower case); anything else is as good as none.
    fn sha(&self, name: &str) -> Option<String> {
        self.text(name)
            .filter(|sha| sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(|sha| sha.to_ascii_lowercase())
    }

    fn number(&self, name: &str) -> anyhow::Result<u64> {
        let key = self.key;
        match self.item.get(name) {
            None => Ok(0),
            Some(v) => {
                let text = v.as_n().map_err(|_| anyhow::anyhow!("{name} of lease {key} is not a number"))?;
                text.parse().with_context(|| format!("{name} of lease {key} is not a counter: {text}"))
            }
        }
    }

    fn small(&self, name: &str) -> anyhow::Result<u32> {
        let value = self.number(name)?;
        u32::try_from(value).map_err(|_| anyhow::anyhow!("{name} of lease {} is out of range: {value}", self.key))
    }

    /// The state it points to, if any.
    fn state(&self) -> anyhow::Result<Option<StateRef>> {
        let key = self.key;
        let layout = self.small("stateLayout")?;
        if let Some(bytes) = self.item.get("stateInline").and_then(|v| v.as_b().ok()) {
            return Ok(Some(StateRef::Inline { layout, bytes: bytes.as_ref().to_vec() }));
        }
        let Some(sha256) = self.text("stateSha256") else { return Ok(None) };
        // Checked before anything is sized by them: a corrupt item must not
        // make every worker that takes the lease allocate without bound.
        let (len, chunks) = (self.number("stateLength")?, self.small("stateChunks")?);
        if len > MAX_STATE_BYTES as u64 {
            anyhow::bail!(
                "lease {key}: stateLength {len} is past the {} MiB a state may have; the item is corrupt",
                MAX_STATE_BYTES >> 20
            );
        }
        if u64::from(chunks) > len.div_ceil(MIN_CHUNK).max(1) {
            anyhow::bail!("lease {key}: {chunks} stateChunks for {len} bytes; the item is corrupt");
        }
        let tag =
            self.text("stateChunkTag").with_context(|| format!("lease {key} has a state hash but no stateChunkTag"))?;
        Ok(Some(StateRef::Chunked { layout, tag, chunks, len, sha256 }))
    }
}

/// A state pointer's attributes (a lease item's, or its `preSwap` map's):
/// name, a placeholder for it in an update, value.
pub(super) fn state_attributes(state: &StateRef) -> Vec<(&'static str, &'static str, AttributeValue)> {
    match state {
        StateRef::Inline { layout, bytes } => vec![
            ("stateLayout", ":stateLayout", n(u64::from(*layout))),
            ("stateInline", ":stateInline", AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(bytes.clone()))),
        ],
        StateRef::Chunked { layout, tag, chunks, len, sha256 } => vec![
            ("stateLayout", ":stateLayout", n(u64::from(*layout))),
            ("stateChunkTag", ":stateChunkTag", s(tag)),
            ("stateChunks", ":stateChunks", n(u64::from(*chunks))),
            ("stateLength", ":stateLength", n(*len)),
            ("stateSha256", ":stateSha256", s(sha256)),
        ],
    }
}

/// The `preSwap` map of a lease item.
pub(super) fn pre_swap_map(pre: &PreSwapRef) -> AttributeValue {
    let mut map: Item = [("logicSha256".to_string(), s(&pre.logic))].into_iter().collect();
    if let Some(checkpoint) = &pre.checkpoint {
        map.insert("checkpoint".into(), s(checkpoint));
        map.insert("checkpointSubSequenceNumber".into(), n(pre.sub_sequence));
    }
    if let Some(state) = &pre.state {
        map.extend(state_attributes(state).into_iter().map(|(k, _, v)| (k.to_string(), v)));
    }
    AttributeValue::M(map)
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

    #[test]
    fn a_pre_swap_point_goes_into_its_map_and_back_and_a_corrupt_one_is_left_out() {
        let pre = PreSwapRef {
            logic: "ab".repeat(32),
            checkpoint: Some("4960".into()),
            sub_sequence: 3,
            state: Some(StateRef::Chunked {
                layout: 2,
                tag: "00000000000000000007.00ff.p1".into(),
                chunks: 1,
                len: 10,
                sha256: "cd".repeat(32),
            }),
        };
        let lease = lease_of(&item(&[("preSwap", pre_swap_map(&pre))])).expect("read");
        assert_eq!(lease.pre_swap, Some(pre.clone()));
        let AttributeValue::M(mut map) = pre_swap_map(&pre) else { panic!("a map") };
        map.insert("stateLength".into(), n(1 << 50));
        let corrupt = pre_swap_of("s", &AttributeValue::M(map.clone())).expect_err("an impossible length");
        assert!(corrupt.to_string().contains("stateLength"), "{corrupt}");
        let nameless = pre_swap_of("s", &AttributeValue::M(Default::default())).expect_err("no logic");
        assert!(nameless.to_string().contains("preSwap"), "{nameless}");
        // The lease stands without it.
        let lease = lease_of(&item(&[("preSwap", AttributeValue::M(map)), ("checkpoint", s("7"))])).expect("read");
        assert_eq!((lease.pre_swap, lease.checkpoint.as_deref()), (None, Some("7")));
    }
}
