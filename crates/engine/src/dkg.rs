//! DKG participation: the signer-side checks of DESIGN.md §4 and §6.
//!
//! A signer joins a DKG only for a (wallet, t, n, ordered roster) its own
//! configuration defines. Part 1 sends a signed round-1 package with a fresh
//! HPKE key; part 2 checks every peer's signature, computes the echo hash and
//! seals one round-2 package to each peer; part 3 checks every round-2
//! message (signature, recipient, echo hash, seal), derives the share,
//! commits the key package durably (insert-if-absent, with the result
//! awaiting confirmation) and signs a confirmation of (session, output key,
//! transcript hash). The wallet becomes `active` only when all n signed
//! confirmations verify; they are accepted from any sender at any time, also
//! after a restart. Secret packages and the HPKE key live in memory only: a
//! restart aborts a DKG in progress. A failed check names the accusing and
//! the accused seats and stops the session.

mod abandon;
mod audit;

pub(crate) use audit::EndingBudget;

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::SigningKey;

use crate::audit::{AuditEvent, append_op};
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use thresig_crypto::{DkgRound1, DkgRound2, Round1Package, Round2Package, Seat};
use thresig_store::{Conflict, Store, WriteOutcome};

use crate::api::HexBytes;
use crate::check::tagged_hash;
use crate::config::IdentityKey;
use crate::dkg_msg::{
    DkgKind, DkgPayload, DkgSessionId, HpkeSecret, SignedDkgMessage, echo_hash, hpke_keypair, open,
    seal,
};
use crate::durable::{
    abort_ops, confirmation_ops, pending_ops, result_is_stored, result_stored_for,
};
use crate::error::{DkgFault, Error, InternalFault};
use crate::ids::{CoordinatorId, WalletEpoch};
use crate::refresh::{participants, result_kind};
use crate::signer::{Member, Shard, Signer, Slot, lock};
use crate::wallet::{Confirming, ResultKind, SigningKey as WalletSigningKey, WalletState};
use thresig_store::Timestamp;
use thresig_store::WalletId;

/// A coordinator's proposal to run a DKG for a wallet, or to refresh its
/// shares. The signer joins only if threshold and roster equal its own
/// configuration (and, for a refresh, the removal set its `remove` list).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DkgProposal {
    /// The session.
    pub session: DkgSessionId,
    /// The wallet.
    pub wallet: WalletId,
    /// The proposed threshold.
    pub threshold: u16,
    /// The proposed ordered roster.
    pub roster: Vec<IdentityKey>,
    /// A fresh DKG or a refresh of the wallet's shares.
    #[serde(default)]
    pub kind: DkgKind,
}

impl DkgProposal {
    /// A proposal (see the field docs).
    pub fn new(
        session: DkgSessionId,
        wallet: WalletId,
        threshold: u16,
        roster: Vec<IdentityKey>,
    ) -> Self {
        Self {
            session,
            wallet,
            threshold,
            roster,
            kind: DkgKind::Fresh,
        }
    }

    /// This proposal as a session of `kind` (a refresh).
    #[must_use]
    pub fn with_kind(mut self, kind: DkgKind) -> Self {
        self.kind = kind;
        self
    }
}

/// How far a wallet's confirmations are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ConfirmationStatus {
    /// Members whose confirmation verified.
    pub confirmed: usize,
    /// Members that must confirm: the roster (for a refresh, without the
    /// removed seats).
    pub needed: usize,
    /// Whether the wallet is now active.
    pub active: bool,
}

impl ConfirmationStatus {
    /// A confirmation count (see the field docs), as a transport decodes it.
    pub fn new(confirmed: usize, needed: usize, active: bool) -> Self {
        Self {
            confirmed,
            needed,
            active,
        }
    }
}

/// A DKG in progress on this signer (memory only).
pub(crate) struct DkgSession {
    id: DkgSessionId,
    /// What the session makes (fixed by its part 1).
    kind: DkgKind,
    /// The member that started it (part 1): the only one whose parts 2
    /// and 3 and cancel of the session are accepted, so another member
    /// cannot end or derail it.
    coordinator: CoordinatorId,
    phase: Phase,
    /// When part 1 plus [`crate::Limits::dkg_session_ttl`] passes: from
    /// then on the session no longer holds the wallet, and its secrets go
    /// at the next request or prune.
    expires: Timestamp,
}

impl DkgSession {
    /// The session's id if it runs a refresh.
    pub(crate) fn refresh(&self) -> Option<DkgSessionId> {
        (matches!(self.kind, DkgKind::Refresh { .. }) && !self.failed()).then_some(self.id)
    }

    /// Whether the session still holds the wallet at `now`. A finished part
    /// 3 always does: its result may be durable, and only its byte-identical
    /// retry, a new start that finds it durable (and adopts it), an abort
    /// or a restart settles it; it holds no HPKE key or secret package any
    /// more.
    fn live(&self, now: Timestamp) -> bool {
        matches!(self.phase, Phase::Finished { .. }) || now < self.expires
    }

    /// Whether the session is one whose part 3 failed with an accusation
    /// ([`Phase::Failed`]): over, kept only for its identical retry.
    fn failed(&self) -> bool {
        matches!(self.phase, Phase::Failed { .. })
    }
}

impl<S: Store> Signer<S> {
    /// Drops the wallet's DKG session if it expired, and logs that it
    /// did; its secret package and HPKE key are zeroized on drop (frost's
    /// and x25519-dalek's own `Drop`).
    pub(crate) fn expire_dkg(&self, now: Timestamp, slot: &Slot, shard: &mut Shard) {
        if shard.dkg.as_ref().is_some_and(|s| !s.live(now))
            && let Some(gone) = shard.dkg.take()
            && !gone.failed()
        {
            self.audit_dkg_dropped(now, &slot.config.id, &gone, "expired");
        }
    }

    /// The kind of the wallet's DKG `session` if it is running, for the
    /// audit entry of its failure (the failure takes the session away).
    pub(crate) fn running_kind(
        &self,
        member: &Member<'_>,
        session: DkgSessionId,
    ) -> Option<DkgKind> {
        let shard = lock(&self.store, member.slot()).ok()?;
        shard
            .dkg
            .as_ref()
            .filter(|s| s.id == session && !s.failed())
            .map(|s| s.kind.clone())
    }
}

