//! Affinity consistency through the engine, on every backend: a node's
//! empty block in a pool that no longer selects it is given up, with its
//! affinity, when its last address is released (Calico's
//! ensureConsistentAffinity, with the node's labels from the engine's
//! label source) and at the node's next assignment
//! (prepareAffinityBlocksForHost, with the request's labels), both in
//! libcalico-go/lib/ipam/ipam.go.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use ipam_core::planner::NodeLabels;
use ipam_core::{AffinityState, BlockCidr, IpamConfig, ReleaseRequest};
use ipam_store::engine::NodeLabelSource;
use ipam_store::{Datastore, Ipam, Kind, ListQuery, Value};
use ipnet::IpNet;

use crate::cases::{addrs, assert_consistent, block, pool_with, request, Engine};

/// Node labels a test sets as it goes, as the Node objects would hold.
#[derive(Default)]
struct Labels(Mutex<NodeLabels>);

impl Labels {
    fn set(&self, node: &str, zone: &str) {
        self.0
            .lock()
            .unwrap()
            .insert(node.to_string(), zone_label(zone));
    }
}

#[async_trait]
impl NodeLabelSource for Labels {
    async fn node_labels(&self, node: &str) -> Option<BTreeMap<String, String>> {
        self.0.lock().unwrap().get(node).cloned()
    }
}

fn zone_label(zone: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("zone".to_string(), zone.to_string())])
}

fn zone_pool(selector: &str) -> ipam_core::Pool {
    pool_with("a", "10.1.0.0/24", 26, |s| {
        s.node_selector = selector.into()
    })
}

/// Pool `a` for zone a, pool `everyone` for all; `labels`, when given, is
/// the engine's label source.
async fn zoned(store: &Arc<dyn Datastore>, labels: Option<Arc<Labels>>) -> Engine {
    let mut engine = Ipam::new(store.clone());
    if let Some(labels) = labels {
        engine = engine.with_node_labels(labels);
    }
    engine.set_config(IpamConfig::default()).await.unwrap();
    engine.create_pool(zone_pool("zone == 'a'")).await.unwrap();
    engine
        .create_pool(pool_with("everyone", "10.2.0.0/24", 26, |_| {}))
        .await
        .unwrap();
    engine
}

async fn assign_in_zone(engine: &Engine, handle: &str, zone: &str) -> IpAddr {
    let mut r = request(handle, "n1", 1, 0);
    r.node_labels = zone_label(zone);
    addrs(&engine.auto_assign(&r).await.unwrap())[0]
}

/// What the store holds: blocks, and n1's affinities with their state.
async fn stored(store: &dyn Datastore) -> (Vec<BlockCidr>, Vec<(BlockCidr, AffinityState)>) {
    let mut blocks = Vec::new();
    for item in store.list(&ListQuery::All(Kind::Block)).await.unwrap() {
        if let Value::Block(b) = item.value {
            blocks.push(b.cidr());
        }
    }
    let mut affinities = Vec::new();
    for item in store.list(&ListQuery::All(Kind::Affinity)).await.unwrap() {
        if let Value::Affinity(a) = item.value {
            assert_eq!(a.node, "n1");
            affinities.push((a.cidr, a.state));
        }
    }
    blocks.sort();
    affinities.sort_by_key(|(cidr, _)| *cidr);
    (blocks, affinities)
}

fn in_cidr(address: IpAddr, cidr: &str) -> bool {
    cidr.parse::<IpNet>().unwrap().contains(&address)
}

pub async fn the_last_address_released_after_a_selector_change_takes_block_and_affinity(
    store: Arc<dyn Datastore>,
) {
    let labels = Arc::new(Labels::default());
    labels.set("n1", "a");
    let engine = zoned(&store, Some(labels)).await;
    let first = assign_in_zone(&engine, "h1", "a").await;
    let second = assign_in_zone(&engine, "h2", "a").await;
    assert!(in_cidr(first, "10.1.0.0/24"));
    engine.update_pool(zone_pool("zone == 'b'")).await.unwrap();

    // Not empty yet: the block and its affinity stay.
    engine
        .release(&[ReleaseRequest::address(first)])
        .await
        .unwrap();
    let (blocks, affinities) = stored(store.as_ref()).await;
    assert_eq!(blocks, [block("10.1.0.0/26")]);
    assert_eq!(
        affinities,
        [(block("10.1.0.0/26"), AffinityState::Confirmed)]
    );

    // The last address, by handle: both go.
    assert_eq!(engine.release_by_handle("h2").await.unwrap(), [second]);
    let (blocks, affinities) = stored(store.as_ref()).await;
    assert!(blocks.is_empty(), "{blocks:?}");
    assert!(affinities.is_empty(), "{affinities:?}");
    assert_consistent(store.as_ref()).await;
}

