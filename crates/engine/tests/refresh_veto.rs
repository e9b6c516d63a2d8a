//! The refresh veto rule (docs/lifecycle.md, "Finishing or discarding a
//! pending refresh"): only a member that never released its confirmation
//! vetoes; a member holding the result pending discards it only on the
//! valid, distinct vetoes of a threshold of participants; a member that
//! released keeps its pending shares until it switches, and `--resume`
//! finishes the refresh from the confirmations any member holds.

mod common;

use std::collections::BTreeMap;

use common::dkg::*;
use common::*;
use thresig_engine::{
    DkgSessionId, Error, ErrorCode, Recovery, SignedDkgMessage, WalletEpoch, WalletStateKind,
};
use thresig_store::Store;

const N: u16 = 3;

/// The split the old rule allowed (2-of-3): every member releases its
/// confirmation; the coordinator switches seat 1, then asks seat 2 for a
/// veto. Seat 2 released, so it refuses (`refresh_confirmed`) and keeps
/// its pending shares; seat 1 refuses too (it switched). Given the
/// confirmations later seat 2 switches, and the two honest members sign
/// together at the new epoch.
#[test]
fn a_member_that_released_its_confirmation_refuses_to_veto_and_switches_later() {
    let mut c = Cluster::new(701, 2, N, &["w"], small_limits());
    let (p, inbox) = refresh_to_part3(&mut c, "w", 1, 0);
    let confirmations = confirmations(&c, &p, &inbox);
    assert!(deliver(&c, 1, "w", &confirmations));
    for s in [2, 1] {
        let err = c
            .member(s)
            .signer()
            .refresh_abandon(coordinator(1), &p.wallet, p.session)
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::RefreshConfirmed, "seat {s}");
        assert!(err.to_string().contains("--resume"), "{err}");
    }
    assert_eq!(
        at(&c, 2, "w"),
        (WalletStateKind::Refreshing, Some(WalletEpoch(0)))
    );
    assert!(has_share(&c, 2, "w", 1), "seat 2 keeps its pending share");
    assert!(deliver(&c, 2, "w", &confirmations));
    assert_eq!(
        at(&c, 2, "w"),
        (WalletStateKind::Active, Some(WalletEpoch(1)))
    );
    signs_with_current_key(&mut c, "w", &[1, 2], [7; 32]);
}

/// Only seat 1 finished part 3 (it released its confirmation); seats 2
/// and 3 never did, so they veto. Fewer than the threshold of valid,
/// distinct vetoes (one honest veto with a repeat of it, a forged one,
/// one of another epoch or session) discard nothing; the threshold does,
/// and seat 1 signs at the old epoch after a restart.
#[test]
fn a_released_result_is_discarded_only_on_a_threshold_of_valid_distinct_vetoes() {
    let mut c = Cluster::new(702, 2, N, &["w"], small_limits());
    let (p, inbox) = refresh_to_part3(&mut c, "w", 1, 0);
    let mine = finish_at(&c, &p, &inbox, 1).unwrap();
    let veto = |s: u16| {
        c.member(s)
            .signer()
            .refresh_abandon(coordinator(1), &p.wallet, p.session)
            .unwrap()
    };
    let two = veto(2);
    let mut forged = veto_of(2, "w", p.session, 0);
    forged.sender = seat(3);
    let short = [
        vec![two.clone()],
        vec![two.clone(), two.clone()],
        vec![two.clone(), forged],
        vec![two.clone(), veto_of(3, "w", p.session, 1)],
        vec![two.clone(), veto_of(3, "w", DkgSessionId([9; 32]), 0)],
    ];
    for vetoes in short {
        let err = c
            .member(1)
            .signer()
            .refresh_discard(coordinator(1), &p.wallet, p.session, vetoes)
            .unwrap_err();
        assert_eq!(fault_of(err).1, None);
        assert_eq!(
            at(&c, 1, "w"),
            (WalletStateKind::Refreshing, Some(WalletEpoch(0)))
        );
        assert!(has_share(&c, 1, "w", 1), "seat 1 keeps its pending share");
    }
    let three = veto(3);
    assert!(
        c.member(1)
            .signer()
            .refresh_discard(coordinator(1), &p.wallet, p.session, vec![two, three])
            .unwrap()
    );
    c.restart(1);
    assert_eq!(
        at(&c, 1, "w"),
        (WalletStateKind::Active, Some(WalletEpoch(0)))
    );
    assert!(!has_share(&c, 1, "w", 1), "the pending share is gone");
    // Its own confirmation handed back to it switches nothing.
    assert!(c.member(1).signer().dkg_confirm(&wid("w"), &mine).is_err());
    c.sign("w", &[1, 2], &[[8; 32]]);
}

