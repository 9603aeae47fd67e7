//! The labels of Calico's Node resource on etcd, which a pool's
//! `nodeSelector` is matched against there. Calico's IPAM reads the node
//! with `client.Get(model.ResourceKey{Kind: KindNode, Name: host})`
//! (libcalico-go/lib/ipam/ipam.go, prepareAffinityBlocksForHost) and
//! matches `node.Labels` (pools.go, SelectsNode); the etcdv3 backend keeps
//! the resource at `/calico/resources/v3/projectcalico.org/nodes/<name>`
//! (libcalico-go/lib/backend/model/resource.go, defaultDeletePath, with the
//! plural "nodes" registered for KindNode) as the v3 object's JSON.
//! calico-node creates it; `calicoctl label nodes` changes its labels.
//! This store only reads it.

use serde::Deserialize;

use super::{EtcdStore, BACKEND};
use crate::error::StoreError;
use crate::node_labels::Labels;

/// Where Calico keeps the Node resources on etcd.
const NODES: &str = "/calico/resources/v3/projectcalico.org/nodes/";

#[derive(Deserialize)]
struct CalicoNode {
    #[serde(default)]
    metadata: Metadata,
}

#[derive(Deserialize, Default)]
struct Metadata {
    #[serde(default)]
    labels: Labels,
}

impl EtcdStore {
    /// The labels of the Calico Node resource named `node`; `None` when
    /// there is no such resource.
    pub async fn calico_node_labels(&self, node: &str) -> Result<Option<Labels>, StoreError> {
        // A name that would reach another key is no node's.
        if node.is_empty() || node.contains('/') {
            return Err(StoreError::Invalid {
                what: format!("node {node:?}"),
                message: "is not a node name (it would not name one etcd key)".to_string(),
            });
        }
        let path = format!("{NODES}{node}");
        let Some(kv) = self.read(&path).await? else {
            return Ok(None);
        };
        let parsed: CalicoNode =
            serde_json::from_slice(&kv.value).map_err(|e| StoreError::Invalid {
                what: format!("{BACKEND} key {path}"),
                message: format!("not a Calico Node resource: {e}"),
            })?;
        Ok(Some(parsed.metadata.labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_read_from_calicos_node_json() {
        // As calico-node writes it (trimmed).
        let json = br#"{"kind":"Node","apiVersion":"projectcalico.org/v3",
            "metadata":{"name":"node-1","uid":"u","creationTimestamp":null,
                        "labels":{"kubernetes.io/hostname":"node-1","foo":"bar"}},
            "spec":{"bgp":{"ipv4Address":"192.0.2.1/24"}}}"#;
        let node: CalicoNode = serde_json::from_slice(json).unwrap();
        assert_eq!(node.metadata.labels["foo"], "bar");
        assert_eq!(node.metadata.labels.len(), 2);
        let bare: CalicoNode = serde_json::from_slice(br#"{"metadata":{"name":"n"}}"#).unwrap();
        assert!(bare.metadata.labels.is_empty());
    }
}
