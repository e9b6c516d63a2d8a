//! Building, parsing and validating PSBTs, and robustness against arbitrary input.

mod common;

use bitcoin::absolute::LockTime;
use bitcoin::hashes::Hash;
use bitcoin::psbt::{Psbt, PsbtSighashType};
use bitcoin::transaction::Version;
use bitcoin::{Address, Amount, OutPoint, ScriptBuf, Transaction, TxIn, TxOut, Witness};
use common::{funding, root, sign_all, wallet};
use proptest::prelude::*;
use thresig_tx::{
    ChargeLog, Destination, Error, InputIndex, Network, Payment, Policy, TaprootField,
    TaprootWallet, UnixTime, WalletMode, WalletPsbt, build_psbt,
};

fn to_self(w: &TaprootWallet, sat: u64) -> Payment {
    Payment {
        destination: Destination::Script(w.script_pubkey().clone()),
        value: Amount::from_sat(sat),
    }
}

fn two_inputs(w: &TaprootWallet) -> WalletPsbt {
    build_psbt(
        w,
        &funding(w, 2, Amount::from_sat(50_000)),
        &[to_self(w, 99_000)],
        LockTime::ZERO,
    )
    .unwrap()
}

fn reparse(
    psbt: &WalletPsbt,
    w: &TaprootWallet,
    f: impl FnOnce(&mut Psbt),
) -> Result<WalletPsbt, Error> {
    let mut raw = psbt.psbt().clone();
    f(&mut raw);
    WalletPsbt::from_bytes(&raw.serialize(), w)
}

#[test]
fn built_psbt_carries_bip371_fields_and_round_trips() {
    let (w, _) = wallet(1, Some(root(5)));
    let psbt = two_inputs(&w);
    for input in &psbt.psbt().inputs {
        assert_eq!(input.tap_internal_key, Some(w.internal_key()));
        assert_eq!(input.tap_merkle_root, Some(root(5)));
        assert_eq!(
            input.witness_utxo.as_ref().unwrap().script_pubkey,
            *w.script_pubkey()
        );
    }
    assert_eq!(
        psbt.psbt().outputs[0].tap_internal_key,
        Some(w.internal_key()),
        "change is marked"
    );
    assert_eq!(psbt.fee(), Amount::from_sat(1_000));
    assert_eq!(psbt.wallet_inputs(), &[InputIndex(0), InputIndex(1)]);
    assert_eq!(
        WalletPsbt::from_base64(&psbt.to_base64(), &w).unwrap(),
        psbt
    );
    assert_eq!(WalletPsbt::from_bytes(&psbt.serialize(), &w).unwrap(), psbt);
}

#[test]
fn estimated_vsize_is_the_signed_size() {
    for (n, ty) in [
        (1, None),
        (3, None),
        (2, Some(bitcoin::TapSighashType::All)),
    ] {
        let (w, signer) = wallet(2, None);
        let built = build_psbt(
            &w,
            &funding(&w, n, Amount::from_sat(10_000)),
            &[to_self(&w, 9_000)],
            LockTime::ZERO,
        )
        .unwrap();
        let mut psbt = reparse(&built, &w, |p| {
            p.inputs
                .iter_mut()
                .for_each(|i| i.sighash_type = ty.map(Into::into))
        })
        .unwrap();
        let estimate = psbt.estimated_vsize();
        sign_all(&mut psbt, &signer);
        let tx = psbt.extract_transaction().unwrap();
        assert_eq!(
            estimate,
            u64::try_from(tx.vsize()).unwrap(),
            "{n} inputs, {ty:?}"
        );
    }
}

