//! The leak-safe order of a plan's writes (see the engine's
//! documentation): claims complete before any handle counts an address in
//! the new block, handles before blocks when assigning, blocks before
//! handles when releasing, and undoing what an interrupted plan would
//! otherwise leave dangling.

use std::collections::{BTreeMap, HashMap};

use ipam_core::{AffinityKey, AffinityState, Block, BlockCidr, Handle, Plan, Write};

use super::retrying::Attempt;
use super::{Ipam, IpamError};
use crate::cache::Cache;
use crate::datastore::Datastore;
use crate::error::StoreError;
use crate::model::{Key, Revision, Value};

// The writes of one plan with what they were planned against: the
// revision each update or delete must find, and how each block write
// changes each handle's count. Captured under the same lock as the
// planning, so that no write carries a newer revision than the content it
// was computed from (which would let it overwrite a change it never saw).
pub(super) struct Prepared {
    pub(super) steps: Vec<Step>,
    pub(super) expected: HashMap<Key, Revision>,
}

pub(super) struct Step {
    pub(super) write: Write,
    pub(super) handle_deltas: BTreeMap<String, i64>,
}

// Handle writes are left out: the engine derives them from the block
// writes' deltas, so that a plan interrupted half way can be finished or
// undone exactly. Their revisions are kept, for the handle's deletion.
pub(super) fn prepare(cache: &Cache, plan: Plan) -> Prepared {
    let mut expected = HashMap::new();
    let mut steps = Vec::with_capacity(plan.writes.len());
    for write in plan.writes {
        let key = write_key(&write);
        if let Some(revision) = cache.revision(&key) {
            expected.entry(key).or_insert_with(|| revision.clone());
        }
        if is_handle_write(&write) {
            continue;
        }
        let handle_deltas = match &write {
            Write::CreateBlock(b) | Write::UpdateBlock(b) => {
                handle_deltas(cache.snapshot.block(&b.cidr()), Some(b))
            }
            Write::DeleteBlock(cidr) => handle_deltas(cache.snapshot.block(cidr), None),
            _ => BTreeMap::new(),
        };
        steps.push(Step {
            write,
            handle_deltas,
        });
    }
    Prepared { steps, expected }
}

// An assignment plan stopped part way: the blocks already written hold
// their addresses; everything after was undone.
pub(super) struct Interrupted {
    pub(super) written_blocks: Vec<BlockCidr>,
    pub(super) cause: StoreError,
}

// Claiming stopped: a write failed (the claim that lost its block took its
// pending affinity back), or the store failed past retrying.
pub(super) enum ClaimFailure {
    Store(StoreError),
    Fatal(IpamError),
}

pub(super) enum AssignFailure {
    Interrupted(Interrupted),
    // The handle already holds addresses: a repeated request.
    HandleHeld,
    Fatal(IpamError),
}

impl AssignFailure {
    pub(super) fn describe(&self) -> String {
        match self {
            AssignFailure::Interrupted(i) => i.cause.to_string(),
            AssignFailure::HandleHeld => "the handle already holds addresses".to_string(),
            AssignFailure::Fatal(e) => e.to_string(),
        }
    }
}

impl From<IpamError> for AssignFailure {
    fn from(e: IpamError) -> Self {
        AssignFailure::Fatal(e)
    }
}

pub(super) fn write_key(write: &Write) -> Key {
    match write {
        Write::CreateAffinity(a) | Write::UpdateAffinity(a) => Key::Affinity(a.key()),
        Write::DeleteAffinity(key) => Key::Affinity(key.clone()),
        Write::CreateBlock(b) | Write::UpdateBlock(b) => Key::Block(b.cidr()),
        Write::DeleteBlock(cidr) => Key::Block(*cidr),
        Write::CreateHandle(h) | Write::UpdateHandle(h) => Key::Handle(h.id().to_string()),
        Write::DeleteHandle(id) => Key::Handle(id.clone()),
    }
}

pub(super) fn is_handle_write(write: &Write) -> bool {
    matches!(
        write,
        Write::CreateHandle(_) | Write::UpdateHandle(_) | Write::DeleteHandle(_)
    )
}

pub(super) fn block_of_write(write: &Write) -> Option<BlockCidr> {
    match write {
        Write::CreateBlock(b) | Write::UpdateBlock(b) => Some(b.cidr()),
        Write::DeleteBlock(cidr) => Some(*cidr),
        _ => None,
    }
}

// How many ordinals each handle holds in a block.
pub(super) fn handle_counts(block: Option<&Block>) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for (_, attribute) in block.into_iter().flat_map(Block::allocations) {
        if let Some(handle) = attribute.handle() {
            *counts.entry(handle.to_string()).or_insert(0) += 1;
        }
    }
    counts
}

