//! Every failure the API reports: a stable machine-readable code
//! ([`ErrorCode`], whose wire strings and HTTP statuses ipam-api owns) and
//! a message for people.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ipam_service::ServiceError;
use ipam_store::{IpamError, StoreError};

use ipam_api::names::NameError;
pub use ipam_api::{ErrorBody, ErrorCode};

/// An error answer; its HTTP status is its code's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// See [`ErrorBody::code`].
    pub code: ErrorCode,
    /// See [`ErrorBody::message`].
    pub message: String,
}

impl ApiError {
    /// An answer with `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorBody {
            code: self.code,
            message: self.message,
        };
        (status, Json(body)).into_response()
    }
}

impl From<NameError> for ApiError {
    fn from(error: NameError) -> ApiError {
        ApiError::new(ErrorCode::from(&error), error.to_string())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::new(ErrorCode::InvalidQuery, rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> ApiError {
        ApiError::new(ErrorCode::InvalidPath, rejection.body_text())
    }
}

impl From<IpamError> for ApiError {
    fn from(error: IpamError) -> ApiError {
        ApiError::new(ipam_service::code_of(&error), error.to_string())
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> ApiError {
        match error {
            ServiceError::Refused { code, message } => ApiError::new(code, message),
            // The server's own service is the engine: it always answers.
            ServiceError::Unanswered(e) => {
                ApiError::new(ErrorCode::DatastoreUnavailable, e.to_string())
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        ApiError::new(ipam_service::code_of_store(&error), error.to_string())
    }
}

impl From<ipam_core::Error> for ApiError {
    fn from(error: ipam_core::Error) -> ApiError {
        IpamError::Refused(error).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_has_its_codes_status() {
        let refused = ApiError::from(IpamError::Refused(ipam_core::Error::HandleNotFound {
            handle: "h".into(),
        }));
        assert_eq!(refused.code, ErrorCode::HandleNotFound);
        assert_eq!(refused.status(), StatusCode::NOT_FOUND);
        let down = ApiError::from(StoreError::Unavailable {
            backend: "etcd",
            message: "connection refused".into(),
        });
        assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
