//! The engine under concurrency, checked against a model.
//!
//! 32 tasks on 8 nodes, split over two engines (two processes) sharing one
//! store, assign and release 10,000 times in a pool small enough that they
//! claim, borrow and fight over the same blocks. After every step the
//! addresses each task was given are checked against a model: no address is
//! ever held by two handles. At the end everything is released and nothing
//! is left.
//!
//! On every backend (the cases `engine_tests!` runs from here): one handle
//! assigned and released at the same time, round after round with the
//! store's calls delayed at random, and the one interleaving that used to
//! leave an address without its handle, held exactly in place; batches
//! answered "unavailable" after their commit, retried as a CNI plugin
//! does; pools over
//! one range created at once, of which exactly one must be created; and one
//! block claimed by many nodes at once, which must leave no claim pending.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use ipam_core::{AffinityState, IpamConfig, Pool, ReleaseRequest};
use ipam_store::memory::MemoryStore;
use ipam_store::{Datastore, Ipam, IpamError, Kind, ListQuery, Value};

use crate::cases::{
    addrs, allocations, assert_consistent, engine_on, engine_with, pool, request, Engine,
};
use crate::faults::{Faulty, Gate, Jittery};

const TASKS: u32 = 32;
const NODES: u32 = 8;
const OPERATIONS: u32 = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_tasks_on_eight_nodes_never_hold_an_address_twice() {
    let store: Arc<dyn Datastore> = Arc::new(MemoryStore::new());
    // 16 blocks of 16 for 8 nodes: claims run out, borrowing is routine.
    let first: Arc<Engine> = Arc::new(
        engine_with(
            store.clone(),
            vec![pool("p", "10.0.0.0/24", 28)],
            IpamConfig::default(),
        )
        .await,
    );
    let second: Arc<Engine> = Arc::new(Ipam::new(store.clone()));
    let model: Arc<Mutex<HashMap<IpAddr, String>>> = Arc::default();
    let operations = Arc::new(AtomicU32::new(0));
    let short = Arc::new(AtomicU32::new(0));

    let mut tasks = Vec::new();
    for task in 0..TASKS {
        // Every node is served by both engines, so they race on its blocks;
        // releases go to either, so each releases what the other assigned.
        let (engine, other) = if (task / NODES).is_multiple_of(2) {
            (first.clone(), second.clone())
        } else {
            (second.clone(), first.clone())
        };
        let (model, operations, short) = (model.clone(), operations.clone(), short.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(u64::from(task));
            let node = format!("node-{}", task % NODES);
            let mut held: Vec<(String, Vec<IpAddr>)> = Vec::new();
            let mut serial = 0;
            while operations.fetch_add(1, Ordering::Relaxed) < OPERATIONS {
                if held.is_empty() || (held.len() < 4 && rng.u8(..10) < 6) {
                    serial += 1;
                    let handle = format!("t{task}-{serial}");
                    let got = engine
                        .auto_assign(&request(&handle, &node, rng.u32(1..=2), 0))
                        .await
                        .unwrap_or_else(|e| panic!("{handle}: {e}"));
                    let got = addrs(&got);
                    if got.is_empty() {
                        short.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let mut model = model.lock().unwrap();
                    for address in &got {
                        if let Some(other) = model.insert(*address, handle.clone()) {
                            panic!("{address} given to {handle} while {other} holds it");
                        }
                    }
                    held.push((handle, got));
                } else {
                    let (handle, got) = held.swap_remove(rng.usize(..held.len()));
                    {
                        let mut model = model.lock().unwrap();
                        for address in &got {
                            assert_eq!(model.remove(address).as_deref(), Some(handle.as_str()));
                        }
                    }
                    let releaser = if rng.bool() { &engine } else { &other };
                    if rng.bool() {
                        let mut released = releaser.release_by_handle(&handle).await.unwrap();
                        released.sort();
                        let mut expected = got.clone();
                        expected.sort();
                        assert_eq!(released, expected, "{handle} released what it held");
                    } else {
                        let requests: Vec<ReleaseRequest> = got
                            .iter()
                            .map(|a| ReleaseRequest {
                                address: *a,
                                handle: Some(ipam_core::HandleId::new(handle.clone())),
                                sequence_number: None,
                            })
                            .collect();
                        let out = releaser.release(&requests).await.unwrap();
                        assert_eq!(out.released.len(), got.len(), "{handle}: {out:?}");
                    }
                }
            }
            held
        }));
    }
    let mut leftovers = Vec::new();
    for task in tasks {
        leftovers.extend(task.await.unwrap());
    }

    // What the store holds is exactly what the model says is held.
    let stored = allocations(&*store).await;
    let expected: HashMap<IpAddr, String> = model.lock().unwrap().clone();
    assert_eq!(stored.len(), expected.len());
    for (address, handle) in &expected {
        assert_eq!(stored.get(address), Some(handle), "{address}");
    }
    assert_consistent(&*store).await;

    for (handle, _) in leftovers {
        first.release_by_handle(&handle).await.unwrap();
    }
    assert!(allocations(&*store).await.is_empty(), "an address leaked");
    assert!(
        store
            .list(&ListQuery::All(Kind::Handle))
            .await
            .unwrap()
            .is_empty(),
        "a handle leaked"
    );
    let (a, b) = (first.stats(), second.stats());
    eprintln!(
        "{OPERATIONS} operations, {} short, conflicts {} + {}, retries {} + {}",
        short.load(Ordering::Relaxed),
        a.conflicts,
        b.conflicts,
        a.retries,
        b.retries
    );
    assert!(
        a.conflicts + b.conflicts > 0,
        "the test should make the engines collide"
    );
}

