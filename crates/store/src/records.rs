//! Reading and writing sealed records inside one redb transaction.
//!
//! [`Records`] opens records for any transaction (read or write), resolving
//! the epoch each record's associated data must carry. [`WriteCtx`] adds
//! sealing under the DEK that is current *in this transaction* (I1), keeps
//! the DEK index in step with every record change, and keeps an undo log so
//! a unit of operations whose check fails can be taken back without
//! aborting the rest of the batch.

use crate::sync::Arc;

use rand_core::OsRng;
use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use crate::error::Error;
use crate::ids::{DekTerm, RecordEpoch, WalletId};
use crate::keyring::KeyringView;
use crate::marker_set::{CheckedMarkerSets, MarkerDigest};
use crate::plaintext::Plaintext;
use crate::schema::{self, DEK_INDEX, KEYRING, MARKER_EXPIRY, RecordTable, sys, wallet_of};
use crate::seal::{Dek, OpenFailure, open, sealed_term};
use crate::witness::AuditMark;

type RawPairs = Vec<(Vec<u8>, Vec<u8>)>;
/// Opened records: (record key, plaintext).
pub(crate) type OpenedPairs = Vec<(Vec<u8>, Plaintext)>;

/// Raw access to the sealed tables of one transaction.
pub(crate) trait Raw {
    /// The stored bytes of `key`.
    fn raw_get(&self, table: RecordTable, key: &[u8]) -> Result<Option<Vec<u8>>, Error>;
    /// Every record whose key starts with `prefix`, in key order.
    fn raw_prefix(&self, table: RecordTable, prefix: &[u8]) -> Result<RawPairs, Error>;
    /// The last record of `table`.
    fn raw_last(&self, table: RecordTable) -> Result<Option<Vec<u8>>, Error>;
    /// Up to `limit` keys of `table` after `after` (from the first without
    /// it), in key order: a walk in bounded chunks.
    fn raw_keys_after(
        &self,
        table: RecordTable,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, Error>;
}

fn get_in<T: ReadableTable<&'static [u8], &'static [u8]>>(
    t: &T,
    key: &[u8],
) -> Result<Option<Vec<u8>>, Error> {
    Ok(t.get(key)?.map(|g| g.value().to_vec()))
}

fn prefix_in<T: ReadableTable<&'static [u8], &'static [u8]>>(
    t: &T,
    prefix: &[u8],
) -> Result<RawPairs, Error> {
    let mut out = Vec::new();
    for item in t.range::<&[u8]>(prefix..)? {
        let (k, v) = item?;
        if !k.value().starts_with(prefix) {
            break;
        }
        out.push((k.value().to_vec(), v.value().to_vec()));
    }
    Ok(out)
}

fn keys_after_in<T: ReadableTable<&'static [u8], &'static [u8]>>(
    t: &T,
    after: Option<&[u8]>,
    limit: usize,
) -> Result<Vec<Vec<u8>>, Error> {
    use std::ops::Bound;
    let start = after.map_or(Bound::Unbounded, Bound::Excluded);
    let mut out = Vec::with_capacity(limit);
    for item in t.range::<&[u8]>((start, Bound::Unbounded))?.take(limit) {
        out.push(item?.0.value().to_vec());
    }
    Ok(out)
}

fn last_in<T: ReadableTable<&'static [u8], &'static [u8]>>(
    t: &T,
) -> Result<Option<Vec<u8>>, Error> {
    Ok(t.last()?.map(|(k, _)| k.value().to_vec()))
}

/// Implements [`Raw`] for a transaction type whose `open_table` yields a
/// readable table (redb's read and write transactions differ in type only).
macro_rules! impl_raw {
    ($($txn:ty),*) => {
        $(impl Raw for $txn {
            fn raw_get(&self, table: RecordTable, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
                get_in(&self.open_table(table.definition())?, key)
            }
            fn raw_prefix(&self, table: RecordTable, prefix: &[u8]) -> Result<RawPairs, Error> {
                prefix_in(&self.open_table(table.definition())?, prefix)
            }
            fn raw_last(&self, table: RecordTable) -> Result<Option<Vec<u8>>, Error> {
                last_in(&self.open_table(table.definition())?)
            }
            fn raw_keys_after(
                &self,
                table: RecordTable,
                after: Option<&[u8]>,
                limit: usize,
            ) -> Result<Vec<Vec<u8>>, Error> {
                keys_after_in(&self.open_table(table.definition())?, after, limit)
            }
        })*
    };
}

impl_raw!(ReadTransaction, WriteTransaction);

/// Decodes a stored big-endian `u64`.
pub(crate) fn decode_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(*bytes.first_chunk::<8>()?)).filter(|_| bytes.len() == 8)
}

