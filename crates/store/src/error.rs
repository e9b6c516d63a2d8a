/// Whether an operation that failed can succeed if tried again unchanged.
///
/// Every error the store returns says which, so that no caller has to guess
/// (DESIGN.md invariant I6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Recovery {
    /// A retry may succeed: the cause is transient (a provider timeout, a
    /// full disk, a busy lock).
    Retryable,
    /// A retry cannot succeed without an operator acting first (corruption,
    /// rollback, a wrong or lost key, a misconfiguration).
    Terminal,
}

use std::path::PathBuf;

use crate::audit::AuditBreak;
use crate::ids::{AuditSeq, DekTerm, RecordEpoch, WalletId};
use crate::provider::{KekId, ProviderError};
use crate::rollback::AcceptedRollback;
use crate::schema::RecordTable;

/// Everything that can go wrong in the store.
///
/// Every variant answers [`Error::recovery`]: whether the same call can
/// succeed later unchanged (I6). No variant carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The storage layer (redb or the disk below it) failed.
    #[error("storage failure{} ({fault:?}): {source}", in_file(.file.as_deref()))]
    Storage {
        /// What kind of failure, which decides whether a retry can succeed.
        fault: StorageFault,
        /// The underlying error.
        #[source]
        source: Box<redb::Error>,
        /// The file concerned: the database, or the directory a create
        /// could not make. `None` only before the store names it.
        file: Option<PathBuf>,
    },
    /// The key provider failed while the store needed it (open, rotation,
    /// operator commands; never a signing write).
    #[error("key provider failed: {0}")]
    Provider(#[source] ProviderError),
    /// No KEK the provider has unwraps a DEK: the provider is configured
    /// with the wrong key. Nothing was written.
    #[error("DEK {term} does not unwrap under key {kek}: wrong key-encryption key")]
    WrongKek {
        /// The DEK that could not be unwrapped.
        term: DekTerm,
        /// The KEK that was tried.
        kek: KekId,
    },
    /// The provider no longer has any KEK version a DEK is wrapped under
    /// (a destroyed KMS version). Recover with the offline recovery key.
    #[error(
        "DEK {term} is wrapped only under keys the provider no longer has ({}); point [key_provider] \
         at one of them, or recover with the offline recovery key (`thresig keys recover`, docs/keys-runbook.md)",
        listed(keks)
    )]
    KekUnavailable {
        /// The DEK that could not be unwrapped.
        term: DekTerm,
        /// The KEK versions it is wrapped under.
        keks: Vec<KekId>,
    },
    /// A keyring entry failed to authenticate or decode: the open is refused.
    #[error("keyring entry for DEK {term}{} is corrupt", in_file(.file.as_deref()))]
    KeyringCorrupt {
        /// The entry's term.
        term: DekTerm,
        /// The database holding the entry.
        file: Option<PathBuf>,
    },
    /// A store metadata record failed to authenticate or decode, or is
    /// missing: the open is refused.
    #[error("store metadata record {name}{} is corrupt or missing", in_file(.file.as_deref()))]
    MetadataCorrupt {
        /// Which record.
        name: &'static str,
        /// The database holding the record.
        file: Option<PathBuf>,
    },
    /// The database was written by a schema this build does not read.
    #[error(
        "database schema version {found}{} is not supported (this build reads {supported})",
        in_file(.file.as_deref())
    )]
    UnsupportedSchema {
        /// The version in the database.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
        /// The database.
        file: Option<PathBuf>,
    },
    /// A record's ciphertext or header was altered: it does not authenticate.
    #[error(
        "record in {table:?}{} (wallet {wallet:?}) failed to authenticate",
        in_file(.file.as_deref())
    )]
    RecordTampered {
        /// The record's table.
        table: RecordTable,
        /// The wallet the record belongs to, if any; that wallet is marked
        /// corrupt.
        wallet: Option<WalletId>,
        /// The database holding the record.
        file: Option<PathBuf>,
    },
    /// A valid record was copied from another key or table onto this one.
    #[error(
        "record in {table:?}{} (wallet {wallet:?}) was moved from another key",
        in_file(.file.as_deref())
    )]
    RecordMoved {
        /// The table it was found in.
        table: RecordTable,
        /// The wallet the record belongs to, if any; that wallet is marked
        /// corrupt.
        wallet: Option<WalletId>,
        /// The database holding the record.
        file: Option<PathBuf>,
    },
    /// An older ciphertext of a record (from an earlier security epoch) was
    /// put back in place of the current one.
    #[error(
        "record in {table:?}{} (wallet {wallet:?}) is from epoch {found}, expected {expected}",
        in_file(.file.as_deref())
    )]
    RecordStale {
        /// The record's table.
        table: RecordTable,
        /// The wallet the record belongs to, if any.
        wallet: Option<WalletId>,
        /// The epoch the stale ciphertext was sealed under.
        found: RecordEpoch,
        /// The epoch it must carry.
        expected: RecordEpoch,
        /// The database holding the record.
        file: Option<PathBuf>,
    },
    /// A record names a DEK that is not in the in-memory keyring (retired or
    /// never created): invariant I2 was broken or the record was forged.
    #[error(
        "record in {table:?}{} (wallet {wallet:?}) names DEK {term}, which is not in the keyring",
        in_file(.file.as_deref())
    )]
    DekMissing {
        /// The record's table.
        table: RecordTable,
        /// The wallet the record belongs to, if any; that wallet is marked
        /// corrupt.
        wallet: Option<WalletId>,
        /// The DEK it names.
        term: DekTerm,
        /// The database holding the record.
        file: Option<PathBuf>,
    },
    /// A wallet's marker rows do not match the digest the store keeps of
    /// them: a marker row was deleted (or one added) while the store was
    /// closed. Its markers are not used, so no commitment answers a second
    /// package; the wallet is marked corrupt.
    #[error(
        "the markers of wallet {wallet}{} do not match their sealed digest: a marker row was \
         deleted or added outside the store; restore the wallet from a backup or repair its share",
        in_file(.file.as_deref())
    )]
    MarkerSetMismatch {
        /// The wallet.
        wallet: WalletId,
        /// The database holding the markers.
        file: Option<PathBuf>,
    },
    /// The wallet was marked corrupt earlier; writes to it are refused so
    /// that nothing is overwritten before an operator looks.
    #[error("wallet {wallet} is marked corrupt")]
    WalletCorrupt {
        /// The wallet.
        wallet: WalletId,
    },
    /// The database is older than its anti-rollback witness (I5).
    #[error(
        "database {} is older than its witness {} ({accept}; its audit log ends at entry {}, the witness's at entry {}): rollback detected; if the database was restored from a backup on purpose, \
         start once with `rollback = {{ accept_older_database = \"{accept}\" }}` in [store]",
        database.display(),
        witness.display(),
        audit.0,
        audit.1
    )]
    RollbackDetected {
        /// The database file.
        database: PathBuf,
        /// The witness file.
        witness: PathBuf,
        /// The database's and the witness's positions, which are also the
        /// override that accepts exactly this rollback.
        accept: AcceptedRollback,
        /// Where the database's audit log ends, and where it ended when
        /// the witness was written (entries the rollback lost, or a log
        /// that is behind although the rest is not). Boxed: every error
        /// carries this variant's size.
        audit: Box<(AuditSeq, AuditSeq)>,
    },
    /// The database records that its witness was written, but the witness
    /// is gone: a rollback cannot be ruled out (I5). Terminal unless the
    /// operator names this situation in [`RollbackPolicy`](crate::RollbackPolicy).
    #[error(
        "witness {} is missing although database {} has written one, so a rollback cannot be \
         ruled out: put the witness back, or if the database was restored on purpose, start once \
         with `rollback = {{ accept_older_database = \"{accept}\" }}` in [store]",
        witness.display(),
        database.display()
    )]
    WitnessMissing {
        /// The database file.
        database: PathBuf,
        /// The witness file.
        witness: PathBuf,
        /// The override that accepts exactly this situation.
        accept: AcceptedRollback,
    },
    /// The witness file does not authenticate or does not belong to this
    /// database.
    #[error(
        "witness {} is corrupt or belongs to another database: put back the witness this \
         database last wrote, never an older copy and never deleting it to get past this; with \
         no such witness, follow the keys runbook for `witness_corrupt`",
        witness.display()
    )]
    WitnessCorrupt {
        /// The witness file.
        witness: PathBuf,
    },
    /// The witness file exists but cannot be read (permissions, not a
    /// file, a disk error). Terminal: the open cannot check for a rollback
    /// until an operator fixes the file.
    #[error("witness {} cannot be read: {source}; fix the file or its permissions", witness.display())]
    WitnessUnreadable {
        /// The witness file.
        witness: PathBuf,
        /// Why it cannot be read.
        #[source]
        source: std::io::Error,
    },
    /// Writing the witness file failed (retryable: the database is
    /// unaffected and the next write tries again).
    #[error(
        "writing witness {} failed: {source}; check the disk and the file's owner and mode \
         (making it anew, as an open does, also needs free space in its directory), then retry",
        witness.display()
    )]
    WitnessIo {
        /// The witness file.
        witness: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The witness file was removed, or something else put in its place,
    /// while the store was open: what is at its path is not the slotted
    /// file the open made. Terminal: no witnessed write is acknowledged
    /// and no stored marker handed back until the file is put back (or the
    /// signer restarted, whose open then decides).
    #[error(
        "witness {} was removed or replaced while the store was open ({reason}): witnessed \
         writes are not acknowledged, so signing stops; put the file back, or restart the signer \
         (which then reports `witness_missing` and the setting that accepts it)",
        witness.display()
    )]
    WitnessReplaced {
        /// The witness file.
        witness: PathBuf,
        /// What is at its path instead.
        reason: &'static str,
    },
    /// No store exists at this location, and opening never creates one
    /// (only provisioning does, with [`EncryptedStore::create`](crate::EncryptedStore::create)).
    #[error(
        "no store at {}: create one with `thresig init` or `thresig cluster init`",
        database.display()
    )]
    NoStore {
        /// The database file that does not exist (or holds nothing).
        database: PathBuf,
    },
    /// The database is missing or holds nothing while its witness exists:
    /// the store existed and its database was lost or replaced. Terminal;
    /// re-initializing would silently forget every marker and counter.
    #[error(
        "database {} is missing, empty or not a database but its witness {} exists: restore the \
         database from a backup; never re-initialize this store",
        database.display(),
        witness.display()
    )]
    DatabaseMissing {
        /// The database file.
        database: PathBuf,
        /// The witness file that shows a store was here.
        witness: PathBuf,
    },
    /// Creating a store where one already exists.
    #[error("a store already exists at {}; it is never initialized again", database.display())]
    StoreExists {
        /// The existing database file.
        database: PathBuf,
    },
    /// A DEK cannot be retired yet: records still name it.
    #[error("DEK {term} is still named by records; re-seal them first")]
    DekInUse {
        /// The DEK.
        term: DekTerm,
    },
    /// A DEK cannot be retired because a record of a corrupt wallet still
    /// names it (stable code `dek_held_by_corrupt_wallet`). That record
    /// fails to authenticate, so it is never re-sealed (I4: nothing is reset
    /// or overwritten) and a retry would refuse forever; the operator
    /// resolves the wallet first (`docs/keys-runbook.md`).
    #[error(
        "DEK {term} is still named by records of corrupt wallet {wallet}, which cannot be re-sealed"
    )]
    DekHeldByCorruptWallet {
        /// The DEK.
        term: DekTerm,
        /// The corrupt wallet (the first found) whose records name it.
        wallet: WalletId,
    },
    /// A DEK cannot be retired because a tampered record still names it: a
    /// record whose key holds a wallet id no signer could write (stable
    /// code `dek_held_by_tampered_record`). As for a corrupt wallet, the
    /// record is never re-sealed and a retry would refuse forever; `keys
    /// verify` lists it, and the operator removes it or restores the
    /// database (`docs/keys-runbook.md`).
    #[error(
        "DEK {term} is still named by a tampered record in {table:?} whose key names no wallet a signer could write; it cannot be re-sealed"
    )]
    DekHeldByTamperedRecord {
        /// The DEK.
        term: DekTerm,
        /// The table of the tampered record (the first found).
        table: RecordTable,
    },
    /// The current DEK cannot be retired.
    #[error("DEK {term} is current and cannot be retired")]
    DekIsCurrent {
        /// The DEK.
        term: DekTerm,
    },
    /// A KEK cannot be retired: some DEK has no wrap under the new KEK.
    #[error("DEK {term} has no wrap under {kek}; the old key is still needed")]
    KekStillNeeded {
        /// The DEK without a wrap under the new KEK.
        term: DekTerm,
        /// The KEK that should wrap it.
        kek: KekId,
    },
    /// The recovery key does not open a DEK's recovery wrap, or the DEK has
    /// none.
    #[error("recovery key does not open DEK {term}")]
    RecoveryFailed {
        /// The DEK.
        term: DekTerm,
    },
    /// A configuration value is out of range.
    #[error("configuration field {field} is out of range")]
    InvalidConfig {
        /// The field.
        field: &'static str,
    },
    /// The configured recovery public key differs from the one this store
    /// was initialised with (stored, authenticated, at init). Terminal: fix
    /// the configuration (or remove the option: the stored key is used).
    #[error("configured recovery key differs from the one set at init")]
    RecoveryKeyMismatch,
    /// The writer thread has stopped (the store is closing or it panicked).
    #[error("store writer has stopped")]
    WriterStopped,
    /// The audit log's hash chain is broken at `seq` (I1, I5): nothing is
    /// appended after a broken head, so no share is released until an
    /// operator looks (`thresig audit verify` names the same link;
    /// docs/audit.md says what to do).
    #[error(
        "audit log broken at entry {seq}: {problem}; stop signing on this member and compare the log with its last export (docs/audit.md)"
    )]
    AuditBroken {
        /// The first entry that does not check (0: the head record).
        seq: AuditSeq,
        /// What is wrong there.
        problem: AuditBreak,
    },
}

