//! Arbitrary reply sequences against the coordinator: whatever arrives, in
//! whatever order, it never panics, blames only senders of invalid shares,
//! reports each culprit once and ends at most once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use thresig_roast::{Config, Coordinator, Event, Refusal, Reply, Request, Round, Seat, SessionId};

use crate::harness::{REQUEST_TIMEOUT, seat};
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
    Shares {
        seat: u16,
        session: usize,
        len: usize,
        corrupt: bool,
    },
    Refuse {
        seat: u16,
        session: Option<usize>,
        transient: bool,
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
        1 => (seat, prop::option::of(0usize..4), any::<bool>())
            .prop_map(|(seat, session, transient)| Action::Refuse { seat, session, transient }),
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_reply_sequences_are_handled((threshold, signers, inputs, actions) in scenario()) {
        let start = Instant::now();
        let mut now = start;
        let mut config = Config::new(threshold, (1..=signers).map(seat).collect());
        config.request_timeout = REQUEST_TIMEOUT;
        config.deadline = Duration::from_secs(30);
        let messages: Vec<u64> = (0..inputs as u64).collect();
        let mut coordinator = Coordinator::new(now, config, Toy, messages.clone()).unwrap();
        let mut sessions: Vec<(SessionId, Vec<ToyPackage>)> = Vec::new();
        let mut members: BTreeMap<SessionId, BTreeSet<Seat>> = BTreeMap::new();
        // Seats that sent a corrupt, well-formed share vector for a session
        // they were asked to sign.
        let mut corrupted: BTreeSet<Seat> = BTreeSet::new();
        // By session, the seats whose corrupt share vector the coordinator
        // accepted there (it refuses duplicates): a finished session must
        // hold none of them.
        let mut corrupt_in: BTreeSet<(SessionId, Seat)> = BTreeSet::new();
        let mut culprits: Vec<Seat> = Vec::new();
        let mut terminal = 0;
        let mut counter = 0u64;
        for action in actions {
            match action {
                Action::Commitments { seat: n, len } => {
                    counter += 1;
                    let commitments = (0..len as u64).map(|i| counter * 16 + i).collect();
                    let _ = coordinator.handle_reply(now, seat(n), Reply::Commitments { commitments });
                }
                Action::Shares { seat: n, session, len, corrupt } => {
                    let Some((id, packages)) = sessions.get(session % sessions.len().max(1)).cloned() else {
                        continue;
                    };
                    let from = seat(n);
                    let mut shares: Vec<u64> = packages.iter().map(|p| share_of(from, p)).collect();
                    shares.resize(len, 0);
                    let full_and_corrupt = corrupt && len == inputs && members[&id].contains(&from);
                    if corrupt && len > 0 {
                        shares[len - 1] ^= 1;
                        if full_and_corrupt {
                            corrupted.insert(from);
                        }
                    }
                    counter += 1;
                    let commitments = (0..inputs as u64).map(|i| counter * 16 + i).collect();
                    let accepted = coordinator
                        .handle_reply(now, from, Reply::Shares { session: id, shares, commitments })
                        .is_ok();
                    if accepted && full_and_corrupt {
                        corrupt_in.insert((id, from));
                    }
                }
                Action::Refuse { seat: n, session, transient } => {
                    let round = match session.and_then(|i| sessions.get(i)) {
                        Some((id, _)) => Round::Sign(*id),
                        None => Round::Commit,
                    };
                    let refusal = if transient { Refusal::NonceUnknown } else { Refusal::PolicyDenied };
                    let _ = coordinator.handle_reply(now, seat(n), Reply::Refused { round, refusal });
                }
                Action::Tick { millis } => {
                    now += Duration::from_millis(millis);
                    coordinator.handle_timeout(now);
                }
            }
            while let Some(transmit) = coordinator.poll_transmit() {
                prop_assert_eq!(terminal, 0, "a request after the end");
                if let Request::Sign { session, packages } = transmit.request {
                    if !members.contains_key(&session) {
                        sessions.push((session, packages.to_vec()));
                    }
                    prop_assert!(members.entry(session).or_default().insert(transmit.to));
                }
            }
            while let Some(event) = coordinator.poll_event() {
                prop_assert_eq!(terminal, 0, "an event after the end: {:?}", event);
                match event {
                    Event::Culprit { seat, .. } => {
                        prop_assert!(corrupted.contains(&seat), "{} blamed without an invalid share", seat);
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
        for seats in members.values() {
            prop_assert_eq!(seats.len(), usize::from(threshold));
        }
    }
}
