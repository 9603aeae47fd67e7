//! BlockAffinity: a node's claim on a block, in two phases
//! (libcalico-go/lib/apis/internalapi/blockaffinity.go, BlockAffinitySpec;
//! schema in crd.projectcalico.org_blockaffinities.yaml).
//!
//! In the v1 CRD `deleted` is a string. Since Calico 3.31 every affinity
//! carries three labels so that a node's affinities can be listed with a
//! label selector, and its name is `<node>-<block name>`, shortened with a
//! hash when that is too long for Kubernetes.

use std::fmt::Write as _;

use ipam_core::affinity::{Affinity, AffinityState};
use ipam_core::cidr::BlockCidr;
use ipam_core::unknown::UnknownFields;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::de::IntoDeserializer;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sha3::Sha3_256;

use crate::error::Error;
use crate::go;
use crate::metadata::{display_name, object_meta};

/// Label holding [`hostname_hash`] of the affinity's node
/// (api/pkg/apis/projectcalico/v3/constants.go, LabelHostnameHash).
pub const HOSTNAME_HASH_LABEL: &str = "projectcalico.org/hostname-hash";
/// Label holding the affinity's type (`host`, `virtual`).
pub const AFFINITY_TYPE_LABEL: &str = "projectcalico.org/affinity-type";
/// Label holding the block's IP version (`4`, `6`).
pub const IP_VERSION_LABEL: &str = "projectcalico.org/ip-version";

/// Kubernetes' limit on object names; Calico shortens names that reach it.
const MAX_NAME: usize = 253;

/// The spec of a BlockAffinity.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[kube(
    group = "crd.projectcalico.org",
    version = "v1",
    kind = "BlockAffinity",
    plural = "blockaffinities",
    derive = "PartialEq"
)]
pub struct BlockAffinitySpec {
    /// `pending`, `confirmed` or `pendingDeletion` (empty in old data).
    pub state: String,
    /// The node (or virtual owner) name.
    pub node: String,
    /// `host` or `virtual`; absent in older Calico, meaning host.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub affinity_type: Option<String>,
    /// The block's CIDR.
    pub cidr: String,
    /// `"true"` or `"false"`: a string for compatibility with older Calico.
    pub deleted: String,
    /// Fields a newer Calico writes, kept verbatim.
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: UnknownFields,
}

/// The value of [`HOSTNAME_HASH_LABEL`]: SHA3-256 of the node name in
/// unpadded standard base32, so that any node name fits a label's 63
/// characters (libcalico-go/lib/backend/model/block_affinity.go,
/// hashHostnameForLabel).
pub fn hostname_hash(node: &str) -> String {
    base32_unpadded(&Sha3_256::digest(node.as_bytes()))
}

/// The object name of a node's affinity for a block: `<node>-<block name>`;
/// from 253 characters on, Calico keeps the first `239 - len(block name)`
/// bytes of the node and appends the first 11 hex digits of SHA-256 over
/// `<node>+<block name>` (libcalico-go/lib/backend/k8s/resources/
/// ipam_affinity_v1.go, parseKey).
pub fn affinity_object_name(node: &str, cidr: &BlockCidr) -> String {
    let block = cidr.object_name();
    let name = format!("{node}-{block}");
    if name.len() < MAX_NAME {
        return name;
    }
    // 252 = the longest name Calico produces; 13 = the hash and its dash.
    let keep = (MAX_NAME - 1 - block.len() - 13).min(node.len());
    let digest = Sha256::digest(format!("{node}+{block}").as_bytes());
    let mut hash = String::with_capacity(64);
    for byte in digest {
        // Writing to a String cannot fail.
        let _ = write!(hash, "{byte:02x}");
    }
    // Node names are DNS names, hence ASCII; a lossy cut only matters for
    // names Kubernetes would refuse anyway.
    let prefix = String::from_utf8_lossy(&node.as_bytes()[..keep]);
    format!("{prefix}-{block}-{}", &hash[..11])
}

