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
use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::affinity::{Affinity, AffinityKey, AffinityState};
use crate::block::{sanitize_handle, Block, BlockOwner, ReleaseItem};
use crate::cidr::{node_spread, BlockCidr, IpVersion};
use crate::cooldown::Cooldown;
use crate::error::Error;
use crate::handle::Handle;
use crate::plan::{
    AssignIpRequest, Assignments, AutoAssignPlan, AutoAssignRequest, BatchPlan, ClaimPlan, Now,
    Plan, ReleasePlan, ReleaseRequest, Shortfall, Write,
};
use crate::pool::Pool;
use crate::reservation::Reserved;
use crate::snapshot::{merge_sorted, Snapshot};
use crate::timestamp::{format_rfc3339, parse_rfc3339};

/// Another node's empty block is not reclaimed until it has been claimed
/// this long, so two nodes do not free a block from under each other
/// (ipam_block_reader_writer.go, EmptyBlockMinReclaimAge).
pub const EMPTY_BLOCK_MIN_RECLAIM_AGE_SECONDS: i64 = 60;

impl Snapshot {
    /// Plans an automatic assignment of IPv4 and IPv6 addresses. A failure
    /// of either family fails the whole plan, so a dual-stack request never
    /// half-succeeds.
    pub fn plan_auto_assign(
        &self,
        request: &AutoAssignRequest,
        now: Now,
    ) -> Result<AutoAssignPlan, Error> {
        let mut draft = Draft::new(self, now);
        let ipv4 =
            draft.assign_family(request, IpVersion::V4, request.ipv4, &request.ipv4_pools)?;
        let ipv6 =
            draft.assign_family(request, IpVersion::V6, request.ipv6, &request.ipv6_pools)?;
        Ok(AutoAssignPlan {
            plan: draft.finish(true),
            ipv4,
            ipv6,
        })
    }

    /// Plans several automatic assignments together, as if made one after
    /// another, into one set of writes: requests that land on the same block
    /// share one block write (a server coalescing concurrent requests of a
    /// node). Each request succeeds or fails on its own; a failed one leaves
    /// no trace in the writes.
    pub fn plan_auto_assign_batch(&self, requests: &[AutoAssignRequest], now: Now) -> BatchPlan {
        let mut draft = Draft::new(self, now);
        let mut outcomes = Vec::with_capacity(requests.len());
        for request in requests {
            let before = draft.clone();
            let outcome = draft
                .assign_family(request, IpVersion::V4, request.ipv4, &request.ipv4_pools)
                .and_then(|ipv4| {
                    draft
                        .assign_family(request, IpVersion::V6, request.ipv6, &request.ipv6_pools)
                        .map(|ipv6| (ipv4, ipv6))
                });
            if outcome.is_err() {
                draft = before;
            }
            outcomes.push(outcome);
        }
        BatchPlan {
            plan: draft.finish(true),
            outcomes,
        }
    }

    /// Plans the assignment of one chosen address, claiming its block for
    /// the node when the block does not exist yet (ipam.go, AssignIP).
    pub fn plan_assign_ip(&self, request: &AssignIpRequest, now: Now) -> Result<Plan, Error> {
        let address = request.address;
        let pool = self
            .pool_of(address)
            .ok_or(Error::AddressNotInPool { address })?;
        if !pool.enabled() {
            return Err(Error::RequestedPoolUnavailable { pool: pool.cidr() });
        }
        let cidr = pool
            .block_of(address)
            .ok_or(Error::AddressNotInPool { address })?;
        let mut draft = Draft::new(self, now);
        match self.block(&cidr) {
            Some(block) => {
                let owned = block.owner().is_some_and(|o| o.is_host(&request.node));
                if self.config().strict_affinity && !owned {
                    return Err(Error::StrictAffinityViolation {
                        address,
                        block: cidr,
                        owner: block
                            .owner()
                            .map_or_else(|| "none".to_string(), ToString::to_string),
                        node: request.node.to_string(),
                    });
                }
            }
            None => draft.claim(cidr, &request.node),
        }
        let ordinal = cidr
            .ordinal_of(address)
            .ok_or(Error::AddressNotInPool { address })?;
        let cooldown = draft.cooldown;
        let block = draft.block_mut(cidr);
        // The block was read with its cooled addresses deallocated; one
        // still released is in its cooldown. Calico's assign refuses it as
        // already assigned (ErrorResourceAlreadyExists) and never waits.
        if let Some(released_at) = block.attribute_of(ordinal).and_then(|a| a.released_at) {
            return Err(Error::AddressInCooldown {
                address,
                released_at: format_rfc3339(released_at),
                free_from: cooldown.free_from_rfc3339(released_at),
            });
        }
        block.assign(ordinal, &request.handle, &request.attributes)?;
        draft.mark_changed(cidr);
        draft.count_for_handle(&request.handle, cidr, 1);
        Ok(draft.finish(true))
    }

