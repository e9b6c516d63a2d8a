//! Robustness against arbitrary input: no byte string, base64 text, policy
//! table or coordinator-built PSBT panics any entry point of the crate.

mod common;

use bitcoin::absolute::LockTime;
use bitcoin::hashes::Hash;
use bitcoin::psbt::Psbt;
use bitcoin::{Amount, OutPoint, ScriptBuf, TxOut, Txid, Witness};
use common::{funding, wallet};
use proptest::prelude::*;
use thresig_tx::{
    ChargeLog, Destination, Error, InputIndex, Network, Payment, Policy, TaprootWallet, UnixTime,
    WalletMode, WalletPsbt, build_psbt,
};

fn two_inputs(w: &TaprootWallet) -> WalletPsbt {
    build_psbt(
        w,
        &funding(w, 2, Amount::from_sat(50_000)),
        &[Payment {
            destination: Destination::Script(w.script_pubkey().clone()),
            value: Amount::from_sat(99_000),
        }],
        LockTime::ZERO,
    )
    .unwrap()
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
        "max_per_minute_per_coordinator",
        "max_per_day_per_coordinator",
        "max_fee_per_day_sat",
        "max_fee_per_day_per_coordinator_sat",
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
            let policy = Policy::from_toml("", Network::Regtest, 2).unwrap();
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
        let _ = Policy::from_toml(&text, Network::Regtest, 2);
    }

    #[test]
    fn near_valid_policy_tables_never_panic(lines in prop::collection::vec((toml_key(), toml_value()), 0..6)) {
        let text: String = lines.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        match Policy::from_toml(&text, Network::Regtest, 2) {
            Ok(policy) => prop_assert!(policy.version().0 >= 1),
            Err(e) => prop_assert!(matches!(e, Error::PolicyConfig(_))),
        }
    }
}

/// Inputs that upstream rust-bitcoin's PSBT fuzzer flagged (issues #3501,
/// #4191): whatever they do, they must not panic the signer.
#[test]
fn upstream_psbt_fuzz_cases_do_not_panic() {
    let (w, _) = wallet(48, None);
    for hex in [
        "70736274ff10fc00ff0000000000106dd5f43c0000000001000a000000000000000100c0000000000000000100000000000000f0ffff020000912d201101000a0000000000000a0007ffffffffffffff7e638080808080808080808080808080808080800080808080808080808080808080808080808086fd000000000000000080000000000000004000fd8080000000ffffffffffffffff00000013b13c330249240100000092492400000002924a39000000000029290000004e4992244992244902024924924924924a00001004020000000200f559ee39abe801003330fd3bb1133bb1133b0162737073000074626a700000000000b1130065cd1d010000ff86970000000000000001d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d100c00000000000008080808080808080808080808080808080808080808080808080808080808080808080808080808080808080808080808080808080808080808080808080024924924924924a80808080808080808080808080808080808080808080808080808080808080808080808080808080808080800000000000000000000000fd0000004e0a008000000000fd0000004e0a007370ffffffffff80808080808080808080808080808080808080007462737002000000000000002929292900810000000000008000000000000002ff34",
        "70736274ff01005c00fd00000002070000002400000040000000000000870000000000000010000001000002fc00000000000000000010a5ff64cd1d00020004000000000002746273700004000000000000043587cf000000000000000202000000000000000207000400000022222258585858005858040000000000000000be4d5bbb8eedc7fe21000000000001000031e45605bfa40007b5910c060f16a8cde1253a65370159a9a5ddc06e2b863be570e566331a4c37990eb7129895cdc10148249674907783e2feef74627370040002000000000002fc00401dcd650000000009a5ff64cd1dffffffffffffff3f000200040000000000027462765007750000000200000200000000000000010b0001000100000100000000009327a91a6b7b102cef186ed61eaf6793b90760f5affad132a6b9b59433b6694a3ba73b5b556afe78a5558fda7e630490559bed4b669fbfb0a33f0583a96b67c4bbb40308fcbdc4acebd687000000000000000008000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000001080801000000000000000113b13b13b13c0000000000000000746273d7e7700400020000000000020700000000000000000000010000000200000000000201000000fc0000be0a00bb8fed1800000000ff000000000000000000000100000000ff000000ffff00093d000000000000000000000000ff0033329161f9add3c04a80b6003291c1d3adf96100000000ffffffff91320074ff01000000000000000900000000000000000800000000000200000000010001cc00329161f9ad00000000",
    ] {
        let bytes = hex::decode(hex).unwrap();
        if let Ok(psbt) = WalletPsbt::from_bytes(&bytes, &w) {
            let _ = psbt.wallet_sighashes();
            let _ = psbt.estimated_vsize();
        }
    }
}

