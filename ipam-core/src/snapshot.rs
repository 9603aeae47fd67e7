//! A snapshot: the IPAM objects a plan reads, held in memory with the
//! indexes that keep planning cost independent of pool size (which node owns
//! which blocks, which block slots of each pool are unclaimed, which blocks
//! have room for borrowing, which blocks hold released addresses and since
//! when). Plans are applied back to it, so a caller can keep one as a cache
//! and validate it by compare-and-swap.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

// foldhash, seeded per map: node names are hashed on every plan and apply.
use hashbrown::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::affinity::{Affinity, AffinityKey};
use crate::block::{Block, BlockOwner};
use crate::cidr::{BlockCidr, IpVersion};
use crate::config::IpamConfig;
use crate::handle::Handle;
use crate::handle_index::HandleIndex;
use crate::holder;
use crate::plan::{AffinityRelease, BlockWrite, Claim, HandleChange, Plan, Write};
use crate::pool::Pool;
use crate::reservation::{ReservationSpec, Reserved};
use crate::space::FreeSlots;

/// An address a handle holds, as its block records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holding {
    /// The address with its block's prefix length.
    pub address: IpNet,
    /// The pool holding it, when one does.
    pub pool: Option<IpNet>,
    /// The block's sequence number when the address was handed out.
    pub sequence_number: u64,
}

impl Holding {
    /// How `block` records `address` held by `handle` (see
    /// [`Snapshot::holding`]), for a block read outside a snapshot; `pool`
    /// is the pool's CIDR. `None` when the block does not contain the
    /// address, or it is free or another handle's.
    pub fn in_block(
        block: &Block,
        address: IpAddr,
        handle: &str,
        pool: Option<IpNet>,
    ) -> Option<Holding> {
        let cidr = block.cidr();
        let ordinal = cidr.ordinal_of(address)?;
        let holder = block.attribute_of(ordinal)?.handle()?;
        (holder == crate::block::sanitize_handle(handle)).then(|| Holding {
            address: cidr.address_net(ordinal),
            pool,
            sequence_number: block.sequence_number_of(ordinal),
        })
    }
}

/// The objects a plan reads, and the indexes over them.
#[derive(Debug, Clone)]
pub struct Snapshot {
    config: IpamConfig,
    pools: Vec<Pool>,
    pool_space: Vec<FreeSlots>,
    reserved: Reserved,
    blocks: BTreeMap<BlockCidr, Block>,
    affinities: BTreeMap<AffinityKey, Affinity>,
    handles: HandleIndex,
    confirmed_by_node: HashMap<String, BTreeSet<BlockCidr>>,
    with_room: BTreeSet<BlockCidr>,
    // Blocks with room by the host in their affinity: a node's next
    // address is found without walking its full blocks.
    room_by_host: HashMap<String, BTreeSet<BlockCidr>>,
    // Blocks holding released addresses, with the earliest `releasedAt`
    // among them: a full block whose released addresses have cooled has
    // room again, and the cooldown backstop visits only these
    // (kube-controllers' ipam.go, `coldBlocks`).
    cold: BTreeMap<BlockCidr, i64>,
    // The same blocks by the host in their affinity.
    cold_by_host: HashMap<String, BTreeSet<BlockCidr>>,
}

impl Snapshot {
    /// An empty snapshot over a configuration, pools (ordered by name, as
    /// Calico lists them) and reservations.
    pub fn new(
        config: IpamConfig,
        mut pools: Vec<Pool>,
        reservations: &[ReservationSpec],
    ) -> Snapshot {
        pools.sort_by(|a, b| a.name().cmp(b.name()));
        let pool_space = pools
            .iter()
            .map(|p| FreeSlots::new(p.block_count()))
            .collect();
        Snapshot {
            config,
            pools,
            pool_space,
            reserved: Reserved::new(reservations),
            blocks: BTreeMap::new(),
            affinities: BTreeMap::new(),
            handles: HandleIndex::default(),
            confirmed_by_node: HashMap::new(),
            with_room: BTreeSet::new(),
            room_by_host: HashMap::new(),
            cold: BTreeMap::new(),
            cold_by_host: HashMap::new(),
        }
    }

