//! What the Kubernetes API server does to a custom resource written under
//! a structural schema, so that every fake of it in this workspace judges
//! objects the same way: testkit's in-process API server on every create
//! and replace, and this crate's tests of Calico's real objects.
//!
//! In the API server's order: fields the schema does not declare are
//! pruned (silently, as `preserveUnknownFields: false` has it), nulls in
//! fields that are not nullable are dropped, defaults are filled in, then
//! the object is validated for type, nullability, required fields, enums,
//! the formats `date-time`, `int32`, `int64` and `cidr`, bounds, lengths,
//! item counts and duplicates in `x-kubernetes-list-type: set` lists.
//! Errors read as the API server's (`spec.cidr: Required value`).
//!
//! Not kept: CEL rules (`x-kubernetes-validations`) and formats Calico's
//! CRDs do not use. Nothing here does I/O.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use serde_json::{json, Value};

const DNS1123_SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// What the API server says of a custom resource's `metadata.name`: it
/// must be given and be a DNS subdomain. Empty when the name is good.
pub fn name_errors(name: Option<&str>) -> Vec<FieldError> {
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return vec![FieldError::required_because(
            "metadata.name",
            "name or generateName is required",
        )];
    };
    let mut errors = Vec::new();
    if name.len() > 253 {
        errors.push(FieldError::invalid(
            "metadata.name",
            json!(name),
            "must be no more than 253 characters".to_string(),
        ));
    }
    let label_ok = |label: &str| {
        let bytes = label.as_bytes();
        !bytes.is_empty()
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric()
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
    };
    if !name.split('.').all(label_ok) {
        errors.push(FieldError::invalid(
            "metadata.name",
            json!(name),
            DNS1123_SUBDOMAIN_MESSAGE.to_string(),
        ));
    }
    errors
}

/// One field error, printed as the API prints it
/// (`spec.cidr: Required value`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's path (`spec.cidr`, `spec.allocations[3]`).
    pub field: String,
    /// The API's cause type (`FieldValueRequired`, `FieldValueInvalid`...).
    pub reason: &'static str,
    /// The whole message, path first.
    pub text: String,
}

impl FieldError {
    fn required(field: &str) -> FieldError {
        FieldError {
            field: field.to_string(),
            reason: "FieldValueRequired",
            text: format!("{field}: Required value"),
        }
    }

    fn required_because(field: &str, detail: &str) -> FieldError {
        FieldError {
            field: field.to_string(),
            reason: "FieldValueRequired",
            text: format!("{field}: Required value: {detail}"),
        }
    }

    fn invalid(field: &str, value: Value, detail: String) -> FieldError {
        FieldError {
            field: field.to_string(),
            reason: "FieldValueInvalid",
            text: format!("{field}: Invalid value: {value}: {detail}"),
        }
    }

    fn unsupported(field: &str, value: &Value, supported: &[Value]) -> FieldError {
        let list: Vec<String> = supported.iter().map(Value::to_string).collect();
        FieldError {
            field: field.to_string(),
            reason: "FieldValueNotSupported",
            text: format!(
                "{field}: Unsupported value: {value}: supported values: {}",
                list.join(", ")
            ),
        }
    }

    fn too_long(field: &str, max: i64) -> FieldError {
        FieldError {
            field: field.to_string(),
            reason: "FieldValueTooLong",
            text: format!("{field}: Too long: may not be more than {max} bytes"),
        }
    }

    fn duplicate(field: &str, value: &Value) -> FieldError {
        FieldError {
            field: field.to_string(),
            reason: "FieldValueDuplicate",
            text: format!("{field}: Duplicate value: {value}"),
        }
    }

    fn too_many(field: &str, got: usize, max: i64) -> FieldError {
        FieldError {
            field: field.to_string(),
            reason: "FieldValueTooMany",
            text: format!("{field}: Too many: {got}: must have at most {max} items"),
        }
    }
}

/// What the API server makes of an object written under a schema.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    /// Why it refuses the object (422 Invalid); empty when it stores it.
    pub errors: Vec<FieldError>,
    /// The paths of the fields it drops silently: fields the schema does
    /// not declare (pruned), and nulls in fields that are not nullable.
    pub dropped: Vec<String>,
}

