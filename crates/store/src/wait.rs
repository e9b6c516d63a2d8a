//! How long this process's callers waited for their writes to commit.
//!
//! A signer's request thread blocks in [`crate::Store::write`] until the
//! writer thread's group commit is durable (one fsync, more with the
//! witness): the time it spends there is time the signer waits on its disk,
//! not CPU. `thresig load` reports it per signer as a fraction of the run,
//! through the daemon's `thresig_store_write_wait_seconds` metric. A
//! process-wide sum, like [`crate::rollbacks_accepted`]: the daemon's
//! registry never sees the store's handle.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

static WRITE_WAIT_NANOS: AtomicU64 = AtomicU64::new(0);

/// The total time callers in this process spent blocked on their writes'
/// commits, summed over callers (two callers waiting together count twice).
#[must_use]
pub fn write_wait() -> Duration {
    Duration::from_nanos(WRITE_WAIT_NANOS.load(Ordering::Relaxed))
}

/// Adds the time since `started` to [`write_wait`].
pub(crate) fn waited_since(started: Instant) {
    let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    WRITE_WAIT_NANOS.fetch_add(nanos, Ordering::Relaxed);
}
