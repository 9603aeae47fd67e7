//! `ipamctl check` and `release`: leaks injected and found, pods and
//! nodes from a kubeconfig, and releases from a report that leave
//! reassigned addresses alone.

use super::*;

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
