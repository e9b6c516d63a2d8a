//! The coordinator driven by hand, one input at a time, with the toy scheme:
//! edge cases of the API (refused replies, timers, re-asking, the end).

use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use thresig_roast::{
    Config, Coordinator, Error, Event, Failure, Refusal, Reply, Request, Round, Seat, SessionId,
    Unresponsiveness,
};

use crate::harness::{Backend, REQUEST_TIMEOUT, seat};
use crate::toy::{Toy, ToyCluster};

struct Hand {
    now: Instant,
    cluster: ToyCluster,
    rng: ChaCha20Rng,
    coordinator: Coordinator<Toy>,
}

impl Hand {
    fn new(threshold: u16, signers: u16, inputs: usize) -> Self {
        let now = Instant::now();
        let cluster = ToyCluster::new(threshold, signers);
        let mut config = Config::new(threshold, cluster.seats());
        config.request_timeout = REQUEST_TIMEOUT;
        let coordinator = Coordinator::new(now, config, Toy, (0..inputs as u64).collect()).unwrap();
        Self {
            now,
            cluster,
            rng: ChaCha20Rng::seed_from_u64(7),
            coordinator,
        }
    }

    fn transmits(&mut self) -> Vec<(Seat, Option<SessionId>)> {
        std::iter::from_fn(|| self.coordinator.poll_transmit())
            .map(|t| match t.request {
                Request::Commit => (t.to, None),
                Request::Sign { session, .. } => (t.to, Some(session)),
                _ => panic!("unexpected request"),
            })
            .collect()
    }

    /// Delivers `reply` (which must be accepted), then a copy of it; returns
    /// what the copy got.
    fn reply_twice(&mut self, from: Seat, reply: Reply<Toy>) -> Result<(), Error> {
        let copy = crate::harness::clone_reply(&reply);
        self.reply(from, reply).unwrap();
        self.reply(from, copy)
    }

    /// Nothing to send and nothing to report.
    fn assert_quiet(&mut self) {
        assert!(self.events().is_empty());
        assert!(self.transmits().is_empty());
    }

    /// The culprit events queued, in order.
    fn culprit_events(&mut self) -> Vec<(Seat, thresig_roast::Misbehavior)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Culprit { seat, fault } => Some((seat, fault)),
                _ => None,
            })
            .collect()
    }

    fn events(&mut self) -> Vec<Event<Toy>> {
        std::iter::from_fn(|| self.coordinator.poll_event()).collect()
    }

    fn commitments(&mut self, seat: Seat, inputs: usize) -> Reply<Toy> {
        Reply::Commitments {
            commitments: self.cluster.commit(seat, inputs, &mut self.rng),
        }
    }

    fn reply(&mut self, from: Seat, reply: Reply<Toy>) -> Result<(), Error> {
        self.coordinator.handle_reply(self.now, from, reply)
    }

    /// Starts session 1 with seats 1..=t (all of them commit) and returns its
    /// packages.
    fn start(&mut self, inputs: usize) -> (SessionId, Vec<crate::toy::ToyPackage>) {
        let _ = self.transmits();
        for n in 1..=self.cluster.threshold() {
            let reply = self.commitments(seat(n), inputs);
            self.reply(seat(n), reply).unwrap();
        }
        let (_, session, packages) = self.session();
        (session, packages)
    }

    /// Drains the requests: who was asked for what (`None`: commitments),
    /// and the session that was started with its packages.
    fn session(&mut self) -> Asked {
        let mut asked = Vec::new();
        let mut sign = None;
        while let Some(t) = self.coordinator.poll_transmit() {
            match t.request {
                Request::Commit => asked.push((t.to, None)),
                Request::Sign { session, packages } => {
                    asked.push((t.to, Some(session)));
                    sign = Some((session, packages.to_vec()));
                }
                _ => panic!("unexpected request"),
            }
        }
        let (session, packages) = sign.expect("a session started");
        (asked, session, packages)
    }

    fn shares(
        &mut self,
        seat: Seat,
        session: SessionId,
        packages: &[crate::toy::ToyPackage],
    ) -> Reply<Toy> {
        let shares = self.cluster.sign(seat, packages).unwrap();
        Reply::Shares {
            session,
            shares,
            commitments: self.cluster.commit(seat, packages.len(), &mut self.rng),
        }
    }
}

#[test]
fn configurations_are_validated() {
    let now = Instant::now();
    let roster = vec![seat(1), seat(2), seat(3)];
    let make = |threshold, roster: Vec<Seat>, messages: Vec<u64>| {
        Coordinator::new(now, Config::new(threshold, roster), Toy, messages).err()
    };
    assert_eq!(make(2, roster.clone(), vec![]), Some(Error::NoMessages));
    assert_eq!(
        make(0, roster.clone(), vec![1]),
        Some(Error::InvalidThreshold {
            threshold: 0,
            seats: 3
        })
    );
    assert_eq!(
        make(4, roster.clone(), vec![1]),
        Some(Error::InvalidThreshold {
            threshold: 4,
            seats: 3
        })
    );
    assert_eq!(
        make(2, vec![seat(1), seat(2), seat(1)], vec![1]),
        Some(Error::DuplicateSeat { seat: seat(1) })
    );
    let mut config = Config::new(2, roster);
    config.deadline = Duration::MAX;
    assert_eq!(
        Coordinator::new(now, config, Toy, vec![1]).err(),
        Some(Error::DeadlineTooFar)
    );
}

