//! The emergency rekey's operator steps: putting an active wallet in
//! `rekeying`, and retiring it once its outputs are swept. Both are an
//! operator's actions on this member, never a coordinator's.

use thresig_store::{Store, WriteOp};

use super::{Shard, Signer, lock, store_error};
use crate::durable::{abort_ops, rekeying_ops, retiring_ops};
use crate::error::Error;
use crate::wallet::{Role, WalletState};
use thresig_store::WalletId;

/// Whether an operator's step changed the wallet or found it already done:
/// each step is idempotent, so an operator who cannot tell whether a step
/// committed (a crash, a lost reply) runs it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Transition {
    /// The wallet moved to the new state (durably).
    Done,
    /// The wallet was already in that state; nothing was written.
    Already,
}

impl<S: Store> Signer<S> {
    /// Puts an active wallet in `rekeying`, durably: from then on it signs
    /// only a sweep whose outputs all pay the successor named in its
    /// configuration (once that successor is `active` here), and refuses
    /// every other spend with `rekey_in_progress`. An operator action; a
    /// coordinator cannot trigger it. A wallet already `rekeying` is left
    /// as it is ([`Transition::Already`]). A wallet `refreshing` is rekeyed
    /// on its current shares and keeps the pending refresh: this member
    /// released its confirmation, so the others may switch on it, and if
    /// it switches too the wallet stays `rekeying` at the new epoch (the
    /// record's lifecycle carries over).
    ///
    /// # Errors
    /// [`Error::UnknownWallet`]; [`Error::RekeyNotPossible`] if the wallet
    /// names no successor or is not `active`, `refreshing` or `rekeying`;
    /// [`Error::Store`] if the store cannot be read (nothing changes), or
    /// if the commit is not acknowledged: it may be durable
    /// (the witness write after it failed), so the wallet is `rekeying` in
    /// memory either way, and a retry commits again.
    pub fn begin_rekey(&self, wallet: &WalletId) -> Result<Transition, Error> {
        self.begin_rekey_logged(wallet, None)
    }

    /// [`Signer::begin_rekey`], committing `entry` (its audit entry) in
    /// the step's own unit.
    pub(super) fn begin_rekey_logged(
        &self,
        wallet: &WalletId,
        entry: Option<WriteOp>,
    ) -> Result<Transition, Error> {
        let slot = self.slot(wallet)?;
        let mut shard = lock(&self.store, slot)?;
        // A refresh part 3 whose commit reported failure but is durable
        // released this member's confirmation: the rekey keeps it pending,
        // as for any refreshing wallet (a rekeying one adopts none later).
        self.adopt_durable(slot, &mut shard)?;
        let not_possible = || Error::RekeyNotPossible {
            wallet: wallet.clone(),
        };
        if slot.config.successor.is_none() {
            return Err(not_possible());
        }
        match shard.state.signing_key(wallet) {
            Ok((_, Role::Rekeying)) if shard.unacknowledged_step.is_none() => {
                return Ok(Transition::Already);
            }
            Ok(_) => {}
            Err(_) => return Err(not_possible()),
        }
        // The store's error does not say the commit failed (a witness write
        // failing after it, an unknown outcome): the wallet refuses ordinary
        // spends from here on, whatever the answer. A stuck refresh does
        // not disable the emergency path: the rekey runs on the current
        // shares, and the pending result stays (never vetoed: it was
        // released).
        let state = std::mem::replace(&mut shard.state, WalletState::Corrupt);
        shard.state = match state {
            WalletState::Active(key) => WalletState::Rekeying(key),
            WalletState::Refreshing(mut r) => {
                r.role = Role::Rekeying;
                WalletState::Refreshing(r)
            }
            other => other,
        };
        self.commit_step(&mut shard, wallet, rekeying_ops, Vec::new(), entry)
    }

    /// Retires a `rekeying` wallet, durably: its record says `retired` and
    /// its key package is deleted from the store in the same commit, and the
    /// share is dropped from memory (wiped once no round still holds it).
    /// From then on the wallet refuses everything with `wallet_retired`.
    /// The operator asserts that no output of the wallet remains (the sweep
    /// confirmed); nothing here can check the chain. A wallet already
    /// `retired` is left as it is ([`Transition::Already`]).
    ///
    /// Only a `rekeying` wallet can be retired, so that retiring the wrong
    /// wallet by mistake needs two wrong commands, and so that the sweep had
    /// its chance first.
    ///
    /// The deleted record's ciphertext may still sit in the database's
    /// freed pages and in backups; the caller (`thresig wallet retire`)
    /// rotates the DEK after this call, which takes its key out of the live
    /// keyring but overwrites none of those bytes (docs/lifecycle.md).
    ///
    /// # Errors
    /// [`Error::UnknownWallet`]; [`Error::RetireNotPossible`] for a wallet
    /// in any other state; [`Error::Store`] if the commit is not
    /// acknowledged: it may be durable, so the share is dropped from memory
    /// either way (the wallet shows `retired`), and a retry commits again.
    pub fn retire(&self, wallet: &WalletId) -> Result<Transition, Error> {
        self.retire_logged(wallet, None)
    }

    /// [`Signer::retire`], committing `entry` (its audit entry) in the
    /// step's own unit.
    pub(super) fn retire_logged(
        &self,
        wallet: &WalletId,
        entry: Option<WriteOp>,
    ) -> Result<Transition, Error> {
        let slot = self.slot(wallet)?;
        let mut shard = lock(&self.store, slot)?;
        // A refresh pending at a rekeying wallet goes with it: the swept
        // wallet signs nothing at either epoch.
        let mut pending = Vec::new();
        match &shard.state {
            WalletState::Refreshing(r) if r.role == Role::Rekeying => {
                let (session, epoch) = (r.pending.session(), r.pending.epoch());
                pending = abort_ops(wallet, session, epoch)?;
            }
            WalletState::Rekeying(_) => {}
            WalletState::Retired if shard.unacknowledged_step.is_none() => {
                return Ok(Transition::Already);
            }
            WalletState::Retired => {}
            other => {
                return Err(Error::RetireNotPossible {
                    wallet: wallet.clone(),
                    state: other.kind(),
                });
            }
        }
        // As for the rekey: the share is dropped before the commit is
        // known, so a commit acknowledged late leaves no signing share.
        shard.state = WalletState::Retired;
        self.commit_step(&mut shard, wallet, retiring_ops, pending, entry)
    }

    /// Commits an operator step whose stricter state `shard` already
    /// holds, with `extra` and an unacknowledged earlier step's writes in
    /// the same commit: it counts as done only once the store acknowledges
    /// the commit, and until then a retry commits all of it again. `entry`,
    /// the step's audit entry, commits in the same unit.
    fn commit_step(
        &self,
        shard: &mut Shard,
        wallet: &WalletId,
        ops: fn(&S, &WalletId) -> Result<Vec<WriteOp>, Error>,
        extra: Vec<WriteOp>,
        entry: Option<WriteOp>,
    ) -> Result<Transition, Error> {
        // The extra ops are kept for a retry of an unacknowledged step;
        // its audit entry is not: a retry logs its own.
        let mut pending = shard.unacknowledged_step.take().unwrap_or_default();
        pending.extend(extra);
        shard.unacknowledged_step = Some(pending.clone());
        let mut unit = ops(&self.store, wallet)?;
        unit.extend(pending);
        unit.extend(entry);
        self.store
            .write(unit)
            .map_err(|source| store_error(wallet, source))?;
        shard.unacknowledged_step = None;
        Ok(Transition::Done)
    }
}
