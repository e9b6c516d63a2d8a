//! Signer open time with many stored 51-of-100 wallets.
//!
//! Stores N wallets in a real encrypted store on disk (a temporary
//! directory, fsync on), closes it, then measures what a restart pays:
//! opening the store (keyring unwrap, witness check) and
//! [`thresig_engine::Signer::open`] over it, and then the first status of
//! every wallet, which is what loads a wallet's key material.
//!
//! Every wallet holds the same trusted-dealer split (seat 1's share of one
//! 51-of-100 key) under its own wallet id: the records, their sizes and the
//! checks at load are those of distinct wallets, and splitting 10,000 keys
//! would only make the setup slower.
//!
//! Run: `cargo bench -p thresig-engine --bench open` (1,000 and 10,000
//! wallets; other sizes as arguments after `--`; `TMPDIR` chooses the
//! filesystem). Without `--bench` (as under
//! `cargo test --benches`) it runs a smoke pass of 20 wallets. Results:
//! `docs/BENCHMARKS.md` (section "Engine: signer open").
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use thresig_crypto::{GroupParams, KeyShare, ScriptTree, WalletKey, import_key};
use thresig_engine::test_util::activation_ops;
use thresig_engine::test_util::cluster::{identity, identity_secret, wid};
use thresig_engine::{Limits, Signer, SignerConfig, WalletConfig, WalletStateKind};
use thresig_store::provider::{KeyProvider, MemoryProvider};
use thresig_store::{EncryptedStore, Store, StoreLocation, StoreOptions, WriteOutcome};
use thresig_tx::Network;

const THRESHOLD: u16 = 51;
const MEMBERS: u16 = 100;
/// Wallets activated per store commit while filling the store.
const PER_COMMIT: usize = 250;

fn name(i: usize) -> String {
    format!("wallet-{i:05}")
}

fn open_store(dir: &std::path::Path, provider: &Arc<dyn KeyProvider>) -> EncryptedStore {
    let open = if dir.join("state.redb").exists() {
        EncryptedStore::open
    } else {
        EncryptedStore::create
    };
    open(
        StoreLocation::Directory(dir.to_owned()),
        provider.clone(),
        StoreOptions::default(),
    )
    .unwrap()
}

/// Stores `wallets` active wallets, each with `key` and seat 1's `share`.
fn fill(store: &EncryptedStore, wallets: usize, key: &WalletKey, share: &KeyShare) {
    let names: Vec<String> = (0..wallets).map(name).collect();
    for chunk in names.chunks(PER_COMMIT) {
        let ops = chunk
            .iter()
            .flat_map(|n| activation_ops(&wid(n), key, share).unwrap())
            .collect();
        let outcome = store.write(ops).unwrap();
        assert!(matches!(outcome, WriteOutcome::Committed(_)), "{outcome:?}");
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let asked: Vec<usize> = std::env::args().filter_map(|a| a.parse().ok()).collect();
    let sizes = match (asked.is_empty(), full) {
        (false, _) => asked,
        (true, true) => vec![1_000, 10_000],
        (true, false) => vec![20],
    };
    let mut rng = ChaCha20Rng::seed_from_u64(51);
    let params = GroupParams::new(THRESHOLD, MEMBERS).unwrap();
    let (key, shares) = import_key(&[7; 32], params, ScriptTree::KeyPathOnly, &mut rng).unwrap();
    let share = &shares[0];
    let roster: Vec<_> = (1..=MEMBERS).map(identity).collect();

    println!(
        "| wallets (51-of-100) | store open | `Signer::open` | first status of every wallet |"
    );
    println!("|---:|---:|---:|---:|");
    for wallets in sizes {
        let dir = tempfile::tempdir().unwrap();
        let provider: Arc<dyn KeyProvider> = Arc::new(MemoryProvider::with_key("kek-1", 1));
        let store = open_store(dir.path(), &provider);
        fill(&store, wallets, &key, share);
        store.shutdown();
        drop(store);

        let configs = (0..wallets)
            .map(|i| WalletConfig::new(wid(&name(i)), THRESHOLD, roster.clone()))
            .collect();
        let config = SignerConfig::new(identity(1), Network::Regtest, configs, Limits::default());

        let start = Instant::now();
        let store = Arc::new(open_store(dir.path(), &provider));
        let store_open = start.elapsed();
        let start = Instant::now();
        let signer = Signer::open(config, identity_secret(1), store.clone()).unwrap();
        let signer_open = start.elapsed();
        let start = Instant::now();
        let statuses = signer.wallets().unwrap();
        let first_status = start.elapsed();
        assert_eq!(statuses.len(), wallets);
        assert!(
            statuses.iter().all(|s| s.state == WalletStateKind::Active),
            "every stored wallet opens active"
        );
        println!(
            "| {wallets} | {} | {} | {} |",
            secs(store_open),
            secs(signer_open),
            secs(first_status)
        );
        drop(signer);
        store.shutdown();
    }
}
