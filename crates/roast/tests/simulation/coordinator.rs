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
        let mut sign = None;
        while let Some(t) = self.coordinator.poll_transmit() {
            if let Request::Sign { session, packages } = t.request {
                sign = Some((session, packages.to_vec()));
            }
        }
        sign.expect("a session started")
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
fn fresh_commitments_from_an_unresponsive_seat_end_its_old_session() {
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
    let fresh = hand.commitments(seat(1), 1);
    hand.reply(seat(1), fresh).unwrap();
    let stale = hand.shares(seat(1), session, &packages);
    assert_eq!(
        hand.reply(seat(1), stale),
        Err(Error::NotPending {
            seat: seat(1),
            session
        })
    );
    // Seat 3 comes back too: a second session starts with seats 1 and 3.
    let fresh = hand.commitments(seat(3), 1);
    hand.reply(seat(3), fresh).unwrap();
    let started: Vec<_> = hand
        .transmits()
        .into_iter()
        .filter_map(|(s, id)| id.map(|id| (s, id)))
        .collect();
    assert_eq!(started.len(), 2);
    assert!(started.iter().all(|(_, id)| *id != session));
    assert_eq!(hand.coordinator.sessions_started(), 2);
}

#[test]
fn transient_refusals_are_asked_again_once() {
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
        "asked for fresh commitments"
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
    // It refuses round 1 now: unresponsive, not asked a third time.
    let refused = Reply::Refused {
        round: Round::Commit,
        refusal: Refusal::Retryable,
    };
    hand.reply(seat(1), refused).unwrap();
    assert!(hand.transmits().is_empty());
    let refused = Reply::Refused {
        round: Round::Commit,
        refusal: Refusal::Retryable,
    };
    assert_eq!(
        hand.reply(seat(1), refused),
        Err(Error::NotAwaited { seat: seat(1) })
    );
    assert_eq!(hand.coordinator.culprits().count(), 0);
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
    let mut steps = 0;
    while let Some(at) = hand.coordinator.poll_timeout() {
        hand.now = at;
        hand.coordinator.handle_timeout(at);
        steps += 1;
        assert!(steps < 10, "the timer keeps firing");
    }
    let events = hand.events();
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Unresponsive { .. }))
            .count(),
        3
    );
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
    let culprits: Vec<_> = hand
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Culprit { seat, fault } => Some((seat, fault)),
            _ => None,
        })
        .collect();
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