/// A veto asked again adds no record, and a member keeps at most 16
/// divided by the threshold (8 here) that one member asked for, so a
/// member asking for vetoes of made-up sessions cannot fill its store, and
/// another member still has its own 8.
#[test]
fn a_repeated_veto_adds_no_record_and_vetoes_are_capped_per_requester() {
    let c = Cluster::new(703, 2, N, &["w"], small_limits());
    let records = || c.member(3).store().dkg_results(&wid("w")).unwrap().len();
    let ask = |from: u16, session: u8| {
        c.member(3).signer().refresh_abandon(
            coordinator(from),
            &wid("w"),
            DkgSessionId([session; 32]),
        )
    };
    let first = ask(1, 1).unwrap();
    let held = records();
    assert_eq!(ask(1, 1).unwrap().payload, first.payload);
    assert_eq!(records(), held, "a repeated veto writes no record");
    for session in 2..=8 {
        ask(1, session).unwrap();
    }
    let err = ask(1, 9).unwrap_err();
    assert_eq!(err.code(), ErrorCode::CapacityExhausted);
    assert!(err.to_string().contains("seat 1"), "{err}");
    assert_eq!(records(), 8);
    ask(1, 8).unwrap();
    for session in 9..=16 {
        ask(2, session).unwrap();
    }
    assert_eq!(ask(2, 17).unwrap_err().code(), ErrorCode::CapacityExhausted);
    assert_eq!(records(), 16);
}

/// A veto beyond the asking member's cap cannot succeed however often it
/// is asked again (only the wallet's next switch frees room), so it is
/// terminal, not retryable like a nonce limit, and says what to do.
#[test]
fn a_veto_beyond_the_requesters_cap_is_terminal_and_says_to_abort_from_another_member() {
    let c = Cluster::new(713, 2, N, &["w"], small_limits());
    let ask = |session: u8| {
        c.member(3)
            .signer()
            .refresh_abandon(coordinator(1), &wid("w"), DkgSessionId([session; 32]))
    };
    for session in 1..=8 {
        ask(session).unwrap();
    }
    let err = ask(9).unwrap_err();
    assert_eq!(err.code(), ErrorCode::CapacityExhausted);
    assert_eq!(err.recovery(), Recovery::Terminal, "{err}");
    let message = err.to_string();
    assert!(
        message.contains("until the wallet switches")
            && message.contains("--abort from another member"),
        "{message}"
    );
}

