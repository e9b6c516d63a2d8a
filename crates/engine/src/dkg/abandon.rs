//! Abandoning a share refresh (`thresig refresh --abort`) by vetoes.
//!
//! A veto of a session says "I never released a confirmation of it and
//! never will". Only a member that never released its confirmation signs
//! one (the part-3 commit is the release point: a member holding the
//! result pending, or switched to it, refuses with `refresh_confirmed`).
//! Nobody switches without every participant's confirmation, so one
//! honest veto proves that nobody ever can; a member holding the result
//! pending cannot tell which veto is honest, so it discards only on the
//! valid, distinct vetoes of a threshold of participants, at least one of
//! them honest while fewer than the threshold are malicious. A veto signs
//! the epoch the refresh starts from, so it counts for no other refresh
//! reusing the session id.

use thresig_store::{Store, Timestamp};

use super::{DkgSession, seat_in};
use crate::api::Response;
use crate::audit::{AuditEvent, append_op};
use crate::dkg_msg::{DkgKind, DkgPayload, DkgSessionId, SignedDkgMessage};

use crate::durable::{DkgRecords, load_state, veto_ops};
use crate::error::Error;
use crate::ids::WalletEpoch;
use crate::refresh::participants;
use crate::signer::{Member, Shard, Signer, Slot, lock, store_error};
use crate::wallet::{ResultKind, WalletState};

/// The veto slots of one epoch, split among the members asking by
/// [`veto_cap`]. A veto record keeps its session from ever running here;
/// a member could otherwise fill the store by asking for vetoes of
/// made-up sessions. A switch deletes them (a veto signs its epoch and
/// counts for no later refresh), and a real stuck refresh needs one.
pub(crate) const MAX_VETOES: usize = 16;

/// The vetoes of one epoch a member keeps that one requester asked for:
/// [`MAX_VETOES`] divided by the threshold (at least one), the way every
/// per-coordinator budget is split, so fewer than the threshold of members
/// asking for vetoes of made-up sessions leave every other member room to
/// abort a real stuck refresh.
pub(crate) fn veto_cap(threshold: u16) -> usize {
    (MAX_VETOES / usize::from(threshold.max(1))).max(1)
}

impl<S: Store> Signer<S> {
    /// A DKG cancel: a relay's cancel of its run, a request for this
    /// member's veto of a refresh (`abandon`), or other members' vetoes
    /// that let it discard its pending result.
    pub(crate) fn cancel(
        &self,
        now: Timestamp,
        member: &Member<'_>,
        session: DkgSessionId,
        abandon: bool,
        abandonments: &[SignedDkgMessage],
    ) -> Result<Response, Error> {
        let (dropped, abandonment) = if !abandonments.is_empty() {
            (
                self.refresh_discard(now, member, session, abandonments)?,
                None,
            )
        } else if abandon {
            let (dropped, signed) = self.refresh_abandon(now, member, session)?;
            (dropped, Some(signed))
        } else {
            (self.dkg_cancel(now, member, session)?, None)
        };
        Ok(Response::DkgCancelled {
            dropped,
            abandonment,
        })
    }

    /// Signs this member's veto of the refresh `session` of its current
    /// epoch: it never released a confirmation of it and never will. The
    /// veto is recorded durably first, with its audit entry and a new
    /// security epoch (the
    /// session never runs here again, and a restored older store is caught
    /// at open), and a part 1 or 2 of the session in memory is dropped;
    /// whether one was. Signing again later writes nothing.
    ///
    /// # Errors
    /// [`Error::WalletNotActive`] for a wallet without a key (no refresh
    /// to veto);
    /// [`Error::RefreshConfirmed`] when this member holds the session's
    /// result pending: its part 3 released the confirmation, so the others
    /// may switch on it (`thresig refresh --resume` finishes it);
    /// [`Error::RefreshSwitched`] when this member switched to it;
    /// [`Error::StoredRecordInvalid`] when the store holds a record of the
    /// session that is neither a veto nor a refresh result;
    /// [`Error::VetoCapacity`] when this member holds [`veto_cap`] other
    /// vetoes of this epoch the same member asked for; [`Error::Store`]
    /// (nothing changes).
    pub(crate) fn refresh_abandon(
        &self,
        now: Timestamp,
        member: &Member<'_>,
        session: DkgSessionId,
    ) -> Result<(bool, SignedDkgMessage), Error> {
        let slot = member.slot();
        let requester = seat_in(slot, member.from());
        let wallet = &slot.config.id;
        let mut shard = lock(&self.store, slot)?;
        self.adopt_durable(slot, &mut shard)?;
        let Some(current) = shard.state.key().map(|k| k.epoch) else {
            return Err(Error::WalletNotActive {
                wallet: wallet.clone(),
            });
        };
        if matches!(&shard.state, WalletState::Refreshing(r) if r.pending.session() == session) {
            return Err(Error::RefreshConfirmed {
                wallet: wallet.clone(),
                session,
            });
        }
        let records = DkgRecords::read(&self.store, wallet)?;
        let abandoned = records.abandoned(session)?;
        // A result record of the session with no pending result is the one
        // a switch keeps: this member switched.
        if !abandoned && records.result_for(session)? {
            // Neither a veto nor a refresh result (such as a veto of a
            // dropped format): what it promised cannot be told.
            if !records.refresh_result_for(session)? {
                return Err(Error::StoredRecordInvalid {
                    wallet: wallet.clone(),
                });
            }
            return Err(Error::RefreshSwitched {
                wallet: wallet.clone(),
                session,
            });
        }
        if !abandoned {
            let cap = veto_cap(slot.config.threshold);
            if records.vetoes_by(requester) >= cap {
                return Err(Error::VetoCapacity {
                    wallet: wallet.clone(),
                    requester,
                    cap,
                });
            }
            // Durable before the signature leaves: after a restart this
            // member must still refuse to run the session.
            let mut ops = veto_ops(wallet, session, (current, requester), None)?;
            ops.push(super::audit::vetoed_op(now, wallet, session));
            self.store
                .write(ops)
                .map_err(|source| store_error(wallet, source))?;
        }
        // A finished part 3 still in memory here reported its commit
        // failed and is not durable (it was adopted above otherwise): its
        // confirmation never left, and it is dropped like any session.
        let dropped = drop_unfinished(&mut shard, session);
        let signed = SignedDkgMessage::sign(
            &self.identity,
            session,
            wallet.clone(),
            slot.seat,
            DkgPayload::RefreshAbandon {
                from_epoch: current,
            },
        );
        Ok((dropped, signed))
    }

