//! Criterion benchmarks of the threshold operations at (t, n) = (2, 3), (11, 15), (51, 100).
//!
//! `cargo bench -p thresig-crypto --bench crypto`
//! The (51, 100) DKG (about 80 s of CPU) is not sampled here; it is timed once by
//! `cargo bench -p thresig-crypto --bench dkg_large`.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use thresig_crypto::*;

fn dkg(params: GroupParams, rng: &mut ChaCha20Rng) -> LocalGroup {
    dkg_in_process(params, ScriptTree::KeyPathOnly, rng).unwrap()
}

fn import(params: GroupParams, rng: &mut ChaCha20Rng) -> LocalGroup {
    let (wallet, shares) = import_key(&[0x42; 32], params, ScriptTree::KeyPathOnly, rng).unwrap();
    (shares.into_iter().map(|s| (s.seat(), s)).collect(), wallet)
}

fn bench(c: &mut Criterion) {
    let rng = &mut ChaCha20Rng::seed_from_u64(7);
    let message = [0x5a; 32];
    for (t, n) in [(2u16, 3u16), (11, 15), (51, 100)] {
        let params = GroupParams::new(t, n).unwrap();
        let label = format!("{t}-of-{n}");
        if n <= 15 {
            c.bench_function(&format!("dkg_all_members/{label}"), |b| {
                b.iter(|| dkg(params, rng))
            });
        }
        // Signing cost does not depend on how the shares were made; the dealer
        // split keeps setup fast at (51, 100).
        let (shares, wallet) = import(params, rng);
        let signers: Vec<Seat> = params.seats().take(usize::from(t)).collect();
        let share1 = &shares[&signers[0]];
        c.bench_function(&format!("round1_commit/{label}"), |b| {
            b.iter(|| commit(share1, rng))
        });

        let mut nonces = Vec::new();
        let mut commitments = BTreeMap::new();
        for s in &signers {
            let (nonce, cm) = commit(&shares[s], rng);
            nonces.push(nonce);
            commitments.insert(*s, cm);
        }
        let package = SigningPackage::new(&commitments, &message).unwrap();
        c.bench_with_input(BenchmarkId::new("round2_sign", &label), &(), |b, ()| {
            b.iter_batched(
                || {
                    // A fresh nonce per iteration, its commitment swapped into the package.
                    let (nonce, cm) = commit(share1, &mut ChaCha20Rng::seed_from_u64(1));
                    let mut cs = commitments.clone();
                    cs.insert(share1.seat(), cm);
                    (nonce, SigningPackage::new(&cs, &message).unwrap())
                },
                |(nonce, pkg)| sign(nonce, &pkg, share1, &wallet).unwrap(),
                criterion::BatchSize::SmallInput,
            )
        });
        let sig_shares: BTreeMap<Seat, SignatureShare> = nonces
            .into_iter()
            .map(|nonce| {
                let s = nonce.seat();
                (s, sign(nonce, &package, &shares[&s], &wallet).unwrap())
            })
            .collect();
        c.bench_function(&format!("verify_one_share/{label}"), |b| {
            b.iter(|| {
                verify_share(&wallet, &package, signers[0], &sig_shares[&signers[0]]).unwrap()
            })
        });
        // The coordinator's path: the session's values once per package,
        // then three scalar multiplications per share.
        c.bench_function(&format!("prepare_package/{label}"), |b| {
            b.iter(|| PreparedPackage::new(&wallet, package.clone()).unwrap())
        });
        let prepared = PreparedPackage::new(&wallet, package.clone()).unwrap();
        c.bench_function(&format!("verify_prepared_share/{label}"), |b| {
            b.iter(|| {
                prepared
                    .verify(signers[0], &sig_shares[&signers[0]])
                    .unwrap()
            })
        });
        c.bench_function(&format!("aggregate_valid/{label}"), |b| {
            b.iter(|| aggregate(&wallet, &package, &sig_shares).unwrap())
        });
        // The coordinator's aggregation: the shares summed with the prepared
        // session's group commitment, one BIP340 check.
        c.bench_function(&format!("aggregate_prepared/{label}"), |b| {
            b.iter(|| prepared.aggregate(&sig_shares).unwrap())
        });
        // One invalid share: frost then verifies every share to name all culprits.
        let mut with_cheater = sig_shares.clone();
        let forged = sig_shares[&signers[1]];
        with_cheater.insert(signers[0], forged);
        c.bench_function(&format!("aggregate_blaming_invalid_share/{label}"), |b| {
            b.iter(|| aggregate(&wallet, &package, &with_cheater).unwrap_err())
        });
        c.bench_function(
            &format!("aggregate_prepared_blaming_invalid_share/{label}"),
            |b| b.iter(|| prepared.aggregate(&with_cheater).unwrap_err()),
        );
        let sig = aggregate(&wallet, &package, &sig_shares).unwrap();
        let key = wallet.output_key();
        c.bench_function(&format!("final_verify/{label}"), |b| {
            b.iter(|| verify(&key, &message, &sig).unwrap())
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
