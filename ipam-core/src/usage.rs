//! Usage summaries: what `calicoctl ipam show` and its flags print, computed
//! from a snapshot (calicoctl/commands/ipam/show.go and ipam.go,
//! GetUtilization).
//!
//! Released addresses (in or past their cooldown, not yet deallocated) are
//! in use as calicoctl counts them: GetUtilization reads blocks as stored,
//! without garbageCollect, and counts the block size minus `unallocated`.
//! They are also counted apart, for metrics and the usage page.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::block::{Attribute, Block};
use crate::cidr::BlockCidr;
use crate::holder::Holder;
use crate::plan::Now;
use crate::snapshot::Snapshot;
use crate::timestamp::format_rfc3339;

/// Figures for one block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockUsage {
    /// The block.
    pub cidr: BlockCidr,
    /// Its addresses.
    pub capacity: u32,
    /// Addresses not free: Calico counts the block size minus the length of
    /// `unallocated`, so Windows-reserved addresses count as used.
    pub in_use: u32,
    /// The node (or virtual owner) the block is affine to.
    pub owner: Option<String>,
    /// Allocated addresses whose `node` attribute names another node.
    pub borrowed: u32,
    /// Released addresses not yet deallocated (counted in `in_use` too).
    pub released: u32,
}

/// Figures for one pool and its blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolUsage {
    /// The pool's name.
    pub name: String,
    /// Its range.
    pub cidr: IpNet,
    /// Addresses in the range.
    pub capacity: u128,
    /// Addresses in use in its blocks.
    pub in_use: u128,
    /// Released addresses not yet deallocated in its blocks (counted in
    /// `in_use` too).
    pub released: u128,
    /// Its blocks, ordered as Calico lists them (by object name).
    pub blocks: Vec<BlockUsage>,
}

/// Usage of every pool, plus blocks that no pool covers any more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// Pools ordered by name, as Calico lists them.
    pub pools: Vec<PoolUsage>,
    /// Blocks outside every pool (Calico's "orphaned allocation blocks").
    pub orphaned_blocks: Vec<BlockUsage>,
}

/// Per-pool and per-block usage. A block counts under the first pool (by
/// name) that overlaps it, as in Calico's GetUtilization.
pub fn usage(snapshot: &Snapshot) -> Usage {
    let mut pools: Vec<PoolUsage> = snapshot
        .pools()
        .iter()
        .map(|p| PoolUsage {
            name: p.name().to_string(),
            cidr: p.cidr(),
            // `::/0` holds 2^128 addresses, one more than a u128: it
            // saturates (Calico reports sizes as floats).
            capacity: 1u128
                .checked_shl(u32::from(p.cidr().max_prefix_len() - p.cidr().prefix_len()))
                .unwrap_or(u128::MAX),
            in_use: 0,
            released: 0,
            blocks: Vec::new(),
        })
        .collect();
    let mut orphaned_blocks = Vec::new();
    let mut blocks: Vec<&Block> = snapshot.blocks().collect();
    blocks.sort_by_cached_key(|b| b.cidr().object_name());
    for block in blocks {
        let figures = block_usage(block);
        let net = block.cidr().net();
        match pools
            .iter_mut()
            .find(|p| p.cidr.contains(&net.network()) || net.contains(&p.cidr.network()))
        {
            Some(pool) => {
                pool.in_use += u128::from(figures.in_use);
                pool.released += u128::from(figures.released);
                pool.blocks.push(figures);
            }
            None => orphaned_blocks.push(figures),
        }
    }
    Usage {
        pools,
        orphaned_blocks,
    }
}

/// Figures for one block.
pub fn block_usage(block: &Block) -> BlockUsage {
    let owner = block.owner().map(|o| o.name().to_string());
    let borrowed = block
        .allocations()
        .filter(|(_, a)| borrowing_node(a, owner.as_deref()).is_some())
        .count() as u32;
    BlockUsage {
        cidr: block.cidr(),
        capacity: block.cidr().size(),
        in_use: block.cidr().size() - block.unallocated_len(),
        owner,
        borrowed,
        released: block.released().count() as u32,
    }
}