pub async fn a_release_after_the_nodes_labels_changed_takes_its_emptied_block(
    store: Arc<dyn Datastore>,
) {
    let labels = Arc::new(Labels::default());
    labels.set("n1", "a");
    let engine = zoned(&store, Some(labels.clone())).await;
    let address = assign_in_zone(&engine, "h1", "a").await;
    labels.set("n1", "b");
    let released = engine
        .release(&[ReleaseRequest::address(address)])
        .await
        .unwrap();
    assert_eq!(released.released, [address]);
    let (blocks, affinities) = stored(store.as_ref()).await;
    assert!(blocks.is_empty(), "{blocks:?}");
    assert!(affinities.is_empty(), "{affinities:?}");
    assert_consistent(store.as_ref()).await;
}

pub async fn an_empty_block_whose_pool_stopped_selecting_goes_at_the_next_assignment(
    store: Arc<dyn Datastore>,
) {
    // No label source: the release cannot tell, the next assignment can.
    let engine = zoned(&store, None).await;
    let address = assign_in_zone(&engine, "h1", "a").await;
    assert!(in_cidr(address, "10.1.0.0/24"));
    engine.release_by_handle("h1").await.unwrap();
    engine.update_pool(zone_pool("zone == 'b'")).await.unwrap();
    let (blocks, affinities) = stored(store.as_ref()).await;
    assert_eq!(blocks, [block("10.1.0.0/26")], "empty, still affine");
    assert_eq!(affinities.len(), 1);

    let next = assign_in_zone(&engine, "h2", "a").await;
    assert!(in_cidr(next, "10.2.0.0/24"), "{next}");
    let (blocks, affinities) = stored(store.as_ref()).await;
    assert_eq!(blocks, [block("10.2.0.0/26")]);
    assert_eq!(
        affinities,
        [(block("10.2.0.0/26"), AffinityState::Confirmed)]
    );
    assert_consistent(store.as_ref()).await;
}

pub async fn a_release_racing_an_assignment_on_the_emptied_block_loses_no_address(
    store: Arc<dyn Datastore>,
) {
    // Engine `a` reads n1 in zone b, so the last release of n1's zone-a
    // block gives it up; engine `b` meanwhile assigns to n1 as zone a, into
    // that same block. Compare-and-swap decides: whichever loses re-plans.
    let labels = Arc::new(Labels::default());
    labels.set("n1", "b");
    let a = Arc::new(zoned(&store, Some(labels)).await);
    let b = Arc::new(Ipam::new(store.clone()));
    for round in 0..8 {
        let first = assign_in_zone(&b, &format!("first-{round}"), "a").await;
        assert!(in_cidr(first, "10.1.0.0/24"), "{first}");
        let releasing = {
            let a = a.clone();
            tokio::spawn(async move { a.release_by_handle(&format!("first-{round}")).await })
        };
        let assigning = {
            let b = b.clone();
            tokio::spawn(async move { assign_in_zone(&b, &format!("second-{round}"), "a").await })
        };
        assert_eq!(releasing.await.unwrap().unwrap(), [first]);
        let second = assigning.await.unwrap();
        let held = crate::cases::allocations(store.as_ref()).await;
        assert_eq!(
            held.get(&second).map(String::as_str),
            Some(&*format!("second-{round}"))
        );
        assert!(!held.contains_key(&first) || held[&first] != format!("first-{round}"));
        assert_consistent(store.as_ref()).await;
        b.release_by_handle(&format!("second-{round}"))
            .await
            .unwrap();
    }
    assert!(crate::cases::allocations(store.as_ref()).await.is_empty());
    assert_consistent(store.as_ref()).await;
}
