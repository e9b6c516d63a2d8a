//! Adversarial review of the ROAST coordinator: each test states a property
//! the design or the ROAST paper promises and fails if the coordinator
//! breaks it.
#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use thresig_roast::{
    Config, Coordinator, Event, Failure, Refusal, Reply, Request, Round, Scheme, Seat, SessionId,
    Verdict,
};

// ---------------------------------------------------------------------------
// A transparent scheme (like the simulation's toy, but with public fields so
// tests can look into packages).

struct Plain;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Package {
    message: u64,
    commitments: BTreeMap<Seat, u64>,
}

#[derive(Debug)]
struct PlainError;

impl fmt::Display for PlainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("plain scheme error")
    }
}

impl std::error::Error for PlainError {}

fn share_of(seat: Seat, package: &Package) -> u64 {
    let mut h = package.message.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for (s, c) in &package.commitments {
        h = (h ^ u64::from(s.get()) ^ c).wrapping_mul(0xff51_afd7_ed55_8ccd);
    }
    (h ^ u64::from(seat.get())).wrapping_mul(0xc4ce_b9fe_1a85_ec53)
}

impl Scheme for Plain {
    type Message = u64;
    type Commitment = u64;
    type Package = Package;
    type Share = u64;
    type Signature = Vec<Seat>;
    type Error = PlainError;

    fn package(&self, message: &u64, commitments: &BTreeMap<Seat, u64>) -> Result<Package, PlainError> {
        Ok(Package {
            message: *message,
            commitments: commitments.clone(),
        })
    }

    fn verify_share(&self, package: &Package, seat: Seat, share: &u64) -> Result<Verdict, PlainError> {
        if !package.commitments.contains_key(&seat) {
            return Err(PlainError);
        }
        Ok(if *share == share_of(seat, package) {
            Verdict::Valid
        } else {
            Verdict::Invalid
        })
    }

    fn aggregate(&self, package: &Package, shares: &BTreeMap<Seat, u64>) -> Result<Vec<Seat>, PlainError> {
        if !shares.keys().eq(package.commitments.keys())
            || shares.iter().any(|(s, x)| *x != share_of(*s, package))
        {
            return Err(PlainError);
        }
        Ok(shares.keys().copied().collect())
    }
}

fn seat(n: u16) -> Seat {
    Seat::try_from(n).unwrap()
}

const TIMEOUT: Duration = Duration::from_secs(1);
const DEADLINE: Duration = Duration::from_secs(60);

fn coordinator(now: Instant, t: u16, n: u16, inputs: u64) -> Coordinator<Plain> {
    let mut config = Config::new(t, (1..=n).map(seat).collect());
    config.request_timeout = TIMEOUT;
    config.deadline = DEADLINE;
    Coordinator::new(now, config, Plain, (0..inputs).collect()).unwrap()
}

// ---------------------------------------------------------------------------
// A tiny discrete-event driver: replies are scheduled at virtual instants.

struct Flight {
    at: Instant,
    seq: u64,
    from: Seat,
    reply: Reply<Plain>,
}

#[derive(Default)]
struct Log {
    sessions: Vec<(SessionId, Vec<Seat>)>,
    culprits: Vec<Seat>,
    done: Option<Vec<Seat>>,
    failed: Option<String>,
    sessions_stat: u32,
}

/// How the seat under attack behaves in round 2.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Attacker {
    /// Refuses every sign request at once (a non-transient refusal), then
    /// immediately sends a fresh, unsolicited commitment vector.
    RefuseAndRecommit,
    /// Never answers a sign request (pure silence), and sends a fresh,
    /// unsolicited commitment vector right after the request timed out.
    SilentAndRecommit,
}

/// Runs a cluster of `n` seats with threshold `t`; `attacker` (if any) acts
/// as scripted, everyone else is honest and answers after `honest_delay`.
/// The attacker answers round 1 after 1 ms, so it is first in R.
fn simulate(t: u16, n: u16, attacker: Option<(Seat, Attacker)>, honest_delay: Duration) -> Log {
    simulate_many(t, n, attacker.into_iter().collect(), honest_delay)
}

