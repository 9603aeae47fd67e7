//! The leak-safe order of a plan's writes (see the engine's
//! documentation): claims complete before any handle counts an address in
//! the new block, then handles and blocks in one batch where the store has
//! batches (`batch`), else handles before blocks when assigning and blocks
//! before handles when releasing, and undoing what an interrupted plan
//! would otherwise leave dangling.

use std::collections::HashMap;

use ipam_core::plan::{AffinityRelease, BlockWrite, Claim, HandleChange, Order};
use ipam_core::{AffinityKey, AffinityState, Block, BlockCidr, HandleName, Plan, Write};

use super::batch::Batched;
use super::retrying::Attempt;
use super::{Ipam, IpamError};
use crate::cache::Cache;
use crate::datastore::Datastore;
use crate::error::StoreError;
use crate::model::{Key, Revision, Value};

// A plan with what it was planned against: the revision each update or
// delete must find. Captured under the same lock as the planning, so that
// no write carries a newer revision than the content it was computed from
// (which would let it overwrite a change it never saw).
pub(super) struct Prepared {
    pub(super) plan: Plan,
    pub(super) expected: HashMap<Key, Revision>,
}

pub(super) fn prepare(cache: &Cache, plan: Plan) -> Prepared {
    let mut expected = HashMap::new();
    for key in keys_of(&plan) {
        if let Some(revision) = cache.revision(&key) {
            expected.entry(key).or_insert_with(|| revision.clone());
        }
    }
    Prepared { plan, expected }
}

// Every object a plan writes.
fn keys_of(plan: &Plan) -> Vec<Key> {
    let mut keys = Vec::new();
    for release in &plan.releases {
        keys.extend(
            release
                .pending_deletion
                .iter()
                .map(|a| Key::Affinity(a.key())),
        );
        keys.extend(release.block.iter().map(|b| Key::Block(b.cidr())));
        keys.extend(release.delete.iter().cloned().map(Key::Affinity));
    }
    for claim in &plan.claims {
        keys.push(Key::Affinity(claim.key()));
        keys.push(Key::Block(claim.block.cidr()));
    }
    keys.extend(plan.handles.iter().map(|h| Key::Handle(h.id().to_string())));
    keys.extend(plan.blocks.iter().map(|b| Key::Block(b.cidr())));
    keys
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
    // The handle already holds addresses: a repeated request. The cause
    // is the creation of the handle that was lost.
    HandleHeld(StoreError),
    Fatal(IpamError),
}

impl AssignFailure {
    pub(super) fn describe(&self) -> String {
        match self {
            AssignFailure::Interrupted(i) => i.cause.to_string(),
            AssignFailure::HandleHeld(_) => "the handle already holds addresses".to_string(),
            AssignFailure::Fatal(e) => e.to_string(),
        }
    }
}

impl From<IpamError> for AssignFailure {
    fn from(e: IpamError) -> Self {
        AssignFailure::Fatal(e)
    }
}

