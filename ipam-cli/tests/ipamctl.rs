//! The real `ipamctl` binary against the embedded datastore, ipam-server's
//! API over the same data, a real etcd and the Kubernetes datastore: the tables
//! byte for byte against calicoctl's fixtures and our golden files, check
//! and release against injected leaks, and the exit codes.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use std::sync::Arc;

use ipam_core::{AssignIpRequest, Handle};
use ipam_store::etcd::{EtcdOptions, EtcdStore};
use ipam_store::kubernetes::KubernetesStore;
use ipam_store::{Datastore, Ipam, Key, Value};
use serde_json::json;
use support::*;
use testkit::apiserver::ApiServer;
use testkit::etcd::EtcdServer;

/// Runs `check` against the embedded store in `dir` directly and then
/// through an ipam-server over the same directory.
fn in_both_modes(dir: &Path, mut check: impl FnMut(&str, &[String])) {
    check("direct", &embedded(dir));
    let server = Server::start(dir);
    check("server", &server.connection());
}

async fn seed_16_pool_with_13_in_use(dir: &Path) {
    seed_16_pool(&open_embedded(dir)).await;
}

async fn seed_16_pool(engine: &Ipam<dyn Datastore>) {
    engine
        .create_pool(pool("default-ipv4-ippool", "172.17.0.0/16", None))
        .await
        .unwrap();
    for i in 0..13 {
        let node = if i < 9 { "node-1" } else { "node-2" };
        let handle = format!("k8s-pod-network.c{i}");
        assign_pod(engine, &handle, node, &format!("web-{i}"), 1, 0).await;
    }
}

#[tokio::test]
async fn show_reproduces_calicos_table_for_a_16_pool_with_13_addresses_in_use() {
    let dir = tempfile::tempdir().unwrap();
    seed_16_pool_with_13_in_use(dir.path()).await;
    in_both_modes(dir.path(), |mode, connection| {
        let run = ipamctl_with(connection, &["show"]);
        assert_eq!(run.code, 0, "{mode}: {}", run.stderr);
        assert_eq!(run.stdout, fixture("ipam-show-pool-16.txt"), "{mode}");
    });
}

#[tokio::test]
async fn show_reproduces_calicos_table_for_an_empty_24_pool() {
    let dir = tempfile::tempdir().unwrap();
    open_embedded(dir.path())
        .create_pool(pool("pool-zone-1", "192.168.50.0/24", None))
        .await
        .unwrap();
    in_both_modes(dir.path(), |mode, connection| {
        let run = ipamctl_with(connection, &["show"]);
        assert_eq!(run.code, 0, "{mode}: {}", run.stderr);
        assert_eq!(run.stdout, fixture("ipam-show-pool-24.txt"), "{mode}");
    });
}

#[tokio::test]
async fn show_configuration_reproduces_calicos_table_for_the_default_config() {
    let dir = tempfile::tempdir().unwrap();
    drop(open_embedded(dir.path()));
    in_both_modes(dir.path(), |mode, connection| {
        let run = ipamctl_with(connection, &["show", "--show-configuration"]);
        assert_eq!(run.code, 0, "{mode}: {}", run.stderr);
        assert_eq!(run.stdout, fixture("ipam-show-configuration.txt"), "{mode}");
        let run = ipamctl_with(connection, &["show", "--show-configuration", "-o", "json"]);
        let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"strictAffinity": false, "autoAllocateBlocks": true, "maxBlocksPerHost": 0, "ipCooldownSeconds": 0}),
            "{mode}"
        );
    });
}

#[tokio::test]
async fn show_with_no_pools_prints_the_header_alone() {
    let dir = tempfile::tempdir().unwrap();
    drop(open_embedded(dir.path()));
    in_both_modes(dir.path(), |mode, connection| {
        let run = ipamctl_with(connection, &["show", "--show-blocks"]);
        assert_eq!(run.code, 0, "{mode}: {}", run.stderr);
        golden("show-no-pools.txt", &run.stdout);
    });
}