#[test]
fn a_new_run_asks_every_seat_for_commitments() {
    let mut hand = Hand::new(2, 4, 1);
    let asked = hand.transmits();
    assert_eq!(asked, (1..=4).map(|n| (seat(n), None)).collect::<Vec<_>>());
    assert_eq!(
        hand.coordinator.poll_timeout(),
        Some(hand.now + REQUEST_TIMEOUT)
    );
    assert!(hand.events().is_empty());
}

#[test]
fn spurious_timeouts_are_harmless() {
    let mut hand = Hand::new(2, 3, 1);
    let _ = hand.transmits();
    let due = hand.coordinator.poll_timeout();
    hand.coordinator.handle_timeout(hand.now);
    hand.coordinator
        .handle_timeout(hand.now + REQUEST_TIMEOUT / 2);
    hand.assert_quiet();
    assert_eq!(hand.coordinator.poll_timeout(), due);
}

/// The refusal of a one-element vector where two are expected.
fn one_of_two(from: Seat) -> Result<(), Error> {
    Err(Error::VectorLength {
        seat: from,
        expected: 2,
        got: 1,
    })
}

#[test]
fn replies_that_do_not_fit_are_refused_without_effect() {
    let mut hand = Hand::new(2, 3, 2);
    let _ = hand.transmits();
    // Unknown seat.
    let reply = hand.commitments(seat(9), 2);
    assert_eq!(
        hand.reply(seat(9), reply),
        Err(Error::UnknownSeat { seat: seat(9) })
    );
    // Wrong vector length: the seat is still awaited afterwards.
    let short = hand.commitments(seat(1), 1);
    assert_eq!(hand.reply(seat(1), short), one_of_two(seat(1)));
    let (session, packages) = hand.start(2);
    // Commitments while in a session: not awaited.
    let reply = hand.commitments(seat(1), 2);
    assert_eq!(
        hand.reply(seat(1), reply),
        Err(Error::NotAwaited { seat: seat(1) })
    );
    // Shares from a seat outside the session.
    let outsider = Reply::Shares {
        session,
        shares: vec![0, 0],
        commitments: vec![0, 0],
    };
    assert_eq!(
        hand.reply(seat(3), outsider),
        Err(Error::NotPending {
            seat: seat(3),
            session
        })
    );
    // A session that does not exist in this run (taken from another run).
    let mut other = Hand::new(2, 3, 2);
    let (foreign, _) = other.start(2);
    let mut fresh = Hand::new(2, 3, 2);
    let _ = fresh.transmits();
    let reply = Reply::Shares {
        session: foreign,
        shares: vec![0, 0],
        commitments: vec![0, 0],
    };
    assert_eq!(
        fresh.reply(seat(1), reply),
        Err(Error::UnknownSession { session: foreign })
    );
    // Short share vector: refused, seat 1 still pending.
    let mut valid = hand.shares(seat(1), session, &packages);
    if let Reply::Shares { shares, .. } = &mut valid {
        let short = Reply::Shares {
            session,
            shares: shares[..1].to_vec(),
            commitments: vec![0, 0],
        };
        assert_eq!(hand.reply(seat(1), short), one_of_two(seat(1)));
    }
    assert_eq!(hand.coordinator.sessions_started(), 1);
    assert!(
        !hand
            .events()
            .iter()
            .any(|e| matches!(e, Event::Culprit { .. }))
    );
    // The valid reply counts once; its duplicate is refused.
    assert_eq!(
        hand.reply_twice(seat(1), valid),
        Err(Error::NotPending {
            seat: seat(1),
            session
        })
    );
    assert!(!hand.coordinator.is_finished());
    let last = hand.shares(seat(2), session, &packages);
    hand.reply(seat(2), last).unwrap();
    let events = hand.events();
    assert!(matches!(events.last(), Some(Event::Done(signed)) if signed.signatures.len() == 2));
    // After the end: everything refused, nothing to send, no timer.
    let late = hand.commitments(seat(3), 2);
    assert_eq!(hand.reply(seat(3), late), Err(Error::Finished));
    hand.coordinator
        .handle_timeout(hand.now + REQUEST_TIMEOUT * 100);
    hand.assert_quiet();
    assert_eq!(hand.coordinator.poll_timeout(), None);
}

#[test]
fn a_late_reply_after_a_timeout_still_completes_the_session() {
    let mut hand = Hand::new(2, 2, 1);
    let (session, packages) = hand.start(1);
    let first = hand.shares(seat(1), session, &packages);
    hand.reply(seat(1), first).unwrap();
    hand.now += REQUEST_TIMEOUT;
    hand.coordinator.handle_timeout(hand.now);
    let events = hand.events();
    assert!(events.iter().any(|e| matches!(e,
        Event::Unresponsive { seat: s, cause: Unresponsiveness::Timeout { round: Round::Sign(id) } }
            if *s == seat(2) && *id == session)));
    let late = hand.shares(seat(2), session, &packages);
    hand.reply(seat(2), late).unwrap();
    assert!(matches!(hand.events().last(), Some(Event::Done(_))));
}

