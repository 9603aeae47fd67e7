//! The wire type of `/v1/reservations` (Calico's IPReservation: addresses
//! automatic assignment never hands out) and the rules a reservation
//! must keep before it is stored, shared by the server and ipamctl so that
//! both refuse the same input with the same words.
//!
//! The rules are Calico's, plus what its Kubernetes datastore enforces,
//! so that a reservation stored on one datastore could be stored on any:
//!
//! - the name is the IPReservation object's: a Kubernetes object name;
//! - each `reservedCIDRs` entry is a CIDR or a bare address, host bits
//!   allowed: Calico validates the list with its `cidrs` rule
//!   (libcalico-go/lib/validator/v3/validator.go, `validateCIDRs`: "a slice
//!   of valid (not strictly masked) IP networks. An IP address is valid,
//!   and assumed to be fully masked"), which is `ParseCIDROrIP`
//!   (libcalico-go/lib/net/ipnet.go); IPAM reserves the entry's whole
//!   network (ipam.go, `getReservedIPs`), so `10.0.0.5/24` reserves
//!   10.0.0.0/24;
//! - no entry twice: the CRD declares the list `x-kubernetes-list-type:
//!   set` (crd.projectcalico.org_ipreservations.yaml), which the
//!   Kubernetes API server enforces; entries are compared as the ranges
//!   they are stored as (`10.0.0.1` is stored as `10.0.0.1/32`);
//! - at most [`MAX_RESERVED_CIDRS`] entries: Calico sets no limit, but
//!   says a reservation is "only suitable for reserving small numbers of
//!   IP addresses" (api/pkg/apis/projectcalico/v3/ipreservation.go), and
//!   every assignment checks every entry.
//!
//! An empty list is valid, as in Calico (`cidrs,omitempty`): it reserves
//! nothing.

use std::net::IpAddr;

use ipam_core::reservation::ReservationSpec;
use ipam_core::unknown::UnknownFields;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::names::{check_object_name, NameError};
use crate::ErrorCode;

/// Most entries one reservation may list.
pub const MAX_RESERVED_CIDRS: usize = 1024;

/// A reservation: its name and Calico's IPReservation spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReservationBody {
    /// The reservation's name (the IPReservation object's).
    pub name: String,
    /// Calico's IPReservation spec.
    pub spec: ReservationSpecBody,
}

/// Calico's IPReservation spec, in its field name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReservationSpecBody {
    /// CIDRs and bare addresses never handed out by automatic assignment
    /// (a bare address is stored as /32 or /128).
    #[serde(rename = "reservedCIDRs", default)]
    pub reserved_cidrs: Vec<String>,
}

/// A reservation the rules refuse, naming the field and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReservationError {
    /// The name is no Kubernetes object name.
    #[error(transparent)]
    Name(#[from] NameError),
    /// An entry is neither a CIDR nor an address.
    #[error("spec.reservedCIDRs[{index}]: {value:?} is neither a CIDR nor an IP address")]
    InvalidCidr {
        /// Its place in the list.
        index: usize,
        /// The entry, cut after 80 characters.
        value: String,
    },
    /// An entry means the same range as an earlier one.
    #[error(
        "spec.reservedCIDRs[{index}]: {value:?} is {range}, which reservedCIDRs[{first}] \
         already lists (the list is a set)"
    )]
    Duplicate {
        /// Its place in the list.
        index: usize,
        /// The entry.
        value: String,
        /// The range both mean.
        range: IpNet,
        /// The place of the first.
        first: usize,
    },
    /// Too many entries.
    #[error("spec.reservedCIDRs: {count} entries, at most {MAX_RESERVED_CIDRS}")]
    TooMany {
        /// How many were given.
        count: usize,
    },
}

impl From<&ReservationError> for ErrorCode {
    /// An entry that does not parse is an invalid CIDR; the rest, like a
    /// name, an invalid (or missing) value.
    fn from(error: &ReservationError) -> ErrorCode {
        match error {
            ReservationError::Name(name) => ErrorCode::from(name),
            ReservationError::InvalidCidr { .. } => ErrorCode::InvalidCidr,
            ReservationError::Duplicate { .. } | ReservationError::TooMany { .. } => {
                ErrorCode::InvalidValue
            }
        }
    }
}

/// One entry as Calico's `ParseCIDROrIP` reads it: a CIDR (host bits
/// allowed), else an address as its /32 or /128, with no zone. Stricter
/// than Go's `ParseCIDR` on one point: the prefix length is decimal digits
/// without a leading zero (Go takes `/024`), which is what the OpenAPI
/// document's pattern states.
pub fn parse_reserved(text: &str) -> Option<IpNet> {
    match text.split_once('/') {
        Some((address, prefix)) => {
            let address: IpAddr = address.parse().ok()?;
            let canonical = prefix.len() == 1 || !prefix.starts_with('0');
            if prefix.is_empty() || !canonical || !prefix.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            IpNet::new(address, prefix.parse().ok()?).ok()
        }
        None => text.parse::<IpAddr>().ok().map(IpNet::from),
    }
}

