//! CNI error objects: the specification's well-known codes and ours (100
//! and up), printed on stdout as `{"cniVersion", "code", "msg", "details"}`.

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
}
