//! The anti-rollback witness (I5): a small file beside the database that
//! records the newest (global epoch, commit generation, audit log head) the
//! database reached.
//!
//! It is written after the database commits (database first, then witness)
//! and authenticated with an HMAC keyed by a random key kept sealed in the
//! database. The file has two fixed slots (`format.rs`); a write overwrites
//! the slot not holding the newest valid copy in place and syncs its data
//! once, so a crash in the middle of it leaves the other slot, which the
//! database had reached before. The file itself is made the careful way
//! (temp file, fsync, rename, directory fsync) at every open, which also
//! upgrades a JSON witness and clears a torn slot, and when the write
//! counter runs out. At open, a database at or ahead of its witness is
//! accepted (and the witness made anew at its position); an older one is
//! refused unless the operator overrides it.

mod format;

use std::io::Write as _;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use rand_core::{OsRng, RngCore as _};
use zeroize::Zeroizing;

use crate::audit::{AuditHash, GENESIS};
use crate::error::Error;
use crate::ids::{AuditSeq, RecordEpoch};
use crate::sync::{Arc, Mutex, lock};
use format::{FILE_LEN, FileId, Found, HEADER_LEN, MacKey, Slot, header};

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

/// A witness file kept in memory; clones share the same file. Writes
/// model the file's: a slot is overwritten in place, a new file replaces
/// the old one whole (as the rename does).
#[derive(Clone, Debug, Default)]
pub struct MemoryWitness(Arc<Mutex<MemoryFile>>);

#[derive(Debug, Default)]
struct MemoryFile {
    bytes: Option<Vec<u8>>,
    /// The next slot write stops after this many bytes and fails.
    tear: Option<usize>,
    /// Every slot write fails, writing nothing, while this is set.
    failing: bool,
}

impl MemoryWitness {
    /// No witness file.
    pub fn new() -> Self {
        Self::default()
    }

    /// The file's bytes (tests use this to roll the database back under it).
    pub fn bytes(&self) -> Option<Vec<u8>> {
        lock(&self.0).bytes.clone()
    }

    /// Replaces the file's bytes.
    pub fn set_bytes(&self, bytes: Option<Vec<u8>>) {
        lock(&self.0).bytes = bytes;
    }

    /// Makes the next slot write stop after its first `keep` bytes and
    /// fail, leaving the slot as a crash in the middle of the write would
    /// (fault injection for tests; nothing else calls it).
    pub fn tear_next_slot_write(&self, keep: usize) {
        lock(&self.0).tear = Some(keep);
    }

    /// Makes every slot write fail with an I/O error, writing nothing,
    /// until called with `false` (fault injection for tests, as
    /// [`MemoryWitness::tear_next_slot_write`]).
    pub fn fail_slot_writes(&self, failing: bool) {
        lock(&self.0).failing = failing;
    }

    /// Overwrites `record` at `offset` of an existing file of the slotted
    /// size with the header `fields`, as `pwrite` would (or its first
    /// bytes, when a tear is armed).
    fn write_at(
        &self,
        fields: &[u8; HEADER_LEN],
        offset: u64,
        record: &[u8],
    ) -> Result<(), Failure> {
        let mut file = lock(&self.0);
        if file.failing {
            return Err(Failure::Io(std::io::Error::other("injected write failure")));
        }
        let tear = file.tear.take();
        let at = usize::try_from(offset).map_err(std::io::Error::other)?;
        let bytes = file.bytes.as_mut().ok_or(Failure::Replaced(GONE))?;
        if bytes.len() != FILE_LEN {
            return Err(Failure::Replaced(OTHER_SIZE));
        }
        if bytes.get(..HEADER_LEN) != Some(&fields[..]) {
            return Err(Failure::Replaced(OTHER_FILE));
        }
        let slot = bytes
            .get_mut(at..at + record.len())
            .ok_or_else(|| std::io::Error::other("a slot outside the witness file"))?;
        match tear {
            Some(keep) => {
                let keep = keep.min(record.len());
                if let (Some(dst), Some(src)) = (slot.get_mut(..keep), record.get(..keep)) {
                    dst.copy_from_slice(src);
                }
                Err(Failure::Io(std::io::Error::other(
                    "injected crash in the middle of a slot write",
                )))
            }
            None => {
                slot.copy_from_slice(record);
                Ok(())
            }
        }
    }
}

