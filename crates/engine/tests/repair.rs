//! Member repair, sans IO: a member that lost its disk is rebuilt by `t`
//! helpers, each only with its own operator's approval; a lying helper is
//! named; a coordinator that changes the helper set or the lost seat
//! between steps is refused; a restart at any step boundary leaves every
//! member as it was.

mod common;

use common::repair::*;
use common::*;
use thresig_crypto::{ScriptTree, Seat};
use thresig_engine::{
    Error, ErrorCode, HexBytes, MAX_APPROVAL_SECS, OperatorCommand, Recovery, RepairFault,
    RepairPayload, RepairRequest, RepairResponse, RepairSession, SignedRepairMessage,
    WalletStateKind,
};

const W: &str = "w";

/// A 2-of-3 wallet whose seat 3 lost its disk.
fn lost_seat_three(seed: u64) -> Cluster {
    let mut c = Cluster::new(seed, 2, 3, &[W], small_limits());
    c.lose_disk(3);
    c
}

/// [`lost_seat_three`] with both helpers approved, a session of seat 3 by
/// helpers 1 and 2, and another of the same repair with another nonce.
fn approved_pair(seed: u64) -> (Cluster, RepairSession, RepairSession) {
    let c = lost_seat_three(seed);
    approve(&c, W, 3, &[1, 2]);
    let s = session(&c, W, 3, &[1, 2], 1);
    let other = session(&c, W, 3, &[1, 2], 2);
    (c, s, other)
}

fn state(c: &Cluster, s: u16) -> WalletStateKind {
    c.member(s).signer().status(&wid(W)).unwrap().state
}

fn digest(n: u8) -> [[u8; 32]; 1] {
    [[n; 32]]
}

#[test]
fn a_member_that_lost_its_disk_is_repaired_and_signs_again() {
    let mut c = lost_seat_three(1);
    assert_eq!(state(&c, 3), WalletStateKind::DkgPending);
    approve(&c, W, 3, &[1, 2]);
    let session = session(&c, W, 3, &[1, 2], 1);
    let done = run(&mut c, &session).unwrap();
    assert!(
        matches!(done, RepairResponse::Repaired { seat: s, .. } if s == seat(3)),
        "{done:?}"
    );
    assert_eq!(state(&c, 3), WalletStateKind::Active);
    // The rebuilt share signs with each old member, and survives a restart.
    c.sign(W, &[1, 3], &digest(7));
    c.restart(3);
    c.sign(W, &[2, 3], &digest(8));
}

#[test]
fn a_helper_without_its_operators_approval_refuses_and_nothing_changes() {
    let mut c = lost_seat_three(2);
    approve(&c, W, 3, &[1]);
    let session = session(&c, W, 3, &[1, 2], 1);
    let (refuser, err) = run(&mut c, &session).unwrap_err();
    assert_eq!(refuser, 2);
    assert_eq!(err.code(), ErrorCode::RepairNotApproved);
    assert!(
        matches!(err, Error::RepairNotApproved { lost, .. } if lost == seat(3)),
        "{err:?}"
    );
    assert_eq!(state(&c, 3), WalletStateKind::DkgPending);
    // An approval of another seat does not count either.
    approve(&c, W, 1, &[2]);
    let (_, err) = run(&mut c, &session).unwrap_err();
    assert_eq!(err.code(), ErrorCode::RepairNotApproved);
    c.sign(W, &[1, 2], &digest(1));
}

