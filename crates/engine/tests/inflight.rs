//! One wallet's round 2s overlap: each hands its marker unit to the store
//! under the wallet's lock and waits for the commit without it, and the
//! next one charges the rate ledger as the units in flight leave it. The
//! store here holds those commits until the test releases them (in
//! submission order, as the real writer commits them).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::Scope;
use std::time::Duration;

use common::psbt::*;
use common::*;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use thresig_crypto::{Commitment, ScriptTree};
use thresig_engine::rollout::gate::Gates;
use thresig_engine::{
    Error, Limits, RolloutCommand, RolloutError, Round2Request, Round2Response, SigningTarget,
    Timestamp,
};
use thresig_store::Recovery;
use thresig_tx::{ChargeKey, PolicyConfig, Rule, TaprootWallet, Violation, WalletPsbt};

/// What a test sees of its round 2s, in the order it happens.
enum Event {
    /// A marker unit was submitted; the store holds its commit.
    Held(HeldCommit),
    /// Round 2 number `i` answered.
    Done(usize, Result<Round2Response, Error>),
}

/// Member 1's round 2s of wallet "w", each in a thread of its own, with
/// the store holding their marker units' commits.
struct Overlap<'scope, 'env> {
    scope: &'scope Scope<'scope, 'env>,
    signer: Via<'env, TestStore>,
    /// The time the round 2s read, which a test may move.
    time: Arc<AtomicU64>,
    events: Sender<Event>,
    // Dropped when a test fails inside the scope: the commits still held
    // then go with it, which releases their callers, so the scope ends.
    seen: Receiver<Event>,
}

impl<'scope, 'env> Overlap<'scope, 'env> {
    /// Starts round 2 number `i` of `req`, requested by coordinator `from`.
    fn start(&self, i: usize, from: u16, req: &Round2Request) {
        let (signer, time, events) = (self.signer, self.time.clone(), self.events.clone());
        let req = req.clone();
        self.scope.spawn(move || {
            let mut rng = ChaCha20Rng::seed_from_u64(100 + i as u64);
            let clock = || Timestamp(time.load(Ordering::SeqCst));
            let answer = signer.round2(clock, coordinator(from), &req, &mut rng);
            let _ = events.send(Event::Done(i, answer));
        });
    }

    /// The next event. A failure detector only (the events are the
    /// synchronization): a round 2 that waits on another's commit never
    /// gets to its own event while that commit is held.
    fn next(&self) -> Event {
        self.seen
            .recv_timeout(Duration::from_secs(60))
            .expect("no round 2 got anywhere")
    }

    /// The time the round 2s read now.
    fn now(&self) -> Timestamp {
        Timestamp(self.time.load(Ordering::SeqCst))
    }

    /// Moves the time the round 2s read just over a minute on.
    fn pass_a_minute(&self) {
        self.time.fetch_add(61_000, Ordering::SeqCst);
    }

    /// The next event, which must be a unit held.
    fn held(&self) -> HeldCommit {
        match self.next() {
            Event::Held(held) => held,
            Event::Done(i, answer) => panic!("round 2 {i} answered first: {answer:?}"),
        }
    }

    /// The next event, which must be a unit without a marker held behind
    /// the held ones (a lifecycle or rollout step's).
    fn held_step(&self) -> HeldCommit {
        let step = self.held();
        assert_eq!(step.commitment, None, "a marker unit");
        step
    }

    /// Starts coordinator A's round 2s 0 of `first` and 1 of `second`,
    /// the second once the first's unit is held; both held units.
    fn both_held(&self, first: &Round2Request, second: &Round2Request) -> (HeldCommit, HeldCommit) {
        self.start(0, COORD_A, first);
        let first = self.held();
        self.start(1, COORD_A, second);
        (first, self.held())
    }

    /// The answers of `n` round 2s once `held` are released in their
    /// order ([`Overlap::answers`]).
    fn released<const N: usize>(
        &self,
        held: [HeldCommit; N],
        n: usize,
    ) -> Vec<Result<Round2Response, Error>> {
        for unit in held {
            unit.release();
        }
        self.answers(n)
    }

