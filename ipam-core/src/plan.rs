//! What a planner returns: the new versions of the objects to write, by
//! phase, in the order they must be written, plus what the caller is told.
//! The phases are typed ([`AffinityRelease`], [`Claim`], [`HandleChange`],
//! [`BlockWrite`]) so that a writer needs no guessing which write is which.
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
use crate::cidr::{BlockCidr, IpVersion};
use crate::handle::{Handle, HandleName};
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

/// A block written after a plan's claims: updated (addresses assigned or
/// released, or left without affinity) or deleted (left empty without
/// affinity).
#[derive(Debug, Clone, PartialEq)]
pub enum BlockWrite {
    /// Replace the block.
    Update(Block),
    /// Delete the block.
    Delete(BlockCidr),
}

impl BlockWrite {
    /// The block written.
    pub fn cidr(&self) -> BlockCidr {
        match self {
            BlockWrite::Update(block) => block.cidr(),
            BlockWrite::Delete(cidr) => *cidr,
        }
    }

    /// As one datastore write.
    pub fn into_write(self) -> Write {
        match self {
            BlockWrite::Update(block) => Write::UpdateBlock(block),
            BlockWrite::Delete(cidr) => Write::DeleteBlock(cidr),
        }
    }
}

/// An affinity given up, with its block, in Calico's order
/// (ipam_block_reader_writer.go, releaseBlockAffinity): the affinity marked
/// pendingDeletion, the block deleted when empty or else left without
/// affinity, the affinity deleted. A node's affinity released, another
/// node's empty block reclaimed for a claim, and a node's empty block in a
/// pool that no longer selects it (planner's affinity consistency) all
/// take this shape. The last may delete a block the same plan released
/// addresses from: the plan's handles follow that block as they follow
/// [`Plan::blocks`].
#[derive(Debug, Clone, PartialEq)]
pub struct AffinityRelease {
    /// The affinity marked pendingDeletion first; `None` when there is no
    /// affinity, or no block to protect while it goes.
    pub pending_deletion: Option<Affinity>,
    /// The block; `None` when it is not the node's (the affinity is stale
    /// and simply goes).
    pub block: Option<BlockWrite>,
    /// The affinity deleted last; `None` when there is none.
    pub delete: Option<AffinityKey>,
}

impl AffinityRelease {
    pub(crate) fn into_writes(self) -> impl Iterator<Item = Write> {
        let pending = self.pending_deletion.map(Write::UpdateAffinity);
        let block = self.block.map(BlockWrite::into_write);
        let delete = self.delete.map(Write::DeleteAffinity);
        pending.into_iter().chain(block).chain(delete)
    }
}

/// A new block claimed for a node, as Calico's getPendingAffinity then
/// claimAffineBlock do (ipam_block_reader_writer.go): the affinity written
/// pending, the block created empty, the affinity confirmed.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// The node's affinity in state pending.
    pub pending: Affinity,
    /// Whether the affinity exists already (left pending by an interrupted
    /// claim, or confirmed while its block is gone): updated, not created.
    pub reused: bool,
    /// The block as claimed, owned by the node, with no address assigned.
    pub block: Block,
    /// The affinity in state confirmed, written once the block exists.
    pub confirmed: Affinity,
}

impl Claim {
    /// The affinity claimed.
    pub fn key(&self) -> AffinityKey {
        self.pending.key()
    }

    pub(crate) fn into_writes(self) -> [Write; 3] {
        let pending = if self.reused {
            Write::UpdateAffinity(self.pending)
        } else {
            Write::CreateAffinity(self.pending)
        };
        [
            pending,
            Write::CreateBlock(self.block),
            Write::UpdateAffinity(self.confirmed),
        ]
    }
}

/// How a plan changes one handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandleChange {
    /// Per block, how many addresses the handle gains (positive) or loses
    /// (negative) with the plan's block writes. Applied to the handle as
    /// stored, never below zero (the blocks, not the handle, are the truth:
    /// a handle that over-counts is what a crash between the two writes
    /// leaves): it is created when it gains its first addresses and
    /// deleted when it holds none.
    Adjust {
        /// The handle.
        id: HandleName,
        /// Per block, the change of its count; each block once.
        deltas: Vec<(BlockCidr, i64)>,
    },
    /// The handle is deleted as a whole, whatever it counts (a release by
    /// handle: counts no block showed were stale).
    Delete(HandleName),
}

impl HandleChange {
    /// The handle changed.
    pub fn id(&self) -> &str {
        match self {
            HandleChange::Adjust { id, .. } | HandleChange::Delete(id) => id,
        }
    }