    /// Plans the release of addresses at `now`: freed, or with a cooldown
    /// marked released. Stale expectations (handle or sequence number) fail
    /// the whole plan; free and already released addresses are reported.
    pub fn plan_release(
        &self,
        requests: &[ReleaseRequest],
        now: Now,
    ) -> Result<ReleasePlan, Error> {
        let mut by_block: BTreeMap<BlockCidr, Vec<ReleaseItem>> = BTreeMap::new();
        let mut outcome = ReleasePlan::default();
        for request in requests {
            let Some(block) = self.block_containing(request.address) else {
                outcome.already_free.push(request.address);
                continue;
            };
            let cidr = block.cidr();
            let ordinal = cidr
                .ordinal_of(request.address)
                .ok_or(Error::AddressNotInPool {
                    address: request.address,
                })?;
            by_block.entry(cidr).or_default().push(ReleaseItem {
                ordinal,
                handle: request.handle.as_deref().map(str::to_string),
                sequence_number: request.sequence_number,
            });
        }
        let mut draft = Draft::new(self, now);
        let stamp = draft.cooldown.release_stamp();
        for (cidr, items) in by_block {
            let released = draft.block_mut(cidr).release(&items, stamp)?;
            if !released.ordinals.is_empty() {
                draft.mark_changed(cidr);
            }
            outcome
                .already_free
                .extend(released.already_free.iter().map(|&o| cidr.address(o)));
            outcome
                .released
                .extend(released.ordinals.iter().map(|&o| cidr.address(o)));
            for (handle, count) in released.by_handle {
                draft.uncount_for_handle(&handle, cidr, count);
            }
        }
        outcome.plan = draft.finish(false);
        Ok(outcome)
    }

    /// Plans the release of every address of a handle and the handle itself,
    /// at `now`: freed, or with a cooldown marked released.
    pub fn plan_release_by_handle(&self, handle_id: &str, now: Now) -> Result<ReleasePlan, Error> {
        let handle_id = sanitize_handle(handle_id);
        let handle = self
            .handle(handle_id)
            .ok_or_else(|| Error::HandleNotFound {
                handle: handle_id.to_string(),
            })?;
        let mut draft = Draft::new(self, now);
        let stamp = draft.cooldown.release_stamp();
        let mut outcome = ReleasePlan::default();
        for (cidr, _) in handle.blocks() {
            // A handle only counts addresses in blocks that existed when it
            // counted them (claims finish first, see `Draft::finish`), and
            // an assignment still to write a block that has gone since
            // fails its compare-and-swap: a count in a missing block is
            // stale.
            if self.block(cidr).is_none() {
                continue;
            }
            let released = draft
                .block_mut(*cidr)
                .release_by_handle(handle_id, None, stamp);
            // Written even when it holds none of the handle's addresses: a
            // count the block does not show may be an assignment between
            // its handle write and its block write, planned on the block as
            // read. Rewriting the block (its sequence number raised) makes
            // that assignment's compare-and-swap fail, so that it plans
            // again instead of landing an address on the handle this plan
            // deletes. Calico fences a block the same way before confirming
            // an affinity (ipam.go, getBlockFromAffinity: "CAS the block to
            // get a new revision and invalidate any other instances").
            draft.mark_changed(*cidr);
            outcome
                .released
                .extend(released.ordinals.iter().map(|&o| cidr.address(o)));
        }
        // Counts no block showed were stale or are fenced off above: the
        // handle goes as a whole rather than lingering as a leak.
        draft.handles.insert(handle_id.to_string(), None);
        outcome.plan = draft.finish(false);
        Ok(outcome)
    }

