//! Assignment: automatic (Calico's AutoAssign), all or nothing, and of one
//! chosen address (Calico's AssignIP).

use ipam_core::plan::Assignments;
use ipam_core::{
    AllowedUse, AssignIpRequest, AutoAssignRequest, BlockCidr, HandleId, IpVersion, ReleaseRequest,
};
use ipnet::IpNet;

use super::lane::{Job, Reply};
use super::retrying::Attempt;
use super::writes::{prepare, AssignFailure, Interrupted, Prepared};
use super::{now, AutoAssigned, Ipam, IpamError, Released};
use crate::datastore::Datastore;

/// The assignments of a batch's requests when every one was served in
/// full; `None` when any was refused or is short.
pub(super) fn served_in_full(
    outcomes: Vec<Result<(Assignments, Assignments), ipam_core::Error>>,
) -> Option<Vec<(Assignments, Assignments)>> {
    outcomes
        .into_iter()
        .map(Result::ok)
        .collect::<Option<Vec<_>>>()
        .filter(|all| {
            all.iter()
                .all(|(v4, v6)| v4.shortfall.is_empty() && v6.shortfall.is_empty())
        })
}

pub(super) fn in_blocks(addresses: &[IpNet], blocks: &[BlockCidr]) -> Vec<IpNet> {
    addresses
        .iter()
        .filter(|a| blocks.iter().any(|b| b.net().contains(&a.addr())))
        .copied()
        .collect()
}

impl<S: Datastore + ?Sized> Ipam<S> {
    /// Assigns addresses to a handle on a node (Calico's AutoAssign).
    /// Idempotent: when the handle already holds addresses, those are
    /// returned and nothing new is allocated. Calico 3.32 does that only
    /// for KubeVirt handles (ipam.go, `MaxAllocToHandlePerIPVersion`); a
    /// retried CNI ADD there gets a second address, which leaks until the
    /// pod goes. Running short is not an error; see
    /// [`Assignments::shortfall`].
    ///
    /// Concurrent requests of one node are served together: they share the
    /// node's block writes (one write for a burst that lands in one block),
    /// while requests of different nodes never wait on each other.
    pub async fn auto_assign(
        &self,
        request: &AutoAssignRequest,
    ) -> Result<AutoAssigned, IpamError> {
        self.through_lane(&request.node, |reply| Job::Assign(request.clone(), reply))
            .await
    }

