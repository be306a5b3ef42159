//! `host-bench languages`: the same counter written in Rust, Python and
//! JavaScript, side by side: `host test` records/s, component size, first
//! compile, and the peak RSS of `host run` with 16 shards, each beside the
//! Rust counter measured in the same run. The figures behind the README's
//! "Choosing a language" table.

use anyhow::Context;
use host::kinesis::{connect, AwsOptions};
use host::local::{LocalKinesis, LocalOptions};
use host::plugin::{Plugin, PluginEngine};
use kinesis_processor_sdk::helpers::time::format_timestamp_millis;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What to measure.
#[derive(Debug, Clone)]
pub struct LanguagesBenchOptions {
    /// (language, component) pairs; the first is the baseline.
    pub counters: Vec<(String, PathBuf)>,
    /// Records replayed by `host test`.
    pub records: usize,
    /// `host test` runs per counter, taken in turn; the best counts.
    pub rounds: usize,
    /// `host test --batch-size`.
    pub batch_size: usize,
}

/// One language's figures.
#[derive(Debug, Clone)]
pub struct LanguageRow {
    /// `Rust`, `Python` or `JavaScript`.
    pub language: String,
    /// Best `host test` rate over the rounds, records/s.
    pub records_per_second: f64,
    /// Bytes of the `.wasm`.
    pub component_bytes: u64,
    /// Seconds to compile the component with no cache.
    pub first_compile_seconds: f64,
    /// Peak RSS of `host run` over a 16-shard stream, MiB.
    pub rss_16_shards_mib: Option<f64>,
}

/// One counter while it is measured.
struct Measured<'a> {
    language: &'a str,
    path: &'a Path,
    first_compile_seconds: f64,
    /// What its warm-up `host test` printed, compared with the baseline's.
    output: Vec<u8>,
    /// records/s of each round.
    rates: Vec<f64>,
}

/// Seed-000-shaped records as `host test` input: 91 client IPs as partition
/// keys, an ISO-8601 timestamp as data, 37 ms apart (about two hours, so a
/// counter keeps ~120 minute windows).
fn write_input(path: &Path, records: usize) -> anyhow::Result<()> {
    let start = 1_532_901_600_000i64; // 2018-07-29T22:00:00Z
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for i in 0..records {
        let key = format!("10.0.{}.{}", i % 7, i % 13);
        let data = format_timestamp_millis(start + i as i64 * 37);
        writeln!(out, "{}", serde_json::json!({ "partitionKey": key, "data": data }))?;
    }
    out.flush()?;
    Ok(())
}

/// One `host test` run: its records/s and what it printed.
fn host_test(plugin: &Path, input: &Path, batch_size: usize, records: usize) -> anyhow::Result<(f64, Vec<u8>)> {
    let started = Instant::now();
    let out = std::process::Command::new(crate::host_binary()?)
        .args(["test", "--plugin"])
        .arg(plugin)
        .arg("--input")
        .arg(input)
        .args(["--batch-size", &batch_size.to_string()])
        .output()
        .context("cannot run `host test`")?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        out.status.success(),
        "`host test --plugin {}` failed: {}",
        plugin.display(),
        String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or_default()
    );
    Ok((records as f64 / seconds, out.stdout))
}

/// Measures every counter; `progress` gets a line per step.
pub async fn run(options: &LanguagesBenchOptions, progress: impl Fn(&str)) -> anyhow::Result<Vec<LanguageRow>> {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("records.jsonl");
    write_input(&input, options.records)?;
    let engine = PluginEngine::new()?;
    let mut rows = Vec::new();
    for (language, path) in &options.counters {
        progress(&format!("{language}: first compile of {}…", path.display()));
        let started = Instant::now();
        Plugin::load(&engine, path, None).with_context(|| format!("cannot load {}", path.display()))?;
        let first_compile_seconds = started.elapsed().as_secs_f64();
        // Warms the compiled cache the measured runs (and `host run`) use.
        let (_, output) = host_test(path, &input, options.batch_size, options.records)?;
        rows.push(Measured { language, path, first_compile_seconds, output, rates: Vec::new() });
    }
    // Every counter must print what the first (Rust) one printed.
    let baseline = &rows[0];
    for row in &rows[1..] {
        anyhow::ensure!(
            row.output == baseline.output,
            "the {} counter's output differs from the {} one's",
            row.language,
            baseline.language
        );
    }
    // Rounds in turn, so drift in the machine hits every language alike.
    for round in 1..=options.rounds.max(1) {
        for row in &mut rows {
            let (rate, _) = host_test(row.path, &input, options.batch_size, options.records)?;
            progress(&format!("round {round}/{}: {} {rate:.0} records/s", options.rounds, row.language));
            row.rates.push(rate);
        }
    }
    let local = LocalKinesis::start(LocalOptions { port: 0, shard_limit: 1024, ..LocalOptions::default() }).await?;
    let url = local.endpoint_url();
    let client = connect(&AwsOptions { endpoint_url: Some(url.clone()), ..Default::default() }).await?;
    let mut report = Vec::new();
    for (i, row) in rows.into_iter().enumerate() {
        progress(&format!("{}: peak RSS of `host run` with 16 shards…", row.language));
        let rss =
            crate::stream_bench::rss_16_shards(&client, &url, row.path, dir.path(), &format!("rss16-{i}")).await?;
        report.push(LanguageRow {
            language: row.language.to_string(),
            records_per_second: row.rates.iter().copied().fold(0.0, f64::max),
            component_bytes: std::fs::metadata(row.path)?.len(),
            first_compile_seconds: row.first_compile_seconds,
            rss_16_shards_mib: rss,
        });
    }
    local.stop().await;
    Ok(report)
}

/// The report as a Markdown table, ratios against the first row (Rust).
pub fn render(rows: &[LanguageRow], options: &LanguagesBenchOptions) -> String {
    let mut out = String::from(
        "| counter | records/s (`host test`) | vs Rust | component | first compile | peak RSS, 16 shards | vs Rust |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    let Some(base) = rows.first() else { return out };
    for r in rows {
        let rss = r.rss_16_shards_mib.map_or("–".into(), |m| format!("{m:.0} MiB"));
        let rss_ratio = match (r.rss_16_shards_mib, base.rss_16_shards_mib) {
            (Some(m), Some(b)) if b > 0.0 => format!("{:.1}x", m / b),
            _ => "–".into(),
        };
        out += &format!(
            "| {} | {:.0} | {:.2} | {:.2} MB | {:.2} s | {rss} | {rss_ratio} |\n",
            r.language,
            r.records_per_second,
            r.records_per_second / base.records_per_second,
            r.component_bytes as f64 / 1e6,
            r.first_compile_seconds,
        );
    }
    out += &format!(
        "\n{} seed-shaped records, batch {}, best of {} `host test` runs each (compiled cache warm), identical output checked; first compile with no cache; RSS: 32,000 records in 16 shards, one instance per shard.\n",
        options.records, options.batch_size, options.rounds
    );
    out
}
