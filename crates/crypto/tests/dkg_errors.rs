//! Every way a peer's DKG package can be wrong gets its own typed error,
//! naming the culprit where there is one.

mod common;

use common::*;
use thresig_crypto::*;

type Started = Vec<(DkgRound1, Round1Package)>;

fn start(t: u16, n: u16, seed: u64) -> Started {
    let rng = &mut rng(seed);
    let params = GroupParams::new(t, n).unwrap();
    params
        .seats()
        .map(|s| DkgRound1::start(params, s, ScriptTree::KeyPathOnly, rng).unwrap())
        .collect()
}

/// Seat 1's state and the round-1 packages of seats 2 and 3 (of a 2-of-3 run).
fn member_one(seed: u64) -> (DkgRound1, Round1Package, Round1Package) {
    let mut started = start(2, 3, seed).into_iter();
    let (one, _) = started.next().unwrap();
    let (_, two) = started.next().unwrap();
    let (_, three) = started.next().unwrap();
    (one, two, three)
}

fn receive_err(state: DkgRound1, packages: Vec<(Seat, Round1Package)>) -> Error {
    state.receive(packages).map(|_| ()).unwrap_err()
}

#[test]
fn round1_sender_errors() {
    let (one, two, three) = member_one(1);
    let err = receive_err(one, vec![(seat(2), two.clone())]);
    assert!(
        matches!(
            err,
            Error::WrongPackageCount {
                expected: 2,
                got: 1
            }
        ),
        "{err:?}"
    );

    let (one, _, _) = member_one(1);
    let err = receive_err(one, vec![(seat(2), two.clone()), (seat(2), three.clone())]);
    assert!(
        matches!(err, Error::DuplicateSender { seat } if seat == common::seat(2)),
        "{err:?}"
    );

    let (one, _, _) = member_one(1);
    let err = receive_err(one, vec![(seat(2), two.clone()), (seat(9), three.clone())]);
    assert!(
        matches!(err, Error::UnknownSender { seat } if seat == common::seat(9)),
        "{err:?}"
    );

    let (one, _, _) = member_one(1);
    let err = receive_err(one, vec![(seat(1), two.clone()), (seat(3), three.clone())]);
    assert!(matches!(err, Error::OwnPackageEchoed), "{err:?}");
}

#[test]
fn bad_proof_of_knowledge_names_its_sender() {
    // Seat 3's package presented as seat 2's: its proof binds identifier 3.
    let (one, _, three) = member_one(2);
    let err = receive_err(one, vec![(seat(2), three.clone()), (seat(3), three)]);
    assert!(
        matches!(err, Error::BadProofOfKnowledge { culprit } if culprit == seat(2)),
        "{err:?}"
    );
    assert_eq!(err.culprits(), vec![seat(2)]);
}

#[test]
fn wrong_threshold_commitment_names_its_sender() {
    let (one, _, three) = member_one(3);
    let (_, two_of_other_threshold) = start(3, 3, 4).into_iter().nth(1).unwrap();
    let err = receive_err(
        one,
        vec![(seat(2), two_of_other_threshold), (seat(3), three)],
    );
    assert!(
        matches!(err, Error::WrongCommitmentLength { culprit } if culprit == seat(2)),
        "{err:?}"
    );
}

#[test]
fn bad_share_names_its_sender() {
    let (states, mut sent) = part2_all(start(2, 3, 5));
    let for_one: Vec<_> = [2, 3]
        .map(|from| (seat(from), sent.remove(&(seat(from), seat(1))).unwrap()))
        .into();
    let one = states.into_iter().next().unwrap();
    assert_eq!(one.seat(), seat(1));
    // Seat 3's share for seat 1 arrives claiming to come from seat 2, and vice versa.
    let swapped: Vec<_> = for_one
        .into_iter()
        .map(|(from, p)| (if from == seat(2) { seat(3) } else { seat(2) }, p))
        .collect();
    let err = one.finish(swapped).map(|_| ()).unwrap_err();
    assert!(
        matches!(err, Error::BadShare { culprit } if culprit == seat(2) || culprit == seat(3)),
        "{err:?}"
    );
}

