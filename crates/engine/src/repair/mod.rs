//! Repair of a member's lost share by `t` helpers, and the operator
//! approvals it needs.
//!
//! A helper takes part only while its own operator's approval of (wallet,
//! lost seat) is unexpired ([`Signer::approve_repair`]); a coordinator's
//! request never suffices. Approvals live in memory only: a restart drops
//! them, so an approval never outlives the process the operator gave it to.
//!
//! The steps, each bound to the whole [`RepairSession`] (wallet, epoch,
//! lost seat, helper set, nonce):
//! 1. the member being repaired `Join`s with a fresh per-session HPKE key;
//!    each helper `Open`s with its own and the wallet key it holds;
//! 2. each helper `Deal`s: frost's step 1, each delta sealed to its
//!    recipient helper's key, with public commitments to every delta;
//! 3. each helper `Sum`s: it opens its deltas, checks each against its
//!    sender's commitment (naming a liar), and seals the sigma to the
//!    member being repaired;
//! 4. the member being repaired `Finish`es: every helper must sign the same
//!    wallet key; it checks every helper's commitments against that key's
//!    verifying shares and every sigma against the commitments (naming a
//!    liar), rebuilds the share, checks it against its own verifying share
//!    and only then stores it (key package and wallet record in one
//!    commit) and signs again.
//!
//! HPKE secrets and session state live in memory only: a restart aborts a
//! repair in progress, and nothing is stored until step 4 has checked
//! everything, so an aborted repair leaves every member as it was.

mod msg;

use std::collections::BTreeMap;
use std::time::Duration;

use rand_core::{CryptoRng, RngCore};
use thresig_crypto::{
    Error as CryptoError, RepairCommitments, RepairDelta, RepairSigma, Seat, WalletKey,
    repair_step1, repair_step2, repair_step3,
};
use thresig_store::{Store, Timestamp, WalletId, WriteOp, WriteOutcome};

use crate::api::HexBytes;
use crate::audit::{AuditEvent, append_op as audit_op};
use crate::dkg::seat_in;
use crate::dkg_msg::{HpkeSecret, hpke_keypair, open_with};
use crate::durable::{ops_are_stored, repaired_ops};
use crate::error::{Error, InternalFault, RepairFault, RequestPart};
use crate::ids::CoordinatorId;
use crate::signer::{Member, Shard, Signer, Slot, lock};
use crate::wallet::{SigningKey, WalletState};

use msg::commitments_digest;
pub(crate) use msg::seal_info;
pub use msg::{
    InvalidRepairPayload, RepairPayload, RepairRequest, RepairResponse, RepairSession,
    SignedRepairMessage, seal_repair_value,
};

/// A wallet's repair state on this signer (memory only).
#[derive(Default)]
pub(crate) struct RepairSlot {
    /// The operator's approvals: lost seat → when the approval expires.
    approvals: BTreeMap<Seat, Timestamp>,
    /// The repair this member takes part in, if any.
    session: Option<Running>,
    /// The repair that rebuilt this member's share (since this process
    /// started): a retried finish of it, whose first reply was lost,
    /// answers `Repaired` again.
    repaired: Option<RepairSession>,
}

impl RepairSlot {
    /// Drops expired approvals and an expired session (its HPKE secret is
    /// zeroized on drop).
    pub(crate) fn expire(&mut self, now: Timestamp) {
        self.approvals.retain(|_, expires| now < *expires);
        if self.session.as_ref().is_some_and(|s| now >= s.expires) {
            self.session = None;
        }
    }

    /// The approvals not used up, as status shows them.
    pub(crate) fn approvals(&self) -> Vec<(Seat, Timestamp)> {
        self.approvals.iter().map(|(s, t)| (*s, *t)).collect()
    }

    /// The seat of the repair running on this member, unless this member's
    /// part of it is done.
    pub(crate) fn repairing(&self) -> Option<Seat> {
        self.session
            .as_ref()
            .filter(|s| !s.done())
            .map(|s| s.session.lost)
    }
}

/// A repair in progress on this member.
struct Running {
    session: RepairSession,
    /// Who started it: only that member may replace it before it expires.
    coordinator: CoordinatorId,
    hpke: HpkeSecret,
    expires: Timestamp,
    role: Role,
}

