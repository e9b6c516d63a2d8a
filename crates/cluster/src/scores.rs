//! The coordinator's per-member scores and quarantine (docs/quarantine.md),
//! in a file of its own beside the member's store.
//!
//! A coordinating process (`thresig sign`, `sweep`, `load`) reads which
//! members are quarantined before a run and records what the run saw of
//! each member after it, in one write transaction (committed only if a
//! score changed). The file is not the
//! signer's encrypted store, which `thresig serve` holds open: scores are
//! the coordinator's view of its peers, public and rebuilt by use, so they
//! need no sealing. It is opened in redb's multi-writer mode, so two
//! coordinators of the same member at once each make their own run's
//! update in turn (redb serializes write transactions across processes)
//! and readers (`thresig status`, `thresig quarantine show`) never block
//! them.
//!
//! # Invariants
//! - A file that does not open or a record that does not decode is
//!   [`ScoreError::Corrupt`], never taken for an empty one: nothing resets a
//!   member's score but an operator moving the file aside.
//! - Each run's update is one write transaction: it reads the current
//!   scores inside it, so concurrent runs never lose each other's updates.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use redb::{ConcurrencyMode, Database, ReadableDatabase as _, TableDefinition};
use thresig_crypto::Seat;
use thresig_store::Recovery;

use crate::config::Config;

pub use thresig_roast::quarantine::{Fault, Policy, Score};

/// The score file's name in the member's `data_dir`.
pub const SCORES_FILE: &str = "coordinator-scores.redb";

/// How long opening the file or starting an update waits for another
/// process's write: a run's own write takes milliseconds, so a writer
/// holding on longer has stopped (a stopped `thresig sign`, a tool), and
/// waiting for it would hang a coordinator, or hold back the output of a
/// signature it already has, for the sake of its scores.
const PATIENCE: Duration = Duration::from_secs(2);

/// How often an update retries the write lock within [`PATIENCE`].
const RETRY: Duration = Duration::from_millis(10);

/// Member (cluster seat) → encoded [`Score`].
const SCORES: TableDefinition<u16, &[u8]> = TableDefinition::new("member_scores");

/// Where the member of `config` keeps its coordinator's scores.
#[must_use]
pub fn scores_path(config: &Config) -> PathBuf {
    config.data_dir.join(SCORES_FILE)
}

/// Why the score file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScoreError {
    /// The file is not a score file this build reads, fails redb's integrity
    /// check, or holds a record that does not decode.
    #[error(
        "the coordinator's score file {} is damaged ({detail}); move it aside \
         (`mv {0} {0}.damaged`, keep it for investigation) and run the command again: a new file \
         starts every member's score afresh",
        file.display()
    )]
    Corrupt {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// Reading or writing the file failed (permissions, disk full, I/O).
    #[error(
        "the coordinator's score file {} cannot be used: {source}; check the disk and the \
         file's permissions, then run the command again",
        file.display()
    )]
    Io {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Another process holds the file in a mode that excludes this one (an
    /// older `thresig`, or a tool opening it exclusively), or holds its
    /// write lock longer than a run waits for it.
    #[error(
        "the coordinator's score file {} is held by another process (one that does not share \
         it, or a writer that has not finished); run the command again once that process ends",
        file.display()
    )]
    Busy {
        /// The file.
        file: PathBuf,
    },
    /// A member named by the operator is not in the cluster's roster.
    #[error(
        "member {seat} is not in this member's roster (its members: {members}); pass one of them to --member"
    )]
    UnknownSeat {
        /// The seat asked for.
        seat: u16,
        /// The roster's seats, comma-separated.
        members: String,
    },
}

