//! Share refresh (DESIGN.md §4, lifecycle): the DKG protocol over an
//! active wallet's key, two-phase, with the new shares stored pending and
//! switched to only on every remaining member's matching confirmation.
//! Malicious members and coordinators are simulated by re-signing
//! messages with the harness's member identity keys.

mod common;
#[path = "shared/removed_share.rs"]
mod removed_share;

use common::dkg::*;
use common::*;
use thresig_crypto::{DkgRound1, KeyShare};
use thresig_engine::{
    DkgFault, DkgKind, DkgPayload, DkgProposal, ErrorCode, HexBytes, SignedDkgMessage, WalletEpoch,
    WalletStateKind,
};
use thresig_store::{KeyEpoch, Store};

const N: u16 = 3;

/// A refresh proposal of session `[session; 32]` from wallet epoch `from`,
/// removing `removed`.
fn refresh(c: &Cluster, session: u8, from: u64, removed: &[u16]) -> DkgProposal {
    proposal(c, "w", session).with_kind(DkgKind::Refresh {
        from_epoch: WalletEpoch(from),
        removed: removed.iter().map(|s| seat(*s)).collect(),
    })
}

/// Part 1 at `at`.
fn part1_at(c: &mut Cluster, p: &DkgProposal, at: &[u16]) -> Vec<SignedDkgMessage> {
    at.iter()
        .map(|s| {
            let signer = c.members[usize::from(*s) - 1].signer();
            signer
                .dkg_start(c.now, coordinator(1), p, &mut c.rng)
                .unwrap()
        })
        .collect()
}

/// The key package seat `s` stores at key epoch `key_epoch` (wallet
/// epoch `key_epoch - 1`).
fn stored(c: &Cluster, s: u16, key_epoch: u64) -> Option<thresig_store::Plaintext> {
    c.member(s)
        .store()
        .key_package(&wid("w"), KeyEpoch(key_epoch))
        .unwrap()
}

/// Sets every member's `remove` list to `removed` and restarts it (an
/// operator edits the configuration and restarts the signer).
fn configure_removal(c: &mut Cluster, removed: &[u16]) {
    for s in seats(c) {
        let config = &mut c.members[usize::from(s) - 1].config;
        config.wallets[0].remove = removed.iter().map(|n| seat(*n)).collect();
        c.restart(s);
    }
}

/// The wallet signs at its current epoch, coordinated by its first signer
/// (a seat a refresh removed coordinates nothing); the harness aggregates
/// with the key the signers now report.
fn signs(c: &mut Cluster, signers: &[u16]) {
    let key = c.member(signers[0]).signer().wallet_key(&wid("w")).unwrap();
    c.keys.insert(wid("w"), key);
    c.sign_as(signers[0], "w", signers, &[[7; 32]]).unwrap();
}

/// Every member reports `state` at `epoch`.
fn all_at(c: &Cluster, state: WalletStateKind, epoch: u64) {
    for s in seats(c) {
        let status = c.member(s).signer().status(&wid("w")).unwrap();
        assert_eq!(
            (status.state, status.epoch),
            (state, Some(WalletEpoch(epoch))),
            "seat {s}"
        );
    }
}

#[test]
fn a_refresh_keeps_the_output_key_and_switches_only_on_every_confirmation() {
    let mut c = Cluster::new(501, 2, N, &["w"], small_limits());
    let before = c.member(1).signer().wallet_key(&wid("w")).unwrap();
    let p = refresh(&c, 1, 0, &[]);
    let r1 = part1(&mut c, &p);
    let inbox = part2(&mut c, &p, &r1);
    let confirmations = confirmations(&c, &p, &inbox);
    // Stored pending beside the old shares; still signing with the old.
    all_at(&c, WalletStateKind::Refreshing, 0);
    let store = c.member(1).store();
    assert!(store.key_package(&wid("w"), KeyEpoch(1)).unwrap().is_some());
    assert!(store.key_package(&wid("w"), KeyEpoch(2)).unwrap().is_some());
    signs(&mut c, &[1, 2]);
    // Two of three confirmations switch nobody.
    assert!(!deliver(&c, 1, "w", &confirmations[1..2]));
    all_at(&c, WalletStateKind::Refreshing, 0);
    // Nonces drawn for the old shares do not outlive the switch.
    c.round1(1, COORD_A, "w", 1).unwrap();
    let live = |c: &Cluster| c.member(1).signer().status(&wid("w")).unwrap().live_nonces;
    assert!(live(&c) > 0);
    activate_everywhere(&c, "w", &confirmations);
    all_at(&c, WalletStateKind::Active, 1);
    assert_eq!(live(&c), 0);
    let after = c.member(1).signer().wallet_key(&wid("w")).unwrap();
    assert_eq!(after.output_key(), before.output_key());
    assert_ne!(after, before, "the verifying shares are new");
    signs(&mut c, &[1, 3]);
    // A request of the old epoch is stale everywhere.
    let err = c
        .sign_at_epoch(COORD_A, WalletEpoch(0), "w", &[1, 2], &[[8; 32]])
        .unwrap_err();
    assert_eq!(err.1.code(), ErrorCode::StaleEpoch);
}