    /// The answers of `n` round 2s, by number, releasing every unit held
    /// on the way (a retry's).
    fn answers(&self, n: usize) -> Vec<Result<Round2Response, Error>> {
        let mut answers: Vec<Option<_>> = (0..n).map(|_| None).collect();
        while answers.iter().any(Option::is_none) {
            match self.next() {
                Event::Held(held) => held.release(),
                Event::Done(i, answer) => answers[i] = Some(answer),
            }
        }
        answers.into_iter().map(Option::unwrap).collect()
    }
}

/// Runs `body` with member 1 holding the commits of wallet "w"'s marker
/// units.
fn overlap<'env, T>(
    c: &'env Cluster,
    body: impl for<'scope> FnOnce(Overlap<'scope, 'env>) -> T,
) -> T {
    let (events, seen) = channel();
    let on_held = events.clone();
    c.member(1).store().hold_commits(Some((
        &wid("w"),
        Box::new(move |held| {
            let _ = on_held.send(Event::Held(held));
        }),
    )));
    let signer = c.member(1).signer();
    let time = Arc::new(AtomicU64::new(c.now.0));
    let out = std::thread::scope(|scope| {
        body(Overlap {
            scope,
            signer,
            time,
            events,
            seen,
        })
    });
    c.member(1).store().hold_commits(None);
    out
}

fn cluster(seed: u64, policy: PolicyConfig) -> (Cluster, TaprootWallet) {
    cluster_with(seed, policy, Limits::default())
}

fn cluster_with(seed: u64, policy: PolicyConfig, limits: Limits) -> (Cluster, TaprootWallet) {
    let specs = [Spec::new("w", Keys::Dkg(ScriptTree::KeyPathOnly)).policy(policy)];
    let c = Cluster::with_wallets(seed, 2, 3, &specs, limits);
    let w = taproot(&c, "w");
    (c, w)
}

/// A round-2 request for `psbt` by coordinator `from`, over round-1
/// vectors of seats 1 and 2, with seat 1's commitments.
fn request(c: &mut Cluster, from: u16, psbt: &WalletPsbt) -> (Round2Request, Vec<Commitment>) {
    let messages = sighashes(psbt);
    let comms = [1, 2]
        .into_iter()
        .map(|s| (s, c.round1(s, from, "w", messages.len()).unwrap()))
        .collect::<std::collections::BTreeMap<_, _>>();
    let req = c.request_for(
        "w",
        &comms,
        &messages,
        SigningTarget::psbt(psbt.serialize()),
    );
    (req, comms[&1].clone())
}

/// A round-2 request with the commitments of seat 1 it names.
type Req = (Round2Request, Vec<Commitment>);

/// The coordinator of request `i` of a stream: three in turn.
fn from(i: usize) -> u16 {
    [1, COORD_B, COORD_A][i % 3]
}

/// A cluster whose wallet signs at most `limit` transactions a day, with
/// `n` spends and their requests ([`from`]).
fn daily(seed: u64, limit: usize, n: usize) -> (Cluster, Vec<WalletPsbt>, Vec<Req>) {
    let mut p = policy();
    p.max_per_day = Some(u32::try_from(limit).unwrap());
    let (mut c, w) = cluster(seed, p);
    let psbts: Vec<_> = (0..n)
        .map(|i| spend(&w, 1, u8::try_from(i + 1).unwrap()))
        .collect();
    let reqs = psbts
        .iter()
        .enumerate()
        .map(|(i, p)| request(&mut c, from(i), p))
        .collect();
    (c, psbts, reqs)
}

/// Two spends of `w` and coordinator A's round-2 requests for them.
fn pair(c: &mut Cluster, w: &TaprootWallet) -> ([WalletPsbt; 2], Req, Req) {
    let psbts = [spend(w, 1, 1), spend(w, 1, 2)];
    let first = request(c, COORD_A, &psbts[0]);
    let second = request(c, COORD_A, &psbts[1]);
    (psbts, first, second)
}

