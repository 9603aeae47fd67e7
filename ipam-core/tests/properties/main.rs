//! Properties of the planner over random runs: small worlds whose pools run
//! out, and sequences of automatic and explicit assignments, releases of
//! addresses, handles and nodes, with time moving forward. Each step plans
//! against the snapshot and, when the planner agrees, applies the plan;
//! refusals are legitimate outcomes and leave the snapshot as it was.
//!
//! Runs with an IP cooldown add the collector's backstop every so many
//! seconds (`plan_deallocate_cooled`), and hold the cooldown's promises: no
//! address is handed out again within it, every released address is free
//! once it and one collection interval have passed, and without it every
//! run is exactly the run recorded before the feature existed.

mod cooldown;
mod recorded;
mod runs;
#[path = "../strategies/mod.rs"]
mod strategies;

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipam_core::plan::Assignments;
use ipam_core::planner::addresses_of_handle;
use ipam_core::usage::usage;
use ipam_core::{
    Affinity, AssignIpRequest, AutoAssignRequest, Block, BlockCidr, BlockOwner, BlockSpec, Error,
    Handle, HandleSpec, IpVersion, Now, ReleasePlan, ReleaseRequest, Snapshot,
};
use ipam_core::{HandleId, NodeName};
use ipnet::IpNet;
use proptest::prelude::*;
use proptest::sample::Index;

use strategies::{
    cooldown_scenario, scenario, strict_affinity_scenario, Operation, Scenario, Step, World,
};

/// Runs per property.
const CASES: u32 = 128;

/// Enough shrinking to cut a failing run of 150 steps down to the few that
/// matter.
const MAX_SHRINK_ITERS: u32 = 4096;

/// When the runs start: 2026-01-01T00:00:00Z.
const START_UNIX_SECONDS: u64 = 1_767_225_600;

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// A snapshot being driven through a run, and the time of the last step.
struct Cluster {
    snapshot: Snapshot,
    now: Now,
}

/// What one step did.
#[derive(Debug)]
enum Outcome {
    /// An automatic assignment was applied.
    AutoAssigned {
        handle: String,
        ipv4: Assignments,
        ipv6: Assignments,
    },
    /// A chosen address was assigned.
    Assigned { handle: String, address: IpAddr },
    /// A release was applied, freeing these addresses.
    Released(Vec<IpAddr>),
    /// A node's affinities were released.
    NodeReleased,
    /// The planner refused; nothing was applied.
    Refused(Error),
    /// No address was held, so there was none to release.
    NothingHeld,
}

impl Cluster {
    fn new(world: &World) -> Self {
        Cluster {
            snapshot: world.snapshot(),
            now: Now {
                unix_nanos: START_UNIX_SECONDS * NANOS_PER_SECOND,
            },
        }
    }

    /// The held address an [`Operation::ReleaseAddress`] step would release.
    fn held_address(&self, held: &Index) -> Option<IpAddr> {
        let addresses: Vec<IpAddr> = holders(&self.snapshot).into_keys().collect();
        (!addresses.is_empty()).then(|| *held.get(&addresses))
    }

    /// Plans the step's operation and applies the plan unless refused.
    fn step(&mut self, step: &Step) -> Outcome {
        self.now.unix_nanos += step.seconds_later * NANOS_PER_SECOND + step.nanos_later;
        match &step.operation {
            Operation::AutoAssign {
                node,
                handle,
                ipv4,
                ipv6,
            } => {
                let mut request = AutoAssignRequest::new(
                    HandleId::new(handle),
                    NodeName::new(node),
                    *ipv4,
                    *ipv6,
                );
                request.attributes = node_attribute(node);
                match self.snapshot.plan_auto_assign(&request, self.now) {
                    Ok(planned) => {
                        self.snapshot.apply(planned.plan);
                        Outcome::AutoAssigned {
                            handle: handle.clone(),
                            ipv4: planned.ipv4,
                            ipv6: planned.ipv6,
                        }
                    }
                    Err(error) => Outcome::Refused(error),
                }
            }
            Operation::AssignIp {
                node,
                handle,
                address,
            } => self.assign_ip(node, handle, *address),
            Operation::AssignReleased {
                node,
                handle,
                released: which,
            } => {
                let addresses: Vec<IpAddr> = released(&self.snapshot).into_keys().collect();
                match addresses.is_empty() {
                    true => Outcome::NothingHeld,
                    false => self.assign_ip(node, handle, *which.get(&addresses)),
                }
            }
            Operation::ReleaseAddress { held } => match self.held_address(held) {
                Some(address) => {
                    let planned = self
                        .snapshot
                        .plan_release(&[ReleaseRequest::address(address)], self.now);
                    self.apply_release(planned)
                }
                None => Outcome::NothingHeld,
            },
            Operation::ReleaseHandle { handle } => {
                let planned = self.snapshot.plan_release_by_handle(handle, self.now);
                self.apply_release(planned)
            }
            Operation::ReleaseNode { node } => {
                let plan = self.snapshot.plan_release_node(node, self.now);
                self.snapshot.apply(plan);
                Outcome::NodeReleased
            }
        }
    }

