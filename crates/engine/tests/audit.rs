//! The audit log from the signer's side: every share released has its
//! entry, committed in the marker's unit, and a share whose entry cannot
//! commit is never returned (I1).

mod common;

use std::collections::BTreeMap;

use common::*;
use sha2::{Digest as _, Sha256};
use thresig_crypto::Commitment;
use thresig_engine::audit::{AuditEvent, ExportBreak, verify_export};
use thresig_engine::{
    DkgPayload, ErrorCode, SignedDkgMessage, WalletEpoch, WalletStateKind, commitment_hash,
    package_hash,
};
use thresig_store::{AuditSeq, Store, Timestamp};

const D1: [u8; 32] = [1; 32];
const D2: [u8; 32] = [2; 32];

fn cluster(seed: u64) -> Cluster {
    Cluster::new(seed, 2, 3, &["w1"], small_limits())
}

fn commitments(c: &mut Cluster, inputs: usize) -> BTreeMap<u16, Vec<Commitment>> {
    [1, 2]
        .into_iter()
        .map(|s| (s, c.round1(s, COORD_A, "w1", inputs).unwrap()))
        .collect()
}

/// Seat 1 releases shares for two one-input requests.
fn release_two(c: &mut Cluster) {
    for digest in [D1, D2] {
        let comms = commitments(c, 1);
        let req = c.request("w1", &comms, &[digest]);
        c.round2(1, &req).unwrap();
    }
}

#[test]
fn every_released_share_has_its_entry() {
    let mut c = cluster(1);
    let comms = commitments(&mut c, 2);
    let req = c.request("w1", &comms, &[D1, D2]);
    c.round2(1, &req).unwrap();
    let released: Vec<_> = c
        .audit_events(1)
        .into_iter()
        .filter_map(|e| match e {
            AuditEvent::ShareReleased {
                wallet,
                commitment,
                package,
                messages,
                txid,
                verdict,
                ..
            } => Some((wallet, commitment, package, messages, txid, verdict)),
            _ => None,
        })
        .collect();
    let lead = commitment_hash(&comms[&1][0]);
    assert_eq!(
        released,
        vec![(
            wid("w1"),
            hex::encode(lead.0),
            hex::encode(package_hash(&req).0),
            vec![
                hex::encode(Sha256::digest(D1)),
                hex::encode(Sha256::digest(D2))
            ],
            None,
            "raw_digests_allowed".to_owned(),
        )]
    );
    // A replay returns the stored shares and writes no second entry.
    c.round2(1, &req).unwrap();
    assert_eq!(c.audit_events(1).len(), 1);
    c.member(1).store().inner.audit_verify().unwrap();
}

#[test]
fn a_share_whose_entry_cannot_commit_is_never_returned() {
    let mut c = cluster(2);
    let first = commitments(&mut c, 1);
    let req = c.request("w1", &first, &[D1]);
    c.round2(1, &req).unwrap();
    // The last entry goes missing on disk: the head no longer stands where
    // the log ends, so the next entry cannot be appended.
    c.edit_disk(1, |txn| {
        let mut t = txn
            .open_table(redb::TableDefinition::<&[u8], &[u8]>::new("audit"))
            .unwrap();
        t.remove(1u64.to_be_bytes().as_slice()).unwrap();
    });
    let comms = commitments(&mut c, 1);
    let req = c.request("w1", &comms, &[D2]);
    let err = c.round2(1, &req).unwrap_err();
    assert_eq!(err.code(), ErrorCode::StateCorrupt, "{err:?}");
    assert_eq!(err.recovery(), thresig_store::Recovery::Terminal, "{err:?}");
    assert!(
        c.member(1).marker("w1", &comms[&1][0]).is_none(),
        "no marker, so no share, without its entry"
    );
}

#[test]
fn a_lost_commit_leaves_neither_marker_nor_entry() {
    let mut c = cluster(3);
    let comms = commitments(&mut c, 1);
    let req = c.request("w1", &comms, &[D1]);
    c.member(1).store().fail_next_commit(Fault::Lost);
    c.round2(1, &req).unwrap_err();
    assert!(c.member(1).marker("w1", &comms[&1][0]).is_none());
    assert!(c.audit_events(1).is_empty());
    // The identical retry commits both together.
    c.round2(1, &req).unwrap();
    assert!(c.member(1).marker("w1", &comms[&1][0]).is_some());
    assert_eq!(c.audit_events(1).len(), 1);
}

