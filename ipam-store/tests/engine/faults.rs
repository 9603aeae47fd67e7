//! Datastore wrappers that make chosen writes fail, delay calls or hold a
//! write, to prove the engine undoes what a failed write would leave
//! dangling. Each forwards the inner store's batches ([`AtomicWrites`]) and
//! treats a batch as the writes it holds, so that the engine's batched
//! path meets the same faults as its ordered path.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use ipam_store::{
    AtomicWrites, BatchError, BatchWrite, Datastore, Key, Kind, ListQuery, Revision, RoundTrips,
    StoreError, Value, Versioned,
};

/// Picks the writes to fail: sees the key and the write's number.
type Rule = Box<dyn FnMut(&Key, u32) -> Option<StoreError> + Send>;

/// Fails the writes a rule picks, before they reach the inner store; or,
/// made with [`Faulty::after_commit`], fails the batches it picks after
/// the inner store applied them.
pub struct Faulty {
    inner: Arc<dyn Datastore>,
    rule: Mutex<Rule>,
    writes: AtomicU32,
    after_commit: bool,
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
            after_commit: false,
        }
    }

    /// Lets every write through, and answers a batch with the error the
    /// rule picks for any of its writes after the inner store applied it
    /// in full: a connection lost after the commit, the outcome the batch
    /// contract leaves unknown. Single writes are answered truly: a failed
    /// one means nothing was written ([`StoreError`]).
    pub fn after_commit(
        inner: Arc<dyn Datastore>,
        rule: impl FnMut(&Key, u32) -> Option<StoreError> + Send + 'static,
    ) -> Faulty {
        Faulty {
            after_commit: true,
            ..Faulty::new(inner, rule)
        }
    }

    fn check(&self, key: &Key) -> Result<(), StoreError> {
        if self.after_commit {
            return Ok(());
        }
        self.pick(key)
    }

    fn pick(&self, key: &Key) -> Result<(), StoreError> {
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
    fn atomic_writes(&self) -> Option<&dyn AtomicWrites> {
        self.inner
            .atomic_writes()
            .map(|_| self as &dyn AtomicWrites)
    }
}

/// The inner store's batches: a wrapper offers batches only when the
/// store it wraps has them.
fn batches_of(inner: &Arc<dyn Datastore>) -> &dyn AtomicWrites {
    inner
        .atomic_writes()
        .expect("forwarded only when the inner store has batches")
}

#[async_trait]
impl AtomicWrites for Faulty {
    /// The rule sees each write of the batch in order, as it sees single
    /// writes. Before the commit, a lost compare-and-swap it picks refuses
    /// the batch at that write, and any other error fails it: either way
    /// nothing is written. After the commit, the first error it picks is
    /// the answer to a batch that was applied.
    async fn write_all(&self, writes: &[BatchWrite]) -> Result<Vec<Option<Revision>>, BatchError> {
        let inner = batches_of(&self.inner);
        let picked = writes
            .iter()
            .enumerate()
            .find_map(|(index, write)| self.pick(&write.key()).err().map(|e| (index, e)));
        match picked {
            None => inner.write_all(writes).await,
            Some((_, e)) if self.after_commit => {
                inner.write_all(writes).await?;
                Err(BatchError::Store(e))
            }
            Some((index, cause)) if cause.key().is_some() => {
                Err(BatchError::Refused { index, cause })
            }
            Some((_, e)) => Err(BatchError::Store(e)),
        }
    }

    fn max_writes(&self) -> usize {
        batches_of(&self.inner).max_writes()
    }
}

/// Delays every call by a random pause of up to `most`, so that concurrent
/// operations interleave between any two round trips, as they do against a
/// slow disk or a remote store, even on the memory store whose calls
/// otherwise never yield.
pub struct Jittery {
    inner: Arc<dyn Datastore>,
    most: std::time::Duration,
}

impl Jittery {
    pub fn new(inner: Arc<dyn Datastore>, most: std::time::Duration) -> Jittery {
        Jittery { inner, most }
    }

    async fn pause(&self) {
        let micros = fastrand::u64(..=self.most.as_micros() as u64);
        tokio::time::sleep(std::time::Duration::from_micros(micros)).await;
    }
}

