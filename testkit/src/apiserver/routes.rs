//! The HTTP side: the routes at the API's paths and the handlers for
//! list, get, create, replace and delete, which keep the API's contract
//! for resourceVersions, uids, generations, preconditions and finalizers.
//! Pruning, defaulting and validation are `crds::validation`'s; watches
//! are [`super::watch`]'s.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use crds::validation::{admit, name_errors};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use super::rbac::record_access;
use super::selectors::Selector;
use super::status::ApiError;
use super::store::{ResourceId, ResourceType, Shared};
use super::subresource;
use super::target::{Target, TargetPath};
use super::watch::watch;

pub(super) fn app(shared: Arc<Shared>) -> Router {
    let collection = || get(list_objects).post(create_object);
    let object = || get(get_object).put(replace_object).delete(delete_object);
    Router::new()
        .route("/apis/{group}/{version}/{plural}", collection())
        .route("/apis/{group}/{version}/{plural}/{name}", object())
        .route(
            "/apis/{group}/{version}/namespaces/{namespace}/{plural}",
            collection(),
        )
        .route(
            "/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}",
            object(),
        )
        .route("/api/{version}/{plural}", collection())
        .route("/api/{version}/{plural}/{name}", object())
        .route(
            "/api/{version}/namespaces/{namespace}/{plural}",
            collection(),
        )
        .route(
            "/api/{version}/namespaces/{namespace}/{plural}/{name}",
            object(),
        )
        .route(
            "/api/{version}/namespaces/{namespace}/{plural}/{name}/status",
            get(subresource::get_status).put(subresource::replace_status),
        )
        .fallback(|| async { ApiError::unknown_resource() })
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            record_access,
        ))
        .with_state(shared)
}

type AppState = State<Arc<Shared>>;

async fn list_objects(
    State(shared): AppState,
    path: TargetPath,
    Query(params): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    let target = Target::of(path);
    refuse_unsupported(&params, &["fieldSelector", "dryRun"])?;
    let selector = match params.get("labelSelector") {
        Some(text) => Selector::parse(text)?,
        None => Selector::default(),
    };
    if params.get("watch").is_some_and(|w| w == "true" || w == "1") {
        return watch(shared, target, selector, &params);
    }
    if params
        .get("resourceVersionMatch")
        .is_some_and(|m| m == "Exact")
    {
        // Only the current state is kept, not the snapshots of the past.
        return Err(ApiError::bad_request(
            "resourceVersionMatch=Exact is not supported by this test server".to_string(),
        ));
    }
    let store = shared.store();
    let resource = target.resource(&store)?;
    let id = &target.id;
    let items: Vec<Value> = target.selected(&store, &selector).cloned().collect();
    Ok(Json(json!({
        "apiVersion": id.api_version(),
        "kind": resource.list_kind,
        "metadata": {"resourceVersion": store.last_revision.to_string()},
        "items": items,
    }))
    .into_response())
}

async fn get_object(State(shared): AppState, path: TargetPath) -> Result<Response, ApiError> {
    read_object(&shared, &Target::of(path))
}

/// The stored object `target` names, as a GET of it or of its status
/// subresource answers.
pub(super) fn read_object(shared: &Shared, target: &Target) -> Result<Response, ApiError> {
    let store = shared.store();
    target.resource(&store)?;
    store
        .objects
        .get(&target.id)
        .and_then(|objects| objects.get(&target.key(target.name())))
        .map(|object| Json(object.clone()).into_response())
        .ok_or_else(|| ApiError::not_found(&target.id, target.name()))
}

