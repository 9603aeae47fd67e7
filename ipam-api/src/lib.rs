//! The wire types of ipam-server's JSON API under `/v1`, shared by the
//! server and its clients (the CNI plugin in server mode, ipamctl) so the
//! two sides cannot drift. Field names are the API's stable schema
//! (camelCase; pool specs and the IPAM config in Calico's own field names).
//! No I/O here: only the types and their conversions from ipam-core.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use ipam_core::block::Attribute;
use ipam_core::check::CheckReport;
use ipam_core::cooldown::Cooldown;
use ipam_core::timestamp::format_rfc3339;
use ipam_core::usage::{usage, BlockUsage};
use ipam_core::{AllowedUse, Block, IpamConfig, Pool, PoolSpec, Snapshot};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub mod error_code;
pub mod labels;
pub mod names;
pub mod reservations;
pub mod split;

pub use error_code::ErrorCode;
pub use reservations::{ReservationBody, ReservationSpecBody};
pub use split::{SplitBody, SplitResponse, SplitTargetError};

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `http://HOST:PORT`: the authority (`HOST:PORT`).
    Tcp(String),
    /// `unix:PATH`: a unix socket.
    Unix(PathBuf),
}

/// A server address that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointError {
    /// What was given.
    pub value: String,
    /// What is wrong with it.
    pub why: String,
}

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "server address {:?} {}", self.value, self.why)
    }
}

impl std::error::Error for EndpointError {}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(text: &str) -> Result<Endpoint, EndpointError> {
        let invalid = |why: &str| EndpointError {
            value: text.to_string(),
            why: why.to_string(),
        };
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(invalid("names no socket path (unix:/run/ipam.sock)"));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        let Some(rest) = text.strip_prefix("http://") else {
            return Err(invalid(
                "is neither http://HOST:PORT nor unix:PATH (https is not supported)",
            ));
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(invalid("must be http://HOST:PORT with no path"));
        }
        match authority.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Endpoint::Tcp(authority.to_string()))
            }
            _ => Err(invalid("has no HOST:PORT (http://127.0.0.1:9310)")),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(authority) => write!(f, "http://{authority}"),
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable: what kind of failure.
    #[schema(value_type = String)]
    pub code: ErrorCode,
    /// What went wrong, naming the field or value.
    pub message: String,
}

/// `POST /v1/assign`: addresses chosen by the IPAM.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AssignBody {
    /// The handle that will own the addresses (`<network>.<container id>`).
    pub handle: String,
    /// The node the addresses are for.
    pub node: String,
    /// IPv4 addresses wanted.
    #[serde(default)]
    pub ipv4: u32,
    /// IPv6 addresses wanted.
    #[serde(default)]
    pub ipv6: u32,
    /// IPv4 pools (CIDRs) to use instead of those selecting the node.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub ipv4_pools: Vec<IpNet>,
    /// IPv6 pools (CIDRs) to use instead of those selecting the node.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub ipv6_pools: Vec<IpNet>,
    /// Recorded with the addresses: node, namespace, pod, timestamp.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// The node's labels, for pools' nodeSelector; absent: the IPAM reads
    /// them where the datastore keeps them ([`labels`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_labels: Option<BTreeMap<String, String>>,
    /// The namespace's labels, for pools' namespaceSelector; absent: the
    /// IPAM reads them for the `namespace` attribute's namespace, where it
    /// can ([`labels`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_labels: Option<BTreeMap<String, String>>,
    /// `Workload` (default), `Tunnel` or `LoadBalancer` (then `node` is
    /// `load-balancer`, the virtual owner Calico claims LoadBalancer
    /// blocks for).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub intended_use: Option<AllowedUse>,
    /// A per-request cap on the node's blocks (0: the config's).
    #[serde(default)]
    pub max_blocks_per_host: u32,
    /// Addresses (CIDRs, or single addresses as /32 and /128) never to
    /// hand out for this request, as if reserved: a gateway on the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub exclude: Vec<IpNet>,
    /// The addresses will be used with their pool's prefix (a bridge
    /// network): never hand out a pool's network address or IPv4
    /// broadcast address.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub usable_with_pool_prefix: bool,
    /// `ipv4Pools` and `ipv6Pools` are a CNI network config's, and the
    /// pod's own wishes come first: ipam-server on the Kubernetes
    /// datastore reads the `cni.projectcalico.org/ipv4pools`, `ipv6pools`,
    /// `ipFamilies` (pod, else namespace) and `ipAddrs` (pod) annotations
    /// of the pod and namespace the `pod` and `namespace` attributes name,
    /// as Calico's main CNI plugin reads them: the pod's pools over the
    /// namespace's over these, per family; `ipFamilies` (`["IPv4",
    /// "IPv6"]`) replaces `ipv4` and `ipv6` with one address of each
    /// family it names and none of the others; `ipAddrs` are assigned to the
    /// handle as `/v1/assign-ip` assigns one (whatever `ipv4` and `ipv6`
    /// ask) and answered as /32 and /128. A bad annotation is refused
    /// naming it and its value, and nothing is assigned. Other datastores
    /// have no pods: there it changes nothing. calico-ipam sets it under
    /// every main plugin but Calico's, which has applied them already.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pod_annotations: bool,
    /// The pod's UID (kubelet's `K8S_POD_UID`), beside `podAnnotations`:
    /// a pod the server holds from its watch with another UID is a
    /// previous pod of the same name, so the pod is read from the API
    /// server instead. Absent: the watched pod is taken as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
}

