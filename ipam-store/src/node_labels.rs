//! Node labels a datastore keeps itself: where no Kubernetes Node and no
//! Calico Node resource holds them (the embedded and memory stores), they
//! are set through ipam-server's API (`PUT /v1/nodes/{node}/labels`) or
//! `ipamctl node label`, and kept here beside the IPAM objects. On etcd and
//! Kubernetes the labels are read where Calico reads them (see
//! [`crate::etcd::EtcdStore::calico_node_labels`] and ipam-service), and
//! none of this is used.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::error::StoreError;

/// Labels by key.
pub type Labels = BTreeMap<String, String>;

/// Reads and replaces the labels of nodes.
#[async_trait]
pub trait NodeLabelStore: Send + Sync {
    /// The node's labels; none for a node never labelled.
    async fn node_labels(&self, node: &str) -> Result<Labels, StoreError>;

    /// Replaces the node's labels (none: the node is forgotten).
    async fn set_node_labels(&self, node: &str, labels: &Labels) -> Result<(), StoreError>;
}

/// Node labels in memory, lost on exit like the memory store's objects.
#[derive(Debug, Default)]
pub struct MemoryNodeLabels {
    nodes: Mutex<BTreeMap<String, Labels>>,
}

#[async_trait]
impl NodeLabelStore for MemoryNodeLabels {
    async fn node_labels(&self, node: &str) -> Result<Labels, StoreError> {
        let nodes = self.nodes.lock().expect("no holder panics");
        Ok(nodes.get(node).cloned().unwrap_or_default())
    }

    async fn set_node_labels(&self, node: &str, labels: &Labels) -> Result<(), StoreError> {
        let mut nodes = self.nodes.lock().expect("no holder panics");
        if labels.is_empty() {
            nodes.remove(node);
        } else {
            nodes.insert(node.to_string(), labels.clone());
        }
        Ok(())
    }
}