#[test]
fn an_approval_lasts_one_second_to_a_day_and_a_refused_one_grants_nothing() {
    let mut c = lost_seat_three(4);
    let approve_for = |c: &Cluster, secs: u64| {
        c.member(2).signer().operate(
            c.now,
            &OperatorCommand::ApproveRepair {
                wallet: wid(W),
                seat: seat(3),
                expires_in_secs: secs,
            },
        )
    };
    for secs in [0, MAX_APPROVAL_SECS + 1, u64::MAX] {
        let err = approve_for(&c, secs).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidRequest, "{secs}");
        assert_eq!(err.recovery(), Recovery::Terminal);
        assert!(err.to_string().contains("--expires-in"), "{err}");
    }
    approve(&c, W, 3, &[1]);
    let session = session(&c, W, 3, &[1, 2], 1);
    let (refuser, err) = run(&mut c, &session).unwrap_err();
    assert_eq!((refuser, err.code()), (2, ErrorCode::RepairNotApproved));
    let granted = approve_for(&c, MAX_APPROVAL_SECS).unwrap();
    assert_eq!(
        granted.expires,
        Some(
            c.now
                .saturating_add(std::time::Duration::from_secs(MAX_APPROVAL_SECS))
        )
    );
    run(&mut c, &session).unwrap();
    assert_eq!(state(&c, 3), WalletStateKind::Active);
}

#[test]
fn an_expired_approval_is_refused_even_mid_repair() {
    let mut c = lost_seat_three(3);
    approve(&c, W, 3, &[1, 2]);
    let session = session(&c, W, 3, &[1, 2], 1);
    message(
        &mut c,
        3,
        RepairRequest::Join {
            session: session.clone(),
        },
    )
    .unwrap();
    let opened: Vec<_> = [1, 2]
        .iter()
        .map(|h| {
            message(
                &mut c,
                *h,
                RepairRequest::Open {
                    session: session.clone(),
                },
            )
            .unwrap()
        })
        .collect();
    c.advance(APPROVAL);
    let err = message(
        &mut c,
        1,
        RepairRequest::Deal {
            session: session.clone(),
            opened,
        },
    )
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::RepairNotApproved);
    assert_eq!(state(&c, 3), WalletStateKind::DkgPending);
}

/// Helper 1 hands helper 2 a delta that is not the one it committed to:
/// helper 2 refuses to sum and names helper 1.
#[test]
fn a_helper_that_deals_a_wrong_delta_is_named_by_the_helper_it_lied_to() {
    let mut c = lost_seat_three(4);
    approve(&c, W, 3, &[1, 2]);
    let session = session(&c, W, 3, &[1, 2], 1);
    // Helper 2's per-session key, as its `Opened` shows it (a repeated
    // open of the same session answers the same message).
    let opened = message(
        &mut c,
        2,
        RepairRequest::Open {
            session: session.clone(),
        },
    )
    .unwrap();
    let RepairPayload::Opened {
        hpke_key: key_of_2, ..
    } = opened.payload
    else {
        panic!("not an Opened message");
    };
    let bad = sealed(&mut c, &session, 1, 2, &key_of_2, &bogus_value(9));
    let err = through_sum(&mut c, &session, |dealt| {
        let RepairPayload::Dealt {
            commitments,
            mut sealed,
            opened,
        } = dealt[0].payload.clone()
        else {
            panic!("not a Dealt message");
        };
        sealed.iter_mut().find(|(to, _)| *to == seat(2)).unwrap().1 = bad;
        dealt[0] = resigned(
            &dealt[0],
            RepairPayload::Dealt {
                commitments,
                sealed,
                opened,
            },
        );
    })
    .unwrap_err();
    assert_eq!(err.0, 2, "{err:?}");
    assert!(
        matches!(
            err.1,
            Error::RepairFailed { accused: Some(s), fault: RepairFault::BadDelta, .. } if s == seat(1)
        ),
        "{err:?}"
    );
    assert_eq!(state(&c, 3), WalletStateKind::DkgPending);
}

