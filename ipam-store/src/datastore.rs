//! The contract every backend keeps.
//!
//! Creates fail with [`StoreError::AlreadyExists`] when the key is taken;
//! updates and deletes name the [`Revision`] they read and fail with
//! [`StoreError::Conflict`] when the object has moved on, or
//! [`StoreError::NotFound`] when it is gone. A write that returned `Ok` is
//! durable as far as the backend can make it (embedded: fsynced; etcd and
//! Kubernetes: acknowledged by the server).

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
