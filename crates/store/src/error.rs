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

use crate::ids::{DekTerm, Epoch, WalletId};
use crate::provider::{KekId, ProviderError};
use crate::schema::RecordTable;

/// Everything that can go wrong in the store.
///
/// Every variant answers [`Error::recovery`]: whether the same call can
/// succeed later unchanged (I6). No variant carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The storage layer (redb or the disk below it) failed.
    #[error("storage failure ({fault:?})")]
    Storage {
        /// What kind of failure, which decides whether a retry can succeed.
        fault: StorageFault,
        /// The underlying error.
        #[source]
        source: Box<redb::Error>,
    },
    /// The key provider failed while the store needed it (open, rotation,
    /// operator commands; never a signing write).
    #[error("key provider failed")]
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
    #[error("DEK {term} is wrapped only under keys the provider no longer has: {keks:?}")]
    KekUnavailable {
        /// The DEK that could not be unwrapped.
        term: DekTerm,
        /// The KEK versions it is wrapped under.
        keks: Vec<KekId>,
    },
    /// A keyring entry failed to authenticate or decode: the open is refused.
    #[error("keyring entry for DEK {term} is corrupt")]
    KeyringCorrupt {
        /// The entry's term.
        term: DekTerm,
    },
    /// A store metadata record failed to authenticate or decode, or is
    /// missing: the open is refused.
    #[error("store metadata record {name} is corrupt or missing")]
    MetadataCorrupt {
        /// Which record.
        name: &'static str,
    },
    /// The database was written by a schema this build does not read.
    #[error("database schema version {found} is not supported (this build reads {supported})")]
    UnsupportedSchema {
        /// The version in the database.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// A record's ciphertext or header was altered: it does not authenticate.
    #[error("record in {table:?} (wallet {wallet:?}) failed to authenticate")]
    RecordTampered {
        /// The record's table.
        table: RecordTable,
        /// The wallet the record belongs to, if any; that wallet is marked
        /// corrupt.
        wallet: Option<WalletId>,
    },
    /// A valid record was copied from another key or table onto this one.
    #[error("record in {table:?} (wallet {wallet:?}) was moved from another key")]
    RecordMoved {
        /// The table it was found in.
        table: RecordTable,
        /// The wallet the record belongs to, if any; that wallet is marked
        /// corrupt.
        wallet: Option<WalletId>,
    },
    /// An older ciphertext of a record (from an earlier security epoch) was
    /// put back in place of the current one.
    #[error("record in {table:?} (wallet {wallet:?}) is from epoch {found}, expected {expected}")]
    RecordStale {
        /// The record's table.
        table: RecordTable,
        /// The wallet the record belongs to, if any.
        wallet: Option<WalletId>,
        /// The epoch the stale ciphertext was sealed under.
        found: Epoch,
        /// The epoch it must carry.
        expected: Epoch,
    },
    /// A record names a DEK that is not in the in-memory keyring (retired or
    /// never created): invariant I2 was broken or the record was forged.
    #[error("record in {table:?} names DEK {term}, which is not in the keyring")]
    DekMissing {
        /// The record's table.
        table: RecordTable,
        /// The DEK it names.
        term: DekTerm,
    },
    /// A wallet's marker rows do not match the digest the store keeps of
    /// them: a marker row was deleted (or one added) while the store was
    /// closed. Its markers are not used, so no commitment answers a second
    /// package; the wallet is marked corrupt.
    #[error(
        "the markers of wallet {wallet} do not match their sealed digest: a marker row was \
         deleted or added outside the store; restore the wallet from a backup or repair its share"
    )]
    MarkerSetMismatch {
        /// The wallet.
        wallet: WalletId,
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
        "database (epoch {db_epoch}, generation {db_generation}) is older than its witness \
         (epoch {witness_epoch}, generation {witness_generation}): rollback detected"
    )]
    RollbackDetected {
        /// Global epoch in the database.
        db_epoch: Epoch,
        /// Commit generation in the database.
        db_generation: u64,
        /// Global epoch in the witness.
        witness_epoch: Epoch,
        /// Commit generation in the witness.
        witness_generation: u64,
    },
    /// The database records that its witness was written, but the witness
    /// is gone: a rollback cannot be ruled out (I5). Terminal unless the
    /// operator opens with `RollbackPolicy::AcceptOlderDatabase`.
    #[error("anti-rollback witness is missing although this database has written one")]
    WitnessMissing,
    /// The witness file does not authenticate or does not belong to this
    /// database.
    #[error("anti-rollback witness is corrupt or belongs to another database")]
    WitnessCorrupt,
    /// Writing the witness file failed.
    #[error("writing the anti-rollback witness failed")]
    WitnessIo(#[source] std::io::Error),
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
            Self::WitnessIo(_) | Self::DekInUse { .. } => Recovery::Retryable,
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
            | Self::WitnessCorrupt
            | Self::WitnessMissing
            | Self::DekIsCurrent { .. }
            | Self::DekHeldByCorruptWallet { .. }
            | Self::KekStillNeeded { .. }
            | Self::RecoveryFailed { .. }
            | Self::InvalidConfig { .. }
            | Self::RecoveryKeyMismatch
            | Self::WriterStopped => Recovery::Terminal,
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
            redb::Error::Io(_) => StorageFault::Io,
            redb::Error::DatabaseAlreadyOpen => StorageFault::Busy,
            redb::Error::PreviousIo => StorageFault::Latched,
            redb::Error::Corrupted(_) => StorageFault::Corrupted,
            _ => StorageFault::Other,
        };
        Self::Storage {
            fault,
            source: Box::new(source),
        }
    }
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
