//! Abandoning a share refresh (`thresig refresh --abort`).
//!
//! A member that released its confirmation of a refresh must keep its
//! pending shares: the others may hold every confirmation and switch, and
//! if this member then dropped its new share, neither epoch would keep a
//! threshold of shares. It discards them only on proof that nobody can
//! ever switch: a signed abandonment of the session by one of its
//! participants. A member signs one only while it holds no part-3 result
//! of the session, and drops the session (its secrets) as it signs, so no
//! confirmation of it can ever exist, and every switch needs one.

use thresig_store::Store;

use super::DkgSession;
use crate::api::Response;
use crate::dkg_msg::{DkgKind, DkgPayload, DkgSessionId, SignedDkgMessage};
use crate::durable::{abandoned_op, abort_ops, is_abandoned, load_state, result_stored_for};
use crate::error::Error;
use crate::refresh::participants;
use crate::signer::{Member, Shard, Signer, Slot, lock, store_error};
use crate::wallet::{ResultKind, WalletState};

impl<S: Store> Signer<S> {
    /// A DKG cancel: a relay's cancel of its run, a request for this
    /// member's abandonment of a refresh (`abandon`), or other members'
    /// abandonments that let it discard its pending result.
    pub(crate) fn cancel(
        &self,
        member: &Member<'_>,
        session: DkgSessionId,
        abandon: bool,
        abandonments: &[SignedDkgMessage],
    ) -> Result<Response, Error> {
        let (dropped, abandonment) = if !abandonments.is_empty() {
            (
                self.refresh_discard(member.slot(), session, abandonments)?,
                None,
            )
        } else if abandon {
            let (dropped, signed) = self.refresh_abandon(member.slot(), session)?;
            (dropped, Some(signed))
        } else {
            (self.dkg_cancel(member, session)?, None)
        };
        Ok(Response::DkgCancelled {
            dropped,
            abandonment,
        })
    }

    /// Signs this member's abandonment of the refresh `session`, records
    /// it durably (the session id never runs here again) and drops the
    /// session from memory (whoever started it); whether one was dropped.
    /// Signing again later is harmless: it still holds no result.
    ///
    /// # Errors
    /// [`Error::WalletNotActive`] for a wallet without a key (no refresh
    /// to abandon);
    /// [`Error::RefreshConfirmed`] when this member holds a part-3 result
    /// of the session (pending, or switched to): the refresh can still
    /// complete, and `thresig refresh --resume` finishes it;
    /// [`Error::Store`] when the store cannot say (nothing changes).
    pub(crate) fn refresh_abandon(
        &self,
        slot: &Slot,
        session: DkgSessionId,
    ) -> Result<(bool, SignedDkgMessage), Error> {
        let wallet = &slot.config.id;
        let mut shard = lock(&self.store, slot)?;
        self.adopt_durable(slot, &mut shard)?;
        if !matches!(
            shard.state,
            WalletState::Active(_) | WalletState::Refreshing(_) | WalletState::Rekeying(_)
        ) {
            return Err(Error::WalletNotActive {
                wallet: wallet.clone(),
            });
        }
        let abandoned = is_abandoned(&self.store, wallet, session)?;
        let holds = shard
            .state
            .confirming()
            .is_some_and(|c| c.session() == session)
            || (!abandoned && result_stored_for(&self.store, wallet, session)?);
        if holds {
            return Err(Error::RefreshConfirmed {
                wallet: wallet.clone(),
                session,
            });
        }
        // Durable before the signature leaves: after a restart this member
        // must still refuse to run the session again.
        if !abandoned {
            self.store
                .write(vec![abandoned_op(wallet, session)?])
                .map_err(|source| store_error(wallet, source))?;
        }
        // A finished part 3 still in memory here reported its commit
        // failed and is not durable: it released no confirmation either.
        let dropped = shard.dkg.as_ref().is_some_and(|s| s.id == session);
        if dropped {
            shard.dkg = None;
        }
        let signed = SignedDkgMessage::sign(
            &self.identity,
            session,
            wallet.clone(),
            slot.seat,
            DkgPayload::RefreshAbandon,
        );
        Ok((dropped, signed))
    }

