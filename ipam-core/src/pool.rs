//! IP pools: the address ranges that are cut into blocks, with the rules that
//! decide which nodes and uses may draw from them.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::cidr::{to_u128, BlockCidr, IpVersion};
use crate::error::Error;
use crate::selector::{Selector, SelectorError};
use crate::unknown::UnknownFields;

/// Default block prefix for IPv4 pools (64 addresses).
pub const DEFAULT_IPV4_BLOCK_SIZE: u8 = 26;
/// Default block prefix for IPv6 pools (64 addresses).
pub const DEFAULT_IPV6_BLOCK_SIZE: u8 = 122;

/// What addresses from a pool may be used for (`allowedUses`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AllowedUse {
    /// Pod and workload addresses.
    Workload,
    /// Node tunnel addresses (IPIP, VXLAN, WireGuard).
    Tunnel,
    /// Service LoadBalancer addresses.
    LoadBalancer,
}

impl AllowedUse {
    /// The name Calico uses in `allowedUses`.
    pub fn as_str(self) -> &'static str {
        match self {
            AllowedUse::Workload => "Workload",
            AllowedUse::Tunnel => "Tunnel",
            AllowedUse::LoadBalancer => "LoadBalancer",
        }
    }
}

/// Whether a pool is used for automatic assignment (`assignmentMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AssignmentMode {
    /// Used whenever its selectors match.
    Automatic,
    /// Used only when a request names it.
    Manual,
}

/// An IPPool spec as Calico stores it (crd.projectcalico.org/v1 `IPPool`
/// spec; field names are Calico's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolSpec {
    /// The pool's range.
    pub cidr: IpNet,
    /// Prefix length of the pool's blocks; absent means the family default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u8>,
    /// Which nodes may use the pool (Calico selector); empty means all.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_selector: String,
    /// Which namespaces' pods may use the pool (Calico selector); empty means all.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace_selector: String,
    /// What the pool's addresses may be used for; empty means Workload and Tunnel.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_uses: Vec<AllowedUse>,
    /// Automatic or Manual assignment; absent means Automatic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment_mode: Option<AssignmentMode>,
    /// A disabled pool hands out no new addresses.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// Carried through for the dataplane.
    #[serde(
        default,
        rename = "disableBGPExport",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub disable_bgp_export: bool,
    /// Carried through for the dataplane (`Never`, `Always`, `CrossSubnet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipip_mode: Option<String>,
    /// Carried through for the dataplane (`Never`, `Always`, `CrossSubnet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_mode: Option<String>,
    /// Carried through for the dataplane.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nat_outgoing: bool,
    /// Fields of a newer Calico, kept verbatim.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

impl PoolSpec {
    /// A spec with Calico's defaults for everything but the CIDR.
    pub fn new(cidr: IpNet) -> Self {
        PoolSpec {
            cidr,
            block_size: None,
            node_selector: String::new(),
            namespace_selector: String::new(),
            allowed_uses: Vec::new(),
            assignment_mode: None,
            disabled: false,
            disable_bgp_export: false,
            ipip_mode: None,
            vxlan_mode: None,
            nat_outgoing: false,
            unknown: UnknownFields::new(),
        }
    }
}

/// A validated pool: its spec can be trusted (aligned CIDR, block size in
/// range, selectors parsed).
#[derive(Debug, Clone)]
pub struct Pool {
    name: String,
    spec: PoolSpec,
    block_size: u8,
    node_selector: Selector,
    namespace_selector: Selector,
}

// Everything else is derived from the name and spec.
impl PartialEq for Pool {
    fn eq(&self, other: &Pool) -> bool {
        self.name == other.name && self.spec == other.spec
    }
}

