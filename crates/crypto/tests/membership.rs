//! Only a wallet's members sign, help or get repaired: the roster is the
//! set of seats holding verifying shares, which a refresh can shrink.

mod common;

use std::collections::BTreeMap;

use common::*;
use frost_core::keys::KeyPackage as FrostKeyPackage;
use frost_core::{Field, Group};
use frost_secp256k1_tr::Secp256K1Sha256TR as S;
use thresig_crypto::*;

type F = <<S as frost_core::Ciphersuite>::Group as Group>::Field;

/// Big-endian 32-byte scalar `n`.
fn small_scalar(n: u8) -> <F as Field>::Scalar {
    let mut b = [0u8; 32];
    b[31] = n;
    F::deserialize(&b).unwrap()
}

/// Refresh of `wallet` by every member except `removed`.
fn refresh_without(
    shares: &BTreeMap<Seat, KeyShare>,
    wallet: &WalletKey,
    removed: &[Seat],
    rng: &mut rand_chacha::ChaCha20Rng,
) -> LocalGroup {
    let started = shares
        .values()
        .filter(|s| !removed.contains(&s.seat()))
        .map(|s| DkgRound1::refresh(s, wallet, removed, rng).unwrap())
        .collect();
    run_in_process(started).unwrap()
}

/// Runs repair steps 1 and 2 for `lost` with `helpers`; returns the sigmas.
fn repair_sigmas(
    shares: &BTreeMap<Seat, KeyShare>,
    wallet: &WalletKey,
    helpers: &[Seat],
    lost: Seat,
    rng: &mut rand_chacha::ChaCha20Rng,
) -> Result<RepairRun, Error> {
    repair_run(shares, wallet, helpers, lost, rng)
}

/// A seat removed by a refresh (or a seat that never was a member) must not
/// be "repaired": repair would hand it a working share of the *new* sharing,
/// undoing the removal. `repair_step1` has the wallet and can refuse.
#[test]
fn repair_of_a_seat_removed_by_refresh_is_refused() {
    let rng = &mut rng(101);
    let secret = {
        let mut s = [0u8; 32];
        s[31] = 42;
        s
    };
    let params = GroupParams::new(2, 3).unwrap();
    let (wallet, shares) = import_key(&secret, params, ScriptTree::KeyPathOnly, rng).unwrap();
    let shares: BTreeMap<_, _> = shares.into_iter().map(|s| (s.seat(), s)).collect();
    // Seat 3 is revoked by a refresh among seats 1 and 2.
    let (new_shares, refreshed) = refresh_without(&shares, &wallet, &[seat(3)], rng);
    assert_eq!(refreshed.members(), seats(&[1, 2]));

    let sigmas = repair_sigmas(&new_shares, &refreshed, &seats(&[1, 2]), seat(3), rng);
    let Ok(sigmas) = sigmas else {
        return; // refused: the behaviour the design needs
    };
    // Accepted. Show the damage: the sigmas sum to a share of the NEW
    // polynomial at seat 3, which with seat 1's new share yields the key.
    let mut s3 = F::zero();
    for (_, sigma) in &sigmas.sigmas {
        let b: [u8; 32] = sigma.to_bytes().unwrap()[..].try_into().unwrap();
        s3 += F::deserialize(&b).unwrap();
    }
    let one = FrostKeyPackage::<S>::deserialize(&new_shares[&seat(1)].to_bytes().unwrap()).unwrap();
    let s1 = one.signing_share().to_scalar();
    // Lagrange at 0 over {1, 3}: l1 = 3/2, l3 = -1/2.
    let two_inv = F::invert(&small_scalar(2)).unwrap();
    let key = s1 * small_scalar(3) * two_inv - s3 * two_inv;
    assert_eq!(
        F::serialize(&key).to_vec(),
        secret.to_vec(),
        "(not even the key: then the check is only weaker than stated)"
    );
    panic!(
        "repair_step1 helped removed seat 3 to a share of the refreshed wallet; \
         with seat 1's new share it reconstructs the wallet's secret key"
    );
}

