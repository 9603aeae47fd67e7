//! The objects behind the addresses: handles, affinities and claims,
//! pools and the IPAM config, listed, read and changed through the API.

use super::*;

#[tokio::test]
async fn handles_are_listed_and_released() {
    let app = App::with_pool(AppConfig::default()).await;
    let got = app.assign("k8s-pod-network.c1", "n", 1).await;
    let (status, held) = app.get("/v1/handles/k8s-pod-network.c1").await;
    assert_eq!((status, &held["addresses"]), (200, &got["ipv4"]));
    let (status, out) = app
        .call(Method::DELETE, "/v1/handles/k8s-pod-network.c1", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(out["released"].as_array().unwrap().len(), 1);
    refused(
        app.get("/v1/handles/k8s-pod-network.c1").await,
        404,
        "handle_not_found",
        "c1",
    );
    let (status, out) = app.call(Method::DELETE, "/v1/handles/never", None).await;
    assert_eq!((status, out["released"].clone()), (200, json!([])));
}

#[tokio::test]
async fn every_affinity_is_listed_and_blocks_name_their_owner_as_calico_does() {
    let app = App::with_pool(AppConfig::default()).await;
    let a = app.assign("h1", "node-a", 1).await;
    app.assign("h2", "node-b", 1).await;
    let (status, listed) = app.get("/v1/affinities").await;
    assert_eq!(status, 200, "{listed}");
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["node"], "node-a");
    assert_eq!(listed[0]["state"], "confirmed");
    assert_eq!(listed[0]["type"], "host");
    let cidr = listed[0]["cidr"].as_str().unwrap();
    let address: ipnet::IpNet = a["ipv4"][0].as_str().unwrap().parse().unwrap();
    assert!(cidr
        .parse::<ipnet::IpNet>()
        .unwrap()
        .contains(&address.addr()));
    let (_, block) = app.get(&format!("/v1/blocks?cidr={cidr}")).await;
    assert_eq!(block["affinity"], "host:node-a", "{block}");
    assert_eq!(block["node"], "node-a");
}

#[tokio::test]
async fn a_nodes_handles_are_listed_by_prefix() {
    let app = App::with_pool(AppConfig::default()).await;
    let a = app.assign("net.a", "n1", 2).await;
    app.assign("net.b", "n2", 1).await;
    app.assign("other.c", "n1", 1).await;
    let (status, listed) = app.get("/v1/handles?node=n1&prefix=net.").await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed, json!([{"handle": "net.a", "addresses": a["ipv4"]}]));
    let (_, all) = app.get("/v1/handles?node=n1").await;
    assert_eq!(all.as_array().unwrap().len(), 2, "{all}");
    refused(
        app.get("/v1/handles?node=").await,
        400,
        "missing_value",
        "node",
    );
    refused(app.get("/v1/handles").await, 400, "invalid_query", "node");
}

#[tokio::test]
async fn an_address_says_who_holds_it() {
    let app = App::with_pool(AppConfig::default()).await;
    let got = app.assign("h", "node-9", 1).await;
    let address = got["ipv4"][0]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let (_, info) = app.get(&format!("/v1/addresses/{address}")).await;
    assert_eq!(info["status"], "inUse");
    assert_eq!(info["handle"], "h");
    assert_eq!(info["pool"], "pool-a");
    assert_eq!(info["attributes"]["node"], "node-9");
    let (_, free) = app.get("/v1/addresses/10.0.0.250").await;
    assert_eq!(
        (free["status"].clone(), free["pool"].clone()),
        (json!("free"), json!("pool-a"))
    );
    let (_, outside) = app.get("/v1/addresses/192.168.1.1").await;
    assert_eq!(outside["status"], "notInPool");
    refused(
        app.get("/v1/addresses/not-an-ip").await,
        400,
        "invalid_value",
        "not-an-ip",
    );
}

