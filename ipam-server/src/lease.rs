//! Leader election on a coordination.k8s.io/v1 Lease, so that of several
//! ipam-server replicas only one collects garbage.
//!
//! The algorithm is client-go's (tools/leaderelection, resourcelock
//! LeaseLock): read the Lease; take it when nobody holds it, when its
//! holder let it go, or when its record has not changed for a whole lease
//! duration by *this* replica's clock (no comparison of clocks across
//! machines); write it back with the resourceVersion read, so that of two
//! replicas taking it at once the API server lets one win. The holder renews
//! it every [`LeaseOptions::renew_every`], and gives it up on shutdown.
//!
//! kube-lease-manager (which matches our kube version) was not used: it
//! takes the lease with server-side apply and relies on field-manager
//! conflicts, a part of the API our test API server does not emulate;
//! get/create/update with a resourceVersion is all this needs.
//!
//! Time comes from the injected [`Clock`]: the monotonic reading for
//! expiry, the wall clock for the renewTime written.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

use crate::clock::Clock;

/// Which Lease, and who is asking.
#[derive(Debug, Clone)]
pub struct LeaseOptions {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This replica (its pod name).
    pub identity: String,
    /// How long a holder that stops renewing keeps the lease.
    pub duration: Duration,
    /// How often the holder renews, and the others try.
    pub renew_every: Duration,
}

/// One replica's view of the Lease.
pub struct Elector {
    api: Api<Lease>,
    options: LeaseOptions,
    clock: Arc<dyn Clock>,
    // The holder and renew time last read, and when this replica first
    // saw that record: client-go's observedRecord and observedTime.
    observed: Option<(Option<String>, Option<MicroTime>, Instant)>,
    leading: bool,
}

impl Elector {
    /// An elector that has not tried yet.
    pub fn new(client: kube::Client, options: LeaseOptions, clock: Arc<dyn Clock>) -> Elector {
        Elector {
            api: Api::namespaced(client, &options.namespace),
            options,
            clock,
            observed: None,
            leading: false,
        }
    }

    /// Whether the last attempt took or renewed the lease.
    pub fn is_leading(&self) -> bool {
        self.leading
    }

    /// Takes or renews the lease if this replica may; returns whether it
    /// leads now. An error (the API unreachable) means not leading: a
    /// leader that cannot renew must assume another has taken over.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let result = self.attempt().await;
        self.leading = matches!(result, Ok(true));
        result
    }

    async fn attempt(&mut self) -> Result<bool, kube::Error> {
        let now = self.micro_time();
        let seconds = i32::try_from(self.options.duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let Some(lease) = self.api.get_opt(&self.options.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.options.name.clone()),
                    namespace: Some(self.options.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.options.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                // Another replica created it first.
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let record = (holder.clone(), spec.renew_time.clone());
        let changed = self
            .observed
            .as_ref()
            .is_none_or(|(h, r, _)| (h, r) != (&record.0, &record.1));
        if changed {
            self.observed = Some((record.0, record.1, self.clock.instant()));
        }
        let held_for = Duration::from_secs(
            spec.lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .unwrap_or(0),
        );
        let observed_at = self.observed.as_ref().map(|(_, _, at)| *at);
        let mine = holder.as_deref() == Some(self.options.identity.as_str());
        let expired = observed_at.is_none_or(|at| self.since(at) > held_for);
        if holder.is_some() && !mine && !expired {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        let taken = Lease {
            metadata: lease.metadata.clone(),
            spec: Some(LeaseSpec {
                holder_identity: Some(self.options.identity.clone()),
                lease_duration_seconds: Some(seconds),
                acquire_time: if mine {
                    spec.acquire_time.clone()
                } else {
                    Some(now.clone())
                },
                renew_time: Some(now),
                lease_transitions: Some(if mine { transitions } else { transitions + 1 }),
                ..spec
            }),
        };
        match self
            .api
            .replace(&self.options.name, &PostParams::default(), &taken)
            .await
        {
            Ok(written) => {
                let spec = written.spec.unwrap_or_default();
                self.observed = Some((spec.holder_identity, spec.renew_time, self.clock.instant()));
                Ok(true)
            }
            // Someone wrote it since it was read: they won this round.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up if this replica holds it, so that another can
    /// take it at once rather than after a lease duration (client-go's
    /// ReleaseOnCancel).
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        if !self.leading {
            return Ok(());
        }
        self.leading = false;
        let Some(lease) = self.api.get_opt(&self.options.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.options.identity.as_str()) {
            return Ok(());
        }
        let released = Lease {
            metadata: lease.metadata,
            spec: Some(LeaseSpec {
                holder_identity: None,
                lease_duration_seconds: Some(1),
                renew_time: Some(self.micro_time()),
                ..spec
            }),
        };
        self.api
            .replace(&self.options.name, &PostParams::default(), &released)
            .await
            .map(|_| ())
    }

    /// How long ago `at` was, on this replica's monotonic clock.
    fn since(&self, at: Instant) -> Duration {
        self.clock.instant().saturating_duration_since(at)
    }

    /// The clock's wall time as a Lease records it.
    fn micro_time(&self) -> MicroTime {
        // A clock before 1970 or beyond year 9999 is broken; the epoch
        // then still makes a valid (long expired) record.
        MicroTime(Timestamp::try_from(self.clock.now()).unwrap_or(Timestamp::UNIX_EPOCH))
    }
}
