//! Per-wallet sharding: a long operation on one wallet does not block another.

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::mpsc::channel;
use std::time::Duration;

use common::*;

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
        // Wallet A's round 2 now holds A's lock inside its marker commit.
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
