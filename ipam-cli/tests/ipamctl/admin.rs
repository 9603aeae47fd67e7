//! `ipamctl configure` and `pool`: what they change and what they
//! refuse.

use super::*;

#[tokio::test]
async fn configure_changes_what_it_names_and_refuses_what_calico_refuses() {
    let dir = tempfile::tempdir().unwrap();
    drop(open_embedded(dir.path()));
    let direct = embedded(dir.path());
    let run = ipamctl_with(&direct, &["configure", "--maxblocksperhost", "4"]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(
        run.stderr
            .contains("MaxBlocksPerHost requires StrictAffinity to be enabled"),
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
        run.stderr
            .contains("Cannot disable 'StrictAffinity' and 'AutoAllocateBlocks' at the same time"),
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
