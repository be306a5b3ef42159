//! GetRecords' response parsed straight into the plugin's batch layout.
//!
//! The SDK turns each record of a response into a `Record` with three heap
//! strings and a buffer of its own, which the reader then copies into a
//! `PackedBatch` and drops: most of a consumer's cost per record beyond the
//! endpoint's own. Here the SDK still signs, sends, times out and parses
//! every error; only a successful response's body is read by us, borrowing
//! its strings and decoding each record's base64 once, into the batch.
//! Anything the fast path does not understand goes to the SDK's own parser.

use super::reader::{push_unpacked, Incoming};
use crate::batch::{BatchTooLarge, PackedBatch};
use crate::source::{Position, ReaderStats};
use aws_sdk_kinesis::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_kinesis::config::{ConfigBag, Intercept};
use aws_sdk_kinesis::operation::get_records::{GetRecords, GetRecordsOutput};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{Error, Output};
use aws_smithy_runtime_api::client::orchestrator::{HttpResponse, OrchestratorError};
use aws_smithy_runtime_api::client::runtime_plugin::RuntimePlugin;
use aws_smithy_runtime_api::client::ser_de::{DeserializeResponse, SharedResponseDeserializer};
use aws_smithy_types::config_bag::FrozenLayer;
use base64::Engine;
use serde::Deserialize;
use std::borrow::Cow;
use std::sync::{Arc, Mutex, OnceLock};

/// What one GetRecords call packed, handed from the parser to the reader.
#[derive(Debug, Default)]
pub(crate) struct Packing {
    /// User records still to drop (a checkpoint inside an aggregate); the
    /// reader's, moved in before the call and back after.
    pub skip: Option<Position>,
    pub stats: ReaderStats,
    /// The batch and the last record's sequence number; `None` when the SDK
    /// parsed the response (an error, or a body the fast path refused).
    pub packed: Option<Result<(PackedBatch, Option<String>), BatchTooLarge>>,
}

/// Installs [`PackingDeserializer`] for one GetRecords call.
#[derive(Debug)]
pub(crate) struct PackResponse(pub Arc<Mutex<Packing>>);

impl Intercept for PackResponse {
    fn name(&self) -> &'static str {
        "PackResponse"
    }

    fn read_before_execution(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // The top layer wins over the operation's own deserializer.
        let ours = PackingDeserializer { sdk: sdk_layer().clone(), packing: self.0.clone() };
        cfg.interceptor_state().store_put(SharedResponseDeserializer::new(ours));
        Ok(())
    }
}

/// The GetRecords operation's own configuration, which holds the SDK's
/// deserializer (its type is private; the layer is how to reach it).
fn sdk_layer() -> &'static FrozenLayer {
    static LAYER: OnceLock<FrozenLayer> = OnceLock::new();
    LAYER.get_or_init(|| {
        GetRecords::new().config().unwrap_or_else(|| aws_smithy_types::config_bag::Layer::new("none").freeze())
    })
}

/// Parses a 200 response into a batch, everything else through the SDK.
#[derive(Debug)]
struct PackingDeserializer {
    sdk: FrozenLayer,
    packing: Arc<Mutex<Packing>>,
}

impl DeserializeResponse for PackingDeserializer {
    fn deserialize_nonstreaming_with_config(
        &self,
        response: &HttpResponse,
        cfg: &ConfigBag,
    ) -> Result<Output, OrchestratorError<Error>> {
        let sdk = || match self.sdk.load::<SharedResponseDeserializer>() {
            Some(sdk) => sdk.deserialize_nonstreaming_with_config(response, cfg),
            None => Err(OrchestratorError::other("the SDK's GetRecords deserializer is missing")),
        };
        let body = match response.body().bytes() {
            Some(body) if response.status().as_u16() == 200 => body,
            _ => return sdk(),
        };
        let Ok(parsed) = serde_json::from_slice::<Body<'_>>(body) else { return sdk() };
        let Ok(mut packing) = self.packing.lock() else { return sdk() };
        let Some(packed) = pack(&parsed, &mut packing) else { return sdk() };
        packing.packed = Some(packed);
        let output = GetRecordsOutput::builder()
            .set_next_shard_iterator(parsed.next_shard_iterator.map(Cow::into_owned))
            .set_millis_behind_latest(parsed.millis_behind_latest)
            .set_records(Some(Vec::new()))
            .build()
            .map_err(OrchestratorError::other)?;
        Ok(Output::erase(output))
    }
}

