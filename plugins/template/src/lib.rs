//! A processor to copy: counts records per partition key and emits the
//! running total of each key seen in a batch, keeping the totals across
//! restarts via snapshot/restore, and across resharding: after a split
//! each child keeps its own keys' totals, after a merge the parents' add up.
//!
//! Build: `cargo build --release --target wasm32-wasip2`
//! Try:   `host test --plugin target/wasm32-wasip2/release/processor_template.wasm --input records.jsonl`
//! Test:  `cargo test` (runs natively, no wasm needed)

use kinesis_processor_sdk::helpers::state::{merge_json_maps, retain_own_keys};
use kinesis_processor_sdk::{export_processor, Batch, Output, ProcessError, Processor, ShardContext, Snapshot};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Settings, from the JSON given with `--config`. Unknown fields are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Only keys starting with this are counted.
    prefix: Option<String>,
}

/// One per shard.
pub struct KeyTotals {
    prefix: String,
    totals: BTreeMap<String, u64>,
    /// Which keys are this shard's (after a split).
    shard: ShardContext,
}

impl Processor for KeyTotals {
    const NAME: &'static str = "key-totals";
    /// Bump when the snapshot layout changes; migrate old versions in `restore`.
    const STATE_VERSION: u32 = 1;

    fn init(config: &str, shard: &ShardContext) -> Result<Self, String> {
        let config: Config = serde_json::from_str(config).map_err(|e| format!("invalid config: {e}"))?;
        Ok(KeyTotals { prefix: config.prefix.unwrap_or_default(), totals: BTreeMap::new(), shard: shard.clone() })
    }

    fn process(&mut self, batch: &Batch<'_>, out: &mut Output) -> Result<(), ProcessError> {
        let mut touched = Vec::new();
        for record in batch.iter() {
            let key = record.partition_key();
            if key.starts_with(&self.prefix) {
                *self.totals.entry(key.to_string()).or_default() += 1;
                touched.push(key);
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for key in touched {
            let total = self.totals.get(key).copied().unwrap_or_default();
            out.emit(key, total.to_string().as_bytes());
        }
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&self.totals).unwrap_or_default()
    }

    fn restore(&mut self, state: &[u8], version: u32) -> Result<(), String> {
        if version != Self::STATE_VERSION {
            return Err(format!("unknown state version {version}"));
        }
        self.totals = serde_json::from_slice(state).map_err(|e| format!("corrupt state: {e}"))?;
        // A split's child gets its parent's whole state: keep our keys.
        retain_own_keys(&mut self.totals, &self.shard);
        Ok(())
    }

    /// A merge's child: the parents' keys are disjoint, so totals union.
    fn merge(&mut self, parents: &[Snapshot]) -> Result<(), String> {
        self.totals = merge_json_maps(parents, Self::STATE_VERSION, |total, more| *total += more)?;
        Ok(())
    }
}

export_processor!(KeyTotals);

#[cfg(test)]
mod tests {
    use super::*;
    use kinesis_processor_sdk::BatchBuilder;

    #[test]
    fn totals_survive_a_restart() {
        let shard = ShardContext::default();
        let mut first = KeyTotals::init("{}", &shard).expect("init");
        let mut batch = BatchBuilder::new();
        batch.push("a", b"x", 0).push("b", b"y", 0).push("a", b"z", 0);
        first.process(&batch.batch(), &mut Output::new()).expect("process");

        let mut second = KeyTotals::init("{}", &shard).expect("init");
        second.restore(&first.snapshot(), KeyTotals::STATE_VERSION).expect("restore");
        let mut out = Output::new();
        second.process(&batch.batch(), &mut out).expect("process");
        let got: Vec<_> = out.iter().map(|(k, d)| (k.to_string(), d.to_vec())).collect();
        assert_eq!(got, vec![("a".into(), b"4".to_vec()), ("b".into(), b"2".to_vec())]);
    }
}
