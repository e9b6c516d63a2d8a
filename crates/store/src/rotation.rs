//! Online key rotation and recovery, as sequences of writer operations.
//!
//! Every provider call (wrapping a DEK under a KEK) is made *before* the
//! writer operation that stores its result, never inside it. Each step is
//! its own transaction, and each step can be repeated: a rotation that
//! crashed anywhere finishes when run again ([`EncryptedStore::resume_rotations`]).
//!
//! DEK rotation: (1) a new term is generated, wrapped, and put in the
//! in-memory keyring; (2) its entry is stored; (3) it is promoted (current
//! pointer moved, global epoch bumped); (4) records still under older terms
//! are re-sealed in batches, each batch one write transaction; (5) every
//! older term is retired by a transaction whose index range read finds no
//! record naming it.
//!
//! KEK rotation: every active DEK is wrapped under the provider's current
//! KEK (provider calls), the wraps are stored, and then the older wraps are
//! dropped by a transaction that first checks every active DEK has a wrap
//! under the new KEK.

use rand_core::OsRng;

use crate::entry::{DekState, RecoverySecretKey, StoredEntry};
use crate::error::Error;
use crate::ids::DekTerm;
use crate::ids::Timestamp;
use crate::manager::{KeyChange, KeyChangeAudit};
use crate::provider::{KekId, KeyProvider};
use crate::seal::Dek;
use crate::store::{EncryptedStore, StoreLocation, StoreOptions, open_existing, unwrap_keyring};
use crate::writer::{AdminOp, AuditNote};

/// How the key manager's own rotations are logged: each change in its own
/// unit, at the tick's time. An operator's command passes none and logs
/// the command itself (with its note, `thresig keys`).
#[derive(Clone, Copy)]
pub(crate) struct Noting<'a> {
    pub(crate) audit: &'a dyn KeyChangeAudit,
    pub(crate) at: Timestamp,
}

/// The audit entry of `change`, if the caller logs its changes.
fn note(noting: Option<Noting<'_>>, change: &KeyChange) -> Option<AuditNote> {
    noting.map(|n| AuditNote {
        at: n.at,
        body: n.audit.body(change),
    })
}

/// What `keys status` shows about the keyring.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyringStatus {
    /// The current DEK.
    pub current: DekTerm,
    /// Active DEKs with the KEKs each is wrapped under and how many records
    /// name it.
    pub deks: Vec<DekStatus>,
    /// Retired DEK terms.
    pub retired: Vec<DekTerm>,
}

/// One active DEK in [`KeyringStatus`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DekStatus {
    /// The DEK.
    pub term: DekTerm,
    /// KEKs it is wrapped under (the KEK ids still needed).
    pub keks: Vec<KekId>,
    /// Whether a recovery wrap exists.
    pub recoverable: bool,
    /// Records that name it.
    pub records: u64,
}

impl EncryptedStore {
    /// Rotates the DEK: new term, promote, re-seal every record, retire the
    /// old terms. Resumes an interrupted rotation instead of starting a new
    /// one when an active term newer than the current one exists.
    ///
    /// # Errors
    /// Provider errors (before anything is written), storage errors,
    /// record errors found while re-sealing (the rotation stops; records
    /// already re-sealed stay valid), and
    /// [`Error::DekHeldByCorruptWallet`] (terminal) when a corrupt wallet's
    /// records keep the old term in use: every other record is re-sealed,
    /// and the old term stays active until an operator resolves the wallet.
    pub fn rotate_dek(&self) -> Result<DekTerm, Error> {
        self.rotate_dek_noted(None)
    }

    fn rotate_dek_noted(&self, noting: Option<Noting<'_>>) -> Result<DekTerm, Error> {
        let _guard = crate::sync::lock(&self.rotation);
        let target = self.start_dek_rotation_locked(noting)?;
        while self.reseal_step_locked()? > 0 {}
        self.retire_old_deks_locked(noting)?;
        Ok(target)
    }

