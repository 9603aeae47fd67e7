//! Allocation blocks: a block's addresses, who holds each, in which order
//! free ones are handed out, and the sequence numbers that let a stale
//! release be told from a current one.
//!
//! Semantics follow libcalico-go/lib/ipam/ipam_block.go: allocation takes
//! ordinals from the head of `unallocated` (skipping reserved ones without
//! moving them), release appends to the tail; all addresses of one request
//! share one attribute entry; an attribute entry is removed when its last
//! address is released and later indexes shift down; each allocation
//! records the block's `sequenceNumber` at the time, and every write of the
//! block raises it by one.
//!
//! With an IP cooldown (see [`crate::cooldown`]) a release does not free an
//! ordinal: it points it at a new attribute entry holding only
//! `releasedAt`, and [`Block::deallocate_cooled`] frees it once the
//! cooldown has passed (ipam_block.go, release, releaseByHandle,
//! garbageCollect).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::cidr::BlockCidr;
use crate::error::Error;
use crate::labels::Labels;
use crate::reservation::Reserved;
use crate::unknown::UnknownFields;

/// Addresses held by this handle stay allocated when Calico judges a block
/// empty: Windows nodes reserve them (ipam_block.go, WindowsReservedHandle).
pub const WINDOWS_RESERVED_HANDLE: &str = "windows-reserved-ipam-handle";

/// Who a block is affine to: Calico's `affinity` string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BlockOwner {
    /// `host:<node>`
    Host(String),
    /// `virtual:<name>` (newer Calico, for LoadBalancer addresses)
    Virtual(String),
    /// Anything else a datastore holds, kept verbatim.
    Other(String),
}

impl BlockOwner {
    /// Reads Calico's affinity string.
    pub fn parse(text: &str) -> Self {
        if let Some(node) = text.strip_prefix("host:") {
            BlockOwner::Host(node.to_string())
        } else if let Some(name) = text.strip_prefix("virtual:") {
            BlockOwner::Virtual(name.to_string())
        } else {
            BlockOwner::Other(text.to_string())
        }
    }

    /// The node or virtual name without its prefix (for `ipam show`).
    pub fn name(&self) -> &str {
        match self {
            BlockOwner::Host(n) | BlockOwner::Virtual(n) | BlockOwner::Other(n) => n,
        }
    }

    /// Whether this is `host:<node>`.
    pub fn is_host(&self, node: &str) -> bool {
        matches!(self, BlockOwner::Host(n) if n == node)
    }
}

impl fmt::Display for BlockOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockOwner::Host(n) => write!(f, "host:{n}"),
            BlockOwner::Virtual(n) => write!(f, "virtual:{n}"),
            BlockOwner::Other(raw) => f.write_str(raw),
        }
    }
}

/// Who holds an allocation: one entry of a block's `attributes`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Attribute {
    /// The handle that owns the addresses.
    #[serde(rename = "handle_id", default, skip_serializing_if = "Option::is_none")]
    pub handle_id: Option<String>,
    /// Owner details (node, namespace, pod, timestamp, type ...).
    #[serde(
        rename = "secondary",
        default,
        skip_serializing_if = "Labels::is_empty"
    )]
    pub secondary: Labels,
    /// Details of a previous or next owner during a live migration (Calico 3.32).
    #[serde(
        rename = "alternateOwnerAttrs",
        default,
        skip_serializing_if = "Labels::is_empty"
    )]
    pub alternate_owner: Labels,
    /// When the addresses were released, in seconds since the epoch
    /// (Calico's `releasedAt`, a `metav1.Time`): they are in their cooldown,
    /// held by nobody, until deallocated.
    #[serde(
        rename = "releasedAt",
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::timestamp::optional_rfc3339"
    )]
    pub released_at: Option<i64>,
    /// Fields of a newer Calico, kept verbatim.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

impl Attribute {
    /// The handle that holds the addresses, with Calico's sanitising
    /// applied: old host-local migrations wrote handles with a trailing
    /// `\r...` (ipam_block.go, sanitizeHandle). Released addresses are
    /// nobody's: Calico's cooldown entry has no handle (ipam_block.go,
    /// addCooldownAttribute), and an entry that names one anyway is not
    /// counted for it.
    pub fn handle(&self) -> Option<&str> {
        if self.is_released() {
            return None;
        }
        self.handle_id.as_deref().map(sanitize_handle)
    }

    /// Whether the addresses were released and are in (or past) their
    /// cooldown.
    pub fn is_released(&self) -> bool {
        self.released_at.is_some()
    }

    fn is_for(&self, handle: &str, secondary: &BTreeMap<String, String>) -> bool {
        self.handle_id.as_deref() == Some(handle)
            && self.secondary.equals_map(secondary)
            && self.alternate_owner.is_empty()
            && self.released_at.is_none()
            && self.unknown.is_empty()
    }
}

/// Cuts a handle at its first `\r`, as Calico does before comparing handles.
pub fn sanitize_handle(handle: &str) -> &str {
    handle.split('\r').next().unwrap_or(handle)
}

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

/// One address to release from a block, with the caller's expectations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseItem {
    /// The ordinal within the block.
    pub ordinal: u32,
    /// When set, the allocation must belong to this handle.
    pub handle: Option<String>,
    /// When set, the allocation must carry this sequence number.
    pub sequence_number: Option<u64>,
}

