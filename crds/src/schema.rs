//! Schema fragments for fields whose Rust type would make schemars describe
//! them differently from Calico's published CRDs (controller-gen's output
//! for the Go type, libcalico-go/config/crd/crd.projectcalico.org_*.yaml):
//! a Go `int` is a bare `integer` where a Rust `u32` would add a format and
//! bounds, a `*string` is not nullable where an `Option<String>` would be.
//! Matching Calico's schema exactly means applying our CRDs over Calico's
//! changes no validation either way.

use schemars::{json_schema, Schema, SchemaGenerator};

/// A Go `int64`/`uint64` as controller-gen writes it.
pub(crate) fn int64(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "integer", "format": "int64" })
}

/// A Go `[]int`.
pub(crate) fn integers(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "array", "items": { "type": "integer" } })
}

/// A Go `[]*int`: Calico adds `nullable` to the items by hand
/// (crd.projectcalico.org_ipamblocks.yaml, `allocations`).
pub(crate) fn nullable_integers(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": { "type": "integer", "nullable": true }
    })
}

/// A Go `map[string]int`.
pub(crate) fn integer_map(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "object", "additionalProperties": { "type": "integer" } })
}

/// A Go `map[string]uint64`.
pub(crate) fn int64_map(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "additionalProperties": { "type": "integer", "format": "int64" }
    })
}

/// A `*metav1.Time`.
pub(crate) fn date_time(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "format": "date-time" })
}

/// Drops the `default` schemars derives from `#[serde(default)]` on
/// `property`. Go reads a missing field as its zero value without the CRD
/// declaring a default; declaring one would make the API server write
/// values into objects that Calico leaves alone.
pub(crate) fn drop_default(schema: &mut Schema, property: &str) {
    if let Some(field) = schema
        .get_mut("properties")
        .and_then(|p| p.get_mut(property))
        .and_then(|f| f.as_object_mut())
    {
        field.remove("default");
    }
}