fn simulate_many(t: u16, n: u16, attackers: Vec<(Seat, Attacker)>, honest_delay: Duration) -> Log {
    let start = Instant::now();
    let mut now = start;
    let mut c = coordinator(now, t, n, 1);
    let mut flights: Vec<Flight> = Vec::new();
    let mut seq = 0u64;
    let mut counter = 1000u64;
    let mut log = Log::default();
    for _ in 0..1_000_000 {
        while let Some(tx) = c.poll_transmit() {
            let mode = attackers.iter().find(|(s, _)| *s == tx.to).map(|(_, m)| *m);
            let is_attacker = mode.is_some();
            let delay = if is_attacker { Duration::from_millis(1) } else { honest_delay };
            let mut push = |from, reply, extra: Duration, seq: &mut u64| {
                *seq += 1;
                flights.push(Flight { at: now + delay + extra, seq: *seq, from, reply });
            };
            match tx.request {
                Request::Commit => {
                    counter += 1;
                    push(tx.to, Reply::Commitments { commitments: vec![counter] }, Duration::ZERO, &mut seq);
                }
                Request::Sign { session, packages } => {
                    if mode == Some(Attacker::SilentAndRecommit) {
                        counter += 1;
                        push(
                            tx.to,
                            Reply::Commitments { commitments: vec![counter] },
                            TIMEOUT,
                            &mut seq,
                        );
                    } else if is_attacker {
                        push(
                            tx.to,
                            Reply::Refused { round: Round::Sign(session), refusal: Refusal::PolicyDenied },
                            Duration::ZERO,
                            &mut seq,
                        );
                        counter += 1;
                        push(tx.to, Reply::Commitments { commitments: vec![counter] }, Duration::ZERO, &mut seq);
                    } else {
                        counter += 1;
                        let shares = packages.iter().map(|p| share_of(tx.to, p)).collect();
                        push(
                            tx.to,
                            Reply::Shares { session, shares, commitments: vec![counter] },
                            Duration::ZERO,
                            &mut seq,
                        );
                    }
                }
                _ => unreachable!(),
            }
        }
        while let Some(event) = c.poll_event() {
            match event {
                Event::SessionStarted { session, signers } => log.sessions.push((session, signers)),
                Event::Culprit { seat, .. } => log.culprits.push(seat),
                Event::Done(signed) => {
                    log.sessions_stat = signed.stats.sessions;
                    log.done = Some(signed.signers);
                }
                Event::Failed { failure, stats } => {
                    log.sessions_stat = stats.sessions;
                    log.failed = Some(format!("{failure:?}"));
                }
                _ => {}
            }
        }
        if c.is_finished() {
            break;
        }
        let next = flights.iter().enumerate().min_by_key(|(_, f)| (f.at, f.seq)).map(|(i, f)| (i, f.at));
        let timer = c.poll_timeout().expect("a running coordinator always has a timer");
        match next {
            Some((i, at)) if at <= timer => {
                let f = flights.swap_remove(i);
                now = now.max(f.at);
                let _ = c.handle_reply(now, f.from, f.reply);
            }
            _ => {
                now = now.max(timer);
                c.handle_timeout(now);
            }
        }
    }
    log
}