/// What a release did to a block.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Released {
    /// Ordinals released: freed (in the order they went to the back of
    /// `unallocated`), or marked released when a cooldown is in force.
    pub ordinals: Vec<u32>,
    /// Ordinals that were not held: free, or already released (Calico
    /// reports both as unallocated, ipam_block.go, release).
    pub already_free: Vec<u32>,
    /// How many released addresses each handle held, for the handle update.
    pub by_handle: BTreeMap<String, u32>,
}

/// A way a block disagrees with itself, as `ipam check` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockProblem {
    /// The ordinal is allocated and also listed as free.
    AllocatedButListedFree(u32),
    /// The ordinal is neither allocated nor listed as free: it can never be used.
    Lost(u32),
    /// The ordinal appears more than once in `unallocated`.
    ListedFreeTwice(u32),
    /// The attribute entry is used by no allocation.
    UnusedAttribute(u32),
}

/// An allocation block, validated and ready for allocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    cidr: BlockCidr,
    // Shared: copying a block for a plan should not copy these strings.
    owner: Option<Arc<BlockOwner>>,
    claim_time: Option<Arc<str>>,
    // One bit per ordinal: the authoritative "is allocated".
    in_use: Vec<u64>,
    // Per ordinal: attribute index and recorded sequence number, together
    // so that copying a block costs one allocation for both.
    slots: Vec<Slot>,
    unallocated: VecDeque<u32>,
    // Shared so that copying a block for a plan does not copy every string.
    attributes: Vec<Arc<Attribute>>,
    sequence_number: u64,
    deleted: bool,
    strict_affinity: bool,
    host_affinity: Option<String>,
    unknown: UnknownFields,
}

