//! Arbitrary reply sequences against the coordinator: whatever arrives, in
//! whatever order, it never panics, blames a seat only for an invalid share
//! vector it accepted in the session named in the blame, reports each
//! culprit once, ends at most once, takes round-1 answers only when it asked
//! for them (so refusing and re-committing unasked gets a seat nowhere) and
//! never puts one commitment into two sessions.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use thresig_roast::{
    Config, Coordinator, Event, Misbehavior, Refusal, Reply, Request, Round, Seat, SessionId,
};

use crate::harness::{REQUEST_TIMEOUT, cases, seat};
use crate::toy::{Toy, ToyPackage, share_of};

/// One input to the coordinator. Seats and sessions are indices resolved
/// at run time (seat n + 1 is outside the roster; a session index picks
/// among the sessions started so far).
#[derive(Debug, Clone)]
enum Action {
    Commitments {
        seat: u16,
        len: usize,
    },
    /// Sends again the last commitment vector this seat sent.
    Replay {
        seat: u16,
    },

    Shares {
        seat: u16,
        session: usize,
        len: usize,
        corrupt: bool,
    },
    /// Refuses the seat's request in a session (or round 1), and with
    /// `recommit` at once sends fresh commitments nobody asked for.
    Refuse {
        seat: u16,
        session: Option<usize>,
        transient: bool,
        recommit: bool,
    },
    Tick {
        millis: u64,
    },
}

fn action(signers: u16, inputs: usize) -> impl Strategy<Value = Action> {
    let seat = 1..=signers + 1;
    let len = prop_oneof![8 => Just(inputs), 1 => 0..=inputs + 1];
    prop_oneof![
        3 => (seat.clone(), len.clone()).prop_map(|(seat, len)| Action::Commitments { seat, len }),
        4 => (seat.clone(), 0usize..4, len, prop::bool::weighted(0.2))
            .prop_map(|(seat, session, len, corrupt)| Action::Shares { seat, session, len, corrupt }),
        2 => (seat.clone(), prop::option::of(0usize..4), any::<bool>(), any::<bool>())
            .prop_map(|(seat, session, transient, recommit)| Action::Refuse { seat, session, transient, recommit }),
        1 => seat.prop_map(|seat| Action::Replay { seat }),
        1 => (0u64..1500).prop_map(|millis| Action::Tick { millis }),
    ]
}

fn scenario() -> impl Strategy<Value = (u16, u16, usize, Vec<Action>)> {
    (2u16..=6, 1usize..=2).prop_flat_map(|(signers, inputs)| {
        (
            1..=signers,
            Just(signers),
            Just(inputs),
            proptest::collection::vec(action(signers, inputs), 0..80),
        )
    })
}

/// What the coordinator has sent so far.
#[derive(Default)]
struct Seen {
    sessions: Vec<(SessionId, Vec<ToyPackage>)>,
    members: BTreeMap<SessionId, BTreeSet<Seat>>,
    /// Seats with an unanswered round-1 request.
    asked: BTreeSet<Seat>,
    /// Every (seat, commitment) put into a session's packages.
    used: BTreeSet<(Seat, u64)>,
}