enum Phase {
    /// Part 1 sent; waiting for the peers' round-1 messages.
    Round1 {
        state: DkgRound1,
        hpke: HpkeSecret,
        package: Vec<u8>,
        hpke_key: Vec<u8>,
    },
    /// Part 2 sent; waiting for the round-2 messages addressed to us. The
    /// byte-identical part-2 request (`request`) is answered again with
    /// `reply`: a reply lost in transport must not fail the DKG.
    Round2 {
        state: DkgRound2,
        hpke: HpkeSecret,
        echo: [u8; 32],
        request: [u8; 32],
        reply: Vec<SignedDkgMessage>,
    },
    /// Part 3 computed the result, but its commit has not been seen to be
    /// durable: the byte-identical part-3 request (`request`) re-attempts
    /// the same commit. The HPKE key is already gone.
    Finished {
        result: Box<Confirming>,
        request: [u8; 32],
    },
    /// Part 3 failed with this member's signed accusation (it computed and
    /// committed nothing, and never confirms). Kept only to answer the
    /// byte-identical part-3 request (`request`) again with the same
    /// refusal, since a reply lost in transport must not lose the proof;
    /// it holds no secret beyond the key the accusation already reveals.
    /// It never holds the wallet: any start replaces it, and a cancel, an
    /// abort or its expiry drops it.
    Failed {
        request: [u8; 32],
        accused: Seat,
        fault: DkgFault,
        accusation: Box<SignedDkgMessage>,
    },
}

impl Phase {
    /// The phase that answers the byte-identical retry of a part-3
    /// `request` that failed with `error`, if `error` carries an
    /// accusation.
    fn failed(request: [u8; 32], error: &Error) -> Option<Self> {
        match error {
            Error::DkgFailed {
                accused: Some(accused),
                fault,
                accusation: Some(accusation),
                ..
            } => Some(Self::Failed {
                request,
                accused: *accused,
                fault: *fault,
                accusation: accusation.clone(),
            }),
            _ => None,
        }
    }
}

impl<S: Store> Signer<S> {
    /// DKG part 1: checks the proposal against the configuration and
    /// returns this member's signed round-1 message. The same session still
    /// in part 1 gets the same message again (its reply may have been
    /// lost). While another session runs (in part 1 or 2, until it expires)
    /// the start is refused, so a second coordinator cannot silently reset
    /// it; an expired session is replaced. A finished part 3 whose commit
    /// turned out durable is adopted first (the wallet then awaits that
    /// result's confirmations, as after a restart), never dropped; one whose
    /// commit failed holds the wallet like a session in progress, for its
    /// byte-identical retry (see [`DkgSession::live`]).
    ///
    /// # Errors
    /// [`Error::DkgMismatch`] when threshold or
    /// roster differ from the configuration, [`Error::WalletAlreadyKeyed`]
    /// for a wallet that is already active (or later), [`Error::DkgBusy`]
    /// naming the session that holds the wallet, [`Error::DkgNotInPhase`]
    /// for a start of the session already past part 1 or already cancelled
    /// by `from`, [`Error::Store`]
    /// when the store cannot say whether a finished part 3 is durable
    /// (nothing changes).
    pub(crate) fn dkg_start<R: RngCore + CryptoRng>(
        &self,
        now: Timestamp,
        member: &Member<'_>,
        proposal: &DkgProposal,
        rng: &mut R,
    ) -> Result<SignedDkgMessage, Error> {
        let (slot, from) = (member.slot(), member.from());
        let config = &slot.config;
        if proposal.threshold != config.threshold || proposal.roster != config.roster {
            return Err(Error::DkgMismatch {
                wallet: config.id.clone(),
            });
        }
        let mut shard = lock(&self.store, slot)?;
        // Dropping a durable result from memory would leave this member
        // unable to take its confirmations until a restart loads it.
        self.adopt_durable(slot, &mut shard)?;
        match &proposal.kind {
            DkgKind::Fresh
                if !matches!(
                    shard.state,
                    WalletState::DkgPending | WalletState::AwaitingConfirmations(_)
                ) =>
            {
                return Err(Error::WalletAlreadyKeyed {
                    wallet: config.id.clone(),
                });
            }
            DkgKind::Fresh => {}
            DkgKind::Refresh {
                from_epoch,
                removed,
            } => {
                crate::refresh::check_proposal(
                    slot,
                    &shard,
                    proposal.session,
                    *from_epoch,
                    removed,
                )?;
                // The result kept of the refresh this member switched on
                // names its session: a run under the same id could replay
                // that run's confirmations to blame their signers.
                if matches!(shard.state, WalletState::Active(_))
                    && result_stored_for(&self.store, &config.id, proposal.session)?
                {
                    return Err(Error::DkgNotInPhase {
                        wallet: config.id.clone(),
                    });
                }
            }
        }
        self.expire_dkg(now, slot, &mut shard);
        // A part 3 that failed holds nothing: a start finds the wallet as
        // it would have had the session been dropped at its failure.
        if shard.dkg.as_ref().is_some_and(DkgSession::failed) {
            shard.dkg = None;
        }
        let round1 = |package: &[u8], hpke_key: &[u8]| {
            SignedDkgMessage::sign_round1(
                &self.identity,
                proposal.session,
                config.id.clone(),
                slot.seat,
                DkgPayload::Round1 {
                    package: HexBytes(package.to_vec()),
                    hpke_key: HexBytes(hpke_key.to_vec()),
                },
                (&proposal.kind, config.threshold),
            )
        };
        match &shard.dkg {
            Some(held)
                if held.id != proposal.session
                    || held.coordinator != from
                    || held.kind != proposal.kind =>
            {
                return Err(busy(slot, held));
            }
            Some(DkgSession {
                phase: Phase::Round1 {
                    package, hpke_key, ..
                },
                ..
            }) => return Ok(round1(package, hpke_key)),
            Some(_) => {
                return Err(Error::DkgNotInPhase {
                    wallet: config.id.clone(),
                });
            }
            // The relay cancelled this session before its start arrived (it
            // gave up waiting): the start must not hold the wallet now.
            None if shard.dkg_cancelled.get(&from) == Some(&proposal.session) => {
                return Err(Error::DkgNotInPhase {
                    wallet: config.id.clone(),
                });
            }
            None => {}
        }
        let (state, package) = match &proposal.kind {
            DkgKind::Fresh => {
                let params = config.params().map_err(|_| Error::DkgMismatch {
                    wallet: config.id.clone(),
                })?;
                DkgRound1::start(params, slot.seat, config.script_tree, rng)
                    .map_err(|_| Error::Internal(InternalFault::CryptoRefused))?
            }
            DkgKind::Refresh { removed, .. } => crate::refresh::start(slot, &shard, removed, rng)?,
        };
        let package = package
            .to_bytes()
            .map_err(|_| Error::Internal(InternalFault::Serialization))?;
        let (hpke, hpke_key) = hpke_keypair(rng);
        let message = round1(&package, &hpke_key);
        shard.dkg = Some(DkgSession {
            id: proposal.session,
            kind: proposal.kind.clone(),
            coordinator: from,
            phase: Phase::Round1 {
                state,
                hpke,
                package,
                hpke_key,
            },
            expires: now.saturating_add(self.limits.dkg_session_ttl),
        });
        Ok(message)
    }

