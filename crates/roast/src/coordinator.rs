//! The ROAST coordinator state machine.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::session::{Checked, Session, Verified, transpose};
use crate::{
    Config, Error, Event, Failure, Misbehavior, Refusal, Reply, Request, Round, Scheme, Seat,
    SessionId, Signed, Stats, Transmit, Unresponsiveness,
};

/// Where one seat stands in the run. Malicious and unresponsive are separate
/// states: only [`Standing::Malicious`] is permanent and blamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// A round-1 request is outstanding until `timeout`.
    Asked { timeout: Instant },
    /// In the responsive set R with a fresh commitment vector (held in
    /// `Coordinator::responsive`).
    Responsive,
    /// A member of `session`, its share vector awaited until `timeout`.
    Signing {
        session: SessionId,
        timeout: Instant,
    },
    /// Timed out or refused. Not in R until it sends a fresh commitment
    /// vector; a late share vector for an open session is still accepted.
    Unresponsive,
    /// Sent an invalid share. Never used again.
    Malicious,
}

impl Standing {
    /// The request that times out for this seat, and when.
    fn expiry(self) -> Option<(Instant, Round)> {
        match self {
            Self::Asked { timeout } => Some((timeout, Round::Commit)),
            Self::Signing { session, timeout } => Some((timeout, Round::Sign(session))),
            Self::Responsive | Self::Unresponsive | Self::Malicious => None,
        }
    }
}

/// Whether the run still accepts input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// A terminal event has been queued; every later input is refused.
    Finished,
}

/// A ROAST coordinator for one signing job: it collects a signature for
/// every message from t of the wallet's n signers, despite signers that do
/// not answer and signers that send invalid shares.
///
/// Sans-IO, in the shape of quinn-proto's `Connection`: it reads no clock,
/// creates no randomness and touches no socket. The caller feeds in replies
/// and clock ticks and carries out what it is asked to do.
///
/// # Methods by kind
/// - Construction: [`Coordinator::new`] queues a round-1 request to every
///   seat of the roster.
/// - Getters: [`Coordinator::threshold`], [`Coordinator::sessions_started`],
///   [`Coordinator::culprits`], [`Coordinator::is_finished`].
/// - Inputs: [`Coordinator::handle_reply`] (a signer's answer) and
///   [`Coordinator::handle_timeout`] (the clock reached, or passed, the
///   instant [`Coordinator::poll_timeout`] named; calling it early or twice
///   is harmless).
/// - Outputs: [`Coordinator::poll_transmit`] (requests to send),
///   [`Coordinator::poll_event`] (progress, blame, the terminal event) and
///   [`Coordinator::poll_timeout`] (when to call `handle_timeout` next).
///
/// # Drain order
/// After construction and after every `handle_*` call, drain
/// `poll_transmit` until `None`, then `poll_event` until `None`, then re-arm
/// a single timer from `poll_timeout` (`None`: the run has ended, drop the
/// coordinator).
///
/// # Protocol
/// The coordinator keeps the responsive set R (signers holding a fresh,
/// unused commitment vector, in the order they became responsive), the
/// malicious set, and the open sessions. When R holds t signers and no open
/// session can still finish on time, it starts a session with the first t,
/// removes them from R and asks each to sign every input.
///
/// A valid share vector, verified element by element on arrival, puts its
/// sender back into R with the fresh commitments that came with it; an
/// invalid element makes the sender a culprit for good. When every member
/// of a session has answered validly, the shares are aggregated and
/// [`Event::Done`] ends the run.
///
/// The paper starts a session whenever R holds t signers. Here a session in
/// which every member is still expected to answer (none refused, proved
/// malicious or passed its request timeout) is given its chance first:
/// racing it would spend t more nonces and t more signer round trips on
/// every healthy run, while waiting costs at most one request timeout, after
/// which the coordinator behaves as in the paper.
///
/// # Invariants
/// - Each signer is a member of at most one open session whose answer is
///   awaited, and is in R at most once.
/// - Only an invalid share makes a signer malicious; timeouts and refusals
///   make it unresponsive ([`Unresponsiveness`]), never a culprit.
/// - Each culprit is reported exactly once, and a reply is counted at most
///   once: duplicates, late answers for ended runs, unknown seats and
///   sessions, and wrong vector lengths are refused with an [`Error`] and
///   change nothing.
/// - When signers fail only by silence or invalid shares, at most n - t + 1
///   sessions start; each transient refusal ([`Refusal::is_transient`]) may
///   add one.
pub struct Coordinator<S: Scheme> {
    scheme: S,
    threshold: usize,
    request_timeout: Duration,
    deadline: Instant,
    messages: Vec<S::Message>,
    signers: BTreeMap<Seat, Standing>,
    /// R: signers with a fresh commitment vector, in arrival order.
    responsive: VecDeque<(Seat, Vec<S::Commitment>)>,
    sessions: BTreeMap<SessionId, Session<S>>,
    next_session: SessionId,
    sessions_started: u32,
    culprits: BTreeSet<Seat>,
    /// Seats already sent a second round-1 request after a transient refusal.
    reasked: BTreeSet<Seat>,
    transmits: VecDeque<Transmit<S>>,
    events: VecDeque<Event<S>>,
    phase: Phase,
}

