//! Adversarial review of `thresig-tx`: each test states a property the design
//! or the docs promise and that the code under review does not keep.
//! A failing test here is a finding; tests named `demo_*` pass on purpose and
//! show behaviour the report discusses.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::expect_used)]

mod common;

use std::time::Instant;

use bitcoin::absolute::LockTime;
use bitcoin::hashes::Hash;
use bitcoin::psbt::Psbt;
use bitcoin::{Amount, OutPoint, ScriptBuf, TapSighashType, TxOut, Txid, Witness};
use common::{KeySpendSigner, funding, sign_all, verify_with_core, wallet};
use thresig_tx::{
    ChargeLog, Destination, InputIndex, Network, Payment, Policy, Rule, SpendInput,
    TaprootWallet, UnixTime, WalletMode, WalletPsbt, build_psbt,
};

/// Monday 2024-01-01 12:00:00 UTC.
const NOW: UnixTime = UnixTime(1_704_067_200 + 12 * 3600);

fn to_self(w: &TaprootWallet, sat: u64) -> Payment {
    Payment {
        destination: Destination::Script(w.script_pubkey().clone()),
        value: Amount::from_sat(sat),
    }
}

/// What the coordinator sends: the PSBT as bytes, parsed as the signer would.
fn over_the_wire(raw: &Psbt, w: &TaprootWallet) -> WalletPsbt {
    WalletPsbt::from_bytes(&raw.serialize(), w).expect("the signer accepts the PSBT")
}

fn fee_rate(fee: Amount, vsize: usize) -> u64 {
    fee.to_sat() / u64::try_from(vsize).unwrap()
}

// ---------------------------------------------------------------------------
// Finding 1: the fee-rate cap counts bytes the signature does not commit to.
// ---------------------------------------------------------------------------

/// The coordinator stuffs a huge `final_script_witness` onto an input it owns
/// (a payjoin-style foreign input). `estimated_vsize` counts it, so the fee
/// rate looks tiny; BIP341 signatures do not commit to other inputs'
/// witnesses, so after the wallet signs the coordinator swaps in its real
/// 64-byte witness and broadcasts a transaction paying ~30x the cap, which
/// Bitcoin Core accepts.
#[test]
fn fee_rate_cap_is_not_bypassed_by_a_stuffed_foreign_witness() {
    let (w, signer) = wallet(20, None);
    let (attacker, attacker_key) = wallet(21, None);
    let policy = Policy::from_toml(
        "max_fee_sat = 150000\nmax_fee_rate_sat_vb = 20",
        Network::Regtest,
    )
    .unwrap();

    // 2 x 100 000 in, 100 000 back to the wallet: 100 000 sat of fee.
    let built = build_psbt(
        &w,
        &funding(&w, 2, Amount::from_sat(100_000)),
        &[to_self(&w, 100_000)],
        LockTime::ZERO,
    )
    .unwrap();
    let mut raw = built.psbt().clone();
    raw.inputs[1].witness_utxo.as_mut().unwrap().script_pubkey =
        attacker.script_pubkey().clone();
    raw.inputs[1].tap_internal_key = None;
    raw.inputs[1].tap_merkle_root = None;
    raw.inputs[1].final_script_witness = Some(Witness::from_slice(&[vec![0u8; 20_000]]));
    let mut psbt = over_the_wire(&raw, &w);
    assert_eq!(psbt.wallet_inputs(), &[InputIndex(0)]);

    let verdict = policy.check(&psbt, &WalletMode::Active, NOW, &ChargeLog::new());

    // Carry the attack through, to show the signature is usable as described.
    sign_all(&mut psbt, &signer);
    let theirs = psbt.sighash(InputIndex(1), TapSighashType::Default).unwrap();
    let mut raw = psbt.psbt().clone();
    raw.inputs[1].final_script_witness =
        Some(Witness::from_slice(&[attacker_key.sign(&theirs)]));
    let psbt = WalletPsbt::from_psbt(raw, &w).unwrap();
    let prevouts = psbt.prevouts().to_vec();
    let fee = psbt.fee();
    let tx = psbt.extract_transaction().unwrap();
    verify_with_core(&tx, &prevouts).expect("Core accepts the broadcast transaction");
    let real_rate = fee_rate(fee, tx.vsize());
    assert!(real_rate > 20 * 20, "real rate {real_rate} sat/vB");

    assert!(
        verdict.is_err(),
        "policy approved a transaction whose broadcast fee rate is {real_rate} sat/vB \
         against a cap of 20 (vsize {} as broadcast)",
        tx.vsize()
    );
}

