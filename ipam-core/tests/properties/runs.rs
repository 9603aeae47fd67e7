//! Properties of every run: no address held twice, attributes and
//! handles that agree with blocks, lossless round trips, refusals that
//! change nothing, strict affinity and bridge requests.

use super::*;

proptest! {
    #![proptest_config(ProptestConfig {
        cases: CASES,
        max_shrink_iters: MAX_SHRINK_ITERS,
        ..ProptestConfig::default()
    })]

    #[test]
    fn no_address_is_ever_held_by_two_handles(scenario in scenario()) {
        let mut cluster = Cluster::new(&scenario.world);
        let mut model: BTreeMap<IpAddr, String> = BTreeMap::new();
        for step in &scenario.steps {
            match cluster.step(step) {
                Outcome::AutoAssigned { handle, ipv4, ipv6 } => {
                    for address in ipv4.addresses.iter().chain(&ipv6.addresses) {
                        let holder = model.insert(address.addr(), handle.clone());
                        prop_assert_eq!(holder, None, "{} handed to {} when held", address, handle);
                    }
                }
                Outcome::Assigned { handle, address } => {
                    let holder = model.insert(address, handle.clone());
                    prop_assert_eq!(holder, None, "{} assigned to {} while held", address, handle);
                }
                Outcome::Released(addresses) => {
                    for address in addresses {
                        let holder = model.remove(&address);
                        prop_assert!(holder.is_some(), "{} released but not held", address);
                    }
                }
                Outcome::NodeReleased | Outcome::Refused(_) | Outcome::NothingHeld => {}
            }
            prop_assert_eq!(&holders(&cluster.snapshot), &model, "after {:?}", step);
        }
    }

    #[test]
    fn every_allocation_has_one_attribute_and_handles_agree_with_blocks(
        scenario in scenario()
    ) {
        let mut cluster = Cluster::new(&scenario.world);
        for step in &scenario.steps {
            cluster.step(step);
            check_handles_agree_with_blocks(&cluster.snapshot)?;
        }
    }

    #[test]
    fn releases_and_assignments_planned_together_equal_one_after_another(
        scenario in scenario()
    ) {
        let mut cluster = Cluster::new(&scenario.world);
        for (index, step) in scenario.steps.iter().enumerate() {
            cluster.step(step);
            // Up to two handles held now, released while two fresh
            // requests of one node are assigned, as a server's lane
            // serves them together.
            let node = &scenario.world.nodes[index % scenario.world.nodes.len()];
            let on_node = |address: &IpAddr| {
                let owner = cluster.snapshot.block_containing(*address).and_then(|b| b.owner());
                matches!(owner, Some(BlockOwner::Host(n)) if n == node)
            };
            let mut handles: Vec<String> = holders(&cluster.snapshot)
                .into_iter()
                .filter(|(address, _)| on_node(address))
                .map(|(_, handle)| handle)
                .collect();
            handles.sort();
            handles.dedup();
            handles.truncate(2);
            let requests: Vec<AutoAssignRequest> = (0..2)
                .map(|i| {
                    let mut request = AutoAssignRequest::new(
                        HandleId::new(format!("together-{index}-{i}")),
                        NodeName::new(node),
                        1,
                        0,
                    );
                    request.attributes = node_attribute(node);
                    request
                })
                .collect();
            let names: Vec<&str> = handles.iter().map(String::as_str).collect();
            let labels = ipam_core::planner::NodeLabels::new();
            let mixed = cluster
                .snapshot
                .plan_release_and_assign(&names, &requests, cluster.now, &labels)
                .expect("every handle named is held");
            let Some(mixed) = mixed else {
                continue;
            };
            let mut one_after_another = cluster.snapshot.clone();
            let mut released = Vec::new();
            for handle in &names {
                let planned = one_after_another
                    .plan_release_by_handle(handle, cluster.now)
                    .expect("held");
                released.push(planned.released);
                one_after_another.apply(planned.plan);
            }
            let batch = one_after_another.plan_auto_assign_batch(&requests, cluster.now);
            one_after_another.apply(batch.plan);
            let mut together = cluster.snapshot.clone();
            together.apply(mixed.plan);
            prop_assert_eq!(&mixed.released, &released, "after step {}", index);
            check_handles_agree_with_blocks(&together)?;
            let held = holders(&together);
            for (request, outcome) in requests.iter().zip(&mixed.outcomes) {
                for address in outcome.iter().flat_map(|(v4, _)| &v4.addresses) {
                    prop_assert_eq!(
                        held.get(&address.addr()),
                        Some(&request.handle.as_str().to_string()),
                        "after step {}", index
                    );
                }
            }
            prop_assert_eq!(
                format!("{:?}", mixed.outcomes),
                format!("{:?}", batch.outcomes),
                "after step {}", index
            );
            prop_assert_eq!(held, holders(&one_after_another), "after step {}", index);
        }
    }

    #[test]
    fn released_ordinals_go_to_the_back_of_the_queue(scenario in scenario()) {
        let mut cluster = Cluster::new(&scenario.world);
        for step in &scenario.steps {
            let outcome = cluster.step(step);
            if !matches!(step.operation, Operation::ReleaseAddress { .. }) {
                continue;
            }
            let addresses = match outcome {
                Outcome::Released(addresses) => addresses,
                Outcome::NothingHeld => continue,
                other => {
                    let message = format!("releasing a held address gave {other:?}");
                    return Err(TestCaseError::fail(message));
                }
            };
            prop_assert_eq!(addresses.len(), 1, "released {:?}", addresses);
            // A block left empty and without affinity is deleted.
            if let Some((block, ordinal)) = ordinal_of(&cluster.snapshot, addresses[0]) {
                let unallocated = block.to_spec().unallocated;
                prop_assert_eq!(unallocated.last(), Some(&ordinal), "in {}", block.cidr());
            }
        }
    }

    #[test]
    fn blocks_and_handles_round_trip_losslessly(scenario in scenario()) {
        let mut cluster = Cluster::new(&scenario.world);
        for step in &scenario.steps {
            cluster.step(step);
            check_round_trips(&cluster.snapshot)?;
        }
    }

    #[test]
    fn releasing_everything_leaves_no_leak(scenario in scenario()) {
        let mut cluster = Cluster::new(&scenario.world);
        for step in &scenario.steps {
            cluster.step(step);
        }
        let handles: Vec<String> =
            cluster.snapshot.handles().map(|h| h.id().to_string()).collect();
        for handle in handles {
            let planned = cluster.snapshot.plan_release_by_handle(&handle, cluster.now);
            prop_assert!(planned.is_ok(), "releasing handle {} gave {:?}", handle, planned);
            cluster.apply_release(planned);
        }
        let snapshot = &cluster.snapshot;
        prop_assert_eq!(holders(snapshot), BTreeMap::new());
        let handles: Vec<&str> = snapshot.handles().map(Handle::id).collect();
        prop_assert!(handles.is_empty(), "handles left: {:?}", handles);
        for pool in usage(snapshot).pools {
            prop_assert_eq!(pool.in_use, 0, "in pool {}: {:?}", pool.cidr, pool.blocks);
        }
    }

    #[test]
    fn a_failed_plan_changes_nothing(scenario in scenario()) {
        check_failed_plans_change_nothing(&scenario)?;
    }

    #[test]
    fn retried_lookup_returns_the_same_addresses(scenario in scenario()) {
        let mut cluster = Cluster::new(&scenario.world);
        for step in &scenario.steps {
            let Operation::AutoAssign { handle, .. } = &step.operation else {
                cluster.step(step);
                continue;
            };
            let mut expected = addresses_of_handle(&cluster.snapshot, handle);
            if let Outcome::AutoAssigned { ipv4, ipv6, .. } = cluster.step(step) {
                expected.extend(ipv4.addresses);
                expected.extend(ipv6.addresses);
            }
            let mut found = addresses_of_handle(&cluster.snapshot, handle);
            expected.sort();
            found.sort();
            prop_assert_eq!(found, expected, "addresses of {} after {:?}", handle, step);
        }
    }

    #[test]
    fn auto_assigned_addresses_come_from_pools_of_their_family(scenario in scenario()) {
        let mut cluster = Cluster::new(&scenario.world);
        for step in &scenario.steps {
            let Outcome::AutoAssigned { ipv4, ipv6, .. } = cluster.step(step) else {
                continue;
            };
            for (family, version) in [(&ipv4, IpVersion::V4), (&ipv6, IpVersion::V6)] {
                let got = family.addresses.len() as u32;
                prop_assert!(
                    got <= family.requested,
                    "{} of {} {} addresses",
                    got,
                    family.requested,
                    version
                );
                prop_assert_eq!(
                    got < family.requested,
                    !family.shortfall.is_empty(),
                    "{} of {} {} addresses, shortfall {:?}",
                    got,
                    family.requested,
                    version,
                    family.shortfall
                );
                for address in &family.addresses {
                    let pool = cluster.snapshot.pool_of(address.addr());
                    prop_assert!(
                        pool.is_some_and(|p| {
                            p.version() == version && p.block_size() == address.prefix_len()
                        }),
                        "{} {} came from pool {:?}",
                        version,
                        address,
                        pool.map(|p| p.cidr())
                    );
                }
            }
        }
    }

    #[test]
    fn under_strict_affinity_nodes_take_addresses_only_from_their_own_blocks(
        scenario in strict_affinity_scenario()
    ) {
        let mut cluster = Cluster::new(&scenario.world);
        for step in &scenario.steps {
            let (node, addresses): (&str, Vec<IpAddr>) =
                match (&step.operation, cluster.step(step)) {
                    (
                        Operation::AutoAssign { node, .. },
                        Outcome::AutoAssigned { ipv4, ipv6, .. },
                    ) => {
                        let all = ipv4.addresses.iter().chain(&ipv6.addresses);
                        (node, all.map(IpNet::addr).collect())
                    }
                    (Operation::AssignIp { node, .. }, Outcome::Assigned { address, .. }) => {
                        (node, vec![address])
                    }
                    _ => continue,
                };
            for address in addresses {
                let owner = cluster.snapshot.block_containing(address).and_then(Block::owner);
                prop_assert!(
                    owner.is_some_and(|o| o.is_host(node)),
                    "{} went to {} from a block owned by {:?}",
                    address,
                    node,
                    owner
                );
            }
        }
    }

    #[test]
    fn a_bridge_request_never_gets_its_pools_edges_or_an_excluded_address(
        scenario in scenario()
    ) {
        // Every other automatic assignment is a bridge network's: its
        // pool's network and broadcast addresses and each pool's first host
        // (the gateway) are excluded; the rest are plain and take whatever
        // comes, edges included, so the two kinds share blocks and queues.
        let mut cluster = Cluster::new(&scenario.world);
        let gateways: Vec<IpNet> = cluster
            .snapshot
            .pools()
            .iter()
            .map(|p| {
                let first = ipam_core::cidr::to_u128(p.cidr().network()) + 1;
                IpNet::from(ipam_core::cidr::from_u128(first, p.version()))
            })
            .collect();
        let mut bridge = false;
        for step in &scenario.steps {
            let Operation::AutoAssign { node, handle, ipv4, ipv6 } = &step.operation else {
                cluster.step(step);
                continue;
            };
            bridge = !bridge;
            if !bridge {
                cluster.step(step);
                continue;
            }
            cluster.now.unix_nanos += step.seconds_later * NANOS_PER_SECOND;
            let mut request = AutoAssignRequest::new(HandleId::new(handle), NodeName::new(node), *ipv4, *ipv6);
            request.attributes = node_attribute(node);
            request.exclude = gateways.clone();
            request.usable_with_pool_prefix = true;
            let Ok(planned) = cluster.snapshot.plan_auto_assign(&request, cluster.now) else {
                continue;
            };
            for address in planned.ipv4.addresses.iter().chain(&planned.ipv6.addresses) {
                let address = address.addr();
                let pool = cluster.snapshot.pool_of(address).expect("from a pool");
                let mut unusable = pool.subnet_edges();
                unusable.extend(&gateways);
                prop_assert!(
                    !unusable.iter().any(|u| u.contains(&address)),
                    "{} of pool {} handed to a bridge request at {:?}",
                    address,
                    pool.cidr(),
                    step
                );
            }
            cluster.snapshot.apply(planned.plan);
        }
    }
}
