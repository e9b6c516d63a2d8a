//! The rate ledger is read at a time taken under the wallet's lock: a
//! request held up after it arrived counts the charges other requests
//! committed while it waited, however long that was.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::channel;

use common::psbt::*;
use common::*;
use thresig_crypto::ScriptTree;
use thresig_engine::{Error, Limits, Round2Request, Timestamp};
use thresig_tx::{PolicyConfig, Rule, Violation};

/// [`policy`] with two transactions a day: one for each coordinator of a
/// 2-of-n wallet.
fn one_a_day_each() -> PolicyConfig {
    let mut p = policy();
    p.max_per_day = Some(2);
    p
}

/// [`COORD_A`]'s round-2 request at seats 1 and 2 for a one-input spend.
fn request(c: &mut Cluster, salt: u8) -> Round2Request {
    let w = taproot(c, "w");
    let tx = spend(&w, 1, salt);
    psbt_request(c, "w", &[1, 2], &tx.serialize(), &sighashes(&tx)).0
}

fn denial(err: &Error) -> (Rule, Violation) {
    match err {
        Error::PolicyDenied { denial, .. } => (denial.rule, denial.violation.clone()),
        other => panic!("expected policy_denied, got {other:?}"),
    }
}

/// Request A arrives, and is held up before it takes the wallet's lock
/// (its first clock reading, on arrival, does not return) while the clock
/// moves 61 s on and B, from the same coordinator, is charged at the later
/// time and holds the lock in its marker commit. A then proceeds: checked
/// at its arrival it would see B's charge dated over a minute ahead, drop
/// it and be approved (storing the ledger without it); read under the
/// lock, the time counts B's charge, and A is over its coordinator's one
/// transaction a day.
#[test]
fn a_request_held_up_before_the_wallets_lock_counts_the_charge_made_meanwhile() {
    let specs = [Spec::new("w", Keys::Dkg(ScriptTree::KeyPathOnly)).policy(one_a_day_each())];
    let mut c = Cluster::with_wallets(53, 2, 3, &specs, Limits::default());
    let req_a = request(&mut c, 1);
    let req_b = request(&mut c, 2);
    let time = &AtomicU64::new(c.now.0);
    let clock = move || Timestamp(time.load(Ordering::SeqCst));
    let (arrived_tx, arrived_rx) = channel();
    let (proceed_tx, proceed_rx) = channel();
    let arrived = &AtomicBool::new(false);
    let clock_a = move || {
        let now = clock();
        if !arrived.swap(true, Ordering::SeqCst) {
            arrived_tx.send(now).unwrap();
            proceed_rx.recv().unwrap();
        }
        now
    };
    let (parked_tx, parked_rx) = channel();
    let (release_tx, release_rx) = channel();
    c.member(1)
        .store()
        .park_commit(&wid("w"), parked_tx, release_rx);
    let signer = c.member(1).signer();
    let (mut rng_a, mut rng_b) = (c.rng.clone(), c.rng.clone());
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| signer.round2(clock_a, coordinator(COORD_A), &req_a, &mut rng_a));
        let arrival = arrived_rx.recv().unwrap();
        time.fetch_add(61_000, Ordering::SeqCst);
        let b = scope.spawn(|| signer.round2(clock, coordinator(COORD_A), &req_b, &mut rng_b));
        // B was checked and charged, and holds the wallet's lock.
        parked_rx.recv().unwrap();
        assert!(clock().0 > arrival.0 + 60_000);
        proceed_tx.send(()).unwrap();
        // A now waits for the lock, or gets it once B commits: either way
        // B's charge is durable before A reads the ledger.
        release_tx.send(()).unwrap();
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(b.unwrap().shares.len(), 1);
    let err = a.expect_err("A was approved: B's charge, made while A waited, was dropped");
    assert_eq!(
        denial(&err),
        (
            Rule::CoordinatorRatePerDay,
            Violation::Rate {
                charged: 1,
                limit: 1
            }
        )
    );
}
