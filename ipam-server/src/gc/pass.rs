//! One pass: judge a snapshot of IPAM against the watched cluster, confirm
//! with the API server what a release would rest on, judge again on the
//! answers, release.

use std::time::UNIX_EPOCH;

use ipam_core::Now;
use tokio::sync::watch;

use super::confirm::confirm;
use super::release::{deallocate_cooled, release};
use super::{Collector, GcError, PassReport};

impl Collector {
    /// One pass, releasing only while `leading` says this replica holds
    /// the Lease (read before every release). Waits for the watches' first
    /// listing of pods and nodes.
    pub async fn pass(&mut self, leading: &watch::Receiver<bool>) -> Result<PassReport, GcError> {
        self.watched.ready().await;
        let snapshot = self.engine.snapshot_of_blocks().await?;
        let mut cluster = self.watched.cluster();
        let now = self.now();
        let grace = self.options.grace;
        let first = self.tracker.scan(&snapshot, &cluster, grace, now);
        let confirmed = if first.releasable().next().is_some() || !first.nodes_to_release.is_empty()
        {
            confirm(&self.client, &first, &mut cluster).await?;
            self.tracker.scan(&snapshot, &cluster, grace, now)
        } else {
            first
        };
        // The cooldown backstop goes first, as in Calico's syncIPAM (after
        // its leak collection, before releaseUnusedBlocks and
        // releaseNodes): nodes and blocks then go with cooled addresses
        // gone.
        let blocks_cooled = deallocate_cooled(&self.engine, leading).await;
        let report = release(&self.engine, &self.metrics, leading, &snapshot, confirmed).await;
        Ok(PassReport {
            blocks_cooled,
            ..report
        })
    }

    fn now(&self) -> Now {
        Now {
            unix_nanos: self
                .clock
                .now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use ipam_core::{AutoAssignRequest, Pool, PoolSpec};
    use ipam_store::kubernetes::KubernetesStore;
    use ipam_store::{Datastore, Ipam};
    use testkit::apiserver::ApiServer;
    use tokio::sync::watch;

    use crate::clock::ManualClock;
    use crate::gc::{Collector, GcOptions, Watched};
    use crate::lease::LeaseOptions;

    #[tokio::test]
    async fn a_pass_releases_nothing_once_the_lease_is_lost() {
        let api = ApiServer::start().await;
        let store = KubernetesStore::connect(Some(api.kubeconfig()))
            .await
            .unwrap();
        let client = store.client().clone();
        let engine: Arc<Ipam<dyn Datastore>> = Arc::new(Ipam::new(Arc::new(store)));
        let spec = PoolSpec::new("10.0.0.0/24".parse().unwrap());
        engine
            .create_pool(Pool::new("pool", spec).unwrap())
            .await
            .unwrap();
        // A pod's address on a node that is gone: a confirmed leak at once.
        let mut request = AutoAssignRequest::new(
            ipam_core::HandleId::new("k8s-pod-network.p"),
            ipam_core::NodeName::new("gone"),
            1,
            0,
        );
        request.attributes = [("namespace", "default"), ("pod", "p"), ("node", "gone")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let address = engine.auto_assign(&request).await.unwrap().ipv4.addresses[0].addr();
        let options = GcOptions {
            grace: Duration::from_secs(3600),
            interval: Duration::from_secs(1),
            lease: LeaseOptions {
                namespace: "default".into(),
                name: "gc".into(),
                identity: "me".into(),
                duration: Duration::from_secs(1),
                renew_every: Duration::from_millis(100),
            },
        };
        let watched = Watched::start(&client);
        let mut collector = Collector::new(
            client,
            engine.clone(),
            options,
            Arc::default(),
            ManualClock::new(),
            watched,
        );
        let (leading_tx, leading) = watch::channel(false);
        let report = collector.pass(&leading).await.unwrap();
        assert!(report.released.is_empty() && report.nodes_released.is_empty());
        assert_eq!(report.candidates, 1, "judged, not released");
        assert!(engine.attributes_of(address).await.unwrap().is_some());
        leading_tx.send_replace(true);
        let report = collector.pass(&leading).await.unwrap();
        assert_eq!(report.released, [address]);
        assert_eq!(report.nodes_released, ["gone"]);
    }
}