/// Helper 2 sends the repaired member a sigma that is not the sum of the
/// deltas committed to it: the repaired member names it and stores nothing.
#[test]
fn a_helper_that_sends_a_wrong_sigma_is_named_and_nothing_is_stored() {
    let mut c = lost_seat_three(5);
    approve(&c, W, 3, &[1, 2]);
    let session = session(&c, W, 3, &[1, 2], 1);
    let mut relayed = through_sum(&mut c, &session, |_| {}).unwrap();
    let RepairPayload::Joined { hpke_key } = relayed.joined.payload.clone() else {
        panic!("not a Joined message");
    };
    let RepairPayload::Summed {
        commitments,
        joined,
        ..
    } = relayed.summed[1].payload.clone()
    else {
        panic!("not a Summed message");
    };
    let bad = sealed(&mut c, &session, 2, 3, &hpke_key, &bogus_value(5));
    relayed.summed[1] = resigned(
        &relayed.summed[1],
        RepairPayload::Summed {
            sealed: bad,
            commitments,
            joined,
        },
    );
    let err = finish(&mut c, &session, &relayed).unwrap_err();
    assert!(
        matches!(
            err,
            Error::RepairFailed { accused: Some(s), fault: RepairFault::BadSigma, .. } if s == seat(2)
        ),
        "{err:?}"
    );
    assert_eq!(err.code(), ErrorCode::RepairFailed);
    assert_eq!(state(&c, 3), WalletStateKind::DkgPending);
    c.sign(W, &[1, 2], &digest(2));
}