/// How an assigned address is held: what a client records to report the
/// address and to release it safely later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssignedAddress {
    /// The address with its block's prefix length.
    #[schema(value_type = String)]
    pub address: IpNet,
    /// The pool it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub pool: Option<IpNet>,
    /// The block's sequence number when the address was handed out: a
    /// release naming it (`POST /v1/release`) frees this allocation and no
    /// later one of the same address.
    pub sequence_number: u64,
}

impl From<ipam_core::Holding> for AssignedAddress {
    fn from(holding: ipam_core::Holding) -> AssignedAddress {
        AssignedAddress {
            address: holding.address,
            pool: holding.pool,
            sequence_number: holding.sequence_number,
        }
    }
}

/// The addresses assigned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssignResponse {
    /// The handle.
    pub handle: String,
    /// IPv4 addresses with their block's prefix length (`10.0.0.5/26`).
    #[schema(value_type = Vec<String>)]
    pub ipv4: Vec<IpNet>,
    /// IPv6 addresses with their block's prefix length.
    #[schema(value_type = Vec<String>)]
    pub ipv6: Vec<IpNet>,
    /// True when the handle already held these and nothing was allocated.
    pub existing: bool,
    /// Each address (IPv4 first) with its pool and sequence number.
    #[serde(default)]
    pub assigned: Vec<AssignedAddress>,
}

/// `POST /v1/assign-ip`: one chosen address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AssignIpBody {
    /// The handle that will own it.
    pub handle: String,
    /// The node it is for.
    pub node: String,
    /// The address.
    #[schema(value_type = String)]
    pub address: IpAddr,
    /// Recorded with the address.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// `Workload` (default) or `LoadBalancer` (then `node` is
    /// `load-balancer`, the virtual owner, and the address must be in a
    /// LoadBalancer pool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub intended_use: Option<AllowedUse>,
}

/// The answer to `POST /v1/assign-ip`: the request, and how the address
/// is held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssignIpResponse {
    /// The handle that owns it.
    pub handle: String,
    /// The node it is for.
    pub node: String,
    /// The address.
    #[schema(value_type = String)]
    pub address: IpAddr,
    /// Recorded with the address.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Its block's prefix, its pool and its sequence number (absent only
    /// if it was released again before the answer was made).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned: Option<AssignedAddress>,
}

