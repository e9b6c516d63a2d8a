//! The wallet epoch on the wire (DESIGN.md §4): the generation of a
//! wallet's key shares, 0 after the DKG and the same at every member,
//! whatever each member's store did. Stores rotate their DEK and KEK at
//! different times, and a new wallet is made after some of them; every
//! member still signs every wallet for every coordinator.

mod common;

use common::dkg::*;
use common::*;
use thresig_engine::{Error, ErrorCode, Limits, WalletEpoch};
use thresig_store::{Store, WriteOp, WriteOutcome};

const N: u16 = 3;

/// A cluster of `t`-of-3 signers configured with `wallets`, none keyed yet.
fn unkeyed(seed: u64, t: u16, wallets: &[&str]) -> Cluster {
    let specs: Vec<Spec> = wallets.iter().map(|w| Spec::new(w, Keys::None)).collect();
    Cluster::with_wallets(seed, t, N, &specs, Limits::default())
}

/// Runs a DKG of `wallet` (session `session`) at every member, delivers
/// every confirmation, and records the wallet's key for aggregation.
fn keyed_by_dkg(c: &mut Cluster, wallet: &str, session: u8) {
    let confirmations = through_part3(c, wallet, session);
    for s in seats(c) {
        assert!(deliver(c, s, wallet, &confirmations), "seat {s} inactive");
    }
    let key = c.member(1).signer().wallet_key(&wid(wallet)).unwrap();
    c.keys.insert(wid(wallet), key);
}

/// Every signer set of at least `t` members that includes `coord`.
fn sets_with(coord: u16, t: u16) -> Vec<Vec<u16>> {
    (0u16..1 << N)
        .map(|mask| {
            (1..=N)
                .filter(|s| mask & (1 << (s - 1)) != 0)
                .collect::<Vec<_>>()
        })
        .filter(|set| set.len() >= usize::from(t) && set.contains(&coord))
        .collect()
}

/// Each member in turn coordinates a signing of `wallet` by every signer
/// set it belongs to, with the epoch its own signer reports; every member
/// reports the DKG's epoch.
fn signs_from_every_seat(c: &mut Cluster, wallet: &str, tag: u8) {
    let t = c.threshold;
    for coord in seats(c) {
        for set in sets_with(coord, t) {
            // A digest of its own for each signing.
            let mut digest = [tag; 32];
            digest[0] = u8::try_from(coord).unwrap();
            digest[1] = u8::try_from(set.len()).unwrap();
            digest[2] = u8::try_from(set[0]).unwrap();
            let signed = c.sign_as(coord, wallet, &set, &[digest]);
            let signatures = signed.unwrap_or_else(|(seat, err)| {
                panic!("{wallet}: seat {seat} refused coordinator {coord} for {set:?}: {err:?}")
            });
            assert_eq!(signatures.len(), 1);
        }
        assert_eq!(c.epoch_at(coord, wallet), WalletEpoch(0), "seat {coord}");
    }
}

#[test]
fn members_with_different_rotation_histories_sign_for_every_coordinator() {
    let mut c = unkeyed(300, 2, &["early", "late"]);
    // Before any DKG, seat 1 rotates its DEK and seat 2 its KEK.
    c.rotate_dek(1);
    c.rotate_kek(2, "kek-2b", 0x2b);
    keyed_by_dkg(&mut c, "early", 1);
    signs_from_every_seat(&mut c, "early", 1);
    // After it, seat 3 rotates both and seat 1 its DEK again; seat 2
    // restarts.
    c.rotate_dek(3);
    c.rotate_kek(3, "kek-3b", 0x3b);
    c.rotate_dek(1);
    c.restart(2);
    signs_from_every_seat(&mut c, "early", 2);
    // A wallet made after the rotations, then everyone restarts.
    keyed_by_dkg(&mut c, "late", 2);
    for s in 1..=N {
        c.restart(s);
    }
    signs_from_every_seat(&mut c, "early", 3);
    signs_from_every_seat(&mut c, "late", 4);
}

#[test]
fn with_t_equal_n_a_member_that_rotated_still_signs_every_wallet() {
    // One refusing member leaves no quorum: every member must agree.
    let mut c = unkeyed(301, 3, &["before", "after"]);
    c.rotate_dek(2);
    keyed_by_dkg(&mut c, "before", 1);
    c.rotate_kek(3, "kek-3b", 0x3b);
    c.rotate_dek(3);
    keyed_by_dkg(&mut c, "after", 2);
    c.restart(2);
    for wallet in ["before", "after"] {
        signs_from_every_seat(&mut c, wallet, 5);
    }
}

/// The store's own epoch of a wallet (moved by keyring changes and policy
/// versions, anti-rollback only) is not the wallet epoch: a bump of it at
/// one member changes nothing on the wire.
#[test]
fn a_store_epoch_bump_at_one_member_leaves_the_wallet_epoch() {
    let mut c = unkeyed(302, 2, &["w"]);
    keyed_by_dkg(&mut c, "w", 1);
    let w = wid("w");
    let store = c.member(1).store();
    let before = store.wallet_epoch(&w).unwrap().unwrap();
    let out = store
        .write(vec![WriteOp::BumpWalletEpoch { wallet: w.clone() }])
        .unwrap();
    assert!(matches!(out, WriteOutcome::Committed(_)), "{out:?}");
    assert_ne!(c.member(1).store().wallet_epoch(&w).unwrap(), Some(before));
    signs_from_every_seat(&mut c, "w", 6);
    // A request naming another wallet epoch is still refused.
    let err = c
        .sign_at_epoch(1, WalletEpoch(1), "w", &[1, 2], &[[7; 32]])
        .unwrap_err();
    assert!(matches!(err, (1, Error::StaleEpoch { .. })), "{err:?}");
    assert_eq!(err.1.code(), ErrorCode::StaleEpoch);
}
