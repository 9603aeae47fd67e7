//! Failed requests, answered with `Status` objects shaped as the API
//! shapes them (reason, message, details with causes, code).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use crds::validation::FieldError;
use serde_json::{json, Map, Value};

use super::store::ResourceId;

/// A failed request, answered with a `Status` object.
#[derive(Debug)]
pub(super) struct ApiError {
    code: StatusCode,
    reason: &'static str,
    message: String,
    details: Value,
}

impl ApiError {
    pub(super) fn not_found(id: &ResourceId, name: &str) -> ApiError {
        ApiError {
            code: StatusCode::NOT_FOUND,
            reason: "NotFound",
            message: format!("{} {name:?} not found", id.qualified()),
            details: json!({"name": name, "group": id.group, "kind": id.plural}),
        }
    }

    pub(super) fn unknown_resource() -> ApiError {
        ApiError {
            code: StatusCode::NOT_FOUND,
            reason: "NotFound",
            message: "the server could not find the requested resource".to_string(),
            details: json!({}),
        }
    }

    pub(super) fn already_exists(id: &ResourceId, name: &str) -> ApiError {
        ApiError {
            code: StatusCode::CONFLICT,
            reason: "AlreadyExists",
            message: format!("{} {name:?} already exists", id.qualified()),
            details: json!({"name": name, "group": id.group, "kind": id.plural}),
        }
    }

    pub(super) fn conflict(id: &ResourceId, name: &str, detail: String) -> ApiError {
        ApiError {
            code: StatusCode::CONFLICT,
            reason: "Conflict",
            message: format!(
                "Operation cannot be fulfilled on {} {name:?}: {detail}",
                id.qualified()
            ),
            details: json!({"name": name, "group": id.group, "kind": id.plural}),
        }
    }

    pub(super) fn modified(id: &ResourceId, name: &str) -> ApiError {
        ApiError::conflict(
            id,
            name,
            "the object has been modified; please apply your changes to the latest version and try again"
                .to_string(),
        )
    }

    pub(super) fn invalid(
        id: &ResourceId,
        kind: &str,
        name: &str,
        errors: Vec<FieldError>,
    ) -> ApiError {
        let summary = match errors.as_slice() {
            [one] => one.text.clone(),
            many => format!(
                "[{}]",
                many.iter()
                    .map(|e| e.text.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| {
                let message = e
                    .text
                    .strip_prefix(&format!("{}: ", e.field))
                    .unwrap_or(&e.text);
                json!({"reason": e.reason, "message": message, "field": e.field})
            })
            .collect();
        ApiError {
            code: StatusCode::UNPROCESSABLE_ENTITY,
            reason: "Invalid",
            message: format!("{kind}.{} {name:?} is invalid: {summary}", id.group),
            details: json!({"name": name, "group": id.group, "kind": kind, "causes": causes}),
        }
    }

    pub(super) fn bad_request(message: String) -> ApiError {
        ApiError {
            code: StatusCode::BAD_REQUEST,
            reason: "BadRequest",
            message,
            details: Value::Null,
        }
    }

    pub(super) fn internal(message: &str) -> ApiError {
        ApiError {
            code: StatusCode::INTERNAL_SERVER_ERROR,
            reason: "InternalError",
            message: message.to_string(),
            details: Value::Null,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut status = Map::new();
        status.insert("kind".into(), json!("Status"));
        status.insert("apiVersion".into(), json!("v1"));
        status.insert("metadata".into(), json!({}));
        status.insert("status".into(), json!("Failure"));
        status.insert("message".into(), json!(self.message));
        status.insert("reason".into(), json!(self.reason));
        if !self.details.is_null() {
            status.insert("details".into(), self.details);
        }
        status.insert("code".into(), json!(self.code.as_u16()));
        (self.code, Json(Value::Object(status))).into_response()
    }
}
