//! Affinity consistency: a node's empty blocks in a pool that no longer
//! selects it are given up, when the last address goes (Calico's
//! ensureConsistentAffinity) and before the node's next assignment
//! (prepareAffinityBlocksForHost), both in libcalico-go/lib/ipam/ipam.go.

use super::*;
use ipam_core::planner::NodeLabels;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn known(node: &str, pairs: &[(&str, &str)]) -> NodeLabels {
    NodeLabels::from([(node.to_string(), labels(pairs))])
}

fn selecting(name: &str, cidr: &str, selector: &str) -> Pool {
    let spec = PoolSpec {
        block_size: Some(26),
        node_selector: selector.to_string(),
        ..PoolSpec::new(cidr.parse().unwrap())
    };
    Pool::new(name, spec).unwrap()
}

fn disabled(mut pool: Pool) -> Pool {
    let mut spec = pool.spec().clone();
    spec.disabled = true;
    pool = Pool::new(pool.name(), spec).unwrap();
    pool
}

/// The same objects under other pools: a pool's selector changed.
fn with_pools(s: &Snapshot, pools: Vec<Pool>) -> Snapshot {
    let mut next = Snapshot::new(s.config().clone(), pools, &[]);
    for block in s.blocks() {
        next.insert_block(block.clone());
    }
    for affinity in s.affinities() {
        next.insert_affinity(affinity.clone());
    }
    for handle in s.handles() {
        next.insert_handle(handle.clone());
    }
    next
}

/// Zone a's pool and a pool for every node; n1 is in zone a.
fn zoned(config: IpamConfig) -> Snapshot {
    world(
        vec![
            selecting("a", "10.0.0.0/24", "zone == 'a'"),
            selecting("everyone", "20.0.0.0/24", ""),
        ],
        config,
    )
}

fn moved_to_zone_b(s: &Snapshot) -> Snapshot {
    with_pools(
        s,
        vec![
            selecting("a", "10.0.0.0/24", "zone == 'b'"),
            selecting("everyone", "20.0.0.0/24", ""),
        ],
    )
}

fn request(handle: &str, node: &str, zone: &str) -> AutoAssignRequest {
    AutoAssignRequest {
        node_labels: labels(&[("zone", zone)]),
        ..AutoAssignRequest::new(HandleId::new(handle), NodeName::new(node), 1, 0)
    }
}

fn assign_in(s: &mut Snapshot, handle: &str, node: &str, zone: &str, seconds: u64) -> IpAddr {
    let planned = s
        .plan_auto_assign(&request(handle, node, zone), at(seconds))
        .unwrap();
    let got = planned.ipv4.addresses[0].addr();
    s.apply(planned.plan);
    got
}

const RELEASE_EMPTY_BLOCK: [&str; 3] = [
    "affinity-pending-deletion",
    "delete-block",
    "delete-affinity",
];

fn n1_blocks(s: &Snapshot) -> Vec<BlockCidr> {
    s.affinities_of("n1").map(|a| a.cidr).collect()
}

#[test]
fn the_last_address_released_after_the_selector_changed_takes_block_and_affinity() {
    let mut s = zoned(IpamConfig::default());
    let address = assign_in(&mut s, "h", "n1", "a", 0);
    assert_eq!(n1_blocks(&s), [block("10.0.0.0/26")]);
    let s = moved_to_zone_b(&s);
    let planned = s
        .plan_release_with(
            &[ReleaseRequest::address(address)],
            at(1),
            &known("n1", &[("zone", "a")]),
        )
        .unwrap();
    assert_eq!(planned.released, [address]);
    let mut expected = RELEASE_EMPTY_BLOCK.to_vec();
    expected.push("delete-handle");
    assert_eq!(kinds(&planned.plan.writes(&s)), expected);
    let mut s = s;
    s.apply(planned.plan);
    assert_eq!(s.blocks().count(), 0);
    assert!(n1_blocks(&s).is_empty());
    assert!(s.handle("h").is_none());
}

#[test]
fn a_release_without_the_nodes_labels_leaves_the_block_affine() {
    let mut s = zoned(IpamConfig::default());
    let address = assign_in(&mut s, "h", "n1", "a", 0);
    let s = moved_to_zone_b(&s);
    // Unknown labels, as for a node Calico cannot read: nothing released.
    for labels in [NodeLabels::new(), known("n2", &[("zone", "b")])] {
        let planned = s
            .plan_release_with(&[ReleaseRequest::address(address)], at(1), &labels)
            .unwrap();
        assert_eq!(
            kinds(&planned.plan.writes(&s)),
            ["update-block", "delete-handle"]
        );
    }
}

