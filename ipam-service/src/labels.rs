//! Where the labels that pools' `nodeSelector` and `namespaceSelector` are
//! matched against come from, per datastore, read as Calico reads them.
//! [`crate::LocalService`] asks its [`LabelSource`] when an assignment
//! carries no labels of its own (an API caller's `nodeLabels` and
//! `namespaceLabels` win); the CNI plugin sends none, in either mode.
//!
//! - Kubernetes ([`KubernetesLabels`]): the node's labels are those of
//!   Calico's Node as the Kubernetes backend builds it from the Kubernetes
//!   Node (libcalico-go/lib/backend/k8s/resources/node.go,
//!   K8sNodeToCalico): the Calico-only labels stored in the Node's
//!   `projectcalico.org/labels` annotation (resources.go,
//!   SetCalicoMetadataFromK8sAnnotations), then the Node's own labels over
//!   them (mergeCalicoAndK8sLabels). The namespace's are the Namespace's,
//!   read by name as Calico's IPAM plugin does
//!   (cni-plugin/pkg/ipamplugin/ipam_plugin.go, getNamespace).
//! - etcd ([`EtcdLabels`]): the Calico Node resource's labels
//!   (`/calico/resources/v3/projectcalico.org/nodes/<node>`). Calico reads
//!   namespaces only from a Kubernetes API (the plugin's getNamespace,
//!   when its config names a kubeconfig); etcd holds no namespace labels
//!   (its `kns.<namespace>` profiles are policy, written by
//!   kube-controllers, not what IPAM reads), so on etcd a
//!   `namespaceSelector` is matched against no labels, as Calico matches
//!   it when it has no namespace (libcalico-go/lib/ipam/pools.go,
//!   SelectsNamespace with a nil namespace).
//! - The embedded and memory stores ([`StoredLabels`]): node labels set
//!   through the API or ipamctl and kept by the store; no namespace
//!   labels, as on etcd.
//!
//! Only the stored labels can be changed through the API: on Kubernetes
//! and etcd they belong to the Node objects Calico reads, and a change
//! there would be overwritten or would fight calico-node and kubelet.
//!
//! One deliberate difference: Calico fails an assignment for a node it
//! cannot read (ipam.go: "failed to get node for host"); here a node the
//! datastore does not know has no labels, so that tunnel addresses, tests
//! and API clients of nodes no Node object stands for keep working, and a
//! pool with a nodeSelector simply does not select it.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use ipam_api::labels::LabelOrigin;
use ipam_store::etcd::EtcdStore;
use ipam_store::{Labels, NodeLabelStore, StoreError};
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::Api;

use crate::annotations::{self, Annotations, PodAnnotations};

/// The annotation of a Kubernetes Node holding its Calico-only labels as
/// a JSON object (libcalico-go/lib/backend/k8s/resources/resources.go,
/// labelsAnnotation).
pub const CALICO_LABELS_ANNOTATION: &str = "projectcalico.org/labels";

/// Why a label source did not answer.
#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    /// The datastore (or API server) holding them failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// This datastore's labels are not changed through the IPAM.
    #[error("{node}: the labels of a node are not set through the IPAM on the {datastore} datastore: {how}")]
    ReadOnly {
        /// The node.
        node: String,
        /// The datastore.
        datastore: &'static str,
        /// Where to change them instead.
        how: &'static str,
    },
}

/// Reads the labels of nodes and namespaces where a datastore keeps them.
#[async_trait]
pub trait LabelSource: Send + Sync {
    /// Where node labels come from.
    fn origin(&self) -> LabelOrigin;

    /// The node's labels; none for a node the datastore does not know.
    async fn node_labels(&self, node: &str) -> Result<Labels, StoreError>;

    /// The namespace's labels; none where there is no source of them, or
    /// for a namespace that does not exist.
    async fn namespace_labels(&self, namespace: &str) -> Result<Labels, StoreError>;

    /// Replaces the node's labels, where the IPAM keeps them.
    async fn set_node_labels(&self, node: &str, labels: &Labels) -> Result<(), LabelError>;

