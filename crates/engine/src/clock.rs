//! The time, as the engine's caller gives it: the engine reads no clock of
//! its own (it stays sans-IO), but it chooses *when* to read the one it is
//! given.

use thresig_store::Timestamp;

/// A source of the current time, which the engine reads where a reading
/// taken earlier would be stale.
///
/// [`crate::Signer::handle`] reads it once when a request arrives, and
/// round 2 reads it again each time it holds the wallet's lock, for the
/// policy, the rate ledger and the charge: a reading from before a wait for that
/// lock would date the charges other requests committed meanwhile ahead
/// of it, and the ledger drops charges dated more than a minute ahead
/// (docs/policy.md).
pub trait Clock {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// A fixed time: every reading is this one. For tests that step a virtual
/// clock between requests, and for callers with no clock of their own; a
/// caller that has one passes the clock itself (the daemon's
/// `wall_clock`, the function), not a reading of it, which would be as
/// stale in round 2 as a reading taken on arrival.
impl Clock for Timestamp {
    fn now(&self) -> Timestamp {
        *self
    }
}

/// A clock read by calling it (the daemon's reads the system clock; a test's
/// may read a time it moves from another thread).
impl<F: Fn() -> Timestamp> Clock for F {
    fn now(&self) -> Timestamp {
        self()
    }
}
