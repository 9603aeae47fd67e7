//! The collector's figures, registered with `/metrics` beside the server's:
//! `ipam_allocations_gc_candidates` and `ipam_allocations_gc_reclamations`
//! by pool and node (Calico's names and labels), `ipam_gc_leader` and
//! `ipam_gc_passes` by outcome.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipam_core::gc::Leak;
use ipam_core::Snapshot;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Calico's label for addresses no pool covers.
const NO_POOL: &str = "no_ippool";
/// Calico's label for allocations without a `node` attribute (or with an
/// empty one: [`Leak::node`] is read by [`ipam_core::Holder`]).
const UNKNOWN_NODE: &str = "unknown_node";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolNode {
    ippool: String,
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

/// The collector's figures, registered with `/metrics`.
#[derive(Debug, Default)]
pub struct GcMetrics {
    candidates: Family<PoolNode, Gauge>,
    reclamations: Family<PoolNode, Counter>,
    leader: Gauge,
    passes: Family<Outcome, Counter>,
}

impl GcMetrics {
    /// Adds the figures to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "ipam_allocations_gc_candidates",
            "Allocations the garbage collector judges leaked and still held: candidates in their grace period, and confirmed leaks not released yet",
            self.candidates.clone(),
        );
        registry.register(
            "ipam_allocations_gc_reclamations",
            "Addresses the garbage collector has released",
            self.reclamations.clone(),
        );
        registry.register(
            "ipam_gc_leader",
            "1 when this replica holds the garbage collection Lease",
            self.leader.clone(),
        );
        registry.register(
            "ipam_gc_passes",
            "Garbage collection passes, by outcome (done, failed)",
            self.passes.clone(),
        );
    }

    pub(super) fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Counts a pass: `outcome` is `done` or `failed`.
    pub(super) fn count_pass(&self, outcome: &'static str) {
        self.passes.get_or_create(&Outcome { outcome }).inc();
    }

    /// Forgets the candidates: a new leader judges afresh.
    pub(super) fn clear_candidates(&self) {
        self.candidates.clear();
    }

    /// Sets the candidates to the `leaks` still held after a pass and
    /// counts those `released` as reclaimed; returns how many are held.
    pub(super) fn record_leaks(
        &self,
        snapshot: &Snapshot,
        leaks: &[Leak],
        released: &BTreeSet<IpAddr>,
    ) -> usize {
        self.candidates.clear();
        let mut held = 0;
        for leak in leaks {
            let labels = PoolNode {
                ippool: snapshot
                    .pool_of(leak.address)
                    .map_or(NO_POOL, |p| p.name())
                    .to_string(),
                node: leak
                    .node
                    .clone()
                    .unwrap_or_else(|| UNKNOWN_NODE.to_string()),
            };
            if released.contains(&leak.address) {
                self.reclamations.get_or_create(&labels).inc();
            } else {
                held += 1;
                self.candidates.get_or_create(&labels).inc();
            }
        }
        held
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use ipam_core::gc::{Cluster, LeakTracker};
    use ipam_core::{AutoAssignRequest, IpamConfig, Now, Pool, PoolSpec};

    use super::*;

    #[test]
    fn a_leak_with_an_empty_node_is_counted_as_unknown_node() {
        let pool = Pool::new("pool-a", PoolSpec::new("10.0.0.0/16".parse().unwrap())).unwrap();
        let mut snapshot = Snapshot::new(IpamConfig::default(), vec![pool], &[]);
        let mut request = AutoAssignRequest::new(
            ipam_core::HandleId::new("h"),
            ipam_core::NodeName::new("n1"),
            1,
            0,
        );
        request.attributes = BTreeMap::from([
            ("namespace".to_string(), "ns".to_string()),
            ("pod".to_string(), "gone".to_string()),
            ("node".to_string(), String::new()),
        ]);
        let now = Now {
            unix_nanos: 1_700_000_000_000_000_000,
        };
        let plan = snapshot.plan_auto_assign(&request, now).unwrap();
        snapshot.apply(plan.plan);
        let cluster = Cluster {
            nodes: ["n1".to_string()].into(),
            ..Cluster::default()
        };
        let found = LeakTracker::new().scan(&snapshot, &cluster, Duration::from_secs(900), now);
        assert_eq!(found.leaks.len(), 1);
        assert_eq!(found.leaks[0].node, None);

        let metrics = GcMetrics::default();
        let held = metrics.record_leaks(&snapshot, &found.leaks, &BTreeSet::new());

        assert_eq!(held, 1);
        let count = |node: &str| {
            metrics
                .candidates
                .get_or_create(&PoolNode {
                    ippool: "pool-a".to_string(),
                    node: node.to_string(),
                })
                .get()
        };
        assert_eq!((count(UNKNOWN_NODE), count("")), (1, 0));
    }
}