    /// DKG part 2: checks the peers' signed round-1 messages (one from each
    /// other member) and returns one signed, sealed round-2 message per
    /// peer. The byte-identical request is answered again with the same
    /// messages while the session waits for part 3 (a reply lost in
    /// transport is asked for again).
    ///
    /// # Errors
    /// [`Error::DkgNotInPhase`] without a matching session in part 1 (or,
    /// in part 2, for any request but the identical one);
    /// [`Error::DkgFailed`] naming the accused seat (bad signature, wrong
    /// session, missing or duplicate sender, invalid package). The session
    /// is over after a failure.
    pub(crate) fn dkg_round2<R: RngCore + CryptoRng>(
        &self,
        now: Timestamp,
        member: &Member<'_>,
        session: DkgSessionId,
        round1: &[SignedDkgMessage],
        rng: &mut R,
    ) -> Result<Vec<SignedDkgMessage>, Error> {
        let (slot, from) = (member.slot(), member.from());
        let wallet = &slot.config.id;
        let mut shard = lock(&self.store, slot)?;
        self.expire_dkg(now, slot, &mut shard);
        coordinated_by(&shard, slot, session, from)?;
        let request = request_hash(ROUND2_DOMAIN, round1)?;
        if let Some(DkgSession {
            id,
            phase:
                Phase::Round2 {
                    request: first,
                    reply,
                    ..
                },
            ..
        }) = &shard.dkg
            && *id == session
            && *first == request
        {
            return Ok(reply.clone());
        }
        let (expires, kind, phase) = take_phase(&mut shard, slot, session)?;
        let (state, hpke, own_package, own_key) = match phase {
            Phase::Round1 {
                state,
                hpke,
                package,
                hpke_key,
            } => (state, hpke, package, hpke_key),
            other => {
                let held = (from, kind, expires);
                return Err(restore(&mut shard, session, held, other, slot));
            }
        };
        let fail = |accused, fault| dkg_failed(slot, session, accused, fault);
        let me = slot.seat;
        let own_len = own_package.len();
        let mut by_seat: BTreeMap<Seat, (Vec<u8>, Vec<u8>)> = BTreeMap::new();
        by_seat.insert(me, (own_package, own_key));
        for msg in round1 {
            check_envelope(slot, session, msg)?;
            // Checked when present (a sender of an earlier version sends
            // none; required once the operator says every member is
            // upgraded): one that does not verify for this session's kind,
            // or is missing, may be the relay's doing, so it accuses nobody.
            match msg.kind_signed(&slot.config, &kind) {
                Some(false) => return Err(fail(NO_MEMBER, DkgFault::BadSignature)),
                None if self.limits.require_round1_kind_signature => {
                    return Err(fail(NO_MEMBER, DkgFault::MissingKindSignature));
                }
                _ => {}
            }
            let DkgPayload::Round1 { package, hpke_key } = &msg.payload else {
                return Err(fail(NO_MEMBER, DkgFault::UnexpectedPayload));
            };
            if by_seat
                .insert(msg.sender, (package.0.clone(), hpke_key.0.clone()))
                .is_some()
            {
                return Err(fail(NO_MEMBER, DkgFault::DuplicateSender));
            }
        }
        let expected = participants(&slot.config, &shard.state, &kind);
        if by_seat.keys().any(|s| !expected.contains(s)) {
            return Err(fail(NO_MEMBER, DkgFault::UnexpectedPayload));
        }
        if missing_seat(&expected, by_seat.keys().copied()).is_some() {
            return Err(fail(NO_MEMBER, DkgFault::MissingSender));
        }
        // Every member's package carries as many commitments as this
        // member's own, and the encoding of a fixed count of points has a
        // fixed length: checked before any point is decoded, since decoding
        // is what costs, and a package may be as large as a request.
        for (&seat, (package, _)) in &by_seat {
            if package.len() != own_len {
                return Err(fail(Some(seat), DkgFault::WrongPackageLength));
            }
        }
        let echo_input: Vec<(Seat, &[u8], &[u8])> = by_seat
            .iter()
            .map(|(s, (p, k))| (*s, p.as_slice(), k.as_slice()))
            .collect();
        let echo = echo_hash(&session, &slot.config, &kind, &echo_input);
        let mut peers = Vec::with_capacity(by_seat.len());
        for (&seat, (package, _)) in by_seat.iter().filter(|(s, _)| **s != me) {
            let package = Round1Package::from_bytes(package)
                .map_err(|_| fail(Some(seat), DkgFault::InvalidPackage))?;
            peers.push((seat, package));
        }
        let (state, outgoing) = state.receive(peers).map_err(|e| {
            let accused = e.culprits().first().copied();
            fail(accused, DkgFault::InvalidPackage)
        })?;
        let mut messages = Vec::with_capacity(outgoing.len());
        for (to, package) in outgoing {
            let (_, key) = by_seat
                .get(&to)
                .ok_or(Error::Internal(InternalFault::Invariant))?;
            let plain = package
                .to_bytes()
                .map_err(|_| Error::Internal(InternalFault::Serialization))?;
            let sealed = seal(key, &session, wallet, me, to, &plain, rng)
                .ok_or_else(|| fail(Some(to), DkgFault::InvalidPackage))?;
            let payload = DkgPayload::Round2 {
                to,
                sealed: HexBytes(sealed),
                echo: HexBytes(echo.to_vec()),
            };
            messages.push(SignedDkgMessage::sign(
                &self.identity,
                session,
                wallet.clone(),
                slot.seat,
                payload,
            ));
        }
        shard.dkg = Some(DkgSession {
            id: session,
            kind,
            coordinator: from,
            phase: Phase::Round2 {
                state,
                hpke,
                echo,
                request,
                reply: messages.clone(),
            },
            expires,
        });
        Ok(messages)
    }

