//! A simulated disk and a fault-injecting redb storage backend over it, for
//! seeded crash and fault tests (here and in other crates' tests).
//!
//! [`SimDisk`] holds the bytes a process would see and the bytes that reached
//! stable storage (the image at the last sync). Each [`FaultBackend`] opened
//! on it belongs to one "process lifetime": [`SimDisk::crash`] ends that
//! lifetime — every later call of the old backend fails and changes nothing,
//! as if the process died — and, for [`CrashMode::PowerLoss`], throws away
//! everything written since the last sync. A backend opened after the crash
//! sees the surviving bytes, and redb recovers from them as after a real
//! crash.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use redb::StorageBackend;

/// A storage call that can be made to fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum FaultPoint {
    /// `write`.
    Write,
    /// `sync_data`.
    Sync,
    /// `read`.
    Read,
    /// `set_len`.
    SetLen,
}

/// What survives a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CrashMode {
    /// The process died: every completed write survives (it reached the OS).
    ProcessKill,
    /// The machine lost power: only what was synced survives.
    PowerLoss,
}

/// How to take back one unsynced change on power loss.
#[derive(Debug)]
enum Unsynced {
    Write { offset: usize, old: Vec<u8> },
    SetLen { old_len: usize, tail: Vec<u8> },
}

#[derive(Debug, Default)]
struct DiskState {
    bytes: Vec<u8>,
    /// Changes since the last sync, oldest first (an undo log, so a sync
    /// costs nothing however large the disk).
    unsynced: Vec<Unsynced>,
    lifetime: u64,
    calls: BTreeMap<FaultPoint, u64>,
    armed: Vec<(FaultPoint, u64)>,
    /// How long every sync takes, as a real disk's fsync would.
    sync_latency: std::time::Duration,
}

/// A simulated disk shared by successive backends.
#[derive(Clone, Debug, Default)]
pub struct SimDisk(Arc<Mutex<DiskState>>);

/// A redb backend over a [`SimDisk`] that fails the calls armed on it.
#[derive(Debug)]
pub struct FaultBackend {
    disk: SimDisk,
    lifetime: u64,
}

impl SimDisk {
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, DiskState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A backend for a new process lifetime.
    pub fn backend(&self) -> FaultBackend {
        FaultBackend {
            disk: self.clone(),
            lifetime: self.state().lifetime,
        }
    }

    /// Ends the current process lifetime.
    pub fn crash(&self, mode: CrashMode) {
        let mut s = self.state();
        s.lifetime += 1;
        s.armed.clear();
        let undo = std::mem::take(&mut s.unsynced);
        if mode == CrashMode::PowerLoss {
            for change in undo.into_iter().rev() {
                match change {
                    Unsynced::Write { offset, old } => {
                        if let Some(dst) = s.bytes.get_mut(offset..offset + old.len()) {
                            dst.copy_from_slice(&old);
                        }
                    }
                    Unsynced::SetLen { old_len, tail } => {
                        let cut = s.bytes.len().min(old_len);
                        s.bytes.truncate(cut);
                        s.bytes.extend_from_slice(&tail);
                        s.bytes.resize(old_len, 0);
                    }
                }
            }
        }
    }

    /// Makes the `n`-th call (counting from 1, from now) to `point` fail.
    pub fn fail_nth(&self, point: FaultPoint, n: u64) {
        let mut s = self.state();
        let at = s.calls.get(&point).copied().unwrap_or(0) + n;
        s.armed.push((point, at));
    }

    /// Makes every later sync take `latency`, like a real disk's fsync
    /// (for measurements of time spent waiting on the disk).
    pub fn set_sync_latency(&self, latency: std::time::Duration) {
        self.state().sync_latency = latency;
    }

    /// How many calls to `point` were made so far.
    pub fn calls(&self, point: FaultPoint) -> u64 {
        self.state().calls.get(&point).copied().unwrap_or(0)
    }

    /// A copy of the current bytes (to restore later as a rolled-back disk).
    pub fn image(&self) -> Vec<u8> {
        self.state().bytes.clone()
    }

    /// A disk holding `bytes`, fully synced.
    pub fn from_image(bytes: Vec<u8>) -> Self {
        Self(Arc::new(Mutex::new(DiskState {
            bytes,
            ..DiskState::default()
        })))
    }
}

impl FaultBackend {
    /// Counts a call and decides whether it fails.
    fn enter(&self, point: FaultPoint) -> Result<MutexGuard<'_, DiskState>, std::io::Error> {
        let mut s = self.disk.state();
        if s.lifetime != self.lifetime {
            return Err(std::io::Error::other("simulated crash: process is gone"));
        }
        let count = s.calls.entry(point).or_insert(0);
        *count += 1;
        let now = *count;
        if let Some(i) = s.armed.iter().position(|&(p, at)| p == point && at == now) {
            s.armed.swap_remove(i);
            return Err(std::io::Error::other("injected fault"));
        }
        Ok(s)
    }
}

impl StorageBackend for FaultBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        let s = self.disk.state();
        Ok(s.bytes.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let s = self.enter(FaultPoint::Read)?;
        let start = usize::try_from(offset).map_err(std::io::Error::other)?;
        let src = s
            .bytes
            .get(start..start + out.len())
            .ok_or_else(|| std::io::Error::other("read past end"))?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        let mut s = self.enter(FaultPoint::SetLen)?;
        let len = usize::try_from(len).map_err(std::io::Error::other)?;
        let old_len = s.bytes.len();
        let tail = s.bytes.get(len..).map(<[u8]>::to_vec).unwrap_or_default();
        s.unsynced.push(Unsynced::SetLen { old_len, tail });
        s.bytes.resize(len, 0);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        let latency = {
            let mut s = self.enter(FaultPoint::Sync)?;
            s.unsynced.clear();
            s.sync_latency
        };
        // Outside the lock: readers of the disk are not held up by a sync,
        // as they are not on a real one.
        std::thread::sleep(latency);
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let mut s = self.enter(FaultPoint::Write)?;
        let start = usize::try_from(offset).map_err(std::io::Error::other)?;
        let range = start..start + data.len();
        let old = s
            .bytes
            .get(range.clone())
            .ok_or_else(|| std::io::Error::other("write past end"))?
            .to_vec();
        s.unsynced.push(Unsynced::Write { offset: start, old });
        if let Some(dst) = s.bytes.get_mut(range) {
            dst.copy_from_slice(data);
        }
        Ok(())
    }
}
