//! Time as the garbage collector and the Lease read it, behind a trait so
//! that it can be injected: [`SystemClock`] in the server, [`ManualClock`]
//! where a test (or a simulation) moves time itself. Grace periods of
//! fifteen minutes and lease hand-overs are then tested by advancing the
//! clock, not by sleeping.
//!
//! Everything the collector and the elector do with time goes through
//! [`Clock`]: the wall-clock reading a leak's grace period is judged by and
//! a Lease's renewTime is stamped with, the monotonic reading a Lease's
//! expiry is measured by (client-go compares no clocks across machines),
//! and the sleeps between passes and renewals.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

/// A sleep on a [`Clock`].
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A source of time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The wall-clock time.
    fn now(&self) -> SystemTime;
    /// A monotonic reading: never goes back, whatever the wall clock does.
    fn instant(&self) -> Instant;
    /// Completes once `duration` has passed on this clock.
    fn sleep(&self, duration: Duration) -> Sleep;
}

/// The machine's clocks and tokio's timers.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn instant(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A clock that stands still until [`ManualClock::advance`] moves it; its
/// sleeps complete when it has been moved far enough. It starts at the
/// machine's time, so that what it stamps looks like a real time.
#[derive(Debug)]
pub struct ManualClock {
    wall_start: SystemTime,
    instant_start: Instant,
    // How far the clock has been moved, and the deadline of every sleep
    // not yet dropped: one channel, so that a waiter sees both change
    // together.
    timeline: watch::Sender<Timeline>,
    next_sleep: AtomicU64,
}

#[derive(Debug, Default)]
struct Timeline {
    advanced: Duration,
    sleeps: Vec<(u64, Duration)>,
}

impl Timeline {
    fn pending(&self) -> usize {
        self.sleeps
            .iter()
            .filter(|(_, deadline)| *deadline > self.advanced)
            .count()
    }
}

impl ManualClock {
    /// A clock at the machine's current time.
    pub fn new() -> Arc<ManualClock> {
        Arc::new(ManualClock {
            wall_start: SystemTime::now(),
            instant_start: Instant::now(),
            timeline: watch::channel(Timeline::default()).0,
            next_sleep: AtomicU64::new(0),
        })
    }

    /// Moves the clock forward by `by`, completing the sleeps that end by
    /// then.
    pub fn advance(&self, by: Duration) {
        self.timeline.send_modify(|t| t.advanced += by);
    }

    /// How far the clock has been moved since it was made.
    pub fn advanced(&self) -> Duration {
        self.timeline.borrow().advanced
    }

    /// Waits until at least `count` sleeps are waiting for the clock to
    /// move: the tasks that sleep on it have done what they do before
    /// sleeping, so that an [`advance`](Self::advance) now reaches them.
    pub async fn sleeping(&self, count: usize) {
        let mut timeline = self.timeline.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = timeline.wait_for(|t| t.pending() >= count).await;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        self.wall_start + self.advanced()
    }

    fn instant(&self) -> Instant {
        self.instant_start + self.advanced()
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        let id = self.next_sleep.fetch_add(1, Ordering::Relaxed);
        let mut timeline = self.timeline.subscribe();
        let mut deadline = Duration::ZERO;
        self.timeline.send_modify(|t| {
            deadline = t.advanced + duration;
            t.sleeps.push((id, deadline));
        });
        let registered = Registered {
            timeline: self.timeline.clone(),
            id,
        };
        Box::pin(async move {
            let _registered = registered;
            let _ = timeline.wait_for(|t| t.advanced >= deadline).await;
        })
    }
}

// Forgets a sleep when it completes or is dropped (a `select!` that took
// another branch), so that `sleeping` counts only live ones.
struct Registered {
    timeline: watch::Sender<Timeline>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.timeline
            .send_modify(|t| t.sleeps.retain(|(id, _)| *id != self.id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_sleep_ends_only_when_the_clock_is_moved_far_enough() {
        let clock = ManualClock::new();
        let started = (clock.now(), clock.instant());
        let mut sleep = tokio::spawn(clock.sleep(Duration::from_secs(60)));
        clock.sleeping(1).await;
        clock.advance(Duration::from_secs(59));
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut sleep)
                .await
                .is_err(),
            "woke a second early"
        );
        clock.advance(Duration::from_secs(1));
        sleep.await.unwrap();
        assert_eq!(clock.now(), started.0 + Duration::from_secs(60));
        assert_eq!(clock.instant(), started.1 + Duration::from_secs(60));
        assert_eq!(clock.advanced(), Duration::from_secs(60));
    }

    #[tokio::test]
    async fn sleeping_counts_live_sleeps_that_have_not_ended() {
        let clock = ManualClock::new();
        let short = clock.sleep(Duration::from_secs(1));
        let long = clock.sleep(Duration::from_secs(10));
        clock.sleeping(2).await;
        clock.advance(Duration::from_secs(1));
        // The short one has ended (though not yet polled): one left.
        assert_eq!(clock.timeline.borrow().pending(), 1);
        drop(long);
        assert_eq!(clock.timeline.borrow().pending(), 0);
        short.await;
        assert!(clock.timeline.borrow().sleeps.is_empty());
    }
}
