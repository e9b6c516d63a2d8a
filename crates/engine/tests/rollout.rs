//! Staged policy rollout (docs/policy.md, "Staged rollout"): canaries
//! chosen alike on every member, a gate that rolls a refusing policy back
//! by itself, promotion to 100 %, compare-and-set steps, restarts.

mod common;

use std::collections::BTreeMap;

use common::psbt;
use common::*;
use thresig_crypto::{Commitment, ScriptTree};
use thresig_engine::audit::AuditEvent;
use thresig_engine::rollout::gate::{Gates, Verdict};
use thresig_engine::rollout::{MAX_COUNTED, on_new_version};
use thresig_engine::test_util::raw_policy;
use thresig_engine::{
    Error, ErrorCode, Limits, Phase, RolloutCommand, RolloutError, RolloutStatus, WalletRollout,
};
use thresig_store::{AuditSeq, MetaName, Store, WriteOp};
use thresig_tx::PolicyConfig;

const WALLETS: [&str; 8] = ["w0", "w1", "w2", "w3", "w4", "w5", "w6", "w7"];

fn cluster(seed: u64) -> Cluster {
    Cluster::new(seed, 2, 3, &WALLETS, Limits::default())
}

/// Version 2 of every wallet's policy: `allow` says whether it still
/// signs raw digests (the harness's wallets sign nothing else).
fn version2(allow: bool) -> BTreeMap<thresig_engine::WalletId, PolicyConfig> {
    let mut policy = raw_policy();
    policy.version = 2;
    policy.allow_raw_digests = allow;
    WALLETS.iter().map(|w| (wid(w), policy.clone())).collect()
}

fn gates() -> Gates {
    let mut gates = Gates::default();
    gates.min_requests = 3;
    gates
}

fn stage(c: &Cluster, s: u16, allow: bool) -> RolloutStatus {
    let command = RolloutCommand::Stage {
        version: 2,
        policies: version2(allow),
        gates: gates(),
        expect_seq: None,
    };
    c.member(s)
        .signer()
        .policy_rollout(c.now, &command)
        .unwrap()
}

fn promote(c: &Cluster, s: u16) -> Result<RolloutStatus, RolloutError> {
    c.member(s).signer().policy_rollout(
        c.now,
        &RolloutCommand::Promote {
            expect_seq: None,
            force: false,
        },
    )
}

fn on_version(status: &RolloutStatus, version: u32) -> Vec<String> {
    status
        .wallets
        .iter()
        .filter(|w| w.policy_version == version)
        .map(|w| w.wallet.to_string())
        .collect()
}

fn events(c: &Cluster, s: u16) -> Vec<AuditEvent> {
    c.member(s)
        .store()
        .audit(AuditSeq(1), 10_000)
        .unwrap()
        .iter()
        .map(|e| serde_json::from_slice(&e.body).unwrap())
        .collect()
}

#[test]
fn canaries_are_chosen_by_wallet_id_alike_on_every_member() {
    let ids: Vec<_> = (0..400).map(|i| wid(&format!("wallet-{i}"))).collect();
    let mut last = 0;
    let mut previous = std::collections::BTreeSet::new();
    for phase in [Phase::Canary, Phase::Ten, Phase::Fifty, Phase::Full] {
        let chosen = on_new_version(&ids, 7, phase);
        assert_eq!(chosen, on_new_version(ids.iter().rev(), 7, phase), "order");
        assert!(previous.is_subset(&chosen), "{phase}: a step only adds");
        let share = usize::from(phase.share_bp()) * ids.len() / 10_000;
        // A hash spreads 400 ids evenly enough: within half the share
        // either way (and at least one canary).
        assert!(chosen.len() >= share.max(1) / 2 && chosen.len() <= (share * 3 / 2).max(1) + 2);
        assert!(chosen.len() >= last);
        last = chosen.len();
        previous = chosen;
    }
    assert_eq!(last, ids.len());
    assert!(on_new_version(&ids, 7, Phase::RolledBack).is_empty());
    assert_ne!(
        on_new_version(&ids, 7, Phase::Ten),
        on_new_version(&ids, 8, Phase::Ten),
        "each version picks its own canaries"
    );

    // Three members staging the same file put the same wallets first.
    let c = cluster(80);
    let staged: Vec<_> = (1..=3)
        .map(|s| on_version(&stage(&c, s, true), 2))
        .collect();
    assert_eq!(
        staged[0].len(),
        1,
        "one canary of eight wallets: {staged:?}"
    );
    assert!(staged.iter().all(|s| *s == staged[0]), "{staged:?}");
}

