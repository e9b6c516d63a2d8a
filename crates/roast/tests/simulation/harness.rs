//! A simulated cluster in one thread: n signers, one coordinator, a virtual
//! clock advanced to the next delivery or `poll_timeout`, a seeded RNG and
//! scripted faults.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use thresig_roast::{
    Config, Coordinator, Error, Event, Failure, Refusal, Reply, Request, Round, Scheme, Seat,
    SessionId, Stats, Transmit, Unresponsiveness,
};

/// The request timeout of simulated runs.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// The overall deadline of simulated runs.
pub(crate) const DEADLINE: Duration = Duration::from_secs(60);
/// Guards against a coordinator that never ends a run.
const MAX_STEPS: usize = 100_000;

/// The signer side of a scheme: what honest signers compute.
pub(crate) trait Backend {
    /// The coordinator's scheme.
    type S: Scheme<Message: Clone, Commitment: Clone, Share: Clone, Error: Debug>;

    /// The seats of the wallet, ascending.
    fn seats(&self) -> Vec<Seat>;
    /// The wallet's threshold.
    fn threshold(&self) -> u16;
    /// The coordinator's scheme instance.
    fn scheme(&self) -> Self::S;
    /// A random message for one input.
    fn message(&self, rng: &mut ChaCha20Rng) -> <Self::S as Scheme>::Message;
    /// Round 1 at `seat`: fresh nonces for `inputs` inputs, kept by the signer.
    fn commit(
        &mut self,
        seat: Seat,
        inputs: usize,
        rng: &mut ChaCha20Rng,
    ) -> Vec<<Self::S as Scheme>::Commitment>;
    /// Round 2 at `seat`, consuming its nonces.
    ///
    /// # Errors
    /// `NonceUnknown` if the signer holds no nonce for a commitment.
    fn sign(
        &mut self,
        seat: Seat,
        packages: &[<Self::S as Scheme>::Package],
    ) -> Result<Vec<<Self::S as Scheme>::Share>, Refusal>;
    /// A share that does not verify.
    fn corrupt(&self, share: &<Self::S as Scheme>::Share) -> <Self::S as Scheme>::Share;
    /// Whether `signature` is a valid signature of `message` by the wallet.
    fn verify(
        &self,
        message: &<Self::S as Scheme>::Message,
        signature: &<Self::S as Scheme>::Signature,
    ) -> bool;
    /// Forgets every live nonce of `seat` (a restart).
    fn forget(&mut self, seat: Seat);
}

/// How a simulated signer behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Behavior {
    Honest,
    /// Never answers anything.
    Offline,
    /// Answers round 2 with an invalid share at this input.
    Malicious {
        input: usize,
    },
    /// Refuses every round-2 request.
    Refuses(Refusal),
    /// Restarts (losing its nonces) right before its first round-2 request,
    /// then behaves honestly.
    Restarts,
    /// Answers every request only after the request timeout. Its round-1
    /// request is sent again after the timeout, and its answer to the
    /// second copy is refused ([`Error::NotAwaited`]): it answered already.
    Late,
    /// Refuses every round-2 request with this refusal and at once sends a
    /// fresh commitment vector nobody asked for.
    RefusesAndRecommits(Refusal),
    /// Never answers a round-2 request, and sends a fresh commitment vector
    /// nobody asked for right after the request timed out.
    SilentAndRecommits,
    /// At its nonce capacity: answers round 2 with valid shares but no
    /// fresh commitment vector (round 1 is answered as usual).
    AtCapacity,
}

impl Behavior {
    /// Whether the coordinator may refuse some of this signer's replies
    /// without any duplicate delivery: second answers to a re-sent round-1
    /// request, or commitments nobody asked for.
    pub(crate) fn sends_unawaited(self) -> bool {
        matches!(
            self,
            Self::Late | Self::RefusesAndRecommits(_) | Self::SilentAndRecommits
        )
    }
}

/// What a run did, collected from the coordinator's events.
pub(crate) struct Outcome<S: Scheme> {
    pub(crate) seed: u64,
    pub(crate) sessions: Vec<(SessionId, Vec<Seat>)>,
    /// Culprit events in order (a seat twice here would be a bug).
    pub(crate) culprits: Vec<Seat>,
    pub(crate) unresponsive: Vec<(Seat, Unresponsiveness)>,
    /// Seats whose share reply the coordinator accepted, in order.
    pub(crate) delivered_shares: Vec<Seat>,
    /// Replies the coordinator refused.
    pub(crate) rejected: Vec<(Seat, Error)>,
    pub(crate) end: End<S>,
    /// Events after the terminal one (must stay empty).
    pub(crate) after_end: usize,
    /// Seats a session was started with while they were still awaited in
    /// another open session, or named twice in one session (must stay
    /// empty). A member is awaited from the session's start until the
    /// coordinator accepts its share vector or refusal for it.
    pub(crate) overlaps: Vec<(SessionId, Seat)>,
    /// Virtual time from the coordinator's creation to the end of the run.
    pub(crate) elapsed: Duration,
    /// Seats sent a round-1 request, in the order the requests went out.
    pub(crate) asked: Vec<Seat>,
}