    /// Plans releasing a node's affinity for one block: the affinity is
    /// marked pendingDeletion, the block deleted if empty or else left
    /// without affinity, then the affinity deleted
    /// (ipam_block_reader_writer.go, releaseBlockAffinity). The block is
    /// judged as read at `now`, cooled addresses deallocated.
    pub fn plan_release_affinity(
        &self,
        node: &str,
        cidr: BlockCidr,
        require_empty: bool,
        now: Now,
    ) -> Result<Plan, Error> {
        let key = AffinityKey {
            node: node.to_string(),
            cidr,
        };
        let affinity = self.affinity(&key).ok_or(Error::AffinityNotFound {
            node: node.to_string(),
            block: cidr,
        })?;
        let mut writes = Vec::new();
        let cutoff = self.config().cooldown(now).cutoff();
        let block = self
            .block(&cidr)
            .filter(|b| b.owner().is_some_and(|o| o.is_host(node)))
            .map(|b| cooled(b, cutoff));
        if let Some(block) = block {
            if require_empty && !block.is_empty() {
                return Err(Error::BlockNotEmpty {
                    block: cidr,
                    in_use: block.allocated_count(),
                });
            }
            let mut pending = affinity.clone();
            pending.state = AffinityState::PendingDeletion;
            writes.push(Write::UpdateAffinity(pending));
            if block.is_empty() {
                writes.push(Write::DeleteBlock(cidr));
            } else {
                let mut orphaned = block.into_owned();
                orphaned.set_owner(None, None);
                orphaned.bump_sequence_number();
                writes.push(Write::UpdateBlock(orphaned));
            }
        }
        // Without a matching block the affinity is stale and simply goes.
        writes.push(Write::DeleteAffinity(key));
        Ok(Plan { writes })
    }

    /// Plans claiming every block of `cidr` for `node` (Calico's
    /// ClaimAffinity, ipam.go): blocks nobody holds are created affine to
    /// the node in two phases; blocks already the node's count as claimed;
    /// blocks another owner holds are reported as failed and left alone.
    pub fn plan_claim_affinity(
        &self,
        node: &str,
        cidr: IpNet,
        now: Now,
    ) -> Result<ClaimPlan, Error> {
        let refuse = |reason: String| Error::ClaimOutsidePool { cidr, reason };
        if cidr.trunc() != cidr {
            return Err(Error::CidrNotAligned { cidr });
        }
        let pool = self
            .pools()
            .iter()
            .find(|p| p.cidr().contains(&cidr))
            .ok_or_else(|| refuse("it is not within any pool".to_string()))?;
        if cidr.prefix_len() > pool.block_size() {
            return Err(refuse(format!(
                "it is smaller than pool {}'s blocks (/{})",
                pool.name(),
                pool.block_size()
            )));
        }
        let first = pool
            .block_index_of(cidr.network())
            .expect("the pool contains the CIDR");
        let count = 1u128 << (cidr.max_prefix_len() - cidr.prefix_len())
            >> (cidr.max_prefix_len() - pool.block_size());
        let mut draft = Draft::new(self, now);
        let mut outcome = ClaimPlan::default();
        for index in first..first + count {
            let block = pool.block_at(index);
            match self.block(&block).map(|b| b.owner()) {
                None => {
                    draft.claim(block, node);
                    outcome.claimed.push(block);
                }
                Some(Some(owner)) if owner.is_host(node) => outcome.claimed.push(block),
                Some(_) => outcome.failed.push(block),
            }
        }
        outcome.plan = draft.finish(true);
        Ok(outcome)
    }

