//! A prepared package's aggregation against frost's own: the same
//! signature for honest shares under every key convention and both parities
//! of the output key and of the group commitment, and the same culprits
//! otherwise.

mod common;

use std::collections::BTreeMap;

use common::*;
use k256::elliptic_curve::PrimeField as _;
use sha2::{Digest as _, Sha256};
use thresig_crypto::*;

/// Whether the wallet's output key, as a full point, has odd Y
/// (libsecp256k1's BIP341 tweak, not the crate's).
fn output_key_is_odd(wallet: &WalletKey) -> bool {
    let tag = Sha256::digest(b"TapTweak");
    let internal = wallet.internal_key().to_bytes();
    let mut tweak = Sha256::new();
    tweak.update(tag);
    tweak.update(tag);
    tweak.update(internal);
    if let ScriptTree::Root(MerkleRoot(root)) = wallet.script_tree() {
        tweak.update(root);
    }
    let tweak = secp256k1::Scalar::from_be_bytes(tweak.finalize().into()).unwrap();
    let secp = secp256k1::Secp256k1::verification_only();
    let (output, parity) = secp256k1::XOnlyPublicKey::from_slice(&internal)
        .unwrap()
        .add_tweak(&secp, &tweak)
        .unwrap();
    assert_eq!(output.serialize(), wallet.output_key().to_bytes());
    parity == secp256k1::Parity::Odd
}

/// Whether the signature's R, as frost holds it (the group commitment,
/// before the BIP340 encoding drops its parity), has odd Y. frost's
/// `Debug` is the only place that shows it.
fn group_commitment_is_odd(signature: &Signature) -> bool {
    format!("{signature:?}").contains("R: \"03")
}

#[test]
fn honest_shares_aggregate_to_frosts_signature_under_every_convention_and_parity() {
    let mut seen = BTreeMap::new();
    for seed in 0..48u64 {
        for (origin, tree) in [
            (KeyOrigin::Dkg, ScriptTree::KeyPathOnly),
            (KeyOrigin::Dkg, ScriptTree::Root(MerkleRoot([0x5b; 32]))),
            (KeyOrigin::Imported, ScriptTree::KeyPathOnly),
            (
                KeyOrigin::Imported,
                ScriptTree::Root(MerkleRoot([0x07; 32])),
            ),
        ] {
            let rng = &mut rng(seed * 7 + 1);
            let t = 2 + (seed % 3) as u16;
            let (shares, wallet) = match origin {
                KeyOrigin::Imported => import(t, 5, tree, rng),
                _ => dkg(t, 5, tree, rng),
            };
            let signers = seats(&[1, 3, 4, 5][..usize::from(t)]);
            let message = [seed as u8; 32];
            let (package, sent) = sign_shares(&shares, &wallet, &signers, &message, rng);
            let prepared = PreparedPackage::new(&wallet, package.clone()).unwrap();
            let ours = prepared.aggregate(&sent).unwrap();
            let frosts = aggregate(&wallet, &package, &sent).unwrap();
            assert_eq!(format!("{ours:?}"), format!("{frosts:?}"));
            assert_eq!(ours.to_bytes().unwrap(), frosts.to_bytes().unwrap());
            assert!(secp_verify(&wallet.output_key(), &message, &ours));
            let case = (
                format!("{origin:?} {tree:?}"),
                output_key_is_odd(&wallet),
                group_commitment_is_odd(&ours),
            );
            *seen.entry(case).or_insert(0) += 1;
        }
    }
    assert_eq!(
        seen.len(),
        16,
        "every convention with either parity of the output key and of R: {seen:#?}"
    );
}

/// `share` plus (or minus) the scalar `delta`.
fn shifted(share: &SignatureShare, delta: u8, minus: bool) -> SignatureShare {
    let scalar =
        |bytes: &[u8]| k256::Scalar::from_repr(*k256::FieldBytes::from_slice(bytes)).unwrap();
    let x = scalar(&share.to_bytes());
    let d = scalar(&[delta; 32]);
    let shifted = if minus { x - d } else { x + d };
    SignatureShare::from_bytes(&shifted.to_repr()).unwrap()
}

#[test]
fn bad_shares_get_the_answer_frost_gives() {
    for seed in 0..8 {
        for tree in [
            ScriptTree::KeyPathOnly,
            ScriptTree::Root(MerkleRoot([1; 32])),
        ] {
            let rng = &mut rng(seed);
            let (shares, wallet) = import(3, 5, tree, rng);
            let (package, sent) =
                sign_shares(&shares, &wallet, &seats(&[1, 2, 4, 5]), &[3; 32], rng);
            let prepared = PreparedPackage::new(&wallet, package.clone()).unwrap();
            let answers = |shares: &BTreeMap<Seat, SignatureShare>| {
                let ours = format!("{:?}", prepared.aggregate(shares));
                assert_eq!(ours, format!("{:?}", aggregate(&wallet, &package, shares)));
                ours
            };
            let mut cases: Vec<(BTreeMap<Seat, SignatureShare>, &str)> = Vec::new();
            let with = |changes: &[(u16, SignatureShare)]| {
                let mut shares = sent.clone();
                for (s, share) in changes {
                    shares.insert(seat(*s), *share);
                }
                shares
            };
            let zero = SignatureShare::from_bytes(&[0; 32]).unwrap();
            cases.push((with(&[(2, zero)]), "InvalidShares { culprits: [Seat(2)] }"));
            cases.push((
                with(&[(2, zero), (5, sent[&seat(1)])]),
                "InvalidShares { culprits: [Seat(2), Seat(5)] }",
            ));
            // Two wrong shares whose errors cancel: the signature is valid.
            cases.push((
                with(&[
                    (1, shifted(&sent[&seat(1)], 5, false)),
                    (4, shifted(&sent[&seat(4)], 5, true)),
                ]),
                "Ok(",
            ));
            // A member outside the session and a seat outside the wallet.
            cases.push((with(&[(3, sent[&seat(1)])]), "SharesMismatch"));
            cases.push((with(&[(9, sent[&seat(1)])]), "SharesMismatch"));
            let mut missing = sent.clone();
            missing.remove(&seat(1));
            cases.push((missing, "SharesMismatch"));
            for (shares, expected) in cases {
                let answer = answers(&shares);
                assert!(answer.contains(expected), "{answer} is not {expected}");
            }
        }
    }
}