/// After the switch the old key package is deleted and the data key that
/// sealed it is retired: the old share cannot be read back from the store.
#[test]
fn a_switch_deletes_the_old_share_and_retires_its_data_key() {
    let mut c = Cluster::new(502, 2, N, &["w"], small_limits());
    let store = c.member(1).store();
    let before = store.inner.keyring_status().unwrap();
    switch_all(&mut c, 1);
    // The retirement waits on the key provider: the next prune runs it.
    c.member(1).signer().prune(c.now).unwrap();
    let store = c.member(1).store();
    assert!(store.key_package(&wid("w"), KeyEpoch(1)).unwrap().is_none());
    let after = store.inner.keyring_status().unwrap();
    assert_ne!(after.current, before.current, "a new data key seals");
    assert!(
        after.retired.contains(&before.current),
        "the data key of the old share is retired: {after:?}"
    );
}

/// The retirement a switch leaves due commits each key change it makes
/// (the new data key promoted, the old one retired) with its audit entry.
#[test]
fn the_retirement_of_a_deleted_shares_data_key_is_audited() {
    use thresig_engine::audit::AuditEvent;
    let mut c = Cluster::new(504, 2, N, &["w"], small_limits());
    let before = c.member(1).store().inner.keyring_status().unwrap();
    switch_all(&mut c, 1);
    c.member(1).signer().prune(c.now).unwrap();
    let after = c.member(1).store().inner.keyring_status().unwrap();
    assert_ne!(after.current, before.current);
    let steps: Vec<(String, String, u64)> = c
        .audit_events(1)
        .into_iter()
        .filter_map(|e| match e {
            AuditEvent::KeyStep {
                command,
                action,
                dek_term,
                ..
            } => Some((command, action, dek_term)),
            _ => None,
        })
        .collect();
    let step = |action: &str, term: thresig_store::DekTerm| {
        ("retire_deleted".to_owned(), action.to_owned(), term.0)
    };
    assert_eq!(
        steps,
        [
            step("promote_dek", after.current),
            step("retire_dek", before.current)
        ]
    );
}

#[test]
fn a_member_restarted_before_the_switch_finishes_it_when_confirmations_arrive() {
    let mut c = Cluster::new(503, 2, N, &["w"], small_limits());
    let p = refresh(&c, 1, 0, &[]);
    let r1 = part1(&mut c, &p);
    let inbox = part2(&mut c, &p, &r1);
    let confirmations = confirmations(&c, &p, &inbox);
    c.restart(2);
    assert_eq!(state(&c, 2, "w"), WalletStateKind::Refreshing);
    signs(&mut c, &[2, 3]);
    activate_everywhere(&c, "w", &confirmations);
    all_at(&c, WalletStateKind::Active, 1);
    c.restart(2);
    all_at(&c, WalletStateKind::Active, 1);
    signs(&mut c, &[1, 2]);
}

