//! How the engine's and the client's failures become one [`ServiceError`],
//! with the code the API reports each with.

use ipam_api::ErrorCode;
use ipam_client::ClientError;
use ipam_core::split::SplitError;
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

impl From<crate::labels::LabelError> for ServiceError {
    fn from(error: crate::labels::LabelError) -> ServiceError {
        match error {
            crate::labels::LabelError::Store(store) => store.into(),
            read_only @ crate::labels::LabelError::ReadOnly { .. } => ServiceError::Refused {
                code: ErrorCode::NodeLabelsReadOnly,
                message: read_only.to_string(),
            },
        }
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
        IpamError::Split(refusal) => code_of_split(refusal),
    }
}

/// The code the API reports a refused split with.
fn code_of_split(refusal: &SplitError) -> ErrorCode {
    match refusal {
        SplitError::NoPoolNamed { .. } | SplitError::NoPoolWithCidr { .. } => {
            ErrorCode::PoolNotFound
        }
        SplitError::PartsNotPowerOfTwo { .. }
        | SplitError::TooManyParts { .. }
        | SplitError::ChildNameTooLong { .. } => ErrorCode::InvalidValue,
        SplitError::PoolTooSmall { .. } | SplitError::ChildSmallerThanBlock { .. } => {
            ErrorCode::PoolSmallerThanBlock
        }
        SplitError::BlockStraddles { .. } => ErrorCode::Unsatisfiable,
        SplitError::ChildNameTaken { .. } => ErrorCode::AlreadyExists,
        SplitError::OtherPoolOverlaps { .. } => ErrorCode::PoolOverlap,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn store_down() -> StoreError {
        StoreError::Unavailable {
            backend: "etcd",
            message: "connection refused".into(),
        }
    }

    #[test]
    fn engine_failures_keep_the_codes_the_server_has_always_sent() {
        let cases = [
            (IpamError::Store(store_down()), "datastore_unavailable"),
            (
                IpamError::RetriesExhausted {
                    operation: "assign",
                    attempts: 3,
                    last: store_down(),
                },
                "conflict_retries_exhausted",
            ),
            (
                IpamError::Exhausted {
                    ipv4_asked: 1,
                    ipv4_found: 0,
                    ipv6_asked: 0,
                    ipv6_found: 0,
                    reasons: String::new(),
                },
                "pool_exhausted",
            ),
            (
                IpamError::PoolFieldImmutable {
                    pool: "p".into(),
                    field: "cidr",
                    from: "10.0.0.0/24".into(),
                    to: "10.1.0.0/24".into(),
                },
                "pool_field_immutable",
            ),
            (
                IpamError::Refused(ipam_core::Error::HandleNotFound { handle: "h".into() }),
                "handle_not_found",
            ),
        ];
        for (error, wire) in cases {
            let message = error.to_string();
            let ServiceError::Refused { code, message: got } = ServiceError::from(error) else {
                panic!("an engine failure is a refusal");
            };
            assert_eq!((code.as_str(), got), (wire, message));
        }
    }

    #[test]
    fn a_server_answer_keeps_its_code_and_a_silent_server_is_unanswered() {
        let answered = ClientError::Api {
            method: hyper::Method::POST,
            path: "/v1/assign".into(),
            status: hyper::StatusCode::UNPROCESSABLE_ENTITY,
            code: ErrorCode::Other("quota_exceeded".into()),
            message: "no".into(),
        };
        let error = ServiceError::from(answered);
        assert_eq!(
            error.code(),
            Some(&ErrorCode::Other("quota_exceeded".into()))
        );
        let silent = ClientError::Decode {
            path: "/v1/assign".into(),
            reason: "not JSON".into(),
        };
        assert!(ServiceError::from(silent).code().is_none());
    }
}
