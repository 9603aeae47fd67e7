//! The garbage collector against the in-process Kubernetes API server:
//! pods and nodes created and deleted by the test, IPAM in Calico's custom
//! resources, leadership through a real Lease.
//!
//! Time is a [`ManualClock`]: grace periods and lease durations pass when
//! a test advances it, never by sleeping. What the tests do wait for (by
//! polling, with a deadline) is I/O: the watches seeing a change, or the
//! Lease being written. Only the last test, of the server as `main` starts
//! it, runs on the machine's clock.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipam_core::{AutoAssignRequest, Pool, PoolSpec};
use ipam_core::{HandleId, NodeName};
use ipam_server::clock::ManualClock;
use ipam_server::gc::{Collector, GcMetrics, GcOptions, PassReport, Watched};
use ipam_server::lease::LeaseOptions;
use ipam_store::kubernetes::KubernetesStore;
use ipam_store::{Datastore, Ipam};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use prometheus_client::registry::Registry;
use serde_json::json;
use testkit::apiserver::ApiServer;
use tokio::sync::watch;

const NAMESPACE: &str = "calico-ipam-rs";

/// Calico's default grace period; it costs nothing on a manual clock.
const GRACE: Duration = Duration::from_secs(15 * 60);
/// The Lease's duration, renewed every third of it.
const LEASE: Duration = Duration::from_secs(15);
const RENEW: Duration = Duration::from_secs(5);
/// A grace period that passes in a few renewals, for tests that run the
/// collector as the server does.
const SHORT_GRACE: Duration = Duration::from_secs(10);

struct World {
    api: ApiServer,
    engine: Arc<Ipam<dyn Datastore>>,
    client: kube::Client,
    clock: Arc<ManualClock>,
}

impl World {
    async fn start(nodes: &[&str]) -> World {
        let api = ApiServer::start().await;
        let store = KubernetesStore::connect(Some(api.kubeconfig()))
            .await
            .unwrap();
        let client = store.client().clone();
        let engine: Arc<Ipam<dyn Datastore>> = Arc::new(Ipam::new(Arc::new(store)));
        let spec = PoolSpec {
            block_size: Some(29),
            ..PoolSpec::new("10.0.0.0/24".parse().unwrap())
        };
        engine
            .create_pool(Pool::new("pool", spec).unwrap())
            .await
            .unwrap();
        for node in nodes {
            api.put_core("nodes", json!({"metadata": {"name": node}}));
        }
        World {
            api,
            engine,
            client,
            clock: ManualClock::new(),
        }
    }