/// The coordinator lost every confirmation after delivering two: seat 2
/// got seat 1's and seat 3 got seat 2's; nobody switched. Each member
/// restarts. `--resume`, with seat 1 out of reach, gathers from seats 2
/// and 3 (pending) and switches seat 3; later it gathers from seat 3
/// alone (switched, it keeps the full set) and switches seats 1 and 2.
#[test]
fn resume_completes_from_confirmations_stored_at_a_pending_and_a_switched_member() {
    let mut c = Cluster::new(704, 2, N, &["w"], small_limits());
    let (p, inbox) = refresh_to_part3(&mut c, "w", 1, 0);
    let all = confirmations(&c, &p, &inbox);
    assert!(!deliver(&c, 2, "w", &all[0..1]));
    assert!(!deliver(&c, 3, "w", &all[1..2]));
    for s in seats(&c) {
        c.restart(s);
    }
    let status = c.member(2).signer().status(&wid("w")).unwrap();
    let refresh = status.refresh.unwrap();
    assert!(refresh.released, "the release survives the restart");
    assert_eq!(refresh.confirmed, vec![seat(1), seat(2)]);
    let gathered = |c: &Cluster, s: u16| -> Vec<SignedDkgMessage> {
        let held = c
            .member(s)
            .signer()
            .refresh_confirmations(&wid("w"), p.session)
            .unwrap();
        let union: BTreeMap<_, _> = held.into_iter().map(|m| (m.sender, m)).collect();
        union.into_values().collect()
    };
    let mut from_pending = gathered(&c, 2);
    from_pending.extend(gathered(&c, 3));
    assert_eq!(from_pending.len(), 4, "seat 2's own twice");
    assert!(deliver(&c, 3, "w", &from_pending));
    c.restart(3);
    let from_switched = gathered(&c, 3);
    assert_eq!(from_switched.len(), 3);
    for s in [1, 2] {
        assert!(deliver(&c, s, "w", &from_switched), "seat {s}");
        assert_eq!(
            at(&c, s, "w"),
            (WalletStateKind::Active, Some(WalletEpoch(1)))
        );
    }
    signs_with_current_key(&mut c, "w", &[1, 3], [9; 32]);
}

/// An emergency rekey after the release keeps the pending result (the
/// others may switch on it), across a restart; when the refresh later
/// switches, the wallet is still rekeying, at the new epoch.
#[test]
fn a_rekey_after_the_release_keeps_the_pending_refresh_and_survives_its_switch() {
    let mut c = with_successor(705);
    let (p, inbox) = refresh_to_part3(&mut c, "old", 1, 0);
    let confirmations = confirmations(&c, &p, &inbox);
    c.member(1).signer().begin_rekey(&wid("old")).unwrap();
    for restart in [false, true] {
        if restart {
            c.restart(1);
        }
        assert_eq!(
            at(&c, 1, "old"),
            (WalletStateKind::Rekeying, Some(WalletEpoch(0)))
        );
        assert!(has_share(&c, 1, "old", 1), "the pending share stays");
        let refresh = c.member(1).signer().status(&wid("old")).unwrap().refresh;
        assert_eq!(refresh.map(|r| r.session), Some(p.session));
    }
    assert!(deliver(&c, 1, "old", &confirmations));
    for restart in [false, true] {
        if restart {
            c.restart(1);
        }
        assert_eq!(
            at(&c, 1, "old"),
            (WalletStateKind::Rekeying, Some(WalletEpoch(1)))
        );
    }
    let err = c
        .member(1)
        .signer()
        .refresh_abandon(coordinator(1), &wid("old"), p.session)
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::RefreshConfirmed);
}

/// A confirmation signs the epoch its refresh starts from: a session id
/// run again after two switches (its kept result is gone by then) cannot
/// have the first run's confirmation replayed into it to blame its
/// signer. The replay accuses no one and counts for nothing.
#[test]
fn a_confirmation_of_an_earlier_epoch_under_a_reused_session_id_accuses_no_one() {
    let mut c = Cluster::new(706, 2, N, &["w"], small_limits());
    let (p, inbox) = refresh_to_part3(&mut c, "w", 1, 0);
    let first = confirmations(&c, &p, &inbox);
    activate_everywhere(&c, "w", &first);
    let (p, inbox) = refresh_to_part3(&mut c, "w", 2, 1);
    activate_everywhere(&c, "w", &confirmations(&c, &p, &inbox));
    let (p, inbox) = refresh_to_part3(&mut c, "w", 1, 2);
    let again = confirmations(&c, &p, &inbox);
    let err = c
        .member(1)
        .signer()
        .dkg_confirm(&wid("w"), &first[1])
        .unwrap_err();
    assert_eq!(fault_of(err).1, None, "the replay blames seat 2");
    let status = c.member(1).signer().status(&wid("w")).unwrap();
    assert_eq!(status.refresh.unwrap().confirmed, vec![seat(1)]);
    activate_everywhere(&c, "w", &again);
    assert_eq!(
        at(&c, 1, "w"),
        (WalletStateKind::Active, Some(WalletEpoch(3)))
    );
}