#[test]
fn an_unresponsive_seat_rejoins_only_through_its_session_or_a_request() {
    let mut hand = Hand::new(2, 3, 1);
    let (session, packages) = hand.start(1);
    hand.now += REQUEST_TIMEOUT;
    hand.coordinator.handle_timeout(hand.now);
    // Seat 3 timed out in round 1, seats 1 and 2 in round 2.
    assert_eq!(
        hand.events()
            .iter()
            .filter(|e| matches!(e, Event::Unresponsive { .. }))
            .count(),
        3
    );
    // Seat 3's round-1 request is sent again at once; seats 1 and 2 are
    // still pending in session 1 and are not asked for commitments.
    assert_eq!(hand.transmits(), vec![(seat(3), None)]);
    // Commitments nobody asked for are refused: seat 1 stays pending.
    let unsolicited = hand.commitments(seat(1), 1);
    assert_eq!(
        hand.reply(seat(1), unsolicited),
        Err(Error::NotAwaited { seat: seat(1) })
    );
    // Its late share vector still counts and brings it back into R.
    let late = hand.shares(seat(1), session, &packages);
    hand.reply(seat(1), late).unwrap();
    assert_eq!(hand.coordinator.sessions_started(), 1);
    // Seat 3 answers its round-1 request: a second session starts with
    // seats 1 and 3, while session 1 still waits for seat 2.
    let fresh = hand.commitments(seat(3), 1);
    hand.reply(seat(3), fresh).unwrap();
    let started: Vec<_> = hand
        .transmits()
        .into_iter()
        .filter_map(|(s, id)| id.map(|id| (s, id)))
        .collect();
    assert_eq!(started.len(), 2);
    assert_eq!(
        started.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        vec![seat(1), seat(3)]
    );
    assert!(started.iter().all(|(_, id)| *id != session));
    assert_eq!(hand.coordinator.sessions_started(), 2);
    // Seat 2's late answer completes session 1 with seat 1's earlier share.
    let late = hand.shares(seat(2), session, &packages);
    hand.reply(seat(2), late).unwrap();
    assert!(matches!(hand.events().last(),
        Some(Event::Done(signed)) if signed.session == session));
}

#[test]
fn a_non_transient_refusal_excludes_the_seat_for_the_run() {
    let mut hand = Hand::new(2, 3, 1);
    let (session, _) = hand.start(1);
    let refused = Reply::Refused {
        round: Round::Sign(session),
        refusal: Refusal::PolicyDenied,
    };
    hand.reply(seat(1), refused).unwrap();
    // Its fresh commitments right after are refused, now and much later.
    let unsolicited = hand.commitments(seat(1), 1);
    assert_eq!(
        hand.reply(seat(1), unsolicited),
        Err(Error::NotAwaited { seat: seat(1) })
    );
    let mut asked = Vec::new();
    while let Some(at) = hand.coordinator.poll_timeout() {
        hand.now = at;
        hand.coordinator.handle_timeout(at);
        asked.extend(hand.transmits().into_iter().filter(|(s, _)| *s == seat(1)));
    }
    assert!(
        asked.is_empty(),
        "an excluded seat was asked again: {asked:?}"
    );
    assert_eq!(hand.coordinator.culprits().count(), 0);
}

#[test]
fn transient_refusals_are_asked_again_with_growing_delays() {
    let mut hand = Hand::new(2, 3, 1);
    let (session, _) = hand.start(1);
    let _ = hand.events();
    let refused = Reply::Refused {
        round: Round::Sign(session),
        refusal: Refusal::NonceUnknown,
    };
    hand.reply(seat(1), refused).unwrap();
    assert_eq!(
        hand.transmits(),
        vec![(seat(1), None)],
        "asked for fresh commitments at once"
    );
    assert!(matches!(
        hand.events().as_slice(),
        [Event::Unresponsive {
            cause: Unresponsiveness::Refused {
                refusal: Refusal::NonceUnknown,
                ..
            },
            ..
        }]
    ));
    // A refusal of the same request again is refused as not pending.
    let again = Reply::Refused {
        round: Round::Sign(session),
        refusal: Refusal::NonceUnknown,
    };
    assert_eq!(
        hand.reply(seat(1), again),
        Err(Error::NotPending {
            seat: seat(1),
            session
        })
    );
    // It keeps refusing round 1 (a full quota, say): each re-ask waits
    // longer than the one before, and a second refusal of the same request
    // is refused as not awaited.
    let start = hand.now;
    let mut sent = vec![start];
    for _ in 0..3 {
        let refused = Reply::Refused {
            round: Round::Commit,
            refusal: Refusal::Retryable,
        };
        hand.reply(seat(1), refused).unwrap();
        let refused = Reply::Refused {
            round: Round::Commit,
            refusal: Refusal::Retryable,
        };
        assert_eq!(
            hand.reply(seat(1), refused),
            Err(Error::NotAwaited { seat: seat(1) })
        );
        assert!(hand.transmits().is_empty(), "not asked again at once");
        loop {
            let at = hand.coordinator.poll_timeout().unwrap();
            hand.now = at;
            hand.coordinator.handle_timeout(at);
            if hand.transmits().contains(&(seat(1), None)) {
                sent.push(at);
                break;
            }
        }
    }
    let gaps: Vec<Duration> = sent.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(
        gaps,
        vec![REQUEST_TIMEOUT, REQUEST_TIMEOUT * 3, REQUEST_TIMEOUT * 7]
    );
    assert_eq!(hand.coordinator.culprits().count(), 0);
}

