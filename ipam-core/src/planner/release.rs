//! Planning releases: of addresses, of a handle's addresses, and the
//! write-back of blocks whose released addresses have cooled.

use super::{Draft, DraftHandle, NodeLabels};
use crate::block::{sanitize_handle, ReleaseItem};
use crate::cidr::BlockCidr;
use crate::error::Error;
use crate::plan::{Now, Plan, ReleasePlan, ReleaseRequest};
use crate::snapshot::Snapshot;
use std::collections::BTreeMap;

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
        let handle_id = sanitize_handle(handle_id);
        let handle = self
            .handle(handle_id)
            .ok_or_else(|| Error::HandleNotFound {
                handle: handle_id.to_string(),
            })?;
        let mut draft = Draft::new(self, now);
        let stamp = draft.cooldown.release_stamp();
        let mut outcome = ReleasePlan::default();
        let mut freed = Vec::new();
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
            // Only a block the handle held addresses in is checked, as
            // releaseByHandle returns before ensureConsistentAffinity when
            // the block has none of them.
            if !released.ordinals.is_empty() {
                freed.push(*cidr);
            }
            outcome
                .released
                .extend(released.ordinals.iter().map(|&o| cidr.address(o)));
        }
        // Counts no block showed were stale or are fenced off above: the
        // handle goes as a whole rather than lingering as a leak.
        draft
            .handles
            .insert(handle.name().clone(), DraftHandle::Delete);
        draft.release_unselected_after(&freed, labels);
        outcome.plan = draft.finish(false);
        Ok(outcome)
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