#[test]
fn a_canary_whose_payments_are_denied_rolls_back_by_itself() {
    let mut c = cluster(81);
    let status = stage(&c, 1, false);
    let canary = on_version(&status, 2);
    let baseline = on_version(&status, 1);
    assert_eq!(canary.len(), 1);
    for (i, wallet) in baseline.iter().take(3).enumerate() {
        c.sign(wallet, &[1, 2], &[[i as u8; 32]]);
    }
    // Two coordinators see the denials (one alone could be a peer
    // fighting the policy: docs/policy.md, "Health gates").
    for i in 0..6u8 {
        let coord = if i < 3 { COORD_A } else { COORD_B };
        let (seat, err) = c
            .sign_as(coord, &canary[0], &[1, 2], &[[100 + i; 32]])
            .unwrap_err();
        assert_eq!((seat, err.code()), (1, ErrorCode::PolicyDenied));
    }
    let status = c.member(1).signer().rollout_status().unwrap();
    assert_eq!(status.phase, Some(Phase::RolledBack), "{status:?}");
    assert!(
        status.reason.as_deref().unwrap().contains("denial rate"),
        "{status:?}"
    );
    assert_eq!(on_version(&status, 2), Vec::<String>::new());
    // The canary signs again under its previous version.
    c.sign(&canary[0], &[1, 2], &[[200; 32]]);
    let rolled = events(&c, 1).into_iter().any(|e| {
        matches!(e, AuditEvent::PolicyRolledBack { seq: 2, version: 2, ref reason, .. }
            if reason.contains("health gate"))
    });
    assert!(rolled, "the automatic rollback is audited");
    assert!(matches!(
        promote(&c, 1),
        Err(RolloutError::NotInProgress { .. })
    ));
}

#[test]
fn a_healthy_rollout_promotes_to_every_wallet() {
    let mut c = cluster(82);
    let status = stage(&c, 1, true);
    let canary = on_version(&status, 2);
    for i in 0..3u8 {
        c.sign(&canary[0], &[1, 2], &[[i; 32]]);
    }
    let status = c.member(1).signer().rollout_status().unwrap();
    assert_eq!(status.verdict, Some(Verdict::Pass));
    assert_eq!(status.canary.released, 3);
    // Each step opens a new window: the new canaries sign before the next
    // promote.
    let mut salt = 10u8;
    for phase in [Phase::Ten, Phase::Fifty, Phase::Full] {
        let status = promote(&c, 1).unwrap();
        assert_eq!(status.phase, Some(phase));
        if phase != Phase::Full {
            let canary = on_version(&status, 2);
            for _ in 0..3 {
                salt += 1;
                c.sign(
                    &canary[usize::from(salt) % canary.len()],
                    &[1, 2],
                    &[[salt; 32]],
                );
            }
        }
    }
    let status = c.member(1).signer().rollout_status().unwrap();
    assert_eq!(on_version(&status, 2).len(), WALLETS.len());
    assert!(status.wallets.iter().all(|w| w.group.is_none()), "complete");
    assert!(matches!(
        promote(&c, 1),
        Err(RolloutError::NotInProgress { .. })
    ));
    let shown = c.member(1).signer().status(&wid("w5")).unwrap();
    assert_eq!(shown.policy_version, Some(2));
    assert_eq!(
        shown.policy_rollout,
        Some(WalletRollout::new(2, Phase::Full, true))
    );
    assert_eq!(
        c.member(2)
            .signer()
            .status(&wid("w5"))
            .unwrap()
            .policy_version,
        Some(1),
        "a member that staged nothing keeps its version"
    );
    // The share release records the version the wallet applied.
    c.sign("w5", &[1, 2], &[[9; 32]]);
    let versions: Vec<u32> = events(&c, 1)
        .into_iter()
        .filter_map(|e| match e {
            AuditEvent::ShareReleased {
                wallet,
                policy_version,
                ..
            } if wallet.as_str() == "w5" => Some(policy_version),
            _ => None,
        })
        .collect();
    assert_eq!(versions, vec![2]);
    let steps: Vec<&str> = events(&c, 1)
        .iter()
        .filter_map(|e| match e {
            AuditEvent::PolicyStaged { .. } => Some("staged"),
            AuditEvent::PolicyPromoted { .. } => Some("promoted"),
            _ => None,
        })
        .collect();
    assert_eq!(steps, ["staged", "promoted", "promoted", "promoted"]);
}

#[test]
fn promote_refuses_while_the_gate_fails_and_rolls_back() {
    let mut c = cluster(83);
    let status = stage(&c, 1, false);
    let canary = on_version(&status, 2);
    let (_, err) = c
        .sign_as(COORD_A, &canary[0], &[1, 2], &[[1; 32]])
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::PolicyDenied);
    let status = c.member(1).signer().rollout_status().unwrap();
    assert_eq!(
        status.verdict,
        Some(Verdict::Pending { seen: 1, needed: 3 })
    );
    for i in 2..4u8 {
        let _ = c.sign_as(COORD_A, &canary[0], &[1, 2], &[[i; 32]]);
    }
    assert!(matches!(
        c.member(1).signer().rollout_status().unwrap().verdict,
        Some(Verdict::Held(_))
    ));
    for i in 4..7u8 {
        let _ = c.sign_as(COORD_B, &canary[0], &[1, 2], &[[i; 32]]);
    }
    // The second coordinator's third denial failed the gate and rolled
    // back already.
    assert!(matches!(
        promote(&c, 1),
        Err(RolloutError::NotInProgress { .. })
    ));
    assert_eq!(
        c.member(1).signer().rollout_status().unwrap().phase,
        Some(Phase::RolledBack)
    );
}

