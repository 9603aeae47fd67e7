//! The controller as the server runs it: Services watched into a store
//! (each change wakes the loop), the Lease taken and renewed, a pass on
//! every change and every interval while leading, and the Lease given up
//! on the way out.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use tokio::sync::{watch, Notify};

use super::Controller;
use crate::lease::Elector;

/// A store of every Service, and the task that keeps it, waking `changed`
/// on every event.
pub(super) fn watch_services(
    client: &kube::Client,
    changed: Arc<Notify>,
) -> (Store<Service>, impl Future<Output = ()> + Send + 'static) {
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        )
        .modify(|s: &mut Service| s.metadata.managed_fields = None)
        .default_backoff(),
    );
    let task = async move {
        futures_util::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => changed.notify_one(),
                Err(e) => tracing::warn!(error = %e, "watching services: {e}"),
            }
        }
    };
    (store, task)
}

impl Controller {
    /// Runs until `stop` says true: renews or tries for the Lease, and
    /// serves Services while leading. Gives the Lease up on the way out;
    /// dropping the future instead stops without a word, as a crash would.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        tokio::select! {
            _ = self.services.wait_until_ready() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        tracing::info!(
            assign_ips = ?self.options.assign_ips,
            interval = ?self.options.interval,
            services = self.services.state().len(),
            "load-balancer controller watching services"
        );
        let mut elector = Elector::new(
            self.client.clone(),
            self.options.lease.clone(),
            self.clock.clone(),
        );
        let renew_every = self.options.lease.renew_every;
        let mut next_renew = self.clock.instant();
        let mut next_pass = self.clock.instant();
        let mut dirty = true;
        loop {
            if self.clock.instant() >= next_renew {
                let was_leading = elector.is_leading();
                match elector.try_acquire_or_renew().await {
                    Ok(true) if !was_leading => {
                        tracing::info!("leading the load-balancer controller");
                        // A new leader looks at everything at once.
                        dirty = true;
                    }
                    Ok(false) if was_leading => {
                        tracing::warn!("lost the load-balancer controller lease");
                    }
                    Err(e) => tracing::warn!(error = %e, "load-balancer controller lease: {e}"),
                    Ok(_) => {}
                }
                next_renew = self.clock.instant() + renew_every;
            }
            if elector.is_leading() && (dirty || self.clock.instant() >= next_pass) {
                dirty = false;
                next_pass = self.clock.instant() + self.options.interval;
                match self.pass().await {
                    Ok(report) if report != super::PassReport::default() => {
                        tracing::info!(
                            assigned = ?report.assigned,
                            released = ?report.released,
                            statuses = report.statuses,
                            failed = report.failed,
                            "load-balancer pass"
                        );
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "load-balancer pass failed: {e}"),
                }
            }
            let now = self.clock.instant();
            let wake = if elector.is_leading() {
                next_renew.min(next_pass)
            } else {
                next_renew
            };
            let wait = wake
                .saturating_duration_since(now)
                .max(Duration::from_millis(10));
            tokio::select! {
                _ = self.clock.sleep(wait) => {}
                _ = self.changed.notified() => dirty = true,
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        if let Err(e) = elector.release().await {
            tracing::warn!(error = %e, "giving up the load-balancer controller lease: {e}");
        }
    }
}
