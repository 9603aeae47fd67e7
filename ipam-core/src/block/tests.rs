//! Tests of blocks: allocation order, attributes, sequence numbers,
//! releases with and without a cooldown, and the stored form.

use std::collections::BTreeMap;

use super::*;
use crate::error::Error;
use crate::reservation::ReservationSpec;

fn block(cidr: &str) -> Block {
    Block::new(
        cidr.parse().unwrap(),
        Some(BlockOwner::Host("n1".into())),
        None,
        100,
    )
}

fn attrs(pod: &str) -> BTreeMap<String, String> {
    [("pod".to_string(), pod.to_string())].into()
}

fn release(b: &mut Block, ordinals: &[u32]) -> Result<Released, Error> {
    let items: Vec<ReleaseItem> = ordinals
        .iter()
        .map(|&ordinal| ReleaseItem {
            ordinal,
            handle: None,
            sequence_number: None,
        })
        .collect();
    b.release(&items, None)
}

#[test]
fn fresh_block_hands_out_the_base_address_first_and_in_order() {
    let mut b = block("10.0.0.0/26");
    assert_eq!(
        b.auto_assign(3, "h", &attrs("a"), &Reserved::default()),
        vec![0, 1, 2]
    );
    assert_eq!(b.allocated_count(), 3);
    assert_eq!(b.unallocated_len(), 61);
}

#[test]
fn release_returns_ordinal_to_back_of_queue() {
    let mut b = block("10.0.0.0/26");
    b.auto_assign(2, "h", &attrs("a"), &Reserved::default());
    release(&mut b, &[0]).unwrap();
    let spec = b.to_spec();
    assert_eq!(spec.unallocated.first(), Some(&2));
    assert_eq!(spec.unallocated.last(), Some(&0));
    // The next allocation still takes the head, not the released one.
    assert_eq!(
        b.auto_assign(1, "h2", &attrs("b"), &Reserved::default()),
        vec![2]
    );
}

#[test]
fn addresses_of_one_request_share_one_attribute_entry() {
    let mut b = block("10.0.0.0/26");
    b.auto_assign(3, "h", &attrs("a"), &Reserved::default());
    b.auto_assign(1, "other", &attrs("b"), &Reserved::default());
    let spec = b.to_spec();
    assert_eq!(spec.attributes.len(), 2);
    assert_eq!(
        &spec.allocations[..4],
        &[Some(0), Some(0), Some(0), Some(1)]
    );
    // The same handle and attributes again reuse the entry (findOrAddAttribute).
    b.auto_assign(1, "h", &attrs("a"), &Reserved::default());
    assert_eq!(b.to_spec().attributes.len(), 2);
}

#[test]
fn releasing_the_last_address_of_an_attribute_shifts_later_indexes_down() {
    let mut b = block("10.0.0.0/26");
    for pod in ["a", "b", "c"] {
        b.auto_assign(1, pod, &attrs(pod), &Reserved::default());
    }
    let released = release(&mut b, &[1]).unwrap();
    assert_eq!(released.by_handle, [("b".to_string(), 1)].into());
    let spec = b.to_spec();
    assert_eq!(spec.attributes.len(), 2);
    assert_eq!(&spec.allocations[..3], &[Some(0), None, Some(1)]);
    assert_eq!(b.attribute_of(2).unwrap().handle(), Some("c"));
    assert!(b.problems().is_empty());
}

#[test]
fn allocation_records_the_block_sequence_number_and_release_clears_it() {
    let mut b = block("10.0.0.0/26");
    b.auto_assign(1, "h", &attrs("a"), &Reserved::default());
    b.bump_sequence_number();
    b.auto_assign(1, "h2", &attrs("b"), &Reserved::default());
    assert_eq!(
        (b.sequence_number_of(0), b.sequence_number_of(1)),
        (100, 101)
    );
    release(&mut b, &[0]).unwrap();
    assert_eq!(b.sequence_number_of(0), 0);
    assert!(!b.to_spec().sequence_number_for_allocation.contains_key("0"));
}

