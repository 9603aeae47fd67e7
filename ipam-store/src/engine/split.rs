//! Splitting a pool into 2^k child pools (calicoctl `ipam split`), atomic
//! against concurrent allocations on every datastore.
//!
//! # Why Calico needs a lock and this does not
//!
//! calicoctl (commands/ipam/split.go) refuses to split unless the datastore
//! is locked (`calicoctl datastore migrate lock`), because its order is not
//! safe for allocators: it disables the parent, then creates the children,
//! then deletes the parent, so between the first and second steps nothing
//! hands out the parent's addresses, and a failure leaves the parent
//! disabled.
//!
//! No datastore here writes two objects atomically (Kubernetes cannot), and
//! a split replaces one IPPool by several, so some moment always holds the
//! parent and some children, or neither. Neither would fail allocations for
//! want of a pool; this order therefore keeps the parent until every child
//! exists:
//!
//! 1. list the pools; find the parent; plan the children (ipam-core's
//!    [`Split`], Calico's rules); refuse a block that would straddle two
//!    children, a pool other than the children that overlaps the parent,
//!    and a child's name taken by another pool. A refusal writes nothing.
//! 2. create each missing child, enabled, in address order (and bring a
//!    child made from an older version of the parent up to date);
//! 3. delete the parent, naming the revision read in 1: if the parent
//!    changed meanwhile (a new selector, say) the delete fails, and the
//!    next attempt copies the change into the children first.
//!
//! Blocks, affinities, handles and reservations are never written: a block
//! is found by its CIDR, not its pool, and the children keep the parent's
//! block size, so each block the parent holds is a whole block of exactly
//! one child (ipam-core checks the children are at least one block, and
//! refuses a block of another size that would straddle two).
//!
//! Between 2 and 3 the parent and some children are enabled and overlap,
//! which the pool create protocol (`admin`) otherwise never lets happen. It
//! is safe here because they cut the same range into the same blocks: an
//! allocator that plans from the parent and one that plans from a child
//! name the same block object, whose compare-and-swap lets one of them
//! have each address, exactly as two allocators in one pool. Every moment
//! has an enabled pool over every address of the parent (the parent until
//! 3, the children from then on), so no allocation fails for want of a
//! pool, and an allocator whose cache still holds the parent after 3 keeps
//! writing blocks that are the children's. `check` reports the overlap
//! (`poolsOverlap`) while it lasts.
//!
//! A create of an unrelated pool that overlaps the parent is refused
//! throughout: its look after its own creation (`admin`, step 3) sees the
//! parent or, after 3, the children that cover the same range.
//!
//! # A split cut short
//!
//! A crash between 2 and 3 leaves the parent and some children: valid for
//! allocators as above. Running the same split again finishes it: the
//! children there are recognised by name and CIDR, the missing ones are
//! created and the parent deleted. A split with another number of parts is
//! refused while one is begun, and says which number finishes it. Two
//! splits of one pool at once agree on every child (a create that finds the
//! child made by the other plans again and finds it there) and on the
//! delete; one whose delete loses to the other's finds the parent gone and
//! answers with the split it planned.

use std::collections::HashMap;

use ipam_core::split::{ChildState, Split, SplitTarget};
use ipam_core::{BlockCidr, Pool};

use super::retrying::Attempt;
use super::{Ipam, IpamError};
use crate::datastore::Datastore;
use crate::error::{RetryClass, StoreError};
use crate::model::{Key, Kind, ListQuery, Revision, Value};

impl<S: Datastore + ?Sized> Ipam<S> {
    /// Splits the pool `target` names into `parts` child pools, keeping
    /// every block, affinity and address where it is: see the module
    /// documentation for the order and why it is atomic. Returns the split
    /// made (its parent as it was, and the children).
    pub async fn split_pool(&self, target: &SplitTarget, parts: u32) -> Result<Split, IpamError> {
        let (_, result) = self
            .retrying_with("split pool", None, |_, planned: Option<Split>| async move {
                let outcome = self.split_attempt(target, parts, planned.as_ref()).await;
                match outcome {
                    Ok(SplitStep::Done(split)) => (None, Ok(Attempt::Done(split))),
                    Ok(SplitStep::Again(split, cause)) => (Some(split), Ok(lost_or_failed(cause))),
                    Err(e) => (planned, Err(e)),
                }
            })
            .await;
        self.cache().invalidate();
        result
    }

