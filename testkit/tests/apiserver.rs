//! The test API server keeps the Kubernetes API's contract: these tests
//! talk to it over HTTP with kube's client, as the Kubernetes datastore
//! does, and check the answers a real API server gives.

use axum::http::Request;
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use kube::core::Status;
use kube::{Client, Config};
use serde_json::{json, Value};
use testkit::apiserver::ApiServer;

const BLOCKS: &str = "/apis/crd.projectcalico.org/v1/ipamblocks";

async fn client(api: &ApiServer) -> Client {
    let config = Config::new(api.url().parse().unwrap());
    Client::try_from(config).unwrap()
}

fn block(name: &str, cidr: &str) -> Value {
    json!({
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": "IPAMBlock",
        "metadata": {"name": name},
        "spec": {
            "cidr": cidr,
            "allocations": [null, null, null, null],
            "unallocated": [0, 1, 2, 3],
            "attributes": [],
            "strictAffinity": false
        }
    })
}

async fn send(client: &Client, method: &str, uri: &str, body: &Value) -> Result<Value, Status> {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).unwrap())
        .unwrap();
    match client.request::<Value>(request).await {
        Ok(value) => Ok(value),
        Err(kube::Error::Api(status)) => Err(*status),
        Err(other) => panic!("{method} {uri}: {other}"),
    }
}

#[tokio::test]
async fn create_sets_server_metadata_and_refuses_a_second_create() {
    let api = ApiServer::start().await;
    let client = client(&api).await;
    let created = send(
        &client,
        "POST",
        BLOCKS,
        &block("10-0-0-0-30", "10.0.0.0/30"),
    )
    .await
    .unwrap();
    let meta = &created["metadata"];
    assert_eq!(meta["generation"], json!(1));
    assert!(
        meta["uid"].as_str().is_some_and(|u| u.len() == 36),
        "{meta}"
    );
    assert!(meta["resourceVersion"].is_string());
    assert!(meta["creationTimestamp"].as_str().unwrap().ends_with('Z'));

    let status = send(
        &client,
        "POST",
        BLOCKS,
        &block("10-0-0-0-30", "10.0.0.0/30"),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (status.code, status.reason.as_str()),
        (409, "AlreadyExists")
    );
    assert_eq!(
        status.message,
        "ipamblocks.crd.projectcalico.org \"10-0-0-0-30\" already exists"
    );

    let mut with_version = block("10-0-0-4-30", "10.0.0.4/30");
    with_version["metadata"]["resourceVersion"] = json!("7");
    let status = send(&client, "POST", BLOCKS, &with_version)
        .await
        .unwrap_err();
    assert_eq!(status.code, 500);
    assert_eq!(
        status.message,
        "resourceVersion should not be set on objects to be created"
    );
}

#[tokio::test]
async fn a_missing_object_is_a_not_found_status() {
    let api = ApiServer::start().await;
    let client = client(&api).await;
    let status = send(&client, "GET", &format!("{BLOCKS}/nothing"), &json!({}))
        .await
        .unwrap_err();
    assert_eq!(status.code, 404);
    assert_eq!(status.reason, "NotFound");
    assert_eq!(
        status.message,
        "ipamblocks.crd.projectcalico.org \"nothing\" not found"
    );
    let details = status.details.unwrap();
    assert_eq!(details.name, "nothing");
    assert_eq!(details.group, "crd.projectcalico.org");
    assert_eq!(details.kind, "ipamblocks");

    // Custom resources are not created by PUT.
    let status = send(
        &client,
        "PUT",
        &format!("{BLOCKS}/10-0-0-0-30"),
        &block("10-0-0-0-30", "10.0.0.0/30"),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code, 404);

    let status = send(&client, "GET", "/apis/example.com/v1/widgets", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code, status.message.as_str()),
        (404, "the server could not find the requested resource")
    );
}