/// The charge keys member 1's stored ledger holds, in charge order.
fn charged(c: &Cluster) -> Vec<[u8; 32]> {
    stored_charges(c, 1, "w")
        .1
        .into_iter()
        .map(|(key, _)| key)
        .collect()
}

fn key(psbt: &WalletPsbt) -> [u8; 32] {
    ChargeKey::of(psbt).to_byte_array()
}

/// Asserts a round 2's answer is a retryable error.
fn retryable(answer: Result<Round2Response, Error>) {
    let err = answer.unwrap_err();
    assert_eq!(err.recovery(), Recovery::Retryable, "{err:?}");
}

/// Asserts the byte-identical retry of `req` commits its shares in the
/// marker of `comms`' first commitment.
fn retry_commits(c: &Cluster, req: &Round2Request, comms: &[Commitment]) {
    let shares = c.round2(1, req).unwrap();
    assert_eq!(c.member(1).marker("w", &comms[0]), Some(shares));
}

#[test]
fn a_round_2_submits_its_unit_while_the_previous_ones_commit_is_held() {
    let (mut c, w) = cluster(70, policy());
    let psbts = [spend(&w, 1, 1), spend(&w, 1, 2)];
    let reqs: Vec<_> = psbts
        .iter()
        .map(|p| request(&mut c, COORD_A, p).0)
        .collect();
    let answers = overlap(&c, |run| {
        // With the wallet's lock held until the first commit, the second
        // round 2 could not even check its request while that is held.
        let (first, second) = run.both_held(&reqs[0], &reqs[1]);
        first.release();
        second.release();
        run.answers(2)
    });
    for answer in answers {
        assert_eq!(answer.unwrap().shares.len(), 1);
    }
    // The second was charged on top of the first, not instead of it.
    assert_eq!(charged(&c), [key(&psbts[0]), key(&psbts[1])]);
}

#[test]
fn a_unit_that_fails_under_one_built_on_it_loses_and_doubles_no_charge() {
    for first_released_first in [true, false] {
        let (mut c, w) = cluster(71, policy());
        let (psbts, (req_a, comms_a), (req_b, _)) = pair(&mut c, &w);
        c.member(1).store().fail_next_commit(Fault::Lost);
        let answers = overlap(&c, |run| {
            // B is charged on top of A's charge, which will not commit.
            let (a, b) = run.both_held(&req_a, &req_b);
            if first_released_first {
                a.release();
                b.release();
            } else {
                b.release();
                a.release();
            }
            run.answers(2)
        });
        let mut answers = answers.into_iter();
        retryable(answers.next().unwrap());
        assert!(
            c.member(1).marker("w", &comms_a[0]).is_none(),
            "A released nothing"
        );
        assert_eq!(answers.next().unwrap().unwrap().shares.len(), 1);
        assert_eq!(charged(&c), [key(&psbts[1])], "B alone was charged");
        // A's shares stayed pending: its byte-identical retry commits them
        // with its charge.
        retry_commits(&c, &req_a, &comms_a);
        assert_eq!(charged(&c), [key(&psbts[1]), key(&psbts[0])]);
    }
}

#[test]
fn a_retry_while_its_first_attempts_unit_is_in_flight_is_charged_once() {
    for first_lost in [false, true] {
        let (mut c, w) = cluster(72, policy());
        let psbt = spend(&w, 1, 1);
        let (req, comms) = request(&mut c, COORD_A, &psbt);
        if first_lost {
            c.member(1).store().fail_next_commit(Fault::Lost);
        }
        let answers = overlap(&c, |run| {
            // The retry finds the transaction charged by the first
            // attempt's unit, which has not committed yet.
            let (first, retry) = run.both_held(&req, &req);
            retry.release();
            first.release();
            run.answers(2)
        });
        let mut answers = answers.into_iter();
        let first = answers.next().unwrap();
        let retry = answers.next().unwrap().unwrap().shares;
        let stored = c.member(1).marker("w", &comms[0]).unwrap();
        assert_eq!(
            retry.iter().map(|s| s.0.clone()).collect::<Vec<_>>(),
            stored
        );
        if first_lost {
            assert!(first.is_err(), "{first:?}");
        } else {
            assert_eq!(first.unwrap().shares, retry, "the same shares");
        }
        assert_eq!(charged(&c), [key(&psbt)], "first lost: {first_lost}");
    }
}

