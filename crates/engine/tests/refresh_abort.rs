//! Ending a share refresh safely (DESIGN.md §4, lifecycle "Finishing or
//! discarding a pending refresh"): a member that released its
//! confirmation never discards its pending shares on an operator's or
//! coordinator's word; part 3 re-checks the wallet; a session id is never
//! run twice. The veto rule itself is tested in `refresh_veto.rs`.

mod common;

use common::dkg::*;
use common::*;
use thresig_engine::test_util::identity_secret;
use thresig_engine::{
    DkgPayload, ErrorCode, HexBytes, SignedDkgMessage, WalletEpoch, WalletStateKind,
};

const N: u16 = 3;

/// Review A High 2: 3-of-3 here, the coordinator withholds every
/// confirmation, then an operator aborts at seat 2. If seat 2 dropped its
/// pending shares, seats 1 and 3 would switch on the withheld
/// confirmations and no epoch would hold the threshold any more.
#[test]
fn an_abort_after_the_confirmation_was_released_is_refused() {
    let mut c = Cluster::new(601, 3, N, &["w"], small_limits());
    let (p, inbox) = refresh_to_part3(&mut c, "w", 1, 0);
    let withheld = confirmations(&c, &p, &inbox);
    let err = c.member(2).signer().dkg_abort(&wid("w"), p.session);
    assert_eq!(err.unwrap_err().code(), ErrorCode::RefreshConfirmed);
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
    signs_with_current_key(&mut c, "w", &[1, 2, 3], [7; 32]);
}

/// Review A Medium 5 / Review B Medium 6a: the part-3 commit is durable
/// but reported failed (no confirmation released), the operator aborts:
/// the stored result goes too, so a restart does not bring it back.
#[test]
fn an_abort_deletes_a_part3_result_whose_failed_commit_was_durable() {
    let mut c = Cluster::new(602, 2, N, &["w"], small_limits());
    let (p, inbox) = refresh_to_part3(&mut c, "w", 1, 0);
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
    let (p, inbox) = refresh_to_part3(&mut c, "old", 1, 0);
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
    let (p, inbox) = refresh_to_part3(&mut c, "w", 1, 0);
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
    let (p, inbox) = refresh_to_part3(&mut c, "w", 1, 0);
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

/// Review B Medium 6b: seat 1's switch commit is durable but reported
/// failed, so memory still says `refreshing`; vetoes (here forged for
/// every seat) must not delete the new share the stored record now
/// names: seat 1 adopts the switch instead.
#[test]
fn a_discard_adopts_a_switch_that_committed_though_it_reported_failure() {
    let mut c = Cluster::new(608, 2, N, &["w"], small_limits());
    let (p, inbox) = refresh_to_part3(&mut c, "w", 1, 0);
    let confirmations = confirmations(&c, &p, &inbox);
    let signer = c.member(1).signer();
    assert!(!deliver(&c, 1, "w", &confirmations[1..2]));
    c.member(1).store().fail_next_commit(Fault::Ambiguous);
    assert!(signer.dkg_confirm(&wid("w"), &confirmations[2]).is_err());
    assert_eq!(
        at(&c, 1, "w"),
        (WalletStateKind::Refreshing, Some(WalletEpoch(0)))
    );
    // Every participant's veto, as a relay holding their keys could forge.
    let lies = (1..=N).map(|s| veto_of(s, "w", p.session, 0)).collect();
    let err = signer
        .refresh_discard(coordinator(1), &p.wallet, p.session, lies)
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::RefreshConfirmed);
    assert_eq!(
        at(&c, 1, "w"),
        (WalletStateKind::Active, Some(WalletEpoch(1)))
    );
    assert!(has_share(&c, 1, "w", 1), "the new share stays");
}

/// A veto stays true across a restart: its signer keeps the session id
/// from ever running again at that epoch, so that veto cannot be replayed
/// to discard a new run's result under the same id at some members while
/// the others switch. (At a later epoch it counts for nothing: it signs
/// the epoch, and the switch deletes the record.)
#[test]
fn an_abandoned_session_id_never_runs_again_at_its_abandoner() {
    let mut c = Cluster::new(609, 2, N, &["w"], small_limits());
    let (p, _) = refresh_to_part3(&mut c, "w", 1, 0);
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
    let (next, inbox) = refresh_to_part3(&mut c, "w", 2, 0);
    activate_everywhere(&c, "w", &confirmations(&c, &next, &inbox));
    assert_eq!(
        at(&c, 3, "w"),
        (WalletStateKind::Active, Some(WalletEpoch(1)))
    );
}