/// An operator abort before part 3 drops the session: no member holds a
/// result, so nobody can switch. (Once a member released its
/// confirmation, an abort is refused: see tests/refresh_abort.rs.)
#[test]
fn an_operator_abort_discards_a_pending_refresh_and_keeps_the_old_shares() {
    let mut c = Cluster::new(504, 2, N, &["w"], small_limits());
    let p = refresh(&c, 1, 0, &[]);
    let r1 = part1(&mut c, &p);
    let inbox = part2(&mut c, &p, &r1);
    for s in seats(&c) {
        c.member(s)
            .signer()
            .dkg_abort(&wid("w"), p.session)
            .unwrap();
    }
    all_at(&c, WalletStateKind::Active, 0);
    // A late part 3 finds nothing to finish.
    for result in part3(&c, &p, &inbox) {
        assert_eq!(result.unwrap_err().code(), ErrorCode::DkgNotInPhase);
    }
    assert!(stored(&c, 1, 2).is_none());
    signs(&mut c, &[1, 2]);
    // A new refresh can run.
    let p = refresh(&c, 2, 0, &[]);
    let r1 = part1(&mut c, &p);
    let inbox = part2(&mut c, &p, &r1);
    activate_everywhere(&c, "w", &confirmations(&c, &p, &inbox));
    all_at(&c, WalletStateKind::Active, 1);
}

/// Seat 3 shows seat 2 another round-1 package than it shows seat 1 (a
/// refresh package has no proof of knowledge and a zero constant term, so
/// the keys alone would never show it): the echo hashes differ, both
/// honest members refuse in part 3, and nobody stores or switches.
#[test]
fn an_equivocated_round1_is_refused_and_everyone_keeps_the_old_shares() {
    let mut c = Cluster::new(505, 2, N, &["w"], small_limits());
    let p = refresh(&c, 1, 0, &[]);
    let r1 = part1(&mut c, &p);
    // The second package, made from seat 3's own share, under seat 3's key.
    let share = KeyShare::from_bytes(&stored(&c, 3, 1).unwrap()).unwrap();
    let (_, other) = DkgRound1::refresh(&share, &c.keys[&wid("w")], &[], &mut c.rng).unwrap();
    let equivocated = resigned(&r1[2], |payload| {
        let DkgPayload::Round1 { package, .. } = payload else {
            panic!()
        };
        *package = HexBytes(other.to_bytes().unwrap());
    });
    let out = part2_each(&mut c, &p, |s| {
        let mut view: Vec<_> = r1.iter().filter(|m| m.sender != s).cloned().collect();
        if s == seat(2) {
            view.retain(|m| m.sender != seat(3));
            view.push(equivocated.clone());
        }
        view
    });
    let inbox = route(out.into_values().flat_map(Result::unwrap));
    for (s, result) in seats(&c).zip(part3(&c, &p, &inbox)) {
        if s == 3 {
            continue;
        }
        let (_, _, fault) = fault_of(result.unwrap_err());
        assert_eq!(fault, DkgFault::EchoMismatch, "seat {s}");
    }
    for s in [1, 2] {
        assert_eq!(state(&c, s, "w"), WalletStateKind::Active);
        assert!(stored(&c, s, 2).is_none());
    }
    signs(&mut c, &[1, 2]);
}

/// A round-1 package that would change the group key (a fresh DKG's, with
/// a constant term) relayed as seat 3's is refused naming seat 3, which
/// signed it.
#[test]
fn a_round1_package_that_would_change_the_group_key_is_refused() {
    let mut c = Cluster::new(506, 2, N, &["w"], small_limits());
    let p = refresh(&c, 1, 0, &[]);
    let r1 = part1(&mut c, &p);
    let params = thresig_crypto::GroupParams::new(2, N).unwrap();
    let (_, fresh) = DkgRound1::start(
        params,
        seat(3),
        thresig_crypto::ScriptTree::KeyPathOnly,
        &mut c.rng,
    )
    .unwrap();
    let forged = resigned(&r1[2], |payload| {
        let DkgPayload::Round1 { package, .. } = payload else {
            panic!()
        };
        *package = HexBytes(fresh.to_bytes().unwrap());
    });
    let mut out = part2_each(&mut c, &p, |s| {
        let mut view: Vec<_> = r1
            .iter()
            .filter(|m| m.sender != s && m.sender != seat(3))
            .cloned()
            .collect();
        if s != seat(3) {
            view.push(forged.clone());
        }
        view
    });
    for s in [1, 2] {
        let (accuser, accused, fault) = fault_of(out.remove(&seat(s)).unwrap().unwrap_err());
        assert_eq!((accuser, accused), (s, Some(3)));
        assert!(
            matches!(
                fault,
                DkgFault::WrongPackageLength | DkgFault::InvalidPackage
            ),
            "{fault:?}"
        );
    }
    all_at(&c, WalletStateKind::Active, 0);
    signs(&mut c, &[1, 2]);
}

