//! The store handle: opening (and creating) the database and keyring, the
//! engine-facing [`Store`] trait, and reads.

use std::path::PathBuf;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

use rand_core::{OsRng, RngCore};
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, TableError};
use zeroize::Zeroizing;

use crate::entry::{DekState, RecoveryPublicKey, StoredEntry};
use crate::error::Error;
use crate::ids::{
    AuditSeq, CommitmentHash, DekTerm, DkgSessionId, MetaName, PolicyKey, RecordEpoch, WalletId,
};
use crate::keyring::Keyring;
use crate::marker_set::{CheckedMarkerSets, MarkerDigest};
use crate::ops::{Marker, WriteOp, WriteOutcome};
use crate::plaintext::Plaintext;
use crate::provider::{KekId, KeyProvider};
use crate::records::{Raw, Records, WriteCtx, decode_u64, keyring_digest};
use crate::rollback::{self, AcceptedRollback, RollbackPolicy, Verdict};
use crate::schema::{
    self, DEK_INDEX, FORMAT, KEYRING, MARKER_EXPIRY, RecordTable, SCHEMA_VERSION, sys,
};
use crate::seal::Dek;
use crate::sync::{Arc, Mutex, lock};
use crate::witness::{MemoryWitness, Position, Witness, WitnessLocation};
use crate::writer::{self, AdminOp, Job, Shared, WriterStats};

/// A callback run before each write unit is handed to the writer (tests).
#[cfg(any(test, feature = "test-util"))]
pub type SubmitHook = std::sync::Arc<dyn Fn() + Send + Sync>;

/// The engine's view of the store: typed record operations, synchronous,
/// callable from any thread.
///
/// Writes go through [`Store::write`]: a unit of [`WriteOp`]s that commits
/// durably, all or nothing, before the call returns. Conditional operations
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
    /// which case nothing of the unit was written.
    fn write(&self, ops: Vec<WriteOp>) -> Result<WriteOutcome, Error>;
    /// A wallet's state.
    fn wallet(&self, wallet: &WalletId) -> Result<Option<Plaintext>, Error>;
    /// Every wallet with an epoch record (every wallet ever written).
    fn wallet_ids(&self) -> Result<Vec<WalletId>, Error>;
    /// A wallet's security epoch.
    fn wallet_epoch(&self, wallet: &WalletId) -> Result<Option<RecordEpoch>, Error>;
    /// The key package of (wallet, epoch).
    fn key_package(
        &self,
        wallet: &WalletId,
        epoch: RecordEpoch,
    ) -> Result<Option<Plaintext>, Error>;
    /// Every key package of a wallet, by epoch.
    fn key_packages(&self, wallet: &WalletId) -> Result<Vec<(RecordEpoch, Plaintext)>, Error>;
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
    /// Up to `limit` audit entries from `from` on.
    fn audit(&self, from: AuditSeq, limit: usize) -> Result<Vec<(AuditSeq, Plaintext)>, Error>;
    /// Wallets whose records failed to authenticate since open.
    fn corrupt_wallets(&self) -> Vec<WalletId>;
}

