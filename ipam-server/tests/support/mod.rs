//! Test support shared by the server's test binaries.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use ipam_store::memory::MemoryStore;
use ipam_store::{
    AtomicWrites, BatchError, BatchWrite, Datastore, Key, ListQuery, Revision, RoundTrips,
    StoreError, Value as Object, Versioned,
};

/// A store whose calls can be made to fail as unreachable, or to hang.
#[derive(Default)]
pub struct Flaky {
    inner: MemoryStore,
    pub down: AtomicBool,
    pub slow: AtomicBool,
}

impl Flaky {
    async fn gate(&self) -> Result<(), StoreError> {
        if self.slow.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable {
                backend: "test",
                message: "connection refused".to_string(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl Datastore for Flaky {
    fn backend(&self) -> &'static str {
        "test"
    }
    async fn get(&self, key: &Key) -> Result<Versioned<Object>, StoreError> {
        self.gate().await?;
        self.inner.get(key).await
    }
    async fn list(&self, query: &ListQuery) -> Result<Vec<Versioned<Object>>, StoreError> {
        self.gate().await?;
        self.inner.list(query).await
    }
    async fn create(&self, value: &Object) -> Result<Revision, StoreError> {
        self.gate().await?;
        self.inner.create(value).await
    }
    async fn update(&self, value: &Object, revision: &Revision) -> Result<Revision, StoreError> {
        self.gate().await?;
        self.inner.update(value, revision).await
    }
    async fn delete(&self, key: &Key, revision: &Revision) -> Result<(), StoreError> {
        self.gate().await?;
        self.inner.delete(key, revision).await
    }
    fn round_trips(&self) -> RoundTrips {
        self.inner.round_trips()
    }
    fn atomic_writes(&self) -> Option<&dyn AtomicWrites> {
        Some(self)
    }
}

/// Batches fail and hang like every other call: down, nothing is written.
#[async_trait]
impl AtomicWrites for Flaky {
    async fn write_all(&self, writes: &[BatchWrite]) -> Result<Vec<Option<Revision>>, BatchError> {
        self.gate().await.map_err(BatchError::Store)?;
        self.inner.write_all(writes).await
    }

    fn max_writes(&self) -> usize {
        self.inner.max_writes()
    }
}