/// Why a slot write did not happen.
#[derive(Debug)]
enum Failure {
    /// The file could not be written (retryable).
    Io(std::io::Error),
    /// What is at the witness's path is not the file this process made
    /// (terminal): what is there instead.
    Replaced(&'static str),
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

// What is at the witness's path, as `WitnessReplaced` says.
const GONE: &str = "no file is there";
const NOT_A_FILE: &str = "a symbolic link or something other than a regular file is there";
const OTHER_SIZE: &str = "a file of another size is there";
const OTHER_FILE: &str = "a file other than the one this store made at open is there";

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

/// Reads and writes the witness for one database. `Debug` omits the key.
pub(crate) struct Witness {
    location: WitnessLocation,
    key: MacKey,
    /// What was last written, so concurrent writers never move the witness
    /// backwards and each write knows its slot.
    state: Mutex<State>,
}

/// The witness as this process knows it.
#[derive(Default)]
struct State {
    /// The newest position written.
    position: Option<Position>,
    /// The slot holding the newest valid copy; `None` until this process
    /// made the file, so the first write makes it.
    slot: Option<Slot>,
    /// The file this process made (meaningful once `slot` is set).
    made: Made,
}

/// The witness file this process made, as a slot write checks it.
#[derive(Clone, Copy, Default)]
struct Made {
    /// Its id: a file at the path with another header is not written.
    id: FileId,
    /// Its device and inode (`None` in memory): a file at the path that
    /// cannot be opened is told from the one made by them.
    inode: Option<Inode>,
}

/// A file's device and inode number: which file a path names.
type Inode = (u64, u64);

impl std::fmt::Debug for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Witness")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// The steps of making a witness file, in order, and of writing a slot.
/// Tests stop a write before each of them, as a crash or an I/O error
/// there would.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    CreateTemp,
    WriteTemp,
    SyncTemp,
    Rename,
    SyncDir,
    WriteSlot,
    SyncSlot,
}

impl Witness {
    pub(crate) fn new(
        location: WitnessLocation,
        store_id: [u8; 16],
        key: Zeroizing<[u8; 32]>,
    ) -> Self {
        Self {
            location,
            key: MacKey::new(key, store_id),
            state: Mutex::new(State::default()),
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

    /// Reads the witness: `None` if there is none yet.
    ///
    /// # Errors
    /// [`Error::WitnessCorrupt`] when it does not parse, belongs to another
    /// database, or has no slot that authenticates, and when what is at the
    /// path is not a regular file (a symbolic link, a FIFO) or is larger
    /// than any witness, which is refused unread;
    /// [`Error::WitnessUnreadable`] when it exists but cannot be read.
    pub(crate) fn read(&self) -> Result<Option<Position>, Error> {
        let bytes = match &self.location {
            WitnessLocation::Memory(m) => m.bytes(),
            WitnessLocation::File(path) => read_file(path).map_err(|failure| match failure {
                Failure::Io(source) => Error::WitnessUnreadable {
                    witness: path.clone(),
                    source,
                },
                Failure::Replaced(_) => self.corrupt(),
            })?,
        };
        let Some(bytes) = bytes else { return Ok(None) };
        match self.key.parse(&bytes).map_err(|_| self.corrupt())? {
            Found::Legacy(p) | Found::Slotted(_, p) => Ok(Some(p)),
        }
    }

    /// Records `p` if it is ahead of what was last written: one slot
    /// overwritten in place and synced (the file is made anew only if this
    /// process has not made it yet, or its write counter ran out).
    ///
    /// # Errors
    /// [`Error::WitnessIo`] when the file cannot be written; the database is
    /// unaffected and the next write tries again (into the same slot, since
    /// the other one still holds the newest valid copy).
    /// [`Error::WitnessReplaced`] when the file at the witness's path is
    /// not the one this process made (removed, or something else put
    /// there): it is neither written nor made anew.
    pub(crate) fn write(&self, p: Position) -> Result<(), Error> {
        self.write_stopping(p, |_| Ok(()))
    }

    /// [`Witness::write`], calling `before` ahead of each step (tests fail
    /// it to stop the write there).
    fn write_stopping(
        &self,
        p: Position,
        before: impl FnMut(Step) -> std::io::Result<()>,
    ) -> Result<(), Error> {
        self.update(p, |made| {
            match made.and_then(|(m, s)| Some((m, s.next()?))) {
                Some((m, next)) => self.write_slot(&m, next, p, before).map(|()| (m, next)),
                None => Ok(self.make_file(p, before)?),
            }
        })
    }

    /// Makes the witness file anew at `p`, the careful way: what the open
    /// does, so that a JSON witness is upgraded, a torn slot cleared, and
    /// every later write of this process knows its slot.
    ///
    /// # Errors
    /// [`Error::WitnessIo`] when the file cannot be made; the old file, if
    /// any, is left as it was.
    pub(crate) fn remake(&self, p: Position) -> Result<(), Error> {
        self.remake_stopping(p, |_| Ok(()))
    }

    /// [`Witness::remake`], calling `before` ahead of each step (tests fail
    /// it to stop the write there, as a crash would).
    fn remake_stopping(
        &self,
        p: Position,
        before: impl FnMut(Step) -> std::io::Result<()>,
    ) -> Result<(), Error> {
        self.update(p, |_| Ok(self.make_file(p, before)?))
    }

    /// Runs `write` (given the file made and its slot holding the newest
    /// copy, if known) when `p` is ahead of what was last written, and
    /// notes what it wrote.
    fn update(
        &self,
        p: Position,
        write: impl FnOnce(Option<(Made, Slot)>) -> Result<(Made, Slot), Failure>,
    ) -> Result<(), Error> {
        let mut state = lock(&self.state);
        if state.position.is_some_and(|l| l.covers(&p)) {
            return Ok(());
        }
        let written = write(state.slot.map(|slot| (state.made, slot)));
        // Counted here, so the write at open is counted with the ones
        // after commits.
        crate::metrics::witness_written(written.is_ok());
        let (made, slot) = written.map_err(|failure| match failure {
            Failure::Io(source) => Error::WitnessIo {
                witness: self.path(),
                source,
            },
            Failure::Replaced(reason) => Error::WitnessReplaced {
                witness: self.path(),
                reason,
            },
        })?;
        *state = State {
            position: Some(p),
            slot: Some(slot),
            made,
        };
        Ok(())
    }

    /// Overwrites `slot` with `p` and syncs it: the hot path's only write.
    /// `slot` of the file `made`, which must be the file at the path.
    fn write_slot(
        &self,
        made: &Made,
        slot: Slot,
        p: Position,
        mut before: impl FnMut(Step) -> std::io::Result<()>,
    ) -> Result<(), Failure> {
        let record = self.key.seal(&made.id, slot, p);
        let fields = header(&made.id);
        match &self.location {
            WitnessLocation::Memory(m) => {
                before(Step::WriteSlot)?;
                m.write_at(&fields, slot.offset(), &record)?;
                Ok(before(Step::SyncSlot)?)
            }
            WitnessLocation::File(path) => {
                write_in_place(path, &fields, made.inode, slot.offset(), &record, before)
            }
        }
    }

    /// Makes a new witness file holding `p`, with a new random id,
    /// replacing any file there as one step (the rename), so a crash
    /// leaves the old file or the new.
    fn make_file(
        &self,
        p: Position,
        before: impl FnMut(Step) -> std::io::Result<()>,
    ) -> std::io::Result<(Made, Slot)> {
        let mut id = FileId::default();
        OsRng.fill_bytes(&mut id);
        let (bytes, slot) = self.key.new_file(&id, p);
        let inode = match &self.location {
            WitnessLocation::Memory(m) => {
                m.set_bytes(Some(bytes));
                None
            }
            WitnessLocation::File(path) => Some(write_atomically(path, &bytes, before)?),
        };
        Ok((Made { id, inode }, slot))
    }
}

/// The most a witness file holds: the slotted file (a JSON witness is a
/// few hundred bytes).
const READ_LIMIT: u64 = FILE_LEN as u64;

/// Reads the witness file at `path` (`None` when there is none): only a
/// regular file, and only up to [`READ_LIMIT`], so that a symbolic link, a
/// FIFO (which a plain read would wait on for a writer), a device or a
/// huge file is refused before anything is read from it, as
/// [`Failure::Replaced`]; [`Failure::Io`] when the file cannot be read.
fn read_file(path: &Path) -> Result<Option<Vec<u8>>, Failure> {
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits())
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(match e.raw_os_error().map(Errno::from_raw) {
                Some(Errno::ELOOP | Errno::ENXIO) => Failure::Replaced(NOT_A_FILE),
                _ => Failure::Io(e),
            });
        }
    };
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(Failure::Replaced(NOT_A_FILE));
    }
    if meta.len() > READ_LIMIT {
        return Err(Failure::Replaced(OTHER_SIZE));
    }
    let mut bytes = Vec::new();
    crate::file::read_opened(file, path, READ_LIMIT, &mut bytes).map_err(|e| match e {
        crate::file::FileError::Read { source, .. } => Failure::Io(source),
        crate::file::FileError::TooLarge { .. } => Failure::Replaced(OTHER_SIZE),
        crate::file::FileError::NotAFile { .. } => Failure::Replaced(NOT_A_FILE),
    })?;
    Ok(Some(bytes))
}