/// One address to release.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReleaseItem {
    /// The address.
    #[schema(value_type = String)]
    pub address: IpAddr,
    /// When set, release only if this handle holds it.
    #[serde(default)]
    pub handle: Option<String>,
    /// When set, release only if the allocation carries this sequence
    /// number (from a check report), so nothing reassigned is freed.
    #[serde(default, deserialize_with = "whole_number")]
    pub sequence_number: Option<u64>,
}

/// An optional u64 written as any JSON number with no fractional part.
/// The OpenAPI document (3.1, JSON Schema 2020-12) calls the field an
/// integer, and there `4216226542570138.0` is one: schemathesis sent
/// exactly that and serde's u64 refused it. A fraction, a negative number
/// or one past u64 is still refused, naming the value.
fn whole_number<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    use serde::de::Error;
    match Option::<serde_json::Number>::deserialize(deserializer)? {
        None => Ok(None),
        Some(number) => number
            .as_u64()
            .or_else(|| {
                // 2^64: the first f64 past u64::MAX.
                number
                    .as_f64()
                    .filter(|v| v.fract() == 0.0 && *v >= 0.0 && *v < 18_446_744_073_709_551_616.0)
                    .map(|v| v as u64)
            })
            .map(Some)
            .ok_or_else(|| {
                D::Error::custom(format!(
                    "{number} is not a whole number from 0 to {}",
                    u64::MAX
                ))
            }),
    }
}

/// `POST /v1/release`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReleaseBody {
    /// The addresses.
    pub addresses: Vec<ReleaseItem>,
}

/// What a release did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseResponse {
    /// Addresses released: freed, or with an IP cooldown marked released.
    #[schema(value_type = Vec<String>)]
    pub released: Vec<IpAddr>,
    /// Addresses that were not held: free, or already released (not an
    /// error).
    #[schema(value_type = Vec<String>)]
    pub already_free: Vec<IpAddr>,
}

/// The addresses of a handle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HandleAddresses {
    /// The handle.
    pub handle: String,
    /// Its addresses, with their block's prefix length.
    #[schema(value_type = Vec<String>)]
    pub addresses: Vec<IpNet>,
}

/// Who holds an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddressInfo {
    /// The address.
    #[schema(value_type = String)]
    pub address: IpAddr,
    /// `inUse`, `inCooldown`, `free` or `notInPool`.
    pub status: AddressState,
    /// The pool it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// The handle holding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<String>,
    /// What was recorded with it (node, namespace, pod, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// When it was released (`inCooldown`), RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<String>,
    /// The first second it is free again (`inCooldown`), RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_from: Option<String>,
}

impl AddressInfo {
    /// The state of `address`, from the attribute its block records for it
    /// (if any) and the cooldown in force. A released address is in its
    /// cooldown, or free once that has passed, as Calico's
    /// GetAssignmentAttributes reads its block (blockFromBackend).
    pub fn of(
        address: IpAddr,
        attribute: Option<&Attribute>,
        pool: Option<String>,
        cooldown: Cooldown,
    ) -> AddressInfo {
        match attribute.map(|a| (a, a.released_at())) {
            Some((_, Some(at))) if !cooldown.has_passed(at) => AddressInfo {
                status: AddressState::InCooldown,
                released_at: Some(format_rfc3339(at)),
                free_from: Some(cooldown.free_from_rfc3339(at)),
                ..AddressInfo::unheld(address, pool)
            },
            Some((attribute, None)) => AddressInfo {
                status: AddressState::InUse,
                handle: attribute.handle().map(str::to_string),
                attributes: attribute.secondary().to_map(),
                ..AddressInfo::unheld(address, pool)
            },
            _ => AddressInfo::unheld(address, pool),
        }
    }

    /// An address nobody holds: free in `pool`, or in no pool at all.
    pub fn unheld(address: IpAddr, pool: Option<String>) -> AddressInfo {
        AddressInfo {
            address,
            status: if pool.is_some() {
                AddressState::Free
            } else {
                AddressState::NotInPool
            },
            pool,
            handle: None,
            attributes: BTreeMap::new(),
            released_at: None,
            free_from: None,
        }
    }
}

