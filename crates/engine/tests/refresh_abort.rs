//! Ending a share refresh safely (DESIGN.md §4, lifecycle "Aborting a
//! refresh"): a member that released its confirmation never discards its
//! pending shares on an operator's or coordinator's word; part 3 re-checks
//! the wallet; a session id is never run twice.

mod common;

use std::collections::BTreeMap;

use common::dkg::*;
use common::*;
use thresig_crypto::{ScriptTree, Seat};
use thresig_engine::test_util::identity_secret;
use thresig_engine::{
    DkgKind, DkgPayload, DkgProposal, DkgSessionId, ErrorCode, HexBytes, Limits, SignedDkgMessage,
    WalletEpoch, WalletStateKind,
};
use thresig_store::{KeyEpoch, Store};

const N: u16 = 3;

/// A refresh proposal of `wallet`, session `[session; 32]`, from wallet
/// epoch `from`, removing no one.
fn refresh_of(c: &Cluster, wallet: &str, session: u8, from: u64) -> DkgProposal {
    proposal(c, wallet, session).with_kind(DkgKind::Refresh {
        from_epoch: WalletEpoch(from),
        removed: Vec::new(),
    })
}

/// A refresh of `wallet` (session `[session; 32]`, from epoch `from`)
/// run through part 2 at every member: the proposal and each member's
/// part-3 inbox.
fn to_part3(
    c: &mut Cluster,
    wallet: &str,
    session: u8,
    from: u64,
) -> (DkgProposal, BTreeMap<Seat, Vec<SignedDkgMessage>>) {
    let p = refresh_of(c, wallet, session, from);
    let r1 = part1(c, &p);
    let inbox = part2(c, &p, &r1);
    (p, inbox)
}

/// Seat `s`'s (state, epoch) of `wallet`.
fn at(c: &Cluster, s: u16, wallet: &str) -> (WalletStateKind, Option<WalletEpoch>) {
    let status = c.member(s).signer().status(&wid(wallet)).unwrap();
    (status.state, status.epoch)
}

/// Whether seat `s` stores a key package of wallet `w` at wallet epoch
/// `epoch` (key epochs count from 1).
fn has_share(c: &Cluster, s: u16, w: &str, epoch: u64) -> bool {
    c.member(s)
        .store()
        .key_package(&wid(w), KeyEpoch(epoch + 1))
        .unwrap()
        .is_some()
}

/// Review A High 2: 3-of-3 here, the coordinator withholds every
/// confirmation, then an operator aborts at seat 2. If seat 2 dropped its
/// pending shares, seats 1 and 3 would switch on the withheld
/// confirmations and no epoch would hold the threshold any more.
#[test]
fn an_abort_after_the_confirmation_was_released_is_refused() {
    let mut c = Cluster::new(601, 3, N, &["w"], small_limits());
    let (p, inbox) = to_part3(&mut c, "w", 1, 0);
    let withheld = confirmations(&c, &p, &inbox);
    let err = c.member(2).signer().dkg_abort(&wid("w"), p.session);
    assert_eq!(err.unwrap_err().code(), ErrorCode::DkgNotInPhase);
    assert_eq!(
        at(&c, 2, "w"),
        (WalletStateKind::Refreshing, Some(WalletEpoch(0)))
    );
    assert!(has_share(&c, 2, "w", 1), "seat 2 keeps its pending share");
    activate_everywhere(&c, "w", &withheld);
    for s in seats(&c) {
        assert_eq!(
            at(&c, s, "w"),
            (WalletStateKind::Active, Some(WalletEpoch(1)))
        );
    }
    let key = c.member(1).signer().wallet_key(&wid("w")).unwrap();
    c.keys.insert(wid("w"), key);
    c.sign("w", &[1, 2, 3], &[[7; 32]]);
}

/// Review A Medium 5 / Review B Medium 6a: the part-3 commit is durable
/// but reported failed (no confirmation released), the operator aborts:
/// the stored result goes too, so a restart does not bring it back.
#[test]
fn an_abort_deletes_a_part3_result_whose_failed_commit_was_durable() {
    let mut c = Cluster::new(602, 2, N, &["w"], small_limits());
    let (p, inbox) = to_part3(&mut c, "w", 1, 0);
    c.member(1).store().fail_next_commit(Fault::Ambiguous);
    let results = part3(&c, &p, &inbox);
    assert!(results[0].is_err(), "seat 1 released no confirmation");
    c.member(1)
        .signer()
        .dkg_abort(&wid("w"), p.session)
        .unwrap();
    c.restart(1);
    assert_eq!(
        at(&c, 1, "w"),
        (WalletStateKind::Active, Some(WalletEpoch(0)))
    );
    assert!(!has_share(&c, 1, "w", 1), "no epoch-1 share at seat 1");
}

