//! The API's error codes: the `code` of every error body the server sends,
//! one enum for both ends, so that renaming a code is a compile error in
//! every client that reacts to it (the CNI plugin turns some into its exit
//! codes), not a silent change. A code from a newer server that this build
//! does not know is kept as [`ErrorCode::Other`], never refused.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::names::NameError;

macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $variant:ident = $wire:literal, $status:literal;)*) => {
        /// What kind of failure an error answer reports (its wire string
        /// in [`ErrorCode::as_str`], its HTTP status in
        /// [`ErrorCode::http_status`]).
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[doc = $doc])* $variant,)*
            /// A code this build does not know (from a newer server), as sent.
            Other(String),
        }

        impl ErrorCode {
            /// Every code the server sends.
            pub const KNOWN: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as it is written on the wire.
            pub fn as_str(&self) -> &str {
                match self {
                    $(ErrorCode::$variant => $wire,)*
                    ErrorCode::Other(code) => code,
                }
            }

            /// The code a wire string names; an unknown one is kept.
            pub fn parse(code: &str) -> ErrorCode {
                match code {
                    $($wire => ErrorCode::$variant,)*
                    other => ErrorCode::Other(other.to_string()),
                }
            }

            /// The HTTP status the server answers this code with (500 for
            /// a code it does not know).
            pub fn http_status(&self) -> u16 {
                match self {
                    $(ErrorCode::$variant => $status,)*
                    ErrorCode::Other(_) => 500,
                }
            }
        }
    };
}

error_codes! {
    /// A value is malformed or out of range (the message names the field).
    InvalidValue = "invalid_value", 400;
    /// A required value is empty or absent.
    MissingValue = "missing_value", 400;
    /// More addresses in one request than the server allows.
    TooManyAddresses = "too_many_addresses", 400;
    /// The query string does not parse.
    InvalidQuery = "invalid_query", 400;
    /// A path segment does not parse.
    InvalidPath = "invalid_path", 400;
    /// The body is not the JSON the route takes.
    InvalidBody = "invalid_body", 400;
    /// The body is not sent as JSON.
    UnsupportedMediaType = "unsupported_media_type", 415;
    /// The body is over the server's limit.
    BodyTooLarge = "body_too_large", 413;
    /// No route has that path.
    NoSuchRoute = "no_such_route", 404;
    /// The route has no such method.
    MethodNotAllowed = "method_not_allowed", 405;
    /// The bearer token is missing or wrong.
    Unauthorized = "unauthorized", 401;
    /// The request took longer than the server's limit.
    Timeout = "timeout", 503;
    /// The client sent more requests than its rate allows.
    RateLimited = "rate_limited", 429;
    /// The server holds as many connections as it takes.
    TooManyConnections = "too_many_connections", 503;
    /// No pool of that name.
    PoolNotFound = "pool_not_found", 404;
    /// No IP reservation of that name.
    ReservationNotFound = "reservation_not_found", 404;
    /// No block of that CIDR.
    BlockNotFound = "block_not_found", 404;
    /// The handle holds nothing.
    HandleNotFound = "handle_not_found", 404;
    /// The node has no such affinity.
    AffinityNotFound = "affinity_not_found", 404;
    /// A datastore object does not exist.
    NotFound = "not_found", 404;
    /// A datastore object changed meanwhile.
    Conflict = "conflict", 409;
    /// Every retry of a write met a concurrent change.
    ConflictRetriesExhausted = "conflict_retries_exhausted", 409;
    /// A datastore object exists already.
    AlreadyExists = "already_exists", 409;
    /// The datastore cannot be reached.
    DatastoreUnavailable = "datastore_unavailable", 503;
    /// A stored object does not parse, or the datastore refused one.
    DatastoreInvalid = "datastore_invalid", 500;
    /// A pool's CIDR or block size cannot change.
    PoolFieldImmutable = "pool_field_immutable", 400;
    /// Every block of the pools is full.
    PoolExhausted = "pool_exhausted", 422;
    /// No pool, block or affinity lets the node have the addresses.
    Unsatisfiable = "unsatisfiable", 422;
    /// A CIDR does not parse.
    InvalidCidr = "invalid_cidr", 400;
    /// A CIDR has host bits set.
    CidrNotAligned = "cidr_not_aligned", 400;
    /// A block size out of Calico's range, or larger than its pool.
    InvalidBlockSize = "invalid_block_size", 400;
    /// A pool smaller than one of its blocks.
    PoolSmallerThanBlock = "pool_smaller_than_block", 400;
    /// A selector does not parse.
    InvalidSelector = "invalid_selector", 400;
    /// An IPAM config Calico does not allow.
    InvalidConfig = "invalid_config", 400;
    /// A pool of the other IP family than asked.
    PoolFamilyMismatch = "pool_family_mismatch", 400;
    /// A claim of a range outside every pool.
    ClaimOutsidePool = "claim_outside_pool", 400;
    /// An address in no pool.
    AddressNotInPool = "address_not_in_pool", 400;
    /// The address is held by another handle, or in its cooldown.
    AddressInUse = "address_in_use", 409;
    /// The block still has addresses in use.
    BlockInUse = "block_in_use", 409;
    /// The pool overlaps another.
    PoolOverlap = "pool_overlap", 409;
    /// A release's expected handle or sequence number no longer holds.
    AllocationChanged = "allocation_changed", 409;
    /// The node's labels belong to its Kubernetes Node or Calico Node
    /// resource on this datastore, not to the IPAM.
    NodeLabelsReadOnly = "node_labels_read_only", 409;
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ErrorCode, D::Error> {
        let code = String::deserialize(deserializer)?;
        Ok(ErrorCode::parse(&code))
    }
}

