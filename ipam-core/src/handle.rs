//! Handles: the owner of one or more addresses (a pod's
//! `k8s-pod-network.<containerID>`, a node's tunnel), with how many
//! addresses it holds in each block, so that a release by handle knows which
//! blocks to visit.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::cidr::{BlockCidr, IpVersion};
use crate::error::Error;
use crate::packed;
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

/// A handle's id, kept as the start of a shared text.
///
/// The text begins with the id, written as `<length>:<id>`; a handle made
/// by the planner shares the text of the block entry ([`crate::Attribute`])
/// that created it, whose labels follow the id, so that each id is held
/// once in memory (a filled pool has one handle per pod). The labels stay
/// as long as the handle does, which is as long as it holds addresses.
/// Compares, hashes and prints as the id.
#[derive(Clone)]
pub struct HandleName(Arc<str>);

impl HandleName {
    /// A name holding only `id`.
    pub fn new(id: &str) -> HandleName {
        let mut text = String::with_capacity(id.len() + 4);
        packed::push_field(&mut text, id);
        HandleName(Arc::from(text))
    }

    /// A name over a text that starts with a field (an attribute's text).
    pub(crate) fn from_text(text: Arc<str>) -> HandleName {
        debug_assert!(packed::split_field(&text).is_some());
        HandleName(text)
    }

    /// Whether both are the same text in memory, not only the same id.
    #[cfg(test)]
    pub(crate) fn shares_text_with(&self, other: &HandleName) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        packed::split_field(&self.0).map_or("", |(id, _)| id)
    }
}

impl std::ops::Deref for HandleName {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for HandleName {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for HandleName {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for HandleName {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.as_str() == other.as_str()
    }
}

impl Eq for HandleName {}

impl PartialEq<str> for HandleName {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for HandleName {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for HandleName {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialOrd for HandleName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for HandleName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::hash::Hash for HandleName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for HandleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for HandleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for HandleName {
    fn from(id: &str) -> Self {
        HandleName::new(id)
    }
}

impl From<String> for HandleName {
    fn from(id: String) -> Self {
        HandleName::new(&id)
    }
}

impl From<&String> for HandleName {
    fn from(id: &String) -> Self {
        HandleName::new(id)
    }
}

/// A validated handle.
///
/// Held once per pod in a snapshot, so it is small (40 bytes): the id
/// shares its text (see [`HandleName`]) and the common case, one block and
/// nothing else, is held inline; more blocks, `deleted` or unknown fields
/// go to the heap.
#[derive(Debug, Clone, PartialEq)]
pub struct Handle {
    id: HandleName,
    body: Body,
}

#[derive(Debug, Clone, PartialEq)]
enum Body {
    Empty,
    One((BlockCidr, u32)),
    // Always in normal form: see `Body::of`.
    Full(Box<Full>),
}

#[derive(Debug, Clone, PartialEq)]
struct Full {
    // Sorted by block. A handle names one or two blocks, so a vector costs
    // a fraction of a tree node's memory.
    blocks: Vec<(BlockCidr, u32)>,
    deleted: bool,
    unknown: UnknownFields,
}

impl Body {
    // The one form of these parts, so that equal handles compare equal.
    fn of(mut blocks: Vec<(BlockCidr, u32)>, deleted: bool, unknown: UnknownFields) -> Body {
        if deleted || !unknown.is_empty() || blocks.len() > 1 {
            return Body::Full(Box::new(Full {
                blocks,
                deleted,
                unknown,
            }));
        }
        blocks.pop().map_or(Body::Empty, Body::One)
    }

    fn blocks(&self) -> &[(BlockCidr, u32)] {
        match self {
            Body::Empty => &[],
            Body::One(entry) => std::slice::from_ref(entry),
            Body::Full(full) => &full.blocks,
        }
    }

    fn parts(self) -> (Vec<(BlockCidr, u32)>, bool, UnknownFields) {
        match self {
            Body::Empty => (Vec::new(), false, UnknownFields::new()),
            Body::One(entry) => (vec![entry], false, UnknownFields::new()),
            Body::Full(full) => (full.blocks, full.deleted, full.unknown),
        }
    }

    // Changes the blocks (the rare cases: more than one block, or a
    // handle with more than its blocks), back into normal form.
    fn edit_blocks(&mut self, edit: impl FnOnce(&mut Vec<(BlockCidr, u32)>)) {
        let (mut blocks, deleted, unknown) = std::mem::replace(self, Body::Empty).parts();
        edit(&mut blocks);
        *self = Body::of(blocks, deleted, unknown);
    }
}

impl Handle {
    /// A handle that holds nothing yet.
    pub fn new(id: impl AsRef<str>) -> Handle {
        Handle::named(HandleName::new(id.as_ref()))
    }

    /// A handle that holds nothing yet, sharing `id`'s text.
    pub fn named(id: HandleName) -> Handle {
        Handle {
            id,
            body: Body::Empty,
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
            id: HandleName::new(&spec.handle_id),
            body: Body::of(blocks, spec.deleted, spec.unknown),
        })
    }

