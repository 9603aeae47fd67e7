//! The cases every backend must pass. Each takes a fresh, empty store.

use std::collections::BTreeMap;
use std::sync::Arc;

use ipam_core::block::BlockOwner;
use ipam_core::pool::AssignmentMode;
use ipam_core::{
    Affinity, AffinityState, Block, BlockCidr, Handle, IpamConfig, Pool, PoolSpec, ReservationSpec,
};
use ipam_store::{
    AtomicWrites, BatchError, BatchWrite, Datastore, Key, Kind, ListQuery, Reservation, Revision,
    RoundTrips, StoreError, Value,
};

/// Generates one `#[tokio::test]` per case. `$make` is an async block
/// that yields `(store, guard)`; the guard (a temp dir, a server process)
/// lives until the test ends. With `requires: $present,` first, each test
/// returns at once when `$present` (a `testkit::require` check) is false.
macro_rules! conformance_tests {
    ($make:expr) => {
        conformance_tests!(requires: true, $make);
    };
    (requires: $present:expr, $make:expr) => {
        conformance_tests!(@cases $present; $make;
            every_kind_round_trips_exactly,
            create_refuses_an_existing_key,
            get_of_a_missing_key_is_not_found,
            update_needs_the_current_revision,
            update_of_a_missing_key_is_not_found,
            delete_needs_the_current_revision,
            list_returns_one_kind_only,
            affinities_are_listed_by_node,
            a_deleted_key_can_be_created_again,
            round_trips_are_counted,
            concurrent_creates_have_one_winner,
            concurrent_updates_have_one_winner,
            many_blocks_list_in_one_read,
            a_batch_is_applied_in_full_as_one_write,
            a_batch_with_a_failed_condition_writes_nothing,
            a_batch_naming_a_key_twice_is_refused,
        );
    };
    (@cases $present:expr; $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if !$present {
                    return;
                }
                let (store, _guard) = $make.await;
                $crate::suite::$case(std::sync::Arc::new(store)).await;
            }
        )*
    };
}

fn cidr(text: &str) -> BlockCidr {
    text.parse().expect("test CIDR")
}

fn pool(name: &str, net: &str) -> Pool {
    let mut spec = PoolSpec::new(net.parse().expect("test pool CIDR"));
    if spec.cidr.addr().is_ipv6() {
        spec.block_size = Some(122);
    }
    spec.node_selector = "all()".to_string();
    // What the Kubernetes API server defaults from Calico's CRD; spelled
    // out so that every backend returns exactly what was written.
    spec.assignment_mode = Some(AssignmentMode::Automatic);
    Pool::new(name, spec).expect("test pool")
}