/// Review B Medium 7: an operator begins a rekey between part 1 and
/// part 3. Part 3 refuses and stores nothing (before, it stored an orphan
/// pending share and answered `internal`).
#[test]
fn part3_refuses_a_wallet_that_began_a_rekey_meanwhile_and_stores_nothing() {
    let mut c = with_successor(603);
    let (p, inbox) = to_part3(&mut c, "old", 1, 0);
    c.member(1).signer().begin_rekey(&wid("old")).unwrap();
    let results = part3(&c, &p, &inbox);
    assert_eq!(
        results[0].as_ref().unwrap_err().code(),
        ErrorCode::WalletNotActive
    );
    assert_eq!(
        at(&c, 1, "old"),
        (WalletStateKind::Rekeying, Some(WalletEpoch(0)))
    );
    assert!(!has_share(&c, 1, "old", 1), "no orphan pending share");
}

/// Review A Medium 3: a coordinator runs a second refresh under the
/// session id of the first to replay seat 2's old confirmation and have
/// it blamed. The start is refused; nothing is accused.
#[test]
fn a_refresh_under_a_session_id_already_used_is_refused() {
    let mut c = Cluster::new(604, 2, N, &["w"], small_limits());
    let (p, inbox) = to_part3(&mut c, "w", 1, 0);
    let first = confirmations(&c, &p, &inbox);
    activate_everywhere(&c, "w", &first);
    let again = refresh_of(&c, "w", 1, 1);
    for s in seats(&c) {
        let err = c.members[usize::from(s) - 1]
            .signer()
            .dkg_start(c.now, coordinator(1), &again, &mut c.rng)
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::DkgNotInPhase, "seat {s}");
    }
}

/// Review A Medium 3, fresh DKG: a refresh run under the wallet's DKG
/// session id; a confirmation of that DKG signed by seat 2, replayed into
/// the refresh, accuses no one (it confirms another kind of result).
#[test]
fn a_dkg_confirmation_replayed_into_a_refresh_accuses_no_one() {
    let mut c = Cluster::new(605, 2, N, &["w"], small_limits());
    let (p, inbox) = to_part3(&mut c, "w", 1, 0);
    let _ = confirmations(&c, &p, &inbox);
    let key = c.member(2).signer().wallet_key(&wid("w")).unwrap();
    let replay = SignedDkgMessage::sign(
        &identity_secret(2),
        p.session,
        wid("w"),
        seat(2),
        DkgPayload::Confirm {
            output_key: HexBytes(key.output_key().to_bytes().to_vec()),
            transcript: HexBytes(vec![0; 32]),
        },
    );
    let err = c
        .member(1)
        .signer()
        .dkg_confirm(&wid("w"), &replay)
        .unwrap_err();
    assert_eq!(fault_of(err).1, None);
}