/// The same with no foreign input at all: a `final_script_sig` on the
/// wallet's own input is counted by `estimated_vsize` but dropped by
/// `finalize`, so the transaction the wallet itself extracts pays ~60x the cap.
#[test]
fn fee_rate_cap_is_not_bypassed_by_a_script_sig_on_a_wallet_input() {
    let (w, signer) = wallet(22, None);
    let policy = Policy::from_toml(
        "max_fee_sat = 150000\nmax_fee_rate_sat_vb = 20",
        Network::Regtest,
    )
    .unwrap();
    let built = build_psbt(
        &w,
        &funding(&w, 1, Amount::from_sat(200_000)),
        &[to_self(&w, 100_000)],
        LockTime::ZERO,
    )
    .unwrap();
    let mut raw = built.psbt().clone();
    raw.inputs[0].final_script_sig = Some(ScriptBuf::from_bytes(vec![0x00; 9_000]));
    let mut psbt = over_the_wire(&raw, &w);
    let estimate = psbt.estimated_vsize();
    let verdict = policy.check(&psbt, &WalletMode::Active, NOW, &ChargeLog::new());

    sign_all(&mut psbt, &signer);
    let prevouts = psbt.prevouts().to_vec();
    let fee = psbt.fee();
    let tx = psbt.extract_transaction().unwrap();
    verify_with_core(&tx, &prevouts).expect("Core accepts it");
    assert!(
        verdict.is_err(),
        "approved: estimated vsize {estimate}, broadcast vsize {}, broadcast rate {} sat/vB, cap 20",
        tx.vsize(),
        fee_rate(fee, tx.vsize())
    );
}

// ---------------------------------------------------------------------------
// Finding 2: O(n^2) sighash computation on untrusted input, before any policy.
// ---------------------------------------------------------------------------

fn n_input_psbt(n: usize) -> (TaprootWallet, Vec<u8>) {
    let (w, _) = wallet(23, None);
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
    let psbt = build_psbt(&w, &inputs, &[to_self(&w, 1_000)], LockTime::ZERO).unwrap();
    (w, psbt.serialize())
}

fn time_sighashes(n: usize) -> (usize, f64) {
    let (w, bytes) = n_input_psbt(n);
    let psbt = WalletPsbt::from_bytes(&bytes, &w).unwrap();
    let start = Instant::now();
    let sighashes = psbt.wallet_sighashes().unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(sighashes.len(), n);
    (bytes.len(), secs)
}

/// `wallet_sighashes` builds a fresh `SighashCache` per input, so each input
/// re-hashes every prevout, amount, script and sequence: quadratic in the
/// number of inputs. Four times the inputs should cost about four times the
/// time; it costs about sixteen. (Ratio of two runs on the same machine, with
/// a wide margin, so load on the box does not decide it.)
#[test]
fn sighash_cost_is_linear_in_the_number_of_inputs() {
    let _ = time_sighashes(200); // warm-up
    let (small_bytes, small) = time_sighashes(1_000);
    let (big_bytes, big) = time_sighashes(4_000);
    let ratio = big / small;
    eprintln!(
        "1000 inputs ({small_bytes} B PSBT): {small:.3} s; 4000 inputs ({big_bytes} B PSBT): {big:.3} s; ratio {ratio:.1}"
    );
    assert!(
        ratio < 9.0,
        "4x the inputs cost {ratio:.1}x the time ({small:.3} s -> {big:.3} s): quadratic"
    );
}

// ---------------------------------------------------------------------------
// Finding 3: duplicated outpoints pass validation and the policy.
// ---------------------------------------------------------------------------

/// Consensus refuses a transaction spending one outpoint twice
/// (`bad-txns-inputs-duplicate`), but the PSBT validation accepts it and the
/// fee (and the policy's view of it) counts the same coin twice.
#[test]
fn duplicated_outpoints_are_refused() {
    let (w, _) = wallet(24, None);
    let one = funding(&w, 1, Amount::from_sat(100_000));
    let twice = vec![one[0].clone(), one[0].clone()];
    let result = build_psbt(&w, &twice, &[to_self(&w, 150_000)], LockTime::ZERO);
    if let Ok(psbt) = &result {
        let policy = Policy::from_toml("", Network::Regtest).unwrap();
        let verdict = policy.check(psbt, &WalletMode::Active, NOW, &ChargeLog::new());
        panic!(
            "accepted: fee {} computed from a coin counted twice; policy: {:?}; \
             {} sighashes to sign",
            psbt.fee(),
            verdict.map(|_| "approved"),
            psbt.wallet_sighashes().unwrap().len()
        );
    }
}

