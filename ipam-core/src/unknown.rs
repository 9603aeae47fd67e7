//! Fields a newer Calico may write that this version does not model. They
//! are kept verbatim so that a read-modify-write never drops them.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Unknown fields of an object, by JSON key.
pub type UnknownFields = BTreeMap<String, UnknownValue>;

/// Any JSON value, held without interpreting it.
#[derive(Debug, Clone, PartialEq)]
pub enum UnknownValue {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A non-negative integer.
    Unsigned(u64),
    /// A negative integer.
    Signed(i64),
    /// A number with a fraction or exponent.
    Float(f64),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<UnknownValue>),
    /// An object.
    Object(BTreeMap<String, UnknownValue>),
}

impl Serialize for UnknownValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            UnknownValue::Null => s.serialize_unit(),
            UnknownValue::Bool(b) => s.serialize_bool(*b),
            UnknownValue::Unsigned(n) => s.serialize_u64(*n),
            UnknownValue::Signed(n) => s.serialize_i64(*n),
            UnknownValue::Float(n) => s.serialize_f64(*n),
            UnknownValue::String(text) => s.serialize_str(text),
            UnknownValue::Array(items) => items.serialize(s),
            UnknownValue::Object(map) => map.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for UnknownValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(AnyVisitor)
    }
}

struct AnyVisitor;

impl<'de> Visitor<'de> for AnyVisitor {
    type Value = UnknownValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<UnknownValue, E> {
        Ok(UnknownValue::Null)
    }
    fn visit_none<E>(self) -> Result<UnknownValue, E> {
        Ok(UnknownValue::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<UnknownValue, D::Error> {
        UnknownValue::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<UnknownValue, E> {
        Ok(UnknownValue::Bool(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<UnknownValue, E> {
        Ok(UnknownValue::Unsigned(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<UnknownValue, E> {
        Ok(if v >= 0 {
            UnknownValue::Unsigned(v as u64)
        } else {
            UnknownValue::Signed(v)
        })
    }
    fn visit_f64<E>(self, v: f64) -> Result<UnknownValue, E> {
        Ok(UnknownValue::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<UnknownValue, E> {
        Ok(UnknownValue::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<UnknownValue, E> {
        Ok(UnknownValue::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<UnknownValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(UnknownValue::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UnknownValue, A::Error> {
        let mut fields = BTreeMap::new();
        while let Some((key, value)) = map.next_entry()? {
            fields.insert(key, value);
        }
        Ok(UnknownValue::Object(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_json_shape_survives_a_round_trip() {
        let text =
            r#"{"a":null,"b":true,"c":7,"d":-3,"e":1.5,"f":"x","g":[1,"y",{"h":[]}],"i":{}}"#;
        let value: UnknownValue = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_string(&value).unwrap(), text);
    }
}