#[test]
fn stale_sequence_number_or_handle_fails_the_release_and_changes_nothing() {
    let mut b = block("10.0.0.0/26");
    b.auto_assign(2, "h", &attrs("a"), &Reserved::default());
    let before = b.clone();
    let stale = ReleaseItem {
        ordinal: 1,
        handle: None,
        sequence_number: Some(99),
    };
    let fresh = ReleaseItem {
        ordinal: 0,
        handle: None,
        sequence_number: None,
    };
    assert!(matches!(
        b.release(&[fresh.clone(), stale], None),
        Err(Error::SequenceNumberMismatch {
            requested: 99,
            current: 100,
            ..
        })
    ));
    let wrong_handle = ReleaseItem {
        ordinal: 1,
        handle: Some("someone-else".into()),
        sequence_number: None,
    };
    let err = b.release(&[fresh, wrong_handle], None).unwrap_err();
    assert!(err.to_string().contains("someone-else"), "{err}");
    assert_eq!(b, before);
}

#[test]
fn a_block_equals_its_own_round_trip_after_releases() {
    let mut b = block("10.0.0.0/26");
    for pod in ["a", "b", "c"] {
        b.auto_assign(1, pod, &attrs(pod), &Reserved::default());
    }
    release(&mut b, &[0, 2]).unwrap();
    assert_eq!(Block::from_spec(b.to_spec()).unwrap(), b);
}

#[test]
fn releasing_a_free_address_is_reported_not_refused() {
    let mut b = block("10.0.0.0/26");
    let released = release(&mut b, &[5, 5]).unwrap();
    assert_eq!(released.already_free, vec![5]);
    assert!(released.ordinals.is_empty());
    assert_eq!(b.unallocated_len(), 64);
}

#[test]
fn assigning_an_address_in_use_names_its_holder() {
    let mut b = block("10.0.0.0/26");
    b.assign(9, "h", &attrs("a")).unwrap();
    assert!(!b.to_spec().unallocated.contains(&9));
    let err = b.assign(9, "h2", &attrs("b")).unwrap_err();
    assert_eq!(
        err,
        Error::AddressInUse {
            address: "10.0.0.9".parse().unwrap(),
            handle: "h".into()
        }
    );
}

#[test]
fn reserved_addresses_are_skipped_and_keep_their_place() {
    let spec = ReservationSpec {
        reserved_cidrs: vec!["10.0.0.0/31".parse().unwrap()],
        unknown: UnknownFields::new(),
    };
    let reserved = Reserved::new([&spec]);
    let mut b = block("10.0.0.0/26");
    assert_eq!(b.free_count(&reserved), 62);
    assert_eq!(b.auto_assign(2, "h", &attrs("a"), &reserved), vec![2, 3]);
    assert_eq!(&b.to_spec().unallocated[..3], &[0, 1, 4]);
}

#[test]
fn release_by_handle_frees_every_address_of_the_handle() {
    let mut b = block("10.0.0.0/26");
    b.auto_assign(2, "h", &attrs("a"), &Reserved::default());
    b.auto_assign(1, "keep", &attrs("b"), &Reserved::default());
    b.assign(10, "h", &attrs("c")).unwrap();
    let released = b.release_by_handle("h", None, None);
    assert_eq!(released.ordinals, vec![0, 1, 10]);
    assert_eq!(released.by_handle, [("h".to_string(), 3)].into());
    assert_eq!(b.ordinals_of_handle("keep").collect::<Vec<_>>(), vec![2]);
    assert!(b.problems().is_empty());
}

#[test]
fn windows_reserved_addresses_do_not_make_a_block_non_empty() {
    let mut b = block("10.0.0.0/26");
    b.auto_assign(
        1,
        WINDOWS_RESERVED_HANDLE,
        &BTreeMap::new(),
        &Reserved::default(),
    );
    // Compared without case, as Calico lowers the handle first.
    b.auto_assign(
        1,
        "Windows-Reserved-IPAM-Handle",
        &BTreeMap::new(),
        &Reserved::default(),
    );
    assert!(b.is_empty());
    b.auto_assign(1, "pod", &attrs("a"), &Reserved::default());
    assert!(!b.is_empty());
}

#[test]
fn handles_with_a_carriage_return_tail_are_sanitised() {
    assert_eq!(
        sanitize_handle("k8s-pod-network.abc\r\neth0"),
        "k8s-pod-network.abc"
    );
    let mut b = block("10.0.0.0/26");
    b.auto_assign(1, "h\reth0", &attrs("a"), &Reserved::default());
    assert_eq!(b.ordinals_of_handle("h").count(), 1);
}

#[test]
fn inconsistencies_are_reported() {
    let mut spec = block("10.0.0.0/30").to_spec();
    spec.allocations = vec![Some(0), None, None, None];
    spec.attributes = vec![Attribute::default(), Attribute::default()];
    spec.unallocated = vec![0, 2, 2];
    let problems = Block::from_spec(spec).unwrap().problems();
    assert_eq!(
        problems,
        vec![
            BlockProblem::ListedFreeTwice(2),
            BlockProblem::AllocatedButListedFree(0),
            BlockProblem::Lost(1),
            BlockProblem::Lost(3),
            BlockProblem::UnusedAttribute(1),
        ]
    );
}

