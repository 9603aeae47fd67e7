//! Wire compatibility with Calico: every object Calico wrote (the fixtures
//! in ../fixtures/calico) and every object we build the way Calico would
//! (IPv6 /122 blocks in an fd00::/48 pool, affinities, the config, a
//! reservation) parses, converts to ipam-core and back, serialises to the
//! same JSON, and is accepted, unpruned, by the CRD schema.

mod support;

use std::collections::BTreeMap;

use crds::{BlockAffinity, IPAMBlock, IPAMConfig, IPAMHandle, IPPool, IPReservation};
use ipam_core::affinity::Affinity;
use ipam_core::block::{Block, BlockOwner, ReleaseItem};
use ipam_core::config::IpamConfig;
use ipam_core::handle::Handle;
use ipam_core::pool::Pool;
use ipam_core::reservation::{ReservationSpec, Reserved};
use serde_json::{json, Value};
use support::{assert_accepted, fixture};

// Each round trip also checks that every field landed in a modelled field:
// a misspelt name would otherwise round-trip through the unknown fields.
fn block_round_trip(object: &Value) -> Value {
    let wire: IPAMBlock = serde_json::from_value(object.clone()).unwrap();
    assert!(wire.spec.unknown.is_empty(), "{:?}", wire.spec.unknown);
    assert!(wire.spec.attributes.iter().all(|a| a.unknown.is_empty()));
    let core = Block::try_from(&wire).unwrap();
    serde_json::to_value(IPAMBlock::from_core(&core, Some(&wire))).unwrap()
}

fn handle_round_trip(object: &Value) -> Value {
    let wire: IPAMHandle = serde_json::from_value(object.clone()).unwrap();
    assert!(wire.spec.unknown.is_empty(), "{:?}", wire.spec.unknown);
    let core = Handle::try_from(&wire).unwrap();
    serde_json::to_value(IPAMHandle::from_core(&core, Some(&wire))).unwrap()
}

fn affinity_round_trip(object: &Value) -> Value {
    let wire: BlockAffinity = serde_json::from_value(object.clone()).unwrap();
    assert!(wire.spec.unknown.is_empty(), "{:?}", wire.spec.unknown);
    let core = Affinity::try_from(&wire).unwrap();
    serde_json::to_value(BlockAffinity::from_core(&core, Some(&wire))).unwrap()
}

fn pool_round_trip(object: &Value) -> Value {
    let wire: IPPool = serde_json::from_value(object.clone()).unwrap();
    assert!(wire.spec.unknown.is_empty(), "{:?}", wire.spec.unknown);
    let core = Pool::try_from(&wire).unwrap();
    serde_json::to_value(IPPool::from_core(&core, Some(&wire))).unwrap()
}

fn before_block() -> Value {
    fixture("ipamblock-192-168-185-0-26.before.yaml")
}

fn after_block() -> Value {
    fixture("ipamblock-192-168-185-0-26.after.list.yaml")["items"][0].clone()
}

#[test]
fn calicos_ipamblocks_round_trip_to_the_same_json() {
    for object in [before_block(), after_block()] {
        assert_accepted("ipamblocks", &object);
        assert_eq!(block_round_trip(&object), object);
    }
}

#[test]
fn calicos_ipamhandle_round_trips_to_the_same_json() {
    let object = fixture("ipamhandle-nginx.yaml");
    assert_accepted("ipamhandles", &object);
    assert_eq!(handle_round_trip(&object), object);
}

#[test]
fn calicos_ippools_round_trip_to_the_same_spec_and_metadata() {
    for name in ["ippool-default-ipv4.yaml", "ippool-pool-zone-1.yaml"] {
        let mut object = fixture(name);
        // The fixtures were read through Calico's projectcalico.org/v3 API;
        // the v1 CRD stores the same spec under crd.projectcalico.org/v1.
        assert_eq!(object["apiVersion"], "projectcalico.org/v3");
        object["apiVersion"] = json!("crd.projectcalico.org/v1");
        assert_accepted("ippools", &object);
        assert_eq!(pool_round_trip(&object), object, "{name}");
    }
}

