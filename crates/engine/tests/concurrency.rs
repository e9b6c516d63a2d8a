//! Per-wallet sharding: a long operation on one wallet does not block another.

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use common::*;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{CryptoRng, RngCore, SeedableRng};
use thresig_crypto::ScriptTree;
use thresig_engine::{Error, Limits, Round1Request, Round1Response, Timestamp, WalletStateKind};

#[test]
fn a_parked_commit_on_wallet_a_does_not_block_wallet_b() {
    let mut c = Cluster::new(20, 2, 3, &["wa", "wb"], small_limits());
    let mut requests = BTreeMap::new();
    for wallet in ["wa", "wb"] {
        let comms = [1, 2]
            .into_iter()
            .map(|s| (s, c.round1(s, COORD_A, wallet, 1).unwrap()))
            .collect();
        requests.insert(wallet, c.request(wallet, &comms, &[[9; 32]]));
    }
    let (parked_tx, parked_rx) = channel();
    let (release_tx, release_rx) = channel();
    c.member(1)
        .store()
        .park_commit(&wid("wa"), parked_tx, release_rx);

    let requests = &requests;
    let events = Mutex::new(Vec::new());
    let signer = c.member(1).signer();
    let now = c.now;
    let mut rng = rand_chacha::ChaCha20Rng::clone(&c.rng);
    let mut rng_a = rand_chacha::ChaCha20Rng::clone(&c.rng);
    std::thread::scope(|scope| {
        let events = &events;
        let a = scope.spawn(move || {
            let result = signer.round2(now, coordinator(COORD_A), &requests["wa"], &mut rng_a);
            events.lock().unwrap().push("a done");
            result
        });
        // Wallet A's round 2 now holds A's lock, parked in the submission of
        // its marker unit.
        parked_rx.recv().unwrap();
        events.lock().unwrap().push("a parked");

        let (done_tx, done_rx) = channel();
        let rng = &mut rng;
        let b = scope.spawn(move || {
            let shares = signer
                .round2(now, coordinator(COORD_A), &requests["wb"], rng)
                .unwrap();
            let fresh = signer
                .round1(
                    now,
                    coordinator(COORD_B),
                    &thresig_engine::Round1Request::new(wid("wb"), 2),
                    rng,
                )
                .unwrap();
            let status = signer.status(&wid("wb")).unwrap();
            events.lock().unwrap().push("b done");
            done_tx.send(()).unwrap();
            (shares, fresh, status)
        });
        // A failure detector only: if B waited on A's lock, it would never
        // finish while A is parked.
        let finished = done_rx.recv_timeout(Duration::from_secs(60));
        events.lock().unwrap().push("a released");
        release_tx.send(()).unwrap();
        assert!(finished.is_ok(), "wallet B waited for wallet A");
        let (shares, fresh, status) = b.join().unwrap();
        assert_eq!(shares.shares.len(), 1);
        assert_eq!(fresh.commitments.len(), 2);
        // The fresh vector from round 2 (one nonce) and round 1's two.
        assert_eq!(status.live_nonces, 3);
        assert_eq!(a.join().unwrap().unwrap().shares.len(), 1);
    });
    assert_eq!(
        *events.lock().unwrap(),
        ["a parked", "b done", "a released", "a done"]
    );
}

/// A generator that, at its first use, reports on `parked` and waits on
/// `release`: a round 1 drawing from it stops inside its nonce draw.
struct ParkedRng {
    inner: ChaCha20Rng,
    park: Option<(Sender<()>, Receiver<()>)>,
}

impl ParkedRng {
    fn new(inner: ChaCha20Rng, parked: Sender<()>, release: Receiver<()>) -> Self {
        Self {
            inner,
            park: Some((parked, release)),
        }
    }

    fn wait(&mut self) {
        if let Some((parked, release)) = self.park.take() {
            parked.send(()).unwrap();
            release.recv().unwrap();
        }
    }
}

impl RngCore for ParkedRng {
    fn next_u32(&mut self) -> u32 {
        self.wait();
        self.inner.next_u32()
    }