impl Block {
    /// A fresh block: every ordinal free, in order, so ordinal 0 (the base
    /// address) goes first. `sequence_number` should be the current time in
    /// nanoseconds, as Calico does, so a recreated block never repeats one.
    pub fn new(
        cidr: BlockCidr,
        owner: Option<BlockOwner>,
        claim_time: Option<String>,
        sequence_number: u64,
    ) -> Block {
        let size = cidr.size();
        Block {
            cidr,
            owner: owner.map(Arc::new),
            claim_time: claim_time.map(Arc::from),
            in_use: vec![0; size.div_ceil(64) as usize],
            slots: vec![Slot::default(); size as usize],
            unallocated: (0..size).collect(),
            attributes: Vec::new(),
            sequence_number,
            deleted: false,
            strict_affinity: false,
            host_affinity: None,
            unknown: UnknownFields::new(),
        }
    }

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
        block.unallocated = spec.unallocated.into_iter().collect();
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
        block.attributes = spec.attributes.into_iter().map(Arc::new).collect();
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
            attributes: self.attributes.iter().map(|a| (**a).clone()).collect(),
            sequence_number: self.sequence_number,
            sequence_number_for_allocation,
            deleted: self.deleted,
            strict_affinity: self.strict_affinity,
            host_affinity: self.host_affinity.clone(),
            unknown: self.unknown.clone(),
        }
    }

    /// The block's CIDR.
    pub fn cidr(&self) -> BlockCidr {
        self.cidr
    }

    /// Who the block is affine to.
    pub fn owner(&self) -> Option<&BlockOwner> {
        self.owner.as_deref()
    }

    /// When the affinity was claimed (RFC 3339), if recorded.
    pub fn claim_time(&self) -> Option<&str> {
        self.claim_time.as_deref()
    }

    /// The block's sequence number.
    pub fn sequence_number(&self) -> u64 {
        self.sequence_number
    }

    /// The sequence number recorded for an ordinal (0 when none, as Calico reads it).
    pub fn sequence_number_of(&self, ordinal: u32) -> u64 {
        self.slots
            .get(ordinal as usize)
            .and_then(Slot::sequence)
            .unwrap_or(0)
    }

    /// Records that the block is about to be written: Calico raises the
    /// sequence number on every block write (ipam_block_reader_writer.go,
    /// updateBlock).
    pub fn bump_sequence_number(&mut self) {
        self.sequence_number += 1;
    }

    /// Sets or clears the affinity and its claim time.
    pub fn set_owner(&mut self, owner: Option<BlockOwner>, claim_time: Option<String>) {
        self.owner = owner.map(Arc::new);
        self.claim_time = claim_time.map(Arc::from);
    }

    /// Records the IPAM config's strictAffinity on the block, as Calico does.
    pub fn set_strict_affinity(&mut self, strict: bool) {
        self.strict_affinity = strict;
    }

    /// Whether an ordinal is allocated.
    pub fn is_allocated(&self, ordinal: u32) -> bool {
        self.in_use
            .get(ordinal as usize / 64)
            .is_some_and(|word| word & (1 << (ordinal % 64)) != 0)
    }

    /// Number of allocated addresses.
    pub fn allocated_count(&self) -> u32 {
        self.in_use.iter().map(|w| w.count_ones()).sum()
    }

    /// Length of `unallocated`; Calico's `ipam show` counts in-use addresses
    /// as the block size minus this.
    pub fn unallocated_len(&self) -> u32 {
        self.unallocated.len() as u32
    }

    /// Free addresses that automatic assignment may hand out (Calico's
    /// NumFreeAddresses: reserved ones do not count).
    pub fn free_count(&self, reserved: &Reserved) -> u32 {
        if reserved.is_empty() || !reserved.touches(&self.cidr) {
            return self.unallocated.len() as u32;
        }
        if reserved.covers(&self.cidr) {
            return 0;
        }
        self.unallocated
            .iter()
            .filter(|&&o| !reserved.contains(self.cidr.address(o)))
            .count() as u32
    }

    /// True when nothing but Windows-reserved addresses is allocated
    /// (ipam_block.go, containsOnlyReservedIPs). Released addresses keep a
    /// block non-empty until they are deallocated, as in Calico's empty().
    pub fn is_empty(&self) -> bool {
        self.allocations().all(|(_, attribute)| {
            attribute.handle().map(str::to_lowercase).as_deref() == Some(WINDOWS_RESERVED_HANDLE)
        })
    }

    /// Allocated ordinals with their attribute, in ordinal order.
    pub fn allocations(&self) -> impl Iterator<Item = (u32, &Attribute)> + '_ {
        self.in_use
            .iter()
            .enumerate()
            .flat_map(move |(word_index, &word)| {
                BitIter(word).map(move |bit| {
                    let ordinal = word_index as u32 * 64 + bit;
                    (
                        ordinal,
                        &*self.attributes[self.slots[ordinal as usize].attribute as usize],
                    )
                })
            })
    }

    /// The attribute of an allocated ordinal.
    pub fn attribute_of(&self, ordinal: u32) -> Option<&Attribute> {
        self.is_allocated(ordinal)
            .then(|| &*self.attributes[self.slots[ordinal as usize].attribute as usize])
    }

    /// The attribute of an allocated address.
    pub fn attribute_of_address(&self, address: IpAddr) -> Option<&Attribute> {
        self.cidr
            .ordinal_of(address)
            .and_then(|o| self.attribute_of(o))
    }

    /// Released ordinals with their `releasedAt` second, in ordinal order.
    pub fn released(&self) -> impl Iterator<Item = (u32, i64)> + '_ {
        let any = self.attributes.iter().any(|a| a.is_released());
        self.allocations()
            .take_while(move |_| any)
            .filter_map(|(ordinal, attribute)| attribute.released_at.map(|at| (ordinal, at)))
    }

    /// The earliest `releasedAt` of the block's released addresses: when the
    /// first of them comes out of its cooldown (kube-controllers' ipam.go,
    /// onBlockUpdated, `coldBlocks`).
    pub fn earliest_release(&self) -> Option<i64> {
        self.released().map(|(_, at)| at).min()
    }

    /// Ordinals held by a handle, in ordinal order.
    pub fn ordinals_of_handle<'a>(&'a self, handle: &'a str) -> impl Iterator<Item = u32> + 'a {
        self.allocations()
            .filter(move |(_, attribute)| attribute.handle() == Some(handle))
            .map(|(ordinal, _)| ordinal)
    }

    /// Hands out up to `count` free ordinals to `handle`, from the head of
    /// `unallocated`, skipping reserved addresses (which keep their place).
    /// Returns the ordinals taken; fewer than asked when the block runs out.
    pub fn auto_assign(
        &mut self,
        count: u32,
        handle: &str,
        secondary: &BTreeMap<String, String>,
        reserved: &Reserved,
    ) -> Vec<u32> {
        let mut taken = Vec::with_capacity(count.min(self.unallocated.len() as u32) as usize);
        let mut skipped = Vec::new();
        let check_reserved = !reserved.is_empty() && reserved.touches(&self.cidr);
        while (taken.len() as u32) < count {
            let Some(ordinal) = self.unallocated.pop_front() else {
                break;
            };
            if check_reserved && reserved.contains(self.cidr.address(ordinal)) {
                skipped.push(ordinal);
                continue;
            }
            taken.push(ordinal);
        }
        // Reserved ordinals go back to the head in their original order.
        for &ordinal in skipped.iter().rev() {
            self.unallocated.push_front(ordinal);
        }
        if !taken.is_empty() {
            let index = self.find_or_add_attribute(handle, secondary);
            for &ordinal in &taken {
                self.set_in_use(ordinal, index);
                self.slots[ordinal as usize].set_sequence(Some(self.sequence_number));
            }
        }
        taken
    }

    /// Assigns one chosen ordinal (Calico's `assign`, for `IP=` requests).
    pub fn assign(
        &mut self,
        ordinal: u32,
        handle: &str,
        secondary: &BTreeMap<String, String>,
    ) -> Result<(), Error> {
        if let Some(existing) = self.attribute_of(ordinal) {
            return Err(Error::AddressInUse {
                address: self.cidr.address(ordinal),
                handle: existing.handle().unwrap_or_default().to_string(),
            });
        }
        let index = self.find_or_add_attribute(handle, secondary);
        self.set_in_use(ordinal, index);
        self.slots[ordinal as usize].set_sequence(Some(self.sequence_number));
        if let Some(position) = self.unallocated.iter().position(|&o| o == ordinal) {
            self.unallocated.remove(position);
        }
        Ok(())
    }

    /// Releases addresses. Every handle and sequence-number expectation is
    /// checked before anything changes, so a stale request changes nothing
    /// (ipam_block.go, release). Without a cooldown (`stamp` `None`) freed
    /// ordinals go to the back of `unallocated` in request order; with one
    /// they are marked released at `stamp` and take the block's sequence
    /// number, as Calico's release does. Free and already released ones are
    /// reported, not refused.
    pub fn release(
        &mut self,
        items: &[ReleaseItem],
        stamp: Option<i64>,
    ) -> Result<Released, Error> {
        // A repeated ordinal counts once; the last request for it wins, as in
        // Calico's map of addresses.
        let mut unique: Vec<&ReleaseItem> = Vec::with_capacity(items.len());
        for item in items {
            match unique.iter_mut().find(|u| u.ordinal == item.ordinal) {
                Some(slot) => *slot = item,
                None => unique.push(item),
            }
        }
        let mut released = Released::default();
        for item in &unique {
            let address = self.cidr.address(item.ordinal);
            let current = self.sequence_number_of(item.ordinal);
            if let Some(requested) = item.sequence_number.filter(|&s| s != current) {
                return Err(Error::SequenceNumberMismatch {
                    address,
                    requested,
                    current,
                });
            }
            let attribute = self.attribute_of(item.ordinal);
            let Some(attribute) = attribute.filter(|a| !a.is_released()) else {
                released.already_free.push(item.ordinal);
                continue;
            };
            let holder = attribute.handle().unwrap_or_default();
            if let Some(requested) = item
                .handle
                .as_deref()
                .filter(|&h| sanitize_handle(h) != holder)
            {
                return Err(Error::HandleMismatch {
                    address,
                    requested: requested.to_string(),
                    current: holder.to_string(),
                });
            }
            released.ordinals.push(item.ordinal);
        }
        self.take_back(&released.ordinals, stamp, &mut released.by_handle);
        if stamp.is_some() {
            for &ordinal in &released.ordinals {
                self.slots[ordinal as usize].set_sequence(Some(self.sequence_number));
            }
        }
        Ok(released)
    }

    /// Releases every address of a handle (optionally only those carrying
    /// `sequence_number`), in ordinal order: freed without a cooldown
    /// (`stamp` `None`), else marked released at `stamp`, keeping their
    /// sequence numbers as Calico's releaseByHandle does. A handle whose
    /// addresses are all released already holds nothing: nothing happens.
    pub fn release_by_handle(
        &mut self,
        handle: &str,
        sequence_number: Option<u64>,
        stamp: Option<i64>,
    ) -> Released {
        let ordinals: Vec<u32> = self
            .ordinals_of_handle(handle)
            .filter(|&o| sequence_number.is_none_or(|s| s == self.sequence_number_of(o)))
            .collect();
        let mut released = Released {
            ordinals,
            ..Released::default()
        };
        self.take_back(&released.ordinals, stamp, &mut released.by_handle);
        released
    }

    /// Deallocates the released addresses whose `releasedAt` second is
    /// before `cutoff` (see [`crate::cooldown::Cooldown::cutoff`]): their
    /// ordinals go to the back of `unallocated` in ordinal order, their
    /// sequence numbers are cleared and attribute entries no longer used
    /// are dropped (ipam_block.go, garbageCollect, "the only place where
    /// ordinals are placed on the Unallocated list" with a cooldown).
    /// Returns the ordinals deallocated.
    pub fn deallocate_cooled(&mut self, cutoff: i64) -> Vec<u32> {
        let cooled: Vec<u32> = self
            .released()
            .filter(|&(_, at)| at < cutoff)
            .map(|(ordinal, _)| ordinal)
            .collect();
        if !cooled.is_empty() {
            for &ordinal in &cooled {
                self.free_ordinal(ordinal);
            }
            self.drop_unused_attributes();
        }
        cooled
    }

    /// Ways the block disagrees with itself.
    pub fn problems(&self) -> Vec<BlockProblem> {
        let size = self.cidr.size();
        let mut listed = vec![0u8; size as usize];
        let mut problems = Vec::new();
        for &ordinal in &self.unallocated {
            let seen = &mut listed[ordinal as usize];
            *seen = seen.saturating_add(1);
            if *seen == 2 {
                problems.push(BlockProblem::ListedFreeTwice(ordinal));
            }
        }
        for ordinal in 0..size {
            match (self.is_allocated(ordinal), listed[ordinal as usize] > 0) {
                (true, true) => problems.push(BlockProblem::AllocatedButListedFree(ordinal)),
                (false, false) => problems.push(BlockProblem::Lost(ordinal)),
                _ => {}
            }
        }
        let mut used = vec![false; self.attributes.len()];
        for (ordinal, _) in self.allocations() {
            used[self.slots[ordinal as usize].attribute as usize] = true;
        }
        problems.extend(
            used.iter()
                .enumerate()
                .filter(|(_, &u)| !u)
                .map(|(i, _)| BlockProblem::UnusedAttribute(i as u32)),
        );
        problems
    }

    fn set_in_use(&mut self, ordinal: u32, attribute: u32) {
        self.in_use[ordinal as usize / 64] |= 1 << (ordinal % 64);
        self.slots[ordinal as usize].attribute = attribute;
    }

    fn find_or_add_attribute(&mut self, handle: &str, secondary: &BTreeMap<String, String>) -> u32 {
        if let Some(index) = self
            .attributes
            .iter()
            .position(|a| a.is_for(handle, secondary))
        {
            return index as u32;
        }
        self.attributes.push(Arc::new(Attribute {
            handle_id: Some(handle.to_string()),
            secondary: Labels::from(secondary),
            ..Attribute::default()
        }));
        self.attributes.len() as u32 - 1
    }

    // Takes held ordinals back from their holders, counting them per
    // handle: frees them (`stamp` `None`), or points them at one new entry
    // holding only `releasedAt` (ipam_block.go, addCooldownAttribute: one
    // per release of the block). Either way drops the attribute entries no
    // longer used.
    fn take_back(
        &mut self,
        ordinals: &[u32],
        stamp: Option<i64>,
        by_handle: &mut BTreeMap<String, u32>,
    ) {
        if ordinals.is_empty() {
            return;
        }
        for &ordinal in ordinals {
            let index = self.slots[ordinal as usize].attribute as usize;
            if let Some(handle) = self.attributes[index].handle() {
                *by_handle.entry(handle.to_string()).or_default() += 1;
            }
        }
        match stamp {
            None => {
                for &ordinal in ordinals {
                    self.free_ordinal(ordinal);
                }
            }
            Some(released_at) => {
                self.attributes.push(Arc::new(Attribute {
                    released_at: Some(released_at),
                    ..Attribute::default()
                }));
                let index = self.attributes.len() as u32 - 1;
                for &ordinal in ordinals {
                    self.slots[ordinal as usize].attribute = index;
                }
            }
        }
        self.drop_unused_attributes();
    }

    // Frees one allocated ordinal: to the back of `unallocated`.
    fn free_ordinal(&mut self, ordinal: u32) {
        self.in_use[ordinal as usize / 64] &= !(1 << (ordinal % 64));
        // A free ordinal keeps no trace, so equal blocks compare equal.
        self.slots[ordinal as usize] = Slot::default();
        self.unallocated.push_back(ordinal);
    }

    // Drops attribute entries no allocation uses, shifting later indexes
    // down (ipam_block.go, deleteAttributes; garbageCollect).
    fn drop_unused_attributes(&mut self) {
        let mut remaining = vec![0u32; self.attributes.len()];
        for (ordinal, _) in self.allocations() {
            remaining[self.slots[ordinal as usize].attribute as usize] += 1;
        }
        if remaining.iter().all(|&r| r > 0) {
            return;
        }
        let mut new_index = vec![0u32; remaining.len()];
        let mut next = 0;
        for (old, &count) in remaining.iter().enumerate() {
            new_index[old] = next;
            next += u32::from(count > 0);
        }
        let mut old = 0;
        self.attributes.retain(|_| {
            let keep = remaining[old] > 0;
            old += 1;
            keep
        });
        for word_index in 0..self.in_use.len() {
            for bit in BitIter(self.in_use[word_index]) {
                let slot = &mut self.slots[word_index * 64 + bit as usize].attribute;
                *slot = new_index[*slot as usize];
            }
        }
    }
}