/// A successful GetRecords body; strings borrowed from it where unescaped.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Body<'a> {
    #[serde(borrow, default)]
    records: Vec<RawRecord<'a>>,
    #[serde(borrow, default)]
    next_shard_iterator: Option<Cow<'a, str>>,
    #[serde(default)]
    millis_behind_latest: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawRecord<'a> {
    #[serde(borrow)]
    sequence_number: Cow<'a, str>,
    #[serde(default)]
    approximate_arrival_timestamp: Option<f64>,
    /// Base64, as awsJson sends blobs.
    #[serde(borrow)]
    data: Cow<'a, str>,
    #[serde(borrow)]
    partition_key: Cow<'a, str>,
}

/// Packs the records (de-aggregating); `None` (and `packing` untouched)
/// when one's data is not valid base64, so the SDK's parser says what is wrong.
fn pack(body: &Body<'_>, packing: &mut Packing) -> Option<Result<(PackedBatch, Option<String>), BatchTooLarge>> {
    let (mut skip, mut stats) = (packing.skip.clone(), packing.stats);
    let bytes =
        body.records.iter().map(|r| r.partition_key.len() + r.data.len() * 3 / 4 + r.sequence_number.len()).sum();
    let mut batch = PackedBatch::with_capacity(body.records.len(), bytes);
    let mut data = Vec::new();
    for r in &body.records {
        data.clear();
        base64::engine::general_purpose::STANDARD.decode_vec(r.data.as_bytes(), &mut data).ok()?;
        // As the SDK reads an epoch-seconds timestamp.
        let arrival = r
            .approximate_arrival_timestamp
            .and_then(|t| aws_smithy_types::DateTime::from_secs_f64(t).to_millis().ok())
            .unwrap_or(0);
        let record = Incoming {
            partition_key: &r.partition_key,
            data: &data,
            sequence_number: &r.sequence_number,
            arrival_millis: arrival,
        };
        if let Err(e) = push_unpacked(&mut batch, &record, &mut skip, &mut stats) {
            return Some(Err(e));
        }
    }
    (packing.skip, packing.stats) = (skip, stats);
    let last = body.records.last().map(|r| r.sequence_number.to_string());
    Some(Ok((batch, last)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_kinesis::primitives::{Blob, DateTime};
    use aws_sdk_kinesis::types::Record;
    use aws_smithy_types::body::SdkBody;

    /// Records as awsJson sends them and as the SDK parses them, alike:
    /// an escaped key, binary data, a KPL aggregate, no arrival time.
    fn sample() -> (String, Vec<Record>) {
        let aggregate = super::super::aggregate::aggregate([("a", &b"one"[..]), ("b", &b"two"[..])]);
        let rows: Vec<(&str, Vec<u8>, &str, Option<f64>)> = vec![
            ("agg", aggregate, "49000000000000000000000000000000000000000000000000000001", None),
            (
                "k\"1\u{e9}",
                b"hello".to_vec(),
                "49000000000000000000000000000000000000000000000000000002",
                Some(1_700_000_000.123),
            ),
            (
                "bin",
                vec![0, 255, 10, 13],
                "49000000000000000000000000000000000000000000000000000003",
                Some(1_700_000_001.0),
            ),
        ];
        let json: Vec<serde_json::Value> = rows
            .iter()
            .map(|(key, data, seq, at)| {
                let mut v = serde_json::json!({
                    "SequenceNumber": seq,
                    "Data": base64::engine::general_purpose::STANDARD.encode(data),
                    "PartitionKey": key,
                });
                if let Some(at) = at {
                    v["ApproximateArrivalTimestamp"] = serde_json::json!(at);
                }
                v
            })
            .collect();
        let body = serde_json::json!({"Records": json, "NextShardIterator": "it-2", "MillisBehindLatest": 42});
        let records = rows
            .into_iter()
            .map(|(key, data, seq, at)| {
                Record::builder()
                    .sequence_number(seq)
                    .partition_key(key)
                    .data(Blob::new(data))
                    .set_approximate_arrival_timestamp(at.map(DateTime::from_secs_f64))
                    .build()
                    .expect("record")
            })
            .collect();
        (body.to_string(), records)
    }

    fn respond(body: &str, packing: &Arc<Mutex<Packing>>) -> Result<Output, OrchestratorError<Error>> {
        let deserializer = PackingDeserializer { sdk: sdk_layer().clone(), packing: packing.clone() };
        let response = HttpResponse::new(200.try_into().expect("status"), SdkBody::from(body.to_string()));
        deserializer.deserialize_nonstreaming_with_config(&response, &ConfigBag::base())
    }

    #[test]
    fn the_fast_path_packs_what_the_sdk_path_packs() {
        let (body, records) = sample();
        let packing = Arc::new(Mutex::new(Packing::default()));
        let output = respond(&body, &packing).expect("parsed");
        let output = output.downcast::<GetRecordsOutput>().expect("GetRecords output");
        assert_eq!(output.next_shard_iterator(), Some("it-2"));
        assert_eq!(output.millis_behind_latest(), Some(42));
        let (fast, last) = packing.lock().expect("lock").packed.take().expect("fast path taken").expect("fits");
        let mut stats = ReaderStats::default();
        let sdk = super::super::reader::pack(&records, &mut None, &mut stats).expect("fits");
        assert_eq!(fast.len(), 4, "two plain records and an aggregate of two");
        assert_eq!(fast.as_wit().payload, sdk.as_wit().payload);
        assert_eq!(fast.as_wit().index, sdk.as_wit().index);
        assert_eq!(last.as_deref(), records.last().map(|r| r.sequence_number()));
    }

    #[test]
    fn a_checkpoint_inside_an_aggregate_skips_the_same_user_records() {
        let (body, records) = sample();
        // A restart at the aggregate, the first record read.
        let skip = Position { sequence_number: records[0].sequence_number().into(), sub_sequence_number: 0 };
        let packing = Arc::new(Mutex::new(Packing { skip: Some(skip.clone()), ..Packing::default() }));
        respond(&body, &packing).expect("parsed");
        let mut packing = packing.lock().expect("lock");
        let (fast, _) = packing.packed.take().expect("fast path").expect("fits");
        let sdk = super::super::reader::pack(&records, &mut Some(skip), &mut ReaderStats::default()).expect("fits");
        assert_eq!(fast.len(), 3, "user record 0 of the aggregate dropped");
        assert_eq!(fast.as_wit().index, sdk.as_wit().index);
        assert_eq!(packing.skip, None, "past the checkpointed record by the batch's end");
    }

    #[test]
    fn bad_base64_leaves_the_response_and_the_skip_to_the_sdk() {
        let skip = Position { sequence_number: "2".into(), sub_sequence_number: 3 };
        let mut packing = Packing { skip: Some(skip.clone()), ..Packing::default() };
        let body = r#"{"Records":[{"SequenceNumber":"2","Data":"aGk=","PartitionKey":"k"},{"SequenceNumber":"3","Data":"not base64!","PartitionKey":"k"}],"NextShardIterator":"x"}"#;
        let body: Body<'_> = serde_json::from_str(body).expect("json");
        assert!(pack(&body, &mut packing).is_none(), "the SDK's parser is to say what is wrong");
        assert_eq!(packing.skip, Some(skip), "untouched for the SDK path");
    }
}
