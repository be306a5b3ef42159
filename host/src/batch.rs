//! Records as the host holds them, and their packing into the WIT batch
//! layout: one payload buffer plus a 40-byte index entry per record, so a
//! batch crosses into the sandbox as two bulk copies.

use crate::plugin::bindings::RecordBatch;
use kinesis_processor_sdk::{append_record, RecordEntry};

/// One Kinesis record, owned by the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputRecord {
    /// Partition key (Unicode, up to 256 characters in Kinesis).
    pub partition_key: String,
    /// Data blob (up to 1 MiB in Kinesis, more from other sources).
    pub data: Vec<u8>,
    /// Decimal sequence number.
    pub sequence_number: String,
    /// Position inside a KPL-aggregated record; 0 for plain records.
    pub sub_sequence_number: u64,
    /// Approximate arrival time, milliseconds since the Unix epoch.
    pub arrival_millis: i64,
}

/// A batch whose strings and data do not fit the 32-bit offsets of the WIT layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a batch of {records} records holds more than 4 GiB; use a smaller batch size")]
pub struct BatchTooLarge {
    /// Records in the batch.
    pub records: usize,
}

/// Packs `records` into `payload` and `index` (both cleared first); the
/// plugin path and native code (the benchmark baseline) share this packer.
pub fn pack_into(records: &[InputRecord], payload: &mut Vec<u8>, index: &mut Vec<u8>) -> Result<(), BatchTooLarge> {
    let total: usize =
        records.iter().map(|r| r.partition_key.len() + r.data.len() + r.sequence_number.len()).sum();
    if total > u32::MAX as usize {
        return Err(BatchTooLarge { records: records.len() });
    }
    payload.clear();
    payload.reserve(total);
    index.clear();
    index.reserve(records.len() * RecordEntry::ENCODED_LEN);
    for record in records {
        append_record(
            payload,
            index,
            record.partition_key.as_bytes(),
            &record.data,
            record.sequence_number.as_bytes(),
            record.sub_sequence_number,
            record.arrival_millis,
        );
    }
    Ok(())
}

/// Reuses one [`RecordBatch`]'s buffers across batches.
#[derive(Debug)]
pub struct BatchPacker {
    batch: RecordBatch,
}

impl Default for BatchPacker {
    fn default() -> Self {
        BatchPacker { batch: RecordBatch { payload: Vec::new(), index: Vec::new(), millis_behind_latest: 0 } }
    }
}

impl BatchPacker {
    /// Packs `records` and returns the batch to hand to the plugin.
    pub fn pack(&mut self, records: &[InputRecord], millis_behind_latest: i64) -> Result<&RecordBatch, BatchTooLarge> {
        pack_into(records, &mut self.batch.payload, &mut self.batch.index)?;
        self.batch.millis_behind_latest = millis_behind_latest;
        Ok(&self.batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinesis_processor_sdk::Batch;

    #[test]
    fn packed_batches_read_back_through_the_sdk() {
        let records = vec![
            InputRecord {
                partition_key: "8.8.8.8".into(),
                data: b"2018-07-29T22:35:46.694763".to_vec(),
                sequence_number: "4959".into(),
                sub_sequence_number: 0,
                arrival_millis: 5,
            },
            InputRecord {
                partition_key: "k".into(),
                data: vec![0, 255],
                sequence_number: "4960".into(),
                sub_sequence_number: 3,
                arrival_millis: 6,
            },
        ];
        let (mut payload, mut index) = (Vec::new(), Vec::new());
        pack_into(&records, &mut payload, &mut index).expect("fits");
        let batch = Batch::new(&payload, &index, 0);
        let back: Vec<InputRecord> = batch
            .iter()
            .map(|r| InputRecord {
                partition_key: r.partition_key().into(),
                data: r.data().to_vec(),
                sequence_number: r.sequence_number().into(),
                sub_sequence_number: r.sub_sequence_number(),
                arrival_millis: r.approximate_arrival_millis(),
            })
            .collect();
        assert_eq!(back, records);
    }
}
