//! Fills a pool across 256 nodes and reports the resident memory the filled
//! snapshot takes (Linux). Run with
//! `cargo run --release -p ipam-core --example fill_memory -- 10.0.0.0/12`.

use std::collections::BTreeMap;

use ipam_core::{AutoAssignRequest, IpamConfig, Now, Pool, PoolSpec, Snapshot};
use ipam_core::{HandleId, NodeName};

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let cidr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "10.0.0.0/12".to_string());
    let spec = PoolSpec {
        block_size: Some(26),
        ..PoolSpec::new(cidr.parse().expect("a pool CIDR such as 10.0.0.0/12"))
    };
    let pool = Pool::new("bench", spec).expect("valid pool");
    let addresses = 1u64 << (32 - pool.cidr().prefix_len());
    let before = resident_kib();
    let mut snapshot = Snapshot::new(IpamConfig::default(), vec![pool], &[]);
    let now = Now {
        unix_nanos: 1_700_000_000_000_000_000,
    };
    let start = std::time::Instant::now();
    for i in 0..addresses {
        let node = format!("node-{}", i % 256);
        let mut request = AutoAssignRequest::new(
            HandleId::new(format!("k8s-pod-network.{i:016x}")),
            NodeName::new(node.clone()),
            1,
            0,
        );
        request.attributes = BTreeMap::from([
            ("namespace".to_string(), "default".to_string()),
            ("node".to_string(), node),
            ("pod".to_string(), format!("pod-{i}")),
        ]);
        request.max_blocks_per_host = 1024;
        let plan = snapshot.plan_auto_assign(&request, now).expect("fill");
        snapshot.apply(plan.plan);
    }
    let elapsed = start.elapsed();
    let after = resident_kib();
    eprintln!(
        "{cidr}: {addresses} addresses in {} blocks, {:.2} s ({:.2} µs each), resident memory +{} MiB ({} bytes per address)",
        snapshot.blocks().count(),
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / addresses as f64,
        (after - before) / 1024,
        (after - before) * 1024 / addresses
    );
}
