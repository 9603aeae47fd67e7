//! Kubernetes' rules for CRD schemas in apiextensions.k8s.io/v1: a schema
//! must be structural (every field typed, logical junctors only restating
//! fields specified outside them, metadata unconstrained), and a few
//! keywords are refused outright. The API server rejects a CRD that breaks
//! them; checking here means a broken schema fails the build, not the
//! `kubectl apply`. The rules follow the Kubernetes documentation
//! "Extend the Kubernetes API with CustomResourceDefinitions", sections
//! "Specifying a structural schema", "Defaulting" and "Validation rules".

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use serde_json::Value;

/// Every rule `crd` breaks, each prefixed with the version and the schema
/// path where it is broken. Empty when the CRD is acceptable.
pub fn problems(crd: &CustomResourceDefinition) -> Vec<String> {
    let mut found = Vec::new();
    if crd.spec.preserve_unknown_fields == Some(true) {
        found.push("spec.preserveUnknownFields: must be false in apiextensions.k8s.io/v1".into());
    }
    for version in &crd.spec.versions {
        let path = version.name.clone();
        match version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
        {
            None => found.push(format!("{path}: has no openAPIV3Schema, which v1 requires")),
            Some(root) => check_root(&path, root, &mut found),
        }
    }
    found
}

fn check_root(path: &str, root: &JSONSchemaProps, found: &mut Vec<String>) {
    if root.type_.as_deref() != Some("object") {
        found.push(format!("{path}: the root must have type object"));
    }
    if let Some(metadata) = root.properties.as_ref().and_then(|p| p.get("metadata")) {
        // Only name and generateName may be constrained; anything else
        // would fight the API server's own handling of metadata.
        let mut rest = metadata.clone();
        rest.type_ = None;
        if let Some(properties) = rest.properties.as_mut() {
            properties.retain(|name, _| name != "name" && name != "generateName");
            if properties.is_empty() {
                rest.properties = None;
            }
        }
        if rest != JSONSchemaProps::default() || metadata.type_.as_deref() != Some("object") {
            found.push(format!(
                "{path}.metadata: only `type: object` and restrictions of name and generateName are allowed"
            ));
        }
    }
    check_node(path, root, false, found);
}

fn check_node(path: &str, node: &JSONSchemaProps, in_junctor: bool, found: &mut Vec<String>) {
    let mut problem = |text: &str| found.push(format!("{path}: {text}"));
    let int_or_string = node.x_kubernetes_int_or_string == Some(true);
    let preserves = node.x_kubernetes_preserve_unknown_fields == Some(true);
    if in_junctor {
        for (set, keyword) in [
            (node.type_.is_some(), "type"),
            (node.default.is_some(), "default"),
            (node.nullable.is_some(), "nullable"),
            (node.additional_properties.is_some(), "additionalProperties"),
            (node.description.is_some(), "description"),
        ] {
            if set {
                problem(&format!(
                    "{keyword} is not allowed inside allOf/anyOf/oneOf/not"
                ));
            }
        }
    } else if node.type_.as_deref().unwrap_or("").is_empty() && !int_or_string && !preserves {
        problem("type must be set");
    }
    if int_or_string && node.type_.is_some() {
        problem("x-kubernetes-int-or-string must not have a type");
    }
    for (set, keyword) in [
        (node.ref_path.is_some(), "$ref"),
        (node.definitions.is_some(), "definitions"),
        (node.dependencies.is_some(), "dependencies"),
        (node.pattern_properties.is_some(), "patternProperties"),
        (node.additional_items.is_some(), "additionalItems"),
        (node.unique_items == Some(true), "uniqueItems: true"),
    ] {
        if set {
            problem(&format!("{keyword} is not allowed"));
        }
    }
    match &node.additional_properties {
        Some(JSONSchemaPropsOrBool::Bool(false)) => {
            problem("additionalProperties: false is not allowed (unknown fields are pruned)")
        }
        Some(_) if node.properties.is_some() => {
            problem("properties and additionalProperties are mutually exclusive")
        }
        _ => {}
    }
    if matches!(node.items, Some(JSONSchemaPropsOrArray::Schemas(_))) {
        problem("items must be one schema, not a list");
    }
    if node.x_kubernetes_embedded_resource == Some(true) && node.type_.as_deref() != Some("object")
    {
        problem("x-kubernetes-embedded-resource needs type object");
    }
    check_list_type(node, &mut problem);
    if let Some(map_type) = &node.x_kubernetes_map_type {
        if !matches!(map_type.as_str(), "granular" | "atomic")
            || node.type_.as_deref() != Some("object")
        {
            problem("x-kubernetes-map-type must be granular or atomic, on an object");
        }
    }
    if let Some(default) = &node.default {
        if !value_fits(node, &default.0) {
            problem("default does not match the schema's type or enum");
        }
    }
    for value in node.enum_.iter().flatten() {
        if !matches_type(node, &value.0) {
            problem("an enum value does not match the schema's type");
        }
    }
    for rule in node.x_kubernetes_validations.iter().flatten() {
        if rule.rule.trim().is_empty() {
            problem("x-kubernetes-validations has an empty rule");
        }
    }
    check_children(path, node, in_junctor, found);
}

