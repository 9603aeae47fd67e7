//! The conformance suite against the Kubernetes backend, talking to the
//! in-process API server through a kubeconfig file as a cluster would be
//! reached; and what only this backend promises: objects shaped exactly as
//! Calico writes them, metadata other clients own surviving our writes, and
//! the API server's refusals surfacing in its own words.

use std::collections::BTreeMap;

use crds::affinity::{hostname_hash, AFFINITY_TYPE_LABEL, HOSTNAME_HASH_LABEL, IP_VERSION_LABEL};
use crds::{BlockAffinity, IPAMBlock};
use ipam_core::block::BlockOwner;
use ipam_core::{Affinity, AffinityState, Block, IpamConfig};
use ipam_store::kubernetes::KubernetesStore;
use ipam_store::{Datastore, Key, ListQuery, StoreError, Value};
use serde_json::json;
use testkit::apiserver::ApiServer;

async fn start() -> (KubernetesStore, ApiServer) {
    let api = ApiServer::start().await;
    let store = KubernetesStore::connect(Some(api.kubeconfig()))
        .await
        .expect("connecting through the test server's kubeconfig");
    (store, api)
}

conformance_tests!(start());

fn block() -> Block {
    let mut block = Block::new(
        "10.0.0.64/26".parse().unwrap(),
        Some(BlockOwner::Host("node-1".to_string())),
        Some("2026-11-23T00:00:00Z".to_string()),
        1_763_856_000_000_000_000,
    );
    block.auto_assign(
        1,
        "k8s-pod-network.aaaa",
        &BTreeMap::new(),
        &Default::default(),
    );
    block.bump_sequence_number();
    block
}

/// Metadata as the API server keeps it after `create`, without what it
/// sets itself.
fn without_server_fields(mut object: serde_json::Value) -> serde_json::Value {
    let meta = object["metadata"].as_object_mut().unwrap();
    for field in ["uid", "resourceVersion", "generation", "creationTimestamp"] {
        meta.remove(field);
    }
    object
}

#[tokio::test]
async fn stored_blocks_are_exactly_what_the_crds_crate_writes() {
    let (store, api) = start().await;
    let block = block();
    store.create(&Value::Block(block.clone())).await.unwrap();
    let stored = api.object("ipamblocks", "10-0-0-64-26").expect("stored");
    let expected = serde_json::to_value(IPAMBlock::from_core(&block, None)).unwrap();
    assert_eq!(without_server_fields(stored), expected);
}