#[test]
fn replaying_the_nginx_assignment_through_the_wire_types_writes_calicos_after_object() {
    let before: IPAMBlock = serde_json::from_value(before_block()).unwrap();
    let mut block = Block::try_from(&before).unwrap();
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
    assert_eq!(
        block.auto_assign(1, handle, &attributes, &Reserved::default()),
        [16]
    );
    block.bump_sequence_number();
    block
        .release(
            &[ReleaseItem {
                ordinal: 1,
                handle: None,
                sequence_number: None,
            }],
            None,
        )
        .unwrap();
    block.bump_sequence_number();

    let written = serde_json::to_value(IPAMBlock::from_core(&block, Some(&before))).unwrap();
    let after = after_block();
    assert_eq!(written["spec"], after["spec"]);
    // The update carries the object it replaces: the API server checks the
    // resourceVersion and then moves it (and generation) on.
    assert_eq!(written["metadata"], before_block()["metadata"]);
    for field in ["uid", "name", "annotations", "creationTimestamp"] {
        assert_eq!(
            written["metadata"][field], after["metadata"][field],
            "{field}"
        );
    }
}

#[test]
fn fields_of_a_newer_calico_survive_a_read_modify_write() {
    let mut object = before_block();
    object["spec"]["futureField"] = json!({"nested": [1, "two", null]});
    object["spec"]["attributes"][0]["releasedAt"] = json!("2026-03-01T00:00:00Z");
    object["metadata"]["labels"] = json!({"team": "net"});
    object["metadata"]["annotations"]["example.com/note"] = json!("kept");
    let wire: IPAMBlock = serde_json::from_value(object.clone()).unwrap();
    let mut block = Block::try_from(&wire).unwrap();
    block.auto_assign(1, "h", &BTreeMap::new(), &Reserved::default());
    block.bump_sequence_number();

    let written = serde_json::to_value(IPAMBlock::from_core(&block, Some(&wire))).unwrap();
    assert_eq!(
        written["spec"]["futureField"],
        object["spec"]["futureField"]
    );
    assert_eq!(
        written["spec"]["attributes"][0]["releasedAt"],
        "2026-03-01T00:00:00Z"
    );
    assert_eq!(written["metadata"], object["metadata"]);
    assert_eq!(
        written["spec"]["allocations"][16],
        json!(8),
        "the new attribute entry"
    );
    // Stale sequence numbers of free ordinals stay as Calico left them.
    assert_eq!(
        written["spec"]["sequenceNumberForAllocation"]["7"],
        json!(1690113884806720479u64)
    );
}

fn ipv6_block_object() -> Value {
    // Ordinals 0-2 in use; 5 was used and freed, so it sits at the tail of
    // `unallocated` and keeps its stale sequence number.
    let mut allocations = vec![Value::Null; 64];
    allocations[0] = json!(0);
    allocations[1] = json!(1);
    allocations[2] = json!(1);
    let unallocated: Vec<u32> = (3..64).filter(|&o| o != 5).chain([5]).collect();
    json!({
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": "IPAMBlock",
        "metadata": {
            "annotations": {"projectcalico.org/metadata": "{\"creationTimestamp\":null}"},
            "creationTimestamp": "2026-01-05T09:00:00Z",
            "generation": 4,
            "name": "fd00--40-122",
            "resourceVersion": "901",
            "uid": "2b6f0cc9-8a0e-4b4c-9f47-1f1f1f1f1f1f"
        },
        "spec": {
            "affinity": "host:node-1",
            "affinityClaimTime": "2026-01-05T09:00:00Z",
            "allocations": allocations,
            "attributes": [
                {"handle_id": "vxlan-v6-tunnel-addr-node-1",
                 "secondary": {"node": "node-1", "type": "vxlanV6TunnelAddress"}},
                {"handle_id": "k8s-pod-network.0123abcd",
                 "secondary": {"namespace": "default", "node": "node-1", "pod": "web-0",
                               "timestamp": "2026-01-05 09:01:02.123456789 +0000 UTC"},
                 "alternateOwnerAttrs": {"namespace": "default", "pod": "web-0-target"}}
            ],
            "cidr": "fd00::40/122",
            "deleted": false,
            "sequenceNumber": 1767603600000000004u64,
            "sequenceNumberForAllocation": {
                "0": 1767603600000000000u64,
                "1": 1767603600000000002u64,
                "2": 1767603600000000002u64,
                "5": 1767603600000000001u64
            },
            "strictAffinity": false,
            "unallocated": unallocated
        }
    })
}

