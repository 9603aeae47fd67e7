//! Node and namespace labels on the wire: what `GET` and `PUT
//! /v1/nodes/{node}/labels` take and answer, and the rule every label a
//! request carries is held to (`nodeLabels` and `namespaceLabels` of an
//! assignment too).
//!
//! Labels are what pools' `nodeSelector` and `namespaceSelector` are
//! matched against. They are Kubernetes labels wherever they are kept (a
//! Node's, a Namespace's, a Calico Node resource's), so the API takes only
//! what Kubernetes would store: a key is `[prefix/]name` as Kubernetes'
//! `IsQualifiedName`, a value is empty or at most 63 letters, digits, `-`,
//! `_` and `.` starting and ending with a letter or digit
//! (`IsValidLabelValue`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::names::{check_label_key, is_key_name, refuse, NameError, MAX_LABEL};

/// Most labels one request may carry: far more than a cloud provider puts
/// on a node, few enough that a request stays small.
pub const MAX_LABELS: usize = 128;

/// The pattern of a label value, for the OpenAPI document.
pub const LABEL_VALUE_PATTERN: &str = "^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$";

/// `PUT /v1/nodes/{node}/labels`: the node's labels, all of them (a label
/// left out is removed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeLabelsBody {
    /// Every label of the node.
    pub labels: BTreeMap<String, String>,
}

/// Where a node's labels are read from, which decides whether the API may
/// change them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LabelOrigin {
    /// Set through this API (`PUT /v1/nodes/{node}/labels`, `ipamctl node
    /// label`) and kept by the datastore itself: the embedded and memory
    /// stores.
    Ipam,
    /// The Calico Node resource on etcd
    /// (`/calico/resources/v3/projectcalico.org/nodes/<node>`), which
    /// calico-node and `calicoctl label nodes` write.
    CalicoNode,
    /// The Kubernetes Node (`kubectl label node`).
    KubernetesNode,
}

/// `GET /v1/nodes/{node}/labels`: a node's labels as assignments read them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeLabelsResponse {
    /// The node.
    pub node: String,
    /// Its labels (none for a node the datastore does not know).
    pub labels: BTreeMap<String, String>,
    /// Where they are read from.
    pub origin: LabelOrigin,
}

/// Labels a request carries, as Kubernetes would store them: at most
/// [`MAX_LABELS`], each key a qualified name (`[prefix/]name`), each value
/// empty or a label value.
pub fn check_labels(field: &str, labels: &BTreeMap<String, String>) -> Result<(), NameError> {
    if labels.len() > MAX_LABELS {
        return Err(NameError::TooManyLabels {
            field: field.to_string(),
            count: labels.len(),
        });
    }
    for (key, value) in labels {
        check_label_key(field, key)?;
        if !value.is_empty() && (value.len() > MAX_LABEL || !is_key_name(value)) {
            return Err(refuse(
                &format!("{field}.{key}"),
                value,
                "is not a Kubernetes label value: empty, or at most 63 characters of letters, digits, '-', '_' and '.', starting and ending with a letter or digit",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn labels_are_what_kubernetes_stores() {
        for good in [
            labels(&[]),
            labels(&[("foo", "bar")]),
            labels(&[("topology.kubernetes.io/zone", "eu-west-1a")]),
            labels(&[("empty", ""), ("k", &"v".repeat(63))]),
            labels(&[("A_b.c-D", "X_y.z-1")]),
        ] {
            assert_eq!(check_labels("labels", &good), Ok(()), "{good:?}");
        }
        for (bad, says) in [
            (
                labels(&[("", "v")]),
                "labels key: \"\" is not a Kubernetes label key",
            ),
            (labels(&[("Prefix.io/k", "v")]), "labels key"),
            (labels(&[("-k", "v")]), "labels key"),
            (
                labels(&[("k", "-v")]),
                "labels.k: \"-v\" is not a Kubernetes label value",
            ),
            (labels(&[("k", "a b")]), "labels.k"),
            (labels(&[("k", &"v".repeat(64))]), "labels.k"),
        ] {
            let error = check_labels("labels", &bad).unwrap_err().to_string();
            assert!(error.starts_with(says), "{bad:?}: {error}");
        }
        let many: BTreeMap<String, String> = (0..=MAX_LABELS)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        assert_eq!(
            check_labels("nodeLabels", &many).unwrap_err().to_string(),
            "nodeLabels: 129 labels, at most 128"
        );
    }
}