#[test]
fn concurrent_round_2s_never_pass_a_daily_limit() {
    const LIMIT: usize = 6;
    // Three coordinators, each well inside its own sub-limit (three a day).
    let (c, psbts, reqs) = daily(73, LIMIT, 8);
    let answers = overlap(&c, |run| {
        let mut held = Vec::new();
        for (i, (req, _)) in reqs.iter().enumerate() {
            run.start(i, from(i), req);
            match run.next() {
                Event::Held(h) => held.push(h),
                Event::Done(j, answer) => {
                    // Denied while every charge before it is still in
                    // flight: the ledger counts them.
                    assert_eq!(j, i);
                    let Err(Error::PolicyDenied { denial, .. }) = answer else {
                        panic!("round 2 {i}: {answer:?}");
                    };
                    assert_eq!(denial.rule, Rule::RatePerDay);
                    assert_eq!(
                        denial.violation,
                        Violation::Rate {
                            charged: 6,
                            limit: 6
                        }
                    );
                }
            }
        }
        assert_eq!(held.len(), LIMIT);
        let mut held: Vec<_> = held.into_iter().map(Some).collect();
        for i in [3, 0, 5, 1, 4, 2] {
            held[i].take().unwrap().release();
        }
        run.answers(LIMIT)
    });
    for answer in answers {
        assert_eq!(answer.unwrap().shares.len(), 1);
    }
    let mut expected: Vec<_> = psbts[..LIMIT].iter().map(key).collect();
    let mut stored = charged(&c);
    expected.sort_unstable();
    stored.sort_unstable();
    assert_eq!(stored, expected);
    for (i, (_, comms)) in reqs.iter().enumerate() {
        assert_eq!(c.member(1).marker("w", &comms[0]).is_some(), i < LIMIT);
    }
}

/// A retry after its unit skipped (a ledger changed under it) reads the
/// clock again once it holds the wallet's lock. X's unit (coordinator B)
/// is lost, so A's, built on it, skips; while A's is held the clock moves
/// 61 s on and B, from A's coordinator, is charged and commits. A's retry
/// at its first reading would see B's charge dated over a minute ahead,
/// drop it and be approved (storing the ledger without it); at the time
/// read when it retook the lock it counts B's, and A is over its
/// coordinator's one transaction a day.
#[test]
fn a_retry_after_a_skipped_unit_counts_the_charge_committed_while_it_was_in_flight() {
    let mut p = policy();
    p.max_per_day = Some(2);
    let (mut c, w) = cluster(74, p);
    let psbts = [spend(&w, 1, 1), spend(&w, 1, 2), spend(&w, 1, 3)];
    let (req_x, _) = request(&mut c, COORD_B, &psbts[0]);
    let (req_a, _) = request(&mut c, COORD_A, &psbts[1]);
    let (req_b, _) = request(&mut c, COORD_A, &psbts[2]);
    c.member(1).store().fail_next_commit(Fault::Lost);
    let (x, a, b) = overlap(&c, |run| {
        run.start(0, COORD_B, &req_x);
        let x = run.held();
        run.start(1, COORD_A, &req_a);
        let a = run.held();
        x.release();
        let Event::Done(0, x) = run.next() else {
            panic!("X did not answer first");
        };
        run.pass_a_minute();
        // The units in flight were dropped with X's: B reads the store.
        run.start(2, COORD_A, &req_b);
        // Commits A's unit first, which skips, then B's.
        run.held().release();
        let Event::Done(2, b) = run.next() else {
            panic!("B did not answer next");
        };
        a.release();
        // A retry approved submits a unit of its own.
        let a = loop {
            match run.next() {
                Event::Held(held) => held.release(),
                Event::Done(i, answer) => break (i, answer),
            }
        };
        assert_eq!(a.0, 1);
        (x, a.1, b)
    });
    assert!(x.is_err(), "{x:?}");
    assert_eq!(b.unwrap().shares.len(), 1);
    let err = a.expect_err("A's retry dropped B's charge, made while A's unit was in flight");
    assert_eq!(denial(&err), COORDINATOR_DAY_FULL);
    assert_eq!(charged(&c), [key(&psbts[2])]);
}