// ----- one handle assigned and released at once, on every backend --------

/// What a CNI ADD retried while kubelet sends DEL does: one handle assigned
/// and released by handle at the same time, round after round. Assignments
/// go through one engine (the node's server), releases through it or a
/// second engine (another process), and every store call is delayed a
/// little at random so that the operations interleave between any two
/// round trips on every backend. After each round the store must agree
/// with itself (no address without its handle, every handle counting what
/// its blocks hold) and the handle must hold at most the one address it
/// asked for, one that an assignment of the round answered.
pub async fn one_handle_assigned_and_released_at_once_holds_only_what_was_answered(
    store: Arc<dyn Datastore>,
) {
    const ROUNDS: u32 = 30;
    let jittery: Arc<dyn Datastore> = Arc::new(Jittery::new(
        store.clone(),
        std::time::Duration::from_millis(2),
    ));
    let first = Arc::new(engine_on(&jittery, "10.0.0.0/24", 26).await);
    let second: Arc<Engine> = Arc::new(Ipam::new(jittery.clone()));
    for round in 0..ROUNDS {
        let handle = format!("mix{round}");
        let mut assigns = Vec::new();
        let mut releases = Vec::new();
        for i in 0..4 {
            let (engine, assigned) = (first.clone(), handle.clone());
            assigns.push(tokio::spawn(async move {
                engine.auto_assign(&request(&assigned, "n", 1, 0)).await
            }));
            let releaser = if (round + i) % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            let released = handle.clone();
            releases.push(tokio::spawn(async move {
                releaser.release_by_handle(&released).await
            }));
        }
        let mut answered = BTreeSet::new();
        for task in assigns {
            let got = task
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("{handle}: {e}"));
            answered.extend(addrs(&got));
        }
        for task in releases {
            task.await
                .unwrap()
                .unwrap_or_else(|e| panic!("{handle}: {e}"));
        }
        assert_consistent(&*store).await;
        let held: Vec<IpAddr> = allocations(&*store)
            .await
            .into_iter()
            .filter(|(_, h)| *h == handle)
            .map(|(a, _)| a)
            .collect();
        assert!(
            held.len() <= 1 && held.iter().all(|a| answered.contains(a)),
            "round {round}: {handle} holds {held:?}, assignments answered {answered:?}"
        );
    }
    for round in 0..ROUNDS {
        first
            .release_by_handle(&format!("mix{round}"))
            .await
            .unwrap();
    }
    assert!(allocations(&*store).await.is_empty(), "an address leaked");
    assert_consistent(&*store).await;
}