impl Running {
    /// Whether this member's part is over: a helper that summed needs its
    /// session only for the byte-identical retry of its sum, which must not
    /// keep another member's repair waiting until the session expires.
    fn done(&self) -> bool {
        matches!(&self.role, Role::Helper(answers) if answers.summed.is_some())
    }
}

/// A helper's answers in one session, each with the hash of the request it
/// answered.
struct Answers {
    opened: SignedRepairMessage,
    dealt: Option<(HexBytes, SignedRepairMessage)>,
    summed: Option<(HexBytes, SignedRepairMessage)>,
}

/// A helper's deltas as its `Dealt` message carries them.
struct Deal {
    commitments: RepairCommitments,
    /// One sealed delta per recipient.
    sealed: Vec<(Seat, HexBytes)>,
    /// The hash of the `Opened` list it sealed to.
    opened: HexBytes,
}

enum Role {
    /// This member is being repaired; its `Joined` message.
    Lost { joined: SignedRepairMessage },
    /// This member helps: its answers so far, each kept for the
    /// byte-identical retry of its request (a lost reply must not force a
    /// new repair, and a helper never deals twice in one session).
    Helper(Box<Answers>),
}

/// The longest a repair approval lasts: a day covers a repair the
/// operators coordinate by hand, and an approval forgotten on a helper does
/// not stand for weeks.
pub const MAX_APPROVAL_SECS: u64 = 24 * 3600;

impl<S: Store> Signer<S> {
    /// Approves, on this signer, helping to repair seat `lost` of `wallet`
    /// for `secs` seconds from `now`: an operator action
    /// ([`OperatorCommand::ApproveRepair`](crate::OperatorCommand)), never a
    /// coordinator's. Replaces an earlier approval of the same seat.
    /// Returns when the approval expires.
    ///
    /// # Errors
    /// [`Error::ApprovalExpiry`] unless `secs` is 1 to
    /// [`MAX_APPROVAL_SECS`]; [`Error::UnknownWallet`];
    /// [`Error::IdentifierNotInRoster`] if `lost` is not a seat of the
    /// wallet's roster; [`Error::Internal`] if the wallet's lock is
    /// poisoned.
    pub fn approve_repair(
        &self,
        now: Timestamp,
        wallet: &WalletId,
        lost: Seat,
        secs: u64,
    ) -> Result<Timestamp, Error> {
        self.approve_repair_logged(now, wallet, lost, secs, None)
    }

    /// [`Signer::approve_repair`], committing `entry` (its audit entry)
    /// before the approval takes effect: an approval that could not be
    /// logged is not granted.
    pub(crate) fn approve_repair_logged(
        &self,
        now: Timestamp,
        wallet: &WalletId,
        lost: Seat,
        secs: u64,
        entry: Option<WriteOp>,
    ) -> Result<Timestamp, Error> {
        if secs == 0 || secs > MAX_APPROVAL_SECS {
            return Err(Error::ApprovalExpiry { secs });
        }
        let expires = now.saturating_add(Duration::from_secs(secs));
        let slot = self.slot(wallet)?;
        if slot.config.member(lost).is_none() {
            return Err(Error::IdentifierNotInRoster {
                wallet: wallet.clone(),
                identifier: lost,
            });
        }
        let mut shard = lock(&self.store, slot)?;
        if let Some(entry) = entry {
            self.store
                .write(vec![entry])
                .map_err(|source| Error::Store {
                    wallet: wallet.clone(),
                    source,
                })?;
        }
        shard.repair.approvals.insert(lost, expires);
        Ok(expires)
    }

    /// Handles one repair request from a member of the wallet.
    pub(crate) fn repair<R: RngCore + CryptoRng>(
        &self,
        now: Timestamp,
        member: &Member<'_>,
        request: RepairRequest,
        rng: &mut R,
    ) -> Result<RepairResponse, Error> {
        let slot = member.slot();
        check_session(slot, request.session())?;
        let mut shard = lock(&self.store, slot)?;
        shard.repair.expire(now);
        self.expire_dkg(now, slot, &mut shard);
        let message = RepairResponse::Message;
        match request {
            RepairRequest::Join { session } => self
                .repair_join(now, member, &mut shard, session, rng)
                .map(message),
            RepairRequest::Open { session } => self
                .repair_open(now, member, &mut shard, session, rng)
                .map(message),
            RepairRequest::Deal { session, opened } => {
                approved(slot, &shard, &session, now)?;
                self.repair_deal(slot, &mut shard, &session, &opened, rng)
                    .map(message)
            }
            RepairRequest::Sum {
                session,
                joined,
                dealt,
            } => self
                .repair_sum(now, slot, &mut shard, &session, &joined, &dealt, rng)
                .map(message),
            RepairRequest::Finish {
                session,
                opened,
                dealt,
                summed,
            } => self.repair_finish(now, slot, &mut shard, &session, [&opened, &dealt, &summed]),
        }
    }

