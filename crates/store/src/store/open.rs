//! Opening a store: finding or creating its database, unwrapping its
//! keyring, checking its metadata and marker digests (I4) and its witness
//! (I5), and starting its writer.

use std::path::PathBuf;
use std::sync::mpsc::sync_channel;

use rand_core::{OsRng, RngCore};
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, TableError};
use zeroize::Zeroizing;

use super::{EncryptedStore, StoreLocation, StoreOptions};
use crate::entry::{DekState, RecoveryPublicKey, StoredEntry};
use crate::error::Error;
use crate::ids::{AuditSeq, DekTerm, RecordEpoch};
use crate::keyring::Keyring;
use crate::marker_set::{CheckedMarkerSets, MarkerDigest};
use crate::provider::{KekId, KeyProvider};
use crate::records::{Raw, Records, WriteCtx, keyring_digest};
use crate::rollback::{self, AcceptedRollback, RollbackPolicy, Verdict};
use crate::schema::{DEK_INDEX, FORMAT, KEYRING, MARKER_EXPIRY, RecordTable, SCHEMA_VERSION, sys};
use crate::seal::Dek;
use crate::sync::{Arc, Mutex};
use crate::witness::AuditMark;
use crate::witness::{Position, Witness, WitnessLocation};
use crate::writer::{self, Shared, WriterStats};

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
    let current =
        view.get(DekTerm(1))
            .ok_or(Error::dek_missing(RecordTable::Sys, None, DekTerm(1)))?;
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
        ctx.put_generation(1, &MarkerDigest::default(), &AuditMark::default())?;
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
        let audit = crate::audit::mark(&r)?;
        let (generation, _, recorded_audit) = r.generation_record()?;
        // I5 for the audit log alone: the last commit recorded its head
        // beside the generation, so a log and head put back together
        // (even with the witness copy of that time) do not match it.
        if audit != recorded_audit {
            return Err(Error::AuditBroken {
                seq: audit.seq,
                problem: crate::audit::AuditBreak::RolledBack,
            });
        }
        let position = Position {
            epoch: r.global_epoch()?,
            generation,
            audit,
        };
        (identity, witness_key, position, damaged)
    };
    let written = identity.witness_written;
    let witness = Witness::new(files.witness, identity.id, witness_key);
    let found = witness.read()?;
    let (position, accepted) = match rollback::check(position, found, written, rollback) {
        Verdict::Current => (position, None),
        Verdict::Refused { found: accept } => {
            let audit = (
                position.audit.seq,
                found.map_or(position.audit.seq, |w| w.audit.seq),
            );
            return Err(refusal(files.database, &witness, accept, audit));
        }
        Verdict::Accepted { accepted, past } => {
            (move_past(&db, &keyring, position, past)?, Some(accepted))
        }
    };
    // Made anew, the careful way, at every open: a JSON witness is
    // upgraded, and a slot a crash tore is cleared.
    witness.remake(position)?;
    crate::metrics::audit_head(position.audit.seq);
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
        write_wait: crate::wait::WaitClock::new(),
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
fn refusal(
    database: PathBuf,
    witness: &Witness,
    accept: AcceptedRollback,
    audit: (AuditSeq, AuditSeq),
) -> Error {
    match accept {
        AcceptedRollback::OlderThanWitness { .. } => Error::RollbackDetected {
            database,
            witness: witness.path(),
            accept,
            audit: Box::new(audit),
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
        let (_, markers, audit) = ctx.records().generation_record()?;
        ctx.put_generation(generation, &markers, &audit)?;
    }
    txn.commit()?;
    Ok(Position {
        generation,
        ..position
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