impl ScoreError {
    /// The stable code (docs/errors.md).
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Corrupt { .. } => "score_store_corrupt",
            Self::Io { .. } => "score_store_io",
            Self::Busy { .. } => "score_store_busy",
            Self::UnknownSeat { .. } => "unknown_seat",
        }
    }

    /// Whether the same command can succeed when run again.
    #[must_use]
    pub fn recovery(&self) -> Recovery {
        match self {
            Self::Io { .. } | Self::Busy { .. } => Recovery::Retryable,
            Self::Corrupt { .. } | Self::UnknownSeat { .. } => Recovery::Terminal,
        }
    }

    pub(crate) fn from_redb(file: &Path, error: impl Into<redb::Error>) -> Self {
        let file = file.to_path_buf();
        match error.into() {
            // redb reports a file that is not one of its databases (a
            // wrong magic number, a short header) as invalid data.
            redb::Error::Io(source) if source.kind() == std::io::ErrorKind::InvalidData => {
                Self::Corrupt {
                    file,
                    detail: source.to_string(),
                }
            }
            redb::Error::Io(source) => Self::Io { file, source },
            redb::Error::DatabaseAlreadyOpen
            | redb::Error::LockProtocolMismatch
            | redb::Error::WouldBlock
            | redb::Error::TransactionInProgress => Self::Busy { file },
            // What the file holds: only these call for moving it aside.
            damage @ (redb::Error::Corrupted(_)
            | redb::Error::UpgradeRequired(_)
            | redb::Error::TableTypeMismatch { .. }
            | redb::Error::TableIsMultimap(_)
            | redb::Error::TableIsNotMultimap(_)
            | redb::Error::TypeDefinitionChanged { .. }) => Self::Corrupt {
                file,
                detail: damage.to_string(),
            },
            // An earlier failed write (`PreviousIo`, after a full disk), a
            // poisoned lock, a backend failure: the process, not the file.
            other => Self::Io {
                file,
                source: std::io::Error::other(other.to_string()),
            },
        }
    }
}

/// Opens the score file at `file`, or creates it if there is none.
///
/// redb initialises an empty file as a new database; an empty file here is
/// a truncated or half-copied score file, so only a file that does not exist
/// is created, and it appears whole: initialised under a name of its own,
/// then linked into place, which fails if another process linked its own
/// first (that one is then opened).
fn open_or_create(file: &Path) -> Result<Database, ScoreError> {
    let error = |e: redb::DatabaseError| ScoreError::from_redb(file, e);
    match builder().open(file) {
        Err(redb::DatabaseError::Storage(redb::StorageError::Io(e)))
            if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(redb::DatabaseError::Storage(redb::StorageError::Io(e)))
            if e.kind() == std::io::ErrorKind::UnexpectedEof =>
        {
            return Err(ScoreError::Corrupt {
                file: file.to_path_buf(),
                detail: format!("shorter than a score file's header: {e}"),
            });
        }
        opened => return opened.map_err(error),
    }
    let io = |source| ScoreError::Io {
        file: file.to_path_buf(),
        source,
    };
    // A name no other creator uses, in this process or another.
    static CREATES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nth = CREATES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let fresh = file.with_extension(format!("redb.new-{}-{nth}", std::process::id()));
    drop(builder().create(&fresh).map_err(error)?);
    let linked = std::fs::hard_link(&fresh, file);
    // The fresh name goes either way: linked, the file lives on under its
    // own name; not, it is someone else's to open.
    let _ = std::fs::remove_file(&fresh);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(e)),
    }
    builder().open(file).map_err(error)
}

/// Every member's score, by cluster seat.
pub type Scores = BTreeMap<Seat, Score>;

/// The open score file.
pub struct ScoreStore {
    db: Database,
    file: PathBuf,
}

impl std::fmt::Debug for ScoreStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScoreStore")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

fn builder() -> redb::Builder {
    let mut builder = Database::builder();
    builder
        .set_concurrency_mode(ConcurrencyMode::MultiWriter)
        // The file is a few hundred bytes: checking every page at open
        // costs nothing and catches a damaged file before it is trusted.
        .set_check_integrity_on_open(true);
    builder
}

