//! Kill -9 a random signer process at random moments during a stream of
//! ROAST signings, restart it, and check afterwards, from every signer's
//! own markers, that no signer released shares for two different packages
//! under one nonce commitment.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitcoin::hashes::Hash as _;
use bitcoin::{Amount, OutPoint, Txid};
use common::{ProcessCluster, WALLET, seat, wait_ready};
use rand::Rng as _;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use thresig_cluster::config::Config;
use thresig_cluster::{OwnWallet, SignOptions, sign};
use thresig_crypto::{Seat, SigningPackage};
use thresig_engine::{Round2Request, commitment_hash, package_hash};
use thresig_store::provider::KeyProvider;
use thresig_store::{EncryptedStore, PackageHash, Store as _};
use thresig_tx::{Destination, Network, Payment, SpendInput, build_psbt};

const MEMBERS: u16 = 3;
const THRESHOLD: u16 = 2;
const SIGNINGS: usize = 8;
const KILLS: usize = 4;

#[test]
fn signing_survives_kill_9_and_no_commitment_signs_two_packages() {
    let seed = std::env::var("THRESIG_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7u64);
    eprintln!("seed {seed} (set THRESIG_CRASH_SEED to replay)");
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let destination = {
        let secret = bitcoin::secp256k1::SecretKey::from_slice(&[9; 32]).unwrap();
        let (x, _) = secret
            .public_key(bitcoin::secp256k1::SECP256K1)
            .x_only_public_key();
        thresig_tx::TaprootWallet::new(Network::Regtest, x, None).address()
    };
    // The stream signs until every kill happened, however long the
    // restarts take: the default daily limit (50 a day for one coordinator
    // at t = 2) would stop it first on a slow day.
    let mut cluster = ProcessCluster::provision_with_policy(MEMBERS, THRESHOLD, seed, |policy| {
        policy.destinations = vec![destination.to_string()];
        policy.max_per_day = Some(thresig_tx::MAX_PER_DAY_CEILING);
    });
    let runtime = tokio::runtime::Runtime::new().unwrap();
    cluster.start_all(&runtime);
    let (
        peers,
        wallet,
        OwnWallet {
            key, epoch, spend, ..
        },
    ) = cluster.dkg_from_first(&runtime, &mut rng);

    let journal: Arc<Mutex<Vec<(Seat, Round2Request)>>> = Arc::default();
    let mut options = SignOptions::default();
    // A killed member is noticed within a second; the run's deadline is
    // far beyond a restart.
    options.request_timeout = Duration::from_secs(1);
    let record = journal.clone();
    options.journal = Some(Arc::new(move |member, request: &Round2Request| {
        record.lock().unwrap().push((member, request.clone()));
    }));

    let cluster = Arc::new(Mutex::new(cluster));
    let killer = {
        let cluster = cluster.clone();
        let peers = peers.clone();
        let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x9e37);
        runtime.spawn(async move {
            for _ in 0..KILLS {
                // Random moments: the delay only spreads the kills over the
                // stream; nothing waits on it for correctness.
                tokio::time::sleep(Duration::from_millis(rng.gen_range(20..400))).await;
                let victim = seat(rng.gen_range(1..=MEMBERS));
                {
                    let mut c = cluster.lock().unwrap();
                    c.local.kill(victim).unwrap();
                    c.local.start(victim).unwrap();
                }
                wait_ready(&peers, victim).await;
            }
        })
    };
    // The stream goes on until every kill happened during it, and at least
    // SIGNINGS signatures were made.
    let mut signed = 0;
    while signed < SIGNINGS || !killer.is_finished() {
        let i = signed;
        let mut txid = [0; 32];
        txid[..8].copy_from_slice(&u64::try_from(i).unwrap().to_be_bytes());
        let input = SpendInput {
            outpoint: OutPoint::new(Txid::from_byte_array(txid), 0),
            value: Amount::from_sat(50_000),
            script_pubkey: spend.script_pubkey().clone(),
        };
        let payment = Payment {
            destination: Destination::Address(destination.clone()),
            value: Amount::from_sat(49_000),
        };
        let psbt = build_psbt(
            &spend,
            &[input],
            &[payment],
            bitcoin::absolute::LockTime::ZERO,
        )
        .unwrap();
        let outcome = runtime
            .block_on(sign(&peers, &wallet, &key, epoch, &psbt, &options))
            .unwrap_or_else(|e| panic!("signing {i} failed: {e}"));
        assert_eq!(outcome.signatures.len(), 1);
        signed += 1;
    }
    runtime.block_on(killer).unwrap();
    assert!(signed >= SIGNINGS);

    // A coordinator now tries, for the latest requests, to get the same
    // nonce commitments to sign another package (the same signer's
    // commitment, another co-signer's fresh one): every member refuses,
    // however its restarts fell.
    let latest: Vec<(Seat, Round2Request)> = journal
        .lock()
        .unwrap()
        .iter()
        .rev()
        .take(6)
        .cloned()
        .collect();
    runtime.block_on(async {
        for (member, request) in latest {
            let package = SigningPackage::from_bytes(&request.packages[0].0).unwrap();
            let message: [u8; 32] = package.message().try_into().unwrap();
            let other = package
                .signers()
                .into_iter()
                .find(|s| *s != member)
                .unwrap();
            let fresh = peers
                .client(other)
                .await
                .unwrap()
                .round1(thresig_engine::Round1Request::new(wallet.id().clone(), 1))
                .await
                .unwrap();
            let mut commitments = BTreeMap::new();
            commitments.insert(member, package.commitment(member).unwrap());
            commitments.insert(
                other,
                thresig_crypto::Commitment::from_bytes(&fresh.commitments[0].0).unwrap(),
            );
            let conflicting = SigningPackage::new(&commitments, &message).unwrap();
            let mut forged = request.clone();
            forged.packages = vec![thresig_engine::HexBytes(conflicting.to_bytes())];
            let err = peers
                .client(member)
                .await
                .unwrap()
                .round2(forged)
                .await
                .expect_err("a second package under one commitment must be refused");
            let thresig_daemon::Error::Refused(refusal) = err else {
                panic!("expected a refusal, got {err}")
            };
            assert!(
                ["session_conflict", "nonce_unknown"].contains(&refusal.code.as_str()),
                "{refusal}"
            );
        }
    });
    let mut cluster = Arc::try_unwrap(cluster).ok().unwrap().into_inner().unwrap();
    assert_eq!(cluster.local.stop_all().unwrap(), Vec::<Seat>::new());

    // Every store opens, and its markers show one package per commitment.
    let journal = journal.lock().unwrap();
    let mut released = 0;
    for m in 1..=MEMBERS {
        let member = seat(m);
        let config = Config::load(&cluster.config_path(member)).unwrap();
        let provider: Arc<dyn KeyProvider> = Arc::new(config.key_provider.open().unwrap());
        let store = EncryptedStore::open(config.location(), provider, config.options.clone())
            .unwrap_or_else(|e| panic!("member {member}'s store does not open: {e}"));
        let store_wallet = thresig_store::WalletId::new(WALLET).unwrap();
        let mut signed_under: BTreeMap<thresig_store::CommitmentHash, PackageHash> =
            BTreeMap::new();
        for (to, request) in journal.iter().filter(|(to, _)| *to == member) {
            let mine: Vec<_> = request
                .packages
                .iter()
                .map(|p| {
                    let package = SigningPackage::from_bytes(&p.0).unwrap();
                    commitment_hash(&package.commitment(*to).unwrap())
                })
                .collect();
            let Some(marker) = store.marker(&store_wallet, &mine[0]).unwrap() else {
                continue;
            };
            let hash = package_hash(request);
            if marker.package_hash != hash {
                continue;
            }
            released += 1;
            for commitment in mine {
                if let Some(other) = signed_under.insert(commitment, hash) {
                    assert_eq!(
                        other, hash,
                        "member {member} released shares for two packages under one commitment"
                    );
                }
            }
        }
        store.shutdown();
    }
    assert!(released >= SIGNINGS * usize::from(THRESHOLD), "{released}");
}
