//! Bad request bodies in bulk: a generated corpus of malformed bodies for
//! every route that takes one (truncated JSON, wrong types for each field,
//! negative counts, huge arrays, block sizes out of range, CIDRs not
//! aligned, IPv6 where IPv4 is asked, unknown fields). Each must get a 4xx
//! answer whose `code` is set and whose message names the field or value,
//! and must leave the datastore exactly as it was.

use std::sync::Arc;

use ipam_core::{HandleId, NodeName};
use ipam_core::{Pool, PoolSpec};
use ipam_server::app::{router, AppConfig};
use ipam_store::memory::MemoryStore;
use ipam_store::{Datastore, Ipam, Kind, ListQuery, Value as Object};
use reqwest::Method;
use serde_json::{json, Value};

struct Case {
    label: String,
    method: Method,
    path: String,
    body: Vec<u8>,
    named: String,
}

fn json_case(label: String, method: Method, path: &str, body: &Value, named: &str) -> Case {
    Case {
        label,
        method,
        path: path.to_string(),
        body: body.to_string().into_bytes(),
        named: named.to_string(),
    }
}

/// The JSON types a field of another type must refuse, by name.
fn wrong_types_for(good: &Value) -> Vec<(&'static str, Value)> {
    let all = [
        ("string", json!("x")),
        ("number", json!(5)),
        ("negative", json!(-1)),
        ("fraction", json!(1.5)),
        ("bool", json!(true)),
        ("array", json!(["x"])),
        ("object", json!({"k": 1})),
    ];
    all.into_iter()
        .filter(|(kind, _)| match good {
            Value::String(_) => *kind != "string",
            Value::Number(_) => !matches!(*kind, "number"),
            Value::Bool(_) => *kind != "bool",
            Value::Array(_) => *kind != "array",
            Value::Object(_) => *kind != "object",
            Value::Null => true,
        })
        .collect()
}

