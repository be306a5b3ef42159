//! Stream administration, as in the seeds: create (and wait for ACTIVE),
//! list, describe, delete.

use super::client::{describe_error, error_code};
use anyhow::{bail, Context};
use aws_sdk_kinesis::types::{Shard, StreamStatus};
use aws_sdk_kinesis::Client;
use std::time::{Duration, Instant};

/// Creates a stream; `Ok(false)` if it already existed (seed 000 carries on then too).
pub async fn create(client: &Client, stream: &str, shards: i32) -> anyhow::Result<bool> {
    match client.create_stream().stream_name(stream).shard_count(shards).send().await {
        Ok(_) => Ok(true),
        Err(e) if error_code(&e) == Some("ResourceInUseException") => Ok(false),
        Err(e) => bail!("cannot create stream `{stream}`: {}", describe_error(&e)),
    }
}

/// The stream's status, or `None` if it does not exist.
pub async fn status(client: &Client, stream: &str) -> anyhow::Result<Option<StreamStatus>> {
    match client.describe_stream_summary().stream_name(stream).send().await {
        Ok(out) => Ok(out.stream_description_summary().map(|d| d.stream_status().clone())),
        Err(e) if error_code(&e) == Some("ResourceNotFoundException") => Ok(None),
        Err(e) => bail!("cannot describe stream `{stream}`: {}", describe_error(&e)),
    }
}

/// Waits until the stream is ACTIVE (seed 000's `while get_status() != 'ACTIVE'`).
pub async fn wait_active(client: &Client, stream: &str, timeout: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        match status(client, stream).await? {
            Some(StreamStatus::Active) => return Ok(()),
            None => bail!("stream `{stream}` does not exist"),
            Some(_) if started.elapsed() > timeout => {
                bail!("stream `{stream}` is not ACTIVE after {} s", timeout.as_secs())
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Names of all streams.
pub async fn list(client: &Client) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    let mut start: Option<String> = None;
    loop {
        let out = client
            .list_streams()
            .set_exclusive_start_stream_name(start.clone())
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot list streams: {}", describe_error(&e)))?;
        names.extend(out.stream_names().iter().cloned());
        if !out.has_more_streams() || out.stream_names().is_empty() {
            return Ok(names);
        }
        start = names.last().cloned();
    }
}

/// Every shard of a stream (open and closed), paginated.
pub async fn shards(client: &Client, stream: &str) -> anyhow::Result<Vec<Shard>> {
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let request = match &token {
            Some(t) => client.list_shards().next_token(t),
            None => client.list_shards().stream_name(stream),
        };
        let out = request.send().await.map_err(|e| match error_code(&e) {
            Some("ResourceNotFoundException") => anyhow::anyhow!(
                "stream `{stream}` does not exist; create it with `host stream create {stream} --shards 1` or check --region/--endpoint-url"
            ),
            _ => anyhow::anyhow!("cannot list the shards of `{stream}`: {}", describe_error(&e)),
        })?;
        shards.extend(out.shards().iter().cloned());
        match out.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => return Ok(shards),
        }
    }
}

/// A human-readable description: status and shards with their lineage.
pub async fn describe(client: &Client, stream: &str) -> anyhow::Result<String> {
    let summary = client
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot describe stream `{stream}`: {}", describe_error(&e)))?;
    let d = summary.stream_description_summary().context("the endpoint returned no stream description")?;
    let mut out = format!(
        "stream {}\n  status: {}\n  arn: {}\n  retention: {} h\n  open shards: {}\n",
        d.stream_name(),
        d.stream_status().as_str(),
        d.stream_arn(),
        d.retention_period_hours(),
        d.open_shard_count()
    );
    for shard in shards(client, stream).await? {
        let closed = shard.sequence_number_range().and_then(|r| r.ending_sequence_number()).is_some();
        out += &format!(
            "  {} {}{}{}\n",
            shard.shard_id(),
            if closed { "closed" } else { "open" },
            shard.parent_shard_id().map(|p| format!(", parent {p}")).unwrap_or_default(),
            shard.adjacent_parent_shard_id().map(|p| format!(", adjacent parent {p}")).unwrap_or_default(),
        );
    }
    Ok(out)
}

/// Deletes a stream (and its consumers).
pub async fn delete(client: &Client, stream: &str) -> anyhow::Result<()> {
    client.delete_stream().stream_name(stream).enforce_consumer_deletion(true).send().await.map_err(|e| {
        match error_code(&e) {
            Some("ResourceNotFoundException") => anyhow::anyhow!("stream `{stream}` does not exist"),
            _ => anyhow::anyhow!("cannot delete stream `{stream}`: {}", describe_error(&e)),
        }
    })?;
    Ok(())
}