#[tokio::test]
async fn pools_are_created_listed_updated_and_deleted() {
    let app = App::with_pool(AppConfig::default()).await;
    let spec = json!({"cidr": "10.1.0.0/24", "blockSize": 28, "nodeSelector": "all()"});
    let (status, created) = app
        .post("/v1/pools", json!({"name": "pool-b", "spec": spec}))
        .await;
    assert_eq!(status, 201, "{created}");
    let (_, pools) = app.get("/v1/pools").await;
    let names: Vec<&str> = pools
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["pool-a", "pool-b"]);
    let (status, one) = app.get("/v1/pools/pool-b").await;
    assert_eq!((status, &one["spec"]["blockSize"]), (200, &json!(28)));
    refused(
        app.get("/v1/pools/none").await,
        404,
        "pool_not_found",
        "none",
    );
    refused(
        app.post(
            "/v1/pools",
            json!({"name": "c", "spec": {"cidr": "10.2.0.0/16", "blockSize": 33}}),
        )
        .await,
        400,
        "invalid_block_size",
        "blockSize 33",
    );
    // Normalised to its network before it is stored, as Calico does.
    let (status, normalised) = app
        .post(
            "/v1/pools",
            json!({"name": "pool-d", "spec": {"cidr": "10.2.0.1/16"}}),
        )
        .await;
    assert_eq!(
        (status, &normalised["spec"]["cidr"]),
        (201, &json!("10.2.0.0/16"))
    );
    let (status, _) = app.call(Method::DELETE, "/v1/pools/pool-d", None).await;
    assert_eq!(status, 204);
    refused(
        app.post(
            "/v1/pools",
            json!({"name": "c", "spec": {"cidr": "10.1.0.128/25"}}),
        )
        .await,
        409,
        "pool_overlap",
        "pool-b",
    );
    refused(
        app.post(
            "/v1/pools",
            json!({"name": "pool-b", "spec": {"cidr": "10.3.0.0/24"}}),
        )
        .await,
        409,
        "already_exists",
        "pool-b",
    );
    let disabled = json!({"spec": {"cidr": "10.1.0.0/24", "blockSize": 28, "disabled": true}});
    let (status, updated) = app
        .call(Method::PUT, "/v1/pools/pool-b", Some(disabled))
        .await;
    assert_eq!((status, &updated["spec"]["disabled"]), (200, &json!(true)));
    refused(
        app.call(
            Method::PUT,
            "/v1/pools/pool-b",
            Some(json!({"spec": {"cidr": "10.1.0.0/24"}})),
        )
        .await,
        400,
        "pool_field_immutable",
        "blockSize cannot be changed",
    );
    refused(
        app.call(
            Method::PUT,
            "/v1/pools/none",
            Some(json!({"spec": {"cidr": "10.7.0.0/24"}})),
        )
        .await,
        404,
        "not_found",
        "IPPool none",
    );
    assert_eq!(
        app.call(Method::DELETE, "/v1/pools/pool-b", None).await.0,
        204
    );
    refused(
        app.call(Method::DELETE, "/v1/pools/pool-b", None).await,
        404,
        "not_found",
        "pool-b",
    );
}

#[tokio::test]
async fn the_ipam_config_is_read_and_validated() {
    let app = App::with_pool(AppConfig::default()).await;
    let (_, config) = app.get("/v1/config").await;
    assert_eq!(
        config,
        json!({"strictAffinity": false, "autoAllocateBlocks": true, "maxBlocksPerHost": 0,
               "ipCooldownSeconds": 0})
    );
    let strict = json!({"strictAffinity": true, "autoAllocateBlocks": true, "maxBlocksPerHost": 3,
                        "ipCooldownSeconds": 120});
    assert_eq!(
        app.call(Method::PUT, "/v1/config", Some(strict.clone()))
            .await
            .0,
        200
    );
    assert_eq!(app.get("/v1/config").await.1, strict);
    refused(
        app.call(
            Method::PUT,
            "/v1/config",
            Some(json!({"strictAffinity": false, "autoAllocateBlocks": false})),
        )
        .await,
        400,
        "invalid_config",
        "Cannot disable 'StrictAffinity' and 'AutoAllocateBlocks' at the same time",
    );
    refused(
        app.call(
            Method::PUT,
            "/v1/config",
            Some(json!({"strictAffinity": false, "autoAllocateBlocks": true,
                        "ipCooldownSeconds": 1201})),
        )
        .await,
        400,
        "invalid_config",
        "ipCooldownSeconds 1201 is out of range: must be 0 to 1200",
    );
    assert_eq!(
        app.get("/v1/config").await.1,
        strict,
        "a refused config changes nothing"
    );
}

