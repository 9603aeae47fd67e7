//! Calico's IPAM annotations under a main plugin that is not Calico's
//! (issue 17, item 6): calico-ipam in server mode under a `bridge` config,
//! against ipam-server on the Kubernetes datastore (testkit's API server
//! holding real Pod and Namespace objects). ipam-server follows the pod's
//! `cni.projectcalico.org/ipv4pools` over its namespace's, over the
//! config's `ipv4_pools`, and gives a pod its `ipAddrs`; under `type:
//! calico` it leaves them to Calico's main plugin, which has rewritten
//! the config already (tests/calico_main_plugin.rs).

mod support;

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use ipam_api::AddressState;
use ipam_core::{IpamConfig, Pool, PoolSpec};
use ipam_store::kubernetes::KubernetesStore;
use ipam_store::{Datastore, Ipam};
use ipnet::IpNet;
use serde_json::{json, Value};
use support::{cni_env, result_addresses, run_plugin, runtime, Outcome, PluginDir, Served};
use testkit::apiserver::ApiServer;

const CONFIG_POOL: &str = "10.1.0.0/24";
const NAMESPACE_POOL: &str = "10.2.0.0/24";
const POD_POOL: &str = "10.3.0.0/24";
const IPV6_POOL: &str = "fd00:6::/120";
const NETWORK: &str = "pods";

/// An API server with the three IPv4 pools (none with a selector: the
/// config or an annotation chooses), an IPv6 pool, and two namespaces:
/// `plain`, and `annotated` whose pods default to `ns-pool`.
fn cluster(rt: &tokio::runtime::Runtime) -> ApiServer {
    let api = rt.block_on(ApiServer::start());
    let store = rt
        .block_on(KubernetesStore::connect(Some(api.kubeconfig())))
        .unwrap();
    let engine: Ipam<dyn Datastore> = Ipam::new(Arc::new(store));
    rt.block_on(async {
        for (name, cidr, block) in [
            ("config-pool", CONFIG_POOL, 26),
            ("ns-pool", NAMESPACE_POOL, 26),
            ("pod-pool", POD_POOL, 26),
            ("six-pool", IPV6_POOL, 122),
        ] {
            let spec = PoolSpec {
                block_size: Some(block),
                ..PoolSpec::new(cidr.parse().unwrap())
            };
            engine
                .create_pool(Pool::new(name, spec).unwrap())
                .await
                .unwrap();
        }
        engine.set_config(IpamConfig::default()).await.unwrap();
    });
    api.put_core("nodes", json!({"metadata": {"name": "node-a"}}));
    api.put_core("namespaces", json!({"metadata": {"name": "plain"}}));
    api.put_core(
        "namespaces",
        json!({"metadata": {"name": "annotated",
            "annotations": {"cni.projectcalico.org/ipv4pools": r#"["ns-pool"]"#}}}),
    );
    api
}

fn pod(api: &ApiServer, namespace: &str, name: &str, annotations: Value) {
    api.put_core(
        "pods",
        json!({"metadata": {"name": name, "namespace": namespace, "annotations": annotations},
               "spec": {"nodeName": "node-a"}}),
    );
}

fn server(api: &ApiServer, dir: &Path) -> Served {
    Served::on_kubernetes(dir, api.kubeconfig(), "annotations-test")
}

/// A bridge network whose IPAM is calico-ipam talking to `served`, with
/// the config's pool `config-pool`.
fn bridge(served: &Served, main: &str) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": NETWORK, "type": main, "bridge": "cni0",
        "nodename": "node-a",
        "ipam": {"type": "calico-ipam", "server": served.url, "ipv4_pools": ["config-pool"]},
    })
}

fn run(plugins: &PluginDir, command: &str, config: &Value, pod: (&str, &str)) -> Outcome {
    let (namespace, name) = pod;
    let args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name}");
    // One container per pod and network: the pod's name is its id.
    let container = format!("{namespace}-{name}");
    let env = cni_env(
        command,
        &container,
        "/run/netns/none",
        plugins.path(),
        &args,
    );
    run_plugin(&plugins.plugin("calico-ipam"), &env, config)
}

fn added(plugins: &PluginDir, config: &Value, pod: (&str, &str)) -> Vec<IpNet> {
    result_addresses(&run(plugins, "ADD", config, pod).ok())
}

fn handle(pod: (&str, &str)) -> String {
    format!("{NETWORK}.{}-{}", pod.0, pod.1)
}

fn assert_in(addresses: &[IpNet], pool: &str, what: &str) {
    let pool: IpNet = pool.parse().unwrap();
    assert!(
        addresses.len() == 1 && pool.contains(&addresses[0].addr()),
        "{what}: got {addresses:?}, wanted one address of {pool}"
    );
}