/// Writes `record` at `offset` of the witness file and syncs its data.
///
/// One `fdatasync` is enough, and no directory sync is needed: the file is
/// opened without creating or truncating it, and its size, checked here,
/// never changes after it was made (with every byte written, so no block
/// is allocated now), so the write changes data only, which is what
/// `fdatasync` makes durable.
///
/// Anything at the path but the regular file of the slotted size with the
/// header `fields` the store made is [`Failure::Replaced`] and is not
/// written. The open follows no symbolic link (`O_NOFOLLOW`); what else
/// is there is told by the opened file's type, size and header (a FIFO
/// opened for reading and writing does not wait for a peer, and
/// `O_NONBLOCK` keeps any other special file from waiting). A file that
/// cannot be opened at all is told from the one made (`made`) by its
/// inode ([`open_failure`]). The file put back (the same file, or a copy
/// of it) is written again.
fn write_in_place(
    path: &Path,
    fields: &[u8; HEADER_LEN],
    made: Option<Inode>,
    offset: u64,
    record: &[u8],
    mut before: impl FnMut(Step) -> std::io::Result<()>,
) -> Result<(), Failure> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(path)
        .map_err(|e| open_failure(path, made, e))?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(Failure::Replaced(NOT_A_FILE));
    }
    if meta.len() != FILE_LEN as u64 {
        return Err(Failure::Replaced(OTHER_SIZE));
    }
    let mut found = [0u8; HEADER_LEN];
    file.read_exact_at(&mut found, 0)?;
    if &found != fields {
        return Err(Failure::Replaced(OTHER_FILE));
    }
    before(Step::WriteSlot)?;
    file.write_all_at(record, offset)?;
    before(Step::SyncSlot)?;
    Ok(file.sync_data()?)
}

