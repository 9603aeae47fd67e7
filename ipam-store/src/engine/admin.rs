//! Administration: affinities claimed and released, nodes removed,
//! the IPAM configuration, pools, and the backstop that deallocates cooled
//! addresses.
//!
//! # Pools
//!
//! Calico refuses a pool that overlaps another by listing the pools, then
//! creating (clientv3/ippool.go, validateAndSetDefaults): two creates that
//! list before either creates both succeed. No datastore here writes two
//! objects atomically (Kubernetes cannot), so [`Ipam::create_pool`] makes
//! the check hold by its order of writes instead:
//!
//! 1. list the pools and refuse the request if one overlaps;
//! 2. create the pool disabled: nothing is ever assigned from a disabled
//!    pool, so while it is being decided it hands out nothing;
//! 3. list again: an overlapping pool seen now was created before this
//!    look, and its own look (after its creation) may have missed ours, so
//!    ours yields: it is deleted, and after a pause the request starts
//!    again at 1, where a pool that stayed refuses it;
//! 4. otherwise write the spec asked for, enabling the pool.
//!
//! Of two overlapping creates, the later-created always sees the earlier
//! one at 3, unless that one already yielded, so at most one gets past 3;
//! both may yield, and then their retries, spread by the pauses, let one
//! through. So among this project's processes (every server, ipamctl, the
//! CNI plugin in direct mode) on any datastore, no two overlapping pools
//! are ever enabled, even for a moment, and a request is refused only for
//! a pool that exists. The one exception is a pool being split and its
//! children, which cut one range into the same blocks (see `split`). A pool's update cannot change its CIDR or block
//! size, and names the revision it read, so it brings no overlap.
//!
//! What it cannot guarantee: a writer that does not follow it, calicoctl or
//! kubectl on the Kubernetes and etcd datastores, checks by Calico's
//! list-then-create or not at all; a pool it creates after our step 3 is
//! not seen, and `check` reports the overlap (`poolsOverlap`). A process
//! killed between steps 2 and 4 leaves its pool disabled, where an operator
//! sees it. Listing must be linearizable, which every backend's list is (an
//! etcd range read, a Kubernetes list without a resourceVersion, a redb
//! read transaction, the memory map).

use crate::model::ListQuery;
use ipam_core::plan::{ClaimPlan, HandleChange};
use ipam_core::pool::check_no_overlap;
use ipam_core::{AffinityKey, BlockCidr, IpamConfig, Pool, Snapshot};
use ipnet::IpNet;

use super::retrying::Attempt;
use super::writes::{prepare, AssignFailure, Interrupted};
use super::{now, Ipam, IpamError};
use crate::datastore::Datastore;
use crate::error::StoreError;
use crate::model::{Key, Revision, Value};
impl<S: Datastore + ?Sized> Ipam<S> {
    /// Claims every block of `cidr` for a node (Calico's ClaimAffinity):
    /// returns the blocks now affine to it and those another owner holds.
    pub async fn claim_affinity(&self, node: &str, cidr: IpNet) -> Result<ClaimPlan, IpamError> {
        let _node = self.lock_node(node).await;
        // Blocks reported as already ours or as someone else's are not
        // written, so they are judged on a fresh listing.
        self.refresh().await?;
        self.run_affinity_plan("claim affinity", |s| {
            s.plan_claim_affinity(node, cidr, now())
        })
        .await
    }

    /// Releases a node's affinity for one block: the block is deleted when
    /// empty, else left without affinity (Calico's ReleaseAffinity). With
    /// `require_empty`, a block in use is refused instead.
    pub async fn release_affinity(
        &self,
        node: &str,
        cidr: BlockCidr,
        require_empty: bool,
    ) -> Result<(), IpamError> {
        let _node = self.lock_node(node).await;
        // A refusal (block in use, no such affinity) writes nothing, so it
        // is judged on the current affinity and block.
        self.reload(&Key::Affinity(AffinityKey {
            node: node.to_string(),
            cidr,
        }))
        .await?;
        self.reload(&Key::Block(cidr)).await?;
        self.run_affinity_plan("release affinity", |s| {
            s.plan_release_affinity(node, cidr, require_empty, now())
                .map(|plan| ClaimPlan {
                    plan,
                    ..ClaimPlan::default()
                })
        })
        .await
        .map(|_| ())
    }