/// RFC 4648 base32, standard alphabet, without `=` padding.
fn base32_unpadded(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

impl TryFrom<&BlockAffinity> for Affinity {
    type Error = Error;

    /// Parses the CIDR, the state and the string `deleted` as Calico does.
    fn try_from(object: &BlockAffinity) -> Result<Affinity, Error> {
        let spec = &object.spec;
        let invalid = |field, value: &str, problem: String| Error::InvalidField {
            kind: "BlockAffinity",
            name: display_name(&object.metadata),
            field,
            value: value.to_string(),
            problem,
        };
        let cidr = spec
            .cidr
            .parse::<BlockCidr>()
            .map_err(|e| invalid("cidr", &spec.cidr, e.to_string()))?;
        let state = AffinityState::deserialize(spec.state.as_str().into_deserializer())
            .map_err(|e: serde::de::value::Error| invalid("state", &spec.state, e.to_string()))?;
        let deleted = go::parse_bool(&spec.deleted).ok_or_else(|| {
            invalid(
                "deleted",
                &spec.deleted,
                "is not a boolean (\"true\" or \"false\")".to_string(),
            )
        })?;
        Ok(Affinity {
            node: spec.node.clone(),
            cidr,
            state,
            affinity_type: spec.affinity_type.clone(),
            deleted,
            unknown: spec.unknown.clone(),
        })
    }
}

impl BlockAffinity {
    /// The object to write for `affinity`: named and labelled as Calico
    /// names and labels affinities, with `previous`'s metadata when this
    /// replaces it.
    pub fn from_core(affinity: &Affinity, previous: Option<&BlockAffinity>) -> BlockAffinity {
        let mut metadata = object_meta(
            affinity_object_name(&affinity.node, &affinity.cidr),
            previous.map(|p| &p.metadata),
        );
        // Calico sets these on every write (block_affinity.go,
        // EnsureBlockAffinityLabels); the type label is empty when the type is.
        let labels = metadata.labels.get_or_insert_with(Default::default);
        labels.insert(
            HOSTNAME_HASH_LABEL.to_string(),
            hostname_hash(&affinity.node),
        );
        labels.insert(
            AFFINITY_TYPE_LABEL.to_string(),
            affinity.affinity_type.clone().unwrap_or_default(),
        );
        labels.insert(
            IP_VERSION_LABEL.to_string(),
            affinity.cidr.version().number().to_string(),
        );
        BlockAffinity {
            metadata,
            spec: BlockAffinitySpec {
                state: affinity.state.as_str().to_string(),
                node: affinity.node.clone(),
                affinity_type: affinity.affinity_type.clone(),
                cidr: affinity.cidr.to_string(),
                deleted: affinity.deleted.to_string(),
                unknown: affinity.unknown.clone(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> BlockCidr {
        s.parse().unwrap()
    }

    #[test]
    fn base32_matches_rfc_4648_without_padding() {
        for (input, expected) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(base32_unpadded(input.as_bytes()), expected);
        }
    }

    #[test]
    fn hostname_hash_is_unpadded_base32_of_sha3_256() {
        // Computed independently with Python's hashlib.sha3_256 and base64.b32encode.
        assert_eq!(
            hostname_hash("mac-k8s"),
            "S4G5Y7PWH2UNAOA5MRZNYO6E5VG6FNNL4RL5S5E3LRM7DZR5TSRA"
        );
        assert_eq!(
            hostname_hash("node-1").len(),
            52,
            "fits a 63-character label"
        );
    }

    #[test]
    fn affinity_names_are_node_dash_block_until_253_characters() {
        assert_eq!(
            affinity_object_name("mac-k8s", &cidr("192.168.185.0/26")),
            "mac-k8s-192-168-185-0-26"
        );
        assert_eq!(
            affinity_object_name("n1", &cidr("fd00::40/122")),
            "n1-fd00--40-122"
        );
        let fits = "n".repeat(240);
        assert_eq!(affinity_object_name(&fits, &cidr("10.0.0.0/26")).len(), 252);
    }

    #[test]
    fn long_affinity_names_are_cut_and_hashed_as_calico_does() {
        let node = "n".repeat(250);
        let name = affinity_object_name(&node, &cidr("10.0.0.0/26"));
        // Hash computed independently: sha256("n"*250 + "+10-0-0-0-26")[:11].
        assert_eq!(name, format!("{}-10-0-0-0-26-f1d50507857", "n".repeat(228)));
        assert_eq!(name.len(), 252);
        // Exactly 253 characters is already too long for Calico.
        let edge = "n".repeat(241);
        assert_eq!(affinity_object_name(&edge, &cidr("10.0.0.0/26")).len(), 252);
    }

    #[test]
    fn affinities_carry_calicos_labels_and_string_deleted() {
        let mut affinity = Affinity::new("node-1", cidr("fd00::40/122"), AffinityState::Pending);
        affinity.deleted = true;
        let object = BlockAffinity::from_core(&affinity, None);
        let labels = object.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[HOSTNAME_HASH_LABEL], hostname_hash("node-1"));
        assert_eq!(labels[AFFINITY_TYPE_LABEL], "host");
        assert_eq!(labels[IP_VERSION_LABEL], "6");
        assert_eq!(object.spec.deleted, "true");
        assert_eq!(object.spec.state, "pending");
        assert_eq!(Affinity::try_from(&object).unwrap(), affinity);
    }

    #[test]
    fn bad_affinity_fields_are_refused_by_name() {
        let good = BlockAffinity::from_core(
            &Affinity::new("n", cidr("10.0.0.0/26"), AffinityState::Confirmed),
            None,
        );
        for (field, patch) in [
            (
                "cidr",
                Box::new(|s: &mut BlockAffinitySpec| s.cidr = "10.0.0.1/26".into())
                    as Box<dyn Fn(&mut BlockAffinitySpec)>,
            ),
            (
                "state",
                Box::new(|s: &mut BlockAffinitySpec| s.state = "gone".into()),
            ),
            (
                "deleted",
                Box::new(|s: &mut BlockAffinitySpec| s.deleted = "maybe".into()),
            ),
        ] {
            let mut bad = good.clone();
            patch(&mut bad.spec);
            let err = Affinity::try_from(&bad).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidField { field: f, .. } if *f == field),
                "{err}"
            );
        }
    }
}
