//! `host bench`: records/s through a plugin per batch size, beside the same
//! counting compiled natively (the counter crate's own code, called
//! directly), measured in the same run so the ratio is meaningful.

use anyhow::{bail, Context};
use host::batch::{pack_into, InputRecord, PackedBatch};
use host::plugin::bindings::ShardContext;
use host::plugin::{Clock, InstanceSettings, Plugin, PluginInstance, PluginLimits};
use kinesis_processor_sdk::{Batch, Output, Processor};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Targets from the runtime issue, at batch sizes of at least this.
pub const TARGET_MIN_BATCH: usize = 100;
/// Wasm may take at most this many times native's time per record.
pub const TARGET_MAX_RATIO: f64 = 2.0;
/// Records per second one core must reach through the wasm counter.
pub const TARGET_MIN_RATE: f64 = 2_000_000.0;

/// One batch size's figures.
#[derive(Debug, Clone)]
pub struct BenchRow {
    pub batch_size: usize,
    pub wasm: Duration,
    pub native: Duration,
    pub records: usize,
    /// Output records of one wasm pass (the test checks both sides emit).
    #[cfg_attr(not(test), allow(dead_code))]
    pub outputs: usize,
}

impl BenchRow {
    fn rate(&self, d: Duration) -> f64 {
        self.records as f64 / d.as_secs_f64()
    }
    fn ns(&self, d: Duration) -> f64 {
        d.as_nanos() as f64 / self.records as f64
    }
    /// Wasm time over native time.
    pub fn ratio(&self) -> f64 {
        self.wasm.as_secs_f64() / self.native.as_secs_f64()
    }
    /// Whether this row meets the targets (rows below the minimum batch always do).
    pub fn meets_targets(&self) -> bool {
        self.batch_size < TARGET_MIN_BATCH
            || (self.ratio() <= TARGET_MAX_RATIO && self.rate(self.wasm) >= TARGET_MIN_RATE)
    }
}

/// Seed-000-like records: 16 IPs as partition keys; data is an access-log
/// line beginning with its UTC ISO-8601 timestamp (10 ms apart), cut or
/// filled to `record_size` bytes.
pub fn make_records(count: usize, record_size: usize) -> Vec<InputRecord> {
    let start = 1_532_903_746_000i64; // 2018-07-29T22:35:46Z, the seed's day
    (0..count)
        .map(|i| {
            let time = start + i as i64 * 10;
            let mut data = kinesis_processor_sdk::helpers::time::format_timestamp_millis(time).into_bytes();
            data.extend_from_slice(
                format!(" GET /api/v1/items/{i} 200 5120 \"Mozilla/5.0 (X11; Linux x86_64)\" ").as_bytes(),
            );
            data.resize(record_size.max(25), b'x');
            InputRecord {
                partition_key: format!("10.0.0.{}", i % 16),
                data,
                sequence_number: format!("49{:054}", i + 1),
                sub_sequence_number: 0,
                arrival_millis: time,
            }
        })
        .collect()
}

/// Time to push `records` through a fresh instance of `plugin` in batches,
/// packing included, after one warm-up pass. Returns (time, outputs).
pub fn run_wasm(
    plugin: &Arc<Plugin>,
    config: &str,
    limits: &PluginLimits,
    records: &[InputRecord],
    batch_size: usize,
) -> anyhow::Result<(Duration, usize)> {
    let settings = InstanceSettings {
        config: config.to_string(),
        context: ShardContext::new("bench", "shardId-000000000000", "bench"),
        limits: limits.clone(),
        clock: Clock::System,
    };
    let mut instance = PluginInstance::start(plugin.clone(), settings, None)?;
    let mut packer = PackedBatch::default();
    let mut pass = |records: &[InputRecord]| -> anyhow::Result<usize> {
        let mut outputs = 0;
        for chunk in records.chunks(batch_size) {
            let batch = packer.repack(chunk, 0)?;
            let processed = instance.process(batch)?;
            if let Some(failure) = processed.failure {
                bail!("the plugin failed during the benchmark: {failure}");
            }
            outputs += processed.output.len();
        }
        Ok(outputs)
    };
    pass(&records[..records.len().min(50_000)])?;
    let started = Instant::now();
    let outputs = pass(records)?;
    Ok((started.elapsed(), outputs))
}

/// The same work natively: the counter's code called directly, packing included.
pub fn run_native(config: &str, records: &[InputRecord], batch_size: usize) -> anyhow::Result<(Duration, usize)> {
    let mut counter = counter::Counter::init(config, &Default::default())
        .map_err(|e| anyhow::anyhow!("native counter rejected the config: {e}"))?;
    let (mut payload, mut index) = (Vec::new(), Vec::new());
    let mut out = Output::new();
    let mut pass = |records: &[InputRecord]| -> anyhow::Result<usize> {
        let mut outputs = 0;
        for chunk in records.chunks(batch_size) {
            pack_into(chunk, &mut payload, &mut index)?;
            out.clear();
            counter
                .process(&Batch::new(&payload, &index, 0), &mut out)
                .map_err(|e| anyhow::anyhow!("native counter failed: {e}"))?;
            outputs += out.len();
        }
        Ok(outputs)
    };
    pass(&records[..records.len().min(50_000)])?;
    let started = Instant::now();
    let outputs = pass(records)?;
    Ok((started.elapsed(), outputs))
}