/// A shared store is a store: the signer engine owns its store handle while
/// the key manager and the admin socket hold the same [`EncryptedStore`].
impl<T: Store + ?Sized> Store for std::sync::Arc<T> {
    fn write(&self, ops: Vec<WriteOp>) -> Result<WriteOutcome, Error> {
        (**self).write(ops)
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
    fn key_package(
        &self,
        wallet: &WalletId,
        epoch: RecordEpoch,
    ) -> Result<Option<Plaintext>, Error> {
        (**self).key_package(wallet, epoch)
    }
    fn key_packages(&self, wallet: &WalletId) -> Result<Vec<(RecordEpoch, Plaintext)>, Error> {
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
    fn audit(&self, from: AuditSeq, limit: usize) -> Result<Vec<(AuditSeq, Plaintext)>, Error> {
        (**self).audit(from, limit)
    }
    fn corrupt_wallets(&self) -> Vec<WalletId> {
        (**self).corrupt_wallets()
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
        /// The witness slot.
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

impl EncryptedStore {
    /// Opens an existing store. Never creates one: a location without a
    /// store is refused, and so is one whose database is missing or empty
    /// beside an existing witness (only [`EncryptedStore::create`], run by
    /// provisioning, makes a store).
    ///
    /// The provider unwraps every non-retired DEK. This is the only time
    /// the hot path's process needs the provider (I3).
    ///
    /// # Errors
    /// [`Error::NoStore`], [`Error::DatabaseMissing`], [`Error::WrongKek`],
    /// [`Error::KekUnavailable`], [`Error::Provider`] (retryable),
    /// [`Error::KeyringCorrupt`], [`Error::MetadataCorrupt`],
    /// [`Error::UnsupportedSchema`], [`Error::RollbackDetected`],
    /// [`Error::WitnessMissing`], [`Error::WitnessCorrupt`],
    /// [`Error::WitnessUnreadable`], storage errors.
    pub fn open(
        location: StoreLocation,
        provider: std::sync::Arc<dyn KeyProvider>,
        options: StoreOptions,
    ) -> Result<Self, Error> {
        let (db, files) = open_existing(location)?;
        Self::open_on(db, files, provider, options, |db, keyring, provider| {
            check_schema(db)?;
            unwrap_keyring(
                db,
                keyring,
                |e, preferred| e.unwrap_with(provider, preferred),
                provider.current_kek_id().ok().as_ref(),
            )
        })
    }

    /// Creates a new store: the database, its keyring (the provider wraps
    /// the first DEK under its current KEK) and its metadata, in one
    /// transaction. Only provisioning (`thresig init`, `thresig cluster
    /// init`) calls this; every other path opens with
    /// [`EncryptedStore::open`].
    ///
    /// # Errors
    /// [`Error::StoreExists`] when the database holds anything,
    /// [`Error::DatabaseMissing`] when a witness shows a store was here,
    /// provider and storage errors.
    pub fn create(
        location: StoreLocation,
        provider: std::sync::Arc<dyn KeyProvider>,
        options: StoreOptions,
    ) -> Result<Self, Error> {
        let (db, files) = create_db(location)?;
        let initial = options.clone();
        Self::open_on(db, files, provider, options, |db, keyring, provider| {
            initialize(db, keyring, provider, &initial)
        })
    }

    /// Fills the keyring with `load` (unwrapping the stored DEKs, or
    /// creating the first one), checks the metadata and the witness, and
    /// starts the writer. Every error names the database.
    pub(crate) fn open_on(
        db: Database,
        files: StoreFiles,
        provider: std::sync::Arc<dyn KeyProvider>,
        options: StoreOptions,
        load: impl FnOnce(&Database, &Keyring, &dyn KeyProvider) -> Result<(), Error>,
    ) -> Result<Self, Error> {
        let database = files.database.clone();
        let keyring = Keyring::default();
        let opened = load(&db, &keyring, provider.as_ref())
            .and_then(|()| open_shared(db, keyring, files, options.rollback))
            .and_then(|shared| Ok((with_stored_recovery_key(&shared, options)?, shared)));
        let (options, shared) = opened.map_err(|e| e.in_file(&database))?;
        Ok(Self::start(shared, provider, options))
    }

    pub(crate) fn start(
        shared: Arc<Shared>,
        provider: std::sync::Arc<dyn KeyProvider>,
        options: StoreOptions,
    ) -> Self {
        let (tx, rx) = sync_channel(options.queue_capacity.max(1));
        let writer_shared = shared.clone();
        let max_batch = options.max_batch.max(1);
        let thread = std::thread::Builder::new()
            .name("thresig-store-writer".to_owned())
            .spawn(move || writer::run(&writer_shared, &rx, max_batch))
            .ok();
        Self {
            shared,
            provider,
            options,
            rotation: Mutex::new(()),
            #[cfg(any(test, feature = "test-util"))]
            submit_hook: Mutex::new(None),
            jobs: Mutex::new(thread.as_ref().map(|_| tx)),
            thread: Mutex::new(thread),
        }
    }

    fn sender(&self) -> Result<SyncSender<Job>, Error> {
        lock(&self.jobs).clone().ok_or(Error::WriterStopped)
    }

    /// Runs a keyring change on the writer.
    pub(crate) fn admin(&self, op: AdminOp) -> Result<usize, Error> {
        let (reply, answer) = sync_channel(1);
        self.sender()?
            .send(Job::Admin { op, reply })
            .map_err(|_| Error::WriterStopped)?;
        let result = answer.recv().map_err(|_| Error::WriterStopped)?;
        result.map_err(|e| self.shared.named(e))
    }

    /// Runs `f` over a fresh read transaction. Never waits for the writer.
    fn read_txn<T>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<T, Error>,
    ) -> Result<T, Error> {
        // Register before the snapshot begins, so a DEK retired after this
        // point stays in memory until the snapshot is gone.
        let _token = self.shared.keyring.enter_reader();
        let txn = self.shared.db.begin_read();
        txn.map_err(Error::from)
            .and_then(|txn| f(&txn))
            .map_err(|e| self.shared.named(e))
    }

    /// Runs `f` over a fresh read snapshot. Never waits for the writer.
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Records<'_, ReadTransaction>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let result = self.read_txn(|txn| f(&Records::new(txn, &self.shared.keyring.view())));
        if let Err(e) = &result {
            self.shared.note_corruption(e);
        }
        result
    }

    /// Every keyring entry, as stored.
    pub(crate) fn entries(&self) -> Result<Vec<StoredEntry>, Error> {
        self.read_txn(|txn| entries_of(&txn.open_table(KEYRING)?))
    }

    /// How many records name DEK `term` (one range read on the index).
    pub(crate) fn records_under(&self, term: DekTerm) -> Result<u64, Error> {
        self.read_txn(|txn| {
            let index = txn.open_table(DEK_INDEX)?;
            let start = term.0.to_be_bytes();
            let end = term.0.saturating_add(1).to_be_bytes();
            Ok(index
                .range::<&[u8]>(start.as_slice()..end.as_slice())?
                .count() as u64)
        })
    }

    /// A wallet known to be corrupt that still has a record under DEK
    /// `term` (one range read on the index): such a record is never
    /// re-sealed, so `term` cannot be retired until an operator acts.
    pub(crate) fn corrupt_wallet_under(&self, term: DekTerm) -> Result<Option<WalletId>, Error> {
        let corrupt = lock(&self.shared.corrupt).clone();
        if corrupt.is_empty() {
            return Ok(None);
        }
        self.read_txn(|txn| {
            let index = txn.open_table(DEK_INDEX)?;
            let start = term.0.to_be_bytes();
            let end = term.0.saturating_add(1).to_be_bytes();
            for item in index.range::<&[u8]>(start.as_slice()..end.as_slice())? {
                let (k, _) = item?;
                let wallet = schema::parse_index_key(k.value())
                    .filter(|(_, table, _)| table.wallet_scoped())
                    .and_then(|(_, _, key)| schema::wallet_of(&key));
                if let Some(w) = wallet.filter(|w| corrupt.contains(w)) {
                    return Ok(Some(w));
                }
            }
            Ok(None)
        })
    }

    /// Installs a callback that runs in the caller's thread just before
    /// each write unit is handed to the writer. Race tests use it to run a
    /// whole rotation at that point, the worst moment for anything chosen
    /// before the transaction (I1).
    #[cfg(any(test, feature = "test-util"))]
    pub fn set_submit_hook(&self, hook: SubmitHook) {
        *lock(&self.submit_hook) = Some(hook);
    }

    /// Every record of `wallet` in `table`, keyed by what follows the
    /// wallet prefix in the record key (decoded by `suffix`).
    fn wallet_records<K>(
        &self,
        table: RecordTable,
        wallet: &WalletId,
        suffix: impl Fn(&[u8]) -> Option<K>,
    ) -> Result<Vec<(K, Plaintext)>, Error> {
        let prefix = schema::wallet_prefix(wallet);
        self.read(|r| {
            Ok(r.get_prefix(table, &prefix)?
                .into_iter()
                .filter_map(|(k, v)| Some((suffix(k.get(prefix.len()..)?)?, v)))
                .collect())
        })
    }

    /// Writer counters.
    pub fn writer_stats(&self) -> WriterStats {
        *lock(&self.shared.stats)
    }

    /// The position the witness should record now.
    pub(crate) fn position(&self) -> Result<Position, Error> {
        self.read(|r| {
            Ok(Position {
                epoch: r.global_epoch()?,
                generation: r.generation()?,
            })
        })
    }

    /// Rewrites the witness to the database's current position (the key
    /// manager does this on every tick).
    ///
    /// # Errors
    /// [`Error::WitnessIo`] and read errors.
    pub fn refresh_witness(&self) -> Result<(), Error> {
        self.shared.write_witness(self.position()?)
    }

    /// Stops the writer after the queued jobs and closes the database
    /// handle's writer side. Reads keep working until the store is dropped.
    pub fn shutdown(&self) {
        lock(&self.jobs).take();
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for EncryptedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptedStore")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Drop for EncryptedStore {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The database's file name in a store directory.
const DATABASE_FILE: &str = "state.redb";
/// The witness's file name in a store directory.
const WITNESS_FILE: &str = "state.witness";

/// Where a store's database and witness are, for the open's checks and
/// its error messages.
pub(crate) struct StoreFiles {
    /// The database's path (a placeholder for a database in memory).
    database: PathBuf,
    /// The witness.
    witness: WitnessLocation,
}

/// The files of `location`: the database's path (a placeholder for a
/// database in memory) and the witness.
fn files(location: StoreLocation) -> (PathBuf, Option<Database>, WitnessLocation) {
    match location {
        StoreLocation::Directory(dir) => (
            dir.join(DATABASE_FILE),
            None,
            WitnessLocation::File(dir.join(WITNESS_FILE)),
        ),
        StoreLocation::Database { db, witness } => (
            PathBuf::from("(database in memory)"),
            Some(db),
            WitnessLocation::Memory(witness),
        ),
    }
}

/// Refuses a database of another schema, or one with rows but no format
/// row.
fn check_schema(db: &Database) -> Result<(), Error> {
    match schema_version(db)? {
        Some(SCHEMA_VERSION) => Ok(()),
        Some(found) => Err(Error::UnsupportedSchema {
            found,
            supported: SCHEMA_VERSION,
            file: None,
        }),
        // I4: a database with rows but no format row is partial state,
        // refused before anything is written, so it is never reset.
        None => Err(Error::metadata_corrupt("format")),
    }
}

/// Whether a file holds any bytes (`false` when it does not exist).
fn has_bytes(path: &std::path::Path) -> Result<bool, Error> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(m.len() > 0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::from(redb::Error::Io(e)).in_file(path)),
    }
}

/// The refusal of a location whose database is missing or holds nothing:
/// with a witness beside it, the store existed and its database was lost.
fn no_store(database: PathBuf, witness: &WitnessLocation) -> Error {
    match witness.exists() {
        Ok(true) => Error::DatabaseMissing {
            database,
            witness: witness.path(),
        },
        Ok(false) => Error::NoStore { database },
        Err(e) => e,
    }
}

/// Whether redb found no database in the file (I/O error of kind
/// `InvalidData`, which redb uses for a missing magic number).
fn not_a_database(e: &redb::DatabaseError) -> bool {
    matches!(e, redb::DatabaseError::Storage(redb::StorageError::Io(io))
        if io.kind() == std::io::ErrorKind::InvalidData)
}

/// Opens the redb database of an existing store. Creates nothing: no
/// directory, no file, no table.
pub(crate) fn open_existing(location: StoreLocation) -> Result<(Database, StoreFiles), Error> {
    let (database, db, witness) = files(location);
    let db = match db {
        Some(db) => db,
        // A zero-length file holds no store (an emptied or truncated file).
        None if !has_bytes(&database)? => return Err(no_store(database, &witness)),
        None => match Database::open(&database) {
            Ok(db) => db,
            // No redb magic number: what redb leaves when power is lost
            // between writing a new file's header and its magic number, or
            // a store whose first bytes were damaged. A retry cannot help.
            Err(e) if not_a_database(&e) => return Err(no_store(database, &witness)),
            Err(e) => return Err(Error::from(e).in_file(&database)),
        },
    };
    let holds_nothing = schema_version(&db)
        .and_then(|version| Ok(version.is_none() && is_empty(&db)?))
        .map_err(|e| e.in_file(&database))?;
    if holds_nothing {
        return Err(no_store(database, &witness));
    }
    Ok((db, StoreFiles { database, witness }))
}

/// Creates the redb database of a new store, refusing a location that
/// holds a store or the witness of one.
fn create_db(location: StoreLocation) -> Result<(Database, StoreFiles), Error> {
    let (database, db, witness) = files(location);
    let db = match db {
        Some(db) => db,
        None => {
            // Refused before the file is made, so a refusal leaves the
            // directory as it was.
            if !has_bytes(&database)? && witness.exists()? {
                return Err(no_store(database, &witness));
            }
            if let Some(dir) = database.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::from(redb::Error::Io(e)).in_file(dir))?;
            }
            Database::create(&database).map_err(|e| Error::from(e).in_file(&database))?
        }
    };
    // A database that is empty but exists is what a create that crashed
    // before its first commit leaves: it is finished now.
    if !is_empty(&db).map_err(|e| e.in_file(&database))? {
        return Err(Error::StoreExists { database });
    }
    if witness.exists()? {
        return Err(no_store(database, &witness));
    }
    Ok((db, StoreFiles { database, witness }))
}

