//! Share refresh: the DKG protocol of [`crate::dkg`] run over an active
//! wallet's existing key (DESIGN.md §4, lifecycle).
//!
//! A refresh is a DKG session whose proposal is of kind
//! [`DkgKind::Refresh`]: the same signed messages, HPKE round 2 and echo
//! hash (extended with the refreshed epoch and the removal set), with
//! frost's DKG-based refresh in place of key generation. Part 3 stores the
//! new key package pending, beside the current one, under the next wallet
//! epoch (insert-if-absent); the wallet keeps signing with the current
//! shares (`refreshing`). It switches only when it holds a signed
//! confirmation of the same (session, new wallet key record, transcript,
//! removal set) from every member of the current key record minus exactly
//! the removed seats: the record then names the new epoch, the old key
//! package is deleted in the same commit, and a later prune retires the
//! data key that sealed it. Confirmations are accepted from any sender at any
//! time, also after a restart. An operator's [`crate::Signer::dkg_abort`]
//! discards a result only while this member has released no confirmation
//! of it; after that, only a signed abandonment of the session by a member
//! that holds no result (so no one can ever switch) discards it.

use std::collections::BTreeSet;

use rand_core::{CryptoRng, RngCore};
use thresig_crypto::{DkgRound1, Error as CryptoError, Round1Package, Seat, WalletKey};
use thresig_store::{Store, Timestamp};

use crate::api::HexBytes;
use crate::audit::{AuditEvent, append_op};
use crate::config::WalletConfig;
use crate::dkg::ConfirmationStatus;
use crate::dkg_msg::{DkgKind, DkgPayload, DkgSessionId};
use crate::durable::{received_op, switch_ops};
use crate::error::{DkgFault, Error, InternalFault};
use crate::ids::WalletEpoch;
use crate::signer::{Shard, Signer, Slot};
use crate::wallet::{Confirming, Refreshing, ResultKind, Role, SigningKey, WalletState};
use sha2::{Digest as _, Sha256};

/// The seats that take part in a session of `kind`: for a fresh DKG the
/// roster; for a refresh the members of the wallet's current key record
/// (an earlier refresh may have removed seats that stay in the roster,
/// whose seats are positions), without the removed seats.
pub(crate) fn participants(
    config: &WalletConfig,
    state: &WalletState,
    kind: &DkgKind,
) -> BTreeSet<Seat> {
    match (kind, state.key()) {
        (DkgKind::Refresh { removed, .. }, Some(key)) => key
            .key()
            .members()
            .into_iter()
            .filter(|s| !removed.contains(s))
            .collect(),
        (DkgKind::Refresh { .. }, None) => BTreeSet::new(),
        (DkgKind::Fresh, _) => (1..=u16::try_from(config.roster.len()).unwrap_or(u16::MAX))
            .filter_map(|n| Seat::try_from(n).ok())
            .collect(),
    }
}

/// The seats of `removed` that still hold a share of `key`: a seat an
/// earlier refresh removed may stay in the `remove` list (and so in the
/// proposal), with nothing left to remove.
fn still_members(key: &WalletKey, removed: &[Seat]) -> Vec<Seat> {
    let members = key.members();
    removed
        .iter()
        .copied()
        .filter(|s| members.contains(s))
        .collect()
}

/// The result kind a finished session of `kind` makes.
pub(crate) fn result_kind(kind: &DkgKind) -> Result<ResultKind, Error> {
    Ok(match kind {
        DkgKind::Fresh => ResultKind::Fresh,
        DkgKind::Refresh {
            from_epoch,
            removed,
        } => ResultKind::Refresh {
            epoch: next(*from_epoch)?,
            removed: removed.clone(),
        },
    })
}

/// The wallet epoch after `epoch`.
fn next(epoch: WalletEpoch) -> Result<WalletEpoch, Error> {
    epoch
        .0
        .checked_add(1)
        .map(WalletEpoch)
        .ok_or(Error::Internal(InternalFault::Invariant))
}