/// The interleaving that leaked for good, made exact: an assignment has
/// written its handle and is about to write its block when another
/// process releases the handle. The release answers first, the assignment
/// last, so the handle must end up holding exactly what the assignment
/// answered, and no address may be left without its handle.
async fn release_between_handle_and_block_write(store: Arc<dyn Datastore>, claim: bool) {
    let gate = Arc::new(Gate::new(store.clone(), "h"));
    let gated: Arc<dyn Datastore> = gate.clone();
    let engine = Arc::new(engine_on(&gated, "10.0.0.0/24", 26).await);
    if !claim {
        // The node's block exists: the assignment only updates it.
        engine
            .auto_assign(&request("warm", "n", 1, 0))
            .await
            .unwrap();
    }
    let assigning = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.auto_assign(&request("h", "n", 1, 0)).await })
    };
    gate.reached().await;
    let other: Engine = Ipam::new(store.clone());
    let released = other.release_by_handle("h").await.unwrap();
    assert!(released.is_empty(), "nothing was held yet: {released:?}");
    gate.open();
    let got = assigning.await.unwrap().unwrap();
    assert_eq!(addrs(&got).len(), 1);

    assert_consistent(&*store).await;
    let held: Vec<IpAddr> = allocations(&*store)
        .await
        .into_iter()
        .filter(|(_, h)| h == "h")
        .map(|(a, _)| a)
        .collect();
    assert_eq!(held, addrs(&got), "the last answer was the assignment's");
    assert_eq!(other.release_by_handle("h").await.unwrap(), addrs(&got));
    assert_consistent(&*store).await;
}

pub async fn a_release_between_an_assignments_handle_and_block_writes_leaves_the_last_answer(
    store: Arc<dyn Datastore>,
) {
    release_between_handle_and_block_write(store, false).await;
}

pub async fn a_release_between_a_claims_handle_and_block_writes_leaves_the_last_answer(
    store: Arc<dyn Datastore>,
) {
    release_between_handle_and_block_write(store, true).await;
}

// ----- batches whose answer is lost after their commit --------------------

/// Runs an operation until it gets an answer other than "try again later",
/// as the CNI plugin and kubelet do.
async fn until_answered<T, F: std::future::Future<Output = Result<T, IpamError>>>(
    what: &str,
    mut operation: impl FnMut() -> F,
) -> T {
    for _ in 0..100 {
        match operation().await {
            Ok(answer) => return answer,
            Err(IpamError::Store(e)) if e.is_retryable() => {}
            Err(e) => panic!("{what}: {e}"),
        }
    }
    panic!("{what}: still unavailable after 100 tries");
}

