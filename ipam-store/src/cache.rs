//! The engine's view of the datastore: an ipam-core [`Snapshot`] plus the
//! revision of every object in it.
//!
//! The cache is never trusted for correctness: every write names the
//! revision the cache holds, so a stale entry costs one failed
//! compare-and-swap and a re-read, never a wrong allocation. What it buys is
//! the steady state without reads: a node's affine blocks, the pools and the
//! config are already at hand when a request comes in.

use std::collections::HashMap;
use std::time::Instant;

use ipam_core::{Handle, IpamConfig, Snapshot};

use crate::model::{Key, Revision, Value, Versioned};

/// Objects as last read or written, with their revisions.
#[derive(Debug)]
pub(crate) struct Cache {
    pub(crate) snapshot: Snapshot,
    revisions: HashMap<Key, Revision>,
    /// When pools, config, reservations, blocks and affinities were last
    /// listed; `None` until the first load, and after [`Cache::invalidate`].
    pub(crate) loaded_at: Option<Instant>,
    /// Raised by every [`Cache::invalidate`]: a listing begun before may
    /// not show the change that invalidated the cache.
    generation: u64,
    /// Listings begun so far, and the number of the one installed: an
    /// earlier one finishing late is not installed over a later one.
    listings_begun: u64,
    listing_installed: u64,
}

/// A listing of the datastore in progress (see [`Cache::begin_listing`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Listing {
    number: u64,
    generation: u64,
    started: Instant,
}

impl Cache {
    pub(crate) fn empty() -> Cache {
        Cache {
            snapshot: Snapshot::new(IpamConfig::default(), Vec::new(), &[]),
            revisions: HashMap::new(),
            loaded_at: None,
            generation: 0,
            listings_begun: 0,
            listing_installed: 0,
        }
    }

    /// Marks pools, config and reservations as possibly changed: the next
    /// use lists them again, and a listing already under way is not taken
    /// for fresh. A written pool or reservation is not put in the cache,
    /// which only a listing fills with those.
    pub(crate) fn invalidate(&mut self) {
        self.loaded_at = None;
        self.generation += 1;
    }

    /// Starts a listing, to be installed with [`Cache::install`].
    pub(crate) fn begin_listing(&mut self) -> Listing {
        self.listings_begun += 1;
        Listing {
            number: self.listings_begun,
            generation: self.generation,
            started: Instant::now(),
        }
    }

    /// Replaces the cache with what `listing` found, unless a listing begun
    /// later is installed already. Fresh for the cache's time to live only
    /// when nothing invalidated the cache while it was listed (a pool or
    /// reservation written then may be missing from the lists: without
    /// this, a reservation acknowledged during another request's refresh
    /// could be ignored for ten seconds).
    pub(crate) fn install(
        &mut self,
        listing: Listing,
        config: Option<Versioned<Value>>,
        lists: Vec<Vec<Versioned<Value>>>,
    ) {
        if listing.number < self.listing_installed {
            return;
        }
        let mut fresh = Cache::rebuild(self, config, lists, listing.started);
        if listing.generation != self.generation {
            fresh.loaded_at = None;
        }
        fresh.generation = self.generation;
        fresh.listings_begun = self.listings_begun;
        fresh.listing_installed = listing.number;
        *self = fresh;
    }

    /// A cache over freshly listed objects. Handles are not listed (there
    /// is one per pod); those of the previous cache are carried over and,
    /// like everything else here, checked by compare-and-swap when used.
    fn rebuild(
        previous: &Cache,
        config: Option<Versioned<Value>>,
        lists: Vec<Vec<Versioned<Value>>>,
        loaded_at: Instant,
    ) -> Cache {
        let mut pools = Vec::new();
        let mut reservations = Vec::new();
        let mut others = Vec::new();
        let mut revisions = HashMap::new();
        for item in lists.into_iter().flatten() {
            revisions.insert(item.value.key(), item.revision);
            match item.value {
                Value::Pool(pool) => pools.push(pool),
                Value::Reservation(r) => reservations.push(r.spec),
                other => others.push(other),
            }
        }
        let config = match config {
            Some(Versioned {
                value: Value::Config(config),
                revision,
            }) => {
                revisions.insert(Key::Config, revision);
                config
            }
            _ => IpamConfig::default(),
        };
        let mut cache = Cache {
            snapshot: Snapshot::new(config, pools, &reservations),
            revisions,
            loaded_at: Some(loaded_at),
            ..Cache::empty()
        };
        for value in others {
            cache.put_value(value);
        }
        for handle in previous.snapshot.handles() {
            let key = Key::Handle(handle.id().to_string());
            if let Some(revision) = previous.revisions.get(&key) {
                cache.revisions.insert(key, revision.clone());
                cache.snapshot.insert_handle(handle.clone());
            }
        }
        cache
    }

    pub(crate) fn revision(&self, key: &Key) -> Option<&Revision> {
        self.revisions.get(key)
    }

    pub(crate) fn handle(&self, id: &str) -> Option<&Handle> {
        self.snapshot.handle(id)
    }

    /// Whether the cached blocks hold every address the cached handle
    /// counts. Only then may a release by handle work from the cache: a
    /// block that lacks one of its addresses is stale, and releasing
    /// nothing from it would write nothing, so no compare-and-swap would
    /// notice before the handle was deleted with its address still held.
    pub(crate) fn knows_all_of(&self, id: &str) -> bool {
        let Some(handle) = self.snapshot.handle(id) else {
            return false;
        };
        handle.blocks().iter().all(|(cidr, count)| {
            self.snapshot
                .block(cidr)
                .is_some_and(|b| b.ordinals_of_handle(id).count() == *count as usize)
        })
    }

    /// Records an object at a revision. Pools, the config and reservations
    /// shape the whole snapshot, so a change to them marks the cache for a
    /// reload instead.
    pub(crate) fn put(&mut self, value: Value, revision: Revision) {
        self.revisions.insert(value.key(), revision);
        self.put_value(value);
    }

    fn put_value(&mut self, value: Value) {
        match value {
            Value::Block(block) => self.snapshot.insert_block(block),
            Value::Handle(handle) => self.snapshot.insert_handle(handle),
            Value::Affinity(affinity) => self.snapshot.insert_affinity(affinity),
            Value::Config(config) => self.snapshot.set_config(config),
            Value::Pool(_) | Value::Reservation(_) => self.invalidate(),
        }
    }

    /// Forgets an object that is gone.
    pub(crate) fn remove(&mut self, key: &Key) {
        self.revisions.remove(key);
        match key {
            Key::Block(cidr) => self.snapshot.remove_block(cidr),
            Key::Handle(id) => self.snapshot.remove_handle(id),
            Key::Affinity(key) => self.snapshot.remove_affinity(key),
            Key::Config => self.snapshot.set_config(IpamConfig::default()),
            Key::Pool(_) | Key::Reservation(_) => self.invalidate(),
        }
    }
}