#[test]
fn a_stale_step_is_refused() {
    let c = cluster(84);
    stage(&c, 1, true);
    let stale = c
        .member(1)
        .signer()
        .policy_rollout(
            c.now,
            &RolloutCommand::Promote {
                expect_seq: Some(0),
                force: true,
            },
        )
        .unwrap_err();
    assert!(
        matches!(
            stale,
            RolloutError::Stale {
                expected: 0,
                found: 1
            }
        ),
        "{stale:?}"
    );
    assert_eq!(stale.code(), "rollout_stale");
    let again = RolloutCommand::Stage {
        version: 2,
        policies: version2(true),
        gates: gates(),
        expect_seq: None,
    };
    assert!(matches!(
        c.member(1).signer().policy_rollout(c.now, &again),
        Err(RolloutError::InProgress {
            version: 2,
            phase: Phase::Canary
        })
    ));
    let promoted = c
        .member(1)
        .signer()
        .policy_rollout(
            c.now,
            &RolloutCommand::Promote {
                expect_seq: Some(1),
                force: true,
            },
        )
        .unwrap();
    assert_eq!((promoted.seq, promoted.phase), (2, Some(Phase::Ten)));
}

#[test]
fn a_restart_keeps_the_step_and_the_policies_without_the_file() {
    let mut c = cluster(85);
    let status = stage(&c, 1, false);
    let canary = on_version(&status, 2);
    c.restart(1);
    let status = c.member(1).signer().rollout_status().unwrap();
    assert_eq!((status.seq, status.phase), (1, Some(Phase::Canary)));
    assert_eq!(on_version(&status, 2), canary);
    let shown = c.member(1).signer().status(&wid(&canary[0])).unwrap();
    assert_eq!(
        (shown.policy_version, shown.policy_rollout),
        (Some(2), Some(WalletRollout::new(2, Phase::Canary, true)))
    );
    // The file still says version 1, yet the canary applies version 2.
    let (_, err) = c
        .sign_as(COORD_A, &canary[0], &[1, 2], &[[1; 32]])
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::PolicyDenied);
    c.member(1)
        .signer()
        .policy_rollout(
            c.now,
            &RolloutCommand::Rollback {
                expect_seq: Some(1),
            },
        )
        .unwrap();
    c.restart(1);
    let status = c.member(1).signer().rollout_status().unwrap();
    assert_eq!(status.phase, Some(Phase::RolledBack));
    assert_eq!(on_version(&status, 1).len(), WALLETS.len());
    c.sign(&canary[0], &[1, 2], &[[2; 32]]);
}

#[test]
fn a_damaged_rollout_record_refuses_and_is_never_reset() {
    let mut c = cluster(86);
    stage(&c, 1, true);
    let name = MetaName::new(b"policy-rollout".to_vec()).unwrap();
    c.member(1)
        .store()
        .write(vec![WriteOp::PutMeta {
            name: name.clone(),
            value: b"{\"format\":1,\"seq\":".to_vec().into(),
        }])
        .unwrap();
    c.restart(1);
    assert!(matches!(
        c.member(1).signer().rollout_status(),
        Err(RolloutError::Corrupt)
    ));
    let (seat, err) = c.sign_as(COORD_A, "w0", &[1, 2], &[[1; 32]]).unwrap_err();
    assert_eq!(seat, 1);
    assert!(
        matches!(err, Error::Rollout(RolloutError::Corrupt)),
        "{err:?}"
    );
    assert_eq!(err.code(), ErrorCode::StateCorrupt);
    let err = c
        .member(1)
        .signer()
        .policy_rollout(c.now, &RolloutCommand::Rollback { expect_seq: None })
        .unwrap_err();
    assert_eq!(err.code(), "rollout_corrupt");
    let kept = c.member(1).store().meta(&name).unwrap().unwrap();
    assert_eq!(kept.as_slice(), b"{\"format\":1,\"seq\":", "left as it was");
}