#[test]
fn a_round_one_reply_is_accepted_once_even_after_its_timeout() {
    // A duplicated round-1 reply arriving after the seat timed out in a
    // session must not put the same commitment into a second session.
    let mut hand = Hand::new(2, 3, 1);
    let _ = hand.transmits();
    let first = Reply::Commitments {
        commitments: vec![11],
    };
    hand.reply(seat(1), first).unwrap();
    let second = Reply::Commitments {
        commitments: vec![22],
    };
    hand.reply(seat(2), second).unwrap();
    let started = hand.transmits();
    assert_eq!(started.len(), 2);
    hand.now += REQUEST_TIMEOUT;
    hand.coordinator.handle_timeout(hand.now);
    let _ = hand.transmits();
    let duplicate = Reply::Commitments {
        commitments: vec![11],
    };
    assert_eq!(
        hand.reply(seat(1), duplicate),
        Err(Error::NotAwaited { seat: seat(1) })
    );
    let third = Reply::Commitments {
        commitments: vec![33],
    };
    hand.reply(seat(3), third).unwrap();
    assert!(
        hand.transmits().is_empty(),
        "no session with a used commitment"
    );
    assert_eq!(hand.coordinator.sessions_started(), 1);
}

#[test]
fn a_commitment_already_accepted_is_refused_in_an_answer_to_a_re_ask() {
    let mut hand = Hand::new(2, 3, 1);
    let (session, packages) = hand.start(1);
    let used = packages[0].commitments[&seat(1)];
    let refused = Reply::Refused {
        round: Round::Sign(session),
        refusal: Refusal::NonceUnknown,
    };
    hand.reply(seat(1), refused).unwrap();
    assert_eq!(hand.transmits(), vec![(seat(1), None)]);
    // A replayed copy of its first round-1 answer arrives now.
    let replay = Reply::Commitments {
        commitments: vec![used],
    };
    assert_eq!(
        hand.reply(seat(1), replay),
        Err(Error::ReusedCommitment { seat: seat(1) })
    );
    // Its genuine answer still counts.
    let fresh = hand.commitments(seat(1), 1);
    hand.reply(seat(1), fresh).unwrap();
}

#[test]
fn an_honest_seat_that_refuses_retryable_twice_is_asked_again_in_time() {
    // Exactly t honest seats: seat 2's store is briefly full and it refuses
    // round 1 twice; the run must still finish before the deadline.
    let mut hand = Hand::new(2, 2, 1);
    let start = hand.now;
    let _ = hand.transmits();
    let reply = hand.commitments(seat(1), 1);
    hand.reply(seat(1), reply).unwrap();
    let retryable = || Reply::Refused {
        round: Round::Commit,
        refusal: Refusal::Retryable,
    };
    hand.reply(seat(2), retryable()).unwrap();
    assert_eq!(
        hand.transmits(),
        vec![(seat(2), None)],
        "asked again at once"
    );
    hand.reply(seat(2), retryable()).unwrap();
    assert!(hand.transmits().is_empty(), "the second re-ask waits");
    let at = hand.coordinator.poll_timeout().unwrap();
    assert!(at < start + thresig_roast::DEFAULT_DEADLINE);
    hand.now = at;
    hand.coordinator.handle_timeout(at);
    assert_eq!(
        hand.transmits(),
        vec![(seat(2), None)],
        "asked a third time"
    );
    let reply = hand.commitments(seat(2), 1);
    hand.reply(seat(2), reply).unwrap();
    let (_, session, packages) = hand.session();
    for n in [1, 2] {
        let shares = hand.shares(seat(n), session, &packages);
        hand.reply(seat(n), shares).unwrap();
    }
    assert!(matches!(hand.events().last(), Some(Event::Done(_))));
}

#[test]
fn invalid_shares_with_a_malformed_commitment_vector_are_still_convicted() {
    let mut hand = Hand::new(2, 3, 1);
    let (session, packages) = hand.start(1);
    let mut bad = hand.shares(seat(2), session, &packages);
    if let Reply::Shares {
        shares,
        commitments,
        ..
    } = &mut bad
    {
        shares[0] = shares[0].wrapping_add(1);
        commitments.clear();
    }
    hand.reply(seat(2), bad).unwrap();
    let culprits = hand.culprit_events();
    assert_eq!(
        culprits,
        vec![(
            seat(2),
            thresig_roast::Misbehavior::InvalidShare { session, input: 0 }
        )]
    );
    // Valid shares with a malformed commitment vector are kept (the seat is
    // asked for commitments in round 1 instead).
    let mut short = hand.shares(seat(1), session, &packages);
    if let Reply::Shares { commitments, .. } = &mut short {
        commitments.clear();
    }
    hand.reply(seat(1), short).unwrap();
    assert_eq!(hand.transmits(), vec![(seat(1), None)]);
    assert_eq!(
        hand.coordinator.culprits().collect::<Vec<_>>(),
        vec![seat(2)]
    );
}