#[test]
fn a_block_still_holding_addresses_keeps_its_affinity() {
    let mut s = zoned(IpamConfig::default());
    let first = assign_in(&mut s, "h1", "n1", "a", 0);
    assign_in(&mut s, "h2", "n1", "a", 0);
    let mut s = moved_to_zone_b(&s);
    let zone_a = known("n1", &[("zone", "a")]);
    let planned = s
        .plan_release_with(&[ReleaseRequest::address(first)], at(1), &zone_a)
        .unwrap();
    assert_eq!(
        kinds(&planned.plan.writes(&s)),
        ["update-block", "delete-handle"]
    );
    s.apply(planned.plan);
    // The next assignment does not take it either: it is not empty.
    let planned = s
        .plan_auto_assign(&request("h3", "n1", "a"), at(2))
        .unwrap();
    assert!(planned.plan.releases.is_empty());
    assert!(planned.ipv4.addresses[0]
        .addr()
        .to_string()
        .starts_with("20."));
    s.apply(planned.plan);
    assert!(n1_blocks(&s).contains(&block("10.0.0.0/26")));
    // Its last address released: now it goes.
    let planned = s.plan_release_by_handle_with("h2", at(3), &zone_a).unwrap();
    assert_eq!(
        &kinds(&planned.plan.writes(&s))[..3],
        RELEASE_EMPTY_BLOCK.as_slice()
    );
    s.apply(planned.plan);
    assert_eq!(n1_blocks(&s), [block("20.0.0.0/26")]);
    assert!(s.block(&block("10.0.0.0/26")).is_none());
}

#[test]
fn the_next_assignment_gives_up_an_empty_block_its_pool_no_longer_selects() {
    let mut s = zoned(IpamConfig::default());
    let address = assign_in(&mut s, "h", "n1", "a", 0);
    let planned = s
        .plan_release(&[ReleaseRequest::address(address)], at(1))
        .unwrap();
    s.apply(planned.plan);
    assert_eq!(n1_blocks(&s), [block("10.0.0.0/26")], "empty, still affine");
    let s = moved_to_zone_b(&s);
    let planned = s
        .plan_auto_assign(&request("h2", "n1", "a"), at(2))
        .unwrap();
    let writes = kinds(&planned.plan.writes(&s));
    assert_eq!(writes[..3], RELEASE_EMPTY_BLOCK);
    assert_eq!(writes[3..], CLAIM_NEW_BLOCK);
    assert_eq!(planned.ipv4.addresses[0].to_string(), "20.0.0.0/26");
    let mut s = s;
    s.apply(planned.plan);
    assert_eq!(n1_blocks(&s), [block("20.0.0.0/26")]);
    assert!(s.block(&block("10.0.0.0/26")).is_none());
}

#[test]
fn a_node_whose_labels_changed_gives_up_its_empty_block_at_its_next_assignment() {
    let mut s = zoned(IpamConfig::default());
    let address = assign_in(&mut s, "h", "n1", "a", 0);
    let planned = s
        .plan_release(&[ReleaseRequest::address(address)], at(1))
        .unwrap();
    s.apply(planned.plan);
    // Same pools; the node moved to zone b.
    let got = assign_in(&mut s, "h2", "n1", "b", 2);
    assert!(got.to_string().starts_with("20."));
    assert_eq!(n1_blocks(&s), [block("20.0.0.0/26")]);
}

#[test]
fn a_still_selecting_pool_keeps_the_empty_block() {
    let mut s = zoned(IpamConfig::default());
    let address = assign_in(&mut s, "h", "n1", "a", 0);
    let zone_a = known("n1", &[("zone", "a")]);
    let planned = s
        .plan_release_with(&[ReleaseRequest::address(address)], at(1), &zone_a)
        .unwrap();
    assert_eq!(
        kinds(&planned.plan.writes(&s)),
        ["update-block", "delete-handle"]
    );
    s.apply(planned.plan);
    let planned = s
        .plan_auto_assign(&request("h2", "n1", "a"), at(2))
        .unwrap();
    assert!(planned.plan.releases.is_empty());
    assert_eq!(planned.ipv4.addresses[0].network(), address_block(address));
}

fn address_block(address: IpAddr) -> IpAddr {
    ipnet::IpNet::new(address, 26).unwrap().trunc().network()
}