#[test]
fn a_ledger_conflicts_retry_is_checked_against_a_rekey_committed_meanwhile() {
    let specs = [
        Spec::new("w", Keys::Dkg(ScriptTree::KeyPathOnly))
            .policy(policy())
            .successor("n"),
        Spec::new("n", Keys::Dkg(ScriptTree::KeyPathOnly)).policy(policy()),
    ];
    let mut c = Cluster::with_wallets(74, 2, 3, &specs, Limits::default());
    let w = taproot(&c, "w");
    let (_, (req_x, comms_x), (req_a, comms_a)) = pair(&mut c, &w);
    c.member(1).store().fail_next_commit(Fault::Lost);
    let answers = overlap(&c, |run| {
        // A is charged on top of X, which will not commit; the wallet
        // starts rekeying while both are in flight.
        let (x, a) = run.both_held(&req_x, &req_a);
        let signer = run.signer;
        let rekey = run.scope.spawn(move || signer.begin_rekey(&wid("w")));
        // Its unit commits after theirs, with the wallet's lock held.
        let step = run.held_step();
        let answers = run.released([x, a, step], 2);
        rekey.join().unwrap().unwrap();
        answers
    });
    let mut answers = answers.into_iter();
    retryable(answers.next().unwrap());
    let err = answers.next().unwrap().unwrap_err();
    assert!(matches!(err, Error::RekeyInProgress { .. }), "{err:?}");
    assert!(c.member(1).marker("w", &comms_x[0]).is_none());
    assert!(
        c.member(1).marker("w", &comms_a[0]).is_none(),
        "no share for a non-sweep spend of a rekeying wallet"
    );
    assert!(charged(&c).is_empty());
}

#[test]
fn a_retry_found_present_keeps_the_predictions_of_the_units_still_in_flight() {
    let (mut c, w) = cluster(75, policy());
    let psbts = [spend(&w, 1, 1), spend(&w, 1, 2), spend(&w, 1, 3)];
    let (req_a, _) = request(&mut c, COORD_A, &psbts[0]);
    let (req_b, _) = request(&mut c, COORD_A, &psbts[1]);
    let (req_c, _) = request(&mut c, COORD_A, &psbts[2]);
    overlap(&c, |run| {
        // A, A's byte-identical retry and B in flight; the retry is found
        // present once A commits.
        let (a, retry) = run.both_held(&req_a, &req_a);
        run.start(2, COORD_A, &req_b);
        let b = run.held();
        a.release();
        retry.release();
        for _ in 0..2 {
            let Event::Done(i, answer) = run.next() else {
                panic!("a unit held before A and its retry answered");
            };
            assert!(i < 2 && answer.is_ok(), "{i}: {answer:?}");
        }
        // C is built on B's charge, still predicted: one unit, which
        // commits after B's without a conflict.
        run.start(3, COORD_A, &req_c);
        let c_unit = run.held();
        b.release();
        c_unit.release();
        for _ in 0..2 {
            match run.next() {
                Event::Done(i, answer) => assert!(i >= 2 && answer.is_ok(), "{i}: {answer:?}"),
                Event::Held(_) => panic!("C's unit was submitted again after a ledger conflict"),
            }
        }
    });
    assert_eq!(charged(&c), psbts.iter().map(key).collect::<Vec<_>>());
}

