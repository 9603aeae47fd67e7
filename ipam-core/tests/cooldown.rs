//! IP cooldown in the planner, rule by rule, against Calico's behaviour
//! (projectcalico/calico #12638 and #13075: libcalico-go/lib/ipam/
//! ipam_block.go release, releaseByHandle, garbageCollect, assign;
//! kube-controllers' garbageCollectColdIPs). Time is an argument: each test
//! says at which second each step happens.

use std::net::IpAddr;

use ipam_core::check::{check, FindingKind, Liveness};
use ipam_core::usage::{address_status, borrowed, usage, AddressStatus};
use ipam_core::{
    AssignIpRequest, AutoAssignRequest, BlockCidr, Error, IpamConfig, Now, Pool, PoolSpec,
    ReleaseRequest, Snapshot, Write,
};
use ipam_core::{HandleId, NodeName};

/// 2026-01-01T00:00:00Z, a whole second.
const T0: u64 = 1_767_225_600;

/// The cooldown the tests configure.
const COOLDOWN: u32 = 30;

fn at(seconds: f64) -> Now {
    Now {
        unix_nanos: T0 * 1_000_000_000 + (seconds * 1e9) as u64,
    }
}

/// One pool of `blocks` blocks of eight addresses from 10.0.0.0, and the
/// given cooldown.
fn world(cooldown: u32, blocks: u32) -> Snapshot {
    let prefix = 29 - blocks.trailing_zeros() as u8;
    let spec = PoolSpec {
        block_size: Some(29),
        ..PoolSpec::new(format!("10.0.0.0/{prefix}").parse().unwrap())
    };
    let config = IpamConfig {
        ip_cooldown_seconds: cooldown,
        ..IpamConfig::default()
    };
    Snapshot::new(config, vec![Pool::new("p", spec).unwrap()], &[])
}

/// The address at `ordinal` of the block holding `address`.
fn nth(s: &Snapshot, address: IpAddr, ordinal: u32) -> IpAddr {
    s.block_containing(address).unwrap().cidr().address(ordinal)
}

/// Assigns `count` addresses to `handle` on `node` at `seconds`.
fn assign(s: &mut Snapshot, handle: &str, node: &str, count: u32, seconds: f64) -> Vec<IpAddr> {
    let planned = s
        .plan_auto_assign(
            &AutoAssignRequest::new(HandleId::new(handle), NodeName::new(node), count, 0),
            at(seconds),
        )
        .unwrap();
    let got = planned.ipv4.addresses.iter().map(|a| a.addr()).collect();
    s.apply(planned.plan);
    got
}