/// Review B High 1: the coordinator sends part 3 to seats 1 and 2 only.
/// They hold the result pending and refuse an operator's abort; seat 3
/// holds none, so it signs an abandonment (and can no longer finish the
/// session), and its abandonment lets seats 1 and 2 discard. The wallet is
/// then active at epoch 0 everywhere, a new refresh runs, and a rekey can
/// begin.
#[test]
fn a_refresh_stuck_after_part3_on_some_members_is_abandoned_and_the_wallet_moves_on() {
    let mut c = with_successor(606);
    let (p, inbox) = to_part3(&mut c, "old", 1, 0);
    for s in [1, 2] {
        c.member(s)
            .signer()
            .dkg_finish(
                c.now,
                coordinator(1),
                &p.wallet,
                p.session,
                &inbox[&seat(s)],
            )
            .unwrap();
    }
    let ask = |s: u16| c.member(s).signer();
    let proof3 = ask(3)
        .refresh_abandon(coordinator(1), &p.wallet, p.session)
        .unwrap();
    let late = ask(3).dkg_finish(
        c.now,
        coordinator(1),
        &p.wallet,
        p.session,
        &inbox[&seat(3)],
    );
    assert_eq!(late.unwrap_err().code(), ErrorCode::DkgNotInPhase);
    // One veto alone discards nothing: its signer may have confirmed too.
    let err = ask(2)
        .refresh_discard(coordinator(1), &p.wallet, p.session, vec![proof3.clone()])
        .unwrap_err();
    assert_eq!(fault_of(err).1, None);
    assert!(has_share(&c, 2, "old", 1), "seat 2 keeps its pending share");
    // Seats holding the result pending veto too, discarding it as they do.
    let mut proofs = vec![proof3];
    for s in [1, 2] {
        proofs.push(
            ask(s)
                .refresh_abandon(coordinator(1), &p.wallet, p.session)
                .unwrap(),
        );
        assert!(!has_share(&c, s, "old", 1), "seat {s}");
    }
    for s in seats(&c) {
        ask(s)
            .refresh_discard(coordinator(1), &p.wallet, p.session, proofs.clone())
            .unwrap();
    }
    for s in seats(&c) {
        assert_eq!(
            at(&c, s, "old"),
            (WalletStateKind::Active, Some(WalletEpoch(0)))
        );
    }
    c.restart(1);
    assert_eq!(
        at(&c, 1, "old"),
        (WalletStateKind::Active, Some(WalletEpoch(0)))
    );
    let (next, inbox) = to_part3(&mut c, "old", 2, 0);
    activate_everywhere(&c, "old", &confirmations(&c, &next, &inbox));
    for s in seats(&c) {
        assert_eq!(
            at(&c, s, "old"),
            (WalletStateKind::Active, Some(WalletEpoch(1)))
        );
        c.member(s).signer().begin_rekey(&wid("old")).unwrap();
    }
}

/// An abandonment only counts when its participant signed it for this
/// session: one of another session, or whose signature does not verify,
/// discards nothing and accuses no one.
#[test]
fn an_abandonment_of_another_session_or_forged_discards_nothing() {
    let mut c = Cluster::new(607, 2, N, &["w"], small_limits());
    let (p, inbox) = to_part3(&mut c, "w", 1, 0);
    let _ = part3(&c, &p, &inbox);
    let other = SignedDkgMessage::sign(
        &identity_secret(3),
        DkgSessionId([9; 32]),
        wid("w"),
        seat(3),
        DkgPayload::RefreshAbandon,
    );
    let forged = SignedDkgMessage::sign(
        &identity_secret(2),
        p.session,
        wid("w"),
        seat(3),
        DkgPayload::RefreshAbandon,
    );
    for proof in [other, forged] {
        let err = c
            .member(1)
            .signer()
            .refresh_discard(coordinator(1), &p.wallet, p.session, vec![proof])
            .unwrap_err();
        assert_eq!(fault_of(err).1, None);
        assert_eq!(
            at(&c, 1, "w"),
            (WalletStateKind::Refreshing, Some(WalletEpoch(0)))
        );
        assert!(has_share(&c, 1, "w", 1));
    }
}

/// Review B Medium 6b: seat 1's switch commit is durable but reported
/// failed, so memory still says `refreshing`; vetoes (here forged for
/// every seat) must not delete the new share the stored record now
/// names: seat 1 adopts the switch instead.
#[test]
fn a_discard_adopts_a_switch_that_committed_though_it_reported_failure() {
    let mut c = Cluster::new(608, 2, N, &["w"], small_limits());
    let (p, inbox) = to_part3(&mut c, "w", 1, 0);
    let confirmations = confirmations(&c, &p, &inbox);
    c.member(1).store().fail_next_commit(Fault::Ambiguous);
    let signer = c.member(1).signer();
    assert!(!deliver(&c, 1, "w", &confirmations[1..2]));
    assert!(signer.dkg_confirm(&wid("w"), &confirmations[2]).is_err());
    assert_eq!(
        at(&c, 1, "w"),
        (WalletStateKind::Refreshing, Some(WalletEpoch(0)))
    );
    // Every participant's veto, as a relay holding their keys could forge.
    let lies = (1..=N)
        .map(|s| {
            SignedDkgMessage::sign(
                &identity_secret(s),
                p.session,
                wid("w"),
                seat(s),
                DkgPayload::RefreshAbandon,
            )
        })
        .collect();
    let err = signer
        .refresh_discard(coordinator(1), &p.wallet, p.session, lies)
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::DkgNotInPhase);
    assert_eq!(
        at(&c, 1, "w"),
        (WalletStateKind::Active, Some(WalletEpoch(1)))
    );
    assert!(has_share(&c, 1, "w", 1), "the new share stays");
}