/// Helpers that sign different wallet keys are refused by the repaired
/// member: it has no key on record and takes one only if every helper
/// signs the same.
#[test]
fn helpers_that_sign_different_wallet_keys_are_refused() {
    let mut c = lost_seat_three(6);
    approve(&c, W, 3, &[1, 2]);
    let session = session(&c, W, 3, &[1, 2], 1);
    let mut relayed = through_sum(&mut c, &session, |_| {}).unwrap();
    let RepairPayload::Opened { hpke_key, .. } = relayed.opened[1].payload.clone() else {
        panic!("not an Opened message");
    };
    relayed.opened[1] = resigned(
        &relayed.opened[1],
        RepairPayload::Opened {
            hpke_key,
            wallet_key: HexBytes(vec![1; 8]),
        },
    );
    let err = finish(&mut c, &session, &relayed).unwrap_err();
    assert!(
        matches!(
            err,
            Error::RepairFailed {
                fault: RepairFault::WalletKeyDisagrees,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(state(&c, 3), WalletStateKind::DkgPending);
}

/// The coordinator opens a repair with helpers {1, 2} and then asks helper
/// 1 to deal for {1, 3}, or for another lost seat: refused, nothing dealt.
#[test]
fn a_coordinator_that_changes_the_helper_set_or_lost_seat_between_steps_is_refused() {
    let mut c = Cluster::new(7, 2, 4, &[W], small_limits());
    c.lose_disk(4);
    approve(&c, W, 4, &[1, 2, 3]);
    approve(&c, W, 2, &[1, 3]);
    let first = session(&c, W, 4, &[1, 2], 1);
    let opened: Vec<_> = [1, 2]
        .iter()
        .map(|h| {
            message(
                &mut c,
                *h,
                RepairRequest::Open {
                    session: first.clone(),
                },
            )
            .unwrap()
        })
        .collect();
    let mut other_helpers = first.clone();
    other_helpers.helpers = vec![seat(1), seat(3)];
    let mut other_lost = first.clone();
    other_lost.lost = seat(2);
    other_lost.helpers = vec![seat(1), seat(3)];
    for changed in [other_helpers, other_lost] {
        let err = message(
            &mut c,
            1,
            RepairRequest::Deal {
                session: changed,
                opened: opened.clone(),
            },
        )
        .unwrap_err();
        assert_eq!(err.code(), ErrorCode::RepairNotInPhase, "{err:?}");
    }
    // The messages of the first session in a deal of another are refused
    // as well: each is signed over its own session.
    let mut relabelled = first.clone();
    relabelled.nonce = [2; 32];
    message(
        &mut c,
        1,
        RepairRequest::Open {
            session: relabelled.clone(),
        },
    )
    .unwrap();
    let err = message(
        &mut c,
        1,
        RepairRequest::Deal {
            session: relabelled,
            opened,
        },
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::RepairFailed {
                accused: None,
                fault: RepairFault::BadSignature,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_member_that_holds_its_key_refuses_to_be_repaired() {
    let mut c = Cluster::new(8, 2, 3, &[W], small_limits());
    approve(&c, W, 3, &[1, 2]);
    let session = session(&c, W, 3, &[1, 2], 1);
    let (refuser, err) = run(&mut c, &session).unwrap_err();
    assert_eq!(refuser, 3);
    assert!(matches!(err, Error::RepairOfKeyedMember { .. }), "{err:?}");
}

#[test]
fn a_session_with_too_few_or_unordered_helpers_is_malformed() {
    let mut c = lost_seat_three(9);
    approve(&c, W, 3, &[1, 2]);
    for helpers in [&[1][..], &[2, 1], &[1, 3], &[1, 1]] {
        let bad = session(&c, W, 3, helpers, 1);
        let err = message(&mut c, 1, RepairRequest::Open { session: bad }).unwrap_err();
        assert_eq!(
            err.code(),
            ErrorCode::InvalidRequest,
            "{helpers:?}: {err:?}"
        );
    }
}

/// One repair's messages so far, step by step.
#[derive(Default)]
struct Partial {
    joined: Option<SignedRepairMessage>,
    opened: Vec<SignedRepairMessage>,
    dealt: Vec<SignedRepairMessage>,
    summed: Vec<SignedRepairMessage>,
}

/// Step `n` of `s` (1 join and open, 2 deal, 3 sum, 4 finish) for every
/// member it concerns, with the messages of the steps before.
#[allow(
    clippy::result_large_err,
    reason = "a test helper: the refusal is inspected at once"
)]
fn step_n(c: &mut Cluster, s: &RepairSession, p: &mut Partial, n: u8) -> Result<(), Error> {
    let helpers: Vec<u16> = s.helpers.iter().map(|h| h.get()).collect();
    let session = s.clone();
    match n {
        1 => {
            p.joined = Some(message(c, 3, RepairRequest::Join { session })?);
            for h in helpers {
                p.opened.push(open(c, h, s)?);
            }
        }
        2 => {
            for h in helpers {
                let opened = p.opened.clone();
                let session = session.clone();
                p.dealt
                    .push(message(c, h, RepairRequest::Deal { session, opened })?);
            }
        }
        3 => {
            for h in helpers {
                let request = RepairRequest::Sum {
                    session: session.clone(),
                    joined: p.joined.clone().unwrap(),
                    dealt: p.dealt.clone(),
                };
                p.summed.push(message(c, h, request)?);
            }
        }
        _ => {
            let request = RepairRequest::Finish {
                session,
                opened: p.opened.clone(),
                dealt: p.dealt.clone(),
                summed: p.summed.clone(),
            };
            step(c, 3, request)?;
        }
    }
    Ok(())
}

#[allow(
    clippy::result_large_err,
    reason = "a test helper: the refusal is inspected at once"
)]
fn open(c: &mut Cluster, to: u16, s: &RepairSession) -> Result<SignedRepairMessage, Error> {
    message(c, to, RepairRequest::Open { session: s.clone() })
}

/// A restart of the member being repaired, or of a helper, between any two
/// steps drops the repair (its per-session keys were in memory only): the
/// next step that needs the restarted member is refused, nothing was
/// stored, and a new repair completes. Only a helper restarting after its
/// sum changes nothing: the finish needs no more of it.
#[test]
fn a_restart_between_any_two_steps_leaves_every_member_as_it_was() {
    let cases = [(1, 3), (1, 1), (2, 3), (2, 2), (3, 3), (3, 1)];
    for (i, (boundary, restarted)) in (0u64..).zip(cases) {
        let mut c = lost_seat_three(40 + i);
        approve(&c, W, 3, &[1, 2]);
        let s = session(&c, W, 3, &[1, 2], 1);
        let mut p = Partial::default();
        for n in 1..=boundary {
            step_n(&mut c, &s, &mut p, n).unwrap();
        }
        c.restart(restarted);
        // Approvals are memory only: the restarted helper's operator
        // approves again.
        approve(&c, W, 3, &[1, 2]);
        let rest = (boundary + 1..=4).try_for_each(|n| step_n(&mut c, &s, &mut p, n));
        let case = format!("boundary {boundary}, seat {restarted} restarted");
        if (boundary, restarted) == (3, 1) {
            rest.unwrap();
            c.sign(W, &[1, 3], &digest(3));
            continue;
        }
        let err = rest.unwrap_err();
        assert_eq!(err.code(), ErrorCode::RepairNotInPhase, "{case}: {err:?}");
        assert_eq!(state(&c, 3), WalletStateKind::DkgPending, "{case}");
        c.sign(W, &[1, 2], &digest(4));
        approve(&c, W, 3, &[1, 2]);
        let again = session(&c, W, 3, &[1, 2], 2);
        run(&mut c, &again).unwrap();
        c.sign(W, &[2, 3], &digest(5));
    }
}

fn accused(err: &Error) -> Option<Seat> {
    match err {
        Error::RepairFailed { accused, .. } => *accused,
        _ => None,
    }
}

/// The coordinator makes helper 2 open the session twice (another session
/// in between replaced it), so helper 2 holds a key other than the one
/// helper 1 sealed to. Helper 2 cannot tell a bad seal from a seal to its
/// old key by the seal alone: it must not accuse honest helper 1.
#[test]
fn a_helper_that_reopened_the_session_accuses_no_honest_helper() {
    let (mut c, s, other) = approved_pair(20);
    let first = open(&mut c, 2, &s).unwrap();
    open(&mut c, 2, &other).unwrap();
    let second = open(&mut c, 2, &s).unwrap();
    let mine = open(&mut c, 1, &s).unwrap();
    let joined = message(&mut c, 3, RepairRequest::Join { session: s.clone() }).unwrap();
    let deal = |opened: SignedRepairMessage| RepairRequest::Deal {
        session: s.clone(),
        opened: vec![mine.clone(), opened],
    };
    // Helper 2 refuses to deal over a list that holds its old `Opened`:
    // seals to that key would not open at its sum.
    let err = message(&mut c, 2, deal(first.clone())).unwrap_err();
    assert!(
        matches!(
            err,
            Error::RepairFailed {
                accused: None,
                fault: RepairFault::InputsDisagree,
                ..
            }
        ),
        "{err:?}"
    );
    let d1 = message(&mut c, 1, deal(first)).unwrap();
    let d2 = match message(&mut c, 2, deal(second)) {
        Ok(d2) => d2,
        Err(err) => {
            // Refusing to deal over a list that is not what it holds is
            // fine too, as long as no one is accused.
            assert_eq!(accused(&err), None, "{err:?}");
            return;
        }
    };
    let sum = message(
        &mut c,
        2,
        RepairRequest::Sum {
            session: s.clone(),
            joined,
            dealt: vec![d1, d2],
        },
    );
    if let Err(err) = sum {
        assert_eq!(accused(&err), None, "{err:?}");
    }
    assert_eq!(state(&c, 3), WalletStateKind::DkgPending);
}

/// The same at the member being repaired: it joined the session twice, the
/// helpers sealed their sigmas to its first key; its finish must not accuse
/// an honest helper.
#[test]
fn a_repaired_member_that_rejoined_the_session_accuses_no_honest_helper() {
    let (mut c, s, other) = approved_pair(21);
    let relayed = through_sum(&mut c, &s, |_| {}).unwrap();
    for again in [&other, &s] {
        message(
            &mut c,
            3,
            RepairRequest::Join {
                session: again.clone(),
            },
        )
        .unwrap();
    }
    let err = finish(&mut c, &s, &relayed).unwrap_err();
    assert_eq!(accused(&err), None, "{err:?}");
    assert_eq!(state(&c, 3), WalletStateKind::DkgPending);
}

/// Another member cannot reset a repair it did not start: its join or
/// open of another session is refused as busy, and the running repair
/// finishes. A helper whose part is done (it summed) is held no longer.
#[test]
fn a_second_coordinator_cannot_reset_a_running_repair() {
    let (mut c, s, other) = approved_pair(22);
    let mut p = Partial::default();
    for n in 1..=2 {
        step_n(&mut c, &s, &mut p, n).unwrap();
    }
    let join = RepairRequest::Join {
        session: other.clone(),
    };
    let open = RepairRequest::Open {
        session: other.clone(),
    };
    for (to, request) in [(3, join), (1, open.clone())] {
        let err = step_as(&mut c, 2, to, request).unwrap_err();
        assert_eq!(err.code(), ErrorCode::RepairBusy, "{err:?}");
        assert_eq!(err.code().recovery(), Recovery::Retryable, "{err:?}");
    }
    for n in 3..=4 {
        step_n(&mut c, &s, &mut p, n).unwrap();
    }
    assert_eq!(state(&c, 3), WalletStateKind::Active);
    // Helper 1 summed: another member's repair may use it at once (with
    // its operator's new approval; the sum used the old one up).
    approve(&c, W, 3, &[1]);
    step_as(&mut c, 2, 1, open).unwrap();
}

/// The busy refusal lasts only while the session lives: after its ttl
/// another member's repair starts.
#[test]
fn an_expired_repair_no_longer_holds_the_member() {
    let (mut c, s, _) = approved_pair(23);
    through_sum(&mut c, &s, |_| {}).unwrap();
    c.advance(small_limits().dkg_session_ttl);
    let mut other = s.clone();
    other.nonce = [2; 32];
    step_as(&mut c, 2, 3, RepairRequest::Join { session: other }).unwrap();
}

/// A lost reply to the finish: its retry answers `Repaired` again rather
/// than a conflict, and nothing changes.
#[test]
fn a_retried_finish_answers_repaired_again() {
    let (mut c, s, _) = approved_pair(24);
    let relayed = through_sum(&mut c, &s, |_| {}).unwrap();
    let first = finish(&mut c, &s, &relayed).unwrap();
    let again = finish(&mut c, &s, &relayed).unwrap();
    assert_eq!(first, again);
    c.sign(W, &[1, 3], &digest(9));
}

/// Helper 2 signs a second `Dealt` over the same `Opened` list with other
/// contents (as it would to hand helper 1 other commitments). Relayed side
/// by side, the two signed messages prove it: the finish names helper 2.
#[test]
fn a_helper_that_signs_two_deals_over_one_opened_list_is_named() {
    let (mut c, s, _) = approved_pair(25);
    let mut relayed = through_sum(&mut c, &s, |_| {}).unwrap();
    let RepairPayload::Dealt {
        commitments: theirs,
        ..
    } = relayed.dealt[0].payload.clone()
    else {
        panic!("not a Dealt message");
    };
    let RepairPayload::Dealt { sealed, opened, .. } = relayed.dealt[1].payload.clone() else {
        panic!("not a Dealt message");
    };
    let second = resigned(
        &relayed.dealt[1],
        RepairPayload::Dealt {
            commitments: theirs,
            sealed,
            opened,
        },
    );
    relayed.dealt.push(second);
    let err = finish(&mut c, &s, &relayed).unwrap_err();
    assert!(
        matches!(
            err,
            Error::RepairFailed { accused: Some(a), fault: RepairFault::Equivocation, .. } if a == seat(2)
        ),
        "{err:?}"
    );
    assert_eq!(state(&c, 3), WalletStateKind::DkgPending);
}

/// A helper whose wallet is being rekeyed will not help again: its refusal
/// is terminal (`rekey_in_progress`), not the retryable "not active yet".
#[test]
fn a_rekeying_helper_refuses_for_good() {
    let specs = [
        Spec::new(W, Keys::Dkg(ScriptTree::KeyPathOnly)).successor("next"),
        Spec::new("next", Keys::Dkg(ScriptTree::KeyPathOnly)),
    ];
    let mut c = Cluster::with_wallets(26, 2, 3, &specs, small_limits());
    c.lose_disk(3);
    c.member(2).signer().begin_rekey(&wid(W)).unwrap();
    approve(&c, W, 3, &[1, 2]);
    let s = session(&c, W, 3, &[1, 2], 1);
    let err = message(&mut c, 2, RepairRequest::Open { session: s }).unwrap_err();
    assert_eq!(err.code(), ErrorCode::RekeyInProgress, "{err:?}");
    assert_eq!(err.recovery(), Recovery::Terminal, "{err:?}");
}

/// An approval covers one repair: once the helper has summed (its part is
/// done) it is used up, and a later repair of the seat needs a new one. A
/// lost reply to the sum is still answered again.
#[test]
fn an_approval_is_used_up_by_the_helpers_sum() {
    let (mut c, s, _) = approved_pair(27);
    let relayed = through_sum(&mut c, &s, |_| {}).unwrap();
    let again = message(
        &mut c,
        1,
        RepairRequest::Sum {
            session: s.clone(),
            joined: relayed.joined.clone(),
            dealt: relayed.dealt.clone(),
        },
    )
    .unwrap();
    assert_eq!(again, relayed.summed[0]);
    finish(&mut c, &s, &relayed).unwrap();
    c.lose_disk(3);
    let next = session(&c, W, 3, &[1, 2], 2);
    let (refuser, err) = run(&mut c, &next).unwrap_err();
    assert_eq!(refuser, 1);
    assert_eq!(err.code(), ErrorCode::RepairNotApproved, "{err:?}");
    approve(&c, W, 3, &[1, 2]);
    run(&mut c, &next).unwrap();
}

/// A member that holds the wallet's key, in whatever state, is refused a
/// repair with words about a repair (not a DKG), naming its state.
#[test]
fn a_keyed_member_refuses_a_repair_in_words_about_repair() {
    let specs = [
        Spec::new(W, Keys::Dkg(ScriptTree::KeyPathOnly)).successor("next"),
        Spec::new("next", Keys::Dkg(ScriptTree::KeyPathOnly)),
    ];
    let mut c = Cluster::with_wallets(28, 2, 3, &specs, small_limits());
    c.member(2).signer().begin_rekey(&wid(W)).unwrap();
    let s = session(&c, W, 3, &[1, 2], 1);
    for (member, state) in [(3, "active"), (2, "rekeying")] {
        let mut asked = s.clone();
        asked.lost = seat(member);
        asked.helpers = vec![seat(1), seat(5 - member)];
        let err = message(&mut c, member, RepairRequest::Join { session: asked }).unwrap_err();
        assert_eq!(err.code(), ErrorCode::SessionConflict, "{err:?}");
        let text = err.to_string();
        assert!(!text.contains("DKG"), "{text}");
        assert!(text.contains("repair") && text.contains(state), "{text}");
    }
}

/// The finish's commit is durable but reported failed: the member finds
/// its share stored, is active at once, and its retry answers `Repaired`.
#[test]
fn a_finish_whose_commit_was_durable_but_reported_failed_is_adopted() {
    let (mut c, s, _) = approved_pair(29);
    let relayed = through_sum(&mut c, &s, |_| {}).unwrap();
    c.member(3).store().fail_next_commit(Fault::Ambiguous);
    let first = finish(&mut c, &s, &relayed);
    assert!(
        matches!(first, Ok(RepairResponse::Repaired { .. })),
        "{first:?}"
    );
    assert_eq!(state(&c, 3), WalletStateKind::Active);
    assert!(matches!(
        finish(&mut c, &s, &relayed),
        Ok(RepairResponse::Repaired { .. })
    ));
    c.sign(W, &[1, 3], &digest(10));
}

/// A commit that was lost is reported as the store's error, retryable by
/// the same finish: nothing was stored, and the retry stores it.
#[test]
fn a_finish_whose_commit_was_lost_is_retried() {
    let (mut c, s, _) = approved_pair(30);
    let relayed = through_sum(&mut c, &s, |_| {}).unwrap();
    c.member(3).store().fail_next_commit(Fault::Lost);
    let err = finish(&mut c, &s, &relayed).unwrap_err();
    assert_eq!(err.code(), ErrorCode::StorageUnavailable, "{err:?}");
    assert_eq!(state(&c, 3), WalletStateKind::DkgPending);
    finish(&mut c, &s, &relayed).unwrap();
    c.sign(W, &[1, 3], &digest(11));
}
