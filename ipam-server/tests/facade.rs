//! The two answers to ipam-service's facade, the engine in-process and
//! ipam-server through ipam-client, give the same answers and the same
//! error codes for the same requests on the same state: what lets the CNI
//! plugin and ipamctl behave alike in direct and server mode.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipam_api::{AssignBody, AssignIpBody, ErrorCode, ReleaseBody, ReleaseItem};
use ipam_client::{Client, Endpoint};
use ipam_core::{BlockCidr, HandleId, NodeName, Pool, PoolSpec};
use ipam_server::app::{router, AppConfig};
use ipam_service::{IpamService, LocalService, ServiceError};
use ipam_store::memory::MemoryStore;
use ipam_store::{Datastore, Ipam, Value};

// One engine, with one pool, behind both facades.
async fn both() -> (LocalService, Client) {
    let store: Arc<dyn Datastore> = Arc::new(MemoryStore::new());
    let spec = PoolSpec {
        block_size: Some(26),
        ..PoolSpec::new("10.0.0.0/24".parse().unwrap())
    };
    store
        .create(&Value::Pool(Pool::new("pool-a", spec).unwrap()))
        .await
        .unwrap();
    let engine: Arc<Ipam<dyn Datastore>> = Arc::new(Ipam::new(store));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = Endpoint::Tcp(listener.local_addr().unwrap().to_string());
    let config = AppConfig {
        max_addresses_per_request: 1024,
        ..AppConfig::default()
    };
    let app = router(engine.clone(), config);
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = Client::new(endpoint, Duration::from_secs(10));
    (LocalService::new(engine), client)
}

fn assign_body(handle: &str) -> AssignBody {
    AssignBody {
        handle: handle.into(),
        node: "n1".into(),
        ipv4: 2,
        ipv6: 0,
        ipv4_pools: Vec::new(),
        ipv6_pools: Vec::new(),
        attributes: BTreeMap::from([("node".to_string(), "n1".to_string())]),
        node_labels: None,
        namespace_labels: None,
        intended_use: None,
        max_blocks_per_host: 0,
        exclude: vec!["10.0.0.1/32".parse().unwrap()],
        usable_with_pool_prefix: true,
        pod_annotations: false,
        pod_uid: None,
    }
}

fn code<T: std::fmt::Debug>(result: Result<T, ServiceError>) -> ErrorCode {
    match result {
        Err(ServiceError::Refused { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn local_and_remote_answer_an_assignment_alike() {
    let (local, remote) = both().await;
    let services: [&dyn IpamService; 2] = [&local, &remote];

    let first = local.assign(assign_body("net.a")).await.unwrap();
    assert!(!first.existing);
    // Asked again, each facade finds the handle's addresses, every field
    // (the 11 the request carries were honoured: none is .0 or .1).
    let again = [
        services[0].assign(assign_body("net.a")).await.unwrap(),
        services[1].assign(assign_body("net.a")).await.unwrap(),
    ];
    assert_eq!(again[0], again[1]);
    assert!(again[0].existing);
    assert_eq!(again[0].ipv4, first.ipv4);
    assert_eq!(again[0].assigned, first.assigned);
    for address in &first.ipv4 {
        assert!(!matches!(
            address.addr().to_string().as_str(),
            "10.0.0.0" | "10.0.0.1"
        ));
    }

    let held: IpAddr = first.ipv4[0].addr();
    let cidr = BlockCidr::new(first.ipv4[0].trunc()).unwrap();
    assert_eq!(
        reads(services[0], held, cidr).await,
        reads(services[1], held, cidr).await
    );
}

#[tokio::test]
async fn local_and_remote_refuse_with_the_same_codes() {
    let (local, remote) = both().await;
    let services: [&dyn IpamService; 2] = [&local, &remote];
    let got = local.assign(assign_body("net.a")).await.unwrap();
    let held = got.ipv4[0].addr();

    for service in services {
        let taken = AssignIpBody {
            handle: "net.b".into(),
            node: "n1".into(),
            address: held,
            attributes: BTreeMap::new(),
            intended_use: None,
        };
        assert_eq!(
            code(service.assign_ip(taken).await),
            ErrorCode::AddressInUse
        );
        let stale = ReleaseBody {
            addresses: vec![ReleaseItem {
                address: held,
                handle: Some("net.other".into()),
                sequence_number: None,
            }],
        };
        assert_eq!(
            code(service.release(stale).await),
            ErrorCode::AllocationChanged
        );
        let mut too_many = assign_body("net.c");
        too_many.ipv4 = 1000;
        assert_eq!(
            code(service.assign(too_many).await),
            ErrorCode::PoolExhausted
        );
        assert_eq!(
            service
                .handle_addresses(&HandleId::new("net.none"))
                .await
                .unwrap(),
            None
        );
    }
}

// Every read of the state after the assignment, as one comparable text.
async fn reads(service: &dyn IpamService, held: IpAddr, cidr: BlockCidr) -> String {
    format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
        service
            .handle_addresses(&HandleId::new("net.a"))
            .await
            .unwrap(),
        service
            .handles_on_node(&NodeName::new("n1"), "net.")
            .await
            .unwrap(),
        service.address(held).await.unwrap(),
        service.pools().await.unwrap(),
        service.config().await.unwrap(),
        service.usage().await.unwrap(),
        service.block(cidr).await.unwrap(),
    )
}
