//! The load-balancer controller, on the Kubernetes datastore: Services of
//! type LoadBalancer get addresses from the pools whose `allowedUses`
//! include `LoadBalancer`, as Calico's kube-controllers gives them
//! (kube-controllers/pkg/controllers/loadbalancer/loadbalancer_controller.go,
//! v3.32; docs: "LoadBalancer IP address management").
//!
//! What it keeps as Calico does:
//! - which Services: type LoadBalancer, and with `AllServices` (the
//!   default) every one whose `spec.loadBalancerClass` is unset or
//!   `calico`; with `RequestedServicesOnly` only class `calico` or a Service
//!   carrying one of the annotations below (`service::is_managed`);
//! - the annotations `projectcalico.org/ipv4pools` and `ipv6pools` (JSON
//!   lists of pool CIDRs or names) and `projectcalico.org/loadBalancerIPs`
//!   (a JSON list, one address per family at most), which replace the
//!   pools' own choice; an address outside what they ask is released;
//! - one address per family in `spec.ipFamilies`, and as many addresses as
//!   `spec.ipFamilyPolicy` asks (one, or two for either dual-stack policy);
//! - the handle `lb-<hash of name, namespace and uid>` and the attributes
//!   `service`, `namespace`, `type` and `timestamp`; the blocks are
//!   `virtual:load-balancer`'s, claimed with a `virtual` affinity;
//! - `status.loadBalancer.ingress` lists exactly the addresses held;
//! - a Service deleted, no longer of type LoadBalancer, or served by
//!   another class gives its addresses back (and loses them from its
//!   status), as do all Services when the last LoadBalancer pool goes; an
//!   address from a Manual pool is kept only while an annotation asks.
//!
//! State is never kept between passes: every pass reads the addresses each
//! handle holds in the `virtual:load-balancer` blocks (`sync::held`), as
//! Calico's controller rebuilds its tracker from the blocks. So a restart,
//! or another replica taking over, finds each Service's addresses where
//! they are and never hands a held one out again.
//!
//! Unlike Calico, a family missing from a Service that already holds the
//! other one is topped up (Calico's assignIP zeroes both families as soon
//! as any address is held: `ip.To16() != nil` holds for IPv4 too).
//! Namespace selectors of pools are not consulted (the Service's namespace
//! labels are not read): a LoadBalancer pool with a `namespaceSelector`
//! other than all() serves no Service here.
//!
//! One replica serves at a time, through its own Lease (`run`); a pass runs
//! when Services change and every [`LoadBalancerOptions::interval`]
//! (Calico's periodic sync is 5 minutes). Calico exports no metrics for
//! this controller, and neither does this one; its addresses show in the
//! pool metrics like any other.

mod run;
pub mod service;
mod sync;

use std::sync::Arc;
use std::time::Duration;

use ipam_store::{Datastore, Ipam};
use k8s_openapi::api::core::v1::Service;
use kube::runtime::reflector::Store;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::clock::Clock;
use crate::lease::LeaseOptions;
pub use service::AssignIps;

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct LoadBalancerOptions {
    /// Which Services get addresses.
    pub assign_ips: AssignIps,
    /// Time between passes over every Service.
    pub interval: Duration,
    /// The Lease that picks the serving replica.
    pub lease: LeaseOptions,
}

/// Why a Service could not be served in a pass (it is tried again in the
/// next one).
#[derive(Debug, thiserror::Error)]
pub enum LoadBalancerError {
    /// IPAM refused or could not be reached.
    #[error("IPAM: {0}")]
    Ipam(#[from] ipam_store::IpamError),
    /// The API server refused the status or did not answer.
    #[error("Kubernetes API: {0}")]
    Kubernetes(#[from] kube::Error),
    /// The Service's annotations cannot be served.
    #[error("{0}")]
    Annotation(#[from] service::AnnotationError),
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Addresses assigned.
    pub assigned: Vec<std::net::IpAddr>,
    /// Addresses released.
    pub released: Vec<std::net::IpAddr>,
    /// Services whose status was written.
    pub statuses: usize,
    /// Services that failed (logged), to be tried again.
    pub failed: usize,
}

/// Watches Services and gives LoadBalancer ones addresses while leading.
pub struct Controller {
    client: kube::Client,
    engine: Arc<Ipam<dyn Datastore>>,
    options: LoadBalancerOptions,
    clock: Arc<dyn Clock>,
    services: Store<Service>,
    changed: Arc<Notify>,
    // The watch; a JoinSet aborts its task when dropped.
    _watch: JoinSet<()>,
}

impl Controller {
    /// Starts watching Services; the watch runs until the controller is
    /// dropped.
    pub fn new(
        client: kube::Client,
        engine: Arc<Ipam<dyn Datastore>>,
        options: LoadBalancerOptions,
        clock: Arc<dyn Clock>,
    ) -> Controller {
        let changed = Arc::new(Notify::new());
        let (services, watch) = run::watch_services(&client, changed.clone());
        let mut tasks = JoinSet::new();
        tasks.spawn(watch);
        Controller {
            client,
            engine,
            options,
            clock,
            services,
            changed,
            _watch: tasks,
        }
    }
}
