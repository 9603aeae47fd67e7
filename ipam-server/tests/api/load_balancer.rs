//! LoadBalancer addresses through the API for a named owner, on the
//! datastores without a Kubernetes controller (embedded, etcd): a
//! non-Kubernetes load balancer uses the same pools, in Calico's layout
//! (`virtual:load-balancer` blocks; on etcd the affinities under
//! `/calico/ipam/v2/virtual/`).

use super::*;
use ipam_store::embedded::EmbeddedStore;
use ipam_store::etcd::{EtcdOptions, EtcdStore};
use testkit::etcd::EtcdServer;

async fn pools(store: &Arc<dyn Datastore>) {
    let mut lb = PoolSpec {
        block_size: Some(26),
        ..PoolSpec::new("172.16.0.0/24".parse().unwrap())
    };
    lb.allowed_uses = vec![ipam_core::AllowedUse::LoadBalancer];
    for (name, spec) in [
        ("workload", PoolSpec::new("10.0.0.0/24".parse().unwrap())),
        ("lb", lb),
    ] {
        store
            .create(&Object::Pool(Pool::new(name, spec).unwrap()))
            .await
            .unwrap();
    }
}

async fn owner_assigns_and_releases(store: Arc<dyn Datastore>) {
    pools(&store).await;
    let app = App::over(store.clone(), AppConfig::default()).await;
    let owner = json!({"service": "edge-proxy", "namespace": "lb-team"});
    let (status, got) = app
        .post(
            "/v1/assign",
            json!({"handle": "lb-edge-proxy", "node": "load-balancer", "ipv4": 1,
                   "intendedUse": "LoadBalancer", "attributes": owner}),
        )
        .await;
    assert_eq!(status, 200, "{got}");
    let address = got["ipv4"][0].as_str().unwrap().to_string();
    assert!(address.starts_with("172.16.0."), "{address}");
    let (status, fixed) = app
        .post(
            "/v1/assign-ip",
            json!({"handle": "lb-edge-proxy", "node": "load-balancer",
                   "address": "172.16.0.200", "intendedUse": "LoadBalancer",
                   "attributes": owner}),
        )
        .await;
    assert_eq!(status, 200, "{fixed}");
    let (_, blocks) = app.get("/v1/affinities").await;
    let affinities = blocks.as_array().unwrap();
    assert!(!affinities.is_empty());
    for affinity in affinities {
        assert_eq!(affinity["node"], "load-balancer", "{affinity}");
        assert_eq!(affinity["type"], "virtual", "{affinity}");
    }
    // The address tells whose it is.
    let ip = address.split('/').next().unwrap();
    let (_, status_of) = app.get(&format!("/v1/addresses/{ip}")).await;
    assert!(status_of.to_string().contains("edge-proxy"), "{status_of}");

    // A pod never gets a LoadBalancer pool's address, nor the owner a
    // workload pool's.
    refused(
        app.post(
            "/v1/assign-ip",
            json!({"handle": "k8s-pod-network.p", "node": "n1", "address": "172.16.0.9"}),
        )
        .await,
        422,
        "unsatisfiable",
        "does not allow Workload",
    );
    refused(
        app.post(
            "/v1/assign-ip",
            json!({"handle": "lb-edge-proxy", "node": "load-balancer", "address": "10.0.0.9",
                   "intendedUse": "LoadBalancer"}),
        )
        .await,
        422,
        "unsatisfiable",
        "does not allow LoadBalancer",
    );
    refused(
        app.post(
            "/v1/assign",
            json!({"handle": "lb-x", "node": "node-1", "ipv4": 1, "intendedUse": "LoadBalancer"}),
        )
        .await,
        422,
        "unsatisfiable",
        "load-balancer",
    );

    let (status, released) = app
        .call(Method::DELETE, "/v1/handles/lb-edge-proxy", None)
        .await;
    assert_eq!(status, 200, "{released}");
    let (_, after) = app.get(&format!("/v1/addresses/{ip}")).await;
    assert!(!after.to_string().contains("edge-proxy"), "{after}");
}

#[tokio::test]
async fn a_named_owner_assigns_and_releases_load_balancer_addresses_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Datastore> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    owner_assigns_and_releases(store).await;
}

#[tokio::test]
async fn a_named_owner_assigns_and_releases_load_balancer_addresses_on_etcd() {
    if !testkit::require::etcd() {
        return;
    }
    let etcd = EtcdServer::start().await.unwrap();
    let store: Arc<dyn Datastore> = Arc::new(
        EtcdStore::connect(&[etcd.endpoint()], EtcdOptions::default())
            .await
            .unwrap(),
    );
    owner_assigns_and_releases(store.clone()).await;
    // Calico's key for the load balancer's affinity.
    let listed = store
        .list(&ipam_store::ListQuery::All(ipam_store::Kind::Affinity))
        .await
        .unwrap();
    assert!(!listed.is_empty());
    assert!(listed.iter().all(|v| matches!(
        &v.value,
        Object::Affinity(a) if a.affinity_type.as_deref() == Some("virtual")
    )));
}
