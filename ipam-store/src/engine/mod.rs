//! The allocation engine: Calico's IPAM operations, planned by ipam-core
//! and written to any [`Datastore`] with compare-and-swap.
//!
//! Safety comes from writing a plan's handles and blocks together or in a
//! leak-safe order, and from compare-and-swap, never from the cache:
//!
//! - on a store that writes several objects atomically
//!   ([`AtomicWrites`](crate::AtomicWrites): memory, embedded, etcd), the
//!   handles and blocks of an assignment, and the blocks of a release with
//!   the handle changes that follow them, are one batch: nothing lies in
//!   between to crash in, and it costs one commit where the ordered writes
//!   cost two. A refused batch wrote nothing; a batch whose answer was lost
//!   (the store unavailable) may have been applied in full, so nothing of
//!   it is undone and the caller is told to try again, which finds what
//!   was written (a repeated request's handle, a block's new revision);
//! - on a store without transactions (Kubernetes), assigning writes the
//!   handle before the block, so a crash in between leaves a handle that
//!   over-counts, never an address without an owner; a block write that
//!   fails takes its count back out of the handle;
//! - a new block is claimed completely (pending affinity, block created
//!   empty, affinity confirmed) before any handle counts an address in it,
//!   as in Calico, so a handle's count in a block that does not exist is
//!   stale; claims are written before the batch, on either path;
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
//! The cache can lag the store either way: a write's store call and its
//! cache update are not one step, so another thread's write can land in
//! between, and a read's late update can bring back what was deleted since.
//! A stale entry only fails a compare-and-swap, but an absent one would be
//! written with none: so a handle's absence from the cache never decides
//! that nothing is written (a deletion names the revision its plan saw;
//! counts taken from a handle, and "no such handle", come from a read);
//! reports take their handles from a list of the store, not from the cache;
//! and an answer read fresh (a handle's addresses, how it holds them) is
//! given from the values read, not from the cache after the read.
//!
//! # Layout
//!
//! - `retrying`: the one retry loop; what a failure allows is its
//!   [`RetryClass`](crate::RetryClass), decided in one place;
//! - `reads`: the cache, fresh reads and the public queries;
//! - `writes`: the leak-safe order of a plan's phases (ipam-core's phased
//!   [`Plan`](ipam_core::Plan)), and undoing an interrupted one;
//! - `batch`: a plan's handles and blocks as one atomic batch, where the
//!   store has them;
//! - `stale_cache` (tests): the cache lagging the store, both ways;
//! - `lane`: the per-node lane that serves a burst of requests together;
//! - `mixed`: a lane's releases and assignments in one plan and one batch;
//! - `labels`: where a release gets node labels ([`NodeLabelSource`]), to
//!   keep affinities consistent as Calico's ensureConsistentAffinity does;
//! - `assign`, `release`, `admin`, `reservations`, `split`: the operations.

mod admin;
mod assign;
mod batch;
mod labels;
mod lane;
mod mixed;
mod reads;
mod release;
mod reservations;
mod retrying;
mod split;
#[cfg(test)]
mod stale_cache;
mod writes;

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipam_core::plan::Assignments;
use ipam_core::Now;

use crate::cache::Cache;
use crate::datastore::Datastore;
use crate::error::StoreError;

pub use labels::NodeLabelSource;
use lane::Lane;

/// How hard the engine tries and how long it trusts what it read.
#[derive(Debug, Clone)]
pub struct IpamOptions {
    /// Attempts per operation before giving up on conflicts (Calico: 100).
    /// Never zero, so that every operation is tried at least once.
    pub max_attempts: NonZeroU32,
    /// How long listed pools, config, reservations, blocks and affinities
    /// are used before they are listed again. Writes are checked by
    /// compare-and-swap whatever this is; it bounds how long a change made
    /// by another process (a new pool, a disabled pool) goes unseen.
    pub cache_ttl: Duration,
}

impl Default for IpamOptions {
    fn default() -> Self {
        IpamOptions {
            max_attempts: retrying::CALICO_ATTEMPTS,
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
    #[error("{reasons} (asked for {ipv4_asked} IPv4 and {ipv6_asked} IPv6 addresses, found {ipv4_found} and {ipv6_found})")]
    Exhausted {
        /// IPv4 addresses asked for.
        ipv4_asked: u32,
        /// IPv4 addresses there were.
        ipv4_found: u32,
        /// IPv6 addresses asked for.
        ipv6_asked: u32,
        /// IPv6 addresses there were.
        ipv6_found: u32,
        /// Why, in Calico's words for each short family
        /// ([`Assignments::partial_fulfillment`](ipam_core::plan::Assignments::partial_fulfillment)).
        reasons: String,
    },
    /// A pool split was refused (calicoctl's rules, ipam-core's
    /// [`SplitError`](ipam_core::split::SplitError)).
    #[error(transparent)]
    Split(#[from] ipam_core::split::SplitError),
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
    node_labels: Option<Arc<dyn NodeLabelSource>>,
}

fn now() -> Now {
    let unix_nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    Now { unix_nanos }
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
            node_labels: None,
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

    pub(crate) fn cache(&self) -> MutexGuard<'_, Cache> {
        // Cache updates are single inserts or removes; a panic elsewhere
        // cannot leave it half-changed, and CAS catches any staleness.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}
