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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::affinity::AffinityState;
use crate::block::{Attribute, Block, BlockOwner, BlockProblem};
use crate::cidr::BlockCidr;
use crate::cooldown::Cooldown;
use crate::holder::Holder;
pub use crate::holder::PodRef;
use crate::plan::Now;
use crate::snapshot::Snapshot;
use crate::timestamp::{format_rfc3339, parse_rfc3339};

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

/// A check that needs outside knowledge and was not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SkippedCheck {
    /// No live pods were given: no `podGone` findings.
    PodLiveness,
    /// No live nodes were given: no `allocationNodeGone`, `blockNodeGone`
    /// or `affinityNodeGone` findings.
    NodeLiveness,
}

/// What is wrong. Declaration order is the tie-break order of findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FindingKind {
    /// The block is outside every pool, enabled or not (Calico's "orphaned
    /// allocation blocks"): left behind when a pool is deleted while in use.
    OrphanedBlock,
    /// The block is affine (`host:<node>`) to a node that no longer exists.
    BlockNodeGone,
    /// An affinity names a node that no longer exists.
    AffinityNodeGone,
    /// An attribute entry of the block is used by no allocation.
    UnusedAttribute,
    /// The ordinal is allocated and also listed in `unallocated`: it could be
    /// handed out twice.
    AllocatedButListedFree,
    /// The ordinal is neither allocated nor listed in `unallocated`: it can
    /// never be handed out.
    LostOrdinal,
    /// The ordinal is listed in `unallocated` more than once.
    ListedFreeTwice,
    /// The address is allocated in more than one (overlapping) block.
    AddressAllocatedTwice,
    /// The allocation's attribute has no `handle_id`: no release by handle
    /// can ever free it. (Released addresses have none by design and are
    /// judged by their cooldown instead.)
    AllocationWithoutHandle,
    /// The allocation names a handle that does not exist (Calico: "handles
    /// mentioned in blocks with no matching handle resource").
    HandleMissing,
    /// The allocation's `namespace`/`pod` names a pod that no longer exists
    /// (Calico: an IP "allocated in IPAM but not actually in use", leaked).
    PodGone,
    /// The allocation's `node` attribute names a node that no longer exists
    /// (a tunnel address, or a pod that died with its node).
    AllocationNodeGone,
    /// The handle records a different number of addresses in a block than
    /// the block holds for it.
    HandleCountMismatch,
    /// The handle holds no address in any block (Calico: "handles with no
    /// matching IPs", the report's `leakedHandles`).
    HandleWithoutAllocations,
    /// Two pools share addresses: blocks of one fall in the other, and an
    /// address may be handed out from both. Calico refuses to create such a
    /// pool; a race between two creates, or a writer that skips the check,
    /// can still leave one.
    PoolsOverlap,
    /// An affinity still pending long after its claim (see the module
    /// documentation): a claim that died before confirming it, or that lost
    /// the block and did not take it back.
    StalePendingAffinity,
    /// The address was released and its cooldown has passed, but it is not
    /// deallocated yet: nothing has written its block since (the
    /// collector's backstop frees it; any allocation from the block does).
    ReleasedPastCooldown,
    /// The address was released at a time still to come: a writer's clock
    /// is ahead (calicoctl's validateBlock: "releasedAt in the future,
    /// suggesting clock skew"), and the address stays out of use longer.
    ReleasedInFuture,
}

impl FindingKind {
    /// Whether this kind means the IPAM objects contradict one another, as
    /// opposed to state that agrees with itself but has outlived what it was
    /// for. Pods and nodes go away before their addresses are released
    /// (CNI DEL and garbage collection run later), and pools are deleted
    /// while blocks are in use, so `podGone`, `allocationNodeGone`,
    /// `blockNodeGone`, `affinityNodeGone` and `orphanedBlock` are leaks or
    /// leftovers, not inconsistencies; so is `stalePendingAffinity`, which
    /// counts as absent. Everything else is. Calico writes a
    /// handle before its block and releases from the block before the handle,
    /// so `handleWithoutAllocations` and `handleCountMismatch` can also show
    /// an operation caught half-way: check a quiet datastore, or check twice.
    /// An address past its cooldown (`releasedPastCooldown`) is a leftover
    /// too; one released in the future is wrong data, as calicoctl counts it.
    pub fn is_inconsistency(self) -> bool {
        !matches!(
            self,
            FindingKind::OrphanedBlock
                | FindingKind::BlockNodeGone
                | FindingKind::AffinityNodeGone
                | FindingKind::PodGone
                | FindingKind::AllocationNodeGone
                | FindingKind::StalePendingAffinity
                | FindingKind::ReleasedPastCooldown
        )
    }
}

/// One thing found wrong. See the module documentation for which fields
/// each kind sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// What is wrong.
    pub kind: FindingKind,
    /// The address concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    /// The block concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<BlockCidr>,
    /// The address's ordinal within the block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordinal: Option<u32>,
    /// The handle concerned (sanitised as Calico compares handles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<String>,
    /// The block's sequence number for the allocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<u64>,
    /// The allocation's pod, when it is a pod's address (both `namespace`
    /// and `pod` set and not empty; see [`crate::holder`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The allocation's pod's namespace, with `pod`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The allocation's `node` attribute when not empty, or the node of a
    /// block or affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The index into the block's `attributes` (`unusedAttribute`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute_index: Option<u32>,
    /// Addresses the handle records in the block (`handleCountMismatch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_by_handle: Option<u32>,
    /// Addresses the block holds for the handle (`handleCountMismatch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_in_block: Option<u32>,
    /// The pool concerned (`poolsOverlap`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// When the address was released, RFC 3339 (`releasedPastCooldown`,
    /// `releasedInFuture`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<String>,
    /// The first second it is free again, RFC 3339 (`releasedPastCooldown`,
    /// `releasedInFuture`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_from: Option<String>,
    /// The finding in words.
    pub message: String,
}

/// Counts over what was checked and found.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Blocks walked.
    pub blocks_checked: u64,
    /// Allocated ordinals over all blocks (Windows-reserved and released
    /// ones included; an address allocated in two blocks counts twice).
    pub addresses_in_use: u64,
    /// Of those, released addresses not yet deallocated.
    #[serde(default)]
    pub addresses_released: u64,
    /// Handle objects.
    pub handles: u64,
    /// Affinity objects, in any state.
    pub affinities: u64,
    /// Findings per kind; kinds with none are left out.
    pub findings_by_kind: BTreeMap<FindingKind, u64>,
}

/// The outcome of a check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    /// [`REPORT_SCHEMA_VERSION`] of the writer.
    pub schema_version: u32,
    /// Counts.
    pub summary: Summary,
    /// Checks not run for want of outside knowledge.
    pub skipped: Vec<SkippedCheck>,
    /// What was found, in the documented order.
    pub findings: Vec<Finding>,
}