/// A block with two allocations (one with pod attributes), one release and
/// one address in its cooldown (`releasedAt`), so that attributes,
/// `unallocated` order and sequence numbers all matter.
fn busy_block(net: &str, node: &str) -> Block {
    let mut block = Block::new(
        cidr(net),
        Some(BlockOwner::Host(node.to_string())),
        Some("2026-11-23T00:00:00Z".to_string()),
        1_763_856_000_000_000_000,
    );
    let none = Default::default();
    let attrs: BTreeMap<String, String> = [
        ("namespace", "default"),
        ("node", node),
        ("pod", "nginx-5f"),
        ("timestamp", "2026-11-23 00:00:00.000000001 +0000 UTC"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    block.auto_assign(1, "k8s-pod-network.aaaa", &attrs, &none);
    block.bump_sequence_number();
    block.auto_assign(2, "ipip-tunnel-addr-node-1", &BTreeMap::new(), &none);
    block.bump_sequence_number();
    block.release_by_handle("ipip-tunnel-addr-node-1", None, None);
    block.bump_sequence_number();
    block.auto_assign(1, "k8s-pod-network.bbbb", &attrs, &none);
    block.bump_sequence_number();
    block.release_by_handle("k8s-pod-network.bbbb", None, Some(1_763_856_060));
    block.bump_sequence_number();
    block
}

fn handle(id: &str, blocks: &[(&str, u32)]) -> Handle {
    let mut handle = Handle::new(id);
    for (net, count) in blocks {
        handle.increment(cidr(net), *count);
    }
    handle
}

/// One object of every kind, IPv4 and IPv6.
fn one_of_each() -> Vec<Value> {
    let config = IpamConfig {
        strict_affinity: true,
        max_blocks_per_host: 7,
        ip_cooldown_seconds: 45,
        ..IpamConfig::default()
    };
    vec![
        Value::Pool(pool("default-ipv4-ippool", "10.0.0.0/16")),
        Value::Pool(pool("default-ipv6-ippool", "fd00:10::/112")),
        Value::Block(busy_block("10.0.0.64/26", "node-1")),
        Value::Block(busy_block("fd00:10::40/122", "node-1")),
        Value::Handle(handle(
            "k8s-pod-network.aaaa",
            &[("10.0.0.64/26", 1), ("fd00:10::40/122", 1)],
        )),
        Value::Handle(handle("ipip-tunnel-addr-node-1", &[("10.0.0.64/26", 1)])),
        Value::Affinity(Affinity::new(
            "node-1",
            cidr("10.0.0.64/26"),
            AffinityState::Confirmed,
        )),
        Value::Affinity(Affinity::new(
            "node-1",
            cidr("fd00:10::40/122"),
            AffinityState::Pending,
        )),
        Value::Config(config),
        Value::Reservation(Reservation {
            name: "gateways".to_string(),
            spec: ReservationSpec {
                reserved_cidrs: vec![
                    "10.0.0.1/32".parse().unwrap(),
                    "10.0.8.0/24".parse().unwrap(),
                ],
                unknown: Default::default(),
            },
        }),
    ]
}

fn affinity(node: &str, net: &str) -> Value {
    Value::Affinity(Affinity::new(node, cidr(net), AffinityState::Confirmed))
}

async fn create(store: &dyn Datastore, value: &Value) -> Revision {
    store
        .create(value)
        .await
        .unwrap_or_else(|e| panic!("create {}: {e}", value.key()))
}

pub async fn every_kind_round_trips_exactly<S: Datastore>(store: Arc<S>) {
    for value in one_of_each() {
        let revision = create(&*store, &value).await;
        let read = store.get(&value.key()).await.expect("get after create");
        assert_eq!(
            read.value,
            value,
            "{} changed on its way through the store",
            value.key()
        );
        assert_eq!(
            read.revision,
            revision,
            "{}: get must report the revision create returned",
            value.key()
        );
    }
}

pub async fn create_refuses_an_existing_key<S: Datastore>(store: Arc<S>) {
    for value in one_of_each() {
        create(&*store, &value).await;
        let err = store.create(&value).await.expect_err("second create");
        assert_eq!(err, StoreError::AlreadyExists { key: value.key() });
    }
}

pub async fn get_of_a_missing_key_is_not_found<S: Datastore>(store: Arc<S>) {
    for value in one_of_each() {
        let key = value.key();
        let err = store.get(&key).await.expect_err("get of nothing");
        assert_eq!(err, StoreError::NotFound { key });
    }
}

pub async fn update_needs_the_current_revision<S: Datastore>(store: Arc<S>) {
    let original = busy_block("10.0.0.0/26", "node-1");
    let first = create(&*store, &Value::Block(original.clone())).await;

    let mut changed = original.clone();
    changed.auto_assign(
        3,
        "k8s-pod-network.bbbb",
        &BTreeMap::new(),
        &Default::default(),
    );
    changed.bump_sequence_number();
    let second = store
        .update(&Value::Block(changed.clone()), &first)
        .await
        .expect("update at the current revision");
    assert_ne!(first, second, "an update must give a new revision");

    // Writing again from the first read must fail and change nothing.
    let mut stale = original.clone();
    stale.auto_assign(
        1,
        "k8s-pod-network.cccc",
        &BTreeMap::new(),
        &Default::default(),
    );
    let err = store
        .update(&Value::Block(stale), &first)
        .await
        .expect_err("update at a stale revision");
    assert_eq!(
        err,
        StoreError::Conflict {
            key: Key::Block(original.cidr())
        }
    );
    let read = store.get(&Key::Block(original.cidr())).await.unwrap();
    assert_eq!(read.value, Value::Block(changed));
    assert_eq!(read.revision, second);

    // Every kind takes an update at its current revision.
    for value in one_of_each() {
        if value.key() == Key::Block(original.cidr()) {
            continue;
        }
        let revision = create(&*store, &value).await;
        store
            .update(&value, &revision)
            .await
            .unwrap_or_else(|e| panic!("update {}: {e}", value.key()));
    }
}

pub async fn update_of_a_missing_key_is_not_found<S: Datastore>(store: Arc<S>) {
    for value in one_of_each() {
        let other = create(&*store, &affinity("elsewhere", "10.9.0.0/26")).await;
        let err = store
            .update(&value, &other)
            .await
            .expect_err("update of nothing");
        assert_eq!(err, StoreError::NotFound { key: value.key() });
        store
            .delete(&affinity("elsewhere", "10.9.0.0/26").key(), &other)
            .await
            .unwrap();
    }
}

/// The same object with something changed: a Kubernetes API server keeps
/// the resourceVersion of an update that changes nothing.
fn changed(value: &Value) -> Value {
    match value.clone() {
        Value::Pool(pool) => {
            let mut spec = pool.spec().clone();
            spec.disabled = !spec.disabled;
            Value::Pool(Pool::new(pool.name(), spec).unwrap())
        }
        Value::Block(mut block) => {
            block.bump_sequence_number();
            Value::Block(block)
        }
        Value::Handle(mut handle) => {
            handle.increment(cidr("10.0.0.64/26"), 1);
            Value::Handle(handle)
        }
        Value::Affinity(mut affinity) => {
            affinity.state = AffinityState::PendingDeletion;
            Value::Affinity(affinity)
        }
        Value::Config(config) => Value::Config(IpamConfig {
            auto_allocate_blocks: !config.auto_allocate_blocks,
            ..config
        }),
        Value::Reservation(mut r) => {
            r.spec.reserved_cidrs.push("10.0.9.0/24".parse().unwrap());
            Value::Reservation(r)
        }
    }
}

pub async fn delete_needs_the_current_revision<S: Datastore>(store: Arc<S>) {
    for value in one_of_each() {
        let key = value.key();
        let first = create(&*store, &value).await;
        let newer = changed(&value);
        let second = store.update(&newer, &first).await.unwrap();
        let err = store
            .delete(&key, &first)
            .await
            .expect_err("delete at a stale revision");
        assert_eq!(err, StoreError::Conflict { key: key.clone() });
        assert_eq!(
            store.get(&key).await.unwrap().value,
            newer,
            "a refused delete removed or changed {key}"
        );

        store
            .delete(&key, &second)
            .await
            .unwrap_or_else(|e| panic!("delete {key}: {e}"));
        assert_eq!(
            store.get(&key).await.unwrap_err(),
            StoreError::NotFound { key: key.clone() }
        );
        let err = store.delete(&key, &second).await.expect_err("delete twice");
        assert_eq!(err, StoreError::NotFound { key });
    }
}

pub async fn list_returns_one_kind_only<S: Datastore>(store: Arc<S>) {
    let values = one_of_each();
    for value in &values {
        create(&*store, value).await;
    }
    for kind in Kind::ALL {
        let mut listed: Vec<Value> = store
            .list(&ListQuery::All(kind))
            .await
            .unwrap_or_else(|e| panic!("list {kind}: {e}"))
            .into_iter()
            .map(|v| v.value)
            .collect();
        let mut expected: Vec<Value> = values
            .iter()
            .filter(|v| v.kind() == kind)
            .cloned()
            .collect();
        listed.sort_by_key(|v| v.key());
        expected.sort_by_key(|v| v.key());
        assert_eq!(listed, expected, "list of {kind}");
    }
}

pub async fn affinities_are_listed_by_node<S: Datastore>(store: Arc<S>) {
    // node-1 is a prefix of node-10: a prefix scan must not confuse them.
    let mut pending = Affinity::new("node-1", cidr("10.0.1.0/26"), AffinityState::Pending);
    pending.deleted = false;
    let values = [
        affinity("node-1", "10.0.0.0/26"),
        Value::Affinity(pending),
        affinity("node-1", "fd00:10::/122"),
        affinity("node-10", "10.0.2.0/26"),
        affinity("node-2", "10.0.3.0/26"),
    ];
    for value in &values {
        create(&*store, value).await;
    }
    let read = |node: &'static str| {
        let store = store.clone();
        async move {
            let mut keys: Vec<Key> = store
                .list(&ListQuery::AffinitiesOf(node.to_string()))
                .await
                .unwrap()
                .into_iter()
                .map(|v| v.value.key())
                .collect();
            keys.sort();
            keys
        }
    };
    let mut expected: Vec<Key> = values[..3].iter().map(Value::key).collect();
    expected.sort();
    assert_eq!(read("node-1").await, expected);
    assert_eq!(read("node-10").await, vec![values[3].key()]);
    assert_eq!(read("node-3").await, Vec::<Key>::new());
}

pub async fn a_deleted_key_can_be_created_again<S: Datastore>(store: Arc<S>) {
    for value in one_of_each() {
        let first = create(&*store, &value).await;
        store.delete(&value.key(), &first).await.unwrap();
        let again = create(&*store, &value).await;
        assert_eq!(store.get(&value.key()).await.unwrap().revision, again);
    }
}

pub async fn round_trips_are_counted<S: Datastore>(store: Arc<S>) {
    let value = Value::Handle(handle("k8s-pod-network.dddd", &[("10.0.0.0/26", 1)]));
    let start = store.round_trips();
    let rev = create(&*store, &value).await;
    let rev = store.update(&changed(&value), &rev).await.unwrap();
    store.get(&value.key()).await.unwrap();
    store.list(&ListQuery::All(Kind::Handle)).await.unwrap();
    let _ = store.get(&Key::Handle("nobody".to_string())).await;
    assert_eq!(
        store.round_trips().since(start),
        RoundTrips {
            reads: 3,
            writes: 2
        }
    );
    // Kubernetes deletes a handle in two steps, as Calico does (mark it
    // deleted, then delete it with a UID precondition): one or two writes,
    // never a read.
    let before = store.round_trips();
    store.delete(&value.key(), &rev).await.unwrap();
    let spent = store.round_trips().since(before);
    assert_eq!(spent.reads, 0);
    assert!((1..=2).contains(&spent.writes), "{spent:?}");
}

pub async fn concurrent_creates_have_one_winner<S: Datastore + 'static>(store: Arc<S>) {
    let value = Value::Block(busy_block("10.0.0.0/26", "node-1"));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            let value = value.clone();
            tokio::spawn(async move { store.create(&value).await })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => won += 1,
            Err(StoreError::AlreadyExists { .. }) => {}
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(won, 1, "exactly one create of one key may succeed");
}