    /// A running pod with its address, as the plugin and the kubelet
    /// leave one.
    async fn pod(&self, node: &str, name: &str) -> IpAddr {
        // The pod exists before the plugin allocates its address.
        self.api.put_core(
            "pods",
            json!({"metadata": {"name": name, "namespace": "default"},
                   "spec": {"nodeName": node}, "status": {"phase": "Pending"}}),
        );
        let address = self.allocate(node, name).await;
        self.api.put_core(
            "pods",
            json!({
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"nodeName": node},
                "status": {"phase": "Running", "podIP": address.to_string(),
                           "podIPs": [{"ip": address.to_string()}]},
            }),
        );
        address
    }

    async fn allocate(&self, node: &str, name: &str) -> IpAddr {
        let mut request = AutoAssignRequest::new(
            HandleId::new(format!("k8s-pod-network.{name}")),
            NodeName::new(node),
            1,
            0,
        );
        request.attributes = [("namespace", "default"), ("pod", name), ("node", node)]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let got = self.engine.auto_assign(&request).await.unwrap();
        got.ipv4.addresses[0].addr()
    }

    async fn tunnel(&self, node: &str) -> IpAddr {
        let mut request = AutoAssignRequest::new(
            HandleId::new(format!("ipip-tunnel-addr-{node}")),
            NodeName::new(node),
            1,
            0,
        );
        request.attributes = [("node", node), ("type", "ipipTunnelAddress")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        request.intended_use = ipam_core::AllowedUse::Tunnel;
        self.engine
            .auto_assign(&request)
            .await
            .unwrap()
            .ipv4
            .addresses[0]
            .addr()
    }

    fn delete_pod(&self, name: &str) {
        assert!(self.api.remove_core("pods", Some("default"), name));
    }

    async fn held(&self, address: IpAddr) -> bool {
        self.engine.attributes_of(address).await.unwrap().is_some()
    }

    fn options(&self, identity: &str, grace: Duration) -> GcOptions {
        GcOptions {
            grace,
            interval: Duration::from_secs(1),
            lease: LeaseOptions {
                namespace: NAMESPACE.to_string(),
                name: "ipam-server-gc".to_string(),
                identity: identity.to_string(),
                duration: LEASE,
                renew_every: RENEW,
            },
        }
    }

    /// A collector on the world's clock; it watches until dropped.
    fn collector(&self, identity: &str, grace: Duration) -> (Collector, Arc<GcMetrics>) {
        let metrics = Arc::new(GcMetrics::default());
        let collector = Collector::new(
            self.client.clone(),
            self.engine.clone(),
            self.options(identity, grace),
            metrics.clone(),
            self.clock.clone(),
            Watched::start(&self.client),
        );
        (collector, metrics)
    }

    /// Moves the clock by `by`, then waits until `sleepers` sleeps (two
    /// per running collector: its passes and its Lease) wait on it again:
    /// whatever the step woke has run.
    async fn tick(&self, by: Duration, sleepers: usize) {
        self.clock.advance(by);
        self.clock.sleeping(sleepers).await;
    }

    async fn lease_holder(&self) -> Option<String> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), NAMESPACE);
        leases
            .get_opt("ipam-server-gc")
            .await
            .unwrap()
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
    }
}

/// Leadership for passes driven by the test: always held.
fn leading() -> watch::Receiver<bool> {
    watch::channel(true).1
}