impl From<&ipam_core::Error> for ErrorCode {
    /// The code the API reports an allocation core refusal with.
    fn from(refusal: &ipam_core::Error) -> ErrorCode {
        use ipam_core::Error as Refusal;
        match refusal {
            Refusal::InvalidCidr { .. } => ErrorCode::InvalidCidr,
            Refusal::CidrNotAligned { .. } => ErrorCode::CidrNotAligned,
            Refusal::BlockTooLarge { .. } | Refusal::BlockSizeOutOfRange { .. } => {
                ErrorCode::InvalidBlockSize
            }
            Refusal::PoolSmallerThanBlock { .. } => ErrorCode::PoolSmallerThanBlock,
            Refusal::InvalidSelector { .. } => ErrorCode::InvalidSelector,
            Refusal::InvalidConfig { .. } => ErrorCode::InvalidConfig,
            Refusal::PoolFamilyMismatch { .. } => ErrorCode::PoolFamilyMismatch,
            Refusal::ClaimOutsidePool { .. } | Refusal::ClaimSmallerThanBlock { .. } => {
                ErrorCode::ClaimOutsidePool
            }
            Refusal::AddressNotInPool { .. } => ErrorCode::AddressNotInPool,
            Refusal::MalformedBlock { .. } | Refusal::MalformedHandle { .. } => {
                ErrorCode::DatastoreInvalid
            }
            // Calico refuses an address in its cooldown as already assigned.
            Refusal::AddressInUse { .. } | Refusal::AddressInCooldown { .. } => {
                ErrorCode::AddressInUse
            }
            Refusal::BlockNotEmpty { .. } => ErrorCode::BlockInUse,
            Refusal::PoolsOverlap { .. } => ErrorCode::PoolOverlap,
            Refusal::SequenceNumberMismatch { .. } | Refusal::HandleMismatch { .. } => {
                ErrorCode::AllocationChanged
            }
            Refusal::HandleNotFound { .. } => ErrorCode::HandleNotFound,
            Refusal::AffinityNotFound { .. } => ErrorCode::AffinityNotFound,
            Refusal::NoPoolForNode { .. }
            | Refusal::RequestedPoolUnavailable { .. }
            | Refusal::PoolUseMismatch { .. }
            | Refusal::AutoAllocateDisabled { .. }
            | Refusal::BlockLimitReached { .. }
            | Refusal::StrictAffinityViolation { .. } => ErrorCode::Unsatisfiable,
        }
    }
}

impl From<&NameError> for ErrorCode {
    /// A name that is empty is missing; one that breaks the rule is invalid.
    fn from(error: &NameError) -> ErrorCode {
        match error {
            NameError::Empty { .. } => ErrorCode::MissingValue,
            NameError::Invalid { .. }
            | NameError::TooMany { .. }
            | NameError::TooManyLabels { .. } => ErrorCode::InvalidValue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_code_round_trips_through_its_wire_string() {
        let mut seen = std::collections::BTreeSet::new();
        for code in ErrorCode::KNOWN {
            let wire = code.as_str();
            assert!(seen.insert(wire), "{wire} is written by two variants");
            assert_eq!(&ErrorCode::parse(wire), code);
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{wire}\""));
            assert_eq!(&serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
            assert!(!matches!(code, ErrorCode::Other(_)));
        }
        assert_eq!(seen.len(), 42);
    }

    #[test]
    fn a_code_from_a_newer_server_is_kept_as_sent() {
        let code: ErrorCode = serde_json::from_str("\"quota_exceeded\"").unwrap();
        assert_eq!(code, ErrorCode::Other("quota_exceeded".to_string()));
        assert_eq!(code.as_str(), "quota_exceeded");
        assert_eq!(serde_json::to_string(&code).unwrap(), "\"quota_exceeded\"");
        assert_eq!(code.http_status(), 500);
    }

    #[test]
    fn wire_strings_are_those_the_server_has_always_sent() {
        // Clients in the field match on these: a rename must show here.
        let pairs = [
            (ErrorCode::PoolExhausted, "pool_exhausted", 422),
            (ErrorCode::Unsatisfiable, "unsatisfiable", 422),
            (ErrorCode::AddressInUse, "address_in_use", 409),
            (ErrorCode::AllocationChanged, "allocation_changed", 409),
            (ErrorCode::Unauthorized, "unauthorized", 401),
            (
                ErrorCode::DatastoreUnavailable,
                "datastore_unavailable",
                503,
            ),
            (
                ErrorCode::ConflictRetriesExhausted,
                "conflict_retries_exhausted",
                409,
            ),
            (ErrorCode::NodeLabelsReadOnly, "node_labels_read_only", 409),
            (ErrorCode::ReservationNotFound, "reservation_not_found", 404),
        ];
        for (code, wire, status) in pairs {
            assert_eq!((code.as_str(), code.http_status()), (wire, status));
        }
    }
}