#[test]
fn a_rollback_whose_commit_failed_is_made_by_the_upkeep_tick() {
    let mut c = cluster(87);
    let status = stage(&c, 1, false);
    let canary = on_version(&status, 2);
    for i in 0..5u8 {
        let coord = if i < 3 { COORD_A } else { COORD_B };
        let _ = c.sign_as(coord, &canary[0], &[1, 2], &[[i; 32]]);
    }
    // The second coordinator's third denial fails the gate; the
    // rollback's commit is lost.
    c.member(1).store().fail_next_commit(Fault::Lost);
    let (_, err) = c
        .sign_as(COORD_B, &canary[0], &[1, 2], &[[5; 32]])
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::PolicyDenied, "the answer stands");
    let status = c.member(1).signer().rollout_status().unwrap();
    assert_eq!(status.phase, Some(Phase::Canary));
    assert!(
        matches!(status.verdict, Some(Verdict::Fail(_))),
        "{status:?}"
    );
    c.advance(std::time::Duration::from_secs(30));
    // The tick's marker purge fails too: the rollback is made all the same.
    c.member(1).store().fail_next_purge(Fault::Lost);
    let err = c.member(1).signer().prune(c.now).unwrap_err();
    assert!(matches!(err, Error::MarkerPurge { .. }), "{err:?}");
    let status = c.member(1).signer().rollout_status().unwrap();
    assert_eq!(status.phase, Some(Phase::RolledBack), "{status:?}");
    assert_eq!(status.since_ms, Some(c.now.0), "rolled back at the tick");
    c.sign(&canary[0], &[1, 2], &[[3; 32]]);
}

#[test]
fn a_step_whose_commit_was_durable_but_unacknowledged_is_seen_at_once() {
    let c = cluster(88);
    stage(&c, 1, true);
    c.member(1).store().fail_next_commit(Fault::Ambiguous);
    let err = c
        .member(1)
        .signer()
        .policy_rollout(c.now, &RolloutCommand::Rollback { expect_seq: None })
        .unwrap_err();
    assert!(matches!(err, RolloutError::Store(_)), "{err:?}");
    // The signer reads the record again: every wallet is back at once.
    let status = c.member(1).signer().rollout_status().unwrap();
    assert_eq!((status.seq, status.phase), (2, Some(Phase::RolledBack)));
    assert_eq!(on_version(&status, 1).len(), WALLETS.len());
    assert!(matches!(
        c.member(1)
            .signer()
            .policy_rollout(c.now, &RolloutCommand::Rollback { expect_seq: None }),
        Err(RolloutError::NotInProgress { .. })
    ));
}

/// Version 1 of every wallet pays [`psbt::external`] and signs raw
/// digests; [`tightened`] no longer pays it.
fn payment_cluster(seed: u64) -> Cluster {
    payment_cluster_of(seed, 2, 3)
}

/// [`payment_cluster`] of `t`-of-`n` wallets.
fn payment_cluster_of(seed: u64, t: u16, n: u16) -> Cluster {
    let mut v1 = psbt::policy();
    v1.allow_raw_digests = true;
    let specs: Vec<Spec> = WALLETS
        .iter()
        .map(|w| Spec::new(w, Keys::Dkg(ScriptTree::KeyPathOnly)).policy(v1.clone()))
        .collect();
    Cluster::with_wallets(seed, t, n, &specs, Limits::default())
}

fn tightened(min_requests: u64) -> RolloutCommand {
    let mut v2 = psbt::policy();
    v2.allow_raw_digests = true;
    v2.destinations = Vec::new();
    v2.version = 2;
    let mut gates = Gates::default();
    gates.min_requests = min_requests;
    RolloutCommand::Stage {
        version: 2,
        policies: WALLETS.iter().map(|w| (wid(w), v2.clone())).collect(),
        gates,
        expect_seq: None,
    }
}

/// Round 2 at member 1, from `coord`, of a payment to
/// [`psbt::external`] (salted apart): the tightened version denies it.
fn pay_external(c: &mut Cluster, coord: u16, wallet: &str, salt: u8) -> Error {
    pay_external_by(c, coord, wallet, salt, &[1, 2])
}

/// [`pay_external`] with the signers at `seats`.
fn pay_external_by(c: &mut Cluster, coord: u16, wallet: &str, salt: u8, seats: &[u16]) -> Error {
    let w = psbt::taproot(c, wallet);
    let payment = psbt::spend(&w, 1, salt);
    let comms = commitments_at(c, coord, wallet, seats);
    let target = thresig_engine::SigningTarget::psbt(payment.serialize());
    let req = c.request_for(wallet, &comms, &psbt::sighashes(&payment), target);
    c.round2_as(1, coord, &req).unwrap_err()
}

/// Round 1 of one input at seats 1 and 2, for `coord`.
fn commitments(c: &mut Cluster, coord: u16, wallet: &str) -> BTreeMap<u16, Vec<Commitment>> {
    commitments_at(c, coord, wallet, &[1, 2])
}