impl CheckReport {
    /// True when no finding means the IPAM objects contradict one another
    /// (see [`FindingKind::is_inconsistency`]); leaks may still be listed.
    pub fn is_consistent(&self) -> bool {
        !self.findings.iter().any(|f| f.kind.is_inconsistency())
    }
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
            if let Some(released_at) = attribute.released_at {
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

impl CheckReport {
    /// Adds the findings of a check this report skipped and that was run
    /// elsewhere (ipamctl checks pods against the allocations ipam-server
    /// lists, for a report the server made without knowing pods): they are
    /// merged in the documented order and counted, and `ran` leaves
    /// `skipped`.
    pub fn add_findings(&mut self, ran: SkippedCheck, findings: Vec<Finding>) {
        self.skipped.retain(|s| *s != ran);
        self.findings.extend(findings);
        self.order_and_count();
    }

    // Sorts the findings in the documented order and counts them by kind.
    fn order_and_count(&mut self) {
        self.findings.sort_by(|a, b| {
            (
                a.block.is_none(),
                a.block,
                a.ordinal,
                &a.handle,
                a.kind,
                &a.node,
                &a.pool,
            )
                .cmp(&(
                    b.block.is_none(),
                    b.block,
                    b.ordinal,
                    &b.handle,
                    b.kind,
                    &b.node,
                    &b.pool,
                ))
        });
        self.summary.findings_by_kind.clear();
        for finding in &self.findings {
            *self
                .summary
                .findings_by_kind
                .entry(finding.kind)
                .or_default() += 1;
        }
    }
}

impl Finding {
    // A finding of `kind` with nothing filled in yet.
    fn new(kind: FindingKind) -> Finding {
        Finding {
            kind,
            address: None,
            block: None,
            ordinal: None,
            handle: None,
            sequence_number: None,
            pod: None,
            namespace: None,
            node: None,
            attribute_index: None,
            recorded_by_handle: None,
            held_in_block: None,
            pool: None,
            released_at: None,
            free_from: None,
            message: String::new(),
        }
    }

    // A finding about one allocation, carrying everything a release from
    // the report needs to free exactly that allocation and nothing since.
    fn allocation(
        kind: FindingKind,
        block: &Block,
        ordinal: u32,
        attribute: &Attribute,
    ) -> Finding {
        let holder = Holder::of(attribute);
        let pod = holder.pod();
        Finding {
            address: Some(block.cidr().address(ordinal)),
            block: Some(block.cidr()),
            ordinal: Some(ordinal),
            handle: attribute.handle().map(str::to_string),
            sequence_number: Some(block.sequence_number_of(ordinal)),
            namespace: pod.as_ref().map(|p| p.namespace.clone()),
            pod: pod.map(|p| p.name),
            node: holder.node().map(str::to_string),
            ..Finding::new(kind)
        }
    }
}

// Findings about a block as a whole and its own bookkeeping.
fn check_block(snapshot: &Snapshot, live: &Liveness, block: &Block, findings: &mut Vec<Finding>) {
    let cidr = block.cidr();
    if !snapshot
        .pools()
        .iter()
        .any(|p| overlaps(p.cidr(), cidr.net()))
    {
        findings.push(Finding {
            block: Some(cidr),
            node: block.owner().map(|o| o.name().to_string()),
            message: format!("block {cidr} is outside every IP pool (orphaned)"),
            ..Finding::new(FindingKind::OrphanedBlock)
        });
    }
    if let (Some(nodes), Some(BlockOwner::Host(node))) = (&live.nodes, block.owner()) {
        if !nodes.contains(node) {
            findings.push(Finding {
                block: Some(cidr),
                node: Some(node.clone()),
                message: format!("block {cidr} is affine to node {node}, which no longer exists"),
                ..Finding::new(FindingKind::BlockNodeGone)
            });
        }
    }
    let problems = block.problems();
    // Attribute entries are not public one by one; read the stored form
    // only for the rare block that has an unused one.
    let attributes = problems
        .iter()
        .any(|p| matches!(p, BlockProblem::UnusedAttribute(_)))
        .then(|| block.to_spec().attributes);
    for problem in problems {
        let finding = match problem {
            BlockProblem::AllocatedButListedFree(ordinal) => {
                let attribute = block
                    .attribute_of(ordinal)
                    .expect("an ordinal reported allocated has an attribute");
                Finding {
                    message: format!(
                        "{} is allocated in block {cidr} and also listed as free",
                        cidr.address(ordinal)
                    ),
                    ..Finding::allocation(
                        FindingKind::AllocatedButListedFree,
                        block,
                        ordinal,
                        attribute,
                    )
                }
            }
            BlockProblem::Lost(ordinal) => Finding {
                address: Some(cidr.address(ordinal)),
                block: Some(cidr),
                ordinal: Some(ordinal),
                message: format!(
                    "{} in block {cidr} is neither allocated nor listed as free",
                    cidr.address(ordinal)
                ),
                ..Finding::new(FindingKind::LostOrdinal)
            },
            BlockProblem::ListedFreeTwice(ordinal) => Finding {
                address: Some(cidr.address(ordinal)),
                block: Some(cidr),
                ordinal: Some(ordinal),
                message: format!(
                    "{} is listed as free more than once in block {cidr}",
                    cidr.address(ordinal)
                ),
                ..Finding::new(FindingKind::ListedFreeTwice)
            },
            BlockProblem::UnusedAttribute(index) => {
                let handle = attributes
                    .as_ref()
                    .and_then(|a| a.get(index as usize))
                    .and_then(|a| a.handle().map(str::to_string));
                Finding {
                    block: Some(cidr),
                    handle,
                    attribute_index: Some(index),
                    message: format!("attribute {index} of block {cidr} is used by no allocation"),
                    ..Finding::new(FindingKind::UnusedAttribute)
                }
            }
        };
        findings.push(finding);
    }
}

// A released address past its cooldown, or released in the future.
fn check_released(
    block: &Block,
    ordinal: u32,
    released_at: i64,
    cooldown: Cooldown,
    now: Now,
    findings: &mut Vec<Finding>,
) {
    let cidr = block.cidr();
    let address = cidr.address(ordinal);
    let (kind, message) = if released_at > now.unix_seconds() {
        (
            FindingKind::ReleasedInFuture,
            format!(
                "{address} in block {cidr} was released at {}, which is in the future: a writer's clock is ahead",
                format_rfc3339(released_at)
            ),
        )
    } else if cooldown.has_passed(released_at) {
        (
            FindingKind::ReleasedPastCooldown,
            format!(
                "{address} in block {cidr} was released at {} and free from {}, but is not deallocated yet",
                format_rfc3339(released_at),
                cooldown.free_from_rfc3339(released_at)
            ),
        )
    } else {
        return;
    };
    findings.push(Finding {
        address: Some(address),
        block: Some(cidr),
        ordinal: Some(ordinal),
        sequence_number: Some(block.sequence_number_of(ordinal)),
        released_at: Some(format_rfc3339(released_at)),
        free_from: Some(cooldown.free_from_rfc3339(released_at)),
        message,
        ..Finding::new(kind)
    });
}

// Findings about one allocation: its handle, its pod, its node.
fn check_allocation(
    snapshot: &Snapshot,
    live: &Liveness,
    block: &Block,
    ordinal: u32,
    attribute: &Attribute,
    findings: &mut Vec<Finding>,
) {
    let cidr = block.cidr();
    let address = cidr.address(ordinal);
    let at = |kind| Finding::allocation(kind, block, ordinal, attribute);
    let holder = Holder::of(attribute);
    match attribute.handle() {
        None => findings.push(Finding {
            message: format!("{address} in block {cidr} is allocated without a handle"),
            ..at(FindingKind::AllocationWithoutHandle)
        }),
        // Calico pre-allocates Windows-reserved addresses in the block and
        // creates no handle object for them (ipam_block.go, newBlock).
        Some(handle) if snapshot.handle(handle).is_none() && !holder.is_windows_reserved() => {
            findings.push(Finding {
                message: format!(
                    "{address}: handle {handle} is in use in block {cidr} but doesn't exist"
                ),
                ..at(FindingKind::HandleMissing)
            })
        }
        Some(_) => {}
    }
    if let Some(pods) = &live.pods {
        // Only a pod's address (see crate::holder) names a pod to look for.
        if let Some(pod) = holder.pod() {
            if !pods.contains(&pod) {
                findings.push(Finding {
                    message: format!(
                        "{address} leaked: pod {}/{} no longer exists",
                        pod.namespace, pod.name
                    ),
                    ..at(FindingKind::PodGone)
                });
            }
        }
    }
    if let Some(nodes) = &live.nodes {
        if let Some(node) = holder.node() {
            if !nodes.contains(node) {
                findings.push(Finding {
                    message: format!("{address} leaked: node {node} no longer exists"),
                    ..at(FindingKind::AllocationNodeGone)
                });
            }
        }
    }
}

// Findings about handles: none held anywhere, or counts that disagree with
// the blocks. Returns how many handles there are.
fn check_handles(
    snapshot: &Snapshot,
    held: &HashMap<&str, BTreeMap<BlockCidr, u32>>,
    findings: &mut Vec<Finding>,
) -> u64 {
    let mut handles: Vec<_> = snapshot.handles().collect();
    handles.sort_unstable_by(|a, b| a.id().cmp(b.id()));
    for handle in &handles {
        let Some(found) = held.get(handle.id()) else {
            let blocks: Vec<String> = handle.blocks().iter().map(|(b, _)| b.to_string()).collect();
            findings.push(Finding {
                handle: Some(handle.id().to_string()),
                message: format!(
                    "handle {} doesn't have any active IPs (it records {} in blocks [{}])",
                    handle.id(),
                    handle.total(),
                    blocks.join(", ")
                ),
                ..Finding::new(FindingKind::HandleWithoutAllocations)
            });
            continue;
        };
        // A handle that holds something is compared block by block, over
        // the blocks either side names.
        let mut counts: BTreeMap<BlockCidr, (u32, u32)> = BTreeMap::new();
        for &(cidr, n) in handle.blocks() {
            counts.entry(cidr).or_default().0 = n;
        }
        for (&cidr, &n) in found {
            counts.entry(cidr).or_default().1 = n;
        }
        for (cidr, (recorded, holds)) in counts {
            if recorded != holds {
                findings.push(Finding {
                    block: Some(cidr),
                    handle: Some(handle.id().to_string()),
                    recorded_by_handle: Some(recorded),
                    held_in_block: Some(holds),
                    message: format!(
                        "handle {} records {recorded} addresses in block {cidr} but the block holds {holds} for it",
                        handle.id()
                    ),
                    ..Finding::new(FindingKind::HandleCountMismatch)
                });
            }
        }
    }
    handles.len() as u64
}

// Every pair of pools that share addresses, whatever their state: a
// disabled pool's blocks still hold addresses.
fn check_pools(snapshot: &Snapshot, findings: &mut Vec<Finding>) {
    let mut pools: Vec<_> = snapshot.pools().iter().collect();
    pools.sort_unstable_by(|a, b| a.name().cmp(b.name()));
    for (i, pool) in pools.iter().enumerate() {
        for other in &pools[i + 1..] {
            if pool.overlaps(&other.cidr()) {
                findings.push(Finding {
                    pool: Some(pool.name().to_string()),
                    message: format!(
                        "pool {} ({}) overlaps pool {} ({})",
                        pool.name(),
                        pool.cidr(),
                        other.name(),
                        other.cidr()
                    ),
                    ..Finding::new(FindingKind::PoolsOverlap)
                });
            }
        }
    }
}

// Pending affinities whose claim is older than a claim can take, or that
// cannot be dated (see the module documentation).
fn check_pending_affinities(snapshot: &Snapshot, now: Now, findings: &mut Vec<Finding>) {
    for affinity in snapshot.affinities() {
        if affinity.state != AffinityState::Pending {
            continue;
        }
        let block = snapshot.block(&affinity.cidr);
        let claimed_at = block.and_then(Block::claim_time);
        let why = match (block, claimed_at.and_then(parse_rfc3339)) {
            (None, _) => "its block does not exist: a claim that died between its \
                          writes, or one under way"
                .to_string(),
            (Some(_), None) => "its block has no claim time to date it".to_string(),
            (Some(block), Some(at)) => {
                let age = now.unix_seconds() - at;
                if age < PENDING_AFFINITY_MAX_AGE_SECONDS {
                    continue;
                }
                let claimed = claimed_at.unwrap_or_default();
                match block.owner() {
                    Some(owner) if owner.is_host(&affinity.node) => format!(
                        "the node claimed the block {age} s ago ({claimed}) and never \
                         confirmed it"
                    ),
                    Some(owner) => format!(
                        "{owner} claimed the block {age} s ago ({claimed}); the losing \
                         claim never took its affinity back"
                    ),
                    None => format!("the block, claimed {age} s ago ({claimed}), has no owner"),
                }
            }
        };
        findings.push(Finding {
            block: Some(affinity.cidr),
            node: Some(affinity.node.clone()),
            message: format!(
                "affinity of node {} for block {} is still pending: {why}",
                affinity.node, affinity.cidr
            ),
            ..Finding::new(FindingKind::StalePendingAffinity)
        });
    }
}

// Affinities, in any state, whose node is not among `nodes`.
fn check_affinities(snapshot: &Snapshot, nodes: &BTreeSet<String>, findings: &mut Vec<Finding>) {
    for affinity in snapshot.affinities() {
        // A virtual affinity names a load-balancer owner, not a node.
        let is_virtual = affinity.affinity_type.as_deref() == Some("virtual");
        if is_virtual || nodes.contains(&affinity.node) {
            continue;
        }
        let state = match affinity.state.as_str() {
            "" => "no state",
            state => state,
        };
        findings.push(Finding {
            block: Some(affinity.cidr),
            node: Some(affinity.node.clone()),
            message: format!(
                "affinity of node {} for block {} ({state}) outlived its node",
                affinity.node, affinity.cidr
            ),
            ..Finding::new(FindingKind::AffinityNodeGone)
        });
    }
}

// Walks blocks in address order, keeping those that still reach the
// current block's base: only overlapping blocks can allocate one address
// twice, and the planner never makes them, so the open list stays short.
fn check_double_allocations(snapshot: &Snapshot, findings: &mut Vec<Finding>) {
    let mut open: Vec<&Block> = Vec::new();
    let mut holders: BTreeMap<IpAddr, BTreeSet<(BlockCidr, u32)>> = BTreeMap::new();
    for block in snapshot.blocks() {
        let cidr = block.cidr();
        open.retain(|o| {
            let other = o.cidr();
            other.version() == cidr.version()
                && other.base() + u128::from(other.size()) > cidr.base()
        });
        for earlier in &open {
            for (ordinal, _) in block.allocations() {
                let address = cidr.address(ordinal);
                let Some(other) = earlier.cidr().ordinal_of(address) else {
                    continue;
                };
                if earlier.is_allocated(other) {
                    let set = holders.entry(address).or_default();
                    set.insert((earlier.cidr(), other));
                    set.insert((cidr, ordinal));
                }
            }
        }
        open.push(block);
    }
    for (address, set) in holders {
        for &(cidr, ordinal) in &set {
            let block = snapshot
                .block(&cidr)
                .expect("holders come from the snapshot's blocks");
            let attribute = block
                .attribute_of(ordinal)
                .expect("holders are allocated ordinals");
            let others: Vec<String> = set
                .iter()
                .filter(|(c, _)| *c != cidr)
                .map(|(c, _)| c.to_string())
                .collect();
            findings.push(Finding {
                message: format!(
                    "{address} is allocated in block {cidr} and also in block(s) {}",
                    others.join(", ")
                ),
                ..Finding::allocation(
                    FindingKind::AddressAllocatedTwice,
                    block,
                    ordinal,
                    attribute,
                )
            });
        }
    }
}

// Whether two networks share an address (one contains the other's base),
// the rule `ipam show` uses to place a block under a pool.
fn overlaps(a: IpNet, b: IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::affinity::{Affinity, AffinityState};
    use crate::block::WINDOWS_RESERVED_HANDLE;
    use crate::cidr::IpVersion;
    use crate::config::IpamConfig;
    use crate::handle::Handle;
    use crate::plan::{AutoAssignRequest, Now};
    use crate::pool::{AllowedUse, Pool, PoolSpec};

    const T0: u64 = 1_700_000_000_000_000_000;
    /// When the checks run: the snapshots' claims are fresh then.
    const NOW: Now = Now { unix_nanos: T0 };
    const NODES: [&str; 3] = ["n1", "n2", "n3"];
    const PODS_PER_NODE: usize = 70;

    /// A snapshot built the way the planner builds one, and what lives.
    struct Cluster {
        s: Snapshot,
        pods: BTreeSet<PodRef>,
        nodes: BTreeSet<String>,
        step: u64,
    }

    impl Cluster {
        fn live(&self) -> Liveness {
            Liveness {
                pods: Some(self.pods.clone()),
                nodes: Some(self.nodes.clone()),
            }
        }

        fn report(&self) -> CheckReport {
            check(&self.s, &self.live(), NOW)
        }

        fn assign(&mut self, request: AutoAssignRequest) {
            self.step += 1;
            let now = Now {
                unix_nanos: T0 + self.step,
            };
            let plan = self.s.plan_auto_assign(&request, now).unwrap();
            self.s.apply(plan.plan);
        }

        fn add_pod(&mut self, node: &str, name: &str) {
            let mut request = AutoAssignRequest::new(format!("k8s-pod-network.{name}"), node, 1, 1);
            request.attributes = labels(&[("namespace", "default"), ("pod", name), ("node", node)]);
            self.assign(request);
            self.pods.insert(pod(name));
        }

        fn delete_pod(&mut self, name: &str) {
            let plan = self
                .s
                .plan_release_by_handle(&format!("k8s-pod-network.{name}"), NOW)
                .unwrap();
            self.s.apply(plan.plan);
            self.pods.remove(&pod(name));
        }

        /// The IPv4 block holding a pod's address.
        fn v4_block_of(&self, name: &str) -> BlockCidr {
            let handle = self.s.handle(&format!("k8s-pod-network.{name}")).unwrap();
            handle
                .blocks()
                .iter()
                .map(|(b, _)| *b)
                .find(|b| b.version() == IpVersion::V4)
                .unwrap()
        }
    }

    /// An IPv4 block with both allocated and free ordinals.
    fn v4_block_with_room(s: &Snapshot) -> BlockCidr {
        s.blocks()
            .find(|b| {
                b.cidr().version() == IpVersion::V4
                    && b.unallocated_len() > 0
                    && b.allocated_count() > 0
            })
            .expect("the cluster leaves room in some block")
            .cidr()
    }

    fn pool(name: &str, cidr: &str, block_size: u8) -> Pool {
        let spec = PoolSpec {
            block_size: Some(block_size),
            ..PoolSpec::new(cidr.parse().unwrap())
        };
        Pool::new(name, spec).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn pod(name: &str) -> PodRef {
        PodRef {
            namespace: "default".into(),
            name: name.into(),
        }
    }

    /// Three nodes, each with a tunnel address and more dual-stack pods
    /// than one block holds; every third pod deleted and as many started
    /// again, so ordinals have been returned, reused and attributes shifted.
    fn cluster() -> Cluster {
        let pools = vec![pool("v4", "10.0.0.0/16", 26), pool("v6", "fd00::/112", 122)];
        let mut c = Cluster {
            s: Snapshot::new(IpamConfig::default(), pools, &[]),
            pods: BTreeSet::new(),
            nodes: NODES.iter().map(|n| n.to_string()).collect(),
            step: 0,
        };
        for node in NODES {
            let mut tunnel = AutoAssignRequest::new(format!("ipip-tunnel-addr-{node}"), node, 1, 0);
            tunnel.attributes = labels(&[("node", node), ("type", "ipipTunnelAddress")]);
            tunnel.intended_use = AllowedUse::Tunnel;
            c.assign(tunnel);
            for i in 0..PODS_PER_NODE {
                c.add_pod(node, &format!("{node}-{i}"));
            }
        }
        for node in NODES {
            for i in (0..PODS_PER_NODE).step_by(3) {
                c.delete_pod(&format!("{node}-{i}"));
                c.add_pod(node, &format!("{node}-again-{i}"));
            }
        }
        c
    }

    /// Allocates `ordinal` (or the head of `unallocated`) in a stored block
    /// behind the planner's back, recording the block's sequence number as
    /// an allocation would; touches no handle.
    fn inject(
        s: &mut Snapshot,
        cidr: BlockCidr,
        ordinal: Option<u32>,
        handle: Option<&str>,
        pairs: &[(&str, &str)],
    ) -> u32 {
        let mut spec = s.block(&cidr).unwrap().to_spec();
        let ordinal = ordinal.unwrap_or(spec.unallocated[0]);
        spec.unallocated.retain(|&o| o != ordinal);
        spec.attributes.push(Attribute {
            handle_id: handle.map(str::to_string),
            secondary: pairs.iter().copied().collect(),
            ..Attribute::default()
        });
        spec.allocations[ordinal as usize] = Some(spec.attributes.len() as u32 - 1);
        spec.sequence_number_for_allocation
            .insert(ordinal.to_string(), spec.sequence_number);
        spec.sequence_number += 1;
        s.insert_block(Block::from_spec(spec).unwrap());
        ordinal
    }

    /// Records `count` more addresses of `handle` in `cidr` on its handle
    /// object, creating it if need be.
    fn hold(s: &mut Snapshot, handle: &str, cidr: BlockCidr, count: u32) {
        let mut h = s
            .handle(handle)
            .cloned()
            .unwrap_or_else(|| Handle::new(handle));
        h.increment(cidr, count);
        s.insert_handle(h);
    }

    /// The findings, after checking that they are all of `kind` and that
    /// there is at least one.
    fn only(report: &CheckReport, kind: FindingKind) -> Vec<Finding> {
        assert!(
            !report.findings.is_empty(),
            "expected {kind:?}, found nothing"
        );
        for f in &report.findings {
            assert_eq!(f.kind, kind, "{f:#?}");
        }
        report.findings.clone()
    }

    /// Every allocation finding carries the block's own sequence number.
    fn assert_sequence_numbers_are_the_blocks(s: &Snapshot, findings: &[Finding]) {
        for f in findings {
            let block = s.block(&f.block.unwrap()).unwrap();
            let ordinal = f.ordinal.unwrap();
            assert!(block.is_allocated(ordinal));
            assert_eq!(f.sequence_number, Some(block.sequence_number_of(ordinal)));
        }
    }

    fn kinds(report: &CheckReport) -> BTreeSet<FindingKind> {
        report.findings.iter().map(|f| f.kind).collect()
    }

    #[test]
    fn a_clean_cluster_after_many_assignments_and_releases_reports_nothing() {
        let c = cluster();
        let report = c.report();
        assert_eq!(report.findings, vec![], "{:#?}", report.findings);
        assert!(report.is_consistent());
        assert_eq!(report.skipped, vec![]);
        assert_eq!(report.schema_version, REPORT_SCHEMA_VERSION);
        let in_use: u64 = c.s.blocks().map(|b| u64::from(b.allocated_count())).sum();
        assert_eq!(
            report.summary,
            Summary {
                blocks_checked: c.s.blocks().count() as u64,
                addresses_in_use: in_use,
                addresses_released: 0,
                handles: c.s.handles().count() as u64,
                affinities: c.s.affinities().count() as u64,
                findings_by_kind: BTreeMap::new(),
            }
        );
        // Each pod holds one address per family, each node one tunnel address.
        assert_eq!(in_use, 2 * c.pods.len() as u64 + NODES.len() as u64);
        assert!(report.summary.blocks_checked > 2 * NODES.len() as u64);
    }

    #[test]
    fn pod_findings_added_to_a_report_made_without_pods_equal_a_check_that_knew_them() {
        let mut c = cluster();
        c.s.remove_handle("k8s-pod-network.n2-4");
        // Gone without a release: their addresses leak.
        c.pods.remove(&pod("n1-4"));
        c.pods.remove(&pod("n3-10"));
        let knowing = Liveness {
            pods: Some(c.pods.clone()),
            nodes: None,
        };
        let expected = check(&c.s, &knowing, NOW);
        let mut merged = check(&c.s, &Liveness::default(), NOW);
        let pod_findings: Vec<Finding> = expected
            .findings
            .iter()
            .filter(|f| f.kind == FindingKind::PodGone)
            .cloned()
            .collect();
        assert_eq!(pod_findings.len(), 4, "two pods, each dual-stack");
        merged.add_findings(SkippedCheck::PodLiveness, pod_findings);
        assert_eq!(merged, expected);
    }

    #[test]
    fn an_allocation_whose_handle_is_gone_is_reported_with_its_owner() {
        let mut c = cluster();
        c.s.remove_handle("k8s-pod-network.n2-4");
        let report = c.report();
        let found = only(&report, FindingKind::HandleMissing);
        assert_eq!(found.len(), 2, "one per family");
        for f in &found {
            assert_eq!(f.handle.as_deref(), Some("k8s-pod-network.n2-4"));
            assert_eq!(
                (f.pod.as_deref(), f.namespace.as_deref(), f.node.as_deref()),
                (Some("n2-4"), Some("default"), Some("n2"))
            );
            assert!(f.message.contains("doesn't exist"), "{}", f.message);
        }
        assert_sequence_numbers_are_the_blocks(&c.s, &found);
        assert!(!report.is_consistent());
    }

    #[test]
    fn windows_reserved_addresses_need_no_handle_object() {
        let mut c = cluster();
        let cidr = v4_block_with_room(&c.s);
        inject(
            &mut c.s,
            cidr,
            None,
            Some(WINDOWS_RESERVED_HANDLE),
            &[("note", "windows")],
        );
        assert_eq!(c.report().findings, vec![]);
    }

    #[test]
    fn a_handle_without_allocations_is_reported_once() {
        let mut c = cluster();
        let cidr = c.v4_block_of("n1-1");
        hold(&mut c.s, "k8s-pod-network.ghost", cidr, 2);
        c.s.insert_handle(Handle::new("k8s-pod-network.empty"));
        let report = c.report();
        let found = only(&report, FindingKind::HandleWithoutAllocations);
        let handles: Vec<_> = found.iter().map(|f| f.handle.as_deref().unwrap()).collect();
        assert_eq!(handles, ["k8s-pod-network.empty", "k8s-pod-network.ghost"]);
        assert!(found
            .iter()
            .all(|f| f.block.is_none() && f.address.is_none()));
        assert!(
            found[1].message.contains(&cidr.to_string()),
            "{}",
            found[1].message
        );
        assert!(!report.is_consistent());
    }

    #[test]
    fn handle_counts_that_differ_from_the_blocks_are_reported_per_block() {
        let mut c = cluster();
        // Records one more than its block holds.
        let own = c.v4_block_of("n1-1");
        hold(&mut c.s, "k8s-pod-network.n1-1", own, 1);
        // Records an address in a block that holds none for it.
        let elsewhere = c.v4_block_of("n3-1");
        hold(&mut c.s, "k8s-pod-network.n2-1", elsewhere, 1);
        // Records nothing where its block holds one.
        let mut h = c.s.handle("k8s-pod-network.n2-2").unwrap().clone();
        let v4 = c.v4_block_of("n2-2");
        h.decrement(v4, 1).unwrap();
        c.s.insert_handle(h);
        let report = c.report();
        let mut found: Vec<_> = only(&report, FindingKind::HandleCountMismatch)
            .into_iter()
            .map(|f| {
                (
                    f.handle.unwrap(),
                    f.block.unwrap(),
                    f.recorded_by_handle,
                    f.held_in_block,
                )
            })
            .collect();
        found.sort();
        assert_eq!(
            found,
            vec![
                ("k8s-pod-network.n1-1".to_string(), own, Some(2), Some(1)),
                (
                    "k8s-pod-network.n2-1".to_string(),
                    elsewhere,
                    Some(1),
                    Some(0)
                ),
                ("k8s-pod-network.n2-2".to_string(), v4, Some(0), Some(1)),
            ]
        );
        assert!(!report.is_consistent());
    }

    #[test]
    fn an_allocation_without_a_handle_id_is_reported() {
        let mut c = cluster();
        let cidr = v4_block_with_room(&c.s);
        let ordinal = inject(&mut c.s, cidr, None, None, &[]);
        let report = c.report();
        let found = only(&report, FindingKind::AllocationWithoutHandle);
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].block, found[0].ordinal, found[0].handle.as_deref()),
            (Some(cidr), Some(ordinal), None)
        );
        assert_eq!(found[0].address, Some(cidr.address(ordinal)));
        assert_sequence_numbers_are_the_blocks(&c.s, &found);
        assert!(!report.is_consistent());
    }

