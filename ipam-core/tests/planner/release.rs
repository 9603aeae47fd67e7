//! Releases, affinities released and blocks reclaimed.

use super::*;

#[test]
fn release_frees_the_address_and_deletes_the_emptied_handle_after_the_block() {
    let mut s = world(vec![pool("p", "10.0.0.0/16", 26)], IpamConfig::default());
    let got = assign(&mut s, "h", "n1", 2);
    let first: ipnet::IpNet = got[0].parse().unwrap();
    let plan = s
        .plan_release(&[ReleaseRequest::address(first.addr())], at(0))
        .unwrap();
    assert_eq!(
        kinds(&plan.plan.writes(&s)),
        ["update-block", "update-handle"]
    );
    assert_eq!(plan.released, vec![first.addr()]);
    s.apply(plan.plan);
    let second: ipnet::IpNet = got[1].parse().unwrap();
    let plan = s
        .plan_release(
            &[
                ReleaseRequest::address(second.addr()),
                ReleaseRequest::address(ip("172.16.0.1")),
            ],
            at(0),
        )
        .unwrap();
    assert_eq!(
        kinds(&plan.plan.writes(&s)),
        ["update-block", "delete-handle"]
    );
    assert_eq!(plan.already_free, vec![ip("172.16.0.1")]);
    s.apply(plan.plan);
    assert!(s.handle("h").is_none());
    // The affine block stays, empty, for the node's next pod.
    assert_eq!(s.blocks().count(), 1);
}

#[test]
fn a_stale_release_fails_and_writes_nothing() {
    let mut s = world(vec![pool("p", "10.0.0.0/16", 26)], IpamConfig::default());
    let got = assign(&mut s, "h", "n1", 1);
    let address = got[0].parse::<ipnet::IpNet>().unwrap().addr();
    let stale = ReleaseRequest {
        address,
        handle: None,
        sequence_number: Some(1),
    };
    assert!(matches!(
        s.plan_release(&[stale], at(0)),
        Err(Error::SequenceNumberMismatch { .. })
    ));
    let wrong = ReleaseRequest {
        address,
        handle: Some(HandleId::new("not-h")),
        sequence_number: None,
    };
    assert!(matches!(
        s.plan_release(&[wrong], at(0)),
        Err(Error::HandleMismatch { .. })
    ));
}

#[test]
fn release_by_handle_frees_every_block_and_deletes_the_handle() {
    let mut s = world(vec![pool("p", "10.0.0.0/24", 29)], IpamConfig::default());
    assign(&mut s, "big", "n1", 10);
    assign(&mut s, "small", "n1", 1);
    let plan = s.plan_release_by_handle("big", at(0)).unwrap();
    assert_eq!(plan.released.len(), 10);
    assert_eq!(
        kinds(&plan.plan.writes(&s)),
        ["update-block", "update-block", "delete-handle"]
    );
    s.apply(plan.plan);
    assert_eq!(addresses_of_handle(&s, "small").len(), 1);
    assert_eq!(
        s.plan_release_by_handle("big", at(0)).unwrap_err(),
        Error::HandleNotFound {
            handle: "big".into()
        }
    );
}

#[test]
fn release_by_handle_rewrites_a_block_that_shows_none_of_its_count_and_drops_a_missing_one() {
    let mut s = world(vec![pool("p", "10.0.0.0/24", 26)], IpamConfig::default());
    assign(&mut s, "other", "n1", 1);
    let existing = s.blocks().next().unwrap().clone();
    let missing: BlockCidr = block("10.0.0.192/26");
    // The handle counts an address in the node's block that the block does
    // not show (an assignment between its handle write and its block
    // write), and one in a block that does not exist.
    let mut h = ipam_core::Handle::new("h");
    h.increment(existing.cidr(), 1);
    h.increment(missing, 1);
    s.insert_handle(h);
    let plan = s.plan_release_by_handle("h", at(0)).unwrap();
    assert!(plan.released.is_empty());
    // The block is rewritten anyway, its sequence number raised, so that
    // the assignment planned on it fails its compare-and-swap; the missing
    // block is not written; the handle goes.
    assert_eq!(
        kinds(&plan.plan.writes(&s)),
        ["update-block", "delete-handle"]
    );
    let Write::UpdateBlock(fenced) = &plan.plan.writes(&s)[0] else {
        panic!()
    };
    assert_eq!(fenced.cidr(), existing.cidr());
    assert_eq!(fenced.sequence_number(), existing.sequence_number() + 1);
    assert_eq!(
        fenced.allocations().count(),
        existing.allocations().count(),
        "nothing else changes"
    );
}

