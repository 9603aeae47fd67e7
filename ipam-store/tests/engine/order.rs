//! Engine cases every backend must pass on what writes cost, their order,
//! and what failures and other engines leave behind.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use crate::faults::{conflict_on, pause_writes, Faulty};

use ipam_core::usage::{address_status, usage, AddressStatus};
use ipam_core::{IpamConfig, ReleaseRequest};
use ipam_store::{Datastore, Ipam, IpamError, Key, Kind, ListQuery, Value};

use crate::cases::{
    addrs, allocations, assert_consistent, engine_on, engine_with, pool, request, Engine,
};

/// What the steady state costs: no read, and per assignment or release one
/// write per object (the handle and the block) in order, or one batch of
/// both on a store that writes several objects atomically.
pub async fn steady_state_costs_one_batch_or_two_writes_and_no_reads(store: Arc<dyn Datastore>) {
    let batched = store.atomic_writes().is_some();
    assert_eq!(
        batched,
        store.backend() != "kubernetes",
        "only Kubernetes has no batches"
    );
    let engine = engine_on(&store, "10.0.0.0/16", 26).await;
    // Two addresses, so that releasing one updates the handle rather than
    // deleting it (a Kubernetes delete takes two writes).
    let warm = engine
        .auto_assign(&request("warm", "n", 2, 0))
        .await
        .unwrap();
    let before = store.round_trips();
    for i in 0..20 {
        engine
            .auto_assign(&request(&format!("pod-{i}"), "n", 1, 0))
            .await
            .unwrap();
    }
    let spent = store.round_trips().since(before);
    if batched {
        assert_eq!(
            (spent.reads, spent.writes),
            (0, 20),
            "one batch (handle and block) each"
        );
    } else {
        assert_eq!(
            (spent.reads, spent.writes),
            (0, 40),
            "one handle and one block write each"
        );
    }
    let before = store.round_trips();
    let out = engine
        .release(&[ReleaseRequest::address(warm.ipv4.addresses[0].addr())])
        .await
        .unwrap();
    assert_eq!(out.released.len(), 1);
    let spent = store.round_trips().since(before);
    let (writes, what) = if batched {
        (1, "release: one batch of the block and the handle")
    } else {
        (2, "release: one block and one handle write")
    };
    assert_eq!((spent.reads, spent.writes), (0, writes), "{what}");
    let before = store.round_trips();
    assert_eq!(engine.release_by_handle("pod-3").await.unwrap().len(), 1);
    let spent = store.round_trips().since(before);
    assert_eq!(
        spent.reads, 0,
        "release by a handle this engine holds: no read"
    );
    if batched {
        assert_eq!(spent.writes, 1, "the block and the handle's deletion");
    } else {
        // A block write, then the handle's deletion (two writes on Kubernetes).
        assert!((2..=3).contains(&spent.writes), "{spent:?}");
    }
    assert_consistent(&*store).await;
}

/// A release of more addresses than a store's batch may hold (etcd takes
/// 128 operations per transaction by default) is written in order instead
/// of being refused: 150 handles in three blocks, released in one call,
/// make one plan of 153 writes.
pub async fn a_plan_larger_than_a_batch_is_written_in_order(store: Arc<dyn Datastore>) {
    let engine = engine_on(&store, "10.0.0.0/24", 26).await;
    let mut held = Vec::new();
    for i in 0..150 {
        let got = engine
            .auto_assign(&request(&format!("pod-{i}"), "n", 1, 0))
            .await
            .unwrap();
        held.extend(addrs(&got));
    }
    let releases: Vec<ReleaseRequest> = held.iter().map(|a| ReleaseRequest::address(*a)).collect();
    let out = engine.release(&releases).await.unwrap();
    assert_eq!(out.released.len(), 150, "every address released");
    assert!(allocations(&*store).await.is_empty(), "nothing left held");
    let handles = store.list(&ListQuery::All(Kind::Handle)).await.unwrap();
    assert!(handles.is_empty(), "handles left: {}", handles.len());
    assert_consistent(&*store).await;
}

