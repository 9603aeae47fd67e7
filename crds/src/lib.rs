//! Calico's `crd.projectcalico.org/v1` IPAM wire types, their conversion to
//! and from ipam-core, and the CRD manifests generated from them.
//!
//! Every kind the IPAM reads or writes is here with Calico's kind, plural
//! and JSON field names: [`IPPool`], [`IPAMBlock`], [`IPAMHandle`],
//! [`BlockAffinity`], [`IPAMConfig`] and [`IPReservation`]. Each spec type
//! mirrors the Go struct Calico serialises (libcalico-go/lib/apis and
//! api/pkg/apis/projectcalico/v3), field for field and zero value for zero
//! value, so that what we write is what Calico would have written; fields a
//! newer Calico adds are kept verbatim in each spec's `unknown` map.
//!
//! Conversions go both ways: `TryFrom<&Wire>` for the core type parses and
//! validates through ipam-core (`From` for IPAMConfig, where nothing can
//! fail), and `Wire::from_core(core, previous)` builds the object
//! to write, carrying the previous object's metadata (resourceVersion, uid,
//! labels, annotations) so that a read-modify-write keeps them.
//!
//! [`structural`] holds Kubernetes' rules for the CRDs themselves and
//! [`validation`] what the API server does to an object written under
//! them; the test API server in testkit and this crate's tests share it.
//!
//! This crate does no I/O beyond writing the manifests it is asked to write:
//! talking to a cluster belongs to ipam-store.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod affinity;
pub mod block;
pub mod config;
pub mod error;
mod go;
pub mod handle;
pub mod manifests;
pub mod metadata;
pub mod pool;
pub mod reservation;
mod schema;
pub mod structural;
pub mod validation;

pub use affinity::{BlockAffinity, BlockAffinitySpec};
pub use block::{AllocationAttribute, IPAMBlock, IPAMBlockSpec};
pub use config::{IPAMConfig, IPAMConfigSpec};
pub use error::Error;
pub use handle::{IPAMHandle, IPAMHandleSpec};
pub use pool::{IPPool, IPPoolSpec};
pub use reservation::{IPReservation, IPReservationSpec};

/// The API group of Calico's IPAM custom resources.
pub const GROUP: &str = "crd.projectcalico.org";

/// The only version Calico serves them at.
pub const VERSION: &str = "v1";