#[tokio::test]
async fn a_stale_update_is_a_conflict_and_changes_nothing() {
    let api = ApiServer::start().await;
    let client = client(&api).await;
    let uri = format!("{BLOCKS}/10-0-0-0-30");
    let created = send(
        &client,
        "POST",
        BLOCKS,
        &block("10-0-0-0-30", "10.0.0.0/30"),
    )
    .await
    .unwrap();
    let mut first = created.clone();
    first["spec"]["sequenceNumber"] = json!(1);
    let updated = send(&client, "PUT", &uri, &first).await.unwrap();
    assert_ne!(
        updated["metadata"]["resourceVersion"],
        created["metadata"]["resourceVersion"]
    );

    let mut stale = created.clone();
    stale["spec"]["sequenceNumber"] = json!(2);
    let status = send(&client, "PUT", &uri, &stale).await.unwrap_err();
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        status.message,
        "Operation cannot be fulfilled on ipamblocks.crd.projectcalico.org \"10-0-0-0-30\": \
         the object has been modified; please apply your changes to the latest version and try again"
    );
    assert_eq!(api.object("ipamblocks", "10-0-0-0-30").unwrap(), updated);

    // Without a resourceVersion the update is unconditional.
    let mut blind = stale.clone();
    blind["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let written = send(&client, "PUT", &uri, &blind).await.unwrap();
    assert_eq!(written["spec"]["sequenceNumber"], json!(2));
}

#[tokio::test]
async fn generation_rises_with_the_spec_and_a_no_op_writes_nothing() {
    let api = ApiServer::start().await;
    let client = client(&api).await;
    let uri = format!("{BLOCKS}/10-0-0-0-30");
    let created = send(
        &client,
        "POST",
        BLOCKS,
        &block("10-0-0-0-30", "10.0.0.0/30"),
    )
    .await
    .unwrap();

    let same = send(&client, "PUT", &uri, &created).await.unwrap();
    assert_eq!(
        same, created,
        "a replace that changes nothing writes nothing"
    );

    let mut labelled = created.clone();
    labelled["metadata"]["labels"] = json!({"a": "b"});
    let labelled = send(&client, "PUT", &uri, &labelled).await.unwrap();
    assert_eq!(labelled["metadata"]["generation"], json!(1));
    assert_ne!(
        labelled["metadata"]["resourceVersion"],
        created["metadata"]["resourceVersion"]
    );

    let mut changed = labelled.clone();
    changed["spec"]["deleted"] = json!(true);
    // The server owns uid and creationTimestamp: a client cannot move them.
    changed["metadata"]["creationTimestamp"] = json!("2000-01-01T00:00:00Z");
    let changed = send(&client, "PUT", &uri, &changed).await.unwrap();
    assert_eq!(changed["metadata"]["generation"], json!(2));
    assert_eq!(
        changed["metadata"]["creationTimestamp"],
        created["metadata"]["creationTimestamp"]
    );
}

#[tokio::test]
async fn fields_the_schema_does_not_declare_are_pruned_and_defaults_applied() {
    let api = ApiServer::start().await;
    let client = client(&api).await;
    let mut object = block("10-0-0-0-30", "10.0.0.0/30");
    object["spec"]["releasedAt"] = json!("2026-01-01T00:00:00Z");
    object["spec"]["attributes"] = json!([{"handle_id": "h", "extra": 1}]);
    object["status"] = json!({"x": 1});
    object["metadata"]["bogus"] = json!(true);
    let created = send(&client, "POST", BLOCKS, &object).await.unwrap();
    assert!(created["spec"].get("releasedAt").is_none(), "{created}");
    assert_eq!(created["spec"]["attributes"], json!([{"handle_id": "h"}]));
    assert!(created.get("status").is_none());
    assert!(created["metadata"].get("bogus").is_none());
    assert_eq!(created["spec"]["sequenceNumber"], json!(0), "defaulted");
    assert_eq!(api.object("ipamblocks", "10-0-0-0-30").unwrap(), created);

    let pool = json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
        "metadata": {"name": "p"}, "spec": {"cidr": "10.0.0.0/16"}
    });
    let created = send(
        &client,
        "POST",
        "/apis/crd.projectcalico.org/v1/ippools",
        &pool,
    )
    .await
    .unwrap();
    assert_eq!(created["spec"]["assignmentMode"], json!("Automatic"));
}