#[test]
fn refresh_refuses_to_drop_below_threshold_or_to_run_a_removed_member() {
    let rng = &mut rng(6);
    let (shares, wallet) = dkg(2, 3, ScriptTree::KeyPathOnly, rng);
    let err = DkgRound1::refresh(&shares[&seat(1)], &wallet, &[seat(1)], rng)
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(err, Error::UnknownSeat { .. }), "{err:?}");
    let err = DkgRound1::refresh(&shares[&seat(1)], &wallet, &[seat(2), seat(3)], rng)
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(err, Error::InvalidParams { .. }), "{err:?}");
}

#[test]
fn refresh_with_an_explicit_removal_keeps_the_key() {
    let rng = &mut rng(7);
    let (shares, wallet) = dkg(2, 4, ScriptTree::KeyPathOnly, rng);
    let removed = [seat(4)];
    let started = shares
        .values()
        .filter(|s| s.seat() != seat(4))
        .map(|s| DkgRound1::refresh(s, &wallet, &removed, rng).unwrap())
        .collect();
    let (new, refreshed) = run_in_process(started).unwrap();
    assert_eq!(refreshed.output_key(), wallet.output_key());
    assert_eq!(refreshed.members(), seats(&[1, 2, 3]));
    sign_all(&new, &refreshed, &seats(&[1, 3]), &[1; 32], rng);
    assert!(shares[&seat(4)].check_wallet(&refreshed).is_err());
}

/// DESIGN.md §4 (a DKG that fails names the accused): a bad share in a refresh
/// must name its sender, as it does in a fresh DKG.
/// At t = 2 a refresh commitment is one point, at t = 3 two.
#[test]
fn refresh_bad_share_names_its_sender() {
    for (t, n) in [(2, 3), (3, 4)] {
        let rng = &mut rng(103);
        let (shares, wallet) = dkg(t, n, ScriptTree::KeyPathOnly, rng);
        let started: Vec<_> = shares
            .values()
            .map(|s| DkgRound1::refresh(s, &wallet, &[], rng).unwrap())
            .collect();
        let (states, mut sent) = part2_all(started);
        // Seat 2 checks; seat n, checked last, sends it the share it
        // computed for seat 1. The others' shares must pass, so a wrong
        // evaluation (at 2, where the coefficients' order counts) names
        // the wrong member.
        let two = states.into_iter().nth(1).unwrap();
        assert_eq!(two.seat(), seat(2));
        let packages = (1..=n)
            .filter(|from| *from != 2)
            .map(|from| {
                let to = if from == n { 1 } else { 2 };
                (seat(from), sent.remove(&(seat(from), seat(to))).unwrap())
            })
            .collect();
        let err = two.finish(packages).map(|_| ()).unwrap_err();
        assert!(
            matches!(err, Error::BadShare { culprit } if culprit == seat(n)),
            "{t}-of-{n} refresh did not blame seat {n}: {err:?} (culprits {:?})",
            err.culprits()
        );
    }
}

#[test]
fn one_invalid_share_among_many_is_named() {
    // A 3-of-6 run: seat 1 checks five shares as one batch; seat 5's is
    // the one seat 5 made for seat 2, so only seat 5 is to blame.
    let (states, mut sent) = part2_all(start(3, 6, 6));
    let mut for_one: Vec<_> = (2..=6)
        .map(|from| (seat(from), sent.remove(&(seat(from), seat(1))).unwrap()))
        .collect();
    for_one[3] = (seat(5), sent.remove(&(seat(5), seat(2))).unwrap());
    let one = states.into_iter().next().unwrap();
    let err = one.finish(for_one).map(|_| ()).unwrap_err();
    assert!(
        matches!(err, Error::BadShare { culprit } if culprit == seat(5)),
        "{err:?}"
    );
    assert_eq!(err.culprits(), vec![seat(5)]);
}

