//! Abandoning a share refresh (`thresig refresh --abort`) by vetoes.
//!
//! A veto of a session says "I have not switched to it and never will".
//! Any participant that has not switched may sign one; it records the
//! veto durably first, and a member holding a veto never switches to the
//! session nor runs it again. One veto proves nothing about the others:
//! its signer may be malicious and have confirmed the session as well, so
//! a member discards its pending result only on the vetoes of every
//! participant. Then no honest participant can ever switch, and a
//! malicious one that did loses only its own share.

use thresig_store::Store;

use super::DkgSession;
use crate::api::Response;
use crate::dkg_msg::{DkgKind, DkgPayload, DkgSessionId, SignedDkgMessage};

use crate::durable::{is_abandoned, load_state, result_stored_for, veto_ops};
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

    /// Signs this member's veto of the refresh `session`: it has not
    /// switched to it and never will. The veto is recorded durably with a
    /// new security epoch (the session id never runs here again, and a
    /// restored older store is caught at open), the session is dropped
    /// from memory, and a pending result of it is discarded in the same
    /// commit (having vetoed, this member can never use it); whether a
    /// session or result was dropped. Signing again later is harmless.
    ///
    /// A single veto discards nothing elsewhere: its signer may be
    /// malicious and have confirmed the session too. Another member
    /// discards only on the vetoes of every participant
    /// ([`Self::refresh_discard`]).
    ///
    /// # Errors
    /// [`Error::WalletNotActive`] for a wallet without a key (no refresh
    /// to veto);
    /// [`Error::RefreshSwitched`] when this member switched to the
    /// session's shares: the refresh completed here, and `thresig refresh
    /// --resume` finishes it at the others;
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
        let pending = match &shard.state {
            WalletState::Refreshing(r) if r.pending.session() == session => Some(r.pending.epoch()),
            _ => None,
        };
        // A result record of the session with no pending result is the one
        // a switch keeps: this member switched.
        if pending.is_none() && !abandoned && result_stored_for(&self.store, wallet, session)? {
            return Err(Error::RefreshSwitched {
                wallet: wallet.clone(),
                session,
            });
        }
        // Durable before the signature leaves: after a restart this member
        // must still refuse to run or switch to the session.
        if !abandoned || pending.is_some() {
            self.store
                .write(veto_ops(wallet, session, pending)?)
                .map_err(|source| store_error(wallet, source))?;
        }
        // A finished part 3 still in memory here reported its commit
        // failed and is not durable: it is dropped like any session.
        let mut dropped = drop_unfinished(&mut shard, session);
        if pending.is_some() {
            let state = std::mem::replace(&mut shard.state, WalletState::Corrupt);
            shard.state = match state {
                WalletState::Refreshing(r) => WalletState::Active(r.current),
                other => other,
            };
            dropped = true;
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

    /// Discards this member's pending result of the refresh `session` on
    /// verified vetoes of it by every one of its participants (then every
    /// honest participant promised never to switch); whether a
    /// result was discarded (false: none of that session is held, as after
    /// an earlier discard). The state on disk is adopted first, so a switch
    /// or a part 3 that committed though it reported failure is seen.
    ///
    /// # Errors
    /// [`Error::DkgFailed`] accusing no one when a participant's veto is
    /// missing or does not verify (the relay's doing: nothing changes); [`Error::RefreshSwitched`]
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
        let proven = participants(&slot.config, &shard.state, &kind)
            .iter()
            .all(|seat| {
                abandonments
                    .iter()
                    .any(|m| m.sender == *seat && abandons(slot, (&shard.state, &kind), session, m))
            });
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
            return Err(Error::RefreshSwitched {
                wallet: wallet.clone(),
                session,
            });
        }
        // Discarded as a veto discards: the session never runs here again.
        self.store
            .write(veto_ops(wallet, session, Some(epoch))?)
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
