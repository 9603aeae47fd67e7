//! IPPool: an address range cut into blocks, with the rules for who may
//! draw from it (api/pkg/apis/projectcalico/v3/ippool.go, IPPoolSpec; schema,
//! with its CEL rules, in crd.projectcalico.org_ippools.yaml). Pools are
//! written by people and operators; the IPAM only reads them, but ipamctl
//! can write one back without losing anything.
//!
//! Every field is `omitempty` in Go, so a zero value (empty string, false,
//! block size 0) is absent on the wire and means "unset".

use ipam_core::pool::{AllowedUse, AssignmentMode, Pool, PoolSpec};
use ipam_core::unknown::UnknownFields;
use ipnet::IpNet;
use kube::CustomResource;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::IntoDeserializer;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::go;
use crate::metadata::{object_meta, required_name};

/// The spec of an IPPool.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[kube(
    group = "crd.projectcalico.org",
    version = "v1",
    kind = "IPPool",
    plural = "ippools",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = spec_rules)]
pub struct IPPoolSpec {
    /// The pool's range.
    #[schemars(schema_with = "cidr")]
    pub cidr: String,
    /// `Never`, `Always` or `CrossSubnet`; empty means unset.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(schema_with = "encapsulation_mode")]
    pub vxlan_mode: String,
    /// `Never`, `Always` or `CrossSubnet`; empty means unset.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(schema_with = "encapsulation_mode")]
    pub ipip_mode: String,
    /// Masquerade traffic leaving the pool.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nat_outgoing: bool,
    /// A disabled pool hands out no new addresses.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// Keep the pool's routes out of BGP.
    #[serde(
        rename = "disableBGPExport",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub disable_bgp_export: bool,
    /// Prefix length of the pool's blocks; 0 means the family default.
    #[serde(default, skip_serializing_if = "go::is_zero")]
    #[schemars(schema_with = "block_size")]
    pub block_size: u8,
    /// Which nodes may use the pool (Calico selector).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_selector: String,
    /// Which namespaces' pods may use the pool (Calico selector).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace_selector: String,
    /// `Workload`, `Tunnel`, `LoadBalancer`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "allowed_uses")]
    pub allowed_uses: Vec<String>,
    /// `Automatic` or `Manual`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "assignment_mode")]
    pub assignment_mode: Option<String>,
    /// Fields a newer Calico writes, kept verbatim.
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: UnknownFields,
}

// The schema fragments and CEL rules below are those of Calico's published
// CRD (libcalico-go/config/crd/crd.projectcalico.org_ippools.yaml, v3.32.1),
// so that applying ours over Calico's changes no validation.

fn cidr(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "format": "cidr",
        "maxLength": 48,
        "x-kubernetes-validations": [{
            "rule": "self == oldSelf",
            "message": "CIDR cannot be changed; follow IP pool migration guide to avoid corruption.",
            "reason": "FieldValueInvalid"
        }]
    })
}

fn block_size(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "integer",
        "minimum": 0,
        "maximum": 128,
        "x-kubernetes-validations": [{
            "rule": "self == oldSelf",
            "message": "Block size cannot be changed; follow IP pool migration guide to avoid corruption.",
            "reason": "FieldValueInvalid"
        }]
    })
}

fn encapsulation_mode(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "enum": ["Never", "Always", "CrossSubnet"] })
}

fn allowed_uses(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": { "type": "string", "enum": ["Workload", "Tunnel", "LoadBalancer"] },
        "maxItems": 10,
        "x-kubernetes-list-type": "set"
    })
}

fn assignment_mode(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "enum": ["Automatic", "Manual"], "default": "Automatic" })
}

