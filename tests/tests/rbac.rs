//! The ClusterRoles of deploy/01-rbac.yaml against what the code asks the
//! Kubernetes API for. Each component runs a workload through the
//! in-process API server, which records every request in RBAC's terms; the
//! role bound to the component's service account must allow every one of
//! them, and must name nothing the workload did not use, save the few
//! permissions only a failure path needs (listed below, each with why).

use std::collections::BTreeSet;
use std::sync::Arc;

use std::time::Duration;

use ipam_core::affinity::LOAD_BALANCER_OWNER;
use ipam_core::{AllowedUse, AutoAssignRequest, Pool, PoolSpec};
use ipam_core::{HandleId, NodeName};
use ipam_server::app::{router, AppConfig};
use ipam_server::clock::ManualClock;
use ipam_server::clock::SystemClock;
use ipam_server::gc::{Collector, GcMetrics, GcOptions, Watched};
use ipam_server::lease::LeaseOptions;
use ipam_server::loadbalancer::service::handle_of;
use ipam_server::loadbalancer::{AssignIps, Controller, LoadBalancerOptions};
use ipam_service::labels::KubernetesLabels;
use ipam_store::kubernetes::KubernetesStore;
use ipam_store::{Datastore, Ipam};
use serde_json::{json, Value};
use testkit::apiserver::{Access, ApiServer};

/// (verb, group, resource, resource names or empty for any).
type Rule = (String, String, String, Vec<String>);

/// The rules of each ClusterRole and the service accounts bound to it.
fn roles() -> Vec<(String, Vec<Rule>, Vec<String>)> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/01-rbac.yaml"
    ))
    .unwrap();
    let documents: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    let mut roles = Vec::new();
    // A Role is bound by a RoleBinding in its namespace (the server's
    // Lease), a ClusterRole by a ClusterRoleBinding.
    for role in documents
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
    {
        let binding_kind = format!("{}Binding", role["kind"].as_str().unwrap());
        let name = role["metadata"]["name"].as_str().unwrap().to_string();
        let mut rules = Vec::new();
        for rule in role["rules"].as_array().unwrap() {
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    for verb in strings(&rule["verbs"]) {
                        rules.push((
                            verb,
                            group.clone(),
                            resource.clone(),
                            strings(&rule["resourceNames"]),
                        ));
                    }
                }
            }
        }
        let accounts = documents
            .iter()
            .filter(|d| {
                d["kind"] == binding_kind.as_str()
                    && d["roleRef"]["name"] == name.as_str()
                    && d["metadata"]["namespace"] == role["metadata"]["namespace"]
            })
            .flat_map(|b| b["subjects"].as_array().unwrap().iter())
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect();
        roles.push((name, rules, accounts));
    }
    roles
}

/// The rules of every role bound to `account`.
fn rules_of(account: &str) -> Vec<Rule> {
    let bound: Vec<_> = roles()
        .into_iter()
        .filter(|(_, _, accounts)| accounts.iter().any(|a| a == account))
        .collect();
    assert!(!bound.is_empty(), "{account} is bound to no role");
    bound.into_iter().flat_map(|(_, rules, _)| rules).collect()
}

fn allows(rule: &Rule, access: &Access) -> bool {
    let (verb, group, resource, names) = rule;
    *verb == access.verb
        && *group == access.group
        && *resource == access.resource
        && (names.is_empty() || access.name.as_ref().is_some_and(|n| names.contains(n)))
}

