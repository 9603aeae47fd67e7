//! Through the `calico-ipam` binary, each refusal a CNI ADD can meet and
//! Calico 3.32 has a sentence for prints a CNI error whose `msg` or
//! `details` contains Calico's sentence verbatim, with the CNI code it has
//! always had (issue 17, item 4): kubelet events carry these, and
//! operators and Calico's CNI tests search for Calico's words. One row per
//! sentence, on a fresh IPAM each, in server mode and, when etcd is
//! installed, in direct mode on etcd.

mod support;

use std::collections::BTreeMap;

use ipam_core::{
    AssignIpRequest, AutoAssignRequest, HandleId, IpamConfig, NodeName, Pool, PoolSpec,
};
use ipam_server::app::AppConfig;
use serde_json::{json, Value};
use support::{cni_env, embedded_ipam, etcd_ipam, run_plugin, PluginDir, TestIpam, POOL};

const NODE: &str = "node-a";
const K8S_ARGS: &str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=nginx";

struct Row {
    name: &'static str,
    /// What the IPAM holds before the ADD.
    setup: fn(&TestIpam),
    /// Keys added to the config's `ipam` section.
    ipam: Value,
    /// `CNI_ARGS`.
    args: &'static str,
    /// The CNI error code the plugin has always printed.
    code: u64,
    /// Calico's sentence.
    sentence: &'static str,
}

fn nothing(_: &TestIpam) {}

/// The one pool selects only nodes labelled zone=a; node-a has no labels.
fn pool_for_zone_a(ipam: &TestIpam) {
    let spec = PoolSpec {
        block_size: Some(26),
        node_selector: "zone == 'a'".into(),
        ..PoolSpec::new(POOL.parse().unwrap())
    };
    let pool = Pool::new("test-pool", spec).unwrap();
    ipam.runtime
        .block_on(ipam.engine.update_pool(pool))
        .unwrap();
}

/// node-a may hold one block, and its one /26 block is full.
fn one_full_block(ipam: &TestIpam) {
    let config = IpamConfig {
        strict_affinity: true,
        max_blocks_per_host: 1,
        ..IpamConfig::default()
    };
    ipam.runtime
        .block_on(ipam.engine.set_config(config))
        .unwrap();
    let request = AutoAssignRequest::new(HandleId::new("full"), NodeName::new(NODE), 64, 0);
    let got = ipam
        .runtime
        .block_on(ipam.engine.auto_assign(&request))
        .unwrap();
    assert_eq!(got.ipv4.addresses.len(), 64);
}

/// Another node holds every address of the pool.
fn pool_full(ipam: &TestIpam) {
    let spec = PoolSpec {
        block_size: Some(30),
        ..PoolSpec::new("198.18.0.0/30".parse().unwrap())
    };
    ipam.runtime
        .block_on(ipam.engine.delete_pool("test-pool"))
        .unwrap();
    ipam.runtime
        .block_on(ipam.engine.create_pool(Pool::new("tiny", spec).unwrap()))
        .unwrap();
    let request = AutoAssignRequest::new(HandleId::new("full"), NodeName::new("node-b"), 4, 0);
    ipam.runtime
        .block_on(ipam.engine.auto_assign(&request))
        .unwrap();
}

/// 198.18.7.7 is held by handle `h`.
fn address_taken(ipam: &TestIpam) {
    let request = AssignIpRequest {
        handle: HandleId::new("h"),
        node: NodeName::new(NODE),
        address: "198.18.7.7".parse().unwrap(),
        attributes: BTreeMap::new(),
    };
    ipam.runtime
        .block_on(ipam.engine.assign_ip(&request))
        .unwrap();
}