/// How a run ended.
pub(crate) enum End<S: Scheme> {
    Done {
        signers: Vec<Seat>,
        stats: Stats,
        /// Whether every signature verified under the wallet's key.
        valid: bool,
        signatures: usize,
    },
    Failed {
        failure: Failure<S::Error>,
        stats: Stats,
    },
    /// The run never produced a terminal event.
    Stuck,
}

impl<S: Scheme> Outcome<S> {
    /// The finished signing set and stats, or a panic naming the seed.
    pub(crate) fn done(&self) -> (&[Seat], &Stats) {
        match &self.end {
            End::Done {
                signers,
                stats,
                valid,
                signatures: _,
            } => {
                assert!(*valid, "seed {}: a signature does not verify", self.seed);
                (signers, stats)
            }
            End::Failed { .. } => panic!("seed {}: the run failed", self.seed),
            End::Stuck => panic!("seed {}: the run never ended", self.seed),
        }
    }

    /// Sessions that included `seat`.
    pub(crate) fn sessions_with(&self, seat: Seat) -> usize {
        self.sessions
            .iter()
            .filter(|(_, signers)| signers.contains(&seat))
            .count()
    }
}

struct Flight<S: Scheme> {
    at: Instant,
    seq: u64,
    from: Seat,
    reply: Reply<S>,
}

/// One simulated run.
pub(crate) struct Sim<B: Backend> {
    seed: u64,
    rng: ChaCha20Rng,
    backend: B,
    behaviors: BTreeMap<Seat, Behavior>,
    restarted: BTreeMap<Seat, bool>,
    /// Seats whose replies arrive before every other (1 ms).
    first: Vec<Seat>,
    /// Deliver every reply twice.
    duplicate: bool,
    /// A fixed delay for replies of seats not answering first (random
    /// between 2 and 41 ms if unset).
    delay: Option<Duration>,
    /// Seats the coordinator asks last ([`Config::deferred`]).
    deferred: Vec<Seat>,
    /// Seats that start with a vector kept from an earlier run
    /// ([`Coordinator::with_commitments`]).
    kept: Vec<Seat>,
    /// Seats sent a round-1 request, in order.
    asked: Vec<Seat>,
    inputs: usize,
    now: Instant,
    seq: u64,
    flights: Vec<Flight<B::S>>,
}

impl<B: Backend> Sim<B> {
    pub(crate) fn new(seed: u64, backend: B, inputs: usize) -> Self {
        let behaviors = backend
            .seats()
            .into_iter()
            .map(|seat| (seat, Behavior::Honest))
            .collect();
        Self {
            seed,
            rng: ChaCha20Rng::seed_from_u64(seed),
            backend,
            behaviors,
            restarted: BTreeMap::new(),
            first: Vec::new(),
            duplicate: false,
            delay: None,
            deferred: Vec::new(),
            kept: Vec::new(),
            asked: Vec::new(),
            inputs,
            now: Instant::now(),
            seq: 0,
            flights: Vec::new(),
        }
    }

    /// Scripts `seat`'s behavior.
    pub(crate) fn behave(mut self, seat: Seat, behavior: Behavior) -> Self {
        self.behaviors.insert(seat, behavior);
        self
    }

    /// Makes `seats` answer before everyone else.
    pub(crate) fn answer_first(mut self, seats: &[Seat]) -> Self {
        self.first = seats.to_vec();
        self
    }

    /// Scripts `behavior` for each of `seats` and makes them answer first.
    pub(crate) fn first_with(mut self, seats: &[Seat], behavior: Behavior) -> Self {
        for seat in seats {
            self.behaviors.insert(*seat, behavior);
        }
        self.answer_first(seats)
    }

    /// Delivers every reply twice.
    pub(crate) fn duplicate_replies(mut self) -> Self {
        self.duplicate = true;
        self
    }