    /// The write that makes the change to `current`, the handle as stored
    /// (`None`: absent); `None` when there is nothing to write.
    pub fn write_over(&self, current: Option<&Handle>) -> Option<Write> {
        match self {
            HandleChange::Delete(id) => current.map(|_| Write::DeleteHandle(id.to_string())),
            HandleChange::Adjust { id, deltas } => {
                let existed = current.is_some();
                let mut handle = current
                    .cloned()
                    .unwrap_or_else(|| Handle::named(id.clone()));
                handle.adjust(deltas);
                match (existed, handle.is_empty()) {
                    (true, true) => Some(Write::DeleteHandle(id.to_string())),
                    (true, false) => Some(Write::UpdateHandle(handle)),
                    (false, false) => Some(Write::CreateHandle(handle)),
                    (false, true) => None,
                }
            }
        }
    }
}

/// Whether a plan's handles are written before or after its blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Assigning: a crash between the two leaves a handle that over-counts,
    /// never an address without an owner.
    HandlesFirst,
    /// Releasing: likewise, the block goes first.
    #[default]
    BlocksFirst,
}

/// The writes of a plan, by phase, in the order they must be written:
/// [`releases`](Plan::releases), then [`claims`](Plan::claims), then the
/// [`handles`](Plan::handles) and [`blocks`](Plan::blocks) in
/// [`order`](Plan::order).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// Affinities given up with their blocks: other nodes' empty blocks
    /// reclaimed, a node's affinities released, or a node's empty blocks
    /// in pools that no longer select it.
    pub releases: Vec<AffinityRelease>,
    /// New blocks claimed, each complete before any handle counts an
    /// address in it.
    pub claims: Vec<Claim>,
    /// Handles changed, in id order.
    pub handles: Vec<HandleChange>,
    /// Blocks changed, in address order.
    pub blocks: Vec<BlockWrite>,
    /// Whether handles or blocks go first.
    pub order: Order,
}

impl Plan {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.releases.is_empty()
            && self.claims.is_empty()
            && self.handles.is_empty()
            && self.blocks.is_empty()
    }

    /// The plan as single writes in the order they must be written, its
    /// handles' written over `snapshot` (the one it was planned on).
    pub fn writes(&self, snapshot: &crate::snapshot::Snapshot) -> Vec<Write> {
        self.clone().into_writes(snapshot)
    }

    // [`Plan::writes`], taking the plan: its blocks move into the writes.
    fn into_writes(self, snapshot: &crate::snapshot::Snapshot) -> Vec<Write> {
        let Plan {
            releases,
            claims,
            handles,
            blocks,
            order,
        } = self;
        // One allocation of the exact size: each affinity release and claim
        // is at most three writes, each handle and block at most one.
        let mut writes =
            Vec::with_capacity(3 * (releases.len() + claims.len()) + handles.len() + blocks.len());
        writes.extend(releases.into_iter().flat_map(AffinityRelease::into_writes));
        writes.extend(claims.into_iter().flat_map(Claim::into_writes));
        let handles = handles
            .iter()
            .filter_map(|change| change.write_over(snapshot.handle(change.id())));
        let blocks = blocks.into_iter().map(BlockWrite::into_write);
        match order {
            Order::HandlesFirst => {
                writes.extend(handles);
                writes.extend(blocks);
            }
            Order::BlocksFirst => {
                writes.extend(blocks);
                writes.extend(handles);
            }
        }
        writes
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

impl Assignments {
    /// Calico's words for a family that got fewer addresses than asked,
    /// as its CNI plugin reports them (libcalico-go/lib/ipam/ipam.go,
    /// PartialFulfillmentError, wrapped by cni-plugin/pkg/ipamplugin/
    /// ipam_plugin.go as "failed to request IPv4 addresses: ..."); `None`
    /// when it got them all.
    pub fn partial_fulfillment(&self, version: IpVersion) -> Option<String> {
        let got = self.addresses.len() as u32;
        if got >= self.requested {
            return None;
        }
        let mut words = format!(
            "failed to request {version} addresses: Assigned {got} out of {} requested {version} addresses",
            self.requested
        );
        for reason in &self.shortfall {
            words.push_str(&format!("; {reason}"));
        }
        Some(words)
    }
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

/// The outcome of planning a node's releases by handle and its
/// auto-assignments together
/// ([`Snapshot::plan_release_and_assign`](crate::Snapshot::plan_release_and_assign)).
#[derive(Debug, Clone, PartialEq)]
pub struct MixedPlan {
    /// The writes for every release and every assignment that succeeded.
    pub plan: Plan,
    /// Per handle released, in order: the addresses released.
    pub released: Vec<Vec<IpAddr>>,
    /// Per assignment, in order: its IPv4 and IPv6 assignments, or why it
    /// was refused.
    pub outcomes: Vec<Result<(Assignments, Assignments), crate::Error>>,
}