/// A coordinator that names a removal set other than a member's own
/// `remove` list is refused by that member, before it does anything.
#[test]
fn a_removal_set_other_than_the_members_own_is_refused() {
    let mut c = Cluster::new(507, 2, 4, &["w"], small_limits());
    // Nobody's configuration removes anyone: removing seat 4 is refused.
    let p = refresh(&c, 1, 0, &[4]);
    for s in 1..=3u16 {
        let err = c.members[usize::from(s) - 1]
            .signer()
            .dkg_start(c.now, coordinator(1), &p, &mut c.rng)
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::DkgMismatch, "seat {s}");
    }
    // Every configuration removes seat 4: removing nobody, or seat 3, is refused.
    configure_removal(&mut c, &[4]);
    for removed in [&[][..], &[3], &[3, 4]] {
        let p = refresh(&c, 2, 0, removed);
        let err = c.members[0]
            .signer()
            .dkg_start(c.now, coordinator(1), &p, &mut c.rng)
            .unwrap_err();
        assert!(
            matches!(err, thresig_engine::Error::RefreshMismatch { .. }),
            "{removed:?}: {err:?}"
        );
    }
    all_at(&c, WalletStateKind::Active, 0);
}

/// With seat 3 removed (in every member's configuration), seats 1 and 2
/// refresh alone: their confirmations suffice, seat 3's old share does not
/// fit the new key record, and the wallet signs with the remaining seats.
#[test]
fn a_refresh_with_a_removal_switches_on_the_remaining_members_and_drops_the_seat() {
    let mut c = Cluster::new(508, 2, N, &["w"], small_limits());
    configure_removal(&mut c, &[3]);
    let p = refresh(&c, 1, 0, &[3]);
    // The removed member does not take part.
    let err = c.members[2]
        .signer()
        .dkg_start(c.now, coordinator(1), &p, &mut c.rng)
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::DkgMismatch);
    let r1 = part1_at(&mut c, &p, &[1, 2]);
    let out = part2_each(&mut c, &p, |s| {
        r1.iter().filter(|m| m.sender != s).cloned().collect()
    });
    let mut inbox = route(
        out.into_iter()
            .filter(|(s, _)| s.get() != 3)
            .flat_map(|(_, r)| r.unwrap()),
    );
    // Seat 3, removed, gets nothing and refuses part 3; the others finish.
    inbox.entry(seat(3)).or_default();
    let confirmations: Vec<_> = part3(&c, &p, &inbox)
        .into_iter()
        .take(2)
        .map(Result::unwrap)
        .collect();
    for s in [1, 2] {
        assert!(deliver(&c, s, "w", &confirmations), "seat {s}");
    }
    let key = c.member(1).signer().wallet_key(&wid("w")).unwrap();
    assert_eq!(key.members(), vec![seat(1), seat(2)]);
    let old = KeyShare::from_bytes(&stored(&c, 3, 1).unwrap()).unwrap();
    assert!(old.check_wallet(&key).is_err());
    signs(&mut c, &[1, 2]);
}

/// A validly signed confirmation of another key package (here: another
/// wallet key record) is refused naming its signer; the member keeps
/// signing with its old shares and still switches on the right ones.
#[test]
fn a_confirmation_of_another_key_package_is_refused_naming_its_signer() {
    let mut c = Cluster::new(509, 2, N, &["w"], small_limits());
    let p = refresh(&c, 1, 0, &[]);
    let r1 = part1(&mut c, &p);
    let inbox = part2(&mut c, &p, &r1);
    let confirmations = confirmations(&c, &p, &inbox);
    let mixed = resigned(&confirmations[1], |payload| {
        let DkgPayload::RefreshConfirm { wallet_key, .. } = payload else {
            panic!()
        };
        wallet_key.0[0] ^= 1;
    });
    let err = c
        .member(1)
        .signer()
        .dkg_confirm(&wid("w"), &mixed)
        .unwrap_err();
    let (accuser, accused, fault) = fault_of(err);
    assert_eq!(
        (accuser, accused, fault),
        (1, Some(2), DkgFault::ConfirmationMismatch)
    );
    assert_eq!(state(&c, 1, "w"), WalletStateKind::Refreshing);
    signs(&mut c, &[1, 2]);
    activate_everywhere(&c, "w", &confirmations);
    all_at(&c, WalletStateKind::Active, 1);
}