#[test]
fn ipv6_blocks_in_an_fd00_48_pool_round_trip_to_the_same_json() {
    let object = ipv6_block_object();
    assert_accepted("ipamblocks", &object);
    assert_eq!(block_round_trip(&object), object);

    let pool = json!({
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": "IPPool",
        "metadata": {"name": "default-ipv6-ippool", "resourceVersion": "12"},
        "spec": {"allowedUses": ["Workload", "Tunnel"], "assignmentMode": "Automatic",
                 "blockSize": 122, "cidr": "fd00::/48", "natOutgoing": true,
                 "nodeSelector": "all()", "vxlanMode": "Never"}
    });
    assert_accepted("ippools", &pool);
    assert_eq!(pool_round_trip(&pool), pool);
    let core = Pool::try_from(&serde_json::from_value::<IPPool>(pool).unwrap()).unwrap();
    assert_eq!(
        core.block_of("fd00::45".parse().unwrap())
            .unwrap()
            .to_string(),
        "fd00::40/122"
    );
}

#[test]
fn ipv6_handles_and_affinities_round_trip_to_the_same_json() {
    let handle = json!({
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": "IPAMHandle",
        "metadata": {"name": "k8s-pod-network.0123abcd", "resourceVersion": "902"},
        "spec": {"block": {"fd00::40/122": 2}, "deleted": false,
                 "handleID": "k8s-pod-network.0123abcd"}
    });
    assert_accepted("ipamhandles", &handle);
    assert_eq!(handle_round_trip(&handle), handle);

    let affinity = json!({
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": "BlockAffinity",
        "metadata": {
            "annotations": {"projectcalico.org/metadata": "{\"creationTimestamp\":null}"},
            "labels": {
                "projectcalico.org/affinity-type": "host",
                "projectcalico.org/hostname-hash": crds::affinity::hostname_hash("node-1"),
                "projectcalico.org/ip-version": "6"
            },
            "name": "node-1-fd00--40-122",
            "resourceVersion": "900"
        },
        "spec": {"cidr": "fd00::40/122", "deleted": "false", "node": "node-1",
                 "state": "confirmed", "type": "host"}
    });
    assert_accepted("blockaffinities", &affinity);
    assert_eq!(affinity_round_trip(&affinity), affinity);
}

#[test]
fn an_ipv6_block_built_by_the_core_is_written_as_calico_writes_it() {
    let mut block = Block::new(
        "fd00::40/122".parse().unwrap(),
        Some(BlockOwner::Host("node-1".into())),
        Some("2026-01-05T09:00:00Z".into()),
        1_767_603_600_000_000_000,
    );
    block.auto_assign(
        2,
        "k8s-pod-network.0123abcd",
        &BTreeMap::new(),
        &Reserved::default(),
    );
    let object = serde_json::to_value(IPAMBlock::from_core(&block, None)).unwrap();
    assert_accepted("ipamblocks", &object);
    assert_eq!(object["metadata"]["name"], "fd00--40-122");
    assert_eq!(
        object["spec"]["deleted"], false,
        "written even when false, as Calico does"
    );
    assert_eq!(object["spec"]["strictAffinity"], false);
    let parsed: IPAMBlock = serde_json::from_value(object).unwrap();
    assert_eq!(Block::try_from(&parsed).unwrap(), block);
}

#[test]
fn an_ipv4_affinity_of_calico_3_31_round_trips_to_the_same_json() {
    let object = json!({
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": "BlockAffinity",
        "metadata": {
            "annotations": {"projectcalico.org/metadata": "{\"creationTimestamp\":null}"},
            "labels": {
                "projectcalico.org/affinity-type": "host",
                "projectcalico.org/hostname-hash": "S4G5Y7PWH2UNAOA5MRZNYO6E5VG6FNNL4RL5S5E3LRM7DZR5TSRA",
                "projectcalico.org/ip-version": "4"
            },
            "name": "mac-k8s-192-168-185-0-26",
            "resourceVersion": "1599",
            "uid": "0d1c7a52-1f5e-4d67-a0a4-d8a1f0a3c2b1"
        },
        "spec": {"cidr": "192.168.185.0/26", "deleted": "false", "node": "mac-k8s",
                 "state": "confirmed", "type": "host"}
    });
    assert_accepted("blockaffinities", &object);
    assert_eq!(affinity_round_trip(&object), object);
    // An affinity written before types and labels existed reads as a host one.
    let old = json!({
        "apiVersion": "crd.projectcalico.org/v1", "kind": "BlockAffinity",
        "metadata": {"name": "mac-k8s-192-168-185-0-26"},
        "spec": {"cidr": "192.168.185.0/26", "deleted": "", "node": "mac-k8s", "state": ""}
    });
    assert_accepted("blockaffinities", &old);
    let core = Affinity::try_from(&serde_json::from_value::<BlockAffinity>(old).unwrap()).unwrap();
    assert!(core.state.is_confirmed() && !core.deleted);
}

