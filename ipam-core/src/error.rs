//! Every refusal of the core, in the domain's words. Each variant names the
//! object, field or value at fault so that an operator can act on it.

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
    /// An address is outside every configured pool.
    #[error("address {address} is not in any configured IP pool")]
    AddressNotInPool {
        /// The address.
        address: IpAddr,
    },
    /// The address is already assigned.
    #[error("address {address} is already in use by handle {handle}")]
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
    #[error("address {address} was released at {released_at} and is in its cooldown (ipCooldownSeconds) until {free_from}")]
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
    /// No enabled pool of the family selects the node.
    #[error("no enabled {version} pool selects node {node} for {intended_use} use")]
    NoPoolForNode {
        /// The requesting node.
        node: String,
        /// The family requested.
        version: IpVersion,
        /// What the addresses are for.
        intended_use: &'static str,
    },
    /// A pool named in the request does not exist or is disabled.
    #[error("requested pool {pool} does not exist or is not enabled")]
    RequestedPoolUnavailable {
        /// The CIDR requested.
        pool: IpNet,
    },
    /// A requested pool of the wrong family (an IPv6 pool in ipv4_pools).
    #[error("requested {expected} pool {pool} is not an {expected} CIDR")]
    PoolFamilyMismatch {
        /// The CIDR requested.
        pool: IpNet,
        /// The family of the list it was in.
        expected: IpVersion,
    },
    /// The node has no affine block with room and may not claim one.
    #[error("node {node} has no affine {version} block with free addresses and autoAllocateBlocks is false")]
    AutoAllocateDisabled {
        /// The requesting node.
        node: String,
        /// The family requested.
        version: IpVersion,
    },
    /// The node already holds as many blocks as it may.
    #[error("node {node} needs another {version} block but already holds {limit}, the limit of blocks per host")]
    BlockLimitReached {
        /// The requesting node.
        node: String,
        /// The family requested.
        version: IpVersion,
        /// The limit in force.
        limit: u32,
    },
    /// Strict affinity forbids the node to use another node's block.
    #[error("address {address} is in block {block} affine to {owner}, and strictAffinity forbids node {node} to use it")]
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
    /// A release named a sequence number the allocation no longer has.
    #[error("address {address}: release asked for sequence number {requested} but the allocation has {current}; it was reassigned meanwhile")]
    SequenceNumberMismatch {
        /// The address.
        address: IpAddr,
        /// The number the caller expected.
        requested: u64,
        /// The number stored.
        current: u64,
    },
    /// A release named a handle other than the allocation's.
    #[error(
        "address {address}: release named handle {requested} but the address belongs to {current}"
    )]
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
    /// A CIDR to claim for a node is not a whole number of blocks of one pool.
    #[error("cannot claim {cidr}: {reason}")]
    ClaimOutsidePool {
        /// The CIDR given.
        cidr: IpNet,
        /// Why it cannot be claimed.
        reason: String,
    },
    /// An affinity release that requires an empty block found addresses in it.
    #[error("block {block} still has {in_use} addresses in use")]
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
