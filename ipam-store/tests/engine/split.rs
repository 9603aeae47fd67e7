//! Splitting a pool (calicoctl `ipam split`) on every backend: the blocks,
//! affinities and addresses of the parent stay, each block in exactly one
//! child; refusals name what is wrong; a split cut short is finished by
//! running it again; and allocations that run during a split all succeed,
//! each address held once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipam_core::split::{SplitError, SplitTarget};
use ipam_core::{AffinityState, IpamConfig, Pool};
use ipam_store::{
    Datastore, Ipam, IpamError, IpamOptions, Key, Kind, ListQuery, StoreError, Value,
};

use crate::cases::{
    addrs, allocations, assert_consistent, block, engine_with, pool, pool_with, request, Engine,
};
use crate::faults::{Faulty, Jittery};

fn by_name(name: &str) -> SplitTarget {
    SplitTarget::Name(name.to_string())
}

/// Every pool in the store, by name.
async fn stored_pools(store: &dyn Datastore) -> BTreeMap<String, Pool> {
    let mut pools = BTreeMap::new();
    for item in store.list(&ListQuery::All(Kind::Pool)).await.unwrap() {
        let Value::Pool(pool) = item.value else {
            panic!()
        };
        pools.insert(pool.name().to_string(), pool);
    }
    pools
}

/// Every object of a kind, as stored, by key.
async fn stored(store: &dyn Datastore, kind: Kind) -> BTreeMap<String, Value> {
    store
        .list(&ListQuery::All(kind))
        .await
        .unwrap()
        .into_iter()
        .map(|item| (item.value.key().to_string(), item.value))
        .collect()
}

/// Every block lies in exactly one of the pools, and the pools are those
/// named.
async fn assert_blocks_in_one_pool_each(store: &dyn Datastore, names: &[&str]) {
    let pools = stored_pools(store).await;
    assert_eq!(
        pools.keys().map(String::as_str).collect::<Vec<_>>(),
        names,
        "the pools after the split"
    );
    for item in store.list(&ListQuery::All(Kind::Block)).await.unwrap() {
        let Value::Block(b) = item.value else {
            panic!()
        };
        let first = b.cidr().net().network();
        let last = b.cidr().address(b.cidr().size() - 1);
        let holders: Vec<&str> = pools
            .values()
            .filter(|p| p.contains(first) && p.contains(last))
            .map(Pool::name)
            .collect();
        assert_eq!(holders.len(), 1, "block {} lies in {holders:?}", b.cidr());
    }
}

pub async fn a_split_keeps_every_block_affinity_and_address_in_one_child(
    store: Arc<dyn Datastore>,
) {
    let parent = pool_with("ippool-name1", "10.0.1.0/24", 27, |spec| {
        spec.ipip_mode = Some("Always".into());
        spec.nat_outgoing = true;
        spec.node_selector = "all()".into();
    });
    let engine = engine_with(store.clone(), vec![parent.clone()], IpamConfig::default()).await;
    for (handle, node) in [("a", "node-1"), ("b", "node-2"), ("c", "node-3")] {
        engine
            .auto_assign(&request(handle, node, 2, 0))
            .await
            .unwrap();
    }
    let blocks = stored(&*store, Kind::Block).await;
    let affinities = stored(&*store, Kind::Affinity).await;
    let handles = stored(&*store, Kind::Handle).await;
    let held = allocations(&*store).await;
    // As stored: Kubernetes defaults assignmentMode.
    let parent = stored_pools(&*store).await["ippool-name1"].clone();

    let split = engine
        .split_pool(&SplitTarget::Cidr("10.0.1.0/24".parse().unwrap()), 4)
        .await
        .unwrap();
    assert_eq!(split.parent(), &parent);

    // The objects of the parent are as they were, byte for byte.
    assert_eq!(stored(&*store, Kind::Block).await, blocks);
    assert_eq!(stored(&*store, Kind::Affinity).await, affinities);
    assert_eq!(stored(&*store, Kind::Handle).await, handles);
    assert_eq!(allocations(&*store).await, held);
    assert_blocks_in_one_pool_each(
        &*store,
        &[
            "split-ippool-name1-0",
            "split-ippool-name1-1",
            "split-ippool-name1-2",
            "split-ippool-name1-3",
        ],
    )
    .await;
    // The children are the parent's settings over a quarter each, enabled.
    let pools = stored_pools(&*store).await;
    for (index, cidr) in [
        "10.0.1.0/26",
        "10.0.1.64/26",
        "10.0.1.128/26",
        "10.0.1.192/26",
    ]
    .iter()
    .enumerate()
    {
        let child = &pools[&format!("split-ippool-name1-{index}")];
        assert_eq!(child.cidr().to_string(), *cidr);
        let mut spec = child.spec().clone();
        spec.cidr = parent.cidr();
        assert_eq!(&spec, parent.spec());
    }
    // Nodes go on in their affine blocks, and a new node gets a block of a
    // child.
    let again = engine
        .auto_assign(&request("a2", "node-1", 1, 0))
        .await
        .unwrap();
    let node_1_blocks: BTreeSet<_> = engine
        .affinities_of("node-1")
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.state == AffinityState::Confirmed)
        .map(|a| a.cidr)
        .collect();
    assert!(node_1_blocks
        .iter()
        .any(|b| b.net().contains(&addrs(&again)[0])));
    engine
        .auto_assign(&request("d", "node-4", 1, 0))
        .await
        .unwrap();
    assert_blocks_in_one_pool_each(
        &*store,
        &[
            "split-ippool-name1-0",
            "split-ippool-name1-1",
            "split-ippool-name1-2",
            "split-ippool-name1-3",
        ],
    )
    .await;
    assert_consistent(&*store).await;
}

