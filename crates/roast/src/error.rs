//! The crate's error type.

use crate::{Seat, SessionId};

/// Why the coordinator refused a configuration or a reply.
///
/// A refused reply changes nothing: its sender is neither counted nor
/// blamed, and the coordinator keeps waiting for a valid answer (or the
/// request's timeout). Resending the same reply is refused the same way, so
/// no variant is retryable; a driver logs the error with the sender and
/// moves on. A refused configuration is a caller bug and is terminal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The threshold is not within `1..=roster size`.
    #[error("threshold {threshold} is not within 1..={seats}")]
    InvalidThreshold {
        /// The configured threshold.
        threshold: u16,
        /// Seats in the roster.
        seats: usize,
    },
    /// The roster lists a seat twice.
    #[error("seat {seat} appears twice in the roster")]
    DuplicateSeat {
        /// The repeated seat.
        seat: Seat,
    },
    /// The overall deadline lies beyond what `Instant` can represent.
    #[error("the overall deadline is too far in the future")]
    DeadlineTooFar,
    /// There is nothing to sign.
    #[error("no messages to sign")]
    NoMessages,
    /// A reply came from a seat outside the roster.
    #[error("reply from seat {seat}, which is not in the roster")]
    UnknownSeat {
        /// The sender.
        seat: Seat,
    },
    /// A reply names a session this run never started.
    #[error("reply for session {session}, which was never started")]
    UnknownSession {
        /// The named session.
        session: SessionId,
    },
    /// A reply for a session that was closed: a member refused, left or
    /// proved malicious and no other member's answer is awaited, so it can
    /// never finish.
    #[error("reply for session {session}, which is closed")]
    SessionClosed {
        /// The named session.
        session: SessionId,
    },
    /// A share reply or refusal for a session whose answer from this seat is
    /// not awaited: the seat is not a member, already answered (a duplicate),
    /// or left it.
    #[error("seat {seat} has no pending request in session {session}")]
    NotPending {
        /// The sender.
        seat: Seat,
        /// The named session.
        session: SessionId,
    },
    /// Commitments (or a round-1 refusal) from a seat that has no
    /// unanswered round-1 request: unsolicited commitments (a seat rejoins
    /// only with a valid share vector or by answering a request the
    /// coordinator sent), a second answer to the same request, or a reply
    /// from a seat that is excluded or malicious.
    #[error("seat {seat} sent commitments that are not awaited")]
    NotAwaited {
        /// The sender.
        seat: Seat,
    },
    /// A round-1 commitment vector repeats a commitment the coordinator
    /// already accepted from this seat (a replayed or duplicated reply):
    /// using it again would put one nonce into two signing packages. (Such
    /// a vector beside valid shares is not an error: the shares count and
    /// the seat is asked for fresh commitments.)
    #[error("seat {seat} sent a commitment it had already sent")]
    ReusedCommitment {
        /// The sender.
        seat: Seat,
    },
    /// A vector does not hold one element per message.
    #[error("seat {seat} sent {got} elements, {expected} expected")]
    VectorLength {
        /// The sender.
        seat: Seat,
        /// The number of messages.
        expected: usize,
        /// Elements received.
        got: usize,
    },
    /// The run already ended with [`crate::Event::Done`] or
    /// [`crate::Event::Failed`].
    #[error("the signing run has ended")]
    Finished,
}
