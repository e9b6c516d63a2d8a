//! End-to-end signing for every key convention, checked by libsecp256k1.

mod common;

use common::*;
use thresig_crypto::*;

const ROOT: MerkleRoot = MerkleRoot([0x5b; 32]);

fn check_convention(wallet: &WalletKey, origin: KeyOrigin, tree: ScriptTree) {
    assert_eq!(wallet.origin(), origin);
    assert_eq!(wallet.script_tree(), tree);
    // The output key is the BIP341 tweak of the recorded internal key, whatever the convention.
    assert_eq!(
        taproot_output_key(&wallet.internal_key(), &tree).unwrap(),
        wallet.output_key()
    );
}

#[test]
fn dkg_key_path_wallet_signs_under_tweak_of_p() {
    let rng = &mut rng(1);
    let (shares, wallet) = dkg(2, 3, ScriptTree::KeyPathOnly, rng);
    check_convention(&wallet, KeyOrigin::Dkg, ScriptTree::KeyPathOnly);
    sign_all(&shares, &wallet, &seats(&[1, 3]), &[1; 32], rng);
}

#[test]
fn dkg_script_tree_wallet_uses_q_as_internal_key() {
    let rng = &mut rng(2);
    let (shares, wallet) = dkg(2, 3, ScriptTree::Root(ROOT), rng);
    check_convention(&wallet, KeyOrigin::Dkg, ScriptTree::Root(ROOT));
    // Same members, key-path-only record: its output key Q is this wallet's internal key.
    sign_all(&shares, &wallet, &seats(&[2, 3]), &[2; 32], rng);
}

#[test]
fn imported_wallets_sign_with_and_without_root() {
    let rng = &mut rng(3);
    for tree in [ScriptTree::KeyPathOnly, ScriptTree::Root(ROOT)] {
        let (shares, wallet) = import(3, 5, tree, rng);
        check_convention(&wallet, KeyOrigin::Imported, tree);
        sign_all(&shares, &wallet, &seats(&[1, 4, 5]), &[3; 32], rng);
    }
}

#[test]
fn imported_key_internal_key_is_the_keys_own() {
    let rng = &mut rng(4);
    let secret = [0x11u8; 32];
    let (wallet, _) = import_key(
        &secret,
        GroupParams::new(2, 3).unwrap(),
        ScriptTree::KeyPathOnly,
        rng,
    )
    .unwrap();
    let secp = secp256k1::Secp256k1::new();
    let kp = secp256k1::Keypair::from_seckey_slice(&secp, &secret).unwrap();
    assert_eq!(
        wallet.internal_key().to_bytes(),
        kp.x_only_public_key().0.serialize()
    );
}

#[test]
fn wallet_key_and_shares_round_trip_through_bytes() {
    let rng = &mut rng(5);
    for (shares, wallet) in [
        dkg(2, 3, ScriptTree::Root(ROOT), rng),
        import(2, 3, ScriptTree::KeyPathOnly, rng),
    ] {
        let decoded = WalletKey::from_bytes(&wallet.to_bytes().unwrap()).unwrap();
        assert_eq!(decoded, wallet);
        let mut restored = std::collections::BTreeMap::new();
        for (s, share) in &shares {
            let bytes = share.to_bytes().unwrap();
            restored.insert(*s, KeyShare::from_bytes(&bytes).unwrap());
        }
        sign_all(&restored, &decoded, &seats(&[1, 2]), &[9; 32], rng);
    }
}

#[test]
fn decoding_garbage_is_an_error_not_a_panic() {
    let rng = &mut rng(6);
    let (shares, wallet) = dkg(2, 3, ScriptTree::KeyPathOnly, rng);
    let good = wallet.to_bytes().unwrap();
    for cut in 0..good.len() {
        assert!(WalletKey::from_bytes(&good[..cut]).is_err());
    }
    let mut flipped = good.clone();
    flipped[4] ^= 1; // the recorded internal key
    assert!(WalletKey::from_bytes(&flipped).is_err());
    let share = shares[&seat(1)].to_bytes().unwrap();
    for cut in 0..share.len() {
        assert!(KeyShare::from_bytes(&share[..cut]).is_err());
    }
    // Every single-bit flip of the share's encoding is refused on decoding or
    // by the wallet check (a flipped seat number still decodes).
    for i in 0..share.len() {
        let mut flipped = share.to_vec();
        flipped[i] ^= 0x01;
        let accepted =
            KeyShare::from_bytes(&flipped).is_ok_and(|s| s.check_wallet(&wallet).is_ok());
        assert!(!accepted, "byte {i}");
    }
    assert!(SigningPackage::from_bytes(&[0xff; 40]).is_err());
    assert!(Commitment::from_bytes(&[]).is_err());
    assert!(Round1Package::from_bytes(&[1, 2, 3]).is_err());
    assert!(Round2Package::from_bytes(&[1, 2, 3]).is_err());
    assert!(SignatureShare::from_bytes(&[0xff; 32]).is_err());
    assert!(Signature::from_bytes(&[0xff; 64]).is_err());
}

#[test]
fn signing_package_and_shares_round_trip() {
    let rng = &mut rng(7);
    let (shares, wallet) = dkg(2, 3, ScriptTree::KeyPathOnly, rng);
    let (package, sig_shares) = sign_shares(&shares, &wallet, &seats(&[1, 2]), &[4; 32], rng);
    let package = SigningPackage::from_bytes(&package.to_bytes()).unwrap();
    let sig_shares = sig_shares
        .iter()
        .map(|(s, sh)| (*s, SignatureShare::from_bytes(&sh.to_bytes()).unwrap()))
        .collect();
    let sig = aggregate(&wallet, &package, &sig_shares).unwrap();
    assert!(secp_verify(&wallet.output_key(), &[4; 32], &sig));
}

