//! Scripted runs with real FROST signers.

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use thresig_crypto::{MerkleRoot, ScriptTree};
use thresig_roast::{Error, Failure, Refusal, Round, Seat, Unresponsiveness};

use crate::frost::FrostCluster;
use crate::harness::{Behavior, End, Outcome, REQUEST_TIMEOUT, Sim, seat};

fn cluster(seed: u64, threshold: u16, signers: u16) -> FrostCluster {
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0xd1c6);
    FrostCluster::dkg(threshold, signers, ScriptTree::KeyPathOnly, &mut rng)
}

fn seats(numbers: &[u16]) -> Vec<Seat> {
    numbers.iter().copied().map(seat).collect()
}

fn assert_no_rejections<S: thresig_roast::Scheme>(outcome: &Outcome<S>) {
    assert!(
        outcome.rejected.is_empty(),
        "seed {}: replies refused: {:?}",
        outcome.seed,
        outcome.rejected
    );
    assert_eq!(
        outcome.after_end, 0,
        "seed {}: events after the end",
        outcome.seed
    );
}

fn honest_run(seed: u64, backend: FrostCluster, inputs: usize) {
    let threshold = usize::from(backend.wallet().threshold());
    let outcome = Sim::new(seed, backend, inputs).run();
    let (signers, stats) = outcome.done();
    assert_eq!(signers.len(), threshold, "seed {seed}");
    assert_eq!(stats.sessions, 1, "seed {seed}: one session suffices");
    assert!(stats.culprits.is_empty(), "seed {seed}");
    assert!(outcome.unresponsive.is_empty(), "seed {seed}");
    assert_no_rejections(&outcome);
    match outcome.end {
        End::Done { signatures, .. } => assert_eq!(signatures, inputs, "seed {seed}"),
        _ => unreachable!("done() checked the end"),
    }
}

#[test]
fn all_honest_sign_one_input() {
    honest_run(1, cluster(1, 3, 5), 1);
}

#[test]
fn all_honest_sign_three_inputs() {
    honest_run(2, cluster(2, 3, 5), 3);
}

#[test]
fn shares_are_verified_under_the_script_tree_tweak() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let tree = ScriptTree::Root(MerkleRoot([0x5a; 32]));
    honest_run(3, FrostCluster::dkg(2, 3, tree, &mut rng), 2);
}

#[test]
fn imported_wallets_sign_with_their_tweak() {
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    honest_run(
        4,
        FrostCluster::imported(3, 4, ScriptTree::KeyPathOnly, &mut rng),
        2,
    );
    let tree = ScriptTree::Root(MerkleRoot([0xa5; 32]));
    honest_run(5, FrostCluster::imported(2, 3, tree, &mut rng), 1);
}

#[test]
fn offline_signers_are_never_in_a_session() {
    for (seed, threshold, signers, offline) in [
        (10, 3, 5, &[1u16, 2][..]),
        (11, 2, 5, &[2, 3, 5]),
        (12, 4, 7, &[1, 4, 7]),
    ] {
        let mut sim = Sim::new(seed, cluster(seed, threshold, signers), 2);
        for &n in offline {
            sim = sim.behave(seat(n), Behavior::Offline);
        }
        let outcome = sim.run();
        let (finished, stats) = outcome.done();
        for &n in offline {
            assert!(
                !finished.contains(&seat(n)),
                "seed {seed}: offline {n} signed"
            );
            assert_eq!(
                outcome.sessions_with(seat(n)),
                0,
                "seed {seed}: offline {n} in a session"
            );
        }
        assert_eq!(stats.sessions, 1, "seed {seed}");
        assert!(stats.culprits.is_empty(), "seed {seed}");
        assert_no_rejections(&outcome);
    }
}

#[test]
fn signers_silent_in_round_two_are_worked_around() {
    // Seats 1 and 2 answer round 1 first and are in the first session, but
    // answer round 2 only after the request timeout. The coordinator marks
    // them unresponsive, never blames them, and still finishes.
    let seed = 13;
    let late = seats(&[1, 2]);
    let outcome = Sim::new(seed, cluster(seed, 3, 6), 1)
        .first_with(&late, Behavior::Late)
        .run();
    let (_, stats) = outcome.done();
    assert!(stats.culprits.is_empty(), "seed {seed}");
    assert!(
        stats.sessions <= 6 - 3 + 1,
        "seed {seed}: {} sessions",
        stats.sessions
    );
    assert_no_rejections(&outcome);
}

