//! KPL record aggregation: many user records packed into one Kinesis record
//! (the magic bytes `F3 89 9A C2`, a protobuf `AggregatedRecord`, then the
//! MD5 of that protobuf), as the KPL and `aws-kinesis-agg` write it. Readers
//! deliver the user records, each with its own partition key and its index
//! as sub-sequence number; `host produce --aggregate` writes them.

use md5::{Digest, Md5};
use prost::Message;

/// What every aggregated record starts with.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
const DIGEST_LEN: usize = 16;
/// Kinesis' bounds on the keys a user record may name.
const MAX_PARTITION_KEY_CHARS: usize = 256;
const MAX_EXPLICIT_HASH_KEY_DIGITS: usize = 38;
/// How much larger than the Kinesis record its user records may be once
/// unpacked (each carries a copy of its partition key): far above what the
/// KPL writes, far below a table of long keys shared by many empty records.
const MAX_EXPANSION: usize = 8;
/// Below this, any expansion is allowed (small aggregates of small records
/// with long keys).
const EXPANSION_FLOOR: usize = 1 << 20;

/// The KPL's `AggregatedRecord` message (proto2).
#[derive(Clone, PartialEq, prost::Message)]
pub struct AggregatedRecord {
    /// Partition keys, each once; user records point into it.
    #[prost(string, repeated, tag = "1")]
    pub partition_key_table: Vec<String>,
    /// Explicit hash keys, each once.
    #[prost(string, repeated, tag = "2")]
    pub explicit_hash_key_table: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    pub records: Vec<UserRecord>,
}

/// One user record inside an [`AggregatedRecord`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct UserRecord {
    #[prost(uint64, required, tag = "1")]
    pub partition_key_index: u64,
    #[prost(uint64, optional, tag = "2")]
    pub explicit_hash_key_index: Option<u64>,
    #[prost(bytes = "vec", required, tag = "3")]
    pub data: Vec<u8>,
    #[prost(message, repeated, tag = "4")]
    pub tags: Vec<Tag>,
}

/// A user record's tag (the KPL writes none; kept so messages with them decode).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Tag {
    #[prost(string, required, tag = "1")]
    pub key: String,
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

/// What a Kinesis record's data turned out to be.
#[derive(Debug)]
pub enum Unpacked {
    /// An ordinary record.
    Plain,
    /// User records, every partition-key index checked.
    Aggregated(AggregatedRecord),
    /// The magic bytes, but not a valid aggregate: delivered as one plain
    /// record (as KCL does) and counted.
    Corrupt(&'static str),
}

/// Looks inside a record's data.
pub fn unpack(data: &[u8]) -> Unpacked {
    let Some(rest) = data.strip_prefix(&MAGIC) else { return Unpacked::Plain };
    let Some(split) = rest.len().checked_sub(DIGEST_LEN) else { return Unpacked::Corrupt("too short") };
    let (body, digest) = rest.split_at(split);
    if Md5::digest(body).as_slice() != digest {
        return Unpacked::Corrupt("MD5 mismatch");
    }
    let Ok(record) = AggregatedRecord::decode(body) else { return Unpacked::Corrupt("undecodable protobuf") };
    let keys = record.partition_key_table.len() as u64;
    if record.records.iter().any(|r| r.partition_key_index >= keys) {
        return Unpacked::Corrupt("a partition-key index out of range");
    }
    let hash_keys = record.explicit_hash_key_table.len() as u64;
    if record.records.iter().any(|r| r.explicit_hash_key_index.is_some_and(|i| i >= hash_keys)) {
        return Unpacked::Corrupt("an explicit-hash-key index out of range");
    }
    // Kinesis' own bounds, and what the whole may expand to, are checked
    // before a single user record is copied out.
    if record.partition_key_table.iter().any(|k| k.chars().count() > MAX_PARTITION_KEY_CHARS) {
        return Unpacked::Corrupt("a partition key longer than 256 characters");
    }
    let decimal = |k: &String| k.len() <= MAX_EXPLICIT_HASH_KEY_DIGITS && k.bytes().all(|b| b.is_ascii_digit());
    if !record.explicit_hash_key_table.iter().all(decimal) {
        return Unpacked::Corrupt("an explicit hash key that is not a decimal of at most 38 digits");
    }
    let expanded = record.records.iter().fold(0usize, |sum, r| {
        let key = record.partition_key_table.get(r.partition_key_index as usize).map_or(0, String::len);
        sum.saturating_add(r.data.len()).saturating_add(key)
    });
    if expanded > data.len().saturating_mul(MAX_EXPANSION).max(EXPANSION_FLOOR) {
        return Unpacked::Corrupt("its user records expand to more than 8 times its size");
    }
    Unpacked::Aggregated(record)
}

/// Packs user records `(partition key, data)` into one aggregated record's
/// data; its Kinesis partition key should be the first user record's.
pub fn aggregate<'a>(records: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Vec<u8> {
    let mut message = AggregatedRecord::default();
    let mut index = std::collections::HashMap::new();
    for (key, data) in records {
        let next = message.partition_key_table.len() as u64;
        let key_index = *index.entry(key).or_insert_with(|| {
            message.partition_key_table.push(key.to_string());
            next
        });
        message.records.push(UserRecord {
            partition_key_index: key_index,
            explicit_hash_key_index: None,
            data: data.to_vec(),
            tags: Vec::new(),
        });
    }
    let body = message.encode_to_vec();
    let mut out = Vec::with_capacity(MAGIC.len() + body.len() + DIGEST_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&body);
    out.extend_from_slice(&Md5::digest(&body));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_round_trip_and_corruption_is_named() {
        let packed = aggregate([("a", &b"1"[..]), ("b", b"2"), ("a", b"3")]);
        let Unpacked::Aggregated(record) = unpack(&packed) else { panic!("an aggregate") };
        assert_eq!(record.partition_key_table, ["a", "b"]);
        let got: Vec<(u64, &[u8])> = record.records.iter().map(|r| (r.partition_key_index, &r.data[..])).collect();
        assert_eq!(got, [(0, &b"1"[..]), (1, b"2"), (0, b"3")]);
        assert!(matches!(unpack(b"plain"), Unpacked::Plain));
        let mut bad_digest = packed.clone();
        *bad_digest.last_mut().expect("bytes") ^= 1;
        assert!(matches!(unpack(&bad_digest), Unpacked::Corrupt("MD5 mismatch")));
        assert!(matches!(unpack(&MAGIC), Unpacked::Corrupt("too short")));
        // A valid digest over bytes that are not the message.
        let junk = [0xff_u8, 0xff, 0xff];
        let mut undecodable = MAGIC.to_vec();
        undecodable.extend_from_slice(&junk);
        undecodable.extend_from_slice(&Md5::digest(junk));
        assert!(matches!(unpack(&undecodable), Unpacked::Corrupt("undecodable protobuf")));
    }

