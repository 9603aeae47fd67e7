//! `ipamctl show` and its flags: tables byte for byte against
//! calicoctl's, and JSON that agrees in both modes.

use super::*;

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
