//! Garbage collection for the Kubernetes datastore, as Calico's
//! kube-controllers does it: addresses whose pod is gone are released after
//! a grace period, gone nodes lose their affinities and their empty blocks,
//! and live nodes give up blocks left empty for the grace period (one kept).
//!
//! Pods and nodes are watched with kube-runtime reflectors. Every
//! [`GcOptions::interval`] the replica that holds the Lease (see
//! [`crate::lease`]) reads a snapshot of IPAM and lets
//! [`ipam_core::gc::LeakTracker`] judge it against the watched pods and
//! nodes. Before anything is released, what the watches said is asked of
//! the API server again (Calico re-reads the pod too: a watch may lag): each
//! pod behind a confirmed leak on a live node, and each node about to be
//! called gone; then the pass is judged again on those answers. Releases
//! name the handle and the sequence number that were judged, so an address
//! handed out again in the meantime is refused, not freed.
//!
//! Each pass also writes back the blocks holding released addresses whose
//! IP cooldown has passed (kube-controllers' garbageCollectColdIPs): an
//! allocation from a block deallocates them anyway, but a block nobody
//! allocates from would keep them, and stay non-empty, for ever.
//!
//! Metrics (Calico's names): `ipam_allocations_gc_candidates` (by pool and
//! node, allocations judged leaked and still held after the pass),
//! `ipam_allocations_gc_reclamations` (addresses released), plus
//! `ipam_gc_leader` (1 on the replica collecting) and
//! `ipam_gc_passes` (passes run, by outcome).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use ipam_core::check::PodRef;
use ipam_core::gc::{Cluster, Collection, LeakTracker, PodState};
use ipam_core::{BlockCidr, Now, ReleaseRequest, Snapshot};
use ipam_store::{Datastore, Ipam};
use k8s_openapi::api::core::v1::{Node, Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::lease::{Elector, LeaseOptions};

/// Multus's record of a pod's interfaces: addresses on secondary networks
/// are the pod's too.
const NETWORK_STATUS: &str = "k8s.v1.cni.cncf.io/network-status";

/// Calico's label for addresses no pool covers.
const NO_POOL: &str = "no_ippool";
/// Calico's label for allocations without a `node` attribute.
const UNKNOWN_NODE: &str = "unknown_node";

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolNode {
    ippool: String,
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

/// The collector's figures, registered with `/metrics`.
#[derive(Debug, Default)]
pub struct GcMetrics {
    candidates: Family<PoolNode, Gauge>,
    reclamations: Family<PoolNode, Counter>,
    leader: Gauge,
    passes: Family<Outcome, Counter>,
}

impl GcMetrics {
    /// Adds the figures to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "ipam_allocations_gc_candidates",
            "Allocations the garbage collector judges leaked and still held: candidates in their grace period, and confirmed leaks not released yet",
            self.candidates.clone(),
        );
        registry.register(
            "ipam_allocations_gc_reclamations",
            "Addresses the garbage collector has released",
            self.reclamations.clone(),
        );
        registry.register(
            "ipam_gc_leader",
            "1 when this replica holds the garbage collection Lease",
            self.leader.clone(),
        );
        registry.register(
            "ipam_gc_passes",
            "Garbage collection passes, by outcome (done, failed)",
            self.passes.clone(),
        );
    }
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
    pods: Store<Pod>,
    nodes: Store<Node>,
    tracker: LeakTracker,
    // Set while `run` holds the Lease; `None` when passes are driven
    // directly (tests), which then always release.
    leading: Option<watch::Receiver<bool>>,
}

