//! Records as the host holds them, and their packing into the WIT batch
//! layout: one payload buffer plus a 40-byte index entry per record, so a
//! batch crosses into the sandbox as two bulk copies.

use crate::plugin::bindings::RecordBatch;
use kinesis_processor_sdk::wire::{append_record, RecordEntry};
use kinesis_processor_sdk::{Batch, Record};

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
    let total: usize = records.iter().map(|r| r.partition_key.len() + r.data.len() + r.sequence_number.len()).sum();
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

/// A batch already in the WIT layout, as the shard reader fills it straight
/// from a GetRecords response: no per-record allocation between the SDK's
/// buffers and the sandbox, and one buffer per batch to hand around.
/// Where a user record sits: its Kinesis record's sequence number and its
/// index inside that record (0 unless the record is KPL-aggregated).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub sequence_number: String,
    pub sub_sequence_number: u64,
}

/// Replays reuse one across batches (`repack`).
#[derive(Debug)]
pub struct PackedBatch {
    batch: RecordBatch,
}

impl Default for PackedBatch {
    fn default() -> Self {
        PackedBatch { batch: RecordBatch { payload: Vec::new(), index: Vec::new(), millis_behind_latest: 0 } }
    }
}

impl PackedBatch {
    /// An empty batch with room for `records` records of `bytes` bytes in all.
    pub fn with_capacity(records: usize, bytes: usize) -> Self {
        let mut batch = PackedBatch::default();
        batch.batch.payload.reserve(bytes);
        batch.batch.index.reserve(records * RecordEntry::ENCODED_LEN);
        batch
    }

    /// Packs `records` in place of the batch's contents, reusing its buffers,
    /// and returns the batch to hand to the plugin.
    pub fn repack(
        &mut self,
        records: &[InputRecord],
        millis_behind_latest: i64,
    ) -> Result<&RecordBatch, BatchTooLarge> {
        pack_into(records, &mut self.batch.payload, &mut self.batch.index)?;
        self.batch.millis_behind_latest = millis_behind_latest;
        Ok(&self.batch)
    }

    /// Appends one record; fails (leaving the batch as it was) when the
    /// payload would outgrow the layout's 32-bit offsets.
    pub fn push(
        &mut self,
        partition_key: &[u8],
        data: &[u8],
        sequence_number: &[u8],
        sub_sequence_number: u64,
        arrival_millis: i64,
    ) -> Result<(), BatchTooLarge> {
        let grown = self.batch.payload.len() + partition_key.len() + data.len() + sequence_number.len();
        if grown > u32::MAX as usize {
            return Err(BatchTooLarge { records: self.len() + 1 });
        }
        let batch = &mut self.batch;
        append_record(
            &mut batch.payload,
            &mut batch.index,
            partition_key,
            data,
            sequence_number,
            sub_sequence_number,
            arrival_millis,
        );
        Ok(())
    }

    /// Appends a record read from another batch.
    pub fn push_record(&mut self, record: &Record<'_>) -> Result<(), BatchTooLarge> {
        self.push(
            record.partition_key_bytes(),
            record.data(),
            record.sequence_number().as_bytes(),
            record.sub_sequence_number(),
            record.approximate_arrival_millis(),
        )
    }

    /// Sets how far behind the shard's tip the batch was read.
    pub fn set_millis_behind_latest(&mut self, millis: i64) {
        self.batch.millis_behind_latest = millis;
    }

    /// How far behind the shard's tip the batch was read.
    pub fn millis_behind_latest(&self) -> i64 {
        self.batch.millis_behind_latest
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.batch.index.len() / RecordEntry::ENCODED_LEN
    }

    /// True when the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.batch.index.is_empty()
    }

    /// The records, read in place.
    pub fn view(&self) -> Batch<'_> {
        Batch::new(&self.batch.payload, &self.batch.index, self.batch.millis_behind_latest)
    }

    /// The batch as it crosses into the plugin.
    pub fn as_wit(&self) -> &RecordBatch {
        &self.batch
    }

    /// Where the last user record sits (the position a checkpoint after
    /// this batch records).
    pub fn last_position(&self) -> Option<Position> {
        let last = self.view().get(self.len().checked_sub(1)?)?;
        Some(Position {
            sequence_number: last.sequence_number().to_string(),
            sub_sequence_number: last.sub_sequence_number(),
        })
    }

    /// A copy of records `range` as a batch of its own (retrying part of a
    /// batch, bisecting a failing one).
    pub fn slice(&self, range: std::ops::Range<usize>) -> PackedBatch {
        let view = self.view();
        let records: Vec<_> = range.filter_map(|i| view.get(i)).collect();
        let bytes =
            records.iter().map(|r| r.partition_key_bytes().len() + r.data().len() + r.sequence_number().len()).sum();
        let mut out = PackedBatch::with_capacity(records.len(), bytes);
        for r in &records {
            // A part of a batch that fit cannot outgrow the offsets.
            let _ = out.push_record(r);
        }
        out.set_millis_behind_latest(self.millis_behind_latest());
        out
    }

    /// Splits off the records that arrived before `cutoff_millis` (set aside
    /// by `--max-record-age`): returns (younger, older), order kept. The
    /// batch comes back as it is when nothing is older.
    pub fn split_older_than(self, cutoff_millis: i64) -> (PackedBatch, PackedBatch) {
        let view = self.view();
        if view.iter().all(|r| r.approximate_arrival_millis() >= cutoff_millis) {
            return (self, PackedBatch::default());
        }
        let mut keep = PackedBatch::with_capacity(self.len(), 0);
        let mut old = PackedBatch::with_capacity(0, 0);
        for record in view.iter() {
            let into = if record.approximate_arrival_millis() < cutoff_millis { &mut old } else { &mut keep };
            // Part of a batch that fit cannot outgrow the offsets.
            let _ = into.push_record(&record);
        }
        keep.set_millis_behind_latest(self.millis_behind_latest());
        old.set_millis_behind_latest(self.millis_behind_latest());
        (keep, old)
    }

    /// Copies the records out (tests, diagnostics).
    pub fn to_records(&self) -> Vec<InputRecord> {
        self.view()
            .iter()
            .map(|r| InputRecord {
                partition_key: String::from_utf8_lossy(r.partition_key_bytes()).into_owned(),
                data: r.data().to_vec(),
                sequence_number: r.sequence_number().to_string(),
                sub_sequence_number: r.sub_sequence_number(),
                arrival_millis: r.approximate_arrival_millis(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn splitting_by_age_keeps_order_and_the_lag() {
        let record = |seq: &str, arrival_millis| InputRecord {
            partition_key: "k".into(),
            data: seq.as_bytes().to_vec(),
            sequence_number: seq.into(),
            sub_sequence_number: 0,
            arrival_millis,
        };
        let records = [record("1", 10), record("2", 50), record("3", 5), record("4", 60)];
        let mut batch = PackedBatch::default();
        batch.repack(&records, 7).expect("fits");
        let (young, old) = batch.split_older_than(40);
        let seqs = |b: &PackedBatch| b.to_records().into_iter().map(|r| r.sequence_number).collect::<Vec<_>>();
        assert_eq!(seqs(&young), ["2", "4"]);
        assert_eq!(seqs(&old), ["1", "3"]);
        assert_eq!(young.millis_behind_latest(), 7);
        let (all, none) = young.split_older_than(0);
        assert_eq!((all.len(), none.len()), (2, 0));
    }
}
