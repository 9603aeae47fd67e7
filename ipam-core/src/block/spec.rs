//! The stored form of a block: Calico's IPAMBlock spec, its validation
//! into a [`Block`] (what Calico tolerates, what it refuses), and back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Attribute, Block, BlockOwner, FreeOrder};
use crate::cidr::BlockCidr;
use crate::error::Error;
use crate::unknown::UnknownFields;

/// An IPAMBlock spec as Calico stores it in Kubernetes (field names are
/// Calico's). Converted to a [`Block`] to be used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockSpec {
    /// The block's CIDR.
    pub cidr: String,
    /// `host:<node>` or absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<String>,
    /// When the affinity was claimed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_claim_time: Option<String>,
    /// One entry per ordinal: null when free, else an index into `attributes`.
    pub allocations: Vec<Option<u32>>,
    /// Free ordinals in the order they will be handed out.
    pub unallocated: Vec<u32>,
    /// Who holds the allocations.
    #[serde(default)]
    pub attributes: Vec<Attribute>,
    /// Raised on every write of the block.
    #[serde(default)]
    pub sequence_number: u64,
    /// Ordinal (as a string) to the block's sequence number when it was allocated.
    #[serde(default)]
    pub sequence_number_for_allocation: BTreeMap<String, u64>,
    /// Set before a Kubernetes delete, so that a racing update conflicts.
    #[serde(default)]
    pub deleted: bool,
    /// Copied from the IPAM config when the block was written.
    #[serde(default)]
    pub strict_affinity: bool,
    /// Deprecated spelling of the affinity (`hostAffinity: <node>`), kept verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_affinity: Option<String>,
    /// Fields of a newer Calico, kept verbatim.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

impl Block {
    /// Validates a stored block. Tolerates what Calico tolerates (stale
    /// sequence numbers of free ordinals, unknown fields) and refuses what
    /// would make allocation unsafe, naming the field.
    pub fn from_spec(spec: BlockSpec) -> Result<Block, Error> {
        let cidr: BlockCidr = spec
            .cidr
            .parse()
            .map_err(|e: Error| Error::MalformedBlock {
                block: spec.cidr.clone(),
                field: "cidr",
                problem: e.to_string(),
            })?;
        let malformed = |field, problem: String| Error::MalformedBlock {
            block: spec.cidr.clone(),
            field,
            problem,
        };
        let size = cidr.size();
        if spec.allocations.len() != size as usize {
            return Err(malformed(
                "allocations",
                format!(
                    "has {} entries but the block has {size} addresses",
                    spec.allocations.len()
                ),
            ));
        }
        let mut block = Block::new(
            cidr,
            spec.affinity.as_deref().map(BlockOwner::parse),
            spec.affinity_claim_time,
            spec.sequence_number,
        );
        for (ordinal, entry) in spec.allocations.iter().enumerate() {
            if let Some(index) = *entry {
                if index as usize >= spec.attributes.len() {
                    return Err(malformed(
                        "allocations",
                        format!(
                            "ordinal {ordinal} points at attribute {index} but there are {}",
                            spec.attributes.len()
                        ),
                    ));
                }
                block.set_in_use(ordinal as u32, index);
            }
        }
        if let Some(bad) = spec.unallocated.iter().find(|&&o| o >= size) {
            return Err(malformed(
                "unallocated",
                format!("ordinal {bad} is outside the block's {size} addresses"),
            ));
        }
        block.unallocated = FreeOrder(spec.unallocated.into_iter().collect());
        for (key, value) in spec.sequence_number_for_allocation {
            match key.parse::<u32>() {
                Ok(ordinal) if ordinal < size => {
                    block.slots[ordinal as usize].set_sequence(Some(value))
                }
                _ => {
                    return Err(malformed(
                        "sequenceNumberForAllocation",
                        format!("key {key:?} is not an ordinal below {size}"),
                    ))
                }
            }
        }
        block.attributes = spec.attributes;
        block.deleted = spec.deleted;
        block.strict_affinity = spec.strict_affinity;
        block.host_affinity = spec.host_affinity;
        block.unknown = spec.unknown;
        Ok(block)
    }

    /// The stored form; `Block::from_spec(b.to_spec())` gives `b` back.
    pub fn to_spec(&self) -> BlockSpec {
        let allocations = (0..self.cidr.size())
            .map(|o| {
                self.is_allocated(o)
                    .then(|| self.slots[o as usize].attribute)
            })
            .collect();
        let sequence_number_for_allocation = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(o, s)| s.sequence().map(|s| (o.to_string(), s)))
            .collect();
        BlockSpec {
            cidr: self.cidr.to_string(),
            affinity: self.owner.as_ref().map(ToString::to_string),
            affinity_claim_time: self.claim_time.as_deref().map(str::to_string),
            allocations,
            unallocated: self.unallocated.iter().copied().collect(),
            attributes: self.attributes.clone(),
            sequence_number: self.sequence_number,
            sequence_number_for_allocation,
            deleted: self.deleted,
            strict_affinity: self.strict_affinity,
            host_affinity: self.host_affinity.clone(),
            unknown: self.unknown.clone(),
        }
    }
}
