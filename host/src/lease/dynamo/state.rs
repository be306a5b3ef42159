//! The state table (`<name>-state`): plugin states as chunks under their
//! tags, and the group's settings under a key no shard id has.

use super::item::{chunk_key, n, s};
use super::{classify, sdk, DynamoTable, Item, CHUNK, SETTINGS};
use crate::lease::{sha256_hex, superseded, LeaseError, StateRef};
use anyhow::Context;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use std::time::Duration;

impl DynamoTable {
    pub(super) async fn write_state(
        &self,
        key: &str,
        tag: &str,
        layout: u32,
        bytes: &[u8],
    ) -> Result<StateRef, LeaseError> {
        let tag = tag.to_string();
        let chunks = bytes.chunks(CHUNK).collect::<Vec<_>>();
        for (i, chunk) in chunks.iter().enumerate() {
            self.client
                .put_item()
                .table_name(&self.state_table)
                .item("leaseKey", s(key))
                .item("chunk", s(&chunk_key(&tag, i)))
                .item("data", AttributeValue::B(Blob::new(chunk.to_vec())))
                .send()
                .await
                .map_err(|e| classify(e, &self.state_table))?;
        }
        Ok(StateRef::Chunked {
            layout,
            tag,
            chunks: chunks.len() as u32,
            len: bytes.len() as u64,
            sha256: sha256_hex(bytes),
        })
    }

    pub(super) async fn settle_lease_duration(&self, proposed: Duration) -> Result<Duration, LeaseError> {
        // In the state table (ours alone), under a key no shard id has.
        let millis = u64::try_from(proposed.as_millis()).unwrap_or(u64::MAX);
        if !(1_000..=3_600_000).contains(&millis) {
            return Err(anyhow::anyhow!("a lease duration of {proposed:?} is out of range: give 1 s to 1 hour").into());
        }
        let put = self
            .client
            .put_item()
            .table_name(&self.state_table)
            .item("leaseKey", s(SETTINGS))
            .item("chunk", s("lease-duration"))
            .item("millis", n(millis))
            .condition_expression("attribute_not_exists(leaseKey)")
            .send()
            .await;
        match put {
            Ok(_) => return Ok(Duration::from_millis(millis)),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {}
            Err(e) => return Err(sdk(e, &self.state_table).into()),
        }
        let out = self
            .client
            .get_item()
            .table_name(&self.state_table)
            .key("leaseKey", s(SETTINGS))
            .key("chunk", s("lease-duration"))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk(e, &self.state_table))?;
        let stored = out.item().and_then(|i| i.get("millis")).and_then(|m| m.as_n().ok()).and_then(|m| m.parse().ok());
        match stored {
            Some(millis @ 1_000..=3_600_000) => Ok(Duration::from_millis(millis)),
            _ => Err(anyhow::anyhow!(
                "the lease duration stored in `{}` (item {SETTINGS}/lease-duration) is missing or out of range; \
                 delete that item to let the next worker set it",
                self.state_table
            )
            .into()),
        }
    }

    pub(super) async fn read_state(&self, key: &str, state: &StateRef) -> Result<Vec<u8>, LeaseError> {
        let (tag, chunks, len, sha256) = match state {
            StateRef::Inline { bytes, .. } => return Ok(bytes.clone()),
            StateRef::Chunked { tag, chunks, len, sha256, .. } => (tag, *chunks, *len, sha256),
        };
        // `len` was checked against the state bound when the item was read;
        // a chunk that runs past it is refused before it is kept.
        let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        for i in 0..chunks as usize {
            let out = self
                .client
                .get_item()
                .table_name(&self.state_table)
                .key("leaseKey", s(key))
                .key("chunk", s(&chunk_key(tag, i)))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| sdk(e, &self.state_table))?;
            // A missing or corrupt chunk is for good (Denied), not a
            // passing error to retry.
            let data = out
                .item()
                .and_then(|item| item.get("data"))
                .and_then(|d| d.as_b().ok())
                .with_context(|| {
                    format!("chunk {i} of state {tag} of shard {key} is missing from {}", self.state_table)
                })
                .map_err(LeaseError::Denied)?;
            if (bytes.len() + data.as_ref().len()) as u64 > len {
                return Err(LeaseError::Denied(anyhow::anyhow!(
                    "state {tag} of shard {key} in {} is longer than its stateLength {len}: refusing to restore it",
                    self.state_table
                )));
            }
            bytes.extend_from_slice(data.as_ref());
        }
        if bytes.len() as u64 != len || &sha256_hex(&bytes) != sha256 {
            return Err(LeaseError::Denied(anyhow::anyhow!(
                "state {tag} of shard {key} in {} does not match its hash: refusing to restore it",
                self.state_table
            )));
        }
        Ok(bytes)
    }

    pub(super) async fn delete_states(&self, key: &str, keep: &str) -> Result<(), LeaseError> {
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.state_table)
                .key_condition_expression("leaseKey = :k")
                .expression_attribute_values(":k", s(key))
                .projection_expression("leaseKey, chunk")
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk(e, &self.state_table))?;
            for item in page.items() {
                let Some(chunk) = item.get("chunk").and_then(|c| c.as_s().ok()) else { continue };
                // "<tag>.<index>": the tag is all but the last part.
                let tag = chunk.rsplit_once('.').map_or(chunk.as_str(), |(tag, _)| tag);
                if !superseded(tag, keep) {
                    continue;
                }
                self.client
                    .delete_item()
                    .table_name(&self.state_table)
                    .key("leaseKey", s(key))
                    .key("chunk", s(chunk))
                    .send()
                    .await
                    .map_err(|e| sdk(e, &self.state_table))?;
            }
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => break,
            }
        }
        Ok(())
    }
}
