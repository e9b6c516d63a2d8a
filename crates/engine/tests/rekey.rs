//! The emergency rekey's operator steps on one member: `rekeying`, then
//! `retired`, each durable, idempotent, and refused from the wrong state.

mod common;

use common::psbt::*;
use common::*;
use thresig_crypto::ScriptTree;
use thresig_engine::{
    Error, ErrorCode, Limits, OperatorCommand, Recovery, Transition, WalletEpoch, WalletStateKind,
};
use thresig_store::{KeyEpoch, Store};

/// A 2-of-3 cluster with `old` (active, successor `new`) and `new`.
fn cluster(seed: u64) -> Cluster {
    let specs = [
        Spec::new("old", Keys::Dkg(ScriptTree::KeyPathOnly))
            .policy(policy())
            .successor("new"),
        Spec::new("new", Keys::Dkg(ScriptTree::KeyPathOnly)).policy(policy()),
    ];
    Cluster::with_wallets(seed, 2, 3, &specs, Limits::default())
}

/// Whether member `s` still holds the DKG's key package of `wallet`.
fn holds_share(c: &Cluster, s: u16, wallet: &str) -> bool {
    c.member(s)
        .store()
        .key_package(&wid(wallet), KeyEpoch(1))
        .unwrap()
        .is_some()
}

