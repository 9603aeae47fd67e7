//! The per-node lane. Requests for one node are serialised (Calico does
//! it with a file lock per host), and whoever holds the lane serves every
//! auto-assign and release-by-handle queued behind it in one plan: a burst
//! of one node's requests shares its block writes. Requests for different
//! nodes never wait on each other.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use ipam_core::AutoAssignRequest;

use super::{AutoAssigned, Ipam, IpamError};
use crate::datastore::Datastore;

/// One node's requests: whoever holds `lock` works for the node, and first
/// serves every auto-assign waiting in `waiting` together.
#[derive(Default)]
pub(super) struct Lane {
    pub(super) lock: Arc<tokio::sync::Mutex<()>>,
    pub(super) waiting: Mutex<Vec<Job>>,
}

pub(super) type Reply<T> = tokio::sync::oneshot::Sender<Result<T, IpamError>>;

/// A request waiting in a node's lane.
pub(super) enum Job {
    Assign(AutoAssignRequest, Reply<AutoAssigned>),
    Release(String, Reply<Vec<IpAddr>>),
}

impl Job {
    /// The handle whose state the job changes.
    pub(super) fn handle(&self) -> &str {
        match self {
            Job::Assign(request, _) => &request.handle,
            Job::Release(handle, _) => handle,
        }
    }
}

/// Most auto-assigns served in one go: enough to share a block write among
/// a burst, few enough that the first waiter is not kept long.
pub(super) const MAX_BATCH: usize = 64;