pub async fn two_engines_on_one_store_never_double_allocate(store: Arc<dyn Datastore>) {
    // Two processes' engines on one store, one small pool, strict off: they
    // claim, borrow and collide on the same blocks.
    let a = Arc::new(engine_on(&store, "10.0.0.0/26", 28).await);
    let b: Arc<Engine> = Arc::new(Ipam::new(store.clone()));
    let mut tasks = Vec::new();
    for i in 0..48 {
        let engine = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let got = engine
                .auto_assign(&request(&format!("h{i}"), &format!("node-{}", i % 4), 1, 0))
                .await
                .unwrap();
            (format!("h{i}"), addrs(&got))
        }));
    }
    let mut seen = BTreeMap::new();
    for task in tasks {
        let (handle, got) = task.await.unwrap();
        assert_eq!(got.len(), 1, "{handle}: 48 addresses fit in 64");
        if let Some(other) = seen.insert(got[0], handle.clone()) {
            panic!("{} given to {other} and {handle}", got[0]);
        }
    }
    let stored = allocations(&*store).await;
    assert_eq!(stored.len(), 48);
    for (address, handle) in &seen {
        assert_eq!(stored.get(address), Some(handle));
    }
    assert_consistent(&*store).await;
    let snapshot = a.snapshot().await.unwrap();
    assert_eq!(
        usage(&snapshot).pools[0].in_use,
        48,
        "a fresh snapshot sees every allocation"
    );
    for address in seen.keys() {
        assert!(matches!(
            address_status(
                &snapshot,
                *address,
                ipam_core::Now::from(std::time::SystemTime::now())
            ),
            AddressStatus::InUse { .. }
        ));
    }
}

pub async fn handle_goes_before_block_on_assign_and_after_on_release(store: Arc<dyn Datastore>) {
    let order = Arc::new(Mutex::new(Vec::new()));
    let seen = order.clone();
    let faulty: Arc<dyn Datastore> = Arc::new(Faulty::new(store.clone(), move |key, _| {
        seen.lock().unwrap().push(key.kind());
        None
    }));
    let engine = engine_with(
        faulty,
        vec![pool("p", "10.0.0.0/24", 26)],
        IpamConfig::default(),
    )
    .await;
    order.lock().unwrap().clear();
    engine.auto_assign(&request("h", "n", 1, 0)).await.unwrap();
    assert_eq!(
        std::mem::take(&mut *order.lock().unwrap()),
        [
            Kind::Affinity,
            Kind::Block,
            Kind::Affinity,
            Kind::Handle,
            Kind::Block
        ],
        "the claim first (pending affinity, empty block, confirmed affinity), \
         then the handle, then the block"
    );
    engine.release_by_handle("h").await.unwrap();
    assert_eq!(
        std::mem::take(&mut *order.lock().unwrap()),
        [Kind::Block, Kind::Handle]
    );
}

pub async fn a_block_write_that_keeps_failing_leaves_nothing_behind(store: Arc<dyn Datastore>) {
    let faulty: Arc<dyn Datastore> = Arc::new(Faulty::new(store.clone(), conflict_on(Kind::Block)));
    let options = ipam_store::IpamOptions {
        max_attempts: std::num::NonZeroU32::new(5).expect("not zero"),
        ..Default::default()
    };
    let engine: Engine = Ipam::with_options(faulty, options);
    store
        .create(&Value::Pool(pool("p", "10.0.0.0/24", 26)))
        .await
        .unwrap();
    let err = engine
        .auto_assign(&request("h", "n", 1, 0))
        .await
        .unwrap_err();
    match &err {
        IpamError::RetriesExhausted {
            operation,
            attempts,
            ..
        } => assert_eq!((*operation, *attempts), ("auto-assign", 5)),
        other => panic!("expected RetriesExhausted, got {other}"),
    }
    assert!(
        err.to_string().contains("gave up after 5 attempts"),
        "{err}"
    );
    for kind in [Kind::Block, Kind::Handle, Kind::Affinity] {
        let left = store.list(&ListQuery::All(kind)).await.unwrap();
        assert!(left.is_empty(), "{kind} left behind: {left:?}");
    }
}