/// An abandonment stays true across a restart: its signer keeps the
/// session id from ever running again, so that abandonment cannot be
/// replayed to discard a new run's result under the same id at some
/// members while the others switch.
#[test]
fn an_abandoned_session_id_never_runs_again_at_its_abandoner() {
    let mut c = Cluster::new(609, 2, N, &["w"], small_limits());
    let (p, _) = to_part3(&mut c, "w", 1, 0);
    c.member(3)
        .signer()
        .refresh_abandon(coordinator(1), &p.wallet, p.session)
        .unwrap();
    c.restart(3);
    assert_eq!(
        at(&c, 3, "w"),
        (WalletStateKind::Active, Some(WalletEpoch(0)))
    );
    let err = c.members[2]
        .signer()
        .dkg_start(c.now, coordinator(1), &p, &mut c.rng)
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::DkgNotInPhase);
    // Signing it again is harmless; another session runs to the end.
    c.member(3)
        .signer()
        .refresh_abandon(coordinator(1), &p.wallet, p.session)
        .unwrap();
    for s in [1, 2] {
        let signer = c.member(s).signer();
        assert!(
            signer
                .dkg_cancel(coordinator(1), &p.wallet, p.session)
                .unwrap()
        );
    }
    let (next, inbox) = to_part3(&mut c, "w", 2, 0);
    activate_everywhere(&c, "w", &confirmations(&c, &next, &inbox));
    assert_eq!(
        at(&c, 3, "w"),
        (WalletStateKind::Active, Some(WalletEpoch(1)))
    );
    // The record outlives the switch: not at the next epoch either.
    let again = refresh_of(&c, "w", 1, 1);
    let err = c.members[2]
        .signer()
        .dkg_start(c.now, coordinator(1), &again, &mut c.rng)
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::DkgNotInPhase);
}

/// The split a lone abandonment allowed (2-of-3, seat 3 coordinates and
/// is malicious): every member finishes part 3, seat 3 hands seat 1 every
/// confirmation, so seat 1 switches, then hands seat 2 its own veto. Seat
/// 2 must not discard on that alone: it keeps its pending result, gets
/// the confirmations later and signs with seat 1 at the new epoch.
#[test]
fn a_confirmer_s_own_veto_does_not_split_the_honest_members() {
    let mut c = Cluster::new(610, 2, N, &["w"], small_limits());
    let (p, inbox) = to_part3(&mut c, "w", 1, 0);
    let confirmations = confirmations(&c, &p, &inbox);
    assert!(deliver(&c, 1, "w", &confirmations));
    let veto = c
        .member(3)
        .signer()
        .refresh_abandon(coordinator(1), &p.wallet, p.session)
        .unwrap();
    let err = c
        .member(2)
        .signer()
        .refresh_discard(coordinator(1), &p.wallet, p.session, vec![veto])
        .unwrap_err();
    assert_eq!(fault_of(err).1, None);
    assert_eq!(
        at(&c, 2, "w"),
        (WalletStateKind::Refreshing, Some(WalletEpoch(0)))
    );
    assert!(deliver(&c, 2, "w", &confirmations));
    let key = c.member(1).signer().wallet_key(&wid("w")).unwrap();
    c.keys.insert(wid("w"), key);
    c.sign("w", &[1, 2], &[[7; 32]]);
}

/// A member that switched refuses to veto (the refresh completed there:
/// --resume finishes it elsewhere), and a member holding a veto refuses
/// the switch even when handed every confirmation, also after a restart.
#[test]
fn a_switched_member_refuses_to_veto_and_a_vetoing_one_refuses_to_switch() {
    let mut c = Cluster::new(611, 2, N, &["w"], small_limits());
    let (p, inbox) = to_part3(&mut c, "w", 1, 0);
    let confirmations = confirmations(&c, &p, &inbox);
    assert!(deliver(&c, 1, "w", &confirmations));
    let err = c
        .member(1)
        .signer()
        .refresh_abandon(coordinator(1), &p.wallet, p.session)
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::DkgNotInPhase);
    c.member(2)
        .signer()
        .refresh_abandon(coordinator(1), &p.wallet, p.session)
        .unwrap();
    for restart in [false, true] {
        if restart {
            c.restart(2);
        }
        for m in &confirmations {
            let refused = c.member(2).signer().dkg_confirm(&wid("w"), m);
            assert_eq!(refused.unwrap_err().code(), ErrorCode::DkgNotInPhase);
        }
        assert_eq!(
            at(&c, 2, "w"),
            (WalletStateKind::Active, Some(WalletEpoch(0)))
        );
        assert!(!has_share(&c, 2, "w", 1));
    }
}

