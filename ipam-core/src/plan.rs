//! What a planner returns: the new versions of the objects to write, in the
//! order they must be written, plus what the caller is told.
//!
//! Order matters for safety. On assignment the handle is written before
//! the block, so a crash in between leaves a handle that over-counts (found
//! and fixed by a check) rather than an address nobody owns; on release the
//! block is written before the handle, for the same reason. A new block is
//! claimed in two phases, pending affinity, block (created empty),
//! confirmed affinity, and the claim is complete before any handle counts
//! an address in the block: so a handle's count in a block that does not
//! exist is always stale, and a release by handle may drop it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::affinity::{Affinity, AffinityKey};
use crate::block::Block;
use crate::cidr::BlockCidr;
use crate::handle::Handle;
use crate::names::{HandleId, NodeName};
use crate::pool::AllowedUse;

/// One datastore write. Creates must fail if the object exists; updates and
/// deletes must fail if it changed since the snapshot was read.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Create an affinity.
    CreateAffinity(Affinity),
    /// Replace an affinity.
    UpdateAffinity(Affinity),
    /// Delete an affinity.
    DeleteAffinity(AffinityKey),
    /// Create a block.
    CreateBlock(Block),
    /// Replace a block.
    UpdateBlock(Block),
    /// Delete a block.
    DeleteBlock(BlockCidr),
    /// Create a handle.
    CreateHandle(Handle),
    /// Replace a handle.
    UpdateHandle(Handle),
    /// Delete a handle.
    DeleteHandle(String),
}

/// Writes to perform, in order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// The writes.
    pub writes: Vec<Write>,
}

impl Plan {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

/// The current time, passed in because the core has no clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Nanoseconds since the Unix epoch.
    pub unix_nanos: u64,
}

impl From<std::time::SystemTime> for Now {
    /// A time the caller read from its clock (the core reads none); one
    /// before the epoch counts as the epoch.
    fn from(time: std::time::SystemTime) -> Now {
        let since = time
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Now {
            unix_nanos: u64::try_from(since.as_nanos()).unwrap_or(u64::MAX),
        }
    }
}

impl Now {
    /// Whole seconds since the epoch.
    pub fn unix_seconds(self) -> i64 {
        (self.unix_nanos / 1_000_000_000) as i64
    }
}

/// A request for automatically chosen addresses (Calico's AutoAssignArgs).
#[derive(Debug, Clone, PartialEq)]
pub struct AutoAssignRequest {
    /// The handle that will own the addresses.
    pub handle: HandleId,
    /// The node the addresses are for.
    pub node: NodeName,
    /// The node's labels, for pools' nodeSelector.
    pub node_labels: BTreeMap<String, String>,
    /// The pod namespace's labels, for pools' namespaceSelector.
    pub namespace_labels: BTreeMap<String, String>,
    /// IPv4 addresses wanted.
    pub ipv4: u32,
    /// IPv6 addresses wanted.
    pub ipv6: u32,
    /// IPv4 pools to use instead of those selecting the node.
    pub ipv4_pools: Vec<IpNet>,
    /// IPv6 pools to use instead of those selecting the node.
    pub ipv6_pools: Vec<IpNet>,
    /// Attributes recorded with the addresses (node, namespace, pod, ...).
    pub attributes: BTreeMap<String, String>,
    /// What the addresses are for.
    pub intended_use: AllowedUse,
    /// A per-request block limit (0: the config's).
    pub max_blocks_per_host: u32,
    /// Addresses (or ranges) never to hand out for this request, as if
    /// reserved: the gateway a main plugin puts on the host's bridge.
    pub exclude: Vec<IpNet>,
    /// The addresses will be used with their pool's prefix length, every
    /// address of the pool on one link (a bridge network): the pool's
    /// network address, and an IPv4 pool's broadcast address, are not
    /// handed out (see [`Pool::subnet_edges`](crate::Pool::subnet_edges)).
    pub usable_with_pool_prefix: bool,
}

