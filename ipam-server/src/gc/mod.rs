//! Garbage collection for the Kubernetes datastore, as Calico's
//! kube-controllers does it: addresses whose pod is gone are released after
//! a grace period, gone nodes lose their affinities and their empty blocks,
//! and live nodes give up blocks left empty for the grace period (one kept).
//!
//! Pods, nodes and Services are watched with kube-runtime reflectors
//! (`cache`); a LoadBalancer address is judged by its Service.
//! Every [`GcOptions::interval`] the replica that holds the Lease (see
//! [`crate::lease`]) runs a pass (`pass`): it reads a snapshot of IPAM and lets
//! [`ipam_core::gc::LeakTracker`] judge it against the watched pods and
//! nodes. Before anything is released, what the watches said is asked of
//! the API server again (`confirm`) and the pass is judged again on those
//! answers; then `release` names the handle and the sequence number that
//! were judged, so an address handed out again in the meantime is refused,
//! not freed. `run` keeps the Lease beside the passes.
//!
//! Each pass also writes back the blocks holding released addresses whose
//! IP cooldown has passed (kube-controllers' garbageCollectColdIPs): an
//! allocation from a block deallocates them anyway, but a block nobody
//! allocates from would keep them, and stay non-empty, for ever. The
//! cooldown is measured on the engine's clock, the one that stamped
//! `releasedAt`.
//!
//! Time, for the grace period and the Lease, comes from the injected
//! [`Clock`]. The watches ([`Watched`]) are started before the collector,
//! and before the engine it is given, because assignments and the engine's
//! releases read Nodes and pods from them too ([`crate::node_labels`]);
//! the collector owns them, and dropping it stops them.
//!
//! Metrics (Calico's names, `metrics`): `ipam_allocations_gc_candidates`
//! (by pool and node, allocations judged leaked and still held after the
//! pass), `ipam_allocations_gc_reclamations` (addresses released), plus
//! `ipam_gc_leader` (1 on the replica collecting) and `ipam_gc_passes`
//! (passes run, by outcome).

mod cache;
mod confirm;
mod metrics;
mod pass;
mod pod;
mod release;
mod run;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipam_core::gc::LeakTracker;
use ipam_core::BlockCidr;
use ipam_store::{Datastore, Ipam};

use crate::clock::Clock;
use crate::lease::LeaseOptions;
pub use cache::Watched;
pub use metrics::GcMetrics;

/// How the collector runs.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// How long an address of a gone pod on a live node is left alone
    /// (Calico's LeakGracePeriod, 15 minutes by default; 0 turns that off).
    pub grace: Duration,
    /// Time between passes.
    pub interval: Duration,
    /// The Lease that picks the collecting replica.
    pub lease: LeaseOptions,
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Allocations judged leaked and still held after the pass.
    pub candidates: usize,
    /// Addresses released.
    pub released: Vec<IpAddr>,
    /// Releases refused because the allocation changed since it was judged.
    pub refused: usize,
    /// Nodes whose affinities were released.
    pub nodes_released: Vec<String>,
    /// Empty blocks of live nodes released (and so deleted).
    pub blocks_released: Vec<BlockCidr>,
    /// Blocks written back with addresses past their cooldown deallocated.
    pub blocks_cooled: Vec<BlockCidr>,
}

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// IPAM could not be read.
    #[error("reading IPAM: {0}")]
    Ipam(#[from] ipam_store::IpamError),
    /// The API server did not answer a confirmation read.
    #[error("confirming with the Kubernetes API: {0}")]
    Kubernetes(#[from] kube::Error),
}

/// Watches pods and nodes and collects garbage when leading.
pub struct Collector {
    client: kube::Client,
    engine: Arc<Ipam<dyn Datastore>>,
    options: GcOptions,
    metrics: Arc<GcMetrics>,
    clock: Arc<dyn Clock>,
    watched: Watched,
    // Judgements carried from pass to pass: when each leak was first seen.
    tracker: LeakTracker,
}

impl Collector {
    /// Collects on what `watched` reports (started through `client`); the
    /// watches run until the collector is dropped.
    pub fn new(
        client: kube::Client,
        engine: Arc<Ipam<dyn Datastore>>,
        options: GcOptions,
        metrics: Arc<GcMetrics>,
        clock: Arc<dyn Clock>,
        watched: Watched,
    ) -> Collector {
        Collector {
            watched,
            client,
            engine,
            options,
            metrics,
            clock,
            tracker: LeakTracker::new(),
        }
    }
}