    /// The IPAM configuration.
    pub fn config(&self) -> &IpamConfig {
        &self.config
    }

    /// Replaces the IPAM configuration.
    pub fn set_config(&mut self, config: IpamConfig) {
        self.config = config;
    }

    /// Pools, ordered by name.
    pub fn pools(&self) -> &[Pool] {
        &self.pools
    }

    /// The pool holding an address, enabled or not.
    pub fn pool_of(&self, address: IpAddr) -> Option<&Pool> {
        self.pools.iter().find(|p| p.contains(address))
    }

    /// Reserved addresses.
    pub fn reserved(&self) -> &Reserved {
        &self.reserved
    }

    /// A block by CIDR.
    pub fn block(&self, cidr: &BlockCidr) -> Option<&Block> {
        self.blocks.get(cidr)
    }

    /// Every block, in address order.
    pub fn blocks(&self) -> impl Iterator<Item = &Block> {
        self.blocks.values()
    }

    /// The block that holds an address, whatever pool it is in.
    pub fn block_containing(&self, address: IpAddr) -> Option<&Block> {
        let probe = BlockCidr::new(IpNet::from(address).trunc()).ok();
        // Blocks never overlap, so the containing block is the last one
        // starting at or before the address.
        let (_, block) = match probe {
            Some(probe) => self.blocks.range(..=probe).next_back()?,
            None => return None,
        };
        block.cidr().net().contains(&address).then_some(block)
    }

    /// An affinity by key.
    pub fn affinity(&self, key: &AffinityKey) -> Option<&Affinity> {
        self.affinities.get(key)
    }

    /// Every affinity, ordered by node then block.
    pub fn affinities(&self) -> impl Iterator<Item = &Affinity> {
        self.affinities.values()
    }

