//! The lease store's three timers, apart from the consumer's loop and from
//! each other: renewals (a third of a lease duration), expiry (each take's
//! deadline) and scans (0.4 lease duration). A renewal or scan that
//! hangs on the table holds up neither the other nor the deadlines.

use super::LeaseStore;
use crate::ownership::{Changes, Listing};
use crate::shutdown::Shutdown;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, watch};

/// Starts the three timers; the handle ends when all three have stopped.
pub(super) fn keep(
    store: Arc<LeaseStore>,
    listing: watch::Receiver<Arc<Listing>>,
    changes: mpsc::UnboundedSender<Changes>,
    stop: Shutdown,
) -> tokio::task::JoinHandle<()> {
    let renewing = tokio::spawn(store.clone().renew_loop(changes.clone(), stop.clone()));
    let expiring = tokio::spawn(store.clone().expiry_loop(changes.clone(), stop.clone()));
    let scanning = tokio::spawn(store.scan_loop(listing, changes, stop));
    tokio::spawn(async move {
        for (what, task) in [("renewals", renewing), ("expiry", expiring), ("scans", scanning)] {
            if let Err(e) = task.await {
                tracing::error!("the lease keeper's {what} ended: {e}");
            }
        }
    })
}

impl LeaseStore {
    /// Renewals every third of a lease duration, until `stop`.
    async fn renew_loop(self: Arc<Self>, changes: mpsc::UnboundedSender<Changes>, stop: Shutdown) {
        let mut stopped = stop.subscribe();
        let every = self.keeper.renew_every();
        let mut next_round = Instant::now();
        loop {
            let renewed = self.keeper.renew(self.table.as_ref()).await;
            // A failed renewal is tried again soon, while its take lasts.
            let now = Instant::now();
            let mut wake = fixed_rate(&mut next_round, every);
            if renewed.failed > 0 {
                wake = wake.min(now + self.keeper.retry_after());
                tracing::warn!(
                    "{} lease renewal(s) failed, trying again in {:?}",
                    renewed.failed,
                    wake.saturating_duration_since(now)
                );
            }
            if !renewed.lost.is_empty() || !renewed.hand_off.is_empty() {
                let _ = changes.send(Changes { lost: renewed.lost, hand_off: renewed.hand_off, ..Changes::default() });
            }
            if !sleep_until_or_stop(wake, &mut stopped).await {
                return;
            }
        }
    }

    /// Drops each take at its deadline, until `stop`.
    async fn expiry_loop(self: Arc<Self>, changes: mpsc::UnboundedSender<Changes>, stop: Shutdown) {
        let mut stopped = stop.subscribe();
        loop {
            let lost = self.keeper.expire();
            if !lost.is_empty() {
                let _ = changes.send(Changes { lost, ..Changes::default() });
            }
            let now = Instant::now();
            let wake = self
                .keeper
                .next_deadline()
                .unwrap_or(now + self.keeper.renew_every())
                .min(now + self.keeper.renew_every());
            if !sleep_until_or_stop(wake, &mut stopped).await {
                return;
            }
        }
    }

    /// Scans on their own period once the stream is listed, until `stop`.
    async fn scan_loop(
        self: Arc<Self>,
        mut listing: watch::Receiver<Arc<Listing>>,
        changes: mpsc::UnboundedSender<Changes>,
        stop: Shutdown,
    ) {
        let mut stopped = stop.subscribe();
        let every = self.keeper.scan_every();
        let mut next_round = Instant::now();
        loop {
            let current = listing.borrow_and_update().clone();
            if current.shards.is_empty() {
                tokio::select! {
                    changed = listing.changed() => if changed.is_err() { return },
                    _ = stopped.wait_for(|s| *s) => return,
                }
                continue;
            }
            match self.scan_round(&current).await {
                Ok(round) if !round.is_empty() => {
                    let _ = changes.send(round);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("lease scan failed, trying again in {:?}: {e:#}", self.keeper.scan_every()),
            }
            // A long round (many takes) does not push the next scan late, so
            // an expired lease is seen at the third scan: 1.2 lease durations.
            if !sleep_until_or_stop(fixed_rate(&mut next_round, every), &mut stopped).await {
                return;
            }
        }
    }
}

/// The next round of a loop that runs every `every` whatever its rounds
/// take: slow rounds do not push later ones late; one that ran past its
/// successor's time starts again from now.
fn fixed_rate(next_round: &mut Instant, every: std::time::Duration) -> Instant {
    *next_round += every;
    let now = Instant::now();
    if *next_round < now {
        *next_round = now;
    }
    *next_round
}

/// Sleeps until `wake`; false if `stop` came first.
async fn sleep_until_or_stop(wake: Instant, stopped: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => true,
        _ = stopped.wait_for(|s| *s) => false,
    }
}