fn check_list_type(node: &JSONSchemaProps, problem: &mut impl FnMut(&str)) {
    let Some(list_type) = node.x_kubernetes_list_type.as_deref() else {
        return;
    };
    let items = match &node.items {
        Some(JSONSchemaPropsOrArray::Schema(items)) if node.type_.as_deref() == Some("array") => {
            items
        }
        _ => return problem("x-kubernetes-list-type needs type array and one items schema"),
    };
    match list_type {
        "atomic" => {}
        "set" => {
            if matches!(items.type_.as_deref(), Some("object" | "array")) {
                problem("x-kubernetes-list-type set needs scalar items");
            }
        }
        "map" => {
            let keys = node
                .x_kubernetes_list_map_keys
                .as_deref()
                .unwrap_or_default();
            let known = |key: &String| {
                items
                    .properties
                    .as_ref()
                    .is_some_and(|p| p.contains_key(key))
                    && (items.required.as_ref().is_some_and(|r| r.contains(key))
                        || items
                            .properties
                            .as_ref()
                            .is_some_and(|p| p[key].default.is_some()))
            };
            if items.type_.as_deref() != Some("object")
                || keys.is_empty()
                || !keys.iter().all(known)
            {
                problem("x-kubernetes-list-type map needs object items whose list-map-keys are required or defaulted");
            }
        }
        _ => problem("x-kubernetes-list-type must be atomic, set or map"),
    }
}

fn check_children(path: &str, node: &JSONSchemaProps, in_junctor: bool, found: &mut Vec<String>) {
    for (name, child) in node.properties.iter().flatten() {
        check_node(&format!("{path}.{name}"), child, in_junctor, found);
    }
    if let Some(JSONSchemaPropsOrBool::Schema(child)) = &node.additional_properties {
        check_node(&format!("{path}[*]"), child, in_junctor, found);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(child)) = &node.items {
        check_node(&format!("{path}[]"), child, in_junctor, found);
    }
    let junctors = node
        .all_of
        .iter()
        .flatten()
        .chain(node.any_of.iter().flatten())
        .chain(node.one_of.iter().flatten())
        .chain(node.not.as_deref());
    for branch in junctors {
        // A junctor may only restate fields and items the node itself
        // specifies, so that pruning never depends on which branch matched.
        for name in branch.properties.iter().flatten().map(|(name, _)| name) {
            if !node
                .properties
                .as_ref()
                .is_some_and(|p| p.contains_key(name))
            {
                found.push(format!(
                    "{path}: field {name} appears in allOf/anyOf/oneOf/not but not outside"
                ));
            }
        }
        if branch.items.is_some() && node.items.is_none() {
            found.push(format!(
                "{path}: items appear in allOf/anyOf/oneOf/not but not outside"
            ));
        }
        check_node(&format!("{path}(junctor)"), branch, true, found);
    }
}

/// Whether a default fits the node's type, nullability and enum.
fn value_fits(node: &JSONSchemaProps, value: &Value) -> bool {
    matches_type(node, value)
        && node
            .enum_
            .as_ref()
            .is_none_or(|values| values.iter().any(|v| &v.0 == value))
}

