//! The cache lags the store: a write's store call and its cache update are
//! not one step, so another thread's write can land between them, and a
//! read's late update can bring back what was deleted meanwhile. These
//! tests put the cache in such a state and check that no write is skipped
//! on its word and that nothing reported comes from it.

use std::sync::Arc;

use ipam_core::planner::NodeLabels;
use ipam_core::{AutoAssignRequest, HandleId, NodeName, Pool, PoolSpec};

use super::{now, writes::prepare, Ipam};
use crate::datastore::Datastore;
use crate::error::StoreError;
use crate::memory::MemoryStore;
use crate::model::{Key, Value};

async fn engine() -> Ipam<MemoryStore> {
    let store = MemoryStore::new();
    let spec = PoolSpec {
        block_size: Some(26),
        node_selector: "all()".to_string(),
        ..PoolSpec::new("10.0.0.0/24".parse().unwrap())
    };
    store
        .create(&Value::Pool(Pool::new("p", spec).unwrap()))
        .await
        .unwrap();
    Ipam::new(Arc::new(store))
}

async fn assign(engine: &Ipam<MemoryStore>, handle: &str, count: u32) {
    let request = AutoAssignRequest::new(HandleId::new(handle), NodeName::new("n"), count, 0);
    let got = engine.auto_assign(&request).await.unwrap();
    assert_eq!(got.ipv4.addresses.len(), count as usize);
}

async fn stored_handle(engine: &Ipam<MemoryStore>, handle: &str) -> Option<Value> {
    match engine.store().get(&Key::Handle(handle.to_string())).await {
        Ok(versioned) => Some(versioned.value),
        Err(StoreError::NotFound { .. }) => None,
        Err(e) => panic!("{e}"),
    }
}

// What another thread's late cache update does: the cache forgets a
// handle the store still holds (its removal after an earlier
// incarnation's deletion, landing after the handle was created again).
fn forget(engine: &Ipam<MemoryStore>, handle: &str) {
    engine.cache().remove(&Key::Handle(handle.to_string()));
}

#[tokio::test]
async fn a_release_deletes_the_handle_it_planned_on_whatever_the_cache_says_since() {
    let engine = engine().await;
    assign(&engine, "h", 1).await;
    let prepared = {
        let cache = engine.cache();
        let mut planned = cache
            .snapshot
            .plan_release_by_handle_with("h", now(), &NodeLabels::new())
            .unwrap();
        assert_eq!(planned.released.len(), 1);
        prepare(&cache, std::mem::take(&mut planned.plan))
    };
    forget(&engine, "h");
    let written = engine.write_blocks_first(prepared).await.unwrap();
    assert!(written.failure.is_none());
    assert_eq!(written.written.len(), 1, "the block was written");
    assert_eq!(
        stored_handle(&engine, "h").await,
        None,
        "the handle goes with its address"
    );
}

#[tokio::test]
async fn counts_taken_from_a_handle_the_cache_forgot_reach_the_store() {
    let engine = engine().await;
    assign(&engine, "h", 2).await;
    let cidr = {
        let cache = engine.cache();
        let handle = cache.handle("h").unwrap();
        handle.blocks()[0].0
    };
    forget(&engine, "h");
    engine
        .adjust_handle(&"h".into(), &[(cidr, -1)], false)
        .await
        .unwrap_or_else(|e| panic!("{}", e.describe()));
    let Some(Value::Handle(handle)) = stored_handle(&engine, "h").await else {
        panic!("the handle still holds one address");
    };
    assert_eq!(handle.blocks(), &[(cidr, 1)][..]);
}

#[tokio::test]
async fn a_deleted_handle_the_cache_brought_back_is_not_in_the_snapshot() {
    let engine = engine().await;
    assign(&engine, "h", 1).await;
    let stored = engine
        .store()
        .get(&Key::Handle("h".to_string()))
        .await
        .unwrap();
    engine.release_by_handle("h").await.unwrap();
    // A read of the handle from before the release, put in the cache after.
    engine.cache().put(stored.value, stored.revision);
    let snapshot = engine.snapshot().await.unwrap();
    assert!(snapshot.handle("h").is_none());
    assert_eq!(snapshot.handles().count(), 0);
}

#[tokio::test]
async fn a_handle_the_cache_forgot_is_still_released() {
    let engine = engine().await;
    assign(&engine, "h", 1).await;
    forget(&engine, "h");
    let released = engine.release_by_handle("h").await.unwrap();
    assert_eq!(released.len(), 1);
    assert_eq!(stored_handle(&engine, "h").await, None);
    assert!(engine
        .snapshot()
        .await
        .unwrap()
        .blocks()
        .all(|b| b.is_empty()));
}