    /// Step 1 at the member being repaired: it must hold no key for the
    /// wallet (a lost or never-restored store).
    fn repair_join<R: RngCore + CryptoRng>(
        &self,
        now: Timestamp,
        member: &Member<'_>,
        shard: &mut Shard,
        session: RepairSession,
        rng: &mut R,
    ) -> Result<SignedRepairMessage, Error> {
        let slot = member.slot();
        if session.lost != slot.seat {
            return Err(not_in_phase(slot));
        }
        keyless(slot, shard)?;
        if let Some(Running {
            session: held,
            role: Role::Lost { joined },
            ..
        }) = &shard.repair.session
            && *held == session
        {
            return Ok(joined.clone());
        }
        self.start(now, member, shard, session, rng, |hpke_key| {
            (RepairPayload::Joined { hpke_key }, |joined| Role::Lost {
                joined,
            })
        })
    }

    /// Step 1 at a helper: approval, an active key at the session's epoch,
    /// and this member among the helpers.
    fn repair_open<R: RngCore + CryptoRng>(
        &self,
        now: Timestamp,
        member: &Member<'_>,
        shard: &mut Shard,
        session: RepairSession,
        rng: &mut R,
    ) -> Result<SignedRepairMessage, Error> {
        let slot = member.slot();
        approved(slot, shard, &session, now)?;
        let key = helper_key(slot, shard, &session)?;
        let wallet_key = HexBytes(
            key.key()
                .to_bytes()
                .map_err(|_| Error::Internal(InternalFault::Serialization))?,
        );
        if let Some(Running {
            session: held,
            role: Role::Helper(answers),
            ..
        }) = &shard.repair.session
            && *held == session
        {
            return Ok(answers.opened.clone());
        }
        self.start(now, member, shard, session, rng, |hpke_key| {
            (
                RepairPayload::Opened {
                    hpke_key,
                    wallet_key,
                },
                |opened| {
                    Role::Helper(Box::new(Answers {
                        opened,
                        dealt: None,
                        summed: None,
                    }))
                },
            )
        })
    }

    /// Starts this member's part in `session`: a fresh per-session HPKE
    /// key, the signed message `first` makes of its public key, and the
    /// role that message opens. It replaces an earlier session only if the
    /// same member started that one (a coordinator that lost its run
    /// starts again at once) or this member's part in it is done; another
    /// member's unexpired session is refused, so no member can reset a
    /// repair it does not run.
    ///
    /// A replaced session's per-session key is gone: a seal to it no
    /// longer opens here, which is why every `Dealt` and `Summed` names
    /// the messages holding the keys it sealed to (see `check_inputs`).
    fn start<R: RngCore + CryptoRng>(
        &self,
        now: Timestamp,
        member: &Member<'_>,
        shard: &mut Shard,
        session: RepairSession,
        rng: &mut R,
        first: impl FnOnce(HexBytes) -> (RepairPayload, fn(SignedRepairMessage) -> Role),
    ) -> Result<SignedRepairMessage, Error> {
        let slot = member.slot();
        if let Some(held) = &shard.repair.session
            && held.session != session
            && held.coordinator != member.from()
            && !held.done()
        {
            return Err(Error::RepairBusy {
                wallet: slot.config.id.clone(),
                coordinator: seat_in(slot, held.coordinator),
            });
        }
        let (hpke, public) = hpke_keypair(rng);
        let (payload, role) = first(HexBytes(public));
        let message = self.sign_repair(slot, &session, payload);
        shard.repair.session = Some(Running {
            session,
            coordinator: member.from(),
            hpke,
            expires: now.saturating_add(self.limits.dkg_session_ttl),
            role: role(message.clone()),
        });
        Ok(message)
    }