/// The kind of a storage failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageFault {
    /// An I/O error (disk full, a failed write or sync). The failed
    /// transaction changed nothing; retry after reopening the store if the
    /// handle reports [`StorageFault::Latched`].
    Io,
    /// Another process holds the database.
    Busy,
    /// A previous I/O error latched this handle: no further write succeeds
    /// until the store is reopened (which repairs the database).
    Latched,
    /// The database file is corrupt at the storage layer.
    Corrupted,
    /// Anything else redb reports (closed database, unsupported backend).
    Other,
}

impl Error {
    /// Whether a retry can succeed (I6).
    pub fn recovery(&self) -> Recovery {
        match self {
            Self::Storage { fault, .. } => match fault {
                StorageFault::Io | StorageFault::Busy => Recovery::Retryable,
                StorageFault::Latched | StorageFault::Corrupted | StorageFault::Other => {
                    Recovery::Terminal
                }
            },
            Self::Provider(e) => e.recovery(),
            Self::WitnessIo { .. } | Self::DekInUse { .. } => Recovery::Retryable,
            Self::WrongKek { .. }
            | Self::KekUnavailable { .. }
            | Self::KeyringCorrupt { .. }
            | Self::MetadataCorrupt { .. }
            | Self::UnsupportedSchema { .. }
            | Self::RecordTampered { .. }
            | Self::RecordMoved { .. }
            | Self::RecordStale { .. }
            | Self::DekMissing { .. }
            | Self::MarkerSetMismatch { .. }
            | Self::WalletCorrupt { .. }
            | Self::RollbackDetected { .. }
            | Self::WitnessCorrupt { .. }
            | Self::WitnessMissing { .. }
            | Self::WitnessUnreadable { .. }
            | Self::WitnessReplaced { .. }
            | Self::NoStore { .. }
            | Self::DatabaseMissing { .. }
            | Self::StoreExists { .. }
            | Self::DekIsCurrent { .. }
            | Self::DekHeldByCorruptWallet { .. }
            | Self::DekHeldByTamperedRecord { .. }
            | Self::KekStillNeeded { .. }
            | Self::RecoveryFailed { .. }
            | Self::InvalidConfig { .. }
            | Self::RecoveryKeyMismatch
            | Self::AuditBroken { .. }
            | Self::WriterStopped => Recovery::Terminal,
        }
    }