    #[test]
    fn the_addresses_of_a_pod_that_is_gone_are_leaks_with_their_sequence_numbers() {
        let mut c = cluster();
        c.pods.remove(&pod("n3-5"));
        let report = c.report();
        let found = only(&report, FindingKind::PodGone);
        assert_eq!(found.len(), 2, "one per family");
        assert!(found
            .iter()
            .all(|f| f.handle.as_deref() == Some("k8s-pod-network.n3-5")));
        assert_sequence_numbers_are_the_blocks(&c.s, &found);
        // Taken when the pod started, after the blocks were created.
        assert!(found.iter().all(|f| f.sequence_number > Some(T0)));
        assert!(report.is_consistent(), "a leak is not an inconsistency");
    }

    #[test]
    fn an_affinity_for_a_gone_node_is_reported_but_a_virtual_one_is_not() {
        let mut c = cluster();
        let free: BlockCidr = "10.0.200.0/26".parse().unwrap();
        c.s.insert_affinity(Affinity::new("gone", free, AffinityState::PendingDeletion));
        let mut virtual_affinity = Affinity::new(
            "lb",
            "10.0.201.0/26".parse().unwrap(),
            AffinityState::Confirmed,
        );
        virtual_affinity.affinity_type = Some("virtual".into());
        c.s.insert_affinity(virtual_affinity);
        let report = c.report();
        let found = only(&report, FindingKind::AffinityNodeGone);
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].block, found[0].node.as_deref()),
            (Some(free), Some("gone"))
        );
        assert!(found[0].message.contains("pending"), "{}", found[0].message);
        assert!(report.is_consistent());
    }

    #[test]
    fn a_block_affine_to_a_gone_node_is_reported_but_a_virtual_one_is_not() {
        let mut c = cluster();
        let orphan: BlockCidr = "10.0.200.0/26".parse().unwrap();
        c.s.insert_block(Block::new(
            orphan,
            Some(BlockOwner::Host("gone".into())),
            None,
            T0,
        ));
        let lb: BlockCidr = "10.0.201.0/26".parse().unwrap();
        c.s.insert_block(Block::new(
            lb,
            Some(BlockOwner::Virtual("lb".into())),
            None,
            T0,
        ));
        let report = c.report();
        let found = only(&report, FindingKind::BlockNodeGone);
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].block, found[0].node.as_deref()),
            (Some(orphan), Some("gone"))
        );
        assert!(report.is_consistent());
    }

    #[test]
    fn an_allocation_for_a_gone_node_is_reported() {
        let mut c = cluster();
        let cidr = v4_block_with_room(&c.s);
        let handle = "vxlan-tunnel-addr-gone";
        inject(
            &mut c.s,
            cidr,
            None,
            Some(handle),
            &[("node", "gone"), ("type", "vxlanTunnelAddress")],
        );
        hold(&mut c.s, handle, cidr, 1);
        let report = c.report();
        let found = only(&report, FindingKind::AllocationNodeGone);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].handle.as_deref(), Some(handle));
        assert_sequence_numbers_are_the_blocks(&c.s, &found);
        assert!(report.is_consistent());
    }

    #[test]
    fn when_a_node_goes_its_blocks_affinities_and_allocations_are_reported() {
        let mut c = cluster();
        c.nodes.remove("n3");
        let report = c.report();
        assert_eq!(
            kinds(&report),
            [
                FindingKind::BlockNodeGone,
                FindingKind::AffinityNodeGone,
                FindingKind::AllocationNodeGone
            ]
            .into()
        );
        let n3_blocks = c.s.affinities_of("n3").count() as u64;
        let n3_addresses =
            c.s.blocks()
                .flat_map(|b| {
                    b.allocations()
                        .map(|(_, a)| a.secondary.get("node"))
                        .collect::<Vec<_>>()
                })
                .filter(|n| *n == Some("n3"))
                .count() as u64;
        let by_kind = &report.summary.findings_by_kind;
        assert_eq!(by_kind[&FindingKind::BlockNodeGone], n3_blocks);
        assert_eq!(by_kind[&FindingKind::AffinityNodeGone], n3_blocks);
        assert_eq!(by_kind[&FindingKind::AllocationNodeGone], n3_addresses);
        assert!(report
            .findings
            .iter()
            .all(|f| f.node.as_deref() == Some("n3")));
        assert!(report.is_consistent());
    }

    #[test]
    fn an_address_allocated_in_two_overlapping_blocks_is_reported_for_both() {
        let mut c = cluster();
        // n1's tunnel address is the base of its first block and never released.
        let big = c.s.handle("ipip-tunnel-addr-n1").unwrap().blocks()[0].0;
        assert!(c.s.block(&big).unwrap().is_allocated(0));
        let small = BlockCidr::new(IpNet::new(big.net().network(), 28).unwrap()).unwrap();
        c.s.insert_block(Block::new(small, None, None, T0 + 1_000));
        let ordinal = inject(&mut c.s, small, Some(0), Some("dup"), &[]);
        hold(&mut c.s, "dup", small, 1);
        let report = c.report();
        let found = only(&report, FindingKind::AddressAllocatedTwice);
        let places: Vec<_> = found
            .iter()
            .map(|f| (f.block.unwrap(), f.ordinal.unwrap()))
            .collect();
        assert_eq!(places, [(big, 0), (small, ordinal)]);
        assert!(found.iter().all(|f| f.address == Some(big.address(0))));
        assert_eq!(found[0].handle.as_deref(), Some("ipip-tunnel-addr-n1"));
        assert_eq!(found[1].handle.as_deref(), Some("dup"));
        assert!(
            found[0].message.contains(&small.to_string()),
            "{}",
            found[0].message
        );
        assert_sequence_numbers_are_the_blocks(&c.s, &found);
        assert_ne!(found[0].sequence_number, found[1].sequence_number);
        assert!(!report.is_consistent());
    }

    #[test]
    fn overlapping_blocks_that_share_no_allocated_address_report_nothing() {
        let mut c = cluster();
        let big =
            c.s.blocks()
                .find(|b| b.cidr().version() == IpVersion::V4 && b.unallocated_len() > 0)
                .unwrap();
        let free = (0..big.cidr().size())
            .find(|&o| !big.is_allocated(o))
            .unwrap();
        let address = big.cidr().address(free);
        let small = BlockCidr::new(IpNet::new(address, 30).unwrap().trunc()).unwrap();
        c.s.insert_block(Block::new(small, None, None, T0));
        inject(
            &mut c.s,
            small,
            small.ordinal_of(address),
            Some("alone"),
            &[],
        );
        hold(&mut c.s, "alone", small, 1);
        assert_eq!(c.report().findings, vec![]);
    }

    /// An edit of a stored block.
    type Damage = Box<dyn Fn(&mut crate::block::BlockSpec)>;

    #[test]
    fn each_problem_a_block_has_with_itself_is_its_own_finding() {
        let c = cluster();
        let cidr = v4_block_with_room(&c.s);
        let spec = c.s.block(&cidr).unwrap().to_spec();
        let allocated = spec.allocations.iter().position(Option::is_some).unwrap() as u32;
        let free = spec.unallocated[0];
        let cases: Vec<(FindingKind, Damage)> = vec![
            (
                FindingKind::AllocatedButListedFree,
                Box::new(move |s| s.unallocated.push(allocated)),
            ),
            (
                FindingKind::LostOrdinal,
                Box::new(move |s| s.unallocated.retain(|&o| o != free)),
            ),
            (
                FindingKind::ListedFreeTwice,
                Box::new(move |s| s.unallocated.push(free)),
            ),
            (
                FindingKind::UnusedAttribute,
                Box::new(|s| {
                    s.attributes.push(Attribute {
                        handle_id: Some("stale".into()),
                        ..Attribute::default()
                    })
                }),
            ),
        ];
        for (kind, damage) in cases {
            let mut s = c.s.clone();
            let mut spec = spec.clone();
            damage(&mut spec);
            let attribute_count = spec.attributes.len() as u32;
            s.insert_block(Block::from_spec(spec).unwrap());
            let report = check(&s, &c.live(), NOW);
            let found = only(&report, kind);
            assert_eq!(found.len(), 1, "{kind:?}");
            let f = &found[0];
            assert_eq!(f.block, Some(cidr));
            match kind {
                FindingKind::AllocatedButListedFree => {
                    assert_eq!(f.ordinal, Some(allocated));
                    assert!(f.handle.is_some());
                    assert_sequence_numbers_are_the_blocks(&s, &found);
                }
                FindingKind::LostOrdinal | FindingKind::ListedFreeTwice => {
                    assert_eq!(
                        (f.ordinal, f.address),
                        (Some(free), Some(cidr.address(free)))
                    );
                }
                _ => {
                    assert_eq!(f.attribute_index, Some(attribute_count - 1));
                    assert_eq!(f.handle.as_deref(), Some("stale"));
                }
            }
            assert!(!report.is_consistent(), "{kind:?}");
        }
    }

    #[test]
    fn a_block_outside_every_pool_is_orphaned_but_not_inconsistent() {
        let mut c = cluster();
        let outside: BlockCidr = "192.168.0.0/26".parse().unwrap();
        c.s.insert_block(Block::new(
            outside,
            Some(BlockOwner::Host("n1".into())),
            None,
            T0,
        ));
        let report = c.report();
        let found = only(&report, FindingKind::OrphanedBlock);
        assert_eq!((found.len(), found[0].block), (1, Some(outside)));
        assert!(report.is_consistent());
    }

    #[test]
    fn liveness_checks_are_skipped_and_listed_when_not_given() {
        let mut c = cluster();
        c.s.insert_affinity(Affinity::new(
            "gone",
            "10.0.200.0/26".parse().unwrap(),
            AffinityState::Confirmed,
        ));
        let neither = check(&c.s, &Liveness::default(), NOW);
        assert_eq!(
            neither.skipped,
            [SkippedCheck::PodLiveness, SkippedCheck::NodeLiveness]
        );
        assert_eq!(neither.findings, vec![]);

        let no_pods = Liveness {
            pods: Some(BTreeSet::new()),
            nodes: None,
        };
        let report = check(&c.s, &no_pods, NOW);
        assert_eq!(report.skipped, [SkippedCheck::NodeLiveness]);
        assert_eq!(
            report.summary.findings_by_kind[&FindingKind::PodGone],
            2 * c.pods.len() as u64
        );
        assert_eq!(kinds(&report), [FindingKind::PodGone].into());

        let nodes_only = Liveness {
            pods: None,
            nodes: Some(c.nodes.clone()),
        };
        let report = check(&c.s, &nodes_only, NOW);
        assert_eq!(report.skipped, [SkippedCheck::PodLiveness]);
        assert_eq!(kinds(&report), [FindingKind::AffinityNodeGone].into());
    }

    /// A cluster with one finding of most kinds.
    fn damaged() -> Cluster {
        let mut c = cluster();
        c.s.remove_handle("k8s-pod-network.n2-4");
        c.pods.remove(&pod("n3-5"));
        let first = c.v4_block_of("n1-1");
        hold(&mut c.s, "k8s-pod-network.ghost", first, 1);
        let own = c.v4_block_of("n1-2");
        hold(&mut c.s, "k8s-pod-network.n1-2", own, 1);
        let cidr = v4_block_with_room(&c.s);
        inject(
            &mut c.s,
            cidr,
            None,
            None,
            &[("pod", "p"), ("namespace", "default")],
        );
        c.s.insert_block(Block::new(
            "192.168.0.0/26".parse().unwrap(),
            None,
            None,
            T0,
        ));
        c.nodes.remove("n2");
        c
    }

    #[test]
    fn findings_are_ordered_by_block_ordinal_and_handle_whatever_the_hash_order() {
        let c = damaged();
        let report = c.report();
        assert!(kinds(&report).len() >= 8, "{:?}", kinds(&report));
        let keys: Vec<_> = report
            .findings
            .iter()
            .map(|f| {
                (
                    f.block.is_none(),
                    f.block,
                    f.ordinal,
                    f.handle.clone(),
                    f.kind,
                )
            })
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        // Handles sit in a hash map; a copy hashes differently.
        assert_eq!(check(&c.s.clone(), &c.live(), NOW), report);
        let total: u64 = report.summary.findings_by_kind.values().sum();
        assert_eq!(total, report.findings.len() as u64);
    }

    #[test]
    fn the_report_round_trips_through_json_with_its_documented_names() {
        let c = damaged();
        let report = c.report();
        let json = serde_json::to_string_pretty(&report).unwrap();
        let back: CheckReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);

        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["schemaVersion"], REPORT_SCHEMA_VERSION);
        for key in ["blocksChecked", "addressesInUse", "handles", "affinities"] {
            assert!(value["summary"][key].is_u64(), "{key}");
        }
        assert_eq!(value["summary"]["findingsByKind"]["handleMissing"], 2);
        assert_eq!(value["skipped"], serde_json::json!([]));
        let leak = value["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["kind"] == "podGone")
            .unwrap();
        for key in [
            "address",
            "block",
            "ordinal",
            "handle",
            "sequenceNumber",
            "pod",
            "namespace",
            "node",
            "message",
        ] {
            assert!(!leak[key].is_null(), "{key} in {leak}");
        }
        assert!(
            leak.get("attributeIndex").is_none(),
            "absent fields are left out"
        );
        // A reader ignores fields it does not know.
        let mut extended = value.clone();
        extended["findings"][0]["futureField"] = serde_json::json!(1);
        let read: CheckReport = serde_json::from_value(extended).unwrap();
        assert_eq!(read, report);
    }

    #[test]
    fn every_pair_of_overlapping_pools_is_reported_once() {
        let pools = vec![
            pool("a", "10.0.0.0/16", 26),
            pool("b", "10.0.1.0/24", 26),
            pool("c", "10.1.0.0/16", 26),
            pool("d", "10.0.0.0/16", 26),
            pool("v6", "fd00::/112", 122),
        ];
        let s = Snapshot::new(IpamConfig::default(), pools, &[]);
        let report = check(&s, &Liveness::default(), NOW);
        assert_eq!(only(&report, FindingKind::PoolsOverlap).len(), 3);
        assert_eq!(
            report.findings[0].message,
            "pool a (10.0.0.0/16) overlaps pool b (10.0.1.0/24)"
        );
        assert_eq!(
            report
                .findings
                .iter()
                .map(|f| f.pool.as_deref())
                .collect::<Vec<_>>(),
            [Some("a"), Some("a"), Some("b")]
        );
        assert!(!report.is_consistent(), "overlapping pools contradict");
    }

    #[test]
    fn a_pending_affinity_is_reported_once_older_than_a_claim_can_take() {
        let pools = vec![pool("v4", "10.0.0.0/16", 26), pool("v6", "fd00::/112", 122)];
        let mut c = Cluster {
            s: Snapshot::new(IpamConfig::default(), pools, &[]),
            pods: BTreeSet::new(),
            nodes: BTreeSet::new(),
            step: 0,
        };
        c.add_pod("n1", "web");
        c.add_pod("n4", "db");
        let n1_block = c.v4_block_of("web");
        let n4_block = c.v4_block_of("db");
        let missing: BlockCidr = "10.0.255.0/26".parse().unwrap();
        // n2 lost n1's block and left its pending affinity behind; n4's
        // own claim stopped before confirming; n3's died before creating
        // its block.
        c.s.insert_affinity(Affinity::new("n2", n1_block, AffinityState::Pending));
        c.s.insert_affinity(Affinity::new("n4", n4_block, AffinityState::Pending));
        c.s.insert_affinity(Affinity::new("n3", missing, AffinityState::Pending));
        let claimed = |seconds: i64| Now {
            unix_nanos: T0 + (seconds as u64) * 1_000_000_000,
        };
        let stale = |now: Now| -> Vec<(String, BlockCidr)> {
            let report = check(&c.s, &Liveness::default(), now);
            assert!(report.is_consistent(), "a leftover, not a contradiction");
            only(&report, FindingKind::StalePendingAffinity)
                .iter()
                .map(|f| (f.node.clone().unwrap(), f.block.unwrap()))
                .collect()
        };
        // Undated: at once. Dated by the blocks' claim time: not while a
        // claim could still be under way.
        let undated = vec![("n3".to_string(), missing)];
        assert_eq!(stale(NOW), undated);
        assert_eq!(
            stale(claimed(PENDING_AFFINITY_MAX_AGE_SECONDS - 1)),
            undated
        );
        let mut all = vec![
            ("n2".to_string(), n1_block),
            ("n4".to_string(), n4_block),
            ("n3".to_string(), missing),
        ];
        all.sort_by_key(|(_, block)| *block);
        assert_eq!(stale(claimed(PENDING_AFFINITY_MAX_AGE_SECONDS)), all);
        let report = check(&c.s, &Liveness::default(), claimed(600));
        let messages: Vec<String> = only(&report, FindingKind::StalePendingAffinity)
            .into_iter()
            .map(|f| f.message)
            .collect();
        assert!(
            messages
                .iter()
                .any(|m| m.contains("host:n1 claimed the block 600 s ago")
                    && m.starts_with("affinity of node n2")),
            "{messages:#?}"
        );
        assert!(
            messages
                .iter()
                .any(|m| m.contains("the node claimed the block 600 s ago")
                    && m.contains("never confirmed")),
            "{messages:#?}"
        );
    }
}