#[test]
fn malicious_signers_answering_first_are_caught_once_and_excluded() {
    for (seed, threshold, signers, malicious, inputs, bad_input) in [
        (20, 3, 5, &[4u16, 5][..], 1, 0),
        (21, 3, 5, &[1, 3], 3, 2),
        (22, 2, 6, &[2, 4, 6], 3, 1),
    ] {
        let bad = seats(malicious);
        let outcome = Sim::new(seed, cluster(seed, threshold, signers), inputs)
            .first_with(&bad, Behavior::Malicious { input: bad_input })
            .run();
        let (finished, stats) = outcome.done();
        // The first session held malicious signers: they answered first.
        let first = &outcome.sessions[0].1;
        assert!(
            bad.iter().any(|s| first.contains(s)),
            "seed {seed}: {first:?}"
        );
        let mut reported = outcome.culprits.clone();
        reported.sort_unstable();
        let mut expected: Vec<Seat> = bad
            .iter()
            .copied()
            .filter(|s| outcome.sessions_with(*s) > 0)
            .collect();
        expected.sort_unstable();
        assert_eq!(reported, expected, "seed {seed}: each culprit exactly once");
        assert_eq!(stats.culprits, expected, "seed {seed}");
        assert!(finished.iter().all(|s| !bad.contains(s)), "seed {seed}");
        let bound = u32::from(signers - threshold + 1);
        assert!(
            stats.sessions <= bound,
            "seed {seed}: {} sessions",
            stats.sessions
        );
        for s in &bad {
            assert!(
                outcome.sessions_with(*s) <= 1,
                "seed {seed}: culprit {s} reused"
            );
        }
        assert_no_rejections(&outcome);
    }
}

#[test]
fn refusals_make_signers_unresponsive_not_culprits() {
    for (seed, refusal) in [
        (30, Refusal::PolicyDenied),
        (31, Refusal::NonceUnknown),
        (32, Refusal::SessionConflict),
    ] {
        let refuser = seat(2);
        let outcome = Sim::new(seed, cluster(seed, 3, 5), 2)
            .first_with(&[refuser], Behavior::Refuses(refusal))
            .run();
        let (finished, stats) = outcome.done();
        assert!(stats.culprits.is_empty(), "seed {seed}: {refusal:?} blamed");
        assert!(!finished.contains(&refuser), "seed {seed}");
        assert!(
            outcome.unresponsive.iter().any(|(s, cause)| *s == refuser
                && matches!(cause, Unresponsiveness::Refused { round: Round::Sign(_), refusal: r } if *r == refusal)),
            "seed {seed}: {:?}",
            outcome.unresponsive
        );
        // A transient refusal earns one more round-1 request, hence at most
        // one more session with the refuser; a final one earns none.
        let most = if refusal.is_transient() { 2 } else { 1 };
        let with = outcome.sessions_with(refuser);
        assert!((1..=most).contains(&with), "seed {seed}: {with} sessions");
        assert_no_rejections(&outcome);
    }
}

#[test]
fn a_restarted_signer_rejoins_with_fresh_commitments() {
    let seed = 33;
    let restarter = seat(1);
    let outcome = Sim::new(seed, cluster(seed, 3, 3), 2)
        .first_with(&[restarter], Behavior::Restarts)
        .run();
    // With n = t every seat must sign: the restarted one refuses with
    // `nonce_unknown`, is asked for fresh commitments, and signs.
    let (finished, stats) = outcome.done();
    assert!(finished.contains(&restarter), "seed {seed}");
    assert_eq!(stats.sessions, 2, "seed {seed}");
    assert!(stats.culprits.is_empty(), "seed {seed}");
    assert_no_rejections(&outcome);
}