#[tokio::test]
async fn objects_that_break_the_schema_are_invalid() {
    let api = ApiServer::start().await;
    let client = client(&api).await;
    let mut object = block("x", "10.0.0.0/30");
    object["spec"].as_object_mut().unwrap().remove("cidr");
    let status = send(&client, "POST", BLOCKS, &object).await.unwrap_err();
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        status.message,
        "IPAMBlock.crd.projectcalico.org \"x\" is invalid: spec.cidr: Required value"
    );
    let details = status.details.unwrap();
    assert_eq!(details.kind, "IPAMBlock");
    assert_eq!(details.causes[0].field, "spec.cidr");
    assert_eq!(details.causes[0].reason, "FieldValueRequired");

    let mut object = block("x", "10.0.0.0/30");
    object["spec"]["allocations"][1] = json!("one");
    object["spec"]["affinityClaimTime"] = json!("yesterday");
    let status = send(&client, "POST", BLOCKS, &object).await.unwrap_err();
    assert_eq!(
        status.message,
        "IPAMBlock.crd.projectcalico.org \"x\" is invalid: [\
         spec.affinityClaimTime: Invalid value: \"yesterday\": spec.affinityClaimTime in body must be of type date-time: \"yesterday\", \
         spec.allocations[1]: Invalid value: \"string\": spec.allocations[1] in body must be of type integer: \"string\"]"
    );

    let pool = json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "IPPool",
        "metadata": {"name": "p"}, "spec": {"cidr": "10.0.0.0/16", "ipipMode": "Sometimes"}
    });
    let status = send(
        &client,
        "POST",
        "/apis/crd.projectcalico.org/v1/ippools",
        &pool,
    )
    .await
    .unwrap_err();
    assert_eq!(
        status.message,
        "IPPool.crd.projectcalico.org \"p\" is invalid: spec.ipipMode: Unsupported value: \"Sometimes\": \
         supported values: \"Never\", \"Always\", \"CrossSubnet\""
    );
    assert!(api.objects("ippools").is_empty());
}

#[tokio::test]
async fn lists_filter_by_label_and_carry_the_resource_version() {
    let api = ApiServer::start().await;
    let client = client(&api).await;
    for (name, cidr, node) in [
        ("10-0-0-0-30", "10.0.0.0/30", Some("a")),
        ("10-0-0-4-30", "10.0.0.4/30", Some("b")),
        ("10-0-0-8-30", "10.0.0.8/30", None),
    ] {
        let mut object = block(name, cidr);
        if let Some(node) = node {
            object["metadata"]["labels"] = json!({"node": node});
        }
        send(&client, "POST", BLOCKS, &object).await.unwrap();
    }
    let blocks: Api<crds::IPAMBlock> = Api::all(client.clone());
    let names = |list: kube::core::ObjectList<crds::IPAMBlock>| -> Vec<String> {
        list.items
            .into_iter()
            .map(|b| b.metadata.name.unwrap())
            .collect()
    };
    for (selector, expected) in [
        ("node=a", vec!["10-0-0-0-30"]),
        ("node!=a", vec!["10-0-0-4-30", "10-0-0-8-30"]),
        ("node in (a,b)", vec!["10-0-0-0-30", "10-0-0-4-30"]),
        ("!node", vec!["10-0-0-8-30"]),
        ("node", vec!["10-0-0-0-30", "10-0-0-4-30"]),
    ] {
        let list = blocks
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap();
        assert_eq!(list.metadata.resource_version.as_deref(), Some("3"));
        assert_eq!(names(list), expected, "{selector}");
    }
    let raw = send(&client, "GET", BLOCKS, &json!({})).await.unwrap();
    assert_eq!(raw["kind"], json!("IPAMBlockList"));
    assert_eq!(raw["apiVersion"], json!("crd.projectcalico.org/v1"));
}

#[tokio::test]
async fn deletes_honour_uid_and_resource_version_preconditions() {
    let api = ApiServer::start().await;
    let client = client(&api).await;
    let blocks: Api<crds::IPAMBlock> = Api::all(client.clone());
    let object: crds::IPAMBlock =
        serde_json::from_value(block("10-0-0-0-30", "10.0.0.0/30")).unwrap();
    let created = blocks
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    let rv = created.metadata.resource_version.clone().unwrap();

    for (preconditions, expected) in [
        (
            Preconditions { uid: Some("other".into()), resource_version: None },
            format!("Precondition failed: UID in precondition: other, UID in object meta: {uid}"),
        ),
        (
            Preconditions { uid: None, resource_version: Some("999".into()) },
            format!("Precondition failed: ResourceVersion in precondition: 999, ResourceVersion in object meta: {rv}"),
        ),
    ] {
        let params = DeleteParams { preconditions: Some(preconditions), ..DeleteParams::default() };
        let Err(kube::Error::Api(status)) = blocks.delete("10-0-0-0-30", &params).await else {
            panic!("a failed precondition must refuse the delete");
        };
        assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
        assert_eq!(
            status.message,
            format!("Operation cannot be fulfilled on ipamblocks.crd.projectcalico.org \"10-0-0-0-30\": {expected}")
        );
    }
    assert!(api.object("ipamblocks", "10-0-0-0-30").is_some());

    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid),
            resource_version: Some(rv),
        }),
        ..DeleteParams::default()
    };
    let deleted = blocks.delete("10-0-0-0-30", &params).await.unwrap();
    assert!(deleted.is_left(), "the deleted object comes back");
    assert!(api.objects("ipamblocks").is_empty());
}