/// Refuses a refresh proposal this member's own configuration and state do
/// not allow: another removal set than the configured one (or one that
/// removes this member), a wallet that is not `active`, or another epoch
/// than the current one. A refresh already awaiting confirmations holds
/// the wallet until it switches or an operator aborts it.
///
/// # Errors
/// [`Error::RefreshMismatch`], [`Error::WalletNotActive`],
/// [`Error::StaleEpoch`], [`Error::DkgBusy`].
pub(crate) fn check_proposal(
    slot: &Slot,
    shard: &Shard,
    session: DkgSessionId,
    from_epoch: WalletEpoch,
    removed: &[Seat],
) -> Result<(), Error> {
    let wallet = &slot.config.id;
    if removed != slot.config.removal().as_slice() || removed.contains(&slot.seat) {
        return Err(Error::RefreshMismatch {
            wallet: wallet.clone(),
        });
    }
    let current = match &shard.state {
        WalletState::Active(key) => key.epoch,
        WalletState::Refreshing(r) if r.pending.session() != session => {
            return Err(Error::DkgBusy {
                wallet: wallet.clone(),
                holder: r.pending.session(),
                coordinator: None,
            });
        }
        WalletState::Refreshing(r) => r.current.epoch,
        _ => {
            return Err(Error::WalletNotActive {
                wallet: wallet.clone(),
            });
        }
    };
    if current != from_epoch {
        return Err(Error::StaleEpoch {
            wallet: wallet.clone(),
            requested: from_epoch,
            current,
        });
    }
    Ok(())
}

/// Part 1 of a refresh of the wallet's current shares.
///
/// # Errors
/// [`Error::WalletNotActive`] without a current key;
/// [`Error::RefreshLeavesTooFew`] when fewer than the threshold would
/// remain; [`Error::RefreshMismatch`] when the crypto layer refuses a seat
/// of the removal; [`Error::StoredRecordInvalid`] when this member's share
/// does not fit its key record.
pub(crate) fn start<R: RngCore + CryptoRng>(
    slot: &Slot,
    shard: &Shard,
    removed: &[Seat],
    rng: &mut R,
) -> Result<(DkgRound1, Round1Package), Error> {
    let wallet = &slot.config.id;
    let key = match &shard.state {
        WalletState::Active(key) => key,
        _ => {
            return Err(Error::WalletNotActive {
                wallet: wallet.clone(),
            });
        }
    };
    let removed = still_members(key.key(), removed);
    DkgRound1::refresh(&key.share, key.key(), &removed, rng).map_err(|e| match e {
        CryptoError::InvalidParams { threshold, signers } => Error::RefreshLeavesTooFew {
            wallet: wallet.clone(),
            remaining: signers,
            threshold,
        },
        CryptoError::UnknownSeat { .. } => Error::RefreshMismatch {
            wallet: wallet.clone(),
        },
        CryptoError::WrongWallet { .. } => Error::StoredRecordInvalid {
            wallet: wallet.clone(),
        },
        _ => Error::Internal(InternalFault::CryptoRefused),
    })
}

/// Moves an active wallet whose refresh result is now durable to
/// `refreshing`.
///
/// # Errors
/// [`Error::Internal`] if the wallet is not active at the epoch before the
/// result's (the caller checked it at part 1 under the same lock order).
pub(crate) fn hold_pending(shard: &mut Shard, pending: Confirming) -> Result<(), Error> {
    let state = std::mem::replace(&mut shard.state, WalletState::Corrupt);
    match state {
        WalletState::Active(current) if next(current.epoch)? == pending.epoch() => {
            shard.state = WalletState::Refreshing(Box::new(Refreshing {
                current,
                pending,
                role: Role::Active,
            }));
            Ok(())
        }
        other => {
            shard.state = other;
            Err(Error::Internal(InternalFault::Invariant))
        }
    }
}

/// The digest of a wallet key record that a refresh confirmation signs:
/// the whole record (group key, verifying shares, members), since a
/// refresh keeps the output key whatever happened to the shares.
///
/// # Errors
/// [`Error::Internal`] if the record does not encode (not expected).
pub(crate) fn key_digest(key: &WalletKey) -> Result<[u8; 32], Error> {
    let bytes = key
        .to_bytes()
        .map_err(|_| Error::Internal(InternalFault::Serialization))?;
    Ok(Sha256::digest(&bytes).into())
}

