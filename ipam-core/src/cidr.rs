//! Address arithmetic shared by pools and blocks: IPv4 and IPv6 alike, as
//! 128-bit integers so that ordinals and block indexes never care about the
//! family.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

/// The address family of a pool, block or request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpVersion {
    /// IPv4 (32-bit addresses).
    V4,
    /// IPv6 (128-bit addresses).
    V6,
}

impl IpVersion {
    /// The family of an address.
    pub fn of(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(_) => IpVersion::V4,
            IpAddr::V6(_) => IpVersion::V6,
        }
    }

    /// 4 or 6, as Calico spells versions in messages and keys.
    pub fn number(self) -> u8 {
        match self {
            IpVersion::V4 => 4,
            IpVersion::V6 => 6,
        }
    }

    /// The other family (Calico's messages about mixed lists name both).
    pub fn other(self) -> Self {
        match self {
            IpVersion::V4 => IpVersion::V6,
            IpVersion::V6 => IpVersion::V4,
        }
    }
}

impl fmt::Display for IpVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IPv{}", self.number())
    }
}

/// An address as an integer, so that offsets are plain arithmetic.
pub fn to_u128(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The inverse of [`to_u128`]. For IPv4 the value must fit in 32 bits.
pub fn from_u128(value: u128, version: IpVersion) -> IpAddr {
    match version {
        // Truncation cannot happen for values produced inside an IPv4 network.
        IpVersion::V4 => IpAddr::V4(Ipv4Addr::from(value as u32)),
        IpVersion::V6 => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

/// The CIDR of an allocation block: a network address with its prefix, no
/// host bits set, holding at most 2^12 addresses (Calico's smallest block
/// prefixes are /20 and /116).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockCidr(IpNet);

/// The most host bits a block may have (IPv4 /20, IPv6 /116).
pub const MAX_BLOCK_HOST_BITS: u8 = 12;

impl BlockCidr {
    /// Accepts `net` when it is a network address (no host bits) and holds at
    /// most 2^12 addresses.
    pub fn new(net: IpNet) -> Result<Self, Error> {
        if net.trunc() != net {
            return Err(Error::CidrNotAligned { cidr: net });
        }
        let host_bits = net.max_prefix_len() - net.prefix_len();
        if host_bits > MAX_BLOCK_HOST_BITS {
            return Err(Error::BlockTooLarge { cidr: net });
        }
        Ok(BlockCidr(net))
    }

    /// The network.
    pub fn net(&self) -> IpNet {
        self.0
    }

    /// The address family.
    pub fn version(&self) -> IpVersion {
        IpVersion::of(self.0.addr())
    }

    /// Number of addresses (ordinals) in the block.
    pub fn size(&self) -> u32 {
        1u32 << (self.0.max_prefix_len() - self.0.prefix_len())
    }

    /// The first address as an integer.
    pub fn base(&self) -> u128 {
        to_u128(self.0.network())
    }

    /// The ordinal of `address` within the block, if the block contains it.
    pub fn ordinal_of(&self, address: IpAddr) -> Option<u32> {
        if IpVersion::of(address) != self.version() {
            return None;
        }
        let offset = to_u128(address).checked_sub(self.base())?;
        (offset < u128::from(self.size())).then_some(offset as u32)
    }

    /// The address at `ordinal`. Callers pass ordinals below [`Self::size`].
    pub fn address(&self, ordinal: u32) -> IpAddr {
        from_u128(self.base() + u128::from(ordinal), self.version())
    }

    /// The address at `ordinal` with the block's prefix length, as calico-ipam
    /// reports auto-assigned addresses (`192.168.185.16/26`).
    pub fn address_net(&self, ordinal: u32) -> IpNet {
        // The prefix length comes from a valid network, so this cannot fail.
        IpNet::new(self.address(ordinal), self.0.prefix_len()).unwrap_or(self.0)
    }

    /// The Kubernetes object name Calico gives the block: every `.`, `:` and
    /// `/` of the CIDR becomes `-` (libcalico-go k8s backend, IPAMBlock names).
    pub fn object_name(&self) -> String {
        self.0.to_string().replace(['.', ':', '/'], "-")
    }
}

impl fmt::Display for BlockCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for BlockCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlockCidr({})", self.0)
    }
}

impl std::str::FromStr for BlockCidr {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let net: IpNet = s.parse().map_err(|_| Error::InvalidCidr {
            field: "cidr",
            value: s.to_string(),
        })?;
        BlockCidr::new(net)
    }
}

impl Serialize for BlockCidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for BlockCidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// FNV-1a over a node name: a stable, platform-independent spread of where a
/// node starts looking for free blocks, so that nodes claiming at the same
/// moment rarely collide. Calico seeds Go's generator with FNV-32 of the
/// hostname for the same reason (ipam_block_reader_writer.go,
/// determineSeed); the exact sequence need not match.
pub fn node_spread(node: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in node.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(s: &str) -> BlockCidr {
        s.parse().unwrap()
    }

    #[test]
    fn ordinal_and_address_are_inverse_for_v4_and_v6() {
        for b in [block("192.168.185.0/26"), block("fd00::40/122")] {
            for ordinal in 0..b.size() {
                assert_eq!(b.ordinal_of(b.address(ordinal)), Some(ordinal));
            }
        }
    }

    #[test]
    fn addresses_outside_the_block_have_no_ordinal() {
        let b = block("10.0.0.64/26");
        assert_eq!(b.ordinal_of("10.0.0.63".parse().unwrap()), None);
        assert_eq!(b.ordinal_of("10.0.0.128".parse().unwrap()), None);
        assert_eq!(b.ordinal_of("::1".parse().unwrap()), None);
    }

    #[test]
    fn block_names_replace_dots_colons_and_slashes() {
        assert_eq!(block("192.168.185.0/26").object_name(), "192-168-185-0-26");
        assert_eq!(block("fd00:1::40/122").object_name(), "fd00-1--40-122");
    }

    #[test]
    fn block_cidr_rejects_host_bits_and_oversized_blocks() {
        assert!(matches!(
            "10.0.0.1/26".parse::<BlockCidr>(),
            Err(Error::CidrNotAligned { .. })
        ));
        assert!(matches!(
            "10.0.0.0/19".parse::<BlockCidr>(),
            Err(Error::BlockTooLarge { .. })
        ));
        assert!(matches!(
            "nonsense".parse::<BlockCidr>(),
            Err(Error::InvalidCidr { .. })
        ));
    }

    #[test]
    fn address_net_keeps_the_block_prefix() {
        assert_eq!(
            block("192.168.185.0/26").address_net(16).to_string(),
            "192.168.185.16/26"
        );
    }

    #[test]
    fn node_spread_differs_between_nodes() {
        assert_ne!(node_spread("node-1"), node_spread("node-2"));
        assert_eq!(node_spread("node-1"), node_spread("node-1"));
    }
}