/// What a block records per ordinal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Slot {
    // Index into `attributes`; meaningful only while the ordinal is allocated.
    attribute: u32,
    // A sequence number is recorded (possibly a stale one of a free ordinal).
    has_sequence: bool,
    sequence: u64,
}

impl Slot {
    fn sequence(&self) -> Option<u64> {
        self.has_sequence.then_some(self.sequence)
    }

    fn set_sequence(&mut self, sequence: Option<u64>) {
        self.has_sequence = sequence.is_some();
        self.sequence = sequence.unwrap_or(0);
    }
}

/// The set bits of a word, lowest first.
struct BitIter(u64);

impl Iterator for BitIter {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        if self.0 == 0 {
            return None;
        }
        let bit = self.0.trailing_zeros();
        self.0 &= self.0 - 1;
        Some(bit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reservation::ReservationSpec;

    fn block(cidr: &str) -> Block {
        Block::new(
            cidr.parse().unwrap(),
            Some(BlockOwner::Host("n1".into())),
            None,
            100,
        )
    }

    fn attrs(pod: &str) -> BTreeMap<String, String> {
        [("pod".to_string(), pod.to_string())].into()
    }

    fn release(b: &mut Block, ordinals: &[u32]) -> Result<Released, Error> {
        let items: Vec<ReleaseItem> = ordinals
            .iter()
            .map(|&ordinal| ReleaseItem {
                ordinal,
                handle: None,
                sequence_number: None,
            })
            .collect();
        b.release(&items, None)
    }

    #[test]
    fn fresh_block_hands_out_the_base_address_first_and_in_order() {
        let mut b = block("10.0.0.0/26");
        assert_eq!(
            b.auto_assign(3, "h", &attrs("a"), &Reserved::default()),
            vec![0, 1, 2]
        );
        assert_eq!(b.allocated_count(), 3);
        assert_eq!(b.unallocated_len(), 61);
    }

    #[test]
    fn release_returns_ordinal_to_back_of_queue() {
        let mut b = block("10.0.0.0/26");
        b.auto_assign(2, "h", &attrs("a"), &Reserved::default());
        release(&mut b, &[0]).unwrap();
        let spec = b.to_spec();
        assert_eq!(spec.unallocated.first(), Some(&2));
        assert_eq!(spec.unallocated.last(), Some(&0));
        // The next allocation still takes the head, not the released one.
        assert_eq!(
            b.auto_assign(1, "h2", &attrs("b"), &Reserved::default()),
            vec![2]
        );
    }

    #[test]
    fn addresses_of_one_request_share_one_attribute_entry() {
        let mut b = block("10.0.0.0/26");
        b.auto_assign(3, "h", &attrs("a"), &Reserved::default());
        b.auto_assign(1, "other", &attrs("b"), &Reserved::default());
        let spec = b.to_spec();
        assert_eq!(spec.attributes.len(), 2);
        assert_eq!(
            &spec.allocations[..4],
            &[Some(0), Some(0), Some(0), Some(1)]
        );
        // The same handle and attributes again reuse the entry (findOrAddAttribute).
        b.auto_assign(1, "h", &attrs("a"), &Reserved::default());
        assert_eq!(b.to_spec().attributes.len(), 2);
    }

    #[test]
    fn releasing_the_last_address_of_an_attribute_shifts_later_indexes_down() {
        let mut b = block("10.0.0.0/26");
        for pod in ["a", "b", "c"] {
            b.auto_assign(1, pod, &attrs(pod), &Reserved::default());
        }
        let released = release(&mut b, &[1]).unwrap();
        assert_eq!(released.by_handle, [("b".to_string(), 1)].into());
        let spec = b.to_spec();
        assert_eq!(spec.attributes.len(), 2);
        assert_eq!(&spec.allocations[..3], &[Some(0), None, Some(1)]);
        assert_eq!(b.attribute_of(2).unwrap().handle(), Some("c"));
        assert!(b.problems().is_empty());
    }

    #[test]
    fn allocation_records_the_block_sequence_number_and_release_clears_it() {
        let mut b = block("10.0.0.0/26");
        b.auto_assign(1, "h", &attrs("a"), &Reserved::default());
        b.bump_sequence_number();
        b.auto_assign(1, "h2", &attrs("b"), &Reserved::default());
        assert_eq!(
            (b.sequence_number_of(0), b.sequence_number_of(1)),
            (100, 101)
        );
        release(&mut b, &[0]).unwrap();
        assert_eq!(b.sequence_number_of(0), 0);
        assert!(!b.to_spec().sequence_number_for_allocation.contains_key("0"));
    }

    #[test]
    fn stale_sequence_number_or_handle_fails_the_release_and_changes_nothing() {
        let mut b = block("10.0.0.0/26");
        b.auto_assign(2, "h", &attrs("a"), &Reserved::default());
        let before = b.clone();
        let stale = ReleaseItem {
            ordinal: 1,
            handle: None,
            sequence_number: Some(99),
        };
        let fresh = ReleaseItem {
            ordinal: 0,
            handle: None,
            sequence_number: None,
        };
        assert!(matches!(
            b.release(&[fresh.clone(), stale], None),
            Err(Error::SequenceNumberMismatch {
                requested: 99,
                current: 100,
                ..
            })
        ));
        let wrong_handle = ReleaseItem {
            ordinal: 1,
            handle: Some("someone-else".into()),
            sequence_number: None,
        };
        let err = b.release(&[fresh, wrong_handle], None).unwrap_err();
        assert!(err.to_string().contains("someone-else"), "{err}");
        assert_eq!(b, before);
    }

    #[test]
    fn a_block_equals_its_own_round_trip_after_releases() {
        let mut b = block("10.0.0.0/26");
        for pod in ["a", "b", "c"] {
            b.auto_assign(1, pod, &attrs(pod), &Reserved::default());
        }
        release(&mut b, &[0, 2]).unwrap();
        assert_eq!(Block::from_spec(b.to_spec()).unwrap(), b);
    }

    #[test]
    fn releasing_a_free_address_is_reported_not_refused() {
        let mut b = block("10.0.0.0/26");
        let released = release(&mut b, &[5, 5]).unwrap();
        assert_eq!(released.already_free, vec![5]);
        assert!(released.ordinals.is_empty());
        assert_eq!(b.unallocated_len(), 64);
    }

    #[test]
    fn assigning_an_address_in_use_names_its_holder() {
        let mut b = block("10.0.0.0/26");
        b.assign(9, "h", &attrs("a")).unwrap();
        assert!(!b.to_spec().unallocated.contains(&9));
        let err = b.assign(9, "h2", &attrs("b")).unwrap_err();
        assert_eq!(
            err,
            Error::AddressInUse {
                address: "10.0.0.9".parse().unwrap(),
                handle: "h".into()
            }
        );
    }

    #[test]
    fn reserved_addresses_are_skipped_and_keep_their_place() {
        let spec = ReservationSpec {
            reserved_cidrs: vec!["10.0.0.0/31".parse().unwrap()],
            unknown: UnknownFields::new(),
        };
        let reserved = Reserved::new([&spec]);
        let mut b = block("10.0.0.0/26");
        assert_eq!(b.free_count(&reserved), 62);
        assert_eq!(b.auto_assign(2, "h", &attrs("a"), &reserved), vec![2, 3]);
        assert_eq!(&b.to_spec().unallocated[..3], &[0, 1, 4]);
    }

    #[test]
    fn release_by_handle_frees_every_address_of_the_handle() {
        let mut b = block("10.0.0.0/26");
        b.auto_assign(2, "h", &attrs("a"), &Reserved::default());
        b.auto_assign(1, "keep", &attrs("b"), &Reserved::default());
        b.assign(10, "h", &attrs("c")).unwrap();
        let released = b.release_by_handle("h", None, None);
        assert_eq!(released.ordinals, vec![0, 1, 10]);
        assert_eq!(released.by_handle, [("h".to_string(), 3)].into());
        assert_eq!(b.ordinals_of_handle("keep").collect::<Vec<_>>(), vec![2]);
        assert!(b.problems().is_empty());
    }

    #[test]
    fn windows_reserved_addresses_do_not_make_a_block_non_empty() {
        let mut b = block("10.0.0.0/26");
        b.auto_assign(
            1,
            WINDOWS_RESERVED_HANDLE,
            &BTreeMap::new(),
            &Reserved::default(),
        );
        assert!(b.is_empty());
        b.auto_assign(1, "pod", &attrs("a"), &Reserved::default());
        assert!(!b.is_empty());
    }

    #[test]
    fn handles_with_a_carriage_return_tail_are_sanitised() {
        assert_eq!(
            sanitize_handle("k8s-pod-network.abc\r\neth0"),
            "k8s-pod-network.abc"
        );
        let mut b = block("10.0.0.0/26");
        b.auto_assign(1, "h\reth0", &attrs("a"), &Reserved::default());
        assert_eq!(b.ordinals_of_handle("h").count(), 1);
    }

    #[test]
    fn inconsistencies_are_reported() {
        let mut spec = block("10.0.0.0/30").to_spec();
        spec.allocations = vec![Some(0), None, None, None];
        spec.attributes = vec![Attribute::default(), Attribute::default()];
        spec.unallocated = vec![0, 2, 2];
        let problems = Block::from_spec(spec).unwrap().problems();
        assert_eq!(
            problems,
            vec![
                BlockProblem::ListedFreeTwice(2),
                BlockProblem::AllocatedButListedFree(0),
                BlockProblem::Lost(1),
                BlockProblem::Lost(3),
                BlockProblem::UnusedAttribute(1),
            ]
        );
    }

    #[test]
    fn malformed_stored_blocks_are_refused_naming_the_field() {
        let good = block("10.0.0.0/30").to_spec();
        let cases: Vec<(BlockSpec, &str)> = vec![
            (
                BlockSpec {
                    cidr: "10.0.0.1/30".into(),
                    ..good.clone()
                },
                "cidr",
            ),
            (
                BlockSpec {
                    allocations: vec![None; 3],
                    ..good.clone()
                },
                "allocations",
            ),
            (
                BlockSpec {
                    allocations: vec![Some(0), None, None, None],
                    ..good.clone()
                },
                "allocations",
            ),
            (
                BlockSpec {
                    unallocated: vec![4],
                    ..good.clone()
                },
                "unallocated",
            ),
            (
                BlockSpec {
                    sequence_number_for_allocation: [("x".to_string(), 1)].into(),
                    ..good.clone()
                },
                "sequenceNumberForAllocation",
            ),
        ];
        for (spec, field) in cases {
            let err = Block::from_spec(spec).unwrap_err();
            assert!(
                matches!(&err, Error::MalformedBlock { field: f, .. } if *f == field),
                "{err}"
            );
        }
    }

    #[test]
    fn unknown_fields_survive_a_read_modify_write() {
        let json = r#"{"cidr":"10.0.0.0/31","allocations":[0,null],"unallocated":[1],
            "attributes":[{"handle_id":"h","secondary":{"pod":"p"},"futureAttribute":[3]}],
            "sequenceNumber":7,"sequenceNumberForAllocation":{"0":6},"deleted":false,
            "strictAffinity":false,"futureField":{"x":[1,2]}}"#;
        let spec: BlockSpec = serde_json::from_str(json).unwrap();
        let mut b = Block::from_spec(spec).unwrap();
        b.auto_assign(1, "h2", &attrs("q"), &Reserved::default());
        b.bump_sequence_number();
        let out = serde_json::to_value(b.to_spec()).unwrap();
        assert_eq!(out["futureField"], serde_json::json!({"x": [1, 2]}));
        assert_eq!(
            out["attributes"][0]["futureAttribute"],
            serde_json::json!([3])
        );
        assert_eq!(out["sequenceNumber"], 8);
    }