impl Pool {
    /// Validates a spec as Calico's IPPool validation does (blockSize 20–32
    /// for IPv4 and 116–128 for IPv6, CIDR aligned and at least one block).
    pub fn new(name: impl Into<String>, spec: PoolSpec) -> Result<Pool, Error> {
        let name = name.into();
        if spec.cidr.trunc() != spec.cidr {
            return Err(Error::CidrNotAligned { cidr: spec.cidr });
        }
        let version = IpVersion::of(spec.cidr.addr());
        let (min, max, default) = match version {
            IpVersion::V4 => (20, 32, DEFAULT_IPV4_BLOCK_SIZE),
            IpVersion::V6 => (116, 128, DEFAULT_IPV6_BLOCK_SIZE),
        };
        let block_size = spec.block_size.unwrap_or(default);
        if !(min..=max).contains(&block_size) {
            return Err(Error::BlockSizeOutOfRange {
                pool: name,
                version,
                got: block_size,
                min,
                max,
            });
        }
        if spec.cidr.prefix_len() > block_size {
            return Err(Error::PoolSmallerThanBlock {
                pool: name,
                cidr: spec.cidr,
                block_size,
            });
        }
        let parse = |field: &'static str, text: &str| {
            // Calico's IPPool validation refuses global() in pool selectors
            // (libcalico-go validator.go) although the selector language has it.
            if let Some(position) = text.find("global(") {
                return Err(Error::InvalidSelector {
                    pool: name.clone(),
                    field,
                    source: SelectorError {
                        selector: text.to_string(),
                        position,
                        reason: "global() is not allowed in an IP pool selector".to_string(),
                    },
                });
            }
            Selector::parse(text).map_err(|source| Error::InvalidSelector {
                pool: name.clone(),
                field,
                source,
            })
        };
        let node_selector = parse("nodeSelector", &spec.node_selector)?;
        let namespace_selector = parse("namespaceSelector", &spec.namespace_selector)?;
        Ok(Pool {
            name,
            spec,
            block_size,
            node_selector,
            namespace_selector,
        })
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The spec as given.
    pub fn spec(&self) -> &PoolSpec {
        &self.spec
    }

    /// The pool's range.
    pub fn cidr(&self) -> IpNet {
        self.spec.cidr
    }

    /// The pool's family.
    pub fn version(&self) -> IpVersion {
        IpVersion::of(self.spec.cidr.addr())
    }

    /// The block prefix length in force (the spec's, or the family default).
    pub fn block_size(&self) -> u8 {
        self.block_size
    }

    /// Whether the pool hands out new addresses.
    pub fn enabled(&self) -> bool {
        !self.spec.disabled
    }

    /// Whether the pool takes part in automatic assignment.
    pub fn automatic(&self) -> bool {
        self.spec.assignment_mode != Some(AssignmentMode::Manual)
    }

    /// Whether the pool may serve `intended_use`. Calico defaults an empty
    /// `allowedUses` to Workload and Tunnel (v3 IPPool defaulting).
    pub fn allows(&self, intended_use: AllowedUse) -> bool {
        if self.spec.allowed_uses.is_empty() {
            return matches!(intended_use, AllowedUse::Workload | AllowedUse::Tunnel);
        }
        self.spec.allowed_uses.contains(&intended_use)
    }

    /// Whether the pool's nodeSelector matches a node's labels.
    pub fn selects_node(&self, labels: &BTreeMap<String, String>) -> bool {
        self.node_selector.matches(labels)
    }

    /// Whether the pool's nodeSelector matches every node whatever its
    /// labels (empty or `all()`): then no node's labels need reading.
    pub fn selects_every_node(&self) -> bool {
        self.node_selector.selects_all()
    }

    /// Whether the pool's namespaceSelector matches a namespace's labels.
    pub fn selects_namespace(&self, labels: &BTreeMap<String, String>) -> bool {
        self.namespace_selector.matches(labels)
    }

    /// Whether the pool's range holds `address`.
    pub fn contains(&self, address: IpAddr) -> bool {
        self.spec.cidr.contains(&address)
    }

    /// Number of blocks the pool is cut into. `::/0` in /128 blocks has
    /// 2^128, one more than a u128 holds: it saturates, and its last block
    /// is never chosen (Calico accepts such a pool; nobody needs that block).
    pub fn block_count(&self) -> u128 {
        1u128
            .checked_shl(u32::from(self.block_size - self.spec.cidr.prefix_len()))
            .unwrap_or(u128::MAX)
    }

    /// Number of addresses in one block.
    pub fn addresses_per_block(&self) -> u32 {
        1u32 << (self.spec.cidr.max_prefix_len() - self.block_size)
    }

