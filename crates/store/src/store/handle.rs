//! What an open store does: reads over a fresh snapshot, write units and
//! keyring changes handed to the writer thread, the witness refresh and
//! shutdown.

use std::sync::mpsc::{SyncSender, sync_channel};

use redb::{ReadTransaction, ReadableDatabase};

#[cfg(any(test, feature = "test-util"))]
use super::SubmitHook;
use super::open::entries_of;
use super::{EncryptedStore, PendingWrite, Store};
use crate::audit::{self, AuditEntry, AuditHead, AuditReport};
use crate::entry::StoredEntry;
use crate::error::Error;
use crate::ids::{
    AuditSeq, CommitmentHash, DekTerm, DkgSessionId, KeyEpoch, MetaName, PolicyKey, RecordEpoch,
    Timestamp, WalletId,
};
use crate::manager::KeyChangeAudit;
use crate::ops::{Marker, WriteOp};
use crate::plaintext::Plaintext;
use crate::records::{Raw, Records, decode_u64};
use crate::schema::{self, DEK_INDEX, KEYRING, RecordTable};
use crate::sync::lock;
use crate::witness::Position;
use crate::writer::{AdminOp, AuditNote, Job, WriterStats};

impl EncryptedStore {
    /// The wall time during which at least one caller of this store was
    /// blocked on a write's commit (see [`crate::write_wait`] for the
    /// process's).
    #[must_use]
    pub fn write_wait(&self) -> std::time::Duration {
        self.shared.write_wait.total()
    }

    fn sender(&self) -> Result<SyncSender<Job>, Error> {
        lock(&self.jobs).clone().ok_or(Error::WriterStopped)
    }

    /// Runs a keyring change on the writer.
    pub(crate) fn admin(&self, op: AdminOp) -> Result<usize, Error> {
        self.admin_noted(op, None)
    }

    /// Runs a keyring change on the writer with the audit entry `note`,
    /// appended in the change's transaction if it changes the keys.
    pub(crate) fn admin_noted(&self, op: AdminOp, note: Option<AuditNote>) -> Result<usize, Error> {
        let (reply, answer) = sync_channel(1);
        self.sender()?
            .send(Job::Admin { op, note, reply })
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

    /// The table of a record under DEK `term` whose key names no wallet a
    /// signer could write (a tampered record: one range read on the
    /// index); such a record is never re-sealed, as a corrupt wallet's.
    pub(crate) fn tampered_record_under(
        &self,
        term: DekTerm,
    ) -> Result<Option<RecordTable>, Error> {
        self.first_wallet_record_under(term, |table, key| {
            schema::wallet_of(key).is_none().then_some(table)
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
        self.first_wallet_record_under(term, |_, key| {
            schema::wallet_of(key).filter(|w| corrupt.contains(w))
        })
    }

    /// The first wallet-scoped record under DEK `term`, in index order,
    /// that `pick` maps to something (one range read on the index).
    fn first_wallet_record_under<T>(
        &self,
        term: DekTerm,
        pick: impl Fn(RecordTable, &[u8]) -> Option<T>,
    ) -> Result<Option<T>, Error> {
        self.read_txn(|txn| {
            let index = txn.open_table(DEK_INDEX)?;
            let start = term.0.to_be_bytes();
            let end = term.0.saturating_add(1).to_be_bytes();
            for item in index.range::<&[u8]>(start.as_slice()..end.as_slice())? {
                let (k, _) = item?;
                let picked = schema::parse_index_key(k.value())
                    .filter(|(_, table, _)| table.wallet_scoped())
                    .and_then(|(_, table, key)| pick(table, &key));
                if picked.is_some() {
                    return Ok(picked);
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
                audit: crate::audit::mark(r)?,
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

impl Drop for EncryptedStore {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Store for EncryptedStore {
    fn submit(&self, ops: Vec<WriteOp>) -> Result<PendingWrite<'_>, Error> {
        let (reply, answer) = sync_channel(1);
        #[cfg(any(test, feature = "test-util"))]
        {
            let hook = lock(&self.submit_hook).clone();
            if let Some(hook) = hook {
                hook();
            }
        }
        // The wait counts from the hand-over, so that a caller doing other
        // work before it waits is still counted as waiting on its commit.
        let wait = self.shared.write_wait.start();
        self.sender()?
            .send(Job::Write { ops, reply })
            .map_err(|_| Error::WriterStopped)?;
        // A dropped receiver only makes the writer's answer go nowhere.
        Ok(PendingWrite::new(move || {
            let result = answer.recv().map_err(|_| Error::WriterStopped);
            drop(wait);
            result?.map_err(|e| self.shared.named(e))
        }))
    }

    fn wallet(&self, wallet: &WalletId) -> Result<Option<Plaintext>, Error> {
        self.read(|r| r.get(RecordTable::Wallets, &schema::wallet_key(wallet)))
    }

    fn wallet_ids(&self) -> Result<Vec<WalletId>, Error> {
        // A key holding an id no signer could write is a tampered record of
        // no wallet: `keys verify` reports it; no wallet is listed for it.
        self.read(|r| {
            Ok(r.raw
                .raw_prefix(RecordTable::Epochs, &[])?
                .into_iter()
                .filter_map(|(k, _)| schema::wallet_of(&k))
                .collect())
        })
    }

    fn wallet_epoch(&self, wallet: &WalletId) -> Result<Option<RecordEpoch>, Error> {
        self.read(|r| r.wallet_epoch(wallet))
    }

    fn key_package(&self, wallet: &WalletId, epoch: KeyEpoch) -> Result<Option<Plaintext>, Error> {
        self.read(|r| {
            r.get(
                RecordTable::KeyPackages,
                &schema::key_package_key(wallet, epoch),
            )
        })
    }

    fn key_packages(&self, wallet: &WalletId) -> Result<Vec<(KeyEpoch, Plaintext)>, Error> {
        self.wallet_records(RecordTable::KeyPackages, wallet, |suffix| {
            decode_u64(suffix).map(KeyEpoch)
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

    fn audit(&self, from: AuditSeq, limit: usize) -> Result<Vec<AuditEntry>, Error> {
        self.read(|r| {
            let head = audit::read_head(r)?;
            let mut out = Vec::new();
            let mut seq = from.max(head.first);
            while out.len() < limit && seq <= head.seq {
                let entry = audit::require_entry(r, seq)?;
                out.push(entry);
                seq = AuditSeq(seq.0.saturating_add(1));
            }
            Ok(out)
        })
    }

    fn audit_head(&self) -> Result<AuditHead, Error> {
        self.read(audit::read_head)
    }

    fn audit_verify(&self) -> Result<AuditReport, Error> {
        self.read(audit::verify)
    }

    fn corrupt_wallets(&self) -> Vec<WalletId> {
        lock(&self.shared.corrupt).iter().cloned().collect()
    }

    /// A DEK rotation ([`EncryptedStore::rotate_dek`]).
    fn retire_deleted(&self, audit: &dyn KeyChangeAudit, at: Timestamp) -> Result<(), Error> {
        self.rotate_dek_audited(audit, at).map(|_| ())
    }
}