#[test]
fn kubernetes_the_pods_pools_win_over_the_namespaces_over_the_cni_configs() {
    let rt = runtime();
    let api = cluster(&rt);
    pod(&api, "plain", "bare", json!({}));
    pod(&api, "annotated", "bare", json!({}));
    pod(
        &api,
        "annotated",
        "by-cidr",
        json!({"cni.projectcalico.org/ipv4pools": r#"["10.3.0.0/24"]"#}),
    );
    // An empty annotation is none (k8s.go: `len(v4poolpod) != 0`).
    pod(
        &api,
        "annotated",
        "empty",
        json!({"cni.projectcalico.org/ipv4pools": ""}),
    );
    let dir = tempfile::tempdir().unwrap();
    let served = server(&api, dir.path());
    let plugins = PluginDir::new();
    let config = bridge(&served, "bridge");
    assert_in(
        &added(&plugins, &config, ("plain", "bare")),
        CONFIG_POOL,
        "no annotation: the config's pools",
    );
    assert_in(
        &added(&plugins, &config, ("annotated", "bare")),
        NAMESPACE_POOL,
        "the namespace's annotation over the config",
    );
    assert_in(
        &added(&plugins, &config, ("annotated", "by-cidr")),
        POD_POOL,
        "the pod's annotation (a CIDR) over the namespace's",
    );
    assert_in(
        &added(&plugins, &config, ("annotated", "empty")),
        NAMESPACE_POOL,
        "an empty pod annotation leaves the namespace's",
    );
    // A pod made after the server started (its watch may not hold it
    // yet: then it is read by name), naming its pool by name, under ptp.
    pod(
        &api,
        "plain",
        "by-name",
        json!({"cni.projectcalico.org/ipv4pools": r#"["pod-pool"]"#}),
    );
    assert_in(
        &added(&plugins, &bridge(&served, "ptp"), ("plain", "by-name")),
        POD_POOL,
        "the pod's annotation (a pool's name) under ptp",
    );
    // Under Calico's main plugin the annotations were applied before
    // calico-ipam ran: what reaches the IPAM is the config.
    pod(
        &api,
        "annotated",
        "under-calico",
        json!({"cni.projectcalico.org/ipv4pools": r#"["pod-pool"]"#}),
    );
    assert_in(
        &added(
            &plugins,
            &bridge(&served, "calico"),
            ("annotated", "under-calico"),
        ),
        CONFIG_POOL,
        "type calico: the config as Calico's plugin passed it",
    );
}

#[test]
fn kubernetes_ip_addrs_are_the_pods_addresses_and_del_frees_them_after_a_restart() {
    let rt = runtime();
    let api = cluster(&rt);
    let fixed = ("plain", "fixed");
    // In a pool the config does not name: as calico-ipam's IP=, pools
    // aside (ipAddrsResult).
    pod(
        &api,
        fixed.0,
        fixed.1,
        json!({"cni.projectcalico.org/ipAddrs": r#"["10.2.0.77"]"#,
               "cni.projectcalico.org/ipv4pools": r#"["pod-pool"]"#}),
    );
    let dir = tempfile::tempdir().unwrap();
    let plugins = PluginDir::new();
    let wanted: IpAddr = "10.2.0.77".parse().unwrap();
    {
        let served = server(&api, dir.path());
        let config = bridge(&served, "bridge");
        let got = added(&plugins, &config, fixed);
        assert_eq!(
            got,
            [IpNet::from(wanted)],
            "the annotated address, as a /32"
        );
        // A repeated ADD gets the same address back.
        assert_eq!(added(&plugins, &config, fixed), got);
        let held = rt
            .block_on(served.client().handle_addresses(&handle(fixed)))
            .unwrap()
            .expect("the pod's handle holds it");
        let held: Vec<IpAddr> = held.addresses.iter().map(IpNet::addr).collect();
        assert_eq!(held, [wanted]);
    }
    // A new server process: the DEL releases by the pod's handle.
    let served = server(&api, dir.path());
    run(&plugins, "DEL", &bridge(&served, "bridge"), fixed).ok();
    let client = served.client();
    assert_eq!(
        rt.block_on(client.handle_addresses(&handle(fixed)))
            .unwrap(),
        None
    );
    let info = rt.block_on(client.address(wanted)).unwrap();
    assert_ne!(info.status, AddressState::InUse, "{info:?}");
}

#[test]
fn kubernetes_a_bad_annotation_is_refused_naming_it_and_nothing_is_taken() {
    let rt = runtime();
    let api = cluster(&rt);
    api.put_core(
        "namespaces",
        json!({"metadata": {"name": "broken",
            "annotations": {"cni.projectcalico.org/ipv4pools": "ns-pool"}}}),
    );
    pod(&api, "broken", "bare", json!({}));
    let ipv4 = "cni.projectcalico.org/ipv4pools";
    let addrs = "cni.projectcalico.org/ipAddrs";
    let cases = [
        (
            "not-json",
            json!({ipv4: "pod-pool"}),
            "pod plain/not-json annotation \"cni.projectcalico.org/ipv4pools\" = pod-pool: failed to parse 'pod-pool' as JSON",
        ),
        (
            "unknown-pool",
            json!({ipv4: r#"["no-such-pool"]"#}),
            "pod plain/unknown-pool annotation \"cni.projectcalico.org/ipv4pools\" = [\"no-such-pool\"]: error parsing pool \"no-such-pool\"",
        ),
        (
            "no-such-cidr",
            json!({ipv4: r#"["10.9.0.0/24"]"#}),
            "pod plain/no-such-cidr annotation \"cni.projectcalico.org/ipv4pools\" = [\"10.9.0.0/24\"]: the given pool (10.9.0.0/24) does not exist, or is not enabled",
        ),
        (
            "outside",
            json!({addrs: r#"["192.0.2.1"]"#}),
            "pod plain/outside annotation \"cni.projectcalico.org/ipAddrs\" = [\"192.0.2.1\"]: ",
        ),
        (
            "taken",
            json!({addrs: r#"["10.1.0.5"]"#}),
            "pod plain/taken annotation \"cni.projectcalico.org/ipAddrs\" = [\"10.1.0.5\"]: ",
        ),
        (
            "half",
            json!({addrs: r#"["10.1.0.6", "fd00::6"]"#}),
            "pod plain/half annotation \"cni.projectcalico.org/ipAddrs\" = [\"10.1.0.6\", \"fd00::6\"]: ",
        ),
        (
            "two-v4",
            json!({addrs: r#"["10.1.0.7", "10.1.0.8"]"#}),
            "cannot have more than one IPv4 address for \"cni.projectcalico.org/ipAddrs\" annotation",
        ),
    ];
    for (name, annotations, _) in &cases {
        pod(&api, "plain", name, annotations.clone());
    }
    pod(&api, "plain", "holder", json!({addrs: r#"["10.1.0.5"]"#}));
    let dir = tempfile::tempdir().unwrap();
    let served = server(&api, dir.path());
    let plugins = PluginDir::new();
    let config = bridge(&served, "bridge");
    let client = served.client();
    let _ = added(&plugins, &config, ("plain", "holder"));
    let broken = ("broken", "bare");
    let refusals = cases
        .iter()
        .map(|(name, _, words)| (("plain", *name), words.to_string()))
        .chain([(
            broken,
            "namespace broken annotation \"cni.projectcalico.org/ipv4pools\" = ns-pool: failed to parse 'ns-pool' as JSON".to_string(),
        )]);
    for (pod, words) in refusals {
        let out = run(&plugins, "ADD", &config, pod);
        let said = format!(
            "{} {}",
            out.output["msg"].as_str().unwrap_or_default(),
            out.output["details"].as_str().unwrap_or_default()
        );
        assert!(
            out.code != 0 && said.contains(&words),
            "{pod:?}: wanted a refusal saying {words:?}, got {}: {}",
            out.code,
            out.stdout
        );
        assert_eq!(
            rt.block_on(client.handle_addresses(&handle(pod))).unwrap(),
            None,
            "{pod:?} took nothing"
        );
    }
    // The half-served request gave its IPv4 address back; the holder keeps
    // its own.
    let states = ["10.1.0.6", "10.1.0.5"].map(|a| {
        rt.block_on(client.address(a.parse().unwrap()))
            .unwrap()
            .status
    });
    assert_eq!(states, [AddressState::Free, AddressState::InUse]);
}

/// The families of `addresses`, in order: 4 and 6.
fn families(addresses: &[IpNet]) -> Vec<u8> {
    addresses
        .iter()
        .map(|a| if a.addr().is_ipv4() { 4 } else { 6 })
        .collect()
}

#[test]
fn kubernetes_ip_families_choose_the_families_pod_over_namespace_over_the_config() {
    let rt = runtime();
    let api = cluster(&rt);
    let families_key = "cni.projectcalico.org/ipFamilies";
    api.put_core(
        "namespaces",
        json!({"metadata": {"name": "six", "annotations": {families_key: r#"["IPv6"]"#}}}),
    );
    pod(
        &api,
        "plain",
        "v6-only",
        json!({families_key: r#"["IPv6"]"#}),
    );
    pod(
        &api,
        "plain",
        "both",
        json!({families_key: r#"["IPv4","IPv6"]"#}),
    );
    pod(&api, "six", "bare", json!({}));
    pod(&api, "six", "v4-only", json!({families_key: r#"["IPv4"]"#}));
    pod(&api, "plain", "bad", json!({families_key: r#"["IPv5"]"#}));
    let dir = tempfile::tempdir().unwrap();
    let served = server(&api, dir.path());
    let plugins = PluginDir::new();
    let ipv4_only = bridge(&served, "bridge");
    let mut dual = ipv4_only.clone();
    dual["ipam"]["assign_ipv6"] = json!("true");
    for (config, pod, wanted, what) in [
        (
            &dual,
            ("plain", "v6-only"),
            vec![6],
            "the pod's [\"IPv6\"] in a dual-stack config",
        ),
        (
            &ipv4_only,
            ("plain", "both"),
            vec![4, 6],
            "the pod's two families in an IPv4 config",
        ),
        (
            &dual,
            ("six", "bare"),
            vec![6],
            "the namespace's, the pod having none",
        ),
        (
            &dual,
            ("six", "v4-only"),
            vec![4],
            "the pod's over the namespace's",
        ),
    ] {
        let got = added(&plugins, config, pod);
        assert_eq!(families(&got), wanted, "{what}: got {got:?}");
        let v6: IpNet = IPV6_POOL.parse().unwrap();
        assert!(
            got.iter()
                .all(|a| a.addr().is_ipv4() || v6.contains(&a.addr())),
            "{got:?}"
        );
    }
    let bad = ("plain", "bad");
    let out = run(&plugins, "ADD", &dual, bad);
    let words = "pod plain/bad annotation \"cni.projectcalico.org/ipFamilies\" = [\"IPv5\"]: error parsing ipFamilies: [\"IPv5\"]";
    let said = format!(
        "{} {}",
        out.output["msg"].as_str().unwrap_or_default(),
        out.output["details"].as_str().unwrap_or_default()
    );
    assert!(
        out.code != 0 && said.contains(words),
        "wanted a refusal saying {words:?}, got {}: {}",
        out.code,
        out.stdout
    );
    assert_eq!(
        rt.block_on(served.client().handle_addresses(&handle(bad)))
            .unwrap(),
        None,
        "nothing taken"
    );
}

/// An ADD for one incarnation of a pod: kubelet's `K8S_POD_UID`, and a
/// sandbox (container) of its own.
fn add_incarnation(
    plugins: &PluginDir,
    config: &Value,
    pod: (&str, &str),
    uid: &str,
) -> Vec<IpNet> {
    let (namespace, name) = pod;
    let args = format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};K8S_POD_UID={uid}"
    );
    let container = format!("{namespace}-{name}-{uid}");
    let env = cni_env("ADD", &container, "/run/netns/none", plugins.path(), &args);
    result_addresses(&run_plugin(&plugins.plugin("calico-ipam"), &env, config).ok())
}

/// A pod deleted and created again under its name, its ADD arriving
/// before ipam-server's pod watch reported the change: the runtime's
/// `K8S_POD_UID` is not the watched pod's, so the pod is read from the API
/// server and the new pod's annotations apply.
#[test]
fn kubernetes_a_pod_recreated_under_its_name_gets_its_own_annotations_before_the_watch_says() {
    let rt = runtime();
    let api = cluster(&rt);
    let again = ("plain", "again");
    let put = |uid: &str, pool: &str| {
        api.put_core(
            "pods",
            json!({"metadata": {"name": again.1, "namespace": again.0, "uid": uid,
                                "annotations": {"cni.projectcalico.org/ipv4pools": pool}},
                   "spec": {"nodeName": "node-a"}}),
        )
    };
    put("uid-1", r#"["ns-pool"]"#);
    let dir = tempfile::tempdir().unwrap();
    let served = server(&api, dir.path());
    let plugins = PluginDir::new();
    let config = bridge(&served, "bridge");
    let get_pod = testkit::apiserver::Access {
        verb: "get".to_string(),
        group: String::new(),
        resource: "pods".to_string(),
        name: Some(again.1.to_string()),
    };
    // Until an ADD reads the pod from the watch (no GET): then the watch
    // holds the first pod. A repeated ADD gets the same address back.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        api.forget_accesses();
        assert_in(
            &add_incarnation(&plugins, &config, again, "uid-1"),
            NAMESPACE_POOL,
            "the first pod's annotation",
        );
        if !api.accesses().contains(&get_pod) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pod was never watched"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    api.pause_watches();
    put("uid-2", r#"["pod-pool"]"#);
    assert_in(
        &add_incarnation(&plugins, &config, again, "uid-2"),
        POD_POOL,
        "the new pod's annotation, while the watch holds the old pod",
    );
    api.resume_watches();
}
