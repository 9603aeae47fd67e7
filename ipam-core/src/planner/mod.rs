//! The planner: turns a request and a [`Snapshot`] into the writes that
//! fulfil it, choosing as Calico's libcalico-go/lib/ipam/ipam.go does:
//!
//! 1. pools: the requested ones (which must exist and be enabled), else every
//!    enabled, automatic pool of the family whose nodeSelector and
//!    namespaceSelector match, restricted to those allowing the intended use;
//! 2. the node's confirmed blocks in those pools, in address order;
//! 3. a new block, claimed for the node, while the node holds fewer than the
//!    block limit (`ErrBlockLimit` otherwise) and autoAllocateBlocks is on;
//!    an unclaimed slot first, else another node's empty block claimed over
//!    a minute ago;
//! 4. with strictAffinity off, free addresses in any other block of the pools.
//!
//! Before step 2, and after a release, the node's empty blocks in pools
//! that no longer select it are given up (`consistency`, Calico's
//! prepareAffinityBlocksForHost and ensureConsistentAffinity).
//!
//! Running short is not an error (Calico returns fewer addresses and a
//! message); refusals are. Planning never mutates the snapshot: it works on
//! copies and returns them as writes.
//!
//! Every block a plan reads is read as Calico's blockFromBackend reads it:
//! released addresses whose cooldown has passed are deallocated first
//! (ipam_block.go, garbageCollect). The deallocation is written only with a
//! write the plan makes to the block anyway, as Calico folds it into the
//! same compare-and-swap; [`Snapshot::plan_deallocate_cooled`] writes the
//! blocks nobody else does (kube-controllers' garbageCollectColdIPs).

use ipnet::IpNet;
use smallvec::SmallVec;
use std::borrow::Cow;

use crate::affinity::{Affinity, AffinityKey, AffinityState};
use crate::block::{sanitize_handle, Block, BlockOwner};
use crate::cidr::BlockCidr;
use crate::cooldown::Cooldown;
use crate::handle::HandleName;
use crate::plan::{AffinityRelease, BlockWrite, Claim, HandleChange, Now, Order, Plan};
use crate::snapshot::Snapshot;
use crate::timestamp::format_rfc3339;

/// Another node's empty block is not reclaimed until it has been claimed
/// this long, so two nodes do not free a block from under each other
/// (ipam_block_reader_writer.go, EmptyBlockMinReclaimAge).
pub const EMPTY_BLOCK_MIN_RECLAIM_AGE_SECONDS: i64 = 60;

mod assign;
mod claim;
mod consistency;
mod release;

pub use consistency::NodeLabels;

/// The block as Calico's blockFromBackend reads it: cooled addresses
/// deallocated (a copy only when there are some).
fn cooled(block: &Block, cutoff: i64) -> Cow<'_, Block> {
    match block.earliest_release() {
        Some(at) if at < cutoff => {
            let mut copy = block.clone();
            copy.deallocate_cooled(cutoff);
            Cow::Owned(copy)
        }
        _ => Cow::Borrowed(block),
    }
}

// Working copies of the objects a plan touches.
#[derive(Clone)]
struct Draft<'s> {
    snapshot: &'s Snapshot,
    now: Now,
    cooldown: Cooldown,
    blocks: Touched<BlockCidr, DraftBlock>,
    // Handle id -> how the plan changes it.
    handles: Touched<HandleName, DraftHandle>,
    // What must come first: freeing other nodes' empty blocks, and the
    // node's own empty blocks its pools no longer select (`consistency`).
    reclaims: Vec<AffinityRelease>,
    // Blocks being claimed for a node, in claim order.
    claims: Vec<AffinityKey>,
}

/// The few objects one plan touches, by key. A plan touches a handful, so a
/// vector searched linearly beats a tree: no node allocation, no moves of
/// large values into nodes. Most plans touch one block and one handle, so
/// the first entry is held inline: a plan's draft allocates nothing for it
/// (a heap vector of drafted blocks was a request of over a kilobyte per
/// plan, 9 % of the /26 planning bench's samples with the system
/// allocator, BENCHMARKS.md "Planning in the /26 case").
#[derive(Clone)]
struct Touched<K, V>(SmallVec<[(K, V); 1]>);

impl<K, V> Default for Touched<K, V> {
    fn default() -> Self {
        Touched(SmallVec::new())
    }
}

