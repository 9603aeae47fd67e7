//! Shared by the integration tests: reading Calico's fixtures, and checking
//! an object against a CRD schema the way the API server would (types,
//! required fields, enums, bounds, nullability, and fields it would prune).

#![allow(
    dead_code,
    reason = "each test binary that includes this uses a different part"
)]

use std::path::PathBuf;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use serde_json::Value;

/// A file of ../fixtures/calico, as JSON.
pub fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/calico")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// The generated CRD for a plural name.
pub fn crd(plural: &str) -> CustomResourceDefinition {
    crds::manifests::crds()
        .unwrap()
        .into_iter()
        .find(|c| c.spec.names.plural == plural)
        .unwrap_or_else(|| panic!("no CRD for {plural}"))
}

/// Asserts that the API server would store `object` as it is under the
/// CRD for `plural`: valid, and with nothing pruned.
pub fn assert_accepted(plural: &str, object: &Value) {
    let crd = crd(plural);
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .unwrap();
    let mut problems = Vec::new();
    check(schema, object, "", &mut problems);
    assert!(
        problems.is_empty(),
        "{plural} rejects {object}: {problems:?}"
    );
}

fn check(schema: &JSONSchemaProps, value: &Value, path: &str, problems: &mut Vec<String>) {
    let mut problem = |text: String| problems.push(format!("{path}: {text}"));
    if value.is_null() {
        if schema.nullable != Some(true) {
            problem("null where the schema is not nullable".into());
        }
        return;
    }
    if !crds::structural::matches_type(schema, value) {
        problem(format!("{value} is not of type {:?}", schema.type_));
        return;
    }
    if let Some(values) = &schema.enum_ {
        if !values.iter().any(|v| &v.0 == value) {
            problem(format!("{value} is not one of the enum"));
        }
    }
    if let Some(n) = value.as_f64() {
        if schema.minimum.is_some_and(|min| n < min) || schema.maximum.is_some_and(|max| n > max) {
            problem(format!("{value} is out of bounds"));
        }
        if schema.format.as_deref() == Some("int64") && value.as_i64().is_none() {
            problem(format!("{value} does not fit int64"));
        }
    }
    if let Some(text) = value.as_str() {
        if schema
            .max_length
            .is_some_and(|max| text.chars().count() as i64 > max)
        {
            problem(format!("{text:?} is too long"));
        }
        if schema.format.as_deref() == Some("cidr") && text.parse::<ipnet::IpNet>().is_err() {
            problem(format!("{text:?} is not a CIDR"));
        }
    }
    if let Some(items) = value.as_array() {
        if schema.max_items.is_some_and(|max| items.len() as i64 > max) {
            problem("too many items".into());
        }
        if schema.x_kubernetes_list_type.as_deref() == Some("set") {
            for (i, item) in items.iter().enumerate() {
                if items[..i].contains(item) {
                    problem(format!("{item} repeats in a set"));
                }
            }
        }
        if let Some(JSONSchemaPropsOrArray::Schema(item_schema)) = &schema.items {
            for (i, item) in items.iter().enumerate() {
                check(item_schema, item, &format!("{path}[{i}]"), problems);
            }
        }
    }
    if let Some(fields) = value.as_object() {
        for required in schema.required.iter().flatten() {
            if !fields.contains_key(required) {
                problems.push(format!("{path}: missing required field {required}"));
            }
        }
        // The root's metadata is the API server's own business.
        if path.is_empty() {
            if let Some(meta) = fields.get("metadata") {
                if !meta.is_object() {
                    problems.push("metadata is not an object".into());
                }
            }
        }
        for (name, field) in fields {
            if path.is_empty() && name == "metadata" {
                continue;
            }
            let field_path = format!("{path}.{name}");
            match (&schema.properties, &schema.additional_properties) {
                (Some(properties), _) if properties.contains_key(name) => {
                    check(&properties[name], field, &field_path, problems)
                }
                (_, Some(JSONSchemaPropsOrBool::Schema(values))) => {
                    check(values, field, &field_path, problems)
                }
                _ if schema.x_kubernetes_preserve_unknown_fields == Some(true) => {}
                _ => problems.push(format!("{field_path}: unknown field, would be pruned")),
            }
        }
    }
}
