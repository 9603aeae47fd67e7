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