impl ScoreStore {
    /// Opens the score file at `file`, creating it (with no scores) if
    /// there is none.
    ///
    /// The open checks the file's integrity, which takes its write lock:
    /// it waits for another process's write for [`PATIENCE`] at most. The
    /// open runs on a thread of its own, left behind if it takes longer
    /// (it ends with that write, or with the process).
    ///
    /// # Errors
    /// [`ScoreError`]; a file that exists but is not a score file is
    /// [`ScoreError::Corrupt`], never replaced; a write lock held longer
    /// than [`PATIENCE`] is [`ScoreError::Busy`].
    pub fn open(file: &Path) -> Result<Self, ScoreError> {
        let (opened, open) = std::sync::mpsc::sync_channel(1);
        let owned = file.to_path_buf();
        std::thread::Builder::new()
            .name("score-file-open".to_owned())
            .spawn(move || {
                let db = open_or_create(&owned);
                // The caller may have given up waiting: the file is then
                // closed again.
                let _ = opened.send(db.map(|db| Self { db, file: owned }));
            })
            .map_err(|source| ScoreError::Io {
                file: file.to_path_buf(),
                source,
            })?;
        open.recv_timeout(PATIENCE).map_err(|_| ScoreError::Busy {
            file: file.to_path_buf(),
        })?
    }

    /// The scores in the file at `file`; none if there is no file
    /// yet (no run recorded any).
    ///
    /// # Errors
    /// As [`ScoreStore::open`], and [`ScoreError::Corrupt`] for a record
    /// that does not decode.
    pub fn read_file(file: &Path) -> Result<Scores, ScoreError> {
        match std::fs::symlink_metadata(file) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Scores::new()),
            Err(source) => {
                return Err(ScoreError::Io {
                    file: file.to_path_buf(),
                    source,
                });
            }
            Ok(_) => {}
        }
        Self::open(file)?.read()
    }

    /// Every member's score.
    ///
    /// # Errors
    /// [`ScoreError`].
    pub fn read(&self) -> Result<Scores, ScoreError> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| ScoreError::from_redb(&self.file, e))?;
        let table = match txn.open_table(SCORES) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Scores::new()),
            Err(e) => return Err(ScoreError::from_redb(&self.file, e)),
        };
        self.decode_all(&table)
    }

    /// Changes the scores with `change` in one write transaction, which
    /// reads them afresh, and returns what `change` returned. The
    /// transaction commits only if a score changed: a commit is a sync of
    /// the file, and most runs of a healthy cluster change nothing
    /// ([`Score::record_good`]).
    ///
    /// # Errors
    /// [`ScoreError`]; nothing is written then.
    pub fn update<R>(&self, change: impl FnOnce(&mut Scores) -> R) -> Result<R, ScoreError> {
        let redb = |e: redb::Error| ScoreError::from_redb(&self.file, e);
        let txn = self.begin_write()?;
        let (result, changed) = {
            let mut table = txn.open_table(SCORES).map_err(|e| redb(e.into()))?;
            let before = self.decode_all(&table)?;
            let mut scores = before.clone();
            let result = change(&mut scores);
            let mut changed = false;
            for (seat, score) in &scores {
                if before.get(seat) != Some(score) {
                    table
                        .insert(seat.get(), score.to_bytes().as_slice())
                        .map_err(|e| redb(e.into()))?;
                    changed = true;
                }
            }
            (result, changed)
        };
        if changed {
            txn.commit().map_err(|e| redb(e.into()))?;
        } else {
            txn.abort().map_err(|e| redb(e.into()))?;
        }
        Ok(result)
    }

    /// A write transaction, waiting for another process's for
    /// [`PATIENCE`] at most.
    fn begin_write(&self) -> Result<redb::WriteTransaction, ScoreError> {
        let give_up = Instant::now() + PATIENCE;
        loop {
            match self.db.try_begin_write() {
                Err(redb::TransactionError::WouldBlock) if Instant::now() < give_up => {
                    std::thread::sleep(RETRY);
                }
                result => return result.map_err(|e| ScoreError::from_redb(&self.file, e)),
            }
        }
    }

    fn decode_all(
        &self,
        table: &impl redb::ReadableTable<u16, &'static [u8]>,
    ) -> Result<Scores, ScoreError> {
        let mut scores = Scores::new();
        let rows = table
            .iter()
            .map_err(|e| ScoreError::from_redb(&self.file, e))?;
        for row in rows {
            let (seat, bytes) = row.map_err(|e| ScoreError::from_redb(&self.file, e))?;
            let seat = seat.value();
            let corrupt = |detail: String| ScoreError::Corrupt {
                file: self.file.clone(),
                detail,
            };
            let member = Seat::try_from(seat)
                .map_err(|_| corrupt(format!("a record names member {seat}")))?;
            let score = Score::from_bytes(bytes.value())
                .ok_or_else(|| corrupt(format!("member {seat}'s record does not decode")))?;
            scores.insert(member, score);
        }
        Ok(scores)
    }
}

