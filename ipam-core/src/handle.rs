//! Handles: the owner of one or more addresses (a pod's
//! `k8s-pod-network.<containerID>`, a node's tunnel), with how many
//! addresses it holds in each block, so that a release by handle knows which
//! blocks to visit.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cidr::{BlockCidr, IpVersion};
use crate::error::Error;
use crate::unknown::UnknownFields;

/// An IPAMHandle spec as Calico stores it (field names are Calico's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandleSpec {
    /// The handle id (also the object name).
    #[serde(rename = "handleID")]
    pub handle_id: String,
    /// Block CIDR to number of addresses the handle holds there.
    #[serde(default)]
    pub block: BTreeMap<String, u32>,
    /// Set before a Kubernetes delete, so that a racing update conflicts.
    #[serde(default)]
    pub deleted: bool,
    /// Fields of a newer Calico, kept verbatim.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// A validated handle.
#[derive(Debug, Clone, PartialEq)]
pub struct Handle {
    id: String,
    // Sorted by block. A handle names one or two blocks, so a vector costs
    // a fraction of a tree node's memory.
    blocks: Vec<(BlockCidr, u32)>,
    deleted: bool,
    unknown: UnknownFields,
}

impl Handle {
    /// A handle that holds nothing yet.
    pub fn new(id: impl Into<String>) -> Handle {
        Handle {
            id: id.into(),
            blocks: Vec::new(),
            deleted: false,
            unknown: UnknownFields::new(),
        }
    }

    /// Validates a stored handle: every key must be a block CIDR.
    pub fn from_spec(spec: HandleSpec) -> Result<Handle, Error> {
        let mut blocks = Vec::with_capacity(spec.block.len());
        for (cidr, count) in spec.block {
            let block = cidr
                .parse::<BlockCidr>()
                .map_err(|e| Error::MalformedHandle {
                    handle: spec.handle_id.clone(),
                    problem: format!("block key {cidr:?}: {e}"),
                })?;
            blocks.push((block, count));
        }
        // Keys sort as strings in the spec; the vector sorts by address.
        // Two spellings of one IPv6 block count as one.
        blocks.sort_unstable();
        blocks.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                kept.1 += later.1;
            }
            same
        });
        Ok(Handle {
            id: spec.handle_id,
            blocks,
            deleted: spec.deleted,
            unknown: spec.unknown,
        })
    }

    /// The stored form.
    pub fn to_spec(&self) -> HandleSpec {
        HandleSpec {
            handle_id: self.id.clone(),
            block: self
                .blocks
                .iter()
                .map(|(b, n)| (b.to_string(), *n))
                .collect(),
            deleted: self.deleted,
            unknown: self.unknown.clone(),
        }
    }

    /// The handle id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Blocks and the count of addresses held in each, by block.
    pub fn blocks(&self) -> &[(BlockCidr, u32)] {
        &self.blocks
    }

    /// Addresses held in one block.
    pub fn count_in(&self, block: &BlockCidr) -> u32 {
        self.position(block).map_or(0, |i| self.blocks[i].1)
    }

    /// Total addresses held.
    pub fn total(&self) -> u32 {
        self.blocks.iter().map(|(_, n)| n).sum()
    }

    /// Addresses held in blocks of one family.
    pub fn total_of(&self, version: IpVersion) -> u32 {
        self.blocks
            .iter()
            .filter(|(b, _)| b.version() == version)
            .map(|(_, n)| n)
            .sum()
    }

    /// True when the handle holds nothing and should be deleted.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Records `count` more addresses in `block`.
    pub fn increment(&mut self, block: BlockCidr, count: u32) {
        match self.blocks.binary_search_by(|(b, _)| b.cmp(&block)) {
            Ok(i) => self.blocks[i].1 += count,
            Err(i) => self.blocks.insert(i, (block, count)),
        }
    }

    /// Records `count` fewer addresses in `block`, dropping the entry at 0.
    /// A handle that claims fewer than are released is inconsistent data:
    /// Calico refuses it (ipam_handle.go, decrementBlock), and so do we.
    pub fn decrement(&mut self, block: BlockCidr, count: u32) -> Result<(), Error> {
        let position = self.position(&block);
        let current = position.map_or(0, |i| self.blocks[i].1);
        if current < count {
            return Err(Error::MalformedHandle {
                handle: self.id.clone(),
                problem: format!(
                    "cannot release {count} addresses in block {block}: it records {current}"
                ),
            });
        }
        if let Some(i) = position {
            if current == count {
                self.blocks.remove(i);
            } else {
                self.blocks[i].1 = current - count;
            }
        }
        Ok(())
    }

    fn position(&self, block: &BlockCidr) -> Option<usize> {
        self.blocks.binary_search_by(|(b, _)| b.cmp(block)).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(s: &str) -> BlockCidr {
        s.parse().unwrap()
    }

    #[test]
    fn counts_go_up_and_down_and_empty_entries_vanish() {
        let mut h = Handle::new("k8s-pod-network.abc");
        h.increment(block("10.0.0.0/26"), 2);
        h.increment(block("fd00::/122"), 1);
        assert_eq!(
            (
                h.total(),
                h.total_of(IpVersion::V4),
                h.total_of(IpVersion::V6)
            ),
            (3, 2, 1)
        );
        h.decrement(block("10.0.0.0/26"), 2).unwrap();
        assert_eq!(h.blocks().len(), 1);
        h.decrement(block("fd00::/122"), 1).unwrap();
        assert!(h.is_empty());
    }

    #[test]
    fn decrement_below_zero_is_refused_and_changes_nothing() {
        let mut h = Handle::new("h");
        h.increment(block("10.0.0.0/26"), 1);
        let before = h.clone();
        let err = h.decrement(block("10.0.0.0/26"), 2).unwrap_err();
        assert!(err.to_string().contains("records 1"), "{err}");
        assert_eq!(h, before);
        assert!(h.decrement(block("10.0.1.0/26"), 1).is_err());
    }

    #[test]
    fn fixture_handle_round_trips() {
        let yaml =
            "block:\n  192.168.185.0/26: 1\ndeleted: false\nhandleID: k8s-pod-network.cb07c78e\n";
        let spec: HandleSpec = serde_saphyr::from_str(yaml).unwrap();
        let handle = Handle::from_spec(spec.clone()).unwrap();
        assert_eq!(handle.count_in(&block("192.168.185.0/26")), 1);
        assert_eq!(handle.to_spec(), spec);
    }

    #[test]
    fn two_spellings_of_one_block_are_counted_together() {
        let spec = HandleSpec {
            handle_id: "h".into(),
            block: [
                ("fd00::40/122".to_string(), 1),
                ("fd00:0::40/122".to_string(), 2),
            ]
            .into(),
            deleted: false,
            unknown: UnknownFields::new(),
        };
        let handle = Handle::from_spec(spec).unwrap();
        assert_eq!(handle.blocks(), &[(block("fd00::40/122"), 3)]);
    }

    #[test]
    fn a_block_key_that_is_not_a_cidr_is_refused_by_name() {
        let spec = HandleSpec {
            handle_id: "h".into(),
            block: [("10.0.0.1/26".to_string(), 1)].into(),
            deleted: false,
            unknown: UnknownFields::new(),
        };
        let err = Handle::from_spec(spec).unwrap_err();
        assert!(err.to_string().contains("10.0.0.1/26"), "{err}");
    }
}