    /// DKG part 3: checks the round-2 messages addressed to this member
    /// (signature, recipient, echo hash, seal), derives the share, commits
    /// the key package (insert-if-absent) with the result awaiting
    /// confirmation, and returns this member's signed confirmation. A
    /// failure with an accusation is answered again, the same, for the
    /// byte-identical request ([`Phase::Failed`]).
    ///
    /// # Errors
    /// [`Error::DkgNotInPhase`]; [`Error::DkgFailed`] naming the accused seat;
    /// [`Error::KeyPackagePresent`] when a key package is already stored
    /// for the wallet (a later DKG never overwrites it); [`Error::Store`].
    pub(crate) fn dkg_finish(
        &self,
        now: Timestamp,
        member: &Member<'_>,
        session: DkgSessionId,
        round2: &[SignedDkgMessage],
    ) -> Result<SignedDkgMessage, Error> {
        let (slot, from) = (member.slot(), member.from());
        let wallet = &slot.config.id;
        let mut shard = lock(&self.store, slot)?;
        self.expire_dkg(now, slot, &mut shard);
        coordinated_by(&shard, slot, session, from)?;
        let request = request_hash(FINISH_DOMAIN, round2)?;
        if let Some(DkgSession {
            id,
            phase:
                Phase::Failed {
                    request: first,
                    accused,
                    fault,
                    accusation,
                },
            ..
        }) = &shard.dkg
            && *id == session
            && *first == request
        {
            // Its reply may have been lost: the same refusal and
            // accusation again; the session stays failed.
            return Err(Error::DkgFailed {
                wallet: wallet.clone(),
                session,
                accuser: slot.seat,
                accused: Some(*accused),
                fault: *fault,
                accusation: Some(accusation.clone()),
            });
        }
        match shard.dkg.take() {
            Some(DkgSession {
                id,
                kind,
                phase: Phase::Round2 {
                    state, hpke, echo, ..
                },
                expires,
                coordinator,
            }) if id == session => {
                still_active(slot, &shard.state, &kind)?;
                let result = match self.compute_result(
                    slot,
                    (session, &kind),
                    &shard.state,
                    round2,
                    (state, &hpke, echo),
                ) {
                    Ok(result) => result,
                    Err(error) => {
                        shard.dkg = Phase::failed(request, &error).map(|phase| DkgSession {
                            id,
                            kind,
                            coordinator,
                            phase,
                            expires,
                        });
                        return Err(error);
                    }
                };
                let hold = (coordinator, kind, expires);
                self.commit_result(now, slot, &mut shard, (session, request), result, hold)
            }
            Some(DkgSession {
                id,
                kind,
                phase:
                    Phase::Finished {
                        result,
                        request: first,
                    },
                expires,
                coordinator,
            }) if id == session && first == request => {
                // The first try's commit failed: the checks hold for the
                // retry too, which is this member's release.
                still_active(slot, &shard.state, &kind)?;
                let hold = (coordinator, kind, expires);
                self.commit_result(now, slot, &mut shard, (session, request), *result, hold)
            }
            other => {
                shard.dkg = other;
                // A result already durable answers its own session again,
                // also once a refresh switched to it (for a member that
                // missed the confirmations).
                self.with_held(slot, &shard, session, |c| {
                    c.confirmation(&self.identity, wallet, slot.seat)
                })?
            }
        }
    }

    /// The signed confirmations of the refresh (or DKG) `session` this
    /// member holds: its own, signed again, and every other member's it
    /// counted ([`Request::RefreshConfirmations`](crate::Request)).
    ///
    /// # Errors
    /// [`Error::DkgBusy`] when it holds none but still runs the session
    /// (it may yet release: `--abort` asks it for no veto);
    /// [`Error::DkgNotInPhase`] when it neither holds a result of the
    /// session nor runs it (it refuses the session's part 3 from now on);
    /// [`Error::Store`].
    pub(crate) fn refresh_confirmations(
        &self,
        now: Timestamp,
        slot: &Slot,
        session: DkgSessionId,
    ) -> Result<Vec<SignedDkgMessage>, Error> {
        let wallet = &slot.config.id;
        let mut shard = lock(&self.store, slot)?;
        self.expire_dkg(now, slot, &mut shard);
        self.adopt_durable(slot, &mut shard)?;
        if let Some(running) = shard.dkg.as_ref().filter(|d| d.refresh() == Some(session)) {
            return Err(busy(slot, running));
        }
        self.with_held(slot, &shard, session, |c| {
            let payload = c.payload()?;
            let mut held = vec![c.confirmation(&self.identity, wallet, slot.seat)?];
            held.extend(c.received().iter().map(|(seat, signature)| {
                SignedDkgMessage::new(
                    session,
                    wallet.clone(),
                    *seat,
                    payload.clone(),
                    signature.clone(),
                )
            }));
            Ok(held)
        })?
    }

