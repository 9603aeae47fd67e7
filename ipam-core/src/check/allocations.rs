//! Findings about blocks and the allocations in them: a block's own
//! bookkeeping, its pool and node, released addresses past their cooldown,
//! each allocation's handle, pod and node (read by [`crate::holder`]), and
//! addresses allocated in two blocks.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use super::{Finding, FindingKind, Liveness};
use crate::block::{Attribute, Block, BlockOwner, BlockProblem};
use crate::cidr::BlockCidr;
use crate::cooldown::Cooldown;
use crate::holder::Holder;
use crate::plan::Now;
use crate::snapshot::Snapshot;
use crate::timestamp::format_rfc3339;

// Findings about a block as a whole and its own bookkeeping.
pub(super) fn check_block(
    snapshot: &Snapshot,
    live: &Liveness,
    block: &Block,
    findings: &mut Vec<Finding>,
) {
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
pub(super) fn check_released(
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
pub(super) fn check_allocation(
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

// Walks blocks in address order, keeping those that still reach the
// current block's base: only overlapping blocks can allocate one address
// twice, and the planner never makes them, so the open list stays short.
pub(super) fn check_double_allocations(snapshot: &Snapshot, findings: &mut Vec<Finding>) {
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
