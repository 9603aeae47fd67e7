//! `ipamctl reservation`: created, listed, shown and deleted, in direct
//! mode and through ipam-server alike, with the exit codes and messages
//! of the other commands.

use super::*;

#[test]
fn reservations_are_created_listed_shown_and_deleted_in_both_modes() {
    let dir = tempfile::tempdir().unwrap();
    drop(open_embedded(dir.path()));
    in_both_modes(dir.path(), |mode, connection| {
        let run = ipamctl_with(
            connection,
            &[
                "reservation",
                "create",
                "gateways",
                "--cidr",
                "10.0.0.1",
                "--cidr",
                "10.0.8.5/24",
                "--cidr",
                "fd00::1",
            ],
        );
        assert_eq!(run.code, 0, "{mode}: {}", run.stderr);
        assert_eq!(
            run.stdout,
            "Created IP reservation gateways (10.0.0.1/32, 10.0.8.5/24, fd00::1/128).\n",
            "{mode}"
        );
        let run = ipamctl_with(
            connection,
            &["reservation", "create", "vms", "--cidr", "10.0.9.0/28"],
        );
        assert_eq!(run.code, 0, "{mode}: {}", run.stderr);
        let run = ipamctl_with(connection, &["reservation", "list"]);
        assert_eq!(run.code, 0, "{mode}: {}", run.stderr);
        golden("reservation-list.txt", &run.stdout);
        let run = ipamctl_with(connection, &["reservation", "get", "vms"]);
        golden("reservation-get.txt", &run.stdout);
        let run = ipamctl_with(connection, &["reservation", "get", "vms", "-o", "json"]);
        let shown: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(
            shown,
            json!({"name": "vms", "spec": {"reservedCIDRs": ["10.0.9.0/28"]}}),
            "{mode}"
        );
        let run = ipamctl_with(connection, &["reservation", "list", "-o", "yaml"]);
        assert!(
            run.stdout.contains("- name: gateways\n"),
            "{mode}: {}",
            run.stdout
        );

        // Refusals: exit codes as for pools, messages naming the value.
        let run = ipamctl_with(
            connection,
            &["reservation", "create", "vms", "--cidr", "10.0.10.0/28"],
        );
        assert_eq!(run.code, 1, "{mode}: {}", run.stderr);
        assert!(
            run.stderr.contains("IPReservation vms already exists"),
            "{mode}: {}",
            run.stderr
        );
        let run = ipamctl_with(
            connection,
            &["reservation", "create", "r", "--cidr", "10.0.0.300"],
        );
        assert_eq!(run.code, 2, "{mode}: {}", run.stderr);
        assert!(
            run.stderr.contains("'10.0.0.300'") && run.stderr.contains("--cidr"),
            "{mode}: {}",
            run.stderr
        );
        let run = ipamctl_with(
            connection,
            &[
                "reservation",
                "create",
                "r",
                "--cidr",
                "10.0.0.1",
                "--cidr",
                "10.0.0.1/32",
            ],
        );
        assert_eq!(run.code, 2, "{mode}: {}", run.stderr);
        assert!(
            run.stderr
                .contains("\"10.0.0.1/32\" is 10.0.0.1/32, which reservedCIDRs[0]"),
            "{mode}: {}",
            run.stderr
        );
        let run = ipamctl_with(
            connection,
            &["reservation", "create", "Not_A_Name", "--cidr", "10.0.0.1"],
        );
        assert_eq!(run.code, 2, "{mode}: {}", run.stderr);
        assert!(
            run.stderr.contains("\"Not_A_Name\""),
            "{mode}: {}",
            run.stderr
        );
        let run = ipamctl_with(connection, &["reservation", "create", "r"]);
        assert_eq!(run.code, 2, "{mode}: {}", run.stderr);
        assert!(run.stderr.contains("--cidr"), "{mode}: {}", run.stderr);
        let run = ipamctl_with(connection, &["reservation", "get", "nope"]);
        assert_eq!(run.code, 3, "{mode}: {}", run.stderr);
        assert!(run.stderr.contains("\"nope\""), "{mode}: {}", run.stderr);
        let run = ipamctl_with(connection, &["reservation", "delete", "nope"]);
        assert_eq!(run.code, 3, "{mode}: {}", run.stderr);
        assert!(run.stderr.contains("nope"), "{mode}: {}", run.stderr);
        let run = ipamctl_with(connection, &["reservation", "list"]);
        golden("reservation-list.txt", &run.stdout);

        for name in ["gateways", "vms"] {
            let run = ipamctl_with(connection, &["reservation", "delete", name]);
            assert_eq!(run.code, 0, "{mode}: {}", run.stderr);
            assert_eq!(run.stdout, format!("Deleted IP reservation {name}.\n"));
        }
        let run = ipamctl_with(connection, &["reservation", "list"]);
        assert_eq!(
            run.stdout, "+------+-------+\n| NAME | CIDRS |\n+------+-------+\n+------+-------+\n",
            "{mode}"
        );
    });
}

/// `reservation create` then `list` straight to a datastore, and the
/// object Calico reads there: what `kubectl get ipreservations` or
/// calicoctl on etcd would see.
fn create_and_list(connection: &[String]) {
    let run = ipamctl_with(
        connection,
        &[
            "reservation",
            "create",
            "gw",
            "--cidr",
            "10.0.0.1",
            "--cidr",
            "fd00::/120",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = ipamctl_with(connection, &["reservation", "list", "-o", "json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let listed: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        listed,
        json!([{"name": "gw", "spec": {"reservedCIDRs": ["10.0.0.1/32", "fd00::/120"]}}])
    );
}

// The fake API server runs in this process: the runtime needs a thread to
// serve it while the test waits for ipamctl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_mode_on_kubernetes_writes_calicos_ipreservation() {
    let api = ApiServer::start().await;
    let connection: Vec<String> = [
        "--datastore",
        "kubernetes",
        "--kubeconfig",
        &api.kubeconfig().display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    create_and_list(&connection);
    let object = api
        .object("ipreservations", "gw")
        .expect("an IPReservation");
    assert_eq!(object["apiVersion"], "crd.projectcalico.org/v1");
    assert_eq!(
        object["spec"],
        json!({"reservedCIDRs": ["10.0.0.1/32", "fd00::/120"]})
    );
    let run = ipamctl_with(&connection, &["reservation", "delete", "gw"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(api.object("ipreservations", "gw").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_mode_on_etcd_writes_calicos_key() {
    if !testkit::require::etcd() {
        return;
    }
    let etcd = EtcdServer::start().await.unwrap();
    let connection: Vec<String> = ["--datastore", "etcd", "--etcd-endpoints", &etcd.endpoint()]
        .map(String::from)
        .to_vec();
    create_and_list(&connection);
    let kv = ipam_store::etcd::EtcdKv::new(&[etcd.endpoint()], &EtcdOptions::default()).unwrap();
    let key = "/calico/resources/v3/projectcalico.org/ipreservations/gw";
    let stored = kv.get(key.as_bytes()).await.unwrap().expect("Calico's key");
    let object: serde_json::Value = serde_json::from_slice(&stored.value).unwrap();
    assert_eq!(
        (&object["kind"], &object["apiVersion"]),
        (&json!("IPReservation"), &json!("projectcalico.org/v3"))
    );
    assert_eq!(
        object["spec"],
        json!({"reservedCIDRs": ["10.0.0.1/32", "fd00::/120"]})
    );
}
