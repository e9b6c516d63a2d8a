//! DKG participation: signed messages, echo hash, sealing, insert-if-absent
//! key packages and confirmations.

mod common;

use std::collections::BTreeMap;

use common::dkg::*;
use common::*;
use thresig_crypto::Seat;
use thresig_engine::{
    DkgFault, DkgPayload, DkgProposal, DkgSessionId, Error, ErrorCode, HexBytes, SignedDkgMessage,
    WalletStateKind,
};
use thresig_store::{KeyEpoch, Store};

const N: u16 = 3;

#[test]
fn a_dkg_makes_a_wallet_that_signs_only_once_confirmed() {
    let mut c = Cluster::unkeyed(40, 2, N, &["w"]);
    assert_eq!(state(&c, 1, "w"), WalletStateKind::DkgPending);
    let confirmations = through_part3(&mut c, "w", 1);
    // Key package durable, but not active until every confirmation verifies.
    assert_eq!(state(&c, 1, "w"), WalletStateKind::DkgPending);
    assert_eq!(
        c.round1(1, COORD_A, "w", 1).unwrap_err().code(),
        ErrorCode::WalletNotActive
    );
    for s in 1..=N {
        // Its own confirmation counts; one other is not enough.
        let others: Vec<_> = confirmations
            .iter()
            .filter(|m| m.sender.get() != s)
            .cloned()
            .collect();
        assert!(
            !deliver(&c, s, "w", &others[..1]),
            "two of three is not enough"
        );
        assert_eq!(state(&c, s, "w"), WalletStateKind::DkgPending);
        assert!(deliver(&c, s, "w", &others[1..]));
        assert_eq!(state(&c, s, "w"), WalletStateKind::Active);
    }
    let keys: Vec<_> = (1..=N)
        .map(|s| c.member(s).signer().wallet_key(&wid("w")).unwrap())
        .collect();
    assert!(
        keys.iter().all(|k| *k == keys[0]),
        "every member holds the same key"
    );
    c.keys.insert(wid("w"), keys[0].clone());
    assert_eq!(c.sign("w", &[1, 3], &[[4; 32]]).len(), 1);
    // And after a restart the wallet is still active.
    c.restart(2);
    assert_eq!(c.sign("w", &[2, 3], &[[5; 32]]).len(), 1);
}

#[test]
fn a_member_that_missed_the_confirmations_activates_when_they_arrive() {
    let mut c = Cluster::unkeyed(41, 2, N, &["w"]);
    let confirmations = through_part3(&mut c, "w", 1);
    for s in [1, 2] {
        assert!(deliver(&c, s, "w", &confirmations));
    }
    // Seat 3 restarts before any confirmation reached it.
    c.restart(3);
    assert_eq!(state(&c, 3, "w"), WalletStateKind::DkgPending);
    assert!(deliver(&c, 3, "w", &confirmations));
    assert_eq!(state(&c, 3, "w"), WalletStateKind::Active);
    c.keys.insert(
        wid("w"),
        c.member(3).signer().wallet_key(&wid("w")).unwrap(),
    );
    assert_eq!(c.sign("w", &[1, 3], &[[6; 32]]).len(), 1);
}

#[test]
fn a_second_dkg_never_overwrites_a_stored_key_package() {
    let mut c = Cluster::unkeyed(42, 2, N, &["w"]);
    let first = through_part3(&mut c, "w", 1);
    // A second session runs parts 1 and 2, but part 3 finds the key package.
    let p = proposal(&c, "w", 2);
    let r1 = part1(&mut c, &p);
    let inbox = part2(&mut c, &p, &r1);
    for result in part3(&c, &p, &inbox) {
        let err = result.unwrap_err();
        assert!(matches!(err, Error::KeyPackagePresent { .. }), "{err:?}");
    }
    // The first key is the one that becomes active.
    for s in 1..=N {
        c.restart(s);
        assert!(deliver(&c, s, "w", &first));
    }
    let DkgPayload::Confirm { output_key, .. } = &first[0].payload else {
        panic!("not a confirmation")
    };
    let status = c.member(1).signer().status(&wid("w")).unwrap();
    assert_eq!(status.output_key.unwrap(), *output_key);
    // An active wallet refuses a new DKG outright.
    let err = c.members[0]
        .signer()
        .dkg_start(c.now, coordinator(1), &p, &mut c.rng)
        .unwrap_err();
    assert!(matches!(err, Error::WalletAlreadyKeyed { .. }), "{err:?}");
}

