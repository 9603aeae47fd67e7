//! Every refusal Calico 3.32 has a sentence for carries that sentence
//! verbatim (libcalico-go/lib/ipam: ipam.go, ipam_block.go,
//! ipam_block_reader_writer.go): operators search kubelet events for them
//! and Calico's CNI tests grep for them. One row per sentence; each refusal
//! is produced by the planner, not built by hand.

use super::*;

fn auto(s: &Snapshot, edit: impl FnOnce(&mut AutoAssignRequest)) -> Error {
    let mut request = AutoAssignRequest::new(HandleId::new("h2"), NodeName::new("host1"), 1, 0);
    edit(&mut request);
    s.plan_auto_assign(&request, at(0)).unwrap_err()
}

fn assign_ip(s: &Snapshot, node: &str, address: &str) -> Error {
    let request = AssignIpRequest {
        handle: HandleId::new("other"),
        node: NodeName::new(node),
        address: ip(address),
        attributes: BTreeMap::new(),
    };
    s.plan_assign_ip(&request, at(0)).unwrap_err()
}

fn selecting(selector: &str) -> Pool {
    let mut spec = PoolSpec {
        block_size: Some(26),
        ..PoolSpec::new("10.0.0.0/24".parse().unwrap())
    };
    spec.node_selector = selector.into();
    Pool::new("zoned", spec).unwrap()
}

/// host1 holds 10.0.0.0 (block 10.0.0.0/26) in pool 10.0.0.0/24.
fn one_assigned(config: IpamConfig) -> Snapshot {
    let mut s = world(vec![pool("p", "10.0.0.0/24", 26)], config);
    let request = AssignIpRequest {
        handle: HandleId::new("h"),
        node: NodeName::new("host1"),
        address: ip("10.0.0.0"),
        attributes: BTreeMap::new(),
    };
    let plan = s.plan_assign_ip(&request, at(0)).unwrap();
    s.apply(plan);
    s
}

fn release(s: &Snapshot, handle: Option<&str>, sequence_number: Option<u64>) -> Error {
    let request = ReleaseRequest {
        address: ip("10.0.0.0"),
        handle: handle.map(HandleId::new),
        sequence_number,
    };
    s.plan_release(&[request], at(0)).unwrap_err()
}

type Row = (&'static str, &'static str, fn() -> Error);

const ROWS: &[Row] = &[
    // ipam.go, prepareAffinityBlocksForHost.
    (
        "no_pool_selects_node",
        "no configured Calico pools for node host1",
        || {
            auto(
                &world(vec![selecting("zone == 'a'")], IpamConfig::default()),
                |_| {},
            )
        },
    ),
    // ipam.go, determinePools: ErrNoQualifiedPool.
    ("no_pool_enabled", "cannot find a qualified ippool", || {
        auto(&world(vec![], IpamConfig::default()), |_| {})
    }),
    // ipam.go, prepareAffinityBlocksForHost: ErrNoQualifiedPool with the use.
    (
        "no_pool_allows_use",
        "cannot find a qualified ippool, no pools match the required use (Workload)",
        || {
            let mut spec = PoolSpec::new("10.0.0.0/24".parse().unwrap());
            spec.allowed_uses = vec![AllowedUse::Tunnel];
            auto(
                &world(vec![Pool::new("t", spec).unwrap()], IpamConfig::default()),
                |_| {},
            )
        },
    ),
    // ipam.go, determinePools.
    (
        "requested_pool_unavailable",
        "the given pool (40.0.0.0/24) does not exist, or is not enabled",
        || {
            auto(
                &world(vec![pool("p", "10.0.0.0/24", 26)], IpamConfig::default()),
                |r| {
                    r.ipv4_pools = vec!["40.0.0.0/24".parse().unwrap()];
                },
            )
        },
    ),
    // ipam.go, AutoAssign.
    (
        "requested_pool_of_other_family",
        "provided IPv4 IPPools list contains one or more IPv6 IPPools",
        || {
            auto(
                &world(vec![pool("p", "10.0.0.0/24", 26)], IpamConfig::default()),
                |r| {
                    r.ipv4_pools = vec!["fd00::/120".parse().unwrap()];
                },
            )
        },
    ),
    // ipam.go, autoAssign: the message Calico records ...
    (
        "block_limit_message",
        "Need to allocate an IPAM block but could not - limit of 1 blocks reached for this node",
        || auto(&one_full_block(), |_| {}),
    ),
    // ... and the error its CNI plugin returns (ErrBlockLimit).
    (
        "block_limit_error",
        "cannot allocate new block due to per host block limit",
        || auto(&one_full_block(), |_| {}),
    ),
    // ipam.go, findOrClaimBlock with AutoAllocateBlocks off.
    (
        "auto_allocate_off",
        "failed to find or claim a block",
        || {
            let config = IpamConfig {
                strict_affinity: true,
                auto_allocate_blocks: false,
                ..IpamConfig::default()
            };
            auto(&world(vec![pool("p", "10.0.0.0/24", 26)], config), |_| {})
        },
    ),
    // ipam.go, AssignIP.
    (
        "address_not_in_pool",
        "The provided IP address is not in a configured pool",
        || assign_ip(&one_assigned(IpamConfig::default()), "host1", "192.168.0.1"),
    ),
    // ipam_block.go, assign (ErrorResourceAlreadyExists, as printed).
    (
        "address_in_use",
        "resource already exists: 10.0.0.0 with error: Address already assigned in block",
        || assign_ip(&one_assigned(IpamConfig::default()), "host1", "10.0.0.0"),
    ),
    // ipam_block.go, assign with strict affinity.
    (
        "block_of_another_host",
        "Block host affinity does not match",
        || assign_ip(&one_assigned(strict(0)), "host2", "10.0.0.5"),
    ),
    // ipam.go, ClaimAffinity.
    (
        "claim_outside_pools",
        "The requested CIDR (10.1.0.0/26) is not within any configured pools.",
        || claim("10.1.0.0/26"),
    ),
    // ipam.go, ClaimAffinity.
    (
        "claim_smaller_than_block",
        "The requested CIDR (192.168.1.0/27) is smaller than the minimum.",
        || claim("192.168.1.0/27"),
    ),
    // ipam_block_reader_writer.go, releaseBlockAffinity: errBlockNotEmpty.
    (
        "release_affinity_of_used_block",
        "block '10.0.0.0/26' is not empty",
        || {
            one_assigned(IpamConfig::default())
                .plan_release_affinity("host1", block("10.0.0.0/26"), true, at(0))
                .unwrap_err()
        },
    ),
    // ipam_block.go, release: ErrorBadHandle.
    (
        "release_with_another_handle",
        "the given handle (not-h) does not match (h) when attempting to release IP",
        || release(&one_assigned(IpamConfig::default()), Some("not-h"), None),
    ),
    // ipam_block.go, release: ErrorBadSequenceNumber.
    (
        "release_with_stale_sequence_number",
        "the given sequence number (99) does not match (",
        || release(&one_assigned(IpamConfig::default()), None, Some(99)),
    ),
    // ipam.go, SetIPAMConfig.
    (
        "config_strict_and_auto_both_off",
        "Cannot disable 'StrictAffinity' and 'AutoAllocateBlocks' at the same time",
        || {
            IpamConfig {
                strict_affinity: false,
                auto_allocate_blocks: false,
                ..IpamConfig::default()
            }
            .validate()
            .unwrap_err()
        },
    ),
    // ipam.go, SetIPAMConfig.
    (
        "config_block_limit_without_strict",
        "MaxBlocksPerHost requires StrictAffinity to be enabled",
        || {
            IpamConfig {
                max_blocks_per_host: 4,
                ..IpamConfig::default()
            }
            .validate()
            .unwrap_err()
        },
    ),
];

