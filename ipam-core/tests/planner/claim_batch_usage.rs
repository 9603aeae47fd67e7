//! Usage, address status, claims of a CIDR, batches and large pools.

use super::*;

#[test]
fn usage_counts_per_pool_and_lists_orphaned_blocks() {
    let mut s = world(
        vec![pool("a", "10.0.0.0/24", 26), pool("b", "10.1.0.0/24", 26)],
        IpamConfig::default(),
    );
    assign(&mut s, "h", "n1", 3);
    let figures = usage(&s);
    assert_eq!(
        figures
            .pools
            .iter()
            .map(|p| (p.name.as_str(), p.capacity, p.in_use))
            .collect::<Vec<_>>(),
        [("a", 256, 3), ("b", 256, 0)]
    );
    assert_eq!(figures.pools[0].blocks[0].owner.as_deref(), Some("n1"));
    // Drop pool "a": its block becomes orphaned.
    let mut orphaned = world(vec![pool("b", "10.1.0.0/24", 26)], IpamConfig::default());
    for b in s.blocks() {
        orphaned.insert_block(b.clone());
    }
    assert_eq!(usage(&orphaned).orphaned_blocks.len(), 1);
}

#[test]
fn address_status_tells_in_use_free_and_outside() {
    let mut s = world(vec![pool("p", "10.0.0.0/24", 26)], IpamConfig::default());
    let got = assign(&mut s, "h", "n1", 1);
    let used = got[0].parse::<ipnet::IpNet>().unwrap().addr();
    assert!(
        matches!(address_status(&s, used, at(0)), AddressStatus::InUse { handle: Some(ref h), .. } if h == "h")
    );
    assert_eq!(
        address_status(&s, ip("10.0.0.200"), at(0)),
        AddressStatus::Free { pool: "p".into() }
    );
    assert_eq!(
        address_status(&s, ip("10.9.0.1"), at(0)),
        AddressStatus::NotInPool
    );
}

#[test]
fn nodes_start_their_search_in_different_places() {
    let mut s = world(vec![pool("p", "10.0.0.0/16", 26)], IpamConfig::default());
    let a = assign(&mut s, "a", "node-a", 1);
    let b = assign(&mut s, "b", "node-b", 1);
    assert_ne!(
        a[0].rsplit_once('.').unwrap().0,
        b[0].rsplit_once('.').unwrap().0
    );
}

#[test]
fn claiming_a_cidr_creates_free_blocks_keeps_our_own_and_reports_others() {
    let mut s = world(vec![pool("p", "10.0.0.0/24", 26)], IpamConfig::default());
    assign(&mut s, "h-b", "node-b", 1);
    let taken_by_b = s.blocks().next().unwrap().cidr();
    let claim = s
        .plan_claim_affinity("node-a", "10.0.0.0/24".parse().unwrap(), at(0))
        .unwrap();
    assert_eq!(claim.failed, vec![taken_by_b]);
    assert_eq!(claim.claimed.len(), 3);
    assert!(!claim.claimed.contains(&taken_by_b));
    // Three blocks, each claimed in two phases, no handle touched.
    assert_eq!(
        kinds(&claim.plan.writes(&s)),
        [
            "create-affinity-pending",
            "create-block",
            "affinity-confirmed"
        ]
        .repeat(3)
    );
    s.apply(claim.plan);
    let again = s
        .plan_claim_affinity("node-a", "10.0.0.0/24".parse().unwrap(), at(1))
        .unwrap();
    assert!(
        again.plan.is_empty(),
        "claiming what the node holds writes nothing"
    );
    assert_eq!(again.claimed.len(), 3);
    for cidr in &again.claimed {
        let key = AffinityKey {
            node: "node-a".into(),
            cidr: *cidr,
        };
        assert_eq!(s.affinity(&key).unwrap().state, AffinityState::Confirmed);
    }
}

#[test]
fn claiming_outside_a_pool_or_below_block_size_is_refused() {
    let s = world(vec![pool("p", "10.0.0.0/24", 26)], IpamConfig::default());
    let refuse = |cidr: &str| {
        s.plan_claim_affinity("n", cidr.parse().unwrap(), at(0))
            .unwrap_err()
            .to_string()
    };
    assert!(refuse("10.1.0.0/26")
        .contains("The requested CIDR (10.1.0.0/26) is not within any configured pools."));
    assert!(refuse("10.0.0.0/27")
        .contains("The requested CIDR (10.0.0.0/27) is smaller than the minimum."));
    assert!(refuse("10.0.0.64/25").contains("not aligned"));
}

#[test]
fn a_batch_shares_one_block_write_and_matches_planning_one_by_one() {
    let s = world(vec![pool("p", "10.0.0.0/16", 26)], IpamConfig::default());
    let mut one_by_one = s.clone();
    let first = assign(&mut one_by_one, "warm", "n1", 1);
    let mut batched = s.clone();
    assert_eq!(assign(&mut batched, "warm", "n1", 1), first);
    let requests: Vec<AutoAssignRequest> = (0..5)
        .map(|i| AutoAssignRequest::new(HandleId::new(format!("h{i}")), NodeName::new("n1"), 1, 0))
        .collect();
    let batch = batched.plan_auto_assign_batch(&requests, at(1));
    // Five handles, one block.
    assert_eq!(
        kinds(&batch.plan.writes(&batched)),
        [["create-handle"; 5].as_slice(), &["update-block"]].concat()
    );
    let got: Vec<String> = batch
        .outcomes
        .iter()
        .map(|o| o.as_ref().unwrap().0.addresses[0].to_string())
        .collect();
    let expected: Vec<String> = (0..5)
        .map(|i| assign(&mut one_by_one, &format!("h{i}"), "n1", 1)[0].clone())
        .collect();
    assert_eq!(
        got, expected,
        "the same addresses as one request after another"
    );
}

