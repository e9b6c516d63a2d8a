//! The ROAST coordinator state machine.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::session::{Checked, Session, Verified, transpose};
use crate::standing::{SeatState, Standing};
use crate::{
    Config, Error, Event, Failure, Misbehavior, Refusal, Reply, Request, Round, Scheme, Seat,
    SessionId, Signed, Stats, Transmit, Unresponsiveness,
};

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
///   seat of the roster; [`Coordinator::with_commitments`] to every seat
///   that does not already hold a fresh vector for this driver.
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
/// A valid share vector, verified element by element on arrival, counts
/// for its session and puts its sender back into R with the fresh
/// commitments that came with it; an invalid element makes the sender a
/// culprit for good. A valid share vector without a usable commitment
/// vector (none, as a signer at its nonce capacity sends, or one of the
/// wrong length or repeating an accepted commitment) still counts; its
/// sender is re-asked in round 1 as after a transient refusal
/// ([`Unresponsiveness::NoFreshCommitments`]). When every member of a
/// session has answered validly, the shares are aggregated and
/// [`Event::Done`] ends the run.
///
/// As in the paper, a seat enters R only in two ways: with a valid share
/// vector for the session it is pending in that carries its next
/// commitments, or by answering a round-1 request the coordinator sent it
/// (a driver that kept a seat's unused vector from an earlier run of its
/// own may also start a run with the seat in R,
/// [`Coordinator::with_commitments`]).
/// Commitments nobody asked for are refused ([`Error::NotAwaited`]), so a
/// signer that refuses or stays silent in round 2 cannot push itself back
/// into R and into every later session. A seat that timed out in round 2
/// stays pending in its session (its late share still counts) and is not
/// asked for new commitments while it stays silent; its late valid share
/// vector brings it back into R with the commitments it carries, or, when
/// they are not usable, earns a re-ask. A round-1 request that timed out,
/// and a transient refusal ([`Refusal::is_transient`]), earn one too: one
/// [`Request::Commit`], at most one outstanding per seat, the k-th re-ask
/// of a seat waiting `request_timeout × (2^(k−1) − 1)` after its cause (0,
/// T, 3T, 7T, …) and none due at or after the deadline. So a lost round-1
/// message or a briefly full signer is asked again, while each seat is
/// re-asked at most K times per run, K the largest k with
/// `T × (2^k − 1 − k) < deadline` (5 with the defaults). A refusal that is
/// not transient excludes the seat for the rest of the run.
///
/// A run ends early once it can no longer finish: when no open session can
/// still complete and the seats that could join a new one (neither culprits
/// nor excluded by a refusal) are fewer than t, it fails at once with
/// [`Failure::TooManyMalicious`] if the culprits alone leave fewer than t,
/// else [`Failure::TooFewWilling`]. Silent seats and transient refusals
/// still count as able to take part, so they never end a run early; only
/// the deadline ([`Failure::Deadline`]) does.
///
/// The paper starts a session whenever R holds t signers. Here a session in
/// which every member is still expected to answer (none refused, proved
/// malicious or passed its request timeout) is given its chance first:
/// racing it would spend t more nonces and t more signer round trips on
/// every healthy run, while waiting costs at most one request timeout, after
/// which the coordinator behaves as in the paper.
///
/// Deferred seats ([`Config::deferred`], the driver's quarantined members)
/// are asked last: they get no round-1 request while at least t other seats
/// are in R, awaited in a session that is still intact, or within a
/// round-1 request's timeout,
/// and a session takes the other seats of R first. As soon as fewer than t
/// other seats are expected to answer (a timeout, a refusal, a culprit, or
/// fewer than t others to begin with), every deferred seat not asked yet is
/// asked, and from then on it takes part like any seat. So deferring a seat
/// never makes a run fail that could have finished: it costs at most one
/// round-1 round trip after the event that called the seat in. That event
/// comes at once for a refusal or a culprit (and a driver reports a
/// refused connection as a transient refusal), but for a seat that is
/// silent in round 1 only at its request's timeout, which a run without
/// deferral might not have waited for.
///
/// # Invariants
/// - Each signer is a member of at most one open session whose answer is
///   awaited, and is in R at most once.
/// - No commitment a seat sent is put into two sessions: a round-1 answer
///   is accepted only while a round-1 request to that seat is unanswered,
///   and a vector repeating a commitment already accepted from the seat is
///   refused ([`Error::ReusedCommitment`]).
/// - Only an invalid share makes a signer malicious; timeouts and refusals
///   make it unresponsive ([`Unresponsiveness`]), never a culprit.
/// - Each culprit is reported exactly once, and a reply is counted at most
///   once: duplicates, late answers for ended runs, unknown seats and
///   sessions, unsolicited commitments and wrong vector lengths are refused
///   with an [`Error`] and change nothing (an invalid share vector is
///   convicted, and a valid one counts, even when its commitment vector is
///   malformed).
/// - Culprits and refusals that leave the run unable to finish fail it at
///   the reply that does so, never later at the deadline; a run that fails
///   with [`Failure::Deadline`] could still have finished.
/// - With at least t signers that answer every request validly, the run
///   finishes within n − t + 1 sessions, plus at most one session for each
///   re-ask after a transient round-2 refusal: at most n − t + 1 + K·m,
///   where m counts the signers that refuse transiently, including those
///   whose answers a driver reports as lost (a transport failure or an
///   answer it cannot accept, told as a [`Refusal::Retryable`]): a signer
///   that answers every request validly but whose replies are lost is one
///   of the m, not of the t.
pub struct Coordinator<S: Scheme> {
    scheme: S,
    threshold: usize,
    request_timeout: Duration,
    deadline: Instant,
    messages: Vec<S::Message>,
    signers: BTreeMap<Seat, SeatState<S>>,
    /// R: signers with a fresh commitment vector, in arrival order.
    responsive: VecDeque<(Seat, Vec<S::Commitment>)>,
    sessions: BTreeMap<SessionId, Session<S>>,
    next_session: SessionId,
    sessions_started: u32,
    culprits: BTreeSet<Seat>,
    /// Seats asked last ([`Config::deferred`]).
    deferred: BTreeSet<Seat>,
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
    /// [`Error::DuplicateSeat`], [`Error::UnknownSeat`] for a deferred seat
    /// outside the roster, or [`Error::DeadlineTooFar`] if `now` plus the
    /// configured deadline is not representable.
    pub fn new(
        now: Instant,
        config: Config,
        scheme: S,
        messages: Vec<S::Message>,
    ) -> Result<Self, Error> {
        Self::with_commitments(now, config, scheme, messages, Vec::new())
    }

