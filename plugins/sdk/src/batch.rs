//! Zero-copy views of a record batch as the host packs it: one payload buffer
//! plus a 40-byte index entry per record (`record-entry` in the WIT, in its
//! canonical-ABI layout, little-endian). Fields are read in place.

/// Index entry of one record, mirroring the WIT `record-entry`.
///
/// Plain data so a batch can be built natively (tests, benchmarks) exactly as
/// the host builds it for the component.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordEntry {
    /// Offset of the UTF-8 partition key in the payload.
    pub partition_key_offset: u32,
    /// Length of the partition key in bytes.
    pub partition_key_len: u32,
    /// Offset of the record data in the payload.
    pub data_offset: u32,
    /// Length of the record data in bytes.
    pub data_len: u32,
    /// Offset of the decimal sequence number in the payload.
    pub sequence_number_offset: u32,
    /// Length of the sequence number in bytes.
    pub sequence_number_len: u32,
    /// Position inside a KPL-aggregated record; 0 for plain records.
    pub sub_sequence_number: u64,
    /// Kinesis' approximate arrival time, milliseconds since the Unix epoch.
    pub approximate_arrival_millis: i64,
}

impl RecordEntry {
    /// Bytes per entry in a packed index.
    pub const ENCODED_LEN: usize = 40;

    /// Appends this entry's packed form to `index`.
    pub fn encode(&self, index: &mut Vec<u8>) {
        let mut bytes = [0u8; Self::ENCODED_LEN];
        bytes[0..4].copy_from_slice(&self.partition_key_offset.to_le_bytes());
        bytes[4..8].copy_from_slice(&self.partition_key_len.to_le_bytes());
        bytes[8..12].copy_from_slice(&self.data_offset.to_le_bytes());
        bytes[12..16].copy_from_slice(&self.data_len.to_le_bytes());
        bytes[16..20].copy_from_slice(&self.sequence_number_offset.to_le_bytes());
        bytes[20..24].copy_from_slice(&self.sequence_number_len.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.sub_sequence_number.to_le_bytes());
        bytes[32..40].copy_from_slice(&self.approximate_arrival_millis.to_le_bytes());
        index.extend_from_slice(&bytes);
    }

    /// Reads an entry from its packed form.
    pub fn decode(bytes: &[u8; Self::ENCODED_LEN]) -> Self {
        let u32_at = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i..i + 8]);
            u64::from_le_bytes(b)
        };
        RecordEntry {
            partition_key_offset: u32_at(0),
            partition_key_len: u32_at(4),
            data_offset: u32_at(8),
            data_len: u32_at(12),
            sequence_number_offset: u32_at(16),
            sequence_number_len: u32_at(20),
            sub_sequence_number: u64_at(24),
            approximate_arrival_millis: u64_at(32) as i64,
        }
    }
}

/// Appends one record to packed batch buffers: its strings to `payload`,
/// its entry to `index`. The one packer used by the host and [`BatchBuilder`].
/// The caller keeps `payload` under 4 GiB (offsets are 32-bit).
pub fn append_record(
    payload: &mut Vec<u8>,
    index: &mut Vec<u8>,
    partition_key: &[u8],
    data: &[u8],
    sequence_number: &[u8],
    sub_sequence_number: u64,
    approximate_arrival_millis: i64,
) {
    let mut put = |bytes: &[u8]| {
        let offset = payload.len() as u32;
        payload.extend_from_slice(bytes);
        (offset, bytes.len() as u32)
    };
    let (partition_key_offset, partition_key_len) = put(partition_key);
    let (data_offset, data_len) = put(data);
    let (sequence_number_offset, sequence_number_len) = put(sequence_number);
    RecordEntry {
        partition_key_offset,
        partition_key_len,
        data_offset,
        data_len,
        sequence_number_offset,
        sequence_number_len,
        sub_sequence_number,
        approximate_arrival_millis,
    }
    .encode(index);
}

/// A batch of consecutive records from one shard, borrowed from the host's buffers.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// All strings and bytes of the batch, concatenated.
    payload: &'a [u8],
    /// One packed [`RecordEntry`] per record, in sequence order.
    index: &'a [u8],
    /// How far behind the shard's tip this batch is (0 when caught up).
    millis_behind_latest: i64,
}

impl<'a> Batch<'a> {
    /// Wraps packed buffers. A trailing partial entry is ignored and
    /// out-of-range offsets read as empty: a bad batch never panics.
    pub fn new(payload: &'a [u8], index: &'a [u8], millis_behind_latest: i64) -> Self {
        Batch { payload, index, millis_behind_latest }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.index.len() / RecordEntry::ENCODED_LEN
    }

    /// True when the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Milliseconds this batch is behind the tip of the shard.
    pub fn millis_behind_latest(&self) -> i64 {
        self.millis_behind_latest
    }

    /// The record at `index`, if any.
    pub fn get(&self, index: usize) -> Option<Record<'a>> {
        let start = index.checked_mul(RecordEntry::ENCODED_LEN)?;
        let bytes = self.index.get(start..start + RecordEntry::ENCODED_LEN)?;
        let bytes: &[u8; RecordEntry::ENCODED_LEN] = bytes.try_into().ok()?;
        Some(Record { payload: self.payload, entry: RecordEntry::decode(bytes) })
    }

    /// The records in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Record<'a>> + 'a {
        let payload = self.payload;
        self.index.chunks_exact(RecordEntry::ENCODED_LEN).map(move |chunk| {
            // `chunks_exact` yields exactly ENCODED_LEN bytes.
            let bytes: &[u8; RecordEntry::ENCODED_LEN] = chunk.try_into().unwrap_or(&[0; RecordEntry::ENCODED_LEN]);
            Record { payload, entry: RecordEntry::decode(bytes) }
        })
    }
}