#[test]
fn secret_debug_output_shows_no_secret_bytes() {
    let rng = &mut rng(8);
    let (shares, wallet) = dkg(2, 3, ScriptTree::KeyPathOnly, rng);
    let share = &shares[&seat(1)];
    let secret_hex = hex::encode(&share.to_bytes().unwrap()[..]);
    let debug = format!("{share:?}");
    assert!(debug.contains("redacted"));
    // No 8-byte window of the encoded share appears in the output, in hex.
    for window in secret_hex.as_bytes().chunks(16) {
        assert!(!debug.contains(std::str::from_utf8(window).unwrap()));
    }
    let (nonce, _) = commit(share, rng);
    assert!(format!("{nonce:?}").contains("redacted"));
    let (_, out) = seat_one_round2(rng);
    let p = &out[0].1;
    let bytes = hex::encode(&p.to_bytes().unwrap()[..]);
    let debug = format!("{p:?}");
    assert!(!debug.contains(&bytes[bytes.len() - 16..]));
    assert!(format!("{wallet:?}").contains("output_key"));
}

#[test]
fn nonce_for_another_package_is_refused_and_consumed() {
    let rng = &mut rng(9);
    let (shares, wallet) = dkg(2, 3, ScriptTree::KeyPathOnly, rng);
    let (n1, c1) = commit(&shares[&seat(1)], rng);
    let (_n2, c2) = commit(&shares[&seat(2)], rng);
    let (_n1b, c1b) = commit(&shares[&seat(1)], rng);
    // Package holds a different commitment for seat 1.
    let package = SigningPackage::new(&[(seat(1), c1b), (seat(2), c2)].into(), &[0; 32]).unwrap();
    assert!(matches!(
        sign(n1, &package, &shares[&seat(1)], &wallet),
        Err(Error::CommitmentMismatch { .. })
    ));
    let _ = c1;
    // Below threshold.
    let (n3, c3) = commit(&shares[&seat(3)], rng);
    let package = SigningPackage::new(&[(seat(3), c3)].into(), &[0; 32]).unwrap();
    assert!(matches!(
        sign(n3, &package, &shares[&seat(3)], &wallet),
        Err(Error::TooFewSigners { .. })
    ));
}

#[test]
fn share_of_another_wallet_is_refused() {
    let rng = &mut rng(10);
    let (shares, _) = dkg(2, 3, ScriptTree::KeyPathOnly, rng);
    let (_, other) = dkg(2, 3, ScriptTree::KeyPathOnly, rng);
    assert!(matches!(
        shares[&seat(1)].check_wallet(&other),
        Err(Error::WrongWallet { .. })
    ));
}

/// Repair values are secrets and zeroized on drop; frost's `Delta`/`Sigma`
/// are `Copy` with no `Drop`, so the wrappers must bring their own.
#[test]
fn repair_values_are_zeroized_on_drop() {
    let mut missing = Vec::new();
    if !std::mem::needs_drop::<RepairDelta>() {
        missing.push("RepairDelta");
    }
    if !std::mem::needs_drop::<RepairSigma>() {
        missing.push("RepairSigma");
    }
    assert!(missing.is_empty(), "no drop glue at all for {missing:?}");
}

/// DESIGN.md §2: a key-path DKG wallet's internal key is P, the sum of every
/// member's round-1 constant-term commitment. Computed here from the
/// round-1 packages' bytes with libsecp256k1, independently of the crate.
#[test]
fn dkg_internal_key_is_the_sum_of_round1_constant_terms() {
    let rng = &mut rng(12);
    let (t, n) = (3u16, 5u16);
    let params = GroupParams::new(t, n).unwrap();
    let started: Vec<_> = params
        .seats()
        .map(|s| DkgRound1::start(params, s, ScriptTree::KeyPathOnly, rng).unwrap())
        .collect();
    let mut constant_terms = Vec::new();
    for (_, package) in &started {
        let bytes = package.to_bytes().unwrap();
        // Layout: header (5), coefficient count (1), t compressed points (33
        // each), proof of knowledge (R 33, z 32).
        assert_eq!(bytes.len(), 5 + 1 + 33 * usize::from(t) + 33 + 32);
        assert_eq!(bytes[5], u8::try_from(t).unwrap());
        constant_terms.push(secp256k1::PublicKey::from_slice(&bytes[6..39]).unwrap());
    }
    let (_, wallet) = run_rounds(started).unwrap();
    let refs: Vec<&secp256k1::PublicKey> = constant_terms.iter().collect();
    let p = secp256k1::PublicKey::combine_keys(&refs).unwrap();
    let (p_x, _) = p.x_only_public_key();
    assert_eq!(wallet.internal_key().to_bytes(), p_x.serialize());
    // And the output key is its BIP341 key-path tweak, by libsecp256k1.
    let tag = sha256(b"TapTweak");
    let tweak = sha256(&[&tag[..], &tag[..], &p_x.serialize()[..]].concat());
    let secp = secp256k1::Secp256k1::new();
    let tweak = secp256k1::Scalar::from_be_bytes(tweak).unwrap();
    let (q, _) = p_x.add_tweak(&secp, &tweak).unwrap();
    assert_eq!(wallet.output_key().to_bytes(), q.serialize());
}

fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).into()
}
