//! The store handle: the engine-facing [`Store`] trait and the
//! [`EncryptedStore`] that implements it.
//!
//! `open.rs` is the open path, readable on its own: everything
//! [`EncryptedStore::open`], [`EncryptedStore::create`] and
//! [`EncryptedStore::recover`] run before the handle serves (the database,
//! its keyring, its metadata and marker digests (I4), its witness (I5)).
//! `handle.rs` is what the open handle does: reads over a snapshot, write
//! units handed to the writer thread, the witness refresh and shutdown.

mod handle;
mod open;

use std::path::PathBuf;
use std::sync::mpsc::SyncSender;
use std::thread::JoinHandle;

use redb::Database;

use crate::audit::{AuditEntry, AuditHead, AuditReport};
use crate::entry::RecoveryPublicKey;
use crate::error::Error;
use crate::ids::{
    AuditSeq, CommitmentHash, DkgSessionId, KeyEpoch, MetaName, PolicyKey, RecordEpoch, Timestamp,
    WalletId,
};
use crate::manager::KeyChangeAudit;
use crate::ops::{Marker, WriteOp, WriteOutcome};
use crate::plaintext::Plaintext;
use crate::provider::KeyProvider;
use crate::rollback::RollbackPolicy;
use crate::sync::{Arc, Mutex};
use crate::witness::MemoryWitness;
use crate::writer::{Job, Shared};

pub(crate) use open::{entries_of, open_existing, unwrap_keyring};

/// A callback run before each write unit is handed to the writer (tests).
#[cfg(any(test, feature = "test-util"))]
pub type SubmitHook = std::sync::Arc<dyn Fn() + Send + Sync>;

/// The engine's view of the store: typed record operations, synchronous,
/// callable from any thread.
///
/// Writes go through [`Store::write`]: a unit of [`WriteOp`]s that commits
/// durably, all or nothing, before the call returns; or through
/// [`Store::submit`], which hands the unit over and leaves the wait for its
/// outcome to [`PendingWrite::wait`]. Conditional operations
/// (insert-if-absent, compare-and-set) are evaluated inside the committing
/// transaction. Reads run on their own read transaction and never wait for
/// the writer.
///
/// # Errors
/// Every method returns [`Error`]; [`Error::recovery`] says whether a retry
/// can succeed. A record that fails to authenticate is an error, never
/// `None`, and marks its wallet corrupt.
pub trait Store: Send + Sync {
    /// Commits a unit of writes durably (group-committed with concurrent
    /// units). Returns after the commit is durable, or with an error, in
    /// which case nothing of the unit was written. The same as
    /// [`Store::submit`] followed by [`PendingWrite::wait`].
    fn write(&self, ops: Vec<WriteOp>) -> Result<WriteOutcome, Error> {
        self.submit(ops)?.wait()
    }
    /// Hands a unit of writes to the store without waiting for it:
    /// [`PendingWrite::wait`] returns its outcome, as [`Store::write`]
    /// would have.
    ///
    /// # Ordering
    /// Units are applied in the order they were submitted (the writer's
    /// queue is first in, first out, and a group commit applies its units
    /// in that order), whether or not their callers wait: a unit submitted
    /// after another sees that one's writes, or its failure. The signer
    /// relies on it: a wallet's round 2 submits its marker unit under the
    /// wallet's lock and waits without it, and the next round 2's
    /// compare-and-sets expect the ledger as the earlier unit leaves it.
    ///
    /// # Errors
    /// As for [`Store::write`] when the unit could not be handed over;
    /// nothing of it is then written.
    fn submit(&self, ops: Vec<WriteOp>) -> Result<PendingWrite<'_>, Error>;
    /// A wallet's state.
    fn wallet(&self, wallet: &WalletId) -> Result<Option<Plaintext>, Error>;
    /// Every wallet with an epoch record (every wallet ever written).
    fn wallet_ids(&self) -> Result<Vec<WalletId>, Error>;
    /// A wallet's security epoch.
    fn wallet_epoch(&self, wallet: &WalletId) -> Result<Option<RecordEpoch>, Error>;
    /// The key package of (wallet, epoch).
    ///
    /// Key packages are numbered by their own type, not by the store's
    /// record epochs, so the two cannot be swapped:
    ///
    /// ```compile_fail
    /// use thresig_store::{RecordEpoch, Store, WalletId};
    /// fn read(store: &dyn Store, wallet: &WalletId) {
    ///     let _ = store.key_package(wallet, RecordEpoch(1));
    /// }
    /// ```
    fn key_package(&self, wallet: &WalletId, epoch: KeyEpoch) -> Result<Option<Plaintext>, Error>;
    /// Every key package of a wallet, by epoch.
    fn key_packages(&self, wallet: &WalletId) -> Result<Vec<(KeyEpoch, Plaintext)>, Error>;
    /// Every DKG result of a wallet awaiting confirmation.
    fn dkg_results(&self, wallet: &WalletId) -> Result<Vec<(DkgSessionId, Plaintext)>, Error>;
    /// The marker of a commitment.
    fn marker(
        &self,
        wallet: &WalletId,
        commitment: &CommitmentHash,
    ) -> Result<Option<Marker>, Error>;
    /// A policy counter.
    fn policy(&self, wallet: &WalletId, key: &PolicyKey) -> Result<Option<Plaintext>, Error>;
    /// An engine metadata record.
    fn meta(&self, name: &MetaName) -> Result<Option<Plaintext>, Error>;
    /// Up to `limit` audit entries from `from` on (from the first kept
    /// one if `from` was pruned).
    ///
    /// # Errors
    /// [`Error::AuditBroken`] for an entry missing or failing to
    /// authenticate on the way.
    fn audit(&self, from: AuditSeq, limit: usize) -> Result<Vec<AuditEntry>, Error>;
    /// The audit log's head as committed.
    fn audit_head(&self) -> Result<AuditHead, Error>;
    /// Checks every link of the kept audit log in one snapshot.
    ///
    /// # Errors
    /// [`Error::AuditBroken`] naming the first broken link.
    fn audit_verify(&self) -> Result<AuditReport, Error>;
    /// Wallets whose records failed to authenticate since open.
    fn corrupt_wallets(&self) -> Vec<WalletId>;
    /// Retires the data key that sealed records deleted so far (a
    /// refreshed wallet's old key package): every live record is re-sealed
    /// under a new data key and the old ones are retired, so the live
    /// store holds a deleted record under no key it uses. A copy of the
    /// database taken before still holds it with its data key wrapped by
    /// the KEK, and freed database pages may keep its ciphertext until
    /// reused: only destroying the old KEK version closes that. A store
    /// that seals nothing does nothing. Each key change commits with the
    /// audit entry `audit` writes for it at `at`, in its own unit.
    fn retire_deleted(&self, audit: &dyn KeyChangeAudit, at: Timestamp) -> Result<(), Error>;
}