    /// Step 2 at a helper: frost's step 1, each delta sealed to its
    /// recipient helper's per-session key.
    fn repair_deal<R: RngCore + CryptoRng>(
        &self,
        slot: &Slot,
        shard: &mut Shard,
        session: &RepairSession,
        opened: &[SignedRepairMessage],
        rng: &mut R,
    ) -> Result<SignedRepairMessage, Error> {
        let request = request_hash(opened)?;
        let signing = helper_key(slot, shard, session)?;
        let (share, key) = (signing.share.clone(), signing.key().clone());
        let answers = helper_answers(slot, shard, session)?;
        if let Some((hash, reply)) = &answers.dealt {
            return if *hash == request {
                Ok(reply.clone())
            } else {
                Err(not_in_phase(slot))
            };
        }
        let mine_opened = answers.opened.clone();
        let mine = HexBytes(
            key.to_bytes()
                .map_err(|_| Error::Internal(InternalFault::Serialization))?,
        );
        let keys = by_helper(slot, session, opened, |p| match p {
            RepairPayload::Opened {
                hpke_key,
                wallet_key,
            } => Some((hpke_key.clone(), wallet_key.clone())),
            _ => None,
        })?;
        if let Some((seat, _)) = keys.iter().find(|(_, (_, k))| *k != mine) {
            return Err(failed(slot, Some(*seat), RepairFault::WalletKeyDisagrees));
        }
        // Every dealer signs the hash of this list: only if this member's
        // own `Opened` in it is the one it holds can a seal it fails to
        // open be its sender's fault.
        if !opened.contains(&mine_opened) {
            return Err(failed(slot, None, RepairFault::InputsDisagree));
        }
        let out = repair_step1(&share, &key, &session.helpers, session.lost, rng)
            .map_err(|_| Error::Internal(InternalFault::CryptoRefused))?;
        let commitments = HexBytes(out.commitments().to_bytes());
        let mut sealed = Vec::new();
        for (to, delta) in out.into_deltas() {
            let (hpke_key, _) = keys.get(&to).ok_or_else(|| not_in_phase(slot))?;
            let plaintext = delta
                .to_bytes()
                .map_err(|_| Error::Internal(InternalFault::Serialization))?;
            let ct = seal_repair_value(session, slot.seat, to, &hpke_key.0, &plaintext, rng)
                .ok_or_else(|| failed(slot, Some(to), RepairFault::BadKey))?;
            sealed.push((to, ct));
        }
        let reply = self.sign_repair(
            slot,
            session,
            RepairPayload::Dealt {
                commitments,
                sealed,
                opened: request.clone(),
            },
        );
        helper_answers(slot, shard, session)?.dealt = Some((request, reply.clone()));
        Ok(reply)
    }