/// Some batches (the first, then about one write in eight) are applied
/// but answered "unavailable" (the connection lost after the commit, the
/// outcome a batch leaves unknown), while 24 handles on three nodes are assigned and released at once, each
/// request sent again until it is answered. The engine must never take
/// such a batch for unwritten: every handle ends up holding exactly what
/// its answer said, no address is held twice, the store agrees with
/// itself, and releasing everything leaves nothing. On a store without
/// batches no fault fires and the ordered path runs the same case.
pub async fn batches_answered_unavailable_after_their_commit_lose_and_double_nothing(
    store: Arc<dyn Datastore>,
) {
    let jittery: Arc<dyn Datastore> = Arc::new(Jittery::new(
        store.clone(),
        std::time::Duration::from_millis(1),
    ));
    let fired = Arc::new(AtomicU32::new(0));
    let counted = fired.clone();
    // The first batch always, so that the case never passes without a
    // fault (a node's lane can serve its requests in a few batches), then
    // about one write in eight.
    let lost: Arc<dyn Datastore> = Arc::new(Faulty::after_commit(jittery, move |_, n| {
        (n == 0 || fastrand::u32(0..8) == 0).then(|| {
            counted.fetch_add(1, Ordering::SeqCst);
            ipam_store::StoreError::Unavailable {
                backend: "test",
                message: "connection reset after the commit".into(),
            }
        })
    }));
    let engine = Arc::new(engine_on(&lost, "10.0.0.0/24", 28).await);
    let handles: Vec<String> = (0..24).map(|i| format!("lost{i}")).collect();
    let tasks: Vec<_> = handles
        .iter()
        .enumerate()
        .map(|(i, handle)| {
            let (engine, handle) = (engine.clone(), handle.clone());
            tokio::spawn(async move {
                let node = format!("n{}", i % 3);
                let asked = request(&handle, &node, 1, 0);
                let got = until_answered(&handle, || engine.auto_assign(&asked)).await;
                (handle, addrs(&got))
            })
        })
        .collect();
    let mut answered: BTreeMap<IpAddr, String> = BTreeMap::new();
    for task in tasks {
        let (handle, got) = task.await.unwrap();
        assert_eq!(got.len(), 1, "{handle}: {got:?}");
        if let Some(other) = answered.insert(got[0], handle.clone()) {
            panic!("{} answered to {other} and {handle}", got[0]);
        }
    }
    assert_eq!(
        fired.load(Ordering::SeqCst) > 0,
        store.atomic_writes().is_some(),
        "faults fire where batches are"
    );
    assert_consistent(&*store).await;
    assert_eq!(
        allocations(&*store).await,
        answered,
        "the store holds exactly what was answered"
    );
    let tasks: Vec<_> = handles
        .iter()
        .map(|handle| {
            let (engine, handle) = (engine.clone(), handle.clone());
            tokio::spawn(async move {
                until_answered(&handle, || engine.release_by_handle(&handle)).await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert!(allocations(&*store).await.is_empty(), "an address leaked");
    assert!(
        store
            .list(&ListQuery::All(Kind::Handle))
            .await
            .unwrap()
            .is_empty(),
        "a handle leaked"
    );
    assert_consistent(&*store).await;
}

// ----- pools created at once over one range -------------------------------

/// 16 pools created at once over one range, half with its CIDR and half
/// with one /24 inside it, through two engines (two processes) on a store
/// whose calls are delayed at random, 5 rounds: exactly one is created, as
/// asked (enabled), and every other request is refused as overlapping.
pub async fn concurrent_creates_of_overlapping_pools_create_exactly_one(store: Arc<dyn Datastore>) {
    let jittery: Arc<dyn Datastore> = Arc::new(Jittery::new(
        store.clone(),
        std::time::Duration::from_millis(2),
    ));
    let engines: [Arc<Engine>; 2] = [
        Arc::new(Ipam::new(jittery.clone())),
        Arc::new(Ipam::new(jittery.clone())),
    ];
    for round in 0..5u8 {
        let range: ipnet::IpNet = format!("10.{round}.0.0/16").parse().unwrap();
        let mut tasks = Vec::new();
        for i in 0..16u8 {
            let cidr = if i % 2 == 0 {
                range.to_string()
            } else {
                format!("10.{round}.7.0/24")
            };
            let created = pool(&format!("r{round}-{i}"), &cidr, 26);
            let engine = engines[usize::from(i % 2)].clone();
            tasks.push(tokio::spawn(
                async move { engine.create_pool(created).await },
            ));
        }
        let mut created = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(()) => created += 1,
                Err(IpamError::Refused(ipam_core::Error::PoolsOverlap { .. })) => {}
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        let inside: Vec<Pool> = engines[0]
            .pools()
            .await
            .unwrap()
            .into_iter()
            .filter(|p| range.contains(&p.cidr().network()))
            .collect();
        assert_eq!((created, inside.len()), (1, 1), "round {round}: {inside:?}");
        assert!(inside[0].enabled(), "created as asked: {inside:?}");
    }
}

// ----- one block claimed by many nodes at once ----------------------------

/// 16 nodes claim one block at once through two engines on a store whose
/// calls are delayed at random, 5 rounds: one claims it, and the 15 that
/// lost take their pending affinities back, so the block has exactly one
/// affinity, confirmed, the winner's.
pub async fn concurrent_claims_of_one_block_leave_one_confirmed_affinity(
    store: Arc<dyn Datastore>,
) {
    let jittery: Arc<dyn Datastore> = Arc::new(Jittery::new(
        store.clone(),
        std::time::Duration::from_millis(2),
    ));
    let first = Arc::new(engine_on(&jittery, "10.0.0.0/16", 26).await);
    let engines: [Arc<Engine>; 2] = [first, Arc::new(Ipam::new(jittery.clone()))];
    for round in 0..5u8 {
        let cidr: ipnet::IpNet = format!("10.0.{round}.0/26").parse().unwrap();
        let mut tasks = Vec::new();
        for node in 0..16usize {
            let engine = engines[node % 2].clone();
            tasks.push(tokio::spawn(async move {
                let claim = engine.claim_affinity(&format!("c{node}"), cidr).await;
                (format!("c{node}"), claim)
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            let (node, claim) = task.await.unwrap();
            let claim = claim.unwrap_or_else(|e| panic!("{node}: {e}"));
            if claim.claimed.is_empty() {
                assert_eq!(claim.failed.len(), 1, "{node}: {claim:?}");
            } else {
                winners.push(node);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let of_block: Vec<(String, AffinityState)> = store
            .list(&ListQuery::All(Kind::Affinity))
            .await
            .unwrap()
            .into_iter()
            .filter_map(|item| match item.value {
                Value::Affinity(a) if a.cidr.net() == cidr => Some((a.node, a.state)),
                _ => None,
            })
            .collect();
        assert_eq!(
            of_block,
            [(winners[0].clone(), AffinityState::Confirmed)],
            "round {round}"
        );
    }
}