// Per handle, how its count in a block changes from `before` to `after`.
pub(super) fn handle_deltas(
    before: Option<&Block>,
    after: Option<&Block>,
) -> BTreeMap<String, i64> {
    let mut deltas = handle_counts(after);
    for (handle, count) in handle_counts(before) {
        *deltas.entry(handle).or_insert(0) -= count;
    }
    deltas.retain(|_, d| *d != 0);
    deltas
}

impl<S: Datastore + ?Sized> Ipam<S> {
    /// Performs one write, expecting the revision recorded in `expected`
    /// (captured when the write was planned), and records the result there
    /// and in the cache.
    pub(super) async fn apply(
        &self,
        write: Write,
        expected: &mut HashMap<Key, Revision>,
    ) -> Result<(), StoreError> {
        let key = write_key(&write);
        let creating = matches!(
            write,
            Write::CreateAffinity(_) | Write::CreateBlock(_) | Write::CreateHandle(_)
        );
        // Never read, so never checked: treat as changed.
        let revision = || {
            expected
                .get(&key)
                .cloned()
                .ok_or_else(|| StoreError::Conflict { key: key.clone() })
        };
        let value = match write {
            Write::CreateAffinity(a) | Write::UpdateAffinity(a) => Value::Affinity(a),
            Write::CreateBlock(b) | Write::UpdateBlock(b) => Value::Block(b),
            Write::CreateHandle(h) | Write::UpdateHandle(h) => Value::Handle(h),
            Write::DeleteAffinity(_) | Write::DeleteBlock(_) | Write::DeleteHandle(_) => {
                self.store.delete(&key, &revision()?).await?;
                expected.remove(&key);
                self.cache().remove(&key);
                return Ok(());
            }
        };
        let new_revision = if creating {
            self.store.create(&value).await?
        } else {
            self.store.update(&value, &revision()?).await?
        };
        expected.insert(key, new_revision.clone());
        self.cache().put(value, new_revision);
        Ok(())
    }

    /// Changes a handle's per-block counts, creating it when it gains its
    /// first addresses and deleting it when it holds none, retrying on
    /// conflicts with a fresh read. With `fresh`, a handle created meanwhile
    /// by someone else and holding addresses is reported, not added to:
    /// that is a repeated request.
    pub(super) async fn adjust_handle(
        &self,
        id: &str,
        changes: &[(BlockCidr, i64)],
        fresh: bool,
    ) -> Result<(), AssignFailure> {
        let handle_key = Key::Handle(id.to_string());
        let losing = changes.iter().any(|&(_, delta)| delta < 0);
        if losing && self.cache().handle(id).is_none() {
            // Someone else created it: read it, or its count would stay.
            self.reload(&handle_key)
                .await
                .map_err(|e| AssignFailure::Fatal(e.into()))?;
        }
        let handle_key = &handle_key;
        // The state: whether the last attempt lost the creation of the
        // handle.
        let (_, result) = self
            .retrying_with("update handle", false, move |_, lost_create| async move {
                if lost_create && fresh && self.cache().handle(id).is_some_and(|h| !h.is_empty()) {
                    return (lost_create, Err(AssignFailure::HandleHeld));
                }
                let (current, mut expected) =
                    self.cached_with_revision(handle_key.clone(), |c| c.handle(id).cloned());
                let existed = current.is_some();
                let mut handle = current.unwrap_or_else(|| Handle::new(id));
                for &(cidr, delta) in changes {
                    if delta > 0 {
                        handle.increment(cidr, delta as u32);
                    } else {
                        // Never below zero: the blocks, not the handle, are the
                        // truth, and a handle that over-counts is what a crash
                        // between the two writes leaves behind.
                        let take = (delta.unsigned_abs() as u32).min(handle.count_in(&cidr));
                        if let Err(e) = handle.decrement(cidr, take) {
                            return (lost_create, Err(AssignFailure::Fatal(e.into())));
                        }
                    }
                }
                let write = match (existed, handle.is_empty()) {
                    (true, true) => Write::DeleteHandle(id.to_string()),
                    (true, false) => Write::UpdateHandle(handle),
                    (false, false) => Write::CreateHandle(handle),
                    (false, true) => return (lost_create, Ok(Attempt::Done(()))),
                };
                let outcome = match self.apply(write, &mut expected).await {
                    Ok(()) => Attempt::Done(()),
                    Err(e) => Attempt::Failed(e),
                };
                (!existed, Ok(outcome))
            })
            .await;
        result
    }