    /// Step 3 at a helper: opens its deltas, checks each against its
    /// sender's commitment, and seals the sum to the member being repaired.
    #[allow(
        clippy::too_many_arguments,
        reason = "one step's inputs, as the request carries them"
    )]
    fn repair_sum<R: RngCore + CryptoRng>(
        &self,
        now: Timestamp,
        slot: &Slot,
        shard: &mut Shard,
        session: &RepairSession,
        joined: &SignedRepairMessage,
        dealt: &[SignedRepairMessage],
        rng: &mut R,
    ) -> Result<SignedRepairMessage, Error> {
        let request = request_hash(&[&[joined.clone()][..], dealt].concat())?;
        let me = slot.seat;
        let answers = helper_answers(slot, shard, session)?;
        let Some((dealt_over, _)) = &answers.dealt else {
            return Err(not_in_phase(slot));
        };
        let dealt_over = dealt_over.clone();
        if let Some((hash, reply)) = &answers.summed {
            return if *hash == request {
                Ok(reply.clone())
            } else {
                Err(not_in_phase(slot))
            };
        }
        // Checked after the retry above: the sum uses the approval up.
        approved(slot, shard, session, now)?;
        let lost_key = joined_key(slot, session, joined)?;
        let deals = decode_deals(slot, session, dealt)?;
        if deals.values().any(|deal| deal.opened != dealt_over) {
            return Err(failed(slot, None, RepairFault::InputsDisagree));
        }
        let hpke = &shard
            .repair
            .session
            .as_ref()
            .ok_or_else(|| not_in_phase(slot))?
            .hpke;
        let mut received = Vec::new();
        for (from, Deal { sealed, .. }) in &deals {
            let ct = sealed
                .iter()
                .find(|(to, _)| *to == me)
                .map(|(_, ct)| ct)
                .ok_or_else(|| failed(slot, Some(*from), RepairFault::BadSeal))?;
            let plain = open_with(hpke, &seal_info(session, *from, me), &ct.0)
                .ok_or_else(|| failed(slot, Some(*from), RepairFault::BadSeal))?;
            let delta = RepairDelta::from_bytes(&plain)
                .map_err(|_| failed(slot, Some(*from), RepairFault::BadSeal))?;
            received.push((*from, delta));
        }
        let commitments: BTreeMap<Seat, RepairCommitments> = deals
            .iter()
            .map(|(seat, deal)| (*seat, deal.commitments.clone()))
            .collect();
        let sigma = repair_step2(me, received, &commitments).map_err(|e| crypto_failed(slot, e))?;
        let plaintext = sigma
            .to_bytes()
            .map_err(|_| Error::Internal(InternalFault::Serialization))?;
        let ct = seal_repair_value(session, me, session.lost, &lost_key, &plaintext, rng)
            .ok_or_else(|| failed(slot, Some(session.lost), RepairFault::BadKey))?;
        let reply = self.sign_repair(
            slot,
            session,
            RepairPayload::Summed {
                sealed: ct,
                commitments: HexBytes(digest_of(&commitments).to_vec()),
                joined: request_hash(std::slice::from_ref(joined))?,
            },
        );
        helper_answers(slot, shard, session)?.summed = Some((request, reply.clone()));
        // This helper's part is done: the approval covered this repair,
        // and a later one (another coordinator, another identity key for
        // the seat, another run) needs the operator to approve again.
        shard.repair.approvals.remove(&session.lost);
        Ok(reply)
    }

    /// Step 4 at the member being repaired: checks everything, rebuilds the
    /// share and stores it with the wallet record in one commit.
    fn repair_finish(
        &self,
        now: Timestamp,
        slot: &Slot,
        shard: &mut Shard,
        session: &RepairSession,
        [opened, dealt, summed]: [&[SignedRepairMessage]; 3],
    ) -> Result<RepairResponse, Error> {
        let wallet = &slot.config.id;
        if shard.repair.repaired.as_ref() == Some(session) {
            return Ok(repaired(slot, session));
        }
        keyless(slot, shard)?;
        let Some(Running {
            session: held,
            hpke,
            role: Role::Lost { joined },
            ..
        }) = &shard.repair.session
        else {
            return Err(not_in_phase(slot));
        };
        if held != session {
            return Err(not_in_phase(slot));
        }
        let joined = request_hash(std::slice::from_ref(joined))?;
        let key = agreed_wallet_key(slot, session, opened)?;
        let deals = decode_deals(slot, session, dealt)?;
        let commitments: BTreeMap<Seat, RepairCommitments> = deals
            .into_iter()
            .map(|(seat, deal)| (seat, deal.commitments))
            .collect();
        let digest = digest_of(&commitments);
        let sums = by_helper(slot, session, summed, |p| match p {
            RepairPayload::Summed {
                sealed,
                commitments,
                joined,
            } => Some((sealed.clone(), commitments.clone(), joined.clone())),
            _ => None,
        })?;
        // A sum sealed to a `Joined` this member no longer holds (it joined
        // again) cannot open here through no fault of its helper.
        if sums.values().any(|(_, _, to)| *to != joined) {
            return Err(failed(slot, None, RepairFault::InputsDisagree));
        }
        let mut sigmas = Vec::new();
        for (from, (sealed, used, _)) in &sums {
            if used.0 != digest {
                // The helper signed a sum over other commitments than the
                // ones relayed here: the relay or a helper that signed two
                // sets of commitments; the messages here do not say which.
                return Err(failed(slot, None, RepairFault::CommitmentsDisagree));
            }
            let plain = open_with(hpke, &seal_info(session, *from, slot.seat), &sealed.0)
                .ok_or_else(|| failed(slot, Some(*from), RepairFault::BadSeal))?;
            let sigma = RepairSigma::from_bytes(&plain)
                .map_err(|_| failed(slot, Some(*from), RepairFault::BadSeal))?;
            sigmas.push((*from, sigma));
        }
        let share = repair_step3(sigmas, &commitments, session.lost, &key)
            .map_err(|e| crypto_failed(slot, e))?;
        let ops = repaired_ops(wallet, session.epoch, &key, &share)?;
        let event = AuditEvent::Repaired {
            wallet: wallet.clone(),
            epoch: session.epoch.0,
        };
        let unit = [ops.clone(), vec![audit_op(now, &event)]].concat();
        match self.store.write(unit) {
            Ok(WriteOutcome::Committed(_)) => {}
            // A commit reported failed, or refused because the key package
            // is there, may be this very unit made durable (an ambiguous
            // commit, or its retry): adopt it rather than stay
            // `dkg_pending` until a restart reads it.
            outcome if ops_are_stored(&self.store, &ops)? => drop(outcome),
            Ok(_) => {
                return Err(Error::KeyPackagePresent {
                    wallet: wallet.clone(),
                });
            }
            Err(source) => {
                return Err(Error::Store {
                    wallet: wallet.clone(),
                    source,
                });
            }
        }
        shard.state = WalletState::Active(SigningKey::new(session.epoch, key, share));
        shard.repair.session = None;
        shard.repair.repaired = Some(session.clone());
        Ok(repaired(slot, session))
    }

    fn sign_repair(
        &self,
        slot: &Slot,
        session: &RepairSession,
        payload: RepairPayload,
    ) -> SignedRepairMessage {
        SignedRepairMessage::sign(&self.identity, session.clone(), slot.seat, payload)
    }
}