    /// The block at `index` (0-based from the pool's first address).
    pub fn block_at(&self, index: u128) -> BlockCidr {
        let base = to_u128(self.spec.cidr.network());
        let first = base + index * u128::from(self.addresses_per_block());
        let address = crate::cidr::from_u128(first, self.version());
        // The index is below block_count and block_size is validated, so the
        // network is aligned and in range.
        BlockCidr::new(IpNet::new(address, self.block_size).expect("valid block prefix"))
            .expect("blocks of a validated pool are valid")
    }

    /// The index of the block holding `address`, if the pool holds it.
    pub fn block_index_of(&self, address: IpAddr) -> Option<u128> {
        if !self.contains(address) {
            return None;
        }
        let offset = to_u128(address) - to_u128(self.spec.cidr.network());
        Some(offset / u128::from(self.addresses_per_block()))
    }

    /// The block of this pool that holds `address`.
    pub fn block_of(&self, address: IpAddr) -> Option<BlockCidr> {
        self.block_index_of(address)
            .map(|index| self.block_at(index))
    }

    /// The addresses of the pool that no host of a subnet with the pool's
    /// prefix can use: the network address (for IPv6 the Subnet-Router
    /// anycast address, RFC 4291 2.6.1) and, for IPv4, the broadcast
    /// address. host-local leaves out the same ones (containernetworking
    /// plugins, host-local/backend/allocator/range.go: `Canonicalize`
    /// starts after the network address, `lastIP` stops before the IPv4
    /// broadcast). A /31 or /32 (/127, /128) pool has none (RFC 3021,
    /// RFC 6164: both addresses of a point-to-point link are hosts).
    pub fn subnet_edges(&self) -> Vec<IpNet> {
        subnet_edges(self.spec.cidr)
    }

    /// Whether this pool's range overlaps `other`.
    pub fn overlaps(&self, other: &IpNet) -> bool {
        self.spec.cidr.contains(&other.network()) || other.contains(&self.spec.cidr.network())
    }
}

/// The addresses of `cidr` that no host of that subnet can use; see
/// [`Pool::subnet_edges`].
pub fn subnet_edges(cidr: IpNet) -> Vec<IpNet> {
    if cidr.prefix_len() + 1 >= cidr.max_prefix_len() {
        return Vec::new();
    }
    let host = |address: IpAddr| IpNet::from(address);
    match cidr {
        IpNet::V4(_) => vec![host(cidr.network()), host(cidr.broadcast())],
        IpNet::V6(_) => vec![host(cidr.network())],
    }
}

