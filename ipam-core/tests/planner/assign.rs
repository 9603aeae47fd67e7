//! Automatic assignment and AssignIP: blocks, limits, borrowing, pools,
//! reservations and bridge edges.

use super::*;

#[test]
fn first_assignment_claims_a_block_in_two_phases_with_the_handle_before_the_block() {
    let s = world(vec![pool("p", "10.0.0.0/16", 26)], IpamConfig::default());
    let plan = plan(&s, "h1", "n1", 1, 0, 0).unwrap();
    assert_eq!(kinds(&plan.plan.writes(&s)), CLAIM_NEW_BLOCK);
    let address = plan.ipv4.addresses[0];
    assert_eq!(
        address.prefix_len(),
        26,
        "auto-assigned addresses keep the block mask"
    );
    assert_eq!(
        address.addr(),
        address.network(),
        "a fresh block hands out its base address"
    );
    let Write::CreateBlock(created) = &plan.plan.writes(&s)[1] else {
        panic!()
    };
    assert!(created.is_empty(), "the claim creates the block empty");
    assert_eq!(created.owner().unwrap().to_string(), "host:n1");
    assert_eq!(created.claim_time(), Some("2023-11-14T22:13:20Z"));
    // Created at `now` in nanoseconds (Calico's newBlock) ...
    assert_eq!(created.sequence_number(), T0);
    let Write::UpdateBlock(b) = &plan.plan.writes(&s)[4] else {
        panic!()
    };
    assert_eq!(b.owner().unwrap().to_string(), "host:n1");
    // ... the address handed out at that number, then raised by the update.
    assert_eq!(b.sequence_number(), T0 + 1);
    assert_eq!(b.sequence_number_of(0), T0);
}

#[test]
fn steady_state_costs_one_handle_write_and_one_block_write() {
    let mut s = world(vec![pool("p", "10.0.0.0/16", 26)], IpamConfig::default());
    assign(&mut s, "h1", "n1", 1);
    let plan = plan(&s, "h2", "n1", 1, 0, 1).unwrap();
    assert_eq!(
        kinds(&plan.plan.writes(&s)),
        ["create-handle", "update-block"]
    );
}

#[test]
fn a_node_fills_its_own_block_before_claiming_another() {
    let mut s = world(vec![pool("p", "10.0.0.0/24", 29)], IpamConfig::default());
    let first = assign(&mut s, "h1", "n1", 8);
    let blocks: std::collections::BTreeSet<_> = first
        .iter()
        .map(|a| {
            a.split('/')
                .next()
                .unwrap()
                .rsplit_once('.')
                .unwrap()
                .1
                .parse::<u32>()
                .unwrap()
                / 8
        })
        .collect();
    assert_eq!(blocks.len(), 1, "8 addresses fit one /29: {first:?}");
    let more = assign(&mut s, "h2", "n1", 1);
    assert!(!first.contains(&more[0]));
    assert_eq!(
        s.confirmed_blocks_of("n1", ipam_core::IpVersion::V4)
            .count(),
        2
    );
}

#[test]
fn a_request_larger_than_a_block_spans_blocks_with_one_handle_write() {
    let s = world(vec![pool("p", "10.0.0.0/24", 29)], IpamConfig::default());
    let plan = plan(&s, "big", "n1", 10, 0, 0).unwrap();
    assert_eq!(plan.ipv4.addresses.len(), 10);
    let handle_writes = plan
        .plan
        .writes(&s)
        .iter()
        .filter(|w| matches!(w, Write::CreateHandle(_)))
        .count();
    assert_eq!(handle_writes, 1);
    let Some(Write::CreateHandle(h)) = plan
        .plan
        .writes(&s)
        .into_iter()
        .find(|w| matches!(w, Write::CreateHandle(_)))
    else {
        panic!()
    };
    assert_eq!(h.total(), 10);
    assert_eq!(h.blocks().len(), 2);
}

#[test]
fn block_limit_is_enforced_even_with_strict_affinity_off() {
    // Calico 3.32 caps a host at 20 blocks when maxBlocksPerHost is 0.
    let mut s = world(vec![pool("p", "10.0.0.0/16", 32)], IpamConfig::default());
    assign(&mut s, "h", "n1", 20);
    let err = plan(&s, "h2", "n1", 1, 0, 0).unwrap_err();
    assert_eq!(
        err,
        Error::BlockLimitReached {
            node: "n1".into(),
            version: ipam_core::IpVersion::V4,
            limit: 20
        }
    );
}

