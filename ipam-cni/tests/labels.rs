//! A pod gets the pool its node's (and its namespace's) labels select,
//! through `calico-ipam` in both modes, on every datastore: the labels are
//! read where Calico reads them (the Kubernetes Node and Namespace, the
//! Calico Node resource on etcd, the labels set through the API on the
//! embedded store), never sent by the plugin.
//!
//! The pools are issue 17's example: `10.0.0.0/24` selecting `foo ==
//! "bar"` and `20.0.0.0/24` selecting `foo != "bar"`; a pod on a node
//! labelled `foo=bar` gets `10.0.0.x`, any other `20.0.0.x`. Server mode
//! runs ipam-server's own start-up (`ipam_server::server::run`, what its
//! binary runs) on a unix socket.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipam_api::labels::NodeLabelsBody;
use ipam_core::{IpamConfig, Pool, PoolSpec};
use ipam_store::embedded::EmbeddedStore;
use ipam_store::etcd::{EtcdKv, EtcdOptions, EtcdStore};
use ipam_store::kubernetes::KubernetesStore;
use ipam_store::{Datastore, Ipam};
use ipnet::IpNet;
use serde_json::{json, Value};
use support::{cni_env, result_addresses, run_plugin, runtime, PluginDir, Served};

const IN_ZONE: &str = "10.0.0.0/24";
const OUT_OF_ZONE: &str = "20.0.0.0/24";