/// Prunes, defaults and validates `object` in place, in the API server's
/// order, as it does on every create and replace: what is left is what
/// the server stores when [`Admission::errors`] is empty. `metadata` is
/// the server's own business; it is only checked to be an object.
pub fn admit(schema: &JSONSchemaProps, object: &mut Value) -> Admission {
    let mut admission = Admission::default();
    let Some(fields) = object.as_object_mut() else {
        validate(schema, object, "", &mut admission.errors);
        return admission;
    };
    let metadata = fields.remove("metadata");
    let mut rest = Value::Object(std::mem::take(fields));
    prune(schema, &mut rest, "", &mut admission.dropped);
    apply_defaults(schema, &mut rest, "", &mut admission.dropped);
    validate(schema, &rest, "", &mut admission.errors);
    if let Some(metadata) = metadata.as_ref().filter(|m| !m.is_object()) {
        admission.errors.push(FieldError::invalid(
            "metadata",
            metadata.clone(),
            "must be an object".to_string(),
        ));
    }
    let Value::Object(mut rest) = rest else {
        unreachable!("pruning keeps an object an object")
    };
    if let Some(metadata) = metadata {
        rest.insert("metadata".to_string(), metadata);
    }
    *object = Value::Object(rest);
    admission
}

fn items_schema(schema: &JSONSchemaProps) -> Option<&JSONSchemaProps> {
    match &schema.items {
        Some(JSONSchemaPropsOrArray::Schema(items)) => Some(items),
        _ => None,
    }
}

fn additional_schema(schema: &JSONSchemaProps) -> Option<&JSONSchemaProps> {
    match &schema.additional_properties {
        Some(JSONSchemaPropsOrBool::Schema(values)) => Some(values),
        _ => None,
    }
}

