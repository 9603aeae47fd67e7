//! Block affinities: which node a block belongs to. Claiming is two-phase
//! (libcalico-go ipam_block_reader_writer.go): the affinity is written
//! `pending`, then the block, then the affinity `confirmed`; releasing marks
//! it `pendingDeletion` before the block is freed. Only a confirmed affinity
//! makes a block the node's.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::cidr::BlockCidr;
use crate::unknown::UnknownFields;

/// The affinity type of a node's claim (`spec.type`, the etcd key's type
/// segment; absent in older Calico, meaning this).
pub const HOST: &str = "host";
/// The affinity type of a virtual owner's claim: LoadBalancer addresses
/// (libcalico-go ipam.go, AffinityTypeVirtual).
pub const VIRTUAL: &str = "virtual";
/// The one virtual owner Calico has: LoadBalancer addresses are claimed
/// for it, as `virtual:load-balancer` (api/pkg/apis/projectcalico/v3/
/// constants.go, VirtualLoadBalancer). A node of that name would share its
/// affinities' keys: affinities here are keyed by name and block only.
pub const LOAD_BALANCER_OWNER: &str = "load-balancer";

/// Where an affinity is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AffinityState {
    /// Written before the block is claimed; counts as absent.
    Pending,
    /// The block is the node's.
    Confirmed,
    /// Being released; counts as absent.
    PendingDeletion,
    /// Written by Calico before states existed: treated as confirmed.
    Unset,
}

impl AffinityState {
    /// The spelling Calico stores.
    pub fn as_str(self) -> &'static str {
        match self {
            AffinityState::Pending => "pending",
            AffinityState::Confirmed => "confirmed",
            AffinityState::PendingDeletion => "pendingDeletion",
            AffinityState::Unset => "",
        }
    }

    /// Whether the block counts as the node's (Calico treats the empty state
    /// as confirmed for older data: ipam.go, getBlockFromAffinity).
    pub fn is_confirmed(self) -> bool {
        matches!(self, AffinityState::Confirmed | AffinityState::Unset)
    }
}

impl Serialize for AffinityState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for AffinityState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match String::deserialize(d)?.as_str() {
            "pending" => Ok(AffinityState::Pending),
            "confirmed" => Ok(AffinityState::Confirmed),
            "pendingDeletion" => Ok(AffinityState::PendingDeletion),
            "" => Ok(AffinityState::Unset),
            other => Err(serde::de::Error::custom(format!(
                "state {other:?} is not one of pending, confirmed, pendingDeletion"
            ))),
        }
    }
}

/// A BlockAffinity spec with Calico's field names. `deleted` is a string
/// (`"true"`/`"false"`) in Calico's v1 CRD.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Affinity {
    /// The node (or virtual owner) name.
    pub node: String,
    /// The block.
    pub cidr: BlockCidr,
    /// Where the claim stands.
    pub state: AffinityState,
    /// `host` or `virtual`; absent in older Calico, meaning host.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub affinity_type: Option<String>,
    /// Set before a Kubernetes delete.
    #[serde(with = "string_bool")]
    pub deleted: bool,
    /// Fields of a newer Calico, kept verbatim.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

impl Affinity {
    /// A new host affinity in the given state.
    pub fn new(node: impl Into<String>, cidr: BlockCidr, state: AffinityState) -> Affinity {
        Affinity {
            node: node.into(),
            cidr,
            state,
            affinity_type: Some(HOST.to_string()),
            deleted: false,
            unknown: UnknownFields::new(),
        }
    }

    /// The key that identifies the affinity.
    pub fn key(&self) -> AffinityKey {
        AffinityKey {
            node: self.node.clone(),
            cidr: self.cidr,
        }
    }
}

/// Identifies an affinity: one node, one block.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AffinityKey {
    /// The node.
    pub node: String,
    /// The block.
    pub cidr: BlockCidr,
}

mod string_bool {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &bool, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if *value { "true" } else { "false" })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        match String::deserialize(d)?.as_str() {
            "true" => Ok(true),
            "false" | "" => Ok(false),
            other => Err(serde::de::Error::custom(format!(
                "deleted {other:?} is not \"true\" or \"false\""
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_confirmed_and_legacy_unset_count_as_owned() {
        assert!(AffinityState::Confirmed.is_confirmed());
        assert!(AffinityState::Unset.is_confirmed());
        assert!(!AffinityState::Pending.is_confirmed());
        assert!(!AffinityState::PendingDeletion.is_confirmed());
    }

    #[test]
    fn calico_spec_with_string_deleted_round_trips() {
        let json = r#"{"cidr":"10.0.0.0/26","deleted":"false","node":"n1","state":"pendingDeletion","type":"host"}"#;
        let a: Affinity = serde_json::from_str(json).unwrap();
        assert_eq!(a.state, AffinityState::PendingDeletion);
        assert!(!a.deleted);
        let back: serde_json::Value = serde_json::to_value(&a).unwrap();
        assert_eq!(
            back,
            serde_json::from_str::<serde_json::Value>(json).unwrap()
        );
    }

    #[test]
    fn unknown_state_or_deleted_value_is_refused_by_name() {
        let bad_state = r#"{"cidr":"10.0.0.0/26","deleted":"false","node":"n","state":"gone"}"#;
        assert!(serde_json::from_str::<Affinity>(bad_state)
            .unwrap_err()
            .to_string()
            .contains("gone"));
        let bad_deleted = r#"{"cidr":"10.0.0.0/26","deleted":"yes","node":"n","state":""}"#;
        assert!(serde_json::from_str::<Affinity>(bad_deleted)
            .unwrap_err()
            .to_string()
            .contains("yes"));
    }
}