    /// [`EncryptedStore::rotate_dek`] for an operator's command or the
    /// signer: each key change it commits (the promotion, each
    /// retirement) carries the audit entry `audit` writes for it at `at`,
    /// in the change's own unit.
    ///
    /// # Errors
    /// As [`EncryptedStore::rotate_dek`], and the store's `AuditBroken`
    /// before any key change.
    pub fn rotate_dek_audited(
        &self,
        audit: &dyn KeyChangeAudit,
        at: Timestamp,
    ) -> Result<DekTerm, Error> {
        self.rotate_dek_noted(Some(Noting { audit, at }))
    }

    /// DEK rotation steps 1 to 3: creates a new term (or picks up the term
    /// an interrupted rotation created) and promotes it. Returns the term.
    /// `rotate_dek` runs all steps; operator commands run them one by one
    /// to show progress.
    ///
    /// # Errors
    /// Provider errors (nothing written) and storage errors.
    pub fn start_dek_rotation(&self) -> Result<DekTerm, Error> {
        let _guard = crate::sync::lock(&self.rotation);
        self.start_dek_rotation_locked(None)
    }

    /// DEK rotation step 4: re-seals one batch of records still under an
    /// older DEK, in one write transaction. Returns how many; 0 when done.
    ///
    /// # Errors
    /// Storage errors and record errors (a record that fails to
    /// authenticate is never re-sealed, and stops the rotation).
    pub fn reseal_step(&self) -> Result<usize, Error> {
        let _guard = crate::sync::lock(&self.rotation);
        self.reseal_step_locked()
    }

    /// DEK rotation step 5: retires every non-current DEK that no record
    /// names. Returns the terms retired. A term still in use does not stop
    /// the others: every clear term is retired before the first hold is
    /// returned.
    ///
    /// # Errors
    /// [`Error::DekInUse`] (retryable: re-seal first),
    /// [`Error::DekHeldByCorruptWallet`] and
    /// [`Error::DekHeldByTamperedRecord`] (terminal: such a record can never
    /// be re-sealed) and storage errors.
    pub fn retire_old_deks(&self) -> Result<Vec<DekTerm>, Error> {
        let _guard = crate::sync::lock(&self.rotation);
        self.retire_old_deks_locked(None)
    }

    fn start_dek_rotation_locked(&self, noting: Option<Noting<'_>>) -> Result<DekTerm, Error> {
        let target = match self.unpromoted_dek()? {
            Some(term) => term,
            None => {
                let next = self
                    .entries()?
                    .iter()
                    .map(|e| e.term)
                    .max()
                    .unwrap_or(0)
                    .saturating_add(1);
                self.add_dek(DekTerm(next))?
            }
        };
        let change = KeyChange::DekPromoted { term: target };
        self.admin_noted(AdminOp::Promote { term: target }, note(noting, &change))?;
        Ok(target)
    }

    /// An active DEK newer than the current one: created by a rotation that
    /// stopped before promoting it.
    fn unpromoted_dek(&self) -> Result<Option<DekTerm>, Error> {
        let current = self.read(|r| r.current_term())?;
        Ok(self
            .entries()?
            .iter()
            .filter(|e| e.state == DekState::Active && e.term() > current)
            .map(StoredEntry::term)
            .max())
    }

    fn reseal_step_locked(&self) -> Result<usize, Error> {
        self.admin(AdminOp::Reseal {
            limit: self.options.reseal_batch.max(1),
        })
    }