#[test]
fn too_many_malicious_fails_naming_the_culprits() {
    let seed = 40;
    let bad = seats(&[1, 3]);
    let outcome = Sim::new(seed, cluster(seed, 3, 4), 2)
        .first_with(&bad, Behavior::Malicious { input: 1 })
        .run();
    match &outcome.end {
        End::Failed {
            failure:
                Failure::TooManyMalicious {
                    remaining,
                    threshold,
                },
            stats,
        } => {
            assert_eq!((*remaining, *threshold), (2, 3), "seed {seed}");
            assert_eq!(stats.culprits, bad, "seed {seed}");
        }
        _ => panic!("seed {seed}: expected a failure for too many culprits"),
    }
    assert_eq!(outcome.after_end, 0, "seed {seed}");
}

#[test]
fn duplicated_replies_are_refused_and_never_counted_twice() {
    let seed = 50;
    let bad = seat(5);
    let outcome = Sim::new(seed, cluster(seed, 3, 5), 2)
        .first_with(&[bad], Behavior::Malicious { input: 0 })
        .duplicate_replies()
        .run();
    let (finished, stats) = outcome.done();
    assert_eq!(outcome.culprits, vec![bad], "seed {seed}");
    assert_eq!(stats.culprits, vec![bad], "seed {seed}");
    assert!(!finished.contains(&bad), "seed {seed}");
    assert!(
        !outcome.rejected.is_empty(),
        "seed {seed}: duplicates were delivered"
    );
    for (_, error) in &outcome.rejected {
        assert!(
            matches!(
                error,
                Error::NotAwaited { .. } | Error::NotPending { .. } | Error::SessionClosed { .. }
            ),
            "seed {seed}: {error:?}"
        );
    }
}

#[test]
fn fifty_one_of_a_hundred_with_forty_nine_offline() {
    // A tBTC-sized wallet; the key is split by a dealer since a 100-member
    // DKG would dominate the suite's time.
    let seed = 60;
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let backend = FrostCluster::imported(51, 100, ScriptTree::KeyPathOnly, &mut rng);
    let offline: Vec<Seat> = (1..=49).map(|n| seat(n * 2)).collect();
    let outcome = Sim::new(seed, backend, 2)
        .first_with(&offline, Behavior::Offline)
        .run();
    let (finished, stats) = outcome.done();
    assert_eq!(finished.len(), 51, "seed {seed}");
    assert!(finished.iter().all(|s| !offline.contains(s)), "seed {seed}");
    assert_eq!(stats.sessions, 1, "seed {seed}");
    assert_no_rejections(&outcome);
}

#[test]
fn fifty_one_of_a_hundred_with_forty_nine_malicious_answering_first() {
    let seed = 61;
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let backend = FrostCluster::imported(51, 100, ScriptTree::KeyPathOnly, &mut rng);
    let bad: Vec<Seat> = (52..=100).map(seat).collect();
    let outcome = Sim::new(seed, backend, 1)
        .first_with(&bad, Behavior::Malicious { input: 0 })
        .run();
    let (finished, stats) = outcome.done();
    assert!(finished.iter().all(|s| !bad.contains(s)), "seed {seed}");
    assert_eq!(stats.culprits, bad, "seed {seed}");
    assert_eq!(outcome.culprits.len(), 49, "seed {seed}: each culprit once");
    assert_eq!(stats.sessions, 2, "seed {seed}");
    assert_no_rejections(&outcome);
}

/// The refusals and culprits of a run that failed for want of willing
/// signers, or a panic naming the seed; checks the run ended at once, with
/// no request timing out.
fn too_few_willing<S: thresig_roast::Scheme>(
    outcome: &Outcome<S>,
    threshold: usize,
) -> (usize, &[(Seat, Refusal)], &[Seat]) {
    let seed = outcome.seed;
    assert!(
        outcome.elapsed < REQUEST_TIMEOUT,
        "seed {seed}: ended after {:?}, not at once",
        outcome.elapsed
    );
    assert_no_rejections(outcome);
    match &outcome.end {
        End::Failed {
            failure:
                Failure::TooFewWilling {
                    willing,
                    threshold: t,
                    refusals,
                },
            stats,
        } => {
            assert_eq!(*t, threshold, "seed {seed}");
            (*willing, refusals, &stats.culprits)
        }
        End::Failed { failure, .. } => panic!("seed {seed}: failed with {failure:?}"),
        _ => panic!("seed {seed}: expected a failure for too few willing signers"),
    }
}