    /// The stable code of this error, printed by operator commands
    /// (`error[witness_missing]`) and listed in `docs/errors.md`. A
    /// provider failure keeps the provider's own code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Storage { .. } => "storage",
            Self::Provider(e) => e.code(),
            Self::WrongKek { .. } => "wrong_kek",
            Self::KekUnavailable { .. } => "kek_unavailable",
            Self::KeyringCorrupt { .. } => "keyring_corrupt",
            Self::MetadataCorrupt { .. } => "metadata_corrupt",
            Self::UnsupportedSchema { .. } => "unsupported_schema",
            Self::RecordTampered { .. } => "record_tampered",
            Self::RecordMoved { .. } => "record_moved",
            Self::RecordStale { .. } => "record_stale",
            Self::MarkerSetMismatch { .. } => "marker_set_mismatch",
            Self::DekMissing { .. } => "dek_missing",
            Self::WalletCorrupt { .. } => "wallet_corrupt",
            Self::RollbackDetected { .. } => "rollback_detected",
            Self::WitnessMissing { .. } => "witness_missing",
            Self::WitnessCorrupt { .. } => "witness_corrupt",
            Self::WitnessUnreadable { .. } => "witness_unreadable",
            Self::WitnessIo { .. } => "witness_io",
            Self::WitnessReplaced { .. } => "witness_replaced",
            Self::NoStore { .. } => "no_store",
            Self::DatabaseMissing { .. } => "database_missing",
            Self::StoreExists { .. } => "store_exists",
            Self::DekInUse { .. } => "dek_in_use",
            Self::DekHeldByCorruptWallet { .. } => "dek_held_by_corrupt_wallet",
            Self::DekHeldByTamperedRecord { .. } => "dek_held_by_tampered_record",
            Self::DekIsCurrent { .. } => "dek_is_current",
            Self::KekStillNeeded { .. } => "kek_still_needed",
            Self::RecoveryFailed { .. } => "recovery_failed",
            Self::InvalidConfig { .. } => "config_invalid",
            Self::RecoveryKeyMismatch => "recovery_key_mismatch",
            Self::WriterStopped => "writer_stopped",
            Self::AuditBroken { .. } => "audit_broken",
        }
    }

    /// The same error, naming `file` if it concerns the database and does
    /// not name a file yet (a failure to create the store's directory
    /// keeps naming the directory).
    pub(crate) fn in_file(mut self, file: &std::path::Path) -> Self {
        match &mut self {
            Self::Storage { file: named, .. }
            | Self::KeyringCorrupt { file: named, .. }
            | Self::MetadataCorrupt { file: named, .. }
            | Self::UnsupportedSchema { file: named, .. }
            | Self::RecordTampered { file: named, .. }
            | Self::RecordMoved { file: named, .. }
            | Self::RecordStale { file: named, .. }
            | Self::DekMissing { file: named, .. }
            | Self::MarkerSetMismatch { file: named, .. } => {
                named.get_or_insert_with(|| file.to_path_buf());
            }
            Self::Provider(_)
            | Self::WrongKek { .. }
            | Self::KekUnavailable { .. }
            | Self::WalletCorrupt { .. }
            | Self::RollbackDetected { .. }
            | Self::WitnessMissing { .. }
            | Self::WitnessCorrupt { .. }
            | Self::WitnessUnreadable { .. }
            | Self::WitnessIo { .. }
            | Self::WitnessReplaced { .. }
            | Self::NoStore { .. }
            | Self::DatabaseMissing { .. }
            | Self::StoreExists { .. }
            | Self::DekInUse { .. }
            | Self::DekHeldByCorruptWallet { .. }
            | Self::DekHeldByTamperedRecord { .. }
            | Self::DekIsCurrent { .. }
            | Self::KekStillNeeded { .. }
            | Self::RecoveryFailed { .. }
            | Self::InvalidConfig { .. }
            | Self::RecoveryKeyMismatch
            | Self::AuditBroken { .. }
            | Self::WriterStopped => {}
        }
        self
    }

    /// A keyring entry that fails to authenticate or decode.
    pub(crate) fn keyring_corrupt(term: DekTerm) -> Self {
        Self::KeyringCorrupt { term, file: None }
    }

    /// A metadata record that fails to authenticate, decode or is missing.
    pub(crate) fn metadata_corrupt(name: &'static str) -> Self {
        Self::MetadataCorrupt { name, file: None }
    }

    /// A record that fails to authenticate.
    pub(crate) fn record_tampered(table: RecordTable, wallet: Option<WalletId>) -> Self {
        Self::RecordTampered {
            table,
            wallet,
            file: None,
        }
    }

    /// A record naming a DEK the keyring does not hold.
    pub(crate) fn dek_missing(table: RecordTable, wallet: Option<WalletId>, term: DekTerm) -> Self {
        Self::DekMissing {
            table,
            wallet,
            term,
            file: None,
        }
    }

    /// A wallet whose marker rows differ from their digest.
    pub(crate) fn marker_set_mismatch(wallet: &WalletId) -> Self {
        Self::MarkerSetMismatch {
            wallet: wallet.clone(),
            file: None,
        }
    }

    /// Whether this error says a wallet's own records are damaged (a record
    /// of the wallet fails to authenticate or names a DEK the keyring lacks,
    /// its marker set differs from its digest, or the wallet is already
    /// marked corrupt), so the wallet is `corrupt` (I4) and listed by
    /// [`Store::corrupt_wallets`](crate::Store::corrupt_wallets). A damaged
    /// record of no wallet (the keyring check, a metadata or audit record)
    /// is not one wallet's damage: [`Error::corrupt_wallet`] is `None` for
    /// it. Any other error says the store cannot read now, not what is
    /// stored.
    pub fn marks_wallet_corrupt(&self) -> bool {
        self.corrupt_wallet().is_some()
    }

    /// The wallet whose damage this error reports, if it reports one's (see
    /// [`Error::marks_wallet_corrupt`]).
    pub fn corrupt_wallet(&self) -> Option<&WalletId> {
        match self {
            Self::RecordTampered { wallet, .. }
            | Self::RecordMoved { wallet, .. }
            | Self::RecordStale { wallet, .. }
            | Self::DekMissing { wallet, .. } => wallet.as_ref(),
            Self::MarkerSetMismatch { wallet, .. } | Self::WalletCorrupt { wallet } => Some(wallet),
            _ => None,
        }
    }

    /// Whether this error means a record failed to authenticate.
    pub(crate) fn is_record_corruption(&self) -> bool {
        matches!(
            self,
            Self::RecordTampered { .. }
                | Self::RecordMoved { .. }
                | Self::RecordStale { .. }
                | Self::DekMissing { .. }
        )
    }
}