// Per handle of a plan, its count's change in the blocks `within`, times
// `sign`: what writing those blocks gives it (1) or takes back (-1).
fn deltas_within(
    changes: &[HandleChange],
    within: &[BlockCidr],
    sign: i64,
) -> Vec<(HandleName, Vec<(BlockCidr, i64)>)> {
    changes
        .iter()
        .filter_map(|change| match change {
            HandleChange::Adjust { id, deltas } => {
                let deltas: Vec<(BlockCidr, i64)> = deltas
                    .iter()
                    .filter(|(cidr, _)| within.contains(cidr))
                    .map(|&(cidr, delta)| (cidr, sign * delta))
                    .collect();
                (!deltas.is_empty()).then(|| (id.clone(), deltas))
            }
            HandleChange::Delete(_) => None,
        })
        .collect()
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

/// What a plan written blocks first did.
pub(super) struct BlocksFirst {
    /// The blocks written, in order.
    pub(super) written: Vec<BlockCidr>,
    /// The first write that failed, a block's or then a handle's (a lost
    /// compare-and-swap on a handle deleted as a whole); the operation
    /// starts again from it.
    pub(super) failure: Option<StoreError>,
}

/// What writing a release's blocks did, and the handle writes that follow.
pub(super) struct BlocksWritten {
    /// The blocks written, in order.
    pub(super) written: Vec<BlockCidr>,
    /// The write that failed, when one did; nothing after it was written.
    pub(super) failure: Option<StoreError>,
    /// The handle changes that follow: counts in the blocks written, and a
    /// whole handle's deletion only when every block was written; none of
    /// those a batch wrote with its blocks.
    pub(super) handles: Vec<HandleChange>,
    /// Revisions, for the handles' writes.
    pub(super) expected: HashMap<Key, Revision>,
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
        id: &HandleName,
        changes: &[(BlockCidr, i64)],
        fresh: bool,
    ) -> Result<(), AssignFailure> {
        let handle_key = Key::Handle(id.to_string());
        let change = HandleChange::Adjust {
            // The plan's name: a new handle shares its text with the
            // block's entry in the cache.
            id: id.clone(),
            deltas: changes.to_vec(),
        };
        let change = &change;
        let losing = changes.iter().any(|&(_, delta)| delta < 0);
        let handle_key = &handle_key;
        // The state: whether the last attempt lost the creation of the
        // handle.
        let (_, result) = self
            .retrying_with("update handle", false, move |_, lost_create| async move {
                if lost_create && fresh && self.cache().handle(id).is_some_and(|h| !h.is_empty()) {
                    let cause = StoreError::AlreadyExists {
                        key: handle_key.clone(),
                    };
                    return (lost_create, Err(AssignFailure::HandleHeld(cause)));
                }
                let (current, revision) = match self.handle_to_change(id, losing).await {
                    Ok(found) => found.unzip(),
                    Err(e) => return (lost_create, Err(AssignFailure::Fatal(e.into()))),
                };
                let mut expected: HashMap<Key, Revision> = revision
                    .map(|r| (handle_key.clone(), r))
                    .into_iter()
                    .collect();
                let existed = current.is_some();
                let Some(write) = change.write_over(current.as_ref()) else {
                    return (lost_create, Ok(Attempt::Done(())));
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

    /// Writes a plan in its order: see [`Ipam::write_handles_first`] and
    /// [`Ipam::write_release_blocks`]. A plan that releases and stops part
    /// way is reported as interrupted after the blocks it wrote.
    pub(super) async fn write_plan(
        &self,
        prepared: Prepared,
        fresh_handles: bool,
    ) -> Result<(), AssignFailure> {
        match prepared.plan.order {
            Order::HandlesFirst => self.write_handles_first(prepared, fresh_handles).await,
            Order::BlocksFirst => {
                let BlocksFirst { written, failure } = self.write_blocks_first(prepared).await?;
                match failure {
                    None => Ok(()),
                    Some(cause) => Err(AssignFailure::Interrupted(Interrupted {
                        written_blocks: written,
                        cause,
                    })),
                }
            }
        }
    }

    /// Writes a plan that assigns (its handles first): the claims of new
    /// blocks first (see [`Ipam::write_claims`]), then the handles and the
    /// blocks as one batch on a store that has them, else the handles (all
    /// at once, so that a store that groups commits makes them one), then
    /// the blocks. Stops at the first failed write and undoes what would
    /// otherwise be left dangling.
    async fn write_handles_first(
        &self,
        prepared: Prepared,
        fresh_handles: bool,
    ) -> Result<(), AssignFailure> {
        let Prepared {
            plan:
                Plan {
                    releases,
                    claims,
                    handles,
                    blocks,
                    order: _,
                },
            mut expected,
        } = prepared;
        // An assignment's releases delete empty blocks only: no handle
        // counts an address in them.
        let mut released_blocks = Vec::new();
        match self
            .write_claims(releases, claims, &mut expected, &mut released_blocks)
            .await
        {
            Ok(()) => {}
            Err(ClaimFailure::Store(cause)) => {
                return Err(AssignFailure::Interrupted(Interrupted {
                    written_blocks: Vec::new(),
                    cause,
                }))
            }
            Err(ClaimFailure::Fatal(e)) => return Err(AssignFailure::Fatal(e)),
        }

        // The handles, before any block names them (or with them). Claimed
        // blocks stay claimed whatever happens from here, as in Calico.
        let cidrs: Vec<BlockCidr> = blocks.iter().map(BlockWrite::cidr).collect();
        let gains = deltas_within(&handles, &cidrs, 1);
        if let Some(atomic) = self.batches() {
            match self
                .write_assigned_together(atomic, &gains, &blocks, &mut expected)
                .await
            {
                Batched::Written => return Ok(()),
                // Nothing written (or, unavailable, perhaps all of it): as a
                // first block write that failed, with nothing to undo.
                Batched::BlockRefused(cause) | Batched::Failed(cause) => {
                    return Err(AssignFailure::Interrupted(Interrupted {
                        written_blocks: Vec::new(),
                        cause,
                    }))
                }
                // The ordered path's rule for a handle created meanwhile:
                // holding addresses, it is a repeated request.
                Batched::HandleRefused { cause, created } => {
                    let held = matches!(cause.key(), Some(Key::Handle(id))
                        if self.cache().handle(id).is_some_and(|h| !h.is_empty()));
                    if created && fresh_handles && held {
                        return Err(AssignFailure::HandleHeld(cause));
                    }
                }
                Batched::Unbatched => {}
            }
        }
        let results = futures_util::future::join_all(
            gains
                .iter()
                .map(|(id, changes)| self.adjust_handle(id, changes, fresh_handles)),
        )
        .await;
        if results.iter().any(Result::is_err) {
            let mut failure = None;
            for ((id, changes), result) in gains.iter().zip(results) {
                match result {
                    Ok(()) => {
                        let undo: Vec<(BlockCidr, i64)> =
                            changes.iter().map(|&(cidr, d)| (cidr, -d)).collect();
                        if let Err(e) = self.adjust_handle(id, &undo, false).await {
                            tracing::warn!(handle = id.as_str(), error = ?e.describe(), "a handle keeps a count it does not hold");
                        }
                    }
                    Err(e) => {
                        failure.get_or_insert(e);
                    }
                }
            }
            if let Some(failure) = failure {
                return Err(failure);
            }
        }

        for (index, block) in blocks.into_iter().enumerate() {
            if let Err(cause) = self.apply(block.into_write(), &mut expected).await {
                let mut undone = Ok(());
                for (id, undo) in deltas_within(&handles, &cidrs[index..], -1) {
                    let result = self.adjust_handle(&id, &undo, false).await;
                    undone = undone.and(result);
                }
                undone?;
                return Err(AssignFailure::Interrupted(Interrupted {
                    written_blocks: cidrs[..index].to_vec(),
                    cause,
                }));
            }
        }
        Ok(())
    }

    /// Writes the claiming phases of a plan in order: the affinities given
    /// up (other nodes' blocks reclaimed, a node's affinities released),
    /// then per new block its pending affinity, the block created empty and
    /// the affinity confirmed (Calico's getPendingAffinity then
    /// claimAffineBlock, ipam_block_reader_writer.go).
    ///
    /// Once a block is created the claim stands: a failed confirmation is
    /// retried on its own. A claim that loses its block (the create fails)
    /// takes its pending affinity back, as claimAffineBlock does when
    /// another host beat it to the block, so that no lost claim leaves an
    /// affinity pending for good.
    ///
    /// The blocks the releases write are added to `released_blocks` as
    /// each is written: a release may delete a block it also released
    /// addresses from (affinity consistency, ipam-core's `consistency`),
    /// and the handles must then follow that block like any other.
    pub(super) async fn write_claims(
        &self,
        releases: Vec<AffinityRelease>,
        claims: Vec<Claim>,
        expected: &mut HashMap<Key, Revision>,
        released_blocks: &mut Vec<BlockCidr>,
    ) -> Result<(), ClaimFailure> {
        for release in releases {
            if let Some(pending) = release.pending_deletion {
                self.apply(Write::UpdateAffinity(pending), expected)
                    .await
                    .map_err(ClaimFailure::Store)?;
            }
            if let Some(block) = release.block {
                let cidr = block.cidr();
                self.apply(block.into_write(), expected)
                    .await
                    .map_err(ClaimFailure::Store)?;
                released_blocks.push(cidr);
            }
            if let Some(key) = release.delete {
                self.apply(Write::DeleteAffinity(key), expected)
                    .await
                    .map_err(ClaimFailure::Store)?;
            }
        }
        for claim in claims {
            let key = claim.key();
            let pending = if claim.reused {
                Write::UpdateAffinity(claim.pending)
            } else {
                Write::CreateAffinity(claim.pending)
            };
            self.apply(pending, expected)
                .await
                .map_err(ClaimFailure::Store)?;
            if let Err(cause) = self.apply(Write::CreateBlock(claim.block), expected).await {
                self.abandon_claim(key, expected).await;
                return Err(ClaimFailure::Store(cause));
            }
            let confirmed = Write::UpdateAffinity(claim.confirmed);
            if let Err(cause) = self.apply(confirmed, expected).await {
                self.recover(&cause).await.map_err(ClaimFailure::Fatal)?;
                self.confirm_affinity(key)
                    .await
                    .map_err(ClaimFailure::Fatal)?;
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

    /// Writes a plan's phases up to its handles, blocks first whatever its
    /// order (a release's): the claiming phases, then the blocks with the
    /// handle changes that follow them as one batch where the store has
    /// batches, else the blocks one by one, stopping at the first failure,
    /// and says which handle changes must still follow.
    pub(super) async fn write_release_blocks(
        &self,
        prepared: Prepared,
    ) -> Result<BlocksWritten, IpamError> {
        let Prepared {
            plan:
                Plan {
                    releases,
                    claims,
                    handles,
                    blocks,
                    order: _,
                },
            mut expected,
        } = prepared;
        let mut written = Vec::new();
        let mut failure = match self
            .write_claims(releases, claims, &mut expected, &mut written)
            .await
        {
            Ok(()) => None,
            Err(ClaimFailure::Store(cause)) => Some(cause),
            Err(ClaimFailure::Fatal(e)) => return Err(e),
        };
        if failure.is_none() {
            if let Some(atomic) = self.batches() {
                let cidrs: Vec<BlockCidr> = blocks.iter().map(BlockWrite::cidr).collect();
                let together: Vec<HandleChange> = deltas_within(&handles, &cidrs, 1)
                    .into_iter()
                    .map(|(id, deltas)| HandleChange::Adjust { id, deltas })
                    .chain(
                        handles
                            .iter()
                            .filter(|change| matches!(change, HandleChange::Delete(_)))
                            .cloned(),
                    )
                    .collect();
                let batched = self
                    .write_released_together(atomic, &blocks, &together, &mut expected)
                    .await;
                // What follows either way: the handles' counts in the blocks
                // the claims released, written before the batch.
                let follow = |written: &[BlockCidr]| {
                    deltas_within(&handles, written, 1)
                        .into_iter()
                        .map(|(id, deltas)| HandleChange::Adjust { id, deltas })
                        .collect()
                };
                match batched {
                    Batched::Written => {
                        // Counts in a block both released and written are
                        // the batch's already.
                        let before: Vec<BlockCidr> = written
                            .iter()
                            .filter(|cidr| !cidrs.contains(cidr))
                            .copied()
                            .collect();
                        let handles = follow(&before);
                        written.extend(cidrs);
                        return Ok(BlocksWritten {
                            written,
                            failure: None,
                            handles,
                            expected,
                        });
                    }
                    // Nothing of the batch written, or (unavailable) perhaps
                    // all of it: none of its handle changes may follow.
                    Batched::BlockRefused(cause) | Batched::Failed(cause) => {
                        return Ok(BlocksWritten {
                            handles: follow(&written),
                            written,
                            failure: Some(cause),
                            expected,
                        });
                    }
                    // Written in order instead, on the handle read again.
                    Batched::HandleRefused { .. } | Batched::Unbatched => {}
                }
            }
            for block in blocks {
                let cidr = block.cidr();
                if let Err(cause) = self.apply(block.into_write(), &mut expected).await {
                    failure = Some(cause);
                    break;
                }
                written.push(cidr);
            }
        }
        let complete = failure.is_none();
        let mut changes: Vec<HandleChange> = deltas_within(&handles, &written, 1)
            .into_iter()
            .map(|(id, deltas)| HandleChange::Adjust { id, deltas })
            .collect();
        changes.extend(
            handles
                .into_iter()
                .filter(|change| complete && matches!(change, HandleChange::Delete(_))),
        );
        Ok(BlocksWritten {
            written,
            failure,
            handles: changes,
            expected,
        })
    }

    /// Writes a plan blocks first (a release's order): its blocks (see
    /// [`Ipam::write_release_blocks`]), then the handle changes that follow
    /// the blocks written.
    pub(super) async fn write_blocks_first(
        &self,
        prepared: Prepared,
    ) -> Result<BlocksFirst, IpamError> {
        let BlocksWritten {
            written,
            failure,
            handles,
            mut expected,
        } = self.write_release_blocks(prepared).await?;
        let lost = self.write_handle_changes(handles, &mut expected).await?;
        Ok(BlocksFirst {
            written,
            failure: failure.or(lost),
        })
    }

    /// Writes the handle changes that follow a release's blocks. A handle
    /// deleted as a whole that changed since it was read (a concurrent
    /// assignment to it) is not deleted: that lost compare-and-swap is
    /// returned, for the release to start again.
    pub(super) async fn write_handle_changes(
        &self,
        changes: Vec<HandleChange>,
        expected: &mut HashMap<Key, Revision>,
    ) -> Result<Option<StoreError>, IpamError> {
        for change in changes {
            match change {
                HandleChange::Adjust { id, deltas } => {
                    match self.adjust_handle(&id, &deltas, false).await {
                        Ok(())
                        | Err(AssignFailure::HandleHeld(_))
                        | Err(AssignFailure::Interrupted(_)) => {}
                        Err(AssignFailure::Fatal(e)) => return Err(e),
                    }
                }
                HandleChange::Delete(id) => {
                    let key = Key::Handle(id.to_string());
                    match self
                        .apply(Write::DeleteHandle(id.to_string()), expected)
                        .await
                    {
                        Ok(()) | Err(StoreError::NotFound { .. }) => self.cache().remove(&key),
                        Err(cause) => return Ok(Some(cause)),
                    }
                }
            }
        }
        Ok(None)
    }
}