    #[test]
    fn ipv6_blocks_work_like_ipv4_blocks() {
        let mut b = block("fd00::40/122");
        assert_eq!(
            b.auto_assign(2, "h", &attrs("a"), &Reserved::default()),
            vec![0, 1]
        );
        assert_eq!(b.cidr().address_net(1).to_string(), "fd00::41/122");
        assert_eq!(b.cidr().ordinal_of("fd00::7f".parse().unwrap()), Some(63));
    }

    #[test]
    fn owner_strings_round_trip() {
        for text in ["host:node-1", "virtual:lb", "weird"] {
            assert_eq!(BlockOwner::parse(text).to_string(), text);
        }
        assert!(BlockOwner::parse("host:n").is_host("n"));
        assert_eq!(BlockOwner::parse("virtual:lb").name(), "lb");
    }

    fn held(b: &Block, handle: &str) -> Vec<u32> {
        b.ordinals_of_handle(handle).collect()
    }

    #[test]
    fn with_a_cooldown_release_marks_the_address_nobodys_and_keeps_it_in_use() {
        let mut b = block("10.0.0.0/26");
        b.auto_assign(2, "h", &attrs("a"), &Reserved::default());
        b.bump_sequence_number();
        let items = [ReleaseItem {
            ordinal: 0,
            handle: Some("h".into()),
            sequence_number: None,
        }];
        let released = b.release(&items, Some(1_000)).unwrap();
        assert_eq!(released.ordinals, vec![0]);
        assert_eq!(released.by_handle, [("h".to_string(), 1)].into());
        assert!(b.is_allocated(0), "in use through its cooldown");
        assert_eq!(b.unallocated_len(), 62);
        assert_eq!(b.attribute_of(0).unwrap().handle(), None);
        assert_eq!(held(&b, "h"), vec![1]);
        assert_eq!(b.released().collect::<Vec<_>>(), vec![(0, 1_000)]);
        // Calico's release gives the ordinal the block's sequence number.
        assert_eq!(b.sequence_number_of(0), 101);
        assert!(!b.is_empty());
        assert!(b.problems().is_empty());
        // The stored form is Calico's: an entry with only releasedAt.
        let spec = b.to_spec();
        assert_eq!(spec.allocations[0], Some(1));
        let entry = serde_json::to_value(&spec.attributes[1]).unwrap();
        assert_eq!(
            entry,
            serde_json::json!({"releasedAt": "1970-01-01T00:16:40Z"})
        );
        assert_eq!(Block::from_spec(spec).unwrap(), b);
    }

