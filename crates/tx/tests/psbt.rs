//! Building, parsing and validating PSBTs against a wallet.

mod common;

use bitcoin::absolute::LockTime;
use bitcoin::hashes::Hash;
use bitcoin::psbt::{Psbt, PsbtSighashType};
use bitcoin::transaction::Version;
use bitcoin::{Address, Amount, OutPoint, ScriptBuf, Transaction, TxIn, TxOut, Txid, Witness};
use common::{funding, root, sign_all, wallet};
use thresig_tx::{
    AmountOf, Destination, Error, InputIndex, MAX_INPUTS, MAX_OUTPUTS, MAX_STANDARD_WEIGHT,
    Network, OutputIndex, Payment, SpendInput, TaprootField, TaprootWallet, WalletPsbt, build_psbt,
    key_spend_sighash,
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
        assert!(!err.lifts_with_time(), "{name}");
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

/// `n` wallet outputs of 1 000 sat each, spent to the wallet itself.
fn n_inputs(w: &TaprootWallet, n: usize) -> Psbt {
    let inputs: Vec<SpendInput> = (0..n)
        .map(|i| SpendInput {
            outpoint: OutPoint {
                txid: Txid::all_zeros(),
                vout: u32::try_from(i).unwrap(),
            },
            value: Amount::from_sat(1_000),
            script_pubkey: w.script_pubkey().clone(),
        })
        .collect();
    let tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: inputs
            .iter()
            .map(|i| TxIn {
                previous_output: i.outpoint,
                ..TxIn::default()
            })
            .collect(),
        output: vec![TxOut {
            value: Amount::from_sat(1_000),
            script_pubkey: w.script_pubkey().clone(),
        }],
    };
    let mut raw = Psbt::from_unsigned_tx(tx).unwrap();
    for (input, spend) in raw.inputs.iter_mut().zip(&inputs) {
        input.witness_utxo = Some(TxOut {
            value: spend.value,
            script_pubkey: spend.script_pubkey.clone(),
        });
    }
    raw
}

/// The minimum sizes the fee-rate estimate counts for inputs of other
/// parties, whatever final fields the PSBT carries; and for a transaction of
/// wallet inputs only, the estimate is exactly the signed size.
#[test]
fn estimated_vsize_ignores_final_fields_and_counts_minimum_foreign_spends() {
    let (w, _) = wallet(40, None);
    let p2wpkh = ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([3; 20]));
    let p2pkh = ScriptBuf::new_p2pkh(&bitcoin::PubkeyHash::from_byte_array([4; 20]));
    let p2sh = ScriptBuf::new_p2sh(&bitcoin::ScriptHash::from_byte_array([5; 20]));
    let p2wsh = ScriptBuf::new_p2wsh(&bitcoin::WScriptHash::from_byte_array([6; 32]));
    let p2tr = wallet(41, None).0.script_pubkey().clone();
    let base = two_inputs(&w);
    // Weights from the serialization format: version, lock time and the two
    // counts (10 bytes), segwit marker and flag (2 WU), one 43-byte output,
    // a wallet input of 41 bytes with a 64-byte key-path witness (1 + 1 + 64).
    let fixed_wu = 4 * 10 + 2 + 4 * 43 + (4 * 41 + 66);
    assert_eq!(
        base.estimated_vsize(),
        u64::div_ceil(fixed_wu + 4 * 41 + 66, 4)
    );
    // The foreign input: 41 bytes plus its scriptSig, and its witness.
    for (script, script_sig_len, witness_wu) in [
        (ScriptBuf::from_bytes(vec![0x51]), 0, 1),
        // Script path: count, empty leaf script (of an unknown leaf
        // version, which always succeeds), 33-byte control block.
        (p2tr, 0, 1 + 1 + (1 + 33)),
        // Count, 9-byte signature, 33-byte key.
        (p2wpkh, 0, 1 + (1 + 9) + (1 + 33)),
        // Count, 1-byte witness script.
        (p2wsh, 0, 1 + (1 + 1)),
        // A scriptSig pushing a 1-byte redeem script.
        (p2sh, 2, 1),
        // A scriptSig pushing a 9-byte signature and a 33-byte key.
        (p2pkh, 1 + 9 + 1 + 33, 1),
    ] {
        let estimate = |pad: bool| {
            reparse(&base, &w, |p| {
                p.inputs[1].witness_utxo.as_mut().unwrap().script_pubkey = script.clone();
                p.inputs[1].tap_internal_key = None;
                p.inputs[1].tap_merkle_root = None;
                if pad {
                    p.inputs[1].final_script_witness =
                        Some(Witness::from_slice(&[vec![0u8; 20_000]]));
                    p.inputs[1].final_script_sig = Some(ScriptBuf::from_bytes(vec![0; 9_000]));
                    p.inputs[0].final_script_sig = Some(ScriptBuf::from_bytes(vec![0; 9_000]));
                }
            })
            .unwrap()
            .estimated_vsize()
        };
        assert_eq!(estimate(true), estimate(false), "{script:?}");
        let expected = fixed_wu + 4 * (41 + script_sig_len) + witness_wu;
        assert_eq!(estimate(false), expected.div_ceil(4), "{script:?}");
    }
}