pub async fn a_conflict_is_retried_and_counted(store: Arc<dyn Datastore>) {
    // The second block write (the first assignment's block is the first)
    // fails once, as if another writer got there first.
    let mut block_writes = 0;
    let faulty: Arc<dyn Datastore> = Arc::new(Faulty::new(store.clone(), move |key, _| {
        if key.kind() != Kind::Block {
            return None;
        }
        block_writes += 1;
        (block_writes == 2).then(|| ipam_store::StoreError::Conflict { key: key.clone() })
    }));
    let engine = engine_with(
        faulty,
        vec![pool("p", "10.0.0.0/24", 26)],
        IpamConfig::default(),
    )
    .await;
    engine.auto_assign(&request("h1", "n", 1, 0)).await.unwrap();
    let got = engine.auto_assign(&request("h2", "n", 2, 0)).await.unwrap();
    assert_eq!(got.ipv4.addresses.len(), 2);
    let stats = engine.stats();
    assert_eq!((stats.conflicts, stats.retries), (1, 1));
    assert_eq!(allocations(&*store).await.len(), 3);
    assert_consistent(&*store).await;
}

pub async fn an_unreachable_store_fails_at_once_and_undoes_the_handle(store: Arc<dyn Datastore>) {
    let faulty: Arc<dyn Datastore> = Arc::new(Faulty::new(store.clone(), |key, _| {
        (key.kind() == Kind::Block).then(|| ipam_store::StoreError::Unavailable {
            backend: "test",
            message: "connection refused".into(),
        })
    }));
    let engine: Engine = Ipam::new(faulty);
    store
        .create(&Value::Pool(pool("p", "10.0.0.0/24", 26)))
        .await
        .unwrap();
    let err = engine
        .auto_assign(&request("h", "n", 1, 0))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, IpamError::Store(e) if e.is_retryable()),
        "the caller is told to try again later: {err}"
    );
    assert_eq!(
        engine.stats().retries,
        0,
        "no retry against a store that is down"
    );
    for kind in [Kind::Block, Kind::Handle, Kind::Affinity] {
        let left = store.list(&ListQuery::All(kind)).await.unwrap();
        assert!(left.is_empty(), "{kind} left behind: {left:?}");
    }
}

pub async fn a_release_by_another_engine_updates_the_handle(store: Arc<dyn Datastore>) {
    let first = engine_on(&store, "10.0.0.0/24", 26).await;
    let got = first.auto_assign(&request("h", "n", 2, 0)).await.unwrap();
    let second: Engine = Ipam::new(store.clone());
    let a = got.ipv4.addresses[0].addr();
    assert_eq!(
        second
            .release(&[ReleaseRequest::address(a)])
            .await
            .unwrap()
            .released,
        vec![a]
    );
    assert_consistent(&*store).await;
    assert_eq!(
        first.addresses_of_handle("h").await.unwrap(),
        vec![got.ipv4.addresses[1]]
    );
    let b = got.ipv4.addresses[1].addr();
    second.release(&[ReleaseRequest::address(b)]).await.unwrap();
    assert_consistent(&*store).await;
    assert!(
        store.get(&Key::Handle("h".into())).await.is_err(),
        "an emptied handle is deleted"
    );
}

pub async fn concurrent_requests_of_a_node_share_one_block_write(store: Arc<dyn Datastore>) {
    // Writes take a while, so the 31 requests that arrive while the first
    // is being written wait together and are served together.
    let slow: Arc<dyn Datastore> = Arc::new(Faulty::new(
        store.clone(),
        pause_writes(std::time::Duration::from_millis(20)),
    ));
    let engine = Arc::new(engine_on(&slow, "10.0.0.0/24", 26).await);
    engine
        .auto_assign(&request("warm", "n", 1, 0))
        .await
        .unwrap();
    let before = store.round_trips();
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let engine = engine.clone();
            tokio::spawn(async move {
                engine
                    .auto_assign(&request(&format!("burst-{i}"), "n", 1, 0))
                    .await
            })
        })
        .collect();
    let mut seen = BTreeSet::new();
    for task in tasks {
        let got = task.await.unwrap().unwrap();
        assert_eq!(got.ipv4.addresses.len(), 1);
        assert!(seen.insert(got.ipv4.addresses[0]), "an address given twice");
    }
    let spent = store.round_trips().since(before);
    // One by one: 64 writes. Together: 32 handle writes and a block write
    // per batch, a few batches at most.
    assert!(
        spent.writes <= 40,
        "32 requests cost {} writes: they were not coalesced",
        spent.writes
    );
    assert_consistent(&*store).await;
}