// Structured fuzzing of every entry point on PSBTs the coordinator controls.
mod fuzz {
    use super::*;
    use bitcoin::TapSighashType;

    fn spk(kind: u8, w: &TaprootWallet) -> ScriptBuf {
        match kind % 6 {
            0 => w.script_pubkey().clone(),
            1 => wallet(90, None).0.script_pubkey().clone(),
            2 => ScriptBuf::new_op_return([1u8; 4]),
            3 => ScriptBuf::new(),
            4 => ScriptBuf::from_bytes(vec![0x51, 0x20, 7, 7]),
            _ => ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([3; 20])),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn no_entry_point_panics_on_a_coordinator_built_psbt(
            ins in prop::collection::vec((any::<u8>(), any::<u64>(), any::<Option<u32>>(), any::<bool>(), any::<bool>(), any::<u8>()), 1..5),
            outs in prop::collection::vec((any::<u8>(), any::<u64>(), any::<bool>()), 1..4),
            sig in prop::collection::vec(any::<u8>(), 63..66),
            now in any::<u64>(),
        ) {
            let (w, _) = wallet(91, None);
            let tx = bitcoin::Transaction {
                version: bitcoin::transaction::Version::TWO,
                lock_time: LockTime::ZERO,
                input: (0..ins.len()).map(|i| bitcoin::TxIn {
                    previous_output: OutPoint { txid: Txid::from_byte_array([9; 32]), vout: u32::try_from(i).unwrap() },
                    ..Default::default()
                }).collect(),
                output: outs.iter().map(|(k, v, _)| TxOut { value: Amount::from_sat(*v), script_pubkey: spk(*k, &w) }).collect(),
            };
            let mut raw = Psbt::from_unsigned_tx(tx).unwrap();
            for (input, (k, v, ty, ik, fin, extra)) in raw.inputs.iter_mut().zip(&ins) {
                input.witness_utxo = Some(TxOut { value: Amount::from_sat(*v), script_pubkey: spk(*k, &w) });
                input.sighash_type = ty.map(bitcoin::psbt::PsbtSighashType::from_u32);
                if *ik { input.tap_internal_key = Some(w.internal_key()); }
                if *fin { input.final_script_witness = Some(Witness::from_slice(&[vec![0u8; usize::from(*extra)]])); }
            }
            for (output, (_, _, ik)) in raw.outputs.iter_mut().zip(&outs) {
                if *ik { output.tap_internal_key = Some(w.internal_key()); }
            }
            let bytes = raw.serialize();
            if let Ok(mut psbt) = WalletPsbt::from_bytes(&bytes, &w) {
                let _ = psbt.wallet_sighashes();
                let _ = psbt.estimated_vsize();
                for text in ["", "max_tx_sat = 0\nmax_output_sat = 0\nmax_per_minute = 0", "sighash_types = [\"none\", \"single_anyonecanpay\"]\nmax_fee_rate_sat_vb = 9223372036854775807"] {
                    let policy = Policy::from_toml(text, Network::Regtest, 2).unwrap();
                    let _ = policy.evaluate(&psbt, &WalletMode::Active, UnixTime(now), &ChargeLog::new());
                    let _ = policy.evaluate(&psbt, &WalletMode::Rekeying { successor: wallet(92, None).0 }, UnixTime(now), &ChargeLog::new());
                }
                for i in 0..ins.len() + 1 {
                    let _ = psbt.insert_signature(InputIndex(i), &sig);
                    let _ = psbt.sighash(InputIndex(i), TapSighashType::SinglePlusAnyoneCanPay);
                    let _ = psbt.sig_msg(InputIndex(i), TapSighashType::None);
                }
                let _ = psbt.clone().extract_transaction();
            }
        }
    }
}