/// host1 holds every address of its one /30 block and may hold no other.
fn one_full_block() -> Snapshot {
    let mut s = world(vec![pool("p", "10.0.0.0/24", 30)], strict(1));
    assign(&mut s, "h", "host1", 4);
    s
}

fn claim(cidr: &str) -> Error {
    let s = world(
        vec![
            pool("p", "10.0.0.0/24", 26),
            pool("q", "192.168.1.0/24", 26),
        ],
        IpamConfig::default(),
    );
    s.plan_claim_affinity("host1", cidr.parse().unwrap(), at(0))
        .unwrap_err()
}

#[test]
fn every_refusal_calico_has_a_sentence_for_carries_it() {
    for (name, sentence, refuse) in ROWS {
        let said = refuse().to_string();
        assert!(
            said.contains(sentence),
            "{name}: {said:?} lacks {sentence:?}"
        );
    }
}

/// A row name, Calico's sentence, and what our words are.
type ShortfallRow = (&'static str, &'static str, fn() -> String);

/// host2 holds the pool's one block, 10.0.0.0/30, full.
fn pool_taken_by_host2(config: IpamConfig) -> Snapshot {
    let mut s = world(vec![pool("p", "10.0.0.0/30", 30)], config);
    assign(&mut s, "h", "host2", 4);
    s
}

fn shortfall_of(s: &Snapshot) -> String {
    let request = AutoAssignRequest::new(HandleId::new("h2"), NodeName::new("host1"), 1, 0);
    let plan = s.plan_auto_assign(&request, at(0)).unwrap();
    plan.ipv4
        .partial_fulfillment(ipam_core::IpVersion::V4)
        .expect("a shortfall")
}

/// A family that gets fewer addresses than asked is not a refusal of the
/// planner; the all-or-nothing callers report it in Calico's words
/// (ipam.go, PartialFulfillmentError, as cni-plugin's ipam_plugin.go wraps it).
const SHORTFALL_ROWS: &[ShortfallRow] = &[
    (
        "pools_exhausted",
        "failed to request IPv4 addresses: Assigned 0 out of 1 requested IPv4 addresses; No IPs available in pools: [10.0.0.0/30]",
        || shortfall_of(&pool_taken_by_host2(IpamConfig::default())),
    ),
    (
        "strict_affinity_no_free_blocks",
        "Assigned 0 out of 1 requested IPv4 addresses; No more free affine blocks and strict affinity enabled",
        || shortfall_of(&pool_taken_by_host2(strict(0))),
    ),
];

#[test]
fn every_shortfall_is_told_in_calicos_words() {
    for (name, sentence, short) in SHORTFALL_ROWS {
        let said = short();
        assert!(
            said.contains(sentence),
            "{name}: {said:?} lacks {sentence:?}"
        );
    }
}
