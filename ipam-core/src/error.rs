//! Every refusal of the core, in the domain's words. Each variant names the
//! object, field or value at fault so that an operator can act on it.
//!
//! Where Calico 3.32 refuses the same thing, the message starts with (or
//! contains) Calico's own sentence verbatim, and the comment next to the
//! variant says where Calico has it: operators search kubelet events for
//! those sentences and Calico's CNI tests grep for them. Our details follow
//! in parentheses.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::cidr::{BlockCidr, IpVersion};
use crate::selector::SelectorError;

/// What the core refuses, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A CIDR or address field did not parse.
    #[error("{field}: {value:?} is not a valid CIDR")]
    InvalidCidr {
        /// The field that held it.
        field: &'static str,
        /// The text given.
        value: String,
    },
    /// A CIDR has host bits set (10.0.0.1/24 instead of 10.0.0.0/24).
    #[error("CIDR {cidr} is not aligned: its host bits must be zero (did you mean {}?)", cidr.trunc())]
    CidrNotAligned {
        /// The CIDR given.
        cidr: IpNet,
    },
    /// A block CIDR larger than Calico allows (more than 4096 addresses).
    #[error(
        "block {cidr} is larger than the largest block Calico allows (/20 for IPv4, /116 for IPv6)"
    )]
    BlockTooLarge {
        /// The CIDR given.
        cidr: IpNet,
    },
    /// A pool's blockSize is outside Calico's range for its family.
    #[error("pool {pool}: blockSize {got} is out of range for {version}: must be {min} to {max}")]
    BlockSizeOutOfRange {
        /// The pool's name.
        pool: String,
        /// The family of the pool's CIDR.
        version: IpVersion,
        /// The blockSize given.
        got: u8,
        /// Smallest allowed prefix length.
        min: u8,
        /// Largest allowed prefix length.
        max: u8,
    },
    /// A pool's CIDR is smaller than one block.
    #[error("pool {pool}: CIDR {cidr} is smaller than its blockSize /{block_size}")]
    PoolSmallerThanBlock {
        /// The pool's name.
        pool: String,
        /// The pool's CIDR.
        cidr: IpNet,
        /// The pool's blockSize.
        block_size: u8,
    },
    /// A pool's selector does not parse.
    #[error("pool {pool}: {field}: {source}")]
    InvalidSelector {
        /// The pool's name.
        pool: String,
        /// `nodeSelector` or `namespaceSelector`.
        field: &'static str,
        /// The parse error.
        source: SelectorError,
    },
    /// An IPAM config Calico would refuse to store.
    #[error("invalid IPAM config: {reason}")]
    InvalidConfig {
        /// Which rule it breaks, naming the field and value at fault.
        reason: String,
    },
    /// A stored block is not internally consistent enough to use.
    #[error("block {block}: field {field}: {problem}")]
    MalformedBlock {
        /// The block's CIDR (as stored).
        block: String,
        /// The JSON field at fault.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// A stored handle is not usable.
    #[error("handle {handle}: {problem}")]
    MalformedHandle {
        /// The handle id.
        handle: String,
        /// What is wrong with it.
        problem: String,
    },
    /// An address is outside every configured pool (ipam.go, AssignIP).
    #[error("The provided IP address is not in a configured pool (address {address})")]
    AddressNotInPool {
        /// The address.
        address: IpAddr,
    },
    /// The address is already assigned: Calico's ErrorResourceAlreadyExists
    /// with "Address already assigned in block" (ipam_block.go, assign),
    /// printed as libcalico-go/lib/errors prints it.
    #[error("resource already exists: {address} with error: Address already assigned in block (held by handle {handle})")]
    AddressInUse {
        /// The address.
        address: IpAddr,
        /// Who holds it (empty when the allocation has no handle).
        handle: String,
    },
    /// The address was released and its cooldown has not passed: Calico
    /// keeps it allocated and refuses an explicit assignment of it
    /// (libcalico-go/lib/ipam/ipam_block.go, assign:
    /// ErrorResourceAlreadyExists) until the cooldown is over.
    #[error("resource already exists: {address} with error: Address already assigned in block (it was released at {released_at} and is in its cooldown, ipCooldownSeconds, until {free_from})")]
    AddressInCooldown {
        /// The address.
        address: IpAddr,
        /// When it was released (RFC 3339).
        released_at: String,
        /// The first second at which it may be assigned again (RFC 3339).
        free_from: String,
    },
    /// No handle by that id exists.
    #[error("handle {handle} not found")]
    HandleNotFound {
        /// The handle id.
        handle: String,
    },
    /// No enabled pool of the family serves the node; [`NoPoolCause`] says
    /// which of Calico's checks found none, each with Calico's words.
    #[error("{}", cause.describe(node, *version, intended_use))]
    NoPoolForNode {
        /// The requesting node.
        node: String,
        /// The family requested.
        version: IpVersion,
        /// What the addresses are for.
        intended_use: &'static str,
        /// Which check found no pool.
        cause: NoPoolCause,
    },
    /// A chosen address whose pool does not serve the intended use: a
    /// LoadBalancer address outside a LoadBalancer pool, or anything else
    /// inside one (see `Snapshot::plan_assign_ip_for`).
    #[error("address {address} is in pool {pool}, which does not allow {intended_use} use")]
    PoolUseMismatch {
        /// The address.
        address: IpAddr,
        /// Its pool.
        pool: IpNet,
        /// What the address was asked for.
        intended_use: &'static str,
    },
    /// A pool named in the request does not exist or is disabled
    /// (ipam.go, determinePools).
    #[error("the given pool ({}) does not exist, or is not enabled", pool.trunc())]
    RequestedPoolUnavailable {
        /// The CIDR requested.
        pool: IpNet,
    },
    /// A requested pool of the wrong family (an IPv6 pool in ipv4_pools):
    /// ipam.go, AutoAssign.
    #[error("provided {expected} IPPools list contains one or more {} IPPools ({pool} is not an {expected} CIDR)", expected.other())]
    PoolFamilyMismatch {
        /// The CIDR requested.
        pool: IpNet,
        /// The family of the list it was in.
        expected: IpVersion,
    },
    /// The node has no affine block with room and may not claim one
    /// (ipam.go, findOrClaimBlock, when AutoAllocateBlocks is false).
    #[error("failed to find or claim a block (node {node} has no affine {version} block with free addresses and autoAllocateBlocks is false)")]
    AutoAllocateDisabled {
        /// The requesting node.
        node: String,
        /// The family requested.
        version: IpVersion,
    },
    /// The node already holds as many blocks as it may. Calico's CNI
    /// plugin reports ErrBlockLimit and its assignment message (ipam.go,
    /// autoAssign); both sentences are here.
    #[error("cannot allocate new block due to per host block limit: Need to allocate an IPAM block but could not - limit of {limit} blocks reached for this node (node {node}, {version})")]
    BlockLimitReached {
        /// The requesting node.
        node: String,
        /// The family requested.
        version: IpVersion,
        /// The limit in force.
        limit: u32,
    },
    /// Strict affinity forbids the node to use another node's block
    /// (ipam_block.go, assign: "Block host affinity does not match", or
    /// "Attempt to assign from block ... with no affinity" for a block
    /// affine to no one).
    #[error("{} (address {address} is in block {block} affine to {owner}, and strictAffinity forbids node {node} to use it)", strict_affinity_words(block, owner))]
    StrictAffinityViolation {
        /// The address requested.
        address: IpAddr,
        /// Its block.
        block: BlockCidr,
        /// The block's affinity (`host:<node>`, or `none`).
        owner: String,
        /// The requesting node.
        node: String,
    },
    /// A release named a sequence number the allocation no longer has
    /// (ipam_block.go, release: ErrorBadSequenceNumber).
    #[error("the given sequence number ({requested}) does not match ({current}) when attempting to release IP (address {address} was reassigned meanwhile)")]
    SequenceNumberMismatch {
        /// The address.
        address: IpAddr,
        /// The number the caller expected.
        requested: u64,
        /// The number stored.
        current: u64,
    },
    /// A release named a handle other than the allocation's
    /// (ipam_block.go, release: ErrorBadHandle).
    #[error("the given handle ({requested}) does not match ({current}) when attempting to release IP (address {address})")]
    HandleMismatch {
        /// The address.
        address: IpAddr,
        /// The handle the caller named.
        requested: String,
        /// The handle stored.
        current: String,
    },
    /// An affinity for the block and node does not exist.
    #[error("node {node} has no affinity for block {block}")]
    AffinityNotFound {
        /// The node.
        node: String,
        /// The block.
        block: BlockCidr,
    },
    /// A CIDR to claim for a node is in no configured pool (ipam.go,
    /// ClaimAffinity).
    #[error("The requested CIDR ({cidr}) is not within any configured pools.")]
    ClaimOutsidePool {
        /// The CIDR given.
        cidr: IpNet,
    },
    /// A CIDR to claim for a node is smaller than its pool's blocks
    /// (ipam.go, ClaimAffinity).
    #[error("The requested CIDR ({cidr}) is smaller than the minimum. (pool {pool}'s blocks are /{block_size})")]
    ClaimSmallerThanBlock {
        /// The CIDR given.
        cidr: IpNet,
        /// The pool that contains it.
        pool: String,
        /// That pool's blockSize.
        block_size: u8,
    },
    /// An affinity release that requires an empty block found addresses in
    /// it (ipam_block_reader_writer.go, releaseBlockAffinity: errBlockNotEmpty).
    #[error("block '{block}' is not empty ({in_use} addresses in use)")]
    BlockNotEmpty {
        /// The block.
        block: BlockCidr,
        /// How many are in use.
        in_use: u32,
    },
    /// Two pools may not overlap.
    #[error("pool {pool} ({cidr}) overlaps pool {other} ({other_cidr})")]
    PoolsOverlap {
        /// The pool being added.
        pool: String,
        /// Its CIDR.
        cidr: IpNet,
        /// The pool it overlaps.
        other: String,
        /// That pool's CIDR.
        other_cidr: IpNet,
    },
}