#[test]
fn a_calico_block_with_an_address_in_cooldown_round_trips_to_the_same_json() {
    // What Calico with ipCooldownSeconds set writes once it has handed out
    // ordinal 16 and released it again (ipam_block.go, release): the
    // ordinal stays allocated, pointing at an attribute holding only
    // releasedAt (the pod's own attribute, now unused, is dropped).
    let mut object = before_block();
    let attributes = object["spec"]["attributes"].as_array_mut().unwrap();
    attributes.push(json!({"releasedAt": "2026-07-01T10:00:00Z"}));
    let index = attributes.len() - 1;
    object["spec"]["allocations"][16] = json!(index);
    let unallocated = object["spec"]["unallocated"].as_array_mut().unwrap();
    unallocated.retain(|o| o != &json!(16));
    assert_accepted("ipamblocks", &object);
    assert_eq!(block_round_trip(&object), object);
    let wire: IPAMBlock = serde_json::from_value(object).unwrap();
    let block = Block::try_from(&wire).unwrap();
    let released_at = ipam_core::timestamp::parse_rfc3339("2026-07-01T10:00:00Z");
    assert_eq!(
        block.released().collect::<Vec<_>>(),
        vec![(16, released_at.unwrap())]
    );
    assert_eq!(block.attribute_of(16).and_then(|a| a.handle()), None);
}

#[test]
fn an_ipam_config_with_a_cooldown_round_trips_to_the_same_json() {
    let object = json!({
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": "IPAMConfig",
        "metadata": {"name": "default", "resourceVersion": "78"},
        "spec": {"autoAllocateBlocks": true, "ipCooldownSeconds": 300, "strictAffinity": false}
    });
    assert_accepted("ipamconfigs", &object);
    let wire: IPAMConfig = serde_json::from_value(object.clone()).unwrap();
    assert!(wire.spec.unknown.is_empty(), "{:?}", wire.spec.unknown);
    let core = IpamConfig::from(&wire);
    assert_eq!(core.ip_cooldown_seconds, 300);
    let back = serde_json::to_value(IPAMConfig::from_core(&core, Some(&wire))).unwrap();
    assert_eq!(back, object);
    let mut over = object;
    over["spec"]["ipCooldownSeconds"] = json!(1201);
    assert!(std::panic::catch_unwind(|| assert_accepted("ipamconfigs", &over)).is_err());
}

#[test]
fn the_ipam_config_singleton_round_trips_to_the_same_json() {
    let object = json!({
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": "IPAMConfig",
        "metadata": {
            "annotations": {"projectcalico.org/metadata": "{\"creationTimestamp\":null}"},
            "name": "default",
            "resourceVersion": "77"
        },
        "spec": {"autoAllocateBlocks": true, "kubeVirtVMAddressPersistence": "Enabled",
                 "maxBlocksPerHost": 8, "strictAffinity": true}
    });
    assert_accepted("ipamconfigs", &object);
    let wire: IPAMConfig = serde_json::from_value(object.clone()).unwrap();
    assert!(wire.spec.unknown.is_empty(), "{:?}", wire.spec.unknown);
    let core = IpamConfig::from(&wire);
    assert_eq!(core.block_limit(0), 8);
    let back = serde_json::to_value(IPAMConfig::from_core(&core, Some(&wire))).unwrap();
    assert_eq!(back, object);
}

#[test]
fn a_reservation_round_trips_to_the_same_json() {
    let object = json!({
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": "IPReservation",
        "metadata": {"name": "gateways", "resourceVersion": "5"},
        "spec": {"reservedCIDRs": ["192.168.185.1", "192.168.186.0/30", "fd00::40/126"]}
    });
    assert_accepted("ipreservations", &object);
    let wire: IPReservation = serde_json::from_value(object.clone()).unwrap();
    assert!(wire.spec.unknown.is_empty(), "{:?}", wire.spec.unknown);
    let core = ReservationSpec::try_from(&wire).unwrap();
    let reserved = Reserved::new([&core]);
    assert!(reserved.contains("192.168.185.1".parse().unwrap()));
    let back =
        serde_json::to_value(IPReservation::from_core("gateways", &core, Some(&wire))).unwrap();
    assert_eq!(back, object);
}
