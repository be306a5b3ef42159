//! A lease table that fails the way DynamoDB does under load and outages,
//! for the protocol's tests: a call refused after the SDK's retries
//! (throttling, an outage), a write that lands and whose answer is lost,
//! and a write that lands and whose SDK retry comes back as a failed
//! condition. Faults come from a script first, then at random.

use super::{Commit, InMemoryTable, Lease, LeaseError, LeaseTable, StateRef};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

/// What happens to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// It goes through.
    None,
    /// Refused before it did anything (throttled past the SDK's retries).
    Refused,
    /// A write lands; its answer is lost.
    LostAnswer,
    /// A write lands; the SDK's retry of it finds the condition failed.
    RetriedAfterLanding,
    /// Refused for good (AccessDenied, say); only from a script.
    Denied,
}

/// The in-memory table with faults.
#[derive(Debug)]
pub(crate) struct FaultyTable {
    pub inner: InMemoryTable,
    rng: Mutex<StdRng>,
    /// Percent of calls that fail (at random among the faults a call can have).
    rate: Mutex<u32>,
    /// Faults to inject first, in order, one per call.
    script: Mutex<VecDeque<Fault>>,
    /// How many of each fault were injected.
    pub injected: Mutex<BTreeMap<&'static str, u64>>,
    /// Every call refused (an outage, a black-holed network).
    cut: Mutex<bool>,
}

impl FaultyTable {
    /// Faults at `rate` percent of calls, drawn from `seed`.
    pub fn new(seed: u64, rate: u32) -> Self {
        FaultyTable {
            inner: InMemoryTable::default(),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            rate: Mutex::new(rate),
            script: Mutex::default(),
            injected: Mutex::default(),
            cut: Mutex::new(false),
        }
    }

    /// Changes the rate (0: a healthy table from now on).
    pub fn set_rate(&self, rate: u32) {
        *self.rate.lock().expect("lock") = rate;
    }

    /// Cut off (`true`): every call is refused until healed.
    pub fn cut_off(&self, cut: bool) {
        *self.cut.lock().expect("lock") = cut;
    }

    /// The next calls get these faults, in order.
    pub fn script(&self, faults: &[Fault]) {
        self.script.lock().expect("lock").extend(faults);
    }

    fn fault(&self, write: bool) -> Fault {
        if *self.cut.lock().expect("lock") {
            return Fault::Refused;
        }
        let fault = match self.script.lock().expect("lock").pop_front() {
            Some(fault) => fault,
            None => {
                let mut rng = self.rng.lock().expect("lock");
                if rng.random_range(0..100) >= *self.rate.lock().expect("lock") {
                    Fault::None
                } else if !write {
                    Fault::Refused
                } else {
                    [Fault::Refused, Fault::LostAnswer, Fault::RetriedAfterLanding][rng.random_range(0..3)]
                }
            }
        };
        let name = match fault {
            Fault::None => return fault,
            Fault::Refused => "refused",
            Fault::LostAnswer => "lost answer",
            Fault::RetriedAfterLanding => "retried after landing",
            Fault::Denied => "denied",
        };
        *self.injected.lock().expect("lock").entry(name).or_default() += 1;
        fault
    }

    async fn write<F, Fut>(&self, call: F) -> Result<Lease, LeaseError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Lease, LeaseError>>,
    {
        match self.fault(true) {
            Fault::None => call().await,
            Fault::Refused => Err(refused()),
            Fault::Denied => Err(LeaseError::Denied(anyhow::anyhow!("AccessDeniedException: not allowed"))),
            Fault::LostAnswer => {
                let _ = call().await;
                Err(LeaseError::Table(anyhow::anyhow!("connection reset before the answer")))
            }
            // The same request again: its condition no longer holds.
            Fault::RetriedAfterLanding => match call().await {
                Ok(_) => call().await,
                failed => failed,
            },
        }
    }

    fn read(&self) -> Result<(), LeaseError> {
        match self.fault(false) {
            Fault::None => Ok(()),
            _ => Err(refused()),
        }
    }
}

fn refused() -> LeaseError {
    LeaseError::Table(anyhow::anyhow!("ProvisionedThroughputExceededException (after the SDK's retries)"))
}

#[async_trait::async_trait]
impl LeaseTable for FaultyTable {
    async fn create(&self, key: &str, parents: &[String]) -> Result<(), LeaseError> {
        self.inner.create(key, parents).await
    }
    async fn scan(&self) -> Result<Vec<Lease>, LeaseError> {
        self.read()?;
        self.inner.scan().await
    }
    async fn get(&self, key: &str) -> Result<Option<Lease>, LeaseError> {
        self.read()?;
        self.inner.get(key).await
    }
    async fn take(&self, key: &str, counter: u64, me: &str, nonce: u64) -> Result<Lease, LeaseError> {
        self.write(|| self.inner.take(key, counter, me, nonce)).await
    }
    async fn renew(&self, key: &str, counter: u64, me: &str, nonce: u64) -> Result<Lease, LeaseError> {
        self.write(|| self.inner.renew(key, counter, me, nonce)).await
    }
    async fn checkpoint(
        &self,
        key: &str,
        counter: u64,
        me: &str,
        nonce: u64,
        commit: &Commit,
    ) -> Result<Lease, LeaseError> {
        self.write(|| self.inner.checkpoint(key, counter, me, nonce, commit)).await
    }
    async fn release(&self, key: &str, counter: u64, me: &str, nonce: u64) -> Result<Lease, LeaseError> {
        self.write(|| self.inner.release(key, counter, me, nonce)).await
    }
    async fn delete(&self, key: &str, counter: u64) -> Result<(), LeaseError> {
        self.inner.delete(key, counter).await
    }
    async fn request_hand_off(&self, key: &str, owner: &str, me: &str) -> Result<(), LeaseError> {
        self.read()?;
        self.inner.request_hand_off(key, owner, me).await
    }
    async fn put_state(&self, key: &str, tag: &str, layout: u32, bytes: &[u8]) -> Result<StateRef, LeaseError> {
        self.inner.put_state(key, tag, layout, bytes).await
    }
    async fn lease_duration(&self, proposed: std::time::Duration) -> Result<std::time::Duration, LeaseError> {
        self.inner.lease_duration(proposed).await
    }
    async fn get_state(&self, key: &str, state: &StateRef) -> Result<Vec<u8>, LeaseError> {
        self.inner.get_state(key, state).await
    }
    async fn deployment(&self) -> Result<Option<super::Deployment>, LeaseError> {
        self.inner.deployment().await
    }
    async fn deploy(&self, next: &super::Deployment) -> Result<(), LeaseError> {
        self.inner.deploy(next).await
    }
    async fn drop_states(&self, key: &str, keep: &str) -> Result<(), LeaseError> {
        self.inner.drop_states(key, keep).await
    }
}
