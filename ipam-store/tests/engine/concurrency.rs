//! 32 tasks on 8 nodes, split over two engines (two processes) sharing one
//! store, assign and release 10,000 times in a pool small enough that they
//! claim, borrow and fight over the same blocks. After every step the
//! addresses each task was given are checked against a model: no address is
//! ever held by two handles. At the end everything is released and nothing
//! is left.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use ipam_core::{IpamConfig, ReleaseRequest};
use ipam_store::memory::MemoryStore;
use ipam_store::{Datastore, Ipam, Kind, ListQuery};

use crate::cases::{addrs, allocations, assert_consistent, engine_with, pool, request, Engine};

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
                                handle: Some(handle.clone()),
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