impl AutoAssignRequest {
    /// A workload request for `ipv4` IPv4 addresses and nothing else set.
    pub fn new(handle: HandleId, node: NodeName, ipv4: u32, ipv6: u32) -> Self {
        AutoAssignRequest {
            handle,
            node,
            node_labels: BTreeMap::new(),
            namespace_labels: BTreeMap::new(),
            ipv4,
            ipv6,
            ipv4_pools: Vec::new(),
            ipv6_pools: Vec::new(),
            attributes: BTreeMap::new(),
            intended_use: AllowedUse::Workload,
            max_blocks_per_host: 0,
            exclude: Vec::new(),
            usable_with_pool_prefix: false,
        }
    }
}

/// Why a family got fewer addresses than asked. Calico does not fail the
/// request for this: it returns what it found plus these messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shortfall {
    /// Strict affinity is on and the node's blocks and new blocks ran out.
    StrictAffinityNoFreeBlocks,
    /// Every block of these pools is full.
    PoolsExhausted(Vec<IpNet>),
}

impl std::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shortfall::StrictAffinityNoFreeBlocks => {
                f.write_str("No more free affine blocks and strict affinity enabled")
            }
            Shortfall::PoolsExhausted(pools) => {
                let list: Vec<String> = pools.iter().map(ToString::to_string).collect();
                write!(f, "No IPs available in pools: [{}]", list.join(" "))
            }
        }
    }
}

/// What one family of an auto-assign got.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assignments {
    /// The addresses, each with its block's prefix length.
    pub addresses: Vec<IpNet>,
    /// How many were asked for.
    pub requested: u32,
    /// Why fewer than asked, when so.
    pub shortfall: Vec<Shortfall>,
}

/// The outcome of planning an auto-assign.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoAssignPlan {
    /// The writes that make it so.
    pub plan: Plan,
    /// IPv4 addresses.
    pub ipv4: Assignments,
    /// IPv6 addresses.
    pub ipv6: Assignments,
}

/// A request for one chosen address (Calico's AssignIPArgs).
#[derive(Debug, Clone, PartialEq)]
pub struct AssignIpRequest {
    /// The handle that will own it.
    pub handle: HandleId,
    /// The node it is for.
    pub node: NodeName,
    /// The address.
    pub address: IpAddr,
    /// Attributes recorded with it.
    pub attributes: BTreeMap<String, String>,
}

/// One address to release, with optional expectations that make a stale
/// release fail instead of freeing a reassigned address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseRequest {
    /// The address.
    pub address: IpAddr,
    /// When set, the address must belong to this handle.
    pub handle: Option<HandleId>,
    /// When set, the allocation must carry this sequence number.
    pub sequence_number: Option<u64>,
}

impl ReleaseRequest {
    /// Release an address unconditionally.
    pub fn address(address: IpAddr) -> Self {
        ReleaseRequest {
            address,
            handle: None,
            sequence_number: None,
        }
    }
}

/// The outcome of planning a release.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReleasePlan {
    /// The writes that make it so.
    pub plan: Plan,
    /// Addresses released: freed, or with an IP cooldown marked released.
    pub released: Vec<IpAddr>,
    /// Addresses that were not held: free, or already released (not an
    /// error, as in Calico).
    pub already_free: Vec<IpAddr>,
}

/// The outcome of planning a claim of every block in a CIDR for a node.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClaimPlan {
    /// The writes that make it so.
    pub plan: Plan,
    /// Blocks that are, or will be, affine to the node.
    pub claimed: Vec<BlockCidr>,
    /// Blocks another owner holds, left alone.
    pub failed: Vec<BlockCidr>,
}

/// The outcome of planning several auto-assignments together.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchPlan {
    /// The writes for every request that succeeded.
    pub plan: Plan,
    /// Per request, in order: its IPv4 and IPv6 assignments, or why it was
    /// refused.
    pub outcomes: Vec<Result<(Assignments, Assignments), crate::Error>>,
}
