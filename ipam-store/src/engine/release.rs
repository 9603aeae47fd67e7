//! Release: of addresses (Calico's ReleaseIPs) and of every address of a
//! handle (Calico's ReleaseByHandle), alone or a node's burst together.

use std::net::IpAddr;

use ipam_core::block::BlockOwner;
use ipam_core::planner::{addresses_of_handle, NodeLabels};
use ipam_core::{HandleId, ReleaseRequest};
use ipnet::IpNet;

use super::lane::{Job, Reply};
use super::retrying::Attempt;
use super::writes::{prepare, BlocksFirst, BlocksWritten, Prepared};
use super::{now, Ipam, IpamError, Released};
use crate::datastore::Datastore;
use crate::error::StoreError;
use crate::model::Key;

impl<S: Datastore + ?Sized> Ipam<S> {
    /// Releases addresses (Calico's ReleaseIPs). Free addresses are
    /// reported, not refused; an expectation that no longer holds (another
    /// handle, another sequence number) refuses the whole request.
    pub async fn release(&self, requests: &[ReleaseRequest]) -> Result<Released, IpamError> {
        self.ensure_fresh().await?;
        self.release_unlocked(requests).await
    }

    pub(super) async fn release_unlocked(
        &self,
        requests: &[ReleaseRequest],
    ) -> Result<Released, IpamError> {
        self.load_blocks_of(requests.iter().map(|r| r.address), false)
            .await?;
        let blocks: Vec<_> = {
            let cache = self.cache();
            requests
                .iter()
                .filter_map(|r| cache.snapshot.block_containing(r.address))
                .map(|b| b.cidr())
                .collect()
        };
        let labels = &self.labels_for_release(blocks).await;
        let remaining = requests.to_vec();
        // Carried from attempt to attempt: what is left to release, what
        // was, and whether an unwritten answer was checked on fresh data.
        let state = (remaining, Released::default(), false);
        let ((_, out, _), result) = self
            .retrying_with("release", state, move |_, state| async move {
                let (mut remaining, mut out, mut verified) = state;
                let outcome = async {
                    let mut planned = self.plan_release(&remaining, labels);
                    // Calling an address free, or refusing a release, writes
                    // nothing, so no compare-and-swap would catch a stale cache:
                    // such an answer is given only from blocks read just now.
                    let unwritten = match &planned {
                        Ok((plan, _)) => !plan.already_free.is_empty(),
                        Err(_) => true,
                    };
                    if unwritten && !verified {
                        verified = true;
                        self.load_blocks_of(remaining.iter().map(|r| r.address), true)
                            .await?;
                        planned = self.plan_release(&remaining, labels);
                    }
                    let (planned, prepared) = planned?;
                    let BlocksFirst { written, failure } =
                        self.write_blocks_first(prepared).await?;
                    out.released.extend(
                        planned
                            .released
                            .iter()
                            .filter(|a| written.iter().any(|b| b.net().contains(*a))),
                    );
                    Ok(match failure {
                        None => {
                            out.already_free.extend(planned.already_free);
                            Attempt::Done(())
                        }
                        Some(cause) => {
                            remaining
                                .retain(|r| !written.iter().any(|b| b.net().contains(&r.address)));
                            Attempt::Failed(cause)
                        }
                    })
                }
                .await;
                ((remaining, out, verified), outcome)
            })
            .await;
        result.map(|()| out)
    }

    pub(super) fn plan_release(
        &self,
        requests: &[ReleaseRequest],
        labels: &NodeLabels,
    ) -> Result<(ipam_core::ReleasePlan, Prepared), ipam_core::Error> {
        let cache = self.cache();
        let mut planned = cache.snapshot.plan_release_with(requests, now(), labels)?;
        let prepared = prepare(&cache, std::mem::take(&mut planned.plan));
        Ok((planned, prepared))
    }

    /// Releases a burst of one node's handles in one plan: one write per
    /// block and one deletion per handle (issued together). Returns the
    /// handles it did not finish, for one-by-one service: those whose
    /// addresses the cache does not show in full, and all of them when a
    /// write fails.
    pub(super) async fn release_together(
        &self,
        jobs: Vec<(String, Reply<Vec<IpAddr>>)>,
    ) -> Vec<(String, Reply<Vec<IpAddr>>, Vec<IpAddr>)> {
        let untouched = |jobs: Vec<(String, Reply<Vec<IpAddr>>)>| {
            jobs.into_iter()
                .map(|(h, r)| (h, r, Vec::new()))
                .collect::<Vec<_>>()
        };
        let (known, unknown): (Vec<_>, Vec<_>) = {
            let cache = self.cache();
            jobs.into_iter()
                .partition(|(handle, _)| cache.knows_all_of(handle))
        };
        if known.len() < 2 {
            return untouched(known.into_iter().chain(unknown).collect());
        }
        let blocks: Vec<_> = {
            let cache = self.cache();
            known
                .iter()
                .filter_map(|(handle, _)| cache.handle(handle))
                .flat_map(|h| h.blocks().iter().map(|(cidr, _)| *cidr))
                .collect()
        };
        let labels = self.labels_for_release(blocks).await;
        let (owned, planned) = {
            let cache = self.cache();
            let owned: Vec<Vec<IpAddr>> = known
                .iter()
                .map(|(handle, _)| {
                    addresses_of_handle(&cache.snapshot, handle)
                        .iter()
                        .map(IpNet::addr)
                        .collect()
                })
                .collect();
            let requests: Vec<ReleaseRequest> = known
                .iter()
                .zip(&owned)
                .flat_map(|((handle, _), addresses)| {
                    addresses.iter().map(|a| ReleaseRequest {
                        address: *a,
                        handle: Some(HandleId::new(handle.clone())),
                        sequence_number: None,
                    })
                })
                .collect();
            let planned = cache
                .snapshot
                .plan_release_with(&requests, now(), &labels)
                .map(|mut planned| {
                    let prepared = prepare(&cache, std::mem::take(&mut planned.plan));
                    (planned, prepared)
                });
            (owned, planned)
        };
        let Ok((planned, prepared)) = planned else {
            return untouched(known.into_iter().chain(unknown).collect());
        };
        let Ok(BlocksWritten {
            written,
            failure,
            handles,
            mut expected,
        }) = self.write_release_blocks(prepared).await
        else {
            return untouched(known.into_iter().chain(unknown).collect());
        };
        // Whatever was written is released: the handles must follow.
        let handles_done = self.write_handle_changes(handles, &mut expected).await;
        let finished = failure.is_none() && matches!(handles_done, Ok(None));
        let mut unfinished = untouched(unknown);
        for ((handle, reply), addresses) in known.into_iter().zip(owned) {
            let mine: Vec<IpAddr> = addresses
                .into_iter()
                .filter(|a| {
                    planned.released.contains(a) && written.iter().any(|b| b.net().contains(a))
                })
                .collect();
            // The one-by-one path re-reads and finishes what is left: a
            // failed write, or a handle holding more than this engine knew.
            if !finished || self.cache().handle(&handle).is_some() {
                unfinished.push((handle, reply, mine));
            } else {
                let _ = reply.send(Ok(mine));
            }
        }
        unfinished
    }

