//! Decoding: only canonical encodings are accepted (callers hash these bytes
//! to key nonces and retries), records are checked for consistency, and no
//! input makes a parser panic.

mod common;

use common::*;
use thresig_crypto::*;

/// Decoding accepts only canonical encodings; frost's postcard decoding
/// ignores trailing bytes, so each wrapper must refuse them itself.
#[test]
fn every_decoder_refuses_trailing_bytes() {
    let rng = &mut rng(104);
    let (shares, wallet) = dkg(2, 3, ScriptTree::KeyPathOnly, rng);
    let (package, sig_shares) = sign_shares(&shares, &wallet, &seats(&[1, 2]), &[3; 32], rng);
    let (_, commitment) = commit(&shares[&seat(1)], rng);
    let (round1, out) = seat_one_round2(rng);
    let helpers = seats(&[1, 2]);
    let helper = repair_step1(&shares[&seat(1)], &wallet, &helpers, seat(3), rng).unwrap();
    let commitments = helper.commitments().clone();
    let deltas = helper.into_deltas();

    let plus = |b: &[u8]| [b, &[0u8][..]].concat();
    let mut accepted = Vec::new();
    if SigningPackage::from_bytes(&plus(&package.to_bytes())).is_ok() {
        accepted.push("SigningPackage");
    }
    if Commitment::from_bytes(&plus(&commitment.to_bytes())).is_ok() {
        accepted.push("Commitment");
    }
    if Round1Package::from_bytes(&plus(&round1[0].1.to_bytes().unwrap())).is_ok() {
        accepted.push("Round1Package");
    }
    if Round2Package::from_bytes(&plus(&out[0].1.to_bytes().unwrap())).is_ok() {
        accepted.push("Round2Package");
    }
    if KeyShare::from_bytes(&plus(&shares[&seat(1)].to_bytes().unwrap())).is_ok() {
        accepted.push("KeyShare");
    }
    if SignatureShare::from_bytes(&plus(&sig_shares[&seat(1)].to_bytes())).is_ok() {
        accepted.push("SignatureShare");
    }
    if RepairDelta::from_bytes(&plus(&deltas[0].1.to_bytes().unwrap())).is_ok() {
        accepted.push("RepairDelta");
    }
    if RepairCommitments::from_bytes(&plus(&commitments.to_bytes())).is_ok() {
        accepted.push("RepairCommitments");
    }
    if WalletKey::from_bytes(&plus(&wallet.to_bytes().unwrap())).is_ok() {
        accepted.push("WalletKey");
    }
    assert!(
        accepted.is_empty(),
        "trailing byte accepted by {accepted:?}"
    );
}

/// A signing package naming the same seat twice is not canonical; postcard
/// lets the second entry silently replace the first.
#[test]
fn signing_package_listing_a_seat_twice_is_refused() {
    let rng = &mut rng(105);
    let (shares, wallet) = dkg(2, 3, ScriptTree::KeyPathOnly, rng);
    let (package, _) = sign_shares(&shares, &wallet, &seats(&[1, 2]), &[3; 32], rng);
    let bytes = package.to_bytes();
    // Layout: header (5), map length (1), then entries of identifier (32) +
    // commitments (5 + 33 + 33), then the message.
    let entry = 32 + 5 + 33 + 33;
    let (first, second) = (6, 6 + entry);
    let mut dup = bytes.clone();
    let id1 = bytes[first..first + 32].to_vec();
    dup[second..second + 32].copy_from_slice(&id1);
    match SigningPackage::from_bytes(&dup) {
        Err(_) => {}
        Ok(p) => panic!(
            "package with seat 1 twice decoded to signers {:?}, re-encoding differs: {}",
            p.signers(),
            p.to_bytes() != dup
        ),
    }
}

/// A wallet record with threshold t < 2 or t > n is refused at decoding.
#[test]
fn wallet_key_with_an_impossible_threshold_is_refused() {
    let rng = &mut rng(106);
    let (_, wallet) = dkg(2, 3, ScriptTree::KeyPathOnly, rng);
    let good = wallet.to_bytes().unwrap();
    assert_eq!(*good.last().unwrap(), 2, "min_signers is the last byte");
    let mut accepted = Vec::new();
    for t in [0u8, 1, 4, 9] {
        let mut bad = good.clone();
        *bad.last_mut().unwrap() = t;
        if let Ok(w) = WalletKey::from_bytes(&bad) {
            accepted.push((t, w.threshold(), w.params().is_ok()));
        }
    }
    assert!(
        accepted.is_empty(),
        "decoded with (stored t, threshold(), params() ok): {accepted:?}"
    );
}

/// A key share with min_signers 0 or 1 is refused at decoding.
#[test]
fn key_share_with_min_signers_below_two_is_refused() {
    let rng = &mut rng(107);
    let (shares, _) = dkg(2, 3, ScriptTree::KeyPathOnly, rng);
    let good = shares[&seat(1)].to_bytes().unwrap();
    assert_eq!(*good.last().unwrap(), 2, "min_signers is the last byte");
    let mut accepted = Vec::new();
    for t in [0u8, 1] {
        let mut bad = good.to_vec();
        *bad.last_mut().unwrap() = t;
        if KeyShare::from_bytes(&bad).is_ok() {
            accepted.push(t);
        }
    }
    assert!(
        accepted.is_empty(),
        "key share decoded with min_signers {accepted:?}"
    );
}

