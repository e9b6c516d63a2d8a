//! A lying repair helper is named: whichever value it falsifies (a delta to
//! another helper, its published commitments, or its sigma), the check that
//! sees the lie names the helper that signed it, in every position of the
//! helper set.

mod common;

use std::collections::BTreeMap;

use common::*;
use thresig_crypto::*;

/// A 3-of-5 wallet; seat 5 is repaired by helpers 1, 2 and 4.
fn setup(seed: u64) -> (BTreeMap<Seat, KeyShare>, WalletKey, Vec<Seat>, Seat) {
    let (shares, wallet) = dkg(3, 5, ScriptTree::KeyPathOnly, &mut rng(seed));
    (shares, wallet, seats(&[1, 2, 4]), seat(5))
}

/// A delta that is a valid scalar but not the one committed to.
fn other_delta(shares: &BTreeMap<Seat, KeyShare>, wallet: &WalletKey, seed: u64) -> RepairDelta {
    let mut deltas = repair_step1(
        &shares[&seat(1)],
        wallet,
        &seats(&[1, 2, 3]),
        seat(4),
        &mut rng(seed),
    )
    .unwrap()
    .into_deltas();
    deltas.remove(0).1
}

#[test]
fn an_honest_repair_rebuilds_the_lost_share() {
    let (shares, wallet, helpers, lost) = setup(1);
    let run = repair_run(&shares, &wallet, &helpers, lost, &mut rng(2)).unwrap();
    let rebuilt = repair_step3(run.sigmas, &run.commitments, lost, &wallet).unwrap();
    assert_eq!(
        &rebuilt.to_bytes().unwrap()[..],
        &shares[&lost].to_bytes().unwrap()[..]
    );
}

/// Helper `liar` hands helper `victim` a delta that is not the one its
/// commitments promise: the victim refuses to sum, naming the liar.
#[test]
fn a_delta_that_breaks_its_commitment_is_refused_naming_its_sender() {
    let (shares, wallet, helpers, lost) = setup(3);
    let rng = &mut rng(4);
    for liar in &helpers {
        for victim in &helpers {
            let mut commitments = BTreeMap::new();
            let mut received = Vec::new();
            for h in &helpers {
                let out = repair_step1(&shares[h], &wallet, &helpers, lost, rng).unwrap();
                commitments.insert(*h, out.commitments().clone());
                let delta = out
                    .into_deltas()
                    .into_iter()
                    .find(|(to, _)| to == victim)
                    .unwrap()
                    .1;
                let delta = if h == liar {
                    other_delta(&shares, &wallet, 5)
                } else {
                    delta
                };
                received.push((*h, delta));
            }
            let err = repair_step2(*victim, received, &commitments).unwrap_err();
            assert!(
                matches!(err, Error::BadRepairDelta { culprit } if culprit == *liar),
                "liar {liar}, victim {victim}: {err:?}"
            );
            assert_eq!(err.culprits(), vec![*liar]);
        }
    }
}

/// Helper `liar` computes its deltas for another lost seat (consistent with
/// the commitments it publishes, so every helper accepts them): the
/// repaired member sees that its commitments do not sum to ζ·Y for its
/// verifying share on record, and names it.
#[test]
fn commitments_that_miss_the_verifying_share_name_their_helper() {
    let (shares, wallet, helpers, lost) = setup(6);
    let rng = &mut rng(7);
    for liar in &helpers {
        let mut commitments = BTreeMap::new();
        let mut inbox: BTreeMap<Seat, Vec<(Seat, RepairDelta)>> = BTreeMap::new();
        for h in &helpers {
            let target = if h == liar { seat(3) } else { lost };
            let out = repair_step1(&shares[h], &wallet, &helpers, target, rng).unwrap();
            commitments.insert(*h, out.commitments().clone());
            for (to, d) in out.into_deltas() {
                inbox.entry(to).or_default().push((*h, d));
            }
        }
        let sigmas: Vec<_> = inbox
            .into_iter()
            .map(|(me, received)| (me, repair_step2(me, received, &commitments).unwrap()))
            .collect();
        let err = repair_step3(sigmas, &commitments, lost, &wallet).unwrap_err();
        assert!(
            matches!(err, Error::BadRepairCommitment { culprit } if culprit == *liar),
            "liar {liar}: {err:?}"
        );
    }
}