    fn next_u64(&mut self) -> u64 {
        self.wait();
        self.inner.next_u64()
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.wait();
        self.inner.fill_bytes(dest);
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_chacha::rand_core::Error> {
        self.wait();
        self.inner.try_fill_bytes(dest)
    }
}

impl CryptoRng for ParkedRng {}

/// Runs `other` while coordinator A's round 1 of `inputs` nonces on
/// `wallet` is parked inside its nonce draw; returns what `other` returned
/// and A's reply once released.
fn while_round1_draws<T: Send>(
    signer: Via<'_, TestStore>,
    now: Timestamp,
    wallet: &str,
    inputs: usize,
    other: impl FnOnce() -> T + Send,
) -> (T, Result<Round1Response, Error>) {
    let (parked_tx, parked_rx) = channel();
    let (release_tx, release_rx) = channel();
    let mut rng = ParkedRng::new(ChaCha20Rng::seed_from_u64(1), parked_tx, release_rx);
    std::thread::scope(|scope| {
        let a = scope.spawn(move || {
            let req = Round1Request::new(wid(wallet), inputs);
            signer.round1(now, coordinator(COORD_A), &req, &mut rng)
        });
        // A's round 1 is now inside its nonce draw.
        parked_rx.recv().unwrap();
        let (done_tx, done_rx) = channel();
        let other = scope.spawn(move || {
            let out = other();
            done_tx.send(()).unwrap();
            out
        });
        // A failure detector only: if `other` waited on the wallet's lock,
        // it would never finish while A is parked.
        let finished = done_rx.recv_timeout(Duration::from_secs(60));
        release_tx.send(()).unwrap();
        assert!(finished.is_ok(), "a request waited for A's nonce draw");
        (other.join().unwrap(), a.join().unwrap())
    })
}

#[test]
fn a_round1_drawing_its_nonces_does_not_hold_up_other_members_on_the_wallet() {
    let mut c = Cluster::new(22, 2, 3, &["w"], small_limits());
    // The vector B's round 2 will use, issued before A parks.
    let comms = [1, 2]
        .into_iter()
        .map(|s| (s, c.round1(s, COORD_B, "w", 1).unwrap()))
        .collect();
    let request = c.request("w", &comms, &[[5; 32]]);
    let signer = c.member(1).signer();
    let now = c.now;
    // Another stream than A's: the same seed would draw the same nonces.
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let ((fresh, shares), a) = while_round1_draws(signer, now, "w", 4, || {
        let req = Round1Request::new(wid("w"), 2);
        let fresh = signer.round1(now, coordinator(COORD_B), &req, &mut rng);
        (
            fresh,
            signer.round2(now, coordinator(COORD_B), &request, &mut rng),
        )
    });
    assert_eq!(fresh.unwrap().commitments.len(), 2);
    assert_eq!(shares.unwrap().shares.len(), 1);
    assert_eq!(a.unwrap().commitments.len(), 4);
    // B's round 1 (2), round 2's fresh vector (1) and A's (4).
    assert_eq!(signer.status(&wid("w")).unwrap().live_nonces, 7);
}

#[test]
fn a_rekey_begun_during_a_round1_draw_keeps_its_nonces() {
    let specs = [
        Spec::new("old", Keys::Dkg(ScriptTree::KeyPathOnly)).successor("new"),
        Spec::new("new", Keys::Dkg(ScriptTree::KeyPathOnly)),
    ];
    let c = Cluster::with_wallets(23, 2, 3, &specs, Limits::default());
    let signer = c.member(1).signer();
    // The wallet's state changes between round 1's two lock sections; its
    // key does not, so the nonces drawn stay valid for the sweep.
    let (begun, a) =
        while_round1_draws(signer, c.now, "old", 3, || signer.begin_rekey(&wid("old")));
    begun.unwrap();
    assert_eq!(a.unwrap().commitments.len(), 3);
    let status = signer.status(&wid("old")).unwrap();
    assert_eq!(status.state, WalletStateKind::Rekeying);
    assert_eq!(status.live_nonces, 3);
}