/// `verify_round2_share` (what a DKG blame proof relies on) accepts every
/// honest share of a fresh DKG and of a refresh under its own kind, and
/// refuses a share sent to another seat, and an honest share checked as
/// the other kind (a refresh's commitments leave out the constant term).
#[test]
fn a_round2_share_verifies_only_for_its_recipient_under_its_own_kind() {
    let rng = &mut rng(104);
    let fresh = start(2, 3, 105);
    let round1: Vec<_> = fresh.iter().map(|(s, p)| (s.seat(), p.clone())).collect();
    let (_, sent) = part2_all(fresh);
    let (shares, wallet) = dkg(2, 3, ScriptTree::KeyPathOnly, rng);
    let refreshing: Vec<_> = shares
        .values()
        .map(|s| DkgRound1::refresh(s, &wallet, &[], rng).unwrap())
        .collect();
    let refresh1: Vec<_> = refreshing
        .iter()
        .map(|(s, p)| (s.seat(), p.clone()))
        .collect();
    let (_, refreshed) = part2_all(refreshing);
    for (kind, other, round1, sent) in [
        (ShareKind::Fresh, ShareKind::Refresh, &round1, &sent),
        (ShareKind::Refresh, ShareKind::Fresh, &refresh1, &refreshed),
    ] {
        for ((from, to), package) in sent {
            let commitments = &round1.iter().find(|(s, _)| s == from).unwrap().1;
            verify_round2_share(kind, (*from, commitments), *to, package).unwrap();
            let elsewhere = seats(&[1, 2, 3])
                .into_iter()
                .find(|s| s != from && s != to)
                .unwrap();
            // At seat 1 (x = 1) both readings sum the same points, so the
            // wrong kind is shown at the other seats.
            let wrong_kind = (to.get() != 1).then_some((other, *to));
            for (kind, to) in std::iter::once((kind, elsewhere)).chain(wrong_kind) {
                let err = verify_round2_share(kind, (*from, commitments), to, package);
                assert!(
                    matches!(err, Err(Error::BadShare { culprit }) if culprit == *from),
                    "{kind:?} {from}->{to}: {err:?}"
                );
            }
        }
    }
}

/// `check_round1_package` (what a DKG round-1 blame proof relies on)
/// passes every honest round-1 package of a fresh DKG and of a refresh
/// under its own kind and threshold, and fails one checked as another
/// seat's (the proof of knowledge binds the sender), as the other kind (a
/// refresh's carries one commitment fewer), at another threshold, or cut
/// short; part 2 refuses each of those too.
#[test]
fn a_round1_package_passes_only_as_its_own_kind_threshold_and_sender() {
    let rng = &mut rng(106);
    let fresh = start(2, 3, 107);
    let (shares, wallet) = dkg(2, 3, ScriptTree::KeyPathOnly, rng);
    let refreshing: Vec<_> = shares
        .values()
        .map(|s| DkgRound1::refresh(s, &wallet, &[], rng).unwrap())
        .collect();
    for (kind, other, started) in [
        (ShareKind::Fresh, ShareKind::Refresh, &fresh),
        (ShareKind::Refresh, ShareKind::Fresh, &refreshing),
    ] {
        for (state, package) in started {
            let (from, bytes) = (state.seat(), package.to_bytes().unwrap());
            assert_eq!(check_round1_package(kind, 2, from, &bytes), Ok(()));
            assert_eq!(
                check_round1_package(other, 2, from, &bytes),
                Err(Round1Fault::WrongCommitmentLength)
            );
            assert_eq!(
                check_round1_package(kind, 3, from, &bytes),
                Err(Round1Fault::WrongCommitmentLength)
            );
            assert_eq!(
                check_round1_package(kind, 2, from, &bytes[..bytes.len() - 1]),
                Err(Round1Fault::Undecodable)
            );
            let elsewhere = if from == seat(1) { seat(2) } else { seat(1) };
            let as_other_seat = check_round1_package(kind, 2, elsewhere, &bytes);
            let expected = match kind {
                ShareKind::Fresh => Err(Round1Fault::BadProofOfKnowledge),
                _ => Ok(()),
            };
            assert_eq!(as_other_seat, expected, "{kind:?} {from}");
        }
    }
    // Part 2 refuses seat 2's package sent as seat 3's: the same check.
    let (one, two, _) = member_one(108);
    let err = receive_err(one, vec![(seat(2), two.clone()), (seat(3), two)]);
    assert!(
        matches!(err, Error::BadProofOfKnowledge { culprit } if culprit == seat(3)),
        "{err:?}"
    );
}