    #[test]
    fn releasing_a_released_address_again_changes_nothing() {
        let mut b = block("10.0.0.0/26");
        b.auto_assign(1, "h", &attrs("a"), &Reserved::default());
        b.release_by_handle("h", None, Some(1_000));
        let before = b.clone();
        assert!(b
            .release_by_handle("h", None, Some(2_000))
            .ordinals
            .is_empty());
        let again = release_at(&mut b, &[0], Some(2_000));
        assert_eq!(again.already_free, vec![0]);
        assert!(again.by_handle.is_empty());
        assert_eq!(b, before);
    }

    #[test]
    fn release_by_handle_with_a_cooldown_keeps_sequence_numbers() {
        let mut b = block("10.0.0.0/26");
        b.auto_assign(2, "h", &attrs("a"), &Reserved::default());
        b.bump_sequence_number();
        let released = b.release_by_handle("h", None, Some(1_000));
        assert_eq!(released.ordinals, vec![0, 1]);
        assert_eq!(released.by_handle, [("h".to_string(), 2)].into());
        assert_eq!(
            (b.sequence_number_of(0), b.sequence_number_of(1)),
            (100, 100)
        );
        // The handle's own entry is gone; one cooldown entry serves both.
        assert_eq!(b.to_spec().attributes.len(), 1);
    }