/// A shared store is a store: the signer engine owns its store handle while
/// the key manager and the admin socket hold the same [`EncryptedStore`].
impl<T: Store + ?Sized> Store for std::sync::Arc<T> {
    fn write(&self, ops: Vec<WriteOp>) -> Result<WriteOutcome, Error> {
        (**self).write(ops)
    }
    fn submit(&self, ops: Vec<WriteOp>) -> Result<PendingWrite<'_>, Error> {
        (**self).submit(ops)
    }
    fn wallet(&self, wallet: &WalletId) -> Result<Option<Plaintext>, Error> {
        (**self).wallet(wallet)
    }
    fn wallet_ids(&self) -> Result<Vec<WalletId>, Error> {
        (**self).wallet_ids()
    }
    fn wallet_epoch(&self, wallet: &WalletId) -> Result<Option<RecordEpoch>, Error> {
        (**self).wallet_epoch(wallet)
    }
    fn key_package(&self, wallet: &WalletId, epoch: KeyEpoch) -> Result<Option<Plaintext>, Error> {
        (**self).key_package(wallet, epoch)
    }
    fn key_packages(&self, wallet: &WalletId) -> Result<Vec<(KeyEpoch, Plaintext)>, Error> {
        (**self).key_packages(wallet)
    }
    fn dkg_results(&self, wallet: &WalletId) -> Result<Vec<(DkgSessionId, Plaintext)>, Error> {
        (**self).dkg_results(wallet)
    }
    fn marker(
        &self,
        wallet: &WalletId,
        commitment: &CommitmentHash,
    ) -> Result<Option<Marker>, Error> {
        (**self).marker(wallet, commitment)
    }
    fn policy(&self, wallet: &WalletId, key: &PolicyKey) -> Result<Option<Plaintext>, Error> {
        (**self).policy(wallet, key)
    }
    fn meta(&self, name: &MetaName) -> Result<Option<Plaintext>, Error> {
        (**self).meta(name)
    }
    fn audit(&self, from: AuditSeq, limit: usize) -> Result<Vec<AuditEntry>, Error> {
        (**self).audit(from, limit)
    }
    fn audit_head(&self) -> Result<AuditHead, Error> {
        (**self).audit_head()
    }
    fn audit_verify(&self) -> Result<AuditReport, Error> {
        (**self).audit_verify()
    }
    fn corrupt_wallets(&self) -> Vec<WalletId> {
        (**self).corrupt_wallets()
    }
    fn retire_deleted(&self, audit: &dyn KeyChangeAudit, at: Timestamp) -> Result<(), Error> {
        (**self).retire_deleted(audit, at)
    }
}

