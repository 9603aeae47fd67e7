//! IP cooldown: a released address stays out of use for a configured time
//! before it can be handed out again, so that Services, conntrack entries
//! and peers that still point at the old pod have caught up before a new
//! pod appears at the address.
//!
//! The rules are Calico's (projectcalico/calico #12638, #13075, #13077;
//! libcalico-go/lib/ipam/ipam_block.go and design/ipam/ipam-core-library.md,
//! "IP release and cooldown"):
//!
//! - IPAMConfig `ipCooldownSeconds` (0 to [`MAX_IP_COOLDOWN_SECONDS`]) sets
//!   the time. 0, the default, keeps the old behaviour: a release frees the
//!   address at once.
//! - With a cooldown, a release *marks* the address: its ordinal stays in
//!   `allocations`, pointing at a new attribute that holds only
//!   `releasedAt` (ipam_block.go, release, releaseByHandle,
//!   addCooldownAttribute). The address is nobody's (no handle, no owner
//!   attributes) but still in use.
//! - The address is *deallocated* (ordinal back to the tail of
//!   `unallocated`, sequence number cleared, the attribute dropped once
//!   unused) only once its cooldown has passed, whenever its block is read
//!   (ipam_block.go, blockFromBackend and garbageCollect); the deallocation
//!   is written with the next write of the block. A block nobody writes is
//!   rewritten by a backstop (kube-controllers' garbageCollectColdIPs).
//!
//! `releasedAt` is stored as Kubernetes stores a `metav1.Time`: RFC 3339 in
//! whole seconds, so an address released at 12:00:00.9 reads back as
//! released at 12:00:00. Calico compares that truncated time with the clock
//! (`ReleasedAt.Before(now - cooldown)`) and so may hand an address out up
//! to a second early. Here the stored second counts as the latest moment
//! the release could have happened: an address released in second `s` is
//! cooled once the clock reads second `s + cooldown + 1`, which is never
//! less than the cooldown after the real release and at most one second
//! more.

use crate::plan::Now;
use crate::timestamp::format_rfc3339;

/// The largest cooldown Calico accepts (IPAMConfigSpec.IPCooldownSeconds,
/// `+kubebuilder:validation:Maximum=1200`).
pub const MAX_IP_COOLDOWN_SECONDS: u32 = 1200;

/// A cooldown in force at one moment: what a release records and which
/// released addresses are free again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cooldown {
    seconds: u32,
    now: Now,
}

impl Cooldown {
    /// The cooldown of `seconds` (the config's `ipCooldownSeconds`) as seen
    /// at `now`.
    pub fn new(seconds: u32, now: Now) -> Cooldown {
        Cooldown { seconds, now }
    }

    /// What a release at this moment records: `None` when there is no
    /// cooldown (the address is freed at once), else the `releasedAt`
    /// second.
    pub fn release_stamp(self) -> Option<i64> {
        (self.seconds > 0).then(|| self.now.unix_seconds())
    }

    /// Addresses released in a second before this one have cooled down and
    /// are deallocated. With no cooldown every address released in an
    /// earlier second is (Calico: "0 deallocates on the next GC pass").
    pub fn cutoff(self) -> i64 {
        self.now.unix_seconds() - i64::from(self.seconds)
    }

    /// Whether an address released at `released_at` has cooled down.
    pub fn has_passed(self, released_at: i64) -> bool {
        released_at < self.cutoff()
    }

    /// The first second at which an address released at `released_at` is
    /// free again.
    pub fn free_from(self, released_at: i64) -> i64 {
        released_at + i64::from(self.seconds) + 1
    }

    /// [`Self::free_from`] as an RFC 3339 timestamp.
    pub fn free_from_rfc3339(self, released_at: i64) -> String {
        format_rfc3339(self.free_from(released_at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64, nanos: u64) -> Now {
        Now {
            unix_nanos: seconds * 1_000_000_000 + nanos,
        }
    }

    #[test]
    fn no_cooldown_frees_at_once_and_records_nothing() {
        let c = Cooldown::new(0, at(100, 5));
        assert_eq!(c.release_stamp(), None);
        assert!(c.has_passed(99));
        assert!(
            !c.has_passed(100),
            "released this very second: wait for the next"
        );
    }

    #[test]
    fn a_release_records_its_second() {
        assert_eq!(
            Cooldown::new(30, at(100, 999_999_999)).release_stamp(),
            Some(100)
        );
    }

    #[test]
    fn an_address_is_never_free_before_the_cooldown_has_passed_in_full() {
        // Released at 100.999 s (stored as 100) with a 10 s cooldown: still
        // cooling at 110.999 s, free from 111 s, 10.001 s after the release.
        assert!(!Cooldown::new(10, at(110, 999_999_999)).has_passed(100));
        assert!(Cooldown::new(10, at(111, 0)).has_passed(100));
        assert_eq!(Cooldown::new(10, at(0, 0)).free_from(100), 111);
        assert_eq!(
            Cooldown::new(10, at(0, 0)).free_from_rfc3339(100),
            "1970-01-01T00:01:51Z"
        );
    }

    #[test]
    fn a_release_stamped_in_the_future_waits_for_its_own_time() {
        // Clock skew between writers: Calico waits too (ReleasedAt.Before).
        assert!(!Cooldown::new(0, at(100, 0)).has_passed(105));
    }
}