/// The verifying shares of a wallet record must lie on one polynomial
/// through the group key: a record with two of them swapped would make the
/// honest share of seat 2 look invalid (ROAST would exclude an honest signer).
#[test]
fn wallet_key_with_swapped_verifying_shares_is_refused() {
    let rng = &mut rng(108);
    let (shares, wallet) = dkg(2, 3, ScriptTree::KeyPathOnly, rng);
    let good = wallet.to_bytes().unwrap();
    // version, origin, tree (key path), recorded P, output Q = 67 bytes;
    // then the package: header (5), map length (1), entries id (32) + share (33).
    let share_at = |i: usize| 67 + 6 + i * 65 + 32;
    let mut bad = good.clone();
    bad[share_at(1)..share_at(1) + 33].copy_from_slice(&good[share_at(2)..share_at(2) + 33]);
    bad[share_at(2)..share_at(2) + 33].copy_from_slice(&good[share_at(1)..share_at(1) + 33]);
    let Ok(decoded) = WalletKey::from_bytes(&bad) else {
        return;
    };
    let (package, sig_shares) = sign_shares(&shares, &wallet, &seats(&[1, 2]), &[6; 32], rng);
    let blamed = verify_share(&decoded, &package, seat(2), &sig_shares[&seat(2)]);
    let aggregated = aggregate(&decoded, &package, &sig_shares);
    panic!(
        "inconsistent record decoded; honest seat 2's share: {blamed:?}; aggregate: {:?}",
        aggregated.map(|_| "ok")
    );
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn samples() -> Vec<Vec<u8>> {
        let rng = &mut rng(110);
        let (shares, wallet) = dkg(2, 3, ScriptTree::Root(MerkleRoot([7; 32])), rng);
        let (package, sig_shares) = sign_shares(&shares, &wallet, &seats(&[1, 3]), &[2; 32], rng);
        let (round1, out) = seat_one_round2(rng);
        vec![
            wallet.to_bytes().unwrap(),
            shares[&seat(1)].to_bytes().unwrap().to_vec(),
            package.to_bytes(),
            sig_shares[&seat(1)].to_bytes(),
            round1[0].1.to_bytes().unwrap(),
            out[0].1.to_bytes().unwrap().to_vec(),
        ]
    }

    fn parse_all(b: &[u8]) {
        let _ =
            WalletKey::from_bytes(b).map(|w| (w.members(), w.params().is_ok(), format!("{w:?}")));
        let _ = KeyShare::from_bytes(b);
        let _ = SigningPackage::from_bytes(b).map(|p| p.signers());
        let _ = SignatureShare::from_bytes(b);
        let _ = Commitment::from_bytes(b);
        let _ = Round1Package::from_bytes(b);
        let _ = Round2Package::from_bytes(b);
        let _ = RepairDelta::from_bytes(b);
        let _ = RepairSigma::from_bytes(b);
        if let Ok(a) = <[u8; 64]>::try_from(b) {
            let _ = Signature::from_bytes(&a);
        }
        if let Ok(a) = <[u8; 32]>::try_from(b) {
            let _ = XOnlyKey::from_bytes(a);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        /// DESIGN.md §8: arbitrary bytes to every parser, never a panic.
        #[test]
        fn mutated_encodings_never_panic(which in 0usize..6, edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6), cut in any::<prop::sample::Index>(), raw in prop::collection::vec(any::<u8>(), 0..300)) {
            thread_local!(static S: Vec<Vec<u8>> = samples());
            let mut b = S.with(|s| s[which].clone());
            for (i, v) in edits {
                let i = i.index(b.len());
                b[i] = v;
            }
            b.truncate(cut.index(b.len() + 1));
            parse_all(&b);
            parse_all(&raw);
        }
    }
}

/// Every convention, and a wallet whose refresh removed a seat (members with
/// a gap), round-trips through bytes: the consistency checks accept every
/// record this crate makes.
#[test]
fn every_kind_of_wallet_record_round_trips() {
    let rng = &mut rng(113);
    let root = ScriptTree::Root(MerkleRoot([9; 32]));
    let mut wallets = vec![
        dkg(3, 5, ScriptTree::KeyPathOnly, rng).1,
        dkg(3, 5, root, rng).1,
        import(3, 5, ScriptTree::KeyPathOnly, rng).1,
        import(3, 5, root, rng).1,
    ];
    let (shares, wallet) = dkg(2, 4, root, rng);
    let started = shares
        .values()
        .filter(|s| s.seat() != seat(2))
        .map(|s| DkgRound1::refresh(s, &wallet, &[seat(2)], rng).unwrap())
        .collect();
    let (_, refreshed) = run_rounds(started).unwrap();
    assert_eq!(refreshed.members(), seats(&[1, 3, 4]));
    wallets.push(refreshed);
    for wallet in wallets {
        let decoded = WalletKey::from_bytes(&wallet.to_bytes().unwrap()).unwrap();
        assert_eq!(decoded, wallet);
        assert_eq!(
            decoded.params().unwrap().seats().collect::<Vec<_>>(),
            wallet.members()
        );
    }
}