#[test]
fn a_retire_refused_for_a_wallet_without_a_key_does_not_say_to_rekey_it() {
    let specs = [
        Spec::new("old", Keys::Dkg(ScriptTree::KeyPathOnly))
            .policy(policy())
            .successor("new"),
        Spec::new("new", Keys::None),
    ];
    let c = Cluster::with_wallets(56, 2, 3, &specs, Limits::default());
    let err = c.member(1).signer().retire(&wid("new")).unwrap_err();
    assert!(
        matches!(
            err,
            Error::RetireNotPossible {
                state: WalletStateKind::DkgPending,
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(!text.contains("wallet rekey"), "{text}");
    assert!(text.contains("no key"), "{text}");
    // An active wallet's refusal names the rekey as the step before.
    let text = c
        .member(1)
        .signer()
        .retire(&wid("old"))
        .unwrap_err()
        .to_string();
    assert!(text.contains("thresig wallet rekey"), "{text}");
}

#[test]
fn each_step_is_idempotent_and_reports_whether_it_changed_the_wallet() {
    let c = cluster(51);
    let signer = c.member(1).signer();
    assert_eq!(signer.begin_rekey(&wid("old")).unwrap(), Transition::Done);
    assert_eq!(
        signer.begin_rekey(&wid("old")).unwrap(),
        Transition::Already
    );
    assert_eq!(signer.retire(&wid("old")).unwrap(), Transition::Done);
    assert_eq!(signer.retire(&wid("old")).unwrap(), Transition::Already);
}

#[test]
fn only_a_rekeying_wallet_can_be_retired_and_a_refusal_keeps_its_share() {
    let mut c = cluster(52);
    let old = taproot(&c, "old");
    for s in [1, 2] {
        let err = c.member(s).signer().retire(&wid("old")).unwrap_err();
        assert!(
            matches!(
                err,
                Error::RetireNotPossible {
                    state: WalletStateKind::Active,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.code(), ErrorCode::InvalidRequest);
        assert!(holds_share(&c, s, "old"), "seat {s} keeps its share");
    }
    // Still active: an ordinary spend signs.
    let psbt = spend(&old, 1, 1);
    let (req, _) = psbt_request(&mut c, "old", &[1, 2], &psbt.serialize(), &sighashes(&psbt));
    c.round2(1, &req).unwrap();
}

#[test]
fn a_retired_wallet_refuses_everything_and_its_share_is_gone_after_a_restart() {
    let mut c = cluster(53);
    for s in [1, 2, 3] {
        let rekeyed = c
            .member(s)
            .signer()
            .operate(c.now, &OperatorCommand::BeginRekey { wallet: wid("old") })
            .unwrap();
        assert_eq!(rekeyed.transition, Transition::Done);
        assert_eq!(rekeyed.status.state, WalletStateKind::Rekeying);
        assert_eq!(rekeyed.status.epoch, Some(WalletEpoch::INITIAL));
        let retired = c
            .member(s)
            .signer()
            .operate(c.now, &OperatorCommand::Retire { wallet: wid("old") })
            .unwrap();
        assert_eq!(retired.status.state, WalletStateKind::Retired);
        assert_eq!(retired.status.output_key, None, "no key held any more");
    }
    c.restart(1);
    for s in [1, 2, 3] {
        let status = c.member(s).signer().status(&wid("old")).unwrap();
        assert_eq!(status.state, WalletStateKind::Retired, "durable at {s}");
        assert!(!holds_share(&c, s, "old"), "seat {s}'s share is deleted");
        assert!(holds_share(&c, s, "new"), "the successor's share stays");
        let err = c.round1(s, 2, "old", 1).unwrap_err();
        assert_eq!(err.code(), ErrorCode::WalletRetired, "{err:?}");
        let err = c.member(s).signer().begin_rekey(&wid("old")).unwrap_err();
        assert!(matches!(err, Error::RekeyNotPossible { .. }), "{err:?}");
    }
    // The successor is untouched and signs on its own.
    let new = taproot(&c, "new");
    let psbt = spend(&new, 1, 2);
    let (req, _) = psbt_request(&mut c, "new", &[1, 3], &psbt.serialize(), &sighashes(&psbt));
    c.round2(3, &req).unwrap();
}

/// Asserts `err` is the retryable store error of a failed operator step.
fn assert_retryable_store_error(err: &Error) {
    assert!(matches!(err, Error::Store { .. }), "{err:?}");
    assert_eq!(err.recovery(), Recovery::Retryable, "{err:?}");
}

#[test]
fn a_rekey_whose_commit_is_not_acknowledged_refuses_ordinary_spends_until_retried() {
    for fault in [Fault::Ambiguous, Fault::Lost] {
        let mut c = cluster(54);
        let old = taproot(&c, "old");
        c.member(1).store().fail_next_record_write(fault);
        let err = c.member(1).signer().begin_rekey(&wid("old")).unwrap_err();
        assert_retryable_store_error(&err);
        // The commit may be durable (as after a witness write failure): the
        // member already acts as rekeying, as its store may say.
        let status = c.member(1).signer().status(&wid("old")).unwrap();
        assert_eq!(status.state, WalletStateKind::Rekeying, "{fault:?}");
        let psbt = spend(&old, 1, 1);
        let (req, _) = psbt_request(&mut c, "old", &[1, 2], &psbt.serialize(), &sighashes(&psbt));
        let err = c.round2(1, &req).unwrap_err();
        assert_eq!(err.code(), ErrorCode::RekeyInProgress, "{fault:?}: {err:?}");
        // The retry commits (it is not answered from memory), and the
        // restarted member finds the wallet rekeying.
        assert_eq!(
            c.member(1).signer().begin_rekey(&wid("old")).unwrap(),
            Transition::Done,
            "{fault:?}"
        );
        c.restart(1);
        let status = c.member(1).signer().status(&wid("old")).unwrap();
        assert_eq!(status.state, WalletStateKind::Rekeying, "{fault:?}");
    }
}

#[test]
fn a_retire_whose_commit_is_not_acknowledged_drops_the_share_until_retried() {
    for fault in [Fault::Ambiguous, Fault::Lost] {
        let mut c = cluster(55);
        c.member(1).signer().begin_rekey(&wid("old")).unwrap();
        c.member(1).store().fail_next_record_write(fault);
        let err = c.member(1).signer().retire(&wid("old")).unwrap_err();
        assert_retryable_store_error(&err);
        let status = c.member(1).signer().status(&wid("old")).unwrap();
        assert_eq!(status.state, WalletStateKind::Retired, "{fault:?}");
        let err = c.round1(1, 2, "old", 1).unwrap_err();
        assert_eq!(err.code(), ErrorCode::WalletRetired, "{fault:?}: {err:?}");
        // The retry commits, so the key package is deleted even when the
        // first commit was lost.
        assert_eq!(
            c.member(1).signer().retire(&wid("old")).unwrap(),
            Transition::Done,
            "{fault:?}"
        );
        assert!(!holds_share(&c, 1, "old"), "{fault:?}");
    }
}

#[test]
fn the_operator_command_wire_form_names_its_step_and_wallet() {
    let command: OperatorCommand = serde_json::from_str(r#"{"retire":{"wallet":"old"}}"#).unwrap();
    assert_eq!(command, OperatorCommand::Retire { wallet: wid("old") });
    assert_eq!(command.wallet(), &wid("old"));
    assert!(serde_json::from_str::<OperatorCommand>(r#"{"retire":{"wallet":"o","x":1}}"#).is_err());
    assert!(serde_json::from_str::<OperatorCommand>(r#"{"retire":{"wallet":""}}"#).is_err());
}