pub async fn concurrent_updates_have_one_winner<S: Datastore + 'static>(store: Arc<S>) {
    let block = busy_block("10.0.0.0/26", "node-1");
    let revision = create(&*store, &Value::Block(block.clone())).await;
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            let mut mine = block.clone();
            let revision = revision.clone();
            tokio::spawn(async move {
                let handle = format!("k8s-pod-network.{i}");
                mine.auto_assign(1, &handle, &BTreeMap::new(), &Default::default());
                store
                    .update(&Value::Block(mine), &revision)
                    .await
                    .map(|_| handle)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(handle) => winners.push(handle),
            Err(StoreError::Conflict { .. }) => {}
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one update from one revision may succeed"
    );
    let Value::Block(stored) = store.get(&Key::Block(block.cidr())).await.unwrap().value else {
        panic!("not a block");
    };
    assert_eq!(
        stored.ordinals_of_handle(&winners[0]).count(),
        1,
        "the winner's write is the one stored"
    );
}

pub async fn many_blocks_list_in_one_read<S: Datastore>(store: Arc<S>) {
    for i in 0..300u32 {
        let net = format!("10.{}.{}.0/26", i / 256, i % 256);
        create(
            &*store,
            &Value::Block(busy_block(&net, &format!("node-{}", i % 7))),
        )
        .await;
    }
    let before = store.round_trips();
    let listed = store.list(&ListQuery::All(Kind::Block)).await.unwrap();
    assert_eq!(listed.len(), 300);
    assert_eq!(store.round_trips().since(before).reads, 1);
    let keys: std::collections::BTreeSet<Key> = listed.iter().map(|v| v.value.key()).collect();
    assert_eq!(keys.len(), 300, "every block once");
}