/// The members quarantined at `now`.
#[must_use]
pub fn quarantined(scores: &Scores, now: SystemTime, policy: &Policy) -> BTreeSet<Seat> {
    scores
        .iter()
        .filter(|(_, score)| score.is_quarantined(now, policy))
        .map(|(seat, _)| *seat)
        .collect()
}

/// What one signing run saw of each member (cluster seats), for its score.
///
/// A member counts each kind of fault at most once per run: a request
/// that failed to connect and then timed out is one timeout, and a run is
/// the unit a member's score moves by. A member whose shares made the
/// signature, without a fault, had a good run: answering round 1 alone
/// proves little, since a member that stalls in round 2 answers it too. A
/// member that was never asked (quarantined and not needed), whose answer
/// was still on its way when the run finished, or that answered but was
/// not needed in a session, is left as it was.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Observed {
    /// Members sent at least one request.
    pub asked: BTreeSet<Seat>,
    /// Members whose shares made the signature (none for a failed run).
    pub signed: BTreeSet<Seat>,
    /// The faults of each member.
    pub faults: BTreeMap<Seat, BTreeSet<Fault>>,
}

impl Observed {
    /// Notes a fault of `member`. A timeout and a slow answer in one run
    /// are one wait, scored once (as the timeout).
    pub fn fault(&mut self, member: Seat, fault: Fault) {
        let faults = self.faults.entry(member).or_default();
        if fault == Fault::Timeout {
            faults.remove(&Fault::Slow);
        } else if fault == Fault::Slow && faults.contains(&Fault::Timeout) {
            return;
        }
        faults.insert(fault);
    }

    /// Applies the run to `scores` at `now`, and returns the members this
    /// run quarantined.
    pub fn apply(&self, scores: &mut Scores, now: SystemTime, policy: &Policy) -> Vec<Seat> {
        let mut quarantined = Vec::new();
        for member in &self.asked {
            let score = scores.entry(*member).or_default();
            match self.faults.get(member) {
                Some(faults) => {
                    let mut now_quarantined = false;
                    for fault in faults {
                        now_quarantined |= score.record_fault(now, *fault, policy);
                    }
                    if now_quarantined {
                        quarantined.push(*member);
                    }
                }
                None if self.signed.contains(member) => score.record_good(policy),
                None => {}
            }
        }
        quarantined
    }
}

/// Ends `member`'s quarantine at `now` in the file at `file` (the
/// operator's `thresig quarantine release`), and returns its score after.
///
/// # Errors
/// [`ScoreError::UnknownSeat`] for a member outside `roster`; otherwise as
/// [`ScoreStore::update`].
pub fn release(
    file: &Path,
    roster: &[Seat],
    member: u16,
    now: SystemTime,
    policy: &Policy,
) -> Result<Score, ScoreError> {
    let seat = Seat::try_from(member)
        .ok()
        .filter(|seat| roster.contains(seat))
        .ok_or_else(|| ScoreError::UnknownSeat {
            seat: member,
            members: roster
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    ScoreStore::open(file)?.update(|scores| {
        let score = scores.entry(seat).or_default();
        score.release(now, policy);
        score.clone()
    })
}

#[cfg(test)]
mod tests;
