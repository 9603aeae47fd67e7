//! Core objects the collector and the lease read: pods, nodes and
//! leases.

use super::*;

#[tokio::test]
async fn core_pods_and_nodes_are_listed_cluster_wide_as_kube_reads_them() {
    use k8s_openapi::api::core::v1::{Node, Pod};
    let api = ApiServer::start().await;
    let client = client(&api).await;
    api.put_core("nodes", json!({"metadata": {"name": "node-1"}}));
    for (namespace, name) in [("shop", "cart-1"), ("default", "web-0"), ("shop", "a")] {
        api.put_core(
            "pods",
            json!({"metadata": {"name": name, "namespace": namespace}, "spec": {"nodeName": "node-1"}}),
        );
    }
    assert!(api.remove_core("pods", Some("shop"), "cart-1"));
    assert!(!api.remove_core("pods", Some("shop"), "cart-1"));
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    let names: Vec<(String, String)> = pods
        .items
        .iter()
        .map(|p| {
            (
                p.metadata.namespace.clone().unwrap(),
                p.metadata.name.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("default".to_string(), "web-0".to_string()),
            ("shop".to_string(), "a".to_string())
        ]
    );
    let nodes = Api::<Node>::all(client)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(nodes.items.len(), 1);
    assert_eq!(nodes.items[0].metadata.name.as_deref(), Some("node-1"));
}

#[tokio::test]
async fn leases_live_in_their_namespace_and_keep_every_field() {
    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
    let api = ApiServer::start().await;
    let client = client(&api).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let renew: MicroTime = serde_json::from_value(json!("2026-11-23T07:00:00.123456Z")).unwrap();
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some("gc".into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("replica-a".into()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(renew.clone()),
            renew_time: Some(renew.clone()),
            lease_transitions: Some(3),
            ..LeaseSpec::default()
        }),
    };
    let created = leases.create(&PostParams::default(), &lease).await.unwrap();
    assert_eq!(created.metadata.namespace.as_deref(), Some("kube-system"));
    assert_eq!(created.spec, lease.spec, "every field kept");
    let read = leases.get("gc").await.unwrap();
    assert_eq!(read.spec, lease.spec);
    assert_eq!(
        serde_json::to_value(&read.spec.as_ref().unwrap().renew_time).unwrap(),
        json!("2026-11-23T07:00:00.123456Z")
    );
    let duplicate = leases.create(&PostParams::default(), &lease).await;
    assert!(matches!(duplicate, Err(kube::Error::Api(s)) if s.code == 409));

    // Not in another namespace, and not without one.
    let elsewhere: Api<Lease> = Api::namespaced(client.clone(), "default");
    assert!(elsewhere.get_opt("gc").await.unwrap().is_none());
    match elsewhere.get("gc").await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 404);
            assert_eq!(status.reason, "NotFound");
            assert_eq!(
                status.message,
                r#"leases.coordination.k8s.io "gc" not found"#
            );
        }
        other => panic!("{other:?}"),
    }
    let everywhere: Api<Lease> = Api::all(client.clone());
    assert_eq!(
        everywhere
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    let unscoped = send(
        &client,
        "GET",
        "/apis/coordination.k8s.io/v1/leases/gc",
        &Value::Null,
    )
    .await;
    assert_eq!(unscoped.unwrap_err().code, 404);

    // Replace on the version read; a stale one conflicts.
    let mut taken = read.clone();
    taken.spec.as_mut().unwrap().holder_identity = Some("replica-b".into());
    let written = leases
        .replace("gc", &PostParams::default(), &taken)
        .await
        .unwrap();
    assert_ne!(
        written.metadata.resource_version,
        read.metadata.resource_version
    );
    assert_eq!(
        written.spec.as_ref().unwrap().holder_identity.as_deref(),
        Some("replica-b")
    );
    assert_eq!(written.spec, taken.spec, "every field kept by a replace");
    let version = |lease: &Lease| {
        let rv = lease.metadata.resource_version.as_deref().unwrap();
        rv.parse::<u64>().unwrap()
    };
    assert!(version(&written) > version(&read));
    assert_eq!(written.metadata.uid, created.metadata.uid);
    let stale = leases.replace("gc", &PostParams::default(), &taken).await;
    match stale {
        Err(kube::Error::Api(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        leases.get("gc").await.unwrap().metadata.resource_version,
        written.metadata.resource_version,
        "the stale replace wrote nothing"
    );

    // A body naming another namespace than the path is refused.
    let mut misplaced = lease.clone();
    misplaced.metadata.name = Some("other".into());
    misplaced.metadata.namespace = Some("default".into());
    let refused = send(
        &client,
        "POST",
        "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases",
        &serde_json::to_value(&misplaced).unwrap(),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code, 400);
    assert!(refused.message.contains("namespace"), "{}", refused.message);

    leases.delete("gc", &DeleteParams::default()).await.unwrap();
    assert!(leases.get_opt("gc").await.unwrap().is_none());

    // What RBAC would check for a leader election.
    let accesses = api.accesses();
    for verb in ["create", "get", "update", "delete"] {
        assert!(
            accesses.iter().any(|a| a.verb == verb
                && a.group == "coordination.k8s.io"
                && a.resource == "leases"
                && (verb == "create" || a.name.as_deref() == Some("gc"))),
            "{verb}: {accesses:?}"
        );
    }
}

#[tokio::test]
async fn a_pod_is_read_in_its_namespace_and_a_node_by_name() {
    use k8s_openapi::api::core::v1::{Node, Pod};
    let api = ApiServer::start().await;
    let client = client(&api).await;
    api.put_core("nodes", json!({"metadata": {"name": "node-1"}}));
    api.put_core(
        "pods",
        json!({"metadata": {"name": "web-0", "namespace": "shop"},
               "spec": {"nodeName": "node-1"},
               "status": {"podIPs": [{"ip": "10.0.0.7"}]}}),
    );
    let shop: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let pod = shop.get_opt("web-0").await.unwrap().expect("the pod");
    assert_eq!(
        pod.status.unwrap().pod_ips.unwrap()[0].ip,
        "10.0.0.7",
        "status kept"
    );
    assert!(shop.get_opt("web-1").await.unwrap().is_none());
    let default: Api<Pod> = Api::namespaced(client.clone(), "default");
    assert!(default.get_opt("web-0").await.unwrap().is_none());
    let nodes: Api<Node> = Api::all(client.clone());
    assert!(nodes.get_opt("node-1").await.unwrap().is_some());
    assert!(nodes.get_opt("node-2").await.unwrap().is_none());
    // A node is not in a namespace.
    let namespaced = send(
        &client,
        "GET",
        "/api/v1/namespaces/shop/nodes/node-1",
        &Value::Null,
    )
    .await;
    assert_eq!(namespaced.unwrap_err().code, 404);
    // Access records name what RBAC would check.
    let accesses = api.accesses();
    assert!(accesses.iter().any(|a| a.verb == "get"
        && a.resource == "pods"
        && a.group.is_empty()
        && a.name.as_deref() == Some("web-0")));
}
