//! Share refresh: the transcript digest catches what the keys cannot show
//! (round-1 equivocation, different removal sets), and the removal set is
//! checked against the wallet.

mod common;

use std::collections::BTreeMap;

use common::*;
use thresig_crypto::*;

/// Part 2 of `state` given the round-1 packages of `peers`.
fn part2(
    state: DkgRound1,
    peers: &[(Seat, &Round1Package)],
) -> (DkgRound2, BTreeMap<Seat, Round2Package>) {
    let peers = peers.iter().map(|(s, p)| (*s, (*p).clone())).collect();
    let (state, out) = state.receive(peers).unwrap();
    (state, out.into_iter().collect())
}

/// Seat 3 of a 2-of-3 refresh shows one round-1 package to seat 1 and
/// another to seat 2, and sends each the round-2 share that fits what it
/// saw. Both honest members finish without error and with the wallet's
/// output key (the attack is invisible in the keys); only their transcript
/// digests tell them apart.
#[test]
fn equivocated_round1_packages_give_honest_members_different_transcripts() {
    let rng = &mut rng(301);
    let (shares, wallet) = dkg(2, 3, ScriptTree::KeyPathOnly, rng);
    let start =
        |n: u16, rng: &mut _| DkgRound1::refresh(&shares[&seat(n)], &wallet, &[], rng).unwrap();
    let (one, p1) = start(1, rng);
    let (two, p2) = start(2, rng);
    let (three_a, p3a) = start(3, rng);
    let (three_b, p3b) = start(3, rng);
    assert_ne!(p3a, p3b);

    let (one, mut from1) = part2(one, &[(seat(2), &p2), (seat(3), &p3a)]);
    let (two, mut from2) = part2(two, &[(seat(1), &p1), (seat(3), &p3b)]);
    let (_, mut from3a) = part2(three_a, &[(seat(1), &p1), (seat(2), &p2)]);
    let (_, mut from3b) = part2(three_b, &[(seat(1), &p1), (seat(2), &p2)]);
    drop(from1.remove(&seat(3)));
    drop(from2.remove(&seat(3)));

    let one = one
        .finish(vec![
            (seat(2), from2.remove(&seat(1)).unwrap()),
            (seat(3), from3a.remove(&seat(1)).unwrap()),
        ])
        .unwrap();
    let two = two
        .finish(vec![
            (seat(1), from1.remove(&seat(2)).unwrap()),
            (seat(3), from3b.remove(&seat(2)).unwrap()),
        ])
        .unwrap();
    assert_eq!(one.wallet().output_key(), wallet.output_key());
    assert_eq!(two.wallet().output_key(), wallet.output_key());
    assert_ne!(
        one.transcript(),
        two.transcript(),
        "an equivocated round 1 must show in the transcript"
    );
}

/// An honest refresh ends with one transcript on every member (the
/// in-process runner refuses disagreement), and it is not the one of a
/// refresh of the same wallet with other packages.
#[test]
fn an_honest_refresh_agrees_on_its_transcript() {
    let rng = &mut rng(302);
    let (shares, wallet) = dkg(2, 3, ScriptTree::KeyPathOnly, rng);
    let transcripts: Vec<[u8; 32]> = {
        let started: Vec<_> = shares
            .values()
            .map(|s| DkgRound1::refresh(s, &wallet, &[], rng).unwrap())
            .collect();
        let (states, mut sent) = part2_all(started);
        states
            .into_iter()
            .map(|state| {
                let me = state.seat();
                let inbox: Vec<_> = seats(&[1, 2, 3])
                    .into_iter()
                    .filter(|s| *s != me)
                    .map(|s| (s, sent.remove(&(s, me)).unwrap()))
                    .collect();
                state.finish(inbox).unwrap().transcript()
            })
            .collect()
    };
    assert!(transcripts.windows(2).all(|w| w[0] == w[1]));
    let started = shares
        .values()
        .map(|s| DkgRound1::refresh(s, &wallet, &[], rng).unwrap())
        .collect();
    let (_, again) = run_in_process(started).unwrap();
    assert_eq!(again.output_key(), wallet.output_key());
}