/// Opens records of one transaction with one keyring snapshot.
pub(crate) struct Records<'a, R: Raw> {
    pub(crate) raw: &'a R,
    pub(crate) view: &'a KeyringView,
}

impl<'a, R: Raw> Records<'a, R> {
    pub(crate) fn new(raw: &'a R, view: &'a KeyringView) -> Self {
        Self { raw, view }
    }

    /// Opens `sealed` as the value of `key` in `table` at `epoch`.
    pub(crate) fn open_bytes(
        &self,
        table: RecordTable,
        key: &[u8],
        epoch: RecordEpoch,
        sealed: &[u8],
    ) -> Result<Plaintext, Error> {
        open(|t| self.view.get(t), table, key, epoch, sealed)
            .map(Plaintext::from)
            .map_err(|f| corruption(table, key, epoch, f))
    }

    /// The plaintext of `key` in `table`, or `None` if absent.
    pub(crate) fn get(&self, table: RecordTable, key: &[u8]) -> Result<Option<Plaintext>, Error> {
        let Some(sealed) = self.raw.raw_get(table, key)? else {
            return Ok(None);
        };
        let epoch = self.epoch_for(table, key)?;
        self.open_bytes(table, key, epoch, &sealed).map(Some)
    }

    /// Every record of `table` under `prefix`, opened.
    pub(crate) fn get_prefix(
        &self,
        table: RecordTable,
        prefix: &[u8],
    ) -> Result<OpenedPairs, Error> {
        let mut out = Vec::new();
        for (key, sealed) in self.raw.raw_prefix(table, prefix)? {
            let epoch = self.epoch_for(table, &key)?;
            let value = self.open_bytes(table, &key, epoch, &sealed)?;
            out.push((key, value));
        }
        Ok(out)
    }

    /// The epoch `key` in `table` is sealed with.
    pub(crate) fn epoch_for(&self, table: RecordTable, key: &[u8]) -> Result<RecordEpoch, Error> {
        // The current-DEK record is bound to the global epoch like the
        // epoch records: every DEK promotion and retirement bumps it, so an
        // older keyring state put back with its record no longer opens.
        if table == RecordTable::Epochs || (table == RecordTable::Sys && key == sys::CURRENT_DEK) {
            return self.global_epoch();
        }
        if !table.wallet_epoch_bound() {
            return Ok(RecordEpoch(0));
        }
        let wallet = wallet_of(key).ok_or(Error::record_tampered(table, None))?;
        Ok(self.wallet_epoch(&wallet)?.unwrap_or(RecordEpoch(0)))
    }

    /// A store metadata record, if present. One that fails to authenticate
    /// is `MetadataCorrupt` named `label` (I4: it refuses the open rather
    /// than reading as absent); storage errors stay storage errors.
    pub(crate) fn sys_record(
        &self,
        name: &[u8],
        label: &'static str,
    ) -> Result<Option<Plaintext>, Error> {
        self.get(RecordTable::Sys, name).map_err(|e| {
            if e.is_record_corruption() {
                Error::metadata_corrupt(label)
            } else {
                e
            }
        })
    }

    /// A store metadata record that every store has: absent is as corrupt
    /// as failing to authenticate.
    pub(crate) fn required_sys_record(
        &self,
        name: &[u8],
        label: &'static str,
    ) -> Result<Plaintext, Error> {
        self.sys_record(name, label)?
            .ok_or(Error::metadata_corrupt(label))
    }

    /// A store metadata `u64`.
    pub(crate) fn sys_u64(&self, name: &'static [u8], label: &'static str) -> Result<u64, Error> {
        let value = self.required_sys_record(name, label)?;
        decode_u64(&value).ok_or(Error::metadata_corrupt(label))
    }

    /// The global security epoch.
    pub(crate) fn global_epoch(&self) -> Result<RecordEpoch, Error> {
        self.sys_u64(sys::GLOBAL_EPOCH, "global_epoch")
            .map(RecordEpoch)
    }

    /// The commit generation.
    pub(crate) fn generation(&self) -> Result<u64, Error> {
        self.generation_record().map(|(generation, ..)| generation)
    }