/// 3-of-5, seats 4 and 5 malicious: every member released its
/// confirmation of a refresh, then seat 2 lost its disk. Repaired at the
/// old epoch it would come back `active` with no record of its release
/// and veto; with the two malicious vetoes that is a threshold, and seat 3
/// would discard while seat 1 switches on every confirmation (seat 2's
/// original among them). So a helper holding a refresh pending refuses
/// the repair, and seat 3 keeps its pending result.
#[test]
fn a_helper_with_a_pending_refresh_refuses_a_repair_and_no_veto_discards() {
    use common::repair;
    let mut c = Cluster::new(707, 3, 5, &["w"], small_limits());
    let (p, inbox) = refresh_to_part3(&mut c, "w", 1, 0);
    confirmations(&c, &p, &inbox);
    c.lose_disk(2);
    repair::approve(&c, "w", 2, &[1, 3, 4]);
    let session = repair::session(&c, "w", 2, &[1, 3, 4], 1);
    let (refused_by, err) = repair::run(&mut c, &session).unwrap_err();
    assert_eq!(refused_by, 1, "{err}");
    assert_eq!(err.code(), ErrorCode::RefreshConfirmed, "{err}");
    assert!(err.to_string().contains("--resume"), "{err}");
    assert_eq!(at(&c, 2, "w"), (WalletStateKind::DkgPending, None));
    let mut vetoes = vec![veto_of(4, "w", p.session, 0), veto_of(5, "w", p.session, 0)];
    vetoes.extend(
        c.member(2)
            .signer()
            .refresh_abandon(coordinator(1), &p.wallet, p.session)
            .ok(),
    );
    assert!(
        c.member(3)
            .signer()
            .refresh_discard(coordinator(1), &p.wallet, p.session, vetoes)
            .is_err()
    );
    assert_eq!(
        at(&c, 3, "w"),
        (WalletStateKind::Refreshing, Some(WalletEpoch(0)))
    );
    assert!(has_share(&c, 3, "w", 1), "seat 3 keeps its pending share");
}

/// 3-of-5, seats 4 and 5 malicious, seat 4 coordinating: part 3 reached
/// seats 2 and 3 only (both released); seat 1 still runs the refresh
/// (its part-2 session is live), so the coordinator can still give it
/// part 3 and every confirmation. Repaired at the old epoch by helpers
/// {1, 4, 5}, seat 2 would come back with no record of its release and
/// veto with 4 and 5 while seat 1 switches. So a helper still running the
/// refresh refuses the repair too.
#[test]
fn a_helper_still_running_a_refresh_refuses_a_repair() {
    use common::repair;
    let mut c = Cluster::new(709, 3, 5, &["w"], small_limits());
    let (p, inbox) = refresh_to_part3(&mut c, "w", 1, 0);
    for s in [2, 3] {
        finish_at(&c, &p, &inbox, s).unwrap();
    }
    c.lose_disk(2);
    repair::approve(&c, "w", 2, &[1, 4, 5]);
    let session = repair::session(&c, "w", 2, &[1, 4, 5], 1);
    let (refused_by, err) = repair::run(&mut c, &session).unwrap_err();
    assert_eq!(refused_by, 1, "{err}");
    assert_eq!(err.code(), ErrorCode::RefreshConfirmed, "{err}");
    assert!(err.to_string().contains("--resume"), "{err}");
    assert_eq!(at(&c, 2, "w"), (WalletStateKind::DkgPending, None));
    let confirmation = finish_at(&c, &p, &inbox, 1).unwrap();
    assert_eq!(confirmation.sender.get(), 1, "seat 1 can still release");
}