#[test]
fn releasing_an_empty_blocks_affinity_deletes_the_block() {
    let mut s = world(vec![pool("p", "10.0.0.0/16", 26)], IpamConfig::default());
    let got = assign(&mut s, "h", "n1", 1);
    let cidr = s.blocks().next().unwrap().cidr();
    assert!(matches!(
        s.plan_release_affinity("n1", cidr, true, at(0)),
        Err(Error::BlockNotEmpty { in_use: 1, .. })
    ));
    let address = got[0].parse::<ipnet::IpNet>().unwrap().addr();
    let plan = s
        .plan_release(&[ReleaseRequest::address(address)], at(0))
        .unwrap();
    s.apply(plan.plan);
    let plan = s.plan_release_affinity("n1", cidr, true, at(0)).unwrap();
    assert_eq!(
        kinds(&plan.writes(&s)),
        [
            "affinity-pending-deletion",
            "delete-block",
            "delete-affinity"
        ]
    );
    s.apply(plan);
    assert_eq!(s.blocks().count(), 0);
    assert!(s
        .affinity(&AffinityKey {
            node: "n1".into(),
            cidr
        })
        .is_none());
    assert!(matches!(
        s.plan_release_affinity("n1", cidr, false, at(0)),
        Err(Error::AffinityNotFound { .. })
    ));
}

#[test]
fn releasing_a_deleted_node_orphans_its_used_blocks_and_deletes_its_empty_ones() {
    let mut s = world(vec![pool("p", "10.0.0.0/24", 29)], IpamConfig::default());
    assign(&mut s, "h", "gone", 9);
    let plan = s.plan_release_by_handle("h", at(0)).unwrap();
    s.apply(plan.plan);
    assign(&mut s, "h2", "gone", 1);
    let plan = s.plan_release_node("gone", at(0));
    s.apply(plan);
    assert_eq!(s.affinities().count(), 0);
    let remaining: Vec<_> = s.blocks().collect();
    assert_eq!(
        remaining.len(),
        1,
        "the used block stays, the empty one goes"
    );
    assert!(remaining[0].owner().is_none());
    // Releasing its last address now deletes the unowned block (Calico does).
    let address = addresses_of_handle(&s, "h2")[0].addr();
    let plan = s
        .plan_release(&[ReleaseRequest::address(address)], at(0))
        .unwrap();
    assert_eq!(
        kinds(&plan.plan.writes(&s)),
        ["delete-block", "delete-handle"]
    );
}

#[test]
fn another_nodes_empty_block_is_reclaimed_only_after_a_minute() {
    let mut s = world(vec![pool("p", "10.0.0.0/30", 30)], IpamConfig::default());
    s.apply(plan(&s, "h", "n1", 1, 0, 0).unwrap().plan);
    s.apply(s.plan_release_by_handle("h", at(0)).unwrap().plan);
    // n1's block is empty but claimed just now: n2 borrows from it instead.
    let early = plan(&s, "x", "n2", 1, 0, 30).unwrap();
    assert!(!kinds(&early.plan.writes(&s)).contains(&"delete-block"));
    let late = plan(&s, "x", "n2", 1, 0, 61).unwrap();
    assert_eq!(
        kinds(&late.plan.writes(&s)),
        [
            &[
                "affinity-pending-deletion",
                "delete-block",
                "delete-affinity"
            ][..],
            &CLAIM_NEW_BLOCK[..]
        ]
        .concat()
    );
    s.apply(late.plan);
    assert_eq!(
        s.confirmed_blocks_of("n2", ipam_core::IpVersion::V4)
            .collect::<Vec<_>>(),
        vec![block("10.0.0.0/30")]
    );
    assert_eq!(
        s.confirmed_blocks_of("n1", ipam_core::IpVersion::V4)
            .count(),
        0
    );
}