#[test]
fn malformed_stored_blocks_are_refused_naming_the_field() {
    let good = block("10.0.0.0/30").to_spec();
    let cases: Vec<(BlockSpec, &str)> = vec![
        (
            BlockSpec {
                cidr: "10.0.0.1/30".into(),
                ..good.clone()
            },
            "cidr",
        ),
        (
            BlockSpec {
                allocations: vec![None; 3],
                ..good.clone()
            },
            "allocations",
        ),
        (
            BlockSpec {
                allocations: vec![Some(0), None, None, None],
                ..good.clone()
            },
            "allocations",
        ),
        (
            BlockSpec {
                unallocated: vec![4],
                ..good.clone()
            },
            "unallocated",
        ),
        (
            BlockSpec {
                sequence_number_for_allocation: [("x".to_string(), 1)].into(),
                ..good.clone()
            },
            "sequenceNumberForAllocation",
        ),
    ];
    for (spec, field) in cases {
        let err = Block::from_spec(spec).unwrap_err();
        assert!(
            matches!(&err, Error::MalformedBlock { field: f, .. } if *f == field),
            "{err}"
        );
    }
}

#[test]
fn unknown_fields_survive_a_read_modify_write() {
    let json = r#"{"cidr":"10.0.0.0/31","allocations":[0,null],"unallocated":[1],
        "attributes":[{"handle_id":"h","secondary":{"pod":"p"},"futureAttribute":[3]}],
        "sequenceNumber":7,"sequenceNumberForAllocation":{"0":6},"deleted":false,
        "strictAffinity":false,"futureField":{"x":[1,2]}}"#;
    let spec: BlockSpec = serde_json::from_str(json).unwrap();
    let mut b = Block::from_spec(spec).unwrap();
    b.auto_assign(1, "h2", &attrs("q"), &Reserved::default());
    b.bump_sequence_number();
    let out = serde_json::to_value(b.to_spec()).unwrap();
    assert_eq!(out["futureField"], serde_json::json!({"x": [1, 2]}));
    assert_eq!(
        out["attributes"][0]["futureAttribute"],
        serde_json::json!([3])
    );
    assert_eq!(out["sequenceNumber"], 8);
}

#[test]
fn ipv6_blocks_work_like_ipv4_blocks() {
    let mut b = block("fd00::40/122");
    assert_eq!(
        b.auto_assign(2, "h", &attrs("a"), &Reserved::default()),
        vec![0, 1]
    );
    assert_eq!(b.cidr().address_net(1).to_string(), "fd00::41/122");
    assert_eq!(b.cidr().ordinal_of("fd00::7f".parse().unwrap()), Some(63));
}

#[test]
fn owner_strings_round_trip() {
    for text in ["host:node-1", "virtual:lb", "weird"] {
        assert_eq!(BlockOwner::parse(text).to_string(), text);
    }
    assert!(BlockOwner::parse("host:n").is_host("n"));
    assert_eq!(BlockOwner::parse("virtual:lb").name(), "lb");
}

fn held(b: &Block, handle: &str) -> Vec<u32> {
    b.ordinals_of_handle(handle).collect()
}

#[test]
fn with_a_cooldown_release_marks_the_address_nobodys_and_keeps_it_in_use() {
    let mut b = block("10.0.0.0/26");
    b.auto_assign(2, "h", &attrs("a"), &Reserved::default());
    b.bump_sequence_number();
    let items = [ReleaseItem {
        ordinal: 0,
        handle: Some("h".into()),
        sequence_number: None,
    }];
    let released = b.release(&items, Some(1_000)).unwrap();
    assert_eq!(released.ordinals, vec![0]);
    assert_eq!(released.by_handle, [("h".to_string(), 1)].into());
    assert!(b.is_allocated(0), "in use through its cooldown");
    assert_eq!(b.unallocated_len(), 62);
    assert_eq!(b.attribute_of(0).unwrap().handle(), None);
    assert_eq!(held(&b, "h"), vec![1]);
    assert_eq!(b.released().collect::<Vec<_>>(), vec![(0, 1_000)]);
    // Calico's release gives the ordinal the block's sequence number.
    assert_eq!(b.sequence_number_of(0), 101);
    assert!(!b.is_empty());
    assert!(b.problems().is_empty());
    // The stored form is Calico's: an entry with only releasedAt.
    let spec = b.to_spec();
    assert_eq!(spec.allocations[0], Some(1));
    let entry = serde_json::to_value(&spec.attributes[1]).unwrap();
    assert_eq!(
        entry,
        serde_json::json!({"releasedAt": "1970-01-01T00:16:40Z"})
    );
    assert_eq!(Block::from_spec(spec).unwrap(), b);
}