/// Whether an address is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum AddressState {
    /// Allocated.
    InUse,
    /// Released, and out of use until its IP cooldown has passed.
    InCooldown,
    /// In a pool, not allocated.
    Free,
    /// In no pool.
    NotInPool,
}

/// A pool: its name and Calico's IPPool spec (`cidr`, `blockSize`,
/// `nodeSelector`, `disabled`, `ipipMode`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolBody {
    /// The pool's name.
    pub name: String,
    /// Calico's IPPool spec.
    #[schema(value_type = Object)]
    pub spec: PoolSpec,
}

impl From<&Pool> for PoolBody {
    /// The fields the API knows: those a newer Calico stored in the pool
    /// stay in the datastore (the server's update keeps them) and are not
    /// part of the API's schema.
    fn from(pool: &Pool) -> PoolBody {
        let mut spec = pool.spec().clone();
        spec.unknown.clear();
        PoolBody {
            name: pool.name().to_string(),
            spec,
        }
    }
}

/// `PUT /v1/pools/{name}`: the new spec.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolSpecBody {
    /// Calico's IPPool spec.
    #[schema(value_type = Object)]
    pub spec: PoolSpec,
}

/// The IPAM configuration, in Calico's field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigBody {
    /// A node never borrows from another node's block.
    pub strict_affinity: bool,
    /// Nodes may claim new blocks.
    pub auto_allocate_blocks: bool,
    /// Most blocks per node (0: Calico's default of 20).
    #[serde(default)]
    pub max_blocks_per_host: u32,
    /// Seconds a released address stays out of use before it is handed out
    /// again (0, the default: at once; at most 1200).
    #[serde(default)]
    pub ip_cooldown_seconds: u32,
}

impl From<IpamConfig> for ConfigBody {
    fn from(config: IpamConfig) -> ConfigBody {
        ConfigBody {
            strict_affinity: config.strict_affinity,
            auto_allocate_blocks: config.auto_allocate_blocks,
            max_blocks_per_host: config.max_blocks_per_host,
            ip_cooldown_seconds: config.ip_cooldown_seconds,
        }
    }
}

impl ConfigBody {
    /// Applies the body to a stored config, keeping what the body does not
    /// carry (fields of a newer Calico).
    pub fn apply_to(&self, config: &mut IpamConfig) {
        config.strict_affinity = self.strict_affinity;
        config.auto_allocate_blocks = self.auto_allocate_blocks;
        config.max_blocks_per_host = self.max_blocks_per_host;
        config.ip_cooldown_seconds = self.ip_cooldown_seconds;
    }
}

/// A node's claim on a block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AffinityBody {
    /// The block.
    #[schema(value_type = String)]
    pub cidr: IpNet,
    /// `pending`, `confirmed` or `pendingDeletion`.
    pub state: String,
}

/// `POST /v1/nodes/{node}/affinities`: claim every block of a CIDR.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimBody {
    /// A CIDR of whole blocks within one pool.
    #[schema(value_type = String)]
    pub cidr: IpNet,
}

/// What a claim got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimResponse {
    /// Blocks now affine to the node.
    #[schema(value_type = Vec<String>)]
    pub claimed: Vec<IpNet>,
    /// Blocks another owner holds, left alone.
    #[schema(value_type = Vec<String>)]
    pub failed: Vec<IpNet>,
}

/// The blocks a released node held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseNodeResponse {
    /// The node.
    pub node: String,
    /// Blocks it was affine to: empty ones deleted, others left without
    /// affinity.
    #[schema(value_type = Vec<String>)]
    pub blocks: Vec<IpNet>,
}

