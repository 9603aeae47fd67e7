//! IPAMBlock: one allocation block, as Calico stores it
//! (libcalico-go/lib/apis/internalapi/ipam_block.go, IPAMBlockSpec; schema
//! in libcalico-go/config/crd/crd.projectcalico.org_ipamblocks.yaml).
//!
//! Calico writes every field without `omitempty` even when it is zero
//! (`deleted: false`, `strictAffinity: false`), keeps the sequence numbers
//! of freed ordinals, and names the object after the CIDR
//! (`192-168-185-0-26`). The spec converts to and from ipam-core's
//! [`BlockSpec`] without loss.

use std::collections::BTreeMap;

use ipam_core::block::{Attribute, AttributeParts, Block, BlockSpec};
use ipam_core::labels::Labels;
use ipam_core::unknown::UnknownFields;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::go;
use crate::metadata::{display_name, object_meta};
use crate::schema;

/// The etcd-era spelling of a block's affinity. The v1 CRD has no such
/// field, so a block that carries one keeps it among the unknown fields.
const HOST_AFFINITY: &str = "hostAffinity";

/// The spec of an IPAMBlock.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[kube(
    group = "crd.projectcalico.org",
    version = "v1",
    kind = "IPAMBlock",
    plural = "ipamblocks",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = |s: &mut schemars::Schema| {
    schema::drop_default(s, "deleted");
    schema::drop_default(s, "sequenceNumberForAllocation");
})]
pub struct IPAMBlockSpec {
    /// The block's CIDR.
    pub cidr: String,
    /// `host:<node>` (or `virtual:<name>`) when the block is affine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub affinity: Option<String>,
    /// When the affinity was claimed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::date_time")]
    pub affinity_claim_time: Option<String>,
    /// One entry per ordinal: null when free, else an index into `attributes`.
    #[schemars(schema_with = "schema::nullable_integers")]
    pub allocations: Vec<Option<u32>>,
    /// Free ordinals in the order they are handed out.
    #[schemars(schema_with = "schema::integers")]
    pub unallocated: Vec<u32>,
    /// Who holds the allocations.
    pub attributes: Vec<AllocationAttribute>,
    /// Raised on every write of the block.
    #[serde(default)]
    #[schemars(schema_with = "schema::int64")]
    pub sequence_number: u64,
    /// Ordinal (as a string) to the block's sequence number when it was
    /// allocated; Calico keeps the entries of freed ordinals.
    #[serde(default)]
    #[schemars(schema_with = "schema::int64_map")]
    pub sequence_number_for_allocation: BTreeMap<String, u64>,
    /// Set before a delete, so that a racing update conflicts.
    #[serde(default)]
    pub deleted: bool,
    /// Deprecated in Calico and always written false by it.
    pub strict_affinity: bool,
    /// Fields a newer Calico writes, kept verbatim. Not in the schema: a
    /// cluster keeps them only if its CRD declares them.
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: UnknownFields,
}

/// One entry of a block's `attributes`: the owner of some of its addresses.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
pub struct AllocationAttribute {
    /// The handle that owns the addresses.
    #[serde(rename = "handle_id", default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub handle_id: Option<String>,
    /// Attributes of the owner (node, namespace, pod, timestamp, type).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secondary: BTreeMap<String, String>,
    /// Attributes of the other owner during a live migration.
    #[serde(
        rename = "alternateOwnerAttrs",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub alternate_owner_attrs: BTreeMap<String, String>,
    /// When the addresses were released (seconds since the epoch, written
    /// as `metav1.Time`); set through their cooldown (Calico 3.33,
    /// ipam_block.go AllocationAttribute.ReleasedAt).
    #[serde(
        rename = "releasedAt",
        default,
        skip_serializing_if = "Option::is_none",
        with = "ipam_core::timestamp::optional_rfc3339"
    )]
    #[schemars(schema_with = "schema::date_time")]
    pub released_at: Option<i64>,
    /// Fields a newer Calico writes, kept verbatim.
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: UnknownFields,
}

impl From<IPAMBlockSpec> for BlockSpec {
    fn from(spec: IPAMBlockSpec) -> BlockSpec {
        // Destructured so that a field added on either side fails to compile
        // here instead of being dropped.
        let IPAMBlockSpec {
            cidr,
            affinity,
            affinity_claim_time,
            allocations,
            unallocated,
            attributes,
            sequence_number,
            sequence_number_for_allocation,
            deleted,
            strict_affinity,
            mut unknown,
        } = spec;
        let host_affinity = go::take_string(&mut unknown, HOST_AFFINITY);
        BlockSpec {
            cidr,
            affinity,
            affinity_claim_time,
            allocations,
            unallocated,
            attributes: attributes.into_iter().map(Attribute::from).collect(),
            sequence_number,
            sequence_number_for_allocation,
            deleted,
            strict_affinity,
            host_affinity,
            unknown,
        }
    }
}

