//! Where one take writes its states in the state table: two slots in turn
//! for its commits, and two in turn for pre-swap points, all under the
//! take's own prefix. A write never touches the chunks its lease points to,
//! and the take's first commit that replaced the state lets earlier takes'
//! chunks go.

use super::LeaseStore;
use crate::checkpoint::{CommitError, PreSwapPoint, Tenure};
use crate::lease::{take_prefix, PreSwapRef, PreSwapWrite};
use std::sync::Arc;

/// One take's slots.
#[derive(Debug)]
pub(super) struct Slots {
    /// The take they belong to.
    tenure: Tenure,
    /// `<first commit's version>.<random>`: see [`take_prefix`].
    prefix: String,
    /// The slot the next commit writes (`<prefix>.0` or `.1`).
    next: u8,
    /// The slot the next pre-swap point writes (`<prefix>.p0` or `.p1`).
    next_pre: u8,
    /// The pre-swap point this take wrote and its lease holds: later
    /// commits keep it without writing it again.
    pre: Option<u64>,
    /// Earlier takes' chunks were deleted (once per take, after its first
    /// commit that replaced or cleared the state).
    cleaned: bool,
}

impl Slots {
    fn new(tenure: Tenure, version: u64) -> Self {
        Slots { tenure, prefix: take_prefix(version), next: 0, next_pre: 0, pre: None, cleaned: false }
    }
}

impl LeaseStore {
    /// Runs `f` on the slots of `shard`'s take `tenure` (new ones for a new
    /// take, named after the state version `version` of its first commit).
    fn with_slots<R>(&self, shard: &str, tenure: Tenure, version: u64, f: impl FnOnce(&mut Slots) -> R) -> Option<R> {
        let mut slots = self.slots.lock().ok()?;
        let slots = slots.entry(shard.to_string()).or_insert_with(|| Slots::new(tenure, version));
        if slots.tenure != tenure {
            *slots = Slots::new(tenure, version);
        }
        Some(f(slots))
    }

    /// The tag the next state of `shard` under `tenure` goes to.
    pub(super) fn slot(&self, shard: &str, tenure: Tenure, version: u64) -> String {
        self.with_slots(shard, tenure, version, |s| format!("{}.{}", s.prefix, s.next))
            .unwrap_or_else(|| format!("{}.0", take_prefix(version)))
    }

    /// What a commit does to the lease's pre-swap point: none clears it; a
    /// point this take has not written yet (a new swap, or the first
    /// commit of a take that loaded one) has its state written to a
    /// pre-swap slot first.
    pub(super) async fn pre_swap_write(
        &self,
        shard: &str,
        tenure: Tenure,
        version: u64,
        point: Option<&Arc<PreSwapPoint>>,
    ) -> Result<PreSwapWrite, CommitError> {
        let Some(point) = point else { return Ok(PreSwapWrite::Clear) };
        let slot = self.with_slots(shard, tenure, version, |s| {
            (s.pre != Some(point.id)).then(|| format!("{}.p{}", s.prefix, s.next_pre))
        });
        let Some(Some(tag)) = slot else { return Ok(PreSwapWrite::Keep) };
        let state = match &point.state {
            None => None,
            Some((layout, bytes)) => Some(self.put_state(shard, tenure, (&tag, *layout, bytes)).await?),
        };
        Ok(PreSwapWrite::Set(PreSwapRef {
            logic: point.logic.clone(),
            checkpoint: point.sequence_number.clone(),
            sub_sequence: point.sub_sequence_number,
            state,
        }))
    }

    /// After a commit of take `tenure`: the next commit writes the other
    /// slot, a pre-swap point written is kept, and the take's first commit
    /// that replaced or cleared the state lets earlier takes' chunks go (in
    /// the background; a failure leaves them to the next take).
    pub(super) fn committed(&self, shard: &str, tenure: Tenure, wrote_state: bool, shard_end: bool, pre: Option<u64>) {
        let cleanup = match self.slots.lock() {
            Ok(mut slots) => slots.get_mut(shard).filter(|s| s.tenure == tenure).and_then(|slots| {
                slots.next ^= u8::from(wrote_state);
                if slots.pre != pre {
                    slots.next_pre ^= u8::from(pre.is_some());
                    slots.pre = pre;
                }
                let replaced = wrote_state || !shard_end;
                (replaced && !std::mem::replace(&mut slots.cleaned, true)).then(|| slots.prefix.clone())
            }),
            Err(_) => None,
        };
        if let Some(keep) = cleanup {
            let (table, shard) = (self.table.clone(), shard.to_string());
            tokio::spawn(async move {
                if let Err(e) = table.drop_states(&shard, &keep).await {
                    tracing::debug!(shard, "cleaning up earlier states failed (left to the next take): {e}");
                }
            });
        }
    }
}