fn rows() -> Vec<Row> {
    vec![
        // ipam.go, prepareAffinityBlocksForHost.
        Row {
            name: "no_pool_selects_node",
            setup: pool_for_zone_a,
            ipam: json!({}),
            args: K8S_ARGS,
            code: 100,
            sentence: "no configured Calico pools for node node-a",
        },
        // ipam.go, determinePools.
        Row {
            name: "requested_pool_unavailable",
            setup: nothing,
            ipam: json!({"ipv4_pools": ["40.0.0.0/24"]}),
            args: K8S_ARGS,
            code: 100,
            sentence: "the given pool (40.0.0.0/24) does not exist, or is not enabled",
        },
        // ipam.go, autoAssign: the message Calico records ...
        Row {
            name: "block_limit_message",
            setup: one_full_block,
            ipam: json!({}),
            args: K8S_ARGS,
            code: 100,
            sentence: "Need to allocate an IPAM block but could not - limit of 1 blocks reached for this node",
        },
        // ... and the error Calico's plugin returns (ErrBlockLimit).
        Row {
            name: "block_limit_error",
            setup: one_full_block,
            ipam: json!({}),
            args: K8S_ARGS,
            code: 100,
            sentence: "cannot allocate new block due to per host block limit",
        },
        // ipam.go, PartialFulfillmentError, as ipam_plugin.go wraps it.
        Row {
            name: "pools_exhausted",
            setup: pool_full,
            ipam: json!({}),
            args: K8S_ARGS,
            code: 100,
            sentence: "failed to request IPv4 addresses: Assigned 0 out of 1 requested IPv4 addresses; No IPs available in pools: [198.18.0.0/30]",
        },
        // ipam.go, AssignIP.
        Row {
            name: "address_not_in_pool",
            setup: nothing,
            ipam: json!({}),
            args: "IgnoreUnknown=1;IP=10.9.9.9",
            code: 103,
            sentence: "The provided IP address is not in a configured pool",
        },
        // ipam_block.go, assign: ErrorResourceAlreadyExists, as printed.
        Row {
            name: "address_in_use",
            setup: address_taken,
            ipam: json!({}),
            args: "IgnoreUnknown=1;IP=198.18.7.7",
            code: 101,
            sentence: "resource already exists: 198.18.7.7 with error: Address already assigned in block",
        },
        // cni-plugin/internal/pkg/utils/utils.go, ResolvePools.
        Row {
            name: "requested_pool_of_other_family",
            setup: nothing,
            ipam: json!({"ipv4_pools": ["fd00::/64"]}),
            args: K8S_ARGS,
            code: 7,
            sentence: "\"fd00::\" isn't a IPv4 address",
        },
        // cni-plugin/internal/pkg/utils/utils.go, ResolvePools.
        Row {
            name: "requested_pool_name_unknown",
            setup: nothing,
            ipam: json!({"ipv4_pools": ["no-such-pool"]}),
            args: K8S_ARGS,
            code: 7,
            sentence: "error parsing pool \"no-such-pool\": invalid CIDR address: no-such-pool",
        },
    ]
}

fn config(top: Value, ipam: &Value) -> Value {
    let mut config = json!({
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "type": "calico",
        "nodename": NODE,
        "ipam": {"type": "calico-ipam"},
    });
    let mut ipam = ipam.clone();
    for (key, value) in top.as_object().unwrap() {
        match (key.as_str(), value.as_object()) {
            ("ipam", Some(extra)) => ipam.as_object_mut().unwrap().extend(extra.clone()),
            _ => config[key] = value.clone(),
        }
    }
    for (key, value) in ipam.as_object().unwrap() {
        config["ipam"][key] = value.clone();
    }
    config
}

/// Runs the row's ADD against `ipam`, reached as `top` says; checks the
/// error printed.
fn check(row: &Row, mode: &str, top: Value) {
    let plugins = PluginDir::new();
    let env = cni_env("ADD", "c1", "/run/netns/none", plugins.path(), row.args);
    let out = run_plugin(
        &plugins.plugin("calico-ipam"),
        &env,
        &config(top, &row.ipam),
    );
    let name = row.name;
    assert_eq!(
        (out.code, out.error_code()),
        (1, Some(row.code)),
        "{name} ({mode}): {out:?}"
    );
    let said = |key: &str| out.output[key].as_str().unwrap_or_default().to_string();
    assert!(
        said("msg").contains(row.sentence) || said("details").contains(row.sentence),
        "{name} ({mode}): {} lacks Calico's {:?}",
        out.stdout,
        row.sentence
    );
}

#[test]
fn server_mode_prints_calicos_sentence_for_each_refusal() {
    for row in rows() {
        let ipam = embedded_ipam();
        (row.setup)(&ipam);
        let server = ipam.serve_tcp(AppConfig::default());
        check(&row, "server", json!({"ipam": {"server": server}}));
    }
}

#[test]
fn direct_mode_on_etcd_prints_calicos_sentence_for_each_refusal() {
    if !testkit::require::etcd() {
        return;
    }
    for row in rows() {
        let (_runtime, etcd) = support::started_etcd();
        let ipam = etcd_ipam(&etcd.endpoint());
        (row.setup)(&ipam);
        check(
            &row,
            "direct on etcd",
            json!({"datastore_type": "etcdv3", "etcd_endpoints": etcd.endpoint()}),
        );
    }
}