#[tokio::test]
async fn node_affinities_are_claimed_listed_and_released() {
    let app = App::with_pool(AppConfig::default()).await;
    let (status, claim) = app
        .post(
            "/v1/nodes/node-1/affinities",
            json!({"cidr": "10.0.0.0/25"}),
        )
        .await;
    assert_eq!(status, 200, "{claim}");
    assert_eq!(claim["claimed"], json!(["10.0.0.0/26", "10.0.0.64/26"]));
    let (_, listed) = app.get("/v1/nodes/node-1/affinities").await;
    assert_eq!(
        listed,
        json!([{"cidr": "10.0.0.0/26", "state": "confirmed"}, {"cidr": "10.0.0.64/26", "state": "confirmed"}])
    );
    refused(
        app.post(
            "/v1/nodes/node-1/affinities",
            json!({"cidr": "10.9.0.0/26"}),
        )
        .await,
        400,
        "claim_outside_pool",
        "The requested CIDR (10.9.0.0/26) is not within any configured pools.",
    );
    app.assign("h", "node-1", 1).await;
    let (_, held) = app.get("/v1/handles/h").await;
    let used = held["addresses"][0].as_str().unwrap();
    let used_block = used.parse::<ipnet::IpNet>().unwrap().trunc().to_string();
    let used_block = used_block.as_str();
    refused(
        app.call(
            Method::DELETE,
            &format!("/v1/nodes/node-1/affinities?cidr={used_block}&requireEmpty=true"),
            None,
        )
        .await,
        409,
        "block_in_use",
        "in use",
    );
    let other = if used_block == "10.0.0.0/26" {
        "10.0.0.64/26"
    } else {
        "10.0.0.0/26"
    };
    let path = format!("/v1/nodes/node-1/affinities?cidr={other}&requireEmpty=true");
    assert_eq!(app.call(Method::DELETE, &path, None).await.0, 204);
    refused(
        app.call(Method::DELETE, &path, None).await,
        404,
        "affinity_not_found",
        "node-1",
    );
    refused(
        app.call(
            Method::DELETE,
            "/v1/nodes/node-1/affinities?cidr=banana",
            None,
        )
        .await,
        400,
        "invalid_value",
        "banana",
    );
    refused(
        app.call(Method::DELETE, "/v1/nodes/node-1/affinities", None)
            .await,
        400,
        "invalid_query",
        "cidr",
    );
    let (status, gone) = app.call(Method::DELETE, "/v1/nodes/node-1", None).await;
    assert_eq!((status, &gone["blocks"]), (200, &json!([used_block])));
    assert_eq!(app.get("/v1/nodes/node-1/affinities").await.1, json!([]));
}

#[tokio::test]
async fn a_pools_fields_from_a_newer_calico_survive_an_update_and_stay_out_of_answers() {
    let store: Arc<dyn Datastore> = Arc::new(MemoryStore::new());
    let spec: PoolSpec = serde_json::from_value(
        json!({"cidr": "10.5.0.0/16", "blockSize": 26, "futureField": {"a": 1}}),
    )
    .unwrap();
    store
        .create(&Object::Pool(Pool::new("newer", spec).unwrap()))
        .await
        .unwrap();
    let app = App::over(store.clone(), AppConfig::default()).await;
    let (status, shown) = app.get("/v1/pools/newer").await;
    assert_eq!(status, 200);
    assert_eq!(shown["spec"].get("futureField"), None, "{shown}");
    let (status, _) = app
        .call(
            Method::PUT,
            "/v1/pools/newer",
            Some(json!({"spec": {"cidr": "10.5.0.0/16", "blockSize": 26, "disabled": true}})),
        )
        .await;
    assert_eq!(status, 200);
    let stored = store
        .get(&ipam_store::Key::Pool("newer".to_string()))
        .await
        .unwrap();
    let Object::Pool(pool) = stored.value else {
        panic!("{stored:?}")
    };
    assert!(pool.spec().disabled);
    assert_eq!(
        serde_json::to_value(pool.spec()).unwrap()["futureField"],
        json!({"a": 1})
    );
}

#[tokio::test]
async fn a_claim_covers_at_most_1024_blocks() {
    let app = App::with_pool(AppConfig::default()).await;
    let (status, _) = app
        .post(
            "/v1/pools",
            json!({"name": "wide", "spec": {"cidr": "fd00::/64", "blockSize": 122}}),
        )
        .await;
    assert_eq!(status, 201);
    // 2^58 blocks: the claim would never end.
    refused(
        app.post("/v1/nodes/n/affinities", json!({"cidr": "fd00::/64"}))
            .await,
        400,
        "invalid_value",
        "covers 2^58 blocks of pool wide: claim at most 1024 at once",
    );
    let (status, claimed) = app
        .post("/v1/nodes/n/affinities", json!({"cidr": "fd00::/112"}))
        .await;
    assert_eq!(status, 200, "{claimed}");
    assert_eq!(claimed["claimed"].as_array().unwrap().len(), 1024);
}
