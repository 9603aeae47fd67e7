//! Request bodies: JSON read strictly, so that a body means one thing.
//!
//! serde's derived `Deserialize` for a struct also accepts a JSON array and
//! takes the fields by position, and serde_json allows it, so on its own
//! `POST /v1/assign ["h","n",1]` would assign. [`Body`] reads every body
//! through [`StrictDeserializer`]: wherever a struct is wanted, at any
//! depth, it asks serde_json for a JSON object, and anything else is a 400
//! that names the path and the type expected (`addresses[0]: invalid type:
//! sequence, expected a JSON object (ReleaseItem)`).
//!
//! The wrappers below only forward, except `deserialize_struct`; they must
//! never change what a well-formed body means.

use std::fmt;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::value::MapAccessDeserializer;
use serde::de::{
    DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer, MapAccess,
    SeqAccess, VariantAccess, Visitor,
};

use crate::error::{ApiError, ErrorCode};

/// A JSON request body of type `T`, read strictly (see the module docs);
/// its rejections are [`ApiError`]s: 415 without a JSON content type, 413
/// over the body limit, 400 for anything that is not a `T`.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Body<T>, ApiError> {
        if !is_json(request.headers()) {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "send the body as JSON, with `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                // Over the body limit (DefaultBodyLimit) is 413; a body cut
                // short by the client is a bad request.
                let code = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ErrorCode::BodyTooLarge
                } else {
                    ErrorCode::InvalidBody
                };
                ApiError::new(code, rejection.body_text())
            })?;
        from_slice(&bytes).map(Body)
    }
}

/// `Content-Type: application/json`, or any `application/...+json`, with
/// or without parameters.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let media = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

/// Reads `bytes` as one strict JSON `T`, with nothing but whitespace after
/// it.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut json = serde_json::Deserializer::from_slice(bytes);
    let value =
        serde_path_to_error::deserialize(StrictDeserializer(&mut json)).map_err(|error| {
            let path = error.path().to_string();
            let inner = error.into_inner();
            // serde_json's line and column locate a syntax error; a data
            // error is named by its path.
            let message = if !inner.is_data() {
                format!("the body is not valid JSON: {inner}")
            } else if path == "." {
                format!("body: {inner}")
            } else {
                format!("{path}: {inner}")
            };
            ApiError::new(ErrorCode::InvalidBody, message)
        })?;
    json.end().map_err(|error| {
        ApiError::new(
            ErrorCode::InvalidBody,
            format!("the body holds more than one JSON value: {error}"),
        )
    })?;
    Ok(value)
}

/// A deserializer that refuses anything but a map where a struct is
/// wanted, and makes every deserializer it hands out do the same.
pub struct StrictDeserializer<D>(pub D);

/// Forwards a `deserialize_*` method with a strict visitor.
macro_rules! forward {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
            self.0.$method($($arg,)* Strict::new(visitor))
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for StrictDeserializer<D> {
    type Error = D::Error;

    forward!(
        deserialize_any(),
        deserialize_bool(),
        deserialize_i8(),
        deserialize_i16(),
        deserialize_i32(),
        deserialize_i64(),
        deserialize_i128(),
        deserialize_u8(),
        deserialize_u16(),
        deserialize_u32(),
        deserialize_u64(),
        deserialize_u128(),
        deserialize_f32(),
        deserialize_f64(),
        deserialize_char(),
        deserialize_str(),
        deserialize_string(),
        deserialize_bytes(),
        deserialize_byte_buf(),
        deserialize_option(),
        deserialize_unit(),
        deserialize_unit_struct(name: &'static str),
        deserialize_newtype_struct(name: &'static str),
        deserialize_seq(),
        deserialize_tuple(len: usize),
        deserialize_tuple_struct(name: &'static str, len: usize),
        deserialize_map(),
        deserialize_identifier(),
        deserialize_ignored_any(),
    );

    /// The point of the wrapper: a struct is read as a map, so serde_json
    /// refuses an array (or any other type) for it.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(Strict {
            inner: visitor,
            object: Some(name),
        })
    }

    /// An enum is a string (a unit variant) or a one-entry object; given
    /// anything else serde_json says only "expected value", so the
    /// variants are listed instead.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(EnumOf {
            inner: visitor,
            variants,
        })
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// Reads an enum from what serde_json found: a string names a unit
/// variant, a map holds one variant and its content.
struct EnumOf<V> {
    inner: V,
    variants: &'static [&'static str],
}