#[tokio::test]
async fn show_blocks_of_ipv4_and_ipv6_pools_and_json_agree_in_both_modes() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = open_embedded(dir.path());
        engine
            .create_pool(pool("v4", "10.0.0.0/16", None))
            .await
            .unwrap();
        engine
            .create_pool(pool("v6", "fd00:10::/64", Some(120)))
            .await
            .unwrap();
        for i in 0..70 {
            let node = ["node-a", "node-b"][i % 2];
            let handle = format!("k8s-pod-network.d{i}");
            assign_pod(&engine, &handle, node, &format!("db-{i}"), 1, 1).await;
        }
    }
    let mut json = Vec::new();
    in_both_modes(dir.path(), |mode, connection| {
        let run = ipamctl_with(connection, &["show", "--show-blocks"]);
        assert_eq!(run.code, 0, "{mode}: {}", run.stderr);
        golden("show-blocks-dual-stack.txt", &run.stdout);
        let run = ipamctl_with(connection, &["show", "-o", "json"]);
        assert_eq!(run.code, 0, "{mode}: {}", run.stderr);
        json.push(serde_json::from_str::<serde_json::Value>(&run.stdout).unwrap());
        let run = ipamctl_with(connection, &["show", "-o", "yaml"]);
        assert!(
            run.stdout.starts_with("pools:\n- name: v4\n"),
            "{mode}: {}",
            run.stdout
        );
    });
    assert_eq!(json[0], json[1], "direct and server JSON differ");
    assert_eq!(json[0]["pools"][0]["inUse"], 70);
    assert_eq!(json[0]["pools"][1]["cidr"], "fd00:10::/64");
    assert_eq!(json[0]["pools"][1]["inUse"], 70);
}

#[tokio::test]
async fn show_borrowed_lists_other_nodes_addresses_and_counts_unclassified_ones() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = open_embedded(dir.path());
        engine
            .create_pool(pool("p", "10.1.0.0/24", None))
            .await
            .unwrap();
        // node-a claims a block; node-b, a tunnel and an old allocation
        // without a node take addresses from it.
        assign_pod(&engine, "k8s-pod-network.own", "node-a", "own", 1, 0).await;
        let block = engine
            .snapshot()
            .await
            .unwrap()
            .blocks()
            .next()
            .unwrap()
            .cidr();
        let attrs = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        for (n, handle, attributes) in [
            (
                10,
                "k8s-pod-network.borrower",
                attrs(&[("node", "node-b"), ("namespace", "shop"), ("pod", "cart-1")]),
            ),
            (
                11,
                "vxlan-tunnel-addr-node-c",
                attrs(&[("node", "node-c"), ("type", "vxlanTunnelAddress")]),
            ),
            (12, "k8s-pod-network.legacy", attrs(&[("pod", "old")])),
        ] {
            engine
                .assign_ip(&AssignIpRequest {
                    handle: ipam_core::HandleId::new(handle),
                    node: ipam_core::NodeName::new("node-b"),
                    address: block.address(n),
                    attributes,
                })
                .await
                .unwrap();
        }
    }
    in_both_modes(dir.path(), |mode, connection| {
        let run = ipamctl_with(connection, &["show", "--show-borrowed"]);
        assert_eq!(run.code, 0, "{mode}: {}", run.stderr);
        golden("show-borrowed.txt", &run.stdout);
        let run = ipamctl_with(connection, &["show", "--show-borrowed", "-o", "json"]);
        let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(json["unclassified"], 1, "{mode}");
        assert_eq!(json["borrowed"][0]["allocatedTo"], "shop/cart-1", "{mode}");
    });
}

