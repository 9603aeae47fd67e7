//! The snapshot's handles by id.
//!
//! A filled pool has a handle per pod, a million of them. A
//! `HashMap<String, Handle>` held each in a bucket of over a hundred bytes,
//! with a copy of the id as key, and doubled its buckets past 7/8 load: a
//! million handles took about 300 bytes each. Here the handles sit in one
//! vector (40 bytes each, the id inside) and the table holds only their
//! 4-byte positions, hashed by the id they point at.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

use crate::cidr::BlockCidr;
use crate::handle::{Handle, HandleName};

/// Handles by id.
#[derive(Debug, Clone, Default)]
pub(crate) struct HandleIndex {
    handles: Vec<Handle>,
    // Positions in `handles`.
    table: HashTable<u32>,
    // foldhash, seeded per index: SipHash was a twentieth of planning's
    // time, and ids come from runtimes and clients allowed to allocate.
    hasher: DefaultHashBuilder,
}

impl HandleIndex {
    /// The handle with this id.
    pub(crate) fn get(&self, id: &str) -> Option<&Handle> {
        let hash = self.hasher.hash_one(id);
        self.table
            .find(hash, |&at| self.handles[at as usize].id() == id)
            .map(|&at| &self.handles[at as usize])
    }

    /// Every handle, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Handle> {
        self.handles.iter()
    }

    /// Adds a handle, or replaces the one with its id.
    pub(crate) fn insert(&mut self, handle: Handle) {
        let hash = self.hasher.hash_one(handle.id());
        let handles = &self.handles;
        match self
            .table
            .find(hash, |&at| handles[at as usize].id() == handle.id())
        {
            Some(&at) => self.handles[at as usize] = handle,
            None => self.push(hash, handle),
        }
    }

    /// Changes the counts of the handle named `name` by `deltas` in place
    /// ([`Handle::adjust`]): created when it gains its first addresses,
    /// removed when it holds none. One lookup, where a write built over a
    /// copy and then stored costs two and a copy.
    pub(crate) fn adjust(&mut self, name: &HandleName, deltas: &[(BlockCidr, i64)]) {
        let hash = self.hasher.hash_one(name.as_str());
        let handles = &self.handles;
        let found = self
            .table
            .find(hash, |&at| handles[at as usize].id() == name.as_str())
            .copied();
        match found {
            Some(at) => {
                let handle = &mut self.handles[at as usize];
                handle.adjust(deltas);
                if handle.is_empty() {
                    self.remove_at(hash, at);
                }
            }
            None => {
                let mut handle = Handle::named(name.clone());
                handle.adjust(deltas);
                if !handle.is_empty() {
                    self.push(hash, handle);
                }
            }
        }
    }

    /// Removes the handle with this id, if there is one.
    pub(crate) fn remove(&mut self, id: &str) {
        let hash = self.hasher.hash_one(id);
        let handles = &self.handles;
        if let Some(&at) = self.table.find(hash, |&at| handles[at as usize].id() == id) {
            self.remove_at(hash, at);
        }
    }

    // Adds a handle whose id is not in the index.
    fn push(&mut self, hash: u64, handle: Handle) {
        let at = u32::try_from(self.handles.len())
            .expect("fewer than 2^32 handles: each holds an address");
        self.handles.push(handle);
        let (handles, hasher) = (&self.handles, &self.hasher);
        self.table
            .insert_unique(hash, at, |&at| hasher.hash_one(handles[at as usize].id()));
    }

    // Removes the handle at `at`, whose id hashes to `hash`.
    fn remove_at(&mut self, hash: u64, at: u32) {
        let Ok(entry) = self.table.find_entry(hash, |&p| p == at) else {
            return;
        };
        entry.remove();
        let last = self.handles.len() - 1;
        self.handles.swap_remove(at as usize);
        if (at as usize) < last {
            // The last handle moved into the gap: point its entry there.
            let moved = self.hasher.hash_one(self.handles[at as usize].id());
            let slot = self
                .table
                .find_mut(moved, |&p| p as usize == last)
                .expect("every handle has an entry");
            *slot = at;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        // Any sequence of inserts, removes and in-place adjustments leaves
        // what a map would hold.
        #[test]
        fn the_index_agrees_with_a_map(
            ops in prop::collection::vec((0u8..12, 0u32..4, -3i64..4), 0..200),
        ) {
            let block: BlockCidr = "10.0.0.0/26".parse().unwrap();
            let mut index = HandleIndex::default();
            let mut model: BTreeMap<String, u32> = BTreeMap::new();
            for (id, count, delta) in ops {
                let id = format!("k8s-pod-network.{id}");
                if delta != 0 {
                    // Created by a gain, removed when empty, never below zero.
                    index.adjust(&HandleName::new(&id), &[(block, delta)]);
                    let held = i64::from(model.get(&id).copied().unwrap_or(0));
                    match u32::try_from((held + delta).max(0)).unwrap() {
                        0 => model.remove(&id),
                        n => model.insert(id, n),
                    };
                } else if count == 0 {
                    index.remove(&id);
                    model.remove(&id);
                } else {
                    let mut handle = Handle::new(&id);
                    handle.increment(block, count);
                    index.insert(handle);
                    model.insert(id, count);
                }
                let mut held: Vec<(String, u32)> =
                    index.iter().map(|h| (h.id().to_string(), h.total())).collect();
                held.sort();
                prop_assert_eq!(&held, &model.clone().into_iter().collect::<Vec<_>>());
                for n in 0..12 {
                    let id = format!("k8s-pod-network.{n}");
                    prop_assert_eq!(index.get(&id).map(Handle::total), model.get(&id).copied());
                }
            }
        }
    }

    #[test]
    fn handles_are_found_replaced_and_removed_by_id() {
        let mut index = HandleIndex::default();
        for id in ["a", "b", "c", "d"] {
            index.insert(Handle::new(id));
        }
        let mut counted = Handle::new("b");
        counted.increment("10.0.0.0/26".parse().unwrap(), 2);
        index.insert(counted.clone());
        assert_eq!(index.get("b"), Some(&counted));
        index.remove("a");
        index.remove("zz");
        index.remove("d");
        let mut ids: Vec<&str> = index.iter().map(Handle::id).collect();
        ids.sort_unstable();
        assert_eq!(ids, ["b", "c"]);
        assert!(index.get("a").is_none() && index.get("d").is_none());
        assert_eq!(index.get("c").map(Handle::id), Some("c"));
        index.remove("b");
        index.remove("c");
        assert_eq!(index.iter().count(), 0);
        index.insert(Handle::new("e"));
        assert_eq!(index.get("e").map(Handle::id), Some("e"));
    }
}
