//! Malformed objects in the datastore, tried in bulk: a generated corpus of
//! corrupt IPAM blocks, handles and configs written straight into a real
//! etcd under Calico's keys (as a buggy or foreign writer could leave
//! them). Reading them must fail with `StoreError::Invalid` naming the etcd
//! key, an allocation must refuse rather than guess, and nothing in etcd
//! may change.

use std::sync::Arc;

use ipam_core::{AutoAssignRequest, Pool, PoolSpec};
use ipam_core::{HandleId, NodeName};
use ipam_store::etcd::{EtcdKv, EtcdOptions, EtcdStore};
use ipam_store::{Datastore, Ipam, IpamError, StoreError};
use serde_json::{json, Value};
use testkit::etcd::EtcdServer;

const BLOCK_KEY: &str = "/calico/ipam/v2/assignment/ipv4/block/10.0.0.0-26";
const HANDLE_KEY: &str = "/calico/ipam/v2/handle/k8s-pod-network.a";
const CONFIG_KEY: &str = "/calico/ipam/v2/config";

struct Case {
    label: String,
    key: &'static str,
    bytes: Vec<u8>,
}

fn wrong_types() -> Vec<(&'static str, Value)> {
    vec![
        ("string", json!("x")),
        ("number", json!(7)),
        ("negative", json!(-1)),
        ("bool", json!(true)),
        ("array", json!([1])),
        ("object", json!({"k": 1})),
    ]
}

fn same_json_type(a: &Value, b: &Value) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

/// Every field of `good` in every other JSON type, plus cuts of its text.
fn mutations(key: &'static str, good: &Value, skip: &[&str]) -> Vec<Case> {
    let mut cases = Vec::new();
    for (field, value) in good.as_object().unwrap() {
        if skip.contains(&field.as_str()) {
            continue;
        }
        for (kind, wrong) in wrong_types() {
            if same_json_type(value, &wrong) {
                continue;
            }
            let mut bad = good.clone();
            bad[field] = wrong;
            cases.push(Case {
                label: format!("{key}: {field} as {kind}"),
                key,
                bytes: bad.to_string().into_bytes(),
            });
        }
    }
    let text = good.to_string();
    for cut in [1, text.len() / 4, text.len() / 2, text.len() - 1] {
        cases.push(Case {
            label: format!("{key}: cut at byte {cut}"),
            key,
            bytes: text.as_bytes()[..cut].to_vec(),
        });
    }
    for (label, bytes) in [
        ("an array", b"[]".to_vec()),
        ("a number", b"42".to_vec()),
        ("binary", vec![0xff, 0x00, 0xfe]),
    ] {
        cases.push(Case {
            label: format!("{key}: {label}"),
            key,
            bytes,
        });
    }
    cases
}

fn block_cases(good: &Value) -> Vec<Case> {
    // `affinity` and the claim time may be null (a block without owner).
    let mut cases = mutations(BLOCK_KEY, good, &[]);
    let with = |field: &str, value: Value| {
        let mut bad = good.clone();
        bad[field] = value;
        bad
    };
    let allocations = good["allocations"].as_array().unwrap().clone();
    let semantic = vec![
        (
            "allocations one short",
            with("allocations", json!(allocations[..63])),
        ),
        (
            "allocations one long",
            with(
                "allocations",
                json!([allocations.clone(), vec![Value::Null]].concat()),
            ),
        ),
        (
            "100 000 allocations",
            with("allocations", json!(vec![Value::Null; 100_000])),
        ),
        ("ordinal 64 unallocated", with("unallocated", json!([64]))),
        ("negative ordinal", with("unallocated", json!([-1]))),
        (
            "attribute index out of range",
            with(
                "allocations",
                json!([vec![json!(5)], vec![Value::Null; 63]].concat()),
            ),
        ),
        (
            "negative attribute index",
            with(
                "allocations",
                json!([vec![json!(-1)], vec![Value::Null; 63]].concat()),
            ),
        ),
        ("another block's CIDR", with("cidr", json!("10.0.0.64/26"))),
        ("CIDR not aligned", with("cidr", json!("10.0.0.1/26"))),
        ("CIDR /33", with("cidr", json!("10.0.0.0/33"))),
        ("an IPv6 CIDR", with("cidr", json!("fd00::/122"))),
        ("CIDR not a CIDR", with("cidr", json!("ten/26"))),
        (
            "negative sequence number",
            with("sequenceNumber", json!(-5)),
        ),
        (
            "sequence numbers keyed by words",
            with("sequenceNumberForAllocation", json!({"one": 1})),
        ),
    ];
    for (label, bad) in semantic {
        cases.push(Case {
            label: format!("block: {label}"),
            key: BLOCK_KEY,
            bytes: bad.to_string().into_bytes(),
        });
    }
    cases
}

