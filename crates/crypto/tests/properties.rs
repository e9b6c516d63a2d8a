//! Property tests over random small groups, 2 <= t <= n <= 7 (bounded case
//! counts), for every key convention: DKG key path, DKG with a script tree,
//! imported key path, imported with a script tree.

mod common;

use std::collections::BTreeMap;

use common::*;
use k256::elliptic_curve::PrimeField as _;
use proptest::prelude::*;
use thresig_crypto::*;

/// (t, n, seed) with 2 <= t <= n <= 7.
fn group() -> impl Strategy<Value = (u16, u16, u64)> {
    (2u16..=7).prop_flat_map(|n| (2u16..=n, Just(n), any::<u64>()))
}

/// One of the four key conventions, with a script root drawn from `root`.
fn convention() -> impl Strategy<Value = (KeyOrigin, ScriptTree)> {
    let origin = prop_oneof![Just(KeyOrigin::Dkg), Just(KeyOrigin::Imported)];
    let tree = prop_oneof![
        Just(ScriptTree::KeyPathOnly),
        any::<[u8; 32]>().prop_map(|root| ScriptTree::Root(MerkleRoot(root))),
    ];
    (origin, tree)
}

/// A `t`-of-`n` wallet of the given convention.
fn make_wallet(
    (origin, tree): (KeyOrigin, ScriptTree),
    t: u16,
    n: u16,
    rng: &mut rand_chacha::ChaCha20Rng,
) -> LocalGroup {
    let local = match origin {
        KeyOrigin::Imported => import(t, n, tree, rng),
        _ => dkg(t, n, tree, rng),
    };
    assert_eq!((local.1.origin(), local.1.script_tree()), (origin, tree));
    local
}