    /// Plans releasing every affinity of a node (a node that was deleted):
    /// its empty blocks are deleted, the others keep their addresses but
    /// lose their affinity.
    pub fn plan_release_node(&self, node: &str, now: Now) -> Plan {
        let mut plan = Plan::default();
        let cidrs: Vec<BlockCidr> = self.affinities_of(node).map(|a| a.cidr).collect();
        for cidr in cidrs {
            // The affinity was just listed, so it exists.
            if let Ok(part) = self.plan_release_affinity(node, cidr, false, now) {
                plan.writes.extend(part.writes);
            }
        }
        plan
    }

    /// Plans writing back every block holding released addresses whose
    /// cooldown has passed by `now`, deallocated: the backstop for blocks
    /// no allocation or release writes (kube-controllers' ipam.go,
    /// garbageCollectColdIPs, which visits only the blocks whose earliest
    /// `releasedAt` has cooled). A block left empty without affinity is
    /// deleted, as any release that empties one does.
    pub fn plan_deallocate_cooled(&self, now: Now) -> Plan {
        let mut draft = Draft::new(self, now);
        let cutoff = draft.cooldown.cutoff();
        for (cidr, earliest) in self.cold_blocks() {
            if earliest < cutoff {
                draft.block_mut(cidr);
                draft.mark_changed(cidr);
            }
        }
        draft.finish(false)
    }
}

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
    // Handle id -> new version (None: delete).
    handles: Touched<String, Option<Handle>>,
    // Writes that must come first: freeing other nodes' empty blocks.
    reclaims: Vec<Write>,
    // Blocks being claimed for a node, in claim order.
    claims: Vec<AffinityKey>,
}

/// The few objects one plan touches, by key. A plan touches a handful, so a
/// vector searched linearly beats a tree: no node allocation, no moves of
/// large values into nodes.
#[derive(Clone)]
struct Touched<K, V>(Vec<(K, V)>);

impl<K, V> Default for Touched<K, V> {
    fn default() -> Self {
        Touched(Vec::new())
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
    // same order.
    fn into_sorted(mut self) -> Vec<(K, V)> {
        self.0.sort_by(|a, b| a.0.cmp(&b.0));
        self.0
    }
}

#[derive(Clone)]
struct DraftBlock {
    block: Block,
    // For a block this plan claims: the block as claimed, before anything
    // is assigned from it; it is created as that.
    claimed: Option<Block>,
    // Set by whoever changes the block, so that finishing never has to
    // compare whole blocks to find out.
    changed: bool,
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
        if ripe {
            self.block_mut(cidr);
        }
        self.current_block(&cidr)
            .map_or(0, |b| b.free_count(reserved))
    }

    fn mark_changed(&mut self, cidr: BlockCidr) {
        if let Some(draft) = self.blocks.get_mut(&cidr) {
            draft.changed = true;
        }
    }

    fn claim(&mut self, cidr: BlockCidr, node: &str) {
        let mut block = Block::new(
            cidr,
            Some(BlockOwner::Host(node.to_string())),
            Some(format_rfc3339(self.now.unix_seconds())),
            self.now.unix_nanos,
        );
        block.set_strict_affinity(self.snapshot.config().strict_affinity);
        self.blocks.insert(
            cidr,
            DraftBlock {
                claimed: Some(block.clone()),
                block,
                changed: false,
            },
        );
        self.claims.push(AffinityKey {
            node: node.to_string(),
            cidr,
        });
    }

    fn handle_mut(&mut self, id: &str) -> Option<&mut Handle> {
        let snapshot = self.snapshot;
        self.handles
            .get_or_insert_with(id, || snapshot.handle(id).cloned())
            .as_mut()
    }

    fn count_for_handle(&mut self, id: &str, cidr: BlockCidr, count: u32) {
        let snapshot = self.snapshot;
        self.handles
            .get_or_insert_with(id, || snapshot.handle(id).cloned())
            .get_or_insert_with(|| Handle::new(id))
            .increment(cidr, count);
    }

