//! A node's releases by handle and fresh assignments, queued together in
//! its lane, planned as one and written as one atomic batch: the block
//! both touch is written once, and the round costs one durable commit
//! where releasing and then assigning costs two, each waited for before
//! the next is planned.
//!
//! Only on a store with atomic batches: an ordered writer needs a
//! release's order (blocks, then handles) and an assignment's (handles,
//! then blocks), which one plan cannot have both of. And only in the
//! steady state: every released handle known to the cache with all its
//! blocks, every assignment for a handle the cache does not know, each
//! served in full, and no block claimed or reclaimed on the way (claims
//! are written before a batch, on paths that know how). Anything else,
//! and a batch refused or failed, leaves every job to the separate paths,
//! which read again and are idempotent (a release that finds its handle
//! gone releases nothing; an assignment that finds its handle answers
//! what it holds).

use std::net::IpAddr;

use ipam_core::AutoAssignRequest;

use super::assign::served_in_full;
use super::batch::Batched;
use super::lane::Reply;
use super::writes::prepare;
use super::{now, AutoAssigned, Ipam};
use crate::datastore::Datastore;

/// Releases by handle waiting in a lane, with their replies.
pub(super) type Releases = Vec<(String, Reply<Vec<IpAddr>>)>;

/// Fresh auto-assignments waiting in a lane, with their replies.
pub(super) type Assigns = Vec<(AutoAssignRequest, Reply<AutoAssigned>)>;

impl<S: Datastore + ?Sized> Ipam<S> {
    /// Serves `releases` and `assigns` in one plan and one batch when it
    /// can (see the module documentation); returns the jobs it did not
    /// serve: none, or all of them.
    pub(super) async fn release_and_assign_together(
        &self,
        releases: Releases,
        assigns: Assigns,
    ) -> (Releases, Assigns) {
        let Some(atomic) = self.batches() else {
            return (releases, assigns);
        };
        if self.ensure_fresh().await.is_err() {
            return (releases, assigns);
        }
        let blocks = {
            let cache = self.cache();
            let steady = releases
                .iter()
                .all(|(handle, _)| cache.knows_all_of(handle))
                && assigns
                    .iter()
                    .all(|(request, _)| cache.handle(&request.handle).is_none());
            if !steady {
                drop(cache);
                return (releases, assigns);
            }
            let blocks: Vec<_> = releases
                .iter()
                .filter_map(|(handle, _)| cache.handle(handle))
                .flat_map(|h| h.blocks().iter().map(|(cidr, _)| *cidr))
                .collect();
            blocks
        };
        let labels = self.labels_for_release(blocks).await;
        let handles: Vec<&str> = releases.iter().map(|(handle, _)| handle.as_str()).collect();
        let requests: Vec<AutoAssignRequest> =
            assigns.iter().map(|(request, _)| request.clone()).collect();
        let planned = {
            let cache = self.cache();
            cache
                .snapshot
                .plan_release_and_assign(&handles, &requests, now(), &labels)
                .map(|planned| {
                    planned.map(|mut planned| {
                        let prepared = prepare(&cache, std::mem::take(&mut planned.plan));
                        (planned, prepared)
                    })
                })
        };
        let Ok(Some((planned, mut prepared))) = planned else {
            return (releases, assigns);
        };
        let served = served_in_full(planned.outcomes);
        let plan = &prepared.plan;
        let Some(served) = served.filter(|_| plan.claims.is_empty() && plan.releases.is_empty())
        else {
            return (releases, assigns);
        };
        let batched = self
            .write_released_together(atomic, &plan.blocks, &plan.handles, &mut prepared.expected)
            .await;
        if !matches!(batched, Batched::Written) {
            return (releases, assigns);
        }
        for ((_, reply), released) in releases.into_iter().zip(planned.released) {
            let _ = reply.send(Ok(released));
        }
        for ((_, reply), (ipv4, ipv6)) in assigns.into_iter().zip(served) {
            let _ = reply.send(Ok(AutoAssigned {
                ipv4,
                ipv6,
                existing: false,
            }));
        }
        (Vec::new(), Vec::new())
    }
}