/// Drops every field the schema does not declare, at every depth, noting
/// each in `dropped`.
fn prune(schema: &JSONSchemaProps, value: &mut Value, path: &str, dropped: &mut Vec<String>) {
    if schema.x_kubernetes_preserve_unknown_fields == Some(true) {
        return;
    }
    match value {
        Value::Object(fields) => {
            if let Some(values) = additional_schema(schema) {
                for (name, field) in fields.iter_mut() {
                    prune(values, field, &child_path(path, name), dropped);
                }
            } else if matches!(
                schema.additional_properties,
                Some(JSONSchemaPropsOrBool::Bool(true))
            ) {
                // Any field is declared, and nothing below is typed.
            } else {
                let properties = schema.properties.as_ref();
                fields.retain(|name, _| {
                    let declared = properties.is_some_and(|p| p.contains_key(name));
                    if !declared {
                        dropped.push(child_path(path, name));
                    }
                    declared
                });
                for (name, field) in fields.iter_mut() {
                    if let Some(child) = properties.and_then(|p| p.get(name)) {
                        prune(child, field, &child_path(path, name), dropped);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = items_schema(schema) {
                for (i, item) in items.iter_mut().enumerate() {
                    prune(item_schema, item, &format!("{path}[{i}]"), dropped);
                }
            }
        }
        _ => {}
    }
}

/// Fills absent fields that declare a default. A null in a field that is
/// not nullable counts as absent, as the API server treats it, and is
/// noted in `dropped`.
fn apply_defaults(
    schema: &JSONSchemaProps,
    value: &mut Value,
    path: &str,
    dropped: &mut Vec<String>,
) {
    match value {
        Value::Object(fields) => {
            if let Some(properties) = &schema.properties {
                for (name, child) in properties {
                    if fields.get(name).is_some_and(Value::is_null) && child.nullable != Some(true)
                    {
                        fields.remove(name);
                        dropped.push(child_path(path, name));
                    }
                    if let (None, Some(default)) = (fields.get(name), &child.default) {
                        fields.insert(name.clone(), default.0.clone());
                    }
                    if let Some(field) = fields.get_mut(name) {
                        apply_defaults(child, field, &child_path(path, name), dropped);
                    }
                }
            }
            if let Some(values) = additional_schema(schema) {
                for (name, field) in fields.iter_mut() {
                    apply_defaults(values, field, &child_path(path, name), dropped);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = items_schema(schema) {
                for (i, item) in items.iter_mut().enumerate() {
                    apply_defaults(item_schema, item, &format!("{path}[{i}]"), dropped);
                }
            }
        }
        _ => {}
    }
}

fn child_path(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}.{name}")
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn validate(schema: &JSONSchemaProps, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    if schema.type_.is_some() && !crate::structural::matches_type(schema, value) {
        let expected = schema.type_.as_deref().unwrap_or_default();
        let got = type_name(value);
        errors.push(FieldError::invalid(
            path,
            json!(got),
            format!("{path} in body must be of type {expected}: {got:?}"),
        ));
        return;
    }
    if value.is_null() {
        return;
    }
    if let Some(allowed) = &schema.enum_ {
        let allowed: Vec<Value> = allowed.iter().map(|v| v.0.clone()).collect();
        if !allowed.contains(value) {
            errors.push(FieldError::unsupported(path, value, &allowed));
        }
    }
    check_format(schema, value, path, errors);
    check_bounds(schema, value, path, errors);
    match value {
        Value::Object(fields) => {
            for required in schema.required.iter().flatten() {
                if !fields.contains_key(required) {
                    errors.push(FieldError::required(&child_path(path, required)));
                }
            }
            for (name, field) in fields {
                let child = schema
                    .properties
                    .as_ref()
                    .and_then(|p| p.get(name))
                    .or_else(|| additional_schema(schema));
                if let Some(child) = child {
                    validate(child, field, &child_path(path, name), errors);
                }
            }
        }
        Value::Array(items) => {
            if schema.x_kubernetes_list_type.as_deref() == Some("set") {
                for (i, item) in items.iter().enumerate() {
                    if items[..i].contains(item) {
                        errors.push(FieldError::duplicate(&format!("{path}[{i}]"), item));
                    }
                }
            }
            if let Some(item_schema) = items_schema(schema) {
                for (i, item) in items.iter().enumerate() {
                    validate(item_schema, item, &format!("{path}[{i}]"), errors);
                }
            }
        }
        _ => {}
    }
}

fn check_format(schema: &JSONSchemaProps, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let Some(format) = schema.format.as_deref() else {
        return;
    };
    let fits = match (format, value) {
        ("date-time", Value::String(text)) => is_rfc3339(text),
        ("cidr", Value::String(text)) => text.parse::<ipnet::IpNet>().is_ok(),
        ("int64", Value::Number(n)) => n.as_i64().is_some() || n.is_f64(),
        ("int32", Value::Number(n)) => n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()),
        _ => true,
    };
    if !fits {
        errors.push(FieldError::invalid(
            path,
            value.clone(),
            format!("{path} in body must be of type {format}: {value}"),
        ));
    }
}

fn check_bounds(schema: &JSONSchemaProps, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    match value {
        Value::Number(n) => {
            let Some(x) = n.as_f64() else { return };
            if let Some(max) = schema.maximum.filter(|max| x > *max) {
                errors.push(FieldError::invalid(
                    path,
                    value.clone(),
                    format!("{path} in body should be less than or equal to {max}"),
                ));
            }
            if let Some(min) = schema.minimum.filter(|min| x < *min) {
                errors.push(FieldError::invalid(
                    path,
                    value.clone(),
                    format!("{path} in body should be greater than or equal to {min}"),
                ));
            }
        }
        Value::String(text) => {
            if let Some(max) = schema
                .max_length
                .filter(|max| text.chars().count() as i64 > *max)
            {
                errors.push(FieldError::too_long(path, max));
            }
        }
        Value::Array(items) => {
            if let Some(max) = schema.max_items.filter(|max| items.len() as i64 > *max) {
                errors.push(FieldError::too_many(path, items.len(), max));
            }
        }
        _ => {}
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, the shape the API's date-time
/// format accepts.
fn is_rfc3339(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        b.get(range.clone())
            .is_some_and(|s| s.len() == range.len() && s.iter().all(u8::is_ascii_digit))
    };
    if !(digits(0..4)
        && b.get(4) == Some(&b'-')
        && digits(5..7)
        && b.get(7) == Some(&b'-')
        && digits(8..10)
        && matches!(b.get(10), Some(b'T' | b't'))
        && digits(11..13)
        && b.get(13) == Some(&b':')
        && digits(14..16)
        && b.get(16) == Some(&b':')
        && digits(17..19))
    {
        return false;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match b.get(i) {
        Some(b'Z' | b'z') => i + 1 == b.len(),
        Some(b'+' | b'-') => {
            digits(i + 1..i + 3)
                && b.get(i + 3) == Some(&b':')
                && digits(i + 4..i + 6)
                && i + 6 == b.len()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(value: Value) -> JSONSchemaProps {
        serde_json::from_value(value).unwrap()
    }

    // A spec with a set, a defaulted enum and a bounded integer.
    fn pool_like() -> JSONSchemaProps {
        schema(json!({"type": "object", "properties": {"spec": {
            "type": "object",
            "required": ["cidr"],
            "properties": {
                "cidr": {"type": "string", "format": "cidr"},
                "uses": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
                "mode": {"type": "string", "enum": ["Automatic", "Manual"], "default": "Automatic"},
                "size": {"type": "integer", "minimum": 20, "maximum": 32}
            }
        }}}))
    }

    #[test]
    fn unknown_fields_and_non_nullable_nulls_are_dropped_and_named() {
        let mut object = json!({
            "metadata": {"name": "p"},
            "spec": {"cidr": "10.0.0.0/16", "extra": 1, "size": null},
            "status": {}
        });
        let admission = admit(&pool_like(), &mut object);
        assert_eq!(admission.errors, []);
        assert_eq!(admission.dropped, ["status", "spec.extra", "spec.size"]);
        assert_eq!(
            object,
            json!({"metadata": {"name": "p"}, "spec": {"cidr": "10.0.0.0/16", "mode": "Automatic"}})
        );
    }

    #[test]
    fn errors_read_as_the_api_servers() {
        let mut object =
            json!({"spec": {"uses": ["a", "b", "a"], "mode": "Sometimes", "size": 33}});
        let texts: Vec<String> = admit(&pool_like(), &mut object)
            .errors
            .into_iter()
            .map(|e| e.text)
            .collect();
        assert_eq!(
            texts,
            [
                "spec.cidr: Required value",
                "spec.mode: Unsupported value: \"Sometimes\": supported values: \"Automatic\", \"Manual\"",
                "spec.size: Invalid value: 33: spec.size in body should be less than or equal to 32",
                "spec.uses[2]: Duplicate value: \"a\"",
            ]
        );
        let mut not_a_cidr = json!({"metadata": [], "spec": {"cidr": "10.0.0.0"}});
        let errors = admit(&pool_like(), &mut not_a_cidr).errors;
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].field, "spec.cidr");
        assert_eq!(errors[1].field, "metadata");
    }

    #[test]
    fn rfc3339_times_are_recognised() {
        for good in [
            "2026-11-23T00:00:00Z",
            "2026-11-23T00:00:00.123Z",
            "2026-11-23T00:00:00+01:00",
        ] {
            assert!(is_rfc3339(good), "{good}");
        }
        for bad in [
            "yesterday",
            "2026-11-23",
            "2026-11-23T00:00:00",
            "2026-11-23T00:00:00.Z",
        ] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
    }

    #[test]
    fn names_must_be_dns_subdomains() {
        assert!(name_errors(Some("k8s-pod-network.abc")).is_empty());
        assert_eq!(
            name_errors(None)[0].text,
            "metadata.name: Required value: name or generateName is required"
        );
        assert!(name_errors(Some("Node-1"))[0]
            .text
            .starts_with("metadata.name: Invalid value: \"Node-1\": a lowercase RFC 1123"));
        assert!(!name_errors(Some("a..b")).is_empty());
        assert!(!name_errors(Some(&"a".repeat(254))).is_empty());
    }
}
