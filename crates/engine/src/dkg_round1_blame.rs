//! Transferable blame for a DKG round-1 fault: a member's signed round-1
//! package that fails the checks every member makes of it in part 2 (it
//! does not decode, carries the wrong number of commitments, or its proof
//! of knowledge does not verify), proven with the roster alone
//! (docs/blame.md, "The DKG").
//!
//! What a package must hold depends on the session's kind: a refresh's
//! carries one commitment fewer and no proof of knowledge is checked. The
//! message's ordinary signature does not cover the kind, so a relay could
//! present an honest refresh package as a fresh one and have it fail.
//! The proof therefore rests on the message's kind-bound signature, which
//! covers the kind (fresh, or refresh with its epoch and removal set): the
//! kind it names is the one the member signed for, and an honest member's
//! package always passes that kind's checks.

use serde::{Deserialize, Serialize};
use thresig_crypto::{Round1Fault, Seat, ShareKind, check_round1_package};
use thresig_store::WalletId;

use crate::blame::{BlameError, PROOF_VERSION, check_header};
use crate::config::WalletConfig;
use crate::dkg_blame::DkgProofKind;
use crate::dkg_msg::{DkgKind, DkgPayload, DkgSessionId, SignedDkgMessage};
use crate::error::{DkgFault, ErrorCode};

/// Evidence that a member's signed round-1 package of a DKG or refresh
/// session fails part 2's checks. Serialized as JSON
/// (`culprit-<seat>.proof.json`, `kind` `dkg_round1`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DkgRound1Proof {
    /// The format version (1).
    pub version: u32,
    /// Always `dkg_round1`.
    pub kind: DkgProofKind,
    /// The wallet.
    pub wallet: WalletId,
    /// The session.
    pub session: DkgSessionId,
    /// The session's kind, as the accused's kind-bound signature covers it.
    pub dkg: DkgKind,
    /// The accused's signed round-1 message, with its kind-bound signature.
    pub round1: SignedDkgMessage,
}

/// What a verified round-1 proof shows.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProvenRound1Fault {
    /// The wallet.
    pub wallet: WalletId,
    /// The session.
    pub session: DkgSessionId,
    /// The accused wallet seat (whose identity key signed the package).
    pub accused: Seat,
    /// What is wrong with the package.
    pub fault: Round1Fault,
}

/// What a relay finds of a member's round-1 answer, checked as it arrives
/// and before any is handed out ([`check_round1_answer`]): the cluster's
/// relay and the C library's make the same check.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Round1Answer {
    /// A kind-bound signature that verifies over a package that passes
    /// part 2's checks.
    Sound,
    /// No kind-bound signature (a member of an earlier version): part 2
    /// checks the package, naming its sender without proof.
    Unbound,
    /// A message of another session or wallet than the relay's run.
    OtherSession,
    /// A kind-bound signature that does not verify for the run's kind.
    BadKindSignature,
    /// A package that fails part 2's checks under a valid kind-bound
    /// signature: the proof.
    Proven(Box<DkgRound1Proof>),
}

impl Round1Answer {
    /// What a member whose answer is [`Round1Answer::Proven`] sent, as
    /// [`Round1Answer::problem`] words it, for a relay's own message around
    /// the proof.
    pub const PROVEN: &'static str =
        "a round-1 package that fails the checks every member makes of it";

    /// What a relay names the answering member for, worded alike by the
    /// cluster's relay and the C library's: `None` for an answer part 2
    /// may take ([`Round1Answer::Sound`], and [`Round1Answer::Unbound`],
    /// which only a relay requiring the kind-bound signature refuses).
    #[must_use]
    pub fn problem(&self) -> Option<&'static str> {
        match self {
            Self::Sound | Self::Unbound => None,
            Self::OtherSession => Some("a round-1 message of another session or wallet"),
            Self::BadKindSignature => Some(
                "a round-1 message whose kind-bound signature its identity key did not make for \
                 this run's kind",
            ),
            Self::Proven(_) => Some(Self::PROVEN),
        }
    }
}

/// Checks a member's round-1 `message`, answered to a relay running
/// `session` of `kind` for `wallet`, as every member's part 2 will: its
/// session and wallet, its kind-bound signature and, under a valid one, its
/// package. The relay checks the sender and the ordinary signature first.
#[must_use]
pub fn check_round1_answer(
    wallet: &WalletConfig,
    (kind, session): (&DkgKind, DkgSessionId),
    message: &SignedDkgMessage,
) -> Round1Answer {
    if message.session != session || message.wallet != wallet.id {
        return Round1Answer::OtherSession;
    }
    match message.kind_signed(wallet, kind) {
        None => Round1Answer::Unbound,
        Some(false) => Round1Answer::BadKindSignature,
        // The signature verified just above: the package alone is left to
        // check, which the proof's own `verify` would do after checking the
        // signature a second time.
        Some(true) => match &message.payload {
            DkgPayload::Round1 { package, .. }
                if package_fault(wallet, kind, message.sender, &package.0).is_some() =>
            {
                let proof = DkgRound1Proof::new(kind.clone(), message.clone());
                Round1Answer::Proven(Box::new(proof))
            }
            _ => Round1Answer::Sound,
        },
    }
}