    /// The pod's and its namespace's Calico IPAM annotations, with the
    /// namespace's labels, where this source reads pods; `None` where it
    /// does not. Only ipam-server's Kubernetes source reads pods: the CNI
    /// plugin's direct mode reads none (its role has no pods), and the
    /// other datastores have no Pod objects ([`crate::annotations`]).
    /// `uid`, when the runtime gave it, is the pod's: a pod of that name
    /// with another UID is not read.
    async fn pod_annotations(
        &self,
        _namespace: &str,
        _pod: &str,
        _uid: Option<&str>,
    ) -> Result<Option<PodAnnotations>, StoreError> {
        Ok(None)
    }
}

/// A [`LabelSource`] as the engine's release path asks it
/// ([`ipam_store::engine::NodeLabelSource`]): after a release empties a
/// block of a pool with a nodeSelector, whether that pool still selects the
/// block's node (Calico's ensureConsistentAffinity reads the Node there).
/// Only labels read and found count: a failed read, or a node with no
/// labels at all (which is also how a node the datastore does not know
/// reads), keeps its blocks, as Calico keeps them for a node it cannot
/// find; the node's next assignment, which carries its labels, still gives
/// such a block up.
pub struct ReleaseLabels(pub Arc<dyn LabelSource>);

#[async_trait]
impl ipam_store::engine::NodeLabelSource for ReleaseLabels {
    async fn node_labels(&self, node: &str) -> Option<BTreeMap<String, String>> {
        match self.0.node_labels(node).await {
            Ok(labels) if !labels.is_empty() => Some(labels),
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(%node, %error, "reading the node's labels after a release");
                None
            }
        }
    }
}

/// Labels the embedded or memory store keeps itself.
pub struct StoredLabels {
    store: Arc<dyn NodeLabelStore>,
}

impl StoredLabels {
    /// Labels kept in `store`.
    pub fn new(store: Arc<dyn NodeLabelStore>) -> StoredLabels {
        StoredLabels { store }
    }
}

#[async_trait]
impl LabelSource for StoredLabels {
    fn origin(&self) -> LabelOrigin {
        LabelOrigin::Ipam
    }

    async fn node_labels(&self, node: &str) -> Result<Labels, StoreError> {
        self.store.node_labels(node).await
    }

    async fn namespace_labels(&self, _namespace: &str) -> Result<Labels, StoreError> {
        Ok(Labels::new())
    }

    async fn set_node_labels(&self, node: &str, labels: &Labels) -> Result<(), LabelError> {
        Ok(self.store.set_node_labels(node, labels).await?)
    }
}

/// The Calico Node resources on etcd.
pub struct EtcdLabels {
    store: Arc<EtcdStore>,
}

impl EtcdLabels {
    /// Labels read from `store`'s etcd.
    pub fn new(store: Arc<EtcdStore>) -> EtcdLabels {
        EtcdLabels { store }
    }
}

#[async_trait]
impl LabelSource for EtcdLabels {
    fn origin(&self) -> LabelOrigin {
        LabelOrigin::CalicoNode
    }

    async fn node_labels(&self, node: &str) -> Result<Labels, StoreError> {
        Ok(self
            .store
            .calico_node_labels(node)
            .await?
            .unwrap_or_default())
    }

    async fn namespace_labels(&self, _namespace: &str) -> Result<Labels, StoreError> {
        Ok(Labels::new())
    }

    async fn set_node_labels(&self, node: &str, _labels: &Labels) -> Result<(), LabelError> {
        Err(LabelError::ReadOnly {
            node: node.to_string(),
            datastore: "etcd",
            how: "they are the Calico Node resource's: calicoctl label nodes NODE KEY=VALUE",
        })
    }
}

/// Nodes and Namespaces read from the Kubernetes API, one GET each.
#[derive(Clone)]
pub struct KubernetesLabels {
    nodes: Api<Node>,
    namespaces: Api<Namespace>,
}

impl KubernetesLabels {
    /// Labels read through `client`.
    pub fn new(client: kube::Client) -> KubernetesLabels {
        KubernetesLabels {
            nodes: Api::all(client.clone()),
            namespaces: Api::all(client),
        }
    }
}