fn spec_rules(schema: &mut Schema) {
    let rules = serde_json::json!([
        {
            "rule": "!has(self.ipipMode) || !has(self.vxlanMode) || self.ipipMode == 'Never' || self.vxlanMode == 'Never' || size(self.ipipMode) == 0 || size(self.vxlanMode) == 0",
            "message": "ipipMode and vxlanMode cannot both be enabled",
            "reason": "FieldValueForbidden"
        },
        {
            "rule": "!has(self.allowedUses) || !self.allowedUses.exists(u, u == 'LoadBalancer') || (!has(self.ipipMode) || size(self.ipipMode) == 0 || self.ipipMode == 'Never') && (!has(self.vxlanMode) || size(self.vxlanMode) == 0 || self.vxlanMode == 'Never')",
            "message": "LoadBalancer IP pool cannot have IPIP or VXLAN enabled",
            "reason": "FieldValueForbidden"
        },
        {
            "rule": "!has(self.allowedUses) || !self.allowedUses.exists(u, u == 'LoadBalancer') || !self.allowedUses.exists(u, u == 'Workload' || u == 'Tunnel')",
            "message": "LoadBalancer cannot be combined with Workload or Tunnel allowed uses",
            "reason": "FieldValueForbidden"
        },
        {
            "rule": "!self.cidr.contains(':') || !has(self.ipipMode) || self.ipipMode == 'Never' || size(self.ipipMode) == 0",
            "message": "IPIP is not supported on IPv6 pools",
            "reason": "FieldValueForbidden"
        }
    ]);
    schema.insert("x-kubernetes-validations".to_string(), rules);
}

impl TryFrom<&IPPool> for Pool {
    type Error = Error;

    /// Parses the spec and validates the pool through ipam-core.
    fn try_from(object: &IPPool) -> Result<Pool, Error> {
        let name = required_name(&object.metadata, "IPPool")?;
        let spec = core_spec(name, &object.spec)?;
        Pool::new(name, spec).map_err(|source| Error::Refused {
            source: Box::new(source),
            kind: "IPPool",
            name: name.to_string(),
        })
    }
}

