//! The anti-rollback witness (I5): a small file beside the database that
//! records the newest (global epoch, commit generation, audit log head) the
//! database reached.
//!
//! It is written after the database commits (database first, then witness),
//! authenticated with an HMAC keyed by a random key kept sealed in the
//! database, and replaced atomically (temp file, fsync, rename, directory
//! fsync). At open, a database at or ahead of its witness is accepted (and
//! the witness repaired); an older one is refused unless the operator
//! overrides it.

use std::io::Write as _;
use std::path::PathBuf;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::audit::{AuditHash, GENESIS};
use crate::error::Error;
use crate::ids::{AuditSeq, RecordEpoch};
use crate::sync::{Arc, Mutex, lock};

const DOMAIN: &[u8] = b"thresig/witness/v1";

/// Where the witness lives.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum WitnessLocation {
    /// A file (normally `<data dir>/state.witness`).
    File(PathBuf),
    /// Shared memory, for stores on an in-memory or fault-injecting backend:
    /// tests keep the handle to model a witness that survives a crash.
    Memory(MemoryWitness),
}

impl WitnessLocation {
    /// The witness's path, for error messages (a placeholder for a witness
    /// in memory).
    pub(crate) fn path(&self) -> PathBuf {
        match self {
            Self::File(path) => path.clone(),
            Self::Memory(_) => PathBuf::from("(witness in memory)"),
        }
    }

    /// Whether anything is at the witness's place, authentic or not: a
    /// store whose witness exists was initialized there once.
    ///
    /// # Errors
    /// [`Error::WitnessUnreadable`] when that cannot be told.
    pub(crate) fn exists(&self) -> Result<bool, Error> {
        match self {
            Self::Memory(m) => Ok(m.bytes().is_some()),
            Self::File(path) => match std::fs::symlink_metadata(path) {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(source) => Err(Error::WitnessUnreadable {
                    witness: path.clone(),
                    source,
                }),
            },
        }
    }
}

/// A witness kept in memory; clones share the same slot.
#[derive(Clone, Debug, Default)]
pub struct MemoryWitness(Arc<Mutex<Option<Vec<u8>>>>);

impl MemoryWitness {
    /// An empty witness slot.
    pub fn new() -> Self {
        Self::default()
    }

    /// The stored bytes (tests use this to roll the database back under it).
    pub fn bytes(&self) -> Option<Vec<u8>> {
        lock(&self.0).clone()
    }

    /// Replaces the stored bytes.
    pub fn set_bytes(&self, bytes: Option<Vec<u8>>) {
        *lock(&self.0) = bytes;
    }
}

/// The database position a witness records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) epoch: RecordEpoch,
    pub(crate) generation: u64,
    /// The audit log's last (sequence, hash): a log cut short or put back
    /// from an older copy is behind it even when the rest is not.
    pub(crate) audit: AuditMark,
}

/// The last entry of the audit log, as the witness records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AuditMark {
    pub(crate) seq: AuditSeq,
    pub(crate) head: AuditHash,
}

impl AuditMark {
    const LEN: usize = 40;

    /// Sequence (u64 BE) and hash, as the generation record holds them.
    pub(crate) fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        let (seq, head) = out.split_at_mut(8);
        seq.copy_from_slice(&self.seq.0.to_be_bytes());
        head.copy_from_slice(&self.head);
        out
    }

    /// The inverse of [`AuditMark::encode`].
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let (seq, head) = bytes.split_first_chunk::<8>()?;
        Some(Self {
            seq: AuditSeq(u64::from_be_bytes(*seq)),
            head: head.try_into().ok()?,
        })
    }
}

impl Default for AuditMark {
    fn default() -> Self {
        Self {
            seq: AuditSeq(0),
            head: GENESIS,
        }
    }
}

impl Position {
    /// Whether `self` (the database) is at or ahead of `witness`: an audit
    /// log at the same sequence must end in the same hash.
    pub(crate) fn covers(&self, witness: &Position) -> bool {
        self.epoch >= witness.epoch
            && self.generation >= witness.generation
            && (self.audit.seq > witness.audit.seq || self.audit == witness.audit)
    }
}

/// Version 1 had no audit fields; it still reads (as an empty log), and
/// every write is version 2.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WitnessFile {
    version: u32,
    store_id: String,
    global_epoch: u64,
    generation: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    audit_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    audit_head: Option<String>,
    mac: String,
}