/// A subset of `1..=n` of exactly `k` seats, chosen by `pick`.
fn subset(n: u16, k: u16, pick: u64) -> Vec<Seat> {
    let mut all: Vec<u16> = (1..=n).collect();
    let mut x = pick;
    for i in (1..all.len()).rev() {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        all.swap(i, (x >> 33) as usize % (i + 1));
    }
    let mut chosen = all[..usize::from(k)].to_vec();
    chosen.sort_unstable();
    seats(&chosen)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn any_t_subset_signs((t, n, seed) in group(), kind in convention(), pick in any::<u64>()) {
        let rng = &mut rng(seed);
        let (shares, wallet) = make_wallet(kind, t, n, rng);
        let signers = subset(n, t, pick);
        let sig = sign_all(&shares, &wallet, &signers, &[5; 32], rng);
        prop_assert!(verify(&wallet.output_key(), &[5; 32], &sig).is_ok());
    }

    #[test]
    fn fewer_than_t_cannot_sign((t, n, seed) in group(), kind in convention(), pick in any::<u64>()) {
        let rng = &mut rng(seed);
        let (shares, wallet) = make_wallet(kind, t, n, rng);
        let signers = subset(n, t - 1, pick);
        let commitments: Vec<_> = signers.iter().map(|s| commit(&shares[s], rng)).collect();
        let package = SigningPackage::new(
            &commitments.iter().map(|(n, c)| (n.seat(), *c)).collect(),
            &[6; 32],
        ).unwrap();
        for (nonce, _) in commitments {
            let seat = nonce.seat();
            let refused = matches!(
                sign(nonce, &package, &shares[&seat], &wallet),
                Err(Error::TooFewSigners { .. })
            );
            prop_assert!(refused);
        }
        // Even the raw t-1 shares of a t-signer run do not aggregate.
        let all = subset(n, t, pick);
        let (package, mut sig_shares) = sign_shares(&shares, &wallet, &all, &[6; 32], rng);
        let dropped = all[0];
        sig_shares.remove(&dropped);
        prop_assert!(aggregate(&wallet, &package, &sig_shares).is_err());
    }

    #[test]
    fn corrupted_share_is_named((t, n, seed) in group(), kind in convention(), pick in any::<u64>(), bad in any::<prop::sample::Index>()) {
        let rng = &mut rng(seed);
        let (shares, wallet) = make_wallet(kind, t, n, rng);
        let signers = subset(n, t, pick);
        let (package, mut sig_shares) = sign_shares(&shares, &wallet, &signers, &[7; 32], rng);
        let culprit = signers[bad.index(signers.len())];
        // Replace the culprit's share by another signer's share (valid scalar, wrong value).
        let other = *signers.iter().find(|s| **s != culprit).unwrap();
        let forged = sig_shares[&other];
        sig_shares.insert(culprit, forged);
        for (s, share) in &sig_shares {
            let result = verify_share(&wallet, &package, *s, share);
            if *s == culprit {
                let named = matches!(result, Err(Error::InvalidShares { ref culprits }) if culprits == &vec![culprit]);
                prop_assert!(named);
            } else {
                prop_assert!(result.is_ok());
            }
        }
        match aggregate(&wallet, &package, &sig_shares) {
            Err(Error::InvalidShares { culprits }) => prop_assert_eq!(culprits, vec![culprit]),
            other => prop_assert!(false, "expected culprit, got {:?}", other),
        }
    }

    #[test]
    fn refresh_keeps_key_and_changes_every_share((t, n, seed) in group(), kind in convention(), pick in any::<u64>()) {
        let rng = &mut rng(seed);
        let (old, wallet) = make_wallet(kind, t, n, rng);
        let started = old
            .values()
            .map(|s| DkgRound1::refresh(s, &wallet, &[], rng).unwrap())
            .collect();
        let (new, refreshed) = run_rounds(started).unwrap();
        prop_assert_eq!(refreshed.output_key(), wallet.output_key());
        prop_assert_eq!(refreshed.internal_key(), wallet.internal_key());
        for (s, share) in &new {
            prop_assert_ne!(&share.to_bytes().unwrap()[..], &old[s].to_bytes().unwrap()[..]);
        }
        let signers = subset(n, t, pick);
        sign_all(&new, &refreshed, &signers, &[8; 32], rng);
        // Old and new shares do not combine: a member signing with its old
        // share, in the same signing session as new shares, is named as a culprit.
        let stale = signers[0];
        let holder = |s: &Seat| if *s == stale { &old[s] } else { &new[s] };
        let mut nonces = Vec::new();
        let mut commitments = BTreeMap::new();
        for s in &signers {
            let (nonce, c) = commit(holder(s), rng);
            nonces.push(nonce);
            commitments.insert(*s, c);
        }
        let package = SigningPackage::new(&commitments, &[8; 32]).unwrap();
        let mut mixed = BTreeMap::new();
        for nonce in nonces {
            let s = nonce.seat();
            let key = if s == stale { &wallet } else { &refreshed };
            mixed.insert(s, sign(nonce, &package, holder(&s), key).unwrap());
        }
        match aggregate(&refreshed, &package, &mixed) {
            Err(Error::InvalidShares { culprits }) => prop_assert_eq!(culprits, vec![stale]),
            other => prop_assert!(false, "old share combined: {:?}", other),
        }
        prop_assert!(old[&stale].check_wallet(&refreshed).is_err());
    }

    #[test]
    fn repair_rebuilds_the_exact_share((t, n, seed) in group(), kind in convention(), pick in any::<u64>()) {
        prop_assume!(n > t);
        let rng = &mut rng(seed);
        let (shares, wallet) = make_wallet(kind, t, n, rng);
        let order = subset(n, n, pick);
        let lost = order[0];
        let mut helpers = order[1..=usize::from(t)].to_vec();
        helpers.sort_unstable();
        let run = repair_run(&shares, &wallet, &helpers, lost, rng).unwrap();
        // Sigmas travel encoded.
        let sigmas = run
            .sigmas
            .iter()
            .map(|(h, s)| (*h, RepairSigma::from_bytes(&s.to_bytes().unwrap()).unwrap()))
            .collect();
        let rebuilt = repair_step3(sigmas, &run.commitments, lost, &wallet).unwrap();
        prop_assert_eq!(&rebuilt.to_bytes().unwrap()[..], &shares[&lost].to_bytes().unwrap()[..]);
    }
}

/// How a share is corrupted before both verification paths see it.
#[derive(Debug, Clone, Copy)]
enum Corruption {
    /// The share as its signer made it.
    None,
    /// Another signer's share (a valid scalar, the wrong value).
    Swapped,
    /// A random scalar.
    Random,
    /// The signer's share of another message under the same commitments.
    OtherMessage,
    /// The share negated: what a signer that skips BIP340's negations sends
    /// when they cancel out, and a share whose point has the right
    /// x-coordinate.
    Negated,
}