    /// Affinities of one node, in any state, ordered by block.
    pub fn affinities_of<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Affinity> + 'a {
        let start = AffinityKey {
            node: node.to_string(),
            cidr: lowest_block(),
        };
        self.affinities
            .range(start..)
            .take_while(move |(k, _)| k.node == node)
            .map(|(_, a)| a)
    }

    /// Blocks a node holds by confirmed affinity, in address order.
    pub fn confirmed_blocks_of(
        &self,
        node: &str,
        version: IpVersion,
    ) -> impl Iterator<Item = BlockCidr> + '_ {
        self.confirmed_by_node
            .get(node)
            .into_iter()
            .flatten()
            .copied()
            .filter(move |c| c.version() == version)
    }

    /// The node's confirmed blocks that have an unallocated ordinal, in
    /// address order: where its next addresses come from.
    pub(crate) fn affine_blocks_with_room<'a>(
        &'a self,
        node: &'a str,
        version: IpVersion,
    ) -> impl Iterator<Item = BlockCidr> + 'a {
        let confirmed = self.confirmed_by_node.get(node);
        self.room_by_host
            .get(node)
            .into_iter()
            .flatten()
            .copied()
            .filter(move |c| c.version() == version && confirmed.is_some_and(|set| set.contains(c)))
    }

    /// The node's confirmed blocks holding released addresses that have
    /// cooled down by `cutoff` (see [`crate::cooldown::Cooldown::cutoff`]),
    /// in address order: they have room once read.
    pub(crate) fn affine_cooled_blocks<'a>(
        &'a self,
        node: &'a str,
        version: IpVersion,
        cutoff: i64,
    ) -> impl Iterator<Item = BlockCidr> + 'a {
        let confirmed = self.confirmed_by_node.get(node);
        self.cold_by_host
            .get(node)
            .into_iter()
            .flatten()
            .copied()
            .filter(move |c| {
                c.version() == version
                    && confirmed.is_some_and(|set| set.contains(c))
                    && self.cold.get(c).is_some_and(|&at| at < cutoff)
            })
    }

    /// Blocks holding released addresses, each with the earliest
    /// `releasedAt` among them, in address order.
    pub fn cold_blocks(&self) -> impl Iterator<Item = (BlockCidr, i64)> + '_ {
        self.cold.iter().map(|(cidr, at)| (*cidr, *at))
    }

    /// A handle by id.
    pub fn handle(&self, id: &str) -> Option<&Handle> {
        self.handles.get(id)
    }

    /// Every handle, in no particular order.
    pub fn handles(&self) -> impl Iterator<Item = &Handle> {
        self.handles.iter()
    }

    /// The handles whose addresses were recorded for `node` (the `node`
    /// attribute calico-ipam writes) and whose id starts with `prefix`, each
    /// with its addresses (block prefix length), in id and address order.
    /// A CNI GC of one node's network reads this: handles of other nodes
    /// are never its to collect.
    pub fn handles_on_node(&self, node: &str, prefix: &str) -> BTreeMap<String, Vec<IpNet>> {
        let mut found: BTreeMap<String, Vec<IpNet>> = BTreeMap::new();
        for block in self.blocks.values() {
            for (ordinal, attribute) in block.allocations() {
                let Some(handle) = attribute.handle() else {
                    continue;
                };
                if handle.starts_with(prefix)
                    && attribute.secondary().get(holder::NODE) == Some(node)
                {
                    found
                        .entry(handle.to_string())
                        .or_default()
                        .push(block.cidr().address_net(ordinal));
                }
            }
        }
        found
    }

    /// What the blocks record for `address` when `handle` holds it: its
    /// block's prefix, its pool and the sequence number a later release
    /// can name so that it frees this allocation and no later one. `None`
    /// when the address is free or another handle's.
    pub fn holding(&self, address: IpAddr, handle: &str) -> Option<Holding> {
        let block = self.block_containing(address)?;
        Holding::in_block(
            block,
            address,
            handle,
            self.pool_of(address).map(Pool::cidr),
        )
    }

    /// Adds or replaces a block read from a datastore.
    pub fn insert_block(&mut self, block: Block) {
        let cidr = block.cidr();
        let room = block.unallocated_len() > 0;
        let released = block.earliest_release();
        // Whether the block replaced had room, or released addresses: the
        // by-host indexes hold a block only while it has.
        let had_room = if room {
            !self.with_room.insert(cidr)
        } else {
            self.with_room.remove(&cidr)
        };
        let was_cold = match released {
            Some(at) => self.cold.insert(cidr, at).is_some(),
            None => self.cold.remove(&cidr).is_some(),
        };
        // The by-host indexes key a block by its affine name (a host and a
        // virtual owner may share one); a block kept under the same key
        // with room (or released addresses) before and after is already
        // where it belongs.
        let (old, new) = match self.blocks.entry(cidr) {
            Entry::Vacant(slot) => (None, &*slot.insert(block)),
            Entry::Occupied(mut slot) => {
                let old = slot.insert(block);
                (Some(old), &*slot.into_mut())
            }
        };
        let same_key = old
            .as_ref()
            .is_some_and(|old| affine_name(old) == affine_name(new));
        if let Some(old) = &old {
            if had_room && !(room && same_key) {
                forget_by_host(&mut self.room_by_host, old);
            }
            if was_cold && !(released.is_some() && same_key) {
                forget_by_host(&mut self.cold_by_host, old);
            }
        }
        if let Some(node) = affine_name(new) {
            if room && !(had_room && same_key) {
                add_by_host(&mut self.room_by_host, node, cidr);
            }
            if released.is_some() && !(was_cold && same_key) {
                add_by_host(&mut self.cold_by_host, node, cidr);
            }
        }
        if old.is_none() {
            self.mark_slots(cidr, true);
        }
    }

    /// Forgets a block.
    pub fn remove_block(&mut self, cidr: &BlockCidr) {
        if let Some(old) = self.blocks.remove(cidr) {
            if self.with_room.remove(cidr) {
                forget_by_host(&mut self.room_by_host, &old);
            }
            if self.cold.remove(cidr).is_some() {
                forget_by_host(&mut self.cold_by_host, &old);
            }
            self.mark_slots(*cidr, false);
        }
    }

    /// Adds or replaces an affinity read from a datastore.
    pub fn insert_affinity(&mut self, affinity: Affinity) {
        let key = affinity.key();
        let owned = self.confirmed_by_node.entry(key.node.clone()).or_default();
        if affinity.state.is_confirmed() && !affinity.deleted {
            owned.insert(key.cidr);
        } else {
            owned.remove(&key.cidr);
        }
        self.affinities.insert(key, affinity);
    }

    /// Forgets an affinity.
    pub fn remove_affinity(&mut self, key: &AffinityKey) {
        if self.affinities.remove(key).is_some() {
            if let Some(owned) = self.confirmed_by_node.get_mut(&key.node) {
                owned.remove(&key.cidr);
            }
        }
    }

    /// Adds or replaces a handle read from a datastore.
    pub fn insert_handle(&mut self, handle: Handle) {
        self.handles.insert(handle);
    }

    /// Forgets a handle.
    pub fn remove_handle(&mut self, id: &str) {
        self.handles.remove(id);
    }

    /// Replaces every handle with `handles`, a datastore's whole list: a
    /// cache's handles are kept across reads rather than listed, so they
    /// may include one deleted since.
    pub fn replace_handles(&mut self, handles: impl IntoIterator<Item = Handle>) {
        self.handles = HandleIndex::default();
        for handle in handles {
            self.handles.insert(handle);
        }
    }

    /// Applies the writes of a plan planned on this snapshot, as a
    /// datastore that accepted them all would now hold them.
    ///
    /// In the plan's order as far as it matters here: affinity releases,
    /// then claims (a plan may free another node's block and claim it), then
    /// handles and blocks, which touch different objects. Handles change in
    /// place and blocks move straight into the snapshot, rather than
    /// through a vector of writes: a handle written over a copy and then
    /// stored costs two lookups and a copy, and each move of a block a copy
    /// of it (together a third of applying's time, BENCHMARKS.md "Planning
    /// in the /26 case").
    pub fn apply(&mut self, plan: Plan) {
        let releases = plan
            .releases
            .into_iter()
            .flat_map(AffinityRelease::into_writes);
        let claims = plan.claims.into_iter().flat_map(Claim::into_writes);
        for write in releases.chain(claims) {
            self.apply_write(write);
        }
        for change in plan.handles {
            match change {
                HandleChange::Delete(id) => self.handles.remove(&id),
                HandleChange::Adjust { id, deltas } => self.handles.adjust(&id, &deltas),
            }
        }
        for block in plan.blocks {
            match block {
                BlockWrite::Update(b) => self.insert_block(b),
                BlockWrite::Delete(cidr) => self.remove_block(&cidr),
            }
        }
    }

    fn apply_write(&mut self, write: Write) {
        match write {
            Write::CreateAffinity(a) | Write::UpdateAffinity(a) => self.insert_affinity(a),
            Write::DeleteAffinity(key) => self.remove_affinity(&key),
            Write::CreateBlock(b) | Write::UpdateBlock(b) => self.insert_block(b),
            Write::DeleteBlock(cidr) => self.remove_block(&cidr),
            Write::CreateHandle(h) | Write::UpdateHandle(h) => self.insert_handle(h),
            Write::DeleteHandle(id) => self.remove_handle(&id),
        }
    }

    /// Unclaimed block slots of the pool at `pool_index` (in [`Self::pools`]).
    pub(crate) fn free_slots(&self, pool_index: usize) -> &FreeSlots {
        &self.pool_space[pool_index]
    }

    /// Blocks of `pool` with at least one unallocated ordinal, or with
    /// released addresses cooled down by `cutoff`, from `start` onwards and
    /// then wrapping around to the pool's first block.
    pub(crate) fn blocks_with_room<'a>(
        &'a self,
        pool: &'a Pool,
        start: BlockCidr,
        cutoff: i64,
    ) -> impl Iterator<Item = BlockCidr> + 'a {
        let first = pool.block_at(0);
        let in_pool = move |c: &BlockCidr| pool.contains(c.net().network());
        let cooled = move |(c, at): (&BlockCidr, &i64)| (*at < cutoff).then_some(*c);
        let tail = merge_sorted(
            self.with_room.range(start..).copied(),
            self.cold.range(start..).filter_map(cooled),
        )
        .take_while(in_pool);
        let head = merge_sorted(
            self.with_room.range(first..start).copied(),
            self.cold.range(first..start).filter_map(cooled),
        )
        .filter(in_pool);
        tail.chain(head)
    }

    // Keeps each pool's unclaimed-slot index in step with the blocks that
    // exist, including blocks whose size differs from the pool's.
    fn mark_slots(&mut self, cidr: BlockCidr, occupied: bool) {
        let first = cidr.net().network();
        let last = cidr.address(cidr.size() - 1);
        for (pool, space) in self.pools.iter().zip(self.pool_space.iter_mut()) {
            let (Some(lo), Some(hi)) = (pool.block_index_of(first), pool.block_index_of(last))
            else {
                continue;
            };
            for index in lo..=hi {
                if occupied {
                    space.take(index);
                } else {
                    space.give_back(index);
                }
            }
        }
    }
}