/// ROAST's guarantee (paper, Thm. 1; DESIGN.md section 6): with t honest,
/// responsive signers the run finishes within n - t + 1 sessions. Here n = 3,
/// t = 2, seats 1 and 2 are honest and answer within 10 ms; seat 3 refuses
/// every sign request and immediately sends fresh commitments unsolicited,
/// which the coordinator accepts from an unresponsive seat and puts back into
/// R. Seat 3 is then always first in R, so every session contains it, and
/// the run spins until the overall deadline.
#[test]
fn refusing_signer_that_recommits_stalls_the_run() {
    let log = simulate(2, 3, Some((seat(3), Attacker::RefuseAndRecommit)), Duration::from_millis(10));
    let n_t_1 = 3 - 2 + 1;
    assert!(
        log.done.is_some() && log.sessions.len() <= n_t_1,
        "with 2 honest signers of 3 (t = 2) the run should finish within {n_t_1} sessions; \
         it started {} sessions (stats {}) and ended {:?} (seat 3 in {} of them)",
        log.sessions.len(),
        log.sessions_stat,
        log.failed,
        log.sessions.iter().filter(|(_, s)| s.contains(&seat(3))).count(),
    );
}

/// The design: "a reply is counted at most once: duplicates ... are refused"
/// and the coordinator should never ask a signer to sign with a commitment it
/// already put into a session. A duplicated (or replayed) round-1 reply that
/// arrives after the seat timed out in a session is accepted as a fresh
/// vector: the coordinator puts the same commitment into a second session
/// with a different package (the signer would answer `session_conflict` if it
/// signed the first, or `nonce_unknown`, and be lost for the run).
#[test]
fn duplicated_round1_reply_after_a_timeout_reuses_a_commitment() {
    let start = Instant::now();
    let mut c = coordinator(start, 2, 3, 1);
    while c.poll_transmit().is_some() {}
    let first = Reply::Commitments { commitments: vec![11] };
    c.handle_reply(start, seat(1), first).unwrap();
    c.handle_reply(start, seat(2), Reply::Commitments { commitments: vec![22] }).unwrap();
    let s1: Vec<Package> = std::iter::from_fn(|| c.poll_transmit())
        .filter_map(|t| match t.request {
            Request::Sign { packages, .. } => Some(packages.to_vec()),
            _ => None,
        })
        .next()
        .unwrap();
    assert_eq!(s1[0].commitments.get(&seat(1)), Some(&11));
    // Both members time out (their replies are slow or lost).
    let later = start + TIMEOUT;
    c.handle_timeout(later);
    // The network delivers a second copy of seat 1's round-1 reply.
    let duplicate = c.handle_reply(later, seat(1), Reply::Commitments { commitments: vec![11] });
    c.handle_reply(later, seat(3), Reply::Commitments { commitments: vec![33] }).unwrap();
    let reused: Vec<(SessionId, Package)> = std::iter::from_fn(|| c.poll_transmit())
        .filter_map(|t| match t.request {
            Request::Sign { session, packages } if t.to == seat(1) => Some((session, packages[0].clone())),
            _ => None,
        })
        .collect();
    assert!(
        duplicate.is_err() && reused.iter().all(|(_, p)| p.commitments.get(&seat(1)) != Some(&11)),
        "a duplicate round-1 reply was accepted ({duplicate:?}) and seat 1's commitment 11, \
         already used in session 1, was sent again in {reused:?}"
    );
}

/// The same attack (refuse, then re-commit unsolicited) by a single seat
/// against n = 5, t = 3 with four honest seats: the session count is again
/// unbounded and the run fails at the deadline.
#[test]
fn one_attacker_defeats_larger_groups_too() {
    let log = simulate(3, 5, Some((seat(5), Attacker::RefuseAndRecommit)), Duration::from_millis(10));
    let bound = 5 - 3 + 1;
    assert!(
        log.done.is_some() && log.sessions.len() <= bound,
        "n = 5, t = 3, 4 honest: {} sessions started, ended {:?}",
        log.sessions.len(),
        log.failed,
    );
}

