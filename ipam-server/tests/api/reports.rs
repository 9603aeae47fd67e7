//! What the API reports about the whole state: usage, blocks and the
//! consistency check.

use super::*;

#[tokio::test]
async fn usage_blocks_and_check_describe_the_state() {
    let app = App::with_pool(AppConfig::default()).await;
    app.assign("a", "node-1", 3).await;
    app.assign("b", "node-2", 1).await;
    let (_, usage) = app.get("/v1/usage").await;
    let pool = &usage["pools"][0];
    assert_eq!(
        (&pool["name"], &pool["size"], &pool["inUse"], &pool["free"]),
        (&json!("pool-a"), &json!(256), &json!(4), &json!(252))
    );
    let blocks = pool["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 2);
    let of_node_1 = blocks.iter().find(|b| b["node"] == "node-1").unwrap();
    assert_eq!(of_node_1["inUse"], 3);
    let cidr = of_node_1["cidr"].as_str().unwrap();
    let (status, block) = app.get(&format!("/v1/blocks?cidr={cidr}")).await;
    assert_eq!(status, 200, "{block}");
    let allocations = block["allocations"].as_array().unwrap();
    assert_eq!(allocations.len(), 3);
    assert_eq!(allocations[0]["handle"], "a");
    assert_eq!(allocations[0]["attributes"]["pod"], "a");
    let unused = [
        "10.0.0.0/26",
        "10.0.0.64/26",
        "10.0.0.128/26",
        "10.0.0.192/26",
    ]
    .into_iter()
    .find(|c| blocks.iter().all(|b| b["cidr"] != *c))
    .unwrap();
    refused(
        app.get(&format!("/v1/blocks?cidr={unused}")).await,
        404,
        "block_not_found",
        unused,
    );
    refused(
        app.get("/v1/blocks?cidr=10.0.0.0/16").await,
        400,
        "invalid_value",
        "cidr: \"10.0.0.0/16\" is not a block CIDR",
    );
    // Host bits are dropped, as Calico drops them from a pool's CIDR.
    let (network, prefix) = cidr.split_once('/').unwrap();
    let inside: std::net::Ipv4Addr = network.parse().unwrap();
    let inside = std::net::Ipv4Addr::from(u32::from(inside) + 5);
    let (status, same) = app.get(&format!("/v1/blocks?cidr={inside}/{prefix}")).await;
    assert_eq!((status, &same["cidr"]), (200, &json!(cidr)));
    let (status, check) = app.get("/v1/check").await;
    assert_eq!(status, 200);
    assert_eq!(check["consistent"], true, "{check}");
    assert_eq!(check["report"]["summary"]["addressesInUse"], 4);
}

#[tokio::test]
async fn check_reports_overlapping_pools_and_stale_pending_affinities() {
    // What a writer that skips the overlap check, and a claim that lost a
    // block and died before taking its affinity back, leave behind.
    let store: Arc<dyn Datastore> = Arc::new(MemoryStore::new());
    for (name, cidr) in [("pool-a", "10.0.0.0/24"), ("pool-b", "10.0.0.0/25")] {
        let spec = PoolSpec::new(cidr.parse().unwrap());
        store
            .create(&Object::Pool(Pool::new(name, spec).unwrap()))
            .await
            .unwrap();
    }
    let block: ipam_core::BlockCidr = "10.0.0.64/26".parse().unwrap();
    let owner = ipam_core::BlockOwner::Host("node-1".into());
    let claimed = Some("2020-01-01T00:00:00Z".to_string());
    let objects = [
        Object::Block(ipam_core::Block::new(block, Some(owner), claimed, 1)),
        Object::Affinity(ipam_core::Affinity::new(
            "node-1",
            block,
            ipam_core::AffinityState::Confirmed,
        )),
        Object::Affinity(ipam_core::Affinity::new(
            "node-2",
            block,
            ipam_core::AffinityState::Pending,
        )),
    ];
    for object in &objects {
        store.create(object).await.unwrap();
    }
    let app = App::over(store, AppConfig::default()).await;
    let (status, check) = app.get("/v1/check").await;
    assert_eq!(status, 200, "{check}");
    assert_eq!(check["consistent"], false, "overlapping pools contradict");
    let findings = check["report"]["findings"].as_array().unwrap();
    let kinds: Vec<&str> = findings
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["stalePendingAffinity", "poolsOverlap"], "{check:#}");
    assert_eq!(
        (&findings[0]["node"], &findings[0]["block"]),
        (&json!("node-2"), &json!("10.0.0.64/26"))
    );
    assert_eq!(findings[1]["pool"], "pool-a");
    assert_eq!(
        findings[1]["message"],
        "pool pool-a (10.0.0.0/24) overlaps pool pool-b (10.0.0.0/25)"
    );
    assert_eq!(check["report"]["schemaVersion"], 2);
}
