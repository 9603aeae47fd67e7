//! The planner bench's steady state as a plain loop, for tools that count
//! rather than time: a node's warm /26, one address with pod labels
//! assigned (`plan_auto_assign` + `apply`), then released by handle, PAIRS
//! times. Each half is its own non-inlined function, so that
//! `valgrind --tool=callgrind` gives instructions per assignment and per
//! release whatever the machine is doing (criterion's wall clock needs a
//! quiet one). Prints (to stderr, as fill_memory does) the wall-clock time
//! of the assignments alone.
//!
//! Run: `cargo build --release -p ipam-core --example steady_state`, then
//! `valgrind --tool=callgrind target/release/examples/steady_state 20000`
//! and `callgrind_annotate --inclusive=yes` on its output (the `assign`
//! and `release` lines, divided by PAIRS).

use std::hint::black_box;
use std::time::{Duration, Instant};

use ipam_core::{AutoAssignRequest, IpamConfig, Now, Pool, PoolSpec, Snapshot};
use ipam_core::{HandleId, NodeName};

const NOW: Now = Now {
    unix_nanos: 1_700_000_000_000_000_000,
};

#[inline(never)]
fn assign(snapshot: &mut Snapshot, request: &AutoAssignRequest) {
    let assigned = snapshot
        .plan_auto_assign(black_box(request), NOW)
        .expect("assign");
    snapshot.apply(assigned.plan);
}

#[inline(never)]
fn release(snapshot: &mut Snapshot, request: &AutoAssignRequest) {
    let released = snapshot
        .plan_release_by_handle(&request.handle, NOW)
        .expect("release");
    snapshot.apply(released.plan);
}

fn main() {
    let pairs: u32 = std::env::args()
        .nth(1)
        .map_or(100_000, |n| n.parse().expect("PAIRS, a whole number"));
    let spec = PoolSpec {
        block_size: Some(26),
        ..PoolSpec::new("10.0.0.0/16".parse().expect("pool CIDR"))
    };
    let pool = Pool::new("bench", spec).expect("pool");
    let mut snapshot = Snapshot::new(IpamConfig::default(), vec![pool], &[]);
    // Warm: the node already holds its block (claimed here, outside the
    // counted functions).
    let warm = AutoAssignRequest::new(HandleId::new("warm"), NodeName::new("node-1"), 1, 0);
    let claimed = snapshot.plan_auto_assign(&warm, NOW).expect("warm");
    snapshot.apply(claimed.plan);
    let mut request = AutoAssignRequest::new(
        HandleId::new("k8s-pod-network.0123456789abcdef"),
        NodeName::new("node-1"),
        1,
        0,
    );
    request.attributes = [
        ("namespace", "default"),
        ("node", "node-1"),
        ("pod", "nginx"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut assigning = Duration::ZERO;
    for _ in 0..pairs {
        let started = Instant::now();
        assign(&mut snapshot, &request);
        assigning += started.elapsed();
        release(&mut snapshot, &request);
    }
    eprintln!(
        "{pairs} pairs: {:.1} ns per assignment (plan + apply)",
        assigning.as_nanos() as f64 / f64::from(pairs)
    );
}