impl<K: Ord, V> Touched<K, V> {
    fn get<Q: ?Sized + PartialEq>(&self, key: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
    {
        self.0
            .iter()
            .find(|(k, _)| k.borrow() == key)
            .map(|(_, v)| v)
    }

    fn get_mut<Q: ?Sized + PartialEq>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: std::borrow::Borrow<Q>,
    {
        self.0
            .iter_mut()
            .find(|(k, _)| k.borrow() == key)
            .map(|(_, v)| v)
    }

    fn contains<Q: ?Sized + PartialEq>(&self, key: &Q) -> bool
    where
        K: std::borrow::Borrow<Q>,
    {
        self.get(key).is_some()
    }

    fn insert(&mut self, key: K, value: V) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, slot)) => *slot = value,
            None => self.0.push((key, value)),
        }
    }

    fn get_or_insert_with<Q>(&mut self, key: &Q, make: impl FnOnce() -> V) -> &mut V
    where
        K: std::borrow::Borrow<Q>,
        Q: ?Sized + PartialEq + ToOwned<Owned = K>,
    {
        let index = match self.0.iter().position(|(k, _)| k.borrow() == key) {
            Some(index) => index,
            None => {
                self.0.push((key.to_owned(), make()));
                self.0.len() - 1
            }
        };
        &mut self.0[index].1
    }

    // Sorted by key, so that concurrent plans write shared objects in the
    // same order. Drained in place: moving the inline vector whole would
    // copy the entry held in it once more.
    fn drain_sorted(&mut self) -> smallvec::Drain<'_, [(K, V); 1]> {
        self.0.sort_by(|a, b| a.0.cmp(&b.0));
        self.0.drain(..)
    }
}

// How a plan changes a handle.
#[derive(Clone)]
enum DraftHandle {
    // Per block, the count's change, in block order (the plan's
    // `HandleChange::Adjust` as it will be, zeros not yet dropped).
    Adjust(Vec<(BlockCidr, i64)>),
    // Deleted as a whole.
    Delete,
}

#[derive(Clone)]
struct DraftBlock {
    block: Block,
    // For a block this plan claims: the block as claimed, before anything
    // is assigned from it; it is created as that. Boxed: claims are rare,
    // and the draft of every other block would carry a second block's
    // room.
    claimed: Option<Box<Block>>,
    // Set by whoever changes the block, so that finishing never has to
    // compare whole blocks to find out.
    changed: bool,
    // The block goes with its node's affinity (an `AffinityRelease` in
    // `reclaims` deletes it): nothing more is taken from it or written.
    gone: bool,
}

impl<'s> Draft<'s> {
    fn new(snapshot: &'s Snapshot, now: Now) -> Self {
        Draft {
            snapshot,
            now,
            cooldown: snapshot.config().cooldown(now),
            blocks: Touched::default(),
            handles: Touched::default(),
            reclaims: Vec::new(),
            claims: Vec::new(),
        }
    }

    fn current_block(&self, cidr: &BlockCidr) -> Option<&Block> {
        match self.blocks.get(cidr) {
            Some(draft) => Some(&draft.block),
            None => self.snapshot.block(cidr),
        }
    }

    // Callers only ask for blocks that exist in the draft or the snapshot.
    // A block taken from the snapshot is read as Calico reads it: cooled
    // addresses deallocated, which is written only if the plan changes the
    // block anyway.
    fn block_mut(&mut self, cidr: BlockCidr) -> &mut Block {
        let snapshot = self.snapshot;
        let cutoff = self.cooldown.cutoff();
        &mut self
            .blocks
            .get_or_insert_with(&cidr, || DraftBlock {
                block: cooled(
                    snapshot.block(&cidr).expect("block exists in snapshot"),
                    cutoff,
                )
                .into_owned(),
                claimed: None,
                changed: false,
                gone: false,
            })
            .block
    }

    // Free addresses automatic assignment may take from a block, as read
    // now (cooled addresses deallocated).
    fn room_in(&mut self, cidr: BlockCidr, reserved: &crate::reservation::Reserved) -> u32 {
        let ripe = !self.blocks.contains(&cidr)
            && self
                .snapshot
                .block(&cidr)
                .and_then(Block::earliest_release)
                .is_some_and(|at| at < self.cooldown.cutoff());
        if self.is_gone(&cidr) {
            return 0;
        }
        if ripe {
            self.block_mut(cidr);
        }
        self.current_block(&cidr)
            .map_or(0, |b| b.free_count(reserved))
    }

    fn is_gone(&self, cidr: &BlockCidr) -> bool {
        self.blocks.get(cidr).is_some_and(|draft| draft.gone)
    }

    fn mark_gone(&mut self, cidr: BlockCidr) {
        if let Some(draft) = self.blocks.get_mut(&cidr) {
            draft.gone = true;
        }
    }

    fn mark_changed(&mut self, cidr: BlockCidr) {
        if let Some(draft) = self.blocks.get_mut(&cidr) {
            draft.changed = true;
        }
    }

    fn claim(&mut self, cidr: BlockCidr, owner: BlockOwner) {
        let node = owner.name().to_string();
        let mut block = Block::new(
            cidr,
            Some(owner),
            Some(format_rfc3339(self.now.unix_seconds())),
            self.now.unix_nanos,
        );
        block.set_strict_affinity(self.snapshot.config().strict_affinity);
        self.blocks.insert(
            cidr,
            DraftBlock {
                claimed: Some(Box::new(block.clone())),
                block,
                changed: false,
                gone: false,
            },
        );
        self.claims.push(AffinityKey { node, cidr });
    }