fn corpus() -> Vec<Case> {
    let routes: Vec<(Method, &str, Value)> = vec![
        (
            Method::POST,
            "/v1/assign",
            json!({"handle": "h", "node": "n", "ipv4": 1, "ipv6": 0,
                   "ipv4Pools": ["10.0.0.0/24"], "ipv6Pools": [],
                   "attributes": {"pod": "p"}, "nodeLabels": {}, "namespaceLabels": {},
                   "intendedUse": "Workload", "maxBlocksPerHost": 0}),
        ),
        (
            Method::POST,
            "/v1/assign-ip",
            json!({"handle": "h", "node": "n", "address": "10.0.0.7", "attributes": {}}),
        ),
        (
            Method::POST,
            "/v1/release",
            json!({"addresses": [{"address": "10.0.0.7", "handle": "h", "sequenceNumber": 1}]}),
        ),
        (
            Method::POST,
            "/v1/pools",
            json!({"name": "pool-b", "spec": {"cidr": "10.1.0.0/24", "blockSize": 26}}),
        ),
        (
            Method::PUT,
            "/v1/pools/pool-a",
            json!({"spec": {"cidr": "10.0.0.0/24", "blockSize": 26, "disabled": true}}),
        ),
        (
            Method::PUT,
            "/v1/config",
            json!({"strictAffinity": true, "autoAllocateBlocks": true, "maxBlocksPerHost": 3}),
        ),
        (
            Method::POST,
            "/v1/nodes/n/affinities",
            json!({"cidr": "10.0.0.64/26"}),
        ),
    ];
    let mut cases = Vec::new();
    for (method, path, good) in &routes {
        // Every top-level field in every wrong type. Fields that take any
        // JSON (none here) would be skipped; the release list's items get
        // the same treatment below.
        for (field, value) in good.as_object().unwrap() {
            for (kind, wrong) in wrong_types_for(value) {
                // A number field given another number kind is a value case.
                let mut body = good.clone();
                body[field] = wrong;
                cases.push(json_case(
                    format!("{method} {path}: {field} as {kind}"),
                    method.clone(),
                    path,
                    &body,
                    field,
                ));
            }
        }
        let mut unknown = good.clone();
        unknown["surprise"] = json!(1);
        cases.push(json_case(
            format!("{method} {path}: unknown field"),
            method.clone(),
            path,
            &unknown,
            "surprise",
        ));
        let text = good.to_string();
        for cut in [0, 1, text.len() / 3, text.len() / 2, text.len() - 1] {
            cases.push(Case {
                label: format!("{method} {path}: cut at byte {cut}"),
                method: method.clone(),
                path: path.to_string(),
                body: text.as_bytes()[..cut].to_vec(),
                named: String::new(),
            });
        }
        // serde takes a struct's fields by position from an array; the
        // API wants an object and says so.
        let positional = Value::Array(good.as_object().unwrap().values().cloned().collect());
        for (label, body) in [
            ("array", json!([])),
            ("its fields by position", positional),
            ("null", json!(null)),
            ("number", json!(7)),
            ("string", json!("x")),
        ] {
            cases.push(json_case(
                format!("{method} {path}: body is {label}"),
                method.clone(),
                path,
                &body,
                "expected a JSON object",
            ));
        }
    }
    // The issue's probes, byte for byte, and objects nested in arrays.
    for (path, method, body, named) in [
        (
            "/v1/assign",
            Method::POST,
            r#"["h","n",1]"#,
            "body: invalid type: sequence, expected a JSON object (AssignBody)",
        ),
        (
            "/v1/release",
            Method::POST,
            r#"[[["10.0.0.0"]]]"#,
            "expected a JSON object (ReleaseBody)",
        ),
        (
            "/v1/release",
            Method::POST,
            r#"{"addresses":[["10.0.0.0"]]}"#,
            "addresses[0]: invalid type: sequence, expected a JSON object (ReleaseItem)",
        ),
        (
            "/v1/pools",
            Method::POST,
            r#"["pool-c",["10.2.0.0/24"]]"#,
            "expected a JSON object (PoolBody)",
        ),
        (
            "/v1/pools",
            Method::POST,
            r#"{"name":"pool-c","spec":["10.2.0.0/24"]}"#,
            "spec: invalid type: sequence",
        ),
        (
            "/v1/pools/pool-a",
            Method::PUT,
            r#"[["10.0.0.0/24",26,"all()",true]]"#,
            "expected a JSON object (PoolSpecBody)",
        ),
        (
            "/v1/config",
            Method::PUT,
            "[true,true,3]",
            "expected a JSON object (ConfigBody)",
        ),
        (
            "/v1/nodes/n/affinities",
            Method::POST,
            r#"["10.0.0.64/26"]"#,
            "expected a JSON object (ClaimBody)",
        ),
        (
            "/v1/assign",
            Method::POST,
            r#"{"handle":"h","node":"n","ipv4":1,"intendedUse":["Workload"]}"#,
            "intendedUse: invalid type: sequence, expected one of Workload, Tunnel, LoadBalancer",
        ),
    ] {
        cases.push(Case {
            label: format!("{method} {path}: {body}"),
            method,
            path: path.to_string(),
            body: body.as_bytes().to_vec(),
            named: named.to_string(),
        });
    }
    let assign = &routes[0].2;
    let with = |base: &Value, field: &str, value: Value| {
        let mut body = base.clone();
        body[field] = value;
        body
    };
    let semantic: Vec<(&str, &str, Value, &str)> = vec![
        (
            "/v1/assign",
            "ipv4 -1",
            with(assign, "ipv4", json!(-1)),
            "ipv4",
        ),
        (
            "/v1/assign",
            "ipv6 -1",
            with(assign, "ipv6", json!(-1)),
            "ipv6",
        ),
        (
            "/v1/assign",
            "ipv4 2^32",
            with(assign, "ipv4", json!(4_294_967_296u64)),
            "ipv4",
        ),
        (
            "/v1/assign",
            "nothing asked",
            with(&with(assign, "ipv4", json!(0)), "ipv6", json!(0)),
            "ipv4",
        ),
        (
            "/v1/assign",
            "too many",
            with(assign, "ipv4", json!(100_000)),
            "100000",
        ),
        (
            "/v1/assign",
            "empty handle",
            with(assign, "handle", json!("")),
            "handle",
        ),
        (
            "/v1/assign",
            "empty node",
            with(assign, "node", json!("")),
            "node",
        ),
        (
            "/v1/assign",
            "IPv6 pool as IPv4",
            with(assign, "ipv4Pools", json!(["fd00::/64"])),
            "fd00::/64",
        ),
        (
            "/v1/assign",
            "IPv4 pool as IPv6",
            with(
                &with(assign, "ipv6", json!(1)),
                "ipv6Pools",
                json!(["10.0.0.0/24"]),
            ),
            "10.0.0.0/24",
        ),
        (
            "/v1/assign",
            "pool not a CIDR",
            with(assign, "ipv4Pools", json!(["10.0.0.0/33"])),
            "ipv4Pools",
        ),
        (
            "/v1/assign",
            "unknown use",
            with(assign, "intendedUse", json!("Mining")),
            "Mining",
        ),
        (
            "/v1/assign",
            "negative block cap",
            with(assign, "maxBlocksPerHost", json!(-2)),
            "maxBlocksPerHost",
        ),
        (
            "/v1/assign",
            "attribute not a string",
            with(assign, "attributes", json!({"pod": 5})),
            "attributes",
        ),
        (
            "/v1/assign-ip",
            "not an address",
            json!({"handle": "h", "node": "n", "address": "10.0.0.256"}),
            "address",
        ),
        (
            "/v1/assign-ip",
            "a CIDR, not an address",
            json!({"handle": "h", "node": "n", "address": "10.0.0.0/24"}),
            "address",
        ),
        (
            "/v1/assign-ip",
            "outside every pool",
            json!({"handle": "h", "node": "n", "address": "172.16.0.1"}),
            "172.16.0.1",
        ),
        (
            "/v1/assign-ip",
            "empty handle",
            json!({"handle": "", "node": "n", "address": "10.0.0.9"}),
            "handle",
        ),
        (
            "/v1/assign",
            "handle Kubernetes could not store",
            with(assign, "handle", json!("my_net.abc")),
            "handle: \"my_net.abc\" is not a handle id",
        ),
        (
            "/v1/assign",
            "handle of 300 characters",
            with(assign, "handle", json!("h".repeat(300))),
            "(300 bytes) is not a handle id",
        ),
        (
            "/v1/assign",
            "node in capitals",
            with(assign, "node", json!("Node-1")),
            "node: \"Node-1\" is not a Kubernetes object name",
        ),
        (
            "/v1/assign",
            "empty node attribute",
            with(assign, "attributes", json!({"node": ""})),
            "attributes.node must not be empty",
        ),
        (
            "/v1/assign",
            "attribute key with a space",
            with(assign, "attributes", json!({"pod name": "p"})),
            "\"pod name\" is not a Kubernetes label key",
        ),
        (
            "/v1/assign-ip",
            "namespace attribute with a dot",
            json!({"handle": "h", "node": "n", "address": "10.0.0.9", "attributes": {"namespace": "a.b"}}),
            "attributes.namespace: \"a.b\" is not a namespace name",
        ),
        (
            "/v1/release",
            "expected handle Kubernetes could not store",
            json!({"addresses": [{"address": "10.0.0.7", "handle": "a b"}]}),
            "addresses[0].handle: \"a b\"",
        ),
        (
            "/v1/release",
            "address not an address",
            json!({"addresses": [{"address": "x"}]}),
            "address",
        ),
        (
            "/v1/release",
            "negative sequence",
            json!({"addresses": [{"address": "10.0.0.7", "sequenceNumber": -1}]}),
            "sequenceNumber",
        ),
        (
            "/v1/release",
            "unknown item field",
            json!({"addresses": [{"address": "10.0.0.7", "ordinal": 3}]}),
            "ordinal",
        ),
        (
            "/v1/release",
            "huge list",
            json!({"addresses": vec![json!({"address": "10.0.0.7"}); 10_000]}),
            "10000",
        ),
        (
            "/v1/release",
            "items not objects",
            json!({"addresses": ["10.0.0.7"]}),
            "addresses",
        ),
    ];
    for (path, label, body, named) in semantic {
        cases.push(json_case(
            format!("POST {path}: {label}"),
            Method::POST,
            path,
            &body,
            named,
        ));
    }
    let pool = |spec: Value| json!({"name": "pool-b", "spec": spec});
    let pools: Vec<(&str, Value, &str)> = vec![
        (
            "block size 0",
            pool(json!({"cidr": "10.1.0.0/24", "blockSize": 0})),
            "block",
        ),
        (
            "block size 33",
            pool(json!({"cidr": "10.1.0.0/24", "blockSize": 33})),
            "block",
        ),
        (
            "block size 19",
            pool(json!({"cidr": "10.1.0.0/16", "blockSize": 19})),
            "block",
        ),
        (
            "IPv6 block size 115",
            pool(json!({"cidr": "fd00::/64", "blockSize": 115})),
            "block",
        ),
        (
            "IPv6 block size 129",
            pool(json!({"cidr": "fd00::/64", "blockSize": 129})),
            "block",
        ),
        (
            "block size -26",
            pool(json!({"cidr": "10.1.0.0/24", "blockSize": -26})),
            "blockSize",
        ),
        (
            "block size 300",
            pool(json!({"cidr": "10.1.0.0/24", "blockSize": 300})),
            "blockSize",
        ),
        (
            "unknown spec field",
            pool(json!({"cidr": "10.1.0.0/24", "colour": "red"})),
            "spec: unknown field `colour`",
        ),
        ("CIDR not a CIDR", pool(json!({"cidr": "10.1.0.0"})), "cidr"),
        ("CIDR /33", pool(json!({"cidr": "10.1.0.0/33"})), "cidr"),
        ("no CIDR", pool(json!({"blockSize": 26})), "cidr"),
        (
            "smaller than a block",
            pool(json!({"cidr": "10.1.0.0/28", "blockSize": 26})),
            "10.1.0.0/28",
        ),
        (
            "overlaps pool-a",
            pool(json!({"cidr": "10.0.0.0/16"})),
            "pool-a",
        ),
        (
            "bad selector",
            pool(json!({"cidr": "10.1.0.0/24", "nodeSelector": "has(("})),
            "has((",
        ),
        (
            "unknown allowed use",
            pool(json!({"cidr": "10.1.0.0/24", "allowedUses": ["Mining"]})),
            "Mining",
        ),
        (
            "empty name",
            json!({"name": "", "spec": {"cidr": "10.1.0.0/24"}}),
            "name",
        ),
        (
            "name Kubernetes could not store",
            json!({"name": "Pool_B", "spec": {"cidr": "10.1.0.0/24"}}),
            "name: \"Pool_B\" is not a Kubernetes object name",
        ),
        (
            "disabled as string",
            pool(json!({"cidr": "10.1.0.0/24", "disabled": "yes"})),
            "disabled",
        ),
    ];
    for (label, body, named) in pools {
        cases.push(json_case(
            format!("POST /v1/pools: {label}"),
            Method::POST,
            "/v1/pools",
            &body,
            named,
        ));
    }
    let updates: Vec<(&str, Value, &str)> = vec![
        (
            "change the CIDR",
            json!({"spec": {"cidr": "10.9.0.0/24", "blockSize": 26}}),
            "cidr",
        ),
        (
            "change the block size",
            json!({"spec": {"cidr": "10.0.0.0/24", "blockSize": 28}}),
            "blockSize",
        ),
        (
            "block size 33",
            json!({"spec": {"cidr": "10.0.0.0/24", "blockSize": 33}}),
            "block",
        ),
    ];
    for (label, body, named) in updates {
        cases.push(json_case(
            format!("PUT /v1/pools/pool-a: {label}"),
            Method::PUT,
            "/v1/pools/pool-a",
            &body,
            named,
        ));
    }
    let configs: Vec<(&str, Value, &str)> = vec![
        (
            "both off",
            json!({"strictAffinity": false, "autoAllocateBlocks": false}),
            "autoAllocateBlocks",
        ),
        (
            "negative cap",
            json!({"strictAffinity": true, "autoAllocateBlocks": true, "maxBlocksPerHost": -1}),
            "maxBlocksPerHost",
        ),
        (
            "missing field",
            json!({"strictAffinity": true}),
            "autoAllocateBlocks",
        ),
        (
            "cap beyond an int32",
            json!({"strictAffinity": true, "autoAllocateBlocks": true, "maxBlocksPerHost": 3_000_000_000u32}),
            "maxBlocksPerHost: \"3000000000\" is over 2147483647",
        ),
    ];
    for (label, body, named) in configs {
        cases.push(json_case(
            format!("PUT /v1/config: {label}"),
            Method::PUT,
            "/v1/config",
            &body,
            named,
        ));
    }
    let claims: Vec<(&str, Value, &str)> = vec![
        (
            "not whole blocks",
            json!({"cidr": "10.0.0.8/29"}),
            "10.0.0.8/29",
        ),
        (
            "outside every pool",
            json!({"cidr": "172.16.0.0/26"}),
            "172.16.0.0/26",
        ),
        ("not a CIDR", json!({"cidr": "10.0.0.0/99"}), "cidr"),
    ];
    for (label, body, named) in claims {
        cases.push(json_case(
            format!("POST affinities: {label}"),
            Method::POST,
            "/v1/nodes/n/affinities",
            &body,
            named,
        ));
    }
    cases
}