    #[test]
    fn an_aggregate_past_kinesis_bounds_or_expanding_without_bound_is_corrupt() {
        let long_key = "k".repeat(257);
        let packed = aggregate([(long_key.as_str(), &b"1"[..])]);
        assert!(matches!(unpack(&packed), Unpacked::Corrupt(why) if why.contains("256")));
        let ok_key = "é".repeat(256);
        assert!(matches!(unpack(&aggregate([(ok_key.as_str(), &b"1"[..])])), Unpacked::Aggregated(_)));
        // The hostile shape: one long key shared by many empty records.
        let key = "k".repeat(256);
        let many: Vec<(&str, &[u8])> = (0..20_000).map(|_| (key.as_str(), &b""[..])).collect();
        let packed = aggregate(many);
        assert!(packed.len() * 8 < 20_000 * 256, "it would expand {} bytes to 5 MB", packed.len());
        assert!(matches!(unpack(&packed), Unpacked::Corrupt(why) if why.contains("8 times")));
        // Real KPL output: many small records with their keys expands a few times.
        let keys: Vec<String> = (0..500).map(|i| format!("user-{i:040}")).collect();
        let real: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &b"{\"n\":1}"[..])).collect();
        assert!(matches!(unpack(&aggregate(real)), Unpacked::Aggregated(_)));
        // Explicit hash keys: decimal, at most 38 digits, indices in range.
        let mut message = AggregatedRecord {
            partition_key_table: vec!["a".into()],
            explicit_hash_key_table: vec!["1".repeat(39)],
            records: vec![UserRecord {
                partition_key_index: 0,
                explicit_hash_key_index: Some(0),
                data: b"x".to_vec(),
                tags: vec![],
            }],
        };
        let pack = |m: &AggregatedRecord| {
            let body = m.encode_to_vec();
            [MAGIC.as_slice(), &body, Md5::digest(&body).as_slice()].concat()
        };
        assert!(matches!(unpack(&pack(&message)), Unpacked::Corrupt(why) if why.contains("38 digits")));
        message.explicit_hash_key_table = vec!["12345".into()];
        assert!(matches!(unpack(&pack(&message)), Unpacked::Aggregated(_)));
        message.records[0].explicit_hash_key_index = Some(3);
        assert!(matches!(unpack(&pack(&message)), Unpacked::Corrupt(why) if why.contains("out of range")));
    }
}