// Adds a block to its host's set in a by-host index.
fn add_by_host(index: &mut HashMap<String, BTreeSet<BlockCidr>>, node: &str, cidr: BlockCidr) {
    match index.get_mut(node) {
        Some(set) => {
            set.insert(cidr);
        }
        None => {
            index.insert(node.to_string(), BTreeSet::from([cidr]));
        }
    }
}

// The key of a block in the by-host indexes.
fn affine_name(block: &Block) -> Option<&str> {
    block.owner().and_then(BlockOwner::affine_name)
}

// Drops `old` from its host's set in a by-host index.
fn forget_by_host(index: &mut HashMap<String, BTreeSet<BlockCidr>>, old: &Block) {
    if let Some(set) = affine_name(old).and_then(|node| index.get_mut(node)) {
        set.remove(&old.cidr());
    }
}

/// Two ascending iterators as one, without repeats.
pub(crate) fn merge_sorted<T: Ord + Copy>(
    a: impl Iterator<Item = T>,
    b: impl Iterator<Item = T>,
) -> impl Iterator<Item = T> {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(x), Some(y)) if x < y => a.next(),
        (Some(x), Some(y)) if x > y => b.next(),
        (Some(_), Some(_)) => {
            b.next();
            a.next()
        }
        (Some(_), None) => a.next(),
        (None, _) => b.next(),
    })
}