// ---------------------------------------------------------------------------
// Finding 4: amounts above 21 million BTC are accepted.
// ---------------------------------------------------------------------------

#[test]
fn amounts_above_max_money_are_refused() {
    let (w, _) = wallet(25, None);
    let absurd = Amount::MAX_MONEY + Amount::from_sat(1);
    let result = build_psbt(
        &w,
        &funding(&w, 1, absurd),
        &[to_self(&w, absurd.to_sat() - 1_000)],
        LockTime::ZERO,
    );
    assert!(
        result.is_err(),
        "a PSBT spending and paying more than MAX_MONEY validated: fee {:?}",
        result.map(|p| p.fee())
    );
}

// ---------------------------------------------------------------------------
// Finding 5: `output_script_types = ["op_return", ...]` can never allow one.
// ---------------------------------------------------------------------------

/// docs/policy.md lists `op_return` (and `other`) as allowable external
/// script types, but the allowlist holds addresses only and applies to every
/// external output, so an OP_RETURN output is refused by
/// `destination_allowlist` whatever `output_script_types` says.
#[test]
fn op_return_allowed_by_type_can_be_signed() {
    let (w, _) = wallet(26, None);
    let policy = Policy::from_toml(
        r#"output_script_types = ["p2tr", "op_return"]"#,
        Network::Regtest,
    )
    .unwrap();
    let op_return = ScriptBuf::new_op_return([0xab; 20]);
    let psbt = build_psbt(
        &w,
        &funding(&w, 1, Amount::from_sat(100_000)),
        &[
            to_self(&w, 99_000),
            Payment {
                destination: Destination::Script(op_return),
                value: Amount::ZERO,
            },
        ],
        LockTime::ZERO,
    )
    .unwrap();
    let verdict = policy.check(&psbt, &WalletMode::Active, NOW, &ChargeLog::new());
    assert!(
        verdict.is_ok(),
        "a zero-value OP_RETURN with op_return allowed is refused: {:?}",
        verdict.err().and_then(|e| e.policy_denial().map(|d| d.rule))
    );
}

// ---------------------------------------------------------------------------
// Demonstrations (pass on purpose).
// ---------------------------------------------------------------------------

/// Any coordinator can exhaust a wallet's daily limit with transactions that
/// can never be mined: self-transfers of made-up outpoints pass every rule
/// (the signer has no chain view), and each distinct txid is charged on its
/// first approval. Legitimate withdrawals are then refused for 24 h.
#[test]
fn demo_rate_limit_exhausted_by_fabricated_self_transfers() {
    let (w, _) = wallet(27, None);
    let policy = Policy::from_toml("max_per_day = 3", Network::Regtest).unwrap();
    let mut log = ChargeLog::new();
    for k in 0..3u32 {
        let fake = SpendInput {
            outpoint: OutPoint {
                txid: Txid::from_byte_array([0xee; 32]),
                vout: k,
            },
            value: Amount::from_sat(1_000),
            script_pubkey: w.script_pubkey().clone(),
        };
        let junk = build_psbt(&w, &[fake], &[to_self(&w, 900)], LockTime::ZERO).unwrap();
        let approval = policy
            .check(&junk, &WalletMode::Active, UnixTime(NOW.0 + u64::from(k)), &log)
            .unwrap();
        log.apply(approval.charge());
    }
    let real = build_psbt(
        &w,
        &funding(&w, 1, Amount::from_sat(50_000)),
        &[to_self(&w, 49_000)],
        LockTime::ZERO,
    )
    .unwrap();
    let err = policy
        .check(&real, &WalletMode::Active, UnixTime(NOW.0 + 3_600), &log)
        .unwrap_err();
    assert_eq!(err.policy_denial().unwrap().rule, Rule::RatePerDay);
}

/// The per-minute window is 61 s wide: a charge exactly 60 s old still counts.
#[test]
fn demo_rate_window_is_inclusive_at_60_seconds() {
    let (w, _) = wallet(28, None);
    let policy = Policy::from_toml("max_per_minute = 1", Network::Regtest).unwrap();
    let mut log = ChargeLog::new();
    log.apply(&thresig_tx::RateCharge::Charge {
        txid: Txid::from_byte_array([1; 32]),
        at: NOW,
    });
    let psbt = build_psbt(
        &w,
        &funding(&w, 1, Amount::from_sat(50_000)),
        &[to_self(&w, 49_000)],
        LockTime::ZERO,
    )
    .unwrap();
    let at_60 = policy.check(&psbt, &WalletMode::Active, UnixTime(NOW.0 + 60), &log);
    assert_eq!(at_60.unwrap_err().policy_denial().unwrap().rule, Rule::RatePerMinute);
    assert!(policy.check(&psbt, &WalletMode::Active, UnixTime(NOW.0 + 61), &log).is_ok());
}

