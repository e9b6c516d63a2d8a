//! What the coordinator reports to its driver.

use std::fmt;

use crate::{Refusal, Round, Scheme, Seat, SessionId};

/// Something the driver should know, returned by
/// [`crate::Coordinator::poll_event`].
///
/// [`Event::Done`] and [`Event::Failed`] are terminal: exactly one of them
/// ends every run, and it is the last event.
#[must_use]
#[non_exhaustive]
pub enum Event<S: Scheme> {
    /// A session started with these signers (ascending); one
    /// [`crate::Request::Sign`] per signer is queued.
    SessionStarted {
        /// The new session.
        session: SessionId,
        /// Its t signers, ascending.
        signers: Vec<Seat>,
    },
    /// A signer did not answer in time, refused, or sent valid shares
    /// without fresh commitments. It is not blamed. It becomes responsive
    /// again only with a valid share vector (and fresh commitments) for the
    /// session it is pending in, or by answering a round-1 request the
    /// coordinator sends it (after a round-1 timeout, a transient refusal or
    /// shares without fresh commitments); after a refusal that is not
    /// transient it is not asked again in this run.
    Unresponsive {
        /// The signer.
        seat: Seat,
        /// What happened.
        cause: Unresponsiveness,
    },
    /// A signer proved malicious. Reported once per signer; the signer is
    /// never used again in this run.
    ///
    /// Shares it sent earlier stay valid: a share vector it sent for another
    /// session was verified on arrival, so that session may still finish and
    /// its share may be part of the final signature. Only the invalid
    /// vector itself is never used.
    Culprit {
        /// The signer.
        seat: Seat,
        /// What it did.
        fault: Misbehavior,
    },
    /// Terminal: every input is signed.
    Done(Signed<S>),
    /// Terminal: the run cannot finish.
    Failed {
        /// Why.
        failure: Failure<S::Error>,
        /// What the run did before failing (culprits included).
        stats: Stats,
    },
}

/// Why a signer counts as unresponsive. Kept apart from [`Misbehavior`] so a
/// timeout or refusal can never be mistaken for proof of malice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unresponsiveness {
    /// No answer to a request within the configured request timeout. A late
    /// answer to a [`Round::Sign`] request is still accepted while its
    /// session is open.
    Timeout {
        /// The request that timed out.
        round: Round,
    },
    /// The signer refused the request.
    Refused {
        /// The refused request.
        round: Round,
        /// The signer's reason.
        refusal: Refusal,
    },
    /// The signer's share vector for `session` verified, but came without a
    /// usable fresh commitment vector: none (a signer at its nonce capacity
    /// sends none), one of the wrong length, or one repeating a commitment
    /// already accepted from it. Its shares count all the same; it is asked
    /// for fresh commitments with a [`crate::Request::Commit`], as after a
    /// transient refusal.
    NoFreshCommitments {
        /// The session its shares were for.
        session: SessionId,
    },
}

/// Proof that a signer is malicious.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Misbehavior {
    /// A share in its vector does not verify.
    InvalidShare {
        /// The session the share was for.
        session: SessionId,
        /// The index of the first invalid share (the input it signs).
        input: usize,
    },
}

/// Why a run failed.
///
/// The coordinator fails as soon as the run cannot finish, so only
/// [`Failure::Deadline`] is worth retrying as it stands: the others would
/// fail the same way until an operator acts (changes the transaction or a
/// signer's policy, replaces malicious signers, fixes the key material).
///
/// When culprits and refusals together leave fewer than t signers, the
/// failure is [`Failure::TooManyMalicious`] if the culprits alone do, and
/// [`Failure::TooFewWilling`] otherwise; either way [`Stats::culprits`]
/// names every culprit.
#[derive(Debug)]
#[non_exhaustive]
pub enum Failure<E> {
    /// So many signers proved malicious that fewer than t others remain.
    /// Terminal: the wallet's key is out of reach of honest signers alone.
    TooManyMalicious {
        /// Signers not known to be malicious.
        remaining: usize,
        /// The threshold.
        threshold: usize,
    },
    /// So many signers refused for good ([`Refusal::is_transient`] is
    /// `false`: policy denied, session conflict, rejected) that, with the
    /// culprits, fewer than t signers could still take part, and no open
    /// session could still finish. Reported at the refusal (or conviction)
    /// that made the run hopeless, without waiting for the deadline.
    ///
    /// Terminal: the refusing signers would refuse the same transaction
    /// again, so retrying it as it stands cannot succeed. Silent signers
    /// and transient refusals never lead here; they may come back, and the
    /// deadline governs them.
    TooFewWilling {
        /// Signers neither malicious nor excluded by a refusal: fewer than
        /// `threshold`.
        willing: usize,
        /// The threshold.
        threshold: usize,
        /// Every refusal that excluded a signer in this run, by ascending
        /// seat: the reasons to show an operator.
        refusals: Vec<(Seat, Refusal)>,
    },
    /// The overall deadline passed first, while the run could still have
    /// finished: signers were silent, slow or refusing transiently, and may
    /// answer a later run: worth retrying.
    Deadline,
    /// The run would need a session id beyond `u32::MAX`; it ends instead of
    /// repeating an id.
    SessionsExhausted,
    /// The signature scheme could not build a package, check a share or
    /// aggregate verified shares: the key material or configuration is
    /// inconsistent, not a signer's fault.
    Scheme {
        /// The session being built or finished.
        session: SessionId,
        /// The scheme's error.
        error: E,
    },
}

/// The successful end of a run.
pub struct Signed<S: Scheme> {
    /// The session whose shares were aggregated.
    pub session: SessionId,
    /// Its signers, ascending.
    pub signers: Vec<Seat>,
    /// One verified signature per message, in message order.
    pub signatures: Vec<S::Signature>,
    /// What the run did.
    pub stats: Stats,
}

/// Counters of a run, reported with its terminal event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Sessions started: with at least t signers answering validly, at most
    /// n - t + 1, plus one for each re-ask after a transient round-2 refusal
    /// (see [`crate::Coordinator`] for the bound on re-asks).
    pub sessions: u32,
    /// Every signer found malicious, ascending.
    pub culprits: Vec<Seat>,
}

impl<S: Scheme> fmt::Debug for Event<S>
where
    S::Error: fmt::Debug,
{
    /// Signatures and the scheme's payloads are summarized, not printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SessionStarted { session, signers } => f
                .debug_struct("SessionStarted")
                .field("session", session)
                .field("signers", signers)
                .finish(),
            Self::Unresponsive { seat, cause } => f
                .debug_struct("Unresponsive")
                .field("seat", seat)
                .field("cause", cause)
                .finish(),
            Self::Culprit { seat, fault } => f
                .debug_struct("Culprit")
                .field("seat", seat)
                .field("fault", fault)
                .finish(),
            Self::Done(signed) => f.debug_tuple("Done").field(signed).finish(),
            Self::Failed { failure, stats } => f
                .debug_struct("Failed")
                .field("failure", failure)
                .field("stats", stats)
                .finish(),
        }
    }
}

impl<S: Scheme> fmt::Debug for Signed<S> {
    /// Counts the signatures instead of printing them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signed")
            .field("session", &self.session)
            .field("signers", &self.signers)
            .field("signatures", &self.signatures.len())
            .field("stats", &self.stats)
            .finish()
    }
}
