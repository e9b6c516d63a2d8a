//! Round 2 reads the time under the wallet's lock: a request held up
//! right before it takes the lock counts the charges other requests
//! committed while it waited, however long that was (in round 2 and in a
//! staged rollout's dry run of the previous policy), and what it commits
//! is dated at that time.

mod common;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use common::psbt::*;
use common::*;
use thresig_crypto::ScriptTree;
use thresig_engine::audit::AuditEvent;
use thresig_engine::rollout::gate::Gates;
use thresig_engine::{
    ErrorCode, Limits, RolloutCommand, Round2Request, Signer, Timestamp, WalletId,
};
use thresig_store::{AuditSeq, Store};
use thresig_tx::PolicyConfig;

/// A clock the test moves, read by requests on other threads.
struct ManualClock(AtomicU64);

impl ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }

    /// Moves the clock just over a minute on: charges made after it are
    /// dated beyond what the ledger counts as made now at a reading
    /// before it.
    fn pass_a_minute(&self) {
        self.0.fetch_add(61_000, Ordering::SeqCst);
    }
}

/// Holds the `nth` round 2 or dry run of `signer` to reach a wallet's lock
/// there, before it takes the lock and reads the clock under it: the
/// receiver hears once it is there, and it proceeds when the sender
/// sends. Every other passes.
fn held_at_the_wallets_lock<S: Store>(
    signer: &Signer<S>,
    nth: usize,
) -> (Receiver<()>, Sender<()>) {
    let (at_lock_tx, at_lock_rx) = channel();
    let (proceed_tx, proceed_rx) = channel::<()>();
    let proceed = Mutex::new(proceed_rx);
    let reached = AtomicUsize::new(0);
    signer.on_wallet_lock(Some(Arc::new(move |_: &WalletId| {
        if reached.fetch_add(1, Ordering::SeqCst) + 1 == nth {
            at_lock_tx.send(()).unwrap();
            proceed.lock().unwrap().recv().unwrap();
        }
    })));
    (at_lock_rx, proceed_tx)
}

/// [`policy`] with two transactions a day: one for each coordinator of a
/// 2-of-n wallet.
fn one_a_day_each() -> PolicyConfig {
    let mut p = policy();
    p.max_per_day = Some(2);
    p
}

/// A 2-of-3 cluster (seeded by `seed`) with wallet `w` under
/// [`one_a_day_each`], and its spend identity.
fn one_wallet(seed: u64) -> (Cluster, thresig_tx::TaprootWallet) {
    let specs = [Spec::new("w", Keys::Dkg(ScriptTree::KeyPathOnly)).policy(one_a_day_each())];
    let c = Cluster::with_wallets(seed, 2, 3, &specs, Limits::default());
    let w = taproot(&c, "w");
    (c, w)
}

/// [`COORD_A`]'s round-2 request at seats 1 and 2 for `tx`.
fn request(c: &mut Cluster, wallet: &str, tx: &thresig_tx::WalletPsbt) -> Round2Request {
    psbt_request(c, wallet, &[1, 2], &tx.serialize(), &sighashes(tx)).0
}

/// Request A is held right before it takes the wallet's lock while the
/// clock moves 61 s on and B, from the same coordinator, is charged at
/// the later time and commits. A then takes the lock: a reading taken
/// before the lock (on arrival, or just before it) would see B's charge
/// dated over a minute ahead, drop it and approve A (storing the ledger
/// without it); read under the lock, the time counts B's charge, and A is
/// over its coordinator's one transaction a day.
#[test]
fn a_request_held_up_before_the_wallets_lock_counts_the_charge_made_meanwhile() {
    let (mut c, w) = one_wallet(53);
    let req_a = request(&mut c, "w", &spend(&w, 1, 1));
    let req_b = request(&mut c, "w", &spend(&w, 1, 2));
    let time = ManualClock(AtomicU64::new(c.now.0));
    let clock = || time.now();
    let signer = c.member(1).signer();
    let (at_lock, proceed) = held_at_the_wallets_lock(&signer, 1);
    let (mut rng_a, mut rng_b) = (c.rng.clone(), c.rng.clone());
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| signer.round2(clock, coordinator(COORD_A), &req_a, &mut rng_a));
        at_lock.recv().unwrap();
        time.pass_a_minute();
        let b = signer.round2(clock, coordinator(COORD_A), &req_b, &mut rng_b);
        proceed.send(()).unwrap();
        (a.join().unwrap(), b)
    });
    assert_eq!(b.unwrap().shares.len(), 1);
    let err = a.expect_err("A was approved: B's charge, made while A waited, was dropped");
    assert_eq!(denial(&err), COORDINATOR_DAY_FULL);
}