/// A refresh of another epoch than the wallet's is refused as stale, and a
/// second refresh is refused while one awaits its confirmations.
#[test]
fn a_refresh_of_another_epoch_or_during_another_is_refused() {
    let mut c = Cluster::new(510, 2, N, &["w"], small_limits());
    let stale = refresh(&c, 1, 5, &[]);
    let err = c.members[0]
        .signer()
        .dkg_start(c.now, coordinator(1), &stale, &mut c.rng)
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::StaleEpoch);
    let p = refresh(&c, 2, 0, &[]);
    let r1 = part1(&mut c, &p);
    let inbox = part2(&mut c, &p, &r1);
    let _ = confirmations(&c, &p, &inbox);
    let again = refresh(&c, 3, 0, &[]);
    let err = c.members[0]
        .signer()
        .dkg_start(c.now, coordinator(1), &again, &mut c.rng)
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::DkgBusy);
}

/// A member that switched still answers a part 3 of the refresh's session
/// with its own confirmation (its result record is kept), so a member
/// that missed the confirmations can still get every one; the next switch
/// drops that record.
#[test]
fn a_switched_member_signs_its_confirmation_again_until_the_next_refresh() {
    let mut c = Cluster::new(511, 2, N, &["w"], small_limits());
    let p = refresh(&c, 1, 0, &[]);
    let r1 = part1(&mut c, &p);
    let inbox = part2(&mut c, &p, &r1);
    let first = confirmations(&c, &p, &inbox);
    activate_everywhere(&c, "w", &first);
    let again = |c: &Cluster| {
        c.member(1)
            .signer()
            .dkg_finish(c.now, coordinator(2), &p.wallet, p.session, &[])
    };
    assert_eq!(again(&c).unwrap(), first[0]);
    let next = refresh(&c, 2, 1, &[]);
    let r1 = part1(&mut c, &next);
    let inbox = part2(&mut c, &next, &r1);
    activate_everywhere(&c, "w", &confirmations(&c, &next, &inbox));
    all_at(&c, WalletStateKind::Active, 2);
    assert_eq!(again(&c).unwrap_err().code(), ErrorCode::DkgNotInPhase);
}

/// A whole refresh of session `[session; 32]` from wallet epoch `from`,
/// removing `removed`, run among the seats `at` only, each of which
/// switches; the confirmations.
fn refresh_among(
    c: &mut Cluster,
    session: u8,
    from: u64,
    removed: &[u16],
    at: &[u16],
) -> Vec<SignedDkgMessage> {
    let p = refresh(c, session, from, removed);
    let r1 = part1_at(c, &p, at);
    let mut round2 = Vec::new();
    for s in at {
        let view: Vec<_> = r1
            .iter()
            .filter(|m| m.sender.get() != *s)
            .cloned()
            .collect();
        let signer = c.members[usize::from(*s) - 1].signer();
        round2.extend(
            signer
                .dkg_round2(
                    c.now,
                    coordinator(1),
                    &p.wallet,
                    p.session,
                    &view,
                    &mut c.rng,
                )
                .unwrap(),
        );
    }
    let inbox = route(round2);
    let confirmations: Vec<_> = at
        .iter()
        .map(|s| finish_at(c, &p, &inbox, *s).unwrap())
        .collect();
    for s in at {
        assert!(deliver(c, *s, "w", &confirmations), "seat {s}");
    }
    confirmations
}

/// The status epoch of seats `at`.
fn epochs(c: &Cluster, at: &[u16]) -> Vec<(WalletStateKind, Option<WalletEpoch>)> {
    at.iter()
        .map(|s| {
            let status = c.member(*s).signer().status(&wid("w")).unwrap();
            (status.state, status.epoch)
        })
        .collect()
}

