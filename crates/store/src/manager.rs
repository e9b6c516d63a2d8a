//! The key manager: a std thread that polls the provider's current KEK id,
//! rotates the KEK when it changes, finishes interrupted rotations, purges
//! expired markers and refreshes the anti-rollback witness.
//!
//! It runs beside the writer, never in front of it: a provider that hangs
//! or fails stalls only this thread, and shows up in [`ProviderHealth`]
//! (the daemon exports it as a metric and an alert), while reads and writes
//! carry on (I3).

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::entry::DekState;
use crate::error::{Error, Recovery};
use crate::ids::{DekTerm, Timestamp};
use crate::ops::WriteOp;
use crate::provider::KekId;
use crate::rotation::Noting;
use crate::store::{EncryptedStore, Store};
use crate::sync::{Arc, Mutex, lock};

/// Settings of the key manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyManagerOptions {
    /// How often the provider's key id is polled. Default 60 s: a KMS
    /// rotation is noticed within a minute, at one cheap `key-id` call per
    /// minute.
    pub poll_interval: Duration,
}

impl Default for KeyManagerOptions {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(60),
        }
    }
}

/// The key provider's health as the key manager last saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProviderHealth {
    /// Ticks completed.
    pub ticks: u64,
    /// Consecutive ticks on which the provider or a rotation failed.
    pub consecutive_failures: u64,
    /// Whether an operator should look: the last tick failed.
    pub alert: bool,
    /// Whether the last failure can clear by itself.
    pub last_failure: Option<Recovery>,
    /// The provider's current KEK id when it last answered.
    pub current_kek: Option<KekId>,
    /// KEK rotations completed.
    pub kek_rotations: u64,
    /// Markers purged.
    pub markers_purged: u64,
}

/// A change a rotation committed to the store's keys: the key manager's
/// on its own tick, or an audited rotation's
/// ([`EncryptedStore::rotate_dek_audited`],
/// [`EncryptedStore::rotate_kek_audited`], [`Store::retire_deleted`]).
///
/// Exhaustive on purpose: every [`KeyChangeAudit`] must say what a new
/// kind of change writes to the log, or the change goes unlogged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyChange {
    /// Every active DEK is wrapped under the provider's new KEK `kek` too
    /// (the older wraps still there): from here on `kek` unwraps every
    /// DEK; `dek_term` is the current DEK.
    KekAdded {
        /// The KEK that now wraps every active DEK.
        kek: KekId,
        /// The current DEK.
        dek_term: DekTerm,
    },
    /// Every active DEK is wrapped under the provider's new KEK `kek`, and
    /// the older wraps were dropped; `dek_term` is the current DEK.
    KekRotated {
        /// The KEK every DEK is wrapped under now.
        kek: KekId,
        /// The current DEK.
        dek_term: DekTerm,
    },
    /// A new DEK was promoted: `term` is current (by a rotation, or the
    /// key manager resuming one a crash interrupted).
    DekPromoted {
        /// The DEK promoted.
        term: DekTerm,
    },
    /// An old DEK, which no record names any more, was retired: `term`
    /// (by a rotation, or the key manager finishing one a crash
    /// interrupted).
    DekRetired {
        /// The DEK retired.
        term: DekTerm,
    },
}

/// Writes the audit entry of a [`KeyChange`]: the store chains entries
/// whose bodies it does not read, and the caller (the engine) decides what
/// an entry says. The entry is appended in the change's own transaction,
/// so a change is never durable without it.
pub trait KeyChangeAudit: Send + Sync + std::fmt::Debug {
    /// The body of the audit entry recording `change`.
    fn body(&self, change: &KeyChange) -> Vec<u8>;
}

/// A [`KeyChangeAudit`] for tests and benchmarks of this crate: the
/// body is the change's `Debug` text (the engine's entries are JSON).
#[cfg(any(test, feature = "test-util"))]
#[derive(Clone, Copy, Debug, Default)]
pub struct DebugKeyAudit;

#[cfg(any(test, feature = "test-util"))]
impl KeyChangeAudit for DebugKeyAudit {
    fn body(&self, change: &KeyChange) -> Vec<u8> {
        format!("{change:?}").into_bytes()
    }
}

/// The key manager. [`KeyManager::start`] runs it on its own thread;
/// [`KeyManager::new`] makes one that ticks only when told (tests, operator
/// commands). Stops and joins its thread on drop, or within a deadline by
/// [`KeyManager::stop_by`].
#[derive(Debug)]
pub struct KeyManager {
    inner: Arc<Inner>,
    /// How often its thread ticks; `None` when it ticks only when told.
    poll_interval: Option<Duration>,
    stop: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
    /// Disconnected once the thread has returned: its sender is dropped
    /// then, so a bounded wait for the thread is a bounded receive. (The
    /// lock only makes the manager `Sync`.)
    done: Option<std::sync::Mutex<Receiver<()>>>,
}

#[derive(Debug)]
struct Inner {
    store: std::sync::Arc<EncryptedStore>,
    health: Mutex<ProviderHealth>,
    /// Writes the audit entry of each change the manager makes.
    audit: std::sync::Arc<dyn KeyChangeAudit>,
}

