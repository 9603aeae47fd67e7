//! The collector as the server runs it: the Lease taken and renewed
//! beside the passes (one task, two futures, so that a long pass cannot
//! let the Lease lapse), a pass every interval while leading, the
//! judgements dropped when leadership is lost, and the Lease given up on
//! the way out.

use std::sync::Arc;
use std::time::Duration;

use ipam_core::gc::LeakTracker;
use tokio::sync::watch;

use super::{Collector, GcMetrics};
use crate::clock::Clock;
use crate::lease::Elector;

impl Collector {
    /// Runs until `stop` says true: renews or tries for the Lease, and
    /// collects while leading. Gives the Lease up on the way out; dropping
    /// the future instead stops everything without a word, as a crash
    /// would.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        tokio::select! {
            _ = self.watched.ready() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let (pods, nodes) = self.watched.counts();
        tracing::info!(
            grace = ?self.options.grace,
            interval = ?self.options.interval,
            pods,
            nodes,
            "garbage collector watching pods and nodes"
        );
        let elector = Elector::new(
            self.client.clone(),
            self.options.lease.clone(),
            self.clock.clone(),
        );
        let (leading_tx, leading) = watch::channel(false);
        let lease = keep_lease(
            elector,
            self.options.lease.renew_every,
            leading_tx,
            self.metrics.clone(),
            self.clock.clone(),
            stop.clone(),
        );
        tokio::join!(lease, self.collect_while_leading(leading, stop));
    }

    async fn collect_while_leading(
        &mut self,
        mut leading: watch::Receiver<bool>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut next_pass = self.clock.instant();
        loop {
            if !*leading.borrow_and_update() {
                // A new leader starts every grace period afresh: a
                // judgement made under an old lease is not carried over.
                self.tracker = LeakTracker::new();
                self.metrics.clear_candidates();
            } else if self.clock.instant() >= next_pass {
                next_pass = self.clock.instant() + self.options.interval;
                let outcome = match self.pass(&leading).await {
                    Ok(report) => {
                        if !report.released.is_empty()
                            || !report.nodes_released.is_empty()
                            || !report.blocks_released.is_empty()
                        {
                            tracing::info!(
                                released = report.released.len(),
                                refused = report.refused,
                                nodes = ?report.nodes_released,
                                blocks = report.blocks_released.len(),
                                candidates = report.candidates,
                                "garbage collection pass"
                            );
                        }
                        "done"
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "garbage collection pass failed: {e}");
                        "failed"
                    }
                };
                self.metrics.count_pass(outcome);
            }
            let wait = next_pass
                .saturating_duration_since(self.clock.instant())
                .max(Duration::from_millis(10));
            tokio::select! {
                _ = self.clock.sleep(wait) => {}
                _ = leading.changed() => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
    }
}

// Takes or renews the Lease every `renew_every` until `stop`, telling the
// collector whether it leads; gives the Lease up on the way out.
async fn keep_lease(
    mut elector: Elector,
    renew_every: Duration,
    leading: watch::Sender<bool>,
    metrics: Arc<GcMetrics>,
    clock: Arc<dyn Clock>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let was_leading = elector.is_leading();
        match elector.try_acquire_or_renew().await {
            Ok(true) if !was_leading => tracing::info!("leading garbage collection"),
            Ok(false) if was_leading => tracing::warn!("lost the garbage collection lease"),
            Err(e) => tracing::warn!(error = %e, "garbage collection lease: {e}"),
            Ok(_) => {}
        }
        metrics.set_leader(elector.is_leading());
        leading.send_replace(elector.is_leading());
        tokio::select! {
            _ = clock.sleep(renew_every) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    leading.send_replace(false);
    metrics.set_leader(false);
    if let Err(e) = elector.release().await {
        tracing::warn!(error = %e, "giving up the garbage collection lease: {e}");
    }
}