/// Checks, before anything is timed, that the plugin emits exactly what the
/// native counter emits for the same records: the comparison only means
/// something if both do the same work.
pub fn verify_same_output(
    plugin: &Arc<Plugin>,
    config: &str,
    limits: &PluginLimits,
    records: &[InputRecord],
) -> anyhow::Result<()> {
    let records = &records[..records.len().min(20_000)];
    let settings = InstanceSettings {
        config: config.to_string(),
        context: ShardContext::new("bench", "shardId-000000000000", "bench"),
        limits: limits.clone(),
        clock: Clock::System,
    };
    let mut instance = PluginInstance::start(plugin.clone(), settings, None)?;
    let mut counter = counter::Counter::init(config, &Default::default())
        .map_err(|e| anyhow::anyhow!("native counter rejected the config: {e}"))?;
    let mut packer = PackedBatch::default();
    let (mut payload, mut index) = (Vec::new(), Vec::new());
    for chunk in records.chunks(100) {
        let wasm = instance.process(packer.repack(chunk, 0)?)?.output;
        pack_into(chunk, &mut payload, &mut index)?;
        let mut native = Output::new();
        counter
            .process(&Batch::new(&payload, &index, 0), &mut native)
            .map_err(|e| anyhow::anyhow!("native counter failed: {e}"))?;
        if !wasm.iter().eq(native.iter()) {
            bail!("{} does not emit what the native counter emits; `host bench` compares against the counter, so pass counter.wasm", plugin.path().display());
        }
    }
    Ok(())
}

/// Measures every batch size; each figure is the best of three runs.
pub fn run(
    plugin: &Arc<Plugin>,
    config: &str,
    limits: &PluginLimits,
    records: &[InputRecord],
    batch_sizes: &[usize],
    mut progress: impl FnMut(&str),
) -> anyhow::Result<Vec<BenchRow>> {
    verify_same_output(plugin, config, limits, records)?;
    let mut rows = Vec::new();
    for &batch_size in batch_sizes {
        if batch_size == 0 {
            bail!("batch sizes must be at least 1");
        }
        progress(&format!("batch size {batch_size}…"));
        let best = |f: &mut dyn FnMut() -> anyhow::Result<(Duration, usize)>| -> anyhow::Result<(Duration, usize)> {
            let mut runs = (0..3).map(|_| f()).collect::<anyhow::Result<Vec<_>>>()?;
            runs.sort_by_key(|r| r.0);
            Ok(runs[0])
        };
        let (wasm, outputs) = best(&mut || run_wasm(plugin, config, limits, records, batch_size))
            .with_context(|| format!("wasm run at batch size {batch_size}"))?;
        let (native, native_outputs) = best(&mut || run_native(config, records, batch_size))?;
        if outputs != native_outputs {
            bail!("wasm emitted {outputs} records but native {native_outputs} at batch size {batch_size}");
        }
        rows.push(BenchRow { batch_size, wasm, native, records: records.len(), outputs });
    }
    Ok(rows)
}

/// The results as a Markdown table plus a verdict line per target.
pub fn render(rows: &[BenchRow], record_size: usize) -> String {
    let mut out = String::from(
        "| batch size | wasm records/s | wasm ns/record | native records/s | native ns/record | wasm/native |\n\
         |---:|---:|---:|---:|---:|---:|\n",
    );
    for row in rows {
        out.push_str(&format!(
            "| {} | {:.2}M | {:.0} | {:.2}M | {:.0} | {:.2}x |\n",
            row.batch_size,
            row.rate(row.wasm) / 1e6,
            row.ns(row.wasm),
            row.rate(row.native) / 1e6,
            row.ns(row.native),
            row.ratio(),
        ));
    }
    let records = rows.first().map_or(0, |r| r.records);
    out.push_str(&format!("\n{records} records of {record_size} bytes per run, best of 3, one core.\n"));
    let met = rows.iter().all(BenchRow::meets_targets);
    out.push_str(&format!(
        "targets at batch >= {TARGET_MIN_BATCH}: wasm/native <= {TARGET_MAX_RATIO:.1}x and >= {:.0}M records/s: {}\n",
        TARGET_MIN_RATE / 1e6,
        if met { "met" } else { "MISSED" }
    ));
    out
}

/// The median of `values` (NaN when empty).
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.into_iter().collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// A `Write` that hands each complete line to a closure: how the benchmarks
/// watch a sink's output as it is written.
pub struct LineWriter<F: FnMut(&str)> {
    on_line: F,
    line: Vec<u8>,
}

impl<F: FnMut(&str)> LineWriter<F> {
    pub fn new(on_line: F) -> Self {
        LineWriter { on_line, line: Vec::new() }
    }
}

impl<F: FnMut(&str)> std::io::Write for LineWriter<F> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for &b in buf {
            if b == b'\n' {
                (self.on_line)(&String::from_utf8_lossy(&self.line));
                self.line.clear();
            } else {
                self.line.push(b);
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use host::plugin::PluginEngine;

    #[test]
    fn the_benchmark_runs_the_same_counting_in_wasm_and_natively() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/wasm32-wasip2/plugin/counter.wasm");
        let engine = PluginEngine::new().expect("engine");
        let plugin = Arc::new(Plugin::load(&engine, &path, None).expect("counter.wasm (make plugins)"));
        let records = make_records(20_000, 100);
        let rows = run(&plugin, "{}", &PluginLimits::default(), &records, &[1, 100], |_| {}).expect("runs");
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| r.outputs > 0));
        let table = render(&rows, 100);
        assert!(table.contains("| 100 |") && table.contains("wasm/native"), "{table}");
    }
}
