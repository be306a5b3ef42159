//! A lease table in memory, with DynamoDB's conditional-write semantics:
//! for the protocol's tests (and single-process use).

use super::{Conflict, Lease, LeaseError, LeaseTable};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Leases in a map behind a lock: each write checks its condition and
/// applies atomically, as a DynamoDB conditional update does.
#[derive(Debug, Default)]
pub struct InMemoryTable {
    leases: Mutex<BTreeMap<String, Lease>>,
}

impl InMemoryTable {
    /// Applies `update` to `key` if `condition` holds for the stored lease.
    fn write(
        &self,
        key: &str,
        counter: u64,
        condition: impl FnOnce(&Lease) -> bool,
        update: impl FnOnce(&mut Lease),
    ) -> Result<Lease, LeaseError> {
        let mut leases = self.leases.lock().map_err(|_| anyhow::anyhow!("lease table lock poisoned"))?;
        let conflict = || Conflict { key: key.to_string(), expected: counter };
        let lease = leases.get_mut(key).ok_or_else(conflict)?;
        if lease.counter != counter || !condition(lease) {
            return Err(conflict().into());
        }
        update(lease);
        lease.counter += 1;
        Ok(lease.clone())
    }
}

#[async_trait::async_trait]
impl LeaseTable for InMemoryTable {
    async fn create(&self, key: &str) -> Result<(), LeaseError> {
        let mut leases = self.leases.lock().map_err(|_| anyhow::anyhow!("lease table lock poisoned"))?;
        leases.entry(key.to_string()).or_insert_with(|| Lease::new(key));
        Ok(())
    }

    async fn scan(&self) -> Result<Vec<Lease>, LeaseError> {
        let leases = self.leases.lock().map_err(|_| anyhow::anyhow!("lease table lock poisoned"))?;
        Ok(leases.values().cloned().collect())
    }

    async fn take(&self, key: &str, counter: u64, me: &str) -> Result<Lease, LeaseError> {
        self.write(key, counter, |_| true, |lease| lease.owner = Some(me.to_string()))
    }

    async fn renew(&self, key: &str, counter: u64, me: &str) -> Result<Lease, LeaseError> {
        self.write(key, counter, |lease| lease.owner.as_deref() == Some(me), |_| {})
    }

    async fn checkpoint(
        &self,
        key: &str,
        counter: u64,
        me: &str,
        checkpoint: &str,
        state_version: u64,
    ) -> Result<Lease, LeaseError> {
        self.write(
            key,
            counter,
            |lease| lease.owner.as_deref() == Some(me),
            |lease| {
                lease.checkpoint = Some(checkpoint.to_string());
                lease.state_version = state_version;
            },
        )
    }

    async fn release(&self, key: &str, counter: u64, me: &str) -> Result<Lease, LeaseError> {
        self.write(key, counter, |lease| lease.owner.as_deref() == Some(me), |lease| lease.owner = None)
    }
}