#[test]
fn final_refusals_are_not_asked_again_and_close_the_session() {
    let mut hand = Hand::new(2, 3, 1);
    let (session, packages) = hand.start(1);
    let refused = Reply::Refused {
        round: Round::Sign(session),
        refusal: Refusal::PolicyDenied,
    };
    hand.reply(seat(2), refused).unwrap();
    assert!(hand.transmits().is_empty());
    // Seat 1 still answers (and is responsive again); then the session,
    // which can never finish, is closed.
    let valid = hand.shares(seat(1), session, &packages);
    assert_eq!(
        hand.reply_twice(seat(1), valid),
        Err(Error::SessionClosed { session })
    );
    // Seat 3 joins: a second session with seats 1 and 3.
    let fresh = hand.commitments(seat(3), 1);
    hand.reply(seat(3), fresh).unwrap();
    let asked: Vec<_> = hand
        .transmits()
        .into_iter()
        .filter(|(_, id)| id.is_some())
        .collect();
    assert_eq!(
        asked.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        vec![seat(1), seat(3)]
    );
}

#[test]
fn the_overall_deadline_fails_the_run() {
    let mut hand = Hand::new(2, 3, 1);
    let _ = hand.transmits();
    let start = hand.now;
    // Silent seats are re-asked after growing delays, never at or after the
    // deadline, so the timer fires a bounded number of times.
    let reasks = crate::harness::max_reasks(thresig_roast::DEFAULT_DEADLINE);
    let mut steps = 0;
    let mut asked = Vec::new();
    while let Some(at) = hand.coordinator.poll_timeout() {
        hand.now = at;
        hand.coordinator.handle_timeout(at);
        asked.extend(hand.transmits().into_iter().map(|(s, _)| (s, at)));
        steps += 1;
        assert!(steps <= 2 * reasks + 2, "the timer keeps firing");
    }
    let events = hand.events();
    let timeouts = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::Unresponsive {
                    cause: Unresponsiveness::Timeout {
                        round: Round::Commit
                    },
                    ..
                }
            )
        })
        .count();
    // Every request to each seat timed out: the first and each re-ask.
    assert_eq!(timeouts, 3 + asked.len());
    for n in 1..=3 {
        let times: Vec<Instant> = asked
            .iter()
            .filter(|(s, _)| *s == seat(n))
            .map(|(_, at)| *at)
            .collect();
        assert!(
            !times.is_empty() && times.len() <= reasks,
            "seat {n}: {times:?}"
        );
        let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.windows(2).all(|g| g[0] < g[1]), "seat {n}: {gaps:?}");
    }
    assert!(matches!(
        events.last(),
        Some(Event::Failed {
            failure: Failure::Deadline,
            ..
        })
    ));
    assert_eq!(hand.now, start + thresig_roast::DEFAULT_DEADLINE);
}

#[test]
fn a_culprit_is_reported_once_and_never_used_again() {
    let mut hand = Hand::new(2, 4, 1);
    let (session, packages) = hand.start(1);
    let _ = hand.events();
    let mut bad = hand.shares(seat(1), session, &packages);
    if let Reply::Shares { shares, .. } = &mut bad {
        shares[0] = shares[0].wrapping_add(1);
    }
    assert_eq!(
        hand.reply_twice(seat(1), bad),
        Err(Error::NotPending {
            seat: seat(1),
            session
        })
    );
    let culprits = hand.culprit_events();
    assert_eq!(
        culprits,
        vec![(
            seat(1),
            thresig_roast::Misbehavior::InvalidShare { session, input: 0 }
        )]
    );
    // Fresh commitments from the culprit are refused, now and later.
    let again = hand.commitments(seat(1), 1);
    assert_eq!(
        hand.reply(seat(1), again),
        Err(Error::NotAwaited { seat: seat(1) })
    );
    // The others finish without it.
    let valid = hand.shares(seat(2), session, &packages);
    hand.reply(seat(2), valid).unwrap();
    for n in [3, 4] {
        let fresh = hand.commitments(seat(n), 1);
        hand.reply(seat(n), fresh).unwrap();
    }
    let asked: Vec<_> = hand
        .transmits()
        .into_iter()
        .filter(|(_, id)| id.is_some())
        .collect();
    assert_eq!(asked.len(), 2);
    assert!(asked.iter().all(|(s, _)| *s != seat(1)));
    assert_eq!(
        hand.coordinator.culprits().collect::<Vec<_>>(),
        vec![seat(1)]
    );
}

/// When seat 2 is asked for commitments until the run ends, with the
/// default timeouts; seat 2 refuses each request at once with `answer`, or
/// never answers if `answer` is `None`.
fn default_reasks(answer: Option<Refusal>) -> Vec<Duration> {
    let start = Instant::now();
    let config = Config::new(2, vec![seat(1), seat(2)]);
    let mut coordinator = Coordinator::new(start, config, Toy, vec![1]).unwrap();
    let mut asked = Vec::new();
    let mut now = start;
    loop {
        while let Some(transmit) = coordinator.poll_transmit() {
            if transmit.to == seat(2) {
                asked.push(now - start);
                if let Some(refusal) = answer {
                    let reply = Reply::Refused {
                        round: Round::Commit,
                        refusal,
                    };
                    coordinator.handle_reply(now, seat(2), reply).unwrap();
                }
            }
        }
        let Some(at) = coordinator.poll_timeout() else {
            break;
        };
        now = at;
        coordinator.handle_timeout(at);
    }
    asked
}

