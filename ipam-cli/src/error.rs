//! What can go wrong, and the exit code each class of failure gets, so that
//! a script can tell a typo from a missing object from a server that is
//! down.

use ipam_api::ErrorCode;
use ipam_client::ClientError;
use ipam_service::{code_of, code_of_store};
use ipam_store::{IpamError, StoreError};

/// What to do when ipamctl cannot reach the datastore itself.
pub const DATASTORE_HINT: &str = "check that the datastore is running and that \
                                  --etcd-endpoints or --kubeconfig point at it";
/// What to do when ipam-server answers but cannot reach its datastore.
pub const SERVER_DATASTORE_HINT: &str =
    "ipam-server answers but its datastore does not: check the datastore, then try again";
/// What to do when ipam-server refuses the token.
const TOKEN_HINT: &str = "pass the server's token with --token-file PATH (IPAM_TOKEN_FILE)";

/// Exit codes (also listed in `ipamctl --help` and the README).
pub mod exit {
    /// The operation failed or was refused (an overlapping pool, a config
    /// Calico does not allow, a release refused because the address changed).
    pub const FAILURE: i32 = 1;
    /// The command line or an input file is wrong.
    pub const USAGE: i32 = 2;
    /// What the command names does not exist (pool, address, handle).
    pub const NOT_FOUND: i32 = 3;
    /// The server or datastore cannot be reached, or is held by another
    /// process.
    pub const UNAVAILABLE: i32 = 4;
}

/// A failed command: its message names what was wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A flag, value or input file is wrong.
    #[error("{0}")]
    Usage(String),
    /// The object named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The server or datastore cannot be reached.
    #[error("{message}\nhint: {hint}")]
    Unavailable {
        /// What failed.
        message: String,
        /// What to do about it.
        hint: String,
    },
    /// The IPAM refused the operation.
    #[error("{0}")]
    Refused(String),
    /// Reading or writing a local file or the terminal failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the file.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

impl CliError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => exit::USAGE,
            CliError::NotFound(_) => exit::NOT_FOUND,
            CliError::Unavailable { .. } => exit::UNAVAILABLE,
            CliError::Refused(_) | CliError::Io { .. } => exit::FAILURE,
        }
    }

    /// The class of a failure the IPAM reported with `code`, in either
    /// mode (by the code's HTTP status: a bad request is a usage error, a
    /// missing object not found, a datastore down unavailable); `hint`
    /// says what to do about a datastore that is down.
    pub fn refused(code: &ErrorCode, message: String, hint: &str) -> CliError {
        CliError::answered(code.http_status(), message, hint)
    }

    // The class of an error answer with HTTP status `status`.
    fn answered(status: u16, message: String, hint: &str) -> CliError {
        match status {
            400 => CliError::Usage(message),
            404 => CliError::NotFound(message),
            503 => CliError::Unavailable {
                message,
                hint: hint.to_string(),
            },
            401 | 403 => CliError::Unavailable {
                message,
                hint: TOKEN_HINT.to_string(),
            },
            _ => CliError::Refused(message),
        }
    }

    /// An I/O failure while doing `what`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CliError {
        let what = what.into();
        move |source| CliError::Io { what, source }
    }
}

impl From<StoreError> for CliError {
    fn from(error: StoreError) -> CliError {
        CliError::refused(&code_of_store(&error), error.to_string(), DATASTORE_HINT)
    }
}

impl From<IpamError> for CliError {
    fn from(error: IpamError) -> CliError {
        CliError::refused(&code_of(&error), error.to_string(), DATASTORE_HINT)
    }
}

impl From<ipam_core::Error> for CliError {
    fn from(error: ipam_core::Error) -> CliError {
        IpamError::Refused(error).into()
    }
}

impl From<ClientError> for CliError {
    fn from(error: ClientError) -> CliError {
        // By the status the server sent: a proxy in front of it may answer
        // without the API's error body.
        if let ClientError::Api { status, .. } = &error {
            return CliError::answered(status.as_u16(), error.to_string(), SERVER_DATASTORE_HINT);
        }
        if error.is_unavailable() {
            return CliError::Unavailable {
                message: error.to_string(),
                hint: "start ipam-server, or point ipamctl at it with --server URL \
                       (IPAM_SERVER), or read a datastore directly with --datastore"
                    .to_string(),
            };
        }
        match &error {
            ClientError::InvalidEndpoint { .. }
            | ClientError::TokenFile { .. }
            | ClientError::EmptyToken { .. } => CliError::Usage(error.to_string()),
            _ => CliError::Refused(error.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_class_of_failure_has_its_own_exit_code() {
        let codes = [
            CliError::Usage("x".into()).exit_code(),
            CliError::NotFound("x".into()).exit_code(),
            CliError::Unavailable {
                message: "x".into(),
                hint: "y".into(),
            }
            .exit_code(),
            CliError::Refused("x".into()).exit_code(),
        ];
        assert_eq!(codes, [2, 3, 4, 1]);
    }

    #[test]
    fn store_and_engine_errors_map_to_their_class() {
        let down: CliError = StoreError::Unavailable {
            backend: "etcd",
            message: "connection refused".into(),
        }
        .into();
        assert_eq!(down.exit_code(), exit::UNAVAILABLE);
        assert!(down.to_string().contains("hint:"), "{down}");
        let gone: CliError =
            IpamError::Refused(ipam_core::Error::HandleNotFound { handle: "h".into() }).into();
        assert_eq!(gone.exit_code(), exit::NOT_FOUND);
        let unaligned: CliError = ipam_core::Error::CidrNotAligned {
            cidr: "10.0.0.1/24".parse().unwrap(),
        }
        .into();
        assert_eq!(unaligned.exit_code(), exit::USAGE);
        assert!(unaligned.to_string().contains("10.0.0.0/24"), "{unaligned}");
    }
}