    /// Writes an assignment plan for one or more handles: the claims of new
    /// blocks first (see [`Ipam::write_claims`]), then the handles (all at
    /// once, so that a store that groups commits makes them one), then the
    /// blocks. Stops at the first failed write and undoes what would
    /// otherwise be left dangling.
    pub(super) async fn run_assignment(
        &self,
        handles: &[&str],
        prepared: Prepared,
        fresh_handles: bool,
    ) -> Result<(), AssignFailure> {
        let Prepared {
            steps,
            mut expected,
        } = prepared;
        // Everything before the first write that gives a handle addresses
        // is claiming: reclaims of other nodes' empty blocks, and each new
        // block's pending affinity, empty block and confirmation.
        let split = steps
            .iter()
            .position(|step| !step.handle_deltas.is_empty())
            .unwrap_or(steps.len());
        let mut blocks = steps;
        let claims: Vec<Write> = blocks.drain(..split).map(|step| step.write).collect();
        // Per block written, how many addresses each handle gains in it.
        let gains: Vec<(BlockCidr, BTreeMap<String, i64>)> = blocks
            .iter()
            .map(|step| {
                let cidr = block_of_write(&step.write).expect("a block write");
                (cidr, step.handle_deltas.clone())
            })
            .collect();
        let gains_of = |handle: &str, range: &[(BlockCidr, BTreeMap<String, i64>)], sign: i64| {
            range
                .iter()
                .filter_map(|(cidr, deltas)| {
                    deltas
                        .get(handle)
                        .filter(|d| **d != 0)
                        .map(|d| (*cidr, sign * d))
                })
                .collect::<Vec<(BlockCidr, i64)>>()
        };

        match self.write_claims(claims, &mut expected).await {
            Ok(()) => {}
            Err(ClaimFailure::Store(cause)) => {
                return Err(AssignFailure::Interrupted(Interrupted {
                    written_blocks: Vec::new(),
                    cause,
                }))
            }
            Err(ClaimFailure::Fatal(e)) => return Err(AssignFailure::Fatal(e)),
        }

        // The handles, before any block names them. Claimed blocks stay
        // claimed whatever happens from here, as in Calico.
        let results = futures_util::future::join_all(handles.iter().map(|handle| {
            let changes = gains_of(handle, &gains, 1);
            async move { self.adjust_handle(handle, &changes, fresh_handles).await }
        }))
        .await;
        if let Some(failed) = results.iter().position(Result::is_err) {
            for (handle, result) in handles.iter().zip(&results) {
                if result.is_ok() {
                    let undo = gains_of(handle, &gains, -1);
                    if let Err(e) = self.adjust_handle(handle, &undo, false).await {
                        tracing::warn!(handle, error = ?e.describe(), "a handle keeps a count it does not hold");
                    }
                }
            }
            return Err(results
                .into_iter()
                .nth(failed)
                .and_then(Result::err)
                .expect("a failed result"));
        }

        for (index, step) in blocks.into_iter().enumerate() {
            if let Err(cause) = self.apply(step.write, &mut expected).await {
                let unwritten = &gains[index..];
                let mut undone = Ok(());
                for handle in handles {
                    let undo = gains_of(handle, unwritten, -1);
                    let result = self.adjust_handle(handle, &undo, false).await;
                    undone = undone.and(result);
                }
                undone?;
                return Err(AssignFailure::Interrupted(Interrupted {
                    written_blocks: gains[..index].iter().map(|(c, _)| *c).collect(),
                    cause,
                }));
            }
        }
        Ok(())
    }

    /// Writes the claiming part of a plan in order: reclaims of other
    /// nodes' blocks, then per new block its pending affinity, the block
    /// created empty and the affinity confirmed (Calico's getPendingAffinity
    /// then claimAffineBlock, ipam_block_reader_writer.go). Writes that
    /// claim nothing (releasing an affinity) pass through unchanged.
    ///
    /// Once a block is created the claim stands: a failed confirmation is
    /// retried on its own. A claim that loses its block (the create fails)
    /// takes its pending affinity back, as claimAffineBlock does when
    /// another host beat it to the block, so that no lost claim leaves an
    /// affinity pending for good.
    pub(super) async fn write_claims(
        &self,
        writes: Vec<Write>,
        expected: &mut HashMap<Key, Revision>,
    ) -> Result<(), ClaimFailure> {
        // Our pending affinity whose block is not created yet.
        let mut awaiting: Option<AffinityKey> = None;
        for write in writes {
            let (pending, confirming) = match &write {
                Write::CreateAffinity(a) | Write::UpdateAffinity(a) => (
                    (a.state == AffinityState::Pending).then(|| a.key()),
                    (a.state == AffinityState::Confirmed).then(|| a.key()),
                ),
                _ => (None, None),
            };
            let creates_block = matches!(write, Write::CreateBlock(_));
            match self.apply(write, expected).await {
                Ok(()) => {
                    if pending.is_some() {
                        awaiting = pending;
                    } else if creates_block {
                        awaiting = None;
                    }
                }
                Err(cause) => match confirming {
                    Some(key) => {
                        self.recover(&cause).await.map_err(ClaimFailure::Fatal)?;
                        self.confirm_affinity(key)
                            .await
                            .map_err(ClaimFailure::Fatal)?;
                    }
                    None => {
                        if let Some(key) = awaiting {
                            self.abandon_claim(key, expected).await;
                        }
                        return Err(ClaimFailure::Store(cause));
                    }
                },
            }
        }
        Ok(())
    }

