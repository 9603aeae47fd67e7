//! A tour of the allocation core: a Calico default pool, three nodes, pods
//! assigned and released, a stale release refused, and the usage table.
//! Run with `cargo run -p ipam-core --example demo`.

use std::collections::BTreeMap;

use ipam_core::usage::usage;
use ipam_core::{
    AutoAssignRequest, Error, IpamConfig, Now, Pool, PoolSpec, ReleaseRequest, Snapshot,
};
use ipam_core::{HandleId, NodeName};

fn main() -> Result<(), Error> {
    let pool = Pool::new(
        "default-ipv4-ippool",
        PoolSpec::new("192.168.0.0/16".parse().expect("CIDR")),
    )?;
    let mut snapshot = Snapshot::new(IpamConfig::default(), vec![pool], &[]);
    let now = Now {
        unix_nanos: 1_700_000_000_000_000_000,
    };
    for (pod, node) in [
        ("nginx", "node-a"),
        ("redis", "node-a"),
        ("api", "node-b"),
        ("web", "node-c"),
    ] {
        let mut request = AutoAssignRequest::new(
            HandleId::new(format!("k8s-pod-network.{pod}")),
            NodeName::new(node),
            1,
            0,
        );
        request.attributes = BTreeMap::from([
            ("namespace".to_string(), "default".to_string()),
            ("node".to_string(), node.to_string()),
            ("pod".to_string(), pod.to_string()),
        ]);
        let planned = snapshot.plan_auto_assign(&request, now)?;
        eprintln!(
            "{pod:6} on {node}: {} ({} writes)",
            planned.ipv4.addresses[0],
            planned.plan.writes(&snapshot).len()
        );
        snapshot.apply(planned.plan);
    }

    let released = snapshot.plan_release_by_handle("k8s-pod-network.redis", now)?;
    eprintln!("released redis: {:?}", released.released);
    snapshot.apply(released.plan);

    let nginx =
        ipam_core::planner::addresses_of_handle(&snapshot, "k8s-pod-network.nginx")[0].addr();
    let stale = ReleaseRequest {
        address: nginx,
        handle: Some(ipam_core::HandleId::new("k8s-pod-network.redis")),
        sequence_number: None,
    };
    match snapshot.plan_release(&[stale], now) {
        Err(refused) => eprintln!("stale release refused: {refused}"),
        Ok(_) => unreachable!("a release naming the wrong handle must be refused"),
    }

    for pool in usage(&snapshot).pools {
        eprintln!(
            "pool {} {}: {} of {} in use",
            pool.name, pool.cidr, pool.in_use, pool.capacity
        );
        for block in pool.blocks {
            eprintln!(
                "  block {} owner {:?}: {} of {} in use",
                block.cidr,
                block.owner.unwrap_or_default(),
                block.in_use,
                block.capacity
            );
        }
    }
    Ok(())
}
