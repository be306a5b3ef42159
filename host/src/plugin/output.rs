//! What a plugin emitted during one call, held until the call succeeds.

use kinesis_processor_sdk::wire::OutputEntry;
use std::ops::Range;

/// Output records of one call: keys and data in one buffer plus ranges, the
/// same layout the plugin sent, so collecting output allocates nothing per record.
#[derive(Debug, Default, Clone)]
pub struct PluginOutput {
    payload: Vec<u8>,
    /// (key range, data range) into `payload`. Keys were checked to be UTF-8.
    entries: Vec<(Range<usize>, Range<usize>)>,
}

impl PluginOutput {
    /// Appends one record.
    pub fn push(&mut self, key: &str, data: &[u8]) {
        let key_start = self.payload.len();
        self.payload.extend_from_slice(key.as_bytes());
        let data_start = self.payload.len();
        self.payload.extend_from_slice(data);
        self.entries.push((key_start..data_start, data_start..self.payload.len()));
    }

    /// Appends records from a packed `output-batch` (payload plus 16-byte
    /// entries); `false` (and nothing appended) if the index is ragged, an
    /// entry points outside the payload, or a key is not UTF-8.
    pub fn extend_packed(&mut self, payload: &[u8], index: &[u8]) -> bool {
        if !index.len().is_multiple_of(OutputEntry::ENCODED_LEN) {
            return false;
        }
        let base = self.payload.len();
        let before = self.entries.len();
        self.entries.reserve(index.len() / OutputEntry::ENCODED_LEN);
        for chunk in index.chunks_exact(OutputEntry::ENCODED_LEN) {
            let Ok(bytes) = chunk.try_into() else { return false };
            let OutputEntry { key_offset, key_len, data_offset, data_len } = OutputEntry::decode(bytes);
            let key = key_offset as usize..key_offset as usize + key_len as usize;
            let data = data_offset as usize..data_offset as usize + data_len as usize;
            let valid = payload.get(key.clone()).is_some_and(|k| std::str::from_utf8(k).is_ok())
                && payload.get(data.clone()).is_some();
            if !valid {
                self.entries.truncate(before);
                return false;
            }
            self.entries.push((base + key.start..base + key.end, base + data.start..base + data.end));
        }
        self.payload.extend_from_slice(payload);
        true
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing was emitted.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held (keys, data and any unreferenced payload).
    pub fn byte_len(&self) -> usize {
        self.payload.len()
    }

    /// The records as (key, data), in emission order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &[u8])> + '_ {
        self.entries.iter().map(|(key, data)| {
            // Keys were validated when they came in.
            (std::str::from_utf8(&self.payload[key.clone()]).unwrap_or_default(), &self.payload[data.clone()])
        })
    }

    /// Forgets all records, keeping the allocation.
    pub fn clear(&mut self) {
        self.payload.clear();
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_output_is_validated() {
        let mut out = PluginOutput::default();
        out.push("k", b"v");
        let index = |entries: &[(u32, u32, u32, u32)]| {
            let mut bytes = Vec::new();
            for &(key_offset, key_len, data_offset, data_len) in entries {
                OutputEntry { key_offset, key_len, data_offset, data_len }.encode(&mut bytes);
            }
            bytes
        };
        assert!(out.extend_packed(b"abXY", &index(&[(0, 2, 2, 2)])));
        assert!(!out.extend_packed(b"ab", &index(&[(0, 1, 1, 5)])), "data past the payload");
        assert!(!out.extend_packed(b"\xff\x00", &index(&[(0, 1, 1, 1)])), "non-UTF-8 key");
        assert!(!out.extend_packed(b"ab", &[0; 15]), "ragged index");
        let got: Vec<_> = out.iter().collect();
        assert_eq!(got, vec![("k", &b"v"[..]), ("ab", &b"XY"[..])]);
    }
}
