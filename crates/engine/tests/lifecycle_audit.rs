//! The audit entries of lifecycle steps that no activation, switch or
//! discard records: what a DKG or refresh does before it activates (the
//! key package part 3 stores, a failed check, a relay's cancel, an expiry,
//! a member's own veto) and the key manager's own rotations
//! (docs/audit.md).

mod common;

use std::time::Duration;

use common::*;
use thresig_engine::DkgPayload;
use thresig_engine::audit::AuditEvent;

/// The (`dkg_kind`, `how`) of every `dkg_abandoned` entry of seat `s`.
fn abandoned(c: &Cluster, s: u16) -> Vec<(String, String)> {
    c.audit_events(s)
        .into_iter()
        .filter_map(|e| match e {
            AuditEvent::DkgAbandoned { dkg_kind, how, .. } => Some((dkg_kind, how)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_stored_key_package_is_audited_in_its_own_unit() {
    let mut c = Cluster::unkeyed(301, 2, 3, &["w"]);
    let p = dkg::proposal(&c, "w", 1);
    let r1 = dkg::part1(&mut c, &p);
    let inbox = dkg::part2(&mut c, &p, &r1);
    // A part 3 whose commit fails stores nothing and logs nothing.
    c.member(1).store().fail_next_commit(Fault::Lost);
    dkg::finish_at(&c, &p, &inbox, 1).unwrap_err();
    assert!(!dkg::has_share(&c, 1, "w", 0));
    assert_eq!(c.audit_events(1), []);
    dkg::finish_at(&c, &p, &inbox, 1).unwrap();
    assert!(dkg::has_share(&c, 1, "w", 0));
    match &c.audit_events(1)[..] {
        [
            AuditEvent::DkgKeyStored {
                wallet,
                session,
                dkg_kind,
                epoch,
                ..
            },
        ] => {
            assert_eq!(*wallet, wid("w"));
            assert_eq!(*session, hex::encode(p.session.0));
            assert_eq!((dkg_kind.as_str(), *epoch), ("dkg", 0));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_failed_dkg_is_audited_with_its_fault() {
    let mut c = Cluster::unkeyed(302, 2, 3, &["w"]);
    let p = dkg::proposal(&c, "w", 1);
    let r1 = dkg::part1(&mut c, &p);
    let mut inbox = dkg::part2(&mut c, &p, &r1);
    dkg::tampered(&mut inbox, |payload, _| {
        let DkgPayload::Round2 { echo, .. } = payload else {
            panic!("not round 2")
        };
        echo.0[0] ^= 1;
    });
    dkg::finish_at(&c, &p, &inbox, 1).unwrap_err();
    match &c.audit_events(1)[..] {
        [
            AuditEvent::DkgFailed {
                wallet,
                session,
                dkg_kind,
                accused,
                fault,
            },
        ] => {
            assert_eq!(*wallet, wid("w"));
            assert_eq!(*session, hex::encode(p.session.0));
            assert_eq!(dkg_kind, "dkg");
            assert_eq!((*accused, fault.as_str()), (None, "echo_mismatch"));
        }
        other => panic!("{other:?}"),
    }
    // A request that finds no session to fail changes nothing and logs
    // nothing.
    dkg::finish_at(&c, &p, &inbox, 1).unwrap_err();
    assert_eq!(c.audit_events(1).len(), 1);
}

#[test]
fn a_part2_failure_is_audited() {
    let mut c = Cluster::unkeyed(303, 2, 3, &["w"]);
    let p = dkg::proposal(&c, "w", 1);
    let r1 = dkg::part1(&mut c, &p);
    // Seat 1 is relayed one round-1 message too few.
    let out = dkg::part2_each(&mut c, &p, |s| {
        let mut view: Vec<_> = r1.iter().filter(|m| m.sender != s).cloned().collect();
        if s == seat(1) {
            view.pop();
        }
        view
    });
    assert!(out[&seat(1)].is_err());
    assert!(
        matches!(
            &c.audit_events(1)[..],
            [AuditEvent::DkgFailed { fault, accused: None, .. }] if fault == "missing_sender"
        ),
        "{:?}",
        c.audit_events(1)
    );
}

#[test]
fn a_cancelled_and_an_expired_dkg_are_audited() {
    let mut c = Cluster::unkeyed(304, 2, 3, &["w"]);
    let p = dkg::proposal(&c, "w", 1);
    dkg::part1(&mut c, &p);
    // Seat 1's session is cancelled by its relay; seat 2's expires.
    let signer = c.member(1).signer();
    assert!(
        signer
            .dkg_cancel(coordinator(1), &p.wallet, p.session)
            .unwrap()
    );
    // A cancel that finds nothing logs nothing.
    assert!(
        !signer
            .dkg_cancel(coordinator(1), &p.wallet, p.session)
            .unwrap()
    );
    assert_eq!(
        abandoned(&c, 1),
        [("dkg".to_owned(), "cancelled".to_owned())]
    );
    c.advance(Duration::from_secs(11 * 60));
    let now = c.now;
    c.member(2).signer().0.prune(now).unwrap();
    c.member(2).signer().0.prune(now).unwrap();
    assert_eq!(abandoned(&c, 2), [("dkg".to_owned(), "expired".to_owned())]);
}

#[test]
fn a_refresh_veto_is_audited_with_its_record() {
    let mut c = Cluster::new(305, 2, 3, &["w"], small_limits());
    let (p, _) = dkg::refresh_to_part3(&mut c, "w", 1, 0);
    c.member(3)
        .signer()
        .refresh_abandon(coordinator(1), &p.wallet, p.session)
        .unwrap();
    // The session of part 2 the veto dropped is logged once, as vetoed.
    assert_eq!(
        abandoned(&c, 3),
        [("refresh".to_owned(), "vetoed".to_owned())]
    );
    // Signing the veto again writes nothing, its entry neither.
    c.member(3)
        .signer()
        .refresh_abandon(coordinator(1), &p.wallet, p.session)
        .unwrap();
    assert_eq!(abandoned(&c, 3).len(), 1);
}

#[test]
fn the_key_managers_entries_are_audit_events() {
    use thresig_store::provider::KekId;
    use thresig_store::{DekTerm, KeyChange, KeyChangeAudit as _};
    let audit = thresig_engine::audit::KeyManagerAudit::default();
    let kek = KekId::new("kek-2").unwrap();
    let changes = [
        KeyChange::KekRotated {
            kek,
            dek_term: DekTerm(3),
        },
        KeyChange::DekPromoted { term: DekTerm(4) },
        KeyChange::DekRetired { term: DekTerm(3) },
    ];
    let events: Vec<AuditEvent> = changes
        .iter()
        .map(|c| serde_json::from_slice(&audit.body(c)).unwrap())
        .collect();
    let expected = [
        ("rotate_kek", 3, Some("kek-2")),
        ("promote_dek", 4, None),
        ("retire_dek", 3, None),
    ];
    for (event, (want, term, want_kek)) in events.iter().zip(expected) {
        match event {
            AuditEvent::KeyManager {
                action,
                dek_term,
                kek,
            } => assert_eq!(
                (action.as_str(), *dek_term, kek.as_deref()),
                (want, term, want_kek)
            ),
            other => panic!("{other:?}"),
        }
    }
}

/// The `dkg_failed` and `dkg_abandoned` entries of seat `s`'s log.
fn endings(c: &Cluster, s: u16) -> usize {
    c.audit_events(s)
        .iter()
        .filter(|e| {
            matches!(
                e,
                AuditEvent::DkgFailed { .. } | AuditEvent::DkgAbandoned { .. }
            )
        })
        .count()
}

#[test]
fn one_member_cannot_fill_the_log_with_dkg_sessions_it_ends() {
    let mut c = Cluster::unkeyed(306, 2, 3, &["w"]);
    let (w, now) = (wid("w"), c.now);
    let signer = c.members[0].signer();
    // Seat 2 starts session after session at seat 1, cancelling each, and
    // fails some in part 2 (it relays no round-1 message).
    for i in 0..40u8 {
        let mut p = dkg::proposal(&c, "w", i);
        p.session.0[31] = 0xA0;
        signer
            .dkg_start(now, coordinator(2), &p, &mut c.rng)
            .unwrap();
        if i % 4 == 0 {
            signer
                .dkg_round2(now, coordinator(2), &w, p.session, &[], &mut c.rng)
                .unwrap_err();
        } else {
            assert!(signer.dkg_cancel(coordinator(2), &w, p.session).unwrap());
        }
    }
    let logged = endings(&c, 1);
    assert!(
        logged <= thresig_engine::audit::DKG_ENDINGS_LOGGED as usize,
        "{logged} entries"
    );
    // Another member's sessions are still logged: the budget is its
    // coordinator's own.
    let p = dkg::proposal(&c, "w", 0xEE);
    signer
        .dkg_start(now, coordinator(3), &p, &mut c.rng)
        .unwrap();
    assert!(signer.dkg_cancel(coordinator(3), &w, p.session).unwrap());
    assert_eq!(endings(&c, 1), logged + 1);
    // Once the window is over, one entry counts what went unlogged.
    c.advance(thresig_engine::audit::DKG_ENDINGS_WINDOW);
    let now = c.now;
    c.member(1).signer().0.prune(now).unwrap();
    let unlogged: Vec<u64> = c
        .audit_events(1)
        .into_iter()
        .filter_map(|e| match e {
            AuditEvent::DkgEndingsUnlogged {
                coordinator, count, ..
            } => {
                assert_eq!(coordinator, Some(2));
                Some(count)
            }
            _ => None,
        })
        .collect();
    assert_eq!(unlogged, [40 - logged as u64]);
}

/// A part 3 refused because the wallet left the refresh's epoch (an
/// operator began a rekey meanwhile) ends the session: it is logged, with
/// the refusal's code.
#[test]
fn a_session_a_refused_part3_ends_is_audited() {
    let mut c = dkg::with_successor(307);
    let (p, inbox) = dkg::refresh_to_part3(&mut c, "old", 1, 0);
    c.member(1).signer().begin_rekey(&wid("old")).unwrap();
    dkg::finish_at(&c, &p, &inbox, 1).unwrap_err();
    assert_eq!(
        abandoned(&c, 1),
        [("refresh".to_owned(), "wallet_not_active".to_owned())]
    );
}

/// A part 3 whose commit was durable though its caller was told it failed
/// is answered again on its retry from the stored result: the key package
/// was stored once, and is logged once.
#[test]
fn a_part3_retry_after_an_ambiguous_commit_logs_its_key_package_once() {
    let mut c = Cluster::unkeyed(308, 2, 3, &["w"]);
    let p = dkg::proposal(&c, "w", 1);
    let r1 = dkg::part1(&mut c, &p);
    let inbox = dkg::part2(&mut c, &p, &r1);
    c.member(1).store().fail_next_commit(Fault::Ambiguous);
    dkg::finish_at(&c, &p, &inbox, 1).unwrap_err();
    dkg::finish_at(&c, &p, &inbox, 1).unwrap();
    dkg::finish_at(&c, &p, &inbox, 1).unwrap();
    let stored = c
        .audit_events(1)
        .into_iter()
        .filter(|e| matches!(e, AuditEvent::DkgKeyStored { .. }))
        .count();
    assert_eq!(stored, 1);
}