/// Refuses a refresh confirmation that reaches an active wallet but
/// confirms another key record than the one it signs with (a refresh
/// aborted here, or one this member never switched to): only a
/// confirmation of the current record may be answered as switched.
///
/// # Errors
/// [`Error::DkgNotInPhase`].
pub(crate) fn check_late_confirmation(
    slot: &Slot,
    state: &WalletState,
    payload: &DkgPayload,
) -> Result<(), Error> {
    let (
        WalletState::Active(key) | WalletState::Rekeying(key),
        DkgPayload::RefreshConfirm { wallet_key, .. },
    ) = (state, payload)
    else {
        return Ok(());
    };
    if key_digest(key.key())?.as_slice() == wallet_key.0.as_slice() {
        Ok(())
    } else {
        Err(Error::DkgNotInPhase {
            wallet: slot.config.id.clone(),
        })
    }
}

impl<S: Store> Signer<S> {
    /// Counts a verified, matching refresh confirmation from `sender`
    /// (its `signature` stored with the pending result, so that it
    /// survives a restart and `--resume` can gather it here); when every
    /// participant's is in, switches the wallet to the new epoch durably
    /// (record, old key package deleted, the full set of confirmations
    /// kept, new security epoch, the retirement of the old share's data
    /// key due and the `refresh_switched` audit entry, one commit; a prune
    /// retires that key, outside the wallet's lock).
    ///
    /// # Errors
    /// [`Error::DkgNotInPhase`] when this member vetoed the session;
    /// [`Error::Store`] when the confirmation or the switch does not commit
    /// (nothing is counted; the wallet keeps signing with its current
    /// shares; the next delivery retries).
    pub(crate) fn refresh_confirmed(
        &self,
        slot: &Slot,
        shard: &mut Shard,
        now: Timestamp,
        (sender, signature): (Seat, HexBytes),
    ) -> Result<ConfirmationStatus, Error> {
        let wallet = &slot.config.id;
        let WalletState::Refreshing(r) = &shard.state else {
            return Err(Error::Internal(InternalFault::Invariant));
        };
        let ResultKind::Refresh { removed, .. } = r.pending.kind().clone() else {
            return Err(Error::Internal(InternalFault::Invariant));
        };
        let kind = DkgKind::Refresh {
            from_epoch: r.current.epoch,
            removed,
        };
        // A veto is a promise never to switch, whatever arrives after it.
        if crate::durable::is_abandoned(&self.store, wallet, r.pending.session())? {
            return Err(Error::DkgNotInPhase {
                wallet: wallet.clone(),
            });
        }
        let needed = participants(&slot.config, &shard.state, &kind);
        let WalletState::Refreshing(r) = &mut shard.state else {
            return Err(Error::Internal(InternalFault::Invariant));
        };
        if !needed.contains(&sender) {
            // A removed member's signed confirmation: it took no part.
            return Err(Error::DkgFailed {
                wallet: wallet.clone(),
                session: r.pending.session(),
                accuser: slot.seat,
                accused: Some(sender),
                fault: DkgFault::UnexpectedPayload,
                accusation: None,
            });
        }
        let new = r.pending.receive(sender, signature);
        let confirmed = r.pending.confirmed().count();
        let ops = if confirmed < needed.len() {
            if !new {
                return Ok(ConfirmationStatus::new(confirmed, needed.len(), false));
            }
            vec![received_op(wallet, &r.pending)?]
        } else {
            let mut ops = switch_ops(&self.store, wallet, &r.current, (&r.pending, r.role))?;
            ops.push(append_op(
                now,
                &AuditEvent::RefreshSwitched {
                    wallet: wallet.clone(),
                    session: hex::encode(r.pending.session().0),
                    from_epoch: r.current.epoch.0,
                    to_epoch: r.pending.epoch().0,
                    key_record: hex::encode(key_digest(r.pending.key())?),
                },
            ));
            ops
        };
        if let Err(source) = self.store.write(ops) {
            if new {
                r.pending.forget(sender);
            }
            return Err(Error::Store {
                wallet: wallet.clone(),
                source,
            });
        }
        if confirmed < needed.len() {
            return Ok(ConfirmationStatus::new(confirmed, needed.len(), false));
        }
        let WalletState::Refreshing(r) = std::mem::replace(&mut shard.state, WalletState::Corrupt)
        else {
            return Err(Error::Internal(InternalFault::Invariant));
        };
        let (epoch, role) = (r.pending.epoch(), r.role);
        let (key, share) = r.pending.into_parts();
        shard.replace_key(role.holding(SigningKey::new(epoch, key, share)));
        Ok(ConfirmationStatus::new(confirmed, needed.len(), true))
    }
}
