//! Every route of the `/v1` API, its answers and each error it documents,
//! against the application served in-process on a loopback port.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use support::Flaky;

use ipam_core::{Pool, PoolSpec};
use ipam_server::app::{router, AppConfig};
use ipam_store::memory::MemoryStore;
use ipam_store::{Datastore, Ipam, Value as Object};
use reqwest::Method;
use serde_json::{json, Value};

struct App {
    base: String,
    client: reqwest::Client,
    token: Option<String>,
}

impl App {
    async fn over(store: Arc<dyn Datastore>, config: AppConfig) -> App {
        let engine: Arc<Ipam<dyn Datastore>> = Arc::new(Ipam::new(store));
        let token = config.token.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = router(engine, config);
        tokio::spawn(async move { axum::serve(listener, app).await });
        App {
            base,
            client: reqwest::Client::new(),
            token,
        }
    }

    /// An app over a memory store with one pool, 10.0.0.0/24 in /26 blocks.
    async fn with_pool(config: AppConfig) -> App {
        let store: Arc<dyn Datastore> = Arc::new(MemoryStore::new());
        let spec = PoolSpec {
            block_size: Some(26),
            node_selector: "all()".to_string(),
            ..PoolSpec::new("10.0.0.0/24".parse().unwrap())
        };
        store
            .create(&Object::Pool(Pool::new("pool-a", spec).unwrap()))
            .await
            .unwrap();
        App::over(store, config).await
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    async fn assign(&self, handle: &str, node: &str, ipv4: u32) -> Value {
        let (status, body) = self
            .post(
                "/v1/assign",
                json!({"handle": handle, "node": node, "ipv4": ipv4,
                       "attributes": {"pod": handle, "namespace": "default", "node": node}}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// An error answer: the status, the stable code and a fragment of the
/// message.
#[track_caller]
fn refused(answer: (u16, Value), status: u16, code: &str, says: &str) {
    let (got, body) = answer;
    assert_eq!(got, status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(says), "message {message:?} lacks {says:?}");
}

#[tokio::test]
async fn assign_gives_addresses_and_is_idempotent() {
    let app = App::with_pool(AppConfig::default()).await;
    let first = app.assign("k8s-pod-network.a", "node-1", 2).await;
    assert_eq!(first["ipv4"].as_array().unwrap().len(), 2);
    assert_eq!(first["existing"], false);
    assert!(first["ipv4"][0].as_str().unwrap().ends_with("/26"));
    let again = app.assign("k8s-pod-network.a", "node-1", 2).await;
    assert_eq!(again["existing"], true);
    assert_eq!(again["ipv4"], first["ipv4"]);
}

#[tokio::test]
async fn assign_reports_pool_and_sequence_number_and_keeps_exclusions() {
    let app = App::with_pool(AppConfig {
        max_addresses_per_request: 256,
        ..AppConfig::default()
    })
    .await;
    let bridge = |handle: &str, ipv4: u32| {
        json!({"handle": handle, "node": "n", "ipv4": ipv4,
               "exclude": ["10.0.0.1/32"], "usableWithPoolPrefix": true})
    };
    // The pool has 256 addresses; network, broadcast and gateway are out.
    refused(
        app.post("/v1/assign", bridge("too-many", 254)).await,
        422,
        "pool_exhausted",
        "found 253",
    );
    let (status, got) = app.post("/v1/assign", bridge("all", 253)).await;
    assert_eq!(status, 200, "{got}");
    let addresses: BTreeSet<&str> = got["ipv4"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(addresses.len(), 253);
    for edge in ["10.0.0.0/26", "10.0.0.1/26", "10.0.0.255/26"] {
        assert!(!addresses.contains(edge), "{edge} handed out");
    }
    let assigned = got["assigned"].as_array().unwrap();
    assert_eq!(assigned.len(), 253);
    assert_eq!(assigned[0]["address"], got["ipv4"][0]);
    assert_eq!(assigned[0]["pool"], "10.0.0.0/24");
    // The sequence number releases this allocation and no later one.
    let address = assigned[0]["address"].as_str().unwrap().split('/').next();
    let sequence = assigned[0]["sequenceNumber"].as_u64().unwrap();
    let release = |sequence: u64| json!({"addresses": [{"address": address, "handle": "all", "sequenceNumber": sequence}]});
    refused(
        app.post("/v1/release", release(sequence + 1)).await,
        409,
        "allocation_changed",
        "sequence",
    );
    let (status, out) = app.post("/v1/release", release(sequence)).await;
    assert_eq!((status, &out["released"]), (200, &json!([address])));
    // An assign-ip answer says how the address is held too.
    let (status, pinned) = app
        .post(
            "/v1/assign-ip",
            json!({"handle": "pinned", "node": "n", "address": address}),
        )
        .await;
    assert_eq!(status, 200, "{pinned}");
    assert_eq!(pinned["assigned"]["address"], assigned[0]["address"]);
    assert_eq!(pinned["assigned"]["pool"], "10.0.0.0/24");
    assert!(pinned["assigned"]["sequenceNumber"].as_u64().unwrap() > sequence);
}

#[tokio::test]
async fn assign_refuses_bad_requests() {
    let app = App::with_pool(AppConfig {
        max_addresses_per_request: 4,
        max_body_bytes: 512,
        ..AppConfig::default()
    })
    .await;
    refused(
        app.post(
            "/v1/assign",
            json!({"handle": "h", "node": "n", "ipv4": "one"}),
        )
        .await,
        400,
        "invalid_body",
        "ipv4: invalid type",
    );
    refused(
        app.post(
            "/v1/assign",
            json!({"handle": "h", "node": "n", "ipv4": 1, "colour": 1}),
        )
        .await,
        400,
        "invalid_body",
        "unknown field `colour`",
    );
    refused(
        app.post("/v1/assign", json!({"handle": "h", "node": "n", "ipv4": 5}))
            .await,
        400,
        "too_many_addresses",
        "ipv4: 5 addresses: at most 4 of a family per request",
    );
    refused(
        app.post(
            "/v1/assign",
            json!({"handle": "h", "node": "n", "ipv4": 1, "ipv6": 5}),
        )
        .await,
        400,
        "too_many_addresses",
        "ipv6: 5 addresses",
    );
    // Calico's IPAMConfig keeps it in an int32, as the document says.
    refused(
        app.post(
            "/v1/assign",
            json!({"handle": "h", "node": "n", "ipv4": 1, "maxBlocksPerHost": 3_000_000_000u32}),
        )
        .await,
        400,
        "invalid_value",
        "maxBlocksPerHost: \"3000000000\" is over 2147483647",
    );
    refused(
        app.post("/v1/assign", json!({"handle": "h", "node": "n"}))
            .await,
        400,
        "missing_value",
        "ipv4 and ipv6 are both 0",
    );
    refused(
        app.post("/v1/assign", json!({"handle": "", "node": "n", "ipv4": 1}))
            .await,
        400,
        "missing_value",
        "handle must not be empty",
    );
    refused(
        app.post("/v1/assign", json!({"handle": "h", "node": "n", "ipv6": 1}))
            .await,
        422,
        "unsatisfiable",
        "IPv6",
    );
    // No JSON content type, and a body over the limit.
    let plain = app
        .client
        .post(format!("{}/v1/assign", app.base))
        .body("{}")
        .send()
        .await
        .unwrap();
    let status = plain.status().as_u16();
    let body: Value = plain.json().await.unwrap();
    refused(
        (status, body),
        415,
        "unsupported_media_type",
        "Content-Type: application/json",
    );
    let huge = json!({"handle": "h".repeat(1000), "node": "n", "ipv4": 1});
    refused(
        app.post("/v1/assign", huge).await,
        413,
        "body_too_large",
        "the body limit is 512 bytes",
    );
}

#[tokio::test]
async fn an_exhausted_pool_answers_422_and_keeps_nothing() {
    let app = App::with_pool(AppConfig {
        max_addresses_per_request: 512,
        ..AppConfig::default()
    })
    .await;
    refused(
        app.post(
            "/v1/assign",
            json!({"handle": "greedy", "node": "n", "ipv4": 300}),
        )
        .await,
        422,
        "pool_exhausted",
        "asked for 300 IPv4",
    );
    let (_, usage) = app.get("/v1/usage").await;
    assert_eq!(
        usage["pools"][0]["inUse"], 0,
        "what was taken was given back"
    );
    refused(
        app.get("/v1/handles/greedy").await,
        404,
        "handle_not_found",
        "greedy",
    );
}

#[tokio::test]
async fn assign_ip_takes_the_chosen_address() {
    let app = App::with_pool(AppConfig::default()).await;
    let body = json!({"handle": "h", "node": "n", "address": "10.0.0.77"});
    let (status, answer) = app.post("/v1/assign-ip", body.clone()).await;
    assert_eq!((status, &answer["address"]), (200, &json!("10.0.0.77")));
    assert_eq!(
        app.post("/v1/assign-ip", body).await.0,
        200,
        "same handle again"
    );
    refused(
        app.post(
            "/v1/assign-ip",
            json!({"handle": "other", "node": "n", "address": "10.0.0.77"}),
        )
        .await,
        409,
        "address_in_use",
        "10.0.0.77",
    );
    refused(
        app.post(
            "/v1/assign-ip",
            json!({"handle": "h", "node": "n", "address": "10.9.9.9"}),
        )
        .await,
        400,
        "address_not_in_pool",
        "10.9.9.9",
    );
    refused(
        app.post(
            "/v1/assign-ip",
            json!({"handle": "h", "node": "n", "address": "nope"}),
        )
        .await,
        400,
        "invalid_body",
        "address",
    );
}

#[tokio::test]
async fn release_frees_addresses_and_checks_expectations() {
    let app = App::with_pool(AppConfig {
        max_addresses_per_request: 3,
        ..AppConfig::default()
    })
    .await;
    let got = app.assign("h", "n", 2).await;
    let first = got["ipv4"][0]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    refused(
        app.post(
            "/v1/release",
            json!({"addresses": [{"address": first, "handle": "someone-else"}]}),
        )
        .await,
        409,
        "allocation_changed",
        "someone-else",
    );
    let (_, info) = app.get(&format!("/v1/addresses/{first}")).await;
    assert_eq!(info["status"], "inUse", "a refused release frees nothing");
    let (status, out) = app
        .post(
            "/v1/release",
            json!({"addresses": [{"address": first, "handle": "h"}, {"address": "10.0.0.200"}]}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["released"], json!([first]));
    assert_eq!(out["alreadyFree"], json!(["10.0.0.200"]));
    let four: Vec<Value> = (1..=4)
        .map(|i| json!({"address": format!("10.0.0.{i}")}))
        .collect();
    refused(
        app.post("/v1/release", json!({"addresses": four})).await,
        400,
        "too_many_addresses",
        "at most 3",
    );
}

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
        "cannot both be false",
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
        "not within any pool",
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

/// The `(method, path)` pairs app.rs routes under `/v1`, read from its
/// source, so that a route added there without an OpenAPI entry fails here.
fn v1_routes_of_app_rs() -> BTreeSet<(String, String)> {
    let source = include_str!("../src/app.rs");
    let mut routes = BTreeSet::new();
    for (at, _) in source.match_indices(".route(") {
        // The call's arguments: up to the parenthesis that closes it.
        let rest = &source[at + ".route(".len()..];
        let mut depth = 1;
        let end = rest
            .char_indices()
            .find_map(|(i, c)| {
                depth += match c {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                (depth == 0).then_some(i)
            })
            .expect("a closed .route( call");
        let call = &rest[..end];
        let path = call.split('"').nth(1).expect("a quoted path");
        if !path.starts_with("/v1/") {
            continue;
        }
        for method in ["get", "post", "put", "delete", "patch"] {
            let named = call.match_indices(&format!("{method}(")).any(|(i, _)| {
                !call[..i]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_')
            });
            if named {
                routes.insert((method.to_string(), path.to_string()));
            }
        }
    }
    routes
}

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let app = App::with_pool(AppConfig::default()).await;
    let (status, doc) = app.get("/openapi.json").await;
    assert_eq!(status, 200, "{doc}");
    let mut documented = BTreeSet::new();
    // The probes and /metrics are documented too; app.rs's /v1 routes are
    // compared here.
    let v1 = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .filter(|(path, _)| path.starts_with("/v1/"));
    for (path, item) in v1 {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.clone(), path.clone()));
        }
    }
    let served = v1_routes_of_app_rs();
    assert!(served.len() >= 20, "app.rs parsed badly: {served:?}");
    assert_eq!(documented, served, "OpenAPI paths and app.rs routes differ");
    // And each of them is served: nothing answers no_such_route or 405.
    for (method, path) in &served {
        let path = path
            .replace("{handle}", "h")
            .replace("{address}", "10.0.0.1")
            .replace("{name}", "pool-a")
            .replace("{node}", "node-1");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let (status, body) = app.call(method.clone(), &path, None).await;
        assert!(
            status != 405 && body["code"] != "no_such_route",
            "{method} {path} is not served: {status} {body}"
        );
    }
    refused(
        app.get("/v1/nope").await,
        404,
        "no_such_route",
        "GET /v1/nope",
    );
}

#[tokio::test]
async fn the_token_guards_the_api_but_not_the_probes() {
    let app = App::with_pool(AppConfig {
        token: Some("t0ken".to_string()),
        ..AppConfig::default()
    })
    .await;
    assert_eq!(app.get("/v1/pools").await.0, 200, "with the token");
    for path in ["/v1/pools", "/openapi.json"] {
        let bare = app
            .client
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(bare.status(), 401, "{path} without a token");
        let body: Value = bare.json().await.unwrap();
        assert_eq!(body["code"], "unauthorized");
        let wrong = app
            .client
            .get(format!("{}{path}", app.base))
            .bearer_auth("t0kem")
            .send()
            .await
            .unwrap();
        let status = wrong.status().as_u16();
        let body: Value = wrong.json().await.unwrap();
        refused((status, body), 401, "unauthorized", "Authorization: Bearer");
    }
    // RFC 9110: the scheme is case-insensitive.
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let r = app
            .client
            .get(format!("{}/v1/pools", app.base))
            .header("authorization", format!("{scheme} t0ken"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "scheme {scheme:?}");
    }
    for path in ["/healthz", "/readyz"] {
        let bare = app
            .client
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(bare.status(), 200, "{path} stays open for kubelet");
        assert_eq!(bare.text().await.unwrap(), "ok\n");
    }
}

#[tokio::test]
async fn an_unreachable_or_slow_datastore_is_503() {
    let flaky = Arc::new(Flaky::default());
    let app = App::over(
        flaky.clone(),
        AppConfig {
            request_timeout: Duration::from_millis(300),
            ..AppConfig::default()
        },
    )
    .await;
    assert_eq!(app.get("/readyz").await.0, 200);
    flaky.down.store(true, Ordering::SeqCst);
    refused(
        app.get("/readyz").await,
        503,
        "datastore_unavailable",
        "connection refused",
    );
    refused(
        app.get("/v1/pools").await,
        503,
        "datastore_unavailable",
        "connection refused",
    );
    assert_eq!(
        app.get("/healthz").await.0,
        200,
        "the process is up all the same"
    );
    flaky.down.store(false, Ordering::SeqCst);
    flaky.slow.store(true, Ordering::SeqCst);
    refused(
        app.get("/v1/config").await,
        503,
        "timeout",
        "longer than 0.3 s",
    );
}

#[tokio::test]
async fn a_method_a_route_lacks_is_a_json_405_with_allow() {
    let app = App::with_pool(AppConfig::default()).await;
    for (method, path, allow) in [
        (Method::PATCH, "/v1/pools/pool-a", "GET,HEAD,PUT,DELETE"),
        (Method::DELETE, "/v1/assign", "POST"),
        (Method::POST, "/healthz", "GET,HEAD"),
    ] {
        let r = app
            .client
            .request(method.clone(), format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{method} {path}");
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(r.headers()["allow"], allow, "{method} {path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "method_not_allowed", "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("{method} is not a method of {path}")),
            "{message}"
        );
    }
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
