//! A datastore wrapper that makes chosen writes fail, to prove the engine
//! undoes what a failed write would leave dangling.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use ipam_store::{
    Datastore, Key, Kind, ListQuery, Revision, RoundTrips, StoreError, Value, Versioned,
};

/// Picks the writes to fail: sees the key and the write's number.
type Rule = Box<dyn FnMut(&Key, u32) -> Option<StoreError> + Send>;

/// Fails the writes a rule picks, before they reach the inner store.
pub struct Faulty {
    inner: Arc<dyn Datastore>,
    rule: Mutex<Rule>,
    writes: AtomicU32,
}

impl Faulty {
    /// `rule(key, n)` sees every write (n counts writes from 0) and returns
    /// the error to fail it with, or `None` to let it through.
    pub fn new(
        inner: Arc<dyn Datastore>,
        rule: impl FnMut(&Key, u32) -> Option<StoreError> + Send + 'static,
    ) -> Faulty {
        Faulty {
            inner,
            rule: Mutex::new(Box::new(rule)),
            writes: AtomicU32::new(0),
        }
    }

    fn check(&self, key: &Key) -> Result<(), StoreError> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst);
        match (self.rule.lock().unwrap())(key, n) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Lets every write through after a pause, so that concurrent requests
/// pile up behind the first one.
pub fn pause_writes(
    pause: std::time::Duration,
) -> impl FnMut(&Key, u32) -> Option<StoreError> + Send {
    move |_, _| {
        std::thread::sleep(pause);
        None
    }
}

/// Every write of one kind fails with a conflict.
pub fn conflict_on(kind: Kind) -> impl FnMut(&Key, u32) -> Option<StoreError> + Send {
    move |key, _| (key.kind() == kind).then(|| StoreError::Conflict { key: key.clone() })
}

#[async_trait]
impl Datastore for Faulty {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn get(&self, key: &Key) -> Result<Versioned<Value>, StoreError> {
        self.inner.get(key).await
    }
    async fn list(&self, query: &ListQuery) -> Result<Vec<Versioned<Value>>, StoreError> {
        self.inner.list(query).await
    }
    async fn create(&self, value: &Value) -> Result<Revision, StoreError> {
        self.check(&value.key())?;
        self.inner.create(value).await
    }
    async fn update(&self, value: &Value, revision: &Revision) -> Result<Revision, StoreError> {
        self.check(&value.key())?;
        self.inner.update(value, revision).await
    }
    async fn delete(&self, key: &Key, revision: &Revision) -> Result<(), StoreError> {
        self.check(key)?;
        self.inner.delete(key, revision).await
    }
    fn round_trips(&self) -> RoundTrips {
        self.inner.round_trips()
    }
}