#[test]
fn re_asks_stay_within_the_documented_bound_with_the_default_timeouts() {
    // The documented bound: the largest k with 10 s × (2^k − 1 − k) < 300 s
    // is 5 (26 × 10 s < 300 s ≤ 57 × 10 s). A seat that refuses at once
    // reaches it: re-asked at 0, then T, 3T, 7T, 15T after each refusal.
    let t = thresig_roast::DEFAULT_REQUEST_TIMEOUT;
    assert_eq!(
        default_reasks(Some(Refusal::Retryable)),
        vec![Duration::ZERO, Duration::ZERO, t, t * 4, t * 11, t * 26]
    );
    // A silent seat's requests each wait a timeout first: four re-asks.
    assert_eq!(
        default_reasks(None),
        vec![Duration::ZERO, t, t * 3, t * 7, t * 15]
    );
}

impl Hand {
    /// `from` refuses its outstanding request for `round` with `refusal`.
    fn refuse(&mut self, from: Seat, round: Round, refusal: Refusal) -> Result<(), Error> {
        self.reply(from, Reply::Refused { round, refusal })
    }

    /// The failure that ended the run, if it has failed.
    fn failure(&mut self) -> Option<Failure<crate::toy::ToyError>> {
        self.events().into_iter().find_map(|e| match e {
            Event::Failed { failure, .. } => Some(failure),
            _ => None,
        })
    }
}

/// Asserts `failure` is `TooFewWilling` with these fields.
fn assert_too_few_willing(
    failure: Option<Failure<crate::toy::ToyError>>,
    willing: usize,
    threshold: usize,
    refusals: &[(Seat, Refusal)],
) {
    match failure {
        Some(Failure::TooFewWilling {
            willing: w,
            threshold: t,
            refusals: r,
        }) => assert_eq!((w, t, r.as_slice()), (willing, threshold, refusals)),
        other => panic!("expected TooFewWilling, got {other:?}"),
    }
}

#[test]
fn every_signer_refusing_by_policy_fails_at_once() {
    let mut hand = Hand::new(2, 3, 1);
    let _ = hand.transmits();
    let start = hand.now;
    hand.refuse(seat(1), Round::Commit, Refusal::PolicyDenied)
        .unwrap();
    assert!(!hand.coordinator.is_finished());
    assert!(hand.failure().is_none());
    // The second refusal leaves one willing signer of the two needed: the
    // run fails on the spot, with no clock tick and no timer left.
    hand.refuse(seat(2), Round::Commit, Refusal::PolicyDenied)
        .unwrap();
    assert_too_few_willing(
        hand.failure(),
        1,
        2,
        &[
            (seat(1), Refusal::PolicyDenied),
            (seat(2), Refusal::PolicyDenied),
        ],
    );
    assert_eq!(hand.now, start);
    assert_eq!(hand.coordinator.poll_timeout(), None);
    assert!(hand.transmits().is_empty());
    assert_eq!(
        hand.refuse(seat(3), Round::Commit, Refusal::PolicyDenied),
        Err(Error::Finished)
    );
}

#[test]
fn the_run_fails_at_the_refusal_that_makes_it_impossible_not_before() {
    // t = 2 of 4: the run is lost only once n − t + 1 = 3 seats are out.
    let mut hand = Hand::new(2, 4, 1);
    let _ = hand.transmits();
    hand.refuse(seat(4), Round::Commit, Refusal::Rejected)
        .unwrap();
    let (session, _) = hand.start(1);
    hand.refuse(seat(1), Round::Sign(session), Refusal::SessionConflict)
        .unwrap();
    // Two seats are out and session 1 can never finish, but seats 2 and 3
    // can still sign together.
    assert!(!hand.coordinator.is_finished());
    assert!(hand.failure().is_none());
    hand.refuse(seat(2), Round::Sign(session), Refusal::PolicyDenied)
        .unwrap();
    assert_too_few_willing(
        hand.failure(),
        1,
        2,
        &[
            (seat(1), Refusal::SessionConflict),
            (seat(2), Refusal::PolicyDenied),
            (seat(4), Refusal::Rejected),
        ],
    );
    assert_eq!(hand.coordinator.poll_timeout(), None);
}

#[test]
fn silent_and_transiently_refusing_seats_leave_the_run_to_its_deadline() {
    // Seat 1 refuses for good; seat 2 refuses transiently and seat 3 is
    // silent: both may come back, so only the deadline ends the run.
    let mut hand = Hand::new(2, 3, 1);
    let _ = hand.transmits();
    hand.refuse(seat(1), Round::Commit, Refusal::PolicyDenied)
        .unwrap();
    hand.refuse(seat(2), Round::Commit, Refusal::Retryable)
        .unwrap();
    assert!(!hand.coordinator.is_finished());
    assert!(hand.failure().is_none());
    let mut events = Vec::new();
    while let Some(at) = hand.coordinator.poll_timeout() {
        hand.now = at;
        hand.coordinator.handle_timeout(at);
        let _ = hand.transmits();
        events.extend(hand.events());
    }
    assert!(matches!(
        events.last(),
        Some(Event::Failed {
            failure: Failure::Deadline,
            ..
        })
    ));
}