/// The session's shape: its wallet is this slot's, the lost seat and every
/// helper are roster seats, helpers ascending and distinct, at least the
/// threshold, and the lost seat not among them.
fn check_session(slot: &Slot, session: &RepairSession) -> Result<(), Error> {
    let config = &slot.config;
    let ascending = session
        .helpers
        .windows(2)
        .all(|w| matches!(w, [a, b] if a < b));
    let fits = session.wallet == config.id
        && ascending
        && session.helpers.len() >= usize::from(config.threshold)
        && !session.helpers.contains(&session.lost)
        && config.member(session.lost).is_some()
        && session.helpers.iter().all(|h| config.member(*h).is_some());
    if fits {
        Ok(())
    } else {
        Err(Error::Malformed {
            wallet: config.id.clone(),
            part: RequestPart::RepairSession,
        })
    }
}

/// An unexpired approval by this signer's operator of repairing the
/// session's lost seat.
fn approved(
    slot: &Slot,
    shard: &Shard,
    session: &RepairSession,
    now: Timestamp,
) -> Result<(), Error> {
    match shard.repair.approvals.get(&session.lost) {
        Some(expires) if now < *expires => Ok(()),
        _ => Err(Error::RepairNotApproved {
            wallet: slot.config.id.clone(),
            lost: session.lost,
        }),
    }
}

/// The member being repaired holds no key of the wallet, nor a record of
/// one (a lost or never-restored store).
fn keyless(slot: &Slot, shard: &Shard) -> Result<(), Error> {
    match shard.state {
        WalletState::DkgPending => Ok(()),
        _ => Err(Error::RepairOfKeyedMember {
            wallet: slot.config.id.clone(),
            state: shard.state.kind(),
        }),
    }
}