fn schema_version(db: &Database) -> Result<Option<u32>, Error> {
    let txn = db.begin_read()?;
    let table = match txn.open_table(FORMAT) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    Ok(table.get("schema_version")?.map(|g| g.value()))
}

/// Whether the database holds no row in any table.
fn is_empty(db: &Database) -> Result<bool, Error> {
    use redb::ReadableTableMetadata as _;
    let txn = db.begin_read()?;
    for handle in txn.list_tables()? {
        if txn.open_untyped_table(handle)?.len()? > 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Creates tables, the first DEK and the store metadata in one transaction.
fn initialize(
    db: &Database,
    keyring: &Keyring,
    provider: &dyn KeyProvider,
    options: &StoreOptions,
) -> Result<(), Error> {
    let kek = provider.current_kek_id().map_err(Error::Provider)?;
    let dek = Dek::generate(DekTerm(1), &mut OsRng);
    let wrapped = provider
        .wrap(&kek, dek.key_bytes())
        .map_err(Error::Provider)?;
    let entry = StoredEntry::new(
        &dek,
        vec![(kek, wrapped)],
        options.recovery_key.as_ref(),
        &mut OsRng,
    )?;
    keyring.insert(dek);
    let view = keyring.view();
    let current = view
        .get(DekTerm(1))
        .ok_or(Error::dek_missing(RecordTable::Sys, DekTerm(1)))?;
    let txn = db.begin_write()?;
    {
        for table in RecordTable::STORED {
            txn.open_table(table.definition())?;
        }
        txn.open_table(DEK_INDEX)?;
        txn.open_table(MARKER_EXPIRY)?;
        txn.open_table(FORMAT)?
            .insert("schema_version", SCHEMA_VERSION)?;
        txn.open_table(KEYRING)?
            .insert(1, entry.encode().as_slice())?;
        let mut ctx = WriteCtx::with_dek(&txn, view.clone(), current);
        let mut store_id = [0u8; 16];
        OsRng.fill_bytes(&mut store_id);
        let mut witness_key = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(witness_key.as_mut());
        let zero = RecordEpoch(0);
        let identity = Identity {
            id: store_id,
            witness_written: false,
            recovery_key: options
                .recovery_key
                .as_ref()
                .map(RecoveryPublicKey::to_bytes),
        };
        ctx.put_at(RecordTable::Sys, sys::STORE_ID, zero, &identity.encode())?;
        ctx.put_at(
            RecordTable::Sys,
            sys::WITNESS_KEY,
            zero,
            witness_key.as_ref(),
        )?;
        ctx.put_at(
            RecordTable::Sys,
            sys::GLOBAL_EPOCH,
            zero,
            &1u64.to_be_bytes(),
        )?;
        ctx.put_generation(1, &MarkerDigest::default())?;
        ctx.seal_keyring_state()?;
    }
    txn.commit()?;
    Ok(())
}

/// Every keyring entry, as stored.
fn read_entries(db: &Database) -> Result<Vec<StoredEntry>, Error> {
    let txn = db.begin_read()?;
    entries_of(&txn.open_table(KEYRING)?)
}

/// Every keyring entry of an open keyring table (read or write).
pub(crate) fn entries_of<T: ReadableTable<u64, &'static [u8]>>(
    table: &T,
) -> Result<Vec<StoredEntry>, Error> {
    let mut out = Vec::new();
    for item in table.iter()? {
        let (k, v) = item?;
        out.push(StoredEntry::decode(DekTerm(k.value()), v.value())?);
    }
    Ok(out)
}

/// Unwraps every active DEK into `keyring` with `unwrap`.
pub(crate) fn unwrap_keyring(
    db: &Database,
    keyring: &Keyring,
    unwrap: impl Fn(&StoredEntry, Option<&KekId>) -> Result<Dek, Error>,
    preferred: Option<&KekId>,
) -> Result<(), Error> {
    for entry in read_entries(db)? {
        if entry.state == DekState::Active {
            keyring.insert(unwrap(&entry, preferred)?);
        }
    }
    Ok(())
}

/// Reads the store metadata, checks the witness, and builds the shared state.
fn open_shared(
    db: Database,
    keyring: Keyring,
    files: StoreFiles,
    rollback: RollbackPolicy,
) -> Result<Arc<Shared>, Error> {
    let (identity, witness_key, position, damaged) = {
        let txn = db.begin_read()?;
        let view = keyring.view();
        let r = Records::new(&txn, &view);
        let identity = r.identity()?;
        // I5: only a database that holds nothing yet may lack a witness
        // without saying so; an identity record from before the first
        // witness, put back into a database with data, is refused.
        if !identity.witness_written && holds_data(&txn)? {
            return Err(Error::metadata_corrupt("store_id"));
        }
        let mut witness_key = Zeroizing::new([0u8; 32]);
        let wk = r.required_sys_record(sys::WITNESS_KEY, "witness_key")?;
        if wk.len() != 32 {
            return Err(Error::metadata_corrupt("witness_key"));
        }
        witness_key.copy_from_slice(&wk);
        let (current, sealed_digest) = r.current_pointer()?;
        if view.get(current).is_none() {
            return Err(Error::metadata_corrupt("current_dek"));
        }
        // I4: the keyring as stored (every entry, its state, the set of
        // terms) must be the one the current-DEK record authenticates.
        let digest = keyring_digest(&txn.open_table(KEYRING)?)?;
        if sealed_digest != digest {
            return Err(Error::metadata_corrupt("keyring"));
        }
        // I4: no wallet's marker digest was put back from an older copy.
        let damaged = r.check_marker_sets()?;
        let position = Position {
            epoch: r.global_epoch()?,
            generation: r.generation()?,
        };
        (identity, witness_key, position, damaged)
    };
    let written = identity.witness_written;
    let witness = Witness::new(files.witness, identity.id, witness_key);
    let found = witness.read()?;
    let (position, accepted) = match rollback::check(position, found, written, rollback) {
        Verdict::Current => (position, None),
        Verdict::Refused { found: accept } => {
            return Err(refusal(files.database, &witness, accept));
        }
        Verdict::Accepted { accepted, past } => {
            (move_past(&db, &keyring, position, past)?, Some(accepted))
        }
    };
    witness.write(position)?;
    if !written {
        record_witness_written(&db, &keyring, identity)?;
    }
    if let Some(accepted) = accepted {
        rollback::report_accepted(accepted, &files.database, &witness.path());
    }
    Ok(Arc::new(Shared {
        db,
        database: files.database,
        keyring,
        witness,
        corrupt: Mutex::new(damaged.into_iter().collect()),
        stats: Mutex::new(WriterStats::default()),
        witness_behind: Mutex::new(None),
        marker_sets: CheckedMarkerSets::default(),
    }))
}

/// Whether any sealed table besides the store's own metadata holds a row.
fn holds_data(txn: &ReadTransaction) -> Result<bool, Error> {
    use redb::ReadableTableMetadata as _;
    for table in RecordTable::STORED {
        if table != RecordTable::Sys && txn.open_table(table.definition())?.len()? > 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The refusal of the database that `accept` would accept (older than its
/// witness, or without it; `accept` names both positions), printing that
/// setting.
fn refusal(database: PathBuf, witness: &Witness, accept: AcceptedRollback) -> Error {
    match accept {
        AcceptedRollback::OlderThanWitness { .. } => Error::RollbackDetected {
            database,
            witness: witness.path(),
            accept,
        },
        AcceptedRollback::WitnessMissing { .. } => Error::WitnessMissing {
            database,
            witness: witness.path(),
            accept,
        },
    }
}

/// After an accepted rollback, moves the commit generation past the
/// overridden position `past`: every later witness then differs from the
/// accepted one, so the setting accepts no other rollback (single use).
fn move_past(
    db: &Database,
    keyring: &Keyring,
    position: Position,
    past: Position,
) -> Result<Position, Error> {
    let generation = position.generation.max(past.generation).saturating_add(1);
    let txn = db.begin_write()?;
    {
        let mut ctx = WriteCtx::begin(&txn, keyring.view())?;
        let (_, markers) = ctx.records().generation_record()?;
        ctx.put_generation(generation, &markers)?;
    }
    txn.commit()?;
    Ok(Position {
        epoch: position.epoch,
        generation,
    })
}

/// Replaces the configured recovery public key by the one stored at init,
/// so every process (whatever its options) wraps new DEKs to it.
///
/// # Errors
/// [`Error::RecoveryKeyMismatch`] when the option names another key;
/// [`Error::MetadataCorrupt`] when the stored key does not authenticate.
pub(crate) fn with_stored_recovery_key(
    shared: &Shared,
    mut options: StoreOptions,
) -> Result<StoreOptions, Error> {
    let stored = {
        let txn = shared.db.begin_read()?;
        let view = shared.keyring.view();
        Records::new(&txn, &view).identity()?.recovery_key
    };
    let Some(stored) = stored else {
        // A store initialised without one keeps taking the key from its
        // options.
        return Ok(options);
    };
    let stored =
        RecoveryPublicKey::from_bytes(stored).map_err(|_| Error::metadata_corrupt("store_id"))?;
    match &options.recovery_key {
        Some(configured) if *configured != stored => Err(Error::RecoveryKeyMismatch),
        _ => {
            options.recovery_key = Some(stored);
            Ok(options)
        }
    }
}

/// Run by the first open, once its witness is written: from then on a
/// missing witness refuses the open (I5).
fn record_witness_written(
    db: &Database,
    keyring: &Keyring,
    identity: Identity,
) -> Result<(), Error> {
    let txn = db.begin_write()?;
    {
        let mut ctx = WriteCtx::begin(&txn, keyring.view())?;
        let identity = Identity {
            witness_written: true,
            ..identity
        };
        ctx.put_at(
            RecordTable::Sys,
            sys::STORE_ID,
            RecordEpoch(0),
            &identity.encode(),
        )?;
    }
    txn.commit()?;
    Ok(())
}

/// The store's identity record (`sys/store_id`): `id (16) ‖ witness
/// written (u8, 0 or 1) ‖ recovery public key (32, absent if none)`. One
/// record that every store has, so none of its fields can be removed on
/// its own; a missing record refuses the open.
pub(crate) struct Identity {
    /// Names the database in the witness.
    id: [u8; 16],
    /// Whether a witness was written for this database.
    witness_written: bool,
    /// The recovery public key set at init.
    recovery_key: Option<[u8; 32]>,
}

impl Identity {
    fn encode(&self) -> Vec<u8> {
        let key = self.recovery_key.as_ref().map_or(&[][..], |k| &k[..]);
        [&self.id[..], &[u8::from(self.witness_written)], key].concat()
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let (id, rest) = bytes.split_first_chunk::<16>()?;
        let (&written, key) = rest.split_first()?;
        Some(Self {
            id: *id,
            witness_written: match written {
                0 => false,
                1 => true,
                _ => return None,
            },
            recovery_key: match key.len() {
                0 => None,
                _ => Some(key.try_into().ok()?),
            },
        })
    }
}

impl<R: Raw> Records<'_, R> {
    /// The store's identity record.
    pub(crate) fn identity(&self) -> Result<Identity, Error> {
        let value = self.required_sys_record(sys::STORE_ID, "store_id")?;
        Identity::decode(&value).ok_or(Error::metadata_corrupt("store_id"))
    }
}

impl Store for EncryptedStore {
    fn write(&self, ops: Vec<WriteOp>) -> Result<WriteOutcome, Error> {
        let (reply, answer) = sync_channel(1);
        #[cfg(any(test, feature = "test-util"))]
        {
            let hook = lock(&self.submit_hook).clone();
            if let Some(hook) = hook {
                hook();
            }
        }
        self.sender()?
            .send(Job::Write { ops, reply })
            .map_err(|_| Error::WriterStopped)?;
        let result = answer.recv().map_err(|_| Error::WriterStopped)?;
        result.map_err(|e| self.shared.named(e))
    }

    fn wallet(&self, wallet: &WalletId) -> Result<Option<Plaintext>, Error> {
        self.read(|r| r.get(RecordTable::Wallets, &schema::wallet_key(wallet)))
    }

    fn wallet_ids(&self) -> Result<Vec<WalletId>, Error> {
        self.read(|r| {
            r.raw
                .raw_prefix(RecordTable::Epochs, &[])?
                .into_iter()
                .map(|(k, _)| {
                    schema::wallet_of(&k)
                        .ok_or_else(|| Error::record_tampered(RecordTable::Epochs, None))
                })
                .collect()
        })
    }

    fn wallet_epoch(&self, wallet: &WalletId) -> Result<Option<RecordEpoch>, Error> {
        self.read(|r| r.wallet_epoch(wallet))
    }

    fn key_package(
        &self,
        wallet: &WalletId,
        epoch: RecordEpoch,
    ) -> Result<Option<Plaintext>, Error> {
        self.read(|r| {
            r.get(
                RecordTable::KeyPackages,
                &schema::key_package_key(wallet, epoch),
            )
        })
    }

    fn key_packages(&self, wallet: &WalletId) -> Result<Vec<(RecordEpoch, Plaintext)>, Error> {
        self.wallet_records(RecordTable::KeyPackages, wallet, |suffix| {
            decode_u64(suffix).map(RecordEpoch)
        })
    }

    fn dkg_results(&self, wallet: &WalletId) -> Result<Vec<(DkgSessionId, Plaintext)>, Error> {
        self.wallet_records(RecordTable::DkgResults, wallet, |suffix| {
            DkgSessionId::new(suffix.to_vec()).ok()
        })
    }

    fn marker(
        &self,
        wallet: &WalletId,
        commitment: &CommitmentHash,
    ) -> Result<Option<Marker>, Error> {
        let marker = self.read(|r| {
            // I4: a marker row deleted behind the store's back is an error
            // for its wallet, never an absent marker.
            self.shared.marker_sets.ensure(r, wallet)?;
            r.get(
                RecordTable::Markers,
                &schema::marker_key(wallet, commitment),
            )?
            .map(|v| {
                Marker::decode(&v).ok_or(Error::record_tampered(
                    RecordTable::Markers,
                    Some(wallet.clone()),
                ))
            })
            .transpose()
        })?;
        // I5: a marker's shares are handed back only once the witness covers
        // what this read saw. Checked after the read, so a commit visible to
        // it is noted as lagging: the witness is then written at the
        // position read now, which covers it (a retryable `WitnessIo` if
        // it cannot be written). A lag left by a newer commit in flight
        // concerns data this read did not see.
        if marker.is_some() && self.shared.witness_is_behind() {
            self.refresh_witness()?;
        }
        Ok(marker)
    }

    fn policy(&self, wallet: &WalletId, key: &PolicyKey) -> Result<Option<Plaintext>, Error> {
        self.read(|r| r.get(RecordTable::Policy, &schema::policy_key(wallet, key)))
    }

    fn meta(&self, name: &MetaName) -> Result<Option<Plaintext>, Error> {
        self.read(|r| r.get(RecordTable::Meta, name.as_bytes()))
    }

    fn audit(&self, from: AuditSeq, limit: usize) -> Result<Vec<(AuditSeq, Plaintext)>, Error> {
        self.read(|r| {
            let mut out = Vec::new();
            let mut seq = from.0.max(1);
            while out.len() < limit {
                let Some(v) = r.get(RecordTable::Audit, &seq.to_be_bytes())? else {
                    break;
                };
                out.push((AuditSeq(seq), v));
                seq = seq.saturating_add(1);
            }
            Ok(out)
        })
    }

    fn corrupt_wallets(&self) -> Vec<WalletId> {
        lock(&self.shared.corrupt).iter().cloned().collect()
    }
}
