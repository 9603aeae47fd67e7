//! CNI error objects: the specification's well-known codes and ours (100
//! and up), printed on stdout as `{"cniVersion", "code", "msg", "details"}`.

use ipam_api::ErrorCode;
use serde_json::{json, Value};

/// Incompatible CNI version.
pub const INCOMPATIBLE_VERSION: u32 = 1;
/// A configuration field the plugin does not support.
pub const UNSUPPORTED_FIELD: u32 = 2;
/// Invalid or missing environment variables.
pub const INVALID_ENVIRONMENT: u32 = 4;
/// An I/O failure (the spec's code 5): the state directory.
pub const IO_FAILURE: u32 = 5;
/// Input that does not decode.
pub const DECODING_FAILURE: u32 = 6;
/// Invalid network configuration.
pub const INVALID_NETWORK_CONFIG: u32 = 7;
/// A transient failure: the server or datastore did not answer.
pub const TRY_AGAIN_LATER: u32 = 11;
/// STATUS: the plugin cannot serve ADD now.
pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
/// Ours: the pools have no free address for this request.
pub const POOL_EXHAUSTED: u32 = 100;
/// Ours: the requested address (`IP=`) is held by another handle.
pub const ADDRESS_IN_USE: u32 = 101;
/// Ours: CHECK found the handle no longer holds what `prevResult` says.
pub const ALLOCATION_MISSING: u32 = 102;
/// Ours: the IPAM refused the request for another reason (the message
/// says which).
pub const REFUSED: u32 = 103;

/// A CNI error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}: {details}")]
pub struct CniError {
    /// The code.
    pub code: u32,
    /// A short summary.
    pub msg: String,
    /// What exactly went wrong, naming the field and value.
    pub details: String,
}

impl CniError {
    /// An error with `code`.
    pub fn new(code: u32, msg: &str, details: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.to_string(),
            details: details.into(),
        }
    }

    /// Code 1.
    pub fn incompatible_version(details: impl Into<String>) -> CniError {
        CniError::new(INCOMPATIBLE_VERSION, "incompatible CNI version", details)
    }

    /// Code 4.
    pub fn invalid_environment(details: impl Into<String>) -> CniError {
        CniError::new(
            INVALID_ENVIRONMENT,
            "invalid environment variables",
            details,
        )
    }

    /// Code 6.
    pub fn decoding(details: impl Into<String>) -> CniError {
        CniError::new(DECODING_FAILURE, "failed to decode content", details)
    }

    /// Code 7.
    pub fn invalid_config(details: impl Into<String>) -> CniError {
        CniError::new(INVALID_NETWORK_CONFIG, "invalid network config", details)
    }

    /// Code 11.
    pub fn try_again(details: impl Into<String>) -> CniError {
        CniError::new(TRY_AGAIN_LATER, "try again later", details)
    }

    /// The CNI error for a failure the IPAM reported with `code`, in
    /// either mode: the one place API codes become CNI codes. A datastore
    /// or server that is down, slow or busy is 11 (the runtime retries); no
    /// free address 100; the address taken 101; a refused token is the
    /// network config's fault (7); anything else 103.
    pub fn from_ipam(code: &ErrorCode, details: String) -> CniError {
        match code {
            ErrorCode::DatastoreUnavailable
            | ErrorCode::Timeout
            | ErrorCode::TooManyConnections
            | ErrorCode::Conflict
            | ErrorCode::ConflictRetriesExhausted => CniError::try_again(details),
            ErrorCode::PoolExhausted | ErrorCode::Unsatisfiable => {
                CniError::new(POOL_EXHAUSTED, "no address available", details)
            }
            ErrorCode::AddressInUse => CniError::new(ADDRESS_IN_USE, "address in use", details),
            ErrorCode::Unauthorized => CniError::invalid_config(format!(
                "ipam.server_token_file: the server refused the token: {details}"
            )),
            _ => CniError::new(REFUSED, "refused by the IPAM", details),
        }
    }

    /// The JSON object printed on stdout.
    pub fn to_json(&self, cni_version: &str) -> Value {
        json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_object_has_the_specs_four_fields() {
        let error = CniError::invalid_config("ipam.assign_ipv4: \"maybe\" is not true or false");
        assert_eq!(
            error.to_json("1.0.0"),
            json!({"cniVersion": "1.0.0", "code": 7, "msg": "invalid network config",
                   "details": "ipam.assign_ipv4: \"maybe\" is not true or false"})
        );
    }

    #[test]
    fn every_code_the_server_answers_503_with_is_try_again_later() {
        for code in ErrorCode::KNOWN {
            let cni = CniError::from_ipam(code, "why".to_string()).code;
            if code.http_status() == 503 {
                assert_eq!(cni, TRY_AGAIN_LATER, "{code}");
            } else {
                assert!(cni >= 100 || cni == 7 || cni == 11, "{code}: {cni}");
            }
        }
        // A code from a newer server is a refusal, not a retry.
        let newer = ErrorCode::Other("quota_exceeded".into());
        assert_eq!(CniError::from_ipam(&newer, "why".into()).code, REFUSED);
    }

    #[test]
    fn the_codes_the_runtime_acts_on_are_stable() {
        let cni = |code: ErrorCode| CniError::from_ipam(&code, "why".to_string());
        assert_eq!(cni(ErrorCode::PoolExhausted).code, 100);
        assert_eq!(cni(ErrorCode::Unsatisfiable).code, 100);
        assert_eq!(cni(ErrorCode::AddressInUse).code, 101);
        assert_eq!(cni(ErrorCode::DatastoreUnavailable).code, 11);
        assert_eq!(cni(ErrorCode::InvalidCidr).code, 103);
        let token = cni(ErrorCode::Unauthorized);
        assert_eq!(token.code, 7);
        assert!(token.details.contains("server_token_file"), "{token}");
    }
}
