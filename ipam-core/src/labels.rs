//! A small string-to-string map for allocation attributes (`secondary`,
//! `alternateOwnerAttrs`) in their plain form ([`crate::block::AttributeParts`]):
//! a sorted vector rather than a tree (a 500-byte node), read and written as
//! a JSON object. A block keeps `secondary` packed in its entry's text
//! instead (see [`crate::block::Secondary`]); this is what builds it.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Key-value pairs sorted by key, each key once.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct Labels(Vec<(String, String)>);

impl Labels {
    /// No labels.
    pub const fn new() -> Self {
        Labels(Vec::new())
    }

    /// The value of a key.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.position(key).ok().map(|i| self.0[i].1.as_str())
    }

    /// Sets a key, replacing its value if present.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        match self.position(&key) {
            Ok(i) => self.0[i].1 = value.into(),
            Err(i) => self.0.insert(i, (key, value.into())),
        }
    }

    /// Pairs in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether there are no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether these are exactly the pairs of `map`.
    pub fn equals_map(&self, map: &BTreeMap<String, String>) -> bool {
        self.0.len() == map.len()
            && self
                .0
                .iter()
                .zip(map)
                .all(|((k, v), (mk, mv))| k == mk && v == mv)
    }

    /// The labels as a sorted map.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.0.iter().cloned().collect()
    }

    fn position(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }
}

impl From<&BTreeMap<String, String>> for Labels {
    fn from(map: &BTreeMap<String, String>) -> Self {
        // A map iterates in key order and without repeats: already sorted.
        Labels(map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Labels {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        let mut labels = Labels::new();
        for (k, v) in pairs {
            labels.insert(k, v);
        }
        labels
    }
}

impl Serialize for Labels {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct LabelsVisitor;
        impl<'de> Visitor<'de> for LabelsVisitor {
            type Value = Labels;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of strings to strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Labels, A::Error> {
                let mut labels = Labels::new();
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    labels.insert(k, v);
                }
                Ok(labels)
            }
        }
        d.deserialize_map(LabelsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_stay_sorted_and_unique() {
        let labels: Labels = [("pod", "a"), ("node", "n"), ("pod", "b")]
            .into_iter()
            .collect();
        assert_eq!(
            labels.iter().collect::<Vec<_>>(),
            [("node", "n"), ("pod", "b")]
        );
        assert_eq!(labels.get("pod"), Some("b"));
        assert_eq!(labels.get("namespace"), None);
    }

    #[test]
    fn labels_read_and_write_as_a_json_object() {
        let labels: Labels = serde_json::from_str(r#"{"pod":"p","namespace":"ns"}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&labels).unwrap(),
            r#"{"namespace":"ns","pod":"p"}"#
        );
        assert!(serde_json::from_str::<Labels>(r#"{"pod":1}"#).is_err());
    }

    #[test]
    fn labels_equal_the_map_they_were_made_from() {
        let map: BTreeMap<String, String> = [("a".to_string(), "1".to_string())].into();
        let labels = Labels::from(&map);
        assert!(labels.equals_map(&map));
        assert_eq!(labels.to_map(), map);
        assert!(!Labels::new().equals_map(&map));
    }
}
