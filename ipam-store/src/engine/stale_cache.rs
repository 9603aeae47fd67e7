//! The cache lags the store: a write's store call and its cache update are
//! not one step, so another thread's write can land between them, and a
//! read's late update can bring back what was deleted meanwhile. These
//! tests put the cache in such a state and check that no write is skipped
//! on its word and that nothing reported comes from it.

use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use futures_util::FutureExt;
use ipam_core::planner::NodeLabels;
use ipam_core::{
    AutoAssignRequest, BlockCidr, HandleId, NodeName, Pool, PoolSpec, ReservationSpec,
};

use super::{now, writes::prepare, Ipam};
use crate::datastore::{AtomicWrites, Datastore, RoundTrips};
use crate::error::StoreError;
use crate::memory::MemoryStore;
use crate::model::{Key, Kind, ListQuery, Reservation, Revision, Value, Versioned};

async fn engine() -> Ipam<MemoryStore> {
    engine_over(MemoryStore::new()).await
}

async fn engine_over<S: Datastore>(store: S) -> Ipam<S> {
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

async fn assign<S: Datastore>(engine: &Ipam<S>, handle: &str, count: u32) {
    let request = AutoAssignRequest::new(HandleId::new(handle), NodeName::new("n"), count, 0);
    let got = engine.auto_assign(&request).await.unwrap();
    assert_eq!(got.ipv4.addresses.len(), count as usize);
}

async fn stored_handle<S: Datastore>(engine: &Ipam<S>, handle: &str) -> Option<Value> {
    match engine.store().get(&Key::Handle(handle.to_string())).await {
        Ok(versioned) => Some(versioned.value),
        Err(StoreError::NotFound { .. }) => None,
        Err(e) => panic!("{e}"),
    }
}

type Hook = Box<dyn FnOnce() + Send>;

/// A memory store that runs a hook once, just after it answers the next
/// read of the hook's key: what another thread may do in that moment.
#[derive(Default)]
struct HookAfterRead {
    inner: MemoryStore,
    hook: Mutex<Option<(Key, Hook)>>,
    list_hook: Mutex<Option<(ListQuery, Hook)>>,
}

/// Runs and clears the hook in `slot` when it waits for `read`.
fn run_hook<R: PartialEq>(slot: &Mutex<Option<(R, Hook)>>, read: &R) {
    let hook = {
        let mut slot = slot.lock().unwrap();
        match &*slot {
            Some((on, _)) if on == read => slot.take(),
            _ => None,
        }
    };
    if let Some((_, hook)) = hook {
        hook();
    }
}

#[async_trait]
impl Datastore for HookAfterRead {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn get(&self, key: &Key) -> Result<Versioned<Value>, StoreError> {
        let got = self.inner.get(key).await;
        run_hook(&self.hook, key);
        got
    }
    async fn list(&self, query: &ListQuery) -> Result<Vec<Versioned<Value>>, StoreError> {
        let listed = self.inner.list(query).await;
        run_hook(&self.list_hook, query);
        listed
    }
    async fn create(&self, value: &Value) -> Result<Revision, StoreError> {
        self.inner.create(value).await
    }
    async fn update(&self, value: &Value, revision: &Revision) -> Result<Revision, StoreError> {
        self.inner.update(value, revision).await
    }
    async fn delete(&self, key: &Key, revision: &Revision) -> Result<(), StoreError> {
        self.inner.delete(key, revision).await
    }
    fn round_trips(&self) -> RoundTrips {
        self.inner.round_trips()
    }
    fn atomic_writes(&self) -> Option<&dyn AtomicWrites> {
        self.inner.atomic_writes()
    }
}

// What another thread's late cache update does: the cache forgets a
// handle the store still holds (its removal after an earlier
// incarnation's deletion, landing after the handle was created again).
fn forget<S: Datastore>(engine: &Ipam<S>, handle: &str) {
    engine.cache().remove(&Key::Handle(handle.to_string()));
}

/// Runs `then` on the engine just after its store answers the next read
/// of `key`.
fn after_reading(
    engine: &Arc<Ipam<HookAfterRead>>,
    key: Key,
    then: impl FnOnce(&Ipam<HookAfterRead>) + Send + 'static,
) {
    let weak: Weak<Ipam<HookAfterRead>> = Arc::downgrade(engine);
    let hook: Hook = Box::new(move || {
        if let Some(engine) = weak.upgrade() {
            then(&engine);
        }
    });
    *engine.store().hook.lock().unwrap() = Some((key, hook));
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

#[tokio::test]
async fn a_handles_addresses_come_from_what_was_read_not_from_the_cache() {
    let engine = Arc::new(engine_over(HookAfterRead::default()).await);
    assign(&engine, "other", 1).await;
    let first = engine.cache().snapshot.blocks().next().unwrap().cidr();
    let before = engine.store().get(&Key::Block(first)).await.unwrap();
    // 63 addresses in the first block, one in a second.
    assign(&engine, "h", 64).await;
    let cidrs: Vec<BlockCidr> = {
        let cache = engine.cache();
        let handle = cache.handle("h").unwrap();
        handle.blocks().iter().map(|(cidr, _)| *cidr).collect()
    };
    assert_eq!(cidrs.len(), 2, "h holds addresses in two blocks");
    let second = *cidrs.iter().find(|c| **c != first).unwrap();
    // While the second block is read, another thread's late update puts
    // back the first block as it was before h's 63 addresses.
    after_reading(&engine, Key::Block(second), move |engine| {
        engine.cache().put(before.value, before.revision);
    });
    let addresses = engine.addresses_of_handle("h").await.unwrap();
    assert_eq!(addresses.len(), 64, "{addresses:?}");
}

#[tokio::test]
async fn a_release_that_read_the_handle_and_then_lost_it_from_the_cache_reads_again() {
    let engine = Arc::new(engine_over(HookAfterRead::default()).await);
    assign(&engine, "h", 1).await;
    let cidr = engine.cache().handle("h").unwrap().blocks()[0].0;
    // Unknown to the cache, so the release reads the handle and its block;
    // while the block is read, another thread's late update forgets the
    // handle again.
    forget(&engine, "h");
    after_reading(&engine, Key::Block(cidr), move |engine| {
        forget(engine, "h");
    });
    let released = engine.release_by_handle("h").await.unwrap();
    assert!(
        engine.store().hook.lock().unwrap().is_none(),
        "the hook ran"
    );
    assert_eq!(released.len(), 1, "the address was released");
    assert_eq!(
        stored_handle(&engine, "h").await,
        None,
        "and the handle deleted"
    );
}

#[tokio::test]
async fn holdings_the_cache_lacked_come_from_what_was_read() {
    let engine = Arc::new(engine_over(HookAfterRead::default()).await);
    assign(&engine, "other", 1).await;
    let first = engine.cache().snapshot.blocks().next().unwrap().cidr();
    let before = engine.store().get(&Key::Block(first)).await.unwrap();
    assign(&engine, "h", 64).await;
    let addresses = engine.addresses_of_handle("h").await.unwrap();
    let second = engine
        .cache()
        .handle("h")
        .unwrap()
        .blocks()
        .iter()
        .map(|(cidr, _)| *cidr)
        .find(|cidr| *cidr != first)
        .unwrap();
    let wanted = [
        addresses
            .iter()
            .find(|a| first.net().contains(&a.addr()))
            .unwrap()
            .addr(),
        addresses
            .iter()
            .find(|a| second.net().contains(&a.addr()))
            .unwrap()
            .addr(),
    ];
    // The cache shows neither held: the first block as it was before h,
    // the second not at all. Both are read; while the second is, another
    // thread's late update puts the old first block back.
    engine
        .cache()
        .put(before.value.clone(), before.revision.clone());
    engine.cache().remove(&Key::Block(second));
    after_reading(&engine, Key::Block(second), move |engine| {
        engine.cache().put(before.value, before.revision);
    });
    let held = engine.holdings("h", &wanted).await.unwrap();
    assert!(
        engine.store().hook.lock().unwrap().is_none(),
        "the hook ran"
    );
    for (address, holding) in wanted.iter().zip(&held) {
        let holding = holding
            .as_ref()
            .unwrap_or_else(|| panic!("{address} is h's"));
        assert_eq!(holding.address.addr(), *address);
        assert_eq!(holding.pool, Some("10.0.0.0/24".parse().unwrap()));
    }
}

#[tokio::test]
async fn a_reservation_made_while_the_cache_is_listed_is_not_missed() {
    let engine = Arc::new(engine_over(HookAfterRead::default()).await);
    engine.ensure_fresh().await.unwrap();
    // A refresh lists reservations before blocks. While it lists the
    // blocks, another request reserves the whole pool: stored, then the
    // cache invalidated, as `create_reservation` does.
    let weak: Weak<Ipam<HookAfterRead>> = Arc::downgrade(&engine);
    let reserve: Hook = Box::new(move || {
        let Some(engine) = weak.upgrade() else { return };
        let reservation = Value::Reservation(Reservation {
            name: "all".to_string(),
            spec: ReservationSpec {
                reserved_cidrs: vec!["10.0.0.0/24".parse().unwrap()],
                unknown: Default::default(),
            },
        });
        let created = engine.store().inner.create(&reservation).now_or_never();
        created.expect("the memory store answers at once").unwrap();
        engine.cache().invalidate();
    });
    *engine.store().list_hook.lock().unwrap() = Some((ListQuery::All(Kind::Block), reserve));
    engine.refresh().await.unwrap();
    assert!(
        engine.store().list_hook.lock().unwrap().is_none(),
        "the hook ran"
    );
    let request = AutoAssignRequest::new(HandleId::new("h"), NodeName::new("n"), 1, 0);
    let got = engine.auto_assign(&request).await.unwrap();
    assert!(
        got.ipv4.addresses.is_empty(),
        "a reserved address was handed out: {:?}",
        got.ipv4.addresses
    );
}
