//! Reading: the cache of pools, config, reservations, blocks, affinities
//! and handles seen, how it is refreshed, and the public queries, each of
//! which reads what it answers from fresh.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipam_core::block::Attribute;
use ipam_core::planner::addresses_in_blocks;
use ipam_core::{Block, BlockCidr, Handle, Holding, IpamConfig, Pool, Snapshot};
use ipnet::IpNet;

use super::{Ipam, IpamError};
use crate::cache::Cache;
use crate::datastore::Datastore;
use crate::error::StoreError;
use crate::model::{Key, Kind, ListQuery, Revision, Value, Versioned};

impl<S: Datastore + ?Sized> Ipam<S> {
    /// Lists pools, config, reservations, blocks and affinities again.
    pub(super) async fn refresh(&self) -> Result<(), StoreError> {
        let listing = self.cache().begin_listing();
        let config = match self.store.get(&Key::Config).await {
            Ok(config) => Some(config),
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let mut lists = Vec::new();
        for kind in [Kind::Pool, Kind::Reservation, Kind::Block, Kind::Affinity] {
            lists.push(self.store.list(&ListQuery::All(kind)).await?);
        }
        self.cache().install(listing, config, lists);
        Ok(())
    }

    pub(super) async fn ensure_fresh(&self) -> Result<(), StoreError> {
        let stale = match self.cache().loaded_at {
            None => true,
            Some(at) => at.elapsed() >= self.options.cache_ttl,
        };
        if stale {
            self.refresh().await?;
        }
        Ok(())
    }

    /// Reads one object again, after a compare-and-swap failure on it.
    pub(super) async fn reload(&self, key: &Key) -> Result<(), StoreError> {
        if matches!(key, Key::Pool(_) | Key::Reservation(_) | Key::Config) {
            return self.refresh().await;
        }
        self.read_fresh(key).await.map(drop)
    }

    /// An object as the store holds it now, recorded in the cache too (or
    /// removed from it when gone). The value returned is the one read: by
    /// the time the caller looks, the cache may hold another thread's older
    /// one (see [`Ipam::read_handle`]).
    async fn read_fresh(&self, key: &Key) -> Result<Option<Versioned<Value>>, StoreError> {
        match self.store.get(key).await {
            Ok(versioned) => {
                self.cache()
                    .put(versioned.value.clone(), versioned.revision.clone());
                Ok(Some(versioned))
            }
            Err(StoreError::NotFound { .. }) => {
                self.cache().remove(key);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// A handle as the store holds it now, with its revision, recorded in
    /// the cache too. For a decision that the handle's absence would turn
    /// into writing nothing (taking counts away, deleting it): the cache
    /// may say absent while the store holds it, because a write's store
    /// call and its cache update are not one step (another thread's create
    /// can land between a delete and its cache removal, or between a read
    /// finding nothing and its removal), and an absent handle is written
    /// with no compare-and-swap that would notice.
    pub(super) async fn read_handle(
        &self,
        id: &str,
    ) -> Result<Option<(Handle, Revision)>, StoreError> {
        let key = Key::Handle(id.to_string());
        match self.read_fresh(&key).await? {
            Some(Versioned {
                value: Value::Handle(handle),
                revision,
            }) => Ok(Some((handle, revision))),
            Some(other) => Err(wrong_kind(&key, &other.value, "an IPAMHandle")),
            None => Ok(None),
        }
    }

    /// A block as the store holds it now, recorded in the cache too.
    async fn read_block(&self, cidr: BlockCidr) -> Result<Option<Block>, StoreError> {
        let key = Key::Block(cidr);
        match self.read_fresh(&key).await? {
            Some(Versioned {
                value: Value::Block(block),
                ..
            }) => Ok(Some(block)),
            Some(other) => Err(wrong_kind(&key, &other.value, "an IPAMBlock")),
            None => Ok(None),
        }
    }

    /// The cached handle with its revision; `None` when the cache lacks
    /// either.
    pub(super) fn cached_handle(&self, id: &str) -> Option<(Handle, Revision)> {
        let cache = self.cache();
        let revision = cache.revision(&Key::Handle(id.to_string()))?.clone();
        Some((cache.handle(id)?.clone(), revision))
    }

    /// The handle a count change is computed over, with its revision: the
    /// cached one, or, when the change takes counts away and the cache has
    /// none, the store's (see [`Ipam::read_handle`]). Gains over a handle
    /// the cache misses create it, and a create fails where it exists.
    pub(super) async fn handle_to_change(
        &self,
        id: &str,
        losing: bool,
    ) -> Result<Option<(Handle, Revision)>, StoreError> {
        match self.cached_handle(id) {
            None if losing => self.read_handle(id).await,
            cached => Ok(cached),
        }
    }

    /// An object from the cache with its revision, read under one lock so
    /// that the two belong together.
    pub(super) fn cached_with_revision<T>(
        &self,
        key: Key,
        read: impl FnOnce(&Cache) -> Option<T>,
    ) -> (Option<T>, HashMap<Key, Revision>) {
        let cache = self.cache();
        let mut expected = HashMap::new();
        let value = read(&cache);
        if value.is_some() {
            if let Some(revision) = cache.revision(&key) {
                expected.insert(key, revision.clone());
            }
        }
        (value, expected)
    }

    /// Reads the blocks of addresses into the cache: with `all`, every one
    /// of them; else only those the cache does not know (another process
    /// may have created them since the last listing). Returns the blocks
    /// read (see [`Ipam::read_fresh`]).
    pub(super) async fn load_blocks_of(
        &self,
        addresses: impl Iterator<Item = IpAddr>,
        all: bool,
    ) -> Result<Vec<Block>, StoreError> {
        let cidrs: Vec<BlockCidr> = {
            let cache = self.cache();
            let mut cidrs: Vec<BlockCidr> = addresses
                .filter_map(|a| match cache.snapshot.block_containing(a) {
                    Some(block) if all => Some(block.cidr()),
                    Some(_) => None,
                    None => cache.snapshot.pool_of(a).and_then(|p| p.block_of(a)),
                })
                .collect();
            cidrs.sort();
            cidrs.dedup();
            cidrs
        };
        let mut read = Vec::with_capacity(cidrs.len());
        for cidr in cidrs {
            read.extend(self.read_block(cidr).await?);
        }
        Ok(read)
    }

    /// Reads a handle and every block it names (those that exist), into
    /// the cache too; `None` when the handle does not exist. An answer is
    /// taken from the values returned, never from the cache, which another
    /// thread's late update may have set back since.
    pub(super) async fn read_handle_and_blocks(
        &self,
        handle_id: &str,
    ) -> Result<Option<Vec<Block>>, StoreError> {
        let Some((handle, _)) = self.read_handle(handle_id).await? else {
            return Ok(None);
        };
        let mut blocks = Vec::with_capacity(handle.blocks().len());
        for (cidr, _) in handle.blocks() {
            blocks.extend(self.read_block(*cidr).await?);
        }
        Ok(Some(blocks))
    }

    /// The addresses a handle holds, read fresh from the datastore, each
    /// with its block's prefix length (Calico's IPsByHandle).
    pub async fn addresses_of_handle(&self, handle_id: &str) -> Result<Vec<IpNet>, IpamError> {
        let handle_id = ipam_core::block::sanitize_handle(handle_id);
        let blocks = self.read_handle_and_blocks(handle_id).await?;
        Ok(addresses_in_blocks(blocks.iter().flatten(), handle_id))
    }

    /// How a handle holds `addresses` (block prefix, pool, sequence
    /// number), for answering an assignment: from the cache, which the
    /// assignment has just written, so the answer costs no read; an
    /// address the cache does not show held by the handle is read fresh
    /// and answered from what was read.
    /// `None` for an address the handle does not hold.
    pub async fn holdings(
        &self,
        handle_id: &str,
        addresses: &[IpAddr],
    ) -> Result<Vec<Option<Holding>>, IpamError> {
        let got: Vec<Option<Holding>> = {
            let cache = self.cache();
            addresses
                .iter()
                .map(|a| cache.snapshot.holding(*a, handle_id))
                .collect()
        };
        let missing = addresses.iter().zip(&got).filter(|(_, h)| h.is_none());
        let missing: Vec<IpAddr> = missing.map(|(a, _)| *a).collect();
        if missing.is_empty() {
            return Ok(got);
        }
        let read = self.load_blocks_of(missing.into_iter(), true).await?;
        let cache = self.cache();
        let from_read = |address: &IpAddr| {
            let block = read.iter().find(|b| b.cidr().net().contains(address))?;
            let pool = cache.snapshot.pool_of(*address).map(Pool::cidr);
            Holding::in_block(block, *address, handle_id, pool)
        };
        Ok(addresses
            .iter()
            .zip(got)
            .map(|(address, held)| held.or_else(|| from_read(address)))
            .collect())
    }

    /// The handles whose addresses were recorded for `node` and whose id
    /// starts with `prefix`, with their addresses, read fresh: what a CNI GC
    /// of one node's network may collect.
    pub async fn handles_on_node(
        &self,
        node: &str,
        prefix: &str,
    ) -> Result<BTreeMap<String, Vec<IpNet>>, IpamError> {
        Ok(self.snapshot().await?.handles_on_node(node, prefix))
    }

    /// Who holds an address, read fresh (Calico's GetAssignmentAttributes):
    /// `None` when it is free or in no pool's block.
    pub async fn attributes_of(&self, address: IpAddr) -> Result<Option<Attribute>, IpamError> {
        self.ensure_fresh().await?;
        let cidr = {
            let cache = self.cache();
            let pool_block = cache
                .snapshot
                .pool_of(address)
                .and_then(|p| p.block_of(address));
            cache
                .snapshot
                .block_containing(address)
                .map(|b| b.cidr())
                .or(pool_block)
        };
        let Some(cidr) = cidr else {
            return Ok(None);
        };
        self.reload(&Key::Block(cidr)).await?;
        let cache = self.cache();
        Ok(cache
            .snapshot
            .block(&cidr)
            .and_then(|b| b.attribute_of_address(address))
            .cloned())
    }

    /// One block, read fresh; `None` when it does not exist.
    pub async fn block(&self, cidr: BlockCidr) -> Result<Option<Block>, IpamError> {
        self.reload(&Key::Block(cidr)).await?;
        Ok(self.cache().snapshot.block(&cidr).cloned())
    }

    /// Everything in the datastore, read fresh, handles included: for
    /// usage reports and consistency checks.
    pub async fn snapshot(&self) -> Result<Snapshot, IpamError> {
        self.refresh().await?;
        let listed = self.store.list(&ListQuery::All(Kind::Handle)).await?;
        let mut handles = Vec::with_capacity(listed.len());
        let mut cache = self.cache();
        for Versioned { value, revision } in listed {
            if let Value::Handle(handle) = &value {
                handles.push(handle.clone());
            }
            cache.put(value, revision);
        }
        // Exactly the handles listed: the cache's may include one deleted
        // since it was read (see `read_handle`), which is no finding of the
        // datastore's.
        let mut snapshot = cache.snapshot.clone();
        snapshot.replace_handles(handles);
        Ok(snapshot)
    }

    /// Pools, blocks and affinities read fresh, handles not re-read: what
    /// garbage collection judges (handles are the largest kind, one per pod,
    /// and a collection pass needs only the blocks' attributes).
    pub async fn snapshot_of_blocks(&self) -> Result<Snapshot, IpamError> {
        self.refresh().await?;
        Ok(self.cache().snapshot.clone())
    }

    /// A node's affinities, in any state, read fresh.
    pub async fn affinities_of(&self, node: &str) -> Result<Vec<ipam_core::Affinity>, IpamError> {
        let listed = self
            .store
            .list(&ListQuery::AffinitiesOf(node.to_string()))
            .await?;
        let mut affinities: Vec<ipam_core::Affinity> = listed
            .into_iter()
            .filter_map(|item| match item.value {
                Value::Affinity(a) => Some(a),
                _ => None,
            })
            .collect();
        affinities.sort_by_key(|a| a.cidr);
        Ok(affinities)
    }

    /// The IPAM configuration, read fresh; Calico's defaults when none is
    /// stored.
    pub async fn config(&self) -> Result<IpamConfig, IpamError> {
        match self.store.get(&Key::Config).await {
            Ok(Versioned {
                value: Value::Config(config),
                revision,
            }) => {
                self.cache().put(Value::Config(config.clone()), revision);
                Ok(config)
            }
            Ok(other) => Err(StoreError::Invalid {
                what: Key::Config.to_string(),
                message: format!("holds a {} instead", other.value.kind()),
            }
            .into()),
            Err(StoreError::NotFound { .. }) => Ok(IpamConfig::default()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every pool, read fresh, by name.
    pub async fn pools(&self) -> Result<Vec<Pool>, IpamError> {
        let mut pools: Vec<Pool> = self
            .store
            .list(&ListQuery::All(Kind::Pool))
            .await?
            .into_iter()
            .filter_map(|item| match item.value {
                Value::Pool(pool) => Some(pool),
                _ => None,
            })
            .collect();
        pools.sort_by(|a, b| a.name().cmp(b.name()));
        Ok(pools)
    }
}

/// A key that holds an object of another kind than its name says.
fn wrong_kind(key: &Key, found: &Value, expected: &str) -> StoreError {
    StoreError::Invalid {
        what: key.to_string(),
        message: format!("holds {}, not {expected}", found.key()),
    }
}
