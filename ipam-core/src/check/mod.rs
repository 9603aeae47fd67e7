//! `ipam check`: a consistency check over a [`Snapshot`] holding every
//! block, handle and affinity, the core of what `calicoctl ipam check`
//! reports (calicoctl/commands/ipam/check.go). It backs the server's
//! `GET /v1/check` and `ipamctl check`, whose report file `ipamctl release
//! --from-report` reads back; so the report is a stable, documented schema.
//!
//! The check only reads: it never repairs. What exists in Kubernetes (pods,
//! nodes) is not the core's to look up; a caller that knows passes the live
//! sets in [`Liveness`], and a set left out is a check skipped and listed in
//! [`CheckReport::skipped`]. The check is made as of a time the caller
//! passes, against which released addresses are judged (IP cooldown):
//! within their cooldown they are in use and nobody's, which is fine (as
//! calicoctl's check, which skips addresses `CoolingDown`); past it they
//! should have been deallocated, and are reported; released in the future
//! means a writer's clock is ahead, as calicoctl's validateBlock says.
//!
//! # Report schema (version [`REPORT_SCHEMA_VERSION`])
//!
//! ```json
//! {
//!   "schemaVersion": 2,
//!   "summary": {
//!     "blocksChecked": 3, "addressesInUse": 41, "addressesReleased": 0,
//!     "handles": 40, "affinities": 3,
//!     "findingsByKind": { "podGone": 1 }
//!   },
//!   "skipped": ["nodeLiveness"],
//!   "findings": [{
//!     "kind": "podGone",
//!     "address": "10.0.0.7", "block": "10.0.0.0/26", "ordinal": 7,
//!     "handle": "k8s-pod-network.3f2a", "sequenceNumber": 1700000000000000000,
//!     "pod": "web-1", "namespace": "default", "node": "n1",
//!     "message": "10.0.0.7 leaked: pod default/web-1 no longer exists"
//!   }]
//! }
//! ```
//!
//! Fields a finding does not have are left out. `address`, `ordinal`,
//! `handle` (when the allocation names one) and `sequenceNumber` are set on
//! every finding about one allocation; `sequenceNumber` is the block's
//! record for that ordinal, so that a release from the report can refuse an
//! address handed out again since (Calico's release.go passes it on in
//! `ReleaseOptions`); a released address has no handle. `releasedAt` and
//! `freeFrom` are set on `releasedPastCooldown` and `releasedInFuture`;
//! `attributeIndex` on `unusedAttribute`; `recordedByHandle` and
//! `heldInBlock` on `handleCountMismatch`; `pool` on `poolsOverlap` (the
//! first of the two by name; the message names both); `block` and `node` on
//! `stalePendingAffinity`. Findings are ordered by block (findings about no
//! block last), ordinal (findings about the whole block first), handle,
//! kind, node and pool. Readers ignore fields they do not know; a new kind,
//! or a field whose meaning changes, raises
//! `schemaVersion`, so that a reader can refuse a report it would misread.
//! Version 2 added `poolsOverlap`, `stalePendingAffinity`,
//! `releasedPastCooldown`, `releasedInFuture` and the fields `pool`,
//! `releasedAt` and `freeFrom`; a version 1 report reads as version 2.
//!
//! # Pending affinities
//!
//! A claim writes its node's affinity `pending`, creates the block, then
//! confirms the affinity; a claim that loses the block to another node
//! deletes its pending affinity (Calico: claimAffineBlock in
//! ipam_block_reader_writer.go). A pending affinity counts as absent
//! (ipam.go, getBlockFromAffinity; confd ignores them), so one left behind
//! harms nothing but is never cleaned up either: Calico only reuses it when
//! the same node claims the same block again (getPendingAffinity), and
//! neither `calicoctl ipam check` nor kube-controllers look at them.
//!
//! A BlockAffinity carries no time, so a pending one is dated by its
//! block's `affinityClaimTime`: the claim it took part in created that
//! block, or lost to the claim that did. It is reported once that is
//! [`PENDING_AFFINITY_MAX_AGE_SECONDS`] old, far longer than a claim takes:
//! a claim's few writes are bounded by the engine's retry budget and by
//! its callers' deadlines (ipam-server's request timeout and the CNI
//! plugin's `timeout_seconds`, 30 s by default each). One whose block does
//! not exist, or has no claim time, cannot be dated and is reported at
//! once: on a quiet datastore it is a claim that died between its writes.

mod allocations;
mod objects;
mod report;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::cidr::BlockCidr;
pub use crate::holder::PodRef;
use crate::plan::Now;
use crate::snapshot::Snapshot;
use allocations::{check_allocation, check_block, check_double_allocations, check_released};
use objects::{check_affinities, check_handles, check_pending_affinities, check_pools};
pub use report::{CheckReport, Finding, FindingKind, SkippedCheck, Summary};

/// The version written in [`CheckReport::schema_version`].
pub const REPORT_SCHEMA_VERSION: u32 = 2;

/// How old a pending affinity's claim may be before it is reported: ten
/// times the longest a request may run (30 s), so that no claim still under
/// way is reported (see the module documentation).
pub const PENDING_AFFINITY_MAX_AGE_SECONDS: i64 = 300;

/// What exists outside IPAM, when the caller knows it. `None` skips the
/// checks that need it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Liveness {
    /// Every pod that exists, or `None` to skip the pod check.
    pub pods: Option<BTreeSet<PodRef>>,
    /// Every node that exists, or `None` to skip the node checks.
    pub nodes: Option<BTreeSet<String>>,
}

/// Checks every block, handle and affinity of `snapshot` as of `now`, and,
/// where `live` says what exists, the pods and nodes they name.
///
/// `now` dates pending affinities and released addresses; the core has no
/// clock.
pub fn check(snapshot: &Snapshot, live: &Liveness, now: Now) -> CheckReport {
    let cooldown = snapshot.config().cooldown(now);
    let mut findings = Vec::new();
    let mut summary = Summary::default();
    // What each handle holds, block by block, as the blocks say.
    let mut held: HashMap<&str, BTreeMap<BlockCidr, u32>> = HashMap::new();
    for block in snapshot.blocks() {
        summary.blocks_checked += 1;
        check_block(snapshot, live, block, &mut findings);
        for (ordinal, attribute) in block.allocations() {
            summary.addresses_in_use += 1;
            if let Some(released_at) = attribute.released_at() {
                summary.addresses_released += 1;
                check_released(block, ordinal, released_at, cooldown, now, &mut findings);
                continue;
            }
            if let Some(handle) = attribute.handle() {
                *held
                    .entry(handle)
                    .or_default()
                    .entry(block.cidr())
                    .or_default() += 1;
            }
            check_allocation(snapshot, live, block, ordinal, attribute, &mut findings);
        }
    }
    check_double_allocations(snapshot, &mut findings);
    summary.handles = check_handles(snapshot, &held, &mut findings);
    check_pools(snapshot, &mut findings);
    check_pending_affinities(snapshot, now, &mut findings);
    if let Some(nodes) = &live.nodes {
        check_affinities(snapshot, nodes, &mut findings);
    }
    let skipped = [
        (live.pods.is_none(), SkippedCheck::PodLiveness),
        (live.nodes.is_none(), SkippedCheck::NodeLiveness),
    ]
    .into_iter()
    .filter_map(|(skipped, check)| skipped.then_some(check))
    .collect();
    summary.affinities = snapshot.affinities().count() as u64;

    let mut report = CheckReport {
        schema_version: REPORT_SCHEMA_VERSION,
        summary,
        skipped,
        findings,
    };
    report.order_and_count();
    report
}