    /// Calls `answer` with this member's result of `session`: the one
    /// awaiting confirmations, or the refresh result it switched on (kept
    /// until the next switch; a switched member now rekeying still
    /// answers, so `--resume` can finish the others' switch).
    ///
    /// # Errors
    /// [`Error::DkgNotInPhase`] when it holds none; [`Error::Store`].
    fn with_held<T>(
        &self,
        slot: &Slot,
        shard: &Shard,
        session: DkgSessionId,
        answer: impl FnOnce(&Confirming) -> T,
    ) -> Result<T, Error> {
        let wallet = &slot.config.id;
        if let Some(c) = shard.state.confirming().filter(|c| c.session() == session) {
            return Ok(answer(c));
        }
        let retained = match &shard.state {
            WalletState::Active(key) | WalletState::Rekeying(key) => {
                crate::durable::retained_refresh(&self.store, (wallet, slot.seat), key, session)?
            }
            _ => None,
        };
        retained.as_ref().map(answer).ok_or(Error::DkgNotInPhase {
            wallet: wallet.clone(),
        })
    }

    /// Checks the round-2 messages addressed to this member and derives its
    /// share and the wallet key. `current` is the wallet's state (a
    /// refresh's participants are its key record's members). The HPKE key
    /// (zeroized on drop by x25519-dalek) is dropped by the caller when
    /// this returns.
    fn compute_result(
        &self,
        slot: &Slot,
        (session, kind): (DkgSessionId, &DkgKind),
        current: &WalletState,
        round2: &[SignedDkgMessage],
        (state, hpke, echo): (DkgRound2, &HpkeSecret, [u8; 32]),
    ) -> Result<Confirming, Error> {
        let wallet = &slot.config.id;
        let fail = |accused, fault| dkg_failed(slot, session, accused, fault);
        let me = slot.seat;
        let mut sealed_by = Vec::with_capacity(round2.len());
        let mut senders = BTreeSet::from([me]);
        for msg in round2 {
            check_envelope(slot, session, msg)?;
            let DkgPayload::Round2 {
                to,
                sealed,
                echo: theirs,
            } = &msg.payload
            else {
                return Err(fail(NO_MEMBER, DkgFault::UnexpectedPayload));
            };
            if *to != me {
                // The sender signed it for another member: misrouting is the
                // relay's doing, so it must not get the sender accused.
                return Err(fail(NO_MEMBER, DkgFault::WrongRecipient));
            }
            if theirs.0 != echo {
                return Err(fail(NO_MEMBER, DkgFault::EchoMismatch));
            }
            if !senders.insert(msg.sender) {
                return Err(fail(NO_MEMBER, DkgFault::DuplicateSender));
            }
            sealed_by.push((msg.sender, &sealed.0));
        }
        // The set of senders is checked before any package is opened: a
        // sender that takes no part (a seat an earlier refresh removed
        // stays in the roster and can sign) is the relay's fault, and
        // must not draw an accusation that reveals the session key.
        let expected = participants(&slot.config, current, kind);
        if senders.iter().any(|s| !expected.contains(s)) {
            return Err(fail(NO_MEMBER, DkgFault::UnexpectedPayload));
        }
        if missing_seat(&expected, senders.iter().copied()).is_some() {
            return Err(fail(NO_MEMBER, DkgFault::MissingSender));
        }
        let mut packages = Vec::with_capacity(sealed_by.len());
        for (sender, sealed) in sealed_by {
            let accuse = |fault| self.accuse(slot, session, hpke, (sender, fault));
            let plain = open(hpke, &session, wallet, sender, me, sealed)
                .ok_or_else(|| accuse(DkgFault::BadSeal))?;
            let package =
                Round2Package::from_bytes(&plain).map_err(|_| accuse(DkgFault::InvalidPackage))?;
            packages.push((sender, package));
        }
        // Only a share that fails its sender's own commitments is the
        // sender's signed fault; anything else the crypto layer refuses
        // here accuses no one with evidence.
        let output = state.finish(packages).map_err(|e| match e {
            thresig_crypto::Error::BadShare { culprit } => {
                self.accuse(slot, session, hpke, (culprit, DkgFault::InvalidPackage))
            }
            other => fail(other.culprits().first().copied(), DkgFault::InvalidPackage),
        })?;
        // A refresh's keys cannot show an equivocated round 1 (see
        // `thresig_crypto`'s dkg module): its confirmation also binds the
        // crypto layer's transcript digest. A fresh DKG's stays the echo
        // hash alone, as members of earlier versions compute it.
        let (share, key, digest) = output.into_parts();
        let transcript = match kind {
            DkgKind::Fresh => echo,
            DkgKind::Refresh { .. } => tagged_hash(REFRESH_TRANSCRIPT_DOMAIN, &[&echo, &digest]),
        };
        let mut result =
            Confirming::new(session, key, share, transcript).with_kind(result_kind(kind)?);
        result.accept(me);
        Ok(result)
    }

    /// Commits a computed part-3 result (insert-if-absent) and moves the
    /// wallet to awaiting confirmations. A result the store already holds
    /// (an earlier commit whose outcome was unknown) is adopted. If the
    /// commit fails, the result stays in memory for the byte-identical
    /// retry.
    fn commit_result(
        &self,
        now: Timestamp,
        slot: &Slot,
        shard: &mut Shard,
        (session, request): (DkgSessionId, [u8; 32]),
        result: Confirming,
        (coordinator, kind, expires): (CoordinatorId, DkgKind, Timestamp),
    ) -> Result<SignedDkgMessage, Error> {
        let wallet = &slot.config.id;
        let mut ops = pending_ops(wallet, &result)?;
        // The share exists from this commit on, confirmed or not.
        ops.push(audit::key_stored_op(now, wallet, &result));
        let outcome = match self.store.write(ops) {
            Ok(outcome) => outcome,
            Err(source) => {
                shard.dkg = Some(DkgSession {
                    id: session,
                    kind,
                    coordinator,
                    phase: Phase::Finished {
                        result: Box::new(result),
                        request,
                    },
                    expires,
                });
                return Err(Error::Store {
                    wallet: wallet.clone(),
                    source,
                });
            }
        };
        match outcome {
            WriteOutcome::Committed(_) => {}
            WriteOutcome::Skipped {
                conflict: Conflict::KeyPackagePresent(_),
                ..
            } => {
                if !result_is_stored(&self.store, wallet, &result)? {
                    return Err(Error::KeyPackagePresent {
                        wallet: wallet.clone(),
                    });
                }
            }
            _ => return Err(Error::Internal(InternalFault::UnexpectedWrite)),
        }
        let message = result.confirmation(&self.identity, wallet, slot.seat)?;
        match result.kind() {
            ResultKind::Fresh => shard.state = WalletState::AwaitingConfirmations(result),
            ResultKind::Refresh { .. } => crate::refresh::hold_pending(shard, result)?,
        }
        Ok(message)
    }