    fn assign_ip(&mut self, node: &str, handle: &str, address: IpAddr) -> Outcome {
        let request = AssignIpRequest {
            handle: HandleId::new(handle),
            node: NodeName::new(node),
            address,
            attributes: node_attribute(node),
        };
        match self.snapshot.plan_assign_ip(&request, self.now) {
            Ok(plan) => {
                self.snapshot.apply(plan);
                Outcome::Assigned {
                    handle: handle.to_string(),
                    address,
                }
            }
            Err(error) => Outcome::Refused(error),
        }
    }

    fn apply_release(&mut self, planned: Result<ReleasePlan, Error>) -> Outcome {
        match planned {
            Ok(planned) => {
                self.snapshot.apply(planned.plan);
                Outcome::Released(planned.released)
            }
            Err(error) => Outcome::Refused(error),
        }
    }
}

/// The `node` attribute Calico records with a workload's addresses.
fn node_attribute(node: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("node".to_string(), node.to_string())])
}

/// Every allocated address and the handle its allocation names, read from
/// the blocks, released addresses (held by nobody) left out. An allocation
/// without a handle shows as an empty handle.
fn holders(snapshot: &Snapshot) -> BTreeMap<IpAddr, String> {
    snapshot
        .blocks()
        .flat_map(|block| {
            block
                .allocations()
                .filter(|(_, attribute)| !attribute.is_released())
                .map(move |(ordinal, attribute)| {
                    let handle = attribute.handle().unwrap_or_default().to_string();
                    (block.cidr().address(ordinal), handle)
                })
        })
        .collect()
}

/// Every released address not yet deallocated, with its `releasedAt`
/// second.
fn released(snapshot: &Snapshot) -> BTreeMap<IpAddr, i64> {
    snapshot
        .blocks()
        .flat_map(|block| {
            block
                .released()
                .map(move |(ordinal, at)| (block.cidr().address(ordinal), at))
        })
        .collect()
}

/// The block and ordinal of an allocated address.
fn ordinal_of(snapshot: &Snapshot, address: IpAddr) -> Option<(&Block, u32)> {
    let block = snapshot.block_containing(address)?;
    Some((block, block.cidr().ordinal_of(address)?))
}

/// Everything a datastore would hold, in a comparable form.
#[derive(Debug, PartialEq)]
struct Stored {
    blocks: Vec<BlockSpec>,
    handles: BTreeMap<String, HandleSpec>,
    affinities: Vec<Affinity>,
}

impl Stored {
    fn of(snapshot: &Snapshot) -> Self {
        Stored {
            blocks: snapshot.blocks().map(Block::to_spec).collect(),
            handles: snapshot
                .handles()
                .map(|h| (h.id().to_string(), h.to_spec()))
                .collect(),
            affinities: snapshot.affinities().cloned().collect(),
        }
    }
}

/// Every block is consistent, every allocation names an existing handle,
/// and each handle's per-block counts are exactly what the blocks hold.
fn check_handles_agree_with_blocks(snapshot: &Snapshot) -> Result<(), TestCaseError> {
    let mut counted: BTreeMap<(String, BlockCidr), u32> = BTreeMap::new();
    for block in snapshot.blocks() {
        let problems = block.problems();
        prop_assert!(
            problems.is_empty(),
            "block {}: {:?}",
            block.cidr(),
            problems
        );
        for (ordinal, attribute) in block.allocations() {
            let handle = attribute.handle();
            if attribute.is_released() {
                // Nobody's: counted for no handle.
                prop_assert_eq!(handle, None);
                continue;
            }
            prop_assert!(
                handle.is_some_and(|h| snapshot.handle(h).is_some()),
                "{} is held by handle {:?}, which does not exist",
                block.cidr().address(ordinal),
                handle
            );
            *counted
                .entry((handle.unwrap_or_default().to_string(), block.cidr()))
                .or_default() += 1;
        }
    }
    let mut recorded: BTreeMap<(String, BlockCidr), u32> = BTreeMap::new();
    for handle in snapshot.handles() {
        prop_assert!(
            !handle.blocks().is_empty(),
            "handle {} holds nothing but exists",
            handle.id()
        );
        for (cidr, count) in handle.blocks() {
            recorded.insert((handle.id().to_string(), *cidr), *count);
        }
    }
    prop_assert_eq!(
        recorded,
        counted,
        "handle counts (left) against blocks (right)"
    );
    Ok(())
}