    /// Assigns a burst of one node's fresh requests in one plan: one write
    /// per handle (issued together) and one block write. Returns the
    /// requests it did not serve, for one-by-one service: all of them when
    /// the burst does not fit in one block or any write fails.
    pub(super) async fn assign_together(
        &self,
        batch: Vec<(AutoAssignRequest, Reply<AutoAssigned>)>,
    ) -> Vec<(AutoAssignRequest, Reply<AutoAssigned>)> {
        if self.ensure_fresh().await.is_err() {
            return batch;
        }
        // A handle known to hold addresses is a repeated request.
        let (together, alone): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|(request, _)| self.cache().handle(&request.handle).is_none());
        if together.len() < 2 {
            return together.into_iter().chain(alone).collect();
        }
        let requests: Vec<AutoAssignRequest> = together
            .iter()
            .map(|(request, _)| request.clone())
            .collect();
        let (outcomes, prepared) = {
            let cache = self.cache();
            let planned = cache.snapshot.plan_auto_assign_batch(&requests, now());
            let prepared = prepare(&cache, planned.plan);
            (planned.outcomes, prepared)
        };
        // Every request served in full, and by one block write (claims of
        // new blocks come before it and write no address).
        let served = served_in_full(outcomes);
        let Some(served) = served.filter(|_| prepared.plan.blocks.len() == 1) else {
            return together.into_iter().chain(alone).collect();
        };
        if self.write_plan(prepared, true).await.is_err() {
            // Undone; each request gets the full single-request treatment.
            return together.into_iter().chain(alone).collect();
        }
        for ((_, reply), (ipv4, ipv6)) in together.into_iter().zip(served) {
            let _ = reply.send(Ok(AutoAssigned {
                ipv4,
                ipv6,
                existing: false,
            }));
        }
        alone
    }

    pub(super) async fn auto_assign_one(
        &self,
        request: &AutoAssignRequest,
    ) -> Result<AutoAssigned, IpamError> {
        self.ensure_fresh().await?;
        let handle_id = request.handle.as_str();
        let cached_holds = self
            .cache()
            .handle(handle_id)
            .is_some_and(|h| !h.is_empty());
        if cached_holds {
            if let Some(existing) = self.existing_assignment(request).await? {
                return Ok(existing);
            }
        }
        let got = AutoAssigned {
            ipv4: Assignments {
                requested: request.ipv4,
                ..Assignments::default()
            },
            ipv6: Assignments {
                requested: request.ipv6,
                ..Assignments::default()
            },
            existing: false,
        };
        // Carried from attempt to attempt: what the request was given so
        // far, what is left to ask, and whether an unwritten answer was
        // checked on fresh data.
        let state = (got, request.clone(), false);
        let ((got, _, _), result) = self
            .retrying_with("auto-assign", state, move |_, state| async move {
                let (mut got, mut remaining, mut verified) = state;
                let outcome = async {
                    let mut planned = self.plan_auto_assign(&remaining);
                    // A refusal or a shortfall writes nothing, so no
                    // compare-and-swap would catch a stale cache (a block
                    // freed or a pool added by another process): it is
                    // given only after planning again on everything read
                    // just now.
                    let unwritten = match &planned {
                        Ok((_, v4, v6)) => !v4.shortfall.is_empty() || !v6.shortfall.is_empty(),
                        Err(_) => true,
                    };
                    if unwritten && !verified {
                        verified = true;
                        self.refresh().await?;
                        planned = self.plan_auto_assign(&remaining);
                    }
                    let (prepared, planned_v4, planned_v6) = planned?;
                    let fresh = got.ipv4.addresses.is_empty() && got.ipv6.addresses.is_empty();
                    match self.write_plan(prepared, fresh).await {
                        Ok(()) => {
                            got.ipv4.addresses.extend(planned_v4.addresses);
                            got.ipv6.addresses.extend(planned_v6.addresses);
                            got.ipv4.shortfall = planned_v4.shortfall;
                            got.ipv6.shortfall = planned_v6.shortfall;
                            Ok(Attempt::Done(None))
                        }
                        Err(AssignFailure::HandleHeld(cause)) => {
                            match self.existing_assignment(request).await? {
                                Some(existing) => Ok(Attempt::Done(Some(existing))),
                                // The handle exists but holds nothing:
                                // plan again with it.
                                None => Ok(Attempt::Lost(cause)),
                            }
                        }
                        Err(AssignFailure::Interrupted(Interrupted {
                            written_blocks,
                            cause,
                        })) => {
                            let v4 = in_blocks(&planned_v4.addresses, &written_blocks);
                            let v6 = in_blocks(&planned_v6.addresses, &written_blocks);
                            remaining.ipv4 -= v4.len() as u32;
                            remaining.ipv6 -= v6.len() as u32;
                            got.ipv4.addresses.extend(v4);
                            got.ipv6.addresses.extend(v6);
                            Ok(Attempt::Failed(cause))
                        }
                        Err(AssignFailure::Fatal(e)) => Err(e),
                    }
                }
                .await;
                ((got, remaining, verified), outcome)
            })
            .await;
        match result {
            Ok(Some(existing)) => Ok(existing),
            Ok(None) => Ok(got),
            Err(e) => {
                // Whatever went wrong, what this request was already given
                // goes back (nothing, unless a plan was interrupted part
                // way).
                self.give_back(handle_id, &got).await;
                Err(e)
            }
        }
    }

    pub(super) fn plan_auto_assign(
        &self,
        request: &AutoAssignRequest,
    ) -> Result<(Prepared, Assignments, Assignments), ipam_core::Error> {
        let cache = self.cache();
        let planned = cache.snapshot.plan_auto_assign(request, now())?;
        Ok((prepare(&cache, planned.plan), planned.ipv4, planned.ipv6))
    }

    /// What a handle already holds, read fresh, as an auto-assign answer;
    /// `None` when it holds nothing.
    pub(super) async fn existing_assignment(
        &self,
        request: &AutoAssignRequest,
    ) -> Result<Option<AutoAssigned>, IpamError> {
        let addresses = self.addresses_of_handle(&request.handle).await?;
        if addresses.is_empty() {
            return Ok(None);
        }
        let (ipv4, ipv6): (Vec<IpNet>, Vec<IpNet>) =
            addresses.into_iter().partition(|a| a.addr().is_ipv4());
        Ok(Some(AutoAssigned {
            ipv4: Assignments {
                requested: request.ipv4,
                addresses: ipv4,
                shortfall: Vec::new(),
            },
            ipv6: Assignments {
                requested: request.ipv6,
                addresses: ipv6,
                shortfall: Vec::new(),
            },
            existing: true,
        }))
    }

    /// Releases what a failed request had already been given.
    pub(super) async fn give_back(&self, handle_id: &str, got: &AutoAssigned) {
        if let Err(e) = self.release_assigned(handle_id, got).await {
            tracing::warn!(handle = handle_id, error = %e, "could not give back a failed request's addresses");
        }
    }

    /// Auto-assigns all or nothing, the contract of the HTTP API and the
    /// CNI plugin: when either family gets fewer addresses than asked, what
    /// was taken is given back and the answer is [`IpamError::Exhausted`].
    /// A retried request that finds the handle's addresses is never short.
    pub async fn auto_assign_all(
        &self,
        request: &AutoAssignRequest,
    ) -> Result<AutoAssigned, IpamError> {
        let got = self.auto_assign(request).await?;
        let short = |a: &Assignments| (a.addresses.len() as u32) < a.requested;
        if got.existing || !(short(&got.ipv4) || short(&got.ipv6)) {
            return Ok(got);
        }
        self.release_assigned(&request.handle, &got).await?;
        let reasons: Vec<String> = [
            got.ipv4.partial_fulfillment(IpVersion::V4),
            got.ipv6.partial_fulfillment(IpVersion::V6),
        ]
        .into_iter()
        .flatten()
        .collect();
        Err(IpamError::Exhausted {
            ipv4_asked: got.ipv4.requested,
            ipv4_found: got.ipv4.addresses.len() as u32,
            ipv6_asked: got.ipv6.requested,
            ipv6_found: got.ipv6.addresses.len() as u32,
            reasons: reasons.join("; "),
        })
    }

    /// Releases the addresses an auto-assign gave, provided `handle_id`
    /// still holds them: for a caller that wants all or nothing and got
    /// less than it asked for.
    pub async fn release_assigned(
        &self,
        handle_id: &str,
        got: &AutoAssigned,
    ) -> Result<Released, IpamError> {
        let requests: Vec<ReleaseRequest> = got
            .ipv4
            .addresses
            .iter()
            .chain(&got.ipv6.addresses)
            .map(|a| ReleaseRequest {
                address: a.addr(),
                handle: Some(HandleId::new(handle_id)),
                sequence_number: None,
            })
            .collect();
        if requests.is_empty() {
            return Ok(Released::default());
        }
        self.release_unlocked(&requests).await
    }

    /// Assigns one chosen address for a workload (Calico's AssignIP); see
    /// [`Ipam::assign_ip_for`].
    pub async fn assign_ip(&self, request: &AssignIpRequest) -> Result<(), IpamError> {
        self.assign_ip_for(request, AllowedUse::Workload).await
    }

    /// Assigns one chosen address for `intended_use` (Calico's AssignIP
    /// with IntendedUse). Assigning an address the same handle already
    /// holds succeeds without a write.
    pub async fn assign_ip_for(
        &self,
        request: &AssignIpRequest,
        intended_use: AllowedUse,
    ) -> Result<(), IpamError> {
        let _node = self.lock_node(&request.node).await;
        self.ensure_fresh().await?;
        // The state: whether a refusal was checked on fresh data.
        let (_, result) = self
            .retrying_with("assign address", false, move |_, verified| async move {
                let mut verified = verified;
                let outcome = async {
                    let plan_it = || {
                        let cache = self.cache();
                        cache
                            .snapshot
                            .plan_assign_ip_for(request, intended_use, now())
                            .map(|plan| prepare(&cache, plan))
                    };
                    let mut planned = plan_it();
                    // A refusal writes nothing: give it only from fresh data.
                    if planned.is_err() && !verified {
                        verified = true;
                        self.refresh().await?;
                        self.load_blocks_of(std::iter::once(request.address), true)
                            .await?;
                        planned = plan_it();
                    }
                    let prepared = match planned {
                        Ok(prepared) => prepared,
                        Err(ipam_core::Error::AddressInUse { handle, .. })
                            if handle == request.handle.as_str() =>
                        {
                            return Ok(Attempt::Done(()))
                        }
                        Err(refused) => return Err(refused.into()),
                    };
                    // Not a fresh handle: assigning to one that holds addresses
                    // is what this operation does.
                    match self.write_plan(prepared, false).await {
                        Ok(()) => Ok(Attempt::Done(())),
                        Err(AssignFailure::Interrupted(Interrupted { cause, .. })) => {
                            Ok(Attempt::Failed(cause))
                        }
                        // Someone created the handle meanwhile: plan again on it.
                        Err(AssignFailure::HandleHeld(cause)) => Ok(Attempt::Lost(cause)),
                        Err(AssignFailure::Fatal(e)) => Err(e),
                    }
                }
                .await;
                (verified, outcome)
            })
            .await;
        result
    }
}