#[test]
fn blocks_of_disabled_or_requested_pools_and_of_other_nodes_stay() {
    let mut s = zoned(IpamConfig::default());
    let mine = assign_in(&mut s, "h", "n1", "a", 0);
    let theirs = assign_in(&mut s, "g", "n2", "a", 0);
    let planned = s
        .plan_release(
            &[
                ReleaseRequest::address(mine),
                ReleaseRequest::address(theirs),
            ],
            at(1),
        )
        .unwrap();
    s.apply(planned.plan);
    assert_eq!(s.blocks().count(), 2);

    // A disabled pool: Calico's getPoolForIP sees enabled pools only.
    let off = with_pools(
        &s,
        vec![
            disabled(selecting("a", "10.0.0.0/24", "zone == 'b'")),
            selecting("everyone", "20.0.0.0/24", ""),
        ],
    );
    let planned = off
        .plan_auto_assign(&request("h2", "n1", "a"), at(2))
        .unwrap();
    assert!(planned.plan.releases.is_empty());

    // A pool the request names is used whatever its selector, and kept.
    let moved = moved_to_zone_b(&s);
    let named = AutoAssignRequest {
        ipv4_pools: vec!["10.0.0.0/24".parse().unwrap()],
        ..request("h2", "n1", "a")
    };
    let planned = moved.plan_auto_assign(&named, at(2)).unwrap();
    assert!(planned.plan.releases.is_empty());
    assert_eq!(planned.ipv4.addresses[0].network(), address_block(mine));

    // n1's next assignment gives up n1's block only.
    let planned = moved
        .plan_auto_assign(&request("h2", "n1", "a"), at(2))
        .unwrap();
    let released: Vec<AffinityKey> = planned
        .plan
        .releases
        .iter()
        .filter_map(|r| r.delete.clone())
        .collect();
    assert_eq!(
        released,
        [AffinityKey {
            node: "n1".to_string(),
            cidr: block("10.0.0.0/26"),
        }]
    );
}

#[test]
fn an_address_in_cooldown_keeps_the_block_until_it_has_cooled() {
    let config = IpamConfig {
        ip_cooldown_seconds: 60,
        ..IpamConfig::default()
    };
    let mut s = zoned(config);
    let address = assign_in(&mut s, "h", "n1", "a", 0);
    let s_moved = moved_to_zone_b(&s);
    let zone_a = known("n1", &[("zone", "a")]);
    // Released into its cooldown: Calico's empty() counts it as in use.
    let planned = s_moved
        .plan_release_with(&[ReleaseRequest::address(address)], at(1), &zone_a)
        .unwrap();
    assert!(planned.plan.releases.is_empty());
    s = s_moved;
    s.apply(planned.plan);
    let planned = s
        .plan_auto_assign(&request("h2", "n1", "a"), at(30))
        .unwrap();
    assert!(planned.plan.releases.is_empty(), "still cooling");
    // Once cooled, the block reads as empty (blockFromBackend) and goes.
    let planned = s
        .plan_auto_assign(&request("h2", "n1", "a"), at(62))
        .unwrap();
    assert_eq!(kinds(&planned.plan.writes(&s))[..3], RELEASE_EMPTY_BLOCK);
}

#[test]
fn strict_affinity_with_a_limit_of_one_block_moves_the_node_to_its_new_pool() {
    let mut s = zoned(strict(1));
    let address = assign_in(&mut s, "h", "n1", "a", 0);
    let planned = s
        .plan_release(&[ReleaseRequest::address(address)], at(1))
        .unwrap();
    s.apply(planned.plan);
    let mut s = moved_to_zone_b(&s);
    let got = assign_in(&mut s, "h2", "n1", "a", 2);
    assert!(got.to_string().starts_with("20."));
    assert_eq!(n1_blocks(&s), [block("20.0.0.0/26")]);
}

#[test]
fn a_burst_releases_the_block_once() {
    let mut s = zoned(IpamConfig::default());
    let address = assign_in(&mut s, "h", "n1", "a", 0);
    let planned = s
        .plan_release(&[ReleaseRequest::address(address)], at(1))
        .unwrap();
    s.apply(planned.plan);
    let s = moved_to_zone_b(&s);
    let batch =
        s.plan_auto_assign_batch(&[request("x", "n1", "a"), request("y", "n1", "a")], at(2));
    assert!(batch.outcomes.iter().all(Result::is_ok));
    assert_eq!(batch.plan.releases.len(), 1);
    let mut s = s;
    s.apply(batch.plan);
    assert!(!n1_blocks(&s).contains(&block("10.0.0.0/26")));
    assert!(s.block(&block("10.0.0.0/26")).is_none());
    assert_eq!(
        addresses_of_handle(&s, "x").len() + addresses_of_handle(&s, "y").len(),
        2
    );
}