impl Collector {
    /// Starts the pod and node watches; they run until the returned tasks
    /// are aborted.
    pub fn new(
        client: kube::Client,
        engine: Arc<Ipam<dyn Datastore>>,
        options: GcOptions,
        metrics: Arc<GcMetrics>,
    ) -> (Collector, Vec<tokio::task::JoinHandle<()>>) {
        let (pods, pod_writer) = reflector::store();
        let (nodes, node_writer) = reflector::store();
        let pod_watch = reflector::reflector(
            pod_writer,
            watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
                .modify(trim_pod)
                .default_backoff(),
        );
        let node_watch = reflector::reflector(
            node_writer,
            watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
                .modify(trim_node)
                .default_backoff(),
        );
        let tasks = vec![
            tokio::spawn(drain(pod_watch, "pods")),
            tokio::spawn(drain(node_watch, "nodes")),
        ];
        (
            Collector {
                client,
                engine,
                options,
                metrics,
                pods,
                nodes,
                tracker: LeakTracker::new(),
                leading: None,
            },
            tasks,
        )
    }

    /// Runs until `stop` says true: renews or tries for the Lease, and
    /// collects while leading. Gives the Lease up on the way out.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        tokio::select! {
            _ = self.wait_until_ready() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        tracing::info!(
            grace = ?self.options.grace,
            interval = ?self.options.interval,
            pods = self.pods.state().len(),
            nodes = self.nodes.state().len(),
            "garbage collector watching pods and nodes"
        );
        // The Lease is renewed beside the passes (one task, two futures),
        // so that a long pass cannot let it lapse; a pass stops releasing as
        // soon as it is lost. Dropping `run` drops both.
        let elector = Elector::new(self.client.clone(), self.options.lease.clone());
        let (leading_tx, leading) = watch::channel(false);
        let lease = keep_lease(
            elector,
            self.options.lease.renew_every,
            leading_tx,
            self.metrics.clone(),
            stop.clone(),
        );
        self.leading = Some(leading.clone());
        tokio::join!(lease, self.collect_while_leading(leading, stop));
    }

    async fn collect_while_leading(
        &mut self,
        mut leading: watch::Receiver<bool>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut next_pass = tokio::time::Instant::now();
        loop {
            if !*leading.borrow_and_update() {
                // A new leader starts every grace period afresh: a
                // judgement made under an old lease is not carried over.
                self.tracker = LeakTracker::new();
                self.metrics.candidates.clear();
            } else if tokio::time::Instant::now() >= next_pass {
                next_pass = tokio::time::Instant::now() + self.options.interval;
                let outcome = match self.pass().await {
                    Ok(report) => {
                        if !report.released.is_empty()
                            || !report.nodes_released.is_empty()
                            || !report.blocks_released.is_empty()
                        {
                            tracing::info!(
                                released = report.released.len(),
                                refused = report.refused,
                                nodes = ?report.nodes_released,
                                blocks = report.blocks_released.len(),
                                candidates = report.candidates,
                                "garbage collection pass"
                            );
                        }
                        "done"
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "garbage collection pass failed: {e}");
                        "failed"
                    }
                };
                self.metrics
                    .passes
                    .get_or_create(&Outcome { outcome })
                    .inc();
            }
            let wait = next_pass
                .saturating_duration_since(tokio::time::Instant::now())
                .max(Duration::from_millis(10));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = leading.changed() => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
    }

    fn still_leading(&self) -> bool {
        self.leading.as_ref().is_none_or(|l| *l.borrow())
    }

    // Until both watches have listed once, an empty store would make
    // every pod look gone.
    async fn wait_until_ready(&self) {
        let _ = self.pods.wait_until_ready().await;
        let _ = self.nodes.wait_until_ready().await;
    }

    /// One pass: judge, confirm with the API server, release. Waits for
    /// the first listing of pods and nodes.
    pub async fn pass(&mut self) -> Result<PassReport, GcError> {
        self.wait_until_ready().await;
        let snapshot = self.engine.snapshot_of_blocks().await?;
        let mut cluster = self.watched();
        let now = now();
        let first = self
            .tracker
            .scan(&snapshot, &cluster, self.options.grace, now);
        let confirmed = if first.releasable().next().is_some() || !first.nodes_to_release.is_empty()
        {
            self.confirm(&first, &mut cluster).await?;
            self.tracker
                .scan(&snapshot, &cluster, self.options.grace, now)
        } else {
            first
        };
        let blocks_cooled = self.deallocate_cooled().await;
        let report = self.release(&snapshot, confirmed).await;
        Ok(PassReport {
            blocks_cooled,
            ..report
        })
    }

    // The cooldown backstop, before the releases as in Calico's syncIPAM
    // (after its leak collection, before releaseUnusedBlocks and
    // releaseNodes): nodes and blocks then go with cooled addresses gone.
    async fn deallocate_cooled(&self) -> Vec<BlockCidr> {
        if !self.still_leading() {
            return Vec::new();
        }
        match self.engine.deallocate_cooled().await {
            Ok(blocks) => {
                for block in &blocks {
                    tracing::info!(%block, "deallocated addresses past their cooldown");
                }
                blocks
            }
            Err(e) => {
                tracing::warn!(error = %e, "deallocating addresses past their cooldown: {e}");
                Vec::new()
            }
        }
    }

    // What the watches hold now.
    fn watched(&self) -> Cluster {
        Cluster {
            pods: self
                .pods
                .state()
                .iter()
                .filter_map(|p| pod_state(p))
                .collect(),
            nodes: self
                .nodes
                .state()
                .iter()
                .filter_map(|n| n.metadata.name.clone())
                .collect(),
        }
    }

    // Reads again from the API server each pod and node a release would
    // rest on, and corrects `cluster` with the answers.
    async fn confirm(&self, collection: &Collection, cluster: &mut Cluster) -> Result<(), GcError> {
        let mut nodes: BTreeSet<String> = collection.nodes_to_release.iter().cloned().collect();
        let mut pods: BTreeSet<PodRef> = BTreeSet::new();
        for leak in collection.releasable() {
            match &leak.node {
                Some(node) if !cluster.nodes.contains(node) => {
                    nodes.insert(node.clone());
                }
                _ => pods.extend(leak.pod.clone()),
            }
        }
        let node_api = Api::<Node>::all(self.client.clone());
        for node in nodes {
            if node_api.get_opt(&node).await?.is_some() {
                tracing::info!(node, "node exists though the watch has not seen it");
                cluster.nodes.insert(node);
            }
        }
        for pod in pods {
            let api = Api::<Pod>::namespaced(self.client.clone(), &pod.namespace);
            match api.get_opt(&pod.name).await? {
                Some(fresh) => {
                    if let Some((key, state)) = pod_state(&fresh) {
                        cluster.pods.insert(key, state);
                    }
                }
                None => {
                    cluster.pods.remove(&pod);
                }
            }
        }
        Ok(())
    }

    // Releases the releasable leaks one handle at a time (a refusal of one
    // does not hold back the others), then the gone nodes none of whose
    // leaks failed.
    async fn release(&mut self, snapshot: &Snapshot, collection: Collection) -> PassReport {
        let mut report = PassReport::default();
        let mut by_handle: BTreeMap<&str, Vec<ReleaseRequest>> = BTreeMap::new();
        for leak in collection.releasable() {
            by_handle
                .entry(leak.handle.as_str())
                .or_default()
                .push(leak.release_request());
        }
        let mut failed_nodes: BTreeSet<&str> = BTreeSet::new();
        let mut released: BTreeSet<IpAddr> = BTreeSet::new();
        for (handle, requests) in by_handle {
            if !self.still_leading() {
                tracing::warn!("lost the lease mid-pass: releasing no more");
                break;
            }
            match self.engine.release(&requests).await {
                Ok(outcome) => released.extend(outcome.released),
                Err(e) => {
                    report.refused += requests.len();
                    tracing::warn!(handle, error = %e, "not released: {e}");
                    for leak in collection.releasable().filter(|l| l.handle == handle) {
                        failed_nodes.extend(leak.node.as_deref());
                    }
                }
            }
        }
        self.metrics.candidates.clear();
        for leak in &collection.leaks {
            let labels = PoolNode {
                ippool: snapshot
                    .pool_of(leak.address)
                    .map_or(NO_POOL, |p| p.name())
                    .to_string(),
                node: leak
                    .node
                    .clone()
                    .unwrap_or_else(|| UNKNOWN_NODE.to_string()),
            };
            if released.contains(&leak.address) {
                tracing::info!(
                    address = %leak.address,
                    handle = leak.handle,
                    reason = leak.reason.as_str(),
                    pod = ?leak.pod.as_ref().map(|p| format!("{}/{}", p.namespace, p.name)),
                    node = ?leak.node,
                    "released leaked address"
                );
                self.metrics.reclamations.get_or_create(&labels).inc();
            } else {
                report.candidates += 1;
                self.metrics.candidates.get_or_create(&labels).inc();
            }
        }
        report.released = released.into_iter().collect();
        for node in &collection.nodes_to_release {
            if failed_nodes.contains(node.as_str()) || !self.still_leading() {
                continue;
            }
            match self.engine.release_node(node).await {
                Ok(blocks) => {
                    tracing::info!(
                        node,
                        blocks = blocks.len(),
                        "released the affinities of a deleted node"
                    );
                    report.nodes_released.push(node.clone());
                }
                Err(e) => {
                    tracing::warn!(node, error = %e, "releasing a deleted node's affinities: {e}")
                }
            }
        }
        for (node, block) in &collection.empty_blocks_to_release {
            if !self.still_leading() {
                break;
            }
            // Refused when an address was taken from it since the snapshot.
            match self.engine.release_affinity(node, *block, true).await {
                Ok(()) => {
                    tracing::info!(node, %block, "released an empty block");
                    report.blocks_released.push(*block);
                }
                Err(e) => tracing::info!(node, %block, error = %e, "empty block kept: {e}"),
            }
        }
        report
    }
}