fn release_handle(s: &mut Snapshot, handle: &str, seconds: f64) -> Vec<IpAddr> {
    let planned = s.plan_release_by_handle(handle, at(seconds)).unwrap();
    s.apply(planned.plan);
    planned.released
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn cidr(text: &str) -> BlockCidr {
    text.parse().unwrap()
}

/// Fills node n1's first block with pods a..h, one address each, at second
/// 0; returns its base address.
fn full_block(s: &mut Snapshot) -> IpAddr {
    let base = assign(s, "a", "n1", 1, 0.0)[0];
    for pod in ["b", "c", "d", "e", "f", "g", "h"] {
        assign(s, pod, "n1", 1, 0.0);
    }
    base
}

#[test]
fn a_released_address_is_not_reused_within_its_cooldown_and_is_after() {
    let mut s = world(COOLDOWN, 2);
    // A nearly full block: seven of eight held, its last address free.
    let base = assign(&mut s, "a", "n1", 1, 0.0)[0];
    for pod in ["b", "c", "d", "e", "f", "g"] {
        assign(&mut s, pod, "n1", 1, 0.0);
    }
    let released = nth(&s, base, 2);
    assert_eq!(release_handle(&mut s, "c", 10.5), vec![released]);
    // Within the cooldown the next pod gets the free address, and the one
    // after a new block rather than the released address.
    assert_eq!(assign(&mut s, "x", "n1", 1, 11.0), vec![nth(&s, base, 7)]);
    let y = assign(&mut s, "y", "n1", 1, 40.9)[0];
    assert!(!s.block_containing(base).unwrap().cidr().net().contains(&y));
    // Released at 10.5 s (stored as second 10): free from second 41.
    assert_eq!(assign(&mut s, "z", "n1", 1, 41.0), vec![released]);
}

#[test]
fn with_no_cooldown_a_release_frees_the_address_at_once() {
    let mut s = world(0, 1);
    let base = full_block(&mut s);
    let c = nth(&s, base, 2);
    assert_eq!(release_handle(&mut s, "c", 1.0), vec![c]);
    let block = s.block_containing(base).unwrap();
    assert!(!block.is_allocated(2));
    assert_eq!(block.released().count(), 0);
    assert_eq!(assign(&mut s, "x", "n1", 1, 1.0), vec![c]);
}

#[test]
fn a_released_address_is_nobodys_and_its_handle_goes() {
    let mut s = world(COOLDOWN, 1);
    assign(&mut s, "keep", "n1", 1, 0.0);
    assign(&mut s, "h", "n1", 2, 0.0);
    let planned = s.plan_release_by_handle("h", at(5.0)).unwrap();
    let kinds: Vec<bool> = planned
        .plan
        .writes(&s)
        .iter()
        .map(|w| matches!(w, Write::DeleteHandle(id) if id == "h"))
        .collect();
    assert_eq!(
        kinds,
        [false, true],
        "the block, then the handle's deletion"
    );
    s.apply(planned.plan);
    assert!(s.handle("h").is_none());
    let block = s.block(&cidr("10.0.0.0/29")).unwrap();
    assert_eq!(block.allocated_count(), 3, "still in use");
    assert_eq!(block.ordinals_of_handle("h").count(), 0, "but nobody's");
    // Releasing again finds nothing: the handle is gone, and its
    // addresses released by address are reported as not held.
    assert!(matches!(
        s.plan_release_by_handle("h", at(6.0)),
        Err(Error::HandleNotFound { .. })
    ));
    let again = s
        .plan_release(&[ReleaseRequest::address(ip("10.0.0.1"))], at(6.0))
        .unwrap();
    assert!(again.plan.is_empty());
    assert_eq!(again.already_free, vec![ip("10.0.0.1")]);
}

#[test]
fn release_by_address_with_a_cooldown_updates_the_handle_count() {
    let mut s = world(COOLDOWN, 1);
    assign(&mut s, "h", "n1", 2, 0.0);
    let planned = s
        .plan_release(&[ReleaseRequest::address(ip("10.0.0.0"))], at(1.0))
        .unwrap();
    s.apply(planned.plan);
    let handle = s.handle("h").unwrap();
    assert_eq!(handle.count_in(&cidr("10.0.0.0/29")), 1);
}

#[test]
fn an_explicit_request_for_an_address_in_cooldown_is_refused_until_it_has_passed() {
    let mut s = world(COOLDOWN, 1);
    assign(&mut s, "h", "n1", 1, 0.0);
    release_handle(&mut s, "h", 0.0);
    let request = AssignIpRequest {
        handle: ipam_core::HandleId::new("h2"),
        node: ipam_core::NodeName::new("n1"),
        address: ip("10.0.0.0"),
        attributes: Default::default(),
    };
    let refused = s.plan_assign_ip(&request, at(30.0)).unwrap_err();
    assert_eq!(
        refused,
        Error::AddressInCooldown {
            address: ip("10.0.0.0"),
            released_at: "2026-01-01T00:00:00Z".into(),
            free_from: "2026-01-01T00:00:31Z".into(),
        }
    );
    // Calico refuses it as already assigned (ipam_block.go, assign).
    assert!(
        refused
            .to_string()
            .contains("with error: Address already assigned in block"),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("ipCooldownSeconds"),
        "{refused}"
    );
    let plan = s.plan_assign_ip(&request, at(31.0)).unwrap();
    s.apply(plan);
    let block = s.block(&cidr("10.0.0.0/29")).unwrap();
    assert_eq!(block.ordinals_of_handle("h2").collect::<Vec<_>>(), [0]);
    assert!(block.problems().is_empty());
}

#[test]
fn a_full_block_whose_released_addresses_cooled_has_room_again() {
    let mut s = world(COOLDOWN, 1);
    full_block(&mut s);
    release_handle(&mut s, "e", 0.0);
    assert_eq!(s.block(&cidr("10.0.0.0/29")).unwrap().unallocated_len(), 0);
    // The deallocation is written with the allocation, in one block write.
    let planned = s
        .plan_auto_assign(
            &AutoAssignRequest::new(HandleId::new("x"), NodeName::new("n1"), 1, 0),
            at(31.0),
        )
        .unwrap();
    assert_eq!(planned.ipv4.addresses[0].addr(), ip("10.0.0.4"));
    let block_writes = planned
        .plan
        .writes(&s)
        .iter()
        .filter(|w| matches!(w, Write::UpdateBlock(_)))
        .count();
    assert_eq!(block_writes, 1);
    s.apply(planned.plan);
    assert_eq!(s.block(&cidr("10.0.0.0/29")).unwrap().released().count(), 0);
}

#[test]
fn another_node_borrows_cooled_addresses_only() {
    // n1 holds both blocks of the pool; n2 must borrow.
    let mut s = world(COOLDOWN, 2);
    let a = assign(&mut s, "a", "n1", 8, 0.0);
    assign(&mut s, "b", "n1", 8, 0.0);
    release_handle(&mut s, "a", 0.0);
    let early = s
        .plan_auto_assign(
            &AutoAssignRequest::new(HandleId::new("x"), NodeName::new("n2"), 1, 0),
            at(30.0),
        )
        .unwrap();
    assert!(early.ipv4.addresses.is_empty(), "{early:?}");
    assert!(!early.ipv4.shortfall.is_empty());
    assert_eq!(assign(&mut s, "x", "n2", 1, 31.0), vec![a[0]]);
}

#[test]
fn a_block_with_addresses_in_cooldown_is_not_empty() {
    let mut s = world(COOLDOWN, 1);
    assign(&mut s, "h", "n1", 1, 0.0);
    release_handle(&mut s, "h", 0.0);
    let block = cidr("10.0.0.0/29");
    assert!(matches!(
        s.plan_release_affinity("n1", block, true, at(30.0)),
        Err(Error::BlockNotEmpty { in_use: 1, .. })
    ));
    // Once cooled it is read as empty and goes with its affinity.
    let plan = s
        .plan_release_affinity("n1", block, true, at(31.0))
        .unwrap();
    assert!(plan.writes(&s).contains(&Write::DeleteBlock(block)));
}

#[test]
fn another_nodes_block_in_cooldown_is_not_reclaimed() {
    let mut s = world(600, 16);
    // n1 holds all 16 blocks of the pool, each released into cooldown.
    for n in 0..16 {
        assign(&mut s, &format!("p{n}"), "n1", 8, 0.0);
        release_handle(&mut s, &format!("p{n}"), 0.0);
    }
    let planned = s
        .plan_auto_assign(
            &AutoAssignRequest::new(HandleId::new("x"), NodeName::new("n2"), 1, 0),
            at(120.0),
        )
        .unwrap();
    assert!(planned.ipv4.addresses.is_empty());
    let planned = s
        .plan_auto_assign(
            &AutoAssignRequest::new(HandleId::new("x"), NodeName::new("n2"), 1, 0),
            at(601.0),
        )
        .unwrap();
    assert_eq!(planned.ipv4.addresses.len(), 1);
    assert!(planned
        .plan
        .writes(&s)
        .iter()
        .any(|w| matches!(w, Write::DeleteBlock(_))));
}

#[test]
fn the_backstop_writes_only_blocks_whose_earliest_release_has_cooled() {
    let mut s = world(COOLDOWN, 2);
    let a = assign(&mut s, "a", "n1", 1, 0.0)[0];
    assign(&mut s, "b", "n1", 1, 0.0);
    let c = assign(&mut s, "c", "n2", 1, 0.0)[0];
    let (n1_block, n2_block) = (
        s.block_containing(a).unwrap().cidr(),
        s.block_containing(c).unwrap().cidr(),
    );
    assert_ne!(n1_block, n2_block);
    release_handle(&mut s, "a", 0.0);
    release_handle(&mut s, "c", 20.0);
    assert!(s.plan_deallocate_cooled(at(30.0)).is_empty());
    let plan = s.plan_deallocate_cooled(at(31.0));
    let written: Vec<BlockCidr> = plan
        .writes(&s)
        .iter()
        .map(|w| match w {
            Write::UpdateBlock(b) => b.cidr(),
            other => panic!("only block updates, not {other:?}"),
        })
        .collect();
    assert_eq!(written, [n1_block]);
    s.apply(plan);
    assert!(s
        .block_containing(a)
        .unwrap()
        .attribute_of_address(a)
        .is_none());
    let cold: Vec<BlockCidr> = s.cold_blocks().map(|(cidr, _)| cidr).collect();
    assert_eq!(cold, [n2_block], "n2's block still cools");
}

#[test]
fn the_backstop_deletes_a_block_it_empties_that_has_no_affinity() {
    let mut s = world(COOLDOWN, 1);
    assign(&mut s, "a", "n1", 1, 0.0);
    release_handle(&mut s, "a", 0.0);
    // The node goes: its block keeps the address in cooldown, orphaned.
    let plan = s.plan_release_node("n1", at(1.0));
    s.apply(plan);
    let block = cidr("10.0.0.0/29");
    assert!(s.block(&block).unwrap().owner().is_none());
    let plan = s.plan_deallocate_cooled(at(31.0));
    assert_eq!(plan.writes(&s), [Write::DeleteBlock(block)]);
}

#[test]
fn usage_counts_released_addresses_as_calicoctl_does() {
    let mut s = world(COOLDOWN, 1);
    for (handle, count) in [("a", 3), ("b", 1)] {
        let mut request =
            AutoAssignRequest::new(HandleId::new(handle), NodeName::new("n1"), count, 0);
        request.attributes.insert("node".into(), "n1".into());
        let planned = s.plan_auto_assign(&request, at(0.0)).unwrap();
        s.apply(planned.plan);
        if handle == "a" {
            release_handle(&mut s, "a", 0.0);
        }
    }
    let pool = &usage(&s).pools[0];
    // calicoctl: in use is the block size minus `unallocated`.
    assert_eq!(pool.in_use, 4);
    assert_eq!(pool.released, 3);
    assert_eq!(pool.blocks[0].released, 3);
    // calicoctl's getBorrowedIPs finds no node on a released address and
    // counts it among those it cannot classify.
    let (found, unclassified) = borrowed(&s);
    assert!(found.is_empty());
    assert_eq!(unclassified, 3);
}

#[test]
fn address_status_tells_an_address_in_cooldown_from_a_free_one() {
    let mut s = world(COOLDOWN, 1);
    assign(&mut s, "a", "n1", 1, 0.0);
    release_handle(&mut s, "a", 0.0);
    let address = ip("10.0.0.0");
    assert_eq!(
        address_status(&s, address, at(30.0)),
        AddressStatus::InCooldown {
            block: cidr("10.0.0.0/29"),
            released_at: "2026-01-01T00:00:00Z".into(),
            free_from: "2026-01-01T00:00:31Z".into(),
        }
    );
    // Past its cooldown it reads as free, as Calico's GetAssignmentAttributes
    // reads it (blockFromBackend).
    assert_eq!(
        address_status(&s, address, at(31.0)),
        AddressStatus::Free { pool: "p".into() }
    );
}

#[test]
fn check_reports_released_addresses_past_their_cooldown_and_not_those_within() {
    let mut s = world(COOLDOWN, 1);
    assign(&mut s, "a", "n1", 1, 0.0);
    release_handle(&mut s, "a", 0.0);
    let within = check(&s, &Liveness::default(), at(30.0));
    assert!(within.findings.is_empty(), "{:?}", within.findings);
    assert!(within.is_consistent());
    assert_eq!(within.summary.addresses_released, 1);
    let past = check(&s, &Liveness::default(), at(31.0));
    let kinds: Vec<FindingKind> = past.findings.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, [FindingKind::ReleasedPastCooldown]);
    assert!(past.is_consistent(), "a leftover, not a contradiction");
    assert!(
        past.findings[0].message.contains("2026-01-01T00:00:31Z"),
        "{}",
        past.findings[0].message
    );
}

#[test]
fn check_reports_a_release_stamped_in_the_future_as_clock_skew() {
    let mut s = world(COOLDOWN, 1);
    assign(&mut s, "a", "n1", 1, 0.0);
    release_handle(&mut s, "a", 100.0);
    let report = check(&s, &Liveness::default(), at(50.0));
    let kinds: Vec<FindingKind> = report.findings.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, [FindingKind::ReleasedInFuture]);
    assert!(!report.is_consistent());
}