impl Seen {
    /// Takes every queued request: nothing after the end, no seat asked
    /// twice in one session, no commitment in two sessions.
    fn drain(
        &mut self,
        coordinator: &mut Coordinator<Toy>,
        terminal: usize,
    ) -> Result<(), TestCaseError> {
        while let Some(transmit) = coordinator.poll_transmit() {
            prop_assert_eq!(terminal, 0, "a request after the end");
            match transmit.request {
                Request::Sign { session, packages } => {
                    if !self.members.contains_key(&session) {
                        for package in packages.iter() {
                            for (member, commitment) in &package.commitments {
                                prop_assert!(
                                    self.used.insert((*member, *commitment)),
                                    "{}'s commitment {} in a second session",
                                    member,
                                    commitment
                                );
                            }
                        }
                        self.sessions.push((session, packages.to_vec()));
                    }
                    prop_assert!(self.members.entry(session).or_default().insert(transmit.to));
                }
                Request::Commit => {
                    self.asked.insert(transmit.to);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Sends `commitments` from `from`; the coordinator must take them only
    /// if it asked `from` for commitments.
    fn commit(
        &mut self,
        coordinator: &mut Coordinator<Toy>,
        now: Instant,
        from: Seat,
        commitments: Vec<u64>,
    ) -> Result<(), TestCaseError> {
        if coordinator
            .handle_reply(now, from, Reply::Commitments { commitments })
            .is_ok()
        {
            prop_assert!(
                self.asked.remove(&from),
                "unsolicited commitments from {} accepted",
                from
            );
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    #[test]
    fn arbitrary_reply_sequences_are_handled((threshold, signers, inputs, actions) in scenario()) {
        let start = Instant::now();
        let mut now = start;
        let mut config = Config::new(threshold, (1..=signers).map(seat).collect());
        config.request_timeout = REQUEST_TIMEOUT;
        config.deadline = Duration::from_secs(30);
        let messages: Vec<u64> = (0..inputs as u64).collect();
        let mut coordinator = Coordinator::new(now, config, Toy, messages.clone()).unwrap();
        let mut seen = Seen::default();
        seen.drain(&mut coordinator, 0)?;
        // By session, the seats whose corrupt share vector the coordinator
        // accepted there (it refuses duplicates): a finished session must
        // hold none of them.
        let mut corrupt_in: BTreeSet<(SessionId, Seat)> = BTreeSet::new();
        let mut culprits: Vec<Seat> = Vec::new();
        let mut terminal = 0;
        let mut counter = 0u64;
        // The last commitment vector each seat sent, for replays.
        let mut last: BTreeMap<Seat, Vec<u64>> = BTreeMap::new();
        for action in actions {
            match action {
                Action::Commitments { seat: n, len } => {
                    counter += 1;
                    let commitments: Vec<u64> = (0..len as u64).map(|i| counter * 16 + i).collect();
                    last.insert(seat(n), commitments.clone());
                    seen.commit(&mut coordinator, now, seat(n), commitments)?;
                }
                Action::Replay { seat: n } => {
                    if let Some(commitments) = last.get(&seat(n)).cloned() {
                        seen.commit(&mut coordinator, now, seat(n), commitments)?;
                    }
                }
                Action::Refuse { seat: n, session, transient, recommit } => {
                    let round = match session.and_then(|i| seen.sessions.get(i)) {
                        Some((id, _)) => Round::Sign(*id),
                        None => Round::Commit,
                    };
                    let refusal = if transient { Refusal::NonceUnknown } else { Refusal::PolicyDenied };
                    let refused = coordinator.handle_reply(now, seat(n), Reply::Refused { round, refusal });
                    if refused.is_ok() && round == Round::Commit {
                        seen.asked.remove(&seat(n));
                    }
                    if recommit {
                        // A transient refusal may have earned a re-ask just now.
                        seen.drain(&mut coordinator, terminal)?;
                        counter += 1;
                        let commitments: Vec<u64> = (0..inputs as u64).map(|i| counter * 16 + i).collect();
                        last.insert(seat(n), commitments.clone());
                        seen.commit(&mut coordinator, now, seat(n), commitments)?;
                    }
                }
                Action::Shares { seat: n, session, len, corrupt } => {
                    let Some((id, packages)) = seen.sessions.get(session % seen.sessions.len().max(1)).cloned() else {
                        continue;
                    };
                    let from = seat(n);
                    let mut shares: Vec<u64> = packages.iter().map(|p| share_of(from, p)).collect();
                    shares.resize(len, 0);
                    let full_and_corrupt = corrupt && len == inputs && seen.members[&id].contains(&from);
                    if corrupt && len > 0 {
                        shares[len - 1] ^= 1;
                    }
                    counter += 1;
                    let commitments: Vec<u64> = (0..inputs as u64).map(|i| counter * 16 + i).collect();
                    last.insert(from, commitments.clone());
                    let accepted = coordinator
                        .handle_reply(now, from, Reply::Shares { session: id, shares, commitments })
                        .is_ok();
                    if accepted && full_and_corrupt {
                        corrupt_in.insert((id, from));
                    }
                }
                Action::Tick { millis } => {
                    now += Duration::from_millis(millis);
                    coordinator.handle_timeout(now);
                }
            }
            seen.drain(&mut coordinator, terminal)?;
            while let Some(event) = coordinator.poll_event() {
                prop_assert_eq!(terminal, 0, "an event after the end: {:?}", event);
                match event {
                    Event::Culprit { seat, fault } => {
                        let Misbehavior::InvalidShare { session, .. } = fault else {
                            return Err(TestCaseError::fail(format!("unknown fault {fault:?}")));
                        };
                        prop_assert!(
                            corrupt_in.contains(&(session, seat)),
                            "{} blamed in session {} without an invalid share accepted there", seat, session
                        );
                        prop_assert!(!culprits.contains(&seat), "{} blamed twice", seat);
                        culprits.push(seat);
                    }
                    Event::Done(signed) => {
                        terminal += 1;
                        prop_assert_eq!(signed.signatures.len(), inputs);
                        // A signer caught in one session may still have given a
                        // valid, verified share in another that finishes: only an
                        // invalid share of the finished session would be wrong.
                        prop_assert!(
                            signed.signers.iter().all(|s| !corrupt_in.contains(&(signed.session, *s))),
                            "session {:?} finished with an invalid share", signed.session
                        );
                    }
                    Event::Failed { stats, .. } => {
                        terminal += 1;
                        culprits.sort_unstable();
                        prop_assert_eq!(&stats.culprits, &culprits);
                    }
                    _ => {}
                }
            }
            if terminal > 0 {
                prop_assert_eq!(coordinator.poll_timeout(), None);
            } else {
                let next = coordinator.poll_timeout();
                prop_assert!(next.is_some_and(|t| t <= start + Duration::from_secs(30)));
            }
        }
        for seats in seen.members.values() {
            prop_assert_eq!(seats.len(), usize::from(threshold));
        }
    }
}