/// Why opening the witness file for a slot write failed: the file made
/// (`made`) gone or another in its place is [`Failure::Replaced`], which no
/// retry gets past, even when what is there cannot be opened (a file the
/// signer may not read or write, put there by someone else); an error on
/// the file made is [`Failure::Io`].
fn open_failure(path: &Path, made: Option<Inode>, error: std::io::Error) -> Failure {
    use std::os::unix::fs::MetadataExt as _;
    match error.raw_os_error().map(Errno::from_raw) {
        Some(Errno::ENOENT | Errno::ENOTDIR) => Failure::Replaced(GONE),
        Some(Errno::ELOOP | Errno::EISDIR | Errno::ENXIO) => Failure::Replaced(NOT_A_FILE),
        _ => match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Failure::Replaced(GONE),
            Ok(meta) if made.is_some_and(|m| m != (meta.dev(), meta.ino())) => {
                Failure::Replaced(OTHER_FILE)
            }
            _ => Failure::Io(error),
        },
    }
}

/// Temp file, fsync, rename over the target, fsync the directory; `before`
/// runs ahead of each step. Returns the new file's device and inode.
fn write_atomically(
    path: &Path,
    bytes: &[u8],
    mut before: impl FnMut(Step) -> std::io::Result<()>,
) -> std::io::Result<Inode> {
    use std::os::unix::fs::MetadataExt as _;
    let tmp = path.with_extension("witness.tmp");
    let inode = {
        before(Step::CreateTemp)?;
        let mut f = std::fs::File::create(&tmp)?;
        before(Step::WriteTemp)?;
        f.write_all(bytes)?;
        before(Step::SyncTemp)?;
        f.sync_all()?;
        let meta = f.metadata()?;
        (meta.dev(), meta.ino())
    };
    before(Step::Rename)?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        before(Step::SyncDir)?;
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(inode)
}