#[test]
fn malformed_or_incomplete_psbts_are_refused_with_typed_errors() {
    let (w, _) = wallet(3, Some(root(1)));
    let psbt = two_inputs(&w);
    let p2wpkh = ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([9; 20]));
    type Case = (&'static str, Result<WalletPsbt, Error>, fn(&Error) -> bool);
    let cases: Vec<Case> = vec![
        (
            "missing witness_utxo",
            reparse(&psbt, &w, |p| p.inputs[1].witness_utxo = None),
            |e| {
                matches!(
                    e,
                    Error::MissingWitnessUtxo {
                        input: InputIndex(1)
                    }
                )
            },
        ),
        (
            "non-Taproot input claimed for our key",
            reparse(&psbt, &w, |p| {
                p.inputs[0].witness_utxo.as_mut().unwrap().script_pubkey = p2wpkh.clone()
            }),
            |e| {
                matches!(
                    e,
                    Error::NonTaprootInput {
                        input: InputIndex(0),
                        ..
                    }
                )
            },
        ),
        (
            "another merkle root",
            reparse(&psbt, &w, |p| p.inputs[1].tap_merkle_root = Some(root(2))),
            |e| {
                matches!(
                    e,
                    Error::TaprootFieldMismatch {
                        input: InputIndex(1),
                        field: TaprootField::MerkleRoot
                    }
                )
            },
        ),
        (
            "another internal key on our script",
            reparse(&psbt, &w, |p| {
                p.inputs[0].tap_internal_key = Some(wallet(4, None).0.internal_key())
            }),
            |e| {
                matches!(
                    e,
                    Error::TaprootFieldMismatch {
                        input: InputIndex(0),
                        field: TaprootField::InternalKey
                    }
                )
            },
        ),
        (
            "invalid sighash type",
            reparse(&psbt, &w, |p| {
                p.inputs[0].sighash_type = Some(PsbtSighashType::from_u32(4))
            }),
            |e| {
                matches!(
                    e,
                    Error::InvalidSighashType {
                        input: InputIndex(0),
                        value: 4
                    }
                )
            },
        ),
        (
            "SINGLE without an output",
            reparse(&psbt, &w, |p| {
                p.inputs[1].sighash_type = Some(bitcoin::TapSighashType::Single.into())
            }),
            |e| {
                matches!(
                    e,
                    Error::SingleWithoutOutput {
                        input: InputIndex(1)
                    }
                )
            },
        ),
        (
            "not our PSBT",
            WalletPsbt::from_bytes(&psbt.serialize(), &wallet(4, None).0),
            |e| matches!(e, Error::NoWalletInputs),
        ),
        (
            "not base64",
            WalletPsbt::from_base64("cHNidP8!!", &w),
            |e| matches!(e, Error::PsbtText { .. }),
        ),
        (
            "not a PSBT",
            WalletPsbt::from_bytes(b"psbt\xff\x00", &w),
            |e| matches!(e, Error::PsbtDecode { .. }),
        ),
        (
            "outputs exceed inputs",
            build_psbt(
                &w,
                &funding(&w, 1, Amount::from_sat(1_000)),
                &[to_self(&w, 1_001)],
                LockTime::ZERO,
            ),
            |e| matches!(e, Error::OutputsExceedInputs { .. }),
        ),
        (
            "mainnet destination on regtest",
            build_psbt(
                &w,
                &funding(&w, 1, Amount::from_sat(1_000)),
                &[Payment {
                    destination: Destination::Address(
                        Network::Bitcoin
                            .parse_address(
                                "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0",
                            )
                            .unwrap(),
                    ),
                    value: Amount::from_sat(500),
                }],
                LockTime::ZERO,
            ),
            |e| {
                matches!(
                    e,
                    Error::WrongNetwork {
                        network: Network::Regtest,
                        ..
                    }
                )
            },
        ),
        (
            "input of another wallet",
            build_psbt(
                &w,
                &funding(&wallet(4, None).0, 1, Amount::from_sat(1_000)),
                &[to_self(&w, 500)],
                LockTime::ZERO,
            ),
            |e| {
                matches!(
                    e,
                    Error::InputNotWallet {
                        input: InputIndex(0)
                    }
                )
            },
        ),
        (
            "no inputs",
            build_psbt(&w, &[], &[to_self(&w, 500)], LockTime::ZERO),
            |e| matches!(e, Error::NoInputs),
        ),
        (
            "no outputs",
            build_psbt(
                &w,
                &funding(&w, 1, Amount::from_sat(1_000)),
                &[],
                LockTime::ZERO,
            ),
            |e| matches!(e, Error::NoOutputs),
        ),
    ];
    for (name, result, is_expected) in cases {
        let err = result.unwrap_err();
        assert!(is_expected(&err), "{name}: {err:?}");
        assert!(!err.is_retryable(), "{name}");
    }
}