impl<S: Scheme> Coordinator<S> {
    /// Starts a run at `now` that signs `messages` (one per input) with
    /// `scheme`, and queues a [`Request::Commit`] to every seat.
    ///
    /// # Errors
    /// [`Error::NoMessages`], [`Error::InvalidThreshold`],
    /// [`Error::DuplicateSeat`], or [`Error::DeadlineTooFar`] if `now` plus
    /// the configured deadline is not representable.
    pub fn new(
        now: Instant,
        config: Config,
        scheme: S,
        messages: Vec<S::Message>,
    ) -> Result<Self, Error> {
        if messages.is_empty() {
            return Err(Error::NoMessages);
        }
        let threshold = usize::from(config.threshold);
        if threshold == 0 || threshold > config.roster.len() {
            return Err(Error::InvalidThreshold {
                threshold: config.threshold,
                seats: config.roster.len(),
            });
        }
        let deadline = now
            .checked_add(config.deadline)
            .ok_or(Error::DeadlineTooFar)?;
        let mut coordinator = Self {
            scheme,
            threshold,
            request_timeout: config.request_timeout,
            deadline,
            messages,
            signers: BTreeMap::new(),
            responsive: VecDeque::new(),
            sessions: BTreeMap::new(),
            next_session: SessionId::FIRST,
            sessions_started: 0,
            culprits: BTreeSet::new(),
            reasked: BTreeSet::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            phase: Phase::Running,
        };
        for seat in config.roster {
            if coordinator.signers.contains_key(&seat) {
                return Err(Error::DuplicateSeat { seat });
            }
            coordinator.ask(now, seat);
        }
        Ok(coordinator)
    }

    /// Signers per session (t).
    #[must_use]
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// Sessions started so far.
    #[must_use]
    pub fn sessions_started(&self) -> u32 {
        self.sessions_started
    }