#[cfg(test)]
mod tests {
    use super::format::RECORD_LEN;
    use super::format::tests::{at, key, legacy_file};
    use super::*;

    fn witness(location: WitnessLocation) -> Witness {
        Witness::new(location, [3; 16], Zeroizing::new([7; 32]))
    }

    /// Fails the step `stop`, as a crash or an I/O error there would.
    fn stop_before(stop: Step) -> impl FnMut(Step) -> std::io::Result<()> {
        move |step| {
            if step == stop {
                Err(std::io::Error::other("stopped"))
            } else {
                Ok(())
            }
        }
    }

    fn is_slotted(bytes: &[u8]) -> bool {
        bytes.starts_with(&format::MAGIC) && bytes.len() == FILE_LEN
    }

    const STEPS: [Step; 5] = [
        Step::CreateTemp,
        Step::WriteTemp,
        Step::SyncTemp,
        Step::Rename,
        Step::SyncDir,
    ];

    /// The upgrade of a JSON witness stopped before each of its steps, as
    /// a crash there would: the file opens as the JSON witness or as the
    /// slotted one, at the same position, and the next open finishes it.
    #[test]
    fn an_upgrade_stopped_at_any_step_reads_the_same_position() {
        let p = at(4, 13, 2);
        for stop in STEPS {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("state.witness");
            std::fs::write(&path, legacy_file(&key(), p)).unwrap();
            let first = witness(WitnessLocation::File(path.clone()));
            assert_eq!(first.read().unwrap(), Some(p));
            let crashed = first.remake_stopping(p, |step| {
                if step == stop {
                    Err(std::io::Error::other("crash"))
                } else {
                    Ok(())
                }
            });
            assert!(matches!(crashed, Err(Error::WitnessIo { .. })), "{stop:?}");
            let bytes = std::fs::read(&path).unwrap();
            // Only the rename replaces the JSON file.
            assert_eq!(is_slotted(&bytes), stop == Step::SyncDir, "{stop:?}");
            let reopened = witness(WitnessLocation::File(path.clone()));
            assert_eq!(reopened.read().unwrap(), Some(p), "{stop:?}");
            reopened.remake(p).unwrap();
            assert!(is_slotted(&std::fs::read(&path).unwrap()), "{stop:?}");
            assert_eq!(reopened.read().unwrap(), Some(p), "{stop:?}");
        }
    }

    /// The slot offsets, in index order.
    fn slot_offsets() -> [usize; 2] {
        let first = Slot::FIRST;
        [first, first.next().unwrap()].map(|s| s.offset() as usize)
    }

    /// The write counter in slot `index` of `file`.
    fn counter_in(file: &[u8], index: usize) -> u64 {
        let at = slot_offsets()[index];
        u64::from_be_bytes(file[at..at + 8].try_into().unwrap())
    }

    /// Which slots differ between two copies of a file (and that nothing
    /// outside the slots' records does).
    fn slots_changed(before: &[u8], after: &[u8]) -> Vec<usize> {
        let offsets = slot_offsets();
        let record = |file: &[u8], index: usize| {
            let at = offsets[index];
            file[at..at + RECORD_LEN].to_vec()
        };
        let mut rest = (before.to_vec(), after.to_vec());
        for at in offsets {
            rest.0[at..at + RECORD_LEN].fill(0);
            rest.1[at..at + RECORD_LEN].fill(0);
        }
        assert!(rest.0 == rest.1, "a write changed bytes outside the slots");
        (0..2)
            .filter(|&i| record(before, i) != record(after, i))
            .collect()
    }