impl From<BlockSpec> for IPAMBlockSpec {
    fn from(spec: BlockSpec) -> IPAMBlockSpec {
        let BlockSpec {
            cidr,
            affinity,
            affinity_claim_time,
            allocations,
            unallocated,
            attributes,
            sequence_number,
            sequence_number_for_allocation,
            deleted,
            strict_affinity,
            host_affinity,
            mut unknown,
        } = spec;
        go::put_string(&mut unknown, HOST_AFFINITY, host_affinity);
        IPAMBlockSpec {
            cidr,
            affinity,
            affinity_claim_time,
            allocations,
            unallocated,
            attributes: attributes
                .into_iter()
                .map(AllocationAttribute::from)
                .collect(),
            sequence_number,
            sequence_number_for_allocation,
            deleted,
            strict_affinity,
            unknown,
        }
    }
}

impl From<AllocationAttribute> for Attribute {
    fn from(attribute: AllocationAttribute) -> Attribute {
        let AllocationAttribute {
            handle_id,
            secondary,
            alternate_owner_attrs,
            released_at,
            unknown,
        } = attribute;
        AttributeParts {
            handle_id,
            secondary: Labels::from(&secondary),
            alternate_owner: Labels::from(&alternate_owner_attrs),
            released_at,
            unknown,
        }
        .into()
    }
}

impl From<Attribute> for AllocationAttribute {
    fn from(attribute: Attribute) -> AllocationAttribute {
        let AttributeParts {
            handle_id,
            secondary,
            alternate_owner,
            released_at,
            unknown,
        } = attribute.into();
        AllocationAttribute {
            handle_id,
            secondary: secondary.to_map(),
            alternate_owner_attrs: alternate_owner.to_map(),
            released_at,
            unknown,
        }
    }
}

impl TryFrom<&IPAMBlock> for Block {
    type Error = Error;

    /// Validates the block through ipam-core.
    fn try_from(object: &IPAMBlock) -> Result<Block, Error> {
        Block::from_spec(object.spec.clone().into()).map_err(|source| Error::Refused {
            source: Box::new(source),
            kind: "IPAMBlock",
            name: display_name(&object.metadata),
        })
    }
}

impl IPAMBlock {
    /// The object to write for `block`: named as Calico names blocks, with
    /// `previous`'s metadata when this replaces it.
    pub fn from_core(block: &Block, previous: Option<&IPAMBlock>) -> IPAMBlock {
        IPAMBlock {
            metadata: object_meta(block.cidr().object_name(), previous.map(|p| &p.metadata)),
            spec: block.to_spec().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipam_core::block::BlockOwner;
    use ipam_core::unknown::UnknownValue;

    fn block(cidr: &str) -> Block {
        Block::new(
            cidr.parse().unwrap(),
            Some(BlockOwner::Host("node-1".into())),
            Some("2026-01-02T03:04:05Z".into()),
            7,
        )
    }

    #[test]
    fn new_blocks_are_named_after_their_cidr() {
        let v4 = IPAMBlock::from_core(&block("192.168.185.0/26"), None);
        assert_eq!(v4.metadata.name.as_deref(), Some("192-168-185-0-26"));
        let v6 = IPAMBlock::from_core(&block("fd00:0:0:1::40/122"), None);
        assert_eq!(v6.metadata.name.as_deref(), Some("fd00-0-0-1--40-122"));
    }

    #[test]
    fn an_etcd_era_host_affinity_travels_as_an_unknown_field() {
        let mut spec = block("10.0.0.0/30").to_spec();
        spec.host_affinity = Some("node-1".into());
        let wire = IPAMBlockSpec::from(spec.clone());
        assert_eq!(
            wire.unknown[HOST_AFFINITY],
            UnknownValue::String("node-1".into())
        );
        assert_eq!(BlockSpec::from(wire), spec);
    }

    #[test]
    fn a_released_address_travels_with_calicos_releasedat() {
        let mut b = block("10.0.0.0/30");
        b.auto_assign(2, "h", &BTreeMap::new(), &Default::default());
        b.release_by_handle("h", None, Some(1_782_900_000));
        let wire = serde_json::to_value(IPAMBlockSpec::from(b.to_spec())).unwrap();
        assert_eq!(
            wire["attributes"],
            serde_json::json!([{"releasedAt": "2026-07-01T10:00:00Z"}])
        );
        let back: IPAMBlockSpec = serde_json::from_value(wire).unwrap();
        assert_eq!(Block::from_spec(back.into()).unwrap(), b);
    }

    #[test]
    fn a_block_the_core_refuses_is_reported_with_its_name() {
        let mut object = IPAMBlock::from_core(&block("10.0.0.0/30"), None);
        object.spec.allocations.pop();
        let err = Block::try_from(&object).unwrap_err();
        assert!(
            matches!(&err, Error::Refused { kind: "IPAMBlock", name, .. } if name == "10-0-0-0-30"),
            "{err}"
        );
        assert!(err.to_string().contains("allocations"), "{err}");
    }
}