/// The dry run a canary's denial gets (would the previous version have
/// signed it?) also reads the time under the wallet's lock. Version 2
/// pays no external destination; A's external payment arrives and is held
/// up while the clock moves 61 s on and B, from the same coordinator,
/// pays the wallet itself under version 2, charged at the later time.
/// Version 1 would sign A's payment but for B's charge (one transaction a
/// day each): at A's arrival that charge is dated over a minute ahead and
/// dropped, and A's denial would count against the canary as one version
/// 1 signs; read under the lock, it counts, and the gate counts no
/// denial.
#[test]
fn a_canarys_dry_run_counts_the_charge_made_while_its_request_waited() {
    const WALLETS: [&str; 4] = ["w0", "w1", "w2", "w3"];
    let specs: Vec<Spec> = WALLETS
        .iter()
        .map(|w| Spec::new(w, Keys::Dkg(ScriptTree::KeyPathOnly)).policy(one_a_day_each()))
        .collect();
    let mut c = Cluster::with_wallets(54, 2, 3, &specs, Limits::default());
    let mut v2 = one_a_day_each();
    v2.destinations = Vec::new();
    v2.version = 2;
    let mut gates = Gates::default();
    gates.min_requests = 100;
    let stage = RolloutCommand::Stage {
        version: 2,
        policies: WALLETS.iter().map(|w| (wid(w), v2.clone())).collect(),
        gates,
        expect_seq: None,
    };
    let staged = c.member(1).signer().policy_rollout(c.now, &stage).unwrap();
    let canary: Vec<&WalletId> = staged
        .wallets
        .iter()
        .filter(|w| w.policy_version == 2)
        .map(|w| &w.wallet)
        .collect();
    let canary = canary[0].to_string();
    let w = taproot(&c, &canary);
    let req_a = request(&mut c, &canary, &spend(&w, 1, 1));
    let req_b = request(&mut c, &canary, &pay(&w, &funding(&w, 1, 100_000, 2), None));
    let time = ManualClock(AtomicU64::new(c.now.0));
    let clock = || time.now();
    let signer = c.member(1).signer();
    // Its round 2 under version 2 takes the lock first, its dry run next.
    let (at_lock, proceed) = held_at_the_wallets_lock(&signer, 2);
    let (mut rng_a, mut rng_b) = (c.rng.clone(), c.rng.clone());
    let a = std::thread::scope(|scope| {
        let a = scope.spawn(|| signer.round2(clock, coordinator(COORD_A), &req_a, &mut rng_a));
        at_lock.recv().unwrap();
        time.pass_a_minute();
        signer
            .round2(time.now(), coordinator(COORD_A), &req_b, &mut rng_b)
            .unwrap();
        proceed.send(()).unwrap();
        a.join().unwrap()
    });
    assert_eq!(a.unwrap_err().code(), ErrorCode::PolicyDenied);
    let counts = signer.rollout_status().unwrap().canary;
    assert_eq!(
        counts.denied, 0,
        "A's denial was counted as one version 1 signs: its dry run dropped B's charge"
    );
    assert_eq!((counts.requests, counts.released), (1, 1), "{counts:?}");
}

/// What round 2 commits with its charge carries the charge's time: the
/// audit entry of a release held up for a minute after it arrived is dated
/// when the release held the wallet's lock, not when it arrived.
#[test]
fn a_held_up_release_is_audited_at_the_time_it_held_the_wallets_lock() {
    let (mut c, w) = one_wallet(55);
    let req = request(&mut c, "w", &spend(&w, 1, 1));
    let time = ManualClock(AtomicU64::new(c.now.0));
    let clock = || time.now();
    let signer = c.member(1).signer();
    let (at_lock, proceed) = held_at_the_wallets_lock(&signer, 1);
    let mut rng = c.rng.clone();
    std::thread::scope(|scope| {
        let a = scope.spawn(|| signer.round2(clock, coordinator(COORD_A), &req, &mut rng));
        at_lock.recv().unwrap();
        time.pass_a_minute();
        proceed.send(()).unwrap();
        a.join().unwrap().unwrap();
    });
    let entries = c.member(1).store().audit(AuditSeq(1), 1_000).unwrap();
    let released: Vec<Timestamp> = entries
        .iter()
        .filter(|e| {
            matches!(
                serde_json::from_slice(&e.body).unwrap(),
                AuditEvent::ShareReleased { .. }
            )
        })
        .map(|e| e.at)
        .collect();
    assert_eq!(released, [time.now()]);
}