/// Runs passes until `done` holds of the report, or panics after 10 s:
/// the watches see the test's changes a moment after it makes them. No
/// time passes on the clock.
async fn pass_until(collector: &mut Collector, done: impl Fn(&PassReport) -> bool) -> PassReport {
    let leading = leading();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let report = collector.pass(&leading).await.unwrap();
        if done(&report) {
            return report;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no pass did it; last: {report:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One pass with leadership held.
async fn pass(collector: &mut Collector) -> PassReport {
    collector.pass(&leading()).await.unwrap()
}

fn scrape(metrics: &GcMetrics) -> String {
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text
}

/// The value of the one sample of `name` with these labels, 0 when absent.
fn sample(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter_map(|line| line.strip_prefix(name))
        .filter_map(|rest| rest.strip_prefix(labels))
        .filter_map(|rest| rest.strip_prefix(' '))
        .map(|value| value.parse::<f64>().unwrap())
        .next()
        .unwrap_or(0.0)
}

/// Addresses released in pool "pool" on node n1, by the scrape `text`.
fn reclaimed_on_n1(text: &str) -> f64 {
    sample(text, "ipam_allocations_gc_reclamations_total", N1)
}

/// Leaks held in pool "pool" on node n1, by the scrape `text`.
fn candidates_on_n1(text: &str) -> f64 {
    sample(text, "ipam_allocations_gc_candidates", N1)
}

const N1: &str = "{ippool=\"pool\",node=\"n1\"}";

#[tokio::test]
async fn a_gone_pods_address_is_released_after_the_grace_period_and_no_sooner() {
    let w = World::start(&["n1"]).await;
    let kept = w.pod("n1", "kept").await;
    let gone = w.pod("n1", "gone").await;
    let (mut collector, metrics) = w.collector("a", GRACE);
    // Nothing leaks while every pod runs.
    assert_eq!(pass(&mut collector).await, PassReport::default());

    w.delete_pod("gone");
    let seen = pass_until(&mut collector, |r| r.candidates == 1).await;
    assert!(seen.released.is_empty());
    let text = scrape(&metrics);
    assert_eq!(candidates_on_n1(&text), 1.0, "{text}");
    // A second short of the grace period, it is still only a candidate.
    w.clock.advance(GRACE - Duration::from_secs(1));
    let waiting = pass(&mut collector).await;
    assert_eq!((waiting.candidates, waiting.released.len()), (1, 0));
    assert!(w.held(gone).await);
    w.clock.advance(Duration::from_secs(1));
    let released = pass(&mut collector).await;
    assert_eq!(released.released, [gone]);
    assert_eq!(released.candidates, 0);
    assert!(!w.held(gone).await);
    assert!(w.held(kept).await);
    let snapshot = w.engine.snapshot().await.unwrap();
    assert!(
        snapshot.handle("k8s-pod-network.gone").is_none(),
        "the emptied handle is deleted"
    );
    assert!(snapshot.handle("k8s-pod-network.kept").is_some());
    let text = scrape(&metrics);
    assert_eq!(reclaimed_on_n1(&text), 1.0, "{text}");
    assert_eq!(candidates_on_n1(&text), 0.0);
    // Nothing more to do.
    assert_eq!(pass(&mut collector).await, PassReport::default());
}

#[tokio::test]
async fn a_pod_still_running_or_not_yet_reporting_keeps_its_address() {
    let w = World::start(&["n1"]).await;
    let running = w.pod("n1", "running").await;
    // Allocated, the pod created, the kubelet has not reported it yet.
    let starting = w.allocate("n1", "starting").await;
    w.api.put_core(
        "pods",
        json!({"metadata": {"name": "starting", "namespace": "default"},
               "spec": {"nodeName": "n1"}, "status": {"phase": "Pending"}}),
    );
    // A pod that reports another address: its allocation is a leak.
    let stale = w.allocate("n1", "restarted").await;
    w.api.put_core(
        "pods",
        json!({"metadata": {"name": "restarted", "namespace": "default"},
               "spec": {"nodeName": "n1"},
               "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.250"}]}}),
    );
    let (mut collector, _metrics) = w.collector("a", GRACE);
    // Once the watches show all three pods, only the stale one is judged.
    pass_until(&mut collector, |r| r.candidates == 1).await;
    w.clock.advance(GRACE);
    let report = pass(&mut collector).await;
    assert_eq!(report.released, [stale]);
    for _ in 0..3 {
        w.clock.advance(GRACE);
        assert!(pass(&mut collector).await.released.is_empty());
    }
    assert!(w.held(running).await);
    assert!(w.held(starting).await);
}