/// This helper's key at the session's epoch.
fn helper_key<'a>(
    slot: &Slot,
    shard: &'a Shard,
    session: &RepairSession,
) -> Result<&'a SigningKey, Error> {
    if !session.helpers.contains(&slot.seat) {
        return Err(not_in_phase(slot));
    }
    // Only a wallet not keyed yet may become active later; a rekeying,
    // retired or corrupt one never helps again without an operator, so
    // its refusal is terminal (the signing refusal's, which names the fix:
    // a rekeying wallet's way back is its successor, also when a refresh
    // stuck on a withheld confirmation is why it was rekeyed).
    let key = match shard.state.signing_key(&slot.config.id)? {
        (key, crate::wallet::Role::Active) => key,
        (_, crate::wallet::Role::Rekeying) => {
            return Err(Error::RekeyInProgress {
                wallet: slot.config.id.clone(),
            });
        }
    };
    // A member repaired at the old epoch while a refresh is pending comes
    // back with no record of releasing its confirmation and would veto a
    // refresh the others may switch on (docs/lifecycle.md). A helper still
    // running the refresh (or holding a part 3 whose commit may be
    // durable) may yet release and switch on it, so it refuses too; one
    // whose session expired refuses part 3 and can never release.
    let refresh = match &shard.state {
        crate::wallet::WalletState::Refreshing(r) => Some(r.pending.session()),
        _ => shard.dkg.as_ref().and_then(crate::dkg::DkgSession::refresh),
    };
    if let Some(session) = refresh {
        return Err(Error::RepairDuringRefresh {
            wallet: slot.config.id.clone(),
            session,
        });
    }
    if key.epoch != session.epoch {
        return Err(Error::StaleEpoch {
            wallet: slot.config.id.clone(),
            requested: session.epoch,
            current: key.epoch,
        });
    }
    Ok(key)
}

/// This helper's answers in `session`, which must be the one it opened.
fn helper_answers<'a>(
    slot: &Slot,
    shard: &'a mut Shard,
    session: &RepairSession,
) -> Result<&'a mut Answers, Error> {
    match shard.repair.session.as_mut() {
        Some(Running {
            session: held,
            role: Role::Helper(answers),
            ..
        }) if held == session => Ok(answers),
        _ => Err(not_in_phase(slot)),
    }
}

/// Exactly one verified message of the expected kind from each helper of
/// the session, keyed by helper. A message that does not verify, belongs
/// to another session, or is missing or repeated accuses no one: the
/// coordinator relays every message.
fn by_helper<T>(
    slot: &Slot,
    session: &RepairSession,
    messages: &[SignedRepairMessage],
    pick: impl Fn(&RepairPayload) -> Option<T>,
) -> Result<BTreeMap<Seat, T>, Error> {
    let mut out = BTreeMap::new();
    for msg in messages {
        if msg.session != *session
            || !session.helpers.contains(&msg.sender)
            || !msg.verify(&slot.config)
        {
            return Err(failed(slot, None, RepairFault::BadSignature));
        }
        let value =
            pick(&msg.payload).ok_or_else(|| failed(slot, None, RepairFault::UnexpectedPayload))?;
        if out.insert(msg.sender, value).is_some() {
            return Err(failed(slot, None, RepairFault::DuplicateSender));
        }
    }
    if out.len() != session.helpers.len() {
        return Err(failed(slot, None, RepairFault::MissingSender));
    }
    Ok(out)
}

/// Every helper's `Dealt` message, its commitments decoded (a helper whose
/// signed commitments do not decode is named, and so is one that signed
/// two deals over one `Opened` list, relayed side by side).
fn decode_deals(
    slot: &Slot,
    session: &RepairSession,
    dealt: &[SignedRepairMessage],
) -> Result<BTreeMap<Seat, Deal>, Error> {
    if let Some(liar) = equivocator(slot, session, dealt) {
        return Err(failed(slot, Some(liar), RepairFault::Equivocation));
    }
    let raw = by_helper(slot, session, dealt, |p| match p {
        RepairPayload::Dealt {
            commitments,
            sealed,
            opened,
        } => Some((commitments.clone(), sealed.clone(), opened.clone())),
        _ => None,
    })?;
    raw.into_iter()
        .map(|(seat, (commitments, sealed, opened))| {
            let commitments = RepairCommitments::from_bytes(&commitments.0)
                .map_err(|_| failed(slot, Some(seat), RepairFault::BadCommitment))?;
            Ok((
                seat,
                Deal {
                    commitments,
                    sealed,
                    opened,
                },
            ))
        })
        .collect()
}

/// A helper with two different verified `Dealt` messages of this session
/// over the same `Opened` list among `dealt`. Signatures are checked only
/// for the rare repeated sender.
fn equivocator(
    slot: &Slot,
    session: &RepairSession,
    dealt: &[SignedRepairMessage],
) -> Option<Seat> {
    let over = |m: &SignedRepairMessage| match &m.payload {
        RepairPayload::Dealt { opened, .. } => Some(opened.clone()),
        _ => None,
    };
    dealt.iter().enumerate().find_map(|(i, a)| {
        dealt
            .iter()
            .skip(i + 1)
            .find(|b| {
                a.sender == b.sender
                    && a.payload != b.payload
                    && over(a).is_some()
                    && over(a) == over(b)
                    && [a, *b]
                        .iter()
                        .all(|m| m.session == *session && m.verify(&slot.config))
            })
            .map(|_| a.sender)
    })
}