/// Usage of one block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlockUsageBody {
    /// The block.
    #[schema(value_type = String)]
    pub cidr: IpNet,
    /// The node it is affine to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Its addresses.
    pub size: u32,
    /// Addresses in use.
    pub in_use: u32,
    /// Addresses free.
    pub free: u32,
    /// In-use addresses whose `node` attribute names another node.
    pub borrowed: u32,
    /// In-use addresses that were released and await deallocation (IP
    /// cooldown).
    #[serde(default)]
    pub released: u32,
}

impl From<&BlockUsage> for BlockUsageBody {
    fn from(b: &BlockUsage) -> BlockUsageBody {
        BlockUsageBody {
            cidr: b.cidr.net(),
            node: b.owner.clone(),
            size: b.capacity,
            in_use: b.in_use,
            free: b.capacity - b.in_use,
            borrowed: b.borrowed,
            released: b.released,
        }
    }
}

/// Usage of one pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolUsageBody {
    /// The pool's name.
    pub name: String,
    /// Its range.
    #[schema(value_type = String)]
    pub cidr: IpNet,
    /// Its block size (prefix length).
    pub block_size: u8,
    /// Whether it is disabled.
    pub disabled: bool,
    /// Whether it serves Services of type LoadBalancer (its `allowedUses`
    /// includes `LoadBalancer`): its addresses are the load-balancer
    /// controller's, never pods'.
    #[serde(default)]
    pub load_balancer: bool,
    /// Addresses in the range.
    pub size: u128,
    /// Addresses in use.
    pub in_use: u128,
    /// Addresses free.
    pub free: u128,
    /// In-use addresses that were released and await deallocation (IP
    /// cooldown).
    #[serde(default)]
    pub released: u128,
    /// Its blocks that exist, in address order.
    pub blocks: Vec<BlockUsageBody>,
}

/// `GET /v1/usage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageResponse {
    /// Pools by name.
    pub pools: Vec<PoolUsageBody>,
    /// Blocks outside every pool.
    pub orphaned_blocks: Vec<BlockUsageBody>,
}

impl UsageResponse {
    /// Every block listed, pools' first, then those outside every pool.
    pub fn block_cidrs(&self) -> Vec<IpNet> {
        self.pools
            .iter()
            .flat_map(|p| &p.blocks)
            .chain(&self.orphaned_blocks)
            .map(|b| b.cidr)
            .collect()
    }

    /// The usage of every pool of `snapshot` and of the blocks outside
    /// them, as `GET /v1/usage` answers it: blocks of a pool in address
    /// order.
    pub fn of(snapshot: &Snapshot) -> UsageResponse {
        let summary = usage(snapshot);
        let pools = summary
            .pools
            .iter()
            .map(|p| {
                let pool = snapshot.pools().iter().find(|q| q.name() == p.name);
                let mut blocks: Vec<BlockUsageBody> = p.blocks.iter().map(Into::into).collect();
                blocks.sort_by_key(|b| (b.cidr.network(), b.cidr.prefix_len()));
                PoolUsageBody {
                    name: p.name.clone(),
                    cidr: p.cidr,
                    block_size: pool.map_or(0, Pool::block_size),
                    disabled: pool.is_some_and(|q| !q.enabled()),
                    load_balancer: pool.is_some_and(|q| q.allows(AllowedUse::LoadBalancer)),
                    size: p.capacity,
                    in_use: p.in_use,
                    free: p.capacity - p.in_use,
                    released: p.released,
                    blocks,
                }
            })
            .collect();
        UsageResponse {
            pools,
            orphaned_blocks: summary.orphaned_blocks.iter().map(Into::into).collect(),
        }
    }
}

/// One allocated address of a block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllocationBody {
    /// The address.
    #[schema(value_type = String)]
    pub address: IpAddr,
    /// Its ordinal in the block.
    pub ordinal: u32,
    /// The handle holding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<String>,
    /// The block's sequence number when it was handed out.
    pub sequence_number: u64,
    /// What was recorded with it (pod, namespace, node, ...).
    pub attributes: BTreeMap<String, String>,
    /// When it was released, RFC 3339: it is nobody's, in or past its IP
    /// cooldown, until deallocated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<String>,
}