    /// Discards this member's pending result of the refresh `session` on
    /// valid vetoes of it by at least a threshold of distinct participants
    /// (at least one of them honest, so nobody can switch), with its
    /// `refresh_discarded` audit entry in the same commit; whether a
    /// result was discarded (false: none of that session is held, as after
    /// an earlier discard). The state on disk is adopted first, so a switch
    /// or a part 3 that committed though it reported failure is seen.
    ///
    /// # Errors
    /// [`Error::DkgFailed`] accusing no one when fewer than the threshold
    /// of the vetoes verify (the relay's doing: nothing changes);
    /// [`Error::RefreshSwitched`] when the switch to the session's shares
    /// is durable (it cannot be undone); [`Error::Store`].
    pub(crate) fn refresh_discard(
        &self,
        now: Timestamp,
        member: &Member<'_>,
        session: DkgSessionId,
        vetoes: &[SignedDkgMessage],
    ) -> Result<bool, Error> {
        let slot = member.slot();
        let wallet = &slot.config.id;
        let mut shard = lock(&self.store, slot)?;
        self.adopt_durable(slot, &mut shard)?;
        let Some(key) = shard.state.key() else {
            return Err(Error::WalletNotActive {
                wallet: wallet.clone(),
            });
        };
        let (from_epoch, threshold) = (key.epoch, usize::from(key.key().threshold()));
        let removed = match &shard.state {
            WalletState::Refreshing(r) if r.pending.session() == session => {
                match r.pending.kind() {
                    ResultKind::Refresh { removed, .. } => removed.clone(),
                    ResultKind::Fresh => Vec::new(),
                }
            }
            _ => slot.config.removal(),
        };
        let kind = DkgKind::Refresh {
            from_epoch,
            removed,
        };
        let vetoed_by = participants(&slot.config, &shard.state, &kind)
            .into_iter()
            .filter(|seat| {
                vetoes
                    .iter()
                    .any(|m| m.sender == *seat && vetoes_refresh(slot, (session, from_epoch), m))
            })
            .count();
        if vetoed_by < threshold {
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
        if durable.key().is_some_and(|key| key.epoch == epoch) {
            shard.replace_key(durable);
            return Err(Error::RefreshSwitched {
                wallet: wallet.clone(),
                session,
            });
        }
        // Discarded as a veto is kept: the session never runs here again.
        let mut ops = veto_ops(
            wallet,
            session,
            (from_epoch, seat_in(slot, member.from())),
            Some(epoch),
        )?;
        ops.push(append_op(
            now,
            &AuditEvent::RefreshDiscarded {
                wallet: wallet.clone(),
                session: hex::encode(session.0),
                epoch: from_epoch.0,
            },
        ));
        self.store
            .write(ops)
            .map_err(|source| store_error(wallet, source))?;
        let state = std::mem::replace(&mut shard.state, WalletState::Corrupt);
        shard.state = match state {
            WalletState::Refreshing(r) => r.without_pending(),
            other => other,
        };
        Ok(true)
    }
}

/// Whether `msg` is a validly signed veto of the refresh `session` of the
/// wallet's epoch `from_epoch` (its sender's seat is checked by the
/// caller).
fn vetoes_refresh(
    slot: &Slot,
    (session, from_epoch): (DkgSessionId, WalletEpoch),
    msg: &SignedDkgMessage,
) -> bool {
    msg.session == session
        && msg.wallet == slot.config.id
        && msg.payload == DkgPayload::RefreshAbandon { from_epoch }
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