#[test]
fn an_export_verifies_with_the_roster_and_a_forged_entry_does_not() {
    let mut c = cluster(4);
    release_two(&mut c);
    let signer = c.member(1).signer();
    let member = identity(1);
    let export = signer
        .0
        .audit_export(Timestamp(5_000), AuditSeq(1))
        .unwrap();
    assert_eq!(export.len(), 3, "two releases and the closing checkpoint");
    let report = verify_export(&export, &member).unwrap();
    assert_eq!((report.first, report.last, report.checkpoints), (1, 3, 1));
    assert_eq!((report.member, report.signed_at_ms), (member, 5_000));

    // A forged verdict in the first entry breaks its hash.
    let mut forged = export.clone();
    forged[0].entry["verdict"] = "forged".into();
    let err = verify_export(&forged, &member).unwrap_err();
    assert_eq!((err.seq, err.problem), (1, ExportBreak::HashMismatch));

    // Recomputing that hash breaks the next link instead.
    let mut rehashed = forged.clone();
    rehash(&mut rehashed[..1], 0);
    let err = verify_export(&rehashed, &member).unwrap_err();
    assert_eq!((err.seq, err.problem), (2, ExportBreak::PrevMismatch));

    // An export without its closing checkpoint is unsigned.
    let err = verify_export(&export[..2], &member).unwrap_err();
    assert_eq!((err.seq, err.problem), (2, ExportBreak::Unsigned));

    // As another member's export, its checkpoint has the wrong signer.
    let err = verify_export(&export, &identity(2)).unwrap_err();
    assert_eq!((err.seq, err.problem), (3, ExportBreak::WrongSigner));
}

