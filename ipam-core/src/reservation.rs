//! Reserved addresses (Calico's `IPReservation`): never handed out by
//! automatic assignment, though they may be assigned explicitly.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::cidr::{to_u128, BlockCidr};
use crate::unknown::UnknownFields;

/// An IPReservation spec, with Calico's field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReservationSpec {
    /// CIDRs (or single addresses as /32, /128) that are reserved.
    // Calico spells it with capitals (crd.projectcalico.org_ipreservations.yaml).
    #[serde(rename = "reservedCIDRs")]
    pub reserved_cidrs: Vec<IpNet>,
    /// Fields of a newer Calico, kept verbatim.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// Every reserved range of every reservation, for fast lookups.
#[derive(Debug, Clone, Default)]
pub struct Reserved {
    // (first, last) as integers, v4 and v6 kept apart by the family check.
    ranges: Vec<(IpNet, u128, u128)>,
}

impl Reserved {
    /// Collects the reserved CIDRs of all reservations.
    pub fn new<'a>(specs: impl IntoIterator<Item = &'a ReservationSpec>) -> Self {
        let ranges = specs
            .into_iter()
            .flat_map(|spec| spec.reserved_cidrs.iter())
            .map(|net| range(*net))
            .collect();
        Reserved { ranges }
    }

    /// These reservations plus `extra` ranges: what one request must not
    /// be given (its own exclusions on top of the IPReservations).
    pub fn with(&self, extra: impl IntoIterator<Item = IpNet>) -> Reserved {
        let mut ranges = self.ranges.clone();
        ranges.extend(extra.into_iter().map(range));
        Reserved { ranges }
    }

    /// Whether nothing is reserved (the common case, and the fast path).
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Whether `address` is reserved.
    pub fn contains(&self, address: IpAddr) -> bool {
        self.ranges.iter().any(|(net, _, _)| net.contains(&address))
    }

    /// Whether some address of `block` is reserved.
    pub fn touches(&self, block: &BlockCidr) -> bool {
        let (first, last) = bounds(block);
        self.same_family(block)
            .any(|(_, lo, hi)| *lo <= last && first <= *hi)
    }

    /// Whether every address of `block` is reserved (Calico's
    /// MatchesWholeCIDR: one range covers it, or several together do).
    pub fn covers(&self, block: &BlockCidr) -> bool {
        let (first, last) = bounds(block);
        let mut pieces: Vec<(u128, u128)> = self
            .same_family(block)
            .filter(|(_, lo, hi)| *lo <= last && first <= *hi)
            .map(|(_, lo, hi)| ((*lo).max(first), (*hi).min(last)))
            .collect();
        pieces.sort_unstable();
        let mut next = first;
        for (lo, hi) in pieces {
            if lo > next {
                return false;
            }
            if hi >= last {
                return true;
            }
            next = next.max(hi + 1);
        }
        false
    }

    fn same_family<'a>(
        &'a self,
        block: &'a BlockCidr,
    ) -> impl Iterator<Item = &'a (IpNet, u128, u128)> + 'a {
        let v4 = block.net().addr().is_ipv4();
        self.ranges
            .iter()
            .filter(move |(net, _, _)| net.addr().is_ipv4() == v4)
    }
}

fn range(net: IpNet) -> (IpNet, u128, u128) {
    let net = net.trunc();
    (net, to_u128(net.network()), to_u128(net.broadcast()))
}

fn bounds(block: &BlockCidr) -> (u128, u128) {
    let first = block.base();
    (first, first + u128::from(block.size()) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reserved(cidrs: &[&str]) -> Reserved {
        let spec = ReservationSpec {
            reserved_cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
            unknown: UnknownFields::new(),
        };
        Reserved::new([&spec])
    }

    #[test]
    fn single_addresses_and_ranges_are_reserved() {
        let r = reserved(&["10.0.0.5/32", "10.0.1.0/30"]);
        assert!(r.contains("10.0.0.5".parse().unwrap()));
        assert!(r.contains("10.0.1.3".parse().unwrap()));
        assert!(!r.contains("10.0.1.4".parse().unwrap()));
        assert!(!r.contains("::a00:5".parse().unwrap()));
    }

    #[test]
    fn whole_block_is_covered_by_pieces_that_together_span_it() {
        let block: BlockCidr = "10.0.0.0/26".parse().unwrap();
        assert!(reserved(&["10.0.0.0/24"]).covers(&block));
        assert!(reserved(&["10.0.0.0/27", "10.0.0.32/27"]).covers(&block));
        assert!(!reserved(&["10.0.0.0/27", "10.0.0.33/32"]).covers(&block));
        assert!(reserved(&["10.0.0.33/32"]).touches(&block));
        assert!(!reserved(&["10.0.1.0/24"]).touches(&block));
        assert!(!Reserved::default().covers(&block));
    }

    #[test]
    fn reservation_spec_uses_calicos_field_name() {
        let spec: ReservationSpec =
            serde_json::from_str(r#"{"reservedCIDRs":["10.0.0.0/30","fd00::1/128"]}"#).unwrap();
        assert_eq!(spec.reserved_cidrs.len(), 2);
        let back = serde_json::to_string(&spec).unwrap();
        assert_eq!(back, r#"{"reservedCIDRs":["10.0.0.0/30","fd00::1/128"]}"#);
    }

    #[test]
    fn ipv6_reservations_do_not_touch_ipv4_blocks() {
        let block: BlockCidr = "0.0.0.0/26".parse().unwrap();
        assert!(!reserved(&["::/64"]).touches(&block));
    }
}