#[test]
fn a_refused_request_in_a_batch_leaves_no_trace() {
    let s = world(vec![pool("p", "10.0.0.0/16", 26)], IpamConfig::default());
    let mut bad = AutoAssignRequest::new(HandleId::new("bad"), NodeName::new("n1"), 1, 0);
    bad.ipv4_pools = vec!["10.9.0.0/16".parse().unwrap()];
    let requests = vec![
        AutoAssignRequest::new(HandleId::new("a"), NodeName::new("n1"), 1, 0),
        bad,
        AutoAssignRequest::new(HandleId::new("b"), NodeName::new("n1"), 1, 0),
    ];
    let batch = s.plan_auto_assign_batch(&requests, at(0));
    assert!(batch.outcomes[0].is_ok() && batch.outcomes[2].is_ok());
    assert!(matches!(
        batch.outcomes[1],
        Err(Error::RequestedPoolUnavailable { .. })
    ));
    let mut applied = s.clone();
    applied.apply(batch.plan);
    assert!(applied.handle("bad").is_none());
    let held: Vec<String> = ["a", "b"]
        .iter()
        .flat_map(|h| addresses_of_handle(&applied, h))
        .map(|a| a.to_string())
        .collect();
    assert_eq!(held.len(), 2);
    assert_ne!(held[0], held[1]);
}

#[test]
fn a_pool_of_every_ipv6_address_is_planned_and_counted_without_overflow() {
    // Calico accepts ::/0; it holds 2^128 addresses and, in /128 blocks,
    // 2^128 blocks: one more than a u128, so both saturate.
    let s = world(vec![pool("everything", "::/0", 128)], IpamConfig::default());
    assert_eq!(usage(&s).pools[0].capacity, u128::MAX);
    let planned = plan(&s, "h", "n", 0, 1, 0).unwrap();
    assert_eq!(planned.ipv6.addresses.len(), 1, "{planned:?}");
}

#[test]
fn releases_and_assignments_planned_together_write_a_shared_block_once() {
    let mut s = world(vec![pool("p", "10.0.0.0/16", 26)], IpamConfig::default());
    let old: Vec<String> = ["r1", "r2"]
        .iter()
        .flat_map(|h| assign(&mut s, h, "n1", 1))
        .collect();
    let requests: Vec<AutoAssignRequest> = ["a", "b"]
        .iter()
        .map(|h| AutoAssignRequest::new(HandleId::new(*h), NodeName::new("n1"), 1, 0))
        .collect();
    let labels = ipam_core::planner::NodeLabels::new();
    let mixed = s
        .plan_release_and_assign(&["r1", "r2"], &requests, at(1), &labels)
        .unwrap()
        .expect("the block released from has room, and is n1's");
    let mut written = kinds(&mixed.plan.writes(&s));
    written.sort();
    assert_eq!(
        written,
        [
            "create-handle",
            "create-handle",
            "delete-handle",
            "delete-handle",
            "update-block"
        ]
    );
    let released: Vec<Vec<String>> = mixed
        .released
        .iter()
        .map(|r| r.iter().map(|a| format!("{a}/26")).collect())
        .collect();
    assert_eq!(released, [vec![old[0].clone()], vec![old[1].clone()]]);

    // The same as releasing, then assigning, one plan after another.
    let mut one_after_another = s.clone();
    for handle in ["r1", "r2"] {
        let planned = one_after_another
            .plan_release_by_handle(handle, at(1))
            .unwrap();
        one_after_another.apply(planned.plan);
    }
    let batch = one_after_another.plan_auto_assign_batch(&requests, at(1));
    one_after_another.apply(batch.plan);
    let mut together = s.clone();
    together.apply(mixed.plan);
    for handle in ["r1", "r2"] {
        assert!(together.handle(handle).is_none(), "{handle} is deleted");
    }
    for (request, outcome) in requests.iter().zip(&mixed.outcomes) {
        let handle = request.handle.as_str();
        let answered = &outcome.as_ref().unwrap().0.addresses;
        assert_eq!(&addresses_of_handle(&together, handle), answered);
        assert_eq!(addresses_of_handle(&one_after_another, handle), *answered);
    }
}

#[test]
fn releases_planned_with_assignments_refuse_an_unknown_handle() {
    let mut s = world(vec![pool("p", "10.0.0.0/16", 26)], IpamConfig::default());
    assign(&mut s, "r", "n1", 1);
    let request = AutoAssignRequest::new(HandleId::new("a"), NodeName::new("n1"), 1, 0);
    let labels = ipam_core::planner::NodeLabels::new();
    let refused = s
        .plan_release_and_assign(&["r", "gone"], &[request], at(1), &labels)
        .unwrap_err();
    assert!(
        matches!(&refused, Error::HandleNotFound { handle } if handle == "gone"),
        "{refused}"
    );
}