/// Round 1 of one input at `seats`, for `coord`.
fn commitments_at(
    c: &mut Cluster,
    coord: u16,
    wallet: &str,
    seats: &[u16],
) -> BTreeMap<u16, Vec<Commitment>> {
    seats
        .iter()
        .map(|&s| (s, c.round1(s, coord, wallet, 1).unwrap()))
        .collect()
}

fn rollout_of(c: &Cluster) -> RolloutStatus {
    c.member(1).signer().rollout_status().unwrap()
}

#[test]
fn requests_refused_before_the_policy_do_not_count_against_a_canary() {
    let mut c = cluster(90);
    let canary = on_version(&stage(&c, 1, true), 2);
    // Real commitments, but of another wallet: the canary's pool never
    // issued them.
    let other = WALLETS.iter().find(|w| **w != canary[0]).unwrap();
    for i in 0..5u8 {
        let comms = commitments(&mut c, COORD_A, other);
        let req = c.request(&canary[0], &comms, &[[i; 32]]);
        let err = c.round2_as(1, COORD_A, &req).unwrap_err();
        assert_eq!(err.code(), ErrorCode::NonceUnknown);
    }
    let status = rollout_of(&c);
    assert_eq!(status.phase, Some(Phase::Canary), "{status:?}");
    assert_eq!(status.canary.requests, 0, "{status:?}");
}

#[test]
fn replays_of_a_released_request_do_not_hide_denials() {
    let mut c = payment_cluster(91);
    let staged = c.member(1).signer().policy_rollout(c.now, &tightened(1));
    let canary = on_version(&staged.unwrap(), 2);
    for (salt, coord) in [(1u8, COORD_A), (2, COORD_B)] {
        let comms = commitments(&mut c, coord, &canary[0]);
        let released = c.request(&canary[0], &comms, &[[salt; 32]]);
        for _ in 0..20 {
            c.round2_as(1, coord, &released).unwrap();
        }
        let err = pay_external(&mut c, coord, &canary[0], salt);
        assert_eq!(err.code(), ErrorCode::PolicyDenied);
    }
    let status = rollout_of(&c);
    assert_eq!(status.phase, Some(Phase::RolledBack), "{status:?}");
    assert!(
        status.reason.as_deref().unwrap().contains("denial rate"),
        "{status:?}"
    );
}

#[test]
fn one_coordinator_cannot_roll_back_a_tightening_aimed_at_it() {
    let mut c = payment_cluster(92);
    let staged = c.member(1).signer().policy_rollout(c.now, &tightened(3));
    let canary = on_version(&staged.unwrap(), 2);
    for salt in 1..=5u8 {
        let err = pay_external(&mut c, COORD_A, &canary[0], salt);
        assert_eq!(err.code(), ErrorCode::PolicyDenied);
    }
    let status = rollout_of(&c);
    assert_eq!(status.phase, Some(Phase::Canary), "{status:?}");
    assert!(
        !matches!(status.verdict, Some(Verdict::Fail(_)) | Some(Verdict::Pass)),
        "one coordinator's denials neither fail nor pass the gate: {status:?}"
    );
    // A second coordinator seeing the same denials fails it.
    for salt in 6..=8u8 {
        pay_external(&mut c, COORD_B, &canary[0], salt);
    }
    assert_eq!(rollout_of(&c).phase, Some(Phase::RolledBack));
}

/// Deletes member 1's rollout record on its disk, as an attacker would.
fn delete_record(c: &mut Cluster) {
    c.edit_disk(1, |txn| {
        let mut t = txn
            .open_table(redb::TableDefinition::<&[u8], &[u8]>::new("meta"))
            .unwrap();
        t.remove(b"policy-rollout".as_slice()).unwrap();
    });
}

#[test]
fn an_older_or_deleted_rollout_record_is_refused_against_the_audit_log() {
    let name = MetaName::new(b"policy-rollout".to_vec()).unwrap();
    for delete in [false, true] {
        let mut c = cluster(93);
        let canary = on_version(&stage(&c, 1, false), 2);
        let staged = c.member(1).store().meta(&name).unwrap().unwrap();
        c.member(1)
            .signer()
            .policy_rollout(c.now, &RolloutCommand::Rollback { expect_seq: None })
            .unwrap();
        if delete {
            delete_record(&mut c);
        } else {
            // The step-1 record, sealed as the store seals it: it
            // authenticates, but the audit log's last step is the rollback.
            c.member(1)
                .store()
                .write(vec![WriteOp::PutMeta {
                    name: name.clone(),
                    value: staged.to_vec().into(),
                }])
                .unwrap();
        }
        c.restart(1);
        let err = c.member(1).signer().rollout_status().unwrap_err();
        assert_eq!(err.code(), "rollout_replaced", "delete {delete}: {err:?}");
        let (seat, err) = c
            .sign_as(COORD_A, &canary[0], &[1, 2], &[[1; 32]])
            .unwrap_err();
        assert_eq!(seat, 1);
        assert_eq!(err.code(), ErrorCode::StateCorrupt, "delete {delete}");
    }
}