/// A PSBT spending a real previous transaction, with `non_witness_utxo`.
fn with_previous_tx(w: &TaprootWallet, stated: u64) -> Result<WalletPsbt, Error> {
    let prev = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn::default()],
        output: vec![TxOut {
            value: Amount::from_sat(70_000),
            script_pubkey: w.script_pubkey().clone(),
        }],
    };
    let built = build_psbt(
        w,
        &[thresig_tx::SpendInput {
            outpoint: OutPoint {
                txid: prev.compute_txid(),
                vout: 0,
            },
            value: Amount::from_sat(stated),
            script_pubkey: w.script_pubkey().clone(),
        }],
        &[to_self(w, 10_000)],
        LockTime::ZERO,
    )?;
    reparse(&built, w, |p| p.inputs[0].non_witness_utxo = Some(prev))
}

#[test]
fn stated_prevout_must_agree_with_the_previous_transaction() {
    let (w, _) = wallet(5, None);
    with_previous_tx(&w, 70_000).unwrap();
    assert!(matches!(
        with_previous_tx(&w, 80_000),
        Err(Error::PrevoutMismatch {
            input: InputIndex(0)
        })
    ));
    // A previous transaction that is not the one the outpoint names.
    let ok = with_previous_tx(&w, 70_000).unwrap();
    let err = reparse(&ok, &w, |p| {
        p.inputs[0].non_witness_utxo.as_mut().unwrap().lock_time = LockTime::from_consensus(1)
    })
    .unwrap_err();
    assert!(matches!(
        err,
        Error::PrevoutMismatch {
            input: InputIndex(0)
        }
    ));
}

#[test]
fn foreign_inputs_are_not_signed_and_must_come_final() {
    let (w, signer) = wallet(6, None);
    let (other, other_signer) = wallet(7, None);
    let mut raw = two_inputs(&w).psbt().clone();
    // Input 1 becomes another party's (as in a payjoin).
    raw.inputs[1].witness_utxo.as_mut().unwrap().script_pubkey = other.script_pubkey().clone();
    raw.inputs[1].tap_internal_key = None;
    raw.inputs[1].tap_merkle_root = None;
    let mut psbt = WalletPsbt::from_psbt(raw, &w).unwrap();
    assert_eq!(psbt.wallet_inputs(), &[InputIndex(0)]);
    sign_all(&mut psbt, &signer);
    assert!(matches!(
        psbt.clone().finalize(),
        Err(Error::MissingSignature {
            input: InputIndex(1)
        })
    ));
    // The other party finalizes its input; then the whole transaction is valid.
    let theirs = psbt
        .sighash(InputIndex(1), bitcoin::TapSighashType::Default)
        .unwrap();
    let sig = common::KeySpendSigner::sign(&other_signer, &theirs);
    let mut raw = psbt.psbt().clone();
    raw.inputs[1].final_script_witness = Some(Witness::from_slice(&[sig]));
    let psbt = WalletPsbt::from_psbt(raw, &w).unwrap();
    let prevouts = psbt.prevouts().to_vec();
    let tx = psbt.extract_transaction().unwrap();
    common::verify_with_core(&tx, &prevouts).unwrap();
}