#[tokio::test]
async fn stored_affinities_carry_calicos_labels_and_are_listed_by_them() {
    let (store, api) = start().await;
    let affinity = Affinity::new(
        "node-1",
        "fd00:10::40/122".parse().unwrap(),
        AffinityState::Confirmed,
    );
    store
        .create(&Value::Affinity(affinity.clone()))
        .await
        .unwrap();
    let stored = api
        .object("blockaffinities", "node-1-fd00-10--40-122")
        .expect("named <node>-<block>");
    let expected = serde_json::to_value(BlockAffinity::from_core(&affinity, None)).unwrap();
    assert_eq!(without_server_fields(stored.clone()), expected);
    let labels = &stored["metadata"]["labels"];
    assert_eq!(labels[HOSTNAME_HASH_LABEL], json!(hostname_hash("node-1")));
    assert_eq!(labels[AFFINITY_TYPE_LABEL], json!("host"));
    assert_eq!(labels[IP_VERSION_LABEL], json!("6"));
    assert_eq!(stored["spec"]["deleted"], json!("false"));

    // Listing by node goes by the label: an affinity without it is not
    // found, as Calico would not find it either.
    api.modify("blockaffinities", "node-1-fd00-10--40-122", |object| {
        object["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove(HOSTNAME_HASH_LABEL);
    })
    .unwrap();
    let listed = store
        .list(&ListQuery::AffinitiesOf("node-1".to_string()))
        .await
        .unwrap();
    assert!(listed.is_empty(), "{listed:?}");
}

#[tokio::test]
async fn metadata_added_by_others_survives_an_update() {
    let (store, api) = start().await;
    let block = block();
    store.create(&Value::Block(block.clone())).await.unwrap();
    let revision = api
        .modify("ipamblocks", "10-0-0-64-26", |object| {
            let meta = &mut object["metadata"];
            meta["labels"] = json!({"team": "net"});
            meta["annotations"]["example.com/owner"] = json!("ops");
            meta["ownerReferences"] = json!([{
                "apiVersion": "v1", "kind": "Node", "name": "node-1", "uid": "n-1"
            }]);
        })
        .unwrap();
    let read = store.get(&Key::Block(block.cidr())).await.unwrap();
    assert_eq!(read.revision.0, revision);

    let mut changed = block.clone();
    changed.auto_assign(
        2,
        "k8s-pod-network.bbbb",
        &BTreeMap::new(),
        &Default::default(),
    );
    changed.bump_sequence_number();
    store
        .update(&Value::Block(changed), &read.revision)
        .await
        .unwrap();

    let stored = api.object("ipamblocks", "10-0-0-64-26").unwrap();
    let meta = &stored["metadata"];
    assert_eq!(meta["labels"], json!({"team": "net"}));
    assert_eq!(meta["annotations"]["example.com/owner"], json!("ops"));
    assert_eq!(
        meta["annotations"]["projectcalico.org/metadata"],
        json!(r#"{"creationTimestamp":null}"#)
    );
    assert_eq!(meta["ownerReferences"][0]["name"], json!("node-1"));
    assert_eq!(meta["generation"], json!(2), "the spec changed once");
}

#[tokio::test]
async fn a_write_over_a_revision_never_read_keeps_others_metadata() {
    // Another store read the object; this one writes at that revision.
    let (writer, api) = start().await;
    let reader = KubernetesStore::connect(Some(api.kubeconfig()))
        .await
        .unwrap();
    let block = block();
    writer.create(&Value::Block(block.clone())).await.unwrap();
    api.modify("ipamblocks", "10-0-0-64-26", |object| {
        object["metadata"]["labels"] = json!({"team": "net"});
    })
    .unwrap();
    let read = reader.get(&Key::Block(block.cidr())).await.unwrap();
    writer
        .update(&Value::Block(block.clone()), &read.revision)
        .await
        .unwrap();
    let stored = api.object("ipamblocks", "10-0-0-64-26").unwrap();
    assert_eq!(stored["metadata"]["labels"], json!({"team": "net"}));
}

#[tokio::test]
async fn a_two_step_delete_marks_then_removes() {
    let (store, api) = start().await;
    let block = block();
    let revision = store.create(&Value::Block(block.clone())).await.unwrap();
    let before = store.round_trips();
    store
        .delete(&Key::Block(block.cidr()), &revision)
        .await
        .unwrap();
    let trips = store.round_trips().since(before);
    assert_eq!(
        (trips.reads, trips.writes),
        (0, 2),
        "PUT deleted, then DELETE"
    );
    assert!(api.objects("ipamblocks").is_empty());
}

#[tokio::test]
async fn a_refused_object_surfaces_as_invalid_with_the_servers_message() {
    let (store, _api) = start().await;
    let config = IpamConfig {
        // The CRD bounds maxBlocksPerHost to an int32.
        max_blocks_per_host: 3_000_000_000,
        ..IpamConfig::default()
    };
    let err = store.create(&Value::Config(config)).await.unwrap_err();
    assert_eq!(
        err,
        StoreError::Invalid {
            what: "IPAMConfig default".to_string(),
            message: "IPAMConfig.crd.projectcalico.org \"default\" is invalid: \
                      spec.maxBlocksPerHost: Invalid value: 3000000000: \
                      spec.maxBlocksPerHost in body should be less than or equal to 2147483647"
                .to_string(),
        }
    );

    // A node name Kubernetes cannot name an object after.
    let affinity = Affinity::new(
        "Node-1",
        "10.0.0.0/26".parse().unwrap(),
        AffinityState::Pending,
    );
    let err = store.create(&Value::Affinity(affinity)).await.unwrap_err();
    let StoreError::Invalid { message, .. } = err else {
        panic!("expected Invalid, got {err}");
    };
    assert!(
        message.starts_with(
            "BlockAffinity.crd.projectcalico.org \"Node-1-10-0-0-0-26\" is invalid: metadata.name"
        ),
        "{message}"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    let (store, api) = start().await;
    drop(api);
    let err = store.get(&Key::Config).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Unavailable {
                backend: "kubernetes",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_missing_kubeconfig_is_named() {
    let err = KubernetesStore::connect(Some(std::path::Path::new("/nonexistent/kubeconfig")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/kubeconfig"), "{err}");
}

#[tokio::test]
async fn an_api_root_url_reaches_the_server_without_a_kubeconfig() {
    let api = ApiServer::start().await;
    let store = KubernetesStore::connect_url(api.url()).unwrap();
    store
        .create(&Value::Config(IpamConfig::default()))
        .await
        .unwrap();
    let stored = store.get(&Key::Config).await.unwrap();
    assert_eq!(stored.value, Value::Config(IpamConfig::default()));
    let err = KubernetesStore::connect_url("not a url").unwrap_err();
    assert!(err.to_string().contains("not a url"), "{err}");
}