/// An address used by a node other than its block's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BorrowedAddress {
    /// The address.
    pub address: IpAddr,
    /// The node that uses it.
    pub borrowing_node: String,
    /// Its block.
    pub block: BlockCidr,
    /// The block's owner (empty when the block has no affinity).
    pub block_owner: String,
    /// `pod`, `vmi`, or the allocation's `type` attribute.
    pub kind: String,
    /// `<namespace>/<pod>` or `<namespace>/<vmi>`; empty otherwise.
    pub allocated_to: String,
}

/// Borrowed addresses across all blocks, and how many allocations carry no
/// `node` attribute (or an empty one, read as none: see [`crate::holder`])
/// and so cannot be classified (calicoctl show.go, getBorrowedIPs). A released address has no owner attributes, so
/// calicoctl counts it among those; so does this.
pub fn borrowed(snapshot: &Snapshot) -> (Vec<BorrowedAddress>, u32) {
    let mut found = Vec::new();
    let mut unclassified = 0;
    for block in snapshot.blocks() {
        let owner = block
            .owner()
            .map(|o| o.name().to_string())
            .unwrap_or_default();
        for (ordinal, attribute) in block.allocations() {
            let address = block.cidr().address(ordinal);
            match classify(address, block.cidr(), &owner, |key| {
                attribute.secondary().get(key)
            }) {
                Borrowing::Borrowed(b) => found.push(b),
                Borrowing::Unclassified => unclassified += 1,
                Borrowing::Own => {}
            }
        }
    }
    (found, unclassified)
}

/// Whether one allocation is borrowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Borrowing {
    /// Used by the block's owner.
    Own,
    /// Used by another node, or from a block with no owner.
    Borrowed(BorrowedAddress),
    /// No `node` attribute, or an empty one: cannot be told.
    Unclassified,
}

/// Classifies one allocation of `block`, whose owner's name is
/// `block_owner` (empty when it has no affinity), from its attributes
/// (`attribute(key)`), as calicoctl's getBorrowedIPs does, except that
/// attributes are read as [`Holder`] reads them: an empty `node` is none,
/// and a `pod` without a `namespace` is not a pod's. For callers that
/// hold allocations without a [`Snapshot`] (ipamctl through ipam-server's
/// API).
pub fn classify<'a>(
    address: IpAddr,
    block: BlockCidr,
    block_owner: &str,
    attribute: impl Fn(&str) -> Option<&'a str>,
) -> Borrowing {
    // The handle plays no part here: calicoctl reads attributes only.
    let holder = Holder::read(None, attribute);
    let Some(node) = holder.node() else {
        return Borrowing::Unclassified;
    };
    if node == block_owner {
        return Borrowing::Own;
    }
    let (kind, allocated_to) = match holder {
        Holder::Pod {
            namespace,
            vmi: Some(vmi),
            ..
        } => ("vmi".to_string(), format!("{namespace}/{vmi}")),
        Holder::Pod { namespace, pod, .. } => ("pod".to_string(), format!("{namespace}/{pod}")),
        Holder::Tunnel { kind, .. } => (kind.as_str().to_string(), String::new()),
        Holder::Node { kind, .. } => (kind.unwrap_or_default().to_string(), String::new()),
        Holder::WindowsReserved { .. } | Holder::Service { .. } | Holder::Nobody => {
            (String::new(), String::new())
        }
    };
    Borrowing::Borrowed(BorrowedAddress {
        address,
        borrowing_node: node.to_string(),
        block,
        block_owner: block_owner.to_string(),
        kind,
        allocated_to,
    })
}

fn borrowing_node<'a>(attribute: &'a Attribute, owner: Option<&str>) -> Option<&'a str> {
    Holder::of(attribute)
        .node()
        .filter(|node| Some(*node) != owner)
}

/// What is known of one address (`ipam show --ip`).
#[derive(Debug, Clone, PartialEq)]
pub enum AddressStatus {
    /// Allocated.
    InUse {
        /// Its block.
        block: BlockCidr,
        /// Its handle, if the allocation has one.
        handle: Option<String>,
        /// Owner details (pod, namespace, node ...).
        attributes: BTreeMap<String, String>,
    },
    /// Released and in its cooldown: held by nobody, not yet free (Calico's
    /// GetAssignmentAttributes answers ErrorIPInCooldown).
    InCooldown {
        /// Its block.
        block: BlockCidr,
        /// When it was released (RFC 3339).
        released_at: String,
        /// The first second at which it is free again (RFC 3339).
        free_from: String,
    },
    /// In a pool, not allocated.
    Free {
        /// The pool's name.
        pool: String,
    },
    /// Outside every pool and every block.
    NotInPool,
}