    /// The generation record: the commit generation, the combined digest
    /// of every wallet's markers, and the audit log's head as the same
    /// commit left it (a record written before the audit log had none: an
    /// empty log).
    pub(crate) fn generation_record(&self) -> Result<(u64, MarkerDigest, AuditMark), Error> {
        let corrupt = || Error::metadata_corrupt("generation");
        let value = self.required_sys_record(sys::GENERATION, "generation")?;
        let (generation, rest) = value.split_first_chunk::<8>().ok_or_else(corrupt)?;
        let (markers, audit) = rest
            .split_first_chunk::<{ MarkerDigest::LEN }>()
            .ok_or_else(corrupt)?;
        let audit = if audit.is_empty() {
            AuditMark::default()
        } else {
            AuditMark::decode(audit).ok_or_else(corrupt)?
        };
        Ok((
            u64::from_be_bytes(*generation),
            MarkerDigest::decode(markers).ok_or_else(corrupt)?,
            audit,
        ))
    }

    /// The current DEK term, as committed.
    pub(crate) fn current_term(&self) -> Result<DekTerm, Error> {
        self.current_pointer().map(|(term, _)| term)
    }

    /// The current-DEK record: the term and the keyring digest sealed with
    /// it.
    pub(crate) fn current_pointer(&self) -> Result<(DekTerm, KeyringDigest), Error> {
        let corrupt = || Error::metadata_corrupt("current_dek");
        let value = self.required_sys_record(sys::CURRENT_DEK, "current_dek")?;
        let (term, digest) = value.split_first_chunk::<8>().ok_or_else(corrupt)?;
        Ok((
            DekTerm(u64::from_be_bytes(*term)),
            digest.try_into().map_err(|_| corrupt())?,
        ))
    }

    /// A wallet's security epoch, if the wallet exists.
    pub(crate) fn wallet_epoch(&self, wallet: &WalletId) -> Result<Option<RecordEpoch>, Error> {
        let key = schema::wallet_key(wallet);
        let Some(value) = self.get(RecordTable::Epochs, &key)? else {
            return Ok(None);
        };
        decode_u64(&value)
            .map(|e| Some(RecordEpoch(e)))
            .ok_or(Error::record_tampered(
                RecordTable::Epochs,
                Some(wallet.clone()),
            ))
    }
}

/// Maps an open failure to the error naming the record.
fn corruption(table: RecordTable, key: &[u8], expected: RecordEpoch, f: OpenFailure) -> Error {
    let wallet = table.wallet_scoped().then(|| wallet_of(key)).flatten();
    match f {
        OpenFailure::Tampered => Error::record_tampered(table, wallet),
        OpenFailure::Moved => Error::RecordMoved {
            table,
            wallet,
            file: None,
        },
        OpenFailure::Stale { found } => Error::RecordStale {
            table,
            wallet,
            found,
            expected,
            file: None,
        },
        OpenFailure::DekMissing { term } => Error::dek_missing(table, wallet, term),
    }
}

/// One change the undo log can take back.
enum Undo {
    Record {
        table: RecordTable,
        key: Vec<u8>,
        old: Option<Vec<u8>>,
    },
    Expiry {
        key: Vec<u8>,
        existed: bool,
    },
}

/// The writer's view of one write transaction.
pub(crate) struct WriteCtx<'t> {
    pub(crate) txn: &'t WriteTransaction,
    pub(crate) view: Arc<KeyringView>,
    current: Arc<Dek>,
    undo: Vec<Undo>,
    /// Set when this transaction bumped the global epoch (the witness is
    /// rewritten after it commits).
    pub(crate) epoch_bumped: bool,
    /// Wallets whose epoch record failed to authenticate during a global
    /// bump, or whose marker (or marker digest) did during a purge, or
    /// whose marker's sealed expiry disagreed with the expiry index (left
    /// as they are; the writer marks them corrupt).
    pub(crate) corrupt_found: Vec<WalletId>,
    /// The writer's record of wallets whose marker sets were checked since
    /// open; without it every check reads the wallet's marker keys.
    pub(crate) checked_marker_sets: Option<&'t CheckedMarkerSets>,
}