/// Helper `liar` sends the repaired member a sigma that is not the sum of
/// the deltas committed to it: named by the sigma check.
#[test]
fn a_sigma_that_is_not_the_committed_sum_names_its_helper() {
    let (shares, wallet, helpers, lost) = setup(8);
    for liar in &helpers {
        let mut run = repair_run(&shares, &wallet, &helpers, lost, &mut rng(9)).unwrap();
        let bogus = other_delta(&shares, &wallet, 11).to_bytes().unwrap();
        let slot = run.sigmas.iter_mut().find(|(h, _)| h == liar).unwrap();
        slot.1 = RepairSigma::from_bytes(&bogus).unwrap();
        let err = repair_step3(run.sigmas, &run.commitments, lost, &wallet).unwrap_err();
        assert!(
            matches!(err, Error::BadRepairSigma { culprit } if culprit == *liar),
            "liar {liar}: {err:?}"
        );
    }
}

/// A helper whose commitments cover another helper set than the one the
/// repair runs with is named, by the helpers and by the repaired member.
#[test]
fn commitments_for_another_helper_set_name_their_helper() {
    let (shares, wallet, helpers, lost) = setup(12);
    let mut run = repair_run(&shares, &wallet, &helpers, lost, &mut rng(13)).unwrap();
    let other = repair_step1(
        &shares[&seat(2)],
        &wallet,
        &seats(&[1, 2, 3]),
        lost,
        &mut rng(14),
    )
    .unwrap();
    run.commitments.insert(seat(2), other.commitments().clone());
    let err = repair_step3(run.sigmas, &run.commitments, lost, &wallet).unwrap_err();
    assert!(
        matches!(err, Error::BadRepairCommitment { culprit } if culprit == seat(2)),
        "{err:?}"
    );
}

/// Sigmas and commitments from different helper sets, or too few, are
/// refused before any arithmetic.
#[test]
fn mismatched_or_short_helper_sets_are_refused() {
    let (shares, wallet, helpers, lost) = setup(15);
    let run = repair_run(&shares, &wallet, &helpers, lost, &mut rng(16)).unwrap();
    let mut fewer = run.commitments.clone();
    fewer.remove(&seat(4));
    let err = repair_step3(run.sigmas, &fewer, lost, &wallet).unwrap_err();
    assert!(matches!(err, Error::NotEnoughHelpers), "{err:?}");
}

#[test]
fn commitments_round_trip_and_refuse_non_canonical_bytes() {
    let (shares, wallet, helpers, lost) = setup(17);
    let out = repair_step1(&shares[&seat(1)], &wallet, &helpers, lost, &mut rng(18)).unwrap();
    let bytes = out.commitments().to_bytes();
    assert_eq!(
        &RepairCommitments::from_bytes(&bytes).unwrap(),
        out.commitments()
    );
    assert_eq!(out.commitments().helpers(), helpers);
    // Entries are 35 bytes: swap the first two (out of order).
    let mut swapped = bytes[35..70].to_vec();
    swapped.extend_from_slice(&bytes[..35]);
    swapped.extend_from_slice(&bytes[70..]);
    let mut truncated = bytes.clone();
    truncated.pop();
    let mut bad_point = bytes.clone();
    bad_point[2] = 0x05;
    for bad in [swapped, truncated, bad_point, Vec::new()] {
        assert!(
            matches!(
                RepairCommitments::from_bytes(&bad),
                Err(Error::Decode {
                    what: Encoding::RepairCommitments
                })
            ),
            "{}",
            hex::encode(&bad)
        );
    }
}
