//! What Go's encoding/json and strconv do, for spec types that mirror
//! Calico's Go structs: `omitempty` leaves zero values out, and a field one
//! side models while the other keeps it among its unknown fields moves
//! between the two unchanged.

use ipam_core::unknown::{UnknownFields, UnknownValue};

/// `omitempty` for numbers.
pub(crate) fn is_zero<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// Go's `strconv.ParseBool`, which Calico uses on BlockAffinity's string
/// `deleted`; Calico reads an empty string as false
/// (libcalico-go/lib/backend/k8s/resources/ipam_affinity_v1.go, toModelV1).
pub(crate) fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "" | "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Removes a string field from unknown fields, leaving anything that is not
/// a string where it is so that it still round-trips.
pub(crate) fn take_string(unknown: &mut UnknownFields, key: &str) -> Option<String> {
    match unknown.remove(key) {
        Some(UnknownValue::String(text)) => Some(text),
        Some(other) => {
            unknown.insert(key.to_string(), other);
            None
        }
        None => None,
    }
}

/// Puts a modelled field back among unknown fields, for the side that does
/// not model it.
pub(crate) fn put_string(unknown: &mut UnknownFields, key: &str, value: Option<String>) {
    if let Some(text) = value {
        unknown.insert(key.to_string(), UnknownValue::String(text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_bool_accepts_what_go_accepts_and_empty_as_false() {
        for text in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_bool(text), Some(true), "{text}");
        }
        for text in ["", "0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_bool(text), Some(false), "{text}");
        }
        assert_eq!(parse_bool("yes"), None);
    }

    #[test]
    fn only_strings_are_taken_from_unknown_fields() {
        let mut unknown = UnknownFields::new();
        unknown.insert("a".into(), UnknownValue::String("x".into()));
        unknown.insert("b".into(), UnknownValue::Bool(true));
        assert_eq!(take_string(&mut unknown, "a"), Some("x".to_string()));
        assert_eq!(take_string(&mut unknown, "b"), None);
        assert_eq!(take_string(&mut unknown, "c"), None);
        assert_eq!(unknown.len(), 1, "the non-string stays");
        put_string(&mut unknown, "a", Some("y".into()));
        put_string(&mut unknown, "d", None);
        assert_eq!(unknown["a"], UnknownValue::String("y".into()));
        assert!(!unknown.contains_key("d"));
    }

    #[test]
    fn zero_is_zero() {
        assert!(is_zero(&0u32) && !is_zero(&26u8));
    }
}
