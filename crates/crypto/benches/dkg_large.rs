//! One timed DKG at (51, 100), all parts for all members in one process,
//! then one timed share refresh of its key, each followed by a 51-signer
//! signature checked under the output key, then one timed repair of seat
//! 100 by helpers 1 to 51 (all three steps for all helpers, every check);
//! about two minutes of CPU, not sampled by criterion. Run with:
//! `cargo bench -p thresig-crypto --bench dkg_large`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Instant;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use thresig_crypto::*;

fn main() {
    let rng = &mut ChaCha20Rng::seed_from_u64(51);
    let params = GroupParams::new(51, 100).unwrap();
    let start = Instant::now();
    let (shares, wallet) = dkg_in_process(params, ScriptTree::KeyPathOnly, rng).unwrap();
    let elapsed = start.elapsed();
    println!("dkg_all_members/51-of-100: {:.1} s", elapsed.as_secs_f64());
    signs(&shares, &wallet, rng);

    let start = Instant::now();
    let started = shares
        .values()
        .map(|share| DkgRound1::refresh(share, &wallet, &[], rng))
        .collect::<Result<Vec<_>>>()
        .unwrap();
    let (refreshed, same) = run_in_process(started).unwrap();
    let elapsed = start.elapsed();
    println!(
        "refresh_all_members/51-of-100: {:.1} s",
        elapsed.as_secs_f64()
    );
    assert_eq!(same.output_key(), wallet.output_key());
    signs(&refreshed, &same, rng);
    repairs(&refreshed, &same, rng);
}

/// The result is a working wallet: 51 signers sign.
fn signs(shares: &BTreeMap<Seat, KeyShare>, wallet: &WalletKey, rng: &mut ChaCha20Rng) {
    let message = [1u8; 32];
    let mut nonces = Vec::new();
    let mut commitments = BTreeMap::new();
    for share in shares.values().take(51) {
        let (nonce, commitment) = commit(share, rng);
        nonces.push(nonce);
        commitments.insert(share.seat(), commitment);
    }
    let package = SigningPackage::new(&commitments, &message).unwrap();
    let mut sig_shares = BTreeMap::new();
    for nonce in nonces {
        let seat = nonce.seat();
        let share = sign(nonce, &package, &shares[&seat], wallet).unwrap();
        sig_shares.insert(seat, share);
    }
    let signature = aggregate(wallet, &package, &sig_shares).unwrap();
    verify(&wallet.output_key(), &message, &signature).unwrap();
}

/// Repair of seat 100 by the first 51 members, timed.
fn repairs(shares: &BTreeMap<Seat, KeyShare>, wallet: &WalletKey, rng: &mut ChaCha20Rng) {
    // Repair of seat 100 by the first 51 members: every helper's deals and
    // sums, and the repaired member's checks and rebuild.
    let lost = Seat::try_from(100).unwrap();
    let helpers: Vec<Seat> = (1..=51).map(|s| Seat::try_from(s).unwrap()).collect();
    let start = Instant::now();
    let mut inbox: BTreeMap<Seat, Vec<(Seat, RepairDelta)>> = BTreeMap::new();
    let mut published = BTreeMap::new();
    for h in &helpers {
        let out = repair_step1(&shares[h], wallet, &helpers, lost, rng).unwrap();
        published.insert(*h, out.commitments().clone());
        for (to, delta) in out.into_deltas() {
            inbox.entry(to).or_default().push((*h, delta));
        }
    }
    let dealt = start.elapsed();
    let sigmas: Vec<(Seat, RepairSigma)> = inbox
        .into_iter()
        .map(|(me, received)| (me, repair_step2(me, received, &published).unwrap()))
        .collect();
    let summed = start.elapsed();
    let rebuilt = repair_step3(sigmas, &published, lost, wallet).unwrap();
    let finished = start.elapsed();
    assert_eq!(rebuilt.seat(), lost);
    println!(
        "repair/51-of-100: {:.2} s (deal {:.2} s, sum {:.2} s, finish {:.2} s)",
        finished.as_secs_f64(),
        dealt.as_secs_f64(),
        (summed - dealt).as_secs_f64(),
        (finished - summed).as_secs_f64()
    );
}