    async fn split_attempt(
        &self,
        target: &SplitTarget,
        parts: u32,
        planned: Option<&Split>,
    ) -> Result<SplitStep, IpamError> {
        let (pools, revisions) = self.pools_with_revisions().await?;
        let parent = match (target.find(&pools), planned) {
            (Ok(parent), _) => parent,
            // A split of ours (or another's, at the same time) deleted the
            // parent after making every child: done.
            (Err(_), Some(split)) if finished(split, &pools) => {
                return Ok(SplitStep::Done(split.clone()))
            }
            (Err(refusal), _) => return Err(refusal.into()),
        };
        let split = Split::plan(parent, parts)?;
        let blocks: Vec<BlockCidr> = self
            .store
            .list(&ListQuery::All(Kind::Block))
            .await?
            .into_iter()
            .filter_map(|item| match item.value {
                Value::Block(block) => Some(block.cidr()),
                _ => None,
            })
            .collect();
        split.check_blocks(&blocks)?;
        let states = split.progress(&pools)?;
        for (child, state) in split.children().iter().zip(states) {
            let value = Value::Pool(child.clone());
            let written = match (state, revisions.get(child.name())) {
                (ChildState::Present, _) => continue,
                (ChildState::Outdated, Some(revision)) => {
                    self.store.update(&value, revision).await.map(drop)
                }
                (ChildState::Missing | ChildState::Outdated, _) => {
                    self.store.create(&value).await.map(drop)
                }
            };
            if let Err(cause) = written {
                return Ok(SplitStep::Again(split, cause));
            }
        }
        let parent_key = Key::Pool(split.parent().name().to_string());
        let revision = revisions
            .get(split.parent().name())
            .expect("the parent was listed with its revision");
        match self.store.delete(&parent_key, revision).await {
            Ok(()) => Ok(SplitStep::Done(split)),
            Err(StoreError::NotFound { .. }) => Ok(SplitStep::Done(split)),
            Err(cause) => Ok(SplitStep::Again(split, cause)),
        }
    }

    /// Every pool, ordered by name, and each one's revision, from one
    /// linearizable list.
    async fn pools_with_revisions(
        &self,
    ) -> Result<(Vec<Pool>, HashMap<String, Revision>), StoreError> {
        let mut pools = Vec::new();
        let mut revisions = HashMap::new();
        for item in self.store.list(&ListQuery::All(Kind::Pool)).await? {
            if let Value::Pool(pool) = item.value {
                revisions.insert(pool.name().to_string(), item.revision);
                pools.push(pool);
            }
        }
        pools.sort_by(|a, b| a.name().cmp(b.name()));
        Ok((pools, revisions))
    }
}

/// How one attempt of a split ended, short of a refusal.
enum SplitStep {
    Done(Split),
    /// A write lost to another writer (or the store failed): the split
    /// planned so far, and why.
    Again(Split, StoreError),
}

/// Whether every child of `split` is among `pools` as planned.
fn finished(split: &Split, pools: &[Pool]) -> bool {
    split
        .children()
        .iter()
        .all(|child| pools.iter().any(|p| p == child))
}

/// A write that lost to another writer is planned again from a fresh list
/// (every attempt lists), so nothing needs re-reading first; anything else
/// goes through the retry loop's judgement.
fn lost_or_failed(cause: StoreError) -> Attempt<Split> {
    match cause.retry_class() {
        RetryClass::Conflict => Attempt::Lost(cause),
        _ => Attempt::Failed(cause),
    }
}