#[test]
fn prune_is_audited_and_keeps_the_export_verifiable() {
    let mut c = cluster(5);
    release_two(&mut c);
    let signer = c.member(1).signer();
    let removed = signer
        .0
        .audit_prune(Timestamp(c.now.0 + 2 * DAY_MS), Timestamp(c.now.0 + 1))
        .unwrap();
    assert_eq!(removed, 1, "the last entry before the prune stays");
    let store = &c.member(1).store().inner;
    let report = store.audit_verify().unwrap();
    assert_eq!(report.head.first, AuditSeq(2));
    let kinds: Vec<_> = c
        .audit_events(1)
        .into_iter()
        .map(|e| match e {
            AuditEvent::ShareReleased { .. } => "share",
            AuditEvent::Prune { .. } => "prune",
            AuditEvent::Checkpoint(_) => "checkpoint",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["share", "prune", "checkpoint"]);
    let export = c
        .member(1)
        .signer()
        .0
        .audit_export(Timestamp(u64::MAX - 1), AuditSeq(1))
        .unwrap();
    assert_eq!(export.first().map(|l| l.seq), Some(2));
    verify_export(&export, &identity(1)).unwrap();
}

#[test]
fn a_dkg_activation_and_operator_steps_are_audited() {
    let mut c = Cluster::unkeyed(6, 2, 3, &["w"]);
    let confirmations = dkg::through_part3(&mut c, "w", 1);
    let others: Vec<_> = confirmations
        .iter()
        .filter(|m| m.sender.get() != 1)
        .cloned()
        .collect();
    assert!(dkg::deliver(&c, 1, "w", &others));
    let key = c.member(1).signer().0.wallet_key(&wid("w")).unwrap();
    let approve = thresig_engine::OperatorCommand::ApproveRepair {
        wallet: wid("w"),
        seat: seat(2),
        expires_in_secs: 60,
    };
    c.member(1).signer().0.operate(c.now, &approve).unwrap();
    let events = c.audit_events(1);
    let output = hex::encode(key.output_key().to_bytes());
    // Part 3 stored the key package before any confirmation; the
    // activation came with the last one.
    assert!(
        matches!(
            &events[..2],
            [
                AuditEvent::DkgKeyStored { wallet, output_key: stored, .. },
                AuditEvent::DkgActivated { output_key, .. },
            ] if *wallet == wid("w") && *stored == output && *output_key == output
        ),
        "{events:?}"
    );
    let steps: Vec<_> = events[2..]
        .iter()
        .map(|e| match e {
            AuditEvent::Operator {
                command, changed, ..
            } => (command.as_str(), *changed),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(steps, [("approve_repair", true)]);
}

/// Recomputes every line's `prev` and `hash` from line `from` on, as a
/// forger who changed a line would.
fn rehash(lines: &mut [thresig_engine::audit::ExportLine], from: usize) {
    for i in from..lines.len() {
        if i > 0 {
            lines[i].prev = lines[i - 1].hash.clone();
        }
        let prev: [u8; 32] = hex::decode(&lines[i].prev).unwrap().try_into().unwrap();
        let body = serde_json::to_vec(&lines[i].entry).unwrap();
        lines[i].hash = hex::encode(thresig_store::entry_hash(
            &prev,
            AuditSeq(lines[i].seq),
            Timestamp(lines[i].at_ms),
            &body,
        ));
    }
}

#[test]
fn another_member_cannot_sign_a_forged_export_of_this_one() {
    let mut c = cluster(7);
    release_two(&mut c);
    let mut export = c
        .member(1)
        .signer()
        .0
        .audit_export(Timestamp(5_000), AuditSeq(1))
        .unwrap();
    // Seat 2 rewrites seat 1's first entry, chains the rest again and
    // closes the export with a checkpoint of its own key.
    export[0].entry["verdict"] = "forged".into();
    rehash(&mut export, 0);
    let head: [u8; 32] = hex::decode(&export[1].hash).unwrap().try_into().unwrap();
    let forged = thresig_engine::audit::Checkpoint::sign(
        &thresig_engine::test_util::identity_secret(2),
        AuditSeq(2),
        &head,
        Timestamp(export[2].at_ms),
    );
    export[2].entry = serde_json::to_value(AuditEvent::Checkpoint(forged)).unwrap();
    rehash(&mut export, 2);
    let err = verify_export(&export, &identity(1)).unwrap_err();
    assert_eq!((err.seq, err.problem), (3, ExportBreak::WrongSigner));
}

#[test]
fn an_export_cut_at_an_older_checkpoint_cannot_pass_as_fresh() {
    let mut c = cluster(8);
    release_two(&mut c);
    c.member(1)
        .signer()
        .0
        .audit_export(Timestamp(5_000), AuditSeq(1))
        .unwrap();
    release_two(&mut c);
    let fresh = c
        .member(1)
        .signer()
        .0
        .audit_export(Timestamp(9_000), AuditSeq(1))
        .unwrap();
    assert_eq!(
        fresh.len(),
        6,
        "two releases, a checkpoint, two more, a checkpoint"
    );
    // Cut at the first export's checkpoint and dated now: the later
    // releases vanish.
    let mut stale = fresh[..3].to_vec();
    stale[2].at_ms = 9_000;
    rehash(&mut stale, 2);
    let err = verify_export(&stale, &identity(1)).unwrap_err();
    assert_eq!((err.seq, err.problem), (3, ExportBreak::TimeMismatch));
    // Dating the checkpoint itself afresh breaks its signature instead.
    stale[2].entry["at_ms"] = 9_000.into();
    rehash(&mut stale, 2);
    let err = verify_export(&stale, &identity(1)).unwrap_err();
    assert_eq!((err.seq, err.problem), (3, ExportBreak::BadSignature));
    // Uncut, it verifies, as signed at 9,000.
    let report = verify_export(&fresh, &identity(1)).unwrap();
    assert_eq!((report.last, report.signed_at_ms), (6, 9_000));
}

/// The operator steps and whether each changed the wallet, as logged.
fn operator_steps(c: &Cluster, s: u16) -> Vec<(String, bool)> {
    c.audit_events(s)
        .into_iter()
        .filter_map(|e| match e {
            AuditEvent::Operator {
                command, changed, ..
            } => Some((command, changed)),
            _ => None,
        })
        .collect()
}

/// A cluster whose wallet "old" can be rekeyed to "new".
fn rekeyable(seed: u64) -> Cluster {
    let specs = [
        Spec::new("old", Keys::Dkg(thresig_crypto::ScriptTree::KeyPathOnly)).successor("new"),
        Spec::new("new", Keys::Dkg(thresig_crypto::ScriptTree::KeyPathOnly)),
    ];
    Cluster::with_wallets(seed, 2, 3, &specs, thresig_engine::Limits::default())
}

#[test]
fn a_committed_operator_step_always_has_its_entry() {
    let c = rekeyable(9);
    let signer = c.member(1).signer();
    let rekey = thresig_engine::OperatorCommand::BeginRekey { wallet: wid("old") };
    let retire = thresig_engine::OperatorCommand::Retire { wallet: wid("old") };
    signer.0.operate(c.now, &rekey).unwrap();
    // A write of the entry alone fails: the step must not commit without
    // it, whatever the answer.
    c.member(1).store().fail_next_audit_write(Fault::Lost);
    let first = signer.0.operate(c.now, &retire);
    let retired = c
        .member(1)
        .store()
        .inner
        .key_package(&wid("old"), thresig_store::KeyEpoch(1))
        .unwrap()
        .is_none();
    assert_eq!(
        operator_steps(&c, 1).contains(&("retire".to_owned(), true)),
        retired,
        "the step committed: {retired}, answered {first:?}"
    );
    assert_eq!(
        operator_steps(&c, 1),
        [
            ("begin_rekey".to_owned(), true),
            ("retire".to_owned(), true)
        ]
    );
}

/// The kinds of seat `s`'s entries, in order.
fn kinds(c: &Cluster, s: u16) -> Vec<&'static str> {
    c.audit_events(s)
        .into_iter()
        .map(|e| match e {
            AuditEvent::ShareReleased { .. } => "share",
            AuditEvent::Prune { .. } => "prune",
            AuditEvent::Checkpoint(_) => "checkpoint",
            _ => "other",
        })
        .collect()
}

const DAY_MS: u64 = 24 * 3600 * 1000;

#[test]
fn a_prune_cut_off_within_the_last_day_is_refused_and_changes_nothing() {
    let mut c = cluster(10);
    release_two(&mut c);
    let signer = c.member(1).signer();
    for before in [c.now.0 + 1, c.now.0 + DAY_MS, c.now.0 - DAY_MS + 1] {
        let err = signer.0.audit_prune(c.now, Timestamp(before)).unwrap_err();
        assert_eq!(err.code(), "audit_prune_too_recent", "{before}: {err}");
        assert_eq!(err.recovery(), thresig_store::Recovery::Terminal);
    }
    assert_eq!(kinds(&c, 1), ["share", "share"]);
}

#[test]
fn a_prune_commits_with_its_checkpoint_or_not_at_all() {
    let mut c = cluster(11);
    release_two(&mut c);
    let later = Timestamp(c.now.0 + 2 * DAY_MS);
    c.member(1).store().fail_next_audit_write(Fault::Lost);
    let outcome = c
        .member(1)
        .signer()
        .0
        .audit_prune(later, Timestamp(c.now.0 + 1));
    let kinds = kinds(&c, 1);
    assert!(
        kinds == ["share", "prune", "checkpoint"] || kinds == ["share", "share"],
        "{kinds:?} after {outcome:?}"
    );
}

#[test]
fn a_long_export_comes_in_bounded_pages_that_verify_together() {
    use thresig_engine::audit::EXPORT_PAGE;
    let c = cluster(12);
    let signer = c.member(1).signer();
    let entries = EXPORT_PAGE as u64 + 10;
    for _ in 0..entries {
        signer.0.audit_open(c.now).unwrap();
    }
    // The first open stores the wallets' policies (`policy_settled`), and
    // the periodic checkpoint after entry 1,000 is an entry too.
    let end = signer.0.audit_checkpoint(c.now).unwrap();
    assert_eq!(end, AuditSeq(entries + 3));
    let mut lines = Vec::new();
    let mut pages = 0;
    let mut from = Some(AuditSeq(1));
    while let Some(at) = from {
        let page = signer.0.audit_export_page(at, end).unwrap();
        assert!(page.lines <= EXPORT_PAGE, "a page of {} lines", page.lines);
        let decoded = page.decode().unwrap();
        assert_eq!(decoded.len(), page.lines);
        lines.extend(decoded);
        pages += 1;
        from = page.next;
    }
    assert_eq!(pages, 2);
    assert_eq!(lines.len() as u64, end.0);
    let report = verify_export(&lines, &identity(1)).unwrap();
    assert_eq!((report.first, report.last), (1, end.0));
}

#[test]
fn an_open_records_each_wallets_policy_version() {
    let c = cluster(13);
    c.member(1).signer().0.audit_open(c.now).unwrap();
    let expected = c.member(1).config.wallets[0].policy.version;
    let versions: Vec<_> = c
        .audit_events(1)
        .into_iter()
        .filter_map(|e| match e {
            AuditEvent::Open {
                policy_versions, ..
            } => Some(policy_versions),
            _ => None,
        })
        .collect();
    assert_eq!(versions, [[(wid("w1"), expected)].into()]);
}

#[test]
fn a_periodic_checkpoint_costs_one_commit_however_busy_the_log() {
    use thresig_engine::audit::CHECKPOINT_EVERY;
    let c = cluster(14);
    let signer = c.member(1).signer();
    let store = c.member(1).store();
    // The first open also stores the wallets' policies (`policy_settled`).
    for _ in 0..CHECKPOINT_EVERY - 3 {
        signer.0.audit_open(c.now).unwrap();
    }
    // Every write of the log alone now has another entry land before it:
    // the open lands at entry 1,000, and so does no checkpoint after it.
    store.interleave_audit_writes(true);
    let before = store.audit_writes();
    let seq = signer.0.audit_open(c.now).unwrap();
    store.interleave_audit_writes(false);
    assert_eq!(seq, AuditSeq(CHECKPOINT_EVERY));
    assert_eq!(
        store.audit_writes() - before,
        2,
        "the open and one checkpoint"
    );
    let checkpoints = store
        .inner
        .audit(AuditSeq(1), 2 * CHECKPOINT_EVERY as usize)
        .unwrap()
        .iter()
        .filter(|e| {
            matches!(
                serde_json::from_slice(&e.body),
                Ok(AuditEvent::Checkpoint(_))
            )
        })
        .count();
    assert_eq!(checkpoints, 1);
    store.inner.audit_verify().unwrap();
}

/// Seat `s`'s refresh entries, in order.
fn refresh_events(c: &Cluster, s: u16) -> Vec<AuditEvent> {
    c.audit_events(s)
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                AuditEvent::RefreshSwitched { .. } | AuditEvent::RefreshDiscarded { .. }
            )
        })
        .collect()
}