/// Every access allowed; every rule used, or excused.
fn assert_least_privilege(account: &str, accesses: &BTreeSet<Access>, excused: &[(&str, &str)]) {
    let rules = rules_of(account);
    let denied: Vec<&Access> = accesses
        .iter()
        .filter(|a| !rules.iter().any(|r| allows(r, a)))
        .collect();
    assert!(denied.is_empty(), "{account} would be refused: {denied:#?}");
    let unused: Vec<&Rule> = rules
        .iter()
        .filter(|r| !accesses.iter().any(|a| allows(r, a)))
        .filter(|(verb, _, resource, _)| !excused.contains(&(verb.as_str(), resource.as_str())))
        .collect();
    assert!(
        unused.is_empty(),
        "{account} is allowed more than it uses: {unused:#?}"
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn with_pool(runtime: &tokio::runtime::Runtime) -> ApiServer {
    runtime.block_on(async {
        let api = ApiServer::start().await;
        let store = KubernetesStore::connect(Some(api.kubeconfig()))
            .await
            .unwrap();
        let engine = Ipam::new(Arc::new(store) as Arc<dyn Datastore>);
        let spec = PoolSpec {
            block_size: Some(26),
            ..PoolSpec::new("10.0.0.0/24".parse().unwrap())
        };
        engine
            .create_pool(Pool::new("pool", spec).unwrap())
            .await
            .unwrap();
        api.forget_accesses();
        api
    })
}

#[test]
fn the_cni_plugins_role_allows_what_direct_mode_does_and_no_more() {
    let runtime = runtime();
    let api = with_pool(&runtime);
    let config = |version: &str, extra: Value| {
        let mut config = json!({
            "cniVersion": version, "name": "k8s-pod-network", "type": "calico", "nodename": "node-1",
            "datastore_type": "kubernetes",
            "kubernetes": {"kubeconfig": api.kubeconfig()},
            "ipam": {"type": "calico-ipam"}
        });
        for (key, value) in extra.as_object().unwrap() {
            config[key] = value.clone();
        }
        config.to_string().into_bytes()
    };
    let run = |command: &str, container: &str, args: &str, stdin: &[u8]| {
        let env = |name: &str| -> Option<String> {
            match name {
                "CNI_COMMAND" => Some(command.to_string()),
                "CNI_CONTAINERID" => Some(container.to_string()),
                "CNI_NETNS" => Some("/run/netns/x".to_string()),
                "CNI_IFNAME" => Some("eth0".to_string()),
                "CNI_PATH" => Some("/opt/cni/bin".to_string()),
                "CNI_ARGS" => Some(args.to_string()),
                _ => None,
            }
        };
        ipam_cni::run(env, stdin).unwrap_or_else(|e| panic!("{command} {container}: {e:?}"))
    };
    // Everything a kubelet asks of it, on the Kubernetes datastore.
    let added = run(
        "ADD",
        "c1",
        "K8S_POD_NAMESPACE=default;K8S_POD_NAME=p1",
        &config("1.1.0", json!({})),
    )
    .unwrap();
    run("ADD", "c2", "IP=10.0.0.200", &config("1.1.0", json!({})));
    run(
        "CHECK",
        "c1",
        "",
        &config("1.1.0", json!({"prevResult": added})),
    );
    run("DEL", "c2", "", &config("1.1.0", json!({})));
    run(
        "GC",
        "",
        "",
        &config("1.1.0", json!({"cni.dev/valid-attachments": []})),
    );
    run("STATUS", "", "", &config("1.1.0", json!({})));
    // Reading the pool by name resolves it through the pool list.
    run(
        "ADD",
        "c3",
        "",
        &config(
            "1.1.0",
            json!({"ipam": {"type": "calico-ipam", "ipv4_pools": ["pool"]}}),
        ),
    );
    assert_least_privilege(
        "calico-ipam",
        &api.accesses(),
        &[
            // Undoing a claim that lost a race deletes the pending
            // affinity and the block it made (engine: undo of a plan).
            ("delete", "blockaffinities"),
            ("delete", "ipamblocks"),
        ],
    );
}

#[test]
fn the_servers_role_allows_what_every_route_does_and_no_more() {
    let runtime = runtime();
    let api = with_pool(&runtime);
    let accesses = runtime.block_on(async {
        let store = KubernetesStore::connect(Some(api.kubeconfig()))
            .await
            .unwrap();
        let client = store.client().clone();
        let engine: Arc<Ipam<dyn Datastore>> = Arc::new(Ipam::new(Arc::new(store)));
        let engine_for_gc = (engine.clone(), client);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        // Labels as the server reads them without a watch (the collector's
        // watch, started below, covers the rest): a Node and a Namespace
        // by name.
        let labels = KubernetesLabels::new(engine_for_gc.1.clone());
        let app = router(
            engine,
            AppConfig {
                labels: Some(Arc::new(labels)),
                ..AppConfig::default()
            },
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::new();
        let call = |method: reqwest::Method, path: &str, body: Option<Value>| {
            let mut request = client.request(method, format!("{base}{path}"));
            if let Some(body) = body {
                request = request.json(&body);
            }
            async move {
                let response = request.send().await.unwrap();
                let status = response.status();
                let text = response.text().await.unwrap();
                assert!(status.is_success(), "{status} {text}");
                serde_json::from_str::<Value>(&text).unwrap_or(Value::Null)
            }
        };
        use reqwest::Method;
        let got = call(
            Method::POST,
            "/v1/assign",
            Some(json!({"handle": "h1", "node": "n1", "ipv4": 1,
                        "attributes": {"namespace": "default", "pod": "p1"}})),
        )
        .await;
        let address = got["ipv4"][0]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string();
        call(
            Method::POST,
            "/v1/assign-ip",
            Some(json!({"handle": "h2", "node": "n1", "address": "10.0.0.250"})),
        )
        .await;
        call(Method::GET, "/v1/handles/h1", None).await;
        call(Method::GET, "/v1/handles?node=n1", None).await;
        call(Method::GET, &format!("/v1/addresses/{address}"), None).await;
        call(
            Method::POST,
            "/v1/release",
            Some(json!({"addresses": [{"address": "10.0.0.250"}]})),
        )
        .await;
        call(Method::DELETE, "/v1/handles/h1", None).await;
        call(Method::GET, "/v1/pools", None).await;
        call(Method::GET, "/v1/pools/pool", None).await;
        call(
            Method::POST,
            "/v1/pools",
            Some(json!({"name": "p2", "spec": {"cidr": "10.1.0.0/24"}})),
        )
        .await;
        call(
            Method::PUT,
            "/v1/pools/p2",
            Some(json!({"spec": {"cidr": "10.1.0.0/24", "disabled": true}})),
        )
        .await;
        call(Method::DELETE, "/v1/pools/p2", None).await;
        call(
            Method::POST,
            "/v1/reservations",
            Some(json!({"name": "r", "spec": {"reservedCIDRs": ["10.0.0.1"]}})),
        )
        .await;
        call(Method::GET, "/v1/reservations", None).await;
        call(Method::GET, "/v1/reservations/r", None).await;
        call(Method::DELETE, "/v1/reservations/r", None).await;
        call(Method::GET, "/v1/config", None).await;
        call(
            Method::PUT,
            "/v1/config",
            Some(json!({"strictAffinity": true, "autoAllocateBlocks": true})),
        )
        .await;
        call(
            Method::PUT,
            "/v1/config",
            Some(json!({"strictAffinity": false, "autoAllocateBlocks": true})),
        )
        .await;
        // The whole pool: n2 gets every block n1 does not hold.
        let claimed = call(
            Method::POST,
            "/v1/nodes/n2/affinities",
            Some(json!({"cidr": "10.0.0.0/24"})),
        )
        .await;
        let block = claimed["claimed"][0].as_str().unwrap().to_string();
        call(Method::GET, "/v1/nodes/n2/affinities", None).await;
        call(
            Method::DELETE,
            &format!("/v1/nodes/n2/affinities?cidr={block}"),
            None,
        )
        .await;
        call(Method::DELETE, "/v1/nodes/n1", None).await;
        call(Method::GET, "/v1/affinities", None).await;
        call(Method::GET, "/v1/nodes/n1/labels", None).await;
        let usage = call(Method::GET, "/v1/usage", None).await;
        if let Some(block) = usage["pools"][0]["blocks"].get(0) {
            call(
                Method::GET,
                &format!("/v1/blocks?cidr={}", block["cidr"].as_str().unwrap()),
                None,
            )
            .await;
        }
        call(Method::GET, "/v1/check", None).await;
        call(Method::GET, "/readyz", None).await;
        collect_garbage(&api, engine_for_gc.clone()).await;
        serve_load_balancers(&api, engine_for_gc).await;
        api.accesses()
    });
    assert_least_privilege("ipam-server", &accesses, &[]);
}

/// The load-balancer controller as the server runs it: Services watched,
/// its Lease taken and given up, a Service's address written to its status
/// and released when the Service goes.
async fn serve_load_balancers(
    api: &ApiServer,
    (engine, client): (Arc<Ipam<dyn Datastore>>, kube::Client),
) {
    api.put_core(
        "services",
        json!({"metadata": {"name": "web", "namespace": "default", "uid": "u-web"},
               "spec": {"type": "LoadBalancer", "ipFamilies": ["IPv4"],
                        "ipFamilyPolicy": "SingleStack"}}),
    );
    let options = LoadBalancerOptions {
        assign_ips: AssignIps::AllServices,
        interval: Duration::from_secs(3600),
        lease: LeaseOptions {
            namespace: "calico-ipam-rs".to_string(),
            name: "ipam-server-loadbalancer".to_string(),
            identity: "rbac-test".to_string(),
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        },
    };
    let controller = Controller::new(client, engine.clone(), options, Arc::new(SystemClock));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(controller.run(stopped));
    let handle = handle_of("default", "web", "u-web");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let status = || {
        api.core("services", Some("default"), "web")
            .map(|s| s["status"]["loadBalancer"]["ingress"].clone())
    };
    while status().is_none_or(|i| i.is_null()) {
        assert!(tokio::time::Instant::now() < deadline, "no status written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    api.remove_core("services", Some("default"), "web");
    while !engine
        .addresses_of_handle(&handle)
        .await
        .unwrap()
        .is_empty()
    {
        assert!(tokio::time::Instant::now() < deadline, "not released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(true).unwrap();
    run.await.unwrap();
}

/// The garbage collector as the server runs it: watches, the Lease taken,
/// renewed and given up, a pod on a live node confirmed gone and a deleted
/// node confirmed gone before their addresses are released.
async fn collect_garbage(
    api: &ApiServer,
    (engine, client): (Arc<Ipam<dyn Datastore>>, kube::Client),
) {
    api.put_core("nodes", json!({"metadata": {"name": "live"}}));
    let mut leaked = Vec::new();
    // A LoadBalancer address whose Service is gone: the Service is read
    // again before the release.
    let mut lb = PoolSpec::new("172.16.0.0/24".parse().unwrap());
    lb.allowed_uses = vec![AllowedUse::LoadBalancer];
    engine
        .create_pool(Pool::new("lb", lb).unwrap())
        .await
        .unwrap();
    let mut request = AutoAssignRequest::new(
        HandleId::new("lb-gone"),
        NodeName::new(LOAD_BALANCER_OWNER),
        1,
        0,
    );
    request.intended_use = AllowedUse::LoadBalancer;
    request.attributes = [("namespace", "default"), ("service", "gone")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    leaked.push(engine.auto_assign(&request).await.unwrap().ipv4.addresses[0].addr());
    for (node, pod) in [("live", "gone-pod"), ("deleted", "pod-on-deleted-node")] {
        let mut request = AutoAssignRequest::new(
            HandleId::new(format!("k8s-pod-network.{pod}")),
            NodeName::new(node),
            1,
            0,
        );
        request.attributes = [("namespace", "default"), ("pod", pod), ("node", node)]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        leaked.push(engine.auto_assign(&request).await.unwrap().ipv4.addresses[0].addr());
    }
    let renew_every = Duration::from_secs(5);
    let options = GcOptions {
        grace: Duration::from_secs(10),
        interval: Duration::from_secs(1),
        lease: LeaseOptions {
            namespace: "calico-ipam-rs".to_string(),
            name: "ipam-server-gc".to_string(),
            identity: "rbac-test".to_string(),
            duration: renew_every * 3,
            renew_every,
        },
    };
    // Time moves when the test says: each step renews the Lease and runs a
    // pass, and the grace period passes in two.
    let clock = ManualClock::new();
    let watched = Watched::start(&client);
    let collector = Collector::new(
        client,
        engine.clone(),
        options,
        Arc::new(GcMetrics::default()),
        clock.clone(),
        watched,
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(collector.run(stopped));
    // Its passes and its Lease sleep once it has taken the Lease.
    clock.sleeping(2).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut held = 0;
        for address in &leaked {
            held += usize::from(engine.attributes_of(*address).await.unwrap().is_some());
        }
        if held == 0 && engine.affinities_of("deleted").await.unwrap().is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{held} leaked addresses still held"
        );
        clock.advance(renew_every);
        clock.sleeping(2).await;
    }
    // The hand-over on shutdown.
    stop.send(true).unwrap();
    run.await.unwrap();
}
