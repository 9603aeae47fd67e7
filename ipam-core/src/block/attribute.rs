//! Who holds an allocation: one entry of a block's `attributes`, as
//! Calico stores it, and the handle sanitising Calico applies when it
//! compares handles. What the entries mean is read in [`crate::holder`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::labels::Labels;
use crate::unknown::UnknownFields;

/// Who holds an allocation: one entry of a block's `attributes`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Attribute {
    /// The handle that owns the addresses.
    #[serde(rename = "handle_id", default, skip_serializing_if = "Option::is_none")]
    pub handle_id: Option<String>,
    /// Owner details (node, namespace, pod, timestamp, type ...).
    #[serde(
        rename = "secondary",
        default,
        skip_serializing_if = "Labels::is_empty"
    )]
    pub secondary: Labels,
    /// Details of a previous or next owner during a live migration (Calico 3.32).
    #[serde(
        rename = "alternateOwnerAttrs",
        default,
        skip_serializing_if = "Labels::is_empty"
    )]
    pub alternate_owner: Labels,
    /// When the addresses were released, in seconds since the epoch
    /// (Calico's `releasedAt`, a `metav1.Time`): they are in their cooldown,
    /// held by nobody, until deallocated.
    #[serde(
        rename = "releasedAt",
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::timestamp::optional_rfc3339"
    )]
    pub released_at: Option<i64>,
    /// Fields of a newer Calico, kept verbatim.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

impl Attribute {
    /// The handle that holds the addresses, with Calico's sanitising
    /// applied: old host-local migrations wrote handles with a trailing
    /// `\r...` (ipam_block.go, sanitizeHandle). Released addresses are
    /// nobody's: Calico's cooldown entry has no handle (ipam_block.go,
    /// addCooldownAttribute), and an entry that names one anyway is not
    /// counted for it.
    pub fn handle(&self) -> Option<&str> {
        if self.is_released() {
            return None;
        }
        self.handle_id.as_deref().map(sanitize_handle)
    }

    /// Whether the addresses were released and are in (or past) their
    /// cooldown.
    pub fn is_released(&self) -> bool {
        self.released_at.is_some()
    }

    pub(super) fn is_for(&self, handle: &str, secondary: &BTreeMap<String, String>) -> bool {
        self.handle_id.as_deref() == Some(handle)
            && self.secondary.equals_map(secondary)
            && self.alternate_owner.is_empty()
            && self.released_at.is_none()
            && self.unknown.is_empty()
    }
}

/// Cuts a handle at its first `\r`, as Calico does before comparing handles.
pub fn sanitize_handle(handle: &str) -> &str {
    handle.split('\r').next().unwrap_or(handle)
}
