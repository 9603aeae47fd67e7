//! IPReservation: addresses automatic assignment must never hand out
//! (api/pkg/apis/projectcalico/v3/ipreservation.go, IPReservationSpec;
//! schema in crd.projectcalico.org_ipreservations.yaml). People write
//! them, with CIDRs or bare addresses; the IPAM reads them.

use std::net::IpAddr;

use ipam_core::reservation::ReservationSpec;
use ipam_core::unknown::UnknownFields;
use ipnet::IpNet;
use kube::CustomResource;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::metadata::{display_name, object_meta};

/// The spec of an IPReservation.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[kube(
    group = "crd.projectcalico.org",
    version = "v1",
    kind = "IPReservation",
    plural = "ipreservations",
    derive = "PartialEq"
)]
pub struct IPReservationSpec {
    /// CIDRs and bare addresses that are reserved.
    #[serde(
        rename = "reservedCIDRs",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(schema_with = "reserved_cidrs")]
    pub reserved_cidrs: Vec<String>,
    /// Fields a newer Calico writes, kept verbatim.
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: UnknownFields,
}

// controller-gen puts the `cidr` format on the list itself
// (crd.projectcalico.org_ipreservations.yaml); kept as Calico has it.
fn reserved_cidrs(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "format": "cidr",
        "items": { "type": "string" },
        "x-kubernetes-list-type": "set"
    })
}

/// A reserved entry: a CIDR, or a bare address meaning just that address
/// (Calico validates the list with its `cidrs` rule, which takes both).
fn parse_entry(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

impl TryFrom<&IPReservation> for ReservationSpec {
    type Error = Error;

    /// Parses every entry; a bare address becomes a /32 or /128.
    fn try_from(object: &IPReservation) -> Result<ReservationSpec, Error> {
        let reserved_cidrs = object
            .spec
            .reserved_cidrs
            .iter()
            .map(|text| {
                parse_entry(text).ok_or_else(|| Error::InvalidField {
                    kind: "IPReservation",
                    name: display_name(&object.metadata),
                    field: "reservedCIDRs",
                    value: text.clone(),
                    problem: "is neither a CIDR nor an IP address".to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(ReservationSpec {
            reserved_cidrs,
            unknown: object.spec.unknown.clone(),
        })
    }
}

impl IPReservation {
    /// The object to write for `spec` under `name`, with `previous`'s
    /// metadata when this replaces it. Entries keep `previous`'s spelling
    /// (a bare address stays bare) when they still mean the same ranges.
    pub fn from_core(
        name: &str,
        spec: &ReservationSpec,
        previous: Option<&IPReservation>,
    ) -> IPReservation {
        let same_ranges = |old: &IPReservation| {
            old.spec.reserved_cidrs.len() == spec.reserved_cidrs.len()
                && old
                    .spec
                    .reserved_cidrs
                    .iter()
                    .zip(&spec.reserved_cidrs)
                    .all(|(text, net)| parse_entry(text) == Some(*net))
        };
        let reserved_cidrs = match previous {
            Some(old) if same_ranges(old) => old.spec.reserved_cidrs.clone(),
            _ => spec.reserved_cidrs.iter().map(IpNet::to_string).collect(),
        };
        IPReservation {
            metadata: object_meta(name.to_string(), previous.map(|p| &p.metadata)),
            spec: IPReservationSpec {
                reserved_cidrs,
                unknown: spec.unknown.clone(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reservation(entries: &[&str]) -> IPReservation {
        IPReservation::new(
            "r",
            IPReservationSpec {
                reserved_cidrs: entries.iter().map(|e| e.to_string()).collect(),
                unknown: UnknownFields::new(),
            },
        )
    }

    #[test]
    fn bare_addresses_are_single_address_ranges() {
        let object = reservation(&["10.0.0.5", "fd00::1", "10.1.0.0/30"]);
        let spec = ReservationSpec::try_from(&object).unwrap();
        let shown: Vec<String> = spec.reserved_cidrs.iter().map(IpNet::to_string).collect();
        assert_eq!(shown, ["10.0.0.5/32", "fd00::1/128", "10.1.0.0/30"]);
    }

    #[test]
    fn a_rewrite_keeps_the_spelling_when_the_ranges_are_unchanged() {
        let object = reservation(&["10.0.0.5", "FD00::1/128"]);
        let spec = ReservationSpec::try_from(&object).unwrap();
        let back = IPReservation::from_core("r", &spec, Some(&object));
        assert_eq!(back, object);
        let mut changed = spec.clone();
        changed.reserved_cidrs.pop();
        let written = IPReservation::from_core("r", &changed, Some(&object));
        assert_eq!(written.spec.reserved_cidrs, ["10.0.0.5/32"]);
    }

    #[test]
    fn an_entry_that_is_not_an_address_is_refused_by_name() {
        let err = ReservationSpec::try_from(&reservation(&["10.0.0.300"])).unwrap_err();
        assert!(err.to_string().contains("reservedCIDRs"), "{err}");
        assert!(err.to_string().contains("10.0.0.300"), "{err}");
    }
}