#[test]
fn a_denial_stores_no_pruned_ledger_while_a_unit_is_in_flight() {
    let mut p = policy();
    p.max_fee_sat = Some(5_000);
    let (mut c, w) = cluster(76, p);
    let (req, _) = request(&mut c, COORD_A, &spend(&w, 1, 1));
    c.round2(1, &req).unwrap();
    // The charge leaves the minute window: a read moves the summary.
    c.now = Timestamp(c.now.0 + 120_000);
    let (req_x, _) = request(&mut c, COORD_A, &spend(&w, 1, 2));
    let (req_a, _) = request(&mut c, COORD_A, &spend(&w, 1, 3));
    let over_fee = pay_with_fee(&w, &funding(&w, 1, 100_000, 4), Some(external()), 10_000);
    let (req_d, _) = request(&mut c, COORD_A, &over_fee);
    c.member(1).store().fail_next_commit(Fault::Lost);
    overlap(&c, |run| {
        let (x, a) = run.both_held(&req_x, &req_a);
        // X fails: the overlay is cleared while A is still in flight.
        x.release();
        match run.next() {
            Event::Done(0, Err(_)) => {}
            _ => panic!("X did not fail first"),
        }
        let writes = c.member(1).store().policy_writes();
        // In a thread of its own: a pruned summary written behind A's
        // unit would wait for A's held commit, which only this thread
        // releases, so the timeout detects it.
        let (denied, denial) = channel();
        let (signer, now, req_d) = (run.signer, run.now(), &req_d);
        run.scope.spawn(move || {
            let mut rng = ChaCha20Rng::seed_from_u64(7);
            let _ = denied.send(signer.round2(now, coordinator(COORD_A), req_d, &mut rng));
        });
        let err = denial
            .recv_timeout(Duration::from_secs(60))
            .expect("the denial waited behind A's held unit")
            .unwrap_err();
        assert!(matches!(err, Error::PolicyDenied { .. }), "{err:?}");
        assert_eq!(
            c.member(1).store().policy_writes(),
            writes,
            "no pruned summary written behind A's unit"
        );
        a.release();
        loop {
            match run.next() {
                Event::Held(held) => held.release(),
                Event::Done(i, answer) => {
                    assert_eq!(i, 1);
                    assert!(answer.is_ok(), "{answer:?}");
                    break;
                }
            }
        }
    });
}

#[test]
fn an_attempt_in_flight_is_never_dropped_for_room_nor_takes_any() {
    let mut limits = Limits::default();
    limits.pending_per_wallet = 1;
    let (mut c, w) = cluster_with(77, policy(), limits);
    let psbts = [spend(&w, 1, 1), spend(&w, 1, 2), spend(&w, 1, 3)];
    let (req_x, comms_x) = request(&mut c, COORD_A, &psbts[0]);
    let (req_y, _) = request(&mut c, COORD_A, &psbts[1]);
    let (req_b, _) = request(&mut c, COORD_B, &psbts[2]);
    c.member(1).store().fail_next_commit(Fault::Lost);
    let answers = overlap(&c, |run| {
        // The wallet's one pending slot holds X while its unit is in
        // flight: A's next attempt does not drop it, and B, holding
        // none, is not refused for it.
        let (x, y) = run.both_held(&req_x, &req_y);
        run.start(2, COORD_B, &req_b);
        let b = run.held();
        run.released([x, y, b], 3)
    });
    let mut answers = answers.into_iter();
    retryable(answers.next().unwrap());
    for answer in answers {
        assert_eq!(answer.unwrap().shares.len(), 1);
    }
    // X failed with its shares still pending: its retry commits them.
    retry_commits(&c, &req_x, &comms_x);
}

