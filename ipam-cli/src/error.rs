//! What can go wrong, and the exit code each class of failure gets, so that
//! a script can tell a typo from a missing object from a server that is
//! down.

use ipam_client::ClientError;
use ipam_store::{IpamError, StoreError};

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

    /// An I/O failure while doing `what`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CliError {
        let what = what.into();
        move |source| CliError::Io { what, source }
    }
}

impl From<StoreError> for CliError {
    fn from(error: StoreError) -> CliError {
        match error {
            StoreError::Unavailable { .. } => CliError::Unavailable {
                message: error.to_string(),
                hint: "check that the datastore is running and that --etcd-endpoints or \
                       --kubeconfig point at it"
                    .to_string(),
            },
            StoreError::NotFound { .. } => CliError::NotFound(error.to_string()),
            other => CliError::Refused(other.to_string()),
        }
    }
}

impl From<IpamError> for CliError {
    fn from(error: IpamError) -> CliError {
        use ipam_core::Error as Core;
        match error {
            IpamError::Store(store) => store.into(),
            IpamError::Refused(
                refusal @ (Core::HandleNotFound { .. } | Core::AffinityNotFound { .. }),
            ) => CliError::NotFound(refusal.to_string()),
            IpamError::Refused(
                refusal @ (Core::InvalidCidr { .. }
                | Core::CidrNotAligned { .. }
                | Core::BlockTooLarge { .. }
                | Core::BlockSizeOutOfRange { .. }
                | Core::PoolSmallerThanBlock { .. }
                | Core::InvalidSelector { .. }
                | Core::InvalidConfig { .. }),
            ) => CliError::Usage(refusal.to_string()),
            other => CliError::Refused(other.to_string()),
        }
    }
}

impl From<ipam_core::Error> for CliError {
    fn from(error: ipam_core::Error) -> CliError {
        IpamError::Refused(error).into()
    }
}

impl From<ClientError> for CliError {
    fn from(error: ClientError) -> CliError {
        if error.is_unavailable() {
            let hint = match &error {
                ClientError::Api { .. } => "ipam-server answers but its datastore does not: \
                                            check the datastore, then try again"
                    .to_string(),
                _ => "start ipam-server, or point ipamctl at it with --server URL \
                      (IPAM_SERVER), or read a datastore directly with --datastore"
                    .to_string(),
            };
            return CliError::Unavailable {
                message: error.to_string(),
                hint,
            };
        }
        match &error {
            ClientError::InvalidEndpoint { .. }
            | ClientError::TokenFile { .. }
            | ClientError::EmptyToken { .. } => CliError::Usage(error.to_string()),
            ClientError::Api { status, .. } => match status.as_u16() {
                400 => CliError::Usage(error.to_string()),
                404 => CliError::NotFound(error.to_string()),
                401 | 403 => CliError::Unavailable {
                    message: error.to_string(),
                    hint: "pass the server's token with --token-file PATH (IPAM_TOKEN_FILE)"
                        .to_string(),
                },
                _ => CliError::Refused(error.to_string()),
            },
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
