//! Planning and applying allocations on an in-memory snapshot: one address
//! assigned and released in a /26 block, and whole pools filled across 256
//! nodes (/16 and /12), whose per-assignment cost must not grow with pool
//! size. Run with `cargo bench -p ipam-core`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ipam_core::{AutoAssignRequest, IpamConfig, Now, Pool, PoolSpec, Snapshot};
use ipam_core::{HandleId, NodeName};

const NOW: Now = Now {
    unix_nanos: 1_700_000_000_000_000_000,
};

fn snapshot(cidr: &str) -> Snapshot {
    let spec = PoolSpec {
        block_size: Some(26),
        ..PoolSpec::new(cidr.parse().expect("pool CIDR"))
    };
    Snapshot::new(
        IpamConfig::default(),
        vec![Pool::new("bench", spec).expect("pool")],
        &[],
    )
}

fn pod_attributes(node: &str, pod: &str) -> BTreeMap<String, String> {
    [("namespace", "default"), ("node", node), ("pod", pod)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn assign_release_one_in_a_26(c: &mut Criterion) {
    let mut s = snapshot("10.0.0.0/16");
    // Warm: the node already holds its block, as in steady state.
    let first = s
        .plan_auto_assign(
            &AutoAssignRequest::new(HandleId::new("warm"), NodeName::new("node-1"), 1, 0),
            NOW,
        )
        .expect("plan");
    s.apply(first.plan);
    let mut request = AutoAssignRequest::new(
        HandleId::new("k8s-pod-network.0123456789abcdef"),
        NodeName::new("node-1"),
        1,
        0,
    );
    request.attributes = pod_attributes("node-1", "nginx");
    let mut group = c.benchmark_group("assign_release_26");
    group.throughput(Throughput::Elements(1));
    group.bench_function("plan_and_apply", |b| {
        b.iter(|| {
            let assigned = s
                .plan_auto_assign(black_box(&request), NOW)
                .expect("assign");
            s.apply(assigned.plan);
            let released = s
                .plan_release_by_handle(&request.handle, NOW)
                .expect("release");
            s.apply(released.plan);
        })
    });
    // The assignment alone: each release happens outside the timed part.
    group.bench_function("assign_only", |b| {
        b.iter_custom(|iterations| {
            let mut timed = Duration::ZERO;
            for _ in 0..iterations {
                let start = Instant::now();
                let assigned = s
                    .plan_auto_assign(black_box(&request), NOW)
                    .expect("assign");
                s.apply(assigned.plan);
                timed += start.elapsed();
                let released = s
                    .plan_release_by_handle(&request.handle, NOW)
                    .expect("release");
                s.apply(released.plan);
            }
            timed
        })
    });
    group.finish();
}

/// Requests for every address of the pool, round-robin over 256 nodes.
fn fill_requests(addresses: u32) -> Vec<AutoAssignRequest> {
    (0..addresses)
        .map(|i| {
            let node = format!("node-{}", i % 256);
            let mut r = AutoAssignRequest::new(
                HandleId::new(format!("k8s-pod-network.{i:016x}")),
                NodeName::new(node.clone()),
                1,
                0,
            );
            r.attributes = pod_attributes(&node, &format!("pod-{i}"));
            // A /12 needs 64 blocks per node; lift Calico's default cap of 20.
            r.max_blocks_per_host = 1024;
            r
        })
        .collect()
}

fn fill(s: &mut Snapshot, requests: &[AutoAssignRequest]) {
    for request in requests {
        let plan = s.plan_auto_assign(request, NOW).expect("fill");
        assert_eq!(
            plan.ipv4.addresses.len(),
            1,
            "pool must not run out while filling"
        );
        s.apply(plan.plan);
    }
}

fn fill_pools(c: &mut Criterion) {
    let mut group = c.benchmark_group("fill_pool_256_nodes");
    group.sample_size(10);
    for (name, cidr, addresses) in [
        ("16", "10.0.0.0/16", 1u32 << 16),
        ("12", "10.0.0.0/12", 1u32 << 20),
    ] {
        let requests = fill_requests(addresses);
        group.throughput(Throughput::Elements(u64::from(addresses)));
        group.bench_function(name, |b| {
            b.iter_batched(
                || snapshot(cidr),
                |mut s| fill(&mut s, &requests),
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, assign_release_one_in_a_26, fill_pools);
criterion_main!(benches);