#[async_trait]
impl Datastore for Jittery {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn get(&self, key: &Key) -> Result<Versioned<Value>, StoreError> {
        self.pause().await;
        self.inner.get(key).await
    }
    async fn list(&self, query: &ListQuery) -> Result<Vec<Versioned<Value>>, StoreError> {
        self.pause().await;
        self.inner.list(query).await
    }
    async fn create(&self, value: &Value) -> Result<Revision, StoreError> {
        self.pause().await;
        self.inner.create(value).await
    }
    async fn update(&self, value: &Value, revision: &Revision) -> Result<Revision, StoreError> {
        self.pause().await;
        self.inner.update(value, revision).await
    }
    async fn delete(&self, key: &Key, revision: &Revision) -> Result<(), StoreError> {
        self.pause().await;
        self.inner.delete(key, revision).await
    }
    fn round_trips(&self) -> RoundTrips {
        self.inner.round_trips()
    }
    fn atomic_writes(&self) -> Option<&dyn AtomicWrites> {
        self.inner
            .atomic_writes()
            .map(|_| self as &dyn AtomicWrites)
    }
}

#[async_trait]
impl AtomicWrites for Jittery {
    async fn write_all(&self, writes: &[BatchWrite]) -> Result<Vec<Option<Revision>>, BatchError> {
        self.pause().await;
        let inner = batches_of(&self.inner);
        inner.write_all(writes).await
    }

    fn max_writes(&self) -> usize {
        batches_of(&self.inner).max_writes()
    }
}

/// Holds the first block write that names a chosen handle until the test
/// opens the gate: the moment between an assignment's handle write and its
/// block write, frozen, so that a test can run something else in it.
pub struct Gate {
    inner: Arc<dyn Datastore>,
    handle: String,
    armed: std::sync::atomic::AtomicBool,
    reached: tokio::sync::Notify,
    open: tokio::sync::Notify,
}

impl Gate {
    pub fn new(inner: Arc<dyn Datastore>, handle: &str) -> Gate {
        Gate {
            inner,
            handle: handle.to_string(),
            armed: std::sync::atomic::AtomicBool::new(true),
            reached: tokio::sync::Notify::new(),
            open: tokio::sync::Notify::new(),
        }
    }

    /// Waits until a block write naming the handle is held.
    pub async fn reached(&self) {
        self.reached.notified().await;
    }

    /// Lets the held write through.
    pub fn open(&self) {
        self.open.notify_one();
    }

    async fn hold(&self, value: &Value) {
        let names_handle = match value {
            Value::Block(block) => block
                .allocations()
                .any(|(_, attribute)| attribute.handle() == Some(self.handle.as_str())),
            _ => false,
        };
        if names_handle && self.armed.swap(false, Ordering::SeqCst) {
            self.reached.notify_one();
            self.open.notified().await;
        }
    }
}

#[async_trait]
impl Datastore for Gate {
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
        self.hold(value).await;
        self.inner.create(value).await
    }
    async fn update(&self, value: &Value, revision: &Revision) -> Result<Revision, StoreError> {
        self.hold(value).await;
        self.inner.update(value, revision).await
    }
    async fn delete(&self, key: &Key, revision: &Revision) -> Result<(), StoreError> {
        self.inner.delete(key, revision).await
    }
    fn round_trips(&self) -> RoundTrips {
        self.inner.round_trips()
    }
    fn atomic_writes(&self) -> Option<&dyn AtomicWrites> {
        self.inner
            .atomic_writes()
            .map(|_| self as &dyn AtomicWrites)
    }
}

#[async_trait]
impl AtomicWrites for Gate {
    /// Holds a batch holding the block write, so that the test runs its
    /// release before anything of the assignment is written.
    async fn write_all(&self, writes: &[BatchWrite]) -> Result<Vec<Option<Revision>>, BatchError> {
        for write in writes {
            if let BatchWrite::Create(value) | BatchWrite::Update(value, _) = write {
                self.hold(value).await;
            }
        }
        let inner = batches_of(&self.inner);
        inner.write_all(writes).await
    }

    fn max_writes(&self) -> usize {
        batches_of(&self.inner).max_writes()
    }
}