pub async fn split_refusals_name_the_field_and_value_and_change_nothing(store: Arc<dyn Datastore>) {
    let engine = engine_with(
        store.clone(),
        vec![pool("p", "10.0.0.0/22", 26)],
        IpamConfig::default(),
    )
    .await;
    let before = stored_pools(&*store).await;
    let refusal = |result: Result<_, IpamError>| match result {
        Err(IpamError::Split(e)) => e,
        other => panic!("expected a refused split, got {other:?}"),
    };
    let e = refusal(engine.split_pool(&by_name("p"), 3).await);
    assert_eq!(e, SplitError::PartsNotPowerOfTwo { parts: 3 });
    let e = refusal(engine.split_pool(&by_name("p"), 32).await);
    assert!(
        matches!(
            e,
            SplitError::ChildSmallerThanBlock {
                child_prefix: 27,
                block_size: 26,
                ..
            }
        ),
        "{e}"
    );
    let e = refusal(engine.split_pool(&by_name("nope"), 2).await);
    assert!(e.to_string().contains("nope"), "{e}");
    let e = refusal(
        engine
            .split_pool(&SplitTarget::Cidr("10.0.0.0/23".parse().unwrap()), 2)
            .await,
    );
    assert!(e.to_string().contains("10.0.0.0/23"), "{e}");
    // A pool written past the overlap check (kubectl) blocks the split.
    store
        .create(&Value::Pool(pool("stranger", "10.0.3.0/24", 26)))
        .await
        .unwrap();
    let e = refusal(engine.split_pool(&by_name("p"), 2).await);
    assert!(
        matches!(&e, SplitError::OtherPoolOverlaps { other, .. } if other == "stranger"),
        "{e}"
    );
    store
        .delete(
            &Key::Pool("stranger".into()),
            &store
                .get(&Key::Pool("stranger".into()))
                .await
                .unwrap()
                .revision,
        )
        .await
        .unwrap();
    assert_eq!(stored_pools(&*store).await, before);

    // A block of another size, left by an earlier pool, that would lie
    // across two children.
    let wide = Ipam::new(store.clone());
    wide.create_pool(pool("wide", "10.8.0.0/22", 23))
        .await
        .unwrap();
    let mut in_wide = request("w", "node-1", 1, 0);
    in_wide.ipv4_pools = vec!["10.8.0.0/22".parse().unwrap()];
    let wide_address = addrs(&wide.auto_assign(&in_wide).await.unwrap())[0];
    wide.delete_pool("wide").await.unwrap();
    engine
        .create_pool(pool("q", "10.8.0.0/22", 26))
        .await
        .unwrap();
    let wide_block = block(
        &ipnet::IpNet::new(wide_address, 23)
            .unwrap()
            .trunc()
            .to_string(),
    );
    let e = refusal(engine.split_pool(&by_name("q"), 4).await);
    assert_eq!(
        e,
        SplitError::BlockStraddles {
            pool: "q".into(),
            block: wide_block,
            parts: 4,
            most: 2
        }
    );
    assert!(e.to_string().contains(&wide_block.to_string()), "{e}");
    // Into two, the block lies in the first child.
    engine.split_pool(&by_name("q"), 2).await.unwrap();
    assert_blocks_in_one_pool_each(&*store, &["p", "split-q-0", "split-q-1"]).await;
}