    /// Discards this member's pending result of the refresh `session` on a
    /// verified abandonment of it by one of its participants; whether a
    /// result was discarded (false: none of that session is held, as after
    /// an earlier discard). The state on disk is adopted first, so a switch
    /// or a part 3 that committed though it reported failure is seen.
    ///
    /// # Errors
    /// [`Error::DkgFailed`] accusing no one when no abandonment verifies
    /// (the relay's doing: nothing changes); [`Error::RefreshConfirmed`]
    /// when the switch to the session's shares is durable (it cannot be
    /// undone: the abandonment's signer signed both); [`Error::Store`].
    pub(crate) fn refresh_discard(
        &self,
        slot: &Slot,
        session: DkgSessionId,
        abandonments: &[SignedDkgMessage],
    ) -> Result<bool, Error> {
        let wallet = &slot.config.id;
        let mut shard = lock(&self.store, slot)?;
        self.adopt_durable(slot, &mut shard)?;
        let removed = match &shard.state {
            WalletState::Refreshing(r) if r.pending.session() == session => {
                match r.pending.kind() {
                    ResultKind::Refresh { removed, .. } => removed.clone(),
                    ResultKind::Fresh => Vec::new(),
                }
            }
            _ => slot.config.removal(),
        };
        // Only the removal set decides who takes part.
        let kind = DkgKind::Refresh {
            from_epoch: crate::ids::WalletEpoch::INITIAL,
            removed,
        };
        let proven = abandonments
            .iter()
            .any(|m| abandons(slot, (&shard.state, &kind), session, m));
        if !proven {
            return Err(super::dkg_failed(
                slot,
                session,
                None,
                crate::error::DkgFault::BadSignature,
            ));
        }
        if drop_unfinished(&mut shard, session) {
            return Ok(true);
        }
        let epoch = match &shard.state {
            WalletState::Refreshing(r) if r.pending.session() == session => r.pending.epoch(),
            _ => return Ok(false),
        };
        // A switch whose commit reported failure may be durable: the record
        // then names the new shares, and the old ones are gone.
        let durable = load_state(&self.store, &slot.config, slot.seat)
            .map_err(|source| store_error(wallet, source))?;
        if let WalletState::Active(key) = durable
            && key.epoch == epoch
        {
            shard.replace_key(WalletState::Active(key));
            return Err(Error::RefreshConfirmed {
                wallet: wallet.clone(),
                session,
            });
        }
        self.store
            .write(abort_ops(wallet, session, epoch)?)
            .map_err(|source| store_error(wallet, source))?;
        let state = std::mem::replace(&mut shard.state, WalletState::Corrupt);
        shard.state = match state {
            WalletState::Refreshing(r) => WalletState::Active(r.current),
            other => other,
        };
        Ok(true)
    }
}

/// Whether `msg` is a valid abandonment of `session` by a participant of
/// a refresh of `kind`'s removal set from the wallet in `state`.
fn abandons(
    slot: &Slot,
    (state, kind): (&WalletState, &DkgKind),
    session: DkgSessionId,
    msg: &SignedDkgMessage,
) -> bool {
    msg.session == session
        && msg.wallet == slot.config.id
        && msg.payload == DkgPayload::RefreshAbandon
        && participants(&slot.config, state, kind).contains(&msg.sender)
        && msg.verify(&slot.config)
}

/// Drops the session from memory if it is there: it holds no durable
/// result (the caller adopted a durable one first); whether it was.
fn drop_unfinished(shard: &mut Shard, session: DkgSessionId) -> bool {
    let held = matches!(&shard.dkg, Some(DkgSession { id, .. }) if *id == session);
    if held {
        shard.dkg = None;
    }
    held
}