/// After a refresh removed seat 3, the wallet refreshes again among the
/// remaining seats, whether the operators keep seat 3 in the `remove`
/// list (it is already gone: nothing more to remove) or clear it.
#[test]
fn a_wallet_refreshes_again_after_a_removal_with_the_list_kept_or_cleared() {
    let mut c = Cluster::new(511, 2, N, &["w"], small_limits());
    configure_removal(&mut c, &[3]);
    refresh_among(&mut c, 1, 0, &[3], &[1, 2]);
    // Kept: the proposal still names seat 3, which nobody waits for.
    refresh_among(&mut c, 2, 1, &[3], &[1, 2]);
    assert_eq!(
        epochs(&c, &[1, 2]),
        vec![(WalletStateKind::Active, Some(WalletEpoch(2))); 2]
    );
    // Cleared: the key record's members decide who takes part.
    configure_removal(&mut c, &[]);
    refresh_among(&mut c, 3, 2, &[], &[1, 2]);
    assert_eq!(
        epochs(&c, &[1, 2]),
        vec![(WalletStateKind::Active, Some(WalletEpoch(3))); 2]
    );
    signs(&mut c, &[1, 2]);
}

/// A removed seat is no member of the wallet: it cannot coordinate (round
/// 1 from its identity), nor be named as a signer of a round 2.
#[test]
fn a_removed_seat_neither_coordinates_nor_signs() {
    let mut c = Cluster::new(512, 2, N, &["w"], small_limits());
    configure_removal(&mut c, &[3]);
    refresh_among(&mut c, 1, 0, &[3], &[1, 2]);
    let err = c.round1(1, 3, "w", 1).unwrap_err();
    assert_eq!(err.code(), ErrorCode::CoordinatorNotMember);
    let key = c.member(1).signer().wallet_key(&wid("w")).unwrap();
    c.keys.insert(wid("w"), key);
    let mut commitments = std::collections::BTreeMap::new();
    commitments.insert(1, c.round1(1, 1, "w", 1).unwrap());
    // Seat 3's commitment from before the switch, as a coordinator would
    // have kept it: any point does, the set is refused first.
    commitments.insert(3, commitments[&1].clone());
    let req = c.request("w", &commitments, &[[9; 32]]);
    let err = c.round2_as(1, 1, &req).unwrap_err();
    assert!(
        matches!(err, thresig_engine::Error::IdentifierNotInRoster { identifier, .. } if identifier == seat(3)),
        "{err:?}"
    );
}

/// The switch commit itself moves the wallet to a new security epoch, so a
/// database restored from before the switch is caught as a rollback at
/// open, also when the data key retirement after it fails.
#[test]
fn the_switch_commit_bumps_the_wallets_security_epoch() {
    let mut c = Cluster::new(513, 2, N, &["w"], small_limits());
    let before = c.member(1).store().wallet_epoch(&wid("w")).unwrap();
    for s in seats(&c) {
        c.member(s)
            .store()
            .on_retire(Retire::Fail(|| thresig_store::Error::WriterStopped));
    }
    switch_all(&mut c, 1);
    let after = c.member(1).store().wallet_epoch(&wid("w")).unwrap();
    assert!(after > before, "{before:?} -> {after:?}");
}

/// A switch of every member of `c` (session `[session; 32]`, from epoch 0).
fn switch_all(c: &mut Cluster, session: u8) {
    let p = refresh(c, session, 0, &[]);
    let r1 = part1(c, &p);
    let inbox = part2(c, &p, &r1);
    activate_everywhere(c, "w", &confirmations(c, &p, &inbox));
}

/// The data key retirement after a switch waits on the key provider: it
/// runs in a prune with no wallet locked, so a round 1 on the refreshed
/// wallet is answered while the provider hangs.
#[test]
fn a_hanging_retirement_holds_no_wallet() {
    let mut c = Cluster::new(514, 2, N, &["w"], small_limits());
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel();
    c.member(1)
        .store()
        .on_retire(Retire::Hang(entered_tx, release_rx));
    switch_all(&mut c, 1);
    assert_eq!(c.member(1).store().retires(), 0, "not on the switch");
    let (now, signer) = (c.now, c.member(1).signer());
    std::thread::scope(|scope| {
        scope.spawn(|| signer.prune(now).unwrap());
        entered.recv().unwrap();
        let (answered_tx, answered) = std::sync::mpsc::channel();
        scope.spawn(move || {
            let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(1);
            let req = thresig_engine::Round1Request::new(wid("w"), 1);
            answered_tx
                .send(signer.round1(now, coordinator(1), &req, &mut rng).is_ok())
                .unwrap();
        });
        // A deadline on a failure only: a round 1 that waits for the
        // hanging provider would never answer.
        let got = answered.recv_timeout(std::time::Duration::from_secs(60));
        release.send(()).unwrap();
        assert_eq!(got, Ok(true));
    });
}

