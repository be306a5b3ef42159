//! Output records, packed the way the host receives them: one payload buffer
//! and an index entry per record, sent in one host call after each export call.

/// Index entry of one output record, mirroring the WIT `output-entry`.
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

/// Collects what a processor emits during one call.
///
/// The host releases a call's output to the sink only if the call succeeds,
/// so a processor can emit freely and still fail the batch cleanly.
#[derive(Debug, Default, Clone)]
pub struct Output {
    /// Keys and data, concatenated.
    pub(crate) payload: Vec<u8>,
    /// One entry per emitted record.
    entries: Vec<OutputEntry>,
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
        self.entries.push(OutputEntry {
            key_offset,
            key_len: key.len() as u32,
            data_offset,
            data_len: self.payload.len() as u32 - data_offset,
        });
    }

    /// Number of records emitted.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing was emitted.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The emitted records as (key, data), in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.entries.iter().map(|e| {
            let key = &self.payload[e.key_offset as usize..(e.key_offset + e.key_len) as usize];
            let data = &self.payload[e.data_offset as usize..(e.data_offset + e.data_len) as usize];
            (std::str::from_utf8(key).unwrap_or_default(), data)
        })
    }

    /// The packed buffers, for the glue that hands them to the host.
    pub fn packed(&self) -> (&[u8], &[OutputEntry]) {
        (&self.payload, &self.entries)
    }

    /// Forgets all records, keeping the allocations for the next call.
    pub fn clear(&mut self) {
        self.payload.clear();
        self.entries.clear();
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