/// A member asking for vetoes of made-up sessions fills only its own
/// share of a member's veto slots: seat 3 asks seat 2 for as many as it
/// will sign, and an honest coordinator's abort of a real stuck refresh
/// (part 3 at seat 1 only) still gets seat 2's veto, and seat 1 discards.
#[test]
fn one_member_cannot_use_up_the_veto_slots_an_honest_abort_needs() {
    let mut c = Cluster::new(708, 2, N, &["w"], small_limits());
    let (p, inbox) = refresh_to_part3(&mut c, "w", 1, 0);
    finish_at(&c, &p, &inbox, 1).unwrap();
    let mut signed = 0;
    for made_up in 100..=130 {
        let asked = c.member(2).signer().refresh_abandon(
            coordinator(3),
            &p.wallet,
            DkgSessionId([made_up; 32]),
        );
        match asked {
            Ok(_) => signed += 1,
            Err(err) => assert_eq!(err.code(), ErrorCode::CapacityExhausted, "{err}"),
        }
    }
    assert!(signed > 0 && signed < 16, "seat 3 got {signed} vetoes");
    let two = c
        .member(2)
        .signer()
        .refresh_abandon(coordinator(1), &p.wallet, p.session)
        .unwrap();
    let three = veto_of(3, "w", p.session, 0);
    assert!(
        c.member(1)
            .signer()
            .refresh_discard(coordinator(1), &p.wallet, p.session, vec![two, three])
            .unwrap()
    );
    assert_eq!(
        at(&c, 1, "w"),
        (WalletStateKind::Active, Some(WalletEpoch(0)))
    );
}

/// Refresh session 1 of "old" through part 2; seat 1's part-3 commit
/// fails as `fault`, then its operator begins a rekey.
fn rekeyed_after_a_failed_part_3(
    seed: u64,
    fault: Fault,
) -> (
    Cluster,
    thresig_engine::DkgProposal,
    BTreeMap<thresig_crypto::Seat, Vec<SignedDkgMessage>>,
) {
    let mut c = with_successor(seed);
    let (p, inbox) = refresh_to_part3(&mut c, "old", 1, 0);
    c.member(1).store().fail_next_commit(fault);
    let err = finish_at(&c, &p, &inbox, 1).unwrap_err();
    assert_eq!(err.code(), ErrorCode::StorageUnavailable, "{err}");
    c.member(1).signer().begin_rekey(&wid("old")).unwrap();
    (c, p, inbox)
}

/// A part 3 whose commit failed (nothing written), then an emergency
/// rekey, then the same part 3 again: the retry is checked like the first
/// try (the wallet is no longer `active` at the refresh's epoch), so
/// nothing is stored, the member never released, and it vetoes.
#[test]
fn a_retried_part_3_after_a_rekey_stores_nothing_and_the_member_vetoes() {
    let (mut c, p, inbox) = rekeyed_after_a_failed_part_3(709, Fault::Lost);
    let err = finish_at(&c, &p, &inbox, 1).unwrap_err();
    assert_eq!(err.code(), ErrorCode::WalletNotActive, "{err}");
    assert!(!has_share(&c, 1, "old", 1), "no pending share is stored");
    c.member(1)
        .signer()
        .refresh_abandon(coordinator(2), &p.wallet, p.session)
        .unwrap();
    c.restart(1);
    assert_eq!(
        at(&c, 1, "old"),
        (WalletStateKind::Rekeying, Some(WalletEpoch(0)))
    );
}

