//! Where the engine gets node labels when a request carries none: a
//! release. Calico's ensureConsistentAffinity reads the Node after a
//! release (libcalico-go/lib/ipam/ipam.go) to decide whether the block's
//! pool still selects it; the engine asks a [`NodeLabelSource`] that its
//! owner installs ([`Ipam::with_node_labels`]), and only for the nodes
//! whose emptied blocks sit in pools with a nodeSelector
//! ([`Snapshot::hosts_to_label`](ipam_core::Snapshot::hosts_to_label)).
//! Without a source no labels are known, and a release leaves affinities
//! as they are: the node's next assignment, which carries its labels,
//! gives the block up instead (prepareAffinityBlocksForHost).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use ipam_core::planner::NodeLabels;
use ipam_core::BlockCidr;

use super::Ipam;
use crate::datastore::Datastore;

/// Reads a node's labels (a Kubernetes Node's, or Calico's Node resource
/// on etcd).
#[async_trait]
pub trait NodeLabelSource: Send + Sync {
    /// The node's labels; `None` when the node does not exist or cannot be
    /// read now. Then none of its blocks is released on the strength of a
    /// selector, as Calico's ensureConsistentAffinity skips a node it
    /// cannot find (and ignores any other error once addresses are
    /// released).
    async fn node_labels(&self, node: &str) -> Option<BTreeMap<String, String>>;
}

impl<S: Datastore + ?Sized> Ipam<S> {
    /// The engine with a source of node labels, for keeping affinities
    /// consistent when a release empties a block of a pool that no longer
    /// selects its node.
    pub fn with_node_labels(mut self, source: Arc<dyn NodeLabelSource>) -> Self {
        self.node_labels = Some(source);
        self
    }

    /// The labels of the nodes a release from `blocks` may need (see
    /// [`Snapshot::hosts_to_label`](ipam_core::Snapshot::hosts_to_label)),
    /// as the source gives them; empty without a source.
    pub(super) async fn labels_for_release(
        &self,
        blocks: impl IntoIterator<Item = BlockCidr>,
    ) -> NodeLabels {
        let Some(source) = &self.node_labels else {
            return NodeLabels::new();
        };
        let hosts = self.cache().snapshot.hosts_to_label(blocks);
        let mut labels = NodeLabels::new();
        for host in hosts {
            if let Some(found) = source.node_labels(&host).await {
                labels.insert(host, found);
            }
        }
        labels
    }
}