#[test]
fn an_open_session_that_can_still_finish_keeps_the_run_alive() {
    // Seat 1 signed session 1 and seat 2 is late in it. Seats 1 and 3 then
    // refuse session 2 for good: only seat 2 is willing, yet session 1
    // still completes with seat 2's late share.
    let mut hand = Hand::new(2, 3, 1);
    let (first, packages) = hand.start(1);
    let signed = hand.shares(seat(1), first, &packages);
    hand.reply(seat(1), signed).unwrap();
    hand.now += REQUEST_TIMEOUT;
    hand.coordinator.handle_timeout(hand.now);
    let fresh = hand.commitments(seat(3), 1);
    hand.reply(seat(3), fresh).unwrap();
    let second = hand
        .transmits()
        .into_iter()
        .find_map(|(_, id)| id)
        .expect("session 2 started");
    assert_ne!(second, first);
    hand.refuse(seat(1), Round::Sign(second), Refusal::SessionConflict)
        .unwrap();
    hand.refuse(seat(3), Round::Sign(second), Refusal::PolicyDenied)
        .unwrap();
    assert!(!hand.coordinator.is_finished());
    let late = hand.shares(seat(2), first, &packages);
    hand.reply(seat(2), late).unwrap();
    assert!(matches!(hand.events().last(),
        Some(Event::Done(signed)) if signed.session == first));
}

/// `seat`'s valid share vector for `session` with `commitments` in place of
/// fresh ones.
fn shares_with(
    hand: &mut Hand,
    seat: Seat,
    session: SessionId,
    packages: &[crate::toy::ToyPackage],
    commitments: Vec<u64>,
) -> Reply<Toy> {
    let mut reply = hand.shares(seat, session, packages);
    if let Reply::Shares {
        commitments: fresh, ..
    } = &mut reply
    {
        *fresh = commitments;
    }
    reply
}

#[test]
fn valid_shares_without_fresh_commitments_count_and_the_seat_is_asked_again() {
    let mut hand = Hand::new(2, 3, 2);
    let (session, packages) = hand.start(2);
    let _ = hand.events();
    // Seat 1 is at its nonce capacity: valid shares, no fresh commitments.
    let full = shares_with(&mut hand, seat(1), session, &packages, Vec::new());
    hand.reply(seat(1), full).unwrap();
    let events = hand.events();
    assert!(
        matches!(events.as_slice(), [Event::Unresponsive {
            seat: s,
            cause: Unresponsiveness::NoFreshCommitments { session: id },
        }] if *s == seat(1) && *id == session),
        "{events:?}"
    );
    assert_eq!(
        hand.transmits(),
        vec![(seat(1), None)],
        "asked for commitments in round 1"
    );
    // Its shares stay in the session: seat 2's completes it.
    let last = hand.shares(seat(2), session, &packages);
    hand.reply(seat(2), last).unwrap();
    assert!(matches!(hand.events().last(),
        Some(Event::Done(signed)) if signed.session == session
            && signed.signers == vec![seat(1), seat(2)]));
    assert_eq!(hand.coordinator.sessions_started(), 1);
}

#[test]
fn a_seat_whose_shares_came_without_usable_commitments_rejoins_through_round_one() {
    let mut hand = Hand::new(2, 3, 1);
    let (session, packages) = hand.start(1);
    // Seat 1 hands back the commitment its session used: its shares count,
    // but that commitment never goes into another session.
    let used = vec![packages[0].commitments[&seat(1)]];
    let reused = shares_with(&mut hand, seat(1), session, &packages, used);
    hand.reply(seat(1), reused).unwrap();
    assert_eq!(hand.transmits(), vec![(seat(1), None)]);
    // Seat 2 refuses for good: session 1 can no longer finish.
    let refused = Reply::Refused {
        round: Round::Sign(session),
        refusal: Refusal::PolicyDenied,
    };
    hand.reply(seat(2), refused).unwrap();
    // Seat 1's answer to the re-ask and seat 3's first answer start
    // session 2, which they finish.
    for n in [1, 3] {
        let fresh = hand.commitments(seat(n), 1);
        hand.reply(seat(n), fresh).unwrap();
    }
    let (_, second, packages) = hand.session();
    assert_ne!(second, session);
    for n in [1, 3] {
        let shares = hand.shares(seat(n), second, &packages);
        hand.reply(seat(n), shares).unwrap();
    }
    assert!(matches!(hand.events().last(),
        Some(Event::Done(signed)) if signed.signers == vec![seat(1), seat(3)]));
    assert_eq!(hand.coordinator.culprits().count(), 0);
}

#[test]
fn a_seat_timed_out_in_round_two_is_asked_again_when_its_late_shares_lack_commitments() {
    let mut hand = Hand::new(2, 3, 1);
    let (session, packages) = hand.start(1);
    hand.now += REQUEST_TIMEOUT;
    hand.coordinator.handle_timeout(hand.now);
    let _ = hand.events();
    // Only seat 3's lost round-1 request is sent again.
    assert_eq!(hand.transmits(), vec![(seat(3), None)]);
    let late = shares_with(&mut hand, seat(1), session, &packages, Vec::new());
    hand.reply(seat(1), late).unwrap();
    let events = hand.events();
    assert!(
        events.iter().any(|e| matches!(e, Event::Unresponsive {
            seat: s,
            cause: Unresponsiveness::NoFreshCommitments { session: id },
        } if *s == seat(1) && *id == session)),
        "{events:?}"
    );
    assert!(
        hand.transmits().contains(&(seat(1), None)),
        "the late seat is asked for commitments in round 1"
    );
}