fn corruption() -> impl Strategy<Value = Corruption> {
    prop_oneof![
        Just(Corruption::None),
        Just(Corruption::Swapped),
        Just(Corruption::Random),
        Just(Corruption::OtherMessage),
        Just(Corruption::Negated),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// A package prepared once gives, for every member seat and every share,
    /// exactly the answer of per-share verification, and for the shares
    /// together exactly the answer of aggregation (the signature, or every
    /// culprit), for every key convention (tweaked or not) and either parity
    /// of the group commitment.
    #[test]
    fn prepared_verification_matches_per_share(
        (t, n, seed) in group(),
        kind in convention(),
        extra in 0u16..=6,
        pick in any::<u64>(),
        corruptions in prop::collection::vec(corruption(), 7),
    ) {
        let rng = &mut rng(seed);
        let (shares, wallet) = make_wallet(kind, t, n, rng);
        let signers = subset(n, (t + extra).min(n), pick);
        let mut nonces = Vec::new();
        let mut commitments = BTreeMap::new();
        for s in &signers {
            let (nonce, c) = commit(&shares[s], rng);
            nonces.push(nonce);
            commitments.insert(*s, c);
        }
        let package = SigningPackage::new(&commitments, &[8; 32]).unwrap();
        let mut made = BTreeMap::new();
        for nonce in nonces {
            let s = nonce.seat();
            made.insert(s, sign(nonce, &package, &shares[&s], &wallet).unwrap());
        }
        let prepared = PreparedPackage::new(&wallet, package.clone()).unwrap();
        prop_assert_eq!(prepared.package(), &package);
        prop_assert_eq!(&prepared.bytes()[..], &package.to_bytes()[..]);
        let mut sent = BTreeMap::new();
        for (i, s) in signers.iter().enumerate() {
            let share = match corruptions[i % corruptions.len()] {
                Corruption::None => made[s],
                Corruption::Swapped => made[&signers[(i + 1) % signers.len()]],
                Corruption::Random => {
                    let mut bytes = [0u8; 32];
                    rand_core::RngCore::fill_bytes(rng, &mut bytes);
                    bytes[0] &= 0x7f;
                    SignatureShare::from_bytes(&bytes).unwrap()
                }
                // A well-formed share of another package, which must not
                // verify for this one.
                Corruption::OtherMessage => {
                    let (nonce, c) = commit(&shares[s], rng);
                    let mut changed = commitments.clone();
                    changed.insert(*s, c);
                    let other = SigningPackage::new(&changed, &[9; 32]).unwrap();
                    sign(nonce, &other, &shares[s], &wallet).unwrap()
                }
                Corruption::Negated => {
                    let bytes = made[s].to_bytes();
                    let z = k256::Scalar::from_repr(*k256::FieldBytes::from_slice(&bytes)).unwrap();
                    SignatureShare::from_bytes(&(-z).to_bytes()).unwrap()
                }
            };
            let per_share = verify_share(&wallet, &package, *s, &share);
            prop_assert_eq!(format!("{:?}", prepared.verify(*s, &share)), format!("{per_share:?}"));
            sent.insert(*s, share);
        }
        let aggregated = aggregate(&wallet, &package, &sent);
        prop_assert_eq!(
            format!("{:?}", prepared.aggregate(&sent)),
            format!("{aggregated:?}")
        );
        if let Ok(signature) = aggregated {
            prop_assert!(verify(&wallet.output_key(), &[8; 32], &signature).is_ok());
        }
        // Shares of other seats than the package's signers.
        let first = signers[0];
        let short: BTreeMap<_, _> = sent.iter().filter(|(s, _)| **s != first).map(|(s, v)| (*s, *v)).collect();
        prop_assert_eq!(
            format!("{:?}", prepared.aggregate(&short)),
            format!("{:?}", aggregate(&wallet, &package, &short)),
        );
        // A member outside the session and a seat outside the wallet.
        for s in (1..=n + 1).map(seat).filter(|s| !signers.contains(s)) {
            let share = made[&signers[0]];
            prop_assert_eq!(
                format!("{:?}", prepared.verify(s, &share)),
                format!("{:?}", verify_share(&wallet, &package, s, &share)),
            );
        }
    }
}

/// `commit` draws its nonces itself (frost's own drawing leaves the
/// signing share in freed buffers) and must draw the same ones frost
/// would from the same generator state: RFC 9591's nonce generation.
#[test]
fn commit_draws_the_nonces_frost_draws() {
    let rng = &mut rng(301);
    let (shares, _) = dkg(2, 3, ScriptTree::KeyPathOnly, rng);
    for s in 1..=3 {
        let share = &shares[&seat(s)];
        let package =
            frost_core::keys::KeyPackage::<frost_secp256k1_tr::Secp256K1Sha256TR>::deserialize(
                &share.to_bytes().unwrap(),
            )
            .unwrap();
        let frost = frost_secp256k1_tr::round1::SigningNonces::new(
            package.signing_share(),
            &mut rng.clone(),
        );
        let (_, ours) = commit(share, rng);
        assert_eq!(
            ours.as_bytes(),
            &frost.commitments().serialize().unwrap()[..],
            "seat {s}"
        );
    }
}
