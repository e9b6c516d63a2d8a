//! One timed DKG at (51, 100), all parts for all members in one process.
//! Ignored by default (about 80 s of CPU). Run with:
//! `cargo test -p thresig-crypto --release --test dkg_large -- --ignored --nocapture`

mod common;

use std::time::Instant;

use common::*;
use thresig_crypto::*;

#[test]
#[ignore = "about 80 s of CPU; run explicitly for docs/BENCHMARKS.md"]
fn dkg_51_of_100_timed_once() {
    let rng = &mut rng(51);
    let start = Instant::now();
    let (shares, wallet) = dkg(51, 100, ScriptTree::KeyPathOnly, rng);
    let elapsed = start.elapsed();
    println!("dkg_all_members/51-of-100: {:.1} s", elapsed.as_secs_f64());
    let signers: Vec<Seat> = (1..=51).map(seat).collect();
    sign_all(&shares, &wallet, &signers, &[1; 32], rng);
}