/// Base58 addresses cannot tell testnet from regtest, nor bech32 testnet from
/// signet: a regtest configuration accepts a "testnet" P2PKH address. The
/// scriptPubKey is the same, so no coin moves differently, but docs/policy.md
/// promises more than the encoding allows.
#[test]
fn demo_networks_sharing_an_encoding_are_not_told_apart() {
    let key = bitcoin::PublicKey::new(common::wallet(29, None).0.internal_key().public_key(
        bitcoin::secp256k1::Parity::Even,
    ));
    let testnet_p2pkh = bitcoin::Address::p2pkh(key, bitcoin::Network::Testnet).to_string();
    assert!(Network::Regtest.parse_address(&testnet_p2pkh).is_ok());
    let signet_p2tr = common::wallet(29, None).0.output_key();
    let signet = bitcoin::Address::p2tr_tweaked(signet_p2tr, bitcoin::Network::Signet).to_string();
    assert!(Network::Testnet.parse_address(&signet).is_ok());
}

/// Extreme clock values do not panic and the calendar is right at a week wrap.
#[test]
fn demo_time_arithmetic_edges() {
    let policy = Policy::from_toml(
        r#"time_windows = [{ days = ["sun"], start = "23:59", end = "24:00" }]"#,
        Network::Regtest,
    )
    .unwrap();
    let (w, _) = wallet(30, None);
    let psbt = build_psbt(
        &w,
        &funding(&w, 1, Amount::from_sat(50_000)),
        &[to_self(&w, 49_000)],
        LockTime::ZERO,
    )
    .unwrap();
    // Sunday 2024-01-07 23:59:59 is inside; Monday 00:00:00 is not.
    let sunday_last = UnixTime(1_704_067_200 + 7 * 86_400 - 1);
    assert!(policy.check(&psbt, &WalletMode::Active, sunday_last, &ChargeLog::new()).is_ok());
    assert!(
        policy
            .check(&psbt, &WalletMode::Active, UnixTime(sunday_last.0 + 1), &ChargeLog::new())
            .is_err()
    );
    for t in [0, 1, u64::MAX - 1, u64::MAX] {
        let _ = policy.evaluate(&psbt, &WalletMode::Active, UnixTime(t), &ChargeLog::new());
    }
}

// ---------------------------------------------------------------------------
// Finding 6: bytes after the PSBT are ignored (a malformed PSBT is accepted).
// ---------------------------------------------------------------------------

/// BIP174 (and Bitcoin Core's `DecodeRawPSBT`) refuse data after the last
/// map; `from_bytes` accepts it, so many distinct byte strings are "the same"
/// request, and what the signer parsed is not what it was sent.
#[test]
fn trailing_bytes_after_a_psbt_are_refused() {
    let (w, _) = wallet(31, None);
    let psbt = build_psbt(
        &w,
        &funding(&w, 1, Amount::from_sat(50_000)),
        &[to_self(&w, 49_000)],
        LockTime::ZERO,
    )
    .unwrap();
    let mut bytes = psbt.serialize();
    bytes.extend_from_slice(b"anything at all, even another PSBT");
    let parsed = WalletPsbt::from_bytes(&bytes, &w);
    assert!(parsed.is_err(), "trailing garbage accepted: {:?}", parsed.map(|p| p.txid()));
}