impl AllocationBody {
    /// The allocation of `ordinal` in `block`, held as `attribute` says.
    pub fn of(block: &Block, ordinal: u32, attribute: &Attribute) -> AllocationBody {
        AllocationBody {
            address: block.cidr().address(ordinal),
            ordinal,
            handle: attribute.handle().map(str::to_string),
            sequence_number: block.sequence_number_of(ordinal),
            attributes: attribute.secondary().to_map(),
            released_at: attribute.released_at().map(format_rfc3339),
        }
    }
}

/// `GET /v1/blocks`: one block and who holds its addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlockDetail {
    /// The block.
    #[schema(value_type = String)]
    pub cidr: IpNet,
    /// The node it is affine to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Its owner as Calico writes it (`host:node-1`, `virtual:vm-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<String>,
    /// Allocated addresses, in ordinal order.
    pub allocations: Vec<AllocationBody>,
}

/// One entry of `GET /v1/affinities`: a claim of a node (or virtual owner)
/// on a block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AffinityListItem {
    /// The node or virtual owner.
    pub node: String,
    /// The block.
    #[schema(value_type = String)]
    pub cidr: IpNet,
    /// `pending`, `confirmed` or `pendingDeletion`.
    pub state: String,
    /// `host` or `virtual`.
    #[serde(rename = "type")]
    pub affinity_type: String,
}

/// `GET /v1/check`: the consistency report.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckResponse {
    /// True when blocks and handles agree (no inconsistency found; leaks
    /// such as orphaned blocks may still be listed).
    pub consistent: bool,
    /// The report: summary, skipped checks and findings, each with the
    /// allocation's sequence number for a safe release.
    #[schema(value_type = Object)]
    pub report: CheckReport,
}

#[cfg(test)]
mod tests {
    use super::*;

    // JSON Schema's integer, which the OpenAPI document promises: a whole
    // number written with a fraction part of zero is one (schemathesis
    // sent the first of these); anything else is refused with its value.
    #[test]
    fn a_sequence_number_is_any_whole_json_number() {
        let item = |n: &str| {
            serde_json::from_str::<ReleaseItem>(&format!(
                r#"{{"address": "10.0.0.1", "sequenceNumber": {n}}}"#
            ))
            .map(|i| i.sequence_number)
            .map_err(|e| e.to_string())
        };
        assert_eq!(item("4216226542570138.0"), Ok(Some(4_216_226_542_570_138)));
        assert_eq!(item("18446744073709551615"), Ok(Some(u64::MAX)));
        assert_eq!(item("0"), Ok(Some(0)));
        assert_eq!(item("null"), Ok(None));
        for bad in ["1.5", "-1", "-1.0", "18446744073709551616.0", "1e30"] {
            let refused = item(bad).unwrap_err();
            assert!(
                refused.contains("is not a whole number"),
                "{bad}: {refused}"
            );
        }
    }

    #[test]
    fn endpoints_parse_tcp_and_unix_and_refuse_the_rest() {
        assert_eq!(
            "http://127.0.0.1:9310".parse::<Endpoint>().unwrap(),
            Endpoint::Tcp("127.0.0.1:9310".into())
        );
        assert_eq!(
            "http://[::1]:80/".parse::<Endpoint>().unwrap(),
            Endpoint::Tcp("[::1]:80".into())
        );
        assert_eq!(
            "unix:/run/ipam.sock".parse::<Endpoint>().unwrap(),
            Endpoint::Unix("/run/ipam.sock".into())
        );
        for bad in [
            "https://h:1",
            "127.0.0.1:9310",
            "http://host",
            "http://h:99999",
            "http://h:1/v1",
            "unix:",
        ] {
            let error = bad.parse::<Endpoint>().unwrap_err().to_string();
            assert!(error.contains(bad), "{bad}: {error}");
        }
    }
}