    /// Makes every seat that neither answers first nor is late answer
    /// after exactly `delay`.
    pub(crate) fn reply_after(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Makes the coordinator ask `seats` last (a driver's quarantine).
    pub(crate) fn defer(mut self, seats: &[Seat]) -> Self {
        self.deferred = seats.to_vec();
        self
    }

    /// Starts the run with a fresh vector of each of `seats` in R, as a
    /// driver that kept them from an earlier run does.
    pub(crate) fn keep(mut self, seats: &[Seat]) -> Self {
        self.kept = seats.to_vec();
        self
    }

    pub(crate) fn run(mut self) -> Outcome<B::S> {
        let messages: Vec<_> = (0..self.inputs)
            .map(|_| self.backend.message(&mut self.rng))
            .collect();
        let mut config = Config::new(self.backend.threshold(), self.backend.seats());
        config.request_timeout = REQUEST_TIMEOUT;
        config.deadline = DEADLINE;
        config.deferred = self.deferred.iter().copied().collect();
        let ready = self
            .kept
            .iter()
            .map(|seat| {
                (
                    *seat,
                    self.backend.commit(*seat, self.inputs, &mut self.rng),
                )
            })
            .collect();
        let mut coordinator = Coordinator::with_commitments(
            self.now,
            config,
            self.backend.scheme(),
            messages.clone(),
            ready,
        )
        .unwrap_or_else(|e| panic!("seed {}: {e}", self.seed));
        let mut outcome = Outcome {
            seed: self.seed,
            sessions: Vec::new(),
            culprits: Vec::new(),
            unresponsive: Vec::new(),
            delivered_shares: Vec::new(),
            rejected: Vec::new(),
            end: End::Stuck,
            after_end: 0,
            overlaps: Vec::new(),
            elapsed: Duration::ZERO,
            asked: Vec::new(),
        };
        let start = self.now;
        let mut awaited: BTreeMap<Seat, SessionId> = BTreeMap::new();
        for _ in 0..MAX_STEPS {
            while let Some(transmit) = coordinator.poll_transmit() {
                self.serve(transmit);
            }
            while let Some(event) = coordinator.poll_event() {
                if let Event::SessionStarted { session, signers } = &event {
                    for (i, member) in signers.iter().enumerate() {
                        let twice = signers[..i].contains(member);
                        if awaited.insert(*member, *session).is_some() || twice {
                            outcome.overlaps.push((*session, *member));
                        }
                    }
                }
                self.record(&mut outcome, &messages, event);
            }
            if coordinator.is_finished() {
                break;
            }
            let next_flight = self
                .flights
                .iter()
                .enumerate()
                .min_by_key(|(_, f)| (f.at, f.seq))
                .map(|(i, f)| (i, f.at));
            match (next_flight, coordinator.poll_timeout()) {
                (Some((i, at)), timer) if timer.is_none_or(|t| at <= t) => {
                    let flight = self.flights.swap_remove(i);
                    self.now = self.now.max(flight.at);
                    let shares = matches!(flight.reply, Reply::Shares { .. });
                    let answers = match &flight.reply {
                        Reply::Shares { session, .. }
                        | Reply::Refused {
                            round: Round::Sign(session),
                            ..
                        } => Some(*session),
                        _ => None,
                    };
                    match coordinator.handle_reply(self.now, flight.from, flight.reply) {
                        Ok(()) => {
                            if shares {
                                outcome.delivered_shares.push(flight.from);
                            }
                            if answers.is_some() && awaited.get(&flight.from) == answers.as_ref() {
                                awaited.remove(&flight.from);
                            }
                        }
                        Err(error) => outcome.rejected.push((flight.from, error)),
                    }
                }
                (_, Some(timer)) => {
                    self.now = self.now.max(timer);
                    coordinator.handle_timeout(self.now);
                }
                (_, None) => break,
            }
        }
        outcome.elapsed = self.now - start;
        outcome.asked = self.asked;
        outcome
    }

    fn record(
        &self,
        outcome: &mut Outcome<B::S>,
        messages: &[<B::S as Scheme>::Message],
        event: Event<B::S>,
    ) {
        if !matches!(outcome.end, End::Stuck) {
            outcome.after_end += 1;
            return;
        }
        match event {
            Event::SessionStarted { session, signers } => outcome.sessions.push((session, signers)),
            Event::Unresponsive { seat, cause } => outcome.unresponsive.push((seat, cause)),
            Event::Culprit { seat, .. } => outcome.culprits.push(seat),
            Event::Done(signed) => {
                let valid = signed.signatures.len() == messages.len()
                    && messages
                        .iter()
                        .zip(&signed.signatures)
                        .all(|(m, s)| self.backend.verify(m, s));
                outcome.end = End::Done {
                    signers: signed.signers,
                    stats: signed.stats,
                    valid,
                    signatures: signed.signatures.len(),
                };
            }
            Event::Failed { failure, stats } => outcome.end = End::Failed { failure, stats },
            other => panic!("seed {}: unexpected event {other:?}", self.seed),
        }
    }

    /// The simulated signer `transmit.to` handles its request.
    fn serve(&mut self, transmit: Transmit<B::S>) {
        let seat = transmit.to;
        let behavior = self
            .behaviors
            .get(&seat)
            .copied()
            .unwrap_or(Behavior::Honest);
        if matches!(transmit.request, Request::Commit) {
            self.asked.push(seat);
        }
        if behavior == Behavior::Offline {
            return;
        }
        let delay = match behavior {
            Behavior::Late => REQUEST_TIMEOUT + Duration::from_millis(500),
            _ if self.first.contains(&seat) => Duration::from_millis(1),
            _ => match self.delay {
                Some(delay) => delay,
                None => Duration::from_millis(2 + self.rng.next_u64() % 40),
            },
        };
        let reply = match transmit.request {
            Request::Commit => Reply::Commitments {
                commitments: self.backend.commit(seat, self.inputs, &mut self.rng),
            },
            Request::Sign { session, packages } => {
                if self.recommit(seat, behavior, delay) == Behavior::SilentAndRecommits {
                    return;
                }
                self.sign(seat, behavior, session, &packages)
            }
            _ => panic!("seed {}: unexpected request", self.seed),
        };
        if self.duplicate {
            let copy = clone_reply::<B::S>(&reply);
            self.send(seat, delay + Duration::from_millis(1), copy);
        }
        self.send(seat, delay, reply);
    }

    /// A recommitting signer's unsolicited commitment vector, sent right
    /// after its round-2 refusal (which goes out after `delay`) or right
    /// after its round-2 request timed out. Returns `behavior`.
    fn recommit(&mut self, seat: Seat, behavior: Behavior, delay: Duration) -> Behavior {
        let after = match behavior {
            Behavior::RefusesAndRecommits(_) => delay,
            Behavior::SilentAndRecommits => REQUEST_TIMEOUT,
            _ => return behavior,
        };
        let commitments = self.backend.commit(seat, self.inputs, &mut self.rng);
        self.send(
            seat,
            after + Duration::from_millis(1),
            Reply::Commitments { commitments },
        );
        behavior
    }

    fn sign(
        &mut self,
        seat: Seat,
        behavior: Behavior,
        session: SessionId,
        packages: &[<B::S as Scheme>::Package],
    ) -> Reply<B::S> {
        let refusal = match behavior {
            Behavior::Refuses(refusal) | Behavior::RefusesAndRecommits(refusal) => Some(refusal),
            Behavior::Restarts if !self.restarted.get(&seat).copied().unwrap_or(false) => {
                self.restarted.insert(seat, true);
                self.backend.forget(seat);
                None
            }
            _ => None,
        };
        let shares = match refusal {
            Some(refusal) => Err(refusal),
            None => self.backend.sign(seat, packages),
        };
        match shares {
            Err(refusal) => Reply::Refused {
                round: Round::Sign(session),
                refusal,
            },
            Ok(mut shares) => {
                if let Behavior::Malicious { input } = behavior {
                    let bad = self.backend.corrupt(&shares[input]);
                    shares[input] = bad;
                }
                let commitments = if behavior == Behavior::AtCapacity {
                    Vec::new()
                } else {
                    self.backend.commit(seat, self.inputs, &mut self.rng)
                };
                Reply::Shares {
                    session,
                    shares,
                    commitments,
                }
            }
        }
    }

    fn send(&mut self, from: Seat, delay: Duration, reply: Reply<B::S>) {
        self.seq += 1;
        self.flights.push(Flight {
            at: self.now + delay,
            seq: self.seq,
            from,
            reply,
        });
    }
}

/// A copy of a reply (the library type is not `Clone`, since its payloads
/// need not be).
pub(crate) fn clone_reply<S>(reply: &Reply<S>) -> Reply<S>
where
    S: Scheme<Commitment: Clone, Share: Clone>,
{
    match reply {
        Reply::Commitments { commitments } => Reply::Commitments {
            commitments: commitments.clone(),
        },
        Reply::Shares {
            session,
            shares,
            commitments,
        } => Reply::Shares {
            session: *session,
            shares: shares.clone(),
            commitments: commitments.clone(),
        },
        Reply::Refused { round, refusal } => Reply::Refused {
            round: *round,
            refusal: *refusal,
        },
        _ => panic!("unexpected reply"),
    }
}

/// Reads a case count from `PROPTEST_CASES` if it is set (for long runs),
/// else uses `default`.
pub(crate) fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(default)
}

/// The most re-asks one seat can get in a simulated run: the largest k with
/// `REQUEST_TIMEOUT × (2^k − 1 − k) < DEADLINE`, the k-th re-ask waiting
/// `REQUEST_TIMEOUT × (2^(k−1) − 1)` after its cause.
pub(crate) fn max_reasks(deadline: Duration) -> usize {
    let ratio = deadline.as_millis() / REQUEST_TIMEOUT.as_millis();
    (0u32..32)
        .take_while(|k| (1u128 << k) - 1 - u128::from(*k) < ratio)
        .count()
        - 1
}

/// Seat `n`.
pub(crate) fn seat(n: u16) -> Seat {
    Seat::try_from(n).unwrap()
}