#[tokio::test]
async fn finalizers_hold_a_deleted_object_until_they_are_removed() {
    let api = ApiServer::start().await;
    let client = client(&api).await;
    let uri = format!("{BLOCKS}/10-0-0-0-30");
    let mut object = block("10-0-0-0-30", "10.0.0.0/30");
    object["metadata"]["finalizers"] = json!(["example.com/hold"]);
    send(&client, "POST", BLOCKS, &object).await.unwrap();
    let marked = send(&client, "DELETE", &uri, &json!({})).await.unwrap();
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    assert!(api.object("ipamblocks", "10-0-0-0-30").is_some());

    let mut released = marked.clone();
    released["metadata"]["finalizers"] = json!([]);
    send(&client, "PUT", &uri, &released).await.unwrap();
    assert!(api.object("ipamblocks", "10-0-0-0-30").is_none());
}

#[tokio::test]
async fn the_kubeconfig_points_at_the_server() {
    let api = ApiServer::start().await;
    let kubeconfig = kube::config::Kubeconfig::read_from(api.kubeconfig()).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    assert_eq!(
        config.cluster_url.to_string().trim_end_matches('/'),
        api.url()
    );
}

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
async fn a_watch_streams_what_changes_after_the_listed_version_as_kube_reads_it() {
    use futures_util::StreamExt;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{WatchEvent, WatchParams};
    use kube::core::ObjectList;
    let api = ApiServer::start().await;
    let pods: Api<Pod> = Api::all(client(&api).await);
    api.put_core(
        "pods",
        json!({"metadata": {"name": "old", "namespace": "default"}}),
    );
    let listed: ObjectList<Pod> = pods.list(&ListParams::default()).await.unwrap();
    let version = listed.metadata.resource_version.unwrap();
    let mut stream = pods
        .watch(&WatchParams::default().timeout(5), &version)
        .await
        .unwrap()
        .boxed();
    api.put_core(
        "pods",
        json!({"metadata": {"name": "new", "namespace": "default"}}),
    );
    api.put_core(
        "pods",
        json!({"metadata": {"name": "new", "namespace": "default", "labels": {"a": "b"}}}),
    );
    assert!(api.remove_core("pods", Some("default"), "old"));
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = stream.next().await.expect("the watch stays open").unwrap();
        let (kind, pod) = match event {
            WatchEvent::Added(pod) => ("added", pod),
            WatchEvent::Modified(pod) => ("modified", pod),
            WatchEvent::Deleted(pod) => ("deleted", pod),
            other => panic!("{other:?}"),
        };
        seen.push((kind, pod.metadata.name.unwrap()));
    }
    assert_eq!(
        seen,
        [
            ("added", "new".to_string()),
            ("modified", "new".to_string()),
            ("deleted", "old".to_string())
        ]
    );
    // From no version, the pods there are now come first.
    let mut fresh = pods
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .unwrap()
        .boxed();
    match fresh.next().await.unwrap().unwrap() {
        WatchEvent::Added(pod) => assert_eq!(pod.metadata.name.as_deref(), Some("new")),
        other => panic!("{other:?}"),
    }
    // The watch ends at its timeout.
    assert!(fresh.next().await.is_none());
}