/// Whether an address is in use and by whom, at `now`. Its block is read
/// as Calico's GetAssignmentAttributes reads it (blockFromBackend): a
/// released address past its cooldown is free.
pub fn address_status(snapshot: &Snapshot, address: IpAddr, now: Now) -> AddressStatus {
    if let Some(block) = snapshot.block_containing(address) {
        let cooldown = snapshot.config().cooldown(now);
        let attribute = block.attribute_of_address(address);
        match attribute.map(|a| (a, a.released_at())) {
            Some((_, Some(at))) if !cooldown.has_passed(at) => {
                return AddressStatus::InCooldown {
                    block: block.cidr(),
                    released_at: format_rfc3339(at),
                    free_from: cooldown.free_from_rfc3339(at),
                }
            }
            Some((attribute, None)) => {
                return AddressStatus::InUse {
                    block: block.cidr(),
                    handle: attribute.handle().map(str::to_string),
                    attributes: attribute.secondary().to_map(),
                }
            }
            _ => {}
        }
    }
    match snapshot.pool_of(address) {
        Some(pool) => AddressStatus::Free {
            pool: pool.name().to_string(),
        },
        None => AddressStatus::NotInPool,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::BlockOwner;

    fn block(pairs: &[&[(&str, &str)]]) -> Block {
        let cidr = BlockCidr::new("10.0.0.0/26".parse().unwrap()).unwrap();
        let mut block = Block::new(cidr, Some(BlockOwner::Host("n1".into())), None, 1);
        for (ordinal, attributes) in pairs.iter().enumerate() {
            let attributes = attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            block
                .assign(ordinal as u32, &format!("h{ordinal}"), &attributes)
                .unwrap();
        }
        block
    }

    #[test]
    fn an_empty_node_is_unclassified_and_never_borrowing() {
        let b = block(&[
            &[("namespace", "ns"), ("pod", "p"), ("node", "")],
            &[("namespace", "ns"), ("pod", "q"), ("node", "n2")],
        ]);
        assert_eq!(block_usage(&b).borrowed, 1);
        let attribute = |ordinal| {
            let a = b.attribute_of(ordinal).unwrap();
            move |key: &str| a.secondary().get(key)
        };
        let address = |ordinal| b.cidr().address(ordinal);
        assert_eq!(
            classify(address(0), b.cidr(), "n1", attribute(0)),
            Borrowing::Unclassified
        );
        // Not even from a block affine to no node, whose owner reads "".
        assert_eq!(
            classify(address(0), b.cidr(), "", attribute(0)),
            Borrowing::Unclassified
        );
        let Borrowing::Borrowed(borrowed) = classify(address(1), b.cidr(), "n1", attribute(1))
        else {
            panic!("n2 borrows from n1's block");
        };
        assert_eq!(
            (borrowed.kind.as_str(), borrowed.allocated_to.as_str()),
            ("pod", "ns/q")
        );
    }

    #[test]
    fn an_empty_pod_or_a_pod_without_namespace_is_listed_by_its_type() {
        let b = block(&[
            &[("namespace", "ns"), ("pod", ""), ("node", "n2")],
            &[("pod", "p"), ("node", "n2"), ("type", "custom")],
            &[("type", "ipipTunnelAddress"), ("node", "n2"), ("pod", "p")],
        ]);
        let kinds: Vec<(String, String)> = (0..3)
            .map(|ordinal| {
                let a = b.attribute_of(ordinal).unwrap();
                match classify(b.cidr().address(ordinal), b.cidr(), "n1", |key| {
                    a.secondary().get(key)
                }) {
                    Borrowing::Borrowed(x) => (x.kind, x.allocated_to),
                    other => panic!("{other:?}"),
                }
            })
            .collect();
        assert_eq!(
            kinds,
            [
                (String::new(), String::new()),
                ("custom".to_string(), String::new()),
                ("ipipTunnelAddress".to_string(), String::new()),
            ]
        );
    }
}