fn address_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("bcrt1pmr7jx4tupxtqkhwk5e8vzn3jsa7sw0cukmpdjtluua4x7wvmwgjqecez5y".to_owned()),
        Just("bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0".to_owned()),
        "[a-z0-9]{0,64}",
    ]
}

fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        any::<bool>().prop_map(|v| v.to_string()),
        "\"[ -~]{0,12}\"",
        prop::collection::vec(
            prop_oneof![
                "\"default\"",
                "\"all\"",
                "\"none\"",
                "\"p2tr\"",
                "\"x\"",
                "1"
            ],
            0..4
        )
        .prop_map(|v| format!("[{}]", v.join(", "))),
        prop::collection::vec(address_strategy(), 0..3).prop_map(|v| format!(
            "[{}]",
            v.iter()
                .map(|a| format!("\"{a}\""))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        (
            "[0-9:]{0,6}",
            "[0-9:]{0,6}",
            prop::collection::vec(prop_oneof!["\"mon\"", "\"sun\"", "\"xyz\""], 0..3)
        )
            .prop_map(|(s, e, d)| format!(
                "[{{ days = [{}], start = \"{s}\", end = \"{e}\" }}]",
                d.join(", ")
            )),
    ]
}

fn toml_key() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "version",
        "sighash_types",
        "output_script_types",
        "destinations",
        "max_output_sat",
        "max_tx_sat",
        "max_fee_sat",
        "max_fee_rate_sat_vb",
        "time_windows",
        "max_per_minute",
        "max_per_day",
        "allow_raw_digests",
        "unknown",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), magic in any::<bool>()) {
        let (w, _) = wallet(1, None);
        let mut input = if magic { b"psbt\xff".to_vec() } else { Vec::new() };
        input.extend_from_slice(&bytes);
        prop_assert!(WalletPsbt::from_bytes(&input, &w).is_err());
    }

    #[test]
    fn corrupted_psbts_never_panic(pos in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<bool>()) {
        let (w, _) = wallet(1, None);
        let mut bytes = two_inputs(&w).serialize();
        let i = pos.index(bytes.len());
        if cut { bytes.truncate(i) } else { bytes[i] ^= byte }
        if let Ok(psbt) = WalletPsbt::from_bytes(&bytes, &w) {
            // Whatever parses must be usable without panicking.
            let _ = psbt.wallet_sighashes();
            let _ = psbt.estimated_vsize();
            let policy = Policy::from_toml("", Network::Regtest).unwrap();
            let _ = policy.evaluate(&psbt, &WalletMode::Active, UnixTime(0), &ChargeLog::new());
        }
    }

    #[test]
    fn arbitrary_text_as_psbt_never_panics(text in "[ -~]{0,256}") {
        let (w, _) = wallet(1, None);
        prop_assert!(WalletPsbt::from_base64(&text, &w).is_err());
    }

    #[test]
    fn arbitrary_policy_text_never_panics(text in "[ -~\n]{0,256}") {
        let _ = Policy::from_toml(&text, Network::Regtest);
    }

    #[test]
    fn near_valid_policy_tables_never_panic(lines in prop::collection::vec((toml_key(), toml_value()), 0..6)) {
        let text: String = lines.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        match Policy::from_toml(&text, Network::Regtest) {
            Ok(policy) => prop_assert!(policy.version().0 >= 1),
            Err(e) => prop_assert!(matches!(e, Error::PolicyConfig(_))),
        }
    }
}

// Address parsing is the same for policy destinations and payments.
#[test]
fn regtest_addresses_parse_only_on_regtest() {
    let (w, _) = wallet(1, None);
    let text = w.address().to_string();
    assert_eq!(Network::Regtest.parse_address(&text).unwrap(), w.address());
    assert!(matches!(
        Network::Testnet.parse_address(&text),
        Err(Error::WrongNetwork { .. })
    ));
    let _: Address = Network::Regtest.parse_address(&text).unwrap();
}
