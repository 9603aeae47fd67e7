//! The load-balancer controller against the in-process Kubernetes API
//! server: Services created, changed and deleted through the API as a user
//! would, IPAM in Calico's custom resources, leadership through a real
//! Lease. Passes are run directly (`Controller::pass`) where leadership
//! does not matter, and as the server runs them (`Controller::run`) for the
//! hand-over between replicas.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipam_core::affinity::LOAD_BALANCER_OWNER;
use ipam_core::{AllowedUse, AutoAssignRequest, HandleId, NodeName, Pool, PoolSpec};
use ipam_server::clock::{ManualClock, SystemClock};
use ipam_server::gc::{Collector, GcMetrics, GcOptions, Watched};
use ipam_server::lease::LeaseOptions;
use ipam_server::loadbalancer::service::handle_of;
use ipam_server::loadbalancer::{AssignIps, Controller, LoadBalancerOptions};
use ipam_store::kubernetes::KubernetesStore;
use ipam_store::{Datastore, Ipam};
use ipnet::IpNet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{json, Value};
use testkit::apiserver::ApiServer;

const NAMESPACE: &str = "default";
const DEADLINE: Duration = Duration::from_secs(20);

struct World {
    api: ApiServer,
    engine: Arc<Ipam<dyn Datastore>>,
    client: kube::Client,
}

impl World {
    /// A workload pool, and LoadBalancer pools `lb-v4` (two blocks' worth)
    /// and `lb-v6`, plus `lb-other`.
    async fn start() -> World {
        let api = ApiServer::start().await;
        let world = World::connect(api).await;
        world.pool("workload", "10.0.0.0/24", None).await;
        world
            .pool("lb-v4", "172.16.0.0/24", Some(AllowedUse::LoadBalancer))
            .await;
        world
            .pool("lb-other", "172.17.0.0/24", Some(AllowedUse::LoadBalancer))
            .await;
        world
            .pool("lb-v6", "fd00:b::/120", Some(AllowedUse::LoadBalancer))
            .await;
        world
    }

    async fn connect(api: ApiServer) -> World {
        let store = KubernetesStore::connect(Some(api.kubeconfig()))
            .await
            .unwrap();
        let client = store.client().clone();
        let engine: Arc<Ipam<dyn Datastore>> = Arc::new(Ipam::new(Arc::new(store)));
        World {
            api,
            engine,
            client,
        }
    }

    async fn pool(&self, name: &str, cidr: &str, only: Option<AllowedUse>) {
        let mut spec = PoolSpec {
            block_size: Some(if cidr.contains(':') { 122 } else { 26 }),
            ..PoolSpec::new(cidr.parse().unwrap())
        };
        spec.allowed_uses = only.into_iter().collect();
        self.engine
            .create_pool(Pool::new(name, spec).unwrap())
            .await
            .unwrap();
    }

    fn controller(&self, engine: Arc<Ipam<dyn Datastore>>, identity: &str) -> Controller {
        Controller::new(
            self.client.clone(),
            engine,
            LoadBalancerOptions {
                assign_ips: AssignIps::AllServices,
                interval: Duration::from_secs(3600),
                lease: LeaseOptions {
                    namespace: NAMESPACE.into(),
                    name: "ipam-server-loadbalancer".into(),
                    identity: identity.into(),
                    duration: Duration::from_secs(3),
                    renew_every: Duration::from_secs(1),
                },
            },
            Arc::new(SystemClock),
        )
    }

    fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    /// Creates a Service through the API.
    async fn create(&self, name: &str, spec: Value, annotations: Value) -> Service {
        let service: Service = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": NAMESPACE, "annotations": annotations},
            "spec": spec,
        }))
        .unwrap();
        self.services()
            .create(&PostParams::default(), &service)
            .await
            .unwrap()
    }

    /// Changes a Service through the API, as `kubectl edit` would.
    async fn change(&self, name: &str, edit: impl FnOnce(&mut Value)) {
        let mut current = serde_json::to_value(self.services().get(name).await.unwrap()).unwrap();
        edit(&mut current);
        let service: Service = serde_json::from_value(current).unwrap();
        self.services()
            .replace(name, &PostParams::default(), &service)
            .await
            .unwrap();
    }

    /// The addresses a Service's status lists.
    fn ingress(&self, name: &str) -> BTreeSet<IpAddr> {
        self.api
            .core("services", Some(NAMESPACE), name)
            .and_then(|s| s["status"]["loadBalancer"]["ingress"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|i| i["ip"].as_str().unwrap().parse().unwrap())
            .collect()
    }

    /// What a Service's handle holds in IPAM.
    async fn held(&self, service: &Service) -> BTreeSet<IpAddr> {
        let meta = &service.metadata;
        let handle = handle_of(
            meta.namespace.as_deref().unwrap(),
            meta.name.as_deref().unwrap(),
            meta.uid.as_deref().unwrap(),
        );
        self.engine
            .addresses_of_handle(&handle)
            .await
            .unwrap()
            .iter()
            .map(IpNet::addr)
            .collect()
    }
}

fn lb(families: &[&str], policy: &str) -> Value {
    json!({"type": "LoadBalancer", "ipFamilies": families, "ipFamilyPolicy": policy,
           "ports": [{"port": 80}]})
}

fn within(cidr: &str, addresses: &BTreeSet<IpAddr>) -> bool {
    let net: IpNet = cidr.parse().unwrap();
    addresses.iter().all(|a| net.contains(a))
}