/// The repaired member's per-session key from its verified `Joined`.
fn joined_key(
    slot: &Slot,
    session: &RepairSession,
    joined: &SignedRepairMessage,
) -> Result<Vec<u8>, Error> {
    if joined.session != *session || joined.sender != session.lost || !joined.verify(&slot.config) {
        return Err(failed(slot, None, RepairFault::BadSignature));
    }
    match &joined.payload {
        RepairPayload::Joined { hpke_key } => Ok(hpke_key.0.clone()),
        _ => Err(failed(slot, None, RepairFault::UnexpectedPayload)),
    }
}

/// The wallet key every helper signed, which must be one and the same and
/// fit this member's configuration (threshold, roster size, its own seat).
/// All `t` helpers agreeing is the bar: `t` helpers could sign anything
/// with the wallet anyway.
fn agreed_wallet_key(
    slot: &Slot,
    session: &RepairSession,
    opened: &[SignedRepairMessage],
) -> Result<WalletKey, Error> {
    let keys = by_helper(slot, session, opened, |p| match p {
        RepairPayload::Opened { wallet_key, .. } => Some(wallet_key.clone()),
        _ => None,
    })?;
    let mut values = keys.values();
    let first = values
        .next()
        .ok_or_else(|| failed(slot, None, RepairFault::MissingSender))?;
    if values.any(|k| k != first) {
        return Err(failed(slot, None, RepairFault::WalletKeyDisagrees));
    }
    let key = WalletKey::from_bytes(&first.0)
        .map_err(|_| failed(slot, None, RepairFault::WalletKeyDisagrees))?;
    let fits = key.threshold() == slot.config.threshold
        && key.members().len() == slot.config.roster.len()
        && key.check_member(slot.seat).is_ok();
    if !fits {
        return Err(failed(slot, None, RepairFault::WalletKeyDisagrees));
    }
    Ok(key)
}

fn digest_of(commitments: &BTreeMap<Seat, RepairCommitments>) -> [u8; 32] {
    let encoded: Vec<(Seat, Vec<u8>)> = commitments
        .iter()
        .map(|(s, c)| (*s, c.to_bytes()))
        .collect();
    let parts: Vec<(Seat, &[u8])> = encoded.iter().map(|(s, c)| (*s, c.as_slice())).collect();
    commitments_digest(&parts)
}

/// The hash of a step's input messages: only the byte-identical request is
/// answered again from the state the first one left.
fn request_hash(messages: &[SignedRepairMessage]) -> Result<HexBytes, Error> {
    let encoded =
        serde_json::to_vec(messages).map_err(|_| Error::Internal(InternalFault::Serialization))?;
    Ok(HexBytes(
        crate::check::tagged_hash(b"thresig/engine/repair-request/v1", &[&encoded]).to_vec(),
    ))
}

fn repaired(slot: &Slot, session: &RepairSession) -> RepairResponse {
    RepairResponse::Repaired {
        wallet: slot.config.id.clone(),
        seat: slot.seat,
        epoch: session.epoch,
    }
}

fn not_in_phase(slot: &Slot) -> Error {
    Error::RepairNotInPhase {
        wallet: slot.config.id.clone(),
    }
}

fn failed(slot: &Slot, accused: Option<Seat>, fault: RepairFault) -> Error {
    Error::RepairFailed {
        wallet: slot.config.id.clone(),
        accuser: slot.seat,
        accused,
        fault,
    }
}

/// A crypto check of a repair value, naming the helper its error blames.
fn crypto_failed(slot: &Slot, e: CryptoError) -> Error {
    let fault = match e {
        CryptoError::BadRepairDelta { .. } => RepairFault::BadDelta,
        CryptoError::BadRepairCommitment { .. } => RepairFault::BadCommitment,
        CryptoError::BadRepairSigma { .. } => RepairFault::BadSigma,
        _ => RepairFault::ShareMismatch,
    };
    failed(slot, e.culprits().first().copied(), fault)
}
