//! How the engine's and the client's failures become one [`ServiceError`],
//! with the code the API reports each with.

use ipam_api::ErrorCode;
use ipam_client::ClientError;
use ipam_store::{IpamError, StoreError};

/// A failed operation.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The IPAM refused or failed the operation, and said why: the engine,
    /// or ipam-server's error answer (its message then names the server
    /// and the route).
    #[error("{message}")]
    Refused {
        /// What kind of failure.
        code: ErrorCode,
        /// What went wrong, for people.
        message: String,
    },
    /// ipam-server gave no API answer: it could not be reached, did not
    /// answer in time, or answered something that does not decode.
    #[error(transparent)]
    Unanswered(ClientError),
}

impl ServiceError {
    /// The API's code, when the IPAM answered with one.
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            ServiceError::Refused { code, .. } => Some(code),
            ServiceError::Unanswered(_) => None,
        }
    }
}

impl From<IpamError> for ServiceError {
    fn from(error: IpamError) -> ServiceError {
        ServiceError::Refused {
            code: code_of(&error),
            message: error.to_string(),
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(error: StoreError) -> ServiceError {
        ServiceError::Refused {
            code: code_of_store(&error),
            message: error.to_string(),
        }
    }
}

impl From<ipam_core::Error> for ServiceError {
    fn from(error: ipam_core::Error) -> ServiceError {
        IpamError::Refused(error).into()
    }
}

impl From<ClientError> for ServiceError {
    fn from(error: ClientError) -> ServiceError {
        match &error {
            ClientError::Api { code, .. } => ServiceError::Refused {
                code: code.clone(),
                message: error.to_string(),
            },
            _ => ServiceError::Unanswered(error),
        }
    }
}

/// The code the API reports an engine failure with.
pub fn code_of(error: &IpamError) -> ErrorCode {
    match error {
        IpamError::Refused(refusal) => ErrorCode::from(refusal),
        IpamError::Store(store) => code_of_store(store),
        IpamError::RetriesExhausted { .. } => ErrorCode::ConflictRetriesExhausted,
        IpamError::PoolFieldImmutable { .. } => ErrorCode::PoolFieldImmutable,
        IpamError::Exhausted { .. } => ErrorCode::PoolExhausted,
    }
}

/// The code the API reports a datastore failure with.
pub fn code_of_store(error: &StoreError) -> ErrorCode {
    match error {
        StoreError::Conflict { .. } => ErrorCode::Conflict,
        StoreError::NotFound { .. } => ErrorCode::NotFound,
        StoreError::AlreadyExists { .. } => ErrorCode::AlreadyExists,
        StoreError::Unavailable { .. } => ErrorCode::DatastoreUnavailable,
        // A stored object that does not parse, or one the datastore refused.
        StoreError::Invalid { .. } => ErrorCode::DatastoreInvalid,
    }
}
