//! One garbage collection pass (`LeakTracker::scan`) over a whole cluster's
//! IPAM: every node running 110 pods (the kubelet's default maximum), one
//! pod in twenty gone. The pass runs every `--gc-interval` (30 s by
//! default) on the leading replica, so its cost bounds how large a cluster
//! one replica can keep clean. Run with `cargo bench -p ipam-core --bench gc`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ipam_core::check::PodRef;
use ipam_core::gc::{Cluster, LeakTracker, PodState};
use ipam_core::{AutoAssignRequest, IpamConfig, Now, Pool, PoolSpec, Snapshot};
use ipam_core::{HandleId, NodeName};

const PODS_PER_NODE: usize = 110;

const NOW: Now = Now {
    unix_nanos: 1_700_000_000_000_000_000,
};

/// IPAM and the cluster for `nodes` nodes, one pod in twenty deleted.
fn cluster(nodes: usize) -> (Snapshot, Cluster) {
    let spec = PoolSpec {
        block_size: Some(26),
        ..PoolSpec::new("10.0.0.0/8".parse().expect("pool CIDR"))
    };
    let mut s = Snapshot::new(
        IpamConfig::default(),
        vec![Pool::new("bench", spec).expect("pool")],
        &[],
    );
    let mut cluster = Cluster::default();
    for n in 0..nodes {
        let node = format!("node-{n}");
        cluster.nodes.insert(node.clone());
        for p in 0..PODS_PER_NODE {
            let pod = format!("pod-{n}-{p}");
            let mut request = AutoAssignRequest::new(
                HandleId::new(format!("k8s-pod-network.{pod}")),
                NodeName::new(&node),
                1,
                0,
            );
            request.attributes = [
                ("namespace", "default"),
                ("node", node.as_str()),
                ("pod", pod.as_str()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>();
            let plan = s.plan_auto_assign(&request, NOW).expect("assign");
            let address = plan.ipv4.addresses[0].addr();
            s.apply(plan.plan);
            if p % 20 != 0 {
                cluster.pods.insert(
                    PodRef {
                        namespace: "default".to_string(),
                        name: pod,
                    },
                    PodState {
                        node: Some(node.clone()),
                        addresses: [address].into(),
                        ..PodState::default()
                    },
                );
            }
        }
    }
    (s, cluster)
}

fn scan(c: &mut Criterion) {
    let mut group = c.benchmark_group("gc_scan");
    group.sample_size(10);
    for nodes in [100, 1000] {
        let (s, cluster) = cluster(nodes);
        let mut tracker = LeakTracker::new();
        // Steady state: the candidates are already tracked.
        tracker.scan(&s, &cluster, Duration::from_secs(900), NOW);
        group.throughput(Throughput::Elements((nodes * PODS_PER_NODE) as u64));
        group.bench_function(format!("{nodes}_nodes"), |b| {
            b.iter(|| {
                let collection =
                    tracker.scan(black_box(&s), &cluster, Duration::from_secs(900), NOW);
                assert_eq!(collection.leaks.len(), nodes * PODS_PER_NODE.div_ceil(20));
                collection
            })
        });
    }
    group.finish();
}

criterion_group!(benches, scan);
criterion_main!(benches);