#[test]
fn a_release_racing_a_rollback_never_commits_under_the_rolled_back_version() {
    let mut c = cluster(94);
    let canary = on_version(&stage(&c, 1, true), 2);
    let wallet = canary[0].as_str();
    let comms = commitments(&mut c, COORD_A, wallet);
    let req = c.request(wallet, &comms, &[[5; 32]]);
    let (parked_tx, parked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel();
    c.member(1)
        .store()
        .park_commit(&wid(wallet), parked_tx, release_rx);
    let signer = c.member(1).signer();
    let now = c.now;
    let mut rng = rand_chacha::ChaCha20Rng::clone(&c.rng);
    let raced = std::thread::scope(|scope| {
        let racing = scope.spawn(|| signer.round2(now, coordinator(COORD_A), &req, &mut rng));
        // The canary's round 2 checked its request under version 2 and now
        // waits inside its marker commit.
        parked_rx.recv().unwrap();
        signer
            .policy_rollout(now, &RolloutCommand::Rollback { expect_seq: None })
            .unwrap();
        release_tx.send(()).unwrap();
        racing.join().unwrap()
    });
    let err = raced.unwrap_err();
    assert_eq!(
        err.recovery(),
        thresig_store::Recovery::Retryable,
        "{err:?}"
    );
    let all = events(&c, 1);
    let rolled = all
        .iter()
        .position(|e| matches!(e, AuditEvent::PolicyRolledBack { .. }))
        .unwrap();
    let late = all[rolled..].iter().any(|e| {
        matches!(e, AuditEvent::ShareReleased { policy_version: 2, wallet: w, .. } if w.as_str() == wallet)
    });
    assert!(!late, "a share released under version 2 after its rollback");
    // The byte-identical retry signs under the version now applied.
    c.round2(1, &req).unwrap();
    let versions: Vec<u32> = events(&c, 1)
        .into_iter()
        .filter_map(|e| match e {
            AuditEvent::ShareReleased {
                wallet: w,
                policy_version,
                ..
            } if w.as_str() == wallet => Some(policy_version),
            _ => None,
        })
        .collect();
    assert_eq!(versions, [1]);
}

#[test]
fn a_rollback_waiting_on_its_commit_blocks_no_other_wallet() {
    let mut c = cluster(95);
    let mut policies = version2(false);
    policies.remove(&wid("w7"));
    let command = RolloutCommand::Stage {
        version: 2,
        policies,
        gates: gates(),
        expect_seq: None,
    };
    let staged = c
        .member(1)
        .signer()
        .policy_rollout(c.now, &command)
        .unwrap();
    let canary = on_version(&staged, 2);
    assert!(!canary.contains(&"w7".to_owned()));
    for i in 0..5u8 {
        let coord = if i < 3 { COORD_A } else { COORD_B };
        let _ = c.sign_as(coord, &canary[0], &[1, 2], &[[i; 32]]);
    }
    let prepare = |c: &mut Cluster, coord: u16, wallet: &str, digest: u8| {
        let comms = commitments(c, coord, wallet);
        c.request(wallet, &comms, &[[digest; 32]])
    };
    // The second coordinator's third denial fails the gate.
    let deny = prepare(&mut c, COORD_B, &canary[0], 50);
    let other = prepare(&mut c, COORD_A, "w7", 51);
    let (parked_tx, parked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel();
    c.member(1).store().park_rollout_step(parked_tx, release_rx);
    let signer = c.member(1).signer();
    let now = c.now;
    let mut rng_a = rand_chacha::ChaCha20Rng::clone(&c.rng);
    let mut rng_b = rand_chacha::ChaCha20Rng::clone(&c.rng);
    std::thread::scope(|scope| {
        let failing = scope.spawn(|| signer.round2(now, coordinator(COORD_B), &deny, &mut rng_a));
        // The rollback's commit is parked.
        parked_rx.recv().unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let other = &other;
        let rng_b = &mut rng_b;
        let unrelated = scope.spawn(move || {
            let shares = signer.round2(now, coordinator(COORD_A), other, rng_b);
            let status = signer.status(&wid("w7"));
            done_tx.send(()).unwrap();
            (shares, status)
        });
        // A failure detector only: waiting on the rollback's commit, w7
        // would never finish while it is parked.
        let finished = done_rx.recv_timeout(std::time::Duration::from_secs(60));
        release_tx.send(()).unwrap();
        assert!(finished.is_ok(), "w7 waited for the rollback's commit");
        let (shares, status) = unrelated.join().unwrap();
        shares.unwrap();
        assert_eq!(status.unwrap().policy_version, Some(1));
        let err = failing.join().unwrap().unwrap_err();
        assert_eq!(err.code(), ErrorCode::PolicyDenied);
    });
    assert_eq!(rollout_of(&c).phase, Some(Phase::RolledBack));
}

#[test]
fn promote_waits_for_the_gate_to_judge_unless_forced() {
    let c = cluster(96);
    stage(&c, 1, true);
    let err = promote(&c, 1).unwrap_err();
    assert_eq!(err.code(), "rollout_gate_pending", "{err:?}");
    assert_eq!(err.recovery(), thresig_store::Recovery::Retryable);
    assert_eq!(rollout_of(&c).phase, Some(Phase::Canary));
    let forced = c
        .member(1)
        .signer()
        .policy_rollout(
            c.now,
            &RolloutCommand::Promote {
                expect_seq: None,
                force: true,
            },
        )
        .unwrap();
    assert_eq!(forced.phase, Some(Phase::Ten));
    assert!(
        events(&c, 1)
            .iter()
            .any(|e| matches!(e, AuditEvent::PolicyPromoted { forced: true, .. })),
        "a forced promote is audited as forced"
    );
}

#[test]
fn an_open_with_a_damaged_record_names_no_policy_version() {
    let mut c = cluster(97);
    stage(&c, 1, false);
    c.member(1)
        .store()
        .write(vec![WriteOp::PutMeta {
            name: MetaName::new(b"policy-rollout".to_vec()).unwrap(),
            value: b"{".to_vec().into(),
        }])
        .unwrap();
    c.restart(1);
    c.member(1).signer().0.audit_open(c.now).unwrap();
    let versions = events(&c, 1).into_iter().find_map(|e| match e {
        AuditEvent::Open {
            policy_versions, ..
        } => Some(policy_versions),
        _ => None,
    });
    // No wallet signs under any version: the file's are not what applies.
    assert_eq!(versions, Some(BTreeMap::new()));
}

#[test]
fn a_stored_policy_that_no_longer_validates_stops_only_its_wallet() {
    let mut c = cluster(98);
    let status = stage(&c, 1, true);
    let baseline = on_version(&status, 1);
    let (damaged, healthy) = (&baseline[0], &baseline[1]);
    let name = MetaName::new(b"policy-rollout".to_vec()).unwrap();
    let raw = c.member(1).store().meta(&name).unwrap().unwrap();
    let mut record: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    record["wallets"][damaged.as_str()]["previous"]["destinations"] =
        serde_json::json!(["not an address"]);
    record["seq"] = 2.into();
    let bytes = serde_json::to_vec(&record).unwrap();
    // Written as a step would be, with its audit entry: the record is the
    // one the log names, only its policy no longer validates.
    let hash = thresig_engine::rollout::record_hash(&bytes);
    let entry = AuditEvent::PolicyPromoted {
        seq: 2,
        record: hash.clone(),
        version: 2,
        stage: "canary".to_owned(),
        wallets: Vec::new(),
        forced: false,
    };
    c.member(1)
        .store()
        .write(vec![
            WriteOp::PutMeta {
                name,
                value: bytes.into(),
            },
            WriteOp::PutMeta {
                name: MetaName::new(b"policy-rollout-step".to_vec()).unwrap(),
                value: hash.into_bytes().into(),
            },
            WriteOp::AppendAudit {
                at: c.now,
                entry: serde_json::to_vec(&entry).unwrap(),
            },
        ])
        .unwrap();
    c.restart(1);
    c.sign(healthy, &[1, 2], &[[1; 32]]);
    let (seat, err) = c
        .sign_as(COORD_A, damaged, &[1, 2], &[[2; 32]])
        .unwrap_err();
    assert_eq!((seat, err.code()), (1, ErrorCode::StateCorrupt), "{err:?}");
}

#[test]
fn a_version_number_names_one_policy_for_good() {
    let c = cluster(99);
    stage(&c, 1, false);
    c.member(1)
        .signer()
        .policy_rollout(c.now, &RolloutCommand::Rollback { expect_seq: None })
        .unwrap();
    // Version 2 again, with other content: refused, so that version 2 in
    // the audit log names one policy.
    let command = RolloutCommand::Stage {
        version: 2,
        policies: version2(true),
        gates: gates(),
        expect_seq: None,
    };
    let err = c
        .member(1)
        .signer()
        .policy_rollout(c.now, &command)
        .unwrap_err();
    assert_eq!(err.code(), "rollout_version_reused", "{err:?}");
    // The same content again stages.
    let command = RolloutCommand::Stage {
        version: 2,
        policies: version2(false),
        gates: gates(),
        expect_seq: None,
    };
    c.member(1)
        .signer()
        .policy_rollout(c.now, &command)
        .unwrap();
}

#[test]
fn a_pruned_log_still_binds_the_rollout_record() {
    let mut c = cluster(94);
    let canary = on_version(&stage(&c, 1, true), 2);
    // A share release after the last step: the prune keeps it, and only it.
    c.sign(&canary[0], &[1, 2], &[[7; 32]]);
    c.advance(std::time::Duration::from_secs(2 * 24 * 3600));
    let day = 24 * 3600 * 1000;
    c.member(1)
        .signer()
        .audit_prune(c.now, thresig_store::Timestamp(c.now.0 - day))
        .unwrap();
    delete_record(&mut c);
    let err = c.member(1).signer().rollout_status().unwrap_err();
    assert_eq!(err.code(), "rollout_replaced", "{err:?}");
}

#[test]
fn one_coordinator_cannot_fill_the_window_for_the_others() {
    let mut c = payment_cluster(95);
    let staged = c.member(1).signer().policy_rollout(c.now, &tightened(3));
    let canary = on_version(&staged.unwrap(), 2)[0].clone();
    // Coordinator C (seat 1) sends distinct denied payments with one set
    // of commitments (a denial spends no nonce), past any window.
    let w = psbt::taproot(&c, &canary);
    let comms = commitments(&mut c, 1, &canary);
    for i in 0..=u64::try_from(MAX_COUNTED).unwrap() {
        let input = psbt::funding(&w, 1, 100_000, (i % 256) as u8);
        let payment = psbt::pay_with_fee(&w, &input, Some(psbt::external()), 1_000 + i / 256);
        let target = thresig_engine::SigningTarget::psbt(payment.serialize());
        let req = c.request_for(&canary, &comms, &psbt::sighashes(&payment), target);
        let err = c.round2_as(1, 1, &req).unwrap_err();
        assert_eq!(err.code(), ErrorCode::PolicyDenied);
    }
    assert_eq!(rollout_of(&c).phase, Some(Phase::Canary));
    // A and B's denials still count: the gate fails (and the rollback
    // lets the rest pay).
    for (coord, salts) in [(COORD_A, 1..=5u8), (COORD_B, 6..=10)] {
        for salt in salts {
            if rollout_of(&c).phase == Some(Phase::Canary) {
                pay_external(&mut c, coord, &canary, salt);
            }
        }
    }
    let status = rollout_of(&c);
    assert_eq!(status.phase, Some(Phase::RolledBack), "{status:?}");
}

#[test]
fn an_upgraded_store_does_not_take_an_edited_file_at_once() {
    let mut c = cluster(100);
    // The store as a signer before staged rollouts left it: opens that
    // named each wallet's version, and no rollout record.
    let before = AuditEvent::Open {
        identity: c.member(1).config.identity,
        wallets: WALLETS.len() as u64,
        policy_versions: WALLETS.iter().map(|w| (wid(w), 1)).collect(),
        rollout: None,
    };
    c.member(1)
        .store()
        .write(vec![WriteOp::AppendAudit {
            at: c.now,
            entry: serde_json::to_vec(&before).unwrap(),
        }])
        .unwrap();
    let v2 = version2(true);
    c.restart_with(1, |config| {
        for wallet in &mut config.wallets {
            wallet.policy = v2[&wallet.id].clone();
        }
    });
    // Twice: the refused open must not become the version the next
    // one compares with.
    for _ in 0..2 {
        c.member(1).signer().0.audit_open(c.now).unwrap();
        let status = rollout_of(&c);
        assert!(on_version(&status, 2).is_empty(), "{status:?}");
        let (seat, err) = c
            .sign_as(COORD_A, WALLETS[0], &[1, 2], &[[1; 32]])
            .unwrap_err();
        assert_eq!(
            (seat, err.code()),
            (1, ErrorCode::WalletNotActive),
            "{err:?}"
        );
        c.restart(1);
    }
}

#[test]
fn fewer_coordinators_than_the_threshold_cannot_roll_back_a_tightening() {
    let mut c = payment_cluster_of(96, 3, 4);
    let staged = c.member(1).signer().policy_rollout(c.now, &tightened(3));
    let canary = on_version(&staged.unwrap(), 2)[0].clone();
    let seats = [1, 2, 3];
    let mut salt = 0u8;
    for coord in [COORD_A, COORD_B] {
        for _ in 0..3 {
            salt += 1;
            let err = pay_external_by(&mut c, coord, &canary, salt, &seats);
            assert_eq!(err.code(), ErrorCode::PolicyDenied);
        }
    }
    let status = rollout_of(&c);
    assert_eq!(status.phase, Some(Phase::Canary), "{status:?}");
    assert!(
        matches!(status.verdict, Some(Verdict::Held(_))),
        "{status:?}"
    );
    // The third (t-th) coordinator seeing the denials fails it.
    for _ in 0..3 {
        salt += 1;
        pay_external_by(&mut c, 4, &canary, salt, &seats);
    }
    assert_eq!(rollout_of(&c).phase, Some(Phase::RolledBack));
}