    /// The stored form.
    pub fn to_spec(&self) -> HandleSpec {
        let (deleted, unknown) = match &self.body {
            Body::Full(full) => (full.deleted, full.unknown.clone()),
            _ => (false, UnknownFields::new()),
        };
        HandleSpec {
            handle_id: self.id.to_string(),
            block: self
                .blocks()
                .iter()
                .map(|(b, n)| (b.to_string(), *n))
                .collect(),
            deleted,
            unknown,
        }
    }

    /// The handle id.
    pub fn id(&self) -> &str {
        self.id.as_str()
    }

    /// The handle id with its shared text.
    pub fn name(&self) -> &HandleName {
        &self.id
    }

    /// Blocks and the count of addresses held in each, by block.
    pub fn blocks(&self) -> &[(BlockCidr, u32)] {
        self.body.blocks()
    }

    /// Addresses held in one block.
    pub fn count_in(&self, block: &BlockCidr) -> u32 {
        self.position(block).map_or(0, |i| self.blocks()[i].1)
    }

    /// Total addresses held.
    pub fn total(&self) -> u32 {
        self.blocks().iter().map(|(_, n)| n).sum()
    }

    /// Addresses held in blocks of one family.
    pub fn total_of(&self, version: IpVersion) -> u32 {
        self.blocks()
            .iter()
            .filter(|(b, _)| b.version() == version)
            .map(|(_, n)| n)
            .sum()
    }

    /// True when the handle holds nothing and should be deleted.
    pub fn is_empty(&self) -> bool {
        self.blocks().is_empty()
    }

    /// Records `count` more addresses in `block`.
    pub fn increment(&mut self, block: BlockCidr, count: u32) {
        match &mut self.body {
            Body::Empty => self.body = Body::One((block, count)),
            Body::One((b, n)) if *b == block => *n += count,
            _ => self.body.edit_blocks(|blocks| {
                match blocks.binary_search_by(|(b, _)| b.cmp(&block)) {
                    Ok(i) => blocks[i].1 += count,
                    Err(i) => blocks.insert(i, (block, count)),
                }
            }),
        }
    }

    /// Changes the counts by `deltas` (per block, gained when positive,
    /// lost when negative), never below zero: the blocks, not the handle,
    /// are the truth, and a handle that over-counts is what a crash between
    /// a plan's two writes leaves (see [`crate::plan::HandleChange`]).
    pub fn adjust(&mut self, deltas: &[(BlockCidr, i64)]) {
        for &(cidr, delta) in deltas {
            if delta > 0 {
                self.increment(cidr, u32::try_from(delta).unwrap_or(u32::MAX));
            } else {
                let lost = u32::try_from(delta.unsigned_abs()).unwrap_or(u32::MAX);
                let take = lost.min(self.count_in(&cidr));
                // Cannot fail: never more than it counts.
                let _ = self.decrement(cidr, take);
            }
        }
    }

    /// Records `count` fewer addresses in `block`, dropping the entry at 0.
    /// A handle that claims fewer than are released is inconsistent data:
    /// Calico refuses it (ipam_handle.go, decrementBlock), and so do we.
    pub fn decrement(&mut self, block: BlockCidr, count: u32) -> Result<(), Error> {
        let position = self.position(&block);
        let current = position.map_or(0, |i| self.blocks()[i].1);
        if current < count {
            return Err(Error::MalformedHandle {
                handle: self.id.to_string(),
                problem: format!(
                    "cannot release {count} addresses in block {block}: it records {current}"
                ),
            });
        }
        if let Some(i) = position {
            match &mut self.body {
                Body::One((_, n)) if current > count => *n = current - count,
                Body::One(_) => self.body = Body::Empty,
                _ => self.body.edit_blocks(|blocks| {
                    if current == count {
                        blocks.remove(i);
                    } else {
                        blocks[i].1 = current - count;
                    }
                }),
            }
        }
        Ok(())
    }

    fn position(&self, block: &BlockCidr) -> Option<usize> {
        self.blocks().binary_search_by(|(b, _)| b.cmp(block)).ok()
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
    fn a_handle_is_small_and_equal_whichever_way_it_got_its_blocks() {
        assert!(std::mem::size_of::<Handle>() <= 40);
        let mut two = Handle::new("h");
        two.increment(block("10.0.0.0/26"), 1);
        two.increment(block("10.0.0.64/26"), 2);
        two.decrement(block("10.0.0.0/26"), 1).unwrap();
        let mut one = Handle::new("h");
        one.increment(block("10.0.0.64/26"), 2);
        assert_eq!(two, one);
        let spec = one.to_spec();
        assert_eq!(Handle::from_spec(spec).unwrap(), one);
        let deleted = HandleSpec {
            deleted: true,
            ..one.to_spec()
        };
        assert_eq!(
            Handle::from_spec(deleted.clone()).unwrap().to_spec(),
            deleted
        );
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
