//! Producers from the seeds, batched through PutRecords: seed 000's IP
//! sources (UTC ISO-8601 timestamp as data, optionally sent late), seed
//! 001's JSON documents, and a steady rate for load tests.

use super::client::{describe_error, is_transient};
use anyhow::bail;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use aws_sdk_kinesis::Client;
use std::time::Duration;

/// One record to put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub partition_key: String,
    pub data: Vec<u8>,
}

/// Most records one PutRecords call may carry.
const MAX_PUT_RECORDS: usize = 500;

/// Puts records with PutRecords, in calls of up to 500, retrying entries the
/// service rejects (throttling) with back-off until all are in. Returns how
/// many entries had to be retried.
pub async fn put_all(client: &Client, stream: &str, records: &[Outgoing]) -> anyhow::Result<u64> {
    let mut retried = 0u64;
    for chunk in records.chunks(MAX_PUT_RECORDS) {
        let mut pending: Vec<&Outgoing> = chunk.iter().collect();
        let mut attempt = 0u32;
        while !pending.is_empty() {
            let entries = pending
                .iter()
                .map(|r| {
                    PutRecordsRequestEntry::builder()
                        .partition_key(r.partition_key.clone())
                        .data(Blob::new(r.data.clone()))
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()?;
            match client.put_records().stream_name(stream).set_records(Some(entries)).send().await {
                Ok(out) => {
                    // Keep only the entries that failed, in order, and retry them.
                    let failed: Vec<&Outgoing> = pending
                        .iter()
                        .zip(out.records())
                        .filter(|(_, result)| result.error_code().is_some())
                        .map(|(r, _)| *r)
                        .collect();
                    retried += failed.len() as u64;
                    pending = failed;
                }
                Err(e) if is_transient(&e) && attempt < 20 => {}
                Err(e) => bail!("cannot put records to `{stream}`: {}", describe_error(&e)),
            }
            if !pending.is_empty() {
                attempt += 1;
                if attempt > 20 {
                    bail!("{} records to `{stream}` still rejected after 20 retries", pending.len());
                }
                tokio::time::sleep(crate::backoff::backoff(attempt)).await;
            }
        }
    }
    Ok(retried)
}

/// A seed-000 source: an IP that puts its current UTC time every `interval`,
/// delivered `lag` after stamping (a simulated slow network).
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub ip: String,
    pub interval: Duration,
    pub lag: Duration,
}

impl std::str::FromStr for Source {
    type Err = String;

    /// `IP:INTERVAL_SECONDS[:LAG_SECONDS]`, e.g. `8.8.8.8:2` or `8.8.8.9:5:20`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = text.split(':').collect();
        let seconds = |s: &str, what: &str| -> Result<Duration, String> {
            s.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| format!("{what} {s:?} in --source {text:?} is not a number of seconds"))
        };
        match parts.as_slice() {
            [ip, interval] | [ip, interval, _] if !ip.is_empty() => {
                let interval = seconds(interval, "interval")?;
                if interval.is_zero() {
                    return Err(format!("interval in --source {text:?} must be above 0"));
                }
                let lag = match parts.get(2) {
                    Some(lag) => seconds(lag, "lag")?,
                    None => Duration::ZERO,
                };
                Ok(Source { ip: ip.to_string(), interval, lag })
            }
            _ => Err(format!("--source {text:?} must look like IP:INTERVAL_SECONDS[:LAG_SECONDS], e.g. 8.8.8.9:5:20")),
        }
    }
}

/// Seed 000's data: `datetime.utcnow().isoformat()` (no offset, microseconds).
pub fn utc_isoformat_now() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let millis = now.as_millis() as i64;
    let text = kinesis_processor_sdk::helpers::time::format_timestamp_millis(millis - millis % 1000);
    format!("{}.{:06}", text.trim_end_matches('Z'), now.subsec_micros())
}