    fn uncount_for_handle(&mut self, id: &str, cidr: BlockCidr, count: u32) {
        // A handle missing from the datastore has nothing to decrement.
        if let Some(handle) = self.handle_mut(id) {
            let held = handle.count_in(&cidr);
            // Never below zero: the block, not the handle, is the truth.
            let _ = handle.decrement(cidr, count.min(held));
        }
    }

    fn assign_family(
        &mut self,
        request: &AutoAssignRequest,
        version: IpVersion,
        count: u32,
        requested_pools: &[IpNet],
    ) -> Result<Assignments, Error> {
        let mut out = Assignments {
            requested: count,
            ..Assignments::default()
        };
        if count == 0 {
            return Ok(out);
        }
        let snapshot = self.snapshot;
        let config = snapshot.config();
        let pools = select_pools(snapshot, request, version, requested_pools)?;
        // The request's own exclusions count as reservations everywhere
        // below: a block holding only excluded free addresses has no room,
        // one wholly excluded is never claimed.
        let edges = request
            .usable_with_pool_prefix
            .then(|| pools.iter().flat_map(|p| p.subnet_edges()))
            .into_iter()
            .flatten();
        let extra: Vec<IpNet> = request.exclude.iter().copied().chain(edges).collect();
        let widened;
        let reserved = if extra.is_empty() {
            snapshot.reserved()
        } else {
            widened = snapshot.reserved().with(extra);
            &widened
        };
        let node = request.node.as_str();
        let mut remaining = count;
        let take =
            |draft: &mut Draft<'_>, cidr: BlockCidr, remaining: &mut u32, out: &mut Assignments| {
                let ordinals = draft.block_mut(cidr).auto_assign(
                    *remaining,
                    &request.handle,
                    &request.attributes,
                    reserved,
                );
                if !ordinals.is_empty() {
                    draft.mark_changed(cidr);
                    *remaining -= ordinals.len() as u32;
                    out.addresses
                        .extend(ordinals.iter().map(|&o| cidr.address_net(o)));
                    draft.count_for_handle(&request.handle, cidr, ordinals.len() as u32);
                }
            };

        // 2. The node's own blocks with room, in address order. Calico walks
        // every affine block; full ones are skipped either way, and keeping
        // to those with room (or with cooled addresses) keeps this cost
        // independent of pool size.
        let in_pools = |c: &BlockCidr| pools.iter().any(|p| p.contains(c.net().network()));
        let cutoff = self.cooldown.cutoff();
        for cidr in merge_sorted(
            snapshot.affine_blocks_with_room(node, version),
            snapshot.affine_cooled_blocks(node, version, cutoff),
        ) {
            if remaining == 0 {
                break;
            }
            if in_pools(&cidr) && self.room_in(cidr, reserved) > 0 {
                take(self, cidr, &mut remaining, &mut out);
            }
        }

        // 3. New blocks, within the limit. What the node holds is counted
        // only here, since claiming is rare. An affinity whose block is gone
        // is reused first: Calico recreates the block.
        if remaining > 0 {
            let held: Vec<BlockCidr> = snapshot
                .confirmed_blocks_of(node, version)
                .filter(in_pools)
                .collect();
            let mut owned = held.len() as u32;
            let mut recreate = held
                .into_iter()
                .filter(|c| snapshot.block(c).is_none() && !reserved.covers(c))
                .collect::<Vec<_>>()
                .into_iter();
            let limit = config.block_limit(request.max_blocks_per_host);
            while remaining > 0 {
                let cidr = match recreate.next() {
                    Some(cidr) => cidr,
                    None => {
                        if owned >= limit {
                            return Err(Error::BlockLimitReached {
                                node: node.to_string(),
                                version,
                                limit,
                            });
                        }
                        if !config.auto_allocate_blocks {
                            return Err(Error::AutoAllocateDisabled {
                                node: node.to_string(),
                                version,
                            });
                        }
                        let Some(cidr) = self.find_block_to_claim(&pools, node, reserved) else {
                            break;
                        };
                        owned += 1;
                        cidr
                    }
                };
                self.claim(cidr, node);
                take(self, cidr, &mut remaining, &mut out);
            }
        }

