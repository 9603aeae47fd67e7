//! The planner's choices, rule by rule, against Calico's behaviour
//! (libcalico-go/lib/ipam/ipam.go).

mod assign;
mod calico_words;
mod claim_batch_usage;
mod consistency;
mod load_balancer;
mod release;

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipam_core::plan::{AutoAssignPlan, Shortfall};
use ipam_core::planner::addresses_of_handle;
use ipam_core::usage::{address_status, borrowed, usage, AddressStatus};
use ipam_core::{
    AffinityKey, AffinityState, AllowedUse, AssignIpRequest, AutoAssignRequest, BlockCidr, Error,
    IpamConfig, Now, Pool, PoolSpec, ReleaseRequest, ReservationSpec, Snapshot, Write,
};
use ipam_core::{HandleId, NodeName};

const T0: u64 = 1_700_000_000_000_000_000;

fn pool(name: &str, cidr: &str, block_size: u8) -> Pool {
    let spec = PoolSpec {
        block_size: Some(block_size),
        ..PoolSpec::new(cidr.parse().unwrap())
    };
    Pool::new(name, spec).unwrap()
}

fn world(pools: Vec<Pool>, config: IpamConfig) -> Snapshot {
    Snapshot::new(config, pools, &[])
}

fn strict(limit: u32) -> IpamConfig {
    IpamConfig {
        strict_affinity: true,
        max_blocks_per_host: limit,
        ..IpamConfig::default()
    }
}

fn at(seconds: u64) -> Now {
    Now {
        unix_nanos: T0 + seconds * 1_000_000_000,
    }
}

/// Plans a workload auto-assign of `v4` IPv4 and `v6` IPv6 addresses at
/// `seconds` after the test's epoch.
fn plan(
    s: &Snapshot,
    handle: &str,
    node: &str,
    v4: u32,
    v6: u32,
    seconds: u64,
) -> Result<AutoAssignPlan, Error> {
    s.plan_auto_assign(
        &AutoAssignRequest::new(HandleId::new(handle), NodeName::new(node), v4, v6),
        at(seconds),
    )
}

/// Plans and applies an auto-assign of `v4` addresses; returns them.
fn assign(s: &mut Snapshot, handle: &str, node: &str, v4: u32) -> Vec<String> {
    let plan = plan(s, handle, node, v4, 0, 0).unwrap();
    let got = plan
        .ipv4
        .addresses
        .iter()
        .map(ToString::to_string)
        .collect();
    s.apply(plan.plan);
    got
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn block(text: &str) -> BlockCidr {
    text.parse().unwrap()
}

/// The writes of a first assignment in a new block: the claim first (the
/// affinity pending, the block created empty, the affinity confirmed), as
/// Calico's claimAffineBlock, then the handle, then the block's update
/// with the address.
const CLAIM_NEW_BLOCK: [&str; 5] = [
    "create-affinity-pending",
    "create-block",
    "affinity-confirmed",
    "create-handle",
    "update-block",
];

fn kinds(writes: &[Write]) -> Vec<&'static str> {
    writes
        .iter()
        .map(|w| match w {
            Write::CreateAffinity(a) => match a.state {
                AffinityState::Pending => "create-affinity-pending",
                _ => "create-affinity",
            },
            Write::UpdateAffinity(a) => match a.state {
                AffinityState::Pending => "affinity-pending",
                AffinityState::Confirmed => "affinity-confirmed",
                AffinityState::PendingDeletion => "affinity-pending-deletion",
                AffinityState::Unset => "affinity-unset",
            },
            Write::DeleteAffinity(_) => "delete-affinity",
            Write::CreateBlock(_) => "create-block",
            Write::UpdateBlock(_) => "update-block",
            Write::DeleteBlock(_) => "delete-block",
            Write::CreateHandle(_) => "create-handle",
            Write::UpdateHandle(_) => "update-handle",
            Write::DeleteHandle(_) => "delete-handle",
        })
        .collect()
}