    /// Moves a node's affinity to confirmed, re-reading on conflicts.
    pub(super) async fn confirm_affinity(&self, key: AffinityKey) -> Result<(), IpamError> {
        let key = &key;
        self.retrying("confirm affinity", move |_| async move {
            let (affinity, mut expected) = self
                .cached_with_revision(Key::Affinity(key.clone()), |c| {
                    c.snapshot.affinity(key).cloned()
                });
            let Some(mut affinity) = affinity else {
                // Deleted under us (the node is being removed): nothing to
                // confirm, and the block keeps its addresses.
                return Ok(Attempt::Done(()));
            };
            if affinity.state == AffinityState::Confirmed {
                return Ok(Attempt::Done(()));
            }
            affinity.state = AffinityState::Confirmed;
            Ok::<_, IpamError>(
                match self
                    .apply(Write::UpdateAffinity(affinity), &mut expected)
                    .await
                {
                    Ok(()) => Attempt::Done(()),
                    Err(e) => Attempt::Failed(e),
                },
            )
        })
        .await
    }

    /// Takes back the pending affinity of a claim whose block could not be
    /// created. The block is read first: when another process of the same
    /// node created it, the claim is that process's and the affinity is
    /// confirmed instead, as claimAffineBlock does for "another process on
    /// this host". Best effort: an affinity left pending counts as absent,
    /// the node's next claim of the block reuses it, and `check` reports it
    /// once it is older than a claim can take.
    pub(super) async fn abandon_claim(&self, key: AffinityKey, expected: &HashMap<Key, Revision>) {
        let ours = match self.reload(&Key::Block(key.cidr)).await {
            Ok(()) => self
                .cache()
                .snapshot
                .block(&key.cidr)
                .and_then(Block::owner)
                .is_some_and(|owner| owner.is_host(&key.node)),
            Err(e) => {
                tracing::warn!(block = %key.cidr, error = %e, "left a pending affinity behind");
                return;
            }
        };
        if ours {
            if let Err(e) = self.confirm_affinity(key.clone()).await {
                tracing::warn!(node = key.node, block = %key.cidr, error = %e, "left a pending affinity behind");
            }
            return;
        }
        let key = Key::Affinity(key);
        if let Some(revision) = expected.get(&key) {
            match self.store.delete(&key, revision).await {
                Ok(()) | Err(StoreError::NotFound { .. }) => self.cache().remove(&key),
                // Rewritten since (another claim of the node reuses it):
                // no longer ours to take back.
                Err(e) => tracing::warn!(%key, error = %e, "left a pending affinity behind"),
            }
        }
    }

    /// Writes the block part of a release plan, block by block, and says how
    /// each handle's counts changed in the blocks written. Stops at the
    /// first failure.
    pub(super) async fn write_release_blocks(
        &self,
        prepared: Prepared,
    ) -> (
        BTreeMap<String, Vec<(BlockCidr, i64)>>,
        Vec<BlockCidr>,
        Option<StoreError>,
    ) {
        let Prepared {
            steps,
            mut expected,
        } = prepared;
        let mut deltas: BTreeMap<String, Vec<(BlockCidr, i64)>> = BTreeMap::new();
        let mut written = Vec::new();
        for step in steps {
            let cidr = block_of_write(&step.write);
            if let Err(cause) = self.apply(step.write, &mut expected).await {
                return (deltas, written, Some(cause));
            }
            written.extend(cidr);
            for (handle, delta) in step.handle_deltas {
                deltas
                    .entry(handle)
                    .or_default()
                    .push((cidr.expect("only block writes change handles"), delta));
            }
        }
        (deltas, written, None)
    }

    pub(super) async fn apply_handle_deltas(
        &self,
        deltas: BTreeMap<String, Vec<(BlockCidr, i64)>>,
    ) -> Result<(), IpamError> {
        for (handle, changes) in deltas {
            match self.adjust_handle(&handle, &changes, false).await {
                Ok(()) | Err(AssignFailure::HandleHeld) | Err(AssignFailure::Interrupted(_)) => {}
                Err(AssignFailure::Fatal(e)) => return Err(e),
            }
        }
        Ok(())
    }
}
