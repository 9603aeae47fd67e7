//! The one retry loop of the engine. Every operation that writes with
//! compare-and-swap runs its attempts through [`Ipam::retrying`]: a lost
//! compare-and-swap re-reads the object it names and plans again, a
//! bounded number of times with jitter, as Calico retries up to 100 times
//! (ipam.go, `datastoreRetries`). What a failure allows is decided once, by
//! [`StoreError::retry_class`].

use std::future::Future;
use std::num::NonZeroU32;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Ipam, IpamError};
use crate::datastore::Datastore;
use crate::error::{RetryClass, StoreError};

/// Calico's retry budget (ipam.go, `datastoreRetries`).
pub(super) const CALICO_ATTEMPTS: NonZeroU32 = NonZeroU32::new(100).unwrap();

/// How one attempt of an operation ended.
pub(super) enum Attempt<T> {
    /// It succeeded (or found nothing to do).
    Done(T),
    /// A datastore call failed: what to do is the failure's
    /// [`RetryClass`].
    Failed(StoreError),
    /// A compare-and-swap lost and what it names was read again already:
    /// plan again.
    Lost(StoreError),
    /// It must start again after a pause, reading afresh on its own; if the
    /// attempts run out, this is the answer (a pool create that yielded to
    /// an overlapping one).
    Yield(IpamError),
}

impl<S: Datastore + ?Sized> Ipam<S> {
    /// Runs `attempt` (given its number, from 0) until it is done, at most
    /// `max_attempts` times. A lost compare-and-swap re-reads what it names
    /// first; any other datastore failure, or an error returned by the
    /// attempt, ends the operation at once.
    pub(super) async fn retrying<T, E, Fut>(
        &self,
        operation: &'static str,
        mut attempt: impl FnMut(u32) -> Fut,
    ) -> Result<T, E>
    where
        E: From<IpamError>,
        Fut: Future<Output = Result<Attempt<T>, E>>,
    {
        let (_, result) = self
            .retrying_with(operation, (), |made, ()| {
                let tried = attempt(made);
                async move { ((), tried.await) }
            })
            .await;
        result
    }

    /// [`Ipam::retrying`] for an operation that carries `state` from one
    /// attempt to the next (what it was given so far, what is left to do):
    /// each attempt takes it and hands it back, and so does the end, failed
    /// or not. (The state is passed, not borrowed, so that the futures stay
    /// `Send` for any lifetime.)
    pub(super) async fn retrying_with<St, T, E, Fut>(
        &self,
        operation: &'static str,
        mut state: St,
        mut attempt: impl FnMut(u32, St) -> Fut,
    ) -> (St, Result<T, E>)
    where
        E: From<IpamError>,
        Fut: Future<Output = (St, Result<Attempt<T>, E>)>,
    {
        let mut made = 0u32;
        loop {
            let (back, outcome) = attempt(made, state).await;
            state = back;
            made += 1;
            let exhausted = |last| IpamError::RetriesExhausted {
                operation,
                attempts: made,
                last,
            };
            let last = match outcome {
                Ok(Attempt::Done(value)) => return (state, Ok(value)),
                Err(error) => return (state, Err(error)),
                Ok(Attempt::Failed(cause)) => {
                    if let Err(error) = self.recover(&cause).await {
                        return (state, Err(error.into()));
                    }
                    exhausted(cause)
                }
                Ok(Attempt::Lost(cause)) => exhausted(cause),
                Ok(Attempt::Yield(error)) => error,
            };
            if made >= self.options.max_attempts.get() {
                return (state, Err(last.into()));
            }
            self.back_off(made).await;
        }
    }

    // Sleeps before attempt `attempt` (from 1): nothing at first, then a
    // random pause growing to 100 ms, so that racing writers spread out.
    async fn back_off(&self, attempt: u32) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        if attempt < 2 {
            return;
        }
        let ceiling_ms = (1u64 << attempt.min(7)).min(100);
        let pause = fastrand::u64(0..=ceiling_ms * 1000);
        tokio::time::sleep(Duration::from_micros(pause)).await;
    }

    /// Re-reads what a lost compare-and-swap names, so that the next
    /// attempt plans on current data. Anything else ends the operation: an
    /// unreachable store is not retried here, because every call to it
    /// already waited its full timeout; the caller gets the retryable error
    /// (the CNI plugin's "try again later") at once instead of after a
    /// hundred timeouts.
    pub(super) async fn recover(&self, cause: &StoreError) -> Result<(), IpamError> {
        match (cause.retry_class(), cause.key()) {
            (RetryClass::Conflict, Some(key)) => {
                self.conflicts.fetch_add(1, Ordering::Relaxed);
                self.reload(key).await.map_err(IpamError::Store)
            }
            _ => Err(IpamError::Store(cause.clone())),
        }
    }
}