impl<'t> WriteCtx<'t> {
    /// Begins sealing in `txn`: reads the current DEK term *in this
    /// transaction* and takes that DEK from the in-memory keyring (I1).
    ///
    /// # Errors
    /// [`Error::DekMissing`] if the committed current DEK is not in memory,
    /// which the keyring's insert-before-promote order rules out.
    pub(crate) fn begin(txn: &'t WriteTransaction, view: Arc<KeyringView>) -> Result<Self, Error> {
        let term = Records::new(txn, &view).current_term()?;
        let current = view
            .get(term)
            .ok_or(Error::dek_missing(RecordTable::Sys, None, term))?;
        Ok(Self {
            txn,
            view,
            current,
            undo: Vec::new(),
            epoch_bumped: false,
            corrupt_found: Vec::new(),
            checked_marker_sets: None,
        })
    }

    /// Starts sealing with an explicit DEK (the first transaction of a new
    /// store, before any current pointer exists).
    pub(crate) fn with_dek(
        txn: &'t WriteTransaction,
        view: Arc<KeyringView>,
        current: Arc<Dek>,
    ) -> Self {
        Self {
            txn,
            view,
            current,
            undo: Vec::new(),
            epoch_bumped: false,
            corrupt_found: Vec::new(),
            checked_marker_sets: None,
        }
    }

    /// The term this transaction seals under.
    pub(crate) fn current_term(&self) -> DekTerm {
        self.current.term()
    }

    /// Switches sealing to `dek` (a promotion inside this transaction).
    pub(crate) fn set_current(&mut self, dek: Arc<Dek>) {
        self.current = dek;
    }

