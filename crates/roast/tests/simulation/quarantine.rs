//! Deferred (quarantined) seats: asked last, left out while t others answer,
//! and asked as soon as the others alone cannot make a session.

use thresig_roast::{Refusal, Seat};

use crate::harness::{Behavior, REQUEST_TIMEOUT, Sim, seat};
use crate::toy::ToyCluster;

fn seats(numbers: &[u16]) -> Vec<Seat> {
    numbers.iter().copied().map(seat).collect()
}

#[test]
fn deferred_seats_are_not_asked_while_t_others_answer() {
    let outcome = Sim::new(40, ToyCluster::new(3, 5), 2)
        .defer(&seats(&[4, 5]))
        .run();
    let (signers, stats) = outcome.done();
    assert_eq!(signers, seats(&[1, 2, 3]).as_slice());
    assert_eq!(stats.sessions, 1);
    assert_eq!(outcome.asked, seats(&[1, 2, 3]));
}

#[test]
fn a_deferred_seat_stays_out_while_t_others_still_respond() {
    let outcome = Sim::new(41, ToyCluster::new(2, 4), 1)
        .behave(seat(1), Behavior::Offline)
        .defer(&seats(&[4]))
        .run();
    let (signers, _) = outcome.done();
    assert_eq!(signers, seats(&[2, 3]).as_slice());
    assert!(!outcome.asked.contains(&seat(4)), "{:?}", outcome.asked);
}

#[test]
fn a_deferred_seat_is_asked_when_another_times_out_and_the_run_signs() {
    let outcome = Sim::new(42, ToyCluster::new(2, 3), 1)
        .behave(seat(1), Behavior::Offline)
        .defer(&seats(&[3]))
        .run();
    let (signers, _) = outcome.done();
    assert_eq!(signers, seats(&[2, 3]).as_slice());
    // Asked only once seat 1's first round-1 request timed out, not after
    // its re-ask timed out too.
    let position = outcome.asked.iter().position(|s| *s == seat(3)).unwrap();
    assert_eq!(&outcome.asked[..2], seats(&[1, 2]).as_slice());
    assert!(position >= 2);
    assert!(outcome.elapsed >= REQUEST_TIMEOUT);
    assert!(
        outcome.elapsed < REQUEST_TIMEOUT * 2,
        "{:?}",
        outcome.elapsed
    );
}

#[test]
fn deferred_seats_are_asked_at_once_when_the_others_are_too_few() {
    let outcome = Sim::new(43, ToyCluster::new(2, 3), 1)
        .defer(&seats(&[2, 3]))
        .run();
    let (signers, stats) = outcome.done();
    assert_eq!(signers.len(), 2);
    assert_eq!(stats.sessions, 1);
    assert_eq!(outcome.asked, seats(&[1, 2, 3]));
    assert!(outcome.unresponsive.is_empty());
    assert!(outcome.elapsed < REQUEST_TIMEOUT, "{:?}", outcome.elapsed);
}

#[test]
fn a_culprit_calls_the_deferred_seats_in_and_the_run_still_signs() {
    let outcome = Sim::new(44, ToyCluster::new(3, 5), 1)
        .first_with(&[seat(1)], Behavior::Malicious { input: 0 })
        .defer(&seats(&[4, 5]))
        .run();
    let (signers, stats) = outcome.done();
    assert_eq!(stats.culprits, seats(&[1]));
    assert!(!signers.contains(&seat(1)));
    assert!(outcome.asked.contains(&seat(4)) && outcome.asked.contains(&seat(5)));
}

#[test]
fn a_refusal_for_good_calls_the_deferred_seats_in() {
    let outcome = Sim::new(45, ToyCluster::new(2, 3), 1)
        .first_with(&[seat(1)], Behavior::Refuses(Refusal::PolicyDenied))
        .defer(&seats(&[3]))
        .run();
    let (signers, _) = outcome.done();
    assert_eq!(signers, seats(&[2, 3]).as_slice());
}

#[test]
fn deferred_seats_join_a_session_after_the_others_in_r() {
    // Seat 1 is offline: at its timeout seats 3 and 4 are called in, and
    // the session takes seat 2 (in R already) before either of them.
    let outcome = Sim::new(46, ToyCluster::new(2, 4), 1)
        .behave(seat(1), Behavior::Offline)
        .defer(&seats(&[3, 4]))
        .run();
    let (signers, stats) = outcome.done();
    assert!(signers.contains(&seat(2)), "{signers:?}");
    assert_eq!(stats.sessions, 1);
}

#[test]
fn a_deferred_seat_outside_the_roster_is_refused() {
    use thresig_roast::{Config, Coordinator, Error};
    let backend = ToyCluster::new(2, 3);
    let mut config = Config::new(2, seats(&[1, 2, 3]));
    config.deferred = seats(&[9]).into_iter().collect();
    let error = Coordinator::new(
        std::time::Instant::now(),
        config,
        crate::harness::Backend::scheme(&backend),
        vec![1],
    )
    .unwrap_err();
    assert_eq!(error, Error::UnknownSeat { seat: seat(9) });
}

/// A seat still pending in a session that a refusal already broke will
/// not make that session: it is not counted on, so the deferred seats are
/// called in at once rather than after its request times out (without
/// deferral, seats 4, 5 and 6 would start a session at once too).
#[test]
fn a_seat_pending_in_a_broken_session_does_not_hold_the_deferred_ones_back() {
    let outcome = Sim::new(47, ToyCluster::new(3, 6), 1)
        .behave(seat(1), Behavior::Refuses(Refusal::PolicyDenied))
        .behave(seat(2), Behavior::SilentAndRecommits)
        .answer_first(&seats(&[1, 2, 3]))
        .defer(&seats(&[5, 6]))
        .run();
    let (signers, _) = outcome.done();
    assert!(!signers.contains(&seat(1)) && !signers.contains(&seat(2)));
    assert!(outcome.elapsed < REQUEST_TIMEOUT, "{:?}", outcome.elapsed);
}