/// One Kinesis record, borrowed from its batch.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    payload: &'a [u8],
    entry: RecordEntry,
}

impl<'a> Record<'a> {
    fn slice(&self, offset: u32, len: u32) -> &'a [u8] {
        let start = offset as usize;
        self.payload.get(start..start.saturating_add(len as usize)).unwrap_or_default()
    }

    /// The partition key. Kinesis keys are Unicode, so this is valid UTF-8;
    /// anything else reads as an empty key rather than a panic.
    pub fn partition_key(&self) -> &'a str {
        std::str::from_utf8(self.slice(self.entry.partition_key_offset, self.entry.partition_key_len))
            .unwrap_or_default()
    }

    /// The partition key's bytes, without the UTF-8 check.
    pub fn partition_key_bytes(&self) -> &'a [u8] {
        self.slice(self.entry.partition_key_offset, self.entry.partition_key_len)
    }

    /// The record's data bytes.
    pub fn data(&self) -> &'a [u8] {
        self.slice(self.entry.data_offset, self.entry.data_len)
    }

    /// The sequence number, a decimal string of up to 128 digits.
    pub fn sequence_number(&self) -> &'a str {
        std::str::from_utf8(self.slice(self.entry.sequence_number_offset, self.entry.sequence_number_len))
            .unwrap_or_default()
    }

    /// Position inside a KPL-aggregated record; 0 for plain records.
    pub fn sub_sequence_number(&self) -> u64 {
        self.entry.sub_sequence_number
    }

    /// When Kinesis accepted the record, in milliseconds since the Unix epoch.
    pub fn approximate_arrival_millis(&self) -> i64 {
        self.entry.approximate_arrival_millis
    }
}

/// Builds packed batches natively, the way the host does: for unit tests of
/// processors and for benchmarks.
#[derive(Debug, Default, Clone)]
pub struct BatchBuilder {
    payload: Vec<u8>,
    index: Vec<u8>,
    next_sequence: u64,
}

impl BatchBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a record with a generated sequence number.
    pub fn push(&mut self, partition_key: &str, data: &[u8], arrival_millis: i64) -> &mut Self {
        self.next_sequence += 1;
        let sequence = format!("{:056}", self.next_sequence);
        self.push_with_sequence(partition_key, data, arrival_millis, &sequence, 0)
    }

    /// Appends a record with an explicit sequence number.
    pub fn push_with_sequence(
        &mut self,
        partition_key: &str,
        data: &[u8],
        arrival_millis: i64,
        sequence_number: &str,
        sub_sequence_number: u64,
    ) -> &mut Self {
        append_record(
            &mut self.payload,
            &mut self.index,
            partition_key.as_bytes(),
            data,
            sequence_number.as_bytes(),
            sub_sequence_number,
            arrival_millis,
        );
        self
    }

    /// Removes all records, keeping the allocations.
    pub fn clear(&mut self) {
        self.payload.clear();
        self.index.clear();
    }

    /// A view of the records pushed so far.
    pub fn batch(&self) -> Batch<'_> {
        Batch::new(&self.payload, &self.index, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_in_order() {
        let mut builder = BatchBuilder::new();
        builder.push("8.8.8.8", b"2018-07-29T22:35:46.694763", 1_000);
        builder.push_with_sequence("k\u{e9}y", &[0xff, 0x00], 2_000, "4955", 7);
        let batch = builder.batch();
        assert_eq!(batch.len(), 2);
        let first = batch.get(0).expect("first record");
        assert_eq!(first.partition_key(), "8.8.8.8");
        assert_eq!(first.data(), b"2018-07-29T22:35:46.694763");
        assert_eq!(first.approximate_arrival_millis(), 1_000);
        let second = batch.iter().nth(1).expect("second record");
        assert_eq!(second.partition_key(), "k\u{e9}y");
        assert_eq!(second.data(), &[0xff, 0x00]);
        assert_eq!(second.sequence_number(), "4955");
        assert_eq!(second.sub_sequence_number(), 7);
    }

    #[test]
    fn out_of_range_entries_read_empty() {
        let mut index = Vec::new();
        RecordEntry { data_offset: 10, data_len: 5, ..Default::default() }.encode(&mut index);
        index.extend_from_slice(&[1, 2, 3]);
        let batch = Batch::new(b"short", &index, 0);
        assert_eq!(batch.len(), 1, "the partial entry is ignored");
        assert_eq!(batch.get(0).map(|r| r.data()), Some(&b""[..]));
        assert!(batch.get(1).is_none());
    }

    #[test]
    fn entries_round_trip_in_the_canonical_layout() {
        let entry = RecordEntry {
            partition_key_offset: 1,
            partition_key_len: 2,
            data_offset: 3,
            data_len: 4,
            sequence_number_offset: 5,
            sequence_number_len: 6,
            sub_sequence_number: 7,
            approximate_arrival_millis: -8,
        };
        let mut index = Vec::new();
        entry.encode(&mut index);
        assert_eq!(index.len(), RecordEntry::ENCODED_LEN);
        assert_eq!(&index[24..32], &7u64.to_le_bytes());
        let bytes: &[u8; RecordEntry::ENCODED_LEN] = index.as_slice().try_into().expect("40 bytes");
        assert_eq!(RecordEntry::decode(bytes), entry);
    }
}