    /// After the file is made, writes go to alternate slots in place, each
    /// with the next counter: the file keeps its inode (no rename) and
    /// always reads the newest write.
    #[test]
    fn writes_alternate_slots_of_the_same_file() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.witness");
        let w = witness(WitnessLocation::File(path.clone()));
        w.remake(at(1, 1, 0)).unwrap();
        let inode = std::fs::metadata(&path).unwrap().ino();
        for generation in 2..6 {
            let before = std::fs::read(&path).unwrap();
            w.write(at(1, generation, 0)).unwrap();
            let after = std::fs::read(&path).unwrap();
            // Slot 0 holds the file's first copy, so the second write goes
            // to slot 1, the third to slot 0, and so on.
            let index = (generation as usize - 1) % 2;
            assert_eq!(slots_changed(&before, &after), [index], "{generation}");
            assert_eq!(counter_in(&after, index), generation);
            assert_eq!(w.read().unwrap(), Some(at(1, generation, 0)));
            let meta = std::fs::metadata(&path).unwrap();
            assert_eq!((meta.ino(), meta.len()), (inode, FILE_LEN as u64));
        }
        assert!(!dir.path().join("state.witness.tmp").exists());
    }

    /// A write whose record landed whole but that reported failure (the
    /// whole record kept by a tear, or a file write stopped before its
    /// sync): the file reads the record that landed, and the next write
    /// reuses that slot and counter, which the file then reads.
    fn a_landed_write_reported_failed_reuses_its_slot(
        w: &Witness,
        bytes: impl Fn() -> Vec<u8>,
        fresh: impl Fn() -> Witness,
        failing_write: impl FnOnce(Position) -> Result<(), Error>,
    ) {
        w.remake(at(1, 1, 0)).unwrap();
        w.write(at(1, 2, 0)).unwrap();
        let failed = failing_write(at(1, 3, 0));
        assert!(matches!(failed, Err(Error::WitnessIo { .. })), "{failed:?}");
        assert_eq!(fresh().read().unwrap(), Some(at(1, 3, 0)));
        let before = bytes();
        assert_eq!(counter_in(&before, 0), 3);
        w.write(at(1, 4, 0)).unwrap();
        let after = bytes();
        assert_eq!(slots_changed(&before, &after), [0]);
        assert_eq!(counter_in(&after, 0), 3);
        assert_eq!(fresh().read().unwrap(), Some(at(1, 4, 0)));
    }

    #[test]
    fn a_whole_record_torn_write_reuses_its_slot() {
        let memory = MemoryWitness::new();
        let w = witness(WitnessLocation::Memory(memory.clone()));
        a_landed_write_reported_failed_reuses_its_slot(
            &w,
            || memory.bytes().unwrap(),
            || witness(WitnessLocation::Memory(memory.clone())),
            |p| {
                memory.tear_next_slot_write(RECORD_LEN);
                w.write(p)
            },
        );
    }

    /// The file backend stopped between writing a slot and syncing it (as
    /// a failed `fdatasync` leaves it), and stopped before writing it.
    #[test]
    fn a_file_slot_write_stopped_before_its_sync_reuses_its_slot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.witness");
        let w = witness(WitnessLocation::File(path.clone()));
        a_landed_write_reported_failed_reuses_its_slot(
            &w,
            || std::fs::read(&path).unwrap(),
            || witness(WitnessLocation::File(path.clone())),
            |p| w.write_stopping(p, stop_before(Step::SyncSlot)),
        );
        let before = std::fs::read(&path).unwrap();
        let stopped = w.write_stopping(at(1, 5, 0), stop_before(Step::WriteSlot));
        assert!(
            matches!(stopped, Err(Error::WitnessIo { .. })),
            "{stopped:?}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert_eq!(w.read().unwrap(), Some(at(1, 4, 0)));
    }

    /// A slot write torn by a crash: the file reads the position before it,
    /// and a later write (into the same, torn slot) reads back.
    #[test]
    fn a_torn_slot_write_leaves_the_position_before_it() {
        let memory = MemoryWitness::new();
        let w = witness(WitnessLocation::Memory(memory.clone()));
        w.remake(at(1, 1, 0)).unwrap();
        w.write(at(1, 2, 0)).unwrap();
        for keep in [0, 1, 8, 40, 95] {
            memory.tear_next_slot_write(keep);
            assert!(matches!(w.write(at(1, 3, 0)), Err(Error::WitnessIo { .. })));
            let fresh = witness(WitnessLocation::Memory(memory.clone()));
            assert_eq!(
                fresh.read().unwrap(),
                Some(at(1, 2, 0)),
                "torn after {keep}"
            );
        }
        w.write(at(1, 3, 0)).unwrap();
        assert_eq!(w.read().unwrap(), Some(at(1, 3, 0)));
    }

    /// A slot copied in from an older copy of the file (made by an earlier
    /// open, whose counters ran higher) is not taken over the current
    /// file's slots: the file reads the current position, and with the
    /// current slot damaged too, nothing valid remains.
    #[test]
    fn a_slot_spliced_from_an_older_file_is_not_taken() {
        let memory = MemoryWitness::new();
        let w = witness(WitnessLocation::Memory(memory.clone()));
        w.remake(at(1, 1, 0)).unwrap();
        for generation in 2..=4 {
            w.write(at(1, generation, 0)).unwrap();
        }
        // Slot 1 holds generation 4 at counter 4.
        let older = memory.bytes().unwrap();
        let reopened = witness(WitnessLocation::Memory(memory.clone()));
        reopened.remake(at(1, 9, 0)).unwrap();
        let slot1 = Slot::FIRST.next().unwrap().offset() as usize;
        let mut spliced = memory.bytes().unwrap();
        spliced[slot1..].copy_from_slice(&older[slot1..]);
        memory.set_bytes(Some(spliced.clone()));
        let fresh = || witness(WitnessLocation::Memory(memory.clone()));
        assert_eq!(fresh().read().unwrap(), Some(at(1, 9, 0)));
        let slot0 = Slot::FIRST.offset() as usize;
        spliced[slot0 + 20] ^= 1;
        memory.set_bytes(Some(spliced));
        assert!(matches!(fresh().read(), Err(Error::WitnessCorrupt { .. })));
    }

    /// A write counter that ran out makes the file anew (the careful way)
    /// rather than wrap to a count the older slot beats.
    #[test]
    fn a_spent_counter_makes_the_file_anew() {
        let memory = MemoryWitness::new();
        let w = witness(WitnessLocation::Memory(memory.clone()));
        w.remake(at(1, 1, 0)).unwrap();
        lock(&w.state).slot = Some(Slot::last());
        w.write(at(1, 2, 0)).unwrap();
        assert_eq!(lock(&w.state).slot, Some(Slot::FIRST));
        assert_eq!(w.read().unwrap(), Some(at(1, 2, 0)));
    }

    /// A slot write that cannot open the file at the witness's path (as
    /// when permission is denied, which a test run as root cannot bring
    /// about) fails retryably only if the file there is the one the open
    /// made: another file there, or none, is replaced.
    #[test]
    fn an_open_error_is_replaced_unless_the_file_is_the_one_made() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.witness");
        let w = witness(WitnessLocation::File(path.clone()));
        w.remake(at(1, 1, 0)).unwrap();
        let made = lock(&w.state).made.inode;
        assert!(made.is_some());
        let denied = || std::io::Error::from_raw_os_error(Errno::EACCES as i32);
        let failure = open_failure(&path, made, denied());
        assert!(matches!(failure, Failure::Io(_)), "{failure:?}");
        // A copy has the same bytes and another inode.
        let copy = dir.path().join("copy");
        std::fs::copy(&path, &copy).unwrap();
        std::fs::rename(&copy, &path).unwrap();
        let failure = open_failure(&path, made, denied());
        assert!(
            matches!(failure, Failure::Replaced(OTHER_FILE)),
            "{failure:?}"
        );
        std::fs::remove_file(&path).unwrap();
        let failure = open_failure(&path, made, denied());
        assert!(matches!(failure, Failure::Replaced(GONE)), "{failure:?}");
    }
}