#[test]
fn a_round2_payload_with_another_echo_hash_aborts() {
    let mut c = Cluster::unkeyed(45, 2, N, &["w"]);
    let p = proposal(&c, "w", 1);
    let r1 = part1(&mut c, &p);
    let mut inbox = part2(&mut c, &p, &r1);
    tampered(&mut inbox, |payload, _| {
        let DkgPayload::Round2 { echo, .. } = payload else {
            panic!("not round 2")
        };
        echo.0[0] ^= 1;
    });
    let err = part3(&c, &p, &inbox).remove(0).unwrap_err();
    // Seat 1 cannot tell a lying relay from a lying seat 2: no one accused.
    assert_eq!(fault_of(err), (1, None, DkgFault::EchoMismatch));
    assert_eq!(state(&c, 1, "w"), WalletStateKind::DkgPending);
}

/// Sends `req` to seat `s` through its entry point, as the daemon does,
/// from coordinator seat 1.
fn call(c: &mut Cluster, s: u16, req: thresig_engine::Request) -> thresig_engine::Response {
    let now = c.now;
    let signer = c.members[usize::from(s) - 1].signer();
    match signer.handle(now, coordinator(1), req, &mut c.rng) {
        Ok(r) => r,
        Err(e) => panic!("seat {s}: {e:?}"),
    }
}

