//! The run's stop signal, set once by whoever decides the run is over (a
//! signal, `--max-records`, `--idle-exit`, a failing shard, `--duration`).
//! Workers finish the batch in flight, checkpoint and shut their plugin down.

use tokio::sync::watch;

/// A stop signal many can trigger and many can wait on. Cloning shares it.
#[derive(Debug, Clone)]
pub struct Shutdown {
    tx: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl From<watch::Sender<bool>> for Shutdown {
    /// Shares an existing channel: `send(true)` on it stops the run.
    fn from(tx: watch::Sender<bool>) -> Self {
        Shutdown { tx }
    }
}

impl Shutdown {
    /// A signal not yet triggered.
    pub fn new() -> Self {
        Shutdown { tx: watch::channel(false).0 }
    }

    /// Asks everything to stop (idempotent).
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// True once triggered.
    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }

    /// A receiver whose `changed()` fires when the signal is triggered.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }
}