    /// Like [`Coordinator::new`], with seats that already hold a fresh
    /// commitment vector for this coordinator: vectors a long-lived driver
    /// kept from its earlier runs, unused there (one per seat, each given
    /// to one run only). Those seats enter R at once, in the order given,
    /// and get no round-1 request; every other seat is asked as by `new`,
    /// and a session starts at once if t seats are ready.
    ///
    /// The coordinator trusts a kept vector no more than a fresh answer: a
    /// signer that no longer holds its nonces (it restarted, or they
    /// expired) refuses with [`Refusal::NonceUnknown`], and is asked in
    /// round 1 like any seat refusing so. Whether that refusal counts
    /// against the signer is the driver's call: it knows the vector was
    /// old.
    ///
    /// # Errors
    /// Those of `new`, and for a seat in `ready`: [`Error::UnknownSeat`]
    /// outside the roster, [`Error::NotAwaited`] for a deferred seat (it
    /// is asked last, so it cannot start in R), [`Error::DuplicateSeat`]
    /// for a second vector, and [`Error::VectorLength`] for a vector
    /// without one commitment per message.
    pub fn with_commitments(
        now: Instant,
        config: Config,
        scheme: S,
        messages: Vec<S::Message>,
        ready: Vec<(Seat, Vec<S::Commitment>)>,
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
        if let Some(seat) = config
            .deferred
            .iter()
            .find(|seat| !config.roster.contains(seat))
        {
            return Err(Error::UnknownSeat { seat: *seat });
        }
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
            deferred: config.deferred,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            phase: Phase::Running,
        };
        let timeout = coordinator.timeout_after(now);
        for seat in &config.roster {
            if coordinator.signers.contains_key(seat) {
                return Err(Error::DuplicateSeat { seat: *seat });
            }
            let state = if coordinator.deferred.contains(seat) {
                SeatState::held()
            } else {
                SeatState::new(timeout)
            };
            coordinator.signers.insert(*seat, state);
        }
        let mut seeded = BTreeSet::new();
        for (seat, commitments) in ready {
            let state = coordinator.seat(seat)?;
            if matches!(state.standing, Standing::Held) {
                return Err(Error::NotAwaited { seat });
            }
            if !seeded.insert(seat) {
                return Err(Error::DuplicateSeat { seat });
            }
            coordinator.check_len(seat, commitments.len())?;
            coordinator.make_responsive(seat, commitments);
        }
        for seat in config.roster {
            if !seeded.contains(&seat) && !coordinator.deferred.contains(&seat) {
                coordinator.transmits.push_back(Transmit {
                    to: seat,
                    request: Request::Commit,
                });
            }
        }
        coordinator.call_in_deferred(now);
        coordinator.start_sessions(now);
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
    /// The driver must also bind each reply to the exact request it answers:
    /// one coordinator per run, and a reply is fed only to the coordinator
    /// whose [`Coordinator::poll_transmit`] produced the request (for
    /// example, by the RPC call or stream that carried it). Session numbers
    /// start at 1 in every run, so replies must never be routed across runs
    /// by their session number: a reply from another run could name a
    /// session of this one.
    ///
    /// # Errors
    /// The reply is refused, and changes nothing, if the run has ended
    /// ([`Error::Finished`]), `from` is not in the roster
    /// ([`Error::UnknownSeat`]), it names a session never started
    /// ([`Error::UnknownSession`]) or one that can no longer finish
    /// ([`Error::SessionClosed`]), it is not awaited from `from`
    /// ([`Error::NotPending`], [`Error::NotAwaited`]: duplicates and
    /// unsolicited commitments land here), a round-1 answer repeats a
    /// commitment already accepted from `from` ([`Error::ReusedCommitment`]),
    /// or a vector does not hold one element per message
    /// ([`Error::VectorLength`]). The commitments that come with shares
    /// never make a reply an error: an invalid share is accepted as proof
    /// and reported as [`Event::Culprit`], and a valid share vector counts
    /// whatever commitments came with it (without usable ones its sender is
    /// re-asked in round 1, [`Unresponsiveness::NoFreshCommitments`]).
    pub fn handle_reply(&mut self, now: Instant, from: Seat, reply: Reply<S>) -> Result<(), Error> {
        if self.is_finished() {
            return Err(Error::Finished);
        }
        if !self.signers.contains_key(&from) {
            return Err(Error::UnknownSeat { seat: from });
        }
        match reply {
            Reply::Commitments { commitments } => self.on_commitments(from, commitments)?,
            Reply::Shares {
                session,
                shares,
                commitments,
            } => self.on_shares(now, from, session, shares, commitments)?,
            Reply::Refused { round, refusal } => self.on_refusal(now, from, round, refusal)?,
        }
        // A session that lost a member and awaits no one can never finish.
        self.sessions
            .retain(|_, session| session.is_intact() || !session.pending.is_empty());
        self.fail_if_hopeless();
        self.call_in_deferred(now);
        self.start_sessions(now);
        Ok(())
    }