#[test]
fn every_signer_refusing_by_policy_fails_at_once() {
    let seed = 70;
    let mut sim = Sim::new(seed, cluster(seed, 3, 5), 2);
    for n in 1..=5 {
        sim = sim.behave(seat(n), Behavior::Refuses(Refusal::PolicyDenied));
    }
    let outcome = sim.run();
    // Session 1's three refusals leave two willing signers: the run fails
    // at the third, long before any request times out, and no second
    // session is tried.
    let (willing, refusals, culprits) = too_few_willing(&outcome, 3);
    assert_eq!(willing, 2, "seed {seed}");
    assert!(culprits.is_empty(), "seed {seed}");
    assert_eq!(outcome.sessions.len(), 1, "seed {seed}");
    let members = &outcome.sessions[0].1;
    assert_eq!(
        refusals,
        members
            .iter()
            .map(|s| (*s, Refusal::PolicyDenied))
            .collect::<Vec<_>>(),
        "seed {seed}"
    );
}

#[test]
fn up_to_n_minus_t_final_refusals_and_culprits_still_sign() {
    // n − t = 2 seats out for good, by refusals of every final kind or by a
    // refusal and an invalid share: the other t still sign.
    let cases = [
        (
            71,
            [
                Behavior::Refuses(Refusal::PolicyDenied),
                Behavior::Refuses(Refusal::Rejected),
            ],
        ),
        (
            72,
            [
                Behavior::Refuses(Refusal::SessionConflict),
                Behavior::RefusesAndRecommits(Refusal::PolicyDenied),
            ],
        ),
        (
            73,
            [
                Behavior::Malicious { input: 1 },
                Behavior::Refuses(Refusal::PolicyDenied),
            ],
        ),
    ];
    for (seed, [first, second]) in cases {
        let out = seats(&[1, 2]);
        let outcome = Sim::new(seed, cluster(seed, 3, 5), 2)
            .behave(seat(1), first)
            .behave(seat(2), second)
            .answer_first(&out)
            .run();
        let (finished, stats) = outcome.done();
        assert_eq!(finished, seats(&[3, 4, 5]), "seed {seed}");
        assert_eq!(stats.sessions, 2, "seed {seed}");
        let malicious = matches!(first, Behavior::Malicious { .. });
        assert_eq!(stats.culprits.is_empty(), !malicious, "seed {seed}");
    }
}

#[test]
fn culprits_and_refusals_that_leave_fewer_than_t_fail_as_too_few_willing() {
    // One culprit alone leaves four of five signers, enough for t = 3; with
    // two refusals only two are willing. The refusals decide, so the
    // failure is not `TooManyMalicious`, and the stats still name the
    // culprit.
    let seed = 74;
    let outcome = Sim::new(seed, cluster(seed, 3, 5), 1)
        .behave(seat(1), Behavior::Malicious { input: 0 })
        .behave(seat(2), Behavior::Refuses(Refusal::PolicyDenied))
        .behave(seat(3), Behavior::Refuses(Refusal::Rejected))
        .answer_first(&seats(&[1, 2, 3]))
        .run();
    let (willing, refusals, culprits) = too_few_willing(&outcome, 3);
    assert_eq!(willing, 2, "seed {seed}");
    assert_eq!(
        refusals,
        [
            (seat(2), Refusal::PolicyDenied),
            (seat(3), Refusal::Rejected)
        ],
        "seed {seed}"
    );
    assert_eq!(culprits, seats(&[1]), "seed {seed}");
    assert_eq!(outcome.culprits, seats(&[1]), "seed {seed}");
}

#[test]
fn shares_sent_without_fresh_commitments_still_make_the_signature() {
    // Seat 1 is at its nonce capacity: it answers round 2 with valid shares
    // and no fresh commitments. Its shares count, so the first session
    // finishes with it instead of waiting out seat 1 and starting another.
    let seed = 80;
    let outcome = Sim::new(seed, cluster(seed, 3, 5), 2)
        .behave(seat(1), Behavior::AtCapacity)
        .answer_first(&seats(&[1, 2, 3]))
        .run();
    let (signers, stats) = outcome.done();
    assert_eq!(signers, seats(&[1, 2, 3]), "seed {seed}");
    assert_eq!(stats.sessions, 1, "seed {seed}");
    assert_no_rejections(&outcome);
}