/// A refresh's switch commits its entry in the switch's own unit: a lost
/// commit leaves neither, and the redelivered confirmation writes both,
/// naming the record digest every member confirmed.
#[test]
fn a_refresh_switch_is_audited_in_its_own_unit() {
    let mut c = cluster(20);
    let (p, inbox) = dkg::refresh_to_part3(&mut c, "w1", 1, 0);
    let confirmations = dkg::confirmations(&c, &p, &inbox);
    let (last, first) = confirmations.split_last().unwrap();
    assert!(!dkg::deliver(&c, 1, "w1", first));
    c.member(1).store().fail_next_commit(Fault::Lost);
    assert!(c.member(1).signer().dkg_confirm(&wid("w1"), last).is_err());
    assert_eq!(
        dkg::at(&c, 1, "w1"),
        (WalletStateKind::Refreshing, Some(WalletEpoch(0)))
    );
    assert!(refresh_events(&c, 1).is_empty());
    assert!(dkg::deliver(&c, 1, "w1", std::slice::from_ref(last)));
    let DkgPayload::RefreshConfirm { wallet_key, .. } = &last.payload else {
        panic!("not a refresh confirmation: {last:?}");
    };
    assert_eq!(
        refresh_events(&c, 1),
        [AuditEvent::RefreshSwitched {
            wallet: wid("w1"),
            session: hex::encode(p.session.0),
            from_epoch: 0,
            to_epoch: 1,
            key_record: hex::encode(&wallet_key.0),
        }]
    );
}

