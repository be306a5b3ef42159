//! `host leases`: the table as an operator reads it.

use super::{Deployment, Lease, StateRef};
use std::fmt::Write;

/// The group's deployment, then one line per lease: shard, owner, the
/// logic of its checkpoint and since when, checkpoint, counter, state size
/// and version, and how long ago it last changed.
pub fn render_table(leases: &[Lease], deployment: Option<&Deployment>) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let rows: Vec<[String; 8]> = leases
        .iter()
        .map(|l| {
            let state = match &l.state {
                None => "-".to_string(),
                Some(StateRef::Inline { bytes, .. }) => format!("{} B inline, v{}", bytes.len(), l.state_version),
                Some(StateRef::Chunked { len, chunks, .. }) => {
                    format!("{len} B in {chunks} chunk(s), v{}", l.state_version)
                }
            };
            let ago = |t: Option<u64>| t.map_or("-".to_string(), |t| format!("{} ago", since(now.saturating_sub(t))));
            let changed = ago(l.updated_millis);
            let owner = match (&l.owner, &l.hand_off_to) {
                (Some(owner), Some(to)) => format!("{owner} (asked by {to})"),
                (None, Some(to)) => format!("- (for {to})"),
                (Some(owner), None) => owner.clone(),
                (None, None) => "-".into(),
            };
            let logic = match (&l.logic, deployment) {
                (None, _) => "-".to_string(),
                (Some(sha), Some(d)) if *sha != d.logic.sha256 => {
                    format!("{} (not the group's)", super::logic::short(sha))
                }
                (Some(sha), _) => super::logic::short(sha).to_string(),
            };
            let on_logic = if l.logic.is_some() { ago(l.logic_since_millis) } else { "-".into() };
            [
                l.key.clone(),
                owner,
                logic,
                on_logic,
                l.checkpoint.clone().unwrap_or_else(|| "-".into()),
                l.counter.to_string(),
                state,
                changed,
            ]
        })
        .collect();
    let header = ["SHARD", "OWNER", "LOGIC", "SINCE", "CHECKPOINT", "COUNTER", "STATE", "CHANGED"];
    let widths: Vec<usize> =
        (0..8).map(|i| rows.iter().map(|r| r[i].len()).chain([header[i].len()]).max().unwrap_or(0)).collect();
    let mut out = match deployment {
        Some(d) => format!("group logic: {}\n", d.describe()),
        None => "group logic: none yet (the first worker's --plugin seeds it)\n".to_string(),
    };
    for row in std::iter::once(header.map(String::from)).chain(rows) {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    out
}

/// A duration for the operator: `4.2 s`, `3m 05s`, `2h 10m`.
fn since(millis: u64) -> String {
    let seconds = millis / 1000;
    match seconds {
        0..60 => format!("{:.1} s", millis as f64 / 1000.0),
        60..3600 => format!("{}m {:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h {:02}m", seconds / 3600, seconds % 3600 / 60),
    }
}