async fn everything(store: &dyn Datastore) -> Vec<Object> {
    let mut all = Vec::new();
    for kind in [
        Kind::Pool,
        Kind::Block,
        Kind::Handle,
        Kind::Affinity,
        Kind::Config,
        Kind::Reservation,
    ] {
        let mut listed: Vec<Object> = store
            .list(&ListQuery::All(kind))
            .await
            .unwrap()
            .into_iter()
            .map(|v| v.value)
            .collect();
        listed.sort_by_key(|v| format!("{v:?}"));
        all.extend(listed);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_body_gets_a_4xx_naming_the_fault_and_changes_nothing() {
    let store: Arc<dyn Datastore> = Arc::new(MemoryStore::new());
    let spec = PoolSpec {
        block_size: Some(26),
        ..PoolSpec::new("10.0.0.0/24".parse().unwrap())
    };
    store
        .create(&Object::Pool(Pool::new("pool-a", spec).unwrap()))
        .await
        .unwrap();
    let engine: Arc<Ipam<dyn Datastore>> = Arc::new(Ipam::new(store.clone()));
    // Something allocated, so that a bad release has something to spoil.
    let request =
        ipam_core::AutoAssignRequest::new(HandleId::new("held"), NodeName::new("n"), 1, 0);
    engine.auto_assign(&request).await.unwrap();
    let before = everything(&*store).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = router(engine, AppConfig::default());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::new();

    let cases = corpus();
    assert!(cases.len() >= 200, "the corpus has {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let response = client
            .request(case.method.clone(), format!("{base}{}", case.path))
            .header("content-type", "application/json")
            .body(case.body.clone())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let code = body["code"].as_str().unwrap_or_default();
        let message = body["message"].as_str().unwrap_or_default();
        let fine = (400..500).contains(&status)
            && !code.is_empty()
            && !message.is_empty()
            && message.contains(&case.named);
        if !fine {
            failures.push(format!("{}: {status} {text}", case.label));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert_eq!(
        everything(&*store).await,
        before,
        "a refused request wrote something"
    );
}