    /// Retires every old term no record names. A term still named by a
    /// record of a wallet known to be corrupt is refused terminally
    /// ([`Error::DekHeldByCorruptWallet`]), as is one named by a tampered
    /// record ([`Error::DekHeldByTamperedRecord`]): that record is never
    /// re-sealed, so a retry would refuse forever; any other `DekInUse`
    /// stays retryable (re-seal first). A held term does not stop the
    /// others: every term that is clear is retired, and then the first
    /// hold is returned.
    fn retire_old_deks_locked(&self, noting: Option<Noting<'_>>) -> Result<Vec<DekTerm>, Error> {
        let current = self.read(|r| r.current_term())?;
        let mut retired = Vec::new();
        let mut held = None;
        for e in self.entries()? {
            if e.state == DekState::Active && e.term() != current {
                let retire = AdminOp::RetireDek { term: e.term() };
                let change = KeyChange::DekRetired { term: e.term() };
                match self.admin_noted(retire, note(noting, &change)) {
                    Ok(_) => retired.push(e.term()),
                    Err(Error::DekInUse { term }) => {
                        if held.is_none() {
                            held = Some(self.hold_on(term)?);
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        held.map_or(Ok(retired), Err)
    }

    /// Why DEK `term` is still in use: a corrupt wallet's record, a
    /// tampered record (both terminal), or records not yet re-sealed.
    fn hold_on(&self, term: DekTerm) -> Result<Error, Error> {
        if let Some(wallet) = self.corrupt_wallet_under(term)? {
            return Ok(Error::DekHeldByCorruptWallet { term, wallet });
        }
        Ok(match self.tampered_record_under(term)? {
            Some(table) => Error::DekHeldByTamperedRecord { term, table },
            None => Error::DekInUse { term },
        })
    }

    /// Creates DEK `term`: provider wrap first, then the in-memory keyring,
    /// then the stored entry.
    fn add_dek(&self, term: DekTerm) -> Result<DekTerm, Error> {
        let kek = self.provider.current_kek_id().map_err(Error::Provider)?;
        let dek = Dek::generate(term, &mut OsRng);
        let wrapped = self
            .provider
            .wrap(&kek, dek.key_bytes())
            .map_err(Error::Provider)?;
        let entry = StoredEntry::new(
            &dek,
            vec![(kek, wrapped)],
            self.options.recovery_key.as_ref(),
            &mut OsRng,
        )?;
        // In memory before any transaction can make it current (I1).
        self.shared.keyring.insert(dek);
        self.admin(AdminOp::AddDek { entry })?;
        Ok(term)
    }

    /// Rotates the KEK to the provider's current one: wraps every active DEK
    /// under it (provider calls first), stores the wraps, then drops the
    /// older wraps in a transaction that checks none is still needed.
    /// Returns the new KEK id.
    ///
    /// # Errors
    /// Provider errors (nothing written), storage errors,
    /// [`Error::KekStillNeeded`] if a DEK appeared without a new wrap.
    pub fn rotate_kek(&self) -> Result<KekId, Error> {
        self.rotate_kek_noted(None)
    }

    /// [`EncryptedStore::rotate_kek`] for an operator's command: each key
    /// change it commits (the new wraps, the older ones dropped) carries
    /// the audit entry `audit` writes for it at `at`, in the change's own
    /// unit.
    ///
    /// # Errors
    /// As [`EncryptedStore::rotate_kek`], and the store's `AuditBroken`
    /// before any key change.
    pub fn rotate_kek_audited(
        &self,
        audit: &dyn KeyChangeAudit,
        at: Timestamp,
    ) -> Result<KekId, Error> {
        self.rotate_kek_noted(Some(Noting { audit, at }))
    }

    /// [`EncryptedStore::rotate_kek`], logging the retirement of the older
    /// wraps (if any were dropped) in its own unit when `noting`.
    pub(crate) fn rotate_kek_noted(&self, noting: Option<Noting<'_>>) -> Result<KekId, Error> {
        let _guard = crate::sync::lock(&self.rotation);
        let kek = self.add_kek_wraps_locked(noting)?;
        let change = KeyChange::KekRotated {
            kek: kek.clone(),
            dek_term: self.read(|r| r.current_term())?,
        };
        let retire = AdminOp::RetireKek { keep: kek.clone() };
        self.admin_noted(retire, note(noting, &change))?;
        Ok(kek)
    }

    /// KEK rotation step 1: wraps every active DEK under the provider's
    /// current KEK (provider calls first, then one writer operation that
    /// stores the wraps beside the old ones). Returns the new KEK id.
    ///
    /// # Errors
    /// Provider errors (nothing written) and storage errors.
    pub fn add_kek_wraps(&self) -> Result<KekId, Error> {
        let _guard = crate::sync::lock(&self.rotation);
        self.add_kek_wraps_locked(None)
    }

    /// KEK rotation step 2: drops every wrap not under `keep`, in a
    /// transaction that first checks every active DEK has a wrap under it.
    ///
    /// # Errors
    /// [`Error::KekStillNeeded`] and storage errors.
    pub fn retire_old_keks(&self, keep: &KekId) -> Result<(), Error> {
        let _guard = crate::sync::lock(&self.rotation);
        self.admin(AdminOp::RetireKek { keep: keep.clone() })
            .map(drop)
    }

    fn add_kek_wraps_locked(&self, noting: Option<Noting<'_>>) -> Result<KekId, Error> {
        let kek = self.provider.current_kek_id().map_err(Error::Provider)?;
        let view = self.shared.keyring.view();
        let mut wraps = Vec::new();
        for e in self.entries()? {
            if e.state != DekState::Active || e.has_wrap(&kek) {
                continue;
            }
            let dek = view.get(e.term()).ok_or(Error::dek_missing(
                crate::schema::RecordTable::Sys,
                None,
                e.term(),
            ))?;
            let wrapped = self
                .provider
                .wrap(&kek, dek.key_bytes())
                .map_err(Error::Provider)?;
            wraps.push((e.term(), kek.clone(), wrapped));
        }
        if !wraps.is_empty() {
            // From this commit on the new KEK unwraps every DEK: a key
            // change of its own, logged in its unit.
            let change = KeyChange::KekAdded {
                kek: kek.clone(),
                dek_term: self.read(|r| r.current_term())?,
            };
            self.admin_noted(AdminOp::AddWraps { wraps }, note(noting, &change))?;
        }
        Ok(kek)
    }

    /// Finishes any rotation a crash interrupted: a DEK newer than the
    /// current one is promoted and the old ones re-sealed and retired; DEKs
    /// wrapped under several KEKs are moved to the provider's current KEK.
    ///
    /// # Errors
    /// As [`EncryptedStore::rotate_dek`] and [`EncryptedStore::rotate_kek`].
    pub fn resume_rotations(&self) -> Result<(), Error> {
        self.resume_rotations_noted(None)
    }

    /// [`EncryptedStore::resume_rotations`], logging each promotion,
    /// retirement and KEK rotation in its own unit when `noting`.
    pub(crate) fn resume_rotations_noted(&self, noting: Option<Noting<'_>>) -> Result<(), Error> {
        let active: Vec<StoredEntry> = self
            .entries()?
            .into_iter()
            .filter(|e| e.state == DekState::Active)
            .collect();
        if active.len() > 1 {
            let _guard = crate::sync::lock(&self.rotation);
            if let Some(term) = self.unpromoted_dek()? {
                let change = KeyChange::DekPromoted { term };
                self.admin_noted(AdminOp::Promote { term }, note(noting, &change))?;
            }
            while self.reseal_step_locked()? > 0 {}
            self.retire_old_deks_locked(noting)?;
        }
        if active.iter().any(|e| e.wraps.len() > 1) {
            self.rotate_kek_noted(noting)?;
        }
        Ok(())
    }

    /// The keyring's state, for `keys status`.
    ///
    /// # Errors
    /// Storage and metadata errors.
    pub fn keyring_status(&self) -> Result<KeyringStatus, Error> {
        let entries = self.entries()?;
        let current = self.read(|r| r.current_term())?;
        let mut deks = Vec::new();
        let mut retired = Vec::new();
        for e in entries {
            match e.state {
                DekState::Retired => retired.push(e.term()),
                DekState::Active => deks.push(DekStatus {
                    term: e.term(),
                    keks: e.keks()?,
                    recoverable: e.recovery.is_some(),
                    records: self.records_under(e.term())?,
                }),
            }
        }
        Ok(KeyringStatus {
            current,
            deks,
            retired,
        })
    }

    /// Opens the store with the offline recovery key instead of the
    /// provider's KEK, then rewraps every DEK under the provider's current
    /// KEK (`keys recover`).
    ///
    /// # Errors
    /// [`Error::RecoveryFailed`] when the recovery key does not open a DEK,
    /// provider errors while rewrapping, and the open errors of
    /// [`EncryptedStore::open`].
    pub fn recover(
        location: StoreLocation,
        provider: std::sync::Arc<dyn KeyProvider>,
        recovery: &RecoverySecretKey,
        options: StoreOptions,
    ) -> Result<Self, Error> {
        let (db, files) = open_existing(location)?;
        let store = Self::open_on(db, files, provider, options, |db, keyring, _| {
            unwrap_keyring(db, keyring, |e, _| e.unwrap_recovery(recovery), None)
        })?;
        store.rotate_kek()?;
        Ok(store)
    }
}
