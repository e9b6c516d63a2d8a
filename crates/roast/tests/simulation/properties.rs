//! Property tests over random groups, fault sets and reply orders.
//!
//! Bounded case counts keep the suite fast; `PROPTEST_CASES` replaces them
//! for a long run:
//! `PROPTEST_CASES=2000 cargo test -p thresig-roast --test simulation properties`.

use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use thresig_crypto::ScriptTree;
use thresig_roast::{Failure, Refusal, Seat};

use crate::frost::FrostCluster;
use crate::harness::{Backend, Behavior, DEADLINE, End, Sim, cases, max_reasks, seat};
use crate::toy::ToyCluster;

/// A random run: group, faults, inputs, and how replies are scheduled.
#[derive(Debug, Clone)]
struct Case {
    threshold: u16,
    behaviors: Vec<Behavior>,
    inputs: usize,
    seed: u64,
    faulty_first: bool,
    duplicate: bool,
}

fn behavior(inputs: usize) -> impl Strategy<Value = Behavior> {
    prop_oneof![
        4 => Just(Behavior::Honest),
        2 => Just(Behavior::Offline),
        2 => (0..inputs).prop_map(|input| Behavior::Malicious { input }),
        1 => Just(Behavior::Late),
        1 => Just(Behavior::Restarts),
        1 => prop_oneof![
            Just(Refusal::PolicyDenied),
            Just(Refusal::NonceUnknown),
            Just(Refusal::Rejected)
        ]
        .prop_map(Behavior::Refuses),
        1 => prop_oneof![Just(Refusal::PolicyDenied), Just(Refusal::NonceUnknown)]
            .prop_map(Behavior::RefusesAndRecommits),
        1 => Just(Behavior::SilentAndRecommits),
        1 => Just(Behavior::AtCapacity),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (2u16..=7, 1usize..=3)
        .prop_flat_map(|(signers, inputs)| {
            (
                2..=signers,
                proptest::collection::vec(behavior(inputs), usize::from(signers)),
                Just(inputs),
                any::<u64>(),
                any::<bool>(),
                any::<bool>(),
            )
        })
        .prop_map(
            |(threshold, behaviors, inputs, seed, faulty_first, duplicate)| Case {
                threshold,
                behaviors,
                inputs,
                seed,
                faulty_first,
                duplicate,
            },
        )
}

/// Signers that eventually give valid shares when asked.
fn signs_eventually(behavior: Behavior) -> bool {
    matches!(
        behavior,
        Behavior::Honest | Behavior::Late | Behavior::Restarts | Behavior::AtCapacity
    )
}

fn check<B: Backend>(case: &Case, backend: B) -> Result<(), TestCaseError> {
    check_with(case, 0, 0, backend)
}

/// [`check`] with the seats whose bit is set in `deferred` (seat 1 is bit
/// 0) deferred, as a driver's quarantine defers them, and the honest or
/// malicious seats whose bit is set in `kept` and that are not deferred
/// starting with a kept vector: every property of a run holds as without
/// either, the session bound and "fails only when fewer than t signers
/// ever sign" included, so deferring never makes a run fail that could
/// finish, and starting with kept vectors changes nothing but the round
/// trips.
fn check_with<B: Backend>(
    case: &Case,
    deferred: u8,
    kept: u8,
    backend: B,
) -> Result<(), TestCaseError> {
    let seed = case.seed;
    let by_seat: Vec<(Seat, Behavior)> = case
        .behaviors
        .iter()
        .enumerate()
        .map(|(i, b)| (seat(u16::try_from(i + 1).unwrap()), *b))
        .collect();
    let faulty: Vec<Seat> = by_seat
        .iter()
        .filter(|(_, b)| !matches!(b, Behavior::Honest))
        .map(|(s, _)| *s)
        .collect();
    let mut sim = Sim::new(seed, backend, case.inputs);
    for (s, b) in &by_seat {
        sim = sim.behave(*s, *b);
    }
    if case.faulty_first {
        sim = sim.answer_first(&faulty);
    }
    if case.duplicate {
        sim = sim.duplicate_replies();
    }
    let deferred: Vec<Seat> = by_seat
        .iter()
        .enumerate()
        .filter(|(i, _)| deferred >> i & 1 == 1)
        .map(|(_, (s, _))| *s)
        .collect();
    let kept: Vec<Seat> = by_seat
        .iter()
        .enumerate()
        .filter(|(i, (s, b))| {
            kept >> i & 1 == 1
                && !deferred.contains(s)
                && matches!(b, Behavior::Honest | Behavior::Malicious { .. })
        })
        .map(|(_, (s, _))| *s)
        .collect();
    let outcome = sim.defer(&deferred).keep(&kept).run();

    let t = usize::from(case.threshold);
    let n = by_seat.len();
    let eventually = by_seat.iter().filter(|(_, b)| signs_eventually(*b)).count();
    // Each re-ask after a transient round-2 refusal may cost one extra
    // session: once for a restarted signer, at most `max_reasks` times for
    // one that keeps refusing. Everything else fits ROAST's n - t + 1
    // (unsolicited commitments never put a signer back into a session).
    let transient: usize = by_seat
        .iter()
        .map(|(_, b)| match b {
            Behavior::Restarts => 1,
            Behavior::Refuses(Refusal::NonceUnknown)
            | Behavior::RefusesAndRecommits(Refusal::NonceUnknown) => max_reasks(DEADLINE),
            _ => 0,
        })
        .sum();
    let bound = n - t + 1 + transient;
    prop_assert_eq!(
        outcome.sessions.len(),
        match &outcome.end {
            End::Done { stats, .. } | End::Failed { stats, .. } => stats.sessions as usize,
            End::Stuck => outcome.sessions.len(),
        },
        "seed {}: sessions started and counted differ",
        seed
    );
    prop_assert!(
        outcome.sessions.len() <= bound,
        "seed {}: {} sessions, bound {}",
        seed,
        outcome.sessions.len(),
        bound
    );
    let malicious = |s: &Seat| {
        by_seat
            .iter()
            .any(|(x, b)| x == s && matches!(b, Behavior::Malicious { .. }))
    };

    // Culprits: exactly the malicious signers that were in some session,
    // each reported once; never anyone else.
    let mut reported = outcome.culprits.clone();
    reported.sort_unstable();
    let before = reported.len();
    reported.dedup();
    prop_assert_eq!(
        before,
        reported.len(),
        "seed {}: a culprit reported twice",
        seed
    );
    prop_assert!(
        reported.iter().all(malicious),
        "seed {}: honest culprit {:?}",
        seed,
        reported
    );
    // Every malicious signer whose share vector was read is a culprit (a run
    // may end before a slow malicious reply arrives).
    let mut read: Vec<Seat> = outcome
        .delivered_shares
        .iter()
        .copied()
        .filter(malicious)
        .collect();
    read.sort_unstable();
    read.dedup();
    prop_assert_eq!(&reported, &read, "seed {}", seed);
    for s in &reported {
        prop_assert!(outcome.sessions_with(*s) > 0, "seed {}", seed);
    }
    prop_assert_eq!(outcome.after_end, 0, "seed {}: events after the end", seed);
    // Offline signers are never in a session; every session has t distinct
    // members, none of them still awaited in another open session.
    for (s, b) in &by_seat {
        if *b == Behavior::Offline {
            prop_assert_eq!(outcome.sessions_with(*s), 0, "seed {}", seed);
        }
    }
    for (_, members) in &outcome.sessions {
        prop_assert_eq!(members.len(), t, "seed {}", seed);
    }
    prop_assert!(
        outcome.overlaps.is_empty(),
        "seed {}: seats in two open sessions at once: {:?}",
        seed,
        outcome.overlaps
    );
    if !case.duplicate {
        // Only replies nobody awaited are refused: a late seat's second
        // round-1 answer, a recommitting seat's unsolicited commitments.
        let unawaited = |s: &Seat| by_seat.iter().any(|(x, b)| x == s && b.sends_unawaited());
        prop_assert!(
            outcome
                .rejected
                .iter()
                .all(|(s, e)| unawaited(s) && matches!(e, thresig_roast::Error::NotAwaited { .. })),
            "seed {}: {:?}",
            seed,
            outcome.rejected
        );
    }

    match &outcome.end {
        End::Done {
            signers,
            stats,
            valid,
            signatures,
        } => {
            prop_assert!(*valid, "seed {}: invalid signature", seed);
            prop_assert_eq!(*signatures, case.inputs, "seed {}", seed);
            prop_assert!(signers.iter().all(|s| !malicious(s)), "seed {}", seed);
            prop_assert_eq!(&stats.culprits, &reported, "seed {}", seed);
        }
        End::Failed { failure, stats } => {
            prop_assert!(
                eventually < t,
                "seed {}: failed with {} good signers: {:?}",
                seed,
                eventually,
                failure
            );
            match failure {
                Failure::TooManyMalicious { remaining, .. } => {
                    prop_assert!(*remaining < t, "seed {}", seed);
                }
                // Only final refusals from seats scripted to give them,
                // and the count is what culprits and refusals leave.
                Failure::TooFewWilling {
                    willing,
                    threshold,
                    refusals,
                } => {
                    prop_assert_eq!(*threshold, t, "seed {}", seed);
                    prop_assert!(*willing < t, "seed {}", seed);
                    prop_assert!(n - reported.len() >= t, "seed {}: culprits alone", seed);
                    prop_assert_eq!(
                        *willing,
                        n - reported.len() - refusals.len(),
                        "seed {}",
                        seed
                    );
                    for (s, refusal) in refusals {
                        prop_assert!(!refusal.is_transient(), "seed {}", seed);
                        prop_assert!(
                            by_seat.iter().any(|(x, b)| x == s
                                && matches!(b, Behavior::Refuses(r) | Behavior::RefusesAndRecommits(r) if r == refusal)),
                            "seed {}: {:?} did not refuse",
                            seed,
                            s
                        );
                    }
                }
                _ => {}
            }
            prop_assert_eq!(&stats.culprits, &reported, "seed {}", seed);
        }
        End::Stuck => prop_assert!(false, "seed {}: the run never ended", seed),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(64)))]

    #[test]
    fn toy_runs_end_correctly(case in case()) {
        let backend = ToyCluster::new(case.threshold, u16::try_from(case.behaviors.len()).unwrap());
        check(&case, backend)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(64)))]

    #[test]
    fn toy_runs_with_deferred_seats_end_correctly(case in case(), deferred in any::<u8>()) {
        let backend = ToyCluster::new(case.threshold, u16::try_from(case.behaviors.len()).unwrap());
        check_with(&case, deferred, 0, backend)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(64)))]

    #[test]
    fn toy_runs_starting_with_kept_vectors_end_correctly(
        case in case(),
        deferred in any::<u8>(),
        kept in any::<u8>(),
    ) {
        let backend = ToyCluster::new(case.threshold, u16::try_from(case.behaviors.len()).unwrap());
        check_with(&case, deferred, kept, backend)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(24)))]

    #[test]
    fn frost_runs_end_correctly(case in case()) {
        let mut rng = ChaCha20Rng::seed_from_u64(case.seed);
        let signers = u16::try_from(case.behaviors.len()).unwrap();
        let backend = FrostCluster::dkg(case.threshold, signers, ScriptTree::KeyPathOnly, &mut rng);
        check(&case, backend)?;
    }
}
