//! The client against a real ipam-server router, over TCP and over a unix
//! socket: every call it offers, the errors it maps, and its deadline.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipam_api::{
    AddressState, AssignBody, AssignIpBody, ConfigBody, ErrorCode, PoolBody, PoolSpecBody,
    ReleaseBody, ReleaseItem,
};
use ipam_client::{Client, ClientError, Endpoint};
use ipam_core::{Pool, PoolSpec};
use ipam_server::app::{router, AppConfig};
use ipam_store::memory::MemoryStore;
use ipam_store::{Datastore, Ipam, Value};

const TIMEOUT: Duration = Duration::from_secs(10);

async fn engine_with_pool() -> Arc<Ipam<dyn Datastore>> {
    let store: Arc<dyn Datastore> = Arc::new(MemoryStore::new());
    let spec = PoolSpec {
        block_size: Some(26),
        ..PoolSpec::new("10.0.0.0/24".parse().unwrap())
    };
    store
        .create(&Value::Pool(Pool::new("pool-a", spec).unwrap()))
        .await
        .unwrap();
    Arc::new(Ipam::new(store))
}

async fn serve_tcp(config: AppConfig) -> Endpoint {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = Endpoint::Tcp(listener.local_addr().unwrap().to_string());
    let app = router(engine_with_pool().await, config);
    tokio::spawn(async move { axum::serve(listener, app).await });
    endpoint
}

fn assign_body(handle: &str, node: &str) -> AssignBody {
    AssignBody {
        handle: handle.into(),
        node: node.into(),
        ipv4: 1,
        ipv6: 0,
        ipv4_pools: Vec::new(),
        ipv6_pools: Vec::new(),
        attributes: BTreeMap::from([("node".to_string(), node.to_string())]),
        node_labels: None,
        namespace_labels: None,
        intended_use: None,
        max_blocks_per_host: 0,
        exclude: Vec::new(),
        usable_with_pool_prefix: false,
        pod_annotations: false,
        pod_uid: None,
    }
}

#[tokio::test]
async fn every_call_reaches_its_route_over_tcp() {
    let client = Client::new(serve_tcp(AppConfig::default()).await, TIMEOUT);
    client.ready().await.unwrap();

    let first = client.assign(&assign_body("net.c1", "n1")).await.unwrap();
    assert_eq!(first.ipv4.len(), 1);
    assert!(!first.existing);
    let again = client.assign(&assign_body("net.c1", "n1")).await.unwrap();
    assert_eq!(
        (again.ipv4.clone(), again.existing),
        (first.ipv4.clone(), true)
    );
    client.assign(&assign_body("net.c2", "n2")).await.unwrap();

    let chosen: IpAddr = "10.0.0.200".parse().unwrap();
    let pinned = AssignIpBody {
        handle: "net.c3".into(),
        node: "n1".into(),
        address: chosen,
        attributes: BTreeMap::from([("node".to_string(), "n1".to_string())]),
        intended_use: None,
    };
    let answer = client.assign_ip(&pinned).await.unwrap();
    assert_eq!((answer.handle.as_str(), answer.address), ("net.c3", chosen));
    let held = answer.assigned.expect("the answer says how it is held");
    assert_eq!(held.address, "10.0.0.200/26".parse().unwrap());
    assert_eq!(first.assigned.len(), 1);
    assert_eq!(first.assigned[0].address, first.ipv4[0]);

    let on_n1 = client.handles_on_node("n1", "net.").await.unwrap();
    let ids: Vec<&str> = on_n1.iter().map(|h| h.handle.as_str()).collect();
    assert_eq!(ids, ["net.c1", "net.c3"]);

    let held = client.handle_addresses("net.c1").await.unwrap().unwrap();
    assert_eq!(held.addresses, first.ipv4);
    assert_eq!(client.handle_addresses("net.none").await.unwrap(), None);

    let info = client.address(chosen).await.unwrap();
    assert_eq!(info.status, AddressState::InUse);
    assert_eq!(info.handle.as_deref(), Some("net.c3"));

    let released = client
        .release(&ReleaseBody {
            addresses: vec![ReleaseItem {
                address: chosen,
                handle: Some("net.c3".into()),
                sequence_number: None,
            }],
        })
        .await
        .unwrap();
    assert_eq!(released.released, [chosen]);
    let by_handle = client.release_handle("net.c1").await.unwrap();
    assert_eq!(by_handle.released, [first.ipv4[0].addr()]);
    assert!(client
        .release_handle("net.c1")
        .await
        .unwrap()
        .released
        .is_empty());

    let usage = client.usage().await.unwrap();
    assert_eq!(usage.pools[0].in_use, 1, "{usage:?}");
    let n2_block = usage.pools[0]
        .blocks
        .iter()
        .find(|b| b.node.as_deref() == Some("n2"))
        .unwrap();
    let block = client.block(n2_block.cidr).await.unwrap().unwrap();
    assert_eq!(block.allocations[0].handle.as_deref(), Some("net.c2"));
    assert_eq!(
        client.block("10.9.0.0/26".parse().unwrap()).await.unwrap(),
        None
    );
    assert!(client.check().await.unwrap().consistent);
}