fn core_spec(name: &str, spec: &IPPoolSpec) -> Result<PoolSpec, Error> {
    let IPPoolSpec {
        cidr,
        vxlan_mode,
        ipip_mode,
        nat_outgoing,
        disabled,
        disable_bgp_export,
        block_size,
        node_selector,
        namespace_selector,
        allowed_uses,
        assignment_mode,
        unknown,
    } = spec;
    let invalid = |field, value: &str, problem: String| Error::InvalidField {
        kind: "IPPool",
        name: name.to_string(),
        field,
        value: value.to_string(),
        problem,
    };
    let cidr: IpNet = cidr
        .parse()
        .map_err(|e: ipnet::AddrParseError| invalid("cidr", cidr, e.to_string()))?;
    let allowed_uses = allowed_uses
        .iter()
        .map(|text| {
            AllowedUse::deserialize(text.as_str().into_deserializer())
                .map_err(|e: serde::de::value::Error| invalid("allowedUses", text, e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    let assignment_mode = assignment_mode
        .as_deref()
        .map(|text| {
            AssignmentMode::deserialize(text.into_deserializer()).map_err(
                |e: serde::de::value::Error| invalid("assignmentMode", text, e.to_string()),
            )
        })
        .transpose()?;
    let unset_if_empty = |text: &String| (!text.is_empty()).then(|| text.clone());
    Ok(PoolSpec {
        cidr,
        block_size: (*block_size != 0).then_some(*block_size),
        node_selector: node_selector.clone(),
        namespace_selector: namespace_selector.clone(),
        allowed_uses,
        assignment_mode,
        disabled: *disabled,
        disable_bgp_export: *disable_bgp_export,
        ipip_mode: unset_if_empty(ipip_mode),
        vxlan_mode: unset_if_empty(vxlan_mode),
        nat_outgoing: *nat_outgoing,
        unknown: unknown.clone(),
    })
}

impl IPPool {
    /// The object to write for `pool`, with `previous`'s metadata when this
    /// replaces it.
    pub fn from_core(pool: &Pool, previous: Option<&IPPool>) -> IPPool {
        let PoolSpec {
            cidr,
            block_size,
            node_selector,
            namespace_selector,
            allowed_uses,
            assignment_mode,
            disabled,
            disable_bgp_export,
            ipip_mode,
            vxlan_mode,
            nat_outgoing,
            unknown,
        } = pool.spec().clone();
        IPPool {
            metadata: object_meta(pool.name().to_string(), previous.map(|p| &p.metadata)),
            spec: IPPoolSpec {
                cidr: cidr.to_string(),
                vxlan_mode: vxlan_mode.unwrap_or_default(),
                ipip_mode: ipip_mode.unwrap_or_default(),
                nat_outgoing,
                disabled,
                disable_bgp_export,
                block_size: block_size.unwrap_or(0),
                node_selector,
                namespace_selector,
                allowed_uses: allowed_uses
                    .iter()
                    .map(|u| u.as_str().to_string())
                    .collect(),
                assignment_mode: assignment_mode.map(|mode| {
                    match mode {
                        AssignmentMode::Automatic => "Automatic",
                        AssignmentMode::Manual => "Manual",
                    }
                    .to_string()
                }),
                unknown,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(spec: serde_json::Value) -> IPPool {
        IPPool::new("p", serde_json::from_value(spec).unwrap())
    }

    #[test]
    fn zero_values_mean_unset_as_in_go() {
        let object = pool(serde_json::json!({"cidr": "fd00::/48"}));
        let core = Pool::try_from(&object).unwrap();
        assert_eq!(core.block_size(), 122, "block size 0 is the family default");
        assert_eq!(core.spec().ipip_mode, None);
        let back = IPPool::from_core(&core, Some(&object));
        assert_eq!(
            serde_json::to_value(&back.spec).unwrap(),
            serde_json::json!({"cidr": "fd00::/48"})
        );
    }

    #[test]
    fn every_field_survives_the_core() {
        let json = serde_json::json!({
            "cidr": "10.1.0.0/16", "blockSize": 28, "vxlanMode": "Always", "ipipMode": "Never",
            "natOutgoing": true, "disabled": true, "disableBGPExport": true,
            "nodeSelector": "zone == 'a'", "namespaceSelector": "all()",
            "allowedUses": ["Workload"], "assignmentMode": "Manual", "awsSubnetID": "subnet-1"
        });
        let object = pool(json.clone());
        let core = Pool::try_from(&object).unwrap();
        assert!(!core.automatic() && !core.enabled());
        let back = IPPool::from_core(&core, Some(&object));
        assert_eq!(serde_json::to_value(&back.spec).unwrap(), json);
        assert_eq!(back.metadata, object.metadata);
    }

    #[test]
    fn bad_pool_fields_are_refused_by_name() {
        for (spec, field) in [
            (serde_json::json!({"cidr": "10.0.0.0"}), "cidr"),
            (
                serde_json::json!({"cidr": "10.0.0.0/16", "allowedUses": ["Everything"]}),
                "allowedUses",
            ),
            (
                serde_json::json!({"cidr": "10.0.0.0/16", "assignmentMode": "Sometimes"}),
                "assignmentMode",
            ),
        ] {
            let err = Pool::try_from(&pool(spec)).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidField { field: f, .. } if *f == field),
                "{err}"
            );
        }
        let refused = Pool::try_from(&pool(
            serde_json::json!({"cidr": "10.0.0.0/16", "blockSize": 19}),
        ));
        assert!(matches!(refused, Err(Error::Refused { .. })));
        let mut unnamed = pool(serde_json::json!({"cidr": "10.0.0.0/16"}));
        unnamed.metadata.name = None;
        assert!(matches!(
            Pool::try_from(&unnamed),
            Err(Error::MissingName { kind: "IPPool" })
        ));
    }
}