    #[test]
    fn cooled_addresses_go_to_the_back_of_the_queue_in_ordinal_order() {
        let mut b = block("10.0.0.0/29");
        b.auto_assign(8, "h", &attrs("a"), &Reserved::default());
        release_at(&mut b, &[5, 2], Some(100));
        release_at(&mut b, &[7], Some(200));
        assert!(
            b.deallocate_cooled(100).is_empty(),
            "released at 100: not before 100"
        );
        assert_eq!(b.deallocate_cooled(101), vec![2, 5]);
        assert_eq!(b.to_spec().unallocated, vec![2, 5]);
        assert_eq!(b.sequence_number_of(2), 0);
        assert_eq!(b.earliest_release(), Some(200));
        assert_eq!(b.deallocate_cooled(201), vec![7]);
        assert_eq!(b.to_spec().unallocated, vec![2, 5, 7]);
        assert_eq!(b.earliest_release(), None);
        // Only the pod's entry is left.
        assert_eq!(b.to_spec().attributes.len(), 1);
        assert!(b.problems().is_empty());
    }

    #[test]
    fn a_released_attribute_is_never_reused_for_a_new_allocation() {
        let mut b = block("10.0.0.0/26");
        b.auto_assign(1, "h", &attrs("a"), &Reserved::default());
        b.release_by_handle("h", None, Some(1_000));
        b.auto_assign(1, "h", &attrs("a"), &Reserved::default());
        assert_eq!(held(&b, "h"), vec![1]);
        assert_eq!(b.to_spec().attributes.len(), 2);
    }

    #[test]
    fn released_at_must_be_a_timestamp() {
        let json = r#"{"cidr":"10.0.0.0/31","allocations":[0,null],"unallocated":[1],
            "attributes":[{"releasedAt":"yesterday"}]}"#;
        let err = serde_json::from_str::<BlockSpec>(json).unwrap_err();
        assert!(err.to_string().contains("\"yesterday\""), "{err}");
        let calico = r#"{"cidr":"10.0.0.0/31","allocations":[0,null],"unallocated":[1],
            "attributes":[{"releasedAt":"2026-07-01T10:00:00Z"}]}"#;
        let b = Block::from_spec(serde_json::from_str(calico).unwrap()).unwrap();
        assert_eq!(
            b.earliest_release(),
            crate::timestamp::parse_rfc3339("2026-07-01T10:00:00Z")
        );
    }

    fn release_at(b: &mut Block, ordinals: &[u32], stamp: Option<i64>) -> Released {
        let items: Vec<ReleaseItem> = ordinals
            .iter()
            .map(|&ordinal| ReleaseItem {
                ordinal,
                handle: None,
                sequence_number: None,
            })
            .collect();
        b.release(&items, stamp).unwrap()
    }
}
