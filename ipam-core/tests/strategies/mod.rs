//! Strategies shared by the properties: a small IPAM world whose pools run
//! out within a few dozen requests (so that borrowing, exhaustion, the block
//! limit and the reclaiming of empty blocks all happen), and a run of steps
//! to play on it; with or without an IP cooldown, whose runs also move time
//! on by fractions of a second, so that the stored second of a release is
//! not always the second it happened in.

use std::net::IpAddr;

use ipam_core::{IpamConfig, Pool, PoolSpec, Snapshot};
use ipnet::{IpAddrRange, IpNet, Ipv4AddrRange, Ipv6AddrRange};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};

/// Handles are drawn from this few names, so that assignments, retries and
/// releases often meet the same handle, yet releasing one handle frees only
/// a small share of the addresses.
const HANDLE_NAMES: u32 = 12;

/// The most nodes in a world.
const MAX_NODES: usize = 6;

/// The longest run of steps.
const MAX_STEPS: usize = 150;

/// The most seconds between two steps: enough for a block to pass the
/// 60-second reclaim age within a step or two, and sometimes not.
const MAX_SECONDS_BETWEEN_STEPS: u64 = 120;

/// The longest IP cooldown of a run: a few steps long, so that addresses
/// come out of their cooldown within a run, and some within one step.
const MAX_COOLDOWN_SECONDS: u32 = 300;

/// The range and block size of one pool.
#[derive(Debug, Clone)]
pub struct PoolShape {
    /// The pool's range.
    pub cidr: IpNet,
    /// The pool's blockSize.
    pub block_size: u8,
}

/// The pools, configuration and nodes a run takes place in.
#[derive(Debug, Clone)]
pub struct World {
    /// The IPAM configuration.
    pub config: IpamConfig,
    /// One to three IPv4 pools, then possibly one IPv6 pool.
    pub pools: Vec<PoolShape>,
    /// Names of the nodes that request addresses.
    pub nodes: Vec<String>,
}

impl World {
    /// An empty snapshot of the world: its pools and config, no blocks.
    pub fn snapshot(&self) -> Snapshot {
        let pools = self
            .pools
            .iter()
            .enumerate()
            .map(|(index, shape)| {
                let mut spec = PoolSpec::new(shape.cidr);
                spec.block_size = Some(shape.block_size);
                Pool::new(format!("pool-{index}"), spec).expect("generated pools are valid")
            })
            .collect();
        Snapshot::new(self.config.clone(), pools, &[])
    }

    fn has_ipv6_pool(&self) -> bool {
        self.pools.iter().any(|shape| shape.cidr.addr().is_ipv6())
    }

    /// Every address of every pool, network and broadcast addresses included
    /// (blocks hand those out too).
    fn addresses(&self) -> Vec<IpAddr> {
        self.pools
            .iter()
            .flat_map(|shape| match shape.cidr {
                IpNet::V4(net) => {
                    IpAddrRange::from(Ipv4AddrRange::new(net.network(), net.broadcast()))
                }
                IpNet::V6(net) => {
                    IpAddrRange::from(Ipv6AddrRange::new(net.network(), net.broadcast()))
                }
            })
            .collect()
    }
}

/// One request to the planner.
#[derive(Debug, Clone)]
pub enum Operation {
    /// Automatic assignment of addresses of both families.
    AutoAssign {
        /// The requesting node.
        node: String,
        /// The handle that will own the addresses.
        handle: String,
        /// IPv4 addresses wanted.
        ipv4: u32,
        /// IPv6 addresses wanted (0 when the world has no IPv6 pool).
        ipv6: u32,
    },
    /// Assignment of one chosen address, which may well be taken already.
    AssignIp {
        /// The requesting node.
        node: String,
        /// The handle that will own the address.
        handle: String,
        /// The address, from any pool.
        address: IpAddr,
    },
    /// Release of one of the addresses held when the step runs, chosen by
    /// position among them in address order; nothing when none is held.
    ReleaseAddress {
        /// Which held address.
        held: Index,
    },
    /// Release of a handle and all its addresses (which may not exist).
    ReleaseHandle {
        /// The handle.
        handle: String,
    },
    /// Release of every block affinity of a node, as when it is deleted.
    ReleaseNode {
        /// The node.
        node: String,
    },
    /// Assignment of an address still released when the step runs (IP
    /// cooldown), chosen by position among them in address order; nothing
    /// when none is. Only runs with a cooldown have it.
    AssignReleased {
        /// The requesting node.
        node: String,
        /// The handle that will own the address.
        handle: String,
        /// Which released address.
        released: Index,
    },
}

/// An operation and how long after the previous step it happens.
#[derive(Debug, Clone)]
pub struct Step {
    /// Seconds since the previous step.
    pub seconds_later: u64,
    /// And nanoseconds (under 1 s; always 0 in runs without a cooldown).
    pub nanos_later: u64,
    /// What happens.
    pub operation: Operation,
}

/// A world and a run of steps in it.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Where the run happens.
    pub world: World,
    /// What happens, in order.
    pub steps: Vec<Step>,
}

/// A world under any configuration, and one to [`MAX_STEPS`] steps in it.
pub fn scenario() -> impl Strategy<Value = Scenario> {
    let config = prop_oneof![Just(IpamConfig::default()), strict_affinity_config()];
    scenario_under(config)
}

/// A world under strict affinity, and one to [`MAX_STEPS`] steps in it.
pub fn strict_affinity_scenario() -> impl Strategy<Value = Scenario> {
    scenario_under(strict_affinity_config())
}