async fn everything(client: &EtcdKv) -> Vec<(Vec<u8>, Vec<u8>)> {
    let answer = client.get_prefix(b"/calico").await.unwrap();
    answer.into_iter().map(|kv| (kv.key, kv.value)).collect()
}

fn names_the_key(error: &StoreError, key: &str) -> bool {
    matches!(error, StoreError::Invalid { what, .. } if what.contains(key))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_stored_objects_are_named_refused_and_left_alone() {
    if !testkit::require::etcd() {
        return;
    }
    let etcd = EtcdServer::start().await.unwrap();
    let store: Arc<dyn Datastore> = Arc::new(
        EtcdStore::connect(&[etcd.endpoint()], EtcdOptions::default())
            .await
            .unwrap(),
    );
    let engine = Ipam::new(store.clone());
    let spec = PoolSpec {
        block_size: Some(26),
        // One block: the node's first claim is the block under BLOCK_KEY.
        ..PoolSpec::new("10.0.0.0/26".parse().unwrap())
    };
    engine
        .create_pool(Pool::new("pool", spec).unwrap())
        .await
        .unwrap();
    engine
        .set_config(ipam_core::IpamConfig::default())
        .await
        .unwrap();
    let mut request = AutoAssignRequest::new(
        HandleId::new("k8s-pod-network.a"),
        NodeName::new("node-1"),
        1,
        0,
    );
    request.attributes.insert("node".into(), "node-1".into());
    engine.auto_assign(&request).await.unwrap();

    let client = EtcdKv::new(&[etcd.endpoint()], &EtcdOptions::default()).unwrap();
    let original = everything(&client).await;
    let read = |key: &str| {
        let value = &original
            .iter()
            .find(|(k, _)| k == key.as_bytes())
            .unwrap_or_else(|| panic!("{key} is not stored"))
            .1;
        serde_json::from_slice::<Value>(value).unwrap()
    };
    let mut cases = block_cases(&read(BLOCK_KEY));
    cases.extend(mutations(HANDLE_KEY, &read(HANDLE_KEY), &[]));
    cases.extend(mutations(CONFIG_KEY, &read(CONFIG_KEY), &[]));
    assert!(cases.len() >= 60, "the corpus has {} cases", cases.len());

    let mut failures = Vec::new();
    for case in &cases {
        let good = original
            .iter()
            .find(|(k, _)| k == case.key.as_bytes())
            .unwrap()
            .1
            .clone();
        client.put(case.key.as_bytes(), &case.bytes).await.unwrap();
        let corrupted = everything(&client).await;
        // A fresh engine: nothing cached from before the corruption.
        let fresh = Ipam::new(store.clone());
        let listed = fresh.snapshot().await;
        // An operation that must read the corrupt object: an allocation
        // (config, pools, the node's block) or, for the handle, its release.
        let operated = if case.key == HANDLE_KEY {
            fresh
                .release_by_handle("k8s-pod-network.a")
                .await
                .map(|_| ())
        } else {
            let mut next = AutoAssignRequest::new(
                HandleId::new("k8s-pod-network.b"),
                NodeName::new("node-1"),
                1,
                0,
            );
            next.attributes.insert("node".into(), "node-1".into());
            fresh.auto_assign(&next).await.map(|_| ())
        };
        let refused = |outcome: Result<(), IpamError>| match outcome {
            Err(IpamError::Store(error)) => names_the_key(&error, case.key),
            _ => false,
        };
        let fine = refused(listed.map(|_| ()))
            && refused(operated)
            && everything(&client).await == corrupted;
        if !fine {
            failures.push(case.label.clone());
        }
        client.put(case.key.as_bytes(), &good).await.unwrap();
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases were not refused cleanly:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert_eq!(everything(&client).await, original);
}