    /// Releases every affinity of a node that is gone (Calico's
    /// ReleaseHostAffinities): its empty blocks are deleted, the others keep
    /// their addresses without affinity. Returns the blocks it held.
    pub async fn release_node(&self, node: &str) -> Result<Vec<BlockCidr>, IpamError> {
        let _node = self.lock_node(node).await;
        // A fresh listing of the node's affinities, whatever the cache says.
        for item in self
            .store
            .list(&ListQuery::AffinitiesOf(node.to_string()))
            .await?
        {
            if let Value::Affinity(a) = &item.value {
                self.reload(&Key::Block(a.cidr)).await?;
            }
            self.cache().put(item.value, item.revision);
        }
        let held: Vec<BlockCidr> = self
            .cache()
            .snapshot
            .affinities_of(node)
            .map(|a| a.cidr)
            .collect();
        self.run_affinity_plan("release node", |s| {
            Ok(ClaimPlan {
                plan: s.plan_release_node(node, now()),
                ..ClaimPlan::default()
            })
        })
        .await?;
        Ok(held)
    }

    /// Writes a plan that touches no handle, planning again after each
    /// conflict.
    pub(super) async fn run_affinity_plan(
        &self,
        operation: &'static str,
        make: impl Fn(&Snapshot) -> Result<ClaimPlan, ipam_core::Error>,
    ) -> Result<ClaimPlan, IpamError> {
        let make = &make;
        self.retrying(operation, move |_| async move {
            let (planned, prepared) = {
                let cache = self.cache();
                let planned = make(&cache.snapshot)?;
                let prepared = prepare(&cache, planned.plan.clone());
                (planned, prepared)
            };
            match self.write_plan(prepared, false).await {
                Ok(()) => Ok(Attempt::Done(planned)),
                Err(AssignFailure::Fatal(e)) => Err(e),
                Err(
                    AssignFailure::Interrupted(Interrupted { cause, .. })
                    | AssignFailure::HandleHeld(cause),
                ) => Ok(Attempt::Failed(cause)),
            }
        })
        .await
    }

    /// Stores the IPAM configuration after validating it.
    pub async fn set_config(&self, config: IpamConfig) -> Result<(), IpamError> {
        config.validate()?;
        let value = Value::Config(config);
        let value = &value;
        self.retrying("set IPAM config", move |_| async move {
            let result = match self.store.get(&Key::Config).await {
                Ok(current) => self.store.update(value, &current.revision).await,
                Err(StoreError::NotFound { .. }) => self.store.create(value).await,
                Err(e) => Err(e),
            };
            Ok::<_, IpamError>(match result {
                Ok(revision) => {
                    self.cache().put(value.clone(), revision);
                    Attempt::Done(())
                }
                Err(e) => Attempt::Failed(e),
            })
        })
        .await
    }

    /// Creates a pool, refusing one that overlaps another (Calico's IPPool
    /// validation), atomically with that check among this project's
    /// processes: see "Pools" in the module documentation.
    pub async fn create_pool(&self, pool: Pool) -> Result<(), IpamError> {
        let key = Key::Pool(pool.name().to_string());
        let mut spec = pool.spec().clone();
        spec.disabled = true;
        let placeholder = Value::Pool(Pool::new(pool.name(), spec)?);
        let (key, pool, placeholder) = (&key, &pool, &placeholder);
        self.retrying("create pool", move |_| async move {
            // A pool that is there now refuses the request for good.
            check_no_overlap(pool, &self.pools().await?)?;
            let revision = self.store.create(placeholder).await?;
            // Any overlapping pool listed now was created before this look,
            // so its own look, after its creation, may miss ours: ours
            // yields, and of two creates that race, at most one goes on.
            let overlap = match self.pools().await {
                Ok(pools) => check_no_overlap(pool, &pools).err(),
                Err(e) => {
                    self.remove_placeholder(key, &revision).await;
                    return Err(e);
                }
            };
            match overlap {
                None => {
                    let made = if pool.spec().disabled {
                        Ok(())
                    } else {
                        let enabled = Value::Pool(pool.clone());
                        self.store.update(&enabled, &revision).await.map(|_| ())
                    };
                    self.cache().invalidate();
                    if let Err(e) = made {
                        self.remove_placeholder(key, &revision).await;
                        return Err(e.into());
                    }
                    Ok(Attempt::Done(()))
                }
                Some(overlap) => {
                    self.remove_placeholder(key, &revision).await;
                    // The other may be a create that yields in turn: look
                    // again after a pause, and refuse if it stayed.
                    Ok(Attempt::Yield(overlap.into()))
                }
            }
        })
        .await
    }

    /// Deletes a pool this engine created disabled and never finished;
    /// best effort: left behind, it is a disabled pool an operator sees
    /// and may delete.
    pub(super) async fn remove_placeholder(&self, key: &Key, revision: &Revision) {
        match self.store.delete(key, revision).await {
            Ok(()) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => tracing::warn!(%key, error = %e, "left a disabled pool behind"),
        }
    }

