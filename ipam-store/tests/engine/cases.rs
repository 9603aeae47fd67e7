//! Engine cases every backend must pass. Each takes a fresh, empty store.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipam_core::{
    AffinityState, AssignIpRequest, AutoAssignRequest, BlockCidr, Error, IpamConfig, Pool,
    PoolSpec, ReleaseRequest, ReservationSpec,
};
use ipam_core::{HandleId, NodeName};
use ipam_store::{
    AutoAssigned, Datastore, Ipam, IpamError, Key, Kind, ListQuery, Reservation, Value,
};
use ipnet::IpNet;

/// Generates one `#[tokio::test]` per case (those of this module, of
/// `admin`, `order`, `concurrency`, `affinity` and `split`). `$make` is an async block that yields
/// `(Arc<dyn Datastore>, guard)`. With `requires: $present,` first, each
/// test returns at once when `$present` (a `testkit::require` check) is
/// false.
macro_rules! engine_tests {
    ($make:expr) => {
        engine_tests!(requires: true, $make);
    };
    (requires: $present:expr, $make:expr) => {
        engine_tests!(@cases $present; $make; cases;
            first_assignment_claims_a_block_and_hands_out_its_base_address,
            repeated_auto_assign_returns_the_same_addresses,
            release_by_handle_frees_everything_and_is_idempotent,
            releasing_free_or_unknown_addresses_is_not_an_error,
            release_with_a_stale_expectation_changes_nothing,
            assign_ip_takes_the_chosen_address_and_refuses_a_taken_one,
            attributes_of_an_address_name_its_owner,
            borrowing_happens_only_with_strict_affinity_off,
            max_blocks_per_host_caps_claims,
            auto_allocate_blocks_off_uses_only_existing_blocks,
            pools_with_node_selectors_and_disabled_pools,
            reservations_are_never_auto_assigned,
            dual_stack_gets_both_families,
            all_or_nothing_gives_back_a_partial_assignment,
            ipv6_only,
        );
        engine_tests!(@cases $present; $make; admin;
            claim_and_release_affinities,
            release_node_frees_empty_blocks_and_orphans_used_ones,
            config_round_trips_and_is_validated,
            pools_are_validated_and_cannot_overlap,
            deleting_a_pool_releases_its_empty_blocks,
        );
        engine_tests!(@cases $present; $make; order;
            steady_state_costs_one_batch_or_two_writes_and_no_reads,
            a_plan_larger_than_a_batch_is_written_in_order,
            two_engines_on_one_store_never_double_allocate,
            handle_goes_before_block_on_assign_and_after_on_release,
            a_block_write_that_keeps_failing_leaves_nothing_behind,
            a_conflict_is_retried_and_counted,
            an_unreachable_store_fails_at_once_and_undoes_the_handle,
            a_release_by_another_engine_updates_the_handle,
            concurrent_requests_of_a_node_share_one_block_write,
        );
        engine_tests!(@cases $present; $make; concurrency;
            one_handle_assigned_and_released_at_once_holds_only_what_was_answered,
            a_release_between_an_assignments_handle_and_block_writes_leaves_the_last_answer,
            a_release_between_a_claims_handle_and_block_writes_leaves_the_last_answer,
            batches_answered_unavailable_after_their_commit_lose_and_double_nothing,
            concurrent_creates_of_overlapping_pools_create_exactly_one,
            concurrent_claims_of_one_block_leave_one_confirmed_affinity,
        );
        engine_tests!(@cases $present; $make; affinity;
            the_last_address_released_after_a_selector_change_takes_block_and_affinity,
            a_release_after_the_nodes_labels_changed_takes_its_emptied_block,
            an_empty_block_whose_pool_stopped_selecting_goes_at_the_next_assignment,
            a_release_racing_an_assignment_on_the_emptied_block_loses_no_address,
        );
        engine_tests!(@cases $present; $make; split;
            a_split_keeps_every_block_affinity_and_address_in_one_child,
            split_refusals_name_the_field_and_value_and_change_nothing,
            a_split_cut_short_stays_valid_and_running_it_again_finishes_it,
            allocations_during_a_split_all_succeed_and_hold_each_address_once,
            between_any_two_writes_of_a_split_every_node_gets_an_address,
        );
        cooldown_tests!($present, $make);
    };
    (@cases $present:expr; $make:expr; $module:ident; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if !$present {
                    return;
                }
                let (store, _guard) = $make.await;
                $crate::$module::$case(store).await;
            }
        )*
    };
}