// Takes or renews the Lease every `renew_every` until `stop`, telling the
// collector whether it leads; gives the Lease up on the way out.
async fn keep_lease(
    mut elector: Elector,
    renew_every: Duration,
    leading: watch::Sender<bool>,
    metrics: Arc<GcMetrics>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let was_leading = elector.is_leading();
        match elector.try_acquire_or_renew().await {
            Ok(true) if !was_leading => tracing::info!("leading garbage collection"),
            Ok(false) if was_leading => tracing::warn!("lost the garbage collection lease"),
            Err(e) => tracing::warn!(error = %e, "garbage collection lease: {e}"),
            Ok(_) => {}
        }
        metrics.leader.set(i64::from(elector.is_leading()));
        leading.send_replace(elector.is_leading());
        tokio::select! {
            _ = tokio::time::sleep(renew_every) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    leading.send_replace(false);
    metrics.leader.set(0);
    if let Err(e) = elector.release().await {
        tracing::warn!(error = %e, "giving up the garbage collection lease: {e}");
    }
}

// Keeps a watch running; the reflector's store is what matters.
async fn drain<S, E>(stream: S, what: &'static str)
where
    S: futures_util::Stream<Item = Result<E, watcher::Error>>,
{
    futures_util::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        if let Err(e) = event {
            tracing::warn!(error = %e, "watching {what}: {e}");
        }
    }
}

fn now() -> Now {
    Now {
        unix_nanos: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
    }
}

// The reflector keeps only what the collector reads: a node's status
// (images, conditions) and a pod's spec are most of their size.
fn trim_pod(pod: &mut Pod) {
    let keep = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(NETWORK_STATUS).cloned());
    pod.metadata = ObjectMeta {
        name: pod.metadata.name.take(),
        namespace: pod.metadata.namespace.take(),
        resource_version: pod.metadata.resource_version.take(),
        uid: pod.metadata.uid.take(),
        annotations: keep.map(|v| [(NETWORK_STATUS.to_string(), v)].into()),
        ..ObjectMeta::default()
    };
    pod.spec = Some(PodSpec {
        node_name: pod.spec.as_mut().and_then(|s| s.node_name.take()),
        ..PodSpec::default()
    });
    pod.status = pod.status.take().map(|status| PodStatus {
        phase: status.phase,
        pod_ip: status.pod_ip,
        pod_ips: status.pod_ips,
        ..PodStatus::default()
    });
}

