//! The report `ipam check` writes: what is found, how it is counted and
//! ordered, and the schema documented in [`crate::check`].

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::block::{Attribute, Block};
use crate::cidr::BlockCidr;
use crate::holder::Holder;

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
    pub(super) fn order_and_count(&mut self) {
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
    pub(super) fn new(kind: FindingKind) -> Finding {
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
    pub(super) fn allocation(
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