#[tokio::test]
async fn a_deleted_nodes_addresses_and_affinities_go_at_once() {
    let w = World::start(&["n1", "n2"]).await;
    let tunnel = w.tunnel("n2").await;
    let mut on_n2 = vec![tunnel];
    for i in 0..10 {
        on_n2.push(w.pod("n2", &format!("p{i}")).await);
    }
    let elsewhere = w.pod("n1", "elsewhere").await;
    let n2_blocks = w.engine.affinities_of("n2").await.unwrap().len();
    assert!(n2_blocks >= 2, "ten pods fill more than one /29");
    // The clock never moves: only the node's deletion can make these
    // confirmed leaks.
    let (mut collector, _metrics) = w.collector("a", GRACE);
    // The node is drained (its pods' addresses wait out the grace period)
    // and deleted.
    for i in 0..10 {
        w.delete_pod(&format!("p{i}"));
    }
    let drained = pass_until(&mut collector, |r| r.candidates == 10).await;
    assert!(drained.released.is_empty());
    assert!(w.api.remove_core("nodes", None, "n2"));
    let report = pass_until(&mut collector, |r| !r.nodes_released.is_empty()).await;
    on_n2.sort();
    assert_eq!(report.released, on_n2);
    assert_eq!(report.nodes_released, ["n2"]);
    assert!(w.engine.affinities_of("n2").await.unwrap().is_empty());
    let snapshot = w.engine.snapshot().await.unwrap();
    assert!(
        snapshot.blocks().all(|b| !b.is_empty()),
        "the node's emptied blocks are deleted"
    );
    assert!(w.held(elsewhere).await);
    assert_eq!(w.engine.affinities_of("n1").await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_live_nodes_block_left_empty_goes_after_the_grace_period() {
    let w = World::start(&["n1"]).await;
    let mut addresses = Vec::new();
    for i in 0..10 {
        addresses.push(w.pod("n1", &format!("p{i}")).await);
    }
    let blocks = w.engine.affinities_of("n1").await.unwrap();
    assert_eq!(blocks.len(), 2, "ten pods fill a /29 and start another");
    let second = blocks.iter().map(|a| a.cidr).max().unwrap();
    // The pods of the second block go.
    for (i, address) in addresses.iter().enumerate() {
        if second.ordinal_of(*address).is_some() {
            w.delete_pod(&format!("p{i}"));
        }
    }
    let (mut collector, _metrics) = w.collector("a", GRACE);
    pass_until(&mut collector, |r| r.candidates == 2).await;
    w.clock.advance(GRACE);
    let emptied = pass(&mut collector).await;
    assert_eq!(emptied.released.len(), 2);
    // The pass judged the snapshot it read before releasing: the next one
    // sees the block empty, and it goes a whole grace period after that.
    assert!(pass(&mut collector).await.blocks_released.is_empty());
    w.clock.advance(GRACE - Duration::from_secs(1));
    assert!(pass(&mut collector).await.blocks_released.is_empty());
    w.clock.advance(Duration::from_secs(1));
    let report = pass(&mut collector).await;
    assert_eq!(report.blocks_released, [second]);
    let left = w.engine.affinities_of("n1").await.unwrap();
    assert_eq!(left.len(), 1);
    assert!(w.engine.block(second).await.unwrap().is_none(), "deleted");
    // The node's last block stays, however long it is empty.
    for (i, address) in addresses.iter().enumerate() {
        if second.ordinal_of(*address).is_none() {
            w.delete_pod(&format!("p{i}"));
        }
    }
    pass_until(&mut collector, |r| r.candidates == 8).await;
    w.clock.advance(GRACE);
    assert_eq!(pass(&mut collector).await.released.len(), 8);
    for _ in 0..3 {
        w.clock.advance(GRACE);
        assert!(pass(&mut collector).await.blocks_released.is_empty());
    }
    assert_eq!(w.engine.affinities_of("n1").await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_deleted_node_with_a_running_pod_is_left_alone() {
    let w = World::start(&["n1", "n2"]).await;
    let tunnel = w.tunnel("n2").await;
    let survivor = w.pod("n2", "survivor").await;
    let (mut collector, _metrics) = w.collector("a", GRACE);
    assert!(w.api.remove_core("nodes", None, "n2"));
    // The watch sees the node gone: the tunnel address becomes a candidate
    // that waits for the node's last pod, however long that takes.
    pass_until(&mut collector, |r| r.candidates == 1).await;
    for _ in 0..3 {
        w.clock.advance(GRACE);
        let report = pass(&mut collector).await;
        assert_eq!(report.candidates, 1);
        assert!(report.released.is_empty() && report.nodes_released.is_empty());
    }
    assert!(w.held(tunnel).await && w.held(survivor).await);
    assert!(!w.engine.affinities_of("n2").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_pod_the_watch_missed_is_read_again_before_its_address_goes() {
    let w = World::start(&["n1"]).await;
    let (mut collector, _metrics) = w.collector("a", GRACE);
    // Let the watches list, then hold their events back: what they hold
    // goes stale.
    pass(&mut collector).await;
    w.api.pause_watches();
    let late = w.pod("n1", "late").await;
    let mut judged = 0;
    for _ in 0..4 {
        w.clock.advance(GRACE);
        let report = pass(&mut collector).await;
        assert!(report.released.is_empty(), "{report:?}");
        judged += report.candidates;
    }
    assert!(
        judged > 0,
        "the watch never showed the pod, so it was judged"
    );
    assert!(w.held(late).await);
    // Once the API server no longer has it either, it goes (a confirmed
    // leak that the API contradicts is forgotten, so it may have to be
    // seen again first).
    w.delete_pod("late");
    let mut released = Vec::new();
    for _ in 0..2 {
        w.clock.advance(GRACE);
        released = pass(&mut collector).await.released;
        if !released.is_empty() {
            break;
        }
    }
    assert_eq!(released, [late]);
}

#[tokio::test]
async fn one_replica_leads_and_another_takes_over_when_it_stops_or_dies() {
    let w = World::start(&["n1"]).await;
    let (a, metrics_a) = w.collector("replica-a", SHORT_GRACE);
    let (b, metrics_b) = w.collector("replica-b", SHORT_GRACE);
    let (stop_a, stopped_a) = watch::channel(false);
    let (_stop_b, stopped_b) = watch::channel(false);
    let run_a = tokio::spawn(a.run(stopped_a));
    wait_for(|| async { w.lease_holder().await.as_deref() == Some("replica-a") }).await;
    let run_b = tokio::spawn(b.run(stopped_b));
    w.clock.sleeping(4).await;
    // b watches a hold the lease through several renewals.
    for _ in 0..6 {
        w.tick(RENEW, 4).await;
        assert_eq!(w.lease_holder().await.as_deref(), Some("replica-a"));
    }
    assert_eq!(sample(&scrape(&metrics_a), "ipam_gc_leader", ""), 1.0);
    assert_eq!(sample(&scrape(&metrics_b), "ipam_gc_leader", ""), 0.0);

    // Only the leader collects, a grace period after the pod went.
    let gone = w.pod("n1", "gone").await;
    w.delete_pod("gone");
    let reclaimed = |m: &GcMetrics| reclaimed_on_n1(&scrape(m));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while reclaimed(&metrics_a) == 0.0 {
        assert!(tokio::time::Instant::now() < deadline, "never collected");
        w.tick(RENEW, 4).await;
    }
    assert!(!w.held(gone).await);
    assert_eq!(
        (reclaimed(&metrics_a), reclaimed(&metrics_b)),
        (1.0, 0.0),
        "{}",
        scrape(&metrics_a)
    );

    // a stops: it gives the lease up and b takes it at its next try, long
    // before the lease would have run out.
    stop_a.send(true).unwrap();
    run_a.await.unwrap();
    assert_eq!(w.lease_holder().await, None);
    assert_eq!(sample(&scrape(&metrics_a), "ipam_gc_leader", ""), 0.0);
    w.tick(RENEW, 2).await;
    assert!(RENEW < LEASE);
    assert_eq!(w.lease_holder().await.as_deref(), Some("replica-b"));
    assert_eq!(sample(&scrape(&metrics_b), "ipam_gc_leader", ""), 1.0);
    let leases: Api<Lease> = Api::namespaced(w.client.clone(), NAMESPACE);
    let lease = leases.get("ipam-server-gc").await.unwrap().spec.unwrap();
    assert_eq!(lease.lease_transitions, Some(1));

    // b dies without a word: a third replica waits out the lease, as it
    // reads it on its own clock, then leads.
    run_b.abort();
    assert!(run_b.await.unwrap_err().is_cancelled());
    let (c, _metrics_c) = w.collector("replica-c", SHORT_GRACE);
    let (_stop_c, stopped_c) = watch::channel(false);
    let _run_c = tokio::spawn(c.run(stopped_c));
    w.clock.sleeping(2).await;
    let mut waited = Duration::ZERO;
    while waited < LEASE {
        assert_eq!(
            w.lease_holder().await.as_deref(),
            Some("replica-b"),
            "took a live lease after {waited:?}"
        );
        w.tick(RENEW, 2).await;
        waited += RENEW;
    }
    // A lease is live for its whole duration; one more try takes it.
    assert_eq!(w.lease_holder().await.as_deref(), Some("replica-b"));
    w.tick(RENEW, 2).await;
    assert_eq!(w.lease_holder().await.as_deref(), Some("replica-c"));
}

/// Polls `condition` every 20 ms for up to 10 s.
async fn wait_for<F, Fut>(condition: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// The server as `main` starts it runs on the machine's clock: its grace
// period and intervals are short, and the test polls for their effects.
#[tokio::test]
async fn the_server_binary_collects_on_the_kubernetes_datastore_and_gives_its_lease_up() {
    let w = World::start(&["n1"]).await;
    let gone = w.pod("n1", "gone").await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let kubeconfig = w.api.kubeconfig().display().to_string();
    let args = <ipam_server::args::Args as clap::Parser>::try_parse_from([
        "ipam-server",
        "--datastore=kubernetes",
        &format!("--kubeconfig={kubeconfig}"),
        &format!("--listen=127.0.0.1:{port}"),
        "--gc-leak-grace-period=100ms",
        "--gc-interval=50ms",
        "--gc-lease-duration=1s",
        &format!("--gc-lease-namespace={NAMESPACE}"),
        "--gc-identity=the-binary",
    ])
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(ipam_server::server::run(args, async {
        let _ = stopped.await;
    }));
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    let scrape_server = || async {
        match reqwest::get(&metrics_url).await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    };
    wait_for(|| async { sample(&scrape_server().await, "ipam_gc_leader", "") == 1.0 }).await;
    assert_eq!(w.lease_holder().await.as_deref(), Some("the-binary"));
    w.delete_pod("gone");
    wait_for(|| async { !w.held(gone).await }).await;
    wait_for(|| async { reclaimed_on_n1(&scrape_server().await) == 1.0 }).await;
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert_eq!(w.lease_holder().await, None, "given up on shutdown");
}

#[tokio::test]
async fn a_pass_deallocates_released_addresses_once_their_cooldown_has_passed() {
    let w = World::start(&["n1"]).await;
    let mut config = w.engine.config().await.unwrap();
    config.ip_cooldown_seconds = 1;
    w.engine.set_config(config).await.unwrap();
    let kept = w.pod("n1", "kept").await;
    let gone = w.pod("n1", "gone").await;
    w.delete_pod("gone");
    let released = w
        .engine
        .release_by_handle("k8s-pod-network.gone")
        .await
        .unwrap();
    assert_eq!(released, [gone]);
    let cidr = w
        .engine
        .snapshot()
        .await
        .unwrap()
        .block_containing(gone)
        .unwrap()
        .cidr();
    let (mut collector, _metrics) = w.collector("a", Duration::from_secs(900));
    // Within the cooldown the pass leaves the released address alone.
    let report = pass(&mut collector).await;
    assert_eq!(report, PassReport::default());
    let block = w.engine.block(cidr).await.unwrap().unwrap();
    assert_eq!(block.released().count(), 1, "still in its cooldown");
    // Released in second s: free from second s + 2 at the latest. The
    // cooldown runs on the engine's clock, which stamped releasedAt, not on
    // the collector's: this wait is real.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let report = pass_until(&mut collector, |r| !r.blocks_cooled.is_empty()).await;
    assert_eq!(report.blocks_cooled, [cidr]);
    let block = w.engine.block(cidr).await.unwrap().unwrap();
    assert_eq!(block.released().count(), 0);
    assert!(block.attribute_of_address(gone).is_none(), "free again");
    assert!(w.held(kept).await);
    // Nothing more to do.
    assert_eq!(pass(&mut collector).await, PassReport::default());
}