pub async fn a_split_cut_short_stays_valid_and_running_it_again_finishes_it(
    store: Arc<dyn Datastore>,
) {
    let engine = engine_with(
        store.clone(),
        vec![pool("p", "10.0.0.0/24", 26)],
        IpamConfig::default(),
    )
    .await;
    engine
        .auto_assign(&request("a", "node-1", 1, 0))
        .await
        .unwrap();
    // The process dies at the parent's delete: every child is there, and
    // so is the parent.
    let dies: Arc<dyn Datastore> = Arc::new(Faulty::new(store.clone(), |key, _| {
        matches!(key, Key::Pool(name) if name == "p").then(|| StoreError::Unavailable {
            backend: "test",
            message: "killed".into(),
        })
    }));
    let dying = Ipam::new(dies);
    assert!(matches!(
        dying.split_pool(&by_name("p"), 4).await,
        Err(IpamError::Store(StoreError::Unavailable { .. }))
    ));
    // ... and another time after its second child.
    let mut made = 0;
    let dies_early: Arc<dyn Datastore> = Arc::new(Faulty::new(store.clone(), move |key, _| {
        if key.kind() != Kind::Pool {
            return None;
        }
        made += 1;
        (made > 2).then(|| StoreError::Unavailable {
            backend: "test",
            message: "killed".into(),
        })
    }));
    let names = stored_pools(&*store).await.into_keys().collect::<Vec<_>>();
    assert_eq!(
        names,
        ["p", "split-p-0", "split-p-1", "split-p-2", "split-p-3"]
    );
    // Allocations go on meanwhile, on every node, and hand out each
    // address once.
    let fresh = Ipam::new(store.clone());
    for (handle, node) in [("b", "node-1"), ("c", "node-2"), ("d", "node-3")] {
        fresh
            .auto_assign(&request(handle, node, 1, 0))
            .await
            .unwrap();
    }
    assert_eq!(allocations(&*store).await.len(), 4);
    // A split into another number of parts says which one finishes it.
    let e = fresh.split_pool(&by_name("p"), 2).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("a split of p into 4 parts was begun"),
        "{e}"
    );
    // The same split finishes it.
    let split = fresh.split_pool(&by_name("p"), 4).await.unwrap();
    assert_eq!(split.children().len(), 4);
    assert_blocks_in_one_pool_each(
        &*store,
        &["split-p-0", "split-p-1", "split-p-2", "split-p-3"],
    )
    .await;

    // A second pool, cut short after two children.
    fresh
        .create_pool(pool("r", "10.1.0.0/24", 26))
        .await
        .unwrap();
    let early = Ipam::new(dies_early);
    assert!(early.split_pool(&by_name("r"), 4).await.is_err());
    let names = stored_pools(&*store).await.into_keys().collect::<Vec<_>>();
    assert!(names.contains(&"r".to_string()) && names.contains(&"split-r-0".to_string()));
    fresh
        .auto_assign(&request("e", "node-5", 1, 0))
        .await
        .unwrap();
    fresh.split_pool(&by_name("r"), 4).await.unwrap();
    let names = stored_pools(&*store).await.into_keys().collect::<Vec<_>>();
    assert!(!names.contains(&"r".to_string()), "{names:?}");
    assert_eq!(
        names.iter().filter(|n| n.starts_with("split-r-")).count(),
        4
    );
    assert_consistent(&*store).await;
}