/// A pending refresh discarded on vetoes commits its entry with the
/// discard; vetoes short of the threshold discard and log nothing.
#[test]
fn a_refresh_discarded_on_vetoes_is_audited() {
    let mut c = cluster(21);
    let (p, inbox) = dkg::refresh_to_part3(&mut c, "w1", 1, 0);
    dkg::finish_at(&c, &p, &inbox, 1).unwrap();
    let veto = |s: u16| {
        c.member(s)
            .signer()
            .refresh_abandon(coordinator(1), &p.wallet, p.session)
            .unwrap()
    };
    let (two, three) = (veto(2), veto(3));
    let discard = |vetoes: Vec<SignedDkgMessage>| {
        c.member(1)
            .signer()
            .refresh_discard(coordinator(1), &p.wallet, p.session, vetoes)
    };
    discard(vec![two.clone()]).unwrap_err();
    assert!(refresh_events(&c, 1).is_empty());
    assert!(discard(vec![two, three]).unwrap());
    assert_eq!(
        refresh_events(&c, 1),
        [AuditEvent::RefreshDiscarded {
            wallet: wid("w1"),
            session: hex::encode(p.session.0),
            epoch: 0,
        }]
    );
}

#[test]
fn an_export_page_of_large_opens_stays_within_its_byte_budget() {
    use thresig_engine::audit::EXPORT_PAGE_BYTES;
    let c = cluster(15);
    let signer = c.member(1).signer();
    // A signer with 2,000 wallets of the longest ids: each open is some
    // 140 KB, so a page of 1,024 of them would be well over 100 MB.
    let policy_versions: BTreeMap<_, _> =
        (0..2_000).map(|n| (wid(&format!("{n:0>64}")), 7)).collect();
    let open = AuditEvent::Open {
        identity: identity(1),
        wallets: 2_000,
        policy_versions,
        rollout: None,
    };
    for _ in 0..150 {
        signer.0.audit_record(c.now, &open).unwrap();
    }
    let end = signer.0.audit_checkpoint(c.now).unwrap();
    let mut lines = Vec::new();
    let mut pages = 0;
    let mut from = Some(AuditSeq(1));
    while let Some(at) = from {
        let page = signer.0.audit_export_page(at, end).unwrap();
        // What is printed is what was measured: the page's own text, one
        // non-empty JSON line per entry, each the encoding of its line.
        assert!(
            page.text.len() <= EXPORT_PAGE_BYTES,
            "a page of {} bytes",
            page.text.len()
        );
        let decoded = page.decode().unwrap();
        assert!(!decoded.is_empty());
        assert_eq!(page.text.lines().count(), page.lines);
        for (text, line) in page.text.lines().zip(&decoded) {
            assert_eq!(text, serde_json::to_string(line).unwrap());
        }
        lines.extend(decoded);
        pages += 1;
        from = page.next;
    }
    assert!(pages > 1);
    let seqs: Vec<u64> = lines.iter().map(|l| l.seq).collect();
    assert_eq!(seqs, (1..=end.0).collect::<Vec<_>>());
    let report = verify_export(&lines, &identity(1)).unwrap();
    assert_eq!((report.first, report.last), (1, end.0));
}