/// Seed 001's document number `number`: `{"number", "name", "age"}`.
pub fn document(number: u64, rng: &mut impl rand::Rng) -> Outgoing {
    const NAMES: [&str; 7] = ["james", "stefan", "pete", "tom", "frank", "peter", "ruan"];
    let name = NAMES[rng.random_range(0..NAMES.len())];
    let age: u32 = rng.random_range(20..=50);
    Outgoing {
        partition_key: "a01".into(),
        data: serde_json::json!({"number": number, "name": name, "age": age}).to_string().into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources() {
        assert_eq!(
            "8.8.8.9:5:20".parse::<Source>(),
            Ok(Source { ip: "8.8.8.9".into(), interval: Duration::from_secs(5), lag: Duration::from_secs(20) })
        );
        assert_eq!("8.8.8.8:0.5".parse::<Source>().map(|s| s.interval), Ok(Duration::from_millis(500)));
        for bad in ["8.8.8.8", "8.8.8.8:x", "8.8.8.8:0", ":2", "a:1:2:3", "a:1:-3"] {
            assert!(bad.parse::<Source>().is_err(), "{bad}");
        }
    }

    #[test]
    fn seed_data_shapes() {
        let stamp = utc_isoformat_now();
        assert_eq!(stamp.len(), 26, "{stamp}");
        assert!(kinesis_processor_sdk::helpers::time::parse_timestamp_millis(stamp.as_bytes()).is_some());
        let doc = document(3, &mut rand::rng());
        let v: serde_json::Value = serde_json::from_slice(&doc.data).expect("json");
        assert_eq!(v["number"], 3);
        assert!(v["name"].is_string() && v["age"].is_u64());
    }
}

/// What `host produce` puts.
#[derive(Debug, Clone)]
pub enum ProducePlan {
    /// Seed 000: each source stamps its time every interval.
    Sources(Vec<Source>),
    /// Seed 001: numbered JSON documents, one per interval.
    Documents { count: u64, interval: Duration },
    /// A steady rate of timestamped records over 16 IP keys; with
    /// `aggregate`, packed KPL-style, up to that many user records per
    /// Kinesis record.
    Rate { per_second: f64, aggregate: Option<usize> },
}

/// Most bytes of user records packed into one aggregated record: Kinesis
/// takes records up to 1 MiB, and the framing needs a little room.
const MAX_AGGREGATE_BYTES: usize = 1_000_000;

/// Packs `records` KPL-style: consecutive runs of up to `per_record` user
/// records (and under 1 MB) become one Kinesis record each, keyed by its
/// first user record's partition key.
pub fn aggregated(records: &[Outgoing], per_record: usize) -> Vec<Outgoing> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < records.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < records.len() && end - start < per_record.max(1) {
            bytes += records[end].partition_key.len() + records[end].data.len() + 8;
            if end > start && bytes > MAX_AGGREGATE_BYTES {
                break;
            }
            end += 1;
        }
        let run = &records[start..end];
        let data = super::aggregate::aggregate(run.iter().map(|r| (r.partition_key.as_str(), &r.data[..])));
        out.push(Outgoing { partition_key: run[0].partition_key.clone(), data });
        start = end;
    }
    out
}

/// Runs a plan until `count` records are put, `duration` passes, or
/// forever; returns how many records were put. `progress` sees each record.
pub async fn produce(
    client: &Client,
    stream: &str,
    plan: ProducePlan,
    count: Option<u64>,
    duration: Option<Duration>,
    progress: impl Fn(&Outgoing) + Send + Sync + 'static,
) -> anyhow::Result<u64> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let deadline = duration.map(|d| tokio::time::Instant::now() + d);
    let put = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(progress);
    let budget_left = move |put: &AtomicU64| count.is_none_or(|c| put.load(Ordering::Relaxed) < c);
    let time_left = move || deadline.is_none_or(|d| tokio::time::Instant::now() < d);
    match plan {
        ProducePlan::Sources(sources) => {
            let mut tasks = tokio::task::JoinSet::new();
            for source in sources {
                let (client, stream, put, progress) =
                    (client.clone(), stream.to_string(), put.clone(), progress.clone());
                tasks.spawn(async move {
                    let mut sends = tokio::task::JoinSet::new();
                    let mut tick = tokio::time::interval(source.interval);
                    while time_left() && budget_left(&put) {
                        tick.tick().await;
                        if !time_left() || put.fetch_add(1, Ordering::Relaxed) >= count.unwrap_or(u64::MAX) {
                            break;
                        }
                        let record =
                            Outgoing { partition_key: source.ip.clone(), data: utc_isoformat_now().into_bytes() };
                        let (client, stream, progress, lag) =
                            (client.clone(), stream.clone(), progress.clone(), source.lag);
                        // Stamp now, send after the lag: the lagging producer of seed 000.
                        sends.spawn(async move {
                            tokio::time::sleep(lag).await;
                            put_all(&client, &stream, std::slice::from_ref(&record)).await?;
                            progress(&record);
                            anyhow::Ok(())
                        });
                    }
                    while let Some(sent) = sends.join_next().await {
                        sent??;
                    }
                    anyhow::Ok(())
                });
            }
            while let Some(done) = tasks.join_next().await {
                done??;
            }
        }
        ProducePlan::Documents { count: documents, interval } => {
            for number in 1..=documents {
                if !time_left() || !budget_left(&put) {
                    break;
                }
                // A fresh handle each time: the thread-local generator must
                // not live across an await (the future may move threads).
                let record = document(number, &mut rand::rng());
                put_all(client, stream, std::slice::from_ref(&record)).await?;
                put.fetch_add(1, Ordering::Relaxed);
                progress(&record);
                if number < documents {
                    tokio::time::sleep(interval).await;
                }
            }
        }
        ProducePlan::Rate { per_second, aggregate } => {
            if !(per_second > 0.0 && per_second.is_finite()) {
                bail!("--rate must be a positive number of records per second");
            }
            let started = tokio::time::Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut n = 0u64;
            while time_left() && budget_left(&put) {
                tick.tick().await;
                // Catch up to where the rate says we should be.
                let due = (started.elapsed().as_secs_f64() * per_second) as u64 + 1;
                let due = count.map_or(due, |c| due.min(c));
                let batch: Vec<Outgoing> = (n..due)
                    .map(|i| Outgoing {
                        partition_key: format!("10.0.0.{}", i % 16),
                        data: utc_isoformat_now().into_bytes(),
                    })
                    .collect();
                if batch.is_empty() {
                    continue;
                }
                match aggregate {
                    Some(per_record) => put_all(client, stream, &aggregated(&batch, per_record)).await?,
                    None => put_all(client, stream, &batch).await?,
                };
                n = due;
                put.store(n, Ordering::Relaxed);
                batch.iter().for_each(|r| progress(r));
            }
        }
    }
    Ok(put.load(Ordering::Relaxed).min(count.unwrap_or(u64::MAX)))
}