impl<'de, V: Visitor<'de>> Visitor<'de> for EnumOf<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "one of {}", self.variants.join(", "))
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<V::Value, E> {
        self.inner.visit_enum(value.into_deserializer())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.inner
            .visit_enum(MapAccessDeserializer::new(Strict::new(map)))
    }
}

/// A visitor, sequence, map, enum or seed whose nested deserializers are
/// strict. `object` names the struct a visitor reads, for the message when
/// it gets something else.
struct Strict<T> {
    inner: T,
    object: Option<&'static str>,
}

impl<T> Strict<T> {
    fn new(inner: T) -> Strict<T> {
        Strict {
            inner,
            object: None,
        }
    }
}

/// Forwards `visit_*` methods that carry a plain value.
macro_rules! forward_visits {
    ($($method:ident($ty:ty)),* $(,)?) => {$(
        fn $method<E: serde::de::Error>(self, value: $ty) -> Result<V::Value, E> {
            self.inner.$method(value)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Strict<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.object {
            Some(name) => write!(f, "a JSON object ({name})"),
            None => self.inner.expecting(f),
        }
    }

    forward_visits!(
        visit_bool(bool),
        visit_i8(i8),
        visit_i16(i16),
        visit_i32(i32),
        visit_i64(i64),
        visit_i128(i128),
        visit_u8(u8),
        visit_u16(u16),
        visit_u32(u32),
        visit_u64(u64),
        visit_u128(u128),
        visit_f32(f32),
        visit_char(char),
        visit_str(&str),
        visit_borrowed_str(&'de str),
        visit_string(String),
        visit_bytes(&[u8]),
        visit_borrowed_bytes(&'de [u8]),
        visit_byte_buf(Vec<u8>),
    );

    /// A number without a fraction is an integer, as JSON Schema counts
    /// it (`45.0` is a valid `integer`), so an integer field takes it.
    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<V::Value, E> {
        const TWO_TO_64: f64 = 18_446_744_073_709_551_616.0;
        const TWO_TO_63: f64 = 9_223_372_036_854_775_808.0;
        if value.fract() == 0.0 && (0.0..TWO_TO_64).contains(&value) {
            self.inner.visit_u64(value as u64)
        } else if value.fract() == 0.0 && (-TWO_TO_63..0.0).contains(&value) {
            self.inner.visit_i64(value as i64)
        } else {
            self.inner.visit_f64(value)
        }
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        self.inner.visit_some(StrictDeserializer(deserializer))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<V::Value, D::Error> {
        self.inner
            .visit_newtype_struct(StrictDeserializer(deserializer))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.inner.visit_seq(Strict::new(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.inner.visit_map(Strict::new(map))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.inner.visit_enum(Strict::new(data))
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Strict<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        self.inner.deserialize(StrictDeserializer(deserializer))
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Strict<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.inner.next_element_seed(Strict::new(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Strict<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.inner.next_key_seed(Strict::new(seed))
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.inner.next_value_seed(Strict::new(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for Strict<A> {
    type Error = A::Error;
    type Variant = Strict<A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Strict<A::Variant>), A::Error> {
        let (value, variant) = self.inner.variant_seed(Strict::new(seed))?;
        Ok((value, Strict::new(variant)))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Strict<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.inner.newtype_variant_seed(Strict::new(seed))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.inner.tuple_variant(len, Strict::new(visitor))
    }

    // The API has no struct variants; were one added, serde_json would read
    // it as it does any struct, array form included.
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.inner.struct_variant(fields, Strict::new(visitor))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Item {
        address: String,
        #[serde(default)]
        handle: Option<String>,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    enum Use {
        Workload,
        Tunnel,
        Weighted(u8),
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        name: String,
        items: Vec<Item>,
        #[serde(default)]
        labels: BTreeMap<String, String>,
        #[serde(default)]
        one: Option<Item>,
        #[serde(default)]
        count: u128,
        #[serde(default)]
        uses: Vec<Use>,
    }

    fn message<T: DeserializeOwned + fmt::Debug>(json: &str) -> String {
        let error = from_slice::<T>(json.as_bytes()).unwrap_err();
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        assert_eq!(error.code, ErrorCode::InvalidBody);
        error.message
    }

    #[test]
    fn well_formed_bodies_read_as_serde_json_reads_them() {
        let json = r#"{"name":"n","items":[{"address":"a"},{"address":"b","handle":"h"}],
                       "labels":{"k":"v"},"one":{"address":"c"},"count":340282366920938463463374607431768211455,
                       "uses":["Tunnel",{"Weighted":3},"Workload"]}"#;
        let strict: Outer = from_slice(json.as_bytes()).unwrap();
        let plain: Outer = serde_json::from_str(json).unwrap();
        assert_eq!(strict, plain);
        assert_eq!(strict.count, u128::MAX);
    }

    #[test]
    fn a_struct_given_as_an_array_is_refused_at_any_depth_naming_the_type() {
        // serde_json alone takes all three by position.
        assert!(serde_json::from_str::<Outer>(r#"["n",[["a",null]]]"#).is_ok());
        let top = message::<Outer>(r#"["n",[]]"#);
        assert!(
            top.starts_with("body: invalid type: sequence, expected a JSON object (Outer)"),
            "{top}"
        );
        let nested = message::<Outer>(r#"{"name":"n","items":[["a",null]]}"#);
        assert!(
            nested.starts_with("items[0]: invalid type: sequence, expected a JSON object (Item)"),
            "{nested}"
        );
        let optional = message::<Outer>(r#"{"name":"n","items":[],"one":["a"]}"#);
        assert!(
            optional.starts_with("one: invalid type: sequence"),
            "{optional}"
        );
        for (json, got) in [
            ("7", "integer `7`"),
            ("\"x\"", "string \"x\""),
            ("null", "null"),
            ("true", "boolean `true`"),
        ] {
            let text = message::<Outer>(json);
            assert!(
                text.starts_with(&format!(
                    "body: invalid type: {got}, expected a JSON object (Outer)"
                )),
                "{json}: {text}"
            );
        }
    }

    #[test]
    fn an_enum_given_another_type_is_told_its_variants() {
        for (uses, got) in [
            ("[5]", "integer `5`"),
            ("[[\"Tunnel\"]]", "sequence"),
            ("[null]", "null"),
        ] {
            let text = message::<Outer>(&format!(r#"{{"name":"n","items":[],"uses":{uses}}}"#));
            assert!(
                text.starts_with(&format!(
                    "uses[0]: invalid type: {got}, expected one of Workload, Tunnel, Weighted"
                )),
                "{uses}: {text}"
            );
        }
        let unknown = message::<Outer>(r#"{"name":"n","items":[],"uses":["Mining"]}"#);
        assert!(
            unknown.starts_with("uses[0]: unknown variant `Mining`, expected one of `Workload`, `Tunnel`, `Weighted`"),
            "{unknown}"
        );
    }

    #[test]
    fn a_number_without_a_fraction_is_an_integer_as_json_schema_says() {
        #[derive(Debug, PartialEq, Deserialize)]
        struct Counts {
            a: u32,
            b: i64,
            c: f64,
        }
        let counts: Counts = from_slice(br#"{"a": 45.0, "b": -3.0, "c": 2.5}"#).unwrap();
        assert_eq!(
            counts,
            Counts {
                a: 45,
                b: -3,
                c: 2.5
            }
        );
        let fraction = message::<Counts>(r#"{"a": 45.5, "b": 0, "c": 0}"#);
        assert!(
            fraction.starts_with("a: invalid type: floating point `45.5`"),
            "{fraction}"
        );
        let negative = message::<Counts>(r#"{"a": -1.0, "b": 0, "c": 0}"#);
        assert!(
            negative.starts_with("a: invalid value: integer `-1`"),
            "{negative}"
        );
    }

    #[test]
    fn broken_json_and_trailing_values_are_refused() {
        assert!(message::<Outer>(r#"{"name":"#).starts_with("the body is not valid JSON"));
        let twice = message::<Item>(r#"{"address":"a"} {"address":"b"}"#);
        assert!(
            twice.starts_with("the body holds more than one JSON value"),
            "{twice}"
        );
        let unknown = message::<Item>(r#"{"address":"a","colour":1}"#);
        assert!(unknown.contains("unknown field `colour`"), "{unknown}");
    }

    #[test]
    fn json_content_types_are_recognised() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
            is_json(&headers)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/merge-patch+json"));
        assert!(!with("text/plain"));
        assert!(!with("application/jsonx"));
        assert!(!is_json(&HeaderMap::new()));
    }
}
