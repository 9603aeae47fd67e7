//! Affinity consistency through the API: after a pool's nodeSelector
//! stops selecting a node, the node's next assignment gives up its empty
//! block in that pool (Calico's prepareAffinityBlocksForHost,
//! libcalico-go/lib/ipam/ipam.go), so `/v1/blocks` no longer shows it.

use super::*;

async fn zoned() -> App {
    let store: Arc<dyn Datastore> = Arc::new(MemoryStore::new());
    for (name, cidr, selector) in [
        ("a", "10.1.0.0/24", "zone == 'a'"),
        ("everyone", "10.2.0.0/24", "all()"),
    ] {
        let spec = PoolSpec {
            block_size: Some(26),
            node_selector: selector.to_string(),
            ..PoolSpec::new(cidr.parse().unwrap())
        };
        store
            .create(&Object::Pool(Pool::new(name, spec).unwrap()))
            .await
            .unwrap();
    }
    App::over(store, AppConfig::default()).await
}

async fn assign_in_zone_a(app: &App, handle: &str) -> String {
    let (status, got) = app
        .post(
            "/v1/assign",
            json!({"handle": handle, "node": "n1", "ipv4": 1, "nodeLabels": {"zone": "a"},
                   "attributes": {"pod": handle, "namespace": "default", "node": "n1"}}),
        )
        .await;
    assert_eq!(status, 200, "{got}");
    got["ipv4"][0].as_str().unwrap().to_string()
}

#[tokio::test]
async fn an_empty_block_is_gone_from_blocks_after_its_pool_stops_selecting_the_node() {
    let app = zoned().await;
    assert!(assign_in_zone_a(&app, "h1").await.starts_with("10.1.0."));
    assert_eq!(
        app.call(Method::DELETE, "/v1/handles/h1", None).await.0,
        200
    );
    let (status, block) = app.get("/v1/blocks?cidr=10.1.0.0/26").await;
    assert_eq!(status, 200, "{block}");
    assert_eq!(block["affinity"], "host:n1", "empty, still affine: {block}");

    let moved = json!({"spec": {"cidr": "10.1.0.0/24", "blockSize": 26,
                                "nodeSelector": "zone == 'b'"}});
    let (status, updated) = app.call(Method::PUT, "/v1/pools/a", Some(moved)).await;
    assert_eq!(status, 200, "{updated}");

    assert!(assign_in_zone_a(&app, "h2").await.starts_with("10.2.0."));
    refused(
        app.get("/v1/blocks?cidr=10.1.0.0/26").await,
        404,
        "block_not_found",
        "10.1.0.0/26",
    );
    let (_, affinities) = app.get("/v1/affinities").await;
    let cidrs: Vec<&str> = affinities
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["cidr"].as_str().unwrap())
        .collect();
    assert_eq!(cidrs, ["10.2.0.0/26"]);
}