pub type Engine = Ipam<dyn Datastore>;

pub fn pool(name: &str, cidr: &str, block_size: u8) -> Pool {
    pool_with(name, cidr, block_size, |_| {})
}

pub fn pool_with(name: &str, cidr: &str, block_size: u8, edit: impl FnOnce(&mut PoolSpec)) -> Pool {
    let mut spec = PoolSpec {
        block_size: Some(block_size),
        ..PoolSpec::new(cidr.parse().unwrap())
    };
    spec.node_selector = "all()".to_string();
    edit(&mut spec);
    Pool::new(name, spec).unwrap()
}

pub async fn engine_with(
    store: Arc<dyn Datastore>,
    pools: Vec<Pool>,
    config: IpamConfig,
) -> Engine {
    let engine = Ipam::new(store);
    engine.set_config(config).await.unwrap();
    for pool in pools {
        engine.create_pool(pool).await.unwrap();
    }
    engine
}

/// An engine over one pool `p` and the default config.
pub async fn engine_on(store: &Arc<dyn Datastore>, cidr: &str, block_size: u8) -> Engine {
    engine_with(
        store.clone(),
        vec![pool("p", cidr, block_size)],
        IpamConfig::default(),
    )
    .await
}

pub fn request(handle: &str, node: &str, v4: u32, v6: u32) -> AutoAssignRequest {
    let mut request = AutoAssignRequest::new(HandleId::new(handle), NodeName::new(node), v4, v6);
    request.attributes = [("node", node), ("namespace", "default"), ("pod", handle)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    request
}

pub fn addrs(got: &AutoAssigned) -> Vec<IpAddr> {
    got.ipv4
        .addresses
        .iter()
        .chain(&got.ipv6.addresses)
        .map(|a| a.addr())
        .collect()
}

pub fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

pub fn block(text: &str) -> BlockCidr {
    text.parse().unwrap()
}

/// Every allocation in the store, by address, read straight from the store.
pub async fn allocations(store: &dyn Datastore) -> BTreeMap<IpAddr, String> {
    let mut out = BTreeMap::new();
    for item in store.list(&ListQuery::All(Kind::Block)).await.unwrap() {
        let Value::Block(b) = item.value else {
            panic!()
        };
        for (ordinal, attribute) in b.allocations() {
            let previous = out.insert(
                b.cidr().address(ordinal),
                attribute.handle().unwrap_or_default().to_string(),
            );
            assert!(previous.is_none(), "address in two blocks");
        }
    }
    out
}

/// Handles and blocks agree: every handle's per-block count is what the
/// block holds for it, and no allocation lacks its handle but released
/// ones (IP cooldown), which are nobody's.
pub async fn assert_consistent(store: &dyn Datastore) {
    let mut held: BTreeMap<(String, BlockCidr), u32> = BTreeMap::new();
    for item in store.list(&ListQuery::All(Kind::Block)).await.unwrap() {
        let Value::Block(b) = item.value else {
            panic!()
        };
        for (_, attribute) in b.allocations().filter(|(_, a)| !a.is_released()) {
            *held
                .entry((attribute.handle().unwrap().to_string(), b.cidr()))
                .or_default() += 1;
        }
    }
    let mut recorded: BTreeMap<(String, BlockCidr), u32> = BTreeMap::new();
    for item in store.list(&ListQuery::All(Kind::Handle)).await.unwrap() {
        let Value::Handle(h) = item.value else {
            panic!()
        };
        assert!(!h.is_empty(), "empty handle {} left behind", h.id());
        for (cidr, count) in h.blocks() {
            recorded.insert((h.id().to_string(), *cidr), *count);
        }
    }
    assert_eq!(held, recorded, "handles and blocks disagree");
}

pub async fn first_assignment_claims_a_block_and_hands_out_its_base_address(
    store: Arc<dyn Datastore>,
) {
    let engine = engine_on(&store, "10.0.0.0/16", 26).await;
    let got = engine
        .auto_assign(&request("h1", "node-1", 1, 0))
        .await
        .unwrap();
    assert_eq!(got.ipv4.addresses.len(), 1);
    let address = got.ipv4.addresses[0];
    assert_eq!(address.prefix_len(), 26);
    assert_eq!(
        address.addr(),
        address.network(),
        "a fresh block starts at its base"
    );
    assert!(!got.existing);
    let cidr = BlockCidr::new(address.trunc()).unwrap();
    let affinities = store
        .list(&ListQuery::AffinitiesOf("node-1".into()))
        .await
        .unwrap();
    assert_eq!(affinities.len(), 1);
    let Value::Affinity(a) = &affinities[0].value else {
        panic!()
    };
    assert_eq!((a.cidr, a.state), (cidr, AffinityState::Confirmed));
    let more = engine
        .auto_assign(&request("h2", "node-1", 3, 0))
        .await
        .unwrap();
    for a in &more.ipv4.addresses {
        assert!(
            cidr.net().contains(&a.addr()),
            "the node's own block is used first"
        );
    }
    assert_consistent(&*store).await;
}

pub async fn repeated_auto_assign_returns_the_same_addresses(store: Arc<dyn Datastore>) {
    let pools = vec![pool("p4", "10.0.0.0/16", 26), pool("p6", "fd00::/112", 122)];
    let engine = engine_with(store.clone(), pools, IpamConfig::default()).await;
    let first = engine.auto_assign(&request("h", "n", 2, 1)).await.unwrap();
    let before = allocations(&*store).await;
    let again = engine.auto_assign(&request("h", "n", 2, 1)).await.unwrap();
    assert!(again.existing);
    assert_eq!(addrs(&again), addrs(&first));
    assert_eq!(
        again.ipv4.addresses, first.ipv4.addresses,
        "prefix lengths too"
    );
    // A second engine (another process) sees it the same way.
    let other = Ipam::new(store.clone());
    let third = other.auto_assign(&request("h", "n", 2, 1)).await.unwrap();
    assert!(third.existing);
    assert_eq!(addrs(&third), addrs(&first));
    assert_eq!(allocations(&*store).await, before, "nothing new allocated");
}

pub async fn release_by_handle_frees_everything_and_is_idempotent(store: Arc<dyn Datastore>) {
    let pools = vec![pool("p4", "10.0.0.0/16", 26), pool("p6", "fd00::/112", 122)];
    let engine = engine_with(store.clone(), pools, IpamConfig::default()).await;
    let got = engine.auto_assign(&request("h", "n", 3, 2)).await.unwrap();
    engine
        .auto_assign(&request("other", "n", 1, 0))
        .await
        .unwrap();
    let mut released = engine.release_by_handle("h").await.unwrap();
    released.sort();
    let mut expected = addrs(&got);
    expected.sort();
    assert_eq!(released, expected);
    assert_eq!(
        allocations(&*store).await.values().collect::<Vec<_>>(),
        vec!["other"]
    );
    assert_eq!(
        store.get(&Key::Handle("h".into())).await.unwrap_err(),
        ipam_store::StoreError::NotFound {
            key: Key::Handle("h".into())
        }
    );
    assert!(engine.release_by_handle("h").await.unwrap().is_empty());
    assert!(engine
        .release_by_handle("never-existed")
        .await
        .unwrap()
        .is_empty());
    assert!(engine.addresses_of_handle("h").await.unwrap().is_empty());
    assert_consistent(&*store).await;
}

pub async fn releasing_free_or_unknown_addresses_is_not_an_error(store: Arc<dyn Datastore>) {
    let engine = engine_on(&store, "10.0.0.0/24", 26).await;
    let got = engine.auto_assign(&request("h", "n", 2, 0)).await.unwrap();
    let a = got.ipv4.addresses[0].addr();
    let outside = ip("192.168.1.1");
    let never = ip("10.0.0.200");
    let out = engine
        .release(&[a, outside, never].map(ReleaseRequest::address))
        .await
        .unwrap();
    assert_eq!(out.released, vec![a]);
    assert_eq!(out.already_free, vec![outside, never]);
    let again = engine.release(&[ReleaseRequest::address(a)]).await.unwrap();
    assert_eq!((again.released.len(), again.already_free), (0, vec![a]));
    // The handle still holds the other address, and says so.
    assert_eq!(
        engine.addresses_of_handle("h").await.unwrap(),
        vec![got.ipv4.addresses[1]]
    );
    assert_consistent(&*store).await;
}

pub async fn release_with_a_stale_expectation_changes_nothing(store: Arc<dyn Datastore>) {
    let engine = engine_on(&store, "10.0.0.0/24", 26).await;
    let got = engine.auto_assign(&request("h", "n", 1, 0)).await.unwrap();
    let a = got.ipv4.addresses[0].addr();
    let before = allocations(&*store).await;
    let wrong_handle = ReleaseRequest {
        address: a,
        handle: Some(HandleId::new("someone-else")),
        sequence_number: None,
    };
    let err = engine.release(&[wrong_handle]).await.unwrap_err();
    assert!(matches!(err, IpamError::Refused(_)), "{err}");
    let wrong_sequence = ReleaseRequest {
        address: a,
        handle: None,
        sequence_number: Some(1),
    };
    assert!(engine.release(&[wrong_sequence]).await.is_err());
    assert_eq!(allocations(&*store).await, before);
}

pub async fn assign_ip_takes_the_chosen_address_and_refuses_a_taken_one(store: Arc<dyn Datastore>) {
    let engine = engine_on(&store, "10.0.0.0/24", 26).await;
    let chosen = AssignIpRequest {
        handle: HandleId::new("h"),
        node: NodeName::new("n"),
        address: ip("10.0.0.77"),
        attributes: BTreeMap::new(),
    };
    engine.assign_ip(&chosen).await.unwrap();
    engine
        .assign_ip(&chosen)
        .await
        .expect("the same handle again is fine");
    let taken = AssignIpRequest {
        handle: HandleId::new("other"),
        ..chosen.clone()
    };
    let err = engine.assign_ip(&taken).await.unwrap_err();
    assert!(
        matches!(err, IpamError::Refused(Error::AddressInUse { .. })),
        "{err}"
    );
    let outside = AssignIpRequest {
        address: ip("10.9.9.9"),
        ..chosen.clone()
    };
    let err = engine.assign_ip(&outside).await.unwrap_err();
    assert!(err.to_string().contains("10.9.9.9"), "{err}");
    assert_eq!(
        allocations(&*store)
            .await
            .get(&ip("10.0.0.77"))
            .map(String::as_str),
        Some("h")
    );
    assert_eq!(engine.addresses_of_handle("h").await.unwrap().len(), 1);
    assert_consistent(&*store).await;
}

pub async fn attributes_of_an_address_name_its_owner(store: Arc<dyn Datastore>) {
    let engine = engine_on(&store, "10.0.0.0/24", 26).await;
    let got = engine
        .auto_assign(&request("h", "node-7", 1, 0))
        .await
        .unwrap();
    let a = got.ipv4.addresses[0].addr();
    let attribute = engine.attributes_of(a).await.unwrap().expect("allocated");
    assert_eq!(attribute.handle(), Some("h"));
    assert_eq!(attribute.secondary().get("node"), Some("node-7"));
    assert_eq!(attribute.secondary().get("pod"), Some("h"));
    assert!(engine
        .attributes_of(ip("10.0.0.250"))
        .await
        .unwrap()
        .is_none());
    assert!(engine
        .attributes_of(ip("172.16.0.1"))
        .await
        .unwrap()
        .is_none());
}

pub async fn borrowing_happens_only_with_strict_affinity_off(store: Arc<dyn Datastore>) {
    // One /26 block in the whole pool: node-b can only borrow from node-a.
    let one_block = || vec![pool("p", "10.0.0.0/26", 26)];
    let engine = engine_with(store.clone(), one_block(), IpamConfig::default()).await;
    engine
        .auto_assign(&request("a", "node-a", 1, 0))
        .await
        .unwrap();
    let borrowed = engine
        .auto_assign(&request("b", "node-b", 1, 0))
        .await
        .unwrap();
    assert_eq!(
        borrowed.ipv4.addresses.len(),
        1,
        "strict off: node-b borrows"
    );

    engine
        .set_config(IpamConfig {
            strict_affinity: true,
            ..IpamConfig::default()
        })
        .await
        .unwrap();
    let refused = engine
        .auto_assign(&request("c", "node-c", 1, 0))
        .await
        .unwrap();
    assert!(refused.ipv4.addresses.is_empty(), "strict on: no borrowing");
    assert_eq!(
        refused
            .ipv4
            .shortfall
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec!["No more free affine blocks and strict affinity enabled"]
    );
    assert!(engine.addresses_of_handle("c").await.unwrap().is_empty());
    assert_consistent(&*store).await;
}

pub async fn max_blocks_per_host_caps_claims(store: Arc<dyn Datastore>) {
    let config = IpamConfig {
        max_blocks_per_host: 2,
        strict_affinity: true,
        ..IpamConfig::default()
    };
    let engine = engine_with(store.clone(), vec![pool("p", "10.0.0.0/24", 28)], config).await;
    let got = engine
        .auto_assign(&request("h1", "n", 32, 0))
        .await
        .unwrap();
    assert_eq!(got.ipv4.addresses.len(), 32, "two /28 blocks");
    let err = engine
        .auto_assign(&request("h2", "n", 1, 0))
        .await
        .unwrap_err();
    assert!(
        matches!(err, IpamError::Refused(Error::BlockLimitReached { .. })),
        "{err}"
    );
    assert!(engine.addresses_of_handle("h2").await.unwrap().is_empty());
    let blocks = store
        .list(&ListQuery::AffinitiesOf("n".into()))
        .await
        .unwrap();
    assert_eq!(blocks.len(), 2);
    assert_consistent(&*store).await;
}

pub async fn auto_allocate_blocks_off_uses_only_existing_blocks(store: Arc<dyn Datastore>) {
    let engine = engine_on(&store, "10.0.0.0/24", 26).await;
    let claimed = engine
        .claim_affinity("n", "10.0.0.64/26".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(claimed.claimed, vec![block("10.0.0.64/26")]);
    engine
        .set_config(IpamConfig {
            auto_allocate_blocks: false,
            strict_affinity: true,
            ..IpamConfig::default()
        })
        .await
        .unwrap();
    let got = engine.auto_assign(&request("h", "n", 64, 0)).await.unwrap();
    assert_eq!(got.ipv4.addresses.len(), 64);
    assert!(got
        .ipv4
        .addresses
        .iter()
        .all(|a| block("10.0.0.64/26").net().contains(&a.addr())));
    let err = engine
        .auto_assign(&request("h2", "n", 1, 0))
        .await
        .unwrap_err();
    assert!(
        matches!(err, IpamError::Refused(Error::AutoAllocateDisabled { .. })),
        "no new block may be claimed: {err}"
    );
    assert_eq!(
        store
            .list(&ListQuery::All(Kind::Block))
            .await
            .unwrap()
            .len(),
        1
    );
}

pub async fn pools_with_node_selectors_and_disabled_pools(store: Arc<dyn Datastore>) {
    let pools = vec![
        pool_with("a-rack1", "10.1.0.0/24", 26, |s| {
            s.node_selector = "rack == 'one'".into()
        }),
        pool_with("b-rack2", "10.2.0.0/24", 26, |s| {
            s.node_selector = "rack == 'two'".into()
        }),
        pool_with("c-off", "10.3.0.0/24", 26, |s| s.disabled = true),
    ];
    let engine = engine_with(store.clone(), pools, IpamConfig::default()).await;
    let mut r = request("h1", "n1", 1, 0);
    r.node_labels.insert("rack".into(), "two".into());
    let got = engine.auto_assign(&r).await.unwrap();
    assert!("10.2.0.0/24"
        .parse::<IpNet>()
        .unwrap()
        .contains(&got.ipv4.addresses[0].addr()));
    let nobody = engine
        .auto_assign(&request("h2", "n2", 1, 0))
        .await
        .unwrap_err();
    assert!(
        matches!(nobody, IpamError::Refused(Error::NoPoolForNode { .. })),
        "{nobody}"
    );
    let mut explicit = request("h3", "n2", 1, 0);
    explicit.ipv4_pools = vec!["10.3.0.0/24".parse().unwrap()];
    let err = engine.auto_assign(&explicit).await.unwrap_err();
    assert!(
        matches!(
            err,
            IpamError::Refused(Error::RequestedPoolUnavailable { .. })
        ),
        "{err}"
    );
    explicit.ipv4_pools = vec!["10.1.0.0/24".parse().unwrap()];
    let got = engine.auto_assign(&explicit).await.unwrap();
    assert!("10.1.0.0/24"
        .parse::<IpNet>()
        .unwrap()
        .contains(&got.ipv4.addresses[0].addr()));
}

pub async fn reservations_are_never_auto_assigned(store: Arc<dyn Datastore>) {
    let reserved: Vec<IpNet> = vec![
        "10.0.0.0/30".parse().unwrap(),
        "10.0.0.9/32".parse().unwrap(),
    ];
    store
        .create(&Value::Reservation(Reservation {
            name: "gateways".into(),
            spec: ReservationSpec {
                reserved_cidrs: reserved.clone(),
                unknown: Default::default(),
            },
        }))
        .await
        .unwrap();
    let engine = engine_on(&store, "10.0.0.0/28", 28).await;
    let got = engine.auto_assign(&request("h", "n", 16, 0)).await.unwrap();
    assert_eq!(got.ipv4.addresses.len(), 11, "16 minus 5 reserved");
    for a in &got.ipv4.addresses {
        assert!(
            !reserved.iter().any(|r| r.contains(&a.addr())),
            "{a} is reserved"
        );
    }
}

pub async fn dual_stack_gets_both_families(store: Arc<dyn Datastore>) {
    let pools = vec![
        pool("p4", "10.0.0.0/24", 26),
        pool("p6", "fd00:1::/120", 122),
    ];
    let engine = engine_with(store.clone(), pools, IpamConfig::default()).await;
    let got = engine.auto_assign(&request("h", "n", 1, 1)).await.unwrap();
    assert_eq!(got.ipv4.addresses.len(), 1);
    assert_eq!(got.ipv6.addresses.len(), 1);
    assert_eq!(got.ipv6.addresses[0].prefix_len(), 122);
    assert_eq!(engine.addresses_of_handle("h").await.unwrap().len(), 2);
    assert_consistent(&*store).await;
}

pub async fn all_or_nothing_gives_back_a_partial_assignment(store: Arc<dyn Datastore>) {
    // IPv4 has room, IPv6 has none: the IPv4 address taken is given back.
    let pools = vec![
        pool("p4", "10.0.0.0/24", 26),
        pool("p6", "fd00:3::/122", 122),
    ];
    let engine = engine_with(store.clone(), pools, IpamConfig::default()).await;
    engine
        .auto_assign_all(&request("full", "n", 0, 64))
        .await
        .unwrap();
    let error = engine
        .auto_assign_all(&request("h", "n", 1, 1))
        .await
        .unwrap_err();
    match &error {
        IpamError::Exhausted {
            ipv4_asked: 1,
            ipv4_found: 1,
            ipv6_asked: 1,
            ipv6_found: 0,
            ..
        } => {}
        other => panic!("{other:?}"),
    }
    assert!(
        error.to_string().contains("asked for 1 IPv4 and 1 IPv6"),
        "{error}"
    );
    assert!(engine.addresses_of_handle("h").await.unwrap().is_empty());
    assert_eq!(allocations(&*store).await.len(), 64);
    assert_consistent(&*store).await;
    // A retry of a request that was satisfied is not short.
    let first = engine
        .auto_assign_all(&request("ok", "n", 1, 0))
        .await
        .unwrap();
    let again = engine
        .auto_assign_all(&request("ok", "n", 1, 0))
        .await
        .unwrap();
    assert_eq!((addrs(&again), again.existing), (addrs(&first), true));
}

pub async fn ipv6_only(store: Arc<dyn Datastore>) {
    let engine = engine_with(
        store.clone(),
        vec![pool("p6", "fd00:2::/120", 122)],
        IpamConfig::default(),
    )
    .await;
    let got = engine.auto_assign(&request("h", "n", 0, 70)).await.unwrap();
    assert_eq!(got.ipv6.addresses.len(), 70, "spills into a second block");
    let v4 = engine
        .auto_assign(&request("h4", "n", 1, 0))
        .await
        .unwrap_err();
    assert!(
        matches!(v4, IpamError::Refused(Error::NoPoolForNode { .. })),
        "{v4}"
    );
    assert_eq!(engine.release_by_handle("h").await.unwrap().len(), 70);
    assert!(allocations(&*store).await.is_empty());
}
