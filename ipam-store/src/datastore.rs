//! The contract every backend keeps.
//!
//! Creates fail with [`StoreError::AlreadyExists`] when the key is taken;
//! updates and deletes name the [`Revision`] they read and fail with
//! [`StoreError::Conflict`] when the object has moved on, or
//! [`StoreError::NotFound`] when it is gone. A write that returned `Ok` is
//! durable as far as the backend can make it (embedded: fsynced; etcd and
//! Kubernetes: acknowledged by the server).
//!
//! A backend that can write several objects in one atomic, durable unit
//! offers it through [`Datastore::atomic_writes`]: the engine then writes a
//! plan's handles and blocks together, one commit instead of one per
//! object. Kubernetes has no multi-object transaction and offers none.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use crate::error::StoreError;
use crate::model::{Key, ListQuery, Revision, Value, Versioned};

/// Get, list, create, update and delete Calico's IPAM objects.
#[async_trait]
pub trait Datastore: Send + Sync {
    /// `memory`, `embedded`, `etcd` or `kubernetes`.
    fn backend(&self) -> &'static str;

    /// Reads one object.
    async fn get(&self, key: &Key) -> Result<Versioned<Value>, StoreError>;

    /// Reads every object the query selects, in one round trip.
    async fn list(&self, query: &ListQuery) -> Result<Vec<Versioned<Value>>, StoreError>;

    /// Creates an object that must not exist yet.
    async fn create(&self, value: &Value) -> Result<Revision, StoreError>;

    /// Replaces an object, provided it is still at `revision`.
    async fn update(&self, value: &Value, revision: &Revision) -> Result<Revision, StoreError>;

    /// Deletes an object, provided it is still at `revision`.
    async fn delete(&self, key: &Key, revision: &Revision) -> Result<(), StoreError>;

    /// Round trips made so far.
    fn round_trips(&self) -> RoundTrips;

    /// Writing several objects all or nothing, when the backend can (a
    /// batch counts as one write round trip: it is one).
    fn atomic_writes(&self) -> Option<&dyn AtomicWrites> {
        None
    }
}

/// One write of a batch, with the condition of its single-object form:
/// a create needs the key free, an update and a delete the revision read.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchWrite {
    /// Creates an object that must not exist yet.
    Create(Value),
    /// Replaces an object still at the revision.
    Update(Value, Revision),
    /// Deletes an object still at the revision.
    Delete(Key, Revision),
}

impl BatchWrite {
    /// The object written.
    pub fn key(&self) -> Key {
        match self {
            BatchWrite::Create(value) | BatchWrite::Update(value, _) => value.key(),
            BatchWrite::Delete(key, _) => key.clone(),
        }
    }
}

/// Why a batch was not written.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BatchError {
    /// The condition of write `index` did not hold (a [`StoreError`]
    /// `Conflict`, `NotFound` or `AlreadyExists`): nothing was written.
    #[error("write {index} of a batch refused: {cause}")]
    Refused {
        /// The write's position in the batch.
        index: usize,
        /// Why, as the single write would have failed.
        cause: StoreError,
    },
    /// The batch names an object twice: refused before anything was sent.
    #[error("a batch writes {key} more than once")]
    DuplicateKey {
        /// The object.
        key: Key,
    },
    /// The store failed. When it is `Unavailable`, the batch may have been
    /// applied in full or not at all (a connection lost after the commit
    /// was sent): the caller must not assume either.
    #[error(transparent)]
    Store(StoreError),
}

/// Writing several objects as one unit: every write's condition is checked
/// and either all are applied, in one durable commit, or none is.
#[async_trait]
pub trait AtomicWrites: Send + Sync {
    /// Applies `writes` all or nothing, and returns each write's new
    /// revision (`None` for a delete), in order. A batch names each key at
    /// most once ([`BatchError::DuplicateKey`] otherwise).
    async fn write_all(&self, writes: &[BatchWrite]) -> Result<Vec<Option<Revision>>, BatchError>;

    /// The most writes one batch may hold; a larger plan is written in
    /// order instead (etcd refuses a transaction past its limit).
    fn max_writes(&self) -> usize;
}

/// Refuses a batch that names an object twice: each write's condition is
/// checked against the state before the batch, so two writes of one key
/// would not mean what they say. For backends to call first.
pub fn distinct_keys(writes: &[BatchWrite]) -> Result<(), BatchError> {
    let mut seen = std::collections::HashSet::with_capacity(writes.len());
    for write in writes {
        let key = write.key();
        if !seen.insert(key.clone()) {
            return Err(BatchError::DuplicateKey { key });
        }
    }
    Ok(())
}

/// Round trips to a datastore: reads (get, list) and writes (create,
/// update, delete), counted whether or not they succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RoundTrips {
    /// Gets and lists.
    pub reads: u64,
    /// Creates, updates and deletes.
    pub writes: u64,
}

impl RoundTrips {
    /// Both together.
    pub fn total(self) -> u64 {
        self.reads + self.writes
    }

    /// What happened between `earlier` and `self`.
    pub fn since(self, earlier: RoundTrips) -> RoundTrips {
        RoundTrips {
            reads: self.reads - earlier.reads,
            writes: self.writes - earlier.writes,
        }
    }
}

/// The counter a backend bumps on every round trip.
#[derive(Debug, Default)]
pub struct RoundTripCounter {
    reads: AtomicU64,
    writes: AtomicU64,
}

impl RoundTripCounter {
    /// Counts one read.
    pub fn read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one write.
    pub fn write(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> RoundTrips {
        RoundTrips {
            reads: self.reads.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
        }
    }
}
