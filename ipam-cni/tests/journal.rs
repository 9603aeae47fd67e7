//! DEL during an outage: the release goes to the journal under
//! `ipam.state_dir`, the DEL still fails with code 11, and the first run
//! that reaches the IPAM afterwards makes it — without ever freeing an
//! address handed out again meanwhile. Server mode (ipam-server stopped
//! and started on its unix socket) and direct mode (etcd unreachable).

mod support;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use ipam_core::AssignIpRequest;
use serde_json::{json, Value};
use support::{cni_env, embedded_ipam, result_addresses, run_plugin, PluginDir};

const ARGS: &str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web";

fn config(ipam: Value) -> Value {
    let mut ipam = ipam;
    ipam["type"] = json!("calico-ipam");
    json!({
        "cniVersion": "1.1.0",
        "name": "k8s-pod-network",
        "type": "bridge",
        "nodename": "node-a",
        "ipam": ipam,
    })
}

struct Node {
    plugins: PluginDir,
}

impl Node {
    fn new() -> Node {
        Node {
            plugins: PluginDir::new(),
        }
    }

    fn run(&self, command: &str, container: &str, args: &str, config: &Value) -> support::Outcome {
        let env = cni_env(
            command,
            container,
            "/run/netns/none",
            self.plugins.path(),
            args,
        );
        run_plugin(&self.plugins.plugin("calico-ipam"), &env, config)
    }

    fn add(&self, container: &str, config: &Value) -> IpAddr {
        let out = self.run("ADD", container, ARGS, config).ok();
        result_addresses(&out)[0].addr()
    }

    fn status(&self, config: &Value) -> support::Outcome {
        let env = [("CNI_COMMAND", "STATUS".to_string())];
        run_plugin(&self.plugins.plugin("calico-ipam"), &env, config)
    }

    fn state(&self) -> PathBuf {
        support::state_dir(&self.plugins)
    }