impl From<redb::Error> for Error {
    fn from(source: redb::Error) -> Self {
        let fault = match &source {
            redb::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock => {
                StorageFault::Busy
            }
            // redb's "not a redb database": the file's bytes, not the
            // disk, are wrong, so a retry fails the same way.
            redb::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
                StorageFault::Corrupted
            }
            redb::Error::Io(_) => StorageFault::Io,
            redb::Error::DatabaseAlreadyOpen => StorageFault::Busy,
            redb::Error::PreviousIo => StorageFault::Latched,
            redb::Error::Corrupted(_) => StorageFault::Corrupted,
            _ => StorageFault::Other,
        };
        Self::Storage {
            fault,
            source: Box::new(source),
            file: None,
        }
    }
}

/// ` in <file>`, or nothing.
/// KEK ids for a message, comma-separated.
fn listed(keks: &[KekId]) -> String {
    keks.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn in_file(file: Option<&std::path::Path>) -> String {
    file.map(|f| format!(" in {}", f.display()))
        .unwrap_or_default()
}

/// Converts each of redb's error types through [`redb::Error`].
macro_rules! from_redb {
    ($($t:ty),*) => {
        $(impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Self::from(redb::Error::from(e))
            }
        })*
    };
}

from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ProviderError;

    const DOC: &str = include_str!("../../../docs/errors.md");

    /// The class column of `code`'s row in `docs/errors.md`.
    fn documented_class(code: &str) -> Option<&'static str> {
        DOC.lines().find_map(|line| {
            let mut cells = line.split('|').map(str::trim).skip(1);
            let codes = cells.next()?;
            let class = cells.next()?;
            codes
                .split(", ")
                .any(|c| c == format!("`{code}`"))
                .then_some(class)
        })
    }

    #[test]
    fn every_store_code_is_documented_with_its_class() {
        let path = || PathBuf::from("/data/state.witness");
        let accept = AcceptedRollback::OlderThanWitness {
            database_epoch: RecordEpoch(1),
            database_generation: 1,
            witness_epoch: RecordEpoch(2),
            witness_generation: 3,
        };
        let term = DekTerm(1);
        let kek = KekId::new("k".to_owned()).unwrap();
        let wallet = WalletId::new("w").unwrap();
        let io = || std::io::Error::other("x");
        let errors = [
            Error::from(redb::Error::Io(io())),
            Error::from(redb::Error::PreviousIo),
            Error::Provider(ProviderError::Unavailable { reason: "x".into() }),
            Error::Provider(ProviderError::UnknownKek { kek: kek.clone() }),
            Error::Provider(ProviderError::WrongKek { kek: kek.clone() }),
            Error::Provider(ProviderError::Misconfigured { reason: "x".into() }),
            Error::WrongKek {
                term,
                kek: kek.clone(),
            },
            Error::KekUnavailable {
                term,
                keks: vec![kek.clone()],
            },
            Error::keyring_corrupt(term),
            Error::metadata_corrupt("format"),
            Error::UnsupportedSchema {
                found: 9,
                supported: 1,
                file: None,
            },
            Error::record_tampered(RecordTable::Wallets, None),
            Error::RecordMoved {
                table: RecordTable::Wallets,
                wallet: None,
                file: None,
            },
            Error::RecordStale {
                table: RecordTable::Wallets,
                wallet: None,
                found: RecordEpoch(1),
                expected: RecordEpoch(2),
                file: None,
            },
            Error::dek_missing(RecordTable::Wallets, None, term),
            Error::WalletCorrupt {
                wallet: wallet.clone(),
            },
            Error::RollbackDetected {
                database: path(),
                witness: path(),
                accept,
                audit: Box::new((AuditSeq(3), AuditSeq(5))),
            },
            Error::WitnessMissing {
                database: path(),
                witness: path(),
                accept,
            },
            Error::WitnessCorrupt { witness: path() },
            Error::WitnessUnreadable {
                witness: path(),
                source: io(),
            },
            Error::WitnessIo {
                witness: path(),
                source: io(),
            },
            Error::WitnessReplaced {
                witness: path(),
                reason: "it is gone",
            },
            Error::NoStore { database: path() },
            Error::DatabaseMissing {
                database: path(),
                witness: path(),
            },
            Error::StoreExists { database: path() },
            Error::DekInUse { term },
            Error::DekHeldByCorruptWallet { term, wallet },
            Error::DekHeldByTamperedRecord {
                term,
                table: RecordTable::Wallets,
            },
            Error::DekIsCurrent { term },
            Error::KekStillNeeded { term, kek },
            Error::RecoveryFailed { term },
            Error::InvalidConfig { field: "max_batch" },
            Error::RecoveryKeyMismatch,
            Error::WriterStopped,
        ];
        for e in &errors {
            let class = documented_class(e.code())
                .unwrap_or_else(|| panic!("docs/errors.md lacks a row for `{}`", e.code()));
            let expected = match e.recovery() {
                Recovery::Retryable => "retryable",
                Recovery::Terminal => "terminal",
            };
            assert!(
                class.contains(expected),
                "`{}` is {expected}: {class}",
                e.code()
            );
        }
    }

    #[test]
    fn messages_name_their_files() {
        let database = PathBuf::from("/srv/signer/state.redb");
        let e = Error::from(redb::Error::Io(std::io::Error::other("x"))).in_file(&database);
        assert!(e.to_string().contains("/srv/signer/state.redb"), "{e}");
    }
}