impl KeyManager {
    /// A manager over `store` that ticks only through [`KeyManager::tick`],
    /// logging each key change it makes with `audit`.
    pub fn new(
        store: std::sync::Arc<EncryptedStore>,
        audit: std::sync::Arc<dyn KeyChangeAudit>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                health: Mutex::new(ProviderHealth::default()),
                audit,
            }),
            poll_interval: None,
            stop: None,
            thread: None,
            done: None,
        }
    }

    /// Starts a manager thread over `store`, ticking every
    /// `options.poll_interval` with the system clock and logging each key
    /// change it makes with `audit`.
    pub fn start(
        store: std::sync::Arc<EncryptedStore>,
        options: KeyManagerOptions,
        audit: std::sync::Arc<dyn KeyChangeAudit>,
    ) -> Self {
        let mut manager = Self::new(store, audit);
        manager.poll_interval = Some(options.poll_interval);
        let (stop, stopped) = sync_channel::<()>(1);
        let (returned, done) = sync_channel::<()>(0);
        let inner = manager.inner.clone();
        manager.thread = std::thread::Builder::new()
            .name("thresig-key-manager".to_owned())
            .spawn(move || {
                let _returned = returned;
                while let Err(RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(options.poll_interval)
                {
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                        .unwrap_or(0);
                    inner.tick(Timestamp(now));
                }
            })
            .ok();
        manager.stop = Some(stop);
        manager.done = Some(std::sync::Mutex::new(done));
        manager
    }

    /// Asks the manager's thread to stop once its current tick (if any) is
    /// over, without waiting for it; [`KeyManager::stop_by`] or the drop
    /// then waits.
    pub fn request_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.try_send(());
        }
    }

    /// Stops the manager's thread, waiting for it until `deadline` at the
    /// latest; returns whether it stopped. A thread still inside a tick
    /// then (a provider call that hangs, a rotation waiting for another)
    /// is left running, detached: a stopping process exits under it as
    /// under a crash, which leaves the store consistent.
    #[must_use = "false means the thread was left running"]
    pub fn stop_by(mut self, deadline: Instant) -> bool {
        self.request_stop();
        let Some(thread) = self.thread.take() else {
            return true;
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let returned = self.done.take().is_none_or(|done| {
            let done = done
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            done.recv_timeout(left) != Err(RecvTimeoutError::Timeout)
        });
        if returned {
            let _ = thread.join();
        }
        returned
    }

    /// One tick at time `now`: purge expired markers, refresh the witness,
    /// poll the provider, rotate the KEK if its id changed, finish any
    /// interrupted rotation. Failures are recorded in the health state,
    /// never propagated: the next tick tries again.
    pub fn tick(&self, now: Timestamp) {
        self.inner.tick(now);
    }

    /// How often the manager's thread ticks: the configured
    /// `poll_interval` for a manager made by [`KeyManager::start`], `None`
    /// for one that ticks only through [`KeyManager::tick`].
    #[must_use]
    pub fn poll_interval(&self) -> Option<Duration> {
        self.poll_interval
    }

    /// The provider's health as of the last tick.
    pub fn health(&self) -> ProviderHealth {
        lock(&self.inner.health).clone()
    }
}

impl Drop for KeyManager {
    fn drop(&mut self) {
        self.request_stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Inner {
    fn tick(&self, now: Timestamp) {
        let noting = Noting {
            audit: self.audit.as_ref(),
            at: now,
        };
        let result = tick_inner(&self.store, &self.health, noting);
        let mut h = lock(&self.health);
        h.ticks += 1;
        match result {
            Ok(()) => {
                h.consecutive_failures = 0;
                h.alert = false;
                h.last_failure = None;
            }
            Err(e) => {
                h.consecutive_failures += 1;
                h.alert = true;
                h.last_failure = Some(e.recovery());
            }
        }
        crate::metrics::key_manager_failing(h.consecutive_failures);
    }
}

fn tick_inner(
    store: &EncryptedStore,
    health: &Mutex<ProviderHealth>,
    noting: Noting<'_>,
) -> Result<(), Error> {
    let now = noting.at;
    // Purge first: it needs no provider, so a dead KMS does not stop it.
    if let Ok(crate::ops::WriteOutcome::Committed(results)) =
        store.write(vec![WriteOp::PurgeMarkers { now }])
    {
        for r in results {
            if let crate::ops::OpResult::Purged(n) = r {
                lock(health).markers_purged += n;
            }
        }
    }
    store.refresh_witness()?;
    let kek = store.provider.current_kek_id().map_err(Error::Provider)?;
    lock(health).current_kek = Some(kek.clone());
    let needs_rotation = store
        .entries()?
        .iter()
        .filter(|e| e.state == DekState::Active)
        .any(|e| !e.has_wrap(&kek) || e.wraps.len() > 1);
    if needs_rotation {
        store.rotate_kek_noted(Some(noting))?;
        lock(health).kek_rotations += 1;
    }
    store.resume_rotations_noted(Some(noting))
}