#[test]
fn a_rollout_step_committed_behind_a_unit_in_flight_skips_the_units_after_it() {
    let (mut c, w) = cluster(78, policy());
    let mut version2 = policy();
    version2.version = 2;
    let stage = RolloutCommand::Stage {
        version: 2,
        policies: [(wid("w"), version2)].into_iter().collect(),
        gates: Gates::default(),
        expect_seq: None,
    };
    c.member(1).signer().policy_rollout(c.now, &stage).unwrap();
    let (psbts, (req_x, comms_x), (req_y, comms_y)) = pair(&mut c, &w);
    let (parked_tx, parked) = channel();
    let (unpark, release_rx) = channel();
    let answers = overlap(&c, |run| {
        // X in flight; Y checked under the rollout's step and parked just
        // before its unit; a rollback submitted between them.
        run.start(0, COORD_A, &req_x);
        let x = run.held();
        c.member(1)
            .store()
            .park_commit(&wid("w"), parked_tx, release_rx);
        run.start(1, COORD_A, &req_y);
        parked.recv().unwrap();
        let signer = run.signer;
        let now = run.now();
        let rollback = run.scope.spawn(move || {
            let command = RolloutCommand::Rollback { expect_seq: None };
            signer.policy_rollout(now, &command).map(drop)
        });
        let step = run.held_step();
        unpark.send(()).unwrap();
        let y = run.held();
        let answers = run.released([x, step, y], 2);
        rollback.join().unwrap().unwrap();
        answers
    });
    let mut answers = answers.into_iter();
    assert_eq!(answers.next().unwrap().unwrap().shares.len(), 1);
    let err = answers.next().unwrap().unwrap_err();
    assert!(
        matches!(err, Error::Rollout(RolloutError::Moved { .. })),
        "{err:?}"
    );
    assert!(c.member(1).marker("w", &comms_x[0]).is_some());
    assert!(c.member(1).marker("w", &comms_y[0]).is_none());
    assert_eq!(charged(&c), [key(&psbts[0])]);
    // Y's shares stayed pending: its byte-identical retry commits them,
    // charged once, under the policy now applied.
    retry_commits(&c, &req_y, &comms_y);
    assert_eq!(charged(&c), [key(&psbts[0]), key(&psbts[1])]);
}

#[test]
fn a_daily_limit_holds_when_a_unit_fails_mid_stream() {
    const LIMIT: usize = 4;
    const N: usize = 8;
    let (c, psbts, reqs) = daily(79, LIMIT, N);
    let answers = overlap(&c, |run| {
        let mut answers: Vec<Option<Result<Round2Response, Error>>> =
            (0..N).map(|_| None).collect();
        let mut held = Vec::new();
        let start = |i: usize, held: &mut Vec<HeldCommit>, answers: &mut Vec<Option<_>>| {
            run.start(i, from(i), &reqs[i].0);
            match run.next() {
                Event::Held(h) => held.push(h),
                Event::Done(j, answer) => answers[j] = Some(answer),
            }
        };
        // 0 and 1, then 2 whose unit is lost, then 3 and 4 built on it.
        for i in 0..5 {
            if i == 2 {
                c.member(1).store().fail_next_commit(Fault::Lost);
            }
            start(i, &mut held, &mut answers);
        }
        assert_eq!(held.len(), LIMIT, "the fifth is denied on predictions");
        // 0, 1 commit, 2 fails: the overlay is cleared with 3 in flight.
        let rest = held.split_off(3);
        for h in held {
            h.release();
        }
        for _ in 0..3 {
            let Event::Done(j, answer) = run.next() else {
                panic!("a unit submitted while 3 is held");
            };
            answers[j] = Some(answer);
        }
        // Further requests read the store's ledger.
        let mut held = rest;
        for i in 5..N {
            start(i, &mut held, &mut answers);
        }
        for h in held {
            h.release();
        }
        while answers.iter().any(Option::is_none) {
            match run.next() {
                Event::Held(h) => h.release(),
                Event::Done(j, answer) => answers[j] = Some(answer),
            }
        }
        answers.into_iter().map(Option::unwrap).collect::<Vec<_>>()
    });
    assert!(answers[2].is_err(), "{:?}", answers[2]);
    let released: Vec<_> = (0..N).filter(|&i| answers[i].is_ok()).collect();
    // 3's retry finds the day full with 5 and 6, charged on the store's
    // ledger after 2 failed.
    assert_eq!(released, [0, 1, 5, 6]);
    for (i, answer) in answers.iter().enumerate() {
        if let Err(err) = answer
            && i != 2
        {
            assert!(
                matches!(err, Error::PolicyDenied { .. }),
                "round 2 {i}: {err:?}"
            );
        }
        assert_eq!(
            c.member(1).marker("w", &reqs[i].1[0]).is_some(),
            answer.is_ok(),
            "round 2 {i}"
        );
    }
    let mut stored = charged(&c);
    let mut expected: Vec<_> = released.iter().map(|&i| key(&psbts[i])).collect();
    stored.sort_unstable();
    expected.sort_unstable();
    assert_eq!(stored, expected);
}