/// Which of Calico's checks found no pool for a node. Calico words each
/// one differently (libcalico-go/lib/ipam/ipam.go).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoPoolCause {
    /// No pool of the family is enabled (determinePools: ErrNoQualifiedPool).
    NoneEnabled,
    /// Enabled pools exist, but none selects the node and its namespace
    /// for automatic assignment (prepareAffinityBlocksForHost).
    NoneSelects,
    /// Pools select the node, but none allows the intended use
    /// (prepareAffinityBlocksForHost: ErrNoQualifiedPool with the use).
    NoneAllowsUse,
}

impl NoPoolCause {
    /// Calico's sentence for the cause, then ours.
    fn describe(self, node: &str, version: IpVersion, intended_use: &str) -> String {
        match self {
            NoPoolCause::NoneEnabled => format!(
                "cannot find a qualified ippool (no {version} pool is enabled; node {node} asked for {intended_use} use)"
            ),
            NoPoolCause::NoneSelects => format!(
                "no configured Calico pools for node {node} (no enabled {version} pool selects it and its namespace for automatic assignment)"
            ),
            NoPoolCause::NoneAllowsUse => format!(
                "cannot find a qualified ippool, no pools match the required use ({intended_use}) (node {node}, {version})"
            ),
        }
    }
}

/// Calico's sentence for a strict-affinity refusal (ipam_block.go, assign):
/// a block affine to no one has its own.
fn strict_affinity_words(block: &BlockCidr, owner: &str) -> String {
    if owner == "none" {
        format!("Attempt to assign from block {block} with no affinity")
    } else {
        "Block host affinity does not match".to_string()
    }
}
