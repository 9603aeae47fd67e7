//! Findings about nodes, pools and affinities.

use super::*;

#[test]
fn an_affinity_for_a_gone_node_is_reported_but_a_virtual_one_is_not() {
    let mut c = cluster();
    let free: BlockCidr = "10.0.200.0/26".parse().unwrap();
    c.s.insert_affinity(Affinity::new("gone", free, AffinityState::PendingDeletion));
    let mut virtual_affinity = Affinity::new(
        "lb",
        "10.0.201.0/26".parse().unwrap(),
        AffinityState::Confirmed,
    );
    virtual_affinity.affinity_type = Some("virtual".into());
    c.s.insert_affinity(virtual_affinity);
    let report = c.report();
    let found = only(&report, FindingKind::AffinityNodeGone);
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].block, found[0].node.as_deref()),
        (Some(free), Some("gone"))
    );
    assert!(found[0].message.contains("pending"), "{}", found[0].message);
    assert!(report.is_consistent());
}

#[test]
fn a_block_affine_to_a_gone_node_is_reported_but_a_virtual_one_is_not() {
    let mut c = cluster();
    let orphan: BlockCidr = "10.0.200.0/26".parse().unwrap();
    c.s.insert_block(Block::new(
        orphan,
        Some(BlockOwner::Host("gone".into())),
        None,
        T0,
    ));
    let lb: BlockCidr = "10.0.201.0/26".parse().unwrap();
    c.s.insert_block(Block::new(
        lb,
        Some(BlockOwner::Virtual("lb".into())),
        None,
        T0,
    ));
    let report = c.report();
    let found = only(&report, FindingKind::BlockNodeGone);
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].block, found[0].node.as_deref()),
        (Some(orphan), Some("gone"))
    );
    assert!(report.is_consistent());
}

#[test]
fn when_a_node_goes_its_blocks_affinities_and_allocations_are_reported() {
    let mut c = cluster();
    c.nodes.remove("n3");
    let report = c.report();
    assert_eq!(
        kinds(&report),
        [
            FindingKind::BlockNodeGone,
            FindingKind::AffinityNodeGone,
            FindingKind::AllocationNodeGone
        ]
        .into()
    );
    let n3_blocks = c.s.affinities_of("n3").count() as u64;
    let n3_addresses =
        c.s.blocks()
            .flat_map(|b| {
                b.allocations()
                    .map(|(_, a)| a.secondary().get("node"))
                    .collect::<Vec<_>>()
            })
            .filter(|n| *n == Some("n3"))
            .count() as u64;
    let by_kind = &report.summary.findings_by_kind;
    assert_eq!(by_kind[&FindingKind::BlockNodeGone], n3_blocks);
    assert_eq!(by_kind[&FindingKind::AffinityNodeGone], n3_blocks);
    assert_eq!(by_kind[&FindingKind::AllocationNodeGone], n3_addresses);
    assert!(report
        .findings
        .iter()
        .all(|f| f.node.as_deref() == Some("n3")));
    assert!(report.is_consistent());
}

#[test]
fn a_block_outside_every_pool_is_orphaned_but_not_inconsistent() {
    let mut c = cluster();
    let outside: BlockCidr = "192.168.0.0/26".parse().unwrap();
    c.s.insert_block(Block::new(
        outside,
        Some(BlockOwner::Host("n1".into())),
        None,
        T0,
    ));
    let report = c.report();
    let found = only(&report, FindingKind::OrphanedBlock);
    assert_eq!((found.len(), found[0].block), (1, Some(outside)));
    assert!(report.is_consistent());
}

#[test]
fn every_pair_of_overlapping_pools_is_reported_once() {
    let pools = vec![
        pool("a", "10.0.0.0/16", 26),
        pool("b", "10.0.1.0/24", 26),
        pool("c", "10.1.0.0/16", 26),
        pool("d", "10.0.0.0/16", 26),
        pool("v6", "fd00::/112", 122),
    ];
    let s = Snapshot::new(IpamConfig::default(), pools, &[]);
    let report = check(&s, &Liveness::default(), NOW);
    assert_eq!(only(&report, FindingKind::PoolsOverlap).len(), 3);
    assert_eq!(
        report.findings[0].message,
        "pool a (10.0.0.0/16) overlaps pool b (10.0.1.0/24)"
    );
    assert_eq!(
        report
            .findings
            .iter()
            .map(|f| f.pool.as_deref())
            .collect::<Vec<_>>(),
        [Some("a"), Some("a"), Some("b")]
    );
    assert!(!report.is_consistent(), "overlapping pools contradict");
}

#[test]
fn a_pending_affinity_is_reported_once_older_than_a_claim_can_take() {
    let pools = vec![pool("v4", "10.0.0.0/16", 26), pool("v6", "fd00::/112", 122)];
    let mut c = Cluster {
        s: Snapshot::new(IpamConfig::default(), pools, &[]),
        pods: BTreeSet::new(),
        nodes: BTreeSet::new(),
        step: 0,
    };
    c.add_pod("n1", "web");
    c.add_pod("n4", "db");
    let n1_block = c.v4_block_of("web");
    let n4_block = c.v4_block_of("db");
    let missing: BlockCidr = "10.0.255.0/26".parse().unwrap();
    // n2 lost n1's block and left its pending affinity behind; n4's
    // own claim stopped before confirming; n3's died before creating
    // its block.
    c.s.insert_affinity(Affinity::new("n2", n1_block, AffinityState::Pending));
    c.s.insert_affinity(Affinity::new("n4", n4_block, AffinityState::Pending));
    c.s.insert_affinity(Affinity::new("n3", missing, AffinityState::Pending));
    let claimed = |seconds: i64| Now {
        unix_nanos: T0 + (seconds as u64) * 1_000_000_000,
    };
    let stale = |now: Now| -> Vec<(String, BlockCidr)> {
        let report = check(&c.s, &Liveness::default(), now);
        assert!(report.is_consistent(), "a leftover, not a contradiction");
        only(&report, FindingKind::StalePendingAffinity)
            .iter()
            .map(|f| (f.node.clone().unwrap(), f.block.unwrap()))
            .collect()
    };
    // Undated: at once. Dated by the blocks' claim time: not while a
    // claim could still be under way.
    let undated = vec![("n3".to_string(), missing)];
    assert_eq!(stale(NOW), undated);
    assert_eq!(
        stale(claimed(PENDING_AFFINITY_MAX_AGE_SECONDS - 1)),
        undated
    );
    let mut all = vec![
        ("n2".to_string(), n1_block),
        ("n4".to_string(), n4_block),
        ("n3".to_string(), missing),
    ];
    all.sort_by_key(|(_, block)| *block);
    assert_eq!(stale(claimed(PENDING_AFFINITY_MAX_AGE_SECONDS)), all);
    let report = check(&c.s, &Liveness::default(), claimed(600));
    let messages: Vec<String> = only(&report, FindingKind::StalePendingAffinity)
        .into_iter()
        .map(|f| f.message)
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("host:n1 claimed the block 600 s ago")
                && m.starts_with("affinity of node n2")),
        "{messages:#?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("the node claimed the block 600 s ago")
                && m.contains("never confirmed")),
        "{messages:#?}"
    );
}