impl<S: Datastore + ?Sized> Ipam<S> {
    pub(super) fn lane(&self, node: &str) -> Arc<Lane> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        lanes.entry(node.to_string()).or_default().clone()
    }

    pub(super) async fn lock_node(&self, node: &str) -> tokio::sync::OwnedMutexGuard<()> {
        self.lane(node).lock.clone().lock_owned().await
    }

    /// Queues a job in a node's lane and waits for its answer. Whoever holds
    /// the lane serves everything waiting, so a burst of one node's
    /// requests is served together; if that server is cancelled before it
    /// answers, the job is queued again (assigning and releasing by handle
    /// are both idempotent).
    pub(super) async fn through_lane<T>(
        &self,
        node: &str,
        job: impl Fn(Reply<T>) -> Job,
    ) -> Result<T, IpamError> {
        let lane = self.lane(node);
        loop {
            let (reply, mut answer) = tokio::sync::oneshot::channel();
            lane.waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(job(reply));
            let guard = tokio::select! {
                biased;
                served = &mut answer => match served {
                    Ok(result) => return result,
                    Err(_) => continue,
                },
                guard = lane.lock.lock() => guard,
            };
            match answer.try_recv() {
                Ok(result) => return result,
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => continue,
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
            }
            // Nobody took ours (only the lane's holder takes, and that is
            // us now): serve it and whatever else is waiting.
            let batch: Vec<Job> = {
                let mut waiting = lane.waiting.lock().unwrap_or_else(|e| e.into_inner());
                let take = waiting.len().min(MAX_BATCH);
                waiting.drain(..take).collect()
            };
            self.serve(batch).await;
            drop(guard);
            match answer.await {
                Ok(result) => return result,
                Err(_) => continue,
            }
        }
    }

    /// Serves the jobs waiting in a node's lane: releases first (they free
    /// addresses the assignments may use), each kind together when they
    /// can share writes, else one by one.
    pub(super) async fn serve(&self, batch: Vec<Job>) {
        let mut seen = std::collections::HashSet::new();
        let mut releases = Vec::new();
        let mut assigns = Vec::new();
        let mut later = Vec::new();
        for job in batch {
            // One plan may change a handle once: a second job on the same
            // handle waits for the next round.
            if !seen.insert(job.handle().to_string()) {
                later.push(job);
                continue;
            }
            match job {
                Job::Release(handle, reply) => releases.push((handle, reply)),
                Job::Assign(request, reply) => assigns.push((request, reply)),
            }
        }
        // Both kinds at once: one plan and one batch for the round, when
        // the store and the state allow it.
        if !releases.is_empty() && !assigns.is_empty() {
            (releases, assigns) = self.release_and_assign_together(releases, assigns).await;
        }
        let mut unfinished: Vec<(String, Reply<Vec<IpAddr>>, Vec<IpAddr>)> = if releases.len() > 1 {
            self.release_together(releases).await
        } else {
            releases
                .into_iter()
                .map(|(h, r)| (h, r, Vec::new()))
                .collect()
        };
        for (handle, reply, mut done) in unfinished.drain(..) {
            let result = self.release_by_handle_now(&handle).await.map(|rest| {
                done.extend(rest);
                done
            });
            let _ = reply.send(result);
        }
        if assigns.len() > 1 {
            assigns = self.assign_together(assigns).await;
        }
        for (request, reply) in assigns {
            let _ = reply.send(self.auto_assign_one(&request).await);
        }
        for job in later {
            match job {
                Job::Release(handle, reply) => {
                    let _ = reply.send(self.release_by_handle_now(&handle).await);
                }
                Job::Assign(request, reply) => {
                    let _ = reply.send(self.auto_assign_one(&request).await);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use async_trait::async_trait;
    use ipam_core::{HandleId, NodeName, Pool, PoolSpec};

    use super::*;
    use crate::datastore::{AtomicWrites, BatchError, BatchWrite, RoundTrips};
    use crate::error::StoreError;
    use crate::memory::MemoryStore;
    use crate::model::{Key, ListQuery, Revision, Value, Versioned};

    /// A memory store whose writes wait while the test holds its gate.
    #[derive(Default)]
    struct Gated {
        inner: MemoryStore,
        gate: tokio::sync::RwLock<()>,
        arrived: AtomicUsize,
    }

    impl Gated {
        async fn pass(&self) {
            self.arrived.fetch_add(1, Ordering::SeqCst);
            let _open = self.gate.read().await;
        }
    }

    #[async_trait]
    impl Datastore for Gated {
        fn backend(&self) -> &'static str {
            "memory"
        }
        async fn get(&self, key: &Key) -> Result<Versioned<Value>, StoreError> {
            self.inner.get(key).await
        }
        async fn list(&self, query: &ListQuery) -> Result<Vec<Versioned<Value>>, StoreError> {
            self.inner.list(query).await
        }
        async fn create(&self, value: &Value) -> Result<Revision, StoreError> {
            self.pass().await;
            self.inner.create(value).await
        }
        async fn update(&self, value: &Value, revision: &Revision) -> Result<Revision, StoreError> {
            self.pass().await;
            self.inner.update(value, revision).await
        }
        async fn delete(&self, key: &Key, revision: &Revision) -> Result<(), StoreError> {
            self.pass().await;
            self.inner.delete(key, revision).await
        }
        fn round_trips(&self) -> RoundTrips {
            self.inner.round_trips()
        }
        fn atomic_writes(&self) -> Option<&dyn AtomicWrites> {
            Some(self)
        }
    }

    #[async_trait]
    impl AtomicWrites for Gated {
        async fn write_all(
            &self,
            writes: &[BatchWrite],
        ) -> Result<Vec<Option<Revision>>, BatchError> {
            self.pass().await;
            self.inner.write_all(writes).await
        }

        fn max_writes(&self) -> usize {
            self.inner.max_writes()
        }
    }

    type Engine = Ipam<dyn Datastore>;

    async fn engine_over(store: Arc<Gated>, cidr: &str) -> Arc<Engine> {
        let spec = PoolSpec {
            block_size: Some(26),
            node_selector: "all()".to_string(),
            ..PoolSpec::new(cidr.parse().unwrap())
        };
        store
            .inner
            .create(&Value::Pool(Pool::new("p", spec).unwrap()))
            .await
            .unwrap();
        let store: Arc<dyn Datastore> = store;
        Arc::new(Ipam::new(store))
    }

    async fn until(what: &str, done: impl Fn() -> bool) {
        for _ in 0..5000 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("timed out waiting until {what}");
    }

    fn waiting(lane: &Lane) -> usize {
        lane.waiting.lock().unwrap().len()
    }

    fn assign(
        engine: &Arc<Engine>,
        handle: &str,
    ) -> tokio::task::JoinHandle<Result<AutoAssigned, IpamError>> {
        let engine = engine.clone();
        let request = AutoAssignRequest::new(HandleId::new(handle), NodeName::new("n"), 1, 0);
        tokio::spawn(async move { engine.auto_assign(&request).await })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_holder_leaves_its_batch_to_the_next() {
        let store = Arc::new(Gated::default());
        let engine = engine_over(store.clone(), "10.0.0.0/24").await;
        let lane = engine.lane("n");
        let held = lane.lock.clone().lock_owned().await;
        // The lane's lock is fair: `first` takes it next and serves both.
        let first = assign(&engine, "first");
        until("first is queued", || waiting(&lane) == 1).await;
        let second = assign(&engine, "second");
        until("second is queued", || waiting(&lane) == 2).await;
        let closed = store.gate.write().await;
        drop(held);
        until("first serves the batch", || {
            store.arrived.load(Ordering::SeqCst) > 0
        })
        .await;
        assert_eq!(waiting(&lane), 0, "first took both jobs");

        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        drop(closed);

        let got = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("the job of a cancelled holder is served again")
            .unwrap()
            .unwrap();
        assert_eq!(got.ipv4.addresses.len(), 1);
        assert!(!got.existing);
        assert_eq!(
            engine.addresses_of_handle("second").await.unwrap(),
            got.ipv4.addresses
        );
        assert!(
            engine
                .addresses_of_handle("first")
                .await
                .unwrap()
                .is_empty(),
            "the cancelled request was stopped before its first write"
        );
        assert_eq!(waiting(&lane), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_one_node_shares_one_block_write() {
        let store = Arc::new(Gated::default());
        let engine = engine_over(store.clone(), "10.0.0.0/24").await;
        // The node's block exists: a burst plans on the blocks read, so
        // that its requests all land in that one.
        assign(&engine, "first").await.unwrap().unwrap();
        let lane = engine.lane("n");
        let held = lane.lock.clone().lock_owned().await;
        let handles = ["a", "b", "c", "d", "e"];
        let tasks: Vec<_> = handles.iter().map(|h| assign(&engine, h)).collect();
        until("the burst is queued", || waiting(&lane) == handles.len()).await;
        let before = store.round_trips();
        drop(held);
        let mut addresses = Vec::new();
        for task in tasks {
            let got = task.await.unwrap().unwrap();
            assert_eq!(got.ipv4.addresses.len(), 1);
            addresses.extend(got.ipv4.addresses);
        }
        addresses.sort();
        addresses.dedup();
        assert_eq!(addresses.len(), handles.len(), "every request got its own");
        let spent = store.round_trips().writes - before.writes;
        // The five handles and the one block write for all of them, in one
        // batch; one by one would make five batches.
        assert_eq!(spent, 1, "{spent} writes");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_round_of_releases_and_assignments_is_one_batch() {
        let store = Arc::new(Gated::default());
        let engine = engine_over(store.clone(), "10.0.0.0/24").await;
        let mut old = Vec::new();
        for handle in ["r1", "r2"] {
            old.extend(
                assign(&engine, handle)
                    .await
                    .unwrap()
                    .unwrap()
                    .ipv4
                    .addresses,
            );
        }
        let lane = engine.lane("n");
        let held = lane.lock.clone().lock_owned().await;
        let releases: Vec<_> = ["r1", "r2"]
            .iter()
            .map(|handle| {
                let engine = engine.clone();
                tokio::spawn(async move { engine.release_by_handle(handle).await })
            })
            .collect();
        let assigns: Vec<_> = ["a", "b"].iter().map(|h| assign(&engine, h)).collect();
        until("the round is queued", || waiting(&lane) == 4).await;
        let before = store.round_trips();
        drop(held);
        let mut released = Vec::new();
        for task in releases {
            released.extend(task.await.unwrap().unwrap());
        }
        let old: Vec<IpAddr> = old.iter().map(|a| a.addr()).collect();
        assert_eq!(released, old, "each release answers its address");
        let mut given = Vec::new();
        for (task, handle) in assigns.into_iter().zip(["a", "b"]) {
            let got = task.await.unwrap().unwrap();
            assert_eq!(got.ipv4.addresses.len(), 1);
            assert_eq!(
                engine.addresses_of_handle(handle).await.unwrap(),
                got.ipv4.addresses
            );
            given.extend(got.ipv4.addresses);
        }
        assert_ne!(given[0], given[1]);
        let spent = store.round_trips().writes - before.writes;
        // Two handles deleted, two created and their block, in one batch;
        // releasing and then assigning would make two.
        assert_eq!(spent, 1, "{spent} writes");
        for handle in ["r1", "r2"] {
            assert!(engine.addresses_of_handle(handle).await.unwrap().is_empty());
        }
        let snapshot = engine.snapshot().await.unwrap();
        let in_use: u32 = snapshot.blocks().map(|b| b.allocated_count()).sum();
        assert_eq!(in_use, 2, "only a's and b's addresses are held");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn more_waiters_than_a_batch_are_all_answered() {
        let store = Arc::new(Gated::default());
        let engine = engine_over(store.clone(), "10.0.0.0/16").await;
        let lane = engine.lane("n");
        let held = lane.lock.clone().lock_owned().await;
        let count = MAX_BATCH + 3;
        let tasks: Vec<_> = (0..count)
            .map(|i| assign(&engine, &format!("h{i}")))
            .collect();
        until("every request is queued", || waiting(&lane) == count).await;
        drop(held);
        let mut addresses = Vec::new();
        for task in tasks {
            let got = tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("every waiter is answered")
                .unwrap()
                .unwrap();
            addresses.extend(got.ipv4.addresses);
        }
        addresses.sort();
        addresses.dedup();
        assert_eq!(addresses.len(), count);
        assert_eq!(waiting(&lane), 0);
    }
}
