//! The allocation engine: Calico's IPAM operations, planned by ipam-core
//! and written to any [`Datastore`] with compare-and-swap.
//!
//! Safety comes from the order of writes and from compare-and-swap, never
//! from the cache:
//!
//! - assigning writes the handle before the block, so a crash in between
//!   leaves a handle that over-counts, never an address without an owner;
//!   a block write that fails takes its count back out of the handle;
//! - a new block is claimed completely (pending affinity, block created
//!   empty, affinity confirmed) before any handle counts an address in it,
//!   as in Calico, so a handle's count in a block that does not exist is
//!   stale;
//! - releasing writes the block before the handle, for the same reason; a
//!   release by handle writes every existing block the handle names, even
//!   one that shows none of its addresses: the count may belong to an
//!   assignment between its handle write and its block write, and the
//!   rewrite makes that block write fail its compare-and-swap instead of
//!   landing an address on the handle the release then deletes;
//! - every update names the revision it read; a conflict re-reads the
//!   object and plans again, a bounded number of times with jitter, as
//!   Calico retries up to 100 times (ipam.go, `datastoreRetries`).
//!
//! Requests for one node are serialised (Calico does it with a file lock per
//! host) in the node's lane, and whoever holds the lane serves every
//! auto-assign and release-by-handle queued behind it in one plan: a burst
//! of one node's requests shares its block writes. Requests for different
//! nodes never wait on each other.
//!
//! Planning reads a cache (pools, config, reservations, blocks, affinities,
//! handles seen) so that the steady state makes no read; every write names
//! the revision the plan was computed from, and an answer that would write
//! nothing (already free, a refusal, a shortfall) is given only from data
//! read just now.
//!
//! # Pools
//!
//! Calico refuses a pool that overlaps another by listing the pools, then
//! creating (clientv3/ippool.go, validateAndSetDefaults): two creates that
//! list before either creates both succeed. No datastore here writes two
//! objects atomically (Kubernetes cannot), so [`Ipam::create_pool`] makes
//! the check hold by its order of writes instead:
//!
//! 1. list the pools and refuse the request if one overlaps;
//! 2. create the pool disabled: nothing is ever assigned from a disabled
//!    pool, so while it is being decided it hands out nothing;
//! 3. list again: an overlapping pool seen now was created before this
//!    look, and its own look (after its creation) may have missed ours, so
//!    ours yields: it is deleted, and after a pause the request starts
//!    again at 1, where a pool that stayed refuses it;
//! 4. otherwise write the spec asked for, enabling the pool.
//!
//! Of two overlapping creates, the later-created always sees the earlier
//! one at 3, unless that one already yielded, so at most one gets past 3;
//! both may yield, and then their retries, spread by the pauses, let one
//! through. So among this project's processes (every server, ipamctl, the
//! CNI plugin in direct mode) on any datastore, no two overlapping pools
//! are ever enabled, even for a moment, and a request is refused only for
//! a pool that exists. A pool's update cannot change its CIDR or block
//! size, and names the revision it read, so it brings no overlap.
//!
//! What it cannot guarantee: a writer that does not follow it, calicoctl or
//! kubectl on the Kubernetes and etcd datastores, checks by Calico's
//! list-then-create or not at all; a pool it creates after our step 3 is
//! not seen, and `check` reports the overlap (`poolsOverlap`). A process
//! killed between steps 2 and 4 leaves its pool disabled, where an operator
//! sees it. Listing must be linearizable, which every backend's list is (an
//! etcd range read, a Kubernetes list without a resourceVersion, a redb
//! read transaction, the memory map).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipam_core::block::{Attribute, BlockOwner};
use ipam_core::plan::{Assignments, ClaimPlan};
use ipam_core::planner::addresses_of_handle;
use ipam_core::pool::check_no_overlap;
use ipam_core::HandleId;
use ipam_core::{
    AffinityKey, AffinityState, AssignIpRequest, AutoAssignRequest, Block, BlockCidr, Handle,
    Holding, IpamConfig, Now, Plan, Pool, ReleaseRequest, Snapshot, Write,
};
use ipnet::IpNet;

use crate::cache::Cache;
use crate::datastore::Datastore;
use crate::error::StoreError;
use crate::model::{Key, Kind, ListQuery, Revision, Value, Versioned};

/// How hard the engine tries and how long it trusts what it read.
#[derive(Debug, Clone)]
pub struct IpamOptions {
    /// Attempts per operation before giving up on conflicts (Calico: 100).
    pub max_attempts: u32,
    /// How long listed pools, config, reservations, blocks and affinities
    /// are used before they are listed again. Writes are checked by
    /// compare-and-swap whatever this is; it bounds how long a change made
    /// by another process (a new pool, a disabled pool) goes unseen.
    pub cache_ttl: Duration,
}

impl Default for IpamOptions {
    fn default() -> Self {
        IpamOptions {
            max_attempts: 100,
            cache_ttl: Duration::from_secs(10),
        }
    }
}

/// Why an engine operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// The request cannot be satisfied as asked (bad pool, address in use,
    /// block limit, ...): ipam-core's refusal, unchanged.
    #[error(transparent)]
    Refused(#[from] ipam_core::Error),
    /// The datastore failed in a way retrying does not fix, or is down.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Conflicts kept coming until the attempts ran out.
    #[error("{operation}: gave up after {attempts} attempts; last datastore error: {last}")]
    RetriesExhausted {
        /// What was being done.
        operation: &'static str,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: StoreError,
    },
    /// An all-or-nothing auto-assign found fewer free addresses than asked
    /// for; what it had taken was given back.
    #[error("asked for {ipv4_asked} IPv4 and {ipv6_asked} IPv6 addresses, found {ipv4_found} and {ipv6_found}: {reasons}")]
    Exhausted {
        /// IPv4 addresses asked for.
        ipv4_asked: u32,
        /// IPv4 addresses there were.
        ipv4_found: u32,
        /// IPv6 addresses asked for.
        ipv6_asked: u32,
        /// IPv6 addresses there were.
        ipv6_found: u32,
        /// Why, per pool or block (the planner's shortfalls).
        reasons: String,
    },
    /// A pool update tried to change what Calico never lets change.
    #[error(
        "pool {pool}: {field} cannot be changed (from {from} to {to}); create a new pool instead"
    )]
    PoolFieldImmutable {
        /// The pool.
        pool: String,
        /// `cidr` or `blockSize`.
        field: &'static str,
        /// The stored value.
        from: String,
        /// The requested value.
        to: String,
    },
}

/// What an auto-assign got.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AutoAssigned {
    /// IPv4 addresses, each with its block's prefix length.
    pub ipv4: Assignments,
    /// IPv6 addresses.
    pub ipv6: Assignments,
    /// True when the handle already held addresses and nothing new was
    /// allocated (a retried request).
    pub existing: bool,
}

/// What a release did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Released {
    /// Addresses released: freed, or with an IP cooldown marked released.
    pub released: Vec<IpAddr>,
    /// Addresses that were not held: free, or already released (not an
    /// error, as in Calico).
    pub already_free: Vec<IpAddr>,
}

/// Conflicts met and retries made, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EngineStats {
    /// Compare-and-swap failures (conflict, already exists, vanished).
    pub conflicts: u64,
    /// Attempts after the first, of any operation.
    pub retries: u64,
}

/// The IPAM engine over one datastore. Share it (it is `Sync`): concurrent
/// requests for different nodes proceed in parallel.
pub struct Ipam<S: Datastore + ?Sized> {
    store: Arc<S>,
    options: IpamOptions,
    cache: Mutex<Cache>,
    lanes: Mutex<HashMap<String, Arc<Lane>>>,
    conflicts: AtomicU64,
    retries: AtomicU64,
}

// The writes of one plan with what they were planned against: the
// revision each update or delete must find, and how each block write
// changes each handle's count. Captured under the same lock as the
// planning, so that no write carries a newer revision than the content it
// was computed from (which would let it overwrite a change it never saw).
struct Prepared {
    steps: Vec<Step>,
    expected: HashMap<Key, Revision>,
}

struct Step {
    write: Write,
    handle_deltas: BTreeMap<String, i64>,
}

