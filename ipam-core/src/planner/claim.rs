//! Planning affinities: claiming a CIDR's blocks for a node, releasing a
//! node's affinity for a block, and all of a node's when it is gone.

use ipnet::IpNet;

use super::{cooled, Draft};
use crate::affinity::{AffinityKey, AffinityState};
use crate::block::BlockOwner;
use crate::cidr::BlockCidr;
use crate::error::Error;
use crate::plan::{AffinityRelease, BlockWrite, ClaimPlan, Now, Plan};
use crate::snapshot::Snapshot;

impl Snapshot {
    /// Plans releasing a node's affinity for one block: the affinity is
    /// marked pendingDeletion, the block deleted if empty or else left
    /// without affinity, then the affinity deleted
    /// (ipam_block_reader_writer.go, releaseBlockAffinity). The block is
    /// judged as read at `now`, cooled addresses deallocated.
    pub fn plan_release_affinity(
        &self,
        node: &str,
        cidr: BlockCidr,
        require_empty: bool,
        now: Now,
    ) -> Result<Plan, Error> {
        let key = AffinityKey {
            node: node.to_string(),
            cidr,
        };
        let affinity = self.affinity(&key).ok_or(Error::AffinityNotFound {
            node: node.to_string(),
            block: cidr,
        })?;
        let cutoff = self.config().cooldown(now).cutoff();
        let block = self
            .block(&cidr)
            .filter(|b| b.owner().is_some_and(|o| o.is_host(node)))
            .map(|b| cooled(b, cutoff));
        let release = match block {
            Some(block) => {
                if require_empty && !block.is_empty() {
                    return Err(Error::BlockNotEmpty {
                        block: cidr,
                        in_use: block.allocated_count(),
                    });
                }
                let mut pending = affinity.clone();
                pending.state = AffinityState::PendingDeletion;
                let block = if block.is_empty() {
                    BlockWrite::Delete(cidr)
                } else {
                    let mut orphaned = block.into_owned();
                    orphaned.set_owner(None, None);
                    orphaned.bump_sequence_number();
                    BlockWrite::Update(orphaned)
                };
                AffinityRelease {
                    pending_deletion: Some(pending),
                    block: Some(block),
                    delete: Some(key),
                }
            }
            // Without a matching block the affinity is stale and simply goes.
            None => AffinityRelease {
                pending_deletion: None,
                block: None,
                delete: Some(key),
            },
        };
        Ok(Plan {
            releases: vec![release],
            ..Plan::default()
        })
    }

    /// Plans claiming every block of `cidr` for `node` (Calico's
    /// ClaimAffinity, ipam.go): blocks nobody holds are created affine to
    /// the node in two phases; blocks already the node's count as claimed;
    /// blocks another owner holds are reported as failed and left alone.
    pub fn plan_claim_affinity(
        &self,
        node: &str,
        cidr: IpNet,
        now: Now,
    ) -> Result<ClaimPlan, Error> {
        if cidr.trunc() != cidr {
            return Err(Error::CidrNotAligned { cidr });
        }
        let pool = self
            .pools()
            .iter()
            .find(|p| p.cidr().contains(&cidr))
            .ok_or(Error::ClaimOutsidePool { cidr })?;
        if cidr.prefix_len() > pool.block_size() {
            return Err(Error::ClaimSmallerThanBlock {
                cidr,
                pool: pool.name().to_string(),
                block_size: pool.block_size(),
            });
        }
        let first = pool
            .block_index_of(cidr.network())
            .expect("the pool contains the CIDR");
        let count = 1u128 << (cidr.max_prefix_len() - cidr.prefix_len())
            >> (cidr.max_prefix_len() - pool.block_size());
        let mut draft = Draft::new(self, now);
        let mut outcome = ClaimPlan::default();
        for index in first..first + count {
            let block = pool.block_at(index);
            match self.block(&block).map(|b| b.owner()) {
                None => {
                    draft.claim(block, BlockOwner::Host(node.to_string()));
                    outcome.claimed.push(block);
                }
                Some(Some(owner)) if owner.is_host(node) => outcome.claimed.push(block),
                Some(_) => outcome.failed.push(block),
            }
        }
        outcome.plan = draft.finish(true);
        Ok(outcome)
    }

    /// Plans releasing every affinity of a node (a node that was deleted):
    /// its empty blocks are deleted, the others keep their addresses but
    /// lose their affinity.
    pub fn plan_release_node(&self, node: &str, now: Now) -> Plan {
        let mut plan = Plan::default();
        let cidrs: Vec<BlockCidr> = self.affinities_of(node).map(|a| a.cidr).collect();
        for cidr in cidrs {
            // The affinity was just listed, so it exists.
            if let Ok(part) = self.plan_release_affinity(node, cidr, false, now) {
                plan.releases.extend(part.releases);
            }
        }
        plan
    }
}