/// Each handle and block survives conversion to its stored form and back,
/// and the stored form survives JSON.
fn check_round_trips(snapshot: &Snapshot) -> Result<(), TestCaseError> {
    for handle in snapshot.handles() {
        let spec = handle.to_spec();
        let json = serde_json::to_string(&spec).expect("handle specs serialise");
        let parsed: HandleSpec = serde_json::from_str(&json).expect("handle JSON parses");
        prop_assert_eq!(&parsed, &spec, "JSON round trip of handle {}", handle.id());
        let rebuilt = Handle::from_spec(spec).expect("a written handle is valid");
        prop_assert_eq!(&rebuilt, handle);
    }
    for block in snapshot.blocks() {
        let spec = block.to_spec();
        let json = serde_json::to_string(&spec).expect("block specs serialise");
        let parsed: BlockSpec = serde_json::from_str(&json).expect("block JSON parses");
        prop_assert_eq!(&parsed, &spec, "JSON round trip of block {}", block.cidr());
        let rebuilt = Block::from_spec(spec).expect("a written block is valid");
        prop_assert_eq!(
            &rebuilt,
            block,
            "block {} rebuilt (left) from its spec",
            block.cidr()
        );
    }
    Ok(())
}

/// Releases of a held address that expect a newer sequence number or
/// another holder are refused, and leave the snapshot unchanged; the same
/// release with the true expectations is accepted.
fn check_stale_releases_are_refused(
    snapshot: &Snapshot,
    address: IpAddr,
    now: Now,
) -> Result<(), TestCaseError> {
    let (block, ordinal) = ordinal_of(snapshot, address).expect("a held address has a block");
    let current = block.sequence_number_of(ordinal);
    let holder = block
        .attribute_of(ordinal)
        .and_then(|attribute| attribute.handle())
        .expect("a held address has a handle")
        .to_string();
    let before = Stored::of(snapshot);

    let newer_sequence_number = ReleaseRequest {
        address,
        handle: None,
        sequence_number: Some(current + 1),
    };
    let refused = snapshot.plan_release(&[newer_sequence_number], now);
    prop_assert!(
        matches!(refused, Err(Error::SequenceNumberMismatch { .. })),
        "release of {} expecting sequence number {} gave {:?}",
        address,
        current + 1,
        refused
    );

    let other_holder = ReleaseRequest {
        address,
        handle: Some(HandleId::new(format!("not-{holder}"))),
        sequence_number: None,
    };
    let refused = snapshot.plan_release(&[other_holder], now);
    prop_assert!(
        matches!(refused, Err(Error::HandleMismatch { .. })),
        "release of {} expecting another holder gave {:?}",
        address,
        refused
    );
    prop_assert_eq!(Stored::of(snapshot), before, "after refused releases");

    let exact = ReleaseRequest {
        address,
        handle: Some(HandleId::new(holder)),
        sequence_number: Some(current),
    };
    let accepted = snapshot.plan_release(&[exact], now);
    prop_assert!(
        accepted.is_ok(),
        "release of {} with its true expectations gave {:?}",
        address,
        accepted
    );
    Ok(())
}

/// Whether the planner may refuse an operation for this reason: running
/// into the block limit or a disabled auto-allocation, taking an address
/// that is in use or in another node's block under strict affinity, or
/// releasing a handle that does not exist.
fn is_legitimate_refusal(operation: &Operation, error: &Error, before: &Stored) -> bool {
    match (operation, error) {
        (
            Operation::AutoAssign { .. },
            Error::BlockLimitReached { .. } | Error::AutoAllocateDisabled { .. },
        ) => true,
        (
            Operation::AssignIp { .. } | Operation::AssignReleased { .. },
            Error::AddressInUse { .. }
            | Error::AddressInCooldown { .. }
            | Error::StrictAffinityViolation { .. },
        ) => true,
        (Operation::ReleaseHandle { handle }, Error::HandleNotFound { .. }) => {
            !before.handles.contains_key(handle)
        }
        _ => false,
    }
}

/// Runs `scenario`: every refusal is one the operation may meet and
/// leaves the stored objects as they were, and a release naming an old
/// sequence number or another handle is refused.
fn check_failed_plans_change_nothing(scenario: &Scenario) -> Result<(), TestCaseError> {
    let mut cluster = Cluster::new(&scenario.world);
    for step in &scenario.steps {
        if let Operation::ReleaseAddress { held } = &step.operation {
            if let Some(address) = cluster.held_address(held) {
                check_stale_releases_are_refused(&cluster.snapshot, address, cluster.now)?;
            }
        }
        let before = Stored::of(&cluster.snapshot);
        if let Outcome::Refused(error) = cluster.step(step) {
            prop_assert!(
                is_legitimate_refusal(&step.operation, &error, &before),
                "{:?} refused: {}",
                step,
                error
            );
            prop_assert_eq!(
                &Stored::of(&cluster.snapshot),
                &before,
                "refused: {}",
                error
            );
        }
    }
    Ok(())
}