/// A world under any configuration with an IP cooldown of 1 to
/// [`MAX_COOLDOWN_SECONDS`] seconds, and one to [`MAX_STEPS`] steps in it,
/// time moving on by whole and fractional seconds.
pub fn cooldown_scenario() -> impl Strategy<Value = Scenario> {
    let config = prop_oneof![Just(IpamConfig::default()), strict_affinity_config()];
    let nodes = (1..=MAX_NODES).prop_map(|count| (0..count).map(|n| format!("node-{n}")).collect());
    // Short cooldowns too, so that steps land on either side of the end of
    // one.
    let cooldown = prop_oneof![1..=5u32, 1..=MAX_COOLDOWN_SECONDS];
    (config, cooldown, pools(), nodes)
        .prop_map(|(config, cooldown, pools, nodes)| World {
            config: IpamConfig {
                ip_cooldown_seconds: cooldown,
                ..config
            },
            pools,
            nodes,
        })
        .prop_flat_map(|world| {
            let steps = vec(cooldown_step(&world), 1..=MAX_STEPS);
            (Just(world), steps)
        })
        .prop_map(|(world, steps)| Scenario { world, steps })
}

// A step of a run with a cooldown: often less than a second or two after
// the previous one, and sometimes an assignment of a released address.
fn cooldown_step(world: &World) -> impl Strategy<Value = Step> {
    let node = select(world.nodes.clone());
    let handle = (0..HANDLE_NAMES).prop_map(|n| format!("pod-{n}"));
    let assign_released = (node, handle, any::<Index>()).prop_map(|(node, handle, released)| {
        Operation::AssignReleased {
            node,
            handle,
            released,
        }
    });
    let operation = prop_oneof![
        4 => step(world).prop_map(|step| step.operation),
        1 => assign_released,
    ];
    let seconds_later = prop_oneof![0..=2u64, 1..=MAX_SECONDS_BETWEEN_STEPS];
    (seconds_later, 0u64..1_000_000_000, operation).prop_map(
        |(seconds_later, nanos_later, operation)| Step {
            seconds_later,
            nanos_later,
            operation,
        },
    )
}

fn scenario_under(config: impl Strategy<Value = IpamConfig>) -> impl Strategy<Value = Scenario> {
    let nodes = (1..=MAX_NODES).prop_map(|count| (0..count).map(|n| format!("node-{n}")).collect());
    (config, pools(), nodes)
        .prop_map(|(config, pools, nodes)| World {
            config,
            pools,
            nodes,
        })
        .prop_flat_map(|world| {
            let steps = vec(step(&world), 1..=MAX_STEPS);
            (Just(world), steps)
        })
        .prop_map(|(world, steps)| Scenario { world, steps })
}

/// Strict affinity with no block limit (Calico's cap of 20) or one of one
/// to three and, now and then, no automatic block allocation, so that only
/// explicitly assigned addresses create blocks.
fn strict_affinity_config() -> impl Strategy<Value = IpamConfig> {
    (0u32..=3, prop::bool::weighted(0.8)).prop_map(|(max_blocks_per_host, auto_allocate_blocks)| {
        IpamConfig {
            strict_affinity: true,
            auto_allocate_blocks,
            max_blocks_per_host,
            ..IpamConfig::default()
        }
    })
}

/// One to three IPv4 pools 10.0.<n>.0/25 to /27 with blocks of 8 to 32
/// addresses, then sometimes fd00::/120 with blocks of 4 to 16 addresses:
/// small enough that a run of steps exhausts them.
fn pools() -> impl Strategy<Value = Vec<PoolShape>> {
    let ipv4 = vec((25u8..=27, 27u8..=29), 1..=3).prop_map(|shapes| {
        shapes
            .into_iter()
            .zip(0u8..)
            .map(|((prefix, block_size), third_octet)| PoolShape {
                cidr: IpNet::new(IpAddr::from([10, 0, third_octet, 0]), prefix)
                    .expect("prefix of at most 32"),
                block_size,
            })
            .collect::<Vec<_>>()
    });
    let ipv6 = prop::option::of(124u8..=126).prop_map(|block_size| {
        block_size.map(|block_size| PoolShape {
            cidr: "fd00::/120".parse().expect("valid CIDR"),
            block_size,
        })
    });
    (ipv4, ipv6).prop_map(|(mut pools, ipv6)| {
        pools.extend(ipv6);
        pools
    })
}

fn step(world: &World) -> impl Strategy<Value = Step> {
    let node = select(world.nodes.clone());
    let handle = (0..HANDLE_NAMES).prop_map(|n| format!("pod-{n}"));
    let ipv6 = if world.has_ipv6_pool() {
        0u32..=2
    } else {
        0u32..=0
    };
    let operation = prop_oneof![
        5 => (node.clone(), handle.clone(), 1u32..=4, ipv6).prop_map(
            |(node, handle, ipv4, ipv6)| Operation::AutoAssign { node, handle, ipv4, ipv6 }
        ),
        2 => (node.clone(), handle.clone(), select(world.addresses())).prop_map(
            |(node, handle, address)| Operation::AssignIp { node, handle, address }
        ),
        2 => any::<Index>().prop_map(|held| Operation::ReleaseAddress { held }),
        1 => handle.prop_map(|handle| Operation::ReleaseHandle { handle }),
        1 => node.prop_map(|node| Operation::ReleaseNode { node }),
    ];
    (1..=MAX_SECONDS_BETWEEN_STEPS, operation).prop_map(|(seconds_later, operation)| Step {
        seconds_later,
        nanos_later: 0,
        operation,
    })
}