#[test]
fn hosts_to_label_names_only_nodes_of_blocks_in_selecting_pools() {
    let mut s = zoned(IpamConfig::default());
    assign_in(&mut s, "h", "n1", "a", 0);
    assign_in(&mut s, "g", "n2", "x", 0);
    let hosts = s.hosts_to_label([block("10.0.0.0/26"), block("20.0.0.0/26")]);
    assert_eq!(hosts.into_iter().collect::<Vec<_>>(), ["n1"]);
}

/// Random runs of two nodes moving between zones, pools swapping their
/// selectors, assignments and releases (with the nodes' labels known or
/// not), with an IP cooldown or without.
mod runs {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Assign { node: usize, handle: usize },
        ReleaseHandle { handle: usize, labelled: bool },
        ReleaseAddress { pick: usize, labelled: bool },
        Relabel { node: usize, zone: usize },
        SwapSelectors,
        Wait { seconds: u64 },
    }

    const NODES: [&str; 2] = ["n1", "n2"];
    const ZONES: [&str; 3] = ["a", "b", "c"];

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..2usize, 0..6usize).prop_map(|(node, handle)| Op::Assign { node, handle }),
            2 => (0..6usize, any::<bool>())
                .prop_map(|(handle, labelled)| Op::ReleaseHandle { handle, labelled }),
            2 => (0..64usize, any::<bool>())
                .prop_map(|(pick, labelled)| Op::ReleaseAddress { pick, labelled }),
            1 => (0..2usize, 0..3usize).prop_map(|(node, zone)| Op::Relabel { node, zone }),
            1 => Just(Op::SwapSelectors),
            1 => (0..40u64).prop_map(|seconds| Op::Wait { seconds }),
        ]
    }

    fn pools(swapped: bool) -> Vec<Pool> {
        let (first, second) = if swapped { ("b", "a") } else { ("a", "b") };
        vec![
            small("za", "10.0.0.0/26", &format!("zone == '{first}'")),
            small("zb", "10.0.1.0/26", &format!("zone == '{second}'")),
            small("zc", "10.0.2.0/26", "zone == 'c'"),
        ]
    }

    fn small(name: &str, cidr: &str, selector: &str) -> Pool {
        let spec = PoolSpec {
            block_size: Some(28),
            node_selector: selector.to_string(),
            ..PoolSpec::new(cidr.parse().unwrap())
        };
        Pool::new(name, spec).unwrap()
    }

    /// Every address held, by handle (released ones are nobody's).
    fn held(s: &Snapshot) -> BTreeMap<IpAddr, String> {
        let mut out = BTreeMap::new();
        for block in s.blocks() {
            for (ordinal, attribute) in block.allocations() {
                if let Some(handle) = attribute.handle() {
                    let previous = out.insert(block.cidr().address(ordinal), handle.to_string());
                    assert!(previous.is_none(), "an address held twice");
                }
            }
        }
        out
    }

    /// Handles count exactly what the blocks hold.
    fn handles_agree(s: &Snapshot) -> Result<(), TestCaseError> {
        let mut counted: BTreeMap<(String, BlockCidr), u32> = BTreeMap::new();
        for (address, handle) in held(s) {
            let cidr = s.block_containing(address).unwrap().cidr();
            *counted.entry((handle, cidr)).or_default() += 1;
        }
        let mut recorded = BTreeMap::new();
        for handle in s.handles() {
            for (cidr, count) in handle.blocks() {
                recorded.insert((handle.id().to_string(), *cidr), *count);
            }
        }
        prop_assert_eq!(recorded, counted);
        Ok(())
    }

    /// The node's blocks that should have gone: affine, empty as read at
    /// `now` (cooled addresses free), in an enabled pool not selecting
    /// `labels`.
    fn unselected_empty(
        s: &Snapshot,
        node: &str,
        labels: &BTreeMap<String, String>,
        now: Now,
    ) -> Vec<BlockCidr> {
        let cutoff = s.config().cooldown(now).cutoff();
        s.affinities_of(node)
            .filter_map(|a| {
                let block = s.block(&a.cidr)?;
                let pool = s.pools().iter().find(|p| p.contains(a.cidr.address(0)))?;
                let empty = block
                    .allocations()
                    .all(|(_, at)| at.released_at().is_some_and(|r| r < cutoff));
                (block.owner().is_some_and(|o| o.is_host(node))
                    && empty
                    && !pool.selects_node(labels))
                .then_some(a.cidr)
            })
            .collect()
    }

    fn run(cooldown: u32, ops: Vec<Op>) -> Result<(), TestCaseError> {
        let config = IpamConfig {
            ip_cooldown_seconds: cooldown,
            ..IpamConfig::default()
        };
        let mut swapped = false;
        let mut s = world(pools(swapped), config);
        let mut zones = [0usize, 1];
        let mut seconds = 0u64;
        let all_labels = |zones: &[usize; 2]| -> NodeLabels {
            NODES
                .iter()
                .zip(zones)
                .map(|(n, z)| (n.to_string(), labels(&[("zone", ZONES[*z])])))
                .collect()
        };
        for op in ops {
            seconds += 1;
            let now = at(seconds);
            let before = held(&s);
            match op {
                Op::Assign { node, handle } => {
                    let handle = format!("h{handle}");
                    if s.handle(&handle).is_some() {
                        continue;
                    }
                    let zone = ZONES[zones[node]];
                    let Ok(planned) = s.plan_auto_assign(&request(&handle, NODES[node], zone), now)
                    else {
                        continue;
                    };
                    let got: Vec<IpAddr> =
                        planned.ipv4.addresses.iter().map(|a| a.addr()).collect();
                    s.apply(planned.plan);
                    let mut expected = before.clone();
                    for address in got {
                        prop_assert!(expected.insert(address, handle.clone()).is_none());
                    }
                    prop_assert_eq!(held(&s), expected, "an assignment only adds");
                    let stale = unselected_empty(&s, NODES[node], &labels(&[("zone", zone)]), now);
                    prop_assert!(stale.is_empty(), "left behind after assigning: {:?}", stale);
                }
                Op::ReleaseHandle { handle, labelled } => {
                    let handle = format!("h{handle}");
                    let known = if labelled {
                        all_labels(&zones)
                    } else {
                        NodeLabels::new()
                    };
                    let Ok(planned) = s.plan_release_by_handle_with(&handle, now, &known) else {
                        continue;
                    };
                    s.apply(planned.plan);
                    let expected: BTreeMap<IpAddr, String> =
                        before.into_iter().filter(|(_, h)| *h != handle).collect();
                    prop_assert_eq!(held(&s), expected, "a release only takes the handle's");
                }
                Op::ReleaseAddress { pick, labelled } => {
                    let Some(address) = before.keys().nth(pick % before.len().max(1)).copied()
                    else {
                        continue;
                    };
                    let known = if labelled {
                        all_labels(&zones)
                    } else {
                        NodeLabels::new()
                    };
                    let cidr = s.block_containing(address).unwrap().cidr();
                    let planned = s
                        .plan_release_with(&[ReleaseRequest::address(address)], now, &known)
                        .unwrap();
                    s.apply(planned.plan);
                    let mut expected = before.clone();
                    expected.remove(&address);
                    prop_assert_eq!(held(&s), expected, "a release only takes its address");
                    // ensureConsistentAffinity: with labels known, the
                    // block it emptied does not stay affine unselected.
                    if labelled && cooldown == 0 {
                        for (node, zone) in NODES.iter().zip(&zones) {
                            let stale =
                                unselected_empty(&s, node, &labels(&[("zone", ZONES[*zone])]), now);
                            prop_assert!(!stale.contains(&cidr), "{} stayed after release", cidr);
                        }
                    }
                }
                Op::Relabel { node, zone } => zones[node] = zone,
                Op::SwapSelectors => {
                    swapped = !swapped;
                    s = with_pools(&s, pools(swapped));
                }
                Op::Wait { seconds: more } => seconds += more,
            }
            handles_agree(&s)?;
            // No affinity ever loses a block that holds addresses: every
            // held address's block is still there (checked by `held`), and
            // every confirmed affinity's block, if any, is its node's.
            for affinity in s.affinities() {
                if let Some(block) = s.block(&affinity.cidr) {
                    prop_assert!(block.owner().is_some_and(|o| o.is_host(&affinity.node)));
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

        #[test]
        fn affinities_stay_consistent_and_no_address_is_lost_or_doubled(
            cooldown in prop_oneof![Just(0u32), Just(20u32)],
            ops in proptest::collection::vec(op(), 1..80),
        ) {
            run(cooldown, ops)?;
        }
    }
}