    /// Adopts a part-3 result held in memory whose commit turned out to be
    /// durable (the store holds exactly this result), so confirmations and
    /// the operator's abort see it. Does nothing otherwise.
    pub(crate) fn adopt_durable(&self, slot: &Slot, shard: &mut Shard) -> Result<(), Error> {
        let Some(DkgSession {
            phase: Phase::Finished { result, .. },
            ..
        }) = &shard.dkg
        else {
            return Ok(());
        };
        let waits = match (result.kind(), &shard.state) {
            (ResultKind::Fresh, WalletState::DkgPending) => true,
            (ResultKind::Refresh { epoch, .. }, WalletState::Active(key)) => {
                key.epoch.0.checked_add(1) == Some(epoch.0)
            }
            _ => false,
        };
        if !waits || !result_is_stored(&self.store, &slot.config.id, result)? {
            return Ok(());
        }
        if let Some(DkgSession {
            phase: Phase::Finished { result, .. },
            ..
        }) = shard.dkg.take()
        {
            match result.kind() {
                ResultKind::Fresh => shard.state = WalletState::AwaitingConfirmations(*result),
                ResultKind::Refresh { .. } => crate::refresh::hold_pending(shard, *result)?,
            }
        }
        Ok(())
    }

    /// Accepts a signed confirmation from any member at any time. When all
    /// n members' confirmations of this member's result verify, the wallet
    /// becomes `active` (its record committed durably).
    ///
    /// # Errors
    /// [`Error::DkgNotInPhase`] when the wallet awaits no confirmation;
    /// [`Error::DkgFailed`] for a validly signed confirmation of another
    /// result (members disagree; the operator decides); [`Error::Store`].
    pub(crate) fn dkg_confirm(
        &self,
        now: Timestamp,
        member: &Member<'_>,
        msg: &SignedDkgMessage,
    ) -> Result<ConfirmationStatus, Error> {
        let slot = member.slot();
        let wallet = &slot.config.id;
        let mut shard = lock(&self.store, slot)?;
        self.adopt_durable(slot, &mut shard)?;
        let needed = slot.config.roster.len();
        crate::refresh::check_late_confirmation(slot, &shard.state, &msg.payload)?;
        if let WalletState::Active(key) | WalletState::Rekeying(key) = &shard.state {
            // The members of the record it holds: a refresh may have
            // removed seats that stay in the roster.
            let needed = key.key().members().len();
            return Ok(ConfirmationStatus {
                confirmed: needed,
                needed,
                active: true,
            });
        }
        let Some(confirming) = shard.state.confirming() else {
            return Err(Error::DkgNotInPhase {
                wallet: wallet.clone(),
            });
        };
        let session = confirming.session();
        // An unverifiable or replayed (other session) confirmation proves
        // nothing about its claimed sender: a relay fault, no one accused.
        if &msg.wallet != wallet || msg.session != session || !msg.verify(&slot.config) {
            return Err(dkg_failed(slot, session, NO_MEMBER, DkgFault::BadSignature));
        }
        // A confirmation of another kind of result (a DKG's, or a refresh's
        // of another epoch, replayed under a reused session id) proves
        // nothing against its signer.
        if another_run(&msg.payload, &confirming.payload()?) {
            return Err(dkg_failed(
                slot,
                session,
                NO_MEMBER,
                DkgFault::UnexpectedPayload,
            ));
        }
        if !confirming.matches(&msg.payload)? {
            return Err(dkg_failed(
                slot,
                session,
                Some(msg.sender),
                DkgFault::ConfirmationMismatch,
            ));
        }
        if matches!(shard.state, WalletState::Refreshing(_)) {
            return self.refresh_confirmed(
                slot,
                &mut shard,
                now,
                (msg.sender, msg.signature.clone()),
            );
        }
        let WalletState::AwaitingConfirmations(confirming) = &mut shard.state else {
            return Err(Error::Internal(InternalFault::Invariant));
        };
        let confirmed = confirming.accept(msg.sender);
        if confirmed < needed {
            return Ok(ConfirmationStatus {
                confirmed,
                needed,
                active: false,
            });
        }
        let mut ops = confirmation_ops(wallet, session, confirming.key())?;
        ops.push(append_op(
            now,
            &AuditEvent::DkgActivated {
                wallet: wallet.clone(),
                session: hex::encode(session.0),
                output_key: hex::encode(confirming.key().output_key().to_bytes()),
            },
        ));
        self.store.write(ops).map_err(|source| Error::Store {
            wallet: wallet.clone(),
            source,
        })?;
        let WalletState::AwaitingConfirmations(confirming) =
            std::mem::replace(&mut shard.state, WalletState::DkgPending)
        else {
            return Err(Error::Internal(InternalFault::Invariant));
        };
        let (key, share) = confirming.into_parts();
        shard.state = WalletState::Active(WalletSigningKey::new(WalletEpoch::INITIAL, key, share));
        Ok(ConfirmationStatus {
            confirmed,
            needed,
            active: true,
        })
    }
}