fn messages(r: thresig_engine::Response) -> Vec<SignedDkgMessage> {
    match r {
        thresig_engine::Response::DkgMessages { messages } => messages,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_dkg_runs_through_the_entry_point() {
    use thresig_engine::{Request, Response};
    let mut c = Cluster::unkeyed(47, 2, N, &["w"]);
    let p = proposal(&c, "w", 9);
    let r1: Vec<_> = (1..=N)
        .flat_map(|s| messages(call(&mut c, s, Request::DkgStart(p.clone()))))
        .collect();
    let mut inbox: BTreeMap<Seat, Vec<SignedDkgMessage>> = BTreeMap::new();
    for s in 1..=N {
        let round1 = r1.iter().filter(|m| m.sender.get() != s).cloned().collect();
        let req = Request::DkgRound2 {
            wallet: wid("w"),
            session: p.session,
            round1,
        };
        for m in messages(call(&mut c, s, req)) {
            let DkgPayload::Round2 { to, .. } = &m.payload else {
                panic!("not round 2")
            };
            inbox.entry(*to).or_default().push(m);
        }
    }
    let mut confirmations = Vec::new();
    for s in 1..=N {
        let req = Request::DkgFinish {
            wallet: wid("w"),
            session: p.session,
            round2: inbox[&seat(s)].clone(),
        };
        confirmations.extend(messages(call(&mut c, s, req)));
    }
    for s in 1..=N {
        for m in &confirmations {
            let req = Request::DkgConfirm {
                wallet: wid("w"),
                confirmation: m.clone(),
            };
            let Response::Confirmations(status) = call(&mut c, s, req) else {
                panic!("not a confirmation status")
            };
            assert_eq!(status.needed, 3);
        }
        assert_eq!(state(&c, s, "w"), WalletStateKind::Active);
    }
}

#[test]
fn a_confirmation_of_another_result_or_badly_signed_is_refused() {
    let mut c = Cluster::unkeyed(48, 2, N, &["w"]);
    let confirmations = through_part3(&mut c, "w", 1);
    let from2 = confirmations.iter().find(|m| m.sender.get() == 2).unwrap();
    let DkgPayload::Confirm { transcript, .. } = &from2.payload else {
        panic!("not a confirmation")
    };
    let other = DkgPayload::Confirm {
        output_key: HexBytes(vec![7; 32]),
        transcript: transcript.clone(),
    };
    let forged =
        SignedDkgMessage::sign(&identity_secret(2), from2.session, wid("w"), seat(2), other);
    let signer = c.member(1).signer();
    let err = signer.dkg_confirm(&wid("w"), &forged).unwrap_err();
    assert_eq!(fault_of(err), (1, Some(2), DkgFault::ConfirmationMismatch));
    let mut bad = from2.clone();
    bad.signature.0[0] ^= 1;
    let err = signer.dkg_confirm(&wid("w"), &bad).unwrap_err();
    assert_eq!(fault_of(err), (1, None, DkgFault::BadSignature));
    // A genuine confirmation replayed from another session accuses no one.
    let replayed = SignedDkgMessage::sign(
        &identity_secret(2),
        DkgSessionId([5; 32]),
        wid("w"),
        seat(2),
        from2.payload.clone(),
    );
    let err = signer.dkg_confirm(&wid("w"), &replayed).unwrap_err();
    assert_eq!(fault_of(err), (1, None, DkgFault::BadSignature));
    // Neither counted: the genuine ones still activate the wallet.
    assert!(deliver(&c, 1, "w", &confirmations));
}

#[test]
fn only_an_operator_abort_clears_an_unconfirmed_key_package() {
    let mut c = Cluster::unkeyed(49, 2, N, &["w"]);
    through_part3(&mut c, "w", 1);
    for s in 1..=N {
        let signer = c.member(s).signer();
        assert!(signer.dkg_abort(&wid("w"), DkgSessionId([2; 32])).is_err());
        signer.dkg_abort(&wid("w"), DkgSessionId([1; 32])).unwrap();
        c.restart(s);
        assert_eq!(state(&c, s, "w"), WalletStateKind::DkgPending);
    }
    // A new session now completes and activates the wallet.
    let confirmations = through_part3(&mut c, "w", 2);
    for s in 1..=N {
        assert!(deliver(&c, s, "w", &confirmations));
    }
}

/// A DKG whose part 3 at seat 1 failed its commit as `fault`, after parts
/// 1 and 2 everywhere and part 3 at seats 2 and 3. Returns the cluster, the
/// proposal, seat 1's round-2 inbox and the other seats' confirmations.
fn failed_part3(
    seed: u64,
    fault: Fault,
) -> (
    Cluster,
    DkgProposal,
    Vec<SignedDkgMessage>,
    Vec<SignedDkgMessage>,
) {
    let mut c = Cluster::unkeyed(seed, 2, N, &["w"]);
    let p = proposal(&c, "w", 1);
    let r1 = part1(&mut c, &p);
    let inbox = part2(&mut c, &p, &r1);
    let others = (2..=N)
        .map(|s| {
            c.member(s)
                .signer()
                .dkg_finish(
                    c.now,
                    coordinator(1),
                    &p.wallet,
                    p.session,
                    &inbox[&seat(s)],
                )
                .unwrap()
        })
        .collect();
    c.member(1).store().fail_next_commit(fault);
    let err = c
        .member(1)
        .signer()
        .dkg_finish(
            c.now,
            coordinator(1),
            &p.wallet,
            p.session,
            &inbox[&seat(1)],
        )
        .unwrap_err();
    assert!(matches!(err, Error::Store { .. }), "{err:?}");
    assert_eq!(err.code(), ErrorCode::StorageUnavailable);
    assert_eq!(err.recovery(), thresig_store::Recovery::Retryable);
    (c, p, inbox[&seat(1)].clone(), others)
}

/// Whether seat 1's store holds a key package for wallet "w".
fn seat1_has_key_package(c: &Cluster) -> bool {
    let w = wid("w");
    let stored = c.member(1).store().key_package(&w, KeyEpoch(1));
    stored.unwrap().is_some()
}

/// Seat 1's store holds neither a DKG result nor a key package for "w".
fn assert_seat1_holds_no_result(c: &Cluster) {
    assert!(!seat1_has_key_package(c));
    let w = wid("w");
    assert!(c.member(1).store().dkg_results(&w).unwrap().is_empty());
}

/// The operator aborts DKG session `p` at every seat.
fn abort_everywhere(c: &Cluster, p: &DkgProposal) {
    for s in 1..=N {
        c.member(s)
            .signer()
            .dkg_abort(&p.wallet, p.session)
            .unwrap();
    }
}

#[test]
fn a_lost_part3_commit_is_retryable_and_the_identical_retry_succeeds() {
    let (c, p, inbox, mut confirmations) = failed_part3(201, Fault::Lost);
    assert!(!seat1_has_key_package(&c), "nothing durable yet");
    let signer = c.member(1).signer();
    // Another request does not take over the pending result.
    assert!(matches!(
        signer.dkg_finish(c.now, coordinator(1), &p.wallet, p.session, &inbox[..1]),
        Err(Error::DkgNotInPhase { .. })
    ));
    let own = signer
        .dkg_finish(c.now, coordinator(1), &p.wallet, p.session, &inbox)
        .unwrap();
    assert!(seat1_has_key_package(&c));
    // Asking again returns the same confirmation.
    let again = signer
        .dkg_finish(c.now, coordinator(1), &p.wallet, p.session, &inbox)
        .unwrap();
    assert_eq!(again, own);
    confirmations.push(own);
    activate_everywhere(&c, "w", &confirmations);
}

#[test]
fn an_ambiguous_part3_commit_is_adopted_by_confirmations_and_abortable() {
    let (mut c, p, _, confirmations) = failed_part3(202, Fault::Ambiguous);
    assert!(seat1_has_key_package(&c), "the commit was durable");
    let signer = c.member(1).signer();
    // A peer's confirmation is accepted: the durable result is adopted.
    let status = signer.dkg_confirm(&p.wallet, &confirmations[0]).unwrap();
    assert_eq!((status.confirmed, status.active), (2, false));
    // The operator can abort it, and a new DKG then runs.
    abort_everywhere(&c, &p);
    assert!(!seat1_has_key_package(&c));
    let confirmations = through_part3(&mut c, "w", 2);
    activate_everywhere(&c, "w", &confirmations);
}

#[test]
fn an_ambiguous_part3_commit_is_adopted_by_the_identical_retry() {
    let (c, p, inbox, mut confirmations) = failed_part3(204, Fault::Ambiguous);
    let signer = c.member(1).signer();
    confirmations.push(
        signer
            .dkg_finish(c.now, coordinator(1), &p.wallet, p.session, &inbox)
            .unwrap(),
    );
    activate_everywhere(&c, "w", &confirmations);
}

#[test]
fn an_ambiguous_part3_commit_can_be_aborted_directly() {
    let (c, p, _, _) = failed_part3(205, Fault::Ambiguous);
    c.member(1)
        .signer()
        .dkg_abort(&p.wallet, p.session)
        .unwrap();
    assert_seat1_holds_no_result(&c);
}

/// A DKG started after an ambiguous part-3 commit adopts that durable
/// result; the operator's abort of the old session then deletes it in one
/// call and leaves the new session running, which makes the wallet.
#[test]
fn aborting_an_adopted_part3_keeps_the_later_session_running() {
    let (mut c, p, _, _) = failed_part3(207, Fault::Ambiguous);
    let again = proposal(&c, "w", 2);
    let r1 = part1(&mut c, &again);
    abort_everywhere(&c, &p);
    assert_seat1_holds_no_result(&c);
    let inbox = part2(&mut c, &again, &r1);
    activate_everywhere(&c, "w", &confirmations(&c, &again, &inbox));
}

/// A second session started while the first one's result awaits its
/// confirmations finishes part 3 in memory only (its commit lost); aborting
/// it drops it and leaves the first result, which still activates.
#[test]
fn aborting_a_later_finished_part3_keeps_the_awaited_result() {
    let mut c = Cluster::unkeyed(208, 2, N, &["w"]);
    let confirmations = through_part3(&mut c, "w", 1);
    let later = proposal(&c, "w", 2);
    let r1 = part1(&mut c, &later);
    let inbox = part2(&mut c, &later, &r1);
    c.member(1).store().fail_next_commit(Fault::Lost);
    let signer = c.member(1).signer();
    let err = signer
        .dkg_finish(
            c.now,
            coordinator(1),
            &later.wallet,
            later.session,
            &inbox[&seat(1)],
        )
        .unwrap_err();
    assert!(matches!(err, Error::Store { .. }), "{err:?}");
    signer.dkg_abort(&later.wallet, later.session).unwrap();
    assert!(
        seat1_has_key_package(&c),
        "the awaited result's key package"
    );
    activate_everywhere(&c, "w", &confirmations);
}

/// The coordinator relays every DKG message: one forged envelope must not
/// get an honest member accused.
#[test]
fn a_forged_envelope_does_not_accuse_its_claimed_sender() {
    let mut c = Cluster::unkeyed(203, 2, N, &["w"]);
    let p = proposal(&c, "w", 1);
    let r1 = part1(&mut c, &p);
    let mut forged = r1[1].clone();
    forged.signature = HexBytes(vec![0; 64]);
    let err = c.members[0]
        .signer()
        .dkg_round2(
            c.now,
            coordinator(1),
            &p.wallet,
            p.session,
            &[forged, r1[2].clone()],
            &mut c.rng,
        )
        .unwrap_err();
    let Error::DkgFailed { accused, .. } = err else {
        panic!("{err:?}")
    };
    assert_ne!(
        accused,
        Some(seat(2)),
        "seat 2 is accused on the strength of a signature it never made"
    );
    assert_eq!(accused, None, "no member is accused of a relay fault");
}

/// A genuine, validly signed message relayed twice or in another round
/// proves nothing against its sender: the coordinator chose where it went.
#[test]
fn a_genuine_message_relayed_twice_or_in_another_round_accuses_no_one() {
    let mut c = Cluster::unkeyed(206, 2, N, &["w"]);
    let p = proposal(&c, "w", 1);
    let r1 = part1(&mut c, &p);
    let twice = [r1[1].clone(), r1[1].clone(), r1[2].clone()];
    let err = c.members[0]
        .signer()
        .dkg_round2(
            c.now,
            coordinator(1),
            &p.wallet,
            p.session,
            &twice,
            &mut c.rng,
        )
        .unwrap_err();
    assert_eq!(fault_of(err), (1, None, DkgFault::DuplicateSender));

    // Seats 2 and 3 still hold session 1 until it expires.
    c.advance(std::time::Duration::from_secs(11 * 60));
    let p = proposal(&c, "w", 2);
    let r1 = part1(&mut c, &p);
    let inbox = part2(&mut c, &p, &r1);
    // Seat 3's inbox with seat 2's round-1 message in place of its round-2.
    let mut wrong_round = inbox[&seat(3)].clone();
    for m in &mut wrong_round {
        if m.sender.get() == 2 {
            *m = r1[1].clone();
        }
    }
    let signer = c.member(3).signer();
    let err = signer
        .dkg_finish(c.now, coordinator(1), &p.wallet, p.session, &wrong_round)
        .unwrap_err();
    assert_eq!(fault_of(err), (3, None, DkgFault::UnexpectedPayload));
    let mut twice = inbox[&seat(1)].clone();
    twice.push(twice[0].clone());
    let err = c
        .member(1)
        .signer()
        .dkg_finish(c.now, coordinator(1), &p.wallet, p.session, &twice)
        .unwrap_err();
    assert_eq!(fault_of(err), (1, None, DkgFault::DuplicateSender));
}

/// A coordinator that saw seat 1's part 3 fail may start a new session. If
/// that part-3 commit was durable after all, the start adopts the stored
/// result first (as a restart would), so the first session's confirmations
/// still activate seat 1 instead of finding nothing to confirm.
#[test]
fn a_dkg_start_after_an_ambiguous_part3_commit_adopts_the_durable_result() {
    let (mut c, p, inbox, mut confirmations) = failed_part3(206, Fault::Ambiguous);
    let again = proposal(&c, "w", 2);
    c.members[0]
        .signer()
        .dkg_start(c.now, coordinator(1), &again, &mut c.rng)
        .unwrap();
    let signer = c.member(1).signer();
    let status = signer.dkg_confirm(&p.wallet, &confirmations[0]).unwrap();
    assert_eq!((status.confirmed, status.active), (2, false));
    // Its own confirmation is still answered for the first session.
    confirmations.push(
        signer
            .dkg_finish(c.now, coordinator(1), &p.wallet, p.session, &inbox)
            .unwrap(),
    );
    activate_everywhere(&c, "w", &confirmations);
}

/// Sends `req` to seat `s` at the cluster's clock from coordinator seat 1.
fn handle(
    c: &mut Cluster,
    s: u16,
    req: thresig_engine::Request,
) -> Result<thresig_engine::Response, Error> {
    handle_from(c, s, 1, req)
}

/// Sends `req` to seat `s` at the cluster's clock from coordinator seat
/// `from`.
fn handle_from(
    c: &mut Cluster,
    s: u16,
    from: u16,
    req: thresig_engine::Request,
) -> Result<thresig_engine::Response, Error> {
    let now = c.now;
    let signer = c.members[usize::from(s) - 1].signer();
    signer.handle(now, coordinator(from), req, &mut c.rng)
}

/// Part 1 at every seat through [`handle`], at the cluster's clock.
fn part1_at_now(c: &mut Cluster, p: &DkgProposal) -> Vec<SignedDkgMessage> {
    (1..=N)
        .flat_map(|s| messages(handle(c, s, thresig_engine::Request::DkgStart(p.clone())).unwrap()))
        .collect()
}

/// A part-2 reply lost in transport is asked for again with the same bytes;
/// the member must answer with the same sealed messages (as parts 1 and 3
/// do), not fail the DKG and get an honest member blamed.
#[test]
fn a_retried_part2_is_answered_with_the_same_messages() {
    let mut c = Cluster::unkeyed(210, 2, N, &["w"]);
    let p = proposal(&c, "w", 1);
    let r1 = part1(&mut c, &p);
    let view = |s: Seat| -> Vec<SignedDkgMessage> {
        r1.iter().filter(|m| m.sender != s).cloned().collect()
    };
    let first = part2_each(&mut c, &p, view);
    let signer = c.members[0].signer();
    let again = signer
        .dkg_round2(
            c.now,
            coordinator(1),
            &p.wallet,
            p.session,
            &view(Seat::FIRST),
            &mut c.rng,
        )
        .unwrap();
    assert_eq!(
        &again,
        first[&Seat::FIRST].as_ref().unwrap(),
        "another answer"
    );
    // Anything but the identical request is still refused.
    let err = signer
        .dkg_round2(
            c.now,
            coordinator(1),
            &p.wallet,
            p.session,
            &view(Seat::FIRST)[..1],
            &mut c.rng,
        )
        .unwrap_err();
    assert!(matches!(err, Error::DkgNotInPhase { .. }), "{err:?}");
    let inbox = route(first.into_values().flat_map(Result::unwrap));
    activate_everywhere(&c, "w", &confirmations(&c, &p, &inbox));
}

/// A second coordinator's start must not silently replace a DKG in
/// progress: it is refused, retryably, naming the session that holds the
/// wallet, until that session expires.
#[test]
fn a_different_session_is_refused_while_one_runs_and_accepted_after_it_expires() {
    let mut c = Cluster::unkeyed(211, 2, N, &["w"]);
    let first = proposal(&c, "w", 1);
    handle(&mut c, 1, thresig_engine::Request::DkgStart(first.clone())).unwrap();
    let second = proposal(&c, "w", 2);
    let err = handle(&mut c, 1, thresig_engine::Request::DkgStart(second.clone())).unwrap_err();
    assert_eq!(err.code().as_str(), "dkg_busy", "{err:?}");
    assert_eq!(err.recovery(), thresig_store::Recovery::Retryable);
    let holder = hex::encode(first.session.0);
    assert!(err.to_string().contains(&holder), "{err}");
    // The running session is untouched: the same start is answered again.
    handle(&mut c, 1, thresig_engine::Request::DkgStart(first)).unwrap();
    c.advance(std::time::Duration::from_secs(11 * 60));
    handle(&mut c, 1, thresig_engine::Request::DkgStart(second)).unwrap();
}

/// A session nobody finishes does not keep its secrets and HPKE key in
/// memory forever: once expired it is gone, whether the periodic prune or
/// the next request finds it first.
#[test]
fn an_expired_dkg_session_is_dropped() {
    let mut c = Cluster::unkeyed(212, 2, N, &["w"]);
    let p = proposal(&c, "w", 1);
    let r1 = part1_at_now(&mut c, &p);
    c.advance(std::time::Duration::from_secs(11 * 60));
    let now = c.now;
    c.member(1).signer().prune(now).unwrap();
    for s in [1, 2] {
        let req = thresig_engine::Request::DkgRound2 {
            wallet: wid("w"),
            session: p.session,
            round1: r1.iter().filter(|m| m.sender.get() != s).cloned().collect(),
        };
        let err = handle(&mut c, s, req).unwrap_err();
        assert!(
            matches!(err, Error::DkgNotInPhase { .. }),
            "seat {s}: {err:?}"
        );
    }
}

/// A round-1 package whose length does not fit t commitments is refused
/// before any of its points is decoded (decoding is the costly part, and a
/// package may be as large as a request).
#[test]
fn a_round1_package_of_the_wrong_length_is_refused_before_decoding() {
    let mut c = Cluster::unkeyed(213, 2, N, &["w"]);
    let p = proposal(&c, "w", 1);
    let mut r1 = part1(&mut c, &p);
    let DkgPayload::Round1 { package, hpke_key } = r1[1].payload.clone() else {
        panic!("not round 1")
    };
    // Bytes that are no valid point at all: decoding them first would
    // report an invalid package, not its length.
    let long = HexBytes(vec![0xff; package.0.len() + 33]);
    r1[1] = SignedDkgMessage::sign(
        &identity_secret(2),
        p.session,
        p.wallet.clone(),
        seat(2),
        DkgPayload::Round1 {
            package: long,
            hpke_key,
        },
    );
    let err = c.members[0]
        .signer()
        .dkg_round2(
            c.now,
            coordinator(1),
            &p.wallet,
            p.session,
            &r1[1..],
            &mut c.rng,
        )
        .unwrap_err();
    assert_eq!(fault_of(err), (1, Some(2), DkgFault::WrongPackageLength));
}

/// A coordinator outside a wallet learns nothing about which wallet ids
/// exist: an unknown wallet and a wallet it is not a member of get the
/// same code, class and message.
#[test]
fn unknown_wallet_and_not_a_member_get_the_same_answer() {
    let mut c = Cluster::unkeyed(214, 2, N, &["w"]);
    let now = c.now;
    let stranger = coordinator(N + 1);
    let ask = |c: &mut Cluster, wallet: &str| {
        let signer = c.members[0].signer();
        let req = thresig_engine::Request::Status {
            wallet: wid(wallet),
        };
        signer.handle(now, stranger, req, &mut c.rng).unwrap_err()
    };
    let exists = ask(&mut c, "w");
    let missing = ask(&mut c, "nope");
    assert_eq!(exists.code(), missing.code());
    assert_eq!(exists.recovery(), missing.recovery());
    assert_eq!(
        exists.to_string().replace("nope", "w"),
        missing.to_string().replace("nope", "w")
    );
}

/// A relay's cancel drops its own session in part 1 or 2 (so the next DKG
/// need not wait for it to expire), never another session and never a
/// finished one, whose key package only the operator may remove.
#[test]
fn a_cancel_drops_only_its_own_session_in_progress() {
    let mut c = Cluster::unkeyed(215, 2, N, &["w"]);
    let first = proposal(&c, "w", 1);
    part1(&mut c, &first);
    let signer = c.member(1).signer();
    assert!(
        !signer
            .dkg_cancel(coordinator(1), &wid("w"), DkgSessionId([2; 32]))
            .unwrap()
    );
    let second = proposal(&c, "w", 2);
    let err = c.members[0]
        .signer()
        .dkg_start(c.now, coordinator(1), &second, &mut c.rng)
        .unwrap_err();
    assert!(matches!(err, Error::DkgBusy { .. }), "{err:?}");
    for s in seats(&c) {
        let signer = c.member(s).signer();
        assert!(
            signer
                .dkg_cancel(coordinator(1), &wid("w"), first.session)
                .unwrap()
        );
        assert!(
            !signer
                .dkg_cancel(coordinator(1), &wid("w"), first.session)
                .unwrap()
        );
    }
    // A part 3 whose commit failed is finished: its result waits in memory
    // for the byte-identical retry, and the cancel leaves it there.
    let (c, p, inbox, mut confirmations) = failed_part3(216, Fault::Lost);
    let signer = c.member(1).signer();
    assert!(
        !signer
            .dkg_cancel(coordinator(1), &p.wallet, p.session)
            .unwrap()
    );
    confirmations.push(
        signer
            .dkg_finish(c.now, coordinator(1), &p.wallet, p.session, &inbox)
            .unwrap(),
    );
    assert!(seat1_has_key_package(&c));
    activate_everywhere(&c, "w", &confirmations);
}

/// A part 3 whose commit failed still holds the wallet (its result may be
/// needed by the identical retry): another session's start is refused.
#[test]
fn a_finished_part3_whose_commit_failed_holds_the_wallet() {
    let (mut c, p, inbox, mut confirmations) = failed_part3(217, Fault::Lost);
    let second = proposal(&c, "w", 2);
    let err = handle(&mut c, 1, thresig_engine::Request::DkgStart(second)).unwrap_err();
    assert!(matches!(err, Error::DkgBusy { .. }), "{err:?}");
    confirmations.push(
        c.member(1)
            .signer()
            .dkg_finish(c.now, coordinator(1), &p.wallet, p.session, &inbox)
            .unwrap(),
    );
    activate_everywhere(&c, "w", &confirmations);
}

/// Only the member that started a DKG session coordinates it: another
/// member's cancel, part 2 or part 3 of that session is refused with
/// `dkg_busy` naming the session and its coordinator, accuses no one, and
/// changes nothing.
#[test]
fn only_the_coordinator_that_started_a_dkg_continues_or_cancels_it() {
    use thresig_engine::Request;
    let mut c = Cluster::unkeyed(218, 2, N, &["w"]);
    let p = proposal(&c, "w", 1);
    let r1 = part1_at_now(&mut c, &p);
    let view = |s: Seat| -> Vec<SignedDkgMessage> {
        r1.iter().filter(|m| m.sender != s).cloned().collect()
    };
    let holder = hex::encode(p.session.0);
    let refused = |err: Error| {
        assert!(matches!(err, Error::DkgBusy { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&holder) && text.contains("seat 1"), "{text}");
    };
    for s in seats(&c) {
        let cancel = Request::DkgCancel {
            wallet: p.wallet.clone(),
            session: p.session,
            abandon: false,
            abandonments: Vec::new(),
        };
        refused(handle_from(&mut c, s, 3, cancel).unwrap_err());
        let empty = Request::DkgRound2 {
            wallet: p.wallet.clone(),
            session: p.session,
            round1: Vec::new(),
        };
        refused(handle_from(&mut c, s, 3, empty).unwrap_err());
        let other = Request::DkgStart(proposal(&c, "w", 2));
        refused(handle_from(&mut c, s, 3, other).unwrap_err());
    }
    let mut sealed = Vec::new();
    for s in seats(&c) {
        let req = Request::DkgRound2 {
            wallet: p.wallet.clone(),
            session: p.session,
            round1: view(seat(s)),
        };
        refused(handle_from(&mut c, s, 2, req.clone()).unwrap_err());
        sealed.extend(messages(handle(&mut c, s, req).unwrap()));
    }
    let inbox = route(sealed);
    let mut confirmations = Vec::new();
    for s in seats(&c) {
        let req = Request::DkgFinish {
            wallet: p.wallet.clone(),
            session: p.session,
            round2: inbox[&seat(s)].clone(),
        };
        refused(handle_from(&mut c, s, 2, req.clone()).unwrap_err());
        confirmations.extend(messages(handle(&mut c, s, req).unwrap()));
    }
    activate_everywhere(&c, "w", &confirmations);
}

/// A relay's cancel can overtake its own start still queued at a member
/// (the relay gave up waiting for it): the start that arrives after the
/// cancel is refused, so it does not hold the wallet until it expires.
/// Another member's cancel of the session id has no such effect.
#[test]
fn a_start_that_arrives_after_its_own_cancel_is_refused() {
    use thresig_engine::{Request, Response};
    let mut c = Cluster::unkeyed(219, 2, N, &["w"]);
    let p = proposal(&c, "w", 1);
    let cancel = Request::DkgCancel {
        wallet: p.wallet.clone(),
        session: p.session,
        abandon: false,
        abandonments: Vec::new(),
    };
    let dropped = |r: Result<Response, Error>| match r.unwrap() {
        Response::DkgCancelled { dropped, .. } => dropped,
        other => panic!("unexpected {other:?}"),
    };
    assert!(!dropped(handle_from(&mut c, 2, 3, cancel.clone())));
    handle(&mut c, 2, Request::DkgStart(p.clone())).unwrap();
    assert!(!dropped(handle(&mut c, 1, cancel)));
    let err = handle(&mut c, 1, Request::DkgStart(p.clone())).unwrap_err();
    assert!(matches!(err, Error::DkgNotInPhase { .. }), "{err:?}");
    // Nothing holds the wallet: the relay's next run starts at once.
    let next = proposal(&c, "w", 2);
    handle(&mut c, 1, Request::DkgStart(next)).unwrap();
}
