//! `host leases`: the table as an operator reads it.

use super::{Lease, StateRef};
use std::fmt::Write;

/// One line per lease: shard, owner, checkpoint, counter, state size and
/// version, and how long ago it last changed.
pub fn render_table(leases: &[Lease]) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let rows: Vec<[String; 6]> = leases
        .iter()
        .map(|l| {
            let state = match &l.state {
                None => "-".to_string(),
                Some(StateRef::Inline { bytes, .. }) => format!("{} B inline, v{}", bytes.len(), l.state_version),
                Some(StateRef::Chunked { len, chunks, .. }) => {
                    format!("{len} B in {chunks} chunk(s), v{}", l.state_version)
                }
            };
            let changed = l
                .updated_millis
                .map_or("-".to_string(), |t| format!("{:.1} s ago", now.saturating_sub(t) as f64 / 1000.0));
            let owner = match (&l.owner, &l.hand_off_to) {
                (Some(owner), Some(to)) => format!("{owner} (asked by {to})"),
                (None, Some(to)) => format!("- (for {to})"),
                (Some(owner), None) => owner.clone(),
                (None, None) => "-".into(),
            };
            [
                l.key.clone(),
                owner,
                l.checkpoint.clone().unwrap_or_else(|| "-".into()),
                l.counter.to_string(),
                state,
                changed,
            ]
        })
        .collect();
    let header = ["SHARD", "OWNER", "CHECKPOINT", "COUNTER", "STATE", "CHANGED"];
    let widths: Vec<usize> =
        (0..6).map(|i| rows.iter().map(|r| r[i].len()).chain([header[i].len()]).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in std::iter::once(header.map(String::from)).chain(rows) {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    out
}