/// Of the `round1` messages a relay received, each from its sender, the
/// senders of those without a kind-bound signature, when a member's
/// refusal of part 2 (its `code` and `message`) is for a missing one
/// ([`DkgFault::MissingKindSignature`], under
/// `require_round1_kind_signature`); empty for any other refusal. A relay
/// that does not itself require the signature (the C library's, or one
/// configured without the setting) names these senders instead of the
/// refusing member, which accuses no one.
#[must_use]
pub fn unbound_round1_senders<'a>(
    (code, message): (&str, &str),
    round1: impl IntoIterator<Item = &'a SignedDkgMessage>,
) -> Vec<Seat> {
    let missing = format!("({:?})", DkgFault::MissingKindSignature);
    if code != ErrorCode::DkgFailed.as_str() || !message.contains(&missing) {
        return Vec::new();
    }
    let mut seats: Vec<Seat> = round1
        .into_iter()
        .filter(|m| m.kind_signature.is_none() && matches!(m.payload, DkgPayload::Round1 { .. }))
        .map(|m| m.sender)
        .collect();
    seats.sort_unstable();
    seats.dedup();
    seats
}

/// What the senders [`unbound_round1_senders`] names did, as a relay
/// words it after their names: `senders` is how many it names.
#[must_use]
pub fn unbound_round1_refusal(senders: usize) -> &'static str {
    if senders == 1 {
        "a round-1 message without the kind-bound signature the members require \
         (require_round1_kind_signature), so they refused part 2; upgrade it"
    } else {
        "round-1 messages without the kind-bound signature the members require \
         (require_round1_kind_signature), so they refused part 2; upgrade them"
    }
}

impl DkgRound1Proof {
    /// The proof that `round1`, signed for a session of `dkg`, holds a
    /// bad package.
    #[must_use]
    pub fn new(dkg: DkgKind, round1: SignedDkgMessage) -> Self {
        Self {
            version: PROOF_VERSION,
            kind: DkgProofKind::DkgRound1,
            wallet: round1.wallet.clone(),
            session: round1.session,
            dkg,
            round1,
        }
    }

    /// The accused seat.
    #[must_use]
    pub fn accused(&self) -> Seat {
        self.round1.sender
    }

    /// Checks the proof against `wallet`'s roster alone.
    ///
    /// # Errors
    /// [`BlameError`], checked in this order: wallet, version, that the
    /// proof is a round-1 message of its session, the kind-bound signature
    /// over the proof's kind, then the package (`NoFault` when it passes).
    pub fn verify(&self, wallet: &WalletConfig) -> Result<ProvenRound1Fault, BlameError> {
        let id = &wallet.id;
        check_header(id, [&self.wallet, &self.round1.wallet], self.version)?;
        let accused = self.round1.sender;
        let package = match &self.round1.payload {
            DkgPayload::Round1 { package, .. }
                if self.kind == DkgProofKind::DkgRound1 && self.round1.session == self.session =>
            {
                package
            }
            _ => return Err(BlameError::DkgRound1Message { wallet: id.clone() }),
        };
        if self.round1.kind_signed(wallet, &self.dkg) != Some(true) {
            return Err(BlameError::DkgSignature {
                wallet: id.clone(),
                seat: accused,
            });
        }
        match package_fault(wallet, &self.dkg, accused, &package.0) {
            None => Err(BlameError::DkgRound1NoFault {
                wallet: id.clone(),
                seat: accused,
            }),
            Some(fault) => Ok(ProvenRound1Fault {
                wallet: id.clone(),
                session: self.session,
                accused,
                fault,
            }),
        }
    }
}

/// What part 2's checks of a session of `kind` find wrong with `sender`'s
/// round-1 `package`, if anything. It proves nothing by itself: only under
/// `sender`'s kind-bound signature for `kind`, checked first by each caller.
fn package_fault(
    wallet: &WalletConfig,
    kind: &DkgKind,
    sender: Seat,
    package: &[u8],
) -> Option<Round1Fault> {
    let kind = match kind {
        DkgKind::Fresh => ShareKind::Fresh,
        DkgKind::Refresh { .. } => ShareKind::Refresh,
    };
    check_round1_package(kind, wallet.threshold, sender, package).err()
}