    /// Every signer found malicious so far, ascending.
    pub fn culprits(&self) -> impl Iterator<Item = Seat> + '_ {
        self.culprits.iter().copied()
    }

    /// Whether the terminal event has been queued; afterwards every input is
    /// refused or ignored and nothing more is transmitted.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Finished
    }

    /// Feeds in `from`'s answer, received at `now`.
    ///
    /// `from` must be the seat the transport authenticated (the peer's TLS
    /// identity mapped through the roster), never a seat named inside the
    /// message: blame is only as good as that mapping.
    ///
    /// # Errors
    /// The reply is refused, and changes nothing, if the run has ended
    /// ([`Error::Finished`]), `from` is not in the roster
    /// ([`Error::UnknownSeat`]), it names a session never started
    /// ([`Error::UnknownSession`]) or one that can no longer finish
    /// ([`Error::SessionClosed`]), it is not awaited from `from`
    /// ([`Error::NotPending`], [`Error::NotAwaited`]: duplicates land
    /// here), or a vector does not hold one element per message
    /// ([`Error::VectorLength`]). An invalid share is not an error: it is
    /// accepted as proof and reported as [`Event::Culprit`].
    pub fn handle_reply(&mut self, now: Instant, from: Seat, reply: Reply<S>) -> Result<(), Error> {
        if self.is_finished() {
            return Err(Error::Finished);
        }
        let standing = *self
            .signers
            .get(&from)
            .ok_or(Error::UnknownSeat { seat: from })?;
        match reply {
            Reply::Commitments { commitments } => {
                self.on_commitments(from, standing, commitments)?;
            }
            Reply::Shares {
                session,
                shares,
                commitments,
            } => self.on_shares(from, session, shares, commitments)?,
            Reply::Refused { round, refusal } => {
                self.on_refusal(now, from, standing, round, refusal)?;
            }
        }
        // A session that lost a member and awaits no one can never finish.
        self.sessions
            .retain(|_, session| session.is_intact() || !session.pending.is_empty());
        self.start_sessions(now);
        Ok(())
    }

    /// Expires every request whose timeout is at or before `now`, and fails
    /// the run if its overall deadline has passed. Harmless when nothing is
    /// due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_finished() {
            return;
        }
        if now >= self.deadline {
            self.fail(Failure::Deadline);
            return;
        }
        let expired: Vec<(Seat, Round)> = self
            .signers
            .iter()
            .filter_map(|(seat, standing)| {
                let (timeout, round) = standing.expiry()?;
                (timeout <= now).then_some((*seat, round))
            })
            .collect();
        for (seat, round) in expired {
            // A timed-out session member stays pending in its session, so a
            // late but valid answer can still complete it.
            self.signers.insert(seat, Standing::Unresponsive);
            self.events.push_back(Event::Unresponsive {
                seat,
                cause: Unresponsiveness::Timeout { round },
            });
        }
        self.start_sessions(now);
    }

    /// The next request to send, if any.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit<S>> {
        self.transmits.pop_front()
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event<S>> {
        self.events.pop_front()
    }

    /// When to call [`Coordinator::handle_timeout`] next: the earliest
    /// request timeout or the overall deadline; `None` once the run has
    /// ended. Changed by every `handle_*` call.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_finished() {
            return None;
        }
        let earliest = self
            .signers
            .values()
            .filter_map(|standing| standing.expiry())
            .map(|(timeout, _)| timeout)
            .fold(self.deadline, Instant::min);
        Some(earliest)
    }

    fn on_commitments(
        &mut self,
        from: Seat,
        standing: Standing,
        commitments: Vec<S::Commitment>,
    ) -> Result<(), Error> {
        self.check_len(from, commitments.len())?;
        match standing {
            Standing::Asked { .. } => {}
            Standing::Unresponsive => {
                // It gave up on any session it timed out in: that nonce will
                // not be used, and it may only be in one session at a time.
                for session in self.sessions.values_mut() {
                    session.pending.remove(&from);
                }
            }
            Standing::Responsive | Standing::Signing { .. } | Standing::Malicious => {
                return Err(Error::NotAwaited { seat: from });
            }
        }
        self.make_responsive(from, commitments);
        Ok(())
    }

    fn on_shares(
        &mut self,
        from: Seat,
        id: SessionId,
        shares: Vec<S::Share>,
        commitments: Vec<S::Commitment>,
    ) -> Result<(), Error> {
        let session = self.sessions.get(&id).ok_or(self.missing(id))?;
        if !session.pending.contains(&from) {
            return Err(Error::NotPending {
                seat: from,
                session: id,
            });
        }
        self.check_len(from, shares.len())?;
        self.check_len(from, commitments.len())?;
        match session.check(&self.scheme, from, shares) {
            Err(error) => self.fail(Failure::Scheme { session: id, error }),
            Ok(Checked::Invalid { input }) => self.convict(from, id, input),
            Ok(Checked::Valid(verified)) => self.accept_shares(from, id, verified, commitments),
        }
        Ok(())
    }

    fn on_refusal(
        &mut self,
        now: Instant,
        from: Seat,
        standing: Standing,
        round: Round,
        refusal: Refusal,
    ) -> Result<(), Error> {
        match round {
            Round::Commit => {
                if !matches!(standing, Standing::Asked { .. }) {
                    return Err(Error::NotAwaited { seat: from });
                }
            }
            Round::Sign(id) => {
                let missing = self.missing(id);
                let session = self.sessions.get_mut(&id).ok_or(missing)?;
                if !session.pending.remove(&from) {
                    return Err(Error::NotPending {
                        seat: from,
                        session: id,
                    });
                }
            }
        }
        self.signers.insert(from, Standing::Unresponsive);
        self.events.push_back(Event::Unresponsive {
            seat: from,
            cause: Unresponsiveness::Refused { round, refusal },
        });
        if refusal.is_transient() && self.reasked.insert(from) {
            self.ask(now, from);
        }
        Ok(())
    }

    /// Records a valid share vector; completes the session if it was the last.
    fn accept_shares(
        &mut self,
        from: Seat,
        id: SessionId,
        verified: Verified<S>,
        commitments: Vec<S::Commitment>,
    ) {
        let complete = self.sessions.get_mut(&id).is_some_and(|session| {
            session.record(verified);
            session.is_complete()
        });
        self.make_responsive(from, commitments);
        if complete {
            self.complete(id);
        }
    }

    /// Aggregates a session whose every member answered validly, and ends
    /// the run.
    fn complete(&mut self, id: SessionId) {
        let Some(session) = self.sessions.remove(&id) else {
            return;
        };
        let signers = session.answered();
        match session.aggregate(&self.scheme) {
            Ok(signatures) => {
                self.events.push_back(Event::Done(Signed {
                    session: id,
                    signers,
                    signatures,
                    stats: self.stats(),
                }));
                self.finish();
            }
            Err(error) => self.fail(Failure::Scheme { session: id, error }),
        }
    }

    /// Makes `seat` malicious for an invalid share in `session`, and fails
    /// the run if fewer than t others remain.
    fn convict(&mut self, seat: Seat, session: SessionId, input: usize) {
        if let Some(open) = self.sessions.get_mut(&session) {
            open.pending.remove(&seat);
        }
        self.signers.insert(seat, Standing::Malicious);
        if self.culprits.insert(seat) {
            self.events.push_back(Event::Culprit {
                seat,
                fault: Misbehavior::InvalidShare { session, input },
            });
        }
        let remaining = self.signers.len().saturating_sub(self.culprits.len());
        if remaining < self.threshold {
            self.fail(Failure::TooManyMalicious {
                remaining,
                threshold: self.threshold,
            });
        }
    }

    /// Starts a session if R holds at least t signers and no open session
    /// can still finish on time.
    fn start_sessions(&mut self, now: Instant) {
        while !self.is_finished() && self.responsive.len() >= self.threshold && !self.any_live() {
            let members: Vec<(Seat, Vec<S::Commitment>)> = (0..self.threshold)
                .filter_map(|_| self.responsive.pop_front())
                .collect();
            self.start_session(now, members);
        }
    }

    /// Whether some open session can still finish on time: none of its
    /// members refused, left or proved malicious, and every member not yet
    /// answered is still within its request timeout.
    fn any_live(&self) -> bool {
        self.sessions.iter().any(|(id, session)| {
            session.is_intact()
                && session.pending.iter().all(|seat| {
                    matches!(self.signers.get(seat), Some(Standing::Signing { session, .. }) if session == id)
                })
        })
    }

    fn start_session(&mut self, now: Instant, members: Vec<(Seat, Vec<S::Commitment>)>) {
        let id = self.next_session;
        self.next_session = id.next();
        self.sessions_started = self.sessions_started.saturating_add(1);
        let mut signers: Vec<Seat> = members.iter().map(|(seat, _)| *seat).collect();
        signers.sort_unstable();
        let columns = transpose(members, self.messages.len());
        let packages: Result<Vec<S::Package>, S::Error> = self
            .messages
            .iter()
            .zip(&columns)
            .map(|(message, commitments)| self.scheme.package(message, commitments))
            .collect();
        let packages: Arc<[S::Package]> = match packages {
            Ok(packages) => packages.into(),
            Err(error) => return self.fail(Failure::Scheme { session: id, error }),
        };
        let timeout = self.timeout_after(now);
        for seat in &signers {
            self.signers.insert(
                *seat,
                Standing::Signing {
                    session: id,
                    timeout,
                },
            );
            self.transmits.push_back(Transmit {
                to: *seat,
                request: Request::Sign {
                    session: id,
                    packages: Arc::clone(&packages),
                },
            });
        }
        self.sessions.insert(id, Session::new(packages, &signers));
        self.events.push_back(Event::SessionStarted {
            session: id,
            signers,
        });
    }

    /// Queues a round-1 request to `seat`.
    fn ask(&mut self, now: Instant, seat: Seat) {
        let timeout = self.timeout_after(now);
        self.signers.insert(seat, Standing::Asked { timeout });
        self.transmits.push_back(Transmit {
            to: seat,
            request: Request::Commit,
        });
    }

    fn make_responsive(&mut self, seat: Seat, commitments: Vec<S::Commitment>) {
        self.signers.insert(seat, Standing::Responsive);
        self.responsive.push_back((seat, commitments));
    }

    /// A request sent at `now` times out one request timeout later, but never
    /// after the overall deadline (nothing matters beyond it).
    fn timeout_after(&self, now: Instant) -> Instant {
        now.checked_add(self.request_timeout)
            .map_or(self.deadline, |timeout| timeout.min(self.deadline))
    }

    /// The error for a reply naming session `id`, which is not open.
    fn missing(&self, id: SessionId) -> Error {
        if id < self.next_session {
            Error::SessionClosed { session: id }
        } else {
            Error::UnknownSession { session: id }
        }
    }

    fn check_len(&self, seat: Seat, got: usize) -> Result<(), Error> {
        let expected = self.messages.len();
        if got == expected {
            Ok(())
        } else {
            Err(Error::VectorLength {
                seat,
                expected,
                got,
            })
        }
    }

    fn stats(&self) -> Stats {
        Stats {
            sessions: self.sessions_started,
            culprits: self.culprits.iter().copied().collect(),
        }
    }

    fn fail(&mut self, failure: Failure<S::Error>) {
        let stats = self.stats();
        self.events.push_back(Event::Failed { failure, stats });
        self.finish();
    }

    /// Ends the run: nothing more is sent, and the open sessions and R are
    /// dropped.
    fn finish(&mut self) {
        self.phase = Phase::Finished;
        self.transmits.clear();
        self.sessions.clear();
        self.responsive.clear();
    }
}

impl<S: Scheme> fmt::Debug for Coordinator<S> {
    /// A summary for logs: the run's progress, not its payloads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coordinator")
            .field("threshold", &self.threshold)
            .field("inputs", &self.messages.len())
            .field("responsive", &self.responsive.len())
            .field("open_sessions", &self.sessions.len())
            .field("sessions_started", &self.sessions_started)
            .field("culprits", &self.culprits)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}
