//! Findings about blocks and their allocations: handles, pods, nodes,
//! double allocations and a block's own bookkeeping.

use super::*;

#[test]
fn an_allocation_whose_handle_is_gone_is_reported_with_its_owner() {
    let mut c = cluster();
    c.s.remove_handle("k8s-pod-network.n2-4");
    let report = c.report();
    let found = only(&report, FindingKind::HandleMissing);
    assert_eq!(found.len(), 2, "one per family");
    for f in &found {
        assert_eq!(f.handle.as_deref(), Some("k8s-pod-network.n2-4"));
        assert_eq!(
            (f.pod.as_deref(), f.namespace.as_deref(), f.node.as_deref()),
            (Some("n2-4"), Some("default"), Some("n2"))
        );
        assert!(f.message.contains("doesn't exist"), "{}", f.message);
    }
    assert_sequence_numbers_are_the_blocks(&c.s, &found);
    assert!(!report.is_consistent());
}

#[test]
fn windows_reserved_addresses_need_no_handle_object() {
    let mut c = cluster();
    let cidr = v4_block_with_room(&c.s);
    inject(
        &mut c.s,
        cidr,
        None,
        Some(WINDOWS_RESERVED_HANDLE),
        &[("note", "windows")],
    );
    assert_eq!(c.report().findings, vec![]);
}

#[test]
fn a_handle_without_allocations_is_reported_once() {
    let mut c = cluster();
    let cidr = c.v4_block_of("n1-1");
    hold(&mut c.s, "k8s-pod-network.ghost", cidr, 2);
    c.s.insert_handle(Handle::new("k8s-pod-network.empty"));
    let report = c.report();
    let found = only(&report, FindingKind::HandleWithoutAllocations);
    let handles: Vec<_> = found.iter().map(|f| f.handle.as_deref().unwrap()).collect();
    assert_eq!(handles, ["k8s-pod-network.empty", "k8s-pod-network.ghost"]);
    assert!(found
        .iter()
        .all(|f| f.block.is_none() && f.address.is_none()));
    assert!(
        found[1].message.contains(&cidr.to_string()),
        "{}",
        found[1].message
    );
    assert!(!report.is_consistent());
}

#[test]
fn handle_counts_that_differ_from_the_blocks_are_reported_per_block() {
    let mut c = cluster();
    // Records one more than its block holds.
    let own = c.v4_block_of("n1-1");
    hold(&mut c.s, "k8s-pod-network.n1-1", own, 1);
    // Records an address in a block that holds none for it.
    let elsewhere = c.v4_block_of("n3-1");
    hold(&mut c.s, "k8s-pod-network.n2-1", elsewhere, 1);
    // Records nothing where its block holds one.
    let mut h = c.s.handle("k8s-pod-network.n2-2").unwrap().clone();
    let v4 = c.v4_block_of("n2-2");
    h.decrement(v4, 1).unwrap();
    c.s.insert_handle(h);
    let report = c.report();
    let mut found: Vec<_> = only(&report, FindingKind::HandleCountMismatch)
        .into_iter()
        .map(|f| {
            (
                f.handle.unwrap(),
                f.block.unwrap(),
                f.recorded_by_handle,
                f.held_in_block,
            )
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            ("k8s-pod-network.n1-1".to_string(), own, Some(2), Some(1)),
            (
                "k8s-pod-network.n2-1".to_string(),
                elsewhere,
                Some(1),
                Some(0)
            ),
            ("k8s-pod-network.n2-2".to_string(), v4, Some(0), Some(1)),
        ]
    );
    assert!(!report.is_consistent());
}

#[test]
fn an_allocation_without_a_handle_id_is_reported() {
    let mut c = cluster();
    let cidr = v4_block_with_room(&c.s);
    let ordinal = inject(&mut c.s, cidr, None, None, &[]);
    let report = c.report();
    let found = only(&report, FindingKind::AllocationWithoutHandle);
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].block, found[0].ordinal, found[0].handle.as_deref()),
        (Some(cidr), Some(ordinal), None)
    );
    assert_eq!(found[0].address, Some(cidr.address(ordinal)));
    assert_sequence_numbers_are_the_blocks(&c.s, &found);
    assert!(!report.is_consistent());
}

#[test]
fn the_addresses_of_a_pod_that_is_gone_are_leaks_with_their_sequence_numbers() {
    let mut c = cluster();
    c.pods.remove(&pod("n3-5"));
    let report = c.report();
    let found = only(&report, FindingKind::PodGone);
    assert_eq!(found.len(), 2, "one per family");
    assert!(found
        .iter()
        .all(|f| f.handle.as_deref() == Some("k8s-pod-network.n3-5")));
    assert_sequence_numbers_are_the_blocks(&c.s, &found);
    // Taken when the pod started, after the blocks were created.
    assert!(found.iter().all(|f| f.sequence_number > Some(T0)));
    assert!(report.is_consistent(), "a leak is not an inconsistency");
}

#[test]
fn an_allocation_for_a_gone_node_is_reported() {
    let mut c = cluster();
    let cidr = v4_block_with_room(&c.s);
    let handle = "vxlan-tunnel-addr-gone";
    inject(
        &mut c.s,
        cidr,
        None,
        Some(handle),
        &[("node", "gone"), ("type", "vxlanTunnelAddress")],
    );
    hold(&mut c.s, handle, cidr, 1);
    let report = c.report();
    let found = only(&report, FindingKind::AllocationNodeGone);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].handle.as_deref(), Some(handle));
    assert_sequence_numbers_are_the_blocks(&c.s, &found);
    assert!(report.is_consistent());
}

