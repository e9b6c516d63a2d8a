//! Signers that try to stall a run by refusing or staying silent in round 2
//! and pushing fresh commitments nobody asked for. ROAST's guarantee (paper,
//! Thm. 1; DESIGN.md section 6) must hold regardless: with t honest,
//! responsive signers the run finishes within n - t + 1 sessions.

use std::time::Duration;

use thresig_roast::{Refusal, Seat};

use crate::harness::{Behavior, End, Sim, seat};
use crate::toy::ToyCluster;

/// Runs `threshold` of `signers` with the toy scheme: `attackers` answer
/// round 1 first (1 ms) with `behavior`, everyone else answers after
/// `delay`. Returns the sessions started and whether the run finished.
fn attack(
    threshold: u16,
    signers: u16,
    attackers: &[Seat],
    behavior: Behavior,
    delay: Duration,
) -> (usize, bool) {
    let outcome = Sim::new(7, ToyCluster::new(threshold, signers), 1)
        .first_with(attackers, behavior)
        .reply_after(delay)
        .run();
    let done = matches!(outcome.end, End::Done { valid: true, .. });
    (outcome.sessions.len(), done)
}

#[test]
fn a_signer_that_refuses_and_recommits_unasked_joins_one_session() {
    // Seat 3 refuses every sign request and at once sends fresh commitments.
    // Taken back into R, it would be first in every session and the run
    // would never finish; refused, it costs one session.
    let refuser = Behavior::RefusesAndRecommits(Refusal::PolicyDenied);
    let (sessions, done) = attack(2, 3, &[seat(3)], refuser, Duration::from_millis(10));
    assert!(
        done && sessions <= 3 - 2 + 1,
        "{sessions} sessions, done {done}"
    );
}

#[test]
fn one_refusing_recommitter_cannot_stall_a_larger_group() {
    let refuser = Behavior::RefusesAndRecommits(Refusal::PolicyDenied);
    let (sessions, done) = attack(3, 5, &[seat(5)], refuser, Duration::from_millis(10));
    assert!(
        done && sessions <= 5 - 3 + 1,
        "{sessions} sessions, done {done}"
    );
}

#[test]
fn silent_signers_that_recommit_unasked_stay_within_n_minus_t_plus_one() {
    let delays = [10u64, 500, 999, 1001, 1500, 2500].map(Duration::from_millis);
    // Baseline: the same delays without attackers.
    for delay in delays {
        let (sessions, done) = attack(2, 3, &[], Behavior::Honest, delay);
        assert!(
            done && sessions <= 2,
            "baseline {delay:?}: {sessions} sessions"
        );
    }
    let mut over = Vec::new();
    for (t, n, bad) in [(2u16, 3u16, 1u16), (3, 5, 2), (2, 4, 2), (3, 4, 1)] {
        let attackers: Vec<Seat> = (n - bad + 1..=n).map(seat).collect();
        for delay in delays {
            let (sessions, done) = attack(t, n, &attackers, Behavior::SilentAndRecommits, delay);
            if !done || sessions > usize::from(n - t + 1) {
                over.push((t, n, bad, delay, sessions, done));
            }
        }
    }
    assert!(
        over.is_empty(),
        "(t, n, silent, honest delay, sessions, done): {over:?}"
    );
}