impl ReservationBody {
    /// The body of a stored reservation: the fields of a newer Calico stay
    /// in the datastore and are not part of the API's schema.
    pub fn of(name: &str, spec: &ReservationSpec) -> ReservationBody {
        ReservationBody {
            name: name.to_string(),
            spec: ReservationSpecBody {
                reserved_cidrs: spec.reserved_cidrs.iter().map(IpNet::to_string).collect(),
            },
        }
    }

    /// The spec to store, after the rules of the module documentation.
    pub fn check(&self) -> Result<ReservationSpec, ReservationError> {
        check_object_name("name", &self.name)?;
        let entries = &self.spec.reserved_cidrs;
        if entries.len() > MAX_RESERVED_CIDRS {
            return Err(ReservationError::TooMany {
                count: entries.len(),
            });
        }
        let mut reserved_cidrs: Vec<IpNet> = Vec::with_capacity(entries.len());
        for (index, text) in entries.iter().enumerate() {
            let Some(range) = parse_reserved(text) else {
                return Err(ReservationError::InvalidCidr {
                    index,
                    value: text.chars().take(80).collect(),
                });
            };
            if let Some(first) = reserved_cidrs.iter().position(|r| *r == range) {
                return Err(ReservationError::Duplicate {
                    index,
                    value: text.clone(),
                    range,
                    first,
                });
            }
            reserved_cidrs.push(range);
        }
        Ok(ReservationSpec {
            reserved_cidrs,
            unknown: UnknownFields::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(name: &str, entries: &[&str]) -> ReservationBody {
        ReservationBody {
            name: name.to_string(),
            spec: ReservationSpecBody {
                reserved_cidrs: entries.iter().map(|e| e.to_string()).collect(),
            },
        }
    }

    #[test]
    fn cidrs_with_host_bits_and_bare_addresses_are_taken_as_calico_takes_them() {
        let spec = body("gw", &["10.0.0.5/24", "10.0.1.1", "FD00::1", "fd00:1::/64"])
            .check()
            .unwrap();
        let shown: Vec<String> = spec.reserved_cidrs.iter().map(IpNet::to_string).collect();
        assert_eq!(
            shown,
            ["10.0.0.5/24", "10.0.1.1/32", "fd00::1/128", "fd00:1::/64"]
        );
        assert!(body("empty", &[])
            .check()
            .unwrap()
            .reserved_cidrs
            .is_empty());
    }

    #[test]
    fn a_bad_entry_is_refused_by_its_place_and_value() {
        for bad in [
            "10.0.0.300",
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0.0/",
            "10.0.0.0/024",
            "10.0.0.0/+8",
            " 10.0.0.1",
            "010.0.0.1",
            "fe80::1%eth0",
            "",
        ] {
            let error = body("r", &["10.9.0.0/16", bad]).check().unwrap_err();
            let shown = error.to_string();
            assert!(
                shown.starts_with("spec.reservedCIDRs[1]: ") && shown.contains(&format!("{bad:?}")),
                "{bad:?}: {shown}"
            );
        }
    }

    #[test]
    fn the_same_range_twice_is_refused_naming_both_places() {
        let error = body("r", &["10.0.0.1", "10.0.0.0/24", "10.0.0.1/32"])
            .check()
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "spec.reservedCIDRs[2]: \"10.0.0.1/32\" is 10.0.0.1/32, which reservedCIDRs[0] \
             already lists (the list is a set)"
        );
    }

    #[test]
    fn names_and_counts_are_bounded() {
        assert!(matches!(
            body("Not_A_Name", &[]).check(),
            Err(ReservationError::Name(_))
        ));
        let many: Vec<String> = (0..=MAX_RESERVED_CIDRS)
            .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
            .collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(
            body("r", &refs).check(),
            Err(ReservationError::TooMany {
                count: MAX_RESERVED_CIDRS + 1
            })
        );
    }

    #[test]
    fn the_wire_uses_calicos_field_name_and_refuses_unknown_fields() {
        let parsed: ReservationBody =
            serde_json::from_str(r#"{"name":"r","spec":{"reservedCIDRs":["10.0.0.1"]}}"#).unwrap();
        assert_eq!(parsed, body("r", &["10.0.0.1"]));
        assert!(serde_json::from_str::<ReservationBody>(
            r#"{"name":"r","spec":{"reservedCidrs":["10.0.0.1"]}}"#
        )
        .is_err());
    }
}