/// A write unit handed to the store ([`Store::submit`]) whose outcome is
/// not yet known to its caller.
///
/// Dropping it without waiting loses nothing and breaks nothing: the unit
/// is applied all the same, in its place in the order, and nobody is told
/// its outcome.
#[must_use = "the unit's outcome is known only through `wait`"]
pub struct PendingWrite<'a> {
    answer: Box<dyn FnOnce() -> Result<WriteOutcome, Error> + Send + 'a>,
}

impl<'a> PendingWrite<'a> {
    /// A unit whose outcome `answer` waits for.
    pub fn new(answer: impl FnOnce() -> Result<WriteOutcome, Error> + Send + 'a) -> Self {
        Self {
            answer: Box::new(answer),
        }
    }

    /// Blocks until the unit is durable, or known not to be: its outcome,
    /// as [`Store::write`] returns it.
    ///
    /// # Errors
    /// As for [`Store::write`]: nothing of the unit was written.
    pub fn wait(self) -> Result<WriteOutcome, Error> {
        (self.answer)()
    }
}

impl std::fmt::Debug for PendingWrite<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingWrite").finish_non_exhaustive()
    }
}

/// Where the database lives.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreLocation {
    /// `<dir>/state.redb`, with the witness at `<dir>/state.witness`.
    Directory(PathBuf),
    /// An already opened redb database on any backend (in memory, fault
    /// injecting), with an in-memory witness.
    Database {
        /// The database; empty on first open.
        db: Database,
        /// The witness file, kept in memory.
        witness: MemoryWitness,
    },
}

impl StoreLocation {
    /// A fresh database on redb's in-memory backend.
    ///
    /// # Errors
    /// Storage errors from redb.
    pub fn in_memory() -> Result<Self, Error> {
        let db = Database::builder().create_with_backend(redb::backends::InMemoryBackend::new())?;
        Ok(Self::Database {
            db,
            witness: MemoryWitness::new(),
        })
    }
}

/// Settings of an open store.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StoreOptions {
    /// Capacity of the writer's queue; callers block when it is full.
    pub queue_capacity: usize,
    /// Most units committed in one transaction.
    pub max_batch: usize,
    /// Records re-sealed per transaction during DEK rotation.
    pub reseal_batch: usize,
    /// The offline recovery public key every new DEK is wrapped to.
    pub recovery_key: Option<RecoveryPublicKey>,
    /// What to do with a database older than its witness, or a missing
    /// witness.
    pub rollback: RollbackPolicy,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            // 1,024 queued units is far above the 64 concurrent writers the
            // benchmarks drive, and small enough to bound memory.
            queue_capacity: 1024,
            // One commit per ≤256 units keeps a batch's transaction short
            // while amortizing the fsync.
            max_batch: 256,
            reseal_batch: 256,
            recovery_key: None,
            rollback: RollbackPolicy::Refuse,
        }
    }
}

/// The encrypted store: a redb database of sealed records, its keyring and
/// its writer thread.
pub struct EncryptedStore {
    pub(crate) shared: Arc<Shared>,
    pub(crate) provider: std::sync::Arc<dyn KeyProvider>,
    pub(crate) options: StoreOptions,
    /// Serializes rotations (the key manager and an operator command).
    pub(crate) rotation: Mutex<()>,
    /// Test harness: runs in the caller's thread just before a write unit
    /// is handed to the writer (the latest point before its transaction).
    #[cfg(any(test, feature = "test-util"))]
    submit_hook: Mutex<Option<SubmitHook>>,
    jobs: Mutex<Option<SyncSender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for EncryptedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptedStore")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}
