//! What the coordinator sends to signers and what they answer.

use std::fmt;
use std::sync::Arc;

use crate::{Scheme, Seat, SessionId};

/// A request for one signer, returned by [`crate::Coordinator::poll_transmit`].
///
/// The caller delivers it together with whatever it knows about the signing
/// job that the coordinator does not (wallet id, PSBT, epoch): signers check
/// the transaction themselves and never trust the coordinator.
#[must_use]
pub struct Transmit<S: Scheme> {
    /// The recipient.
    pub to: Seat,
    /// What to ask it.
    pub request: Request<S>,
}

/// The two kinds of request a signer answers.
#[non_exhaustive]
pub enum Request<S: Scheme> {
    /// Round 1: send a fresh commitment vector, one commitment per message.
    /// Answered by [`Reply::Commitments`] or refused with [`Round::Commit`].
    Commit,
    /// Round 2: sign every input of `session`. Answered by [`Reply::Shares`]
    /// or refused with [`Round::Sign`].
    Sign {
        /// The session to name in the reply.
        session: SessionId,
        /// One signing package per message, in message order. The same
        /// packages go to every member of the session, hence the `Arc`.
        packages: Arc<[S::Package]>,
    },
}

/// A signer's answer, fed to [`crate::Coordinator::handle_reply`].
///
/// The caller decodes the wire message into this type; vector lengths are
/// checked by the coordinator, which knows how many messages it signs.
#[non_exhaustive]
pub enum Reply<S: Scheme> {
    /// A fresh commitment vector, one per message: the answer to
    /// [`Request::Commit`]. Accepted only while a round-1 request to the
    /// signer is unanswered (also after that request timed out); unsolicited
    /// commitments and second copies are refused, so a signer that refused
    /// or stayed silent cannot push itself back into the next session.
    Commitments {
        /// One commitment per message, in message order.
        commitments: Vec<S::Commitment>,
    },
    /// The answer to [`Request::Sign`]: the signer's shares and, as ROAST
    /// requires, a fresh commitment vector for its next session.
    Shares {
        /// The session the shares are for.
        session: SessionId,
        /// One share per message, in message order.
        shares: Vec<S::Share>,
        /// A fresh commitment vector for the next session, or an empty one
        /// when the signer has none to give (it is at its nonce capacity):
        /// valid shares count either way, and a signer without usable
        /// fresh commitments is asked for some in round 1.
        commitments: Vec<S::Commitment>,
    },
    /// The signer refused a request. A refusal carries no fresh commitments:
    /// the signer rejoins only by answering a later [`Request::Commit`],
    /// which the coordinator sends only after a transient refusal (see
    /// [`Refusal::is_transient`]).
    Refused {
        /// Which request is refused.
        round: Round,
        /// Why, as the signer's typed error code.
        refusal: Refusal,
    },
}

/// Which request a refusal or a timeout concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Round {
    /// A [`Request::Commit`].
    Commit,
    /// A [`Request::Sign`] for this session.
    Sign(SessionId),
}

/// Why a signer refused a request: the signer-side error codes that make a
/// signer unresponsive. None of them makes it malicious; only an invalid
/// share does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The signer holds no live nonce for its commitment in the package
    /// (it restarted, or the nonce expired or was evicted).
    NonceUnknown,
    /// The signer's policy does not allow this transaction.
    PolicyDenied,
    /// The commitment was already used with a different package.
    SessionConflict,
    /// The wallet is being rekeyed on the signer: it signs only the sweep
    /// to its successor, and this was not one.
    RekeyInProgress,
    /// A failure on the signer's side that may pass (its store could not
    /// commit, a quota was full).
    Retryable,
    /// Any other refusal (the signer found the request invalid).
    Rejected,
}

impl Refusal {
    /// Whether the signer is likely to answer a fresh round-1 request:
    /// `true` for [`Refusal::NonceUnknown`] and [`Refusal::Retryable`]. The
    /// coordinator then re-asks it with a [`Request::Commit`], at once the
    /// first time and after growing delays later (bounded per seat and run,
    /// see [`crate::Coordinator`], so a signer that keeps refusing cannot
    /// keep the run spinning). The others would be refused again for the
    /// same transaction: the seat is not asked again in this run, and once
    /// such refusals leave fewer than t signers able to sign, the run fails
    /// at once with [`crate::Failure::TooFewWilling`].
    #[must_use]
    pub fn is_transient(self) -> bool {
        match self {
            Self::NonceUnknown | Self::Retryable => true,
            Self::PolicyDenied | Self::SessionConflict | Self::RekeyInProgress | Self::Rejected => {
                false
            }
        }
    }
}

impl<S: Scheme> fmt::Debug for Transmit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transmit")
            .field("to", &self.to)
            .field("request", &self.request)
            .finish()
    }
}

impl<S: Scheme> fmt::Debug for Request<S> {
    /// Names the request kind and session; packages are left out (they are
    /// public but large).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Commit => f.write_str("Commit"),
            Self::Sign { session, packages } => f
                .debug_struct("Sign")
                .field("session", session)
                .field("inputs", &packages.len())
                .finish(),
        }
    }
}

impl<S: Scheme> fmt::Debug for Reply<S> {
    /// Names the reply kind, its session and its vector lengths.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Commitments { commitments } => f
                .debug_struct("Commitments")
                .field("inputs", &commitments.len())
                .finish(),
            Self::Shares {
                session,
                shares,
                commitments,
            } => f
                .debug_struct("Shares")
                .field("session", session)
                .field("shares", &shares.len())
                .field("commitments", &commitments.len())
                .finish(),
            Self::Refused { round, refusal } => f
                .debug_struct("Refused")
                .field("round", round)
                .field("refusal", refusal)
                .finish(),
        }
    }
}
