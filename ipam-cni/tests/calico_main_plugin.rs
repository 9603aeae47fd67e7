//! `calico-ipam` under Calico's own main plugin (`"type": "calico"`): the
//! pod and namespace annotations `cni.projectcalico.org/ipv4pools`,
//! `ipv6pools`, `ipFamilies` and `ipAddrs` never reach IPAM as
//! annotations. Calico's plugin reads them and calls IPAM with what they
//! mean (cni-plugin/pkg/k8s/k8s.go, CmdAddK8s, v3.32.1):
//!
//! - the pools: the network config re-marshalled from a Go map (keys
//!   sorted, no spaces) with `ipam.ipv4_pools` / `ipam.ipv6_pools` set to
//!   the annotation's list (the pod's over the namespace's);
//! - `ipFamilies`: `ipam.assign_ipv4` / `assign_ipv6` set to the strings
//!   `"true"` / `"false"`;
//! - `ipAddrs`: one IPAM ADD per address, with `;IP=<address>` appended
//!   to kubelet's `CNI_ARGS` (callIPAMWithIP), the same container ID each
//!   time; the DEL that follows carries kubelet's `CNI_ARGS` alone.
//!
//! Each test feeds the binary exactly those bytes and that environment.

mod support;

use ipam_core::{Pool, PoolSpec};
use support::{cni_env, embedded_ipam, result_addresses, PluginDir, TestIpam};

/// What kubelet puts in `CNI_ARGS` for a pod.
const KUBELET_ARGS: &str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=c0ffee;K8S_POD_UID=4f9a1c2e-1b2a-4c3d-9e8f-0a1b2c3d4e5f";

/// Beside the support's 198.18.0.0/16: a pool the annotations name, and
/// an IPv6 pool.
fn with_annotated_pools() -> TestIpam {
    let ipam = embedded_ipam();
    for (name, cidr, block) in [
        ("pool-b", "198.19.0.0/24", 26),
        ("pool-v6", "fd00::/120", 122),
    ] {
        let spec = PoolSpec {
            block_size: Some(block),
            ..PoolSpec::new(cidr.parse().unwrap())
        };
        ipam.runtime
            .block_on(ipam.engine.create_pool(Pool::new(name, spec).unwrap()))
            .unwrap();
    }
    ipam
}

/// Calico's network config as Calico's plugin re-marshals it (Go's
/// `json.Marshal` of a map: keys sorted, compact), with `ipam` holding
/// `ipam_before_server` (marshalled keys that sort before `server`). The
/// operator's config names our `server` and a `state_dir` of the test's
/// own; Calico's plugin passes them through like any key.
fn remarshalled(plugins: &PluginDir, server: &str, ipam_before_server: &str) -> Vec<u8> {
    let state = support::state_dir(plugins);
    let state = state.display();
    format!(
        r#"{{"cniVersion":"1.0.0","datastore_type":"kubernetes","ipam":{{{ipam_before_server}"server":"{server}","state_dir":"{state}","type":"calico-ipam"}},"kubernetes":{{"kubeconfig":"/etc/cni/net.d/calico-kubeconfig"}},"log_file_path":"/var/log/calico/cni/cni.log","log_level":"info","mtu":0,"name":"k8s-pod-network","nodename":"node-a","policy":{{"type":"k8s"}},"type":"calico"}}"#
    )
    .into_bytes()
}

/// Runs calico-ipam as Calico's plugin execs it: `stdin` byte for byte.
fn run(plugins: &PluginDir, command: &str, args: &str, stdin: &[u8]) -> support::Outcome {
    let env = cni_env(
        command,
        "c0ffee",
        "/var/run/netns/cni-1",
        plugins.path(),
        args,
    );
    support::run_plugin_raw(&plugins.plugin("calico-ipam"), &env, stdin)
}

#[test]
fn an_ipv4pools_annotation_arrives_as_the_configs_pools_by_name_or_cidr() {
    let ipam = with_annotated_pools();
    let server = ipam.serve_unix();
    let plugins = PluginDir::new();
    // `cni.projectcalico.org/ipv4pools: '["pool-b"]'`, then by CIDR.
    for pools in [r#"["pool-b"]"#, r#"["198.19.0.0/24"]"#] {
        let stdin = remarshalled(&plugins, &server, &format!(r#""ipv4_pools":{pools},"#));
        let added = run(&plugins, "ADD", KUBELET_ARGS, &stdin).ok();
        let address = result_addresses(&added)[0];
        assert!(
            "198.19.0.0/24"
                .parse::<ipnet::IpNet>()
                .unwrap()
                .contains(&address.addr()),
            "{pools}: {address}"
        );
        assert_eq!(ipam.held_by("k8s-pod-network.c0ffee"), [address]);
        run(&plugins, "DEL", KUBELET_ARGS, &stdin).ok();
        assert!(ipam.allocations().is_empty());
    }
}

#[test]
fn an_ipfamilies_annotation_arrives_as_string_flags() {
    let ipam = with_annotated_pools();
    let server = ipam.serve_unix();
    let plugins = PluginDir::new();
    // `cni.projectcalico.org/ipFamilies: '["IPv6"]'`, with the pool
    // annotation `ipv6pools: '["pool-v6"]'`.
    let stdin = remarshalled(
        &plugins,
        &server,
        r#""assign_ipv4":"false","assign_ipv6":"true","ipv6_pools":["pool-v6"],"#,
    );
    let added = run(&plugins, "ADD", KUBELET_ARGS, &stdin).ok();
    let addresses = result_addresses(&added);
    assert_eq!(addresses.len(), 1, "{added}");
    assert!(
        "fd00::/120"
            .parse::<ipnet::IpNet>()
            .unwrap()
            .contains(&addresses[0].addr()),
        "{addresses:?}"
    );
    run(&plugins, "DEL", KUBELET_ARGS, &stdin).ok();
    assert!(ipam.allocations().is_empty());
}

#[test]
fn an_ipaddrs_annotation_arrives_as_one_add_per_address_with_ip_appended() {
    let ipam = with_annotated_pools();
    let server = ipam.serve_unix();
    let plugins = PluginDir::new();
    let stdin = remarshalled(&plugins, &server, "");
    // `cni.projectcalico.org/ipAddrs: '["198.19.0.9", "fd00::9"]'`.
    let mut got = Vec::new();
    for address in ["198.19.0.9", "fd00::9"] {
        let args = format!("{KUBELET_ARGS};IP={address}");
        let added = run(&plugins, "ADD", &args, &stdin).ok();
        // Calico's plugin takes the first address of each answer.
        got.push(result_addresses(&added)[0]);
    }
    assert_eq!(
        got,
        [
            "198.19.0.9/32".parse::<ipnet::IpNet>().unwrap(),
            "fd00::9/128".parse().unwrap()
        ]
    );
    let mut held = ipam.held_by("k8s-pod-network.c0ffee");
    held.sort();
    assert_eq!(held.len(), 2, "one handle holds both: {held:?}");
    // Calico's plugin runs IPAM DEL with kubelet's arguments only.
    run(&plugins, "DEL", KUBELET_ARGS, &stdin).ok();
    assert!(ipam.allocations().is_empty());
}
