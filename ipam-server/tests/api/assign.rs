//! Assigning and releasing addresses: `/v1/assign`, `/v1/assign-ip`,
//! `/v1/release`, their answers and the requests they refuse.

use super::*;

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
