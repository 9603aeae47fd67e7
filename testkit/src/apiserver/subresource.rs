//! The `status` subresource of the built-in kinds that have one (core/v1
//! `services`), as the API keeps it: `PUT .../<name>/status` changes the
//! object's `status` and nothing else, with the same resourceVersion and
//! uid checks as a replace, and a replace of the object itself keeps the
//! stored `status` (so a controller's status and a user's spec never
//! overwrite each other). `GET .../<name>/status` reads the object.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::status::ApiError;
use super::store::{ResourceId, Shared};
use super::target::{Target, TargetPath};

/// The built-in kinds served with a status subresource.
const WITH_STATUS: [&str; 1] = ["services"];

/// Whether `id` has a status subresource.
pub(super) fn has_status(id: &ResourceId) -> bool {
    id.group.is_empty() && WITH_STATUS.contains(&id.plural.as_str())
}

/// A replace of an object with a status subresource keeps the stored
/// status, whatever the body says.
pub(super) fn keep_status(id: &ResourceId, object: &mut Value, stored: &Value) {
    if has_status(id) {
        match stored.get("status") {
            Some(status) => object["status"] = status.clone(),
            None => {
                if let Some(fields) = object.as_object_mut() {
                    fields.remove("status");
                }
            }
        }
    }
}

/// `GET .../<name>/status`.
pub(super) async fn get_status(
    State(shared): State<Arc<Shared>>,
    path: TargetPath,
) -> Result<Response, ApiError> {
    let target = Target::of(path);
    if !has_status(&target.id) {
        return Err(ApiError::unknown_resource());
    }
    super::routes::read_object(&shared, &target)
}

/// `PUT .../<name>/status`: the body's `status` replaces the stored one.
pub(super) async fn replace_status(
    State(shared): State<Arc<Shared>>,
    path: TargetPath,
    body: Bytes,
) -> Result<Response, ApiError> {
    let target = Target::of(path);
    if !has_status(&target.id) {
        return Err(ApiError::unknown_resource());
    }
    let id = target.id.clone();
    let name = target.name().to_string();
    let key = target.key(&name);
    let update: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a JSON object: {e}")))?;
    let mut store = shared.store();
    target.resource(&store)?;
    let stored = store
        .objects
        .get(&id)
        .and_then(|objects| objects.get(&key))
        .ok_or_else(|| ApiError::not_found(&id, &name))?;
    let meta = &update["metadata"];
    if let Some(body_name) = meta["name"].as_str().filter(|n| *n != name) {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let stored_meta = &stored["metadata"];
    if let Some(uid) = meta["uid"].as_str().filter(|u| !u.is_empty()) {
        if Some(uid) != stored_meta["uid"].as_str() {
            return Err(ApiError::conflict(
                &id,
                &name,
                format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    stored_meta["uid"].as_str().unwrap_or_default()
                ),
            ));
        }
    }
    if let Some(rv) = meta["resourceVersion"].as_str().filter(|rv| !rv.is_empty()) {
        if Some(rv) != stored_meta["resourceVersion"].as_str() {
            return Err(ApiError::modified(&id, &name));
        }
    }
    let mut object = stored.clone();
    object["status"] = update.get("status").cloned().unwrap_or_else(|| json!({}));
    if object == *stored {
        return Ok(Json(object).into_response());
    }
    object["metadata"]["resourceVersion"] = json!(store.next_revision());
    store
        .objects
        .entry(id.clone())
        .or_default()
        .insert(key, object.clone());
    store.record(&id, "MODIFIED", &object);
    Ok(Json(object).into_response())
}