    fn pending(&self) -> Vec<String> {
        match std::fs::read_dir(self.state().join("journal")) {
            Ok(entries) => entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    fn entry(&self, handle: &str) -> Value {
        let text = std::fs::read_to_string(self.state().join("journal").join(handle)).unwrap();
        serde_json::from_str(&text).unwrap()
    }
}

#[track_caller]
fn try_again(out: &support::Outcome) {
    assert_eq!((out.code, out.error_code()), (1, Some(11)), "{out:?}");
}

fn held(pairs: &[(IpAddr, &str)]) -> BTreeMap<IpAddr, String> {
    pairs
        .iter()
        .map(|(a, h)| (*a, format!("k8s-pod-network.{h}")))
        .collect()
}

#[test]
fn a_del_during_an_outage_is_made_by_the_next_add_once_the_server_is_back() {
    let ipam = embedded_ipam();
    let mut server = ipam.serve_switchable();
    let node = Node::new();
    let config = config(json!({"server": server.url()}));
    let first = node.add("c1", &config);

    server.stop();
    let del = node.run("DEL", "c1", ARGS, &config);
    try_again(&del);
    assert!(del.stdout.contains("journal"), "{del:?}");
    assert_eq!(node.pending(), ["k8s-pod-network.c1"]);
    let entry = node.entry("k8s-pod-network.c1");
    assert_eq!(entry["addresses"][0]["address"], json!(first.to_string()));
    assert!(entry["addresses"][0]["sequenceNumber"].is_u64(), "{entry}");
    assert_eq!(entry["legacyHandle"], "default.web");
    assert_eq!(ipam.allocations(), held(&[(first, "c1")]), "still held");
    try_again(&node.run("ADD", "c2", ARGS, &config));

    server.start();
    let second = node.add("c2", &config);
    assert_ne!(first, second);
    assert_eq!(
        ipam.allocations(),
        held(&[(second, "c2")]),
        "the old address is free and nothing is held twice"
    );
    assert!(node.pending().is_empty());
    assert!(ipam.held_by("k8s-pod-network.c1").is_empty());
    // The runtime's retry of the DEL finds nothing left and succeeds.
    assert_eq!(node.run("DEL", "c1", ARGS, &config).ok(), Value::Null);
    assert_eq!(ipam.allocations(), held(&[(second, "c2")]));
}

#[test]
fn a_journaled_release_never_frees_an_address_handed_out_again_meanwhile() {
    let ipam = embedded_ipam();
    let mut server = ipam.serve_switchable();
    let node = Node::new();
    let config = config(json!({"server": server.url()}));
    let to_other = node.add("c3", &config);
    let to_same = node.add("c4", &config);
    server.stop();
    try_again(&node.run("DEL", "c3", ARGS, &config));
    try_again(&node.run("DEL", "c4", ARGS, &config));
    assert_eq!(node.pending().len(), 2);

    // While this node's plugin is not running, both addresses are freed
    // elsewhere (ipamctl, a collector) and handed out again: one to
    // another container, one to the same handle (a new allocation, with a
    // new sequence number).
    server.start();
    let engine = &ipam.engine;
    for (handle, address) in [("other", to_other), ("k8s-pod-network.c4", to_same)] {
        ipam.runtime.block_on(async {
            let old = ["k8s-pod-network.c3", "k8s-pod-network.c4"];
            for h in old {
                engine.release_by_handle(h).await.unwrap();
            }
            engine
                .assign_ip(&AssignIpRequest {
                    handle: ipam_core::HandleId::new(handle),
                    node: ipam_core::NodeName::new("node-b"),
                    address,
                    attributes: Default::default(),
                })
                .await
                .unwrap();
        });
    }
    let before = ipam.allocations();
    assert_eq!(before.len(), 2);

    // Any run replays: STATUS here.
    assert_eq!(node.status(&config).code, 0);
    assert!(
        node.pending().is_empty(),
        "confirmed by the server: settled"
    );
    assert_eq!(ipam.allocations(), before, "neither was freed");
}

#[test]
fn an_add_of_a_container_with_a_pending_release_waits_for_it() {
    // podman's `network reload` runs DEL then ADD with the same container
    // id and its old address as IP=.
    let ipam = embedded_ipam();
    let mut server = ipam.serve_switchable();
    let node = Node::new();
    let config = config(json!({"server": server.url()}));
    let address = node.add("c5", &config);
    let reload_args = format!("{ARGS};IP={address}");
    // Without the ADD's record the release goes by handle.
    std::fs::remove_file(node.state().join("assigned/k8s-pod-network.c5")).unwrap();
    server.stop();
    try_again(&node.run("DEL", "c5", ARGS, &config));
    assert_eq!(node.entry("k8s-pod-network.c5").get("addresses"), None);

    server.start();
    // The ADD replays first (the old allocation goes), then takes the
    // address again as a new allocation of the same handle.
    let out = node.run("ADD", "c5", &reload_args, &config).ok();
    assert_eq!(result_addresses(&out)[0].addr(), address);
    assert!(node.pending().is_empty());
    assert_eq!(ipam.allocations(), held(&[(address, "c5")]));
}

#[test]
fn an_add_of_a_container_fails_while_its_release_cannot_be_made() {
    let ipam = embedded_ipam();
    let mut server = ipam.serve_switchable();
    let node = Node::new();
    let config = config(json!({"server": server.url()}));
    let address = node.add("c6", &config);
    server.stop();
    try_again(&node.run("DEL", "c6", ARGS, &config));
    // The same container comes back while the server is still down: the
    // ADD must not go ahead (in direct mode, or against a server reachable
    // only for it, it would get the old allocation back as "existing",
    // which the pending release would then take away).
    let out = node.run("ADD", "c6", &format!("{ARGS};IP={address}"), &config);
    try_again(&out);
    assert!(out.stdout.contains("k8s-pod-network.c6"), "{out:?}");
    assert_eq!(node.pending(), ["k8s-pod-network.c6"]);
    server.start();
    node.run("ADD", "c6", ARGS, &config).ok();
    assert!(node.pending().is_empty());
    assert_eq!(ipam.allocations().len(), 1);
}

#[test]
fn a_gc_replays_the_journal_first() {
    let ipam = embedded_ipam();
    let mut server = ipam.serve_switchable();
    let node = Node::new();
    let log = node.plugins.path().join("cni.log");
    let mut config = config(json!({"server": server.url()}));
    config["log_file_path"] = json!(log);
    let address = node.add("c7", &config);
    server.stop();
    try_again(&node.run("DEL", "c7", ARGS, &config));
    server.start();
    let mut gc = config.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    let env = [
        ("CNI_COMMAND", "GC".to_string()),
        ("CNI_PATH", node.plugins.path().display().to_string()),
    ];
    run_plugin(&node.plugins.plugin("calico-ipam"), &env, &gc).ok();
    assert!(node.pending().is_empty());
    assert!(!ipam.allocations().contains_key(&address));
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("made the release a DEL had recorded"),
        "{logged}"
    );
}

#[test]
fn direct_mode_on_etcd_journals_a_del_the_datastore_did_not_answer() {
    if !testkit::require::etcd() {
        return;
    }
    let (_runtime, etcd) = support::started_etcd();
    let ipam = support::etcd_ipam(&etcd.endpoint());
    let node = Node::new();
    let direct = |endpoint: &str| {
        let mut config = config(json!({"timeout_seconds": 2}));
        config["datastore_type"] = json!("etcdv3");
        config["etcd_endpoints"] = json!(endpoint);
        config
    };
    let up = direct(&etcd.endpoint());
    let address = node.add("d1", &up);
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = direct(&format!("http://{}", dead.local_addr().unwrap()));
    drop(dead);
    try_again(&node.run("DEL", "d1", ARGS, &down));
    assert_eq!(node.pending(), ["k8s-pod-network.d1"]);
    assert!(ipam.allocations().contains_key(&address));
    node.add("d2", &up);
    assert!(node.pending().is_empty());
    assert!(!ipam.allocations().contains_key(&address));
    assert_eq!(ipam.allocations().len(), 1);
}