/// Inputs that upstream rust-bitcoin's PSBT fuzzer flagged (issues #3501,
/// #4191): whatever they do, they must not panic the signer.
#[test]
fn upstream_psbt_fuzz_cases_do_not_panic() {
    let (w, _) = wallet(32, None);
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

/// With the defaults (no rate limit, 0.01 BTC fee cap) and the fee-rate
/// bypass above, one coordinator gets approval for any number of self-sends
/// that each burn 0.01 BTC in fees: the per-transaction cap is no budget.
#[test]
fn demo_default_policy_has_no_fee_budget() {
    let (w, _) = wallet(33, None);
    let policy = Policy::from_toml("", Network::Regtest).unwrap();
    let mut log = ChargeLog::new();
    for k in 0..100u32 {
        let coin = SpendInput {
            outpoint: OutPoint {
                txid: Txid::from_byte_array([0x42; 32]),
                vout: k,
            },
            value: Amount::from_sat(1_100_000),
            script_pubkey: w.script_pubkey().clone(),
        };
        let built = build_psbt(&w, &[coin], &[to_self(&w, 100_000)], LockTime::ZERO).unwrap();
        let mut raw = built.psbt().clone();
        raw.inputs[0].final_script_sig = Some(ScriptBuf::from_bytes(vec![0x00; 2_000]));
        let psbt = over_the_wire(&raw, &w);
        assert_eq!(psbt.fee(), Amount::from_sat(1_000_000));
        let approval = policy
            .check(&psbt, &WalletMode::Active, UnixTime(NOW.0 + u64::from(k)), &log)
            .unwrap();
        log.apply(approval.charge());
    }
}

/// Unknown or misspelt keys are refused at every level of the table.
#[test]
fn demo_unknown_policy_fields_are_refused() {
    for text in [
        "max_fee_sats = 1",
        "network = \"regtest\"",
        r#"time_windows = [{ days = ["mon"], start = "08:00", end = "18:00", tz = "CET" }]"#,
        r#"sighash_types = ["ALL"]"#,
        r#"output_script_types = ["P2TR"]"#,
        "max_fee_sat = -1",
        "max_fee_sat = 1.5",
        "version = 4294967296",
        "[wallets.policy]\nmax_fee_sat = 1",
    ] {
        assert!(Policy::from_toml(text, Network::Regtest).is_err(), "{text}");
    }
}

// Structured fuzzing of every entry point on PSBTs the coordinator controls.
mod fuzz {
    use super::*;
    use proptest::prelude::*;

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
        #![proptest_config(ProptestConfig::with_cases(3000))]
        #[test]
        fn no_entry_point_panics(
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
                    let policy = Policy::from_toml(text, Network::Regtest).unwrap();
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

// ---------------------------------------------------------------------------
// Finding: a terminal refusal reported as retryable.
// ---------------------------------------------------------------------------

/// `Rule::ALL` puts `rekey_sweep` after the time and rate rules, and `check`
/// reports the first refusal. A rekeying wallet asked, outside its time
/// window, to sign something that is not a sweep answers `time_window`
/// (retryable): the caller is told to retry a transaction that can never
/// pass, instead of the terminal `rekey_sweep`.
#[test]
fn a_transaction_that_can_never_pass_is_not_reported_retryable() {
    let (w, _) = wallet(34, None);
    let successor = wallet(35, None).0;
    let policy = Policy::from_toml(
        r#"time_windows = [{ days = ["mon"], start = "08:00", end = "09:00" }]"#,
        Network::Regtest,
    )
    .unwrap();
    let not_a_sweep = build_psbt(
        &w,
        &funding(&w, 1, Amount::from_sat(50_000)),
        &[to_self(&w, 49_000)],
        LockTime::ZERO,
    )
    .unwrap();
    let err = policy
        .check(
            &not_a_sweep,
            &WalletMode::Rekeying { successor },
            NOW, // Monday noon: outside the window
            &ChargeLog::new(),
        )
        .unwrap_err();
    assert!(
        !err.is_retryable(),
        "refused by {:?}, retryable, though rekey_sweep also refuses it for good",
        err.policy_denial().map(|d| d.rule)
    );
}

/// A `tap_key_sig` that arrives inside the PSBT (from a combiner or another
/// tool) is never checked: validation ignores it and `finalize` copies it
/// into the witness, so `extract_transaction` returns a transaction Core
/// refuses, although `insert_signature` promises a wrong signature "is caught
/// here and not by the network".
#[test]
fn a_signature_already_in_the_psbt_is_verified_before_finalizing() {
    let (w, _) = wallet(36, None);
    let (_, stranger) = wallet(37, None);
    let built = build_psbt(
        &w,
        &funding(&w, 1, Amount::from_sat(50_000)),
        &[to_self(&w, 49_000)],
        LockTime::ZERO,
    )
    .unwrap();
    let wrong = stranger.sign(&built.wallet_sighashes().unwrap()[0]);
    let mut raw = built.psbt().clone();
    raw.inputs[0].tap_key_sig = Some(bitcoin::taproot::Signature::from_slice(&wrong).unwrap());
    let psbt = over_the_wire(&raw, &w);
    let prevouts = psbt.prevouts().to_vec();
    if let Ok(tx) = psbt.extract_transaction() {
        assert!(
            verify_with_core(&tx, &prevouts).is_ok(),
            "extract_transaction returned a transaction Core refuses"
        );
    }
}