impl<S: Store> Signer<S> {
    /// A relay's cancel of its failed run: drops the wallet's DKG `session`
    /// if it is in part 1 or 2, with its secret package and HPKE key, so
    /// the next DKG need not wait for it to expire. Idempotent (a retry
    /// after a lost reply finds nothing). A finished part 3 is never
    /// touched: its result may be durable, and only the operator's
    /// [`Signer::dkg_abort`] removes it. Another session is never touched,
    /// and only the member that started the session may cancel it. A start
    /// of the session from `from` that arrives after its cancel (the relay
    /// gave up waiting for it) is refused.
    ///
    /// # Errors
    /// [`Error::DkgBusy`] when `from` did not start the session (nothing
    /// changes).
    pub(crate) fn dkg_cancel(
        &self,
        now: Timestamp,
        member: &Member<'_>,
        session: DkgSessionId,
    ) -> Result<bool, Error> {
        let (slot, from) = (member.slot(), member.from());
        let mut shard = lock(&self.store, slot)?;
        coordinated_by(&shard, slot, session, from)?;
        shard.dkg_cancelled.insert(from, session);
        let in_progress = shard.dkg.as_ref().is_some_and(|s| {
            s.id == session && matches!(s.phase, Phase::Round1 { .. } | Phase::Round2 { .. })
        });
        if in_progress && let Some(gone) = shard.dkg.take() {
            self.audit_dkg_dropped(now, &slot.config.id, &gone, "cancelled");
        }
        // A failed part 3 kept for its retry ends with the run.
        if shard
            .dkg
            .as_ref()
            .is_some_and(|s| s.id == session && s.failed())
        {
            shard.dkg = None;
        }
        Ok(in_progress)
    }

    /// Operator command: aborts the wallet's DKG `session`. A session still
    /// in progress (or failed with an accusation) is dropped from memory,
    /// with Ok; a finished but unconfirmed one has its result and key
    /// package deleted, so a new DKG can run, also when a later run of the
    /// same session is in memory. Only `session` is touched: another
    /// session of the wallet in memory (one started after this one's
    /// result was adopted) keeps running, and a confirmed (active) wallet
    /// is never touched. A refresh whose
    /// confirmation this member released is refused: the others may switch
    /// on it, and only a signed abandonment proves they never can.
    ///
    /// # Errors
    /// [`Error::RefreshConfirmed`] for a refresh this member confirmed;
    /// [`Error::DkgNotInPhase`] when the wallet has no such session;
    /// [`Error::Store`] when the deletion does not commit (nothing changed).
    pub fn dkg_abort(&self, wallet: &WalletId, session: DkgSessionId) -> Result<(), Error> {
        let slot = self.slot(wallet)?;
        let mut shard = lock(&self.store, slot)?;
        if let WalletState::Refreshing(r) = &shard.state
            && r.pending.session() == session
        {
            return Err(Error::RefreshConfirmed {
                wallet: wallet.clone(),
                session,
            });
        }
        // A run of the session that has not finished part 3 (running, or
        // failed with an accusation) holds nothing durable: it is dropped,
        // and the abort goes on to the session's stored result, which a
        // rerun of a committed session leaves in place.
        let running = shard
            .dkg
            .as_ref()
            .is_some_and(|s| s.id == session && !matches!(s.phase, Phase::Finished { .. }));
        if running {
            shard.dkg = None;
        }
        let finished = matches!(&shard.dkg, Some(s) if s.id == session);
        let awaiting = shard
            .state
            .confirming()
            .is_some_and(|c| c.session() == session);
        // The key package to delete is the result's own epoch's: a
        // refresh's sits beside the current one, which is never touched.
        let epoch = match (&shard.state, &shard.dkg) {
            (WalletState::Refreshing(r), _) => r.pending.epoch(),
            (
                _,
                Some(DkgSession {
                    phase: Phase::Finished { result, .. },
                    ..
                }),
            ) => result.epoch(),
            _ => WalletEpoch::INITIAL,
        };
        // An unconfirmed result under another script tree than the
        // configuration now names (a corrected typo) is aborted like one
        // awaiting confirmations: it never signed, and without the abort the
        // wallet could never run its DKG again.
        let mismatched = matches!(
            shard.state,
            WalletState::ScriptTreeMismatch {
                unconfirmed: true,
                ..
            }
        );
        let pending = matches!(shard.state, WalletState::DkgPending) || mismatched;
        // The stored result and key package are this session's when it
        // awaits confirmations, or when no result is awaited and this
        // session's part 3 finished (its commit outcome unknown to memory)
        // or its result is stored (one memory never loaded). While another
        // session's result is awaited, they are that session's: a finished
        // part 3 of this one is only dropped from memory.
        // A refresh's finished part 3 released no confirmation (its
        // commit reported failure) but may be durable: delete it too.
        let refreshed = finished && matches!(shard.state, WalletState::Active(_));
        let delete = awaiting
            || refreshed
            || (pending && (finished || result_stored_for(&self.store, wallet, session)?));
        if !delete && !finished && !running {
            return Err(Error::DkgNotInPhase {
                wallet: wallet.clone(),
            });
        }
        if delete {
            self.store
                .write(abort_ops(wallet, session, epoch)?)
                .map_err(|source| crate::signer::store_error(wallet, source))?;
        }
        if finished {
            shard.dkg = None;
        }
        if awaiting || (mismatched && delete) {
            let state = std::mem::replace(&mut shard.state, WalletState::DkgPending);
            if let WalletState::Refreshing(r) = state {
                shard.state = WalletState::Active(r.current);
            }
        }
        Ok(())
    }
}

/// Whether confirmation payload `theirs` belongs to another run than
/// `ours` under the same session id: another kind of result, or a refresh
/// of another epoch.
fn another_run(theirs: &DkgPayload, ours: &DkgPayload) -> bool {
    match (theirs, ours) {
        (
            DkgPayload::RefreshConfirm { from_epoch: a, .. },
            DkgPayload::RefreshConfirm { from_epoch: b, .. },
        ) => a != b,
        _ => std::mem::discriminant(theirs) != std::mem::discriminant(ours),
    }
}

/// The hash that identifies a part-2 or part-3 request (`domain` tells
/// which): only the byte-identical request is answered again from the
/// state the first one left.
fn request_hash(domain: &[u8], messages: &[SignedDkgMessage]) -> Result<[u8; 32], Error> {
    let encoded =
        serde_json::to_vec(messages).map_err(|_| Error::Internal(InternalFault::Serialization))?;
    Ok(tagged_hash(domain, &[&encoded]))
}

/// Domain separation tag of part-2 request hashes.
const ROUND2_DOMAIN: &[u8] = b"thresig/engine/dkg-round2-request/v1";

/// Domain separation tag of a refresh's confirmed transcript (the echo
/// hash and the crypto layer's transcript digest, hashed together).
const REFRESH_TRANSCRIPT_DOMAIN: &[u8] = b"thresig/engine/refresh-transcript/v1";