/// Refuses a new pool that overlaps an existing one (Calico's IPPool
/// validation rejects overlapping pools).
pub fn check_no_overlap(new: &Pool, existing: &[Pool]) -> Result<(), Error> {
    match existing
        .iter()
        .find(|p| p.name() != new.name() && p.overlaps(&new.cidr()))
    {
        Some(other) => Err(Error::PoolsOverlap {
            pool: new.name().to_string(),
            cidr: new.cidr(),
            other: other.name().to_string(),
            other_cidr: other.cidr(),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(cidr: &str, block_size: Option<u8>) -> PoolSpec {
        PoolSpec {
            block_size,
            ..PoolSpec::new(cidr.parse().unwrap())
        }
    }

    #[test]
    fn block_size_defaults_to_26_and_122() {
        assert_eq!(
            Pool::new("a", spec("10.0.0.0/16", None))
                .unwrap()
                .block_size(),
            26
        );
        assert_eq!(
            Pool::new("b", spec("fd00::/48", None))
                .unwrap()
                .block_size(),
            122
        );
    }

    #[test]
    fn block_size_outside_calico_range_is_refused_with_its_bounds() {
        for (cidr, size, min, max) in [
            ("10.0.0.0/16", 19, 20, 32),
            ("10.0.0.0/16", 33, 20, 32),
            ("10.0.0.0/16", 0, 20, 32),
            ("fd00::/48", 115, 116, 128),
            ("fd00::/48", 129, 116, 128),
        ] {
            let err = Pool::new("p", spec(cidr, Some(size))).unwrap_err();
            assert_eq!(
                err,
                Error::BlockSizeOutOfRange {
                    pool: "p".into(),
                    version: IpVersion::of(cidr.parse::<IpNet>().unwrap().addr()),
                    got: size,
                    min,
                    max
                }
            );
            assert!(err.to_string().contains(&format!("blockSize {size}")));
        }
    }

    #[test]
    fn unaligned_or_too_small_pools_are_refused() {
        assert!(matches!(
            Pool::new("p", spec("10.0.0.1/16", None)),
            Err(Error::CidrNotAligned { .. })
        ));
        assert!(matches!(
            Pool::new("p", spec("10.0.0.0/28", Some(26))),
            Err(Error::PoolSmallerThanBlock { .. })
        ));
    }

    #[test]
    fn invalid_node_selector_names_the_field() {
        let mut s = spec("10.0.0.0/16", None);
        s.node_selector = "zone == ".into();
        let err = Pool::new("p", s).unwrap_err();
        assert!(err.to_string().contains("nodeSelector"), "{err}");
    }

    #[test]
    fn global_selector_is_refused_in_pools_as_calico_validation_does() {
        let mut s = spec("10.0.0.0/16", None);
        s.namespace_selector = "global()".into();
        let err = Pool::new("p", s).unwrap_err();
        assert!(err.to_string().contains("namespaceSelector"), "{err}");
    }

    #[test]
    fn empty_allowed_uses_means_workload_and_tunnel() {
        let pool = Pool::new("p", spec("10.0.0.0/16", None)).unwrap();
        assert!(pool.allows(AllowedUse::Workload) && pool.allows(AllowedUse::Tunnel));
        assert!(!pool.allows(AllowedUse::LoadBalancer));
        let mut s = spec("10.1.0.0/16", None);
        s.allowed_uses = vec![AllowedUse::Tunnel];
        assert!(!Pool::new("t", s).unwrap().allows(AllowedUse::Workload));
    }

    #[test]
    fn blocks_are_indexed_from_the_pool_start() {
        let pool = Pool::new("p", spec("192.168.0.0/16", None)).unwrap();
        assert_eq!(pool.block_count(), 1024);
        assert_eq!(pool.block_at(742).to_string(), "192.168.185.128/26");
        let address = "192.168.185.130".parse().unwrap();
        assert_eq!(pool.block_index_of(address), Some(742));
        assert_eq!(
            pool.block_of(address).unwrap().to_string(),
            "192.168.185.128/26"
        );
        assert_eq!(pool.block_index_of("10.0.0.1".parse().unwrap()), None);
        let v6 = Pool::new("v6", spec("fd00::/48", None)).unwrap();
        assert_eq!(v6.block_count(), 1u128 << 74);
        let everything = PoolSpec {
            block_size: Some(128),
            ..PoolSpec::new("::/0".parse().unwrap())
        };
        let everything = Pool::new("everything", everything).unwrap();
        assert_eq!(everything.block_count(), u128::MAX, "saturates");
        assert_eq!(v6.block_at(1).to_string(), "fd00::40/122");
    }

    #[test]
    fn overlapping_pools_are_refused() {
        let a = Pool::new("a", spec("10.0.0.0/16", None)).unwrap();
        let b = Pool::new("b", spec("10.0.128.0/17", None)).unwrap();
        let c = Pool::new("c", spec("10.1.0.0/16", None)).unwrap();
        assert!(matches!(
            check_no_overlap(&b, std::slice::from_ref(&a)),
            Err(Error::PoolsOverlap { .. })
        ));
        assert!(check_no_overlap(&c, std::slice::from_ref(&a)).is_ok());
        // Updating a pool does not conflict with its own old version.
        assert!(check_no_overlap(&a, std::slice::from_ref(&a)).is_ok());
    }

    #[test]
    fn fixture_pool_spec_parses_and_keeps_its_fields() {
        let yaml = "allowedUses: [Workload, Tunnel]\nblockSize: 26\ncidr: 192.168.0.0/16\nipipMode: Never\nnatOutgoing: true\nnodeSelector: all()\nvxlanMode: CrossSubnet\n";
        let spec: PoolSpec = serde_saphyr::from_str(yaml).unwrap();
        let pool = Pool::new("default-ipv4-ippool", spec.clone()).unwrap();
        assert_eq!(pool.block_size(), 26);
        let back = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            back,
            serde_saphyr::from_str::<serde_json::Value>(yaml).unwrap()
        );
    }
}