#[tokio::test]
async fn a_watch_of_calico_objects_sees_creates_updates_and_deletes() {
    use futures_util::StreamExt;
    use kube::api::{WatchEvent, WatchParams};
    let api = ApiServer::start().await;
    let handles: Api<crds::IPAMHandle> = Api::all(client(&api).await);
    let mut stream = handles
        .watch(&WatchParams::default().timeout(5), "0")
        .await
        .unwrap()
        .boxed();
    let handle: crds::IPAMHandle = serde_json::from_value(json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "IPAMHandle",
        "metadata": {"name": "h"},
        "spec": {"handleID": "h", "block": {"10.0.0.0/26": 1}}
    }))
    .unwrap();
    let created = handles
        .create(&PostParams::default(), &handle)
        .await
        .unwrap();
    let mut changed = created.clone();
    changed.spec.block.insert("10.0.0.0/26".into(), 2);
    handles
        .replace("h", &PostParams::default(), &changed)
        .await
        .unwrap();
    handles.delete("h", &DeleteParams::default()).await.unwrap();
    let mut kinds = Vec::new();
    while kinds.len() < 3 {
        kinds.push(match stream.next().await.unwrap().unwrap() {
            WatchEvent::Added(_) => "added",
            WatchEvent::Modified(_) => "modified",
            WatchEvent::Deleted(_) => "deleted",
            other => panic!("{other:?}"),
        });
    }
    assert_eq!(kinds, ["added", "modified", "deleted"]);
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

/// Runs kube's reflector over a watcher of `api` with `config`, as the
/// garbage collector does: its store, every error the stream yielded, and
/// the task (abort it at the end).
fn reflect<K>(
    api: Api<K>,
    config: kube::runtime::watcher::Config,
) -> (
    kube::runtime::reflector::Store<K>,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    tokio::task::JoinHandle<()>,
)
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    use futures_util::StreamExt;
    use kube::runtime::{reflector, watcher, WatchStreamExt};
    let (store, writer) = reflector::store::<K>();
    let errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = errors.clone();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
    let task = tokio::spawn(stream.for_each(move |event| {
        if let Err(error) = event {
            seen.lock().unwrap().push(error.to_string());
        }
        async {}
    }));
    (store, errors, task)
}

/// Waits (10 s at most) until the reflector's store holds exactly the
/// objects `wanted`, as `<namespace>/<name>` or `<name>`.
async fn until_reflected<K>(store: &kube::runtime::reflector::Store<K>, wanted: &[&str])
where
    K: kube::Resource + Clone,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut held: Vec<String> = store
            .state()
            .iter()
            .map(|o| {
                let name = o.meta().name.clone().unwrap_or_default();
                match &o.meta().namespace {
                    Some(namespace) => format!("{namespace}/{name}"),
                    None => name,
                }
            })
            .collect();
        held.sort();
        if held == wanted {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reflector holds {held:?}, not {wanted:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

fn pod(namespace: &str, name: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": namespace}, "spec": {"nodeName": "node-1"}})
}

#[tokio::test]
async fn a_reflector_follows_pods_created_and_deleted() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::runtime::watcher;
    let api = ApiServer::start().await;
    api.put_core("pods", pod("x", "a"));
    let pods = Api::<Pod>::all(client(&api).await);
    let (store, errors, task) = reflect(pods, watcher::Config::default());
    until_reflected(&store, &["x/a"]).await;
    api.put_core("pods", pod("y", "b"));
    until_reflected(&store, &["x/a", "y/b"]).await;
    assert!(api.remove_core("pods", Some("x"), "a"));
    until_reflected(&store, &["y/b"]).await;
    // A change reaches the store too.
    api.put_core(
        "pods",
        json!({"metadata": {"name": "b", "namespace": "y"}, "spec": {"nodeName": "node-2"}}),
    );
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.state()[0].spec.as_ref().unwrap().node_name.as_deref() != Some("node-2") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the change never came"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    task.abort();
    assert_eq!(*errors.lock().unwrap(), Vec::<String>::new());
    // What the watcher asked: a list of pods, then a watch from its version.
    let verbs: Vec<(String, String)> = api
        .accesses()
        .into_iter()
        .map(|a| (a.verb, a.resource))
        .collect();
    assert_eq!(
        verbs,
        [
            ("list".to_string(), "pods".to_string()),
            ("watch".to_string(), "pods".to_string())
        ]
    );
}

#[tokio::test]
async fn paused_watches_lag_behind_reads_until_resumed() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::runtime::watcher;
    let api = ApiServer::start().await;
    api.put_core("pods", pod("x", "a"));
    let pods = Api::<Pod>::all(client(&api).await);
    let (store, errors, task) = reflect(pods.clone(), watcher::Config::default());
    until_reflected(&store, &["x/a"]).await;
    api.pause_watches();
    api.put_core("pods", pod("x", "late"));
    assert!(api.remove_core("pods", Some("x"), "a"));
    // Reads see the change at once; the watch does not.
    let names: Vec<String> = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| p.metadata.name.unwrap())
        .collect();
    assert_eq!(names, ["late"]);
    for _ in 0..5 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        until_reflected(&store, &["x/a"]).await;
    }
    api.resume_watches();
    until_reflected(&store, &["x/late"]).await;
    task.abort();
    assert_eq!(*errors.lock().unwrap(), Vec::<String>::new());
}