#[tokio::test]
async fn show_ip_says_who_holds_an_address_or_that_it_is_free_or_outside_every_pool() {
    let dir = tempfile::tempdir().unwrap();
    seed_16_pool_with_13_in_use(dir.path()).await;
    let held = {
        let engine = open_embedded(dir.path());
        engine
            .addresses_of_handle("k8s-pod-network.c0")
            .await
            .unwrap()[0]
            .addr()
            .to_string()
    };
    in_both_modes(dir.path(), |mode, connection| {
        let run = ipamctl_with(connection, &["show", "--ip", &held]);
        assert_eq!(run.code, 0, "{mode}: {}", run.stderr);
        assert_eq!(
            run.stdout,
            format!(
                "IP {held} is in use\nHandle ID: k8s-pod-network.c0\nActive Owner Attributes:\n  \
                 namespace: default\n  node: node-1\n  pod: web-0\n"
            ),
            "{mode}"
        );
        let run = ipamctl_with(connection, &["show", "--ip", "172.17.255.1"]);
        assert_eq!(
            run.stdout,
            "172.17.255.1 is not assigned\nIt is free in IP pool default-ipv4-ippool.\n",
            "{mode}"
        );
        let run = ipamctl_with(connection, &["show", "--ip", "10.9.9.9", "-o", "json"]);
        let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(json["status"], "notInPool", "{mode}");
    });
}

#[tokio::test]
async fn release_ip_frees_an_address_and_a_free_one_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    seed_16_pool_with_13_in_use(dir.path()).await;
    let addresses: Vec<String> = {
        let engine = open_embedded(dir.path());
        let mut found = Vec::new();
        for handle in ["k8s-pod-network.c1", "k8s-pod-network.c2"] {
            found.push(
                engine.addresses_of_handle(handle).await.unwrap()[0]
                    .addr()
                    .to_string(),
            );
        }
        found
    };
    let direct = embedded(dir.path());
    let run = ipamctl_with(&direct, &["release", "--ip", &addresses[0]]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        format!("Successfully released IP address {}\n", addresses[0])
    );
    let server = Server::start(dir.path());
    let run = ipamctl_with(
        &server.connection(),
        &["release", "--ip", &addresses[1], "--ip", &addresses[0]],
    );
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        format!("Successfully released IP address {}\n", addresses[1])
    );
    assert!(
        run.stderr
            .contains(&format!("IP address {} is not assigned", addresses[0])),
        "{}",
        run.stderr
    );
    let run = ipamctl_with(&server.connection(), &["show"]);
    assert!(run.stdout.contains("| 11 (0%)"), "{}", run.stdout);
}

#[tokio::test]
async fn check_reports_overlapping_pools_directly_and_through_the_server() {
    let dir = tempfile::tempdir().unwrap();
    seed_16_pool_with_13_in_use(dir.path()).await;
    {
        // A pool written by something that skipped the overlap check.
        let engine = open_embedded(dir.path());
        let spec = ipam_core::PoolSpec::new("172.17.3.0/24".parse().unwrap());
        let pool = ipam_core::Pool::new("inner", spec).unwrap();
        engine.store().create(&Value::Pool(pool)).await.unwrap();
    }
    let says = "Found 1 poolsOverlap (inconsistency).\n";
    let run = ipamctl_with(&embedded(dir.path()), &["check"]);
    assert!(run.stdout.contains(says), "{}", run.stdout);
    let server = Server::start(dir.path());
    let run = ipamctl_with(&server.connection(), &["check", "--show-problem-ips"]);
    assert!(run.stdout.contains(says), "{}", run.stdout);
    assert!(
        run.stdout.contains("overlaps pool inner (172.17.3.0/24)"),
        "{}",
        run.stdout
    );
}

