//! Affinity consistency: a node's empty blocks in an enabled pool that no
//! longer selects it (its nodeSelector changed, or the node's labels did)
//! are given up, so that their addresses go back to the nodes the pool
//! does select. Calico does it at two moments (libcalico-go/lib/ipam/
//! ipam.go): when a release leaves a block empty (`ensureConsistentAffinity`,
//! called by releaseIPsFromBlock and releaseByHandle) and before a node's
//! next assignment of a family (the release loop of
//! `prepareAffinityBlocksForHost`). Both release as `releaseBlockAffinity`
//! with `RequireEmpty` does (ipam_block_reader_writer.go): the affinity
//! marked pendingDeletion, the block deleted, the affinity deleted.
//!
//! Which blocks qualify, as Calico has it:
//! - the block is affine to the node (`host:<node>`) and the node holds an
//!   affinity for it, in any state (getAffineBlocks lists them all);
//! - an enabled pool holds it (getPoolForIP looks at enabled pools only: a
//!   block of a disabled or deleted pool stays), and that pool's
//!   nodeSelector does not match the node's labels (SelectsNode; the
//!   namespaceSelector plays no part);
//! - at assignment, the pool is not one the request names (requested pools
//!   are used whatever their selector, determinePools);
//! - the block is empty as read now (blockFromBackend: addresses whose
//!   cooldown has passed are deallocated; one still cooling, like any
//!   allocation other than a Windows-reserved one, keeps it: `empty()`).
//!   A non-empty block stays affine (errBlockNotEmpty is ignored).
//!
//! Labels are an input: the planner never reads a node. At assignment they
//! are the request's; at release the caller passes the labels of the nodes
//! it knows ([`NodeLabels`]), and a node it does not know keeps its blocks,
//! as Calico's ensureConsistentAffinity does for a node that does not exist.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use super::Draft;
use crate::affinity::{AffinityKey, AffinityState};
use crate::block::BlockOwner;
use crate::cidr::{BlockCidr, IpVersion};
use crate::plan::{AffinityRelease, BlockWrite};
use crate::pool::Pool;
use crate::snapshot::Snapshot;

/// The labels of the nodes a caller knows, by node name. A node absent
/// here is one whose labels are unknown (or that does not exist): its
/// blocks are never released on the strength of a selector.
pub type NodeLabels = BTreeMap<String, BTreeMap<String, String>>;

impl Snapshot {
    /// The enabled pool holding a block, as Calico's getPoolForIP finds it
    /// among enabled pools.
    fn enabled_pool_of(&self, cidr: &BlockCidr) -> Option<&Pool> {
        self.pools()
            .iter()
            .find(|p| p.enabled() && p.contains(cidr.net().network()))
    }

    /// The nodes whose labels a release from these blocks needs to keep
    /// affinities consistent: the hosts the blocks are affine to, when an
    /// enabled pool with a nodeSelector that may not select every node
    /// holds the block. A caller reads these nodes' labels and passes them
    /// to [`Snapshot::plan_release_with`] or
    /// [`Snapshot::plan_release_by_handle_with`]; when there are none, no
    /// label needs reading.
    pub fn hosts_to_label(&self, blocks: impl IntoIterator<Item = BlockCidr>) -> BTreeSet<String> {
        blocks
            .into_iter()
            .filter_map(|cidr| {
                let block = self.block(&cidr)?;
                let Some(BlockOwner::Host(node)) = block.owner() else {
                    return None;
                };
                let pool = self.enabled_pool_of(&cidr)?;
                (!pool.selects_every_node()).then(|| node.clone())
            })
            .collect()
    }
}

impl Draft<'_> {
    /// Gives up `node`'s affinity for `cidr`, deleting the block, when the
    /// block qualifies (see the module): affine to the node, empty as read
    /// now, in an enabled pool that is not `requested` and whose
    /// nodeSelector does not match `labels`. Returns whether it did.
    pub(super) fn release_if_unselected(
        &mut self,
        node: &str,
        cidr: BlockCidr,
        labels: &BTreeMap<String, String>,
        requested: &[IpNet],
    ) -> bool {
        let snapshot = self.snapshot;
        let key = AffinityKey {
            node: node.to_string(),
            cidr,
        };
        let Some(affinity) = snapshot.affinity(&key) else {
            return false;
        };
        let Some(pool) = snapshot.enabled_pool_of(&cidr) else {
            return false;
        };
        if pool.selects_node(labels) || requested.iter().any(|r| r.trunc() == pool.cidr()) {
            return false;
        }
        if self.is_gone(&cidr) || snapshot.block(&cidr).is_none() && !self.blocks.contains(&cidr) {
            return false;
        }
        let block = self.block_mut(cidr);
        if !block.owner().is_some_and(|o| o.is_host(node)) || !block.is_empty() {
            return false;
        }
        let mut pending = affinity.clone();
        pending.state = AffinityState::PendingDeletion;
        self.reclaims.push(AffinityRelease {
            pending_deletion: Some(pending),
            block: Some(BlockWrite::Delete(cidr)),
            delete: Some(key),
        });
        self.mark_gone(cidr);
        true
    }

    /// Before a node's assignment of a family (prepareAffinityBlocksForHost):
    /// releases its qualifying blocks of that family, judged on the
    /// request's labels and requested pools.
    pub(super) fn release_unselected_of_node(
        &mut self,
        node: &str,
        version: IpVersion,
        labels: &BTreeMap<String, String>,
        requested: &[IpNet],
    ) {
        let snapshot = self.snapshot;
        // Only pools that do not select the node can release anything:
        // in the common case (no selectors) nothing is looked at.
        let unselecting = snapshot
            .pools()
            .iter()
            .any(|p| p.enabled() && p.version() == version && !p.selects_node(labels));
        if !unselecting {
            return;
        }
        let cidrs: Vec<BlockCidr> = snapshot
            .affinities_of(node)
            .map(|a| a.cidr)
            .filter(|c| c.version() == version)
            .collect();
        for cidr in cidrs {
            self.release_if_unselected(node, cidr, labels, requested);
        }
    }

    /// After a release (ensureConsistentAffinity): of the blocks it freed
    /// addresses in, those affine to a node whose labels are known and
    /// left qualifying are released with their affinity.
    pub(super) fn release_unselected_after(&mut self, freed: &[BlockCidr], labels: &NodeLabels) {
        if labels.is_empty() {
            return;
        }
        for &cidr in freed {
            let Some(BlockOwner::Host(node)) = self.current_block(&cidr).and_then(|b| b.owner())
            else {
                continue;
            };
            let node = node.clone();
            if let Some(node_labels) = labels.get(&node) {
                self.release_if_unselected(&node, cidr, node_labels, &[]);
            }
        }
    }
}