/// Every participant's veto returns every member to the current epoch,
/// whoever held the result pending, and the wallet signs there.
#[test]
fn the_vetoes_of_every_participant_restore_the_current_epoch() {
    let mut c = Cluster::new(612, 2, N, &["w"], small_limits());
    let (p, inbox) = to_part3(&mut c, "w", 1, 0);
    let _ = confirmations(&c, &p, &inbox);
    let vetoes: Vec<_> = seats(&c)
        .map(|s| {
            c.member(s)
                .signer()
                .refresh_abandon(coordinator(1), &p.wallet, p.session)
                .unwrap()
        })
        .collect();
    for s in seats(&c) {
        c.member(s)
            .signer()
            .refresh_discard(coordinator(1), &p.wallet, p.session, vetoes.clone())
            .unwrap();
        assert_eq!(
            at(&c, s, "w"),
            (WalletStateKind::Active, Some(WalletEpoch(0)))
        );
        assert!(!has_share(&c, s, "w", 1), "seat {s}");
    }
    c.sign("w", &[1, 3], &[[8; 32]]);
}

/// A stuck refresh does not disable the emergency path: a member holding
/// one pending begins a rekey on its current shares, vetoing the refresh
/// in the same commit, and refuses its confirmations from then on.
#[test]
fn a_rekey_begins_while_refreshing_and_vetoes_the_refresh() {
    let mut c = with_successor(613);
    let (p, inbox) = to_part3(&mut c, "old", 1, 0);
    let confirmations = confirmations(&c, &p, &inbox);
    c.member(1).signer().begin_rekey(&wid("old")).unwrap();
    vetoed_by_the_rekey(&mut c, &confirmations);
    let err = c.members[0]
        .signer()
        .dkg_start(c.now, coordinator(1), &p, &mut c.rng)
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::WalletNotActive);
}

/// A rekey of a refreshing wallet whose commit was lost is committed again
/// by its retry, veto included: the refresh's pending share is deleted and
/// its confirmations are refused, as when the first commit holds.
#[test]
fn a_rekey_retried_after_a_lost_commit_still_vetoes_the_refresh() {
    let mut c = with_successor(614);
    let (p, inbox) = to_part3(&mut c, "old", 1, 0);
    let confirmations = confirmations(&c, &p, &inbox);
    c.member(1).store().fail_next_commit(Fault::Lost);
    assert!(c.member(1).signer().begin_rekey(&wid("old")).is_err());
    c.member(1).signer().begin_rekey(&wid("old")).unwrap();
    vetoed_by_the_rekey(&mut c, &confirmations);
}

/// Wallet "old" (successor "new"), both keyed by DKG.
fn with_successor(seed: u64) -> Cluster {
    let specs = [
        Spec::new("old", Keys::Dkg(ScriptTree::KeyPathOnly)).successor("new"),
        Spec::new("new", Keys::Dkg(ScriptTree::KeyPathOnly)),
    ];
    Cluster::with_wallets(seed, 2, N, &specs, Limits::default())
}

/// Seat 1 began a rekey of "old" while refreshing: after a restart it is
/// rekeying at epoch 0, holds no pending share and refuses every
/// confirmation of the refresh.
fn vetoed_by_the_rekey(c: &mut Cluster, confirmations: &[SignedDkgMessage]) {
    c.restart(1);
    assert_eq!(
        at(c, 1, "old"),
        (WalletStateKind::Rekeying, Some(WalletEpoch(0)))
    );
    assert!(!has_share(c, 1, "old", 1), "the pending share is deleted");
    for m in confirmations {
        let refused = c.member(1).signer().dkg_confirm(&wid("old"), m);
        assert!(refused.is_err());
    }
}