#[test]
fn configured_block_limit_refuses_a_new_block() {
    let mut s = world(vec![pool("p", "10.0.0.0/24", 30)], strict(1));
    assign(&mut s, "h", "n1", 4);
    let err = plan(&s, "h2", "n1", 1, 0, 0).unwrap_err();
    assert!(
        matches!(err, Error::BlockLimitReached { limit: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("n1"));
}

#[test]
fn auto_allocate_off_refuses_when_no_affine_block_has_room() {
    let config = IpamConfig {
        strict_affinity: true,
        auto_allocate_blocks: false,
        ..IpamConfig::default()
    };
    let s = world(vec![pool("p", "10.0.0.0/24", 30)], config);
    let err = plan(&s, "h", "n1", 1, 0, 0).unwrap_err();
    assert!(matches!(err, Error::AutoAllocateDisabled { .. }), "{err}");
}

#[test]
fn with_strict_affinity_off_a_node_borrows_when_no_block_is_free() {
    // Two /30 blocks: n1 and n2 each claim one, n1 fills its own.
    let mut s = world(vec![pool("p", "10.0.0.0/29", 30)], IpamConfig::default());
    assign(&mut s, "a", "n1", 4);
    assign(&mut s, "b", "n2", 1);
    let got = assign(&mut s, "c", "n1", 2);
    assert_eq!(got.len(), 2, "n1 borrows from n2's block");
    let n2_block = s
        .confirmed_blocks_of("n2", ipam_core::IpVersion::V4)
        .next()
        .unwrap();
    assert_eq!(s.block(&n2_block).unwrap().allocated_count(), 3);
    // Without `node` attributes, borrowing cannot be told apart (as in calicoctl).
    assert_eq!(borrowed(&s), (Vec::new(), 7));
}

#[test]
fn borrowed_addresses_are_listed_with_the_borrowing_node() {
    let mut s = world(vec![pool("p", "10.0.0.0/29", 30)], IpamConfig::default());
    let request = |handle: &str, node: &str, n: u32| {
        let mut r = AutoAssignRequest::new(HandleId::new(handle), NodeName::new(node), n, 0);
        r.attributes = [("node", node), ("namespace", "ns"), ("pod", handle)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        r
    };
    for (h, n, count) in [("a", "n1", 4), ("b", "n2", 1), ("c", "n1", 1)] {
        let plan = s.plan_auto_assign(&request(h, n, count), at(0)).unwrap();
        s.apply(plan.plan);
    }
    let (list, unclassified) = borrowed(&s);
    assert_eq!(unclassified, 0);
    assert_eq!(list.len(), 1);
    assert_eq!(
        (
            list[0].borrowing_node.as_str(),
            list[0].block_owner.as_str()
        ),
        ("n1", "n2")
    );
    assert_eq!(
        (list[0].kind.as_str(), list[0].allocated_to.as_str()),
        ("pod", "ns/c")
    );
    let figures = usage(&s);
    assert_eq!(
        figures.pools[0]
            .blocks
            .iter()
            .map(|b| b.borrowed)
            .sum::<u32>(),
        1
    );
}

#[test]
fn with_strict_affinity_on_a_node_never_borrows() {
    let mut s = world(vec![pool("p", "10.0.0.0/29", 30)], strict(0));
    assign(&mut s, "a", "n1", 4);
    assign(&mut s, "b", "n2", 1);
    let plan = plan(&s, "c", "n1", 2, 0, 0).unwrap();
    assert!(plan.ipv4.addresses.is_empty());
    assert_eq!(
        plan.ipv4.shortfall,
        vec![Shortfall::StrictAffinityNoFreeBlocks]
    );
    assert!(plan.plan.is_empty());
}

#[test]
fn an_exhausted_pool_gives_fewer_addresses_and_says_why() {
    let mut s = world(vec![pool("p", "10.0.0.0/30", 30)], IpamConfig::default());
    let plan = plan(&s, "a", "n1", 6, 0, 0).unwrap();
    assert_eq!(plan.ipv4.addresses.len(), 4);
    assert_eq!(
        plan.ipv4.shortfall[0].to_string(),
        "No IPs available in pools: [10.0.0.0/30]"
    );
    s.apply(plan.plan);
    assert_eq!(usage(&s).pools[0].in_use, 4);
}

#[test]
fn pools_whose_node_selector_does_not_match_are_not_used() {
    let mut zoned = PoolSpec {
        block_size: Some(26),
        ..PoolSpec::new("10.1.0.0/16".parse().unwrap())
    };
    zoned.node_selector = "zone == 'a'".into();
    let s = world(
        vec![Pool::new("zoned", zoned).unwrap()],
        IpamConfig::default(),
    );
    let err = plan(&s, "h", "n1", 1, 0, 0).unwrap_err();
    assert!(matches!(err, Error::NoPoolForNode { .. }), "{err}");
    let mut in_zone = AutoAssignRequest::new(HandleId::new("h"), NodeName::new("n1"), 1, 0);
    in_zone.node_labels = [("zone".to_string(), "a".to_string())].into();
    assert_eq!(
        s.plan_auto_assign(&in_zone, at(0))
            .unwrap()
            .ipv4
            .addresses
            .len(),
        1
    );
}

#[test]
fn disabled_pools_are_skipped_and_refused_when_requested() {
    let mut off = PoolSpec::new("10.2.0.0/16".parse().unwrap());
    off.disabled = true;
    let s = world(
        vec![
            Pool::new("off", off).unwrap(),
            pool("on", "10.3.0.0/16", 26),
        ],
        IpamConfig::default(),
    );
    let plan = plan(&s, "h", "n1", 1, 0, 0).unwrap();
    assert!(plan.ipv4.addresses[0].to_string().starts_with("10.3."));
    let mut asks_disabled = AutoAssignRequest::new(HandleId::new("h"), NodeName::new("n1"), 1, 0);
    asks_disabled.ipv4_pools = vec!["10.2.0.0/16".parse().unwrap()];
    assert_eq!(
        s.plan_auto_assign(&asks_disabled, at(0)).unwrap_err(),
        Error::RequestedPoolUnavailable {
            pool: "10.2.0.0/16".parse().unwrap()
        }
    );
}

#[test]
fn requested_pools_override_selectors_and_must_be_of_the_right_family() {
    let mut manual = PoolSpec::new("10.5.0.0/16".parse().unwrap());
    manual.node_selector = "!all()".into();
    let s = world(
        vec![
            Pool::new("manual", manual).unwrap(),
            pool("auto", "10.6.0.0/16", 26),
        ],
        IpamConfig::default(),
    );
    let mut request = AutoAssignRequest::new(HandleId::new("h"), NodeName::new("n1"), 1, 0);
    request.ipv4_pools = vec!["10.5.0.0/16".parse().unwrap()];
    let plan = s.plan_auto_assign(&request, at(0)).unwrap();
    assert!(plan.ipv4.addresses[0].to_string().starts_with("10.5."));
    request.ipv4_pools = vec!["fd00::/48".parse().unwrap()];
    assert!(matches!(
        s.plan_auto_assign(&request, at(0)),
        Err(Error::PoolFamilyMismatch { .. })
    ));
}

#[test]
fn pools_not_allowing_the_use_are_not_used() {
    let mut tunnel_only = PoolSpec::new("10.7.0.0/16".parse().unwrap());
    tunnel_only.allowed_uses = vec![AllowedUse::Tunnel];
    let s = world(
        vec![Pool::new("t", tunnel_only).unwrap()],
        IpamConfig::default(),
    );
    let err = plan(&s, "h", "n1", 1, 0, 0).unwrap_err();
    assert!(err.to_string().contains("Workload"), "{err}");
    let mut tunnel = AutoAssignRequest::new(
        HandleId::new("vxlan-tunnel-addr-n1"),
        NodeName::new("n1"),
        1,
        0,
    );
    tunnel.intended_use = AllowedUse::Tunnel;
    assert!(s.plan_auto_assign(&tunnel, at(0)).is_ok());
}

#[test]
fn reserved_addresses_are_never_auto_assigned() {
    let reservation = ReservationSpec {
        reserved_cidrs: vec![
            "10.0.0.0/30".parse().unwrap(),
            "10.0.0.5/32".parse().unwrap(),
        ],
        unknown: Default::default(),
    };
    let mut s = Snapshot::new(
        IpamConfig::default(),
        vec![pool("p", "10.0.0.0/29", 29)],
        &[reservation],
    );
    let got = assign(&mut s, "h", "n1", 8);
    assert_eq!(got, ["10.0.0.4/29", "10.0.0.6/29", "10.0.0.7/29"]);
}

/// A request for one address that a bridge network will use with the
/// pool's prefix, its gateway excluded.
fn on_bridge(handle: &str, node: &str, v4: u32, v6: u32, gateway: &str) -> AutoAssignRequest {
    let mut request = AutoAssignRequest::new(HandleId::new(handle), NodeName::new(node), v4, v6);
    request.exclude = vec![ip(gateway).into()];
    request.usable_with_pool_prefix = true;
    request
}

#[test]
fn a_bridge_request_never_gets_the_pools_network_broadcast_or_gateway() {
    // Nodes spread their blocks by name, so the first and last blocks (the
    // ones holding the edges) are reached only once the pool fills up.
    let mut s = world(vec![pool("p", "10.0.0.0/27", 29)], IpamConfig::default());
    let mut got = Vec::new();
    for i in 0..40 {
        let node = ["n1", "n2", "n3"][i % 3];
        let planned = s
            .plan_auto_assign(&on_bridge(&format!("h{i}"), node, 1, 0, "10.0.0.1"), at(0))
            .unwrap();
        got.extend(planned.ipv4.addresses.iter().map(|a| a.addr()));
        s.apply(planned.plan);
    }
    got.sort();
    let usable: Vec<IpAddr> = (2..31).map(|i| ip(&format!("10.0.0.{i}"))).collect();
    assert_eq!(got, usable, "every address but .0, .1 (gateway) and .31");
    // Without the request's exclusions the same addresses are ordinary.
    let plain = plan(&s, "plain", "n1", 3, 0, 0).unwrap();
    let mut plain: Vec<String> = plain
        .ipv4
        .addresses
        .iter()
        .map(|a| a.addr().to_string())
        .collect();
    plain.sort();
    assert_eq!(plain, ["10.0.0.0", "10.0.0.1", "10.0.0.31"]);
}

#[test]
fn a_block_holding_only_excluded_addresses_is_never_claimed() {
    // /32 blocks: the network and broadcast addresses are whole blocks.
    let s = world(vec![pool("p", "10.0.0.0/30", 32)], IpamConfig::default());
    let mut request = AutoAssignRequest::new(HandleId::new("h"), NodeName::new("n1"), 4, 0);
    request.usable_with_pool_prefix = true;
    let planned = s.plan_auto_assign(&request, at(0)).unwrap();
    let mut got: Vec<String> = planned
        .ipv4
        .addresses
        .iter()
        .map(ToString::to_string)
        .collect();
    got.sort();
    assert_eq!(got, ["10.0.0.1/32", "10.0.0.2/32"]);
    assert_eq!(
        planned.ipv4.shortfall,
        [Shortfall::PoolsExhausted(vec!["10.0.0.0/30"
            .parse()
            .unwrap()])]
    );
    let created: Vec<String> = planned
        .plan
        .writes(&s)
        .iter()
        .filter_map(|w| match w {
            Write::CreateBlock(b) => Some(b.cidr().to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(created.len(), 2, "{created:?}");
    assert!(!created.contains(&"10.0.0.0/32".to_string()));
    assert!(!created.contains(&"10.0.0.3/32".to_string()));
}

#[test]
fn an_ipv6_bridge_request_skips_only_the_subnet_router_anycast_address() {
    let s = world(vec![pool("p6", "fd00::/126", 126)], IpamConfig::default());
    let mut request = AutoAssignRequest::new(HandleId::new("h"), NodeName::new("n1"), 0, 4);
    request.usable_with_pool_prefix = true;
    let planned = s.plan_auto_assign(&request, at(0)).unwrap();
    let got: Vec<String> = planned
        .ipv6
        .addresses
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(got, ["fd00::1/126", "fd00::2/126", "fd00::3/126"]);
}

#[test]
fn point_to_point_pools_have_no_unusable_edges() {
    for (cidr, size) in [
        ("10.0.0.0/31", 31),
        ("10.0.0.0/32", 32),
        ("fd00::/127", 127),
    ] {
        let p = pool("p", cidr, size);
        assert!(p.subnet_edges().is_empty(), "{cidr}");
    }
    assert_eq!(
        pool("p", "10.0.0.0/30", 30).subnet_edges(),
        [
            "10.0.0.0/32".parse().unwrap(),
            "10.0.0.3/32".parse().unwrap()
        ]
    );
}

#[test]
fn in_a_batch_each_request_keeps_its_own_exclusions() {
    let mut s = world(vec![pool("p", "10.0.0.0/29", 29)], IpamConfig::default());
    // A batch shares blocks that exist already.
    assert_eq!(assign(&mut s, "warm", "n1", 1), ["10.0.0.0/29"]);
    let requests = vec![
        on_bridge("bridge-a", "n1", 1, 0, "10.0.0.1"),
        AutoAssignRequest::new(HandleId::new("plain"), NodeName::new("n1"), 1, 0),
        on_bridge("bridge-b", "n1", 1, 0, "10.0.0.1"),
    ];
    let batch = s.plan_auto_assign_batch(&requests, at(0));
    let got: Vec<String> = batch
        .outcomes
        .iter()
        .map(|o| o.as_ref().unwrap().0.addresses[0].to_string())
        .collect();
    // The plain request takes the head of the queue (.1, the gateway); the
    // bridge ones skip it, and it keeps its place for the plain one.
    assert_eq!(got, ["10.0.0.2/29", "10.0.0.1/29", "10.0.0.3/29"]);
}

#[test]
fn dual_stack_fails_whole_when_one_family_has_no_pool() {
    let s = world(vec![pool("v4", "10.0.0.0/16", 26)], IpamConfig::default());
    let err = plan(&s, "h", "n1", 1, 1, 0).unwrap_err();
    assert!(matches!(
        err,
        Error::NoPoolForNode {
            version: ipam_core::IpVersion::V6,
            ..
        }
    ));
}

#[test]
fn dual_stack_assigns_both_families_in_one_plan() {
    let mut s = world(
        vec![pool("v4", "10.0.0.0/16", 26), pool("v6", "fd00::/48", 122)],
        IpamConfig::default(),
    );
    let plan = plan(&s, "h", "n1", 1, 1, 0).unwrap();
    assert_eq!(plan.ipv6.addresses[0].prefix_len(), 122);
    let handle_writes = plan
        .plan
        .writes(&s)
        .iter()
        .filter(|w| matches!(w, Write::CreateHandle(_)))
        .count();
    assert_eq!(handle_writes, 1);
    s.apply(plan.plan);
    assert_eq!(addresses_of_handle(&s, "h").len(), 2);
}

#[test]
fn assign_ip_claims_the_block_and_refuses_an_address_in_use() {
    let mut s = world(vec![pool("p", "10.0.0.0/16", 26)], IpamConfig::default());
    let request = AssignIpRequest {
        handle: HandleId::new("h"),
        node: NodeName::new("n1"),
        address: ip("10.0.3.7"),
        attributes: BTreeMap::new(),
    };
    let plan = s.plan_assign_ip(&request, at(0)).unwrap();
    assert_eq!(kinds(&plan.writes(&s)), CLAIM_NEW_BLOCK);
    s.apply(plan);
    let again = AssignIpRequest {
        handle: HandleId::new("other"),
        ..request.clone()
    };
    assert_eq!(
        s.plan_assign_ip(&again, at(0)).unwrap_err(),
        Error::AddressInUse {
            address: ip("10.0.3.7"),
            handle: "h".into()
        }
    );
    let outside = AssignIpRequest {
        address: ip("192.168.0.1"),
        ..request
    };
    assert_eq!(
        s.plan_assign_ip(&outside, at(0)).unwrap_err(),
        Error::AddressNotInPool {
            address: ip("192.168.0.1")
        }
    );
}

#[test]
fn assign_ip_in_another_nodes_block_is_refused_under_strict_affinity() {
    let mut s = world(vec![pool("p", "10.0.0.0/16", 26)], strict(0));
    let got = assign(&mut s, "h", "n1", 1);
    let taken: ipnet::IpNet = got[0].parse().unwrap();
    let request = AssignIpRequest {
        handle: HandleId::new("x"),
        node: NodeName::new("n2"),
        address: taken.hosts().nth(3).unwrap(),
        attributes: BTreeMap::new(),
    };
    assert!(matches!(
        s.plan_assign_ip(&request, at(0)),
        Err(Error::StrictAffinityViolation { .. })
    ));
    let mut relaxed = s.clone();
    relaxed.set_config(IpamConfig::default());
    assert!(relaxed.plan_assign_ip(&request, at(0)).is_ok());
}
