//! Planning assignments: automatic (Calico's AutoAssign, one request or a
//! node's burst together) and of one chosen address (AssignIP), with the
//! choice of pools and of blocks to claim.

use ipnet::IpNet;

use super::{cooled, Draft, EMPTY_BLOCK_MIN_RECLAIM_AGE_SECONDS};
use crate::affinity::{AffinityKey, AffinityState};
use crate::block::{Attribute, BlockOwner};
use crate::cidr::{node_spread, BlockCidr, IpVersion};
use crate::error::{Error, NoPoolCause};
use crate::plan::{
    AffinityRelease, AssignIpRequest, Assignments, AutoAssignPlan, AutoAssignRequest, BatchPlan,
    BlockWrite, Now, Plan, Shortfall,
};
use crate::pool::{AllowedUse, Pool};
use crate::reservation::Reserved;
use crate::snapshot::{merge_sorted, Snapshot};
use crate::timestamp::{format_rfc3339, parse_rfc3339};

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
        let outcomes = requests
            .iter()
            .map(|request| draft.assign_one_of_many(request))
            .collect();
        BatchPlan {
            plan: draft.finish(true),
            outcomes,
        }
    }

    /// Plans the assignment of one chosen address for a workload: see
    /// [`Snapshot::plan_assign_ip_for`].
    pub fn plan_assign_ip(&self, request: &AssignIpRequest, now: Now) -> Result<Plan, Error> {
        self.plan_assign_ip_for(request, AllowedUse::Workload, now)
    }

    /// Plans the assignment of one chosen address for `intended_use`,
    /// claiming its block for the node (a `virtual:` owner for a
    /// LoadBalancer address) when the block does not exist yet (ipam.go,
    /// AssignIP).
    ///
    /// Stricter than Calico's AssignIP, which never looks at the pool's
    /// `allowedUses`: a LoadBalancer address only comes from a pool that
    /// allows LoadBalancer, and nothing else from such a pool. Calico's
    /// IPPool validation keeps LoadBalancer apart from Workload and Tunnel
    /// (ippool.go, "LoadBalancer cannot be combined with Workload or
    /// Tunnel allowed uses"), so a pod's fixed address in a LoadBalancer
    /// pool could only take a Service's address from under it.
    pub fn plan_assign_ip_for(
        &self,
        request: &AssignIpRequest,
        intended_use: AllowedUse,
        now: Now,
    ) -> Result<Plan, Error> {
        let address = request.address;
        let pool = self
            .pool_of(address)
            .ok_or(Error::AddressNotInPool { address })?;
        if !pool.enabled() {
            return Err(Error::RequestedPoolUnavailable { pool: pool.cidr() });
        }
        let load_balancer = intended_use == AllowedUse::LoadBalancer;
        if pool.allows(AllowedUse::LoadBalancer) != load_balancer {
            return Err(Error::PoolUseMismatch {
                address,
                pool: pool.cidr(),
                intended_use: intended_use.as_str(),
            });
        }
        let owner = BlockOwner::for_use(&request.node, intended_use);
        let cidr = pool
            .block_of(address)
            .ok_or(Error::AddressNotInPool { address })?;
        let mut draft = Draft::new(self, now);
        match self.block(&cidr) {
            Some(block) => {
                let owned = block.owner() == Some(&owner);
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
            None => draft.claim(cidr, owner),
        }
        let ordinal = cidr
            .ordinal_of(address)
            .ok_or(Error::AddressNotInPool { address })?;
        let cooldown = draft.cooldown;
        let block = draft.block_mut(cidr);
        // The block was read with its cooled addresses deallocated; one
        // still released is in its cooldown. Calico's assign refuses it as
        // already assigned (ErrorResourceAlreadyExists) and never waits.
        if let Some(released_at) = block.attribute_of(ordinal).and_then(Attribute::released_at) {
            return Err(Error::AddressInCooldown {
                address,
                released_at: format_rfc3339(released_at),
                free_from: cooldown.free_from_rfc3339(released_at),
            });
        }
        block.assign(ordinal, &request.handle, &request.attributes)?;
        let name = block.attribute_of(ordinal).and_then(Attribute::handle_name);
        draft.mark_changed(cidr);
        draft.count_for_handle(&request.handle, cidr, 1, name);
        Ok(draft.finish(true))
    }
}

impl Draft<'_> {
    /// One request of several planned in one draft: both families, or
    /// neither (a refused request leaves no trace in the draft).
    pub(super) fn assign_one_of_many(
        &mut self,
        request: &AutoAssignRequest,
    ) -> Result<(Assignments, Assignments), Error> {
        let before = self.clone();
        let outcome = self
            .assign_family(request, IpVersion::V4, request.ipv4, &request.ipv4_pools)
            .and_then(|ipv4| {
                self.assign_family(request, IpVersion::V6, request.ipv6, &request.ipv6_pools)
                    .map(|ipv6| (ipv4, ipv6))
            });
        if outcome.is_err() {
            *self = before;
        }
        outcome
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
        // Calico's prepareAffinityBlocksForHost, once pools are chosen (a
        // refusal above releases nothing): the node's empty blocks in
        // pools that no longer select it go first.
        self.release_unselected_of_node(
            &request.node,
            version,
            &request.node_labels,
            requested_pools,
        );
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
                let block = draft.block_mut(cidr);
                let ordinals =
                    block.auto_assign(*remaining, &request.handle, &request.attributes, reserved);
                if let Some(&first) = ordinals.first() {
                    // A new handle shares the text of its entry in the block.
                    let name = block.attribute_of(first).and_then(Attribute::handle_name);
                    draft.mark_changed(cidr);
                    *remaining -= ordinals.len() as u32;
                    out.addresses
                        .extend(ordinals.iter().map(|&o| cidr.address_net(o)));
                    draft.count_for_handle(&request.handle, cidr, ordinals.len() as i64, name);
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
                self.claim(cidr, BlockOwner::for_use(node, request.intended_use));
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
                // Released as Calico's releaseBlockAffinity does, so that
                // the other node never sees its block go under a confirmed
                // affinity.
                let pending_deletion = snapshot.affinity(&key).map(|affinity| {
                    let mut pending = affinity.clone();
                    pending.state = AffinityState::PendingDeletion;
                    pending
                });
                let delete = pending_deletion.as_ref().map(|_| key);
                self.reclaims.push(AffinityRelease {
                    pending_deletion,
                    block: Some(BlockWrite::Delete(cidr)),
                    delete,
                });
                return Some(cidr);
            }
        }
        None
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
    let no_pool = |cause| Error::NoPoolForNode {
        node: request.node.to_string(),
        version,
        intended_use: request.intended_use.as_str(),
        cause,
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
        let cause = if enabled().next().is_none() {
            NoPoolCause::NoneEnabled
        } else {
            NoPoolCause::NoneSelects
        };
        return Err(no_pool(cause));
    }
    chosen.retain(|p| p.allows(request.intended_use));
    if chosen.is_empty() {
        return Err(no_pool(NoPoolCause::NoneAllowsUse));
    }
    Ok(chosen)
}