/// A run of t = 2 among `signers` seats, one input, where `ready` seats
/// start with a vector kept from an earlier run.
fn with_ready(signers: u16, ready: &[u16], config: impl FnOnce(&mut Config)) -> Hand {
    let now = Instant::now();
    let mut cluster = ToyCluster::new(2, signers);
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let kept = ready
        .iter()
        .map(|n| (seat(*n), cluster.commit(seat(*n), 1, &mut rng)))
        .collect();
    let mut roast = Config::new(2, cluster.seats());
    roast.request_timeout = REQUEST_TIMEOUT;
    config(&mut roast);
    let coordinator = Coordinator::with_commitments(now, roast, Toy, vec![5], kept).unwrap();
    Hand {
        now,
        cluster,
        rng,
        coordinator,
    }
}

/// Who a run asked for what (`None`: commitments), the session it
/// started and that session's packages ([`Hand::session`]).
type Asked = (
    Vec<(Seat, Option<SessionId>)>,
    SessionId,
    Vec<crate::toy::ToyPackage>,
);

#[test]
fn kept_vectors_start_a_session_at_once_and_spare_their_seats_round_one() {
    let mut hand = with_ready(4, &[3, 1, 2], |_| {});
    let (asked, session, packages) = hand.session();
    // The first t ready seats in the order given (3 and 1, not 2) sign;
    // only the seat without a kept vector is asked for one.
    assert_eq!(
        asked,
        vec![
            (seat(4), None),
            (seat(1), Some(session)),
            (seat(3), Some(session))
        ]
    );
    for n in [3, 1] {
        let shares = hand.shares(seat(n), session, &packages);
        hand.reply(seat(n), shares).unwrap();
    }
    assert!(matches!(hand.events().last(),
        Some(Event::Done(signed)) if signed.signers == vec![seat(1), seat(3)]));
}

#[test]
fn kept_vectors_are_validated() {
    let now = Instant::now();
    let roster = vec![seat(1), seat(2), seat(3)];
    let start = |ready: Vec<(Seat, Vec<u64>)>, deferred: &[u16]| {
        let mut config = Config::new(2, roster.clone());
        config.deferred = deferred.iter().map(|n| seat(*n)).collect();
        Coordinator::with_commitments(now, config, Toy, vec![5, 6], ready).err()
    };
    assert_eq!(
        start(vec![(seat(9), vec![1, 2])], &[]),
        Some(Error::UnknownSeat { seat: seat(9) })
    );
    assert_eq!(
        start(vec![(seat(3), vec![1, 2])], &[3]),
        Some(Error::NotAwaited { seat: seat(3) })
    );
    assert_eq!(
        start(vec![(seat(1), vec![1, 2]), (seat(1), vec![3, 4])], &[]),
        Some(Error::DuplicateSeat { seat: seat(1) })
    );
    assert_eq!(
        start(vec![(seat(2), vec![1])], &[]),
        one_of_two(seat(2)).err()
    );
    assert_eq!(start(vec![(seat(2), vec![1, 2])], &[3]), None);
}

#[test]
fn a_kept_vector_the_signer_no_longer_holds_costs_a_round_one_not_the_run() {
    let mut hand = with_ready(3, &[1, 2], |_| {});
    let (asked, session, packages) = hand.session();
    assert_eq!(
        asked,
        vec![
            (seat(3), None),
            (seat(1), Some(session)),
            (seat(2), Some(session))
        ]
    );
    // Seat 1 restarted since its vector was kept.
    let forgot = Reply::Refused {
        round: Round::Sign(session),
        refusal: Refusal::NonceUnknown,
    };
    hand.reply(seat(1), forgot).unwrap();
    let events = hand.events();
    assert!(
        matches!(events.as_slice(), [Event::SessionStarted { .. }, Event::Unresponsive {
            seat: s,
            cause: Unresponsiveness::Refused { .. },
        }] if *s == seat(1)),
        "{events:?}"
    );
    assert_eq!(hand.transmits(), vec![(seat(1), None)]);
    // Seat 2 answers session 1 (which can no longer finish) with fresh
    // commitments; with seat 3's round-1 answer they make session 2.
    let shares = hand.shares(seat(2), session, &packages);
    hand.reply(seat(2), shares).unwrap();
    let fresh = hand.commitments(seat(3), 1);
    hand.reply(seat(3), fresh).unwrap();
    let (_, second, packages) = hand.session();
    assert_ne!(second, session);
    for n in [2, 3] {
        let shares = hand.shares(seat(n), second, &packages);
        hand.reply(seat(n), shares).unwrap();
    }
    assert!(matches!(hand.events().last(),
        Some(Event::Done(signed)) if signed.signers == vec![seat(2), seat(3)]));
    assert_eq!(hand.coordinator.culprits().count(), 0);
}

/// A seat that sends its kept vector back as its fresh commitments does
/// not get it into a second session: a kept vector is remembered as
/// handed out, as an answered one is.
#[test]
fn an_echoed_kept_vector_is_not_fresh() {
    let mut hand = with_ready(3, &[1, 2], |_| {});
    let (_, session, packages) = hand.session();
    let kept: Vec<u64> = packages.iter().map(|p| p.commitments[&seat(1)]).collect();
    let echo = shares_with(&mut hand, seat(1), session, &packages, kept);
    hand.reply(seat(1), echo).unwrap();
    let events = hand.events();
    assert!(
        events.iter().any(|e| matches!(e, Event::Unresponsive {
            seat: s,
            cause: Unresponsiveness::NoFreshCommitments { .. },
        } if *s == seat(1))),
        "{events:?}"
    );
}