// The first block in key order: blocks sort by address, then prefix, and
// no block is larger than a /20.
fn lowest_block() -> BlockCidr {
    BlockCidr::new(IpNet::new(IpAddr::from([0u8, 0, 0, 0]), 20).expect("/20"))
        .expect("a /20 at address zero is a valid block")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::affinity::AffinityState;
    use crate::pool::PoolSpec;

    #[test]
    fn handles_on_node_lists_only_that_nodes_handles_of_the_network() {
        let pool = Pool::new("p", PoolSpec::new("10.0.0.0/24".parse().unwrap())).unwrap();
        let mut s = Snapshot::new(IpamConfig::default(), vec![pool], &[]);
        let now = crate::plan::Now { unix_nanos: 0 };
        for (handle, node, count) in [
            ("net.a", "n1", 2),
            ("net.b", "n2", 1),
            ("other.c", "n1", 1),
            ("net.d", "n1", 1),
        ] {
            let mut request = crate::AutoAssignRequest::new(
                crate::HandleId::new(handle),
                crate::NodeName::new(node),
                count,
                0,
            );
            request.attributes.insert("node".into(), node.into());
            let plan = s.plan_auto_assign(&request, now).unwrap();
            s.apply(plan.plan);
        }
        let found = s.handles_on_node("n1", "net.");
        let ids: Vec<&str> = found.keys().map(String::as_str).collect();
        assert_eq!(ids, ["net.a", "net.d"]);
        assert_eq!(found["net.a"].len(), 2);
        assert_eq!(found["net.d"].len(), 1);
        assert!(found["net.a"].iter().all(|a| a.prefix_len() == 26));
        assert!(s.handles_on_node("n3", "").is_empty());
    }

    #[test]
    fn a_holding_names_the_pool_and_the_sequence_number_a_release_must_match() {
        let pool = Pool::new("p", PoolSpec::new("10.0.0.0/24".parse().unwrap())).unwrap();
        let mut s = Snapshot::new(IpamConfig::default(), vec![pool], &[]);
        let now = crate::plan::Now { unix_nanos: 0 };
        let mut seen = Vec::new();
        for handle in ["net.a", "net.b"] {
            let request = crate::AutoAssignRequest::new(
                crate::HandleId::new(handle),
                crate::NodeName::new("n1"),
                1,
                0,
            );
            let plan = s.plan_auto_assign(&request, now).unwrap();
            seen.push(plan.ipv4.addresses[0]);
            s.apply(plan.plan);
        }
        let a = s.holding(seen[0].addr(), "net.a").unwrap();
        let b = s.holding(seen[1].addr(), "net.b").unwrap();
        assert_eq!(a.address, seen[0]);
        assert_eq!(a.pool, Some("10.0.0.0/24".parse().unwrap()));
        // Each write raises the block's number: the second allocation
        // carries a later one than the first.
        assert!(b.sequence_number > a.sequence_number, "{a:?} {b:?}");
        let release = crate::ReleaseRequest {
            address: a.address.addr(),
            handle: Some(crate::HandleId::new("net.a")),
            sequence_number: Some(a.sequence_number),
        };
        assert!(s
            .plan_release(&[release], crate::Now { unix_nanos: 0 })
            .is_ok());
        assert_eq!(s.holding(seen[0].addr(), "net.b"), None);
        assert_eq!(s.holding("10.0.0.200".parse().unwrap(), "net.a"), None);
    }

    #[test]
    fn a_new_handle_shares_its_id_with_its_entry_in_the_block() {
        let pool = Pool::new("p", PoolSpec::new("10.0.0.0/24".parse().unwrap())).unwrap();
        let mut s = Snapshot::new(IpamConfig::default(), vec![pool], &[]);
        let mut request = crate::AutoAssignRequest::new(
            crate::HandleId::new("net.a"),
            crate::NodeName::new("n1"),
            2,
            0,
        );
        request.attributes.insert("pod".into(), "p".into());
        let plan = s
            .plan_auto_assign(&request, crate::plan::Now { unix_nanos: 0 })
            .unwrap();
        let address = plan.ipv4.addresses[0].addr();
        s.apply(plan.plan);
        let handle = s.handle("net.a").unwrap();
        assert_eq!(handle.total(), 2);
        let entry = s
            .block_containing(address)
            .unwrap()
            .attribute_of_address(address);
        let name = entry
            .and_then(crate::block::Attribute::handle_name)
            .unwrap();
        assert!(handle.name().shares_text_with(&name));
        assert_eq!(entry.unwrap().secondary().get("pod"), Some("p"));
    }

    #[test]
    fn affinities_of_a_node_include_a_block_at_address_zero() {
        let pool = Pool::new("p", PoolSpec::new("0.0.0.0/16".parse().unwrap())).unwrap();
        let mut s = Snapshot::new(IpamConfig::default(), vec![pool], &[]);
        for cidr in ["0.0.0.0/26", "0.0.0.64/26"] {
            s.insert_affinity(Affinity::new(
                "n",
                cidr.parse().unwrap(),
                AffinityState::Confirmed,
            ));
        }
        s.insert_affinity(Affinity::new(
            "m",
            "0.0.1.0/26".parse().unwrap(),
            AffinityState::Confirmed,
        ));
        let listed: Vec<String> = s.affinities_of("n").map(|a| a.cidr.to_string()).collect();
        assert_eq!(listed, ["0.0.0.0/26", "0.0.0.64/26"]);
    }

    mod indexes {
        use proptest::prelude::*;

        use super::*;
        use crate::block::ReleaseItem;

        // A block in one of the states the indexes tell apart: room or
        // not, released addresses or not, and an owner or none.
        fn block(cidr: usize, owner: usize, state: usize) -> Block {
            let cidr: BlockCidr = format!("10.0.0.{}/26", cidr * 64).parse().unwrap();
            let owner = [
                None,
                Some(BlockOwner::Host("a".into())),
                Some(BlockOwner::Host("b".into())),
                Some(BlockOwner::Virtual("a".into())),
                Some(BlockOwner::Other("x".into())),
            ][owner]
                .clone();
            let mut block = Block::new(cidr, owner, None, 1);
            let (full, cold) = (state & 1 == 1, state & 2 == 2);
            let none = Reserved::default();
            block.auto_assign(if full { 64 } else { 2 }, "h", &BTreeMap::new(), &none);
            if cold {
                let item = ReleaseItem {
                    ordinal: 0,
                    handle: None,
                    sequence_number: None,
                };
                block.release(&[item], Some(100 + state as i64)).unwrap();
            }
            block
        }

        // The indexes as the blocks alone give them (empty sets dropped).
        type ByHost = BTreeMap<String, BTreeSet<BlockCidr>>;
        fn recomputed(
            s: &Snapshot,
        ) -> (
            BTreeSet<BlockCidr>,
            BTreeMap<BlockCidr, i64>,
            ByHost,
            ByHost,
        ) {
            let mut room = BTreeSet::new();
            let mut cold = BTreeMap::new();
            let (mut room_by_host, mut cold_by_host) = (ByHost::new(), ByHost::new());
            for b in s.blocks() {
                let node = b.owner().and_then(BlockOwner::affine_name);
                if b.unallocated_len() > 0 {
                    room.insert(b.cidr());
                    if let Some(node) = node {
                        room_by_host
                            .entry(node.into())
                            .or_default()
                            .insert(b.cidr());
                    }
                }
                if let Some(at) = b.earliest_release() {
                    cold.insert(b.cidr(), at);
                    if let Some(node) = node {
                        cold_by_host
                            .entry(node.into())
                            .or_default()
                            .insert(b.cidr());
                    }
                }
            }
            (room, cold, room_by_host, cold_by_host)
        }

        fn kept(index: &HashMap<String, BTreeSet<BlockCidr>>) -> ByHost {
            index
                .iter()
                .filter(|(_, set)| !set.is_empty())
                .map(|(node, set)| (node.clone(), set.clone()))
                .collect()
        }

        proptest! {
            // Any sequence of blocks put in, replaced and removed leaves
            // the indexes as the blocks give them.
            #[test]
            fn the_indexes_follow_the_blocks(
                steps in proptest::collection::vec((0usize..3, 0usize..5, 0usize..4, 0usize..5), 1..40)
            ) {
                let pool = Pool::new("p", PoolSpec::new("10.0.0.0/24".parse().unwrap())).unwrap();
                let mut s = Snapshot::new(IpamConfig::default(), vec![pool], &[]);
                for (cidr, owner, state, action) in steps {
                    if action == 0 {
                        s.remove_block(&block(cidr, owner, state).cidr());
                    } else {
                        s.insert_block(block(cidr, owner, state));
                    }
                    let (room, cold, room_by_host, cold_by_host) = recomputed(&s);
                    prop_assert_eq!(&s.with_room, &room);
                    prop_assert_eq!(&s.cold, &cold);
                    prop_assert_eq!(kept(&s.room_by_host), room_by_host);
                    prop_assert_eq!(kept(&s.cold_by_host), cold_by_host);
                }
            }
        }
    }

    #[test]
    fn the_containing_block_is_found_whatever_its_size() {
        let pool = Pool::new("p", PoolSpec::new("10.0.0.0/16".parse().unwrap())).unwrap();
        let mut s = Snapshot::new(IpamConfig::default(), vec![pool], &[]);
        s.insert_block(Block::new("10.0.0.0/26".parse().unwrap(), None, None, 1));
        s.insert_block(Block::new("10.0.0.64/28".parse().unwrap(), None, None, 1));
        let found = |a: &str| {
            s.block_containing(a.parse().unwrap())
                .map(|b| b.cidr().to_string())
        };
        assert_eq!(found("10.0.0.0").as_deref(), Some("10.0.0.0/26"));
        assert_eq!(found("10.0.0.63").as_deref(), Some("10.0.0.0/26"));
        assert_eq!(found("10.0.0.79").as_deref(), Some("10.0.0.64/28"));
        assert_eq!(found("10.0.0.80"), None);
    }
}
