//! A lease table in memory, with DynamoDB's conditional-write semantics:
//! for the protocol's tests.

use super::{
    sha256_hex, superseded, Commit, Conflict, Deployment, Lease, LeaseError, LeaseTable, PreSwapWrite, StateRef,
    StateWrite,
};
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

/// Leases in a map behind a lock: each write checks its condition and
/// applies atomically, as a DynamoDB conditional update does.
#[derive(Debug, Default)]
pub struct InMemoryTable {
    leases: Mutex<BTreeMap<String, Lease>>,
    /// Big states: (shard, tag) → bytes.
    states: Mutex<BTreeMap<(String, String), Vec<u8>>>,
    /// The group's lease duration, once a worker set it.
    lease_duration: Mutex<Option<std::time::Duration>>,
    /// The group's logic.
    deployment: Mutex<Option<Deployment>>,
}

fn locked<T>(mutex: &Mutex<T>) -> Result<MutexGuard<'_, T>, LeaseError> {
    mutex.lock().map_err(|_| LeaseError::Table(anyhow::anyhow!("lease table lock poisoned")))
}

impl InMemoryTable {
    /// Applies `update` to `key` if `condition` holds for the stored lease.
    fn write(
        &self,
        key: &str,
        counter: u64,
        nonce: u64,
        condition: impl FnOnce(&Lease) -> bool,
        update: impl FnOnce(&mut Lease),
    ) -> Result<Lease, LeaseError> {
        let mut leases = locked(&self.leases)?;
        let conflict = || Conflict { key: key.to_string(), expected: counter };
        let lease = leases.get_mut(key).ok_or_else(conflict)?;
        if lease.counter != counter || !condition(lease) {
            return Err(conflict().into());
        }
        update(lease);
        lease.counter += 1;
        lease.nonce = nonce;
        Ok(lease.clone())
    }

    /// How many big-state versions are stored (cleanup tests).
    pub fn stored_states(&self) -> usize {
        self.states.lock().map(|s| s.len()).unwrap_or(0)
    }
}

#[async_trait::async_trait]
impl LeaseTable for InMemoryTable {
    async fn create(&self, key: &str, parents: &[String]) -> Result<(), LeaseError> {
        locked(&self.leases)?.entry(key.to_string()).or_insert_with(|| Lease::new(key, parents));
        Ok(())
    }

    async fn scan(&self) -> Result<Vec<Lease>, LeaseError> {
        Ok(locked(&self.leases)?.values().cloned().collect())
    }

    async fn get(&self, key: &str) -> Result<Option<Lease>, LeaseError> {
        Ok(locked(&self.leases)?.get(key).cloned())
    }

    async fn take(&self, key: &str, counter: u64, me: &str, nonce: u64) -> Result<Lease, LeaseError> {
        self.write(
            key,
            counter,
            nonce,
            |_| true,
            |lease| {
                if lease.owner.as_deref() != Some(me) {
                    lease.owner_switches += 1;
                }
                lease.owner = Some(me.to_string());
                lease.hand_off_to = None;
            },
        )
    }

    async fn renew(&self, key: &str, counter: u64, me: &str, nonce: u64) -> Result<Lease, LeaseError> {
        self.write(key, counter, nonce, |lease| lease.owner.as_deref() == Some(me), |_| {})
    }

    async fn checkpoint(
        &self,
        key: &str,
        counter: u64,
        me: &str,
        nonce: u64,
        commit: &Commit,
    ) -> Result<Lease, LeaseError> {
        self.write(
            key,
            counter,
            nonce,
            |lease| lease.owner.as_deref() == Some(me),
            |lease| {
                if let Some(checkpoint) = &commit.checkpoint {
                    lease.checkpoint = Some(checkpoint.clone());
                }
                lease.sub_sequence = commit.sub_sequence;
                lease.state_version = commit.state_version;
                match &commit.state {
                    StateWrite::Keep => {}
                    StateWrite::Clear => lease.state = None,
                    StateWrite::Set(state) => lease.state = Some(state.clone()),
                }
                lease.owner_switches = 0;
                if commit.logic.is_some() {
                    lease.logic = commit.logic.clone();
                    lease.logic_commits = commit.logic_commits;
                    if commit.logic_commits == 1 {
                        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
                        lease.logic_since_millis = now.ok().map(|d| d.as_millis() as u64);
                    }
                }
                match &commit.pre_swap {
                    PreSwapWrite::Keep => {}
                    PreSwapWrite::Clear => lease.pre_swap = None,
                    PreSwapWrite::Set(pre) => lease.pre_swap = Some(pre.clone()),
                }
            },
        )
    }

    async fn release(&self, key: &str, counter: u64, me: &str, nonce: u64) -> Result<Lease, LeaseError> {
        self.write(key, counter, nonce, |lease| lease.owner.as_deref() == Some(me), |lease| lease.owner = None)
    }

    async fn delete(&self, key: &str, counter: u64) -> Result<(), LeaseError> {
        let mut leases = locked(&self.leases)?;
        if leases.get(key).is_none_or(|l| l.counter != counter) {
            return Err(Conflict { key: key.to_string(), expected: counter }.into());
        }
        leases.remove(key);
        locked(&self.states)?.retain(|(k, _), _| k != key);
        Ok(())
    }

    async fn request_hand_off(&self, key: &str, owner: &str, me: &str) -> Result<(), LeaseError> {
        let mut leases = locked(&self.leases)?;
        match leases.get_mut(key) {
            Some(lease) if lease.owner.as_deref() == Some(owner) && lease.hand_off_to.is_none() => {
                lease.hand_off_to = Some(me.to_string());
                Ok(())
            }
            _ => Err(Conflict { key: key.to_string(), expected: 0 }.into()),
        }
    }

    async fn put_state(&self, key: &str, tag: &str, layout: u32, bytes: &[u8]) -> Result<StateRef, LeaseError> {
        let tag = tag.to_string();
        locked(&self.states)?.insert((key.to_string(), tag.clone()), bytes.to_vec());
        Ok(StateRef::Chunked { layout, tag, chunks: 1, len: bytes.len() as u64, sha256: sha256_hex(bytes) })
    }

    async fn lease_duration(&self, proposed: std::time::Duration) -> Result<std::time::Duration, LeaseError> {
        Ok(*locked(&self.lease_duration)?.get_or_insert(proposed))
    }

    async fn get_state(&self, key: &str, state: &StateRef) -> Result<Vec<u8>, LeaseError> {
        match state {
            StateRef::Inline { bytes, .. } => Ok(bytes.clone()),
            StateRef::Chunked { tag, .. } => locked(&self.states)?
                .get(&(key.to_string(), tag.clone()))
                .cloned()
                .ok_or_else(|| LeaseError::Denied(anyhow::anyhow!("state {tag} of {key} is missing"))),
        }
    }

    async fn deployment(&self) -> Result<Option<Deployment>, LeaseError> {
        Ok(locked(&self.deployment)?.clone())
    }

    async fn deploy(&self, next: &Deployment) -> Result<(), LeaseError> {
        let mut stored = locked(&self.deployment)?;
        if stored.as_ref().map_or(0, |d| d.number) + 1 != next.number {
            return Err(Conflict { key: super::logic::LOGIC_KEY.into(), expected: next.number - 1 }.into());
        }
        *stored = Some(next.clone());
        Ok(())
    }

    async fn drop_states(&self, key: &str, keep: &str) -> Result<(), LeaseError> {
        locked(&self.states)?.retain(|(k, tag), _| k != key || !superseded(tag, keep));
        Ok(())
    }
}