// ----- batches (stores that write several objects atomically) ------------

/// The store's batches; `None` only where the backend has no multi-object
/// transaction (Kubernetes), so that a backend that loses its batches
/// fails these cases instead of skipping them.
fn batches<S: Datastore>(store: &S) -> Option<&dyn AtomicWrites> {
    let atomic = store.atomic_writes();
    assert_eq!(
        atomic.is_none(),
        store.backend() == "kubernetes",
        "{}: batches offered where they cannot be, or missing",
        store.backend()
    );
    atomic
}

pub async fn a_batch_is_applied_in_full_as_one_write<S: Datastore>(store: Arc<S>) {
    let Some(atomic) = batches(&*store) else {
        return;
    };
    let kept = Value::Handle(handle("kept", &[("10.0.0.0/26", 1)]));
    let gone = Value::Handle(handle("gone", &[("10.0.0.0/26", 1)]));
    let kept_rev = create(&*store, &kept).await;
    let gone_rev = create(&*store, &gone).await;
    let new = Value::Block(busy_block("10.0.0.0/26", "n"));
    let before = store.round_trips();
    let revisions = atomic
        .write_all(&[
            BatchWrite::Update(changed(&kept), kept_rev.clone()),
            BatchWrite::Create(new.clone()),
            BatchWrite::Delete(gone.key(), gone_rev),
        ])
        .await
        .unwrap();
    assert_eq!(
        store.round_trips().since(before),
        RoundTrips {
            reads: 0,
            writes: 1
        },
        "a batch is one round trip"
    );
    assert_eq!(revisions.len(), 3);
    assert!(revisions[2].is_none(), "a delete has no revision");
    let stored = store.get(&kept.key()).await.unwrap();
    assert_eq!(stored.value, changed(&kept));
    assert_eq!(Some(&stored.revision), revisions[0].as_ref());
    assert_ne!(stored.revision, kept_rev);
    let stored = store.get(&new.key()).await.unwrap();
    assert_eq!(stored.value, new);
    assert_eq!(Some(&stored.revision), revisions[1].as_ref());
    assert!(matches!(
        store.get(&gone.key()).await,
        Err(StoreError::NotFound { .. })
    ));
    // The revisions returned are the ones the next write must name.
    store
        .update(&kept, revisions[0].as_ref().unwrap())
        .await
        .unwrap();
}

