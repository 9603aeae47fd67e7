//! Who holds an allocation: one entry of a block's `attributes`, as
//! Calico stores it, and the handle sanitising Calico applies when it
//! compares handles. What the entries mean is read in [`crate::holder`].
//!
//! A filled pool holds one entry per pod, so an entry is small: 24 bytes
//! in its block plus one shared text with the handle id and the labels
//! (see [`crate::packed`]), which the handle index shares for the id. What
//! allocations rarely carry (a live migration's other owner, a cooldown's
//! `releasedAt`, fields of a newer Calico) sits in a box of its own. The
//! plain form with public fields is [`AttributeParts`]; the stored JSON is
//! the same either way.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use crate::handle::HandleName;
use crate::labels::Labels;
use crate::packed::{self, Pairs};
use crate::unknown::UnknownFields;

/// Who holds an allocation: one entry of a block's `attributes`.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(from = "AttributeParts")]
pub struct Attribute {
    // The handle id as a field (or `NO_HANDLE`), then the `secondary`
    // labels in key order, each a key and a value (see `crate::packed`).
    text: Arc<str>,
    rare: Option<Box<Rare>>,
}

// The first character of the text of an entry without a handle: neither a
// digit (a field) nor a letter (a short key).
const NO_HANDLE: char = '-';

#[derive(Debug, Clone, PartialEq)]
struct Rare {
    alternate_owner: Labels,
    released_at: Option<i64>,
    unknown: UnknownFields,
}

static NO_LABELS: Labels = Labels::new();
static NO_FIELDS: UnknownFields = UnknownFields::new();

/// An attribute entry with its fields laid out: how one is built, and how
/// it is read from JSON.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AttributeParts {
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

impl From<AttributeParts> for Attribute {
    fn from(parts: AttributeParts) -> Attribute {
        let AttributeParts {
            handle_id,
            secondary,
            alternate_owner,
            released_at,
            unknown,
        } = parts;
        let rare = (!alternate_owner.is_empty() || released_at.is_some() || !unknown.is_empty())
            .then(|| {
                Box::new(Rare {
                    alternate_owner,
                    released_at,
                    unknown,
                })
            });
        Attribute {
            text: Arc::from(pack(handle_id.as_deref(), secondary.iter())),
            rare,
        }
    }
}

impl From<Attribute> for AttributeParts {
    fn from(attribute: Attribute) -> AttributeParts {
        attribute.to_parts()
    }
}

// The text of an entry: the handle id, then the labels (in key order).
fn pack<'a>(handle: Option<&str>, labels: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut text = String::with_capacity(handle.map_or(1, str::len) + 48);
    match handle {
        Some(handle) => packed::push_field(&mut text, handle),
        None => text.push(NO_HANDLE),
    }
    for (key, value) in labels {
        packed::push_key(&mut text, key);
        packed::push_field(&mut text, value);
    }
    text
}

impl Default for Attribute {
    fn default() -> Self {
        AttributeParts::default().into()
    }
}

impl Attribute {
    /// An entry for `handle` with these labels, as an assignment writes it.
    pub fn new(handle: &str, secondary: &BTreeMap<String, String>) -> Attribute {
        Attribute::of_text(&Attribute::text_for(handle, secondary))
    }

    // The text of `Attribute::new(handle, secondary)`: the form is
    // canonical, so an entry is for exactly these when its text is this
    // and it has nothing rare (Calico's findOrAddAttribute compares the
    // handle and the labels).
    pub(super) fn text_for(handle: &str, secondary: &BTreeMap<String, String>) -> String {
        pack(
            Some(handle),
            secondary.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )
    }

    pub(super) fn of_text(text: &str) -> Attribute {
        Attribute {
            text: Arc::from(text),
            rare: None,
        }
    }

    pub(super) fn has_text(&self, text: &str) -> bool {
        self.rare.is_none() && *self.text == *text
    }

    /// An entry holding only `releasedAt`: the addresses of a release in
    /// their cooldown (ipam_block.go, addCooldownAttribute).
    pub fn released(at: i64) -> Attribute {
        AttributeParts {
            released_at: Some(at),
            ..AttributeParts::default()
        }
        .into()
    }

    /// The fields laid out.
    pub fn to_parts(&self) -> AttributeParts {
        AttributeParts {
            handle_id: self.handle_id().map(str::to_string),
            secondary: self.secondary().iter().collect(),
            alternate_owner: self.alternate_owner().clone(),
            released_at: self.released_at(),
            unknown: self.unknown().clone(),
        }
    }

    /// The handle id as stored (see [`Attribute::handle`] for the one that
    /// holds the addresses).
    pub fn handle_id(&self) -> Option<&str> {
        self.split().0
    }

    /// The handle id as stored, sharing this entry's text.
    pub fn handle_name(&self) -> Option<HandleName> {
        self.handle_id()
            .map(|_| HandleName::from_text(Arc::clone(&self.text)))
    }

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
        self.handle_id().map(sanitize_handle)
    }

    /// Owner details (node, namespace, pod, timestamp, type ...): Calico's
    /// `secondary`.
    pub fn secondary(&self) -> Secondary<'_> {
        Secondary(Pairs(self.split().1))
    }

    /// Details of a previous or next owner during a live migration (Calico
    /// 3.32): `alternateOwnerAttrs`.
    pub fn alternate_owner(&self) -> &Labels {
        self.rare
            .as_ref()
            .map_or(&NO_LABELS, |r| &r.alternate_owner)
    }

    /// When the addresses were released, in seconds since the epoch
    /// (Calico's `releasedAt`, a `metav1.Time`): they are in their cooldown,
    /// held by nobody, until deallocated.
    pub fn released_at(&self) -> Option<i64> {
        self.rare.as_ref().and_then(|r| r.released_at)
    }

    /// Fields of a newer Calico, kept verbatim.
    pub fn unknown(&self) -> &UnknownFields {
        self.rare.as_ref().map_or(&NO_FIELDS, |r| &r.unknown)
    }

    /// Whether the addresses were released and are in (or past) their
    /// cooldown.
    pub fn is_released(&self) -> bool {
        self.released_at().is_some()
    }

    // The handle id, and the text of the labels.
    fn split(&self) -> (Option<&str>, &str) {
        match self.text.strip_prefix(NO_HANDLE) {
            Some(labels) => (None, labels),
            None => match packed::split_field(&self.text) {
                Some((handle, labels)) => (Some(handle), labels),
                None => (None, ""),
            },
        }
    }
}