// Handle writes are left out: the engine derives them from the block
// writes' deltas, so that a plan interrupted half way can be finished or
// undone exactly. Their revisions are kept, for the handle's deletion.
fn prepare(cache: &Cache, plan: Plan) -> Prepared {
    let mut expected = HashMap::new();
    let mut steps = Vec::with_capacity(plan.writes.len());
    for write in plan.writes {
        let key = write_key(&write);
        if let Some(revision) = cache.revision(&key) {
            expected.entry(key).or_insert_with(|| revision.clone());
        }
        if is_handle_write(&write) {
            continue;
        }
        let handle_deltas = match &write {
            Write::CreateBlock(b) | Write::UpdateBlock(b) => {
                handle_deltas(cache.snapshot.block(&b.cidr()), Some(b))
            }
            Write::DeleteBlock(cidr) => handle_deltas(cache.snapshot.block(cidr), None),
            _ => BTreeMap::new(),
        };
        steps.push(Step {
            write,
            handle_deltas,
        });
    }
    Prepared { steps, expected }
}

/// One node's requests: whoever holds `lock` works for the node, and first
/// serves every auto-assign waiting in `waiting` together.
#[derive(Default)]
struct Lane {
    lock: Arc<tokio::sync::Mutex<()>>,
    waiting: Mutex<Vec<Job>>,
}

type Reply<T> = tokio::sync::oneshot::Sender<Result<T, IpamError>>;

/// A request waiting in a node's lane.
enum Job {
    Assign(AutoAssignRequest, Reply<AutoAssigned>),
    Release(String, Reply<Vec<IpAddr>>),
}

impl Job {
    /// The handle whose state the job changes.
    fn handle(&self) -> &str {
        match self {
            Job::Assign(request, _) => &request.handle,
            Job::Release(handle, _) => handle,
        }
    }
}

/// Most auto-assigns served in one go: enough to share a block write among
/// a burst, few enough that the first waiter is not kept long.
const MAX_BATCH: usize = 64;

// An assignment plan stopped part way: the blocks already written hold
// their addresses; everything after was undone.
struct Interrupted {
    written_blocks: Vec<BlockCidr>,
    cause: StoreError,
}

// Claiming stopped: a write failed (the claim that lost its block took its
// pending affinity back), or the store failed past retrying.
enum ClaimFailure {
    Store(StoreError),
    Fatal(IpamError),
}

enum AssignFailure {
    Interrupted(Interrupted),
    // The handle already holds addresses: a repeated request.
    HandleHeld,
    Fatal(IpamError),
}

impl AssignFailure {
    fn describe(&self) -> String {
        match self {
            AssignFailure::Interrupted(i) => i.cause.to_string(),
            AssignFailure::HandleHeld => "the handle already holds addresses".to_string(),
            AssignFailure::Fatal(e) => e.to_string(),
        }
    }
}

impl From<IpamError> for AssignFailure {
    fn from(e: IpamError) -> Self {
        AssignFailure::Fatal(e)
    }
}

fn now() -> Now {
    let unix_nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    Now { unix_nanos }
}

// A failure that re-reading and planning again can get past.
fn is_cas_failure(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Conflict { .. }
            | StoreError::NotFound { .. }
            | StoreError::AlreadyExists { .. }
    )
}

fn write_key(write: &Write) -> Key {
    match write {
        Write::CreateAffinity(a) | Write::UpdateAffinity(a) => Key::Affinity(a.key()),
        Write::DeleteAffinity(key) => Key::Affinity(key.clone()),
        Write::CreateBlock(b) | Write::UpdateBlock(b) => Key::Block(b.cidr()),
        Write::DeleteBlock(cidr) => Key::Block(*cidr),
        Write::CreateHandle(h) | Write::UpdateHandle(h) => Key::Handle(h.id().to_string()),
        Write::DeleteHandle(id) => Key::Handle(id.clone()),
    }
}

fn is_handle_write(write: &Write) -> bool {
    matches!(
        write,
        Write::CreateHandle(_) | Write::UpdateHandle(_) | Write::DeleteHandle(_)
    )
}

fn block_of_write(write: &Write) -> Option<BlockCidr> {
    match write {
        Write::CreateBlock(b) | Write::UpdateBlock(b) => Some(b.cidr()),
        Write::DeleteBlock(cidr) => Some(*cidr),
        _ => None,
    }
}

// How many ordinals each handle holds in a block.
fn handle_counts(block: Option<&Block>) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for (_, attribute) in block.into_iter().flat_map(Block::allocations) {
        if let Some(handle) = attribute.handle() {
            *counts.entry(handle.to_string()).or_insert(0) += 1;
        }
    }
    counts
}

// Per handle, how its count in a block changes from `before` to `after`.
fn handle_deltas(before: Option<&Block>, after: Option<&Block>) -> BTreeMap<String, i64> {
    let mut deltas = handle_counts(after);
    for (handle, count) in handle_counts(before) {
        *deltas.entry(handle).or_insert(0) -= count;
    }
    deltas.retain(|_, d| *d != 0);
    deltas
}

fn in_blocks(addresses: &[IpNet], blocks: &[BlockCidr]) -> Vec<IpNet> {
    addresses
        .iter()
        .filter(|a| blocks.iter().any(|b| b.net().contains(&a.addr())))
        .copied()
        .collect()
}

impl<S: Datastore + ?Sized> Ipam<S> {
    /// An engine with Calico's retry budget and a 10 s cache.
    pub fn new(store: Arc<S>) -> Ipam<S> {
        Ipam::with_options(store, IpamOptions::default())
    }

    /// An engine with explicit options.
    pub fn with_options(store: Arc<S>, options: IpamOptions) -> Ipam<S> {
        Ipam {
            store,
            options,
            cache: Mutex::new(Cache::empty()),
            lanes: Mutex::new(HashMap::new()),
            conflicts: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        }
    }

