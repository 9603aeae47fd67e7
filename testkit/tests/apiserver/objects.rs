//! Custom resources as the Kubernetes API keeps them: create, read,
//! update, delete, schema pruning and validation, lists, preconditions
//! and finalizers.

use super::*;

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