    /// Replaces a pool's spec. Its CIDR and block size cannot change, as in
    /// Calico (an in-use pool cannot be resized; create another instead),
    /// so an update can bring no overlap: the check that matters is that the
    /// CIDR is the stored one, and the update names the revision that check
    /// read, so that it is atomic with it.
    pub async fn update_pool(&self, pool: Pool) -> Result<(), IpamError> {
        let key = Key::Pool(pool.name().to_string());
        let current = self.store.get(&key).await?;
        let Value::Pool(stored) = &current.value else {
            return Err(StoreError::Invalid {
                what: key.to_string(),
                message: format!("holds a {} instead", current.value.kind()),
            }
            .into());
        };
        let immutable = |field: &'static str, from: String, to: String| {
            Err(IpamError::PoolFieldImmutable {
                pool: pool.name().to_string(),
                field,
                from,
                to,
            })
        };
        if stored.cidr() != pool.cidr() {
            return immutable("cidr", stored.cidr().to_string(), pool.cidr().to_string());
        }
        if stored.block_size() != pool.block_size() {
            return immutable(
                "blockSize",
                stored.block_size().to_string(),
                pool.block_size().to_string(),
            );
        }
        self.store
            .update(&Value::Pool(pool), &current.revision)
            .await?;
        self.cache().invalidate();
        Ok(())
    }

    /// Deletes a pool as Calico does (clientv3/ippool.go, Delete): disable
    /// it so nothing new is assigned from it, release every affinity of its
    /// blocks (empty blocks go, others keep their addresses), then delete
    /// it. Addresses still in use stay allocated until released.
    pub async fn delete_pool(&self, name: &str) -> Result<(), IpamError> {
        let key = Key::Pool(name.to_string());
        let current = self.store.get(&key).await?;
        let Value::Pool(pool) = current.value else {
            return Err(StoreError::Invalid {
                what: key.to_string(),
                message: "not a pool".to_string(),
            }
            .into());
        };
        let mut spec = pool.spec().clone();
        spec.disabled = true;
        let disabled = Pool::new(name, spec)?;
        let revision = self
            .store
            .update(&Value::Pool(disabled.clone()), &current.revision)
            .await?;
        self.refresh().await?;
        let affinities: Vec<AffinityKey> = self
            .cache()
            .snapshot
            .affinities()
            .filter(|a| disabled.contains(a.cidr.net().network()))
            .map(|a| a.key())
            .collect();
        for key in affinities {
            match self.release_affinity(&key.node, key.cidr, false).await {
                Ok(()) | Err(IpamError::Refused(ipam_core::Error::AffinityNotFound { .. })) => {}
                Err(e) => return Err(e),
            }
        }
        self.store.delete(&key, &revision).await?;
        self.cache().invalidate();
        Ok(())
    }

    /// Deallocates released addresses whose cooldown has passed, writing
    /// each block that holds some once: the backstop for blocks no
    /// allocation or release writes (kube-controllers' ipam.go,
    /// garbageCollectColdIPs), which visits only blocks whose earliest
    /// `releasedAt` has cooled. A block changed since it was read is read
    /// again and left to the next pass, as Calico skips a stale block.
    /// Returns the blocks written (or deleted, when left empty without
    /// affinity).
    pub async fn deallocate_cooled(&self) -> Result<Vec<BlockCidr>, IpamError> {
        self.ensure_fresh().await?;
        let mut prepared = {
            let cache = self.cache();
            let plan = cache.snapshot.plan_deallocate_cooled(now());
            prepare(&cache, plan)
        };
        let mut written = Vec::new();
        for block in std::mem::take(&mut prepared.plan.blocks) {
            let cidr = block.cidr();
            match self.apply(block.into_write(), &mut prepared.expected).await {
                Ok(()) => written.push(cidr),
                // A stale block is read again and left to the next pass.
                Err(e) => self.recover(&e).await?,
            }
        }
        // Cooled addresses belong to no handle: no count changes, unless
        // the plan says so.
        let changes = std::mem::take(&mut prepared.plan.handles);
        let changes = changes
            .into_iter()
            .filter_map(|change| match change {
                HandleChange::Adjust { id, deltas } => {
                    let deltas: Vec<_> = deltas
                        .into_iter()
                        .filter(|(c, _)| written.contains(c))
                        .collect();
                    (!deltas.is_empty()).then_some(HandleChange::Adjust { id, deltas })
                }
                HandleChange::Delete(id) => Some(HandleChange::Delete(id)),
            })
            .collect();
        self.write_handle_changes(changes, &mut prepared.expected)
            .await?;
        Ok(written)
    }
}