#[test]
fn a_writer_failing_every_unit_in_flight_releases_nothing_and_keeps_every_attempt() {
    let (mut c, w) = cluster(80, policy());
    let psbts: Vec<_> = (1..=3u8).map(|i| spend(&w, 1, i)).collect();
    let reqs: Vec<_> = psbts.iter().map(|p| request(&mut c, COORD_A, p)).collect();
    overlap(&c, |run| {
        let mut held = Vec::new();
        for (i, (req, _)) in reqs.iter().enumerate() {
            c.member(1).store().fail_next_commit(Fault::Lost);
            run.start(i, COORD_A, req);
            held.push(run.held());
        }
        for h in held {
            h.release();
        }
        for _ in 0..reqs.len() {
            let Event::Done(i, answer) = run.next() else {
                panic!("a unit resubmitted after the writer failed");
            };
            let err = answer.unwrap_err();
            assert_eq!(err.recovery(), Recovery::Retryable, "{i}: {err:?}");
        }
        for (_, comms) in &reqs {
            assert!(c.member(1).marker("w", &comms[0]).is_none());
        }
        assert!(charged(&c).is_empty());
        // Nothing predicted is left: each byte-identical retry commits
        // its pending shares in one unit, on the store's ledger.
        for (i, (req, _)) in reqs.iter().enumerate() {
            run.start(10 + i, COORD_A, req);
            run.held().release();
            match run.next() {
                Event::Done(j, answer) => {
                    assert_eq!(j, 10 + i);
                    assert_eq!(answer.unwrap().shares.len(), 1);
                }
                Event::Held(_) => panic!("retry {i} was built on a lost prediction"),
            }
        }
    });
    for (_, comms) in &reqs {
        assert!(c.member(1).marker("w", &comms[0]).is_some());
    }
    assert_eq!(charged(&c), psbts.iter().map(key).collect::<Vec<_>>());
}

#[test]
fn the_retries_after_a_lost_unit_build_on_each_other_and_all_commit() {
    const N: usize = 10;
    let (c, _, reqs) = daily(81, 2 * N, N);
    let (answers, rounds) = overlap(&c, |run| {
        let mut answers: Vec<Option<Result<Round2Response, Error>>> =
            (0..N).map(|_| None).collect();
        // 0's unit is lost; 1 to 9 are built on it, one on the other.
        c.member(1).store().fail_next_commit(Fault::Lost);
        let mut held = Vec::new();
        for (i, (req, _)) in reqs.iter().enumerate() {
            run.start(i, from(i), req);
            held.push(run.held());
        }
        // Each round releases every unit held, then collects one event
        // of each round 2 still running: its answer or its retry's unit.
        let mut rounds = 0;
        while !held.is_empty() {
            rounds += 1;
            let running = held.len();
            for h in held.drain(..) {
                h.release();
            }
            for _ in 0..running {
                match run.next() {
                    Event::Held(h) => held.push(h),
                    Event::Done(i, answer) => answers[i] = Some(answer),
                }
            }
        }
        let answers: Vec<_> = answers.into_iter().map(Option::unwrap).collect();
        (answers, rounds)
    });
    for (i, answer) in answers.iter().enumerate() {
        if let Err(err) = answer {
            assert!(
                !matches!(err, Error::LedgerContended { .. }),
                "{i}: {err:?}"
            );
        }
    }
    // The retries of 1 to 9 all commit: none is retried again.
    assert_eq!(rounds, 2, "the retries after the lost unit failed in turn");
    let mut answers = answers.into_iter();
    retryable(answers.next().unwrap());
    for (i, answer) in answers.enumerate() {
        assert!(answer.is_ok(), "round 2 {}: {answer:?}", i + 1);
    }
    // 0's byte-identical retry commits its pending shares.
    let shares = c.round2_as(1, from(0), &reqs[0].0).unwrap().shares;
    let shares: Vec<_> = shares.into_iter().map(|h| h.0).collect();
    assert_eq!(c.member(1).marker("w", &reqs[0].1[0]), Some(shares));
}