    // Per block, the count of a handle changes by what the block gains or
    // loses; clamped at zero only when written (see `HandleChange`). A
    // handle the plan creates takes `name` when given: the text of its
    // entry in the block, so that its id is held once.
    fn count_for_handle(
        &mut self,
        id: &str,
        cidr: BlockCidr,
        delta: i64,
        name: Option<HandleName>,
    ) {
        if !self.handles.contains(id) {
            let name = name.unwrap_or_else(|| HandleName::new(id));
            self.handles.insert(name, DraftHandle::Adjust(Vec::new()));
        }
        if let Some(DraftHandle::Adjust(deltas)) = self.handles.get_mut(id) {
            match deltas.binary_search_by_key(&cidr, |&(c, _)| c) {
                Ok(at) => deltas[at].1 += delta,
                Err(at) => deltas.insert(at, (cidr, delta)),
            }
        }
    }

    // `assigning` orders handles before blocks; otherwise blocks go first.
    //
    // A claim is finished before any handle counts an address in it, as
    // Calico's claimAffineBlock creates the block empty and confirms the
    // affinity before assignFromExistingBlock takes addresses from it
    // (ipam_block_reader_writer.go, ipam.go): per claimed block its pending
    // affinity, the block created empty, the affinity confirmed; then the
    // handles and the blocks' updates.
    // So a handle never counts an address in a block that did not exist
    // when it was counted, and a release by handle may take a count in a
    // missing block for stale (see `plan_release_by_handle`).
    fn finish(mut self, assigning: bool) -> Plan {
        let snapshot = self.snapshot;
        let affinity_of = |key: &AffinityKey, state: AffinityState, owner: Option<&BlockOwner>| {
            let mut affinity = snapshot.affinity(key).cloned().unwrap_or_else(|| {
                let mut fresh = Affinity::new(key.node.clone(), key.cidr, state);
                // A virtual owner's claim is a `virtual` affinity (Calico's
                // BlockAffinity spec.type; its etcd key's type segment).
                if matches!(owner, Some(BlockOwner::Virtual(_))) {
                    fresh.affinity_type = Some(crate::affinity::VIRTUAL.to_string());
                }
                fresh
            });
            affinity.state = state;
            affinity
        };
        let claims = self
            .claims
            .iter()
            .filter_map(|key| {
                // Every claim drafts its block, as claimed.
                let draft = self.blocks.get_mut(&key.cidr)?;
                let claimed = draft.claimed.take()?;
                let owner = claimed.owner();
                Some(Claim {
                    pending: affinity_of(key, AffinityState::Pending, owner),
                    // An affinity of ours left pending by an interrupted
                    // claim is reused, as Calico's getPendingAffinity does.
                    reused: snapshot.affinity(key).is_some(),
                    // Created as claimed, its sequence number the claim's
                    // time (Calico's newBlock); the update that assigns
                    // raises it.
                    confirmed: affinity_of(key, AffinityState::Confirmed, owner),
                    block: *claimed,
                })
            })
            .collect();
        let handles = self
            .handles
            .drain_sorted()
            .filter_map(|(id, draft)| match draft {
                DraftHandle::Delete => Some(HandleChange::Delete(id)),
                DraftHandle::Adjust(mut deltas) => {
                    deltas.retain(|(_, d)| *d != 0);
                    (!deltas.is_empty()).then_some(HandleChange::Adjust { id, deltas })
                }
            })
            .collect();
        let blocks = self
            .blocks
            .drain_sorted()
            .filter(|(_, draft)| draft.changed && !draft.gone)
            .map(|(cidr, mut draft)| {
                // The owner first: it is cheap, and an assignment's block
                // has one.
                if draft.block.owner().is_none() && draft.block.is_empty() {
                    // Calico deletes a block left empty with no affinity.
                    BlockWrite::Delete(cidr)
                } else {
                    draft.block.bump_sequence_number();
                    BlockWrite::Update(draft.block)
                }
            })
            .collect();
        Plan {
            releases: self.reclaims,
            claims,
            handles,
            blocks,
            // Handles before blocks when assigning; blocks before handles
            // when releasing (see the plan module).
            order: if assigning {
                Order::HandlesFirst
            } else {
                Order::BlocksFirst
            },
        }
    }
}

/// The addresses a handle holds, with their blocks' prefix lengths, in block
/// then ordinal order: what a retried request for the handle should get back.
pub fn addresses_of_handle(snapshot: &Snapshot, handle_id: &str) -> Vec<IpNet> {
    let handle_id = sanitize_handle(handle_id);
    let Some(handle) = snapshot.handle(handle_id) else {
        return Vec::new();
    };
    let blocks = handle
        .blocks()
        .iter()
        .filter_map(|(cidr, _)| snapshot.block(cidr));
    addresses_in_blocks(blocks, handle_id)
}

/// The addresses `blocks` record for a handle, with their prefix lengths,
/// in the blocks' order then ordinal order; for blocks read outside a
/// snapshot.
pub fn addresses_in_blocks<'a>(
    blocks: impl IntoIterator<Item = &'a Block>,
    handle_id: &str,
) -> Vec<IpNet> {
    let handle_id = sanitize_handle(handle_id);
    blocks
        .into_iter()
        .flat_map(|block| {
            let cidr = block.cidr();
            block
                .ordinals_of_handle(handle_id)
                .map(move |o| cidr.address_net(o))
        })
        .collect()
}
