//! Every failure the API reports: a stable machine-readable `code`, a
//! message for people, and the HTTP status that fits.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ipam_core::Error as Refusal;
use ipam_store::{IpamError, StoreError};

use ipam_api::names::NameError;
pub use ipam_api::ErrorBody;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// See [`ErrorBody::code`].
    pub code: &'static str,
    /// See [`ErrorBody::message`].
    pub message: String,
}

impl ApiError {
    /// A 400 for a request that is malformed or asks for something invalid.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }

    /// A 404.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code,
            message: message.into(),
        }
    }

    fn new(status: StatusCode, code: &'static str, message: impl ToString) -> ApiError {
        ApiError {
            status,
            code,
            message: message.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code.to_string(),
            message: self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<NameError> for ApiError {
    fn from(error: NameError) -> ApiError {
        let code = match error {
            NameError::Empty { .. } => "missing_value",
            NameError::Invalid { .. } | NameError::TooMany { .. } => "invalid_value",
        };
        ApiError::bad_request(code, error.to_string())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::bad_request("invalid_query", rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> ApiError {
        ApiError::bad_request("invalid_path", rejection.body_text())
    }
}

impl From<IpamError> for ApiError {
    fn from(error: IpamError) -> ApiError {
        use StatusCode as S;
        let (status, code) = match &error {
            IpamError::Refused(refusal) => refusal_status(refusal),
            IpamError::Store(store) => store_status(store),
            IpamError::RetriesExhausted { .. } => (S::CONFLICT, "conflict_retries_exhausted"),
            IpamError::PoolFieldImmutable { .. } => (S::BAD_REQUEST, "pool_field_immutable"),
            IpamError::Exhausted { .. } => (S::UNPROCESSABLE_ENTITY, "pool_exhausted"),
        };
        ApiError::new(status, code, error)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        let (status, code) = store_status(&error);
        ApiError::new(status, code, error)
    }
}

fn store_status(error: &StoreError) -> (StatusCode, &'static str) {
    match error {
        StoreError::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
        StoreError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
        StoreError::AlreadyExists { .. } => (StatusCode::CONFLICT, "already_exists"),
        StoreError::Unavailable { .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, "datastore_unavailable")
        }
        // A stored object that does not parse, or one the datastore refused.
        StoreError::Invalid { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "datastore_invalid"),
    }
}

fn refusal_status(refusal: &Refusal) -> (StatusCode, &'static str) {
    use StatusCode as S;
    match refusal {
        Refusal::InvalidCidr { .. } => (S::BAD_REQUEST, "invalid_cidr"),
        Refusal::CidrNotAligned { .. } => (S::BAD_REQUEST, "cidr_not_aligned"),
        Refusal::BlockTooLarge { .. } | Refusal::BlockSizeOutOfRange { .. } => {
            (S::BAD_REQUEST, "invalid_block_size")
        }
        Refusal::PoolSmallerThanBlock { .. } => (S::BAD_REQUEST, "pool_smaller_than_block"),
        Refusal::InvalidSelector { .. } => (S::BAD_REQUEST, "invalid_selector"),
        Refusal::InvalidConfig { .. } => (S::BAD_REQUEST, "invalid_config"),
        Refusal::PoolFamilyMismatch { .. } => (S::BAD_REQUEST, "pool_family_mismatch"),
        Refusal::ClaimOutsidePool { .. } => (S::BAD_REQUEST, "claim_outside_pool"),
        Refusal::AddressNotInPool { .. } => (S::BAD_REQUEST, "address_not_in_pool"),
        Refusal::MalformedBlock { .. } | Refusal::MalformedHandle { .. } => {
            (S::INTERNAL_SERVER_ERROR, "datastore_invalid")
        }
        // Calico refuses an address in its cooldown as already assigned.
        Refusal::AddressInUse { .. } | Refusal::AddressInCooldown { .. } => {
            (S::CONFLICT, "address_in_use")
        }
        Refusal::BlockNotEmpty { .. } => (S::CONFLICT, "block_in_use"),
        Refusal::PoolsOverlap { .. } => (S::CONFLICT, "pool_overlap"),
        Refusal::SequenceNumberMismatch { .. } | Refusal::HandleMismatch { .. } => {
            (S::CONFLICT, "allocation_changed")
        }
        Refusal::HandleNotFound { .. } => (S::NOT_FOUND, "handle_not_found"),
        Refusal::AffinityNotFound { .. } => (S::NOT_FOUND, "affinity_not_found"),
        Refusal::NoPoolForNode { .. }
        | Refusal::RequestedPoolUnavailable { .. }
        | Refusal::AutoAllocateDisabled { .. }
        | Refusal::BlockLimitReached { .. }
        | Refusal::StrictAffinityViolation { .. } => (S::UNPROCESSABLE_ENTITY, "unsatisfiable"),
    }
}
