//! Findings about the objects beside blocks: handles whose counts
//! disagree with the blocks, overlapping pools, and affinities that are
//! stale or outlived their node.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{Finding, FindingKind, PENDING_AFFINITY_MAX_AGE_SECONDS};
use crate::affinity::AffinityState;
use crate::block::Block;
use crate::cidr::BlockCidr;
use crate::plan::Now;
use crate::snapshot::Snapshot;
use crate::timestamp::parse_rfc3339;

// Findings about handles: none held anywhere, or counts that disagree with
// the blocks. Returns how many handles there are.
pub(super) fn check_handles(
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
pub(super) fn check_pools(snapshot: &Snapshot, findings: &mut Vec<Finding>) {
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
pub(super) fn check_pending_affinities(snapshot: &Snapshot, now: Now, findings: &mut Vec<Finding>) {
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
pub(super) fn check_affinities(
    snapshot: &Snapshot,
    nodes: &BTreeSet<String>,
    findings: &mut Vec<Finding>,
) {
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
