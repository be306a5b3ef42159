//! Output records, packed the way the host receives them: one payload buffer
//! and an index entry per record, sent in one host call after each export call.

/// Index entry of one output record, mirroring the WIT `output-entry`
/// (packed little-endian, 16 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutputEntry {
    /// Offset of the UTF-8 key in the payload.
    pub key_offset: u32,
    /// Length of the key in bytes.
    pub key_len: u32,
    /// Offset of the data in the payload.
    pub data_offset: u32,
    /// Length of the data in bytes.
    pub data_len: u32,
}

impl OutputEntry {
    /// Bytes per entry in a packed index.
    pub const ENCODED_LEN: usize = 16;

    /// Appends this entry's packed form to `index`.
    pub fn encode(&self, index: &mut Vec<u8>) {
        for field in [self.key_offset, self.key_len, self.data_offset, self.data_len] {
            index.extend_from_slice(&field.to_le_bytes());
        }
    }

    /// Reads an entry from its packed form.
    pub fn decode(bytes: &[u8; Self::ENCODED_LEN]) -> Self {
        let u32_at = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        OutputEntry { key_offset: u32_at(0), key_len: u32_at(4), data_offset: u32_at(8), data_len: u32_at(12) }
    }
}

/// Collects what a processor emits during one call.
///
/// The host releases a call's output to the sink only if the call succeeds,
/// so a processor can emit freely and still fail the batch cleanly.
#[derive(Debug, Default, Clone)]
pub struct Output {
    /// Keys and data, concatenated.
    pub(crate) payload: Vec<u8>,
    /// One packed [`OutputEntry`] per emitted record.
    pub(crate) index: Vec<u8>,
}

impl Output {
    /// An empty output buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Emits one record: `key` chooses the partition when the sink is a
    /// stream; `data` is the record body.
    pub fn emit(&mut self, key: &str, data: &[u8]) {
        self.emit_with(key, |buf| buf.extend_from_slice(data));
    }

    /// Emits one record whose data is written straight into the output
    /// buffer by `write` (no temporary allocation, e.g. for JSON).
    pub fn emit_with(&mut self, key: &str, write: impl FnOnce(&mut Vec<u8>)) {
        let key_offset = self.payload.len() as u32;
        self.payload.extend_from_slice(key.as_bytes());
        let data_offset = self.payload.len() as u32;
        write(&mut self.payload);
        OutputEntry {
            key_offset,
            key_len: key.len() as u32,
            data_offset,
            data_len: self.payload.len() as u32 - data_offset,
        }
        .encode(&mut self.index);
    }

    /// Number of records emitted.
    pub fn len(&self) -> usize {
        self.index.len() / OutputEntry::ENCODED_LEN
    }

    /// True when nothing was emitted.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The emitted records as (key, data), in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.index.chunks_exact(OutputEntry::ENCODED_LEN).map(|chunk| {
            let e = OutputEntry::decode(chunk.try_into().unwrap_or(&[0; OutputEntry::ENCODED_LEN]));
            // Entries were written by `emit_with` and always lie inside the payload.
            let key = self.payload.get(e.key_offset as usize..(e.key_offset + e.key_len) as usize).unwrap_or_default();
            let data =
                self.payload.get(e.data_offset as usize..(e.data_offset + e.data_len) as usize).unwrap_or_default();
            (std::str::from_utf8(key).unwrap_or_default(), data)
        })
    }

    /// The packed buffers (payload, index), as the host receives them.
    pub fn packed(&self) -> (&[u8], &[u8]) {
        (&self.payload, &self.index)
    }

    /// Forgets all records, keeping the allocations for the next call.
    pub fn clear(&mut self) {
        self.payload.clear();
        self.index.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emitted_records_read_back() {
        let mut out = Output::new();
        out.emit("a", b"1");
        out.emit_with("bb", |buf| buf.extend_from_slice(b"{\"n\":2}"));
        let got: Vec<_> = out.iter().collect();
        assert_eq!(got, vec![("a", &b"1"[..]), ("bb", &b"{\"n\":2}"[..])]);
        out.clear();
        assert!(out.is_empty());
    }
}