    /// Releases every address of a handle and deletes the handle (Calico's
    /// ReleaseByHandle). An unknown handle is not an error: nothing is
    /// released.
    ///
    /// A handle this engine knows, held in blocks of one node, is released
    /// in that node's lane: concurrent releases (and assignments) of one
    /// node share block writes instead of conflicting on them.
    pub async fn release_by_handle(&self, handle_id: &str) -> Result<Vec<IpAddr>, IpamError> {
        let handle_id = ipam_core::block::sanitize_handle(handle_id);
        let node = {
            let cache = self.cache();
            let owners: Option<std::collections::BTreeSet<String>> =
                cache.handle(handle_id).and_then(|h| {
                    h.blocks()
                        .iter()
                        .map(|(cidr, _)| match cache.snapshot.block(cidr)?.owner()? {
                            BlockOwner::Host(node) => Some(node.clone()),
                            _ => None,
                        })
                        .collect()
                });
            owners
                .filter(|o| o.len() == 1)
                .and_then(|o| o.into_iter().next())
        };
        match node {
            Some(node) => {
                self.through_lane(&node, |reply| Job::Release(handle_id.to_string(), reply))
                    .await
            }
            None => self.release_by_handle_now(handle_id).await,
        }
    }

    pub(super) async fn release_by_handle_now(
        &self,
        handle_id: &str,
    ) -> Result<Vec<IpAddr>, IpamError> {
        self.ensure_fresh().await?;
        // The state: what was released so far.
        let (released, result) = self
            .retrying_with(
                "release by handle",
                Vec::new(),
                move |attempt, released| async move {
                    let mut released = released;
                    let outcome = async {
                        // A handle this engine holds with every block it names needs no
                        // read: the block writes and the handle's deletion name the
                        // cached revisions, so anything stale fails and is read then.
                        // Only "unknown handle" must come from a fresh read.
                        let cached = attempt == 0 && self.cache().knows_all_of(handle_id);
                        if !cached && self.read_handle_and_blocks(handle_id).await?.is_none() {
                            return Ok(Attempt::Done(()));
                        }
                        let blocks: Vec<_> = self
                            .cache()
                            .handle(handle_id)
                            .map(|h| h.blocks().iter().map(|(cidr, _)| *cidr).collect())
                            .unwrap_or_default();
                        let labels = self.labels_for_release(blocks).await;
                        let (planned, prepared) = {
                            let cache = self.cache();
                            let mut planned = match cache.snapshot.plan_release_by_handle_with(
                                handle_id,
                                now(),
                                &labels,
                            ) {
                                Ok(planned) => planned,
                                // Seen a moment ago, gone from the cache now: a
                                // concurrent release's late cache update, or the
                                // handle deleted meanwhile. Only the store can
                                // say which, so the next attempt reads it; found
                                // gone there, there is nothing left to release.
                                Err(ipam_core::Error::HandleNotFound { .. }) => {
                                    let key = Key::Handle(handle_id.to_string());
                                    return Ok(Attempt::Lost(StoreError::NotFound { key }));
                                }
                                Err(refused) => return Err(refused.into()),
                            };
                            let prepared = prepare(&cache, std::mem::take(&mut planned.plan));
                            (planned, prepared)
                        };
                        // The handle goes once every block is written; if it
                        // changed meanwhile (a concurrent assignment to it),
                        // the release starts again.
                        let BlocksFirst { written, failure } =
                            self.write_blocks_first(prepared).await?;
                        released.extend(
                            planned
                                .released
                                .iter()
                                .filter(|a| written.iter().any(|b| b.net().contains(*a))),
                        );
                        let Some(cause) = failure else {
                            return Ok(Attempt::Done(()));
                        };
                        Ok(Attempt::Failed(cause))
                    }
                    .await;
                    (released, outcome)
                },
            )
            .await;
        result.map(|()| released)
    }
}