/// Documented, but contrary to the paper's liveness: an honest signer whose
/// round-1 request or reply is lost (or who answers `retryable` twice, e.g.
/// a full quota) is never asked again, so a run with exactly t honest signers
/// waits for the full deadline and fails.
#[test]
fn honest_signer_refusing_retryable_twice_is_never_asked_again() {
    let start = Instant::now();
    let mut c = coordinator(start, 2, 2, 1);
    while c.poll_transmit().is_some() {}
    c.handle_reply(start, seat(1), Reply::Commitments { commitments: vec![1] }).unwrap();
    for _ in 0..2 {
        // Seat 2's store is briefly full: it refuses, and is asked again once.
        let _ = c.handle_reply(
            start,
            seat(2),
            Reply::Refused { round: Round::Commit, refusal: Refusal::Retryable },
        );
    }
    let asked_again = std::iter::from_fn(|| c.poll_transmit()).count();
    // Seat 2 would now answer, but nothing asks it; only the deadline is left.
    let timer = c.poll_timeout().unwrap();
    c.handle_timeout(timer);
    let failed = std::iter::from_fn(|| c.poll_event()).any(|e| matches!(e, Event::Failed { failure: Failure::Deadline, .. }));
    assert!(
        !failed,
        "two honest signers, t = 2: seat 2 was asked again {asked_again} time(s), then the run failed at the deadline"
    );
}

/// The invariant on `Coordinator` claims at most n - t + 1 sessions "when
/// signers fail only by silence or invalid shares". Silence followed by an
/// unsolicited commitment vector (no refusal at all) also breaks it when
/// honest signers are slower than the attackers' recommit.
#[test]
fn silent_signers_that_recommit_exceed_the_bound() {
    // Baseline: the same delays without attackers finish within n - t + 1 = 2 sessions.
    for ms in [10u64, 500, 999, 1001, 1500, 2500] {
        let log = simulate_many(2, 3, Vec::new(), Duration::from_millis(ms));
        assert!(log.done.is_some() && log.sessions.len() <= 2, "baseline {ms} ms: {:?}", log.sessions);
    }
    let mut worst = Vec::new();
    for (t, n, bad) in [(2u16, 3u16, 1u16), (3, 5, 2), (2, 4, 2), (3, 4, 1)] {
        for ms in [10u64, 500, 999, 1001, 1500, 2500] {
            let attackers = (n - bad + 1..=n).map(|s| (seat(s), Attacker::SilentAndRecommit)).collect();
            let log = simulate_many(t, n, attackers, Duration::from_millis(ms));
            let bound = usize::from(n - t + 1);
            if log.done.is_none() || log.sessions.len() > bound {
                worst.push((t, n, bad, ms, log.sessions.len(), log.failed));
            }
        }
    }
    assert!(worst.is_empty(), "(t, n, silent, honest delay ms, sessions, failure): {worst:?}");
}

/// Only an invalid share is proof of malice, and the design says "a signer any
/// of whose shares fails verification is excluded and reported". A signer
/// that sends an invalid share vector together with a commitment vector of
/// the wrong length is refused whole (VectorLength), its invalid shares are
/// never verified, and it escapes blame (it is later merely "unresponsive").
#[test]
fn invalid_shares_with_a_malformed_commitment_vector_escape_blame() {
    let start = Instant::now();
    let mut c = coordinator(start, 2, 3, 1);
    while c.poll_transmit().is_some() {}
    c.handle_reply(start, seat(1), Reply::Commitments { commitments: vec![1] }).unwrap();
    c.handle_reply(start, seat(2), Reply::Commitments { commitments: vec![2] }).unwrap();
    let (session, package) = std::iter::from_fn(|| c.poll_transmit())
        .find_map(|t| match t.request {
            Request::Sign { session, packages } => Some((session, packages[0].clone())),
            _ => None,
        })
        .unwrap();
    let bad = share_of(seat(2), &package) ^ 1;
    let refused = c.handle_reply(start, seat(2), Reply::Shares { session, shares: vec![bad], commitments: vec![] });
    c.handle_timeout(start + TIMEOUT);
    let culprit = std::iter::from_fn(|| c.poll_event()).any(|e| matches!(e, Event::Culprit { .. }));
    assert!(culprit, "seat 2's invalid share was not examined ({refused:?}); no culprit reported");
}