/// The issue's two pools, and the IPAMConfig that marks the datastore as
/// set up (so that the server makes no default pool beside them).
async fn zone_pools(engine: &Ipam<dyn Datastore>) {
    for (name, cidr, selector) in [
        ("in-zone", IN_ZONE, r#"foo == "bar""#),
        ("out-of-zone", OUT_OF_ZONE, r#"foo != "bar""#),
    ] {
        let spec = PoolSpec {
            block_size: Some(26),
            node_selector: selector.to_string(),
            ..PoolSpec::new(cidr.parse().unwrap())
        };
        engine
            .create_pool(Pool::new(name, spec).unwrap())
            .await
            .unwrap();
    }
    engine.set_config(IpamConfig::default()).await.unwrap();
}

/// Pools by namespace: `30.0.0.0/24` for namespaces labelled `team=blue`,
/// `40.0.0.0/24` for the others.
async fn team_pools(engine: &Ipam<dyn Datastore>) {
    for (name, cidr, selector) in [
        ("blue", "30.0.0.0/24", r#"team == "blue""#),
        ("not-blue", "40.0.0.0/24", r#"team != "blue""#),
    ] {
        let spec = PoolSpec {
            block_size: Some(26),
            namespace_selector: selector.to_string(),
            ..PoolSpec::new(cidr.parse().unwrap())
        };
        engine
            .create_pool(Pool::new(name, spec).unwrap())
            .await
            .unwrap();
    }
    engine.set_config(IpamConfig::default()).await.unwrap();
}

/// Runs calico-ipam ADD for a pod and returns the address it got.
fn add(plugins: &PluginDir, config: &Value, container: &str, namespace: &str) -> IpNet {
    let out = run(plugins, "ADD", config, container, namespace).ok();
    result_addresses(&out)[0]
}

fn run(
    plugins: &PluginDir,
    command: &str,
    config: &Value,
    container: &str,
    namespace: &str,
) -> support::Outcome {
    let args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={container}");
    let env = cni_env(command, container, "/run/netns/none", plugins.path(), &args);
    run_plugin(&plugins.plugin("calico-ipam"), &env, config)
}

fn config(node: &str, extra: Value) -> Value {
    let mut config = json!({
        "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico",
        "nodename": node, "ipam": {"type": "calico-ipam"},
    });
    for (key, value) in extra.as_object().unwrap() {
        if key == "ipam" {
            for (k, v) in value.as_object().unwrap() {
                config["ipam"][k] = v.clone();
            }
        } else {
            config[key] = value.clone();
        }
    }
    config
}

fn assert_in(address: IpNet, pool: &str, what: &str) {
    let pool: IpNet = pool.parse().unwrap();
    assert!(
        pool.contains(&address.addr()),
        "{what}: got {address}, wanted one of {pool}"
    );
}

#[test]
fn embedded_a_node_labelled_through_the_api_gets_its_zones_pool_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        // Set up before the server holds the data dir.
        let engine: Ipam<dyn Datastore> = Ipam::new(Arc::new(EmbeddedStore::open(&data).unwrap()));
        runtime().block_on(zone_pools(&engine));
    }
    let flags = [
        "--datastore",
        "embedded",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let plugins = PluginDir::new();
    let rt = runtime();
    {
        let served = Served::start(dir.path(), &flags);
        let config = config("node-a", json!({"ipam": {"server": served.url}}));
        // Unlabelled: `foo != "bar"` selects it.
        assert_in(
            add(&plugins, &config, "c1", "default"),
            OUT_OF_ZONE,
            "unlabelled",
        );
        let labels = NodeLabelsBody {
            labels: [("foo".to_string(), "bar".to_string())].into(),
        };
        rt.block_on(served.client().set_node_labels("node-a", &labels))
            .unwrap();
        assert_in(
            add(&plugins, &config, "c2", "default"),
            IN_ZONE,
            "labelled foo=bar",
        );
    }
    // The labels are in the data file: a restarted server still has them.
    let served = Served::start(dir.path(), &flags);
    let node_a = config("node-a", json!({"ipam": {"server": served.url}}));
    assert_in(
        add(&plugins, &node_a, "c3", "default"),
        IN_ZONE,
        "after a restart",
    );
    let other = config("node-b", json!({"ipam": {"server": served.url}}));
    assert_in(
        add(&plugins, &other, "c4", "default"),
        OUT_OF_ZONE,
        "another node",
    );
}

#[test]
fn etcd_the_calico_node_resources_labels_choose_the_pool_in_both_modes() {
    if !testkit::require::etcd() {
        return;
    }
    let (rt, etcd) = support::started_etcd();
    let endpoint = etcd.endpoint();
    let store = rt
        .block_on(EtcdStore::connect(
            std::slice::from_ref(&endpoint),
            EtcdOptions::default(),
        ))
        .unwrap();
    let engine: Ipam<dyn Datastore> = Ipam::new(Arc::new(store));
    rt.block_on(zone_pools(&engine));
    // As calico-node writes the Node resource (libcalico-go's etcdv3
    // backend: the v3 object's JSON under Calico's resource key).
    let kv = {
        let _entered = rt.enter();
        EtcdKv::new(std::slice::from_ref(&endpoint), &EtcdOptions::default()).unwrap()
    };
    let node = json!({
        "kind": "Node", "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": "node-a", "labels": {"foo": "bar", "kubernetes.io/hostname": "node-a"}},
        "spec": {"bgp": {"ipv4Address": "192.0.2.1/24"}},
    });
    rt.block_on(kv.put(
        b"/calico/resources/v3/projectcalico.org/nodes/node-a",
        node.to_string().as_bytes(),
    ))
    .unwrap();
    let plugins = PluginDir::new();
    let direct = json!({"datastore_type": "etcdv3", "etcd_endpoints": endpoint});
    assert_in(
        add(&plugins, &config("node-a", direct.clone()), "d1", "default"),
        IN_ZONE,
        "direct, labelled",
    );
    assert_in(
        add(&plugins, &config("node-b", direct), "d2", "default"),
        OUT_OF_ZONE,
        "direct, no Node resource",
    );

    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(
        dir.path(),
        &["--datastore", "etcd", "--etcd-endpoints", &endpoint],
    );
    let server = json!({"ipam": {"server": served.url}});
    assert_in(
        add(&plugins, &config("node-a", server.clone()), "s1", "default"),
        IN_ZONE,
        "server, labelled",
    );
    assert_in(
        add(&plugins, &config("node-b", server), "s2", "default"),
        OUT_OF_ZONE,
        "server, no Node resource",
    );
    // The labels are calico-node's and calicoctl's to change.
    let refused = rt
        .block_on(served.client().set_node_labels(
            "node-a",
            &NodeLabelsBody {
                labels: Default::default(),
            },
        ))
        .unwrap_err();
    assert!(
        refused.to_string().contains("calicoctl label nodes"),
        "{refused}"
    );
}

/// A testkit API server holding a labelled Node and Namespace.
fn cluster(rt: &tokio::runtime::Runtime) -> (testkit::apiserver::ApiServer, Ipam<dyn Datastore>) {
    let api = rt.block_on(testkit::apiserver::ApiServer::start());
    let store = rt
        .block_on(KubernetesStore::connect(Some(api.kubeconfig())))
        .unwrap();
    api.put_core(
        "nodes",
        json!({"metadata": {"name": "node-a", "labels": {"foo": "bar", "kubernetes.io/hostname": "node-a"}}}),
    );
    api.put_core("nodes", json!({"metadata": {"name": "node-b"}}));
    api.put_core(
        "namespaces",
        json!({"metadata": {"name": "blue-ns", "labels": {"team": "blue"}}}),
    );
    api.put_core("namespaces", json!({"metadata": {"name": "default"}}));
    (api, Ipam::new(Arc::new(store)))
}

fn kubernetes_config(api: &testkit::apiserver::ApiServer, node: &str) -> Value {
    config(
        node,
        json!({"datastore_type": "kubernetes", "kubernetes": {"kubeconfig": api.kubeconfig()}}),
    )
}

fn kubernetes_server(api: &testkit::apiserver::ApiServer, dir: &Path) -> Served {
    Served::on_kubernetes(dir, api.kubeconfig(), "labels-test")
}

#[test]
fn kubernetes_the_nodes_labels_choose_the_pool_in_both_modes() {
    let rt = runtime();
    let (api, engine) = cluster(&rt);
    rt.block_on(zone_pools(&engine));
    let plugins = PluginDir::new();
    assert_in(
        add(
            &plugins,
            &kubernetes_config(&api, "node-a"),
            "d1",
            "default",
        ),
        IN_ZONE,
        "direct, labelled",
    );
    assert_in(
        add(
            &plugins,
            &kubernetes_config(&api, "node-b"),
            "d2",
            "default",
        ),
        OUT_OF_ZONE,
        "direct, unlabelled",
    );

    let dir = tempfile::tempdir().unwrap();
    let served = kubernetes_server(&api, dir.path());
    let server = |node: &str| config(node, json!({"ipam": {"server": served.url}}));
    assert_in(
        add(&plugins, &server("node-a"), "s1", "default"),
        IN_ZONE,
        "server, labelled",
    );
    assert_in(
        add(&plugins, &server("node-b"), "s2", "default"),
        OUT_OF_ZONE,
        "server, unlabelled",
    );
    // `kubectl label node node-b foo=bar`: the server's watch sees it.
    api.put_core(
        "nodes",
        json!({"metadata": {"name": "node-b", "labels": {"foo": "bar"}}}),
    );
    let client = served.client();
    let deadline = Instant::now() + Duration::from_secs(10);
    while rt
        .block_on(client.node_labels("node-b"))
        .unwrap()
        .labels
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "the relabelled Node was never read"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_in(
        add(&plugins, &server("node-b"), "s3", "default"),
        IN_ZONE,
        "server, relabelled",
    );
    // A Node the server has not seen yet is read from the API server.
    api.put_core(
        "nodes",
        json!({"metadata": {"name": "node-c", "labels": {"foo": "bar"}}}),
    );
    assert_in(
        add(&plugins, &server("node-c"), "s4", "default"),
        IN_ZONE,
        "server, new Node",
    );
    let refused = rt
        .block_on(client.set_node_labels(
            "node-a",
            &NodeLabelsBody {
                labels: Default::default(),
            },
        ))
        .unwrap_err();
    assert!(
        refused.to_string().contains("kubectl label node"),
        "{refused}"
    );
}

#[test]
fn kubernetes_the_namespaces_labels_choose_the_pool_in_both_modes() {
    let rt = runtime();
    let (api, engine) = cluster(&rt);
    rt.block_on(team_pools(&engine));
    let plugins = PluginDir::new();
    let direct = kubernetes_config(&api, "node-b");
    assert_in(
        add(&plugins, &direct, "d1", "blue-ns"),
        "30.0.0.0/24",
        "direct, team=blue",
    );
    assert_in(
        add(&plugins, &direct, "d2", "default"),
        "40.0.0.0/24",
        "direct, no team",
    );

    let dir = tempfile::tempdir().unwrap();
    let served = kubernetes_server(&api, dir.path());
    let server = config("node-b", json!({"ipam": {"server": served.url}}));
    assert_in(
        add(&plugins, &server, "s1", "blue-ns"),
        "30.0.0.0/24",
        "server, team=blue",
    );
    assert_in(
        add(&plugins, &server, "s2", "default"),
        "40.0.0.0/24",
        "server, no team",
    );
}

/// A release that empties a block of a pool with a nodeSelector reads the
/// node's labels (Calico's ensureConsistentAffinity, libcalico-go
/// lib/ipam/ipam.go): ipam-server reads them from its Node watch, as its
/// assignments do, not with a GET of the Node per release.
#[test]
fn kubernetes_releases_read_the_nodes_labels_from_the_servers_watch() {
    let rt = runtime();
    let (api, engine) = cluster(&rt);
    rt.block_on(zone_pools(&engine));
    let dir = tempfile::tempdir().unwrap();
    let served = kubernetes_server(&api, dir.path());
    let plugins = PluginDir::new();
    let server = config("node-a", json!({"ipam": {"server": served.url}}));
    let pods = ["r1", "r2", "r3", "r4", "r5"];
    for pod in pods {
        assert_in(
            add(&plugins, &server, pod, "default"),
            IN_ZONE,
            "in the selector's pool",
        );
    }
    let get_node = testkit::apiserver::Access {
        verb: "get".to_string(),
        group: String::new(),
        resource: "nodes".to_string(),
        name: Some("node-a".to_string()),
    };
    // Once reading the node's labels asks the API server nothing, the
    // watch holds the Node.
    let client = served.client();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        api.forget_accesses();
        rt.block_on(client.node_labels("node-a")).unwrap();
        if !api.accesses().contains(&get_node) {
            break;
        }
        assert!(Instant::now() < deadline, "the Node was never watched");
        std::thread::sleep(Duration::from_millis(20));
    }
    for pod in pods {
        run(&plugins, "DEL", &server, pod, "default").ok();
        let handle = format!("k8s-pod-network.{pod}");
        assert_eq!(
            rt.block_on(client.handle_addresses(&handle)).unwrap(),
            None,
            "{pod} released"
        );
    }
    let asked = api.accesses();
    assert!(
        !asked.contains(&get_node),
        "releases read the Node from the API server: {asked:?}"
    );
}
