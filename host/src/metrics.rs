//! Prometheus metrics for `host run --metrics-addr`: records per shard, lag,
//! recovered faults, and which plugin (by content hash) is producing output.

use crate::consumer::Progress;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// What the endpoint reports besides the live counters.
#[derive(Debug, Clone)]
pub struct MetricsInfo {
    pub stream: String,
    pub plugin_path: String,
    pub plugin_sha256: String,
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The Prometheus text exposition of `progress`.
pub fn render(progress: &Progress, info: &MetricsInfo) -> String {
    let stream = escape(&info.stream);
    let mut out = String::new();
    let _ = writeln!(out, "# HELP host_plugin_info The running plugin, by content hash.\n# TYPE host_plugin_info gauge");
    let _ = writeln!(out, "host_plugin_info{{path=\"{}\",sha256=\"{}\"}} 1", escape(&info.plugin_path), escape(&info.plugin_sha256));
    let _ = writeln!(out, "# HELP host_records_processed_total Records processed by the plugin.\n# TYPE host_records_processed_total counter");
    if let Ok(by_shard) = progress.records_by_shard.lock() {
        for (shard, n) in by_shard.iter() {
            let _ = writeln!(out, "host_records_processed_total{{stream=\"{stream}\",shard=\"{}\"}} {n}", escape(shard));
        }
    }
    let _ = writeln!(out, "# HELP host_millis_behind_latest How far each shard is behind its tip.\n# TYPE host_millis_behind_latest gauge");
    if let Ok(behind) = progress.behind.lock() {
        for (shard, ms) in behind.iter() {
            let _ = writeln!(out, "host_millis_behind_latest{{stream=\"{stream}\",shard=\"{}\"}} {ms}", escape(shard));
        }
    }
    let _ = writeln!(out, "# HELP host_get_records_retries_total GetRecords calls retried after throttling or network faults.\n# TYPE host_get_records_retries_total counter");
    let _ = writeln!(out, "host_get_records_retries_total{{stream=\"{stream}\"}} {}", progress.retried_reads.load(Ordering::Relaxed));
    let _ = writeln!(out, "# HELP host_expired_iterators_total Shard iterators replaced after expiring.\n# TYPE host_expired_iterators_total counter");
    let _ = writeln!(out, "host_expired_iterators_total{{stream=\"{stream}\"}} {}", progress.expired_iterators.load(Ordering::Relaxed));
    out
}

/// Serves `GET /metrics` on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, progress: Arc<Progress>, info: MetricsInfo) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let body = render(&progress, &info);
            async move { ([("content-type", "text/plain; version=0.0.4")], body) }
        }),
    );
    axum::serve(listener, app).await
}