#[test]
fn an_empty_node_or_pod_names_nothing_to_find_gone() {
    let mut c = cluster();
    let cidr = v4_block_with_room(&c.s);
    let empty_node: &[(&str, &str)] = &[("namespace", "default"), ("pod", "gone"), ("node", "")];
    let empty_pod: &[(&str, &str)] = &[("namespace", "default"), ("pod", ""), ("node", "n1")];
    for (handle, pairs) in [("empty-node", empty_node), ("empty-pod", empty_pod)] {
        inject(&mut c.s, cidr, None, Some(handle), pairs);
        hold(&mut c.s, handle, cidr, 1);
    }
    let report = c.report();
    // Pod "gone" is gone; node "" is no node, so no gone node called ""
    // is reported, and a pod named "" is no pod.
    let found = only(&report, FindingKind::PodGone);
    assert_eq!(found.len(), 1, "{found:#?}");
    let f = &found[0];
    assert_eq!(
        (
            f.handle.as_deref(),
            f.namespace.as_deref(),
            f.pod.as_deref(),
            f.node.as_deref()
        ),
        (Some("empty-node"), Some("default"), Some("gone"), None)
    );
}

#[test]
fn an_address_allocated_in_two_overlapping_blocks_is_reported_for_both() {
    let mut c = cluster();
    // n1's tunnel address is the base of its first block and never released.
    let big = c.s.handle("ipip-tunnel-addr-n1").unwrap().blocks()[0].0;
    assert!(c.s.block(&big).unwrap().is_allocated(0));
    let small = BlockCidr::new(IpNet::new(big.net().network(), 28).unwrap()).unwrap();
    c.s.insert_block(Block::new(small, None, None, T0 + 1_000));
    let ordinal = inject(&mut c.s, small, Some(0), Some("dup"), &[]);
    hold(&mut c.s, "dup", small, 1);
    let report = c.report();
    let found = only(&report, FindingKind::AddressAllocatedTwice);
    let places: Vec<_> = found
        .iter()
        .map(|f| (f.block.unwrap(), f.ordinal.unwrap()))
        .collect();
    assert_eq!(places, [(big, 0), (small, ordinal)]);
    assert!(found.iter().all(|f| f.address == Some(big.address(0))));
    assert_eq!(found[0].handle.as_deref(), Some("ipip-tunnel-addr-n1"));
    assert_eq!(found[1].handle.as_deref(), Some("dup"));
    assert!(
        found[0].message.contains(&small.to_string()),
        "{}",
        found[0].message
    );
    assert_sequence_numbers_are_the_blocks(&c.s, &found);
    assert_ne!(found[0].sequence_number, found[1].sequence_number);
    assert!(!report.is_consistent());
}

#[test]
fn overlapping_blocks_that_share_no_allocated_address_report_nothing() {
    let mut c = cluster();
    let big =
        c.s.blocks()
            .find(|b| b.cidr().version() == IpVersion::V4 && b.unallocated_len() > 0)
            .unwrap();
    let free = (0..big.cidr().size())
        .find(|&o| !big.is_allocated(o))
        .unwrap();
    let address = big.cidr().address(free);
    let small = BlockCidr::new(IpNet::new(address, 30).unwrap().trunc()).unwrap();
    c.s.insert_block(Block::new(small, None, None, T0));
    inject(
        &mut c.s,
        small,
        small.ordinal_of(address),
        Some("alone"),
        &[],
    );
    hold(&mut c.s, "alone", small, 1);
    assert_eq!(c.report().findings, vec![]);
}

/// An edit of a stored block.
type Damage = Box<dyn Fn(&mut crate::block::BlockSpec)>;

#[test]
fn each_problem_a_block_has_with_itself_is_its_own_finding() {
    let c = cluster();
    let cidr = v4_block_with_room(&c.s);
    let spec = c.s.block(&cidr).unwrap().to_spec();
    let allocated = spec.allocations.iter().position(Option::is_some).unwrap() as u32;
    let free = spec.unallocated[0];
    let cases: Vec<(FindingKind, Damage)> = vec![
        (
            FindingKind::AllocatedButListedFree,
            Box::new(move |s| s.unallocated.push(allocated)),
        ),
        (
            FindingKind::LostOrdinal,
            Box::new(move |s| s.unallocated.retain(|&o| o != free)),
        ),
        (
            FindingKind::ListedFreeTwice,
            Box::new(move |s| s.unallocated.push(free)),
        ),
        (
            FindingKind::UnusedAttribute,
            Box::new(|s| {
                s.attributes.push(
                    AttributeParts {
                        handle_id: Some("stale".into()),
                        ..AttributeParts::default()
                    }
                    .into(),
                )
            }),
        ),
    ];
    for (kind, damage) in cases {
        let mut s = c.s.clone();
        let mut spec = spec.clone();
        damage(&mut spec);
        let attribute_count = spec.attributes.len() as u32;
        s.insert_block(Block::from_spec(spec).unwrap());
        let report = check(&s, &c.live(), NOW);
        let found = only(&report, kind);
        assert_eq!(found.len(), 1, "{kind:?}");
        let f = &found[0];
        assert_eq!(f.block, Some(cidr));
        match kind {
            FindingKind::AllocatedButListedFree => {
                assert_eq!(f.ordinal, Some(allocated));
                assert!(f.handle.is_some());
                assert_sequence_numbers_are_the_blocks(&s, &found);
            }
            FindingKind::LostOrdinal | FindingKind::ListedFreeTwice => {
                assert_eq!(
                    (f.ordinal, f.address),
                    (Some(free), Some(cidr.address(free)))
                );
            }
            _ => {
                assert_eq!(f.attribute_index, Some(attribute_count - 1));
                assert_eq!(f.handle.as_deref(), Some("stale"));
            }
        }
        assert!(!report.is_consistent(), "{kind:?}");
    }
}