/// DESIGN.md §4: a signer checks that every identifier in the package is in the
/// wallet's roster and that there are at least t of them.
#[test]
fn sign_refuses_a_package_naming_a_non_member() {
    let rng = &mut rng(102);
    let (shares, wallet) = dkg(2, 3, ScriptTree::KeyPathOnly, rng);
    let (nonce, mine) = commit(&shares[&seat(1)], rng);
    let (_, other) = commit(&shares[&seat(2)], rng);
    // Seat 9 does not exist in this 2-of-3 wallet.
    let commitments = BTreeMap::from([(seat(1), mine), (seat(9), other)]);
    let package = SigningPackage::new(&commitments, &[1; 32]).unwrap();
    let result = sign(nonce, &package, &shares[&seat(1)], &wallet);
    assert!(
        result.is_err(),
        "seat 1 released a share for signer set {{1, 9}} of a wallet with members {:?}",
        wallet.members()
    );
}

/// After a refresh that removed a seat, `WalletKey::params()` describes the
/// members (not `1..=n'`) in `seats()` and `check_seat`.
#[test]
fn params_after_a_removal_describe_the_members() {
    let rng = &mut rng(109);
    let (shares, wallet) = dkg(2, 4, ScriptTree::KeyPathOnly, rng);
    let (_, refreshed) = refresh_without(&shares, &wallet, &[seat(2)], rng);
    let params = refreshed.params().unwrap();
    let from_params: Vec<Seat> = params.seats().collect();
    assert_eq!(
        from_params,
        refreshed.members(),
        "params().seats() lists removed seat 2 and omits member 4; check_seat(4) = {:?}",
        params.check_seat(seat(4)).map_err(|e| e.to_string())
    );
}

/// A removed seat cannot help a repair either, and the repaired member
/// refuses to rebuild a share for a seat that is not a member.
#[test]
fn repair_refuses_a_non_member_helper_and_a_non_member_rebuild() {
    let rng = &mut rng(111);
    let (shares, wallet) = dkg(2, 4, ScriptTree::KeyPathOnly, rng);
    let (new_shares, refreshed) = refresh_without(&shares, &wallet, &[seat(4)], rng);
    // Seat 4 (removed) named as a helper for seat 3.
    let err = repair_step1(
        &new_shares[&seat(1)],
        &refreshed,
        &seats(&[1, 4]),
        seat(3),
        rng,
    )
    .unwrap_err();
    assert!(matches!(err, Error::UnknownSeat { seat: 4 }), "{err:?}");
    // Members only, lost seat removed: refused, naming the lost seat.
    let err = repair_sigmas(&new_shares, &refreshed, &seats(&[1, 2]), seat(4), rng).unwrap_err();
    assert!(matches!(err, Error::UnknownSeat { seat: 4 }), "{err:?}");
    // Step 3 for a non-member, whatever the sigmas.
    let run = repair_sigmas(&new_shares, &refreshed, &seats(&[1, 2]), seat(3), rng).unwrap();
    let err = repair_step3(run.sigmas, &run.commitments, seat(4), &refreshed).unwrap_err();
    assert!(matches!(err, Error::UnknownSeat { seat: 4 }), "{err:?}");
}

/// The coordinator side checks the roster too: a package naming a removed
/// seat is refused by share verification and aggregation, naming the seat,
/// even when it holds t members besides.
#[test]
fn verify_share_and_aggregate_refuse_a_package_naming_a_removed_seat() {
    let rng = &mut rng(112);
    let (shares, wallet) = dkg(2, 4, ScriptTree::KeyPathOnly, rng);
    let (new_shares, refreshed) = refresh_without(&shares, &wallet, &[seat(2)], rng);
    let (good, sig_shares) = sign_shares(&new_shares, &refreshed, &seats(&[1, 3]), &[4; 32], rng);
    // The removed seat's old share commits alongside.
    let (_, stale) = commit(&shares[&seat(2)], rng);
    let mut commitments: BTreeMap<Seat, Commitment> = good
        .signers()
        .into_iter()
        .map(|s| (s, good.commitment(s).unwrap()))
        .collect();
    commitments.insert(seat(2), stale);
    let package = SigningPackage::new(&commitments, &[4; 32]).unwrap();
    let err = verify_share(&refreshed, &package, seat(1), &sig_shares[&seat(1)]).unwrap_err();
    assert!(matches!(err, Error::UnknownSeat { seat: 2 }), "{err:?}");
    let mut with_stale = sig_shares.clone();
    with_stale.insert(seat(2), sig_shares[&seat(1)]);
    let err = aggregate(&refreshed, &package, &with_stale).unwrap_err();
    assert!(matches!(err, Error::UnknownSeat { seat: 2 }), "{err:?}");
    // Without the removed seat, the same shares aggregate.
    let signature = aggregate(&refreshed, &good, &sig_shares).unwrap();
    assert!(secp_verify(&refreshed.output_key(), &[4; 32], &signature));
}