/// A terminal retirement failure (here: the store's writer stopped) is
/// tried once, not again at every prune; a retryable one is retried.
#[test]
fn a_terminal_retirement_failure_is_not_retried_at_every_prune() {
    let mut c = Cluster::new(515, 2, N, &["w"], small_limits());
    c.member(1)
        .store()
        .on_retire(Retire::Fail(|| thresig_store::Error::WriterStopped));
    c.member(2).store().on_retire(Retire::Fail(|| {
        thresig_store::Error::Provider(thresig_store::provider::ProviderError::Unavailable {
            reason: "down".into(),
        })
    }));
    switch_all(&mut c, 1);
    for _ in 0..10 {
        c.member(1).signer().prune(c.now).unwrap();
        c.member(2).signer().prune(c.now).unwrap();
    }
    assert_eq!(c.member(1).store().retires(), 1);
    assert!(c.member(1).signer().retirement_stopped());
    let retried = c.member(2).store().retires();
    assert!(
        (2..10).contains(&retried),
        "{retried} attempts in 10 prunes"
    );
}

/// A retirement due when the signer stops (the provider was down) is
/// finished by a prune after the restart: it is recorded with the switch.
#[test]
fn a_retirement_due_at_a_restart_is_finished_after_it() {
    let mut c = Cluster::new(516, 2, N, &["w"], small_limits());
    let before = c.member(1).store().inner.keyring_status().unwrap();
    switch_all(&mut c, 1);
    c.restart(1);
    c.member(1).signer().prune(c.now).unwrap();
    let after = c.member(1).store().inner.keyring_status().unwrap();
    assert!(after.retired.contains(&before.current), "{after:?}");
}

/// A confirmation that reaches a member after its switch counts the
/// members of the key record it switched to, not the roster.
#[test]
fn a_late_confirmation_after_a_removal_counts_the_remaining_members() {
    let mut c = Cluster::new(517, 2, N, &["w"], small_limits());
    configure_removal(&mut c, &[3]);
    let confirmations = refresh_among(&mut c, 1, 0, &[3], &[1, 2]);
    let status = c
        .member(1)
        .signer()
        .dkg_confirm(&wid("w"), &confirmations[1])
        .unwrap();
    assert_eq!(
        (status.confirmed, status.needed, status.active),
        (2, 2, true)
    );
}

/// A removed member's old share and a remaining member's new share make
/// no signature: signing under the new record refuses the removed seat,
/// the new share does not sign under the old record, and both shares
/// signing one package under a record admitting both aggregate to no
/// signature valid under the output key.
#[test]
fn a_removed_members_old_share_does_not_sign_with_a_new_share() {
    let mut c = Cluster::new(518, 2, N, &["w"], small_limits());
    configure_removal(&mut c, &[3]);
    let old_key = c.member(3).signer().wallet_key(&wid("w")).unwrap();
    refresh_among(&mut c, 1, 0, &[3], &[1, 2]);
    let new_key = c.member(1).signer().wallet_key(&wid("w")).unwrap();
    let old = KeyShare::from_bytes(&stored(&c, 3, 1).unwrap()).unwrap();
    let new = KeyShare::from_bytes(&stored(&c, 1, 2).unwrap()).unwrap();
    removed_share::old_and_new_shares_make_no_signature(
        (&old, &old_key),
        (&new, &new_key),
        &mut c.rng,
    );
}