/// Domain separation tag of part-3 request hashes.
const FINISH_DOMAIN: &[u8] = b"thresig/engine/dkg-finish-request/v1";

/// Takes the session's phase (and its expiry) out of the shard (the caller
/// puts the next one back), checking the session id.
fn take_phase(
    shard: &mut Shard,
    slot: &Slot,
    session: DkgSessionId,
) -> Result<(Timestamp, DkgKind, Phase), Error> {
    match shard.dkg.take() {
        Some(s) if s.id == session => Ok((s.expires, s.kind, s.phase)),
        other => {
            shard.dkg = other;
            Err(Error::DkgNotInPhase {
                wallet: slot.config.id.clone(),
            })
        }
    }
}

/// Refuses a part or cancel of the wallet's DKG `session` from a member
/// that did not start it: another member must not end or derail a DKG it
/// does not coordinate. The refusal changes nothing and accuses no one.
fn coordinated_by(
    shard: &Shard,
    slot: &Slot,
    session: DkgSessionId,
    from: CoordinatorId,
) -> Result<(), Error> {
    match &shard.dkg {
        Some(held) if held.id == session && held.coordinator != from => Err(busy(slot, held)),
        _ => Ok(()),
    }
}

/// A refresh's part 3 stores its result only while the wallet is
/// `active` at the epoch the refresh starts from: an operator may have
/// begun a rekey (or aborted) since part 1, and a result stored then would
/// be an orphan share.
fn still_active(slot: &Slot, state: &WalletState, kind: &DkgKind) -> Result<(), Error> {
    match kind {
        DkgKind::Refresh { from_epoch, .. } if !matches!(state, WalletState::Active(k) if k.epoch == *from_epoch) => {
            Err(Error::WalletNotActive {
                wallet: slot.config.id.clone(),
            })
        }
        _ => Ok(()),
    }
}

/// The refusal naming the session that holds the wallet and the seat of
/// the member that started it.
fn busy(slot: &Slot, held: &DkgSession) -> Error {
    Error::DkgBusy {
        wallet: slot.config.id.clone(),
        holder: held.id,
        coordinator: seat_in(slot, held.coordinator),
    }
}

/// The seat of the member `from` in the slot's wallet, if it is one.
pub(crate) fn seat_in(slot: &Slot, from: CoordinatorId) -> Option<Seat> {
    slot.config
        .roster
        .iter()
        .position(|k| k.to_bytes() == from.0)
        .and_then(|i| u16::try_from(i + 1).ok())
        .and_then(|n| Seat::try_from(n).ok())
}

/// Puts back a phase that was not the expected one and returns the error.
fn restore(
    shard: &mut Shard,
    session: DkgSessionId,
    (coordinator, kind, expires): (CoordinatorId, DkgKind, Timestamp),
    phase: Phase,
    slot: &Slot,
) -> Error {
    shard.dkg = Some(DkgSession {
        id: session,
        kind,
        coordinator,
        phase,
        expires,
    });
    Error::DkgNotInPhase {
        wallet: slot.config.id.clone(),
    }
}

/// Checks a message's session, wallet, sender and signature. A message
/// that fails here proves nothing about its claimed sender (the coordinator
/// relays every message and may have forged, altered or replayed it), so the
/// failure accuses no member: it is reported as a relay fault.
fn check_envelope(slot: &Slot, session: DkgSessionId, msg: &SignedDkgMessage) -> Result<(), Error> {
    if msg.sender == slot.seat {
        return Err(dkg_failed(
            slot,
            session,
            NO_MEMBER,
            DkgFault::OwnMessageEchoed,
        ));
    }
    if msg.session != session || msg.wallet != slot.config.id || !msg.verify(&slot.config) {
        return Err(dkg_failed(slot, session, NO_MEMBER, DkgFault::BadSignature));
    }
    Ok(())
}

/// The `accused` seat of a fault no valid signature proves against any
/// member (a relay fault: the coordinator or the network).
const NO_MEMBER: Option<Seat> = None;

/// The first seat of `expected` not among `seen`.
fn missing_seat(expected: &BTreeSet<Seat>, seen: impl Iterator<Item = Seat>) -> Option<Seat> {
    let seen: BTreeSet<Seat> = seen.collect();
    expected.iter().find(|s| !seen.contains(s)).copied()
}

fn dkg_failed(slot: &Slot, session: DkgSessionId, accused: Option<Seat>, fault: DkgFault) -> Error {
    Error::DkgFailed {
        wallet: slot.config.id.clone(),
        session,
        accuser: slot.seat,
        accused,
        fault,
        accusation: None,
    }
}

impl<S: Store> Signer<S> {
    /// The failure of part 3 because the round-2 package `accused` sent
    /// this member does not open, decode or verify against its sender's
    /// commitments, with this member's signed accusation revealing the
    /// session's HPKE key `hpke`, so that anyone can check that package
    /// (docs/blame.md). Called only where part 3 computes no result: the
    /// key protects nothing of a session that ends here.
    fn accuse(
        &self,
        slot: &Slot,
        session: DkgSessionId,
        hpke: &HpkeSecret,
        (accused, fault): (Seat, DkgFault),
    ) -> Error {
        let accusation = SignedDkgMessage::sign(
            &self.identity,
            session,
            slot.config.id.clone(),
            slot.seat,
            DkgPayload::Accuse {
                accused,
                hpke_secret: hpke.reveal(),
            },
        );
        Error::DkgFailed {
            wallet: slot.config.id.clone(),
            session,
            accuser: slot.seat,
            accused: Some(accused),
            fault,
            accusation: Some(Box::new(accusation)),
        }
    }
}

impl Confirming {
    /// This member's signed confirmation of (session, output key,
    /// transcript).
    fn confirmation(
        &self,
        identity: &SigningKey,
        wallet: &WalletId,
        me: Seat,
    ) -> Result<SignedDkgMessage, Error> {
        Ok(SignedDkgMessage::sign(
            identity,
            self.session(),
            wallet.clone(),
            me,
            self.payload()?,
        ))
    }
}