/// Reads and writes the witness for one database. `Debug` omits the key.
pub(crate) struct Witness {
    location: WitnessLocation,
    store_id: [u8; 16],
    key: Zeroizing<[u8; 32]>,
    /// The newest position written, so concurrent writers never move the
    /// witness backwards.
    last: Mutex<Option<Position>>,
}

impl std::fmt::Debug for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Witness")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl Witness {
    pub(crate) fn new(
        location: WitnessLocation,
        store_id: [u8; 16],
        key: Zeroizing<[u8; 32]>,
    ) -> Self {
        Self {
            location,
            store_id,
            key,
            last: Mutex::new(None),
        }
    }

    /// Where the witness lives, for error messages.
    pub(crate) fn path(&self) -> PathBuf {
        self.location.path()
    }

    fn corrupt(&self) -> Error {
        Error::WitnessCorrupt {
            witness: self.path(),
        }
    }

    fn hmac(&self, version: u32, p: Position) -> Result<Hmac<Sha256>, Error> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(self.key.as_ref()).map_err(|_| self.corrupt())?;
        mac.update(DOMAIN);
        mac.update(&self.store_id);
        mac.update(&p.epoch.0.to_be_bytes());
        mac.update(&p.generation.to_be_bytes());
        if version >= 2 {
            mac.update(&p.audit.seq.0.to_be_bytes());
            mac.update(&p.audit.head);
        }
        Ok(mac)
    }

    /// Reads the witness: `None` if there is none yet.
    ///
    /// # Errors
    /// [`Error::WitnessCorrupt`] when it does not parse, belongs to another
    /// database, or fails its MAC; [`Error::WitnessUnreadable`] when it
    /// exists but cannot be read.
    pub(crate) fn read(&self) -> Result<Option<Position>, Error> {
        let bytes = match &self.location {
            WitnessLocation::Memory(m) => m.bytes(),
            WitnessLocation::File(path) => match std::fs::read(path) {
                Ok(b) => Some(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(source) => {
                    return Err(Error::WitnessUnreadable {
                        witness: path.clone(),
                        source,
                    });
                }
            },
        };
        let Some(bytes) = bytes else { return Ok(None) };
        let file: WitnessFile = serde_json::from_slice(&bytes).map_err(|_| self.corrupt())?;
        let audit = match (file.version, file.audit_seq, &file.audit_head) {
            (1, None, None) => AuditMark::default(),
            (2, Some(seq), Some(head)) => AuditMark {
                seq: AuditSeq(seq),
                head: hex::decode(head)
                    .ok()
                    .and_then(|h| h.try_into().ok())
                    .ok_or_else(|| self.corrupt())?,
            },
            _ => return Err(self.corrupt()),
        };
        let p = Position {
            epoch: RecordEpoch(file.global_epoch),
            generation: file.generation,
            audit,
        };
        let mac = hex::decode(&file.mac).map_err(|_| self.corrupt())?;
        let check = self.hmac(file.version, p)?;
        if !matches!(file.version, 1 | 2)
            || file.store_id != hex::encode(self.store_id)
            || check.verify_slice(&mac).is_err()
        {
            return Err(self.corrupt());
        }
        Ok(Some(p))
    }

    /// Records `p` if it is ahead of what was last written.
    ///
    /// # Errors
    /// [`Error::WitnessIo`] when the file cannot be written; the database is
    /// unaffected and the next write tries again.
    pub(crate) fn write(&self, p: Position) -> Result<(), Error> {
        let mut last = lock(&self.last);
        if last.is_some_and(|l| l.covers(&p)) {
            return Ok(());
        }
        let file = WitnessFile {
            version: 2,
            store_id: hex::encode(self.store_id),
            global_epoch: p.epoch.0,
            generation: p.generation,
            audit_seq: Some(p.audit.seq.0),
            audit_head: Some(hex::encode(p.audit.head)),
            mac: hex::encode(self.hmac(2, p)?.finalize().into_bytes()),
        };
        let bytes = serde_json::to_vec(&file).unwrap_or_default();
        // Counted here, so the write at open is counted with the ones
        // after commits.
        let written = match &self.location {
            WitnessLocation::Memory(m) => {
                m.set_bytes(Some(bytes));
                Ok(())
            }
            WitnessLocation::File(path) => {
                write_atomically(path, &bytes).map_err(|source| Error::WitnessIo {
                    witness: path.clone(),
                    source,
                })
            }
        };
        crate::metrics::witness_written(written.is_ok());
        written?;
        *last = Some(p);
        Ok(())
    }
}

/// Temp file, fsync, rename over the target, fsync the directory.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("witness.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