/// A part 3 whose commit is durable though it reported failure, then an
/// emergency rekey: the rekey reads the stored result back first, so the
/// member holds the refresh pending (the commit is the release point,
/// whatever it answered): it refuses a veto as released, not as switched,
/// and switches on the confirmations without a restart, still rekeying.
#[test]
fn a_rekey_after_an_ambiguous_part_3_commit_keeps_the_pending_refresh() {
    let (c, p, inbox) = rekeyed_after_a_failed_part_3(710, Fault::Ambiguous);
    let status = c.member(1).signer().status(&wid("old")).unwrap();
    assert_eq!(status.refresh.map(|r| r.session), Some(p.session));
    let err = c
        .member(1)
        .signer()
        .refresh_abandon(coordinator(2), &p.wallet, p.session)
        .unwrap_err();
    assert!(matches!(err, Error::RefreshConfirmed { .. }), "{err}");
    let mut all = vec![finish_at(&c, &p, &inbox, 2).unwrap()];
    all.push(finish_at(&c, &p, &inbox, 3).unwrap());
    all.extend(
        c.member(1)
            .signer()
            .refresh_confirmations(&p.wallet, p.session)
            .unwrap(),
    );
    assert!(deliver(&c, 1, "old", &all));
    assert_eq!(
        at(&c, 1, "old"),
        (WalletStateKind::Rekeying, Some(WalletEpoch(1)))
    );
}

/// An emergency rekey of a `refreshing` wallet whose commit was lost: the
/// wallet refuses spends at once (rekeying in memory, the pending refresh
/// kept), and the retried rekey commits it, so a restart finds it
/// rekeying with the pending refresh still kept; the refresh then
/// switches with the wallet still rekeying.
#[test]
fn a_rekey_of_a_refreshing_wallet_retried_after_a_lost_commit_keeps_the_refresh() {
    let mut c = with_successor(711);
    let (p, inbox) = refresh_to_part3(&mut c, "old", 1, 0);
    let confirmations = confirmations(&c, &p, &inbox);
    c.member(1).store().fail_next_record_write(Fault::Lost);
    let err = c.member(1).signer().begin_rekey(&wid("old")).unwrap_err();
    assert_eq!(err.code(), ErrorCode::StorageUnavailable, "{err}");
    assert_eq!(
        at(&c, 1, "old"),
        (WalletStateKind::Rekeying, Some(WalletEpoch(0)))
    );
    c.member(1).signer().begin_rekey(&wid("old")).unwrap();
    c.restart(1);
    assert_eq!(
        at(&c, 1, "old"),
        (WalletStateKind::Rekeying, Some(WalletEpoch(0)))
    );
    assert!(has_share(&c, 1, "old", 1), "the pending share stays");
    assert!(deliver(&c, 1, "old", &confirmations));
    assert_eq!(
        at(&c, 1, "old"),
        (WalletStateKind::Rekeying, Some(WalletEpoch(1)))
    );
}

/// Veto records of unreleased builds (`[3]`, or `[3][epoch]`) are not
/// read as vetoes: asked for a veto of such a session, the member signs
/// nothing and says its store holds a record it cannot read.
#[test]
fn a_veto_record_of_the_dropped_format_is_not_trusted() {
    let c = Cluster::new(712, 2, N, &["w"], small_limits());
    for (n, old) in [vec![3u8], [&[3u8][..], &0u64.to_be_bytes()].concat()]
        .into_iter()
        .enumerate()
    {
        let session = DkgSessionId([0x70 + u8::try_from(n).unwrap(); 32]);
        c.member(2)
            .store()
            .write(vec![thresig_store::WriteOp::PutDkgResult {
                wallet: wid("w"),
                session: thresig_store::DkgSessionId::new(session.0.to_vec()).unwrap(),
                value: old.into(),
            }])
            .unwrap();
        let err = c
            .member(2)
            .signer()
            .refresh_abandon(coordinator(1), &wid("w"), session)
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::StateCorrupt, "{err}");
    }
}