/// 2-of-4, seats {1, 2} told to remove {3, 4} and seats {3, 4} told to
/// remove {1, 2}: each half completes a valid sharing of the same key, but
/// the removal set is bound into the transcript, so the halves' digests
/// differ and no confirmation of one half matches the other.
#[test]
fn members_told_different_removal_sets_end_with_different_transcripts() {
    let rng = &mut rng(303);
    let (shares, wallet) = dkg(2, 4, ScriptTree::KeyPathOnly, rng);
    let half = |keep: [u16; 2], removed: [u16; 2], rng: &mut _| {
        let started: Vec<_> = keep
            .iter()
            .map(|n| {
                DkgRound1::refresh(&shares[&seat(*n)], &wallet, &seats(&removed), rng).unwrap()
            })
            .collect();
        let (states, mut sent) = part2_all(started);
        let outputs: Vec<DkgOutput> = states
            .into_iter()
            .map(|state| {
                let me = state.seat();
                let inbox: Vec<_> = seats(&keep)
                    .into_iter()
                    .filter(|s| *s != me)
                    .map(|s| (s, sent.remove(&(s, me)).unwrap()))
                    .collect();
                state.finish(inbox).unwrap()
            })
            .collect();
        assert_eq!(outputs[0].transcript(), outputs[1].transcript());
        outputs[0].transcript()
    };
    let low = half([1, 2], [3, 4], rng);
    let high = half([3, 4], [1, 2], rng);
    assert_ne!(low, high);
}

/// A member given a smaller removal set than its peers expects a package
/// from a seat the others removed; one whose removal set names a peer
/// refuses that peer's package: either way its part 2 fails.
#[test]
fn a_member_given_another_removal_set_refuses_its_peers_packages() {
    let rng = &mut rng(304);
    let (shares, wallet) = dkg(2, 4, ScriptTree::KeyPathOnly, rng);
    let removed = seats(&[4]);
    let started: Vec<_> = [1u16, 2, 3]
        .iter()
        .map(|n| DkgRound1::refresh(&shares[&seat(*n)], &wallet, &removed, rng).unwrap())
        .collect();
    let round1: Vec<_> = started.iter().map(|(s, p)| (s.seat(), p.clone())).collect();
    // Seat 3 was told to remove seat 2 instead of seat 4.
    let (three, _) = DkgRound1::refresh(&shares[&seat(3)], &wallet, &seats(&[2]), rng).unwrap();
    let peers = round1
        .iter()
        .filter(|(s, _)| *s != seat(3))
        .cloned()
        .collect();
    let err = three.receive(peers).map(|_| ()).unwrap_err();
    assert!(
        matches!(err, Error::UnknownSender { seat } if seat == self::seat(2)),
        "{err:?}"
    );
}

/// A removal that names a seat outside the wallet, or one seat twice, is
/// refused with the seat named: silently ignoring it would remove nobody
/// (or not whom the operator meant).
#[test]
fn a_removal_of_a_non_member_or_a_repeated_seat_is_refused() {
    let rng = &mut rng(305);
    let (shares, wallet) = dkg(2, 4, ScriptTree::KeyPathOnly, rng);
    let share = &shares[&seat(1)];
    for (removed, named) in [(vec![5u16], 5u16), (vec![4, 4], 4), (vec![3, 9], 9)] {
        let err = DkgRound1::refresh(share, &wallet, &seats(&removed), rng)
            .map(|_| ())
            .unwrap_err();
        assert!(
            matches!(err, Error::UnknownSeat { seat } if seat == named),
            "removing {removed:?}: {err:?}"
        );
    }
    assert!(DkgRound1::refresh(share, &wallet, &seats(&[3, 4]), rng).is_ok());
}

/// A fresh DKG's transcript names its script tree: key path only is not
/// hashed as a tree whose root is 32 zero bytes (same seed, so the same
/// packages otherwise).
#[test]
fn a_key_path_only_transcript_differs_from_a_zero_root_one() {
    let transcript = |tree: ScriptTree| {
        let rng = &mut rng(311);
        let params = GroupParams::new(2, 3).unwrap();
        let started: Vec<_> = seats(&[1, 2, 3])
            .into_iter()
            .map(|s| DkgRound1::start(params, s, tree, rng).unwrap())
            .collect();
        let (states, mut sent) = part2_all(started);
        let state = states.into_iter().next().unwrap();
        let me = state.seat();
        let inbox: Vec<_> = seats(&[2, 3])
            .into_iter()
            .map(|s| (s, sent.remove(&(s, me)).unwrap()))
            .collect();
        state.finish(inbox).unwrap().transcript()
    };
    assert_ne!(
        transcript(ScriptTree::KeyPathOnly),
        transcript(ScriptTree::Root(MerkleRoot([0; 32])))
    );
}