    /// Expires every request whose timeout is at or before `now`, sends the
    /// re-asks that are due, and fails the run if its overall deadline has
    /// passed. Harmless when nothing is due.
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
            .filter_map(|(seat, state)| {
                let (timeout, round) = state.expiry()?;
                (timeout <= now).then_some((*seat, round))
            })
            .collect();
        for (seat, round) in expired {
            // A timed-out session member stays pending in its session, so a
            // late but valid answer can still complete it; a timed-out
            // round-1 request stays answerable and is sent again later.
            self.set_standing(seat, Standing::Unresponsive);
            self.events.push_back(Event::Unresponsive {
                seat,
                cause: Unresponsiveness::Timeout { round },
            });
            if round == Round::Commit {
                self.schedule_reask(now, seat);
            }
        }
        let due: Vec<Seat> = self
            .signers
            .iter()
            .filter(|(_, state)| state.retry_at.is_some_and(|at| at <= now))
            .map(|(seat, _)| *seat)
            .collect();
        for seat in due {
            self.ask(now, seat);
        }
        self.call_in_deferred(now);
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
    /// request timeout, re-ask or the overall deadline; `None` once the run
    /// has ended. Changed by every `handle_*` call.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_finished() {
            return None;
        }
        let earliest = self
            .signers
            .values()
            .flat_map(|state| [state.expiry().map(|(timeout, _)| timeout), state.retry_at])
            .flatten()
            .fold(self.deadline, Instant::min);
        Some(earliest)
    }

    fn on_commitments(&mut self, from: Seat, commitments: Vec<S::Commitment>) -> Result<(), Error> {
        let state = self.seat(from)?;
        let answerable = matches!(
            state.standing,
            Standing::Asked { .. } | Standing::Unresponsive
        );
        if !(state.asked && answerable) {
            return Err(Error::NotAwaited { seat: from });
        }
        self.check_len(from, commitments.len())?;
        self.check_fresh(from, &commitments)?;
        self.make_responsive(from, commitments);
        Ok(())
    }

    /// Verifies the share vector before anything else, so invalid shares
    /// are convicted and valid ones kept whatever commitments came with
    /// them.
    fn on_shares(
        &mut self,
        now: Instant,
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
        match session.check(&self.scheme, from, shares) {
            Err(error) => self.fail(Failure::Scheme { session: id, error }),
            Ok(Checked::Invalid { input }) => self.convict(from, id, input),
            Ok(Checked::Valid(verified)) => {
                self.accept_shares(now, from, id, verified, commitments);
            }
        }
        Ok(())
    }

    fn on_refusal(
        &mut self,
        now: Instant,
        from: Seat,
        round: Round,
        refusal: Refusal,
    ) -> Result<(), Error> {
        match round {
            Round::Commit => {
                let state = self.seat(from)?;
                if !state.asked {
                    return Err(Error::NotAwaited { seat: from });
                }
                if let Some(state) = self.signers.get_mut(&from) {
                    state.asked = false;
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
        self.events.push_back(Event::Unresponsive {
            seat: from,
            cause: Unresponsiveness::Refused { round, refusal },
        });
        if refusal.is_transient() {
            self.set_standing(from, Standing::Unresponsive);
            self.schedule_reask(now, from);
        } else {
            self.set_standing(from, Standing::Excluded(refusal));
        }
        Ok(())
    }

    /// Records a valid share vector and completes the session if it was the
    /// last. The commitments that came with it put the sender back into R
    /// when they are well formed and fresh; otherwise (a signer at its
    /// nonce capacity sends none) the shares count all the same and the
    /// sender is re-asked in round 1, so neither its shares nor its seat are
    /// lost for the run.
    fn accept_shares(
        &mut self,
        now: Instant,
        from: Seat,
        id: SessionId,
        verified: Verified<S>,
        commitments: Vec<S::Commitment>,
    ) {
        let complete = self.sessions.get_mut(&id).is_some_and(|session| {
            session.record(verified);
            session.is_complete()
        });
        let usable = self.check_len(from, commitments.len()).is_ok()
            && self.check_fresh(from, &commitments).is_ok();
        if usable {
            self.make_responsive(from, commitments);
        } else {
            self.set_standing(from, Standing::Unresponsive);
            self.events.push_back(Event::Unresponsive {
                seat: from,
                cause: Unresponsiveness::NoFreshCommitments { session: id },
            });
            self.schedule_reask(now, from);
        }
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

    /// Makes `seat` malicious for an invalid share in `session`.
    fn convict(&mut self, seat: Seat, session: SessionId, input: usize) {
        if let Some(open) = self.sessions.get_mut(&session) {
            open.pending.remove(&seat);
        }
        self.set_standing(seat, Standing::Malicious);
        if self.culprits.insert(seat) {
            self.events.push_back(Event::Culprit {
                seat,
                fault: Misbehavior::InvalidShare { session, input },
            });
        }
    }

    /// Fails the run as soon as it can no longer finish: no open session
    /// can still complete, and fewer than t seats remain that could join a
    /// new one (every other seat is a culprit or refused for good).
    ///
    /// Only a refusal or a conviction can make a run hopeless (timeouts and
    /// transient refusals leave the seat able to come back), so this runs
    /// after every reply and never on a clock tick. The failure names the
    /// cause: [`Failure::TooManyMalicious`] when the culprits alone leave
    /// fewer than t seats, else [`Failure::TooFewWilling`] (the refusals
    /// were needed to make it hopeless; any culprits are in the stats).
    fn fail_if_hopeless(&mut self) {
        if self.is_finished() || self.sessions.values().any(Session::is_intact) {
            return;
        }
        let threshold = self.threshold;
        let remaining = self.signers.len().saturating_sub(self.culprits.len());
        if remaining < threshold {
            return self.fail(Failure::TooManyMalicious {
                remaining,
                threshold,
            });
        }
        let willing = self
            .signers
            .values()
            .filter(|state| !matches!(state.standing, Standing::Malicious | Standing::Excluded(_)))
            .count();
        if willing < threshold {
            let refusals = self
                .signers
                .iter()
                .filter_map(|(seat, state)| match state.standing {
                    Standing::Excluded(refusal) => Some((*seat, refusal)),
                    _ => None,
                })
                .collect();
            self.fail(Failure::TooFewWilling {
                willing,
                threshold,
                refusals,
            });
        }
    }

    /// Starts a session if R holds at least t signers and no open session
    /// can still finish on time.
    fn start_sessions(&mut self, now: Instant) {
        while !self.is_finished() && self.responsive.len() >= self.threshold && !self.any_live() {
            // Deferred seats go last: a stable partition keeps arrival order
            // within each group.
            let (others, deferred): (VecDeque<_>, VecDeque<_>) =
                std::mem::take(&mut self.responsive)
                    .into_iter()
                    .partition(|(seat, _)| !self.deferred.contains(seat));
            self.responsive = others;
            self.responsive.extend(deferred);
            let members: Vec<(Seat, Vec<S::Commitment>)> = (0..self.threshold)
                .filter_map(|_| self.responsive.pop_front())
                .collect();
            self.start_session(now, members);
        }
    }

    /// Asks every deferred seat not asked yet once fewer than t of the
    /// other seats are expected to answer (see [`Coordinator`]).
    fn call_in_deferred(&mut self, now: Instant) {
        // Without deferred seats no seat is held: nothing to count on the
        // path of every reply and timeout.
        if self.is_finished() || self.deferred.is_empty() {
            return;
        }
        // A seat awaited in a session a refusal, a culprit or a timeout
        // already broke will not make that session: it comes back only
        // with its answer, so it is not counted on.
        let expected = self
            .signers
            .iter()
            .filter(|(seat, state)| {
                !self.deferred.contains(seat)
                    && state.is_expected()
                    && match state.standing {
                        Standing::Signing { session, .. } => {
                            self.sessions.get(&session).is_some_and(Session::is_intact)
                        }
                        _ => true,
                    }
            })
            .count();
        if expected >= self.threshold {
            return;
        }
        let timeout = self.timeout_after(now);
        for (seat, state) in &mut self.signers {
            if state.standing == Standing::Held {
                *state = SeatState::new(timeout);
                self.transmits.push_back(Transmit {
                    to: *seat,
                    request: Request::Commit,
                });
            }
        }
    }

    /// Whether some open session can still finish on time: none of its
    /// members refused, left or proved malicious, and every member not yet
    /// answered is still within its request timeout.
    fn any_live(&self) -> bool {
        self.sessions.iter().any(|(id, session)| {
            session.is_intact()
                && session.pending.iter().all(|seat| {
                    matches!(
                        self.signers.get(seat).map(|state| state.standing),
                        Some(Standing::Signing { session, .. }) if session == *id
                    )
                })
        })
    }

    fn start_session(&mut self, now: Instant, members: Vec<(Seat, Vec<S::Commitment>)>) {
        let id = self.next_session;
        let Some(next) = id.next() else {
            return self.fail(Failure::SessionsExhausted);
        };
        self.next_session = next;
        self.sessions_started = id.get();
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
            self.set_standing(
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

    /// Plans `seat`'s next re-ask after a round-1 timeout or a transient
    /// refusal at `now`: at once for its first, then after growing delays,
    /// and never at or after the deadline.
    fn schedule_reask(&mut self, now: Instant, seat: Seat) {
        let request_timeout = self.request_timeout;
        let deadline = self.deadline;
        let Some(state) = self.signers.get_mut(&seat) else {
            return;
        };
        state.retry_at = state
            .reask_delay(request_timeout)
            .and_then(|delay| now.checked_add(delay))
            .filter(|at| *at < deadline);
        if state.retry_at.is_some_and(|at| at <= now) {
            self.ask(now, seat);
        }
    }

    /// Queues a round-1 re-ask to `seat`.
    fn ask(&mut self, now: Instant, seat: Seat) {
        let timeout = self.timeout_after(now);
        let Some(state) = self.signers.get_mut(&seat) else {
            return;
        };
        state.standing = Standing::Asked { timeout };
        state.asked = true;
        state.retry_at = None;
        state.reasks = state.reasks.saturating_add(1);
        self.transmits.push_back(Transmit {
            to: seat,
            request: Request::Commit,
        });
    }

    /// Puts `seat` into R with `commitments` (checked fresh by the caller),
    /// answering any round-1 request and cancelling any planned re-ask.
    fn make_responsive(&mut self, seat: Seat, commitments: Vec<S::Commitment>) {
        if let Some(state) = self.signers.get_mut(&seat) {
            state.standing = Standing::Responsive;
            state.asked = false;
            state.retry_at = None;
            state.remember(&commitments);
        }
        self.responsive.push_back((seat, commitments));
    }

    fn set_standing(&mut self, seat: Seat, standing: Standing) {
        if let Some(state) = self.signers.get_mut(&seat) {
            state.standing = standing;
        }
    }

    fn seat(&self, seat: Seat) -> Result<&SeatState<S>, Error> {
        self.signers.get(&seat).ok_or(Error::UnknownSeat { seat })
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

    fn check_fresh(&self, seat: Seat, commitments: &[S::Commitment]) -> Result<(), Error> {
        if self.seat(seat)?.is_fresh(commitments) {
            Ok(())
        } else {
            Err(Error::ReusedCommitment { seat })
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