        // 4. Borrow from other blocks unless strict affinity forbids it.
        if remaining > 0 {
            if config.strict_affinity {
                out.shortfall.push(Shortfall::StrictAffinityNoFreeBlocks);
                return Ok(out);
            }
            let spread = u128::from(node_spread(node));
            for pool in &pools {
                let start = pool.block_at(spread % pool.block_count());
                for cidr in snapshot.blocks_with_room(pool, start, cutoff) {
                    if remaining == 0 {
                        break;
                    }
                    if self.room_in(cidr, reserved) > 0 {
                        take(self, cidr, &mut remaining, &mut out);
                    }
                }
            }
            if remaining > 0 {
                out.shortfall.push(Shortfall::PoolsExhausted(
                    pools.iter().map(|p| p.cidr()).collect(),
                ));
            }
        }
        Ok(out)
    }

    // An unclaimed slot of the pools, starting where the node's name points
    // so that nodes spread out; else another node's empty, old-enough block.
    fn find_block_to_claim(
        &mut self,
        pools: &[&Pool],
        node: &str,
        reserved: &Reserved,
    ) -> Option<BlockCidr> {
        let snapshot = self.snapshot;
        let spread = u128::from(node_spread(node));
        for pool in pools {
            let index = snapshot
                .pools()
                .iter()
                .position(|p| p.name() == pool.name())?;
            let free = snapshot
                .free_slots(index)
                .iter_from(spread % pool.block_count());
            for slot in free {
                let cidr = pool.block_at(slot);
                if !self.blocks.contains(&cidr) && !reserved.covers(&cidr) {
                    return Some(cidr);
                }
            }
        }
        let now = self.now.unix_seconds();
        let cutoff = self.cooldown.cutoff();
        for pool in pools {
            let reclaimable = snapshot.blocks().find(|b| {
                pool.contains(b.cidr().net().network())
                    && !self.blocks.contains(&b.cidr())
                    && matches!(b.owner(), Some(BlockOwner::Host(other)) if other != node)
                    && now - b.claim_time().and_then(parse_rfc3339).unwrap_or(0)
                        >= EMPTY_BLOCK_MIN_RECLAIM_AGE_SECONDS
                    && {
                        // Judged as Calico's findUsableBlock reads it
                        // (blockFromBackend): addresses in cooldown keep it.
                        let b = cooled(b, cutoff);
                        b.is_empty() && b.free_count(reserved) > 0
                    }
            });
            if let Some(block) = reclaimable {
                let cidr = block.cidr();
                let other = block
                    .owner()
                    .map(|o| o.name().to_string())
                    .unwrap_or_default();
                let key = AffinityKey { node: other, cidr };
                match snapshot.affinity(&key) {
                    Some(affinity) => {
                        let mut pending = affinity.clone();
                        pending.state = AffinityState::PendingDeletion;
                        self.reclaims.push(Write::UpdateAffinity(pending));
                        self.reclaims.push(Write::DeleteBlock(cidr));
                        self.reclaims.push(Write::DeleteAffinity(key));
                    }
                    None => self.reclaims.push(Write::DeleteBlock(cidr)),
                }
                return Some(cidr);
            }
        }
        None
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
    fn finish(self, assigning: bool) -> Plan {
        let snapshot = self.snapshot;
        let mut writes = self.reclaims;
        writes.reserve(2 * self.claims.len() + self.handles.0.len() + self.blocks.0.len());
        let affinity_of = |key: &AffinityKey, state: AffinityState| {
            let mut affinity = snapshot
                .affinity(key)
                .cloned()
                .unwrap_or_else(|| Affinity::new(key.node.clone(), key.cidr, state));
            affinity.state = state;
            affinity
        };
        for key in &self.claims {
            let pending = affinity_of(key, AffinityState::Pending);
            // An affinity of ours left pending by an interrupted claim is
            // reused, as Calico's getPendingAffinity does.
            writes.push(if snapshot.affinity(key).is_some() {
                Write::UpdateAffinity(pending)
            } else {
                Write::CreateAffinity(pending)
            });
            let claimed = self
                .blocks
                .get(&key.cidr)
                .and_then(|draft| draft.claimed.clone())
                .expect("every claim drafts its block");
            // Created as claimed, its sequence number the claim's time
            // (Calico's newBlock); the update that assigns raises it.
            writes.push(Write::CreateBlock(claimed));
            writes.push(Write::UpdateAffinity(affinity_of(
                key,
                AffinityState::Confirmed,
            )));
        }
        let handle_writes = self
            .handles
            .into_sorted()
            .into_iter()
            .filter_map(|(id, handle)| {
                let existed = snapshot.handle(&id).is_some();
                match handle {
                    Some(h) if h.is_empty() && existed => Some(Write::DeleteHandle(id)),
                    Some(h) if h.is_empty() => None,
                    Some(h) if existed => Some(Write::UpdateHandle(h)),
                    Some(h) => Some(Write::CreateHandle(h)),
                    None if existed => Some(Write::DeleteHandle(id)),
                    None => None,
                }
            });
        // Handles before blocks when assigning; blocks before handles when
        // releasing (see the plan module).
        let handle_writes: Vec<Write> = handle_writes.collect();
        let (handles_first, handles_last) = if assigning {
            (handle_writes, Vec::new())
        } else {
            (Vec::new(), handle_writes)
        };
        writes.extend(handles_first);
        for (cidr, mut draft) in self.blocks.into_sorted() {
            if !draft.changed {
                continue;
            } else if draft.block.is_empty() && draft.block.owner().is_none() {
                // Calico deletes a block left empty with no affinity.
                writes.push(Write::DeleteBlock(cidr));
            } else {
                draft.block.bump_sequence_number();
                writes.push(Write::UpdateBlock(draft.block));
            }
        }
        writes.extend(handles_last);
        Plan { writes }
    }
}