/// Runs passes until `done` says so: a pass may start before the watch has
/// seen the test's last change.
async fn pass_until(controller: &Controller, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        controller.pass().await.unwrap();
        if done() {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "never got there");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn dual_stack_services_get_one_address_per_family_from_load_balancer_pools() {
    let w = World::start().await;
    let dual = w
        .create("dual", lb(&["IPv4", "IPv6"], "RequireDualStack"), json!({}))
        .await;
    let single = w
        .create("single", lb(&["IPv6"], "SingleStack"), json!({}))
        .await;
    let controller = w.controller(w.engine.clone(), "a");
    pass_until(&controller, || {
        w.ingress("dual").len() == 2 && w.ingress("single").len() == 1
    })
    .await;
    let dual_ips = w.ingress("dual");
    assert_eq!(
        w.held(&dual).await,
        dual_ips,
        "the status lists what is held"
    );
    let (v4, v6): (BTreeSet<IpAddr>, BTreeSet<IpAddr>) = dual_ips.iter().partition(|a| a.is_ipv4());
    assert_eq!((v4.len(), v6.len()), (1, 1));
    assert!(within("172.16.0.0/15", &v4), "{v4:?}");
    assert!(within("fd00:b::/120", &v6), "{v6:?}");
    assert!(within("fd00:b::/120", &w.ingress("single")));
    assert_eq!(w.held(&single).await, w.ingress("single"));

    // Calico's attributes and virtual blocks.
    let address = *v4.iter().next().unwrap();
    let attributes = w.engine.attributes_of(address).await.unwrap().unwrap();
    let handle = attributes.handle().unwrap().to_string();
    assert!(handle.starts_with("lb-"), "{handle}");
    let secondary: Vec<(String, String)> = attributes
        .secondary()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| k != "timestamp")
        .collect();
    let expected: Vec<(String, String)> = [
        ("namespace", "default"),
        ("service", "dual"),
        ("type", "LoadBalancer"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(secondary, expected);
    assert!(attributes
        .secondary()
        .get("timestamp")
        .is_some_and(|t| t.ends_with(" +0000 UTC")));
    let blocks = w.api.objects("ipamblocks");
    assert!(blocks
        .iter()
        .all(|b| b["spec"]["affinity"] == "virtual:load-balancer"));
    let affinities = w.api.objects("blockaffinities");
    assert!(!affinities.is_empty());
    for affinity in affinities {
        assert_eq!(affinity["spec"]["type"], "virtual");
        assert_eq!(affinity["spec"]["node"], LOAD_BALANCER_OWNER);
    }
    // Once the watch has seen the statuses written, a pass has nothing to
    // do and does nothing (before, a status written on a stale Service is
    // refused by the API server, and tried again).
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let report = controller.pass().await.unwrap();
        assert!(
            report.assigned.is_empty() && report.released.is_empty(),
            "{report:?}"
        );
        if report == Default::default() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{report:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Made dual-stack, the Service keeps its IPv6 address and gains an
    // IPv4 one.
    let kept = w.ingress("single");
    w.change("single", |s| {
        s["spec"]["ipFamilies"] = json!(["IPv6", "IPv4"]);
        s["spec"]["ipFamilyPolicy"] = json!("RequireDualStack");
    })
    .await;
    pass_until(&controller, || w.ingress("single").len() == 2).await;
    let now = w.ingress("single");
    assert!(kept.is_subset(&now), "{kept:?} {now:?}");
    assert_eq!(now.iter().filter(|a| a.is_ipv4()).count(), 1);
    assert_eq!(w.held(&single).await, now);
}

#[tokio::test]
async fn annotations_choose_pools_and_fixed_addresses() {
    let w = World::start().await;
    let by_name = w
        .create(
            "by-name",
            lb(&["IPv4"], "SingleStack"),
            json!({"projectcalico.org/ipv4pools": "[\"lb-other\"]"}),
        )
        .await;
    let fixed = w
        .create(
            "fixed",
            lb(&["IPv4", "IPv6"], "PreferDualStack"),
            json!({"projectcalico.org/loadBalancerIPs": "[\"172.16.0.77\", \"fd00:b::77\"]"}),
        )
        .await;
    let controller = w.controller(w.engine.clone(), "a");
    pass_until(&controller, || {
        w.ingress("by-name").len() == 1 && w.ingress("fixed").len() == 2
    })
    .await;
    assert!(within("172.17.0.0/24", &w.ingress("by-name")));
    assert_eq!(
        w.ingress("fixed"),
        BTreeSet::from([
            "172.16.0.77".parse().unwrap(),
            "fd00:b::77".parse().unwrap()
        ])
    );
    assert_eq!(w.held(&fixed).await, w.ingress("fixed"));

    // A new pool asked for by CIDR: the old address goes, one from the
    // pool comes.
    let before = w.ingress("by-name");
    w.change("by-name", |s| {
        s["metadata"]["annotations"]["projectcalico.org/ipv4pools"] = json!("[\"172.16.0.0/24\"]");
    })
    .await;
    pass_until(&controller, || {
        let now = w.ingress("by-name");
        now.len() == 1 && within("172.16.0.0/24", &now)
    })
    .await;
    for address in before {
        assert!(w.engine.attributes_of(address).await.unwrap().is_none());
    }
    assert_eq!(w.held(&by_name).await, w.ingress("by-name"));

    // A fixed address changed: the old one is released.
    w.change("fixed", |s| {
        s["metadata"]["annotations"]["projectcalico.org/loadBalancerIPs"] =
            json!("[\"172.16.0.78\"]");
    })
    .await;
    pass_until(&controller, || {
        w.ingress("fixed") == BTreeSet::from(["172.16.0.78".parse().unwrap()])
    })
    .await;
    assert_eq!(w.held(&fixed).await, w.ingress("fixed"));

    // An address outside every LoadBalancer pool is refused, and nothing
    // is written.
    let workload = w
        .create(
            "in-workload-pool",
            lb(&["IPv4"], "SingleStack"),
            json!({"projectcalico.org/loadBalancerIPs": "[\"10.0.0.5\"]"}),
        )
        .await;
    pass_until(&controller, || {
        w.api
            .core("services", Some(NAMESPACE), "in-workload-pool")
            .is_some()
    })
    .await;
    let report = controller.pass().await.unwrap();
    assert_eq!(report.failed, 1);
    assert!(w.held(&workload).await.is_empty());
    assert!(w.ingress("in-workload-pool").is_empty());
}

#[tokio::test]
async fn a_deleted_or_changed_service_frees_its_address() {
    let w = World::start().await;
    let gone = w
        .create("gone", lb(&["IPv4"], "SingleStack"), json!({}))
        .await;
    let changed = w
        .create("changed", lb(&["IPv4"], "SingleStack"), json!({}))
        .await;
    let other = w
        .create("other-class", lb(&["IPv4"], "SingleStack"), json!({}))
        .await;
    let controller = w.controller(w.engine.clone(), "a");
    pass_until(&controller, || {
        ["gone", "changed", "other-class"]
            .iter()
            .all(|s| w.ingress(s).len() == 1)
    })
    .await;
    let gone_ip = *w.ingress("gone").iter().next().unwrap();
    w.services()
        .delete("gone", &DeleteParams::default())
        .await
        .unwrap();
    w.change("changed", |s| {
        s["spec"]["type"] = json!("ClusterIP");
    })
    .await;
    w.change("other-class", |s| {
        s["spec"]["loadBalancerClass"] = json!("metallb");
    })
    .await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        controller.pass().await.unwrap();
        let held =
            w.held(&gone).await.len() + w.held(&changed).await.len() + w.held(&other).await.len();
        if held == 0 && w.ingress("other-class").is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{held} still held");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(w.engine.attributes_of(gone_ip).await.unwrap().is_none());
    // Created again under the same name, it is a new owner.
    let again = w
        .create("gone", lb(&["IPv4"], "SingleStack"), json!({}))
        .await;
    pass_until(&controller, || w.ingress("gone").len() == 1).await;
    assert_ne!(again.metadata.uid, gone.metadata.uid);
    assert_eq!(w.held(&again).await, w.ingress("gone"));
}

#[tokio::test]
async fn a_second_replica_takes_over_without_changing_any_address() {
    let w = World::start().await;
    for name in ["a", "b", "c"] {
        w.create(name, lb(&["IPv4", "IPv6"], "PreferDualStack"), json!({}))
            .await;
    }
    let first = w.controller(w.engine.clone(), "replica-1");
    let (stop_first, first_stopped) = tokio::sync::watch::channel(false);
    let first_run = tokio::spawn(first.run(first_stopped));
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while ["a", "b", "c"].iter().any(|s| w.ingress(s).len() != 2) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "first replica never served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before: Vec<BTreeSet<IpAddr>> = ["a", "b", "c"].iter().map(|s| w.ingress(s)).collect();
    let blocks_before = w.api.objects("ipamblocks");

    // A second replica, its own datastore connection, waits for the Lease.
    let second_engine = World::connect_engine(&w.api).await;
    let second = w.controller(second_engine, "replica-2");
    let (stop_second, second_stopped) = tokio::sync::watch::channel(false);
    let second_run = tokio::spawn(second.run(second_stopped));
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_first.send(true).unwrap();
    first_run.await.unwrap();
    // The second leads now: a new Service is served, the others untouched.
    w.create("d", lb(&["IPv4"], "SingleStack"), json!({})).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while w.ingress("d").len() != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "second replica never served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lease = Api::<Lease>::namespaced(w.client.clone(), NAMESPACE)
        .get("ipam-server-loadbalancer")
        .await
        .unwrap();
    let holder = lease.spec.and_then(|s| s.holder_identity);
    assert_eq!(holder.as_deref(), Some("replica-2"));
    let after: Vec<BTreeSet<IpAddr>> = ["a", "b", "c"].iter().map(|s| w.ingress(s)).collect();
    assert_eq!(before, after);
    // Nothing was assigned twice: the old blocks hold what they held, plus
    // at most the new Service's address.
    let allocated = |blocks: &[Value]| -> usize {
        blocks
            .iter()
            .map(|b| {
                b["spec"]["allocations"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|a| !a.is_null())
                    .count()
            })
            .sum()
    };
    assert_eq!(
        allocated(&w.api.objects("ipamblocks")),
        allocated(&blocks_before) + 1
    );
    stop_second.send(true).unwrap();
    second_run.await.unwrap();
}

impl World {
    async fn connect_engine(api: &ApiServer) -> Arc<Ipam<dyn Datastore>> {
        let store = KubernetesStore::connect(Some(api.kubeconfig()))
            .await
            .unwrap();
        Arc::new(Ipam::new(Arc::new(store)))
    }
}

#[tokio::test]
async fn a_workload_pool_never_serves_a_service_nor_a_load_balancer_pool_a_pod() {
    let api = ApiServer::start().await;
    let w = World::connect(api).await;
    w.pool("workload", "10.0.0.0/24", None).await;
    let service = w
        .create("web", lb(&["IPv4"], "SingleStack"), json!({}))
        .await;
    let controller = w.controller(w.engine.clone(), "a");
    pass_until(&controller, || {
        w.api.core("services", Some(NAMESPACE), "web").is_some()
    })
    .await;
    // No LoadBalancer pool: nothing assigned, nothing written.
    for _ in 0..3 {
        controller.pass().await.unwrap();
    }
    assert!(w.held(&service).await.is_empty());
    assert!(w.ingress("web").is_empty());
    assert!(w.api.objects("ipamblocks").is_empty());

    // A LoadBalancer pool arrives; the next pass serves the Service from it.
    w.pool("lb", "172.16.0.0/24", Some(AllowedUse::LoadBalancer))
        .await;
    pass_until(&controller, || w.ingress("web").len() == 1).await;
    assert!(within("172.16.0.0/24", &w.ingress("web")));

    // A pod is never given an address from the LoadBalancer pool, even
    // with the workload pool full.
    let mut request = AutoAssignRequest::new(
        HandleId::new("k8s-pod-network.p"),
        NodeName::new("n1"),
        256,
        0,
    );
    request.attributes = [("namespace", "default"), ("pod", "p"), ("node", "n1")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let got = w.engine.auto_assign(&request).await.unwrap();
    let pod_ips: BTreeSet<IpAddr> = got.ipv4.addresses.iter().map(IpNet::addr).collect();
    assert!(
        !pod_ips.is_empty() && within("10.0.0.0/24", &pod_ips),
        "{pod_ips:?}"
    );
    // Nor a chosen one.
    let fixed = ipam_core::AssignIpRequest {
        handle: HandleId::new("k8s-pod-network.q"),
        node: NodeName::new("n1"),
        address: "172.16.0.200".parse().unwrap(),
        attributes: Default::default(),
    };
    assert!(w.engine.assign_ip(&fixed).await.is_err());
}

#[tokio::test]
async fn the_collector_releases_a_gone_services_address_after_the_grace_period() {
    let w = World::start().await;
    let live = w
        .create("live", lb(&["IPv4"], "SingleStack"), json!({}))
        .await;
    let controller = w.controller(w.engine.clone(), "a");
    pass_until(&controller, || w.ingress("live").len() == 1).await;
    drop(controller);
    // An address whose Service is gone, with no controller to free it.
    let mut request = AutoAssignRequest::new(
        HandleId::new("lb-orphan"),
        NodeName::new(LOAD_BALANCER_OWNER),
        1,
        0,
    );
    request.intended_use = AllowedUse::LoadBalancer;
    request.attributes = [
        ("namespace", NAMESPACE),
        ("service", "gone"),
        ("type", "LoadBalancer"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let orphan = w.engine.auto_assign(&request).await.unwrap().ipv4.addresses[0].addr();
    let grace = Duration::from_secs(900);
    let clock = ManualClock::new();
    let mut collector = Collector::new(
        w.client.clone(),
        w.engine.clone(),
        GcOptions {
            grace,
            interval: Duration::from_secs(1),
            lease: LeaseOptions {
                namespace: NAMESPACE.into(),
                name: "gc".into(),
                identity: "me".into(),
                duration: Duration::from_secs(15),
                renew_every: Duration::from_secs(5),
            },
        },
        Arc::new(GcMetrics::default()),
        clock.clone(),
        Watched::start(&w.client),
    );
    let (_leading_tx, leading) = tokio::sync::watch::channel(true);
    let first = collector.pass(&leading).await.unwrap();
    assert!(first.released.is_empty());
    assert_eq!(first.candidates, 1, "only the orphan is a candidate");
    clock.advance(grace);
    let later = collector.pass(&leading).await.unwrap();
    assert_eq!(later.released, [orphan]);
    assert_eq!(
        w.held(&live).await,
        w.ingress("live"),
        "a live Service's address stays"
    );
}
