//! Where an instance runs, and which partition keys are its shard's.

use md5::{Digest, Md5};

/// Where an instance runs (one instance per shard).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardContext {
    /// Kinesis stream name.
    pub stream: String,
    /// Shard id, e.g. `shardId-000000000000`.
    pub shard_id: String,
    /// Consuming application's name.
    pub application: String,
    /// The hash keys (so the partition keys) this shard receives. After a
    /// split, both children start from their parent's whole state: drop
    /// what is not [`HashKeyRange::contains_key`] any more.
    pub hash_key_range: HashKeyRange,
    /// The shards this one was split or merged from (empty for an original).
    pub parents: Vec<String>,
}

impl ShardContext {
    /// Whether records with `partition_key` go to this shard.
    pub fn owns_key(&self, partition_key: &[u8]) -> bool {
        self.hash_key_range.contains_key(partition_key)
    }
}

/// An inclusive range of 128-bit hash keys: a shard's share of the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HashKeyRange {
    pub start: u128,
    pub end: u128,
}

impl Default for HashKeyRange {
    /// Every key (a shard of unknown range, or `host test` without reshards).
    fn default() -> Self {
        HashKeyRange { start: 0, end: u128::MAX }
    }
}

impl HashKeyRange {
    /// The range from Kinesis' decimal strings; `None` if either is not a
    /// 128-bit number or they are out of order.
    pub fn parse(start: &str, end: &str) -> Option<Self> {
        let (start, end) = (start.parse().ok()?, end.parse().ok()?);
        (start <= end).then_some(HashKeyRange { start, end })
    }

    /// Whether the range holds `hash`.
    pub fn contains(&self, hash: u128) -> bool {
        self.start <= hash && hash <= self.end
    }

    /// Whether records with `partition_key` fall in this range.
    pub fn contains_key(&self, partition_key: &[u8]) -> bool {
        self.contains(hash_key(partition_key))
    }

    /// True for the whole key space.
    pub fn is_full(&self) -> bool {
        *self == HashKeyRange::default()
    }
}

/// The hash key Kinesis routes a partition key by: its MD5 digest read as a
/// 128-bit big-endian unsigned integer.
pub fn hash_key(partition_key: &[u8]) -> u128 {
    u128::from_be_bytes(Md5::digest(partition_key).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_keys_are_kinesis_md5() {
        // md5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(hash_key(b""), 0xd41d8cd98f00b204e9800998ecf8427e);
        let lower = HashKeyRange { start: 0, end: u128::MAX / 2 };
        let upper = HashKeyRange { start: u128::MAX / 2 + 1, end: u128::MAX };
        for key in ["a", "b", "8.8.8.8", "k0"] {
            assert!(lower.contains_key(key.as_bytes()) != upper.contains_key(key.as_bytes()), "{key}");
        }
        assert!(!lower.contains_key(b""), "0xd4… is in the upper half");
    }

    #[test]
    fn parses_kinesis_ranges() {
        let full = HashKeyRange::parse("0", "340282366920938463463374607431768211455").expect("valid");
        assert!(full.is_full());
        assert_eq!(HashKeyRange::parse("5", "4"), None);
        assert_eq!(HashKeyRange::parse("x", "4"), None);
    }
}
