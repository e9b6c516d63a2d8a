//! A coordinator that keeps commitment vectors between runs
//! (`CommitmentPool`) while one of the members it keeps them for is
//! killed with kill -9 and started again: the restarted signer holds none
//! of those nonces, and the next runs must still sign without holding its
//! `nonce_unknown` against it (docs/DESIGN.md, "Why may a coordinator keep
//! commitments between runs?").

mod common;

use std::sync::Arc;

use bitcoin::hashes::Hash as _;
use bitcoin::{Amount, OutPoint, Txid};
use common::{ProcessCluster, seat, wait_ready};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use thresig_cluster::{CommitmentPool, OwnWallet, SignOptions, SignOutcome, sign};
use thresig_tx::{Destination, Payment, SpendInput, TaprootWallet, WalletPsbt, build_psbt};

/// A payment of the wallet `spend` to itself from a synthetic output whose
/// txid is 32 bytes of `byte`: a different `byte`, a different
/// transaction, so no two runs sign one message.
fn self_payment(spend: &TaprootWallet, byte: u8) -> WalletPsbt {
    let input = SpendInput {
        outpoint: OutPoint::new(Txid::from_byte_array([byte; 32]), 0),
        value: Amount::from_sat(60_000),
        script_pubkey: spend.script_pubkey().clone(),
    };
    let payment = Payment {
        destination: Destination::Address(spend.address()),
        value: Amount::from_sat(59_000),
    };
    build_psbt(
        spend,
        &[input],
        &[payment],
        bitcoin::absolute::LockTime::ZERO,
    )
    .unwrap()
}

/// Checks that `outcome` holds one BIP340 signature of `psbt`'s one input
/// that verifies under the wallet's output key.
fn assert_signed(outcome: &SignOutcome, psbt: &WalletPsbt, spend: &TaprootWallet) {
    let sighashes = psbt.wallet_sighashes().unwrap();
    assert_eq!(sighashes.len(), 1);
    assert_eq!(outcome.signatures.len(), 1, "{outcome:?}");
    let message = bitcoin::secp256k1::Message::from_digest(sighashes[0].sighash.to_byte_array());
    let signature =
        bitcoin::secp256k1::schnorr::Signature::from_slice(&outcome.signatures[0]).unwrap();
    let key = spend.output_key().to_x_only_public_key();
    bitcoin::secp256k1::SECP256K1
        .verify_schnorr(&signature, &message, &key)
        .unwrap();
}

/// Member 2's kept vector goes into the first session of the run after
/// its restart; its `nonce_unknown` costs that session and scores nothing,
/// and the run after that signs in one session.
#[test]
fn a_member_restarted_between_pooled_runs_is_not_held_to_its_kept_vectors() {
    let restarted = seat(2);
    let mut cluster = ProcessCluster::provision(3, 2, &[], 31);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    cluster.start_all(&runtime);
    let mut rng = ChaCha20Rng::seed_from_u64(31);
    let (
        peers,
        wallet,
        OwnWallet {
            key, epoch, spend, ..
        },
    ) = cluster.dkg_from_first(&runtime, &mut rng);
    let mut pooled = SignOptions::default();
    pooled.pool = Some(Arc::new(CommitmentPool::default()));
    let run = |options: &SignOptions, byte: u8| {
        let psbt = self_payment(&spend, byte);
        let outcome = runtime
            .block_on(sign(&peers, &wallet, &key, epoch, &psbt, options))
            .unwrap_or_else(|e| panic!("run {byte} failed: {e}"));
        assert_signed(&outcome, &psbt, &spend);
        outcome
    };

    // Member 3 is left out of the first run (as if quarantined), so the
    // pool keeps vectors for members 1 and 2 only, the share vectors'
    // next commitments: the second run's first session is certainly
    // theirs, and meets the restarted member's forgotten vector.
    let mut member_3_deferred = pooled.clone();
    member_3_deferred.deferred = [seat(3)].into();
    let first = run(&member_3_deferred, 1);
    assert_eq!(first.signers, vec![seat(1), restarted], "{first:?}");
    assert_eq!(first.sessions, 1, "{first:?}");
    assert!(first.observed.faults.is_empty(), "{:?}", first.observed);

    cluster.local.kill(restarted).unwrap();
    cluster.local.start(restarted).unwrap();
    runtime.block_on(wait_ready(&peers, restarted));

    // The kept vector's refusal costs its session: the member is
    // unresponsive in it, yet scored for nothing.
    let second = run(&pooled, 2);
    assert_eq!(second.sessions, 2, "{second:?}");
    assert_eq!(second.unresponsive, vec![restarted], "{second:?}");
    assert!(second.culprits.is_empty(), "{second:?}");
    assert!(second.observed.faults.is_empty(), "{:?}", second.observed);
    assert!(second.observed.asked.contains(&restarted), "{second:?}");

    // The pool, rid of the forgotten vectors, starts the next run with
    // vectors their signers still hold: members 1 and 3's (it keeps none
    // of member 2's for a minute after its refusal).
    let third = run(&pooled, 3);
    assert_eq!(third.sessions, 1, "{third:?}");
    assert_eq!(third.signers, vec![seat(1), seat(3)], "{third:?}");
    assert!(third.unresponsive.is_empty(), "{third:?}");
    assert!(third.observed.faults.is_empty(), "{:?}", third.observed);

    assert_eq!(cluster.local.stop_all().unwrap(), Vec::new());
}
