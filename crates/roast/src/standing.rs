//! What the coordinator knows about one seat of the roster.

use std::time::{Duration, Instant};

use crate::{Refusal, Round, Scheme, SessionId};

/// Where one seat stands in the run. Malicious and unresponsive are separate
/// states: only [`Standing::Malicious`] is blamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Standing {
    /// A round-1 request is outstanding until `timeout`.
    Asked { timeout: Instant },
    /// In the responsive set R with a fresh commitment vector (held in the
    /// coordinator's R).
    Responsive,
    /// A member of `session`, its share vector awaited until `timeout`.
    Signing {
        session: SessionId,
        timeout: Instant,
    },
    /// Timed out, refused transiently, or sent valid shares without usable
    /// fresh commitments. Back in R only with a valid share vector (and
    /// fresh commitments) for the session it is still pending in, or with an
    /// answer to a round-1 request the coordinator sent it.
    Unresponsive,
    /// Refused for this reason, which does not pass (policy, conflict, an
    /// invalid request): never asked again in this run, and not blamed. Kept
    /// so a run that fails for want of willing signers can say who refused
    /// and why.
    Excluded(Refusal),
    /// Sent an invalid share. Never used again.
    Malicious,
    /// Deferred ([`crate::Config::deferred`]) and not asked yet: asked
    /// only once the other seats alone cannot make a session.
    Held,
}

/// One seat's record.
///
/// # Invariants
/// `asked` is set exactly while a round-1 request to the seat is
/// unanswered (it survives the request's timeout, so a late answer is still
/// accepted, and it is cleared by the first answer, so a second copy is
/// not); `retry_at` is set only while the seat is unresponsive and has no
/// request outstanding, is before the deadline, and is always later than the
/// previous re-ask by the growing delay of [`SeatState::reask_delay`].
pub(crate) struct SeatState<S: Scheme> {
    pub(crate) standing: Standing,
    /// A round-1 request to this seat is unanswered.
    pub(crate) asked: bool,
    /// Round-1 requests sent after the first.
    pub(crate) reasks: u32,
    /// When the next re-ask is due.
    pub(crate) retry_at: Option<Instant>,
    /// Every commitment of this seat the coordinator accepted: none is
    /// handed out twice.
    handed_out: Vec<S::Commitment>,
}

impl<S: Scheme> SeatState<S> {
    /// A seat about to be sent its first round-1 request.
    pub(crate) fn new(timeout: Instant) -> Self {
        Self {
            standing: Standing::Asked { timeout },
            asked: true,
            reasks: 0,
            retry_at: None,
            handed_out: Vec::new(),
        }
    }

    /// A deferred seat, not asked until it is called in.
    pub(crate) fn held() -> Self {
        Self {
            standing: Standing::Held,
            asked: false,
            reasks: 0,
            retry_at: None,
            handed_out: Vec::new(),
        }
    }

    /// Whether the seat may be counted on to make a session: it is in R,
    /// awaited in a session (the caller checks that the session is still
    /// intact), or within the timeout of its first round-1 request. A re-ask does not count: the seat already timed out or
    /// refused once in this run.
    pub(crate) fn is_expected(&self) -> bool {
        match self.standing {
            Standing::Responsive | Standing::Signing { .. } => true,
            Standing::Asked { .. } => self.reasks == 0,
            Standing::Unresponsive
            | Standing::Excluded(_)
            | Standing::Malicious
            | Standing::Held => false,
        }
    }

    /// The request that times out for this seat, and when.
    pub(crate) fn expiry(&self) -> Option<(Instant, Round)> {
        match self.standing {
            Standing::Asked { timeout } => Some((timeout, Round::Commit)),
            Standing::Signing { session, timeout } => Some((timeout, Round::Sign(session))),
            Standing::Responsive
            | Standing::Unresponsive
            | Standing::Excluded(_)
            | Standing::Malicious
            | Standing::Held => None,
        }
    }

    /// Whether no commitment of `commitments` was accepted from this seat
    /// before.
    pub(crate) fn is_fresh(&self, commitments: &[S::Commitment]) -> bool {
        commitments
            .iter()
            .all(|commitment| !self.handed_out.contains(commitment))
    }

    /// Records `commitments` as handed out.
    pub(crate) fn remember(&mut self, commitments: &[S::Commitment]) {
        self.handed_out.extend_from_slice(commitments);
    }

    /// How long the next re-ask of this seat waits after what caused it:
    /// `request_timeout × (2^k − 1)` for the seat's k-th re-ask counted from
    /// 0 (0, T, 3T, 7T, …), or `None` once that no longer fits in a
    /// `Duration`.
    pub(crate) fn reask_delay(&self, request_timeout: Duration) -> Option<Duration> {
        let factor = 1u32
            .checked_shl(self.reasks)
            .and_then(|power| power.checked_sub(1))?;
        request_timeout.checked_mul(factor)
    }
}
