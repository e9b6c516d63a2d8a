//! Engine throughput: one signer's round 1 + round 2 for a one-input
//! attempt, with 1 and 1,000 wallets configured (2-of-3, in-memory store);
//! and what the identity signature of a round-2 answer adds: the member's
//! signing of its answer, the coordinator's check of it (docs/blame.md).
//!
//! Run: `cargo bench -p thresig-engine --bench engine`.
#![allow(missing_docs, clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use thresig_engine::test_util::cluster::*;
use thresig_engine::{Limits, WalletConfig, package_hash};

fn rounds(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine_round1_round2");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(5));
    for wallets in [1usize, 1000] {
        let names: Vec<String> = (0..wallets).map(|i| format!("w{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut cluster = Cluster::new(7, 2, 3, &refs, Limits::default());
        let mut next = 0usize;
        group.bench_function(format!("{wallets}_wallets"), |b| {
            b.iter(|| {
                let wallet = refs[next % refs.len()];
                next += 1;
                let mine = cluster.round1(1, COORD_A, wallet, 1).unwrap();
                let partner = cluster.round1(2, COORD_A, wallet, 1).unwrap();
                let comms: BTreeMap<u16, _> = [(1, mine), (2, partner)].into();
                let req = cluster.request(wallet, &comms, &[[5; 32]]);
                cluster.round2(1, &req).unwrap()
            });
        });
    }
    group.finish();
}

fn answer_signature(c: &mut Criterion) {
    let mut group = c.benchmark_group("round2_answer_signature");
    group.measurement_time(Duration::from_secs(3));
    let mut cluster = Cluster::new(7, 2, 3, &["w"], Limits::default());
    let mine = cluster.round1(1, COORD_A, "w", 1).unwrap();
    let partner = cluster.round1(2, COORD_A, "w", 1).unwrap();
    let comms: BTreeMap<u16, _> = [(1, mine), (2, partner)].into();
    let req = cluster.request("w", &comms, &[[5; 32]]);
    let answer = cluster.round2_reply(1, &req).unwrap();
    let key = identity_secret(1);
    let config = WalletConfig::new(wid("w"), 2, (1..=3).map(identity).collect());
    let record = cluster.keys[&wid("w")].to_bytes().unwrap();
    group.bench_function("sign", |b| {
        b.iter(|| {
            let mut signed = answer.clone();
            signed.sign(&key, &package_hash(&req), &record);
            signed
        });
    });
    group.bench_function("verify", |b| {
        b.iter(|| assert!(answer.signed_for(&config, &package_hash(&req), &record)));
    });
    group.finish();
}

criterion_group!(benches, rounds, answer_signature);
criterion_main!(benches);
