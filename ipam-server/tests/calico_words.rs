//! Through the HTTP API, every refusal Calico 3.32 has a sentence for
//! answers with a `message` that contains Calico's sentence verbatim and
//! the stable `code` the API has always sent (issue 17, item 4). One row
//! per sentence, each on a fresh server over a memory store, driven
//! in-process with `tower::ServiceExt::oneshot`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request};
use http_body_util::BodyExt;
use ipam_server::app::{router, AppConfig};
use ipam_store::memory::MemoryStore;
use ipam_store::{Datastore, Ipam};
use serde_json::{json, Value};
use tower::ServiceExt;

/// One call: method, path, body.
type Call = (Method, &'static str, Value);

struct Row {
    name: &'static str,
    /// Calls that must succeed first (pools, config, assignments).
    setup: Vec<Call>,
    /// The call that is refused.
    refused: Call,
    /// The status and code the API has always answered with.
    status: u16,
    code: &'static str,
    /// Calico's sentence.
    sentence: &'static str,
}

fn pool(name: &str, cidr: &str, block_size: u8, extra: Value) -> Call {
    let mut spec = json!({"cidr": cidr, "blockSize": block_size});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    (
        Method::POST,
        "/v1/pools",
        json!({"name": name, "spec": spec}),
    )
}

fn pool_p() -> Call {
    pool("p", "10.0.0.0/24", 26, json!({}))
}

fn config(strict: bool, auto: bool, max_blocks: u32) -> Call {
    (
        Method::PUT,
        "/v1/config",
        json!({"strictAffinity": strict, "autoAllocateBlocks": auto,
               "maxBlocksPerHost": max_blocks}),
    )
}

fn assign(extra: Value) -> Call {
    let mut body = json!({"handle": "h2", "node": "host1", "ipv4": 1});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    (Method::POST, "/v1/assign", body)
}

fn assign_ip(handle: &str, node: &str, address: &str) -> Call {
    (
        Method::POST,
        "/v1/assign-ip",
        json!({"handle": handle, "node": node, "address": address}),
    )
}

/// host1 holds 10.0.0.0, in its block 10.0.0.0/26.
fn host1_holds_first() -> Call {
    assign_ip("h", "host1", "10.0.0.0")
}

fn rows() -> Vec<Row> {
    vec![
        // ipam.go, prepareAffinityBlocksForHost.
        Row {
            name: "no_pool_selects_node",
            setup: vec![pool("zoned", "10.0.0.0/24", 26, json!({"nodeSelector": "zone == 'a'"}))],
            refused: assign(json!({})),
            status: 422,
            code: "unsatisfiable",
            sentence: "no configured Calico pools for node host1",
        },
        // ipam.go, determinePools: ErrNoQualifiedPool.
        Row {
            name: "no_pool_enabled",
            setup: vec![pool("off", "10.0.0.0/24", 26, json!({"disabled": true}))],
            refused: assign(json!({})),
            status: 422,
            code: "unsatisfiable",
            sentence: "cannot find a qualified ippool",
        },
        // ipam.go, prepareAffinityBlocksForHost: ErrNoQualifiedPool.
        Row {
            name: "no_pool_allows_use",
            setup: vec![pool("t", "10.0.0.0/24", 26, json!({"allowedUses": ["Tunnel"]}))],
            refused: assign(json!({})),
            status: 422,
            code: "unsatisfiable",
            sentence: "cannot find a qualified ippool, no pools match the required use (Workload)",
        },
        // ipam.go, determinePools.
        Row {
            name: "requested_pool_unavailable",
            setup: vec![pool_p()],
            refused: assign(json!({"ipv4Pools": ["40.0.0.0/24"]})),
            status: 422,
            code: "unsatisfiable",
            sentence: "the given pool (40.0.0.0/24) does not exist, or is not enabled",
        },
        // ipam.go, AutoAssign.
        Row {
            name: "requested_pool_of_other_family",
            setup: vec![pool_p()],
            refused: assign(json!({"ipv4Pools": ["fd00::/120"]})),
            status: 400,
            code: "pool_family_mismatch",
            sentence: "provided IPv4 IPPools list contains one or more IPv6 IPPools",
        },
        // ipam.go, autoAssign: the message Calico records ...
        Row {
            name: "block_limit_message",
            setup: block_limit_setup(),
            refused: assign(json!({})),
            status: 422,
            code: "unsatisfiable",
            sentence: "Need to allocate an IPAM block but could not - limit of 1 blocks reached for this node",
        },
        // ... and the error Calico's CNI plugin returns (ErrBlockLimit).
        Row {
            name: "block_limit_error",
            setup: block_limit_setup(),
            refused: assign(json!({})),
            status: 422,
            code: "unsatisfiable",
            sentence: "cannot allocate new block due to per host block limit",
        },
        // ipam.go, PartialFulfillmentError, as Calico's CNI plugin wraps it.
        Row {
            name: "pools_exhausted",
            setup: vec![pool("tiny", "10.0.0.0/30", 30, json!({})), host2_holds_all()],
            refused: assign(json!({})),
            status: 422,
            code: "pool_exhausted",
            sentence: "failed to request IPv4 addresses: Assigned 0 out of 1 requested IPv4 addresses; No IPs available in pools: [10.0.0.0/30]",
        },
        // ipam.go, autoAssign under strict affinity, then as above.
        Row {
            name: "strict_affinity_no_free_blocks",
            setup: vec![
                pool("tiny", "10.0.0.0/30", 30, json!({})),
                config(true, true, 0),
                host2_holds_all(),
            ],
            refused: assign(json!({})),
            status: 422,
            code: "pool_exhausted",
            sentence: "Assigned 0 out of 1 requested IPv4 addresses; No more free affine blocks and strict affinity enabled",
        },
        // ipam.go, findOrClaimBlock with AutoAllocateBlocks off.
        Row {
            name: "auto_allocate_off",
            setup: vec![pool_p(), config(true, false, 0)],
            refused: assign(json!({})),
            status: 422,
            code: "unsatisfiable",
            sentence: "failed to find or claim a block",
        },
        // ipam.go, AssignIP.
        Row {
            name: "address_not_in_pool",
            setup: vec![pool_p()],
            refused: assign_ip("h2", "host1", "192.168.0.1"),
            status: 400,
            code: "address_not_in_pool",
            sentence: "The provided IP address is not in a configured pool",
        },
        // ipam_block.go, assign: ErrorResourceAlreadyExists, as printed.
        Row {
            name: "address_in_use",
            setup: vec![pool_p(), host1_holds_first()],
            refused: assign_ip("h2", "host1", "10.0.0.0"),
            status: 409,
            code: "address_in_use",
            sentence: "resource already exists: 10.0.0.0 with error: Address already assigned in block",
        },
        // ipam_block.go, assign with strict affinity.
        Row {
            name: "block_of_another_host",
            setup: vec![pool_p(), config(true, true, 0), host1_holds_first()],
            refused: assign_ip("h2", "host2", "10.0.0.5"),
            status: 422,
            code: "unsatisfiable",
            sentence: "Block host affinity does not match",
        },
        // ipam.go, ClaimAffinity.
        Row {
            name: "claim_outside_pools",
            setup: vec![pool_p()],
            refused: (Method::POST, "/v1/nodes/host1/affinities", json!({"cidr": "10.9.0.0/26"})),
            status: 400,
            code: "claim_outside_pool",
            sentence: "The requested CIDR (10.9.0.0/26) is not within any configured pools.",
        },
        // ipam.go, ClaimAffinity.
        Row {
            name: "claim_smaller_than_block",
            setup: vec![pool("q", "192.168.1.0/24", 26, json!({}))],
            refused: (Method::POST, "/v1/nodes/host1/affinities", json!({"cidr": "192.168.1.0/27"})),
            status: 400,
            code: "claim_outside_pool",
            sentence: "The requested CIDR (192.168.1.0/27) is smaller than the minimum.",
        },
        // ipam_block_reader_writer.go, releaseBlockAffinity: errBlockNotEmpty.
        Row {
            name: "release_affinity_of_used_block",
            setup: vec![pool_p(), host1_holds_first()],
            refused: (
                Method::DELETE,
                "/v1/nodes/host1/affinities?cidr=10.0.0.0/26&requireEmpty=true",
                Value::Null,
            ),
            status: 409,
            code: "block_in_use",
            sentence: "block '10.0.0.0/26' is not empty",
        },
        // ipam_block.go, release: ErrorBadHandle.
        Row {
            name: "release_with_another_handle",
            setup: vec![pool_p(), host1_holds_first()],
            refused: (
                Method::POST,
                "/v1/release",
                json!({"addresses": [{"address": "10.0.0.0", "handle": "not-h"}]}),
            ),
            status: 409,
            code: "allocation_changed",
            sentence: "the given handle (not-h) does not match (h) when attempting to release IP",
        },
        // ipam_block.go, release: ErrorBadSequenceNumber.
        Row {
            name: "release_with_stale_sequence_number",
            setup: vec![pool_p(), host1_holds_first()],
            refused: (
                Method::POST,
                "/v1/release",
                json!({"addresses": [{"address": "10.0.0.0", "sequenceNumber": 99}]}),
            ),
            status: 409,
            code: "allocation_changed",
            sentence: "the given sequence number (99) does not match (",
        },
        // ipam.go, SetIPAMConfig.
        Row {
            name: "config_strict_and_auto_both_off",
            setup: vec![],
            refused: config(false, false, 0),
            status: 400,
            code: "invalid_config",
            sentence: "Cannot disable 'StrictAffinity' and 'AutoAllocateBlocks' at the same time",
        },
        // ipam.go, SetIPAMConfig.
        Row {
            name: "config_block_limit_without_strict",
            setup: vec![],
            refused: config(false, true, 4),
            status: 400,
            code: "invalid_config",
            sentence: "MaxBlocksPerHost requires StrictAffinity to be enabled",
        },
    ]
}

/// host2 holds all four addresses of the pool.
fn host2_holds_all() -> Call {
    (
        Method::POST,
        "/v1/assign",
        json!({"handle": "h", "node": "host2", "ipv4": 4}),
    )
}

/// host1 holds every address of its one /30 block and may hold no other.
fn block_limit_setup() -> Vec<Call> {
    vec![
        pool("small", "10.0.0.0/24", 30, json!({})),
        config(true, true, 1),
        (
            Method::POST,
            "/v1/assign",
            json!({"handle": "h", "node": "host1", "ipv4": 4}),
        ),
    ]
}

async fn call(app: &axum::Router, (method, path, body): &Call) -> (u16, Value) {
    let request = Request::builder().method(method.clone()).uri(*path);
    let request = if body.is_null() {
        request.body(Body::empty())
    } else {
        request
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
    }
    .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn every_refusal_calico_has_a_sentence_for_says_it_with_the_code_we_always_sent() {
    for row in rows() {
        let store: Arc<dyn Datastore> = Arc::new(MemoryStore::new());
        let app = router(Arc::new(Ipam::new(store)), AppConfig::default());
        for step in &row.setup {
            let (status, body) = call(&app, step).await;
            assert!(
                status < 300,
                "{}: setup {} {}: {body}",
                row.name,
                step.0,
                step.1
            );
        }
        let (status, body) = call(&app, &row.refused).await;
        let name = row.name;
        assert_eq!(
            (status, body["code"].as_str()),
            (row.status, Some(row.code)),
            "{name}: {body}"
        );
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(row.sentence),
            "{name}: message {message:?} lacks Calico's {:?}",
            row.sentence
        );
    }
}