/// Whether a JSON value has the type a schema node declares (null only
/// where the node is nullable), as the API server judges it.
pub fn matches_type(node: &JSONSchemaProps, value: &Value) -> bool {
    if value.is_null() {
        return node.nullable == Some(true);
    }
    match node.type_.as_deref() {
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        _ => node.x_kubernetes_int_or_string == Some(true) && (value.is_string() || value.is_i64()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
        CustomResourceDefinitionSpec, CustomResourceDefinitionVersion, CustomResourceValidation,
    };

    // A CRD whose schema is `{"type":"object","properties":{"spec": <spec>}}`.
    fn crd_with_spec(spec: Value) -> CustomResourceDefinition {
        crd_with_root(serde_json::json!({"type": "object", "properties": {"spec": spec}}))
    }

    fn crd_with_root(root: Value) -> CustomResourceDefinition {
        CustomResourceDefinition {
            spec: CustomResourceDefinitionSpec {
                versions: vec![CustomResourceDefinitionVersion {
                    name: "v1".into(),
                    schema: Some(CustomResourceValidation {
                        open_api_v3_schema: Some(serde_json::from_value(root).unwrap()),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn assert_one_problem(crd: CustomResourceDefinition, expected: &str) {
        let found = problems(&crd);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains(expected), "{found:?}");
    }

    #[test]
    fn a_typed_schema_is_structural() {
        let crd = crd_with_spec(serde_json::json!({
            "type": "object",
            "properties": {
                "a": {"type": "string", "enum": ["x", "y"], "default": "x"},
                "b": {"type": "array", "items": {"type": "integer", "nullable": true}, "x-kubernetes-list-type": "set"},
                "c": {"type": "object", "additionalProperties": {"type": "integer"}},
                "d": {"x-kubernetes-int-or-string": true},
                "e": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "f": {"type": "string", "x-kubernetes-validations": [{"rule": "self == oldSelf"}]}
            },
            "anyOf": [{"required": ["a"]}, {"properties": {"b": {"minItems": 1}}}]
        }));
        assert_eq!(problems(&crd), Vec::<String>::new());
    }

    #[test]
    fn an_untyped_field_is_reported_with_its_path() {
        assert_one_problem(
            crd_with_spec(serde_json::json!({"type": "object", "properties": {"x": {}}})),
            "v1.spec.x: type must be set",
        );
        assert_one_problem(
            crd_with_spec(serde_json::json!({"type": "array", "items": {"format": "cidr"}})),
            "v1.spec[]: type must be set",
        );
    }

    #[test]
    fn preserving_unknown_fields_at_the_root_still_needs_type_object() {
        assert_one_problem(
            crd_with_root(serde_json::json!({"x-kubernetes-preserve-unknown-fields": true})),
            "the root must have type object",
        );
        let mut crd = crd_with_spec(serde_json::json!({"type": "object"}));
        crd.spec.preserve_unknown_fields = Some(true);
        assert_one_problem(crd, "preserveUnknownFields");
    }

    #[test]
    fn properties_and_additional_properties_do_not_mix() {
        assert_one_problem(
            crd_with_spec(serde_json::json!({
                "type": "object",
                "properties": {"a": {"type": "string"}},
                "additionalProperties": {"type": "string"}
            })),
            "mutually exclusive",
        );
        assert_one_problem(
            crd_with_spec(serde_json::json!({"type": "object", "additionalProperties": false})),
            "additionalProperties: false",
        );
    }

    #[test]
    fn junctors_may_not_type_or_introduce_fields() {
        let found = problems(&crd_with_spec(serde_json::json!({
            "type": "object",
            "properties": {"a": {"type": "string"}},
            "oneOf": [{"type": "object", "properties": {"b": {"type": "string"}}}]
        })));
        assert!(
            found
                .iter()
                .any(|p| p.contains("type is not allowed inside")),
            "{found:?}"
        );
        assert!(
            found.iter().any(|p| p.contains("field b appears")),
            "{found:?}"
        );
    }

    #[test]
    fn metadata_may_only_restrict_name() {
        assert_eq!(
            problems(&crd_with_root(serde_json::json!({
                "type": "object",
                "properties": {"metadata": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 63}}}}
            }))),
            Vec::<String>::new()
        );
        assert_one_problem(
            crd_with_root(serde_json::json!({
                "type": "object",
                "properties": {"metadata": {"type": "object", "properties": {"labels": {"type": "object"}}}}
            })),
            ".metadata: only",
        );
    }

    #[test]
    fn refused_keywords_and_bad_extensions_are_reported() {
        for (spec, expected) in [
            (serde_json::json!({"type": "object", "$ref": "#/x"}), "$ref"),
            (
                serde_json::json!({"type": "array", "items": {"type": "string"}, "uniqueItems": true}),
                "uniqueItems",
            ),
            (
                serde_json::json!({"type": "array", "items": [{"type": "string"}]}),
                "items must be one schema",
            ),
            (
                serde_json::json!({"type": "array", "items": {"type": "object"}, "x-kubernetes-list-type": "set"}),
                "scalar items",
            ),
            (
                serde_json::json!({"type": "array", "items": {"type": "object"}, "x-kubernetes-list-type": "map"}),
                "list-map-keys",
            ),
            (
                serde_json::json!({"type": "string", "x-kubernetes-list-type": "set"}),
                "needs type array",
            ),
            (
                serde_json::json!({"type": "object", "x-kubernetes-map-type": "loose"}),
                "map-type",
            ),
            (
                serde_json::json!({"type": "integer", "default": "zero"}),
                "default does not match",
            ),
            (
                serde_json::json!({"type": "string", "enum": ["a"], "default": "b"}),
                "default does not match",
            ),
            (
                serde_json::json!({"type": "string", "enum": [1]}),
                "enum value",
            ),
            (
                serde_json::json!({"type": "string", "x-kubernetes-int-or-string": true}),
                "must not have a type",
            ),
            (
                serde_json::json!({"type": "string", "x-kubernetes-embedded-resource": true}),
                "embedded-resource",
            ),
            (
                serde_json::json!({"type": "string", "x-kubernetes-validations": [{"rule": " "}]}),
                "empty rule",
            ),
        ] {
            assert_one_problem(crd_with_spec(spec), expected);
        }
    }

    #[test]
    fn a_version_without_a_schema_is_reported() {
        let mut crd = crd_with_spec(serde_json::json!({"type": "object"}));
        crd.spec.versions[0].schema = None;
        assert_one_problem(crd, "no openAPIV3Schema");
    }
}