#[test]
fn releasing_a_released_address_again_changes_nothing() {
    let mut b = block("10.0.0.0/26");
    b.auto_assign(1, "h", &attrs("a"), &Reserved::default());
    b.release_by_handle("h", None, Some(1_000));
    let before = b.clone();
    assert!(b
        .release_by_handle("h", None, Some(2_000))
        .ordinals
        .is_empty());
    let again = release_at(&mut b, &[0], Some(2_000));
    assert_eq!(again.already_free, vec![0]);
    assert!(again.by_handle.is_empty());
    assert_eq!(b, before);
}

#[test]
fn release_by_handle_with_a_cooldown_keeps_sequence_numbers() {
    let mut b = block("10.0.0.0/26");
    b.auto_assign(2, "h", &attrs("a"), &Reserved::default());
    b.bump_sequence_number();
    let released = b.release_by_handle("h", None, Some(1_000));
    assert_eq!(released.ordinals, vec![0, 1]);
    assert_eq!(released.by_handle, [("h".to_string(), 2)].into());
    assert_eq!(
        (b.sequence_number_of(0), b.sequence_number_of(1)),
        (100, 100)
    );
    // The handle's own entry is gone; one cooldown entry serves both.
    assert_eq!(b.to_spec().attributes.len(), 1);
}

#[test]
fn cooled_addresses_go_to_the_back_of_the_queue_in_ordinal_order() {
    let mut b = block("10.0.0.0/29");
    b.auto_assign(8, "h", &attrs("a"), &Reserved::default());
    release_at(&mut b, &[5, 2], Some(100));
    release_at(&mut b, &[7], Some(200));
    assert!(
        b.deallocate_cooled(100).is_empty(),
        "released at 100: not before 100"
    );
    assert_eq!(b.deallocate_cooled(101), vec![2, 5]);
    assert_eq!(b.to_spec().unallocated, vec![2, 5]);
    assert_eq!(b.sequence_number_of(2), 0);
    assert_eq!(b.earliest_release(), Some(200));
    assert_eq!(b.deallocate_cooled(201), vec![7]);
    assert_eq!(b.to_spec().unallocated, vec![2, 5, 7]);
    assert_eq!(b.earliest_release(), None);
    // Only the pod's entry is left.
    assert_eq!(b.to_spec().attributes.len(), 1);
    assert!(b.problems().is_empty());
}

#[test]
fn a_released_attribute_is_never_reused_for_a_new_allocation() {
    let mut b = block("10.0.0.0/26");
    b.auto_assign(1, "h", &attrs("a"), &Reserved::default());
    b.release_by_handle("h", None, Some(1_000));
    b.auto_assign(1, "h", &attrs("a"), &Reserved::default());
    assert_eq!(held(&b, "h"), vec![1]);
    assert_eq!(b.to_spec().attributes.len(), 2);
}

#[test]
fn released_at_must_be_a_timestamp() {
    let json = r#"{"cidr":"10.0.0.0/31","allocations":[0,null],"unallocated":[1],
        "attributes":[{"releasedAt":"yesterday"}]}"#;
    let err = serde_json::from_str::<BlockSpec>(json).unwrap_err();
    assert!(err.to_string().contains("\"yesterday\""), "{err}");
    let calico = r#"{"cidr":"10.0.0.0/31","allocations":[0,null],"unallocated":[1],
        "attributes":[{"releasedAt":"2026-07-01T10:00:00Z"}]}"#;
    let b = Block::from_spec(serde_json::from_str(calico).unwrap()).unwrap();
    assert_eq!(
        b.earliest_release(),
        crate::timestamp::parse_rfc3339("2026-07-01T10:00:00Z")
    );
}

fn release_at(b: &mut Block, ordinals: &[u32], stamp: Option<i64>) -> Released {
    let items: Vec<ReleaseItem> = ordinals
        .iter()
        .map(|&ordinal| ReleaseItem {
            ordinal,
            handle: None,
            sequence_number: None,
        })
        .collect();
    b.release(&items, stamp).unwrap()
}