    /// A reader over this transaction's current state.
    pub(crate) fn records(&self) -> Records<'_, WriteTransaction> {
        Records::new(self.txn, &self.view)
    }

    /// Seals and stores `plaintext` under `key` at `epoch`.
    pub(crate) fn put_at(
        &mut self,
        table: RecordTable,
        key: &[u8],
        epoch: RecordEpoch,
        plaintext: &[u8],
    ) -> Result<(), Error> {
        let sealed = self.current.seal(table, key, epoch, plaintext, &mut OsRng);
        let old = self.set_raw(table, key, Some(&sealed))?;
        self.undo.push(Undo::Record {
            table,
            key: key.to_vec(),
            old,
        });
        Ok(())
    }

    /// Seals and stores `plaintext` under `key` at the epoch the table's
    /// associated data requires now.
    pub(crate) fn put(
        &mut self,
        table: RecordTable,
        key: &[u8],
        plaintext: &[u8],
    ) -> Result<(), Error> {
        let epoch = self.records().epoch_for(table, key)?;
        self.put_at(table, key, epoch, plaintext)
    }

    /// Removes `key`; returns whether it existed.
    pub(crate) fn delete(&mut self, table: RecordTable, key: &[u8]) -> Result<bool, Error> {
        let old = self.set_raw(table, key, None)?;
        let existed = old.is_some();
        self.undo.push(Undo::Record {
            table,
            key: key.to_vec(),
            old,
        });
        Ok(existed)
    }

    /// Adds or removes a marker-expiry index entry.
    pub(crate) fn set_expiry(&mut self, key: &[u8], present: ExpiryChange) -> Result<(), Error> {
        let mut t = self.txn.open_table(MARKER_EXPIRY)?;
        let existed = match present {
            ExpiryChange::Add => t.insert(key, ())?.is_some(),
            ExpiryChange::Remove => t.remove(key)?.is_some(),
        };
        self.undo.push(Undo::Expiry {
            key: key.to_vec(),
            existed,
        });
        Ok(())
    }

    /// Writes raw bytes (or removes) and keeps the DEK index in step.
    /// Returns the previous raw bytes.
    fn set_raw(
        &mut self,
        table: RecordTable,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<Option<Vec<u8>>, Error> {
        let old = {
            let mut t = self.txn.open_table(table.definition())?;
            match value {
                Some(v) => t.insert(key, v)?.map(|g| g.value().to_vec()),
                None => t.remove(key)?.map(|g| g.value().to_vec()),
            }
        };
        let mut index = self.txn.open_table(DEK_INDEX)?;
        if let Some(term) = old.as_deref().and_then(sealed_term) {
            index.remove(schema::index_key(term, table, key).as_slice())?;
        }
        if let Some(term) = value.and_then(sealed_term) {
            index.insert(schema::index_key(term, table, key).as_slice(), ())?;
        }
        Ok(old)
    }

    /// Marks the start of a unit of operations.
    pub(crate) fn savepoint(&self) -> usize {
        self.undo.len()
    }

    /// Takes back every change made since `savepoint`.
    pub(crate) fn rollback_to(&mut self, savepoint: usize) -> Result<(), Error> {
        while self.undo.len() > savepoint {
            let Some(undo) = self.undo.pop() else { break };
            match undo {
                Undo::Record { table, key, old } => {
                    self.set_raw(table, &key, old.as_deref())?;
                }
                Undo::Expiry { key, existed } => {
                    let mut t = self.txn.open_table(MARKER_EXPIRY)?;
                    if existed {
                        t.insert(key.as_slice(), ())?;
                    } else {
                        t.remove(key.as_slice())?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Forgets the undo log (after a unit succeeded).
    pub(crate) fn release(&mut self) {
        self.undo.clear();
    }

    /// Bumps the global epoch and re-seals every wallet's epoch record under
    /// it (I5). Returns the new global epoch.
    ///
    /// An epoch record that fails to authenticate is left untouched (never
    /// re-sealed, never reset) and its wallet noted in `corrupt_found`; the
    /// other wallets and the bump go on (I4: fail closed at the right size).
    pub(crate) fn bump_global(&mut self) -> Result<RecordEpoch, Error> {
        let old = self.records().global_epoch()?;
        let mut epochs = Vec::new();
        for (key, sealed) in self.txn.raw_prefix(RecordTable::Epochs, &[])? {
            match self
                .records()
                .open_bytes(RecordTable::Epochs, &key, old, &sealed)
            {
                Ok(value) => epochs.push((key, value)),
                Err(e) if e.is_record_corruption() => {
                    if let Some(wallet) = wallet_of(&key) {
                        self.corrupt_found.push(wallet);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let new = RecordEpoch(old.0.saturating_add(1));
        self.put_at(
            RecordTable::Sys,
            sys::GLOBAL_EPOCH,
            RecordEpoch(0),
            &new.0.to_be_bytes(),
        )?;
        for (key, value) in epochs {
            self.put_at(RecordTable::Epochs, &key, new, &value)?;
        }
        self.seal_keyring_state()?;
        self.epoch_bumped = true;
        Ok(new)
    }

    /// Rewrites the current-DEK record as `term ‖ digest of the keyring`
    /// as it stands in this transaction, at the global epoch: every entry,
    /// its state and the current pointer are then authenticated by the AEAD
    /// of a record sealed under the current DEK (I4), and an older such
    /// record stops opening at the next global bump. Called by every
    /// transaction that changes the keyring, the current DEK or the global
    /// epoch.
    pub(crate) fn seal_keyring_state(&mut self) -> Result<(), Error> {
        let digest = keyring_digest(&self.txn.open_table(KEYRING)?)?;
        let value = [&self.current_term().0.to_be_bytes()[..], &digest[..]].concat();
        self.put(RecordTable::Sys, sys::CURRENT_DEK, &value)
    }

    /// Increments the commit generation (once per committed transaction,
    /// after its operations) and records the audit head it leaves; returns
    /// both, for the witness position of the commit.
    pub(crate) fn bump_generation(&mut self) -> Result<(u64, AuditMark), Error> {
        let (generation, markers, _) = self.records().generation_record()?;
        let next = generation.saturating_add(1);
        let audit = crate::audit::mark(&self.records())?;
        self.put_generation(next, &markers, &audit)?;
        Ok((next, audit))
    }

    /// Stores the generation record.
    pub(crate) fn put_generation(
        &mut self,
        generation: u64,
        markers: &MarkerDigest,
        audit: &AuditMark,
    ) -> Result<(), Error> {
        let value = [
            &generation.to_be_bytes()[..],
            &markers.encode(),
            &audit.encode(),
        ]
        .concat();
        self.put_at(RecordTable::Sys, sys::GENERATION, RecordEpoch(0), &value)
    }
}

/// SHA-256 over every keyring entry as stored.
pub(crate) type KeyringDigest = [u8; 32];

/// The digest of a keyring table: SHA-256 of a domain tag, then for each
/// entry in term order its term, its length and its stored bytes.
pub(crate) fn keyring_digest<T: ReadableTable<u64, &'static [u8]>>(
    table: &T,
) -> Result<KeyringDigest, Error> {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    h.update(b"thresig/keyring/v1\0");
    for item in table.iter()? {
        let (k, v) = item?;
        h.update(k.value().to_be_bytes());
        h.update((v.value().len() as u64).to_be_bytes());
        h.update(v.value());
    }
    Ok(h.finalize().into())
}

/// Whether a marker-expiry entry is added or removed.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ExpiryChange {
    Add,
    Remove,
}
