//! Replays the real before/after pair of fixtures/calico: the nginx pod's
//! assignment at ordinal 16 and the release of ordinal 1 must produce the
//! "after" block exactly.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ipam_core::block::{Block, BlockSpec, ReleaseItem};
use ipam_core::reservation::Reserved;

fn fixture(name: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/calico")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap()
}

fn spec_of(object: &serde_json::Value) -> BlockSpec {
    serde_json::from_value(object["spec"].clone()).unwrap()
}

#[test]
fn nginx_assignment_and_release_of_ordinal_1_reproduce_the_after_block() {
    let before = spec_of(&fixture("ipamblock-192-168-185-0-26.before.yaml"));
    let after_object = fixture("ipamblock-192-168-185-0-26.after.list.yaml")["items"][0].clone();
    let expected = serde_json::to_value(spec_of(&after_object)).unwrap();
    let mut block = Block::from_spec(before).unwrap();

    let attributes: BTreeMap<String, String> = [
        ("namespace", "default"),
        ("node", "mac-k8s"),
        ("pod", "nginx"),
        ("timestamp", "2022-07-26 17:35:23.756365378 +0000 UTC"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let handle = "k8s-pod-network.cb07c78e242382171ac035d9b888454f71bb393e788f7feaa7ee13d4ead5cb34";
    let taken = block.auto_assign(1, handle, &attributes, &Reserved::default());
    assert_eq!(taken, vec![16], "the head of unallocated is handed out");
    block.bump_sequence_number();

    let released = block
        .release(
            &[ReleaseItem {
                ordinal: 1,
                handle: None,
                sequence_number: None,
            }],
            None,
        )
        .unwrap();
    assert_eq!(released.ordinals, vec![1]);
    assert_eq!(
        released.by_handle.keys().next().map(String::as_str),
        Some("k8s-pod-network.4bcae222a79b7ef46f048e435d5ab62d41e3a343d00a13da40e931a3e9df1aaa")
    );
    block.bump_sequence_number();

    assert_eq!(serde_json::to_value(block.to_spec()).unwrap(), expected);
    // The stale entries of free ordinals 7, 14 and 15 were kept, untouched.
    for ordinal in [7, 14, 15] {
        assert!(!block.is_allocated(ordinal));
        assert_ne!(block.sequence_number_of(ordinal), 0);
    }
}

#[test]
fn every_fixture_block_round_trips_through_the_core_unchanged() {
    let before = fixture("ipamblock-192-168-185-0-26.before.yaml");
    let after = fixture("ipamblock-192-168-185-0-26.after.list.yaml")["items"][0].clone();
    for object in [before, after] {
        let spec = spec_of(&object);
        let block = Block::from_spec(spec.clone()).unwrap();
        assert_eq!(block.to_spec(), spec);
        assert_eq!(serde_json::to_value(&spec).unwrap(), object["spec"]);
    }
}