/// A removal that would leave fewer than the threshold of the key
/// record's members is refused, counting the seats earlier refreshes
/// removed (each list alone names fewer than the threshold).
#[test]
fn a_removal_leaving_fewer_than_the_threshold_is_refused() {
    let mut c = Cluster::new(519, 2, 4, &["w"], small_limits());
    configure_removal(&mut c, &[4]);
    refresh_among(&mut c, 1, 0, &[4], &[1, 2, 3]);
    configure_removal(&mut c, &[3]);
    refresh_among(&mut c, 2, 1, &[3], &[1, 2]);
    configure_removal(&mut c, &[2]);
    let p = refresh(&c, 3, 2, &[2]);
    let err = c.members[0]
        .signer()
        .dkg_start(c.now, coordinator(1), &p, &mut c.rng)
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::DkgMismatch, "{err:?}");
    // Named as what it is, not as a removal set that differs from the
    // member's `remove` list (it does not).
    let text = err.to_string();
    assert!(
        text.contains("1 member") && text.contains("threshold 2"),
        "{text}"
    );
    assert_eq!(
        epochs(&c, &[1, 2]),
        vec![(WalletStateKind::Active, Some(WalletEpoch(2))); 2]
    );
}

/// The confirmation a member really signed for another key package of the
/// same session (a second run of the refresh, as a coordinator running two
/// could relay) is refused naming its signer; the right ones still switch.
#[test]
fn a_real_confirmation_of_a_second_key_package_is_refused_naming_its_signer() {
    let run = |c: &mut Cluster| {
        let p = refresh(c, 1, 0, &[]);
        let r1 = part1(c, &p);
        let inbox = part2(c, &p, &r1);
        confirmations(c, &p, &inbox)
    };
    let mut c = Cluster::new(520, 2, N, &["w"], small_limits());
    let mut twin = Cluster::new(520, 2, N, &["w"], small_limits());
    // The twin holds the same wallet and identities; its next packages differ.
    rand_core::RngCore::next_u64(&mut twin.rng);
    let ours = run(&mut c);
    let theirs = run(&mut twin);
    assert_eq!(
        c.member(1)
            .signer()
            .wallet_key(&wid("w"))
            .unwrap()
            .output_key(),
        twin.member(1)
            .signer()
            .wallet_key(&wid("w"))
            .unwrap()
            .output_key()
    );
    assert_ne!(ours[1].payload, theirs[1].payload);
    let err = c
        .member(1)
        .signer()
        .dkg_confirm(&wid("w"), &theirs[1])
        .unwrap_err();
    assert_eq!(fault_of(err), (1, Some(2), DkgFault::ConfirmationMismatch));
    activate_everywhere(&c, "w", &ours);
    all_at(&c, WalletStateKind::Active, 1);
}

/// 2-of-4 with seat 4 removed: part 3 reached seat 1 only. A veto from
/// the removed seat (a non-participant) counts for nothing, so seat 2's
/// veto with it is fewer than the threshold and seat 1 keeps its pending
/// result; seat 3's veto makes the threshold and seat 1 discards.
#[test]
fn a_veto_of_a_removed_seat_is_not_counted() {
    let mut c = Cluster::new(520, 2, 4, &["w"], small_limits());
    configure_removal(&mut c, &[4]);
    let p = refresh(&c, 1, 0, &[4]);
    let r1 = part1_at(&mut c, &p, &[1, 2, 3]);
    let out = part2_each(&mut c, &p, |s| {
        r1.iter().filter(|m| m.sender != s).cloned().collect()
    });
    let inbox = route(
        out.into_iter()
            .filter(|(s, _)| s.get() != 4)
            .flat_map(|(_, r)| r.unwrap()),
    );
    finish_at(&c, &p, &inbox, 1).unwrap();
    let veto = |s: u16| {
        c.member(s)
            .signer()
            .refresh_abandon(coordinator(2), &p.wallet, p.session)
            .unwrap()
    };
    let (two, four) = (veto(2), veto_of(4, "w", p.session, 0));
    let discard = |vetoes: Vec<SignedDkgMessage>| {
        c.member(1)
            .signer()
            .refresh_discard(coordinator(2), &p.wallet, p.session, vetoes)
    };
    assert!(discard(vec![two.clone(), four]).is_err());
    assert_eq!(
        at(&c, 1, "w"),
        (WalletStateKind::Refreshing, Some(WalletEpoch(0)))
    );
    assert!(discard(vec![two, veto(3)]).unwrap());
    assert_eq!(
        at(&c, 1, "w"),
        (WalletStateKind::Active, Some(WalletEpoch(0)))
    );
}