#[tokio::test]
async fn a_reflector_follows_nodes_created_and_deleted() {
    use k8s_openapi::api::core::v1::Node;
    use kube::runtime::watcher;
    let api = ApiServer::start().await;
    api.put_core("nodes", json!({"metadata": {"name": "node-1"}}));
    let nodes = Api::<Node>::all(client(&api).await);
    let (store, errors, task) = reflect(nodes, watcher::Config::default());
    until_reflected(&store, &["node-1"]).await;
    api.put_core("nodes", json!({"metadata": {"name": "node-2"}}));
    until_reflected(&store, &["node-1", "node-2"]).await;
    assert!(api.remove_core("nodes", None, "node-1"));
    until_reflected(&store, &["node-2"]).await;
    task.abort();
    assert_eq!(*errors.lock().unwrap(), Vec::<String>::new());
}

#[tokio::test]
async fn a_reflector_works_with_cached_and_streaming_lists() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::runtime::watcher::{self, ListSemantic};
    let api = ApiServer::start().await;
    let client = client(&api).await;
    api.put_core("pods", pod("x", "a"));
    for config in [
        // limit=500 with resourceVersion=0 and NotOlderThan.
        watcher::Config::default().list_semantic(ListSemantic::Any),
        // A watch with sendInitialEvents=true and no list at all.
        watcher::Config::default().streaming_lists(),
    ] {
        let (store, errors, task) = reflect(Api::<Pod>::all(client.clone()), config.clone());
        until_reflected(&store, &["x/a"]).await;
        api.put_core("pods", pod("x", "b"));
        until_reflected(&store, &["x/a", "x/b"]).await;
        assert!(api.remove_core("pods", Some("x"), "b"));
        until_reflected(&store, &["x/a"]).await;
        task.abort();
        assert_eq!(*errors.lock().unwrap(), Vec::<String>::new(), "{config:?}");
    }
    // A list at an exact past version cannot be served, so it is refused.
    let exact = Api::<Pod>::all(client)
        .list(
            &ListParams::default()
                .at("1")
                .matching(kube::api::VersionMatch::Exact),
        )
        .await;
    assert!(
        matches!(&exact, Err(kube::Error::Api(s)) if s.code == 400),
        "{exact:?}"
    );
}

#[tokio::test]
async fn a_namespaced_list_and_watch_see_their_namespace_only() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::runtime::watcher;
    let api = ApiServer::start().await;
    let client = client(&api).await;
    for (namespace, name) in [("shop", "cart"), ("default", "web"), ("shop", "till")] {
        api.put_core("pods", pod(namespace, name));
    }
    let shop: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let listed: Vec<String> = shop
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| p.metadata.name.unwrap())
        .collect();
    assert_eq!(listed, ["cart", "till"]);
    let (store, errors, task) = reflect(shop, watcher::Config::default());
    until_reflected(&store, &["shop/cart", "shop/till"]).await;
    api.put_core("pods", pod("default", "other"));
    api.put_core("pods", pod("shop", "new"));
    assert!(api.remove_core("pods", Some("default"), "web"));
    assert!(api.remove_core("pods", Some("shop"), "cart"));
    until_reflected(&store, &["shop/new", "shop/till"]).await;
    task.abort();
    assert_eq!(*errors.lock().unwrap(), Vec::<String>::new());
    assert!(api
        .accesses()
        .iter()
        .any(|a| a.verb == "watch" && a.resource == "pods" && a.name.is_none()));
}