    /// The datastore underneath.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// Conflicts and retries so far.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            conflicts: self.conflicts.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        // Cache updates are single inserts or removes; a panic elsewhere
        // cannot leave it half-changed, and CAS catches any staleness.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lane(&self, node: &str) -> Arc<Lane> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        lanes.entry(node.to_string()).or_default().clone()
    }

    async fn lock_node(&self, node: &str) -> tokio::sync::OwnedMutexGuard<()> {
        self.lane(node).lock.clone().lock_owned().await
    }

    // Sleeps before attempt `attempt` (from 1): nothing at first, then a
    // random pause growing to 100 ms, so that racing writers spread out.
    async fn back_off(&self, attempt: u32) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        if attempt < 2 {
            return;
        }
        let ceiling_ms = (1u64 << attempt.min(7)).min(100);
        let pause = fastrand::u64(0..=ceiling_ms * 1000);
        tokio::time::sleep(Duration::from_micros(pause)).await;
    }

    fn exhausted(&self, operation: &'static str, last: StoreError) -> IpamError {
        IpamError::RetriesExhausted {
            operation,
            attempts: self.options.max_attempts,
            last,
        }
    }

    // ----- reading -------------------------------------------------------

    /// Lists pools, config, reservations, blocks and affinities again.
    async fn refresh(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        let config = match self.store.get(&Key::Config).await {
            Ok(config) => Some(config),
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let mut lists = Vec::new();
        for kind in [Kind::Pool, Kind::Reservation, Kind::Block, Kind::Affinity] {
            lists.push(self.store.list(&ListQuery::All(kind)).await?);
        }
        let mut cache = self.cache();
        let fresh = Cache::rebuild(&cache, config, lists, started);
        *cache = fresh;
        Ok(())
    }

    async fn ensure_fresh(&self) -> Result<(), StoreError> {
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
    async fn reload(&self, key: &Key) -> Result<(), StoreError> {
        if matches!(key, Key::Pool(_) | Key::Reservation(_) | Key::Config) {
            return self.refresh().await;
        }
        match self.store.get(key).await {
            Ok(Versioned { value, revision }) => self.cache().put(value, revision),
            Err(StoreError::NotFound { .. }) => self.cache().remove(key),
            Err(e) => return Err(e),
        }
        Ok(())
    }

    // Re-reads what a compare-and-swap failure points at, so that the next
    // attempt plans on current data. Anything else ends the operation: an
    // unreachable store is not retried here, because every call to it
    // already waited its full timeout; the caller gets the retryable error
    // (the CNI plugin's "try again later") at once instead of after a
    // hundred timeouts.
    async fn recover(&self, cause: &StoreError) -> Result<(), IpamError> {
        let key = match cause {
            StoreError::Conflict { key }
            | StoreError::NotFound { key }
            | StoreError::AlreadyExists { key } => key,
            StoreError::Unavailable { .. } | StoreError::Invalid { .. } => {
                return Err(IpamError::Store(cause.clone()))
            }
        };
        self.conflicts.fetch_add(1, Ordering::Relaxed);
        self.reload(key).await.map_err(IpamError::Store)
    }

    // ----- writing -------------------------------------------------------

    /// Performs one write, expecting the revision recorded in `expected`
    /// (captured when the write was planned), and records the result there
    /// and in the cache.
    async fn apply(
        &self,
        write: Write,
        expected: &mut HashMap<Key, Revision>,
    ) -> Result<(), StoreError> {
        let key = write_key(&write);
        let creating = matches!(
            write,
            Write::CreateAffinity(_) | Write::CreateBlock(_) | Write::CreateHandle(_)
        );
        // Never read, so never checked: treat as changed.
        let revision = || {
            expected
                .get(&key)
                .cloned()
                .ok_or_else(|| StoreError::Conflict { key: key.clone() })
        };
        let value = match write {
            Write::CreateAffinity(a) | Write::UpdateAffinity(a) => Value::Affinity(a),
            Write::CreateBlock(b) | Write::UpdateBlock(b) => Value::Block(b),
            Write::CreateHandle(h) | Write::UpdateHandle(h) => Value::Handle(h),
            Write::DeleteAffinity(_) | Write::DeleteBlock(_) | Write::DeleteHandle(_) => {
                self.store.delete(&key, &revision()?).await?;
                expected.remove(&key);
                self.cache().remove(&key);
                return Ok(());
            }
        };
        let new_revision = if creating {
            self.store.create(&value).await?
        } else {
            self.store.update(&value, &revision()?).await?
        };
        expected.insert(key, new_revision.clone());
        self.cache().put(value, new_revision);
        Ok(())
    }

    /// Changes a handle's per-block counts, creating it when it gains its
    /// first addresses and deleting it when it holds none, retrying on
    /// conflicts with a fresh read. With `fresh`, a handle created meanwhile
    /// by someone else and holding addresses is reported, not added to:
    /// that is a repeated request.
    async fn adjust_handle(
        &self,
        id: &str,
        changes: &[(BlockCidr, i64)],
        fresh: bool,
    ) -> Result<(), AssignFailure> {
        let handle_key = Key::Handle(id.to_string());
        let losing = changes.iter().any(|&(_, delta)| delta < 0);
        if losing && self.cache().handle(id).is_none() {
            // Someone else created it: read it, or its count would stay.
            self.reload(&handle_key)
                .await
                .map_err(|e| AssignFailure::Fatal(e.into()))?;
        }
        let mut last = None;
        for attempt in 0..self.options.max_attempts {
            if attempt > 0 {
                self.back_off(attempt).await;
            }
            let (current, mut expected) =
                self.cached_with_revision(handle_key.clone(), |c| c.handle(id).cloned());
            let existed = current.is_some();
            let mut handle = current.unwrap_or_else(|| Handle::new(id));
            for &(cidr, delta) in changes {
                if delta > 0 {
                    handle.increment(cidr, delta as u32);
                } else {
                    // Never below zero: the blocks, not the handle, are the
                    // truth, and a handle that over-counts is what a crash
                    // between the two writes leaves behind.
                    let take = (delta.unsigned_abs() as u32).min(handle.count_in(&cidr));
                    handle
                        .decrement(cidr, take)
                        .map_err(|e| AssignFailure::Fatal(e.into()))?;
                }
            }
            let write = match (existed, handle.is_empty()) {
                (true, true) => Write::DeleteHandle(id.to_string()),
                (true, false) => Write::UpdateHandle(handle),
                (false, false) => Write::CreateHandle(handle),
                (false, true) => return Ok(()),
            };
            match self.apply(write, &mut expected).await {
                Ok(()) => return Ok(()),
                Err(e) if is_cas_failure(&e) => {
                    self.recover(&e).await?;
                    let held = self.cache().handle(id).is_some_and(|h| !h.is_empty());
                    if fresh && !existed && held {
                        return Err(AssignFailure::HandleHeld);
                    }
                    last = Some(e);
                }
                Err(e) => return Err(AssignFailure::Fatal(e.into())),
            }
        }
        Err(AssignFailure::Fatal(self.exhausted(
            "update handle",
            last.expect("at least one attempt"),
        )))
    }

    /// An object from the cache with its revision, read under one lock so
    /// that the two belong together.
    fn cached_with_revision<T>(
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

    /// Writes an assignment plan for one or more handles: the claims of new
    /// blocks first (see [`Ipam::write_claims`]), then the handles (all at
    /// once, so that a store that groups commits makes them one), then the
    /// blocks. Stops at the first failed write and undoes what would
    /// otherwise be left dangling.
    async fn run_assignment(
        &self,
        handles: &[&str],
        prepared: Prepared,
        fresh_handles: bool,
    ) -> Result<(), AssignFailure> {
        let Prepared {
            steps,
            mut expected,
        } = prepared;
        // Everything before the first write that gives a handle addresses
        // is claiming: reclaims of other nodes' empty blocks, and each new
        // block's pending affinity, empty block and confirmation.
        let split = steps
            .iter()
            .position(|step| !step.handle_deltas.is_empty())
            .unwrap_or(steps.len());
        let mut blocks = steps;
        let claims: Vec<Write> = blocks.drain(..split).map(|step| step.write).collect();
        // Per block written, how many addresses each handle gains in it.
        let gains: Vec<(BlockCidr, BTreeMap<String, i64>)> = blocks
            .iter()
            .map(|step| {
                let cidr = block_of_write(&step.write).expect("a block write");
                (cidr, step.handle_deltas.clone())
            })
            .collect();
        let gains_of = |handle: &str, range: &[(BlockCidr, BTreeMap<String, i64>)], sign: i64| {
            range
                .iter()
                .filter_map(|(cidr, deltas)| {
                    deltas
                        .get(handle)
                        .filter(|d| **d != 0)
                        .map(|d| (*cidr, sign * d))
                })
                .collect::<Vec<(BlockCidr, i64)>>()
        };

        match self.write_claims(claims, &mut expected).await {
            Ok(()) => {}
            Err(ClaimFailure::Store(cause)) => {
                return Err(AssignFailure::Interrupted(Interrupted {
                    written_blocks: Vec::new(),
                    cause,
                }))
            }
            Err(ClaimFailure::Fatal(e)) => return Err(AssignFailure::Fatal(e)),
        }

        // The handles, before any block names them. Claimed blocks stay
        // claimed whatever happens from here, as in Calico.
        let results = futures_util::future::join_all(handles.iter().map(|handle| {
            let changes = gains_of(handle, &gains, 1);
            async move { self.adjust_handle(handle, &changes, fresh_handles).await }
        }))
        .await;
        if let Some(failed) = results.iter().position(Result::is_err) {
            for (handle, result) in handles.iter().zip(&results) {
                if result.is_ok() {
                    let undo = gains_of(handle, &gains, -1);
                    if let Err(e) = self.adjust_handle(handle, &undo, false).await {
                        tracing::warn!(handle, error = ?e.describe(), "a handle keeps a count it does not hold");
                    }
                }
            }
            return Err(results
                .into_iter()
                .nth(failed)
                .and_then(Result::err)
                .expect("a failed result"));
        }

        for (index, step) in blocks.into_iter().enumerate() {
            if let Err(cause) = self.apply(step.write, &mut expected).await {
                let unwritten = &gains[index..];
                let mut undone = Ok(());
                for handle in handles {
                    let undo = gains_of(handle, unwritten, -1);
                    let result = self.adjust_handle(handle, &undo, false).await;
                    undone = undone.and(result);
                }
                undone?;
                return Err(AssignFailure::Interrupted(Interrupted {
                    written_blocks: gains[..index].iter().map(|(c, _)| *c).collect(),
                    cause,
                }));
            }
        }
        Ok(())
    }

    /// Writes the claiming part of a plan in order: reclaims of other
    /// nodes' blocks, then per new block its pending affinity, the block
    /// created empty and the affinity confirmed (Calico's getPendingAffinity
    /// then claimAffineBlock, ipam_block_reader_writer.go). Writes that
    /// claim nothing (releasing an affinity) pass through unchanged.
    ///
    /// Once a block is created the claim stands: a failed confirmation is
    /// retried on its own. A claim that loses its block (the create fails)
    /// takes its pending affinity back, as claimAffineBlock does when
    /// another host beat it to the block, so that no lost claim leaves an
    /// affinity pending for good.
    async fn write_claims(
        &self,
        writes: Vec<Write>,
        expected: &mut HashMap<Key, Revision>,
    ) -> Result<(), ClaimFailure> {
        // Our pending affinity whose block is not created yet.
        let mut awaiting: Option<AffinityKey> = None;
        for write in writes {
            let (pending, confirming) = match &write {
                Write::CreateAffinity(a) | Write::UpdateAffinity(a) => (
                    (a.state == AffinityState::Pending).then(|| a.key()),
                    (a.state == AffinityState::Confirmed).then(|| a.key()),
                ),
                _ => (None, None),
            };
            let creates_block = matches!(write, Write::CreateBlock(_));
            match self.apply(write, expected).await {
                Ok(()) => {
                    if pending.is_some() {
                        awaiting = pending;
                    } else if creates_block {
                        awaiting = None;
                    }
                }
                Err(cause) => match confirming {
                    Some(key) => {
                        self.recover(&cause).await.map_err(ClaimFailure::Fatal)?;
                        self.confirm_affinity(key)
                            .await
                            .map_err(ClaimFailure::Fatal)?;
                    }
                    None => {
                        if let Some(key) = awaiting {
                            self.abandon_claim(key, expected).await;
                        }
                        return Err(ClaimFailure::Store(cause));
                    }
                },
            }
        }
        Ok(())
    }

    /// Moves a node's affinity to confirmed, re-reading on conflicts.
    async fn confirm_affinity(&self, key: AffinityKey) -> Result<(), IpamError> {
        let mut last = None;
        for attempt in 0..self.options.max_attempts {
            if attempt > 0 {
                self.back_off(attempt).await;
            }
            let (affinity, mut expected) = self
                .cached_with_revision(Key::Affinity(key.clone()), |c| {
                    c.snapshot.affinity(&key).cloned()
                });
            let Some(mut affinity) = affinity else {
                // Deleted under us (the node is being removed): nothing to
                // confirm, and the block keeps its addresses.
                return Ok(());
            };
            if affinity.state == AffinityState::Confirmed {
                return Ok(());
            }
            affinity.state = AffinityState::Confirmed;
            match self
                .apply(Write::UpdateAffinity(affinity), &mut expected)
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) if is_cas_failure(&e) => {
                    self.recover(&e).await?;
                    last = Some(e);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(self.exhausted("confirm affinity", last.expect("at least one attempt")))
    }

    /// Takes back the pending affinity of a claim whose block could not be
    /// created. The block is read first: when another process of the same
    /// node created it, the claim is that process's and the affinity is
    /// confirmed instead, as claimAffineBlock does for "another process on
    /// this host". Best effort: an affinity left pending counts as absent,
    /// the node's next claim of the block reuses it, and `check` reports it
    /// once it is older than a claim can take.
    async fn abandon_claim(&self, key: AffinityKey, expected: &HashMap<Key, Revision>) {
        let ours = match self.reload(&Key::Block(key.cidr)).await {
            Ok(()) => self
                .cache()
                .snapshot
                .block(&key.cidr)
                .and_then(Block::owner)
                .is_some_and(|owner| owner.is_host(&key.node)),
            Err(e) => {
                tracing::warn!(block = %key.cidr, error = %e, "left a pending affinity behind");
                return;
            }
        };
        if ours {
            if let Err(e) = self.confirm_affinity(key.clone()).await {
                tracing::warn!(node = key.node, block = %key.cidr, error = %e, "left a pending affinity behind");
            }
            return;
        }
        let key = Key::Affinity(key);
        if let Some(revision) = expected.get(&key) {
            match self.store.delete(&key, revision).await {
                Ok(()) | Err(StoreError::NotFound { .. }) => self.cache().remove(&key),
                // Rewritten since (another claim of the node reuses it):
                // no longer ours to take back.
                Err(e) => tracing::warn!(%key, error = %e, "left a pending affinity behind"),
            }
        }
    }

    // ----- assignment ----------------------------------------------------

    /// Assigns addresses to a handle on a node (Calico's AutoAssign).
    /// Idempotent: when the handle already holds addresses, those are
    /// returned and nothing new is allocated. Calico 3.32 does that only
    /// for KubeVirt handles (ipam.go, `MaxAllocToHandlePerIPVersion`); a
    /// retried CNI ADD there gets a second address, which leaks until the
    /// pod goes. Running short is not an error; see
    /// [`Assignments::shortfall`].
    ///
    /// Concurrent requests of one node are served together: they share the
    /// node's block writes (one write for a burst that lands in one block),
    /// while requests of different nodes never wait on each other.
    pub async fn auto_assign(
        &self,
        request: &AutoAssignRequest,
    ) -> Result<AutoAssigned, IpamError> {
        self.through_lane(&request.node, |reply| Job::Assign(request.clone(), reply))
            .await
    }

    /// Queues a job in a node's lane and waits for its answer. Whoever holds
    /// the lane serves everything waiting, so a burst of one node's
    /// requests is served together; if that server is cancelled before it
    /// answers, the job is queued again (assigning and releasing by handle
    /// are both idempotent).
    async fn through_lane<T>(
        &self,
        node: &str,
        job: impl Fn(Reply<T>) -> Job,
    ) -> Result<T, IpamError> {
        let lane = self.lane(node);
        loop {
            let (reply, mut answer) = tokio::sync::oneshot::channel();
            lane.waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(job(reply));
            let guard = tokio::select! {
                biased;
                served = &mut answer => match served {
                    Ok(result) => return result,
                    Err(_) => continue,
                },
                guard = lane.lock.lock() => guard,
            };
            match answer.try_recv() {
                Ok(result) => return result,
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => continue,
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
            }
            // Nobody took ours (only the lane's holder takes, and that is
            // us now): serve it and whatever else is waiting.
            let batch: Vec<Job> = {
                let mut waiting = lane.waiting.lock().unwrap_or_else(|e| e.into_inner());
                let take = waiting.len().min(MAX_BATCH);
                waiting.drain(..take).collect()
            };
            self.serve(batch).await;
            drop(guard);
            match answer.await {
                Ok(result) => return result,
                Err(_) => continue,
            }
        }
    }

    /// Serves the jobs waiting in a node's lane: releases first (they free
    /// addresses the assignments may use), each kind together when they
    /// can share writes, else one by one.
    async fn serve(&self, batch: Vec<Job>) {
        let mut seen = std::collections::HashSet::new();
        let mut releases = Vec::new();
        let mut assigns = Vec::new();
        let mut later = Vec::new();
        for job in batch {
            // One plan may change a handle once: a second job on the same
            // handle waits for the next round.
            if !seen.insert(job.handle().to_string()) {
                later.push(job);
                continue;
            }
            match job {
                Job::Release(handle, reply) => releases.push((handle, reply)),
                Job::Assign(request, reply) => assigns.push((request, reply)),
            }
        }
        let mut unfinished: Vec<(String, Reply<Vec<IpAddr>>, Vec<IpAddr>)> = if releases.len() > 1 {
            self.release_together(releases).await
        } else {
            releases
                .into_iter()
                .map(|(h, r)| (h, r, Vec::new()))
                .collect()
        };
        for (handle, reply, mut done) in unfinished.drain(..) {
            let result = self.release_by_handle_now(&handle).await.map(|rest| {
                done.extend(rest);
                done
            });
            let _ = reply.send(result);
        }
        if assigns.len() > 1 {
            assigns = self.assign_together(assigns).await;
        }
        for (request, reply) in assigns {
            let _ = reply.send(self.auto_assign_one(&request).await);
        }
        for job in later {
            match job {
                Job::Release(handle, reply) => {
                    let _ = reply.send(self.release_by_handle_now(&handle).await);
                }
                Job::Assign(request, reply) => {
                    let _ = reply.send(self.auto_assign_one(&request).await);
                }
            }
        }
    }

    /// Releases a burst of one node's handles in one plan: one write per
    /// block and one deletion per handle (issued together). Returns the
    /// handles it did not finish, for one-by-one service: those whose
    /// addresses the cache does not show in full, and all of them when a
    /// write fails.
    async fn release_together(
        &self,
        jobs: Vec<(String, Reply<Vec<IpAddr>>)>,
    ) -> Vec<(String, Reply<Vec<IpAddr>>, Vec<IpAddr>)> {
        let untouched = |jobs: Vec<(String, Reply<Vec<IpAddr>>)>| {
            jobs.into_iter()
                .map(|(h, r)| (h, r, Vec::new()))
                .collect::<Vec<_>>()
        };
        let (known, unknown): (Vec<_>, Vec<_>) = {
            let cache = self.cache();
            jobs.into_iter()
                .partition(|(handle, _)| cache.knows_all_of(handle))
        };
        if known.len() < 2 {
            return untouched(known.into_iter().chain(unknown).collect());
        }
        let (owned, planned) = {
            let cache = self.cache();
            let owned: Vec<Vec<IpAddr>> = known
                .iter()
                .map(|(handle, _)| {
                    addresses_of_handle(&cache.snapshot, handle)
                        .iter()
                        .map(IpNet::addr)
                        .collect()
                })
                .collect();
            let requests: Vec<ReleaseRequest> = known
                .iter()
                .zip(&owned)
                .flat_map(|((handle, _), addresses)| {
                    addresses.iter().map(|a| ReleaseRequest {
                        address: *a,
                        handle: Some(HandleId::new(handle.clone())),
                        sequence_number: None,
                    })
                })
                .collect();
            let planned = cache
                .snapshot
                .plan_release(&requests, now())
                .map(|mut planned| {
                    let prepared = prepare(&cache, std::mem::take(&mut planned.plan));
                    (planned, prepared)
                });
            (owned, planned)
        };
        let Ok((planned, prepared)) = planned else {
            return untouched(known.into_iter().chain(unknown).collect());
        };
        let (deltas, written, failure) = self.write_release_blocks(prepared).await;
        // Whatever was written is released: the handles must follow.
        let handles_done = self.apply_handle_deltas(deltas).await;
        let finished = failure.is_none() && handles_done.is_ok();
        let mut unfinished = untouched(unknown);
        for ((handle, reply), addresses) in known.into_iter().zip(owned) {
            let mine: Vec<IpAddr> = addresses
                .into_iter()
                .filter(|a| {
                    planned.released.contains(a) && written.iter().any(|b| b.net().contains(a))
                })
                .collect();
            // The one-by-one path re-reads and finishes what is left: a
            // failed write, or a handle holding more than this engine knew.
            if !finished || self.cache().handle(&handle).is_some() {
                unfinished.push((handle, reply, mine));
            } else {
                let _ = reply.send(Ok(mine));
            }
        }
        unfinished
    }

    /// Assigns a burst of one node's fresh requests in one plan: one write
    /// per handle (issued together) and one block write. Returns the
    /// requests it did not serve, for one-by-one service: all of them when
    /// the burst does not fit in one block or any write fails.
    async fn assign_together(
        &self,
        batch: Vec<(AutoAssignRequest, Reply<AutoAssigned>)>,
    ) -> Vec<(AutoAssignRequest, Reply<AutoAssigned>)> {
        if self.ensure_fresh().await.is_err() {
            return batch;
        }
        // A handle known to hold addresses is a repeated request.
        let (together, alone): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|(request, _)| self.cache().handle(&request.handle).is_none());
        if together.len() < 2 {
            return together.into_iter().chain(alone).collect();
        }
        let requests: Vec<AutoAssignRequest> = together
            .iter()
            .map(|(request, _)| request.clone())
            .collect();
        let (outcomes, prepared) = {
            let cache = self.cache();
            let planned = cache.snapshot.plan_auto_assign_batch(&requests, now());
            let prepared = prepare(&cache, planned.plan);
            (planned.outcomes, prepared)
        };
        let clean = outcomes.iter().all(|o| {
            o.as_ref()
                .is_ok_and(|(v4, v6)| v4.shortfall.is_empty() && v6.shortfall.is_empty())
        });
        // Claims of new blocks come before and write no address.
        let block_writes = prepared
            .steps
            .iter()
            .filter(|s| !s.handle_deltas.is_empty())
            .count();
        if !clean || block_writes != 1 {
            return together.into_iter().chain(alone).collect();
        }
        let handles: Vec<&str> = requests.iter().map(|r| r.handle.as_str()).collect();
        if self.run_assignment(&handles, prepared, true).await.is_err() {
            // Undone; each request gets the full single-request treatment.
            return together.into_iter().chain(alone).collect();
        }
        for ((_, reply), outcome) in together.into_iter().zip(outcomes) {
            let (ipv4, ipv6) = outcome.expect("checked clean above");
            let _ = reply.send(Ok(AutoAssigned {
                ipv4,
                ipv6,
                existing: false,
            }));
        }
        alone
    }

    async fn auto_assign_one(
        &self,
        request: &AutoAssignRequest,
    ) -> Result<AutoAssigned, IpamError> {
        self.ensure_fresh().await?;
        let handle_id = request.handle.as_str();
        let cached_holds = self
            .cache()
            .handle(handle_id)
            .is_some_and(|h| !h.is_empty());
        if cached_holds {
            if let Some(existing) = self.existing_assignment(request).await? {
                return Ok(existing);
            }
        }
        let mut got = AutoAssigned {
            ipv4: Assignments {
                requested: request.ipv4,
                ..Assignments::default()
            },
            ipv6: Assignments {
                requested: request.ipv6,
                ..Assignments::default()
            },
            existing: false,
        };
        let mut remaining = request.clone();
        let mut verified = false;
        let mut last = None;
        for attempt in 0..self.options.max_attempts {
            if attempt > 0 {
                self.back_off(attempt).await;
            }
            let mut planned = self.plan_auto_assign(&remaining);
            // A refusal or a shortfall writes nothing, so no
            // compare-and-swap would catch a stale cache (a block freed or
            // a pool added by another process): it is given only after
            // planning again on everything read just now.
            let unwritten = match &planned {
                Ok((_, v4, v6)) => !v4.shortfall.is_empty() || !v6.shortfall.is_empty(),
                Err(_) => true,
            };
            if unwritten && !verified {
                verified = true;
                self.refresh().await?;
                planned = self.plan_auto_assign(&remaining);
            }
            let (prepared, planned_v4, planned_v6) = match planned {
                Ok(planned) => planned,
                Err(refused) => {
                    self.give_back(handle_id, &got).await;
                    return Err(refused.into());
                }
            };
            let fresh = got.ipv4.addresses.is_empty() && got.ipv6.addresses.is_empty();
            match self.run_assignment(&[handle_id], prepared, fresh).await {
                Ok(()) => {
                    got.ipv4.addresses.extend(planned_v4.addresses);
                    got.ipv6.addresses.extend(planned_v6.addresses);
                    got.ipv4.shortfall = planned_v4.shortfall;
                    got.ipv6.shortfall = planned_v6.shortfall;
                    return Ok(got);
                }
                Err(AssignFailure::HandleHeld) => {
                    if let Some(existing) = self.existing_assignment(request).await? {
                        return Ok(existing);
                    }
                    // The handle exists but holds nothing: plan again with it.
                }
                Err(AssignFailure::Interrupted(Interrupted {
                    written_blocks,
                    cause,
                })) => {
                    let v4 = in_blocks(&planned_v4.addresses, &written_blocks);
                    let v6 = in_blocks(&planned_v6.addresses, &written_blocks);
                    remaining.ipv4 -= v4.len() as u32;
                    remaining.ipv6 -= v6.len() as u32;
                    got.ipv4.addresses.extend(v4);
                    got.ipv6.addresses.extend(v6);
                    if let Err(e) = self.recover(&cause).await {
                        self.give_back(handle_id, &got).await;
                        return Err(e);
                    }
                    last = Some(cause);
                }
                Err(AssignFailure::Fatal(e)) => {
                    self.give_back(handle_id, &got).await;
                    return Err(e);
                }
            }
        }
        self.give_back(handle_id, &got).await;
        Err(self.exhausted(
            "auto-assign",
            last.unwrap_or(StoreError::Unavailable {
                backend: self.store.backend(),
                message: "no attempt was made".to_string(),
            }),
        ))
    }

    fn plan_auto_assign(
        &self,
        request: &AutoAssignRequest,
    ) -> Result<(Prepared, Assignments, Assignments), ipam_core::Error> {
        let cache = self.cache();
        let planned = cache.snapshot.plan_auto_assign(request, now())?;
        Ok((prepare(&cache, planned.plan), planned.ipv4, planned.ipv6))
    }

    /// What a handle already holds, read fresh, as an auto-assign answer;
    /// `None` when it holds nothing.
    async fn existing_assignment(
        &self,
        request: &AutoAssignRequest,
    ) -> Result<Option<AutoAssigned>, IpamError> {
        let addresses = self.addresses_of_handle(&request.handle).await?;
        if addresses.is_empty() {
            return Ok(None);
        }
        let (ipv4, ipv6): (Vec<IpNet>, Vec<IpNet>) =
            addresses.into_iter().partition(|a| a.addr().is_ipv4());
        Ok(Some(AutoAssigned {
            ipv4: Assignments {
                requested: request.ipv4,
                addresses: ipv4,
                shortfall: Vec::new(),
            },
            ipv6: Assignments {
                requested: request.ipv6,
                addresses: ipv6,
                shortfall: Vec::new(),
            },
            existing: true,
        }))
    }

    /// Releases what a failed request had already been given.
    async fn give_back(&self, handle_id: &str, got: &AutoAssigned) {
        if let Err(e) = self.release_assigned(handle_id, got).await {
            tracing::warn!(handle = handle_id, error = %e, "could not give back a failed request's addresses");
        }
    }

    /// Auto-assigns all or nothing, the contract of the HTTP API and the
    /// CNI plugin: when either family gets fewer addresses than asked, what
    /// was taken is given back and the answer is [`IpamError::Exhausted`].
    /// A retried request that finds the handle's addresses is never short.
    pub async fn auto_assign_all(
        &self,
        request: &AutoAssignRequest,
    ) -> Result<AutoAssigned, IpamError> {
        let got = self.auto_assign(request).await?;
        let short = |a: &Assignments| (a.addresses.len() as u32) < a.requested;
        if got.existing || !(short(&got.ipv4) || short(&got.ipv6)) {
            return Ok(got);
        }
        self.release_assigned(&request.handle, &got).await?;
        let reasons: Vec<String> = got
            .ipv4
            .shortfall
            .iter()
            .chain(&got.ipv6.shortfall)
            .map(ToString::to_string)
            .collect();
        Err(IpamError::Exhausted {
            ipv4_asked: got.ipv4.requested,
            ipv4_found: got.ipv4.addresses.len() as u32,
            ipv6_asked: got.ipv6.requested,
            ipv6_found: got.ipv6.addresses.len() as u32,
            reasons: reasons.join("; "),
        })
    }

    /// Releases the addresses an auto-assign gave, provided `handle_id`
    /// still holds them: for a caller that wants all or nothing and got
    /// less than it asked for.
    pub async fn release_assigned(
        &self,
        handle_id: &str,
        got: &AutoAssigned,
    ) -> Result<Released, IpamError> {
        let requests: Vec<ReleaseRequest> = got
            .ipv4
            .addresses
            .iter()
            .chain(&got.ipv6.addresses)
            .map(|a| ReleaseRequest {
                address: a.addr(),
                handle: Some(HandleId::new(handle_id)),
                sequence_number: None,
            })
            .collect();
        if requests.is_empty() {
            return Ok(Released::default());
        }
        self.release_unlocked(&requests).await
    }

    /// Assigns one chosen address (Calico's AssignIP). Assigning an address
    /// the same handle already holds succeeds without a write.
    pub async fn assign_ip(&self, request: &AssignIpRequest) -> Result<(), IpamError> {
        let _node = self.lock_node(&request.node).await;
        self.ensure_fresh().await?;
        let mut verified = false;
        let mut last = None;
        for attempt in 0..self.options.max_attempts {
            if attempt > 0 {
                self.back_off(attempt).await;
            }
            let plan_it = || {
                let cache = self.cache();
                cache
                    .snapshot
                    .plan_assign_ip(request, now())
                    .map(|plan| prepare(&cache, plan))
            };
            let mut planned = plan_it();
            // A refusal writes nothing: give it only from fresh data.
            if planned.is_err() && !verified {
                verified = true;
                self.refresh().await?;
                self.load_blocks_of(std::iter::once(request.address), true)
                    .await?;
                planned = plan_it();
            }
            let prepared = match planned {
                Ok(prepared) => prepared,
                Err(ipam_core::Error::AddressInUse { handle, .. })
                    if handle == request.handle.as_str() =>
                {
                    return Ok(())
                }
                Err(refused) => return Err(refused.into()),
            };
            match self
                .run_assignment(&[request.handle.as_str()], prepared, false)
                .await
            {
                Ok(()) => return Ok(()),
                Err(AssignFailure::Interrupted(Interrupted { cause, .. })) => {
                    self.recover(&cause).await?;
                    last = Some(cause);
                }
                Err(AssignFailure::HandleHeld) => unreachable!("only fresh handles are held"),
                Err(AssignFailure::Fatal(e)) => return Err(e),
            }
        }
        Err(self.exhausted("assign address", last.expect("at least one attempt")))
    }

    // ----- release -------------------------------------------------------

    /// Releases addresses (Calico's ReleaseIPs). Free addresses are
    /// reported, not refused; an expectation that no longer holds (another
    /// handle, another sequence number) refuses the whole request.
    pub async fn release(&self, requests: &[ReleaseRequest]) -> Result<Released, IpamError> {
        self.ensure_fresh().await?;
        self.release_unlocked(requests).await
    }

    async fn release_unlocked(&self, requests: &[ReleaseRequest]) -> Result<Released, IpamError> {
        self.load_blocks_of(requests.iter().map(|r| r.address), false)
            .await?;
        let mut remaining = requests.to_vec();
        let mut out = Released::default();
        let mut verified = false;
        let mut last = None;
        for attempt in 0..self.options.max_attempts {
            if attempt > 0 {
                self.back_off(attempt).await;
            }
            let mut planned = self.plan_release(&remaining);
            // Calling an address free, or refusing a release, writes
            // nothing, so no compare-and-swap would catch a stale cache:
            // such an answer is given only from blocks read just now.
            let unwritten = match &planned {
                Ok((plan, _)) => !plan.already_free.is_empty(),
                Err(_) => true,
            };
            if unwritten && !verified {
                verified = true;
                self.load_blocks_of(remaining.iter().map(|r| r.address), true)
                    .await?;
                planned = self.plan_release(&remaining);
            }
            let (planned, prepared) = planned?;
            let (deltas, written, failure) = self.write_release_blocks(prepared).await;
            out.released.extend(
                planned
                    .released
                    .iter()
                    .filter(|a| written.iter().any(|b| b.net().contains(*a))),
            );
            self.apply_handle_deltas(deltas).await?;
            match failure {
                None => {
                    out.already_free.extend(planned.already_free);
                    return Ok(out);
                }
                Some(cause) => {
                    remaining.retain(|r| !written.iter().any(|b| b.net().contains(&r.address)));
                    self.recover(&cause).await?;
                    last = Some(cause);
                }
            }
        }
        Err(self.exhausted("release", last.expect("at least one attempt")))
    }

    fn plan_release(
        &self,
        requests: &[ReleaseRequest],
    ) -> Result<(ipam_core::ReleasePlan, Prepared), ipam_core::Error> {
        let cache = self.cache();
        let mut planned = cache.snapshot.plan_release(requests, now())?;
        let prepared = prepare(&cache, std::mem::take(&mut planned.plan));
        Ok((planned, prepared))
    }

    /// Reads the blocks of addresses into the cache: with `all`, every one
    /// of them; else only those the cache does not know (another process
    /// may have created them since the last listing).
    async fn load_blocks_of(
        &self,
        addresses: impl Iterator<Item = IpAddr>,
        all: bool,
    ) -> Result<(), StoreError> {
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
        for cidr in cidrs {
            self.reload(&Key::Block(cidr)).await?;
        }
        Ok(())
    }

    /// Writes the block part of a release plan, block by block, and says how
    /// each handle's counts changed in the blocks written. Stops at the
    /// first failure.
    async fn write_release_blocks(
        &self,
        prepared: Prepared,
    ) -> (
        BTreeMap<String, Vec<(BlockCidr, i64)>>,
        Vec<BlockCidr>,
        Option<StoreError>,
    ) {
        let Prepared {
            steps,
            mut expected,
        } = prepared;
        let mut deltas: BTreeMap<String, Vec<(BlockCidr, i64)>> = BTreeMap::new();
        let mut written = Vec::new();
        for step in steps {
            let cidr = block_of_write(&step.write);
            if let Err(cause) = self.apply(step.write, &mut expected).await {
                return (deltas, written, Some(cause));
            }
            written.extend(cidr);
            for (handle, delta) in step.handle_deltas {
                deltas
                    .entry(handle)
                    .or_default()
                    .push((cidr.expect("only block writes change handles"), delta));
            }
        }
        (deltas, written, None)
    }

    async fn apply_handle_deltas(
        &self,
        deltas: BTreeMap<String, Vec<(BlockCidr, i64)>>,
    ) -> Result<(), IpamError> {
        for (handle, changes) in deltas {
            match self.adjust_handle(&handle, &changes, false).await {
                Ok(()) | Err(AssignFailure::HandleHeld) | Err(AssignFailure::Interrupted(_)) => {}
                Err(AssignFailure::Fatal(e)) => return Err(e),
            }
        }
        Ok(())
    }

    /// Releases every address of a handle and deletes the handle (Calico's
    /// ReleaseByHandle). An unknown handle is not an error: nothing is
    /// released.
    ///
    /// A handle this engine knows, held in blocks of one node, is released
    /// in that node's lane: concurrent releases (and assignments) of one
    /// node share block writes instead of conflicting on them.
    pub async fn release_by_handle(&self, handle_id: &str) -> Result<Vec<IpAddr>, IpamError> {
        let handle_id = ipam_core::block::sanitize_handle(handle_id);
        let node = {
            let cache = self.cache();
            let owners: Option<std::collections::BTreeSet<String>> =
                cache.handle(handle_id).and_then(|h| {
                    h.blocks()
                        .iter()
                        .map(|(cidr, _)| match cache.snapshot.block(cidr)?.owner()? {
                            BlockOwner::Host(node) => Some(node.clone()),
                            _ => None,
                        })
                        .collect()
                });
            owners
                .filter(|o| o.len() == 1)
                .and_then(|o| o.into_iter().next())
        };
        match node {
            Some(node) => {
                self.through_lane(&node, |reply| Job::Release(handle_id.to_string(), reply))
                    .await
            }
            None => self.release_by_handle_now(handle_id).await,
        }
    }

    async fn release_by_handle_now(&self, handle_id: &str) -> Result<Vec<IpAddr>, IpamError> {
        self.ensure_fresh().await?;
        let mut released = Vec::new();
        let mut last = None;
        for attempt in 0..self.options.max_attempts {
            if attempt > 0 {
                self.back_off(attempt).await;
            }
            // A handle this engine holds with every block it names needs no
            // read: the block writes and the handle's deletion name the
            // cached revisions, so anything stale fails and is read then.
            // Only "unknown handle" must come from a fresh read.
            let cached = attempt == 0 && self.cache().knows_all_of(handle_id);
            if !cached && !self.load_handle_and_blocks(handle_id).await? {
                return Ok(released);
            }
            let (planned, prepared) = {
                let cache = self.cache();
                let mut planned = match cache.snapshot.plan_release_by_handle(handle_id, now()) {
                    Ok(planned) => planned,
                    // Read just now, then gone: the cache forgets a handle
                    // only once it is seen deleted (by a concurrent release
                    // or an assignment undone), so there is nothing left.
                    Err(ipam_core::Error::HandleNotFound { .. }) => return Ok(released),
                    Err(refused) => return Err(refused.into()),
                };
                let prepared = prepare(&cache, std::mem::take(&mut planned.plan));
                (planned, prepared)
            };
            let handle_key = Key::Handle(handle_id.to_string());
            let mut handle_revision: HashMap<Key, Revision> = prepared
                .expected
                .get(&handle_key)
                .map(|r| (handle_key.clone(), r.clone()))
                .into_iter()
                .collect();
            let (_, written, failure) = self.write_release_blocks(prepared).await;
            released.extend(
                planned
                    .released
                    .iter()
                    .filter(|a| written.iter().any(|b| b.net().contains(*a))),
            );
            let cause = match failure {
                Some(cause) => cause,
                None => match self
                    .apply(
                        Write::DeleteHandle(handle_id.to_string()),
                        &mut handle_revision,
                    )
                    .await
                {
                    Ok(()) | Err(StoreError::NotFound { .. }) => {
                        self.cache().remove(&handle_key);
                        return Ok(released);
                    }
                    // The handle changed while its blocks were released
                    // (a concurrent assignment to it): release again.
                    Err(cause) => cause,
                },
            };
            self.recover(&cause).await?;
            last = Some(cause);
        }
        Err(self.exhausted("release by handle", last.expect("at least one attempt")))
    }

    /// Reads a handle and every block it names into the cache; false when
    /// the handle does not exist.
    async fn load_handle_and_blocks(&self, handle_id: &str) -> Result<bool, StoreError> {
        let key = Key::Handle(handle_id.to_string());
        self.reload(&key).await?;
        let blocks: Vec<BlockCidr> = match self.cache().handle(handle_id) {
            Some(handle) => handle.blocks().iter().map(|(cidr, _)| *cidr).collect(),
            None => return Ok(false),
        };
        for cidr in blocks {
            self.reload(&Key::Block(cidr)).await?;
        }
        Ok(true)
    }

    // ----- queries -------------------------------------------------------

    /// The addresses a handle holds, read fresh from the datastore, each
    /// with its block's prefix length (Calico's IPsByHandle).
    pub async fn addresses_of_handle(&self, handle_id: &str) -> Result<Vec<IpNet>, IpamError> {
        let handle_id = ipam_core::block::sanitize_handle(handle_id);
        if !self.load_handle_and_blocks(handle_id).await? {
            return Ok(Vec::new());
        }
        Ok(addresses_of_handle(&self.cache().snapshot, handle_id))
    }

    /// How a handle holds `addresses` (block prefix, pool, sequence
    /// number), for answering an assignment: from the cache, which the
    /// assignment has just written, so the answer costs no read; an
    /// address the cache does not show held by the handle is read fresh.
    /// `None` for an address the handle does not hold.
    pub async fn holdings(
        &self,
        handle_id: &str,
        addresses: &[IpAddr],
    ) -> Result<Vec<Option<Holding>>, IpamError> {
        let cached = |addresses: &[IpAddr]| {
            let cache = self.cache();
            addresses
                .iter()
                .map(|a| cache.snapshot.holding(*a, handle_id))
                .collect::<Vec<_>>()
        };
        let got = cached(addresses);
        let missing = addresses.iter().zip(&got).filter(|(_, h)| h.is_none());
        let missing: Vec<IpAddr> = missing.map(|(a, _)| *a).collect();
        if missing.is_empty() {
            return Ok(got);
        }
        self.load_blocks_of(missing.into_iter(), true).await?;
        Ok(cached(addresses))
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
        let handles = self.store.list(&ListQuery::All(Kind::Handle)).await?;
        let mut cache = self.cache();
        for Versioned { value, revision } in handles {
            cache.put(value, revision);
        }
        Ok(cache.snapshot.clone())
    }

    /// Pools, blocks and affinities read fresh, handles not re-read: what
    /// garbage collection judges (handles are the largest kind, one per pod,
    /// and a collection pass needs only the blocks' attributes).
    pub async fn snapshot_of_blocks(&self) -> Result<Snapshot, IpamError> {
        self.refresh().await?;
        Ok(self.cache().snapshot.clone())
    }

    // ----- affinities ----------------------------------------------------

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

    /// Claims every block of `cidr` for a node (Calico's ClaimAffinity):
    /// returns the blocks now affine to it and those another owner holds.
    pub async fn claim_affinity(&self, node: &str, cidr: IpNet) -> Result<ClaimPlan, IpamError> {
        let _node = self.lock_node(node).await;
        // Blocks reported as already ours or as someone else's are not
        // written, so they are judged on a fresh listing.
        self.refresh().await?;
        self.run_affinity_plan("claim affinity", |s| {
            s.plan_claim_affinity(node, cidr, now())
        })
        .await
    }

    /// Releases a node's affinity for one block: the block is deleted when
    /// empty, else left without affinity (Calico's ReleaseAffinity). With
    /// `require_empty`, a block in use is refused instead.
    pub async fn release_affinity(
        &self,
        node: &str,
        cidr: BlockCidr,
        require_empty: bool,
    ) -> Result<(), IpamError> {
        let _node = self.lock_node(node).await;
        // A refusal (block in use, no such affinity) writes nothing, so it
        // is judged on the current affinity and block.
        self.reload(&Key::Affinity(AffinityKey {
            node: node.to_string(),
            cidr,
        }))
        .await?;
        self.reload(&Key::Block(cidr)).await?;
        self.run_affinity_plan("release affinity", |s| {
            s.plan_release_affinity(node, cidr, require_empty, now())
                .map(|plan| ClaimPlan {
                    plan,
                    ..ClaimPlan::default()
                })
        })
        .await
        .map(|_| ())
    }

    /// Releases every affinity of a node that is gone (Calico's
    /// ReleaseHostAffinities): its empty blocks are deleted, the others keep
    /// their addresses without affinity. Returns the blocks it held.
    pub async fn release_node(&self, node: &str) -> Result<Vec<BlockCidr>, IpamError> {
        let _node = self.lock_node(node).await;
        // A fresh listing of the node's affinities, whatever the cache says.
        for item in self
            .store
            .list(&ListQuery::AffinitiesOf(node.to_string()))
            .await?
        {
            if let Value::Affinity(a) = &item.value {
                self.reload(&Key::Block(a.cidr)).await?;
            }
            self.cache().put(item.value, item.revision);
        }
        let held: Vec<BlockCidr> = self
            .cache()
            .snapshot
            .affinities_of(node)
            .map(|a| a.cidr)
            .collect();
        self.run_affinity_plan("release node", |s| {
            Ok(ClaimPlan {
                plan: s.plan_release_node(node, now()),
                ..ClaimPlan::default()
            })
        })
        .await?;
        Ok(held)
    }

    /// Writes a plan that touches no handle, planning again after each
    /// conflict.
    async fn run_affinity_plan(
        &self,
        operation: &'static str,
        make: impl Fn(&Snapshot) -> Result<ClaimPlan, ipam_core::Error>,
    ) -> Result<ClaimPlan, IpamError> {
        let mut last = None;
        for attempt in 0..self.options.max_attempts {
            if attempt > 0 {
                self.back_off(attempt).await;
            }
            let (planned, prepared) = {
                let cache = self.cache();
                let planned = make(&cache.snapshot)?;
                let prepared = prepare(&cache, planned.plan.clone());
                (planned, prepared)
            };
            let Prepared {
                steps,
                mut expected,
            } = prepared;
            let writes = steps.into_iter().map(|step| step.write).collect();
            match self.write_claims(writes, &mut expected).await {
                Ok(()) => return Ok(planned),
                Err(ClaimFailure::Fatal(e)) => return Err(e),
                Err(ClaimFailure::Store(cause)) => {
                    self.recover(&cause).await?;
                    last = Some(cause);
                }
            }
        }
        Err(self.exhausted(operation, last.expect("at least one attempt")))
    }

    // ----- config and pools ----------------------------------------------

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

    /// Stores the IPAM configuration after validating it.
    pub async fn set_config(&self, config: IpamConfig) -> Result<(), IpamError> {
        config.validate()?;
        let value = Value::Config(config);
        let mut last = None;
        for attempt in 0..self.options.max_attempts {
            if attempt > 0 {
                self.back_off(attempt).await;
            }
            let result = match self.store.get(&Key::Config).await {
                Ok(current) => self.store.update(&value, &current.revision).await,
                Err(StoreError::NotFound { .. }) => self.store.create(&value).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(revision) => {
                    self.cache().put(value, revision);
                    return Ok(());
                }
                Err(e) if is_cas_failure(&e) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(self.exhausted("set IPAM config", last.expect("at least one attempt")))
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

    /// Creates a pool, refusing one that overlaps another (Calico's IPPool
    /// validation), atomically with that check among this project's
    /// processes: see "Pools" in the module documentation.
    pub async fn create_pool(&self, pool: Pool) -> Result<(), IpamError> {
        let key = Key::Pool(pool.name().to_string());
        let mut spec = pool.spec().clone();
        spec.disabled = true;
        let placeholder = Value::Pool(Pool::new(pool.name(), spec)?);
        let mut last = None;
        for attempt in 0..self.options.max_attempts {
            if attempt > 0 {
                self.back_off(attempt).await;
            }
            // A pool that is there now refuses the request for good.
            check_no_overlap(&pool, &self.pools().await?)?;
            let revision = self.store.create(&placeholder).await?;
            // Any overlapping pool listed now was created before this look,
            // so its own look, after its creation, may miss ours: ours
            // yields, and of two creates that race, at most one goes on.
            let overlap = match self.pools().await {
                Ok(pools) => check_no_overlap(&pool, &pools).err(),
                Err(e) => {
                    self.remove_placeholder(&key, &revision).await;
                    return Err(e);
                }
            };
            match overlap {
                None => {
                    let made = if pool.spec().disabled {
                        Ok(())
                    } else {
                        let enabled = Value::Pool(pool);
                        self.store.update(&enabled, &revision).await.map(|_| ())
                    };
                    self.cache().loaded_at = None;
                    if let Err(e) = made {
                        self.remove_placeholder(&key, &revision).await;
                        return Err(e.into());
                    }
                    return Ok(());
                }
                Some(overlap) => {
                    self.remove_placeholder(&key, &revision).await;
                    // The other may be a create that yields in turn: look
                    // again after a pause, and refuse if it stayed.
                    last = Some(overlap);
                }
            }
        }
        Err(last.expect("at least one attempt").into())
    }

    /// Deletes a pool this engine created disabled and never finished;
    /// best effort: left behind, it is a disabled pool an operator sees
    /// and may delete.
    async fn remove_placeholder(&self, key: &Key, revision: &Revision) {
        match self.store.delete(key, revision).await {
            Ok(()) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => tracing::warn!(%key, error = %e, "left a disabled pool behind"),
        }
    }

    /// Replaces a pool's spec. Its CIDR and block size cannot change, as in
    /// Calico (an in-use pool cannot be resized; create another instead),
    /// so an update can bring no overlap: the check that matters is that the
    /// CIDR is the stored one, and the update names the revision that check
    /// read, so that it is atomic with it.
    pub async fn update_pool(&self, pool: Pool) -> Result<(), IpamError> {
        let key = Key::Pool(pool.name().to_string());
        let current = self.store.get(&key).await?;
        let Value::Pool(stored) = &current.value else {
            return Err(StoreError::Invalid {
                what: key.to_string(),
                message: format!("holds a {} instead", current.value.kind()),
            }
            .into());
        };
        let immutable = |field: &'static str, from: String, to: String| {
            Err(IpamError::PoolFieldImmutable {
                pool: pool.name().to_string(),
                field,
                from,
                to,
            })
        };
        if stored.cidr() != pool.cidr() {
            return immutable("cidr", stored.cidr().to_string(), pool.cidr().to_string());
        }
        if stored.block_size() != pool.block_size() {
            return immutable(
                "blockSize",
                stored.block_size().to_string(),
                pool.block_size().to_string(),
            );
        }
        self.store
            .update(&Value::Pool(pool), &current.revision)
            .await?;
        self.cache().loaded_at = None;
        Ok(())
    }

    /// Deletes a pool as Calico does (clientv3/ippool.go, Delete): disable
    /// it so nothing new is assigned from it, release every affinity of its
    /// blocks (empty blocks go, others keep their addresses), then delete
    /// it. Addresses still in use stay allocated until released.
    pub async fn delete_pool(&self, name: &str) -> Result<(), IpamError> {
        let key = Key::Pool(name.to_string());
        let current = self.store.get(&key).await?;
        let Value::Pool(pool) = current.value else {
            return Err(StoreError::Invalid {
                what: key.to_string(),
                message: "not a pool".to_string(),
            }
            .into());
        };
        let mut spec = pool.spec().clone();
        spec.disabled = true;
        let disabled = Pool::new(name, spec)?;
        let revision = self
            .store
            .update(&Value::Pool(disabled.clone()), &current.revision)
            .await?;
        self.refresh().await?;
        let affinities: Vec<AffinityKey> = self
            .cache()
            .snapshot
            .affinities()
            .filter(|a| disabled.contains(a.cidr.net().network()))
            .map(|a| a.key())
            .collect();
        for key in affinities {
            match self.release_affinity(&key.node, key.cidr, false).await {
                Ok(()) | Err(IpamError::Refused(ipam_core::Error::AffinityNotFound { .. })) => {}
                Err(e) => return Err(e),
            }
        }
        self.store.delete(&key, &revision).await?;
        self.cache().loaded_at = None;
        Ok(())
    }
}

impl<S: Datastore + ?Sized> Ipam<S> {
    /// Deallocates released addresses whose cooldown has passed, writing
    /// each block that holds some once: the backstop for blocks no
    /// allocation or release writes (kube-controllers' ipam.go,
    /// garbageCollectColdIPs), which visits only blocks whose earliest
    /// `releasedAt` has cooled. A block changed since it was read is read
    /// again and left to the next pass, as Calico skips a stale block.
    /// Returns the blocks written (or deleted, when left empty without
    /// affinity).
    pub async fn deallocate_cooled(&self) -> Result<Vec<BlockCidr>, IpamError> {
        self.ensure_fresh().await?;
        let Prepared {
            steps,
            mut expected,
        } = {
            let cache = self.cache();
            let plan = cache.snapshot.plan_deallocate_cooled(now());
            prepare(&cache, plan)
        };
        let mut written = Vec::new();
        for step in steps {
            let cidr = block_of_write(&step.write);
            match self.apply(step.write, &mut expected).await {
                Ok(()) => written.extend(cidr),
                Err(e) if is_cas_failure(&e) => self.recover(&e).await?,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(written)
    }
}
