//! Planning releases: of addresses, of a handle's addresses, and the
//! write-back of blocks whose released addresses have cooled.

use super::{Draft, DraftHandle, NodeLabels};
use crate::block::{sanitize_handle, BlockOwner, ReleaseItem};
use crate::cidr::BlockCidr;
use crate::error::Error;
use crate::handle::Handle;
use crate::plan::{AutoAssignRequest, MixedPlan, Now, Plan, ReleasePlan, ReleaseRequest};
use crate::snapshot::Snapshot;
use std::collections::BTreeMap;
use std::net::IpAddr;

impl Snapshot {
    /// Plans the release of addresses at `now`: freed, or with a cooldown
    /// marked released. Stale expectations (handle or sequence number) fail
    /// the whole plan; free and already released addresses are reported.
    pub fn plan_release(
        &self,
        requests: &[ReleaseRequest],
        now: Now,
    ) -> Result<ReleasePlan, Error> {
        self.plan_release_with(requests, now, &NodeLabels::new())
    }

    /// [`Snapshot::plan_release`], keeping affinities consistent as
    /// Calico's ensureConsistentAffinity does (ipam.go, after
    /// releaseIPsFromBlock): a block the release leaves empty, affine to a
    /// node whose labels are in `labels` and held by an enabled pool whose
    /// nodeSelector no longer matches them, is deleted with its affinity
    /// (an [`AffinityRelease`](crate::plan::AffinityRelease) instead of a
    /// block update; the handles still follow the block). A node missing
    /// from `labels` keeps its blocks; [`Snapshot::hosts_to_label`] says
    /// whose labels are worth reading.
    pub fn plan_release_with(
        &self,
        requests: &[ReleaseRequest],
        now: Now,
        labels: &NodeLabels,
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
        let mut freed = Vec::new();
        for (cidr, items) in by_block {
            let released = draft.block_mut(cidr).release(&items, stamp)?;
            if !released.ordinals.is_empty() {
                draft.mark_changed(cidr);
                freed.push(cidr);
            }
            outcome
                .already_free
                .extend(released.already_free.iter().map(|&o| cidr.address(o)));
            outcome
                .released
                .extend(released.ordinals.iter().map(|&o| cidr.address(o)));
            for (handle, count) in released.by_handle {
                draft.count_for_handle(&handle, cidr, -i64::from(count), None);
            }
        }
        draft.release_unselected_after(&freed, labels);
        outcome.plan = draft.finish(false);
        Ok(outcome)
    }

    /// Plans the release of every address of a handle and the handle itself,
    /// at `now`: freed, or with a cooldown marked released.
    pub fn plan_release_by_handle(&self, handle_id: &str, now: Now) -> Result<ReleasePlan, Error> {
        self.plan_release_by_handle_with(handle_id, now, &NodeLabels::new())
    }

    /// [`Snapshot::plan_release_by_handle`], keeping affinities consistent
    /// as [`Snapshot::plan_release_with`] does (Calico's releaseByHandle
    /// calls ensureConsistentAffinity for each block it released from).
    pub fn plan_release_by_handle_with(
        &self,
        handle_id: &str,
        now: Now,
        labels: &NodeLabels,
    ) -> Result<ReleasePlan, Error> {
        let handle = self.handle_to_release(handle_id)?;
        let mut draft = Draft::new(self, now);
        let mut freed = Vec::new();
        let released = draft.release_handle(handle, &mut freed);
        draft.release_unselected_after(&freed, labels);
        Ok(ReleasePlan {
            plan: draft.finish(false),
            released,
            already_free: Vec::new(),
        })
    }

    /// Plans a node's releases by handle and then its auto-assignments, in
    /// one draft and so as one set of writes: a block both touch is written
    /// once. Each assignment succeeds or fails on its own, as in
    /// [`Snapshot::plan_auto_assign_batch`]; an unknown handle fails the
    /// whole plan. The plan's order is a release's (blocks first), while it
    /// also creates handles: it is for a store that writes the plan
    /// atomically, where order cannot leave a crash half-way.
    ///
    /// `None` when planning together could choose other addresses than
    /// releasing and then assigning, one plan after the other. The
    /// assignments see the blocks the releases changed, but not the
    /// snapshot's indexes of blocks with room, which only a written plan
    /// updates: so every block released from must have had room already,
    /// and be a block of the requests' node (an empty block of no node is
    /// deleted once written, and another node's empty block may be
    /// reclaimed: neither would show either).
    pub fn plan_release_and_assign(
        &self,
        handles: &[&str],
        requests: &[AutoAssignRequest],
        now: Now,
        labels: &NodeLabels,
    ) -> Result<Option<MixedPlan>, Error> {
        let handles = handles
            .iter()
            .map(|id| self.handle_to_release(id))
            .collect::<Result<Vec<_>, _>>()?;
        let mut draft = Draft::new(self, now);
        let mut freed = Vec::new();
        let released = handles
            .into_iter()
            .map(|handle| draft.release_handle(handle, &mut freed))
            .collect();
        let of_the_requests = |owner: Option<&BlockOwner>| match owner {
            Some(BlockOwner::Host(node)) => requests.iter().all(|r| r.node.as_str() == node),
            _ => false,
        };
        let indexed_alike = freed.iter().all(|cidr| {
            self.block(cidr)
                .is_some_and(|b| b.unallocated_len() > 0 && of_the_requests(b.owner()))
        });
        if !indexed_alike {
            return Ok(None);
        }
        draft.release_unselected_after(&freed, labels);
        let outcomes = requests
            .iter()
            .map(|request| draft.assign_one_of_many(request))
            .collect();
        Ok(Some(MixedPlan {
            plan: draft.finish(false),
            released,
            outcomes,
        }))
    }

    fn handle_to_release(&self, handle_id: &str) -> Result<&Handle, Error> {
        let handle_id = sanitize_handle(handle_id);
        self.handle(handle_id).ok_or_else(|| Error::HandleNotFound {
            handle: handle_id.to_string(),
        })
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

impl Draft<'_> {
    /// Releases every address of a handle in the draft and deletes the
    /// handle; adds the blocks it held addresses in to `freed`. Returns
    /// the addresses released.
    fn release_handle(&mut self, handle: &Handle, freed: &mut Vec<BlockCidr>) -> Vec<IpAddr> {
        let handle_id = handle.name().as_str();
        let stamp = self.cooldown.release_stamp();
        let mut released_all = Vec::new();
        for (cidr, _) in handle.blocks() {
            // A handle only counts addresses in blocks that existed when it
            // counted them (claims finish first, see `Draft::finish`), and
            // an assignment still to write a block that has gone since
            // fails its compare-and-swap: a count in a missing block is
            // stale.
            if self.snapshot.block(cidr).is_none() {
                continue;
            }
            let released = self
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
            self.mark_changed(*cidr);
            // Only a block the handle held addresses in is checked, as
            // releaseByHandle returns before ensureConsistentAffinity when
            // the block has none of them.
            if !released.ordinals.is_empty() {
                freed.push(*cidr);
            }
            released_all.extend(released.ordinals.iter().map(|&o| cidr.address(o)));
        }
        // Counts no block showed were stale or are fenced off above: the
        // handle goes as a whole rather than lingering as a leak.
        self.handles
            .insert(handle.name().clone(), DraftHandle::Delete);
        released_all
    }
}