pub async fn allocations_during_a_split_all_succeed_and_hold_each_address_once(
    store: Arc<dyn Datastore>,
) {
    // Every call pauses a little, so that allocations and the split's
    // writes interleave even on the memory store.
    let jittery = |most| -> Arc<dyn Datastore> {
        Arc::new(Jittery::new(store.clone(), Duration::from_millis(most)))
    };
    // 64 blocks of 16 addresses, so that claims go on through the split.
    let first: Arc<Engine> = Arc::new(
        engine_with(
            jittery(1),
            vec![pool("p", "10.0.0.0/22", 28)],
            IpamConfig::default(),
        )
        .await,
    );
    first
        .auto_assign(&request("warm", "node-0", 1, 0))
        .await
        .unwrap();
    // The first keeps the parent in its cache; the second reads the pools
    // afresh for every request, so it would see any moment without one.
    let fresh = IpamOptions {
        cache_ttl: Duration::ZERO,
        ..IpamOptions::default()
    };
    let second: Arc<Engine> = Arc::new(Ipam::with_options(jittery(1), fresh));
    second
        .auto_assign(&request("warm2", "node-1", 1, 0))
        .await
        .unwrap();
    let splitter = Ipam::new(jittery(5));
    let mut tasks = Vec::new();
    for task in 0..8u32 {
        let engine = if task % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for round in 0..16u32 {
                let handle = format!("t{task}-{round}");
                let node = format!("node-{}", (task + round) % 6);
                let assigned = engine
                    .auto_assign(&request(&handle, &node, 1, 0))
                    .await
                    .unwrap_or_else(|e| panic!("{handle} on {node} during the split: {e}"));
                got.push((handle, addrs(&assigned)[0], Instant::now()));
            }
            got
        }));
    }
    let started = Instant::now();
    let split = splitter.split_pool(&by_name("p"), 8).await.unwrap();
    let ended = Instant::now();
    assert_eq!(split.children().len(), 8);
    let mut answered = BTreeMap::new();
    let mut during = 0;
    for task in tasks {
        for (handle, address, at) in task.await.unwrap() {
            during += usize::from(started < at && at < ended);
            assert!(
                answered.insert(address, handle.clone()).is_none(),
                "{address} was handed out twice"
            );
        }
    }
    assert!(during > 0, "no allocation ran during the split");
    // Every answer is in the store, held by its handle, and nothing else is.
    let held = allocations(&*store).await;
    for (address, handle) in &answered {
        assert_eq!(held.get(address), Some(handle), "{address}");
    }
    assert_eq!(held.len(), answered.len() + 2, "warm-ups and answers only");
    let names: Vec<String> = (0..8).map(|i| format!("split-p-{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_blocks_in_one_pool_each(&*store, &names).await;
    assert_consistent(&*store).await;
}

pub async fn between_any_two_writes_of_a_split_every_node_gets_an_address(
    store: Arc<dyn Datastore>,
) {
    let engine = engine_with(
        store.clone(),
        vec![pool("p", "10.0.0.0/24", 28)],
        IpamConfig::default(),
    )
    .await;
    engine
        .auto_assign(&request("warm", "node-0", 1, 0))
        .await
        .unwrap();
    // Before each write of the split reaches the store, a process that
    // reads the pools afresh assigns an address to a new node (a new
    // block: it needs a pool) and to the warm node (its affine block).
    let fresh = IpamOptions {
        cache_ttl: Duration::ZERO,
        ..IpamOptions::default()
    };
    let probe = Arc::new(Ipam::with_options(store.clone(), fresh));
    let answers: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let (probe_in, answers_in) = (probe.clone(), answers.clone());
    let watched: Arc<dyn Datastore> = Arc::new(Faulty::new(store.clone(), move |key, n| {
        let (probe, answers) = (probe_in.clone(), answers_in.clone());
        let runtime = tokio::runtime::Handle::current();
        tokio::task::block_in_place(|| {
            for node in [format!("new-{n}"), "node-0".to_string()] {
                let handle = format!("probe-{n}-{node}");
                let got = runtime.block_on(probe.auto_assign(&request(&handle, &node, 1, 0)));
                answers.lock().unwrap().push(match got {
                    Ok(_) => String::new(),
                    Err(e) => format!("before writing {key}: {node}: {e}"),
                });
            }
        });
        None
    }));
    Ipam::new(watched)
        .split_pool(&by_name("p"), 4)
        .await
        .unwrap();
    let answers = answers.lock().unwrap().clone();
    let failed: Vec<&String> = answers.iter().filter(|a| !a.is_empty()).collect();
    assert!(failed.is_empty(), "{failed:#?}");
    assert_eq!(
        answers.len(),
        2 * 5,
        "four children and the parent's delete"
    );
    probe
        .auto_assign(&request("after", "new-after", 1, 0))
        .await
        .unwrap();
    assert_eq!(allocations(&*store).await.len(), 1 + 10 + 1);
    assert_blocks_in_one_pool_each(
        &*store,
        &["split-p-0", "split-p-1", "split-p-2", "split-p-3"],
    )
    .await;
    assert_consistent(&*store).await;
}