#[tokio::test]
async fn pools_and_config_round_trip() {
    let client = Client::new(serve_tcp(AppConfig::default()).await, TIMEOUT);
    let spec = PoolSpec {
        block_size: Some(28),
        ..PoolSpec::new("10.1.0.0/24".parse().unwrap())
    };
    let pool = PoolBody {
        name: "pool-b".into(),
        spec: spec.clone(),
    };
    assert_eq!(client.create_pool(&pool).await.unwrap(), pool);
    let names: Vec<String> = client
        .pools()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["pool-a", "pool-b"]);
    let disabled = PoolSpec {
        disabled: true,
        ..spec
    };
    let updated = client
        .update_pool("pool-b", &PoolSpecBody { spec: disabled })
        .await
        .unwrap();
    assert!(updated.spec.disabled);
    client.delete_pool("pool-b").await.unwrap();
    let error = client.delete_pool("pool-b").await.unwrap_err();
    assert_eq!(error.api_code(), Some(&ErrorCode::NotFound), "{error}");

    let config = ConfigBody {
        strict_affinity: true,
        auto_allocate_blocks: true,
        max_blocks_per_host: 4,
        ip_cooldown_seconds: 60,
    };
    assert_eq!(client.set_config(&config).await.unwrap(), config);
    assert_eq!(client.config().await.unwrap(), config);
}

#[tokio::test]
async fn api_errors_carry_the_servers_code_and_message() {
    let client = Client::new(serve_tcp(AppConfig::default()).await, TIMEOUT);
    let mut greedy = assign_body("net.big", "n1");
    greedy.ipv4 = 300;
    let error = client.assign(&greedy).await.unwrap_err();
    match &error {
        ClientError::Api {
            status,
            code,
            message,
            ..
        } => {
            assert_eq!(status.as_u16(), 400);
            assert_eq!(*code, ErrorCode::TooManyAddresses);
            assert!(message.contains("300"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!error.is_unavailable());
}

#[tokio::test]
async fn the_token_is_sent_and_a_missing_one_is_refused() {
    let config = AppConfig {
        token: Some("s3cret".into()),
        ..AppConfig::default()
    };
    let endpoint = serve_tcp(config).await;
    let without = Client::new(endpoint.clone(), TIMEOUT);
    let error = without.usage().await.unwrap_err();
    assert_eq!(error.api_code(), Some(&ErrorCode::Unauthorized), "{error}");
    let with = Client::new(endpoint, TIMEOUT).with_token("s3cret".into());
    with.usage().await.unwrap();
}

#[tokio::test]
async fn a_unix_socket_serves_the_same_api() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ipam.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let app = router(engine_with_pool().await, AppConfig::default());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let endpoint: Endpoint = format!("unix:{}", path.display()).parse().unwrap();
    let client = Client::new(endpoint, TIMEOUT);
    let got = client.assign(&assign_body("net.u", "n1")).await.unwrap();
    assert_eq!(got.ipv4.len(), 1);
}

#[tokio::test]
async fn nothing_listening_is_unreachable_and_retryable() {
    // Bind then drop: the port is free and nothing answers on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = Client::new(Endpoint::Tcp(format!("127.0.0.1:{port}")), TIMEOUT);
    let error = client.ready().await.unwrap_err();
    assert!(
        matches!(error, ClientError::Unreachable { .. }),
        "{error:?}"
    );
    assert!(error.is_unavailable());
    assert!(error.to_string().contains(&port.to_string()));
}

#[tokio::test]
async fn a_server_that_never_answers_hits_the_deadline() {
    // Accepts connections and reads nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = Endpoint::Tcp(listener.local_addr().unwrap().to_string());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let deadline = Duration::from_millis(300);
    let client = Client::new(endpoint, deadline);
    let started = Instant::now();
    let error = client.usage().await.unwrap_err();
    assert!(matches!(error, ClientError::Timeout { .. }), "{error:?}");
    assert!(error.is_unavailable());
    assert!(started.elapsed() < Duration::from_secs(5));
}
