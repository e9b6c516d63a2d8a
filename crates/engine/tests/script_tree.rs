//! Script-tree wallets: the DKG commits the wallet's key to the script tree
//! its configuration names, the signers sign key-path spends under that
//! tweak, and a configuration naming another tree than the key record
//! cannot change the key: the wallet refuses to sign.

mod common;

use bitcoin::hashes::Hash as _;
use common::dkg::*;
use common::*;
use thresig_crypto::{MerkleRoot, ScriptTree, taproot_output_key};
use thresig_engine::{Error, ErrorCode, Limits, WalletStateKind};

const ROOT: ScriptTree = ScriptTree::Root(MerkleRoot([0x3c; 32]));

/// Restarts every member with `wallet` naming `tree` in its configuration.
fn configure(c: &mut Cluster, wallet: &str, tree: ScriptTree) {
    for s in 1..=3 {
        configure_one(c, s, wallet, tree);
    }
}

/// Restarts member `s` with `wallet` naming `tree` in its configuration.
fn configure_one(c: &mut Cluster, s: u16, wallet: &str, tree: ScriptTree) {
    let config = &mut c.members[usize::from(s) - 1].config;
    let w = config
        .wallets
        .iter_mut()
        .find(|w| w.id == wid(wallet))
        .unwrap();
    w.script_tree = tree;
    c.restart(s);
}

#[test]
fn a_dkg_commits_the_key_to_the_configured_tree_and_signs_under_its_tweak() {
    let mut c = Cluster::unkeyed(61, 2, 3, &["w"]);
    configure(&mut c, "w", ROOT);
    let confirmations = through_part3(&mut c, "w", 1);
    for s in 1..=3 {
        assert!(deliver(&c, s, "w", &confirmations));
    }
    let key = c.member(1).signer().wallet_key(&wid("w")).unwrap();
    assert_eq!(key.script_tree(), ROOT);
    assert_eq!(
        key.output_key(),
        taproot_output_key(&key.internal_key(), &ROOT).unwrap(),
        "the output key is the internal key tweaked with the root"
    );
    assert_ne!(
        key.output_key(),
        taproot_output_key(&key.internal_key(), &ScriptTree::KeyPathOnly).unwrap()
    );
    // Aggregated and verified under the tweaked output key by the harness.
    c.keys.insert(wid("w"), key);
    assert_eq!(c.sign("w", &[1, 2], &[[4; 32]]).len(), 1);
}

#[test]
fn a_configuration_naming_another_tree_than_the_record_refuses_to_sign() {
    let specs = [Spec::new("w", Keys::Dkg(ROOT))];
    let mut c = Cluster::with_wallets(62, 2, 3, &specs, Limits::default());
    for other in [
        ScriptTree::KeyPathOnly,
        ScriptTree::Root(MerkleRoot([1; 32])),
    ] {
        configure(&mut c, "w", other);
        let status = c.member(2).signer().status(&wid("w")).unwrap();
        assert_eq!(status.state, WalletStateKind::Corrupt);
        let err = c.round1(2, COORD_A, "w", 1).unwrap_err();
        assert!(matches!(err, Error::ScriptTreeMismatch { .. }), "{err:?}");
        assert_eq!(err.code(), ErrorCode::WalletCorrupt);
        let text = err.to_string();
        assert!(
            text.contains(&"3c".repeat(32)),
            "names the recorded root: {text}"
        );
    }
    // The configuration restored, the wallet signs again.
    configure(&mut c, "w", ROOT);
    assert_eq!(c.sign("w", &[2, 3], &[[5; 32]]).len(), 1);
}

#[test]
fn an_unconfirmed_dkg_under_a_mistyped_root_can_be_aborted_once_the_root_is_corrected() {
    let mut c = Cluster::unkeyed(64, 2, 3, &["w"]);
    configure(&mut c, "w", ROOT);
    let typo = ScriptTree::Root(MerkleRoot([0x3d; 32]));
    configure_one(&mut c, 3, "w", typo);
    let confirmations = through_part3(&mut c, "w", 1);
    for s in 1..=3 {
        let signer = c.member(s).signer();
        let refused = confirmations
            .iter()
            .any(|m| signer.dkg_confirm(&wid("w"), m).is_err());
        assert!(refused, "seat {s}: the members' keys differ");
    }
    // Member 3's operator corrects the root and restarts: the unconfirmed
    // result under the typo signs nothing, and the operator can abort it.
    configure_one(&mut c, 3, "w", ROOT);
    let err = c.round1(3, COORD_A, "w", 1).unwrap_err();
    assert_eq!(err.code(), ErrorCode::WalletCorrupt, "{err:?}");
    assert!(err.to_string().contains("abort"), "says what to do: {err}");
    for s in 1..=3 {
        c.member(s)
            .signer()
            .dkg_abort(&wid("w"), thresig_engine::DkgSessionId([1; 32]))
            .unwrap();
        assert_eq!(state(&c, s, "w"), WalletStateKind::DkgPending, "seat {s}");
    }
    let confirmations = through_part3(&mut c, "w", 2);
    for s in 1..=3 {
        assert!(deliver(&c, s, "w", &confirmations), "seat {s}");
    }
    let key = c.member(3).signer().wallet_key(&wid("w")).unwrap();
    assert_eq!(key.script_tree(), ROOT);
}

#[test]
fn a_psbt_naming_another_merkle_root_than_the_record_is_refused() {
    let specs = [Spec::new("w", Keys::Dkg(ROOT)).policy(common::psbt::policy())];
    let mut c = Cluster::with_wallets(63, 2, 3, &specs, Limits::default());
    let wallet = common::psbt::taproot(&c, "w");
    let psbt = common::psbt::spend(&wallet, 1, 1);
    let mut raw = bitcoin::Psbt::deserialize(&psbt.serialize()).unwrap();
    assert!(
        raw.inputs[0].tap_merkle_root.is_some(),
        "built with the root"
    );
    raw.inputs[0].tap_merkle_root = Some(bitcoin::taproot::TapNodeHash::from_byte_array([1; 32]));
    let messages = common::psbt::sighashes(&psbt);
    let (req, _) = common::psbt::psbt_request(&mut c, "w", &[1, 2], &raw.serialize(), &messages);
    let err = c.round2(1, &req).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Transaction {
                source: thresig_tx::Error::TaprootFieldMismatch {
                    input: thresig_tx::InputIndex(0),
                    field: thresig_tx::TaprootField::MerkleRoot,
                },
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.code(), ErrorCode::InvalidRequest);
    // The same PSBT with the record's root signs.
    let (req, _) = common::psbt::psbt_request(&mut c, "w", &[1, 2], &psbt.serialize(), &messages);
    c.round2(1, &req).unwrap();
}
