//! How ipamctl reaches its data: exit codes, tokens, etcd and a unix
//! socket.

use super::*;

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