fn trim_node(node: &mut Node) {
    node.metadata = ObjectMeta {
        name: node.metadata.name.take(),
        resource_version: node.metadata.resource_version.take(),
        uid: node.metadata.uid.take(),
        ..ObjectMeta::default()
    };
    node.spec = None;
    node.status = None;
}

/// What the core needs of a pod; `None` for a pod without a name.
fn pod_state(pod: &Pod) -> Option<(PodRef, PodState)> {
    let key = PodRef {
        namespace: pod.metadata.namespace.clone()?,
        name: pod.metadata.name.clone()?,
    };
    let status = pod.status.clone().unwrap_or_default();
    let mut addresses: BTreeSet<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.ip.parse().ok())
        .collect();
    // Calico's getPodIPs: podIPs, else podIP.
    if addresses.is_empty() {
        addresses.extend(
            status
                .pod_ip
                .as_deref()
                .and_then(|ip| ip.parse::<IpAddr>().ok()),
        );
    }
    let other_addresses = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(NETWORK_STATUS))
        .map(|text| network_status_addresses(text))
        .unwrap_or_default();
    let finished = matches!(status.phase.as_deref(), Some("Failed" | "Succeeded"));
    Some((
        key,
        PodState {
            node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            addresses,
            other_addresses,
            finished,
        },
    ))
}

