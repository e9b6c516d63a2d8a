//! How long callers waited for their writes to commit.
//!
//! A signer's request thread waits on each of its units from
//! [`crate::Store::submit`] to the end of [`crate::PendingWrite::wait`]
//! (the whole of a [`crate::Store::write`]), until the writer thread's
//! group commit is durable (one fsync, more with the witness): that is
//! time the signer waits on its disk, not CPU. A
//! [`WaitClock`] counts the wall time during which at least one caller was
//! blocked, not the sum over callers: eight callers waiting on one group
//! commit wait one fsync, not eight, so the clock's increase over a span
//! never exceeds the span and is the fraction of it spent waiting on the
//! disk. `thresig load` reports it per signer through the daemon's
//! `thresig_store_write_wait_seconds` metric, which reads the process-wide
//! clock (like [`crate::rollbacks_accepted`]: the daemon's registry never
//! sees the store's handle); each store also keeps its own.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

static PROCESS: WaitClock = WaitClock::new();

/// The wall time during which at least one caller in this process was
/// blocked on a write's commit, over every store it opened.
#[must_use]
pub fn write_wait() -> Duration {
    PROCESS.total()
}

/// Wall time with at least one waiter.
#[derive(Debug, Default)]
pub(crate) struct WaitClock(Mutex<Waiting>);

#[derive(Debug, Default)]
struct Waiting {
    waiters: usize,
    /// When the current stretch with at least one waiter began.
    since: Option<Instant>,
    /// Closed stretches.
    total: Duration,
}

/// One caller's wait on the process-wide clock and on its store's; ends
/// when dropped, so an early return still ends it.
pub(crate) struct Wait<'a> {
    store: &'a WaitClock,
}

impl WaitClock {
    pub(crate) const fn new() -> Self {
        Self(Mutex::new(Waiting {
            waiters: 0,
            since: None,
            total: Duration::ZERO,
        }))
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closed stretches plus the open one, if any.
    pub(crate) fn total(&self) -> Duration {
        let w = self.waiting();
        w.total + w.since.map_or(Duration::ZERO, |s| s.elapsed())
    }

    fn enter(&self) {
        let mut w = self.waiting();
        if w.waiters == 0 {
            w.since = Some(Instant::now());
        }
        w.waiters += 1;
    }

    fn leave(&self) {
        let mut w = self.waiting();
        w.waiters = w.waiters.saturating_sub(1);
        if w.waiters == 0
            && let Some(since) = w.since.take()
        {
            w.total += since.elapsed();
        }
    }

    /// Starts a caller's wait on this clock and on the process's.
    pub(crate) fn start(&self) -> Wait<'_> {
        PROCESS.enter();
        self.enter();
        Wait { store: self }
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        self.store.leave();
        PROCESS.leave();
    }
}