async fn create_object(
    State(shared): AppState,
    path: TargetPath,
    Query(params): Query<BTreeMap<String, String>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    refuse_unsupported(&params, &["dryRun"])?;
    let target = Target::of(path);
    let id = target.id.clone();
    let mut store = shared.store();
    let resource = target.resource(&store)?;
    let (mut object, mut meta) = decode(&id, resource, &body)?;
    if let Some(namespace) = &target.namespace {
        if meta.namespace.as_ref().is_some_and(|n| n != namespace) {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
                    .to_string(),
            ));
        }
        meta.namespace = Some(namespace.clone());
    }
    let name = meta.name.clone().unwrap_or_default();
    if meta
        .resource_version
        .as_deref()
        .is_some_and(|rv| !rv.is_empty())
    {
        return Err(ApiError::internal(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let mut errors = name_errors(meta.name.as_deref());
    errors.extend(admit(&resource.schema, &mut object).errors);
    if !errors.is_empty() {
        return Err(ApiError::invalid(&id, &resource.kind, &name, errors));
    }
    let key = target.key(&name);
    if store
        .objects
        .get(&id)
        .is_some_and(|objects| objects.contains_key(&key))
    {
        return Err(ApiError::already_exists(&id, &name));
    }
    let revision = store.next_revision();
    let meta = ObjectMeta {
        uid: Some(store.new_uid()),
        resource_version: Some(revision),
        generation: Some(1),
        creation_timestamp: Some(now()),
        deletion_timestamp: None,
        deletion_grace_period_seconds: None,
        managed_fields: None,
        ..meta
    };
    object["metadata"] = to_json(&meta);
    store
        .objects
        .entry(id.clone())
        .or_default()
        .insert(key, object.clone());
    store.record(&id, "ADDED", &object);
    Ok((StatusCode::CREATED, Json(object)).into_response())
}

async fn replace_object(
    State(shared): AppState,
    path: TargetPath,
    Query(params): Query<BTreeMap<String, String>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    refuse_unsupported(&params, &["dryRun"])?;
    let target = Target::of(path);
    let id = target.id.clone();
    let name = target.name().to_string();
    let key = target.key(&name);
    let mut store = shared.store();
    let resource = target.resource(&store)?;
    let (mut object, meta) = decode(&id, resource, &body)?;
    if let Some(body_name) = meta.name.as_deref().filter(|n| *n != name) {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let errors = admit(&resource.schema, &mut object).errors;
    if !errors.is_empty() {
        return Err(ApiError::invalid(&id, &resource.kind, &name, errors));
    }
    let stored = store
        .objects
        .get(&id)
        .and_then(|objects| objects.get(&key))
        .ok_or_else(|| ApiError::not_found(&id, &name))?;
    let old: ObjectMeta = from_json(&stored["metadata"]);
    if let Some(uid) = meta.uid.as_deref().filter(|u| !u.is_empty()) {
        if Some(uid) != old.uid.as_deref() {
            return Err(ApiError::conflict(
                &id,
                &name,
                format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    old.uid.as_deref().unwrap_or_default()
                ),
            ));
        }
    }
    // No resourceVersion means an unconditional update, which custom
    // resources allow.
    if let Some(rv) = meta.resource_version.as_deref().filter(|rv| !rv.is_empty()) {
        if Some(rv) != old.resource_version.as_deref() {
            return Err(ApiError::modified(&id, &name));
        }
    }
    subresource::keep_status(&id, &mut object, stored);
    let content_changed = without_metadata(&object) != without_metadata(stored);
    let generation = old.generation.unwrap_or(1) + i64::from(content_changed);
    let mut meta = ObjectMeta {
        name: Some(name.clone()),
        namespace: old.namespace.clone(),
        uid: old.uid.clone(),
        resource_version: old.resource_version.clone(),
        generation: Some(generation),
        creation_timestamp: old.creation_timestamp.clone(),
        deletion_timestamp: old.deletion_timestamp.clone(),
        deletion_grace_period_seconds: old.deletion_grace_period_seconds,
        managed_fields: old.managed_fields.clone(),
        ..meta
    };
    object["metadata"] = to_json(&meta);
    if object == *stored {
        // The API server writes nothing when nothing changed, so the
        // resourceVersion stays.
        return Ok(Json(object).into_response());
    }
    meta.resource_version = Some(store.next_revision());
    object["metadata"] = to_json(&meta);
    let objects = store.objects.entry(id.clone()).or_default();
    if meta.deletion_timestamp.is_some() && meta.finalizers.as_ref().is_none_or(Vec::is_empty) {
        // The last finalizer is gone: the pending delete completes.
        objects.remove(&key);
        store.record(&id, "DELETED", &object);
    } else {
        objects.insert(key, object.clone());
        store.record(&id, "MODIFIED", &object);
    }
    Ok(Json(object).into_response())
}

async fn delete_object(
    State(shared): AppState,
    path: TargetPath,
    Query(params): Query<BTreeMap<String, String>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    refuse_unsupported(&params, &["dryRun"])?;
    let target = Target::of(path);
    let id = target.id.clone();
    let name = target.name().to_string();
    let key = target.key(&name);
    let options: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    if options.get("dryRun").is_some_and(|d| d != &json!([])) {
        return Err(ApiError::bad_request(
            "dryRun is not supported by this test server".to_string(),
        ));
    }
    let mut store = shared.store();
    target.resource(&store)?;
    let stored = store
        .objects
        .get(&id)
        .and_then(|objects| objects.get(&key))
        .ok_or_else(|| ApiError::not_found(&id, &name))?;
    let meta: ObjectMeta = from_json(&stored["metadata"]);
    let preconditions = &options["preconditions"];
    for (field, label, actual) in [
        ("uid", "UID", meta.uid.as_deref()),
        (
            "resourceVersion",
            "ResourceVersion",
            meta.resource_version.as_deref(),
        ),
    ] {
        if let Some(wanted) = preconditions[field].as_str() {
            if Some(wanted) != actual {
                return Err(ApiError::conflict(
                    &id,
                    &name,
                    format!(
                        "Precondition failed: {label} in precondition: {wanted}, {label} in object meta: {}",
                        actual.unwrap_or_default()
                    ),
                ));
            }
        }
    }
    if meta.finalizers.as_ref().is_some_and(|f| !f.is_empty()) {
        // Finalizers hold the object: mark it and let their owners finish.
        let mut object = stored.clone();
        if meta.deletion_timestamp.is_none() {
            object["metadata"]["deletionTimestamp"] =
                serde_json::to_value(now()).unwrap_or_default();
            object["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            object["metadata"]["resourceVersion"] = json!(store.next_revision());
            store
                .objects
                .entry(id.clone())
                .or_default()
                .insert(key, object.clone());
            store.record(&id, "MODIFIED", &object);
        }
        return Ok(Json(object).into_response());
    }
    let object = store
        .objects
        .get_mut(&id)
        .and_then(|objects| objects.remove(&key))
        .ok_or_else(|| ApiError::not_found(&id, &name))?;
    store.record(&id, "DELETED", &object);
    Ok(Json(object).into_response())
}

fn refuse_unsupported(params: &BTreeMap<String, String>, names: &[&str]) -> Result<(), ApiError> {
    match names.iter().find(|name| params.contains_key(**name)) {
        Some(name) => Err(ApiError::bad_request(format!(
            "{name} is not supported by this test server"
        ))),
        None => Ok(()),
    }
}

/// Parses a request body into the object (metadata normalised through
/// ObjectMeta, which drops what ObjectMeta does not know) and its metadata.
fn decode(
    id: &ResourceId,
    resource: &ResourceType,
    body: &[u8],
) -> Result<(Value, ObjectMeta), ApiError> {
    let mut object: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a JSON object: {e}")))?;
    let Some(fields) = object.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the body is not a JSON object".to_string(),
        ));
    };
    let api_version = fields.get("apiVersion").and_then(Value::as_str);
    if api_version != Some(id.api_version().as_str()) {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({}) does not match the expected API version ({})",
            api_version.unwrap_or_default(),
            id.api_version()
        )));
    }
    let kind = fields.get("kind").and_then(Value::as_str);
    if kind != Some(resource.kind.as_str()) {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({}) does not match the expected kind ({})",
            kind.unwrap_or_default(),
            resource.kind
        )));
    }
    let meta: ObjectMeta = match fields.get("metadata") {
        Some(meta) => serde_json::from_value(meta.clone())
            .map_err(|e| ApiError::bad_request(format!("invalid metadata: {e}")))?,
        None => ObjectMeta::default(),
    };
    fields.insert("metadata".to_string(), to_json(&meta));
    Ok((object, meta))
}

fn without_metadata(object: &Value) -> Value {
    let mut rest = object.clone();
    if let Some(fields) = rest.as_object_mut() {
        fields.remove("metadata");
    }
    rest
}

fn to_json(meta: &ObjectMeta) -> Value {
    // ObjectMeta is plain data; serialising it cannot fail.
    serde_json::to_value(meta).unwrap_or_default()
}

fn from_json(meta: &Value) -> ObjectMeta {
    // Stored metadata was produced by `to_json`, so it always parses.
    serde_json::from_value(meta.clone()).unwrap_or_default()
}

/// The current time to the second, as the API stamps metadata.
fn now() -> Time {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    Time(Timestamp::from_second(secs as i64).unwrap_or(Timestamp::UNIX_EPOCH))
}