// `[{"name": "...", "ips": ["10.1.2.3"], ...}]`; anything unreadable counts
// for nothing (the pod's status addresses still stand).
fn network_status_addresses(text: &str) -> BTreeSet<IpAddr> {
    #[derive(serde::Deserialize)]
    struct Interface {
        #[serde(default)]
        ips: Vec<String>,
    }
    serde_json::from_str::<Vec<Interface>>(text)
        .unwrap_or_default()
        .into_iter()
        .flat_map(|i| i.ips)
        .filter_map(|ip| ip.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipam_core::{AutoAssignRequest, Pool, PoolSpec};
    use ipam_store::kubernetes::KubernetesStore;
    use testkit::apiserver::ApiServer;

    #[tokio::test]
    async fn a_pass_releases_nothing_once_the_lease_is_lost() {
        let api = ApiServer::start().await;
        let store = KubernetesStore::connect(Some(api.kubeconfig()))
            .await
            .unwrap();
        let client = store.client().clone();
        let engine: Arc<Ipam<dyn Datastore>> = Arc::new(Ipam::new(Arc::new(store)));
        let spec = PoolSpec::new("10.0.0.0/24".parse().unwrap());
        engine
            .create_pool(Pool::new("pool", spec).unwrap())
            .await
            .unwrap();
        // A pod's address on a node that is gone: a confirmed leak at once.
        let mut request = AutoAssignRequest::new("k8s-pod-network.p", "gone", 1, 0);
        request.attributes = [("namespace", "default"), ("pod", "p"), ("node", "gone")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let address = engine.auto_assign(&request).await.unwrap().ipv4.addresses[0].addr();
        let options = GcOptions {
            grace: Duration::from_secs(3600),
            interval: Duration::from_secs(1),
            lease: LeaseOptions {
                namespace: "default".into(),
                name: "gc".into(),
                identity: "me".into(),
                duration: Duration::from_secs(1),
                renew_every: Duration::from_millis(100),
            },
        };
        let (mut collector, watches) =
            Collector::new(client, engine.clone(), options, Arc::default());
        let (leading_tx, leading) = watch::channel(false);
        collector.leading = Some(leading);
        let report = collector.pass().await.unwrap();
        assert!(report.released.is_empty() && report.nodes_released.is_empty());
        assert_eq!(report.candidates, 1, "judged, not released");
        assert!(engine.attributes_of(address).await.unwrap().is_some());
        leading_tx.send_replace(true);
        let report = collector.pass().await.unwrap();
        assert_eq!(report.released, [address]);
        assert_eq!(report.nodes_released, ["gone"]);
        watches.iter().for_each(tokio::task::JoinHandle::abort);
    }
}