#[test]
fn a_periodic_checkpoint_follows_an_operator_step_at_entry_1000() {
    use thresig_engine::audit::CHECKPOINT_EVERY;
    let c = rekeyable(16);
    let signer = c.member(1).signer();
    let store = c.member(1).store();
    while store.inner.audit_head().unwrap().seq.0 < CHECKPOINT_EVERY - 1 {
        signer.0.audit_open(c.now).unwrap();
    }
    // The operator's step writes entry 1,000 in its own unit.
    let rekey = thresig_engine::OperatorCommand::BeginRekey { wallet: wid("old") };
    signer.0.operate(c.now, &rekey).unwrap();
    assert_eq!(
        store.inner.audit_head().unwrap().seq,
        AuditSeq(CHECKPOINT_EVERY)
    );
    signer.0.audit_open(c.now).unwrap();
    let last = store.inner.audit(AuditSeq(CHECKPOINT_EVERY), 16).unwrap();
    let kinds: Vec<AuditEvent> = last
        .iter()
        .map(|e| serde_json::from_slice(&e.body).unwrap())
        .collect();
    assert!(
        matches!(kinds.last(), Some(AuditEvent::Checkpoint(_))),
        "no checkpoint after entry {}: {kinds:?}",
        CHECKPOINT_EVERY + 1
    );
}
