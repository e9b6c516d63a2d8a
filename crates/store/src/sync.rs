//! Synchronisation primitives, swapped for loom's under `--cfg loom` so the
//! keyring's concurrency model runs against the real code.

#[cfg(all(test, loom))]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard, RwLock};
#[cfg(not(all(test, loom)))]
pub(crate) use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// Locks `m`, reading through poisoning: the data behind every lock in this
/// crate stays consistent between statements, so a panic elsewhere must not
/// make the keyring unusable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
