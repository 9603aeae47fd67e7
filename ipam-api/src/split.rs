//! `POST /v1/pool-splits`: split a pool into 2^k child pools, as
//! calicoctl's `ipam split` does, without its datastore lock.

use ipam_core::split::{Split, SplitTarget};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{ErrorCode, PoolBody};

/// Which pool to split, and into how many.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SplitBody {
    /// How many equal child pools: 2, 4, 8, ... up to 1024.
    pub parts: u32,
    /// The pool's name (calicoctl's `--name`); give this or `cidr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The pool's exact CIDR (calicoctl's `--cidr`); give this or `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub cidr: Option<IpNet>,
}

/// What a split made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SplitResponse {
    /// The pool that was split, as it was; it is gone now.
    pub parent: PoolBody,
    /// The child pools, in address order (`split-<parent>-<i>`).
    pub children: Vec<PoolBody>,
}

/// Why a [`SplitBody`] does not name one pool.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitTargetError {
    /// Neither `name` nor `cidr` (calicoctl's sentence, split.go).
    #[error("name, cidr: no name or CIDR provided. Provide a name or CIDR to denote the IP pool to split")]
    Neither,
    /// Both: calicoctl would take the name and ignore the CIDR; a request
    /// that names two pools, or one pool twice, is refused instead.
    #[error("name, cidr: give one of them, not both (name {name:?}, cidr {cidr})")]
    Both {
        /// The name given.
        name: String,
        /// The CIDR given.
        cidr: IpNet,
    },
}

impl SplitTargetError {
    /// The code the API answers with.
    pub fn code(&self) -> ErrorCode {
        match self {
            SplitTargetError::Neither => ErrorCode::MissingValue,
            SplitTargetError::Both { .. } => ErrorCode::InvalidValue,
        }
    }
}

impl SplitBody {
    /// The pool the body names.
    pub fn target(&self) -> Result<SplitTarget, SplitTargetError> {
        match (&self.name, self.cidr) {
            (Some(name), None) => Ok(SplitTarget::Name(name.clone())),
            (None, Some(cidr)) => Ok(SplitTarget::Cidr(cidr)),
            (None, None) => Err(SplitTargetError::Neither),
            (Some(name), Some(cidr)) => Err(SplitTargetError::Both {
                name: name.clone(),
                cidr,
            }),
        }
    }
}

impl SplitResponse {
    /// The answer for a split made.
    pub fn of(split: &Split) -> SplitResponse {
        SplitResponse {
            parent: PoolBody::from(split.parent()),
            children: split.children().iter().map(PoolBody::from).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(name: Option<&str>, cidr: Option<&str>) -> SplitBody {
        SplitBody {
            parts: 2,
            name: name.map(str::to_string),
            cidr: cidr.map(|c| c.parse().unwrap()),
        }
    }

    #[test]
    fn a_body_names_one_pool_by_name_or_cidr() {
        assert_eq!(
            body(Some("p"), None).target(),
            Ok(SplitTarget::Name("p".into()))
        );
        assert_eq!(
            body(None, Some("10.0.0.0/16")).target(),
            Ok(SplitTarget::Cidr("10.0.0.0/16".parse().unwrap()))
        );
        let neither = body(None, None).target().unwrap_err();
        assert_eq!(neither.code(), ErrorCode::MissingValue);
        assert!(neither.to_string().contains("no name or CIDR provided"));
        let both = body(Some("p"), Some("10.0.0.0/16")).target().unwrap_err();
        assert_eq!(both.code(), ErrorCode::InvalidValue);
        assert!(both.to_string().contains("\"p\"") && both.to_string().contains("10.0.0.0/16"));
    }
}
