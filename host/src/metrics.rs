//! Prometheus metrics for `host run --metrics-addr`: records per shard, lag,
//! recovered faults, and which plugin (by content hash) is producing output.

use crate::progress::Progress;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// What the endpoint reports besides the live counters.
#[derive(Debug, Clone)]
pub struct MetricsInfo {
    pub stream: String,
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The Prometheus text exposition of `progress`.
pub fn render(progress: &Progress, info: &MetricsInfo) -> String {
    let stream = escape(&info.stream);
    let mut out = String::new();
    let _ = writeln!(out, "# HELP host_plugin_info The plugin each shard runs, by content hash (changes with hot swaps).\n# TYPE host_plugin_info gauge");
    if let Ok(plugins) = progress.plugin_by_shard.lock() {
        for (shard, sha256) in plugins.iter() {
            let _ = writeln!(
                out,
                "host_plugin_info{{stream=\"{stream}\",shard=\"{}\",sha256=\"{}\"}} 1",
                escape(shard),
                escape(sha256)
            );
        }
    }
    let deployment = progress.swaps.deployment.load(std::sync::atomic::Ordering::Relaxed);
    if deployment > 0 {
        let _ = writeln!(out, "# HELP host_group_deployment The group's deployment (lease table logic) this worker runs.\n# TYPE host_group_deployment gauge");
        let _ = writeln!(out, "host_group_deployment{{stream=\"{stream}\"}} {deployment}");
    }
    let _ = writeln!(out, "# HELP host_plugin_swaps_total Hot swaps asked for, by outcome and the content hash of the logic asked for.\n# TYPE host_plugin_swaps_total counter");
    if let Ok(swaps) = progress.swaps.by_outcome.lock() {
        for ((outcome, sha256), n) in swaps.iter() {
            let _ = writeln!(
                out,
                "host_plugin_swaps_total{{stream=\"{stream}\",outcome=\"{outcome}\",sha256=\"{}\"}} {n}",
                escape(sha256)
            );
        }
    }
    let _ = writeln!(out, "# HELP host_records_processed_total Records processed by the plugin.\n# TYPE host_records_processed_total counter");
    if let Ok(by_shard) = progress.records_by_shard.lock() {
        for (shard, n) in by_shard.iter() {
            let _ =
                writeln!(out, "host_records_processed_total{{stream=\"{stream}\",shard=\"{}\"}} {n}", escape(shard));
        }
    }
    let _ = writeln!(out, "# HELP host_millis_behind_latest How far each shard is behind its tip.\n# TYPE host_millis_behind_latest gauge");
    if let Ok(behind) = progress.behind.lock() {
        for (shard, ms) in behind.iter() {
            let _ = writeln!(out, "host_millis_behind_latest{{stream=\"{stream}\",shard=\"{}\"}} {ms}", escape(shard));
        }
    }
    let _ = writeln!(out, "# HELP host_get_records_retries_total GetRecords calls retried after throttling or network faults.\n# TYPE host_get_records_retries_total counter");
    let _ = writeln!(
        out,
        "host_get_records_retries_total{{stream=\"{stream}\"}} {}",
        progress.retried_reads.load(Ordering::Relaxed)
    );
    let _ = writeln!(out, "# HELP host_expired_iterators_total Shard iterators replaced after expiring.\n# TYPE host_expired_iterators_total counter");
    let _ = writeln!(
        out,
        "host_expired_iterators_total{{stream=\"{stream}\"}} {}",
        progress.expired_iterators.load(Ordering::Relaxed)
    );
    let _ = writeln!(out, "# HELP host_corrupt_aggregates_total Records with the KPL magic bytes that were not valid aggregates (bad MD5 or undecodable), delivered as one plain record each.\n# TYPE host_corrupt_aggregates_total counter");
    let _ = writeln!(
        out,
        "host_corrupt_aggregates_total{{stream=\"{stream}\"}} {}",
        progress.corrupt_aggregates.load(Ordering::Relaxed)
    );
    let _ = writeln!(out, "# HELP host_dead_letters_total Records set aside to the dead-letter sink, by shard and reason (poison, expired).\n# TYPE host_dead_letters_total counter");
    if let Ok(letters) = progress.dead_letters.lock() {
        for ((shard, reason), n) in letters.iter() {
            let _ = writeln!(
                out,
                "host_dead_letters_total{{stream=\"{stream}\",shard=\"{}\",reason=\"{reason}\"}} {n}",
                escape(shard)
            );
        }
    }
    let _ = writeln!(out, "# HELP host_plugin_retries_total Plugin calls retried after a retryable error or a trap.\n# TYPE host_plugin_retries_total counter");
    let _ = writeln!(
        out,
        "host_plugin_retries_total{{stream=\"{stream}\"}} {}",
        progress.plugin_retries.load(Ordering::Relaxed)
    );
    let _ = writeln!(out, "# HELP host_shard_stopped Shards stopped before a record the plugin cannot process (no dead-letter sink).\n# TYPE host_shard_stopped gauge");
    if let Ok(stopped) = progress.stopped_shards.lock() {
        for shard in stopped.keys() {
            let _ = writeln!(out, "host_shard_stopped{{stream=\"{stream}\",shard=\"{}\"}} 1", escape(shard));
        }
    }
    let leases = progress.leases.lock().map(|l| l.clone()).unwrap_or_default();
    if let Some(leases) = leases {
        let _ = writeln!(out, "# HELP host_leases_held Shard leases this worker holds.\n# TYPE host_leases_held gauge");
        let _ = writeln!(out, "host_leases_held{{stream=\"{stream}\"}} {}", leases.held);
        let _ = writeln!(out, "# HELP host_lease_workers Workers seen live in the lease table, this one included.\n# TYPE host_lease_workers gauge");
        let _ = writeln!(out, "host_lease_workers{{stream=\"{stream}\"}} {}", leases.workers);
        let _ = writeln!(out, "# HELP host_leases_taken_total Leases this worker took, by how (free, handed-off, expired).\n# TYPE host_leases_taken_total counter");
        for how in ["free", "handed-off", "expired"] {
            let n = leases.taken.get(how).copied().unwrap_or(0);
            let _ = writeln!(out, "host_leases_taken_total{{stream=\"{stream}\",how=\"{how}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP host_leases_lost_total Leases another worker took from this one.\n# TYPE host_leases_lost_total counter");
        let _ = writeln!(out, "host_leases_lost_total{{stream=\"{stream}\"}} {}", leases.lost);
    }
    out
}

/// Serves `GET /metrics` on `listener` until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    progress: Arc<Progress>,
    info: MetricsInfo,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let body = render(&progress, &info);
            async move { ([("content-type", "text/plain; version=0.0.4")], body) }
        }),
    );
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swaps_dead_letters_and_stopped_shards_are_exported() {
        let progress = Progress::default();
        progress.plugin_by_shard.lock().expect("lock").insert("shardId-1".into(), "abc".into());
        progress.swaps.by_outcome.lock().expect("lock").insert(("swapped", "def".into()), 2);
        progress.swaps.deployment.store(7, std::sync::atomic::Ordering::Relaxed);
        progress.dead_letters.lock().expect("lock").insert(("shardId-1".into(), "poison"), 3);
        progress.stopped_shards.lock().expect("lock").insert("shardId-2".into(), "why".into());
        progress.plugin_retries.store(4, Ordering::Relaxed);
        let text = render(&progress, &MetricsInfo { stream: "s".into() });
        for line in [
            "host_plugin_info{stream=\"s\",shard=\"shardId-1\",sha256=\"abc\"} 1",
            "host_plugin_swaps_total{stream=\"s\",outcome=\"swapped\",sha256=\"def\"} 2",
            "host_group_deployment{stream=\"s\"} 7",
            "host_dead_letters_total{stream=\"s\",shard=\"shardId-1\",reason=\"poison\"} 3",
            "host_plugin_retries_total{stream=\"s\"} 4",
            "host_shard_stopped{stream=\"s\",shard=\"shardId-2\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in:\n{text}");
        }
    }

    #[test]
    fn a_group_workers_leases_are_exported_and_a_single_host_has_none() {
        let progress = Progress::default();
        let info = MetricsInfo { stream: "s".into() };
        assert!(!render(&progress, &info).contains("host_leases"), "a single host has no lease metrics");
        let taken = [("free", 2), ("handed-off", 1)].into_iter().collect();
        *progress.leases.lock().expect("lock") =
            Some(crate::progress::LeaseCounts { held: 3, workers: 2, taken, lost: 1 });
        let text = render(&progress, &info);
        for line in [
            "host_leases_held{stream=\"s\"} 3",
            "host_lease_workers{stream=\"s\"} 2",
            "host_leases_taken_total{stream=\"s\",how=\"free\"} 2",
            "host_leases_taken_total{stream=\"s\",how=\"handed-off\"} 1",
            "host_leases_taken_total{stream=\"s\",how=\"expired\"} 0",
            "host_leases_lost_total{stream=\"s\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in:\n{text}");
        }
    }
}