impl KubernetesLabels {
    /// The Namespace's labels and its annotations of
    /// [`crate::annotations::KEYS`]; none of either for a Namespace that
    /// does not exist.
    pub async fn namespace(&self, namespace: &str) -> Result<(Labels, Annotations), StoreError> {
        let found = self
            .namespaces
            .get_opt(namespace)
            .await
            .map_err(|e| unreadable(format!("reading Namespace {namespace}"), e))?;
        let Some(found) = found else {
            return Ok(Default::default());
        };
        let annotations = annotations::kept(found.metadata.annotations.as_ref());
        let labels = found.metadata.labels.unwrap_or_default();
        Ok((labels.into_iter().collect(), annotations))
    }
}

/// A Node's labels as Calico's Node has them: the Calico-only labels of
/// the [`CALICO_LABELS_ANNOTATION`], with the Node's own labels over them
/// (K8sNodeToCalico: "this may overwrite Calico labels of the same name").
/// An annotation that does not parse is skipped, as Calico skips it with
/// a warning.
pub fn calico_node_labels(node: &Node) -> Labels {
    let mut labels = Labels::new();
    if let Some(json) = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CALICO_LABELS_ANNOTATION))
    {
        match serde_json::from_str::<BTreeMap<String, String>>(json) {
            Ok(calico) => labels = calico,
            Err(e) => tracing::warn!(
                node = node.metadata.name.as_deref().unwrap_or_default(),
                error = %e,
                "unable to parse the {CALICO_LABELS_ANNOTATION} annotation; skipping it as Calico does"
            ),
        }
    }
    if let Some(own) = &node.metadata.labels {
        labels.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    labels
}

/// A failed read of `what` from the API server, as the datastore's error:
/// a refusal is invalid, the rest unavailable.
pub fn unreadable(what: String, e: kube::Error) -> StoreError {
    match e {
        kube::Error::Api(status) if status.code != 429 && status.code < 500 => {
            StoreError::Invalid {
                what,
                message: format!("{} ({})", status.message, status.code),
            }
        }
        other => StoreError::Unavailable {
            backend: "kubernetes",
            message: format!("{what}: {other}"),
        },
    }
}

#[async_trait]
impl LabelSource for KubernetesLabels {
    fn origin(&self) -> LabelOrigin {
        LabelOrigin::KubernetesNode
    }

    async fn node_labels(&self, node: &str) -> Result<Labels, StoreError> {
        let found = self
            .nodes
            .get_opt(node)
            .await
            .map_err(|e| unreadable(format!("reading Node {node}"), e))?;
        Ok(found.as_ref().map(calico_node_labels).unwrap_or_default())
    }

    async fn namespace_labels(&self, namespace: &str) -> Result<Labels, StoreError> {
        Ok(self.namespace(namespace).await?.0)
    }

    async fn set_node_labels(&self, node: &str, _labels: &Labels) -> Result<(), LabelError> {
        Err(LabelError::ReadOnly {
            node: node.to_string(),
            datastore: "kubernetes",
            how: "they are the Kubernetes Node's: kubectl label node NODE KEY=VALUE",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_nodes_own_labels_win_over_its_calico_labels() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {
                "name": "n1",
                "labels": {"foo": "k8s", "zone": "a"},
                "annotations": {CALICO_LABELS_ANNOTATION: r#"{"foo":"calico","rack":"r1"}"#},
            },
        }))
        .unwrap();
        let expected: Labels = [("foo", "k8s"), ("rack", "r1"), ("zone", "a")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(calico_node_labels(&node), expected);
    }

    #[test]
    fn an_unparsable_calico_labels_annotation_is_skipped() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "labels": {"zone": "a"},
                         "annotations": {CALICO_LABELS_ANNOTATION: "not json"}},
        }))
        .unwrap();
        assert_eq!(
            calico_node_labels(&node),
            Labels::from([("zone".to_string(), "a".to_string())])
        );
        let bare: Node = serde_json::from_value(json!({"metadata": {"name": "n2"}})).unwrap();
        assert!(calico_node_labels(&bare).is_empty());
    }
}