#[tokio::test]
async fn check_reports_injected_leaks_and_release_from_report_deletes_only_what_is_still_leaked() {
    let dir = tempfile::tempdir().unwrap();
    seed_16_pool_with_13_in_use(dir.path()).await;
    {
        let engine = open_embedded(dir.path());
        let store = engine.store();
        // An allocation whose handle object is gone, and two handles that
        // hold nothing.
        let key = Key::Handle("k8s-pod-network.c3".into());
        let revision = store.get(&key).await.unwrap().revision;
        store.delete(&key, &revision).await.unwrap();
        for id in ["k8s-pod-network.orphan-1", "k8s-pod-network.orphan-2"] {
            store.create(&Value::Handle(Handle::new(id))).await.unwrap();
        }
    }
    let report = dir.path().join("report.json");
    let report_arg = report.display().to_string();
    let run = ipamctl_with(&embedded(dir.path()), &["check", "-o", &report_arg]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("Found 1 handleMissing (inconsistency).\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("Found 2 handleWithoutAllocations (inconsistency).\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("Check complete; found 3 problems.\n"),
        "{}",
        run.stdout
    );
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(written["schemaVersion"], 2);
    assert_eq!(written["findings"][0]["kind"], "handleMissing");
    assert!(written["findings"][0]["sequenceNumber"].is_u64());

    // One leaked handle gets an address again before the release.
    {
        let engine = open_embedded(dir.path());
        assign_pod(&engine, "k8s-pod-network.orphan-2", "node-1", "back", 1, 0).await;
    }
    let server = Server::start(dir.path());
    let run = ipamctl_with(&server.connection(), &["check", "--show-problem-ips"]);
    assert!(run.stdout.contains("doesn't exist"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("Skipped: addresses of pods that no longer exist"),
        "{}",
        run.stdout
    );
    let run = ipamctl_with(
        &server.connection(),
        &["release", "--from-report", &report_arg],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "Report didn't contain any leaked IPs to clean up.\n\
         Deleting 2 leaked handles...\n\
         Released 1 handles; 1 skipped.\n\
         Skipped (they hold addresses again): k8s-pod-network.orphan-2\n"
    );
    let run = ipamctl_with(&server.connection(), &["check"]);
    assert!(
        run.stdout.contains("Check complete; found 1 problems.\n"),
        "{}",
        run.stdout
    );
}

#[tokio::test]
async fn release_refuses_a_report_of_another_schema_version_as_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    drop(open_embedded(dir.path()));
    let report = dir.path().join("r.json");
    std::fs::write(&report, r#"{"schemaVersion": 3, "findings": []}"#).unwrap();
    let run = ipamctl_with(
        &embedded(dir.path()),
        &["release", "--from-report", &report.display().to_string()],
    );
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("schemaVersion 3"), "{}", run.stderr);
    let run = ipamctl_with(
        &embedded(dir.path()),
        &["release", "--from-report", "/nonexistent/report.json"],
    );
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("/nonexistent/report.json"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn configure_changes_what_it_names_and_refuses_what_calico_refuses() {
    let dir = tempfile::tempdir().unwrap();
    drop(open_embedded(dir.path()));
    let direct = embedded(dir.path());
    let run = ipamctl_with(&direct, &["configure", "--maxblocksperhost", "4"]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(
        run.stderr
            .contains("maxBlocksPerHost requires strictAffinity"),
        "{}",
        run.stderr
    );
    let run = ipamctl_with(
        &direct,
        &["configure", "--strictaffinity=true", "--maxblocksperhost=4"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "Successfully set StrictAffinity to: true\nSuccessfully set MaxBlocksPerHost to: 4\n"
    );
    let server = Server::start(dir.path());
    let run = ipamctl_with(
        &server.connection(),
        &["configure", "--autoallocateblocks=false"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = ipamctl_with(&server.connection(), &["show", "--show-configuration"]);
    assert_eq!(
        run.stdout,
        "+--------------------+-------+\n\
         |      PROPERTY      | VALUE |\n\
         +--------------------+-------+\n\
         | StrictAffinity     | true  |\n\
         | AutoAllocateBlocks | false |\n\
         | MaxBlocksPerHost   |     4 |\n\
         +--------------------+-------+\n"
    );
    let run = ipamctl_with(
        &server.connection(),
        &["configure", "--strictaffinity=false"],
    );
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("cannot both be false"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn configure_sets_the_ip_cooldown_and_show_tells_an_address_in_cooldown() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = open_embedded(dir.path());
        engine
            .create_pool(pool("p", "10.0.0.0/24", None))
            .await
            .unwrap();
    }
    let direct = embedded(dir.path());
    let run = ipamctl_with(&direct, &["configure", "--ip-cooldown-seconds", "5000"]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(
        run.stderr
            .contains("ipCooldownSeconds 5000 is out of range: must be 0 to 1200"),
        "{}",
        run.stderr
    );
    let run = ipamctl_with(&direct, &["configure", "--ip-cooldown-seconds", "600"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "Successfully set IPCooldownSeconds to: 600\n");
    let released = {
        let engine = open_embedded(dir.path());
        assign_pod(&engine, "k8s-pod-network.a", "node-1", "a", 1, 0).await;
        engine.release_by_handle("k8s-pod-network.a").await.unwrap()[0]
    };
    in_both_modes(dir.path(), |mode, connection| {
        let run = ipamctl_with(connection, &["show", "--show-configuration"]);
        assert!(
            run.stdout.contains("| IPCooldownSeconds  |   600 |"),
            "{mode}: {}",
            run.stdout
        );
        let run = ipamctl_with(connection, &["show", "--ip", &released.to_string()]);
        assert_eq!(run.code, 0, "{mode}: {}", run.stderr);
        assert!(
            run.stdout
                .starts_with(&format!("IP {released} is in cooldown\nReleased at: ")),
            "{mode}: {}",
            run.stdout
        );
        // calicoctl counts it in use.
        let run = ipamctl_with(connection, &["show", "-o", "json"]);
        let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(json["pools"][0]["inUse"], 1, "{mode}");
        assert_eq!(json["pools"][0]["released"], 1, "{mode}");
        let run = ipamctl_with(connection, &["check"]);
        assert!(
            run.stdout
                .contains("1 of the allocations are released addresses"),
            "{mode}: {}",
            run.stdout
        );
    });
}

#[tokio::test]
async fn pools_are_created_listed_disabled_and_deleted_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    drop(open_embedded(dir.path()));
    let direct = embedded(dir.path());
    let run = ipamctl_with(&direct, &["pool", "create", "a", "--cidr", "10.0.0.0/16"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "Created IP pool a (10.0.0.0/16).\n");
    let run = ipamctl_with(&direct, &["pool", "create", "b", "--cidr", "10.0.128.0/17"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("10.0.128.0/17") && run.stderr.contains("overlap"),
        "{}",
        run.stderr
    );
    let run = ipamctl_with(&direct, &["pool", "create", "b", "--cidr", "10.1.0.1/16"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("did you mean 10.1.0.0/16"),
        "{}",
        run.stderr
    );

    let server = Server::start(dir.path());
    let connection = server.connection();
    let run = ipamctl_with(
        &connection,
        &[
            "pool",
            "create",
            "v6",
            "--cidr",
            "fd00::/64",
            "--block-size",
            "116",
            "--allowed-uses",
            "Workload,LoadBalancer",
            "--namespace-selector",
            "team == 'a'",
            "--disable-bgp-export",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = ipamctl_with(
        &connection,
        &["pool", "create", "c", "--cidr", "10.0.1.0/24"],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("overlap"), "{}", run.stderr);
    let run = ipamctl_with(&connection, &["pool", "disable", "a"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = ipamctl_with(&connection, &["pool", "list"]);
    golden("pool-list.txt", &run.stdout);
    let run = ipamctl_with(&connection, &["pool", "disable", "nope"]);
    assert_eq!(run.code, 3);
    assert!(run.stderr.contains("\"nope\""), "{}", run.stderr);
    let run = ipamctl_with(&connection, &["pool", "delete", "nope"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    let run = ipamctl_with(&connection, &["pool", "delete", "a"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = ipamctl_with(&connection, &["pool", "list", "-o", "json"]);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);
    assert_eq!(json[0]["spec"]["cidr"], "fd00::/64");
    assert_eq!(
        json[0]["spec"]["allowedUses"],
        json!(["Workload", "LoadBalancer"])
    );
    assert_eq!(json[0]["spec"]["namespaceSelector"], "team == 'a'");
    assert_eq!(json[0]["spec"]["disableBGPExport"], true);
    let run = ipamctl_with(
        &connection,
        &[
            "pool",
            "create",
            "d",
            "--cidr",
            "10.5.0.0/16",
            "--allowed-uses",
            "Pods",
        ],
    );
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--allowed-uses"), "{}", run.stderr);
}

#[tokio::test]
async fn exit_codes_tell_usage_errors_from_unreachable_servers_and_held_data_dirs() {
    let run = ipamctl(&["show", "--ip", "not-an-address"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--ip"), "{}", run.stderr);
    let run = ipamctl(&["--help"]);
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains("Exit codes:"), "{}", run.stdout);
    let run = ipamctl(&["frobnicate"]);
    assert_eq!(run.code, 2);
    let run = ipamctl(&["--server", "localhost:9310", "show"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("\"localhost:9310\""), "{}", run.stderr);

    // Nothing listens on a port just freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let run = ipamctl(&["--server", &url, "show"]);
    assert_eq!(run.code, 4);
    assert!(
        run.stderr.contains(&url) && run.stderr.contains("hint:"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);

    let dir = tempfile::tempdir().unwrap();
    drop(open_embedded(dir.path()));
    let _server = Server::start(dir.path());
    let run = ipamctl_with(&embedded(dir.path()), &["show"]);
    assert_eq!(run.code, 4);
    assert!(run.stderr.contains("--server"), "{}", run.stderr);

    let missing = dir.path().join("missing");
    let run = ipamctl_with(&embedded(&missing), &["show"]);
    assert_eq!(run.code, 3);
    assert!(run.stderr.contains("no such directory"), "{}", run.stderr);
    assert!(!missing.exists());

    let run = ipamctl(&["--datastore", "etcd", "--etcd-endpoints", &url, "show"]);
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(run.stderr.contains("--etcd-endpoints"), "{}", run.stderr);
    let run = ipamctl(&[
        "--datastore",
        "kubernetes",
        "--kubeconfig",
        "/nonexistent/kubeconfig",
        "show",
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("/nonexistent/kubeconfig"),
        "{}",
        run.stderr
    );

    let run = ipamctl(&["--datastore", "etcd", "show"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--etcd-endpoints"), "{}", run.stderr);
}

#[tokio::test]
async fn a_server_with_a_token_needs_the_token_file() {
    let dir = tempfile::tempdir().unwrap();
    drop(open_embedded(dir.path()));
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    // The server asks for the token when given one, even on loopback.
    let server = Server::start_with(
        dir.path(),
        ipam_server::app::AppConfig {
            token: Some("s3cret".into()),
            ..Default::default()
        },
    );
    let run = ipamctl_with(&server.connection(), &["show"]);
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(run.stderr.contains("--token-file"), "{}", run.stderr);
    let mut connection = server.connection();
    connection.extend(["--token-file".to_string(), token.display().to_string()]);
    let run = ipamctl_with(&connection, &["show"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
}

#[tokio::test]
async fn every_subcommand_works_directly_against_etcd() {
    if !testkit::require::etcd() {
        return;
    }
    let etcd = EtcdServer::start().await.expect("etcd starts");
    let store: Arc<dyn Datastore> = Arc::new(
        EtcdStore::connect(&[etcd.endpoint()], EtcdOptions::default())
            .await
            .unwrap(),
    );
    let engine = Ipam::new(store);
    seed_16_pool(&engine).await;
    let held = engine
        .addresses_of_handle("k8s-pod-network.c5")
        .await
        .unwrap()[0]
        .addr()
        .to_string();
    let connection: Vec<String> = ["--datastore", "etcd", "--etcd-endpoints", &etcd.endpoint()]
        .map(String::from)
        .to_vec();

    let run = ipamctl_with(&connection, &["show"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, fixture("ipam-show-pool-16.txt"));
    let run = ipamctl_with(&connection, &["show", "--ip", &held]);
    assert!(
        run.stdout.contains("Handle ID: k8s-pod-network.c5\n"),
        "{}",
        run.stdout
    );
    let run = ipamctl_with(&connection, &["configure", "--strictaffinity=true"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(engine.config().await.unwrap().strict_affinity);
    let run = ipamctl_with(
        &connection,
        &["pool", "create", "v6", "--cidr", "fd00:20::/64"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(engine.pools().await.unwrap().len(), 2);
    let run = ipamctl_with(&connection, &["check"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("Check complete; found 0 problems.\n"),
        "{}",
        run.stdout
    );
    let run = ipamctl_with(&connection, &["release", "--ip", &held]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(engine
        .attributes_of(held.parse().unwrap())
        .await
        .unwrap()
        .is_none());
    let run = ipamctl_with(&connection, &["pool", "delete", "v6"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(engine.pools().await.unwrap().len(), 1);
}

// The fake API server runs in this process: the runtime needs a thread to
// serve it while the test waits for ipamctl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_finds_gone_pods_and_nodes_and_release_from_report_leaves_reassigned_addresses_alone()
{
    let api = ApiServer::start().await;
    let store: Arc<dyn Datastore> = Arc::new(
        KubernetesStore::connect(Some(api.kubeconfig()))
            .await
            .unwrap(),
    );
    let engine = Ipam::new(store);
    engine
        .create_pool(pool("default-ipv4-ippool", "10.2.0.0/16", None))
        .await
        .unwrap();
    api.put_core("nodes", json!({"metadata": {"name": "node-1"}}));
    api.put_core(
        "pods",
        json!({"metadata": {"name": "live", "namespace": "default"}}),
    );
    let mut address = BTreeMap::new();
    for (pod, node) in [
        ("live", "node-1"),
        ("gone", "node-1"),
        ("reused", "node-1"),
        ("orphan", "node-9"),
    ] {
        let handle = format!("k8s-pod-network.{pod}");
        assign_pod(&engine, &handle, node, pod, 1, 0).await;
        let held = engine.addresses_of_handle(&handle).await.unwrap()[0].addr();
        address.insert(pod, held);
    }
    let connection: Vec<String> = [
        "--datastore",
        "kubernetes",
        "--kubeconfig",
        &api.kubeconfig().display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json").display().to_string();
    let run = ipamctl_with(&connection, &["check", "-o", &report]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for line in [
        "Found 1 blockNodeGone (leak).\n",
        "Found 1 affinityNodeGone (leak).\n",
        "Found 3 podGone (leak).\n",
        "Found 1 allocationNodeGone (leak).\n",
    ] {
        assert!(run.stdout.contains(line), "{line}: {}", run.stdout);
    }
    assert!(!run.stdout.contains("Skipped"), "{}", run.stdout);

    // The pod "reused" is gone, but its address is handed out again (same
    // handle, newer sequence number) before the release.
    let reused = address["reused"];
    engine
        .release(&[ipam_core::ReleaseRequest::address(reused)])
        .await
        .unwrap();
    engine
        .assign_ip(&AssignIpRequest {
            handle: ipam_core::HandleId::new("k8s-pod-network.reused"),
            node: ipam_core::NodeName::new("node-1"),
            address: reused,
            attributes: [
                ("node", "node-1"),
                ("namespace", "default"),
                ("pod", "reused"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        })
        .await
        .unwrap();

    let run = ipamctl_with(&connection, &["release", "--from-report", &report]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        format!(
            "Releasing 3 leaked IPs...\n\
             Released 2 IPs successfully.\n\
             1 addresses were reassigned since the report and were left alone: {reused}\n\
             Report didn't contain any handles to clean up.\n"
        )
    );
    for pod in ["gone", "orphan"] {
        assert!(
            engine.attributes_of(address[pod]).await.unwrap().is_none(),
            "{pod}"
        );
    }
    for pod in ["live", "reused"] {
        assert!(
            engine.attributes_of(address[pod]).await.unwrap().is_some(),
            "{pod}"
        );
    }
    // A second release from the same report changes nothing more.
    let run = ipamctl_with(&connection, &["release", "--from-report", &report]);
    assert!(
        run.stdout
            .contains("2 addresses marked as leaked in the report had already been cleaned up."),
        "{}",
        run.stdout
    );
}

// The fake API server runs in this process: the runtime needs a thread to
// serve it while the test waits for ipamctl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_server_a_kubeconfig_finds_gone_pods_and_nodes_as_a_direct_check_does() {
    let api = ApiServer::start().await;
    api.put_core("nodes", json!({"metadata": {"name": "node-1"}}));
    api.put_core(
        "pods",
        json!({"metadata": {"name": "live", "namespace": "default"}}),
    );
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = open_embedded(dir.path());
        engine
            .create_pool(pool("p", "10.3.0.0/16", None))
            .await
            .unwrap();
        engine
            .create_pool(pool("p6", "fd00:30::/64", None))
            .await
            .unwrap();
        for pod in ["live", "gone", "gone-too"] {
            let handle = format!("k8s-pod-network.{pod}");
            assign_pod(&engine, &handle, "node-1", pod, 1, 1).await;
        }
        // A pod of a node that is gone too.
        assign_pod(
            &engine,
            "k8s-pod-network.stranded",
            "node-2",
            "stranded",
            1,
            0,
        )
        .await;
    }
    let kubeconfig = api.kubeconfig().display().to_string();
    let reports = tempfile::tempdir().unwrap();
    let direct_report = reports.path().join("direct.json").display().to_string();
    let mut direct = embedded(dir.path());
    direct.extend(["--kubeconfig".to_string(), kubeconfig.clone()]);
    let run = ipamctl_with(&direct, &["check", "-o", &direct_report]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stdout.contains("Skipped"), "{}", run.stdout);

    let server = Server::start(dir.path());
    let mut connection = server.connection();
    connection.extend(["--kubeconfig".to_string(), kubeconfig]);
    let server_report = reports.path().join("server.json").display().to_string();
    let run = ipamctl_with(&connection, &["check", "-o", &server_report]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("Found 5 podGone (leak).\n"),
        "{}",
        run.stdout
    );
    for kind in ["blockNodeGone", "affinityNodeGone", "allocationNodeGone"] {
        assert!(run.stdout.contains(kind), "{kind}: {}", run.stdout);
    }
    assert!(!run.stdout.contains("Skipped"), "{}", run.stdout);
    let read = |path: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let (direct, through_server) = (read(&direct_report), read(&server_report));
    assert_eq!(direct["findings"], through_server["findings"]);
    assert_eq!(through_server["skipped"], json!([]));

    let run = ipamctl_with(&connection, &["release", "--from-report", &server_report]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .starts_with("Releasing 5 leaked IPs...\nReleased 5 IPs successfully.\n"),
        "{}",
        run.stdout
    );
    let run = ipamctl_with(&connection, &["check"]);
    assert!(!run.stdout.contains("podGone"), "{}", run.stdout);
}

#[tokio::test]
async fn the_server_is_reached_on_a_unix_socket_too() {
    let dir = tempfile::tempdir().unwrap();
    seed_16_pool_with_13_in_use(dir.path()).await;
    let socket = dir.path().join("ipam.sock");
    let server = Server::start_unix(dir.path(), &socket);
    let run = ipamctl_with(&server.connection(), &["show"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, fixture("ipam-show-pool-16.txt"));
    // IPAM_SERVER is read like --server.
    let output = std::process::Command::new(IPAMCTL)
        .args(["show", "--show-configuration"])
        .env("IPAM_SERVER", &server.url)
        .env_remove("IPAM_DATASTORE")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        fixture("ipam-show-configuration.txt")
    );
}