pub async fn a_batch_with_a_failed_condition_writes_nothing<S: Datastore>(store: Arc<S>) {
    let Some(atomic) = batches(&*store) else {
        return;
    };
    let a = Value::Handle(handle("a", &[("10.0.0.0/26", 1)]));
    let b = Value::Handle(handle("b", &[("10.0.0.0/26", 1)]));
    let a_rev = create(&*store, &a).await;
    let b_rev = create(&*store, &b).await;
    let stale = store.update(&changed(&b), &b_rev).await.unwrap();
    let new = Value::Block(busy_block("10.0.0.0/26", "n"));
    let cases = [
        (
            BatchWrite::Update(changed(&b), b_rev.clone()),
            StoreError::Conflict { key: b.key() },
        ),
        (
            BatchWrite::Create(b.clone()),
            StoreError::AlreadyExists { key: b.key() },
        ),
        (
            BatchWrite::Delete(Key::Handle("nobody".into()), stale.clone()),
            StoreError::NotFound {
                key: Key::Handle("nobody".into()),
            },
        ),
    ];
    for (failing, cause) in cases {
        let err = atomic
            .write_all(&[
                BatchWrite::Update(changed(&a), a_rev.clone()),
                BatchWrite::Create(new.clone()),
                failing,
            ])
            .await
            .unwrap_err();
        assert_eq!(err, BatchError::Refused { index: 2, cause });
        let stored = store.get(&a.key()).await.unwrap();
        assert_eq!(
            (stored.value, stored.revision),
            (a.clone(), a_rev.clone()),
            "a refused batch changed an object"
        );
        assert!(
            matches!(
                store.get(&new.key()).await,
                Err(StoreError::NotFound { .. })
            ),
            "a refused batch created an object"
        );
    }
    assert_eq!(store.get(&b.key()).await.unwrap().revision, stale);
}

pub async fn a_batch_naming_a_key_twice_is_refused<S: Datastore>(store: Arc<S>) {
    let Some(atomic) = batches(&*store) else {
        return;
    };
    let a = Value::Handle(handle("a", &[("10.0.0.0/26", 1)]));
    let err = atomic
        .write_all(&[BatchWrite::Create(a.clone()), BatchWrite::Create(a.clone())])
        .await
        .unwrap_err();
    assert_eq!(err, BatchError::DuplicateKey { key: a.key() });
    assert!(matches!(
        store.get(&a.key()).await,
        Err(StoreError::NotFound { .. })
    ));
}