impl fmt::Debug for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_parts(), f)
    }
}

impl Serialize for Attribute {
    // As `AttributeParts` derives it (the unknown fields flattened after
    // the known ones), without building one.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        if let Some(handle) = self.handle_id() {
            map.serialize_entry("handle_id", handle)?;
        }
        let secondary = self.secondary();
        if !secondary.is_empty() {
            map.serialize_entry("secondary", &secondary)?;
        }
        if !self.alternate_owner().is_empty() {
            map.serialize_entry("alternateOwnerAttrs", self.alternate_owner())?;
        }
        if let Some(at) = self.released_at() {
            map.serialize_entry("releasedAt", &crate::timestamp::format_rfc3339(at))?;
        }
        for (key, value) in self.unknown() {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// The `secondary` labels of an entry, read from its text in key order.
#[derive(Clone, Copy)]
pub struct Secondary<'a>(Pairs<'a>);

impl<'a> Secondary<'a> {
    /// The value of a key.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.iter().find(|&(k, _)| k == key).map(|(_, v)| v)
    }

    /// Pairs in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.0
    }

    /// Whether there are no labels.
    pub fn is_empty(&self) -> bool {
        self.0 .0.is_empty()
    }

    /// The labels as a sorted map.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

impl fmt::Debug for Secondary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Secondary<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

/// Cuts a handle at its first `\r`, as Calico does before comparing handles.
pub fn sanitize_handle(handle: &str) -> &str {
    handle.split('\r').next().unwrap_or(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> AttributeParts {
        AttributeParts {
            handle_id: Some("k8s-pod-network.abc\r\n".into()),
            secondary: [("namespace", "default"), ("node", "n1"), ("x:y", "")]
                .into_iter()
                .collect(),
            ..AttributeParts::default()
        }
    }

    #[test]
    fn an_entry_reads_back_what_it_was_built_from() {
        let plain: Attribute = parts().into();
        assert_eq!(plain.to_parts(), parts());
        assert_eq!(plain.handle_id(), Some("k8s-pod-network.abc\r\n"));
        assert_eq!(plain.handle(), Some("k8s-pod-network.abc"));
        assert_eq!(plain.secondary().get("node"), Some("n1"));
        assert_eq!(plain.secondary().get("x:y"), Some(""));
        assert_eq!(plain.secondary().get("pod"), None);
        assert_eq!(plain.handle_name().unwrap(), "k8s-pod-network.abc\r\n");
        let rare = AttributeParts {
            alternate_owner: [("pod", "p")].into_iter().collect(),
            released_at: Some(7),
            unknown: [("new".to_string(), crate::unknown::UnknownValue::Bool(true))].into(),
            ..parts()
        };
        let full: Attribute = rare.clone().into();
        assert_eq!(full.to_parts(), rare);
        assert_eq!(full.handle(), None);
        assert_ne!(full, plain);
        let nobody = Attribute::default();
        assert_eq!(nobody.to_parts(), AttributeParts::default());
        assert_eq!(nobody.handle_name(), None);
        assert!(nobody.secondary().is_empty());
        assert!(std::mem::size_of::<Attribute>() <= 24);
    }

    #[test]
    fn an_entry_writes_the_json_its_parts_write() {
        for text in [
            r#"{"handle_id":"h","secondary":{"namespace":"default","node":"n1","pod":"p"}}"#,
            r#"{"secondary":{"a":"1"},"alternateOwnerAttrs":{"b":"2"},"releasedAt":"2026-01-02T03:04:05Z","zzz":[1]}"#,
            r#"{}"#,
        ] {
            let attribute: Attribute = serde_json::from_str(text).unwrap();
            let parts: AttributeParts = serde_json::from_str(text).unwrap();
            assert_eq!(serde_json::to_string(&attribute).unwrap(), text);
            assert_eq!(serde_json::to_string(&parts).unwrap(), text);
        }
    }

    #[test]
    fn an_entry_has_the_text_of_exactly_its_handle_and_labels() {
        let map: BTreeMap<String, String> = [("node".to_string(), "n1".to_string())].into();
        let attribute = Attribute::new("h", &map);
        assert!(attribute.has_text(&Attribute::text_for("h", &map)));
        assert!(!attribute.has_text(&Attribute::text_for("g", &map)));
        assert!(!attribute.has_text(&Attribute::text_for("h", &BTreeMap::new())));
        let mut more = map.clone();
        more.insert("pod".into(), "p".into());
        assert!(!attribute.has_text(&Attribute::text_for("h", &more)));
        // The same handle and labels built from parts: the same text.
        let parts: Attribute = AttributeParts {
            handle_id: Some("h".into()),
            secondary: Labels::from(&map),
            ..AttributeParts::default()
        }
        .into();
        assert_eq!(parts, attribute);
        let released: Attribute = AttributeParts {
            released_at: Some(1),
            ..parts.to_parts()
        }
        .into();
        assert!(!released.has_text(&Attribute::text_for("h", &map)));
    }
}
