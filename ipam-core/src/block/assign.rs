//! Handing a block's ordinals out and taking them back: automatic and
//! chosen assignment in Calico's order, release by address or handle with
//! the caller's expectations, the IP cooldown's released entries and their
//! deallocation, and the attribute bookkeeping each of these does
//! (ipam_block.go: autoAssign, assign, release, releaseByHandle,
//! garbageCollect, deleteAttributes).

use std::collections::BTreeMap;

use super::{sanitize_handle, Attribute, BitIter, Block, Slot};
use crate::error::Error;
use crate::reservation::Reserved;

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

impl Block {
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

    fn find_or_add_attribute(&mut self, handle: &str, secondary: &BTreeMap<String, String>) -> u32 {
        let text = Attribute::text_for(handle, secondary);
        if let Some(index) = self.attributes.iter().position(|a| a.has_text(&text)) {
            return index as u32;
        }
        self.push_attribute(Attribute::of_text(&text))
    }

    // A plan works on a copy of the block, whose vector has no room to
    // spare: grow it by an eighth, not by doubling, so that a block
    // filled one plan at a time does not keep up to twice the entries'
    // room.
    fn push_attribute(&mut self, attribute: Attribute) -> u32 {
        if self.attributes.len() == self.attributes.capacity() {
            self.attributes
                .reserve_exact((self.attributes.len() / 8).max(1));
        }
        self.attributes.push(attribute);
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
                let index = self.push_attribute(Attribute::released(released_at));
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