#[test]
fn the_sighashes_of_all_inputs_come_from_one_cache_and_match_each_alone() {
    let (w, _) = wallet(42, None);
    let psbt = WalletPsbt::from_psbt(n_inputs(&w, 50), &w).unwrap();
    let all = psbt.wallet_sighashes().unwrap();
    assert_eq!(all.len(), 50);
    for s in &all {
        let alone = key_spend_sighash(psbt.unsigned_tx(), psbt.prevouts(), s.input, s.sighash_type)
            .unwrap();
        assert_eq!(*s, alone);
    }
}

/// Oversized transactions are refused with typed errors before any sighash
/// is computed: too many inputs, too many outputs, too heavy.
#[test]
fn oversized_transactions_are_refused_before_any_sighash() {
    let (w, _) = wallet(43, None);
    let too_many = n_inputs(&w, MAX_INPUTS + 1);
    assert!(matches!(
        WalletPsbt::from_psbt(too_many, &w),
        Err(Error::TooManyInputs { inputs, max }) if inputs == MAX_INPUTS + 1 && max == MAX_INPUTS
    ));
    let mut outputs = n_inputs(&w, 1);
    let out = outputs.unsigned_tx.output[0].clone();
    outputs.unsigned_tx.output = vec![
        TxOut {
            value: Amount::ZERO,
            ..out
        };
        MAX_OUTPUTS + 1
    ];
    outputs.outputs = vec![Default::default(); MAX_OUTPUTS + 1];
    assert!(matches!(
        WalletPsbt::from_psbt(outputs, &w),
        Err(Error::TooManyOutputs { outputs, max }) if outputs == MAX_OUTPUTS + 1 && max == MAX_OUTPUTS
    ));
    // 1 800 key-path inputs weigh about 1 800 x 230 WU > 400 000 WU; 1 700 do not.
    assert!(WalletPsbt::from_psbt(n_inputs(&w, 1_700), &w).is_ok());
    assert!(matches!(
        WalletPsbt::from_psbt(n_inputs(&w, 1_800), &w),
        Err(Error::TooHeavy { weight, max }) if weight > max && max == MAX_STANDARD_WEIGHT
    ));
}

