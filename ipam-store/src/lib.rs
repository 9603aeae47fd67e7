//! Where IPAM state lives, and the engine that changes it.
//!
//! [`Datastore`] is the one contract every backend keeps and every caller
//! (the engine, ipam-server, the CNI plugin, ipamctl) uses: get, list,
//! create, update and delete of Calico's IPAM objects, with compare-and-swap
//! on an opaque [`Revision`], and a [`StoreError`] that tells a conflict, a
//! missing object, an existing object, an unreachable store and a refused
//! object apart. Backends:
//!
//! - [`memory`]: a map behind a lock, for tests and benchmarks;
//! - [`embedded`]: one redb file, durable on commit, locked to one process;
//! - [`etcd`]: etcd v3 in Calico's own key layout and value format;
//! - [`kubernetes`]: Calico's `crd.projectcalico.org/v1` custom resources.
//!
//! [`Ipam`] is the engine: Calico's IPAM operations planned by ipam-core
//! and written with compare-and-swap, retried on conflicts.
//!
//! Every backend counts its round trips ([`RoundTrips`]) so that tests and
//! benchmarks can report what an allocation costs.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cache;
pub mod datastore;
pub mod embedded;
pub mod engine;
pub mod error;
pub mod etcd;
pub mod kubernetes;
pub mod memory;
pub mod model;
pub mod node_labels;

pub use datastore::{
    AtomicWrites, BatchError, BatchWrite, Datastore, RoundTripCounter, RoundTrips,
};
pub use engine::{AutoAssigned, EngineStats, Ipam, IpamError, IpamOptions, Released};
pub use error::{RetryClass, StoreError};
pub use model::{Key, Kind, ListQuery, Reservation, Revision, Value, Versioned};
pub use node_labels::{Labels, MemoryNodeLabels, NodeLabelStore};
