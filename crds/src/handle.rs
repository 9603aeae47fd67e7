//! IPAMHandle: who holds addresses, and how many in which block
//! (libcalico-go/lib/apis/internalapi/ipam_handle.go, IPAMHandleSpec;
//! schema in crd.projectcalico.org_ipamhandles.yaml). The object is named
//! after the handle id, lower-cased.

use std::collections::BTreeMap;

use ipam_core::handle::{Handle, HandleSpec};
use ipam_core::unknown::UnknownFields;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::metadata::{display_name, object_meta};
use crate::schema;

/// The spec of an IPAMHandle.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[kube(
    group = "crd.projectcalico.org",
    version = "v1",
    kind = "IPAMHandle",
    plural = "ipamhandles",
    derive = "PartialEq"
)]
#[schemars(transform = |s: &mut schemars::Schema| schema::drop_default(s, "deleted"))]
pub struct IPAMHandleSpec {
    /// The handle id, in its original case.
    #[serde(rename = "handleID")]
    pub handle_id: String,
    /// Block CIDR to the number of addresses the handle holds there.
    #[schemars(schema_with = "schema::integer_map")]
    pub block: BTreeMap<String, u32>,
    /// Set before a delete, so that a racing update conflicts.
    #[serde(default)]
    pub deleted: bool,
    /// Fields a newer Calico writes, kept verbatim.
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: UnknownFields,
}

/// The object name of a handle: Calico lower-cases the id, since Kubernetes
/// names may not hold capitals (libcalico-go/lib/backend/k8s/resources/
/// ipam_handle.go, parseKey).
pub fn handle_object_name(handle_id: &str) -> String {
    handle_id.to_lowercase()
}

impl From<IPAMHandleSpec> for HandleSpec {
    fn from(spec: IPAMHandleSpec) -> HandleSpec {
        let IPAMHandleSpec {
            handle_id,
            block,
            deleted,
            unknown,
        } = spec;
        HandleSpec {
            handle_id,
            block,
            deleted,
            unknown,
        }
    }
}

impl From<HandleSpec> for IPAMHandleSpec {
    fn from(spec: HandleSpec) -> IPAMHandleSpec {
        let HandleSpec {
            handle_id,
            block,
            deleted,
            unknown,
        } = spec;
        IPAMHandleSpec {
            handle_id,
            block,
            deleted,
            unknown,
        }
    }
}

impl TryFrom<&IPAMHandle> for Handle {
    type Error = Error;

    /// Validates the handle through ipam-core (every key a block CIDR).
    fn try_from(object: &IPAMHandle) -> Result<Handle, Error> {
        Handle::from_spec(object.spec.clone().into()).map_err(|source| Error::Refused {
            source: Box::new(source),
            kind: "IPAMHandle",
            name: display_name(&object.metadata),
        })
    }
}

impl IPAMHandle {
    /// The object to write for `handle`, with `previous`'s metadata when
    /// this replaces it.
    pub fn from_core(handle: &Handle, previous: Option<&IPAMHandle>) -> IPAMHandle {
        IPAMHandle {
            metadata: object_meta(
                handle_object_name(handle.id()),
                previous.map(|p| &p.metadata),
            ),
            spec: handle.to_spec().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_objects_are_named_by_their_lower_cased_id() {
        let mut handle = Handle::new("k8s-pod-network.ABC123");
        handle.increment("10.0.0.0/26".parse().unwrap(), 1);
        let object = IPAMHandle::from_core(&handle, None);
        assert_eq!(
            object.metadata.name.as_deref(),
            Some("k8s-pod-network.abc123")
        );
        assert_eq!(object.spec.handle_id, "k8s-pod-network.ABC123");
        assert_eq!(Handle::try_from(&object).unwrap(), handle);
    }

    #[test]
    fn a_handle_with_a_bad_block_key_is_refused_by_name() {
        let mut object = IPAMHandle::from_core(&Handle::new("h"), None);
        object.spec.block.insert("not-a-cidr".into(), 1);
        let err = Handle::try_from(&object).unwrap_err();
        assert!(err.to_string().contains("IPAMHandle \"h\""), "{err}");
        assert!(err.to_string().contains("not-a-cidr"), "{err}");
    }
}