// Calico's determinePools plus filterPoolsByUse.
fn select_pools<'s>(
    snapshot: &'s Snapshot,
    request: &AutoAssignRequest,
    version: IpVersion,
    requested: &[IpNet],
) -> Result<Vec<&'s Pool>, Error> {
    let enabled = || {
        snapshot
            .pools()
            .iter()
            .filter(move |p| p.version() == version && p.enabled())
    };
    let no_pool = || Error::NoPoolForNode {
        node: request.node.to_string(),
        version,
        intended_use: request.intended_use.as_str(),
    };
    let mut chosen = Vec::with_capacity(snapshot.pools().len());
    for cidr in requested {
        if IpVersion::of(cidr.addr()) != version {
            return Err(Error::PoolFamilyMismatch {
                pool: *cidr,
                expected: version,
            });
        }
        let pool = enabled()
            .find(|p| p.cidr() == cidr.trunc())
            .ok_or(Error::RequestedPoolUnavailable { pool: *cidr })?;
        chosen.push(pool);
    }
    if chosen.is_empty() {
        chosen.extend(enabled().filter(|p| {
            p.automatic()
                && p.selects_node(&request.node_labels)
                && p.selects_namespace(&request.namespace_labels)
        }));
    }
    if chosen.is_empty() {
        return Err(no_pool());
    }
    chosen.retain(|p| p.allows(request.intended_use));
    if chosen.is_empty() {
        return Err(no_pool());
    }
    Ok(chosen)
}

/// The addresses a handle holds, with their blocks' prefix lengths, in block
/// then ordinal order: what a retried request for the handle should get back.
pub fn addresses_of_handle(snapshot: &Snapshot, handle_id: &str) -> Vec<IpNet> {
    let handle_id = sanitize_handle(handle_id);
    let Some(handle) = snapshot.handle(handle_id) else {
        return Vec::new();
    };
    handle
        .blocks()
        .iter()
        .filter_map(|(cidr, _)| snapshot.block(cidr))
        .flat_map(|block| {
            let cidr = block.cidr();
            block
                .ordinals_of_handle(handle_id)
                .map(move |o| cidr.address_net(o))
        })
        .collect()
}
