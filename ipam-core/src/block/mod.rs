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

mod assign;
mod attribute;
mod spec;
#[cfg(test)]
mod tests;

use smallvec::{smallvec, SmallVec};
use std::collections::VecDeque;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use crate::cidr::BlockCidr;
use crate::reservation::Reserved;
use crate::unknown::UnknownFields;
pub use assign::{ReleaseItem, Released};
pub use attribute::{sanitize_handle, Attribute, AttributeParts, Secondary};
pub use spec::BlockSpec;

/// Addresses held by this handle stay allocated when Calico judges a block
/// empty: Windows nodes reserve them (ipam_block.go, WindowsReservedHandle).
pub const WINDOWS_RESERVED_HANDLE: &str = "windows-reserved-ipam-handle";

/// Whether a handle is [`WINDOWS_RESERVED_HANDLE`], compared without case
/// as ipam_block.go's containsOnlyReservedIPs does (`strings.ToLower`; the
/// name is ASCII, so only ASCII letters can fold onto it).
pub fn is_windows_reserved(handle: &str) -> bool {
    handle.eq_ignore_ascii_case(WINDOWS_RESERVED_HANDLE)
}

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

    /// The name a block is affine to, for a host or a virtual owner: both
    /// hold blocks by an affinity keyed by that name.
    pub fn affine_name(&self) -> Option<&str> {
        match self {
            BlockOwner::Host(n) | BlockOwner::Virtual(n) => Some(n),
            BlockOwner::Other(_) => None,
        }
    }

    /// The owner of blocks claimed for `intended_use` by `name`: LoadBalancer
    /// addresses live in `virtual:` blocks (libcalico-go ipam.go, autoAssign
    /// and AssignIP: `AffinityTypeVirtual` when the use is LoadBalancer).
    pub fn for_use(name: &str, intended_use: crate::pool::AllowedUse) -> BlockOwner {
        match intended_use {
            crate::pool::AllowedUse::LoadBalancer => BlockOwner::Virtual(name.to_string()),
            _ => BlockOwner::Host(name.to_string()),
        }
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
    // One bit per ordinal: the authoritative "is allocated". A /26's one
    // word is held inline, so copying a block for a plan allocates once
    // less.
    in_use: SmallVec<[u64; 1]>,
    // Per ordinal: attribute index and recorded sequence number, together
    // so that copying a block costs one allocation for both.
    slots: Vec<Slot>,
    unallocated: FreeOrder,
    // Each entry shares its strings, so copying a block for a plan copies
    // 24 bytes per entry and no string.
    attributes: Vec<Attribute>,
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
            in_use: smallvec![0; size.div_ceil(64) as usize],
            slots: vec![Slot::default(); size as usize],
            unallocated: FreeOrder((0..size).collect()),
            attributes: Vec::new(),
            sequence_number,
            deleted: false,
            strict_affinity: false,
            host_affinity: None,
            unknown: UnknownFields::new(),
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
        self.allocations()
            .all(|(_, attribute)| attribute.handle().is_some_and(is_windows_reserved))
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
                        &self.attributes[self.slots[ordinal as usize].attribute as usize],
                    )
                })
            })
    }

    /// The attribute of an allocated ordinal.
    pub fn attribute_of(&self, ordinal: u32) -> Option<&Attribute> {
        self.is_allocated(ordinal)
            .then(|| &self.attributes[self.slots[ordinal as usize].attribute as usize])
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
            .filter_map(|(ordinal, attribute)| attribute.released_at().map(|at| (ordinal, at)))
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

    /// Ways the block disagrees with itself.
    pub fn problems(&self) -> Vec<BlockProblem> {
        let size = self.cidr.size();
        let mut listed = vec![0u8; size as usize];
        let mut problems = Vec::new();
        for &ordinal in self.unallocated.iter() {
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
}

/// The free ordinals in the order they are handed out: a queue that
/// allocation pops from the front and release pushes onto the back.
///
/// Its own type for its copy: `VecDeque`'s `Clone` pushes element by
/// element (about 250 instructions for a /26), while copying its two
/// slices is two `memcpy`s, and every plan copies the blocks it changes.
#[derive(Debug, Default, PartialEq)]
struct FreeOrder(VecDeque<u32>);

impl Clone for FreeOrder {
    fn clone(&self) -> Self {
        let (front, back) = self.0.as_slices();
        let mut copy = Vec::with_capacity(self.0.len());
        copy.extend_from_slice(front);
        copy.extend_from_slice(back);
        // Takes the vector's buffer as it is.
        FreeOrder(VecDeque::from(copy))
    }
}

impl std::ops::Deref for FreeOrder {
    type Target = VecDeque<u32>;
    fn deref(&self) -> &VecDeque<u32> {
        &self.0
    }
}

impl std::ops::DerefMut for FreeOrder {
    fn deref_mut(&mut self) -> &mut VecDeque<u32> {
        &mut self.0
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