/// Sighash cost is linear in the number of inputs: four times the inputs
/// cost about four times the time (quadratic would be sixteen). A timing
/// ratio depends on the machine's load, so this runs only on demand:
/// `cargo test -p thresig-tx --test psbt -- --ignored sighash_cost`.
#[test]
#[ignore = "timing measurement; run on demand"]
fn sighash_cost_is_linear_in_the_number_of_inputs() {
    let (w, _) = wallet(44, None);
    let time = |n: usize| {
        let psbt = WalletPsbt::from_psbt(n_inputs(&w, n), &w).unwrap();
        (0..5)
            .map(|_| {
                let start = std::time::Instant::now();
                assert_eq!(psbt.wallet_sighashes().unwrap().len(), n);
                start.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min)
    };
    let (small, big) = (time(400), time(1_600));
    let ratio = big / small;
    eprintln!("400 inputs: {small:.4} s; 1600 inputs: {big:.4} s; ratio {ratio:.1}");
    assert!(ratio < 9.0, "4x the inputs cost {ratio:.1}x the time");
}

#[test]
fn a_psbt_spending_one_outpoint_twice_is_refused() {
    let (w, _) = wallet(45, None);
    let one = funding(&w, 1, Amount::from_sat(100_000));
    let twice = vec![one[0].clone(), one[0].clone()];
    assert!(matches!(
        build_psbt(&w, &twice, &[to_self(&w, 150_000)], LockTime::ZERO),
        Err(Error::DuplicateOutpoint {
            input: InputIndex(1),
            first: InputIndex(0)
        })
    ));
}

#[test]
fn amounts_above_max_money_are_refused() {
    let (w, _) = wallet(46, None);
    let absurd = Amount::MAX_MONEY + Amount::from_sat(1);
    let half = Amount::from_sat(Amount::MAX_MONEY.to_sat() / 2 + 1);
    let build = |inputs: Vec<SpendInput>, out: &[u64]| {
        let outputs: Vec<Payment> = out.iter().map(|&v| to_self(&w, v)).collect();
        build_psbt(&w, &inputs, &outputs, LockTime::ZERO)
    };
    assert!(matches!(
        build(funding(&w, 1, absurd), &[1_000]),
        Err(Error::AboveMaxMoney { amount: AmountOf::Input(InputIndex(0)), value }) if value == absurd
    ));
    assert!(matches!(
        build(funding(&w, 2, half), &[1_000]),
        Err(Error::AboveMaxMoney {
            amount: AmountOf::InputTotal,
            ..
        })
    ));
    let big = funding(&w, 1, Amount::from_sat(1_000));
    assert!(matches!(
        build(big.clone(), &[absurd.to_sat()]),
        Err(Error::AboveMaxMoney {
            amount: AmountOf::Output(OutputIndex(0)),
            ..
        })
    ));
    assert!(matches!(
        build(big, &[half.to_sat(), half.to_sat()]),
        Err(Error::AboveMaxMoney {
            amount: AmountOf::OutputTotal,
            ..
        })
    ));
}

/// BIP174 (and Bitcoin Core) allow nothing after the last map: the signer
/// parses exactly what it was sent, in binary and in base64.
#[test]
fn trailing_bytes_after_a_psbt_are_refused() {
    let (w, _) = wallet(47, None);
    let psbt = two_inputs(&w);
    let mut bytes = psbt.serialize();
    assert!(WalletPsbt::from_bytes(&bytes, &w).is_ok());
    bytes.extend_from_slice(b"anything at all, even another PSBT");
    assert!(matches!(
        WalletPsbt::from_bytes(&bytes, &w),
        Err(Error::PsbtTrailingBytes { trailing: 34 })
    ));
    use bitcoin::base64::Engine as _;
    let text = bitcoin::base64::prelude::BASE64_STANDARD.encode(&bytes);
    assert!(matches!(
        WalletPsbt::from_base64(&text, &w),
        Err(Error::PsbtTrailingBytes { trailing: 34 })
    ));
    assert_eq!(
        WalletPsbt::from_base64(&psbt.to_base64(), &w).unwrap(),
        psbt
    );
    assert!(matches!(
        WalletPsbt::from_base64("not base64!", &w),
        Err(Error::PsbtText { .. })
    ));
}

/// Addresses of networks that share an encoding cannot be told apart
/// (base58 testnet and regtest, bech32 `tb1` testnet and signet): each is
/// accepted for the other, and pays the very same scriptPubKey, so no coin
/// can move differently (docs/policy.md says so).
#[test]
fn networks_sharing_an_address_encoding_accept_each_others_addresses() {
    let w = wallet(49, None).0;
    let key = bitcoin::PublicKey::new(
        w.internal_key()
            .public_key(bitcoin::secp256k1::Parity::Even),
    );
    let testnet_p2pkh = Address::p2pkh(key, bitcoin::Network::Testnet);
    let as_regtest = Network::Regtest
        .parse_address(&testnet_p2pkh.to_string())
        .unwrap();
    assert_eq!(as_regtest.script_pubkey(), testnet_p2pkh.script_pubkey());
    let signet = Address::p2tr_tweaked(w.output_key(), bitcoin::Network::Signet);
    let as_testnet = Network::Testnet.parse_address(&signet.to_string()).unwrap();
    assert_eq!(as_testnet.script_pubkey(), *w.script_pubkey());
    // Mainnet and regtest bech32 are distinct.
    assert!(matches!(
        Network::Bitcoin.parse_address(&w.address().to_string()),
        Err(Error::WrongNetwork { .. })
    ));
}
