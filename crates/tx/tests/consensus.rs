//! Transactions built and signed through this crate pass Bitcoin Core's
//! script interpreter; a tampered signature does not.

mod common;

use bitcoin::absolute::LockTime;
use bitcoin::psbt::Psbt;
use bitcoin::{Amount, ScriptBuf, TapSighashType, TxOut, Witness};
use common::{KeySpendSigner, funding, root, sign_all, verify_with_core, wallet};
use thresig_tx::{
    ChargeLog, Destination, Error, InputIndex, Network, Payment, Policy, Rule, TaprootWallet,
    UnixTime, WalletMode, WalletPsbt, build_psbt,
};

fn payments(wallet: &thresig_tx::TaprootWallet, total: Amount) -> Vec<Payment> {
    let (other, _) = common::wallet(99, None);
    vec![
        Payment {
            destination: Destination::Address(other.address()),
            value: total / 2,
        },
        Payment {
            destination: Destination::Script(wallet.script_pubkey().clone()),
            value: total / 2 - Amount::from_sat(1_000),
        },
    ]
}

/// Spends `inputs` to [`payments`] of 100 000 sat in all.
fn spend_100k(w: &thresig_tx::TaprootWallet, inputs: &[thresig_tx::SpendInput]) -> WalletPsbt {
    build_psbt(
        w,
        inputs,
        &payments(w, Amount::from_sat(100_000)),
        LockTime::ZERO,
    )
    .unwrap()
}

#[test]
fn signed_transactions_pass_core_and_tampered_ones_fail() {
    for (inputs, tree) in [(1, None), (5, None), (1, Some(root(3))), (5, Some(root(4)))] {
        let (w, signer) = wallet(7, tree);
        let value = Amount::from_sat(100_000);
        let spends = funding(&w, inputs, value);
        let total = value * u64::try_from(inputs).unwrap();
        let mut psbt = build_psbt(&w, &spends, &payments(&w, total), LockTime::ZERO).unwrap();
        assert_eq!(psbt.wallet_inputs().len(), inputs);
        sign_all(&mut psbt, &signer);
        let prevouts: Vec<TxOut> = psbt.prevouts().to_vec();
        let tx = psbt.extract_transaction().unwrap();
        verify_with_core(&tx, &prevouts)
            .unwrap_or_else(|e| panic!("{inputs} inputs, root {tree:?}: {e:?}"));

        // One byte of one signature changed: Core refuses that input.
        for victim in [0, inputs - 1] {
            let mut bad = tx.clone();
            let mut sig = bad.input[victim].witness.to_vec().remove(0);
            sig[10] ^= 0x01;
            bad.input[victim].witness = bitcoin::Witness::from_slice(&[sig]);
            let err = verify_with_core(&bad, &prevouts).unwrap_err();
            assert_eq!(err.0, victim, "the tampered input is the one refused");
        }
    }
}

#[test]
fn non_default_sighash_type_signs_with_65_bytes_and_passes_core() {
    let (w, signer) = wallet(8, None);
    let spends = funding(&w, 2, Amount::from_sat(50_000));
    let psbt = build_psbt(
        &w,
        &spends,
        &payments(&w, Amount::from_sat(100_000)),
        LockTime::ZERO,
    )
    .unwrap();
    let mut raw = psbt.psbt().clone();
    for input in &mut raw.inputs {
        input.sighash_type = Some(TapSighashType::All.into());
    }
    let mut psbt = WalletPsbt::from_psbt(raw, &w).unwrap();
    sign_all(&mut psbt, &signer);
    let prevouts = psbt.prevouts().to_vec();
    let tx = psbt.extract_transaction().unwrap();
    assert_eq!(tx.input[0].witness.to_vec()[0].len(), 65);
    verify_with_core(&tx, &prevouts).unwrap();
}

#[test]
fn a_false_prevout_amount_yields_a_signature_core_refuses() {
    // A coordinator that lies about what an input holds gets a signature over
    // the lie, which is invalid on chain: DEFAULT/ALL commit to every amount.
    let (w, signer) = wallet(9, None);
    let spends = funding(&w, 2, Amount::from_sat(50_000));
    let mut lying = spends.clone();
    lying[1].value = Amount::from_sat(60_000);
    let mut psbt = spend_100k(&w, &lying);
    sign_all(&mut psbt, &signer);
    let tx = psbt.extract_transaction().unwrap();
    let real: Vec<TxOut> = spends
        .iter()
        .map(|s| TxOut {
            value: s.value,
            script_pubkey: s.script_pubkey.clone(),
        })
        .collect();
    assert!(verify_with_core(&tx, &real).is_err());
}

#[test]
fn signatures_are_checked_on_insertion_and_required_for_finalization() {
    let (w, signer) = wallet(10, Some(root(1)));
    let (_, other_signer) = wallet(11, Some(root(1)));
    let spends = funding(&w, 2, Amount::from_sat(50_000));
    let mut psbt = spend_100k(&w, &spends);
    let sighashes = psbt.wallet_sighashes().unwrap();

    // A signature by another key, or for another input, is refused.
    let foreign = other_signer.sign(&sighashes[0]);
    assert!(matches!(
        psbt.insert_signature(InputIndex(0), &foreign),
        Err(Error::InvalidSignature { .. })
    ));
    let misplaced = signer.sign(&sighashes[1]);
    assert!(matches!(
        psbt.insert_signature(InputIndex(0), &misplaced),
        Err(Error::InvalidSignature { .. })
    ));
    // Wrong length, or a sighash type the input does not declare.
    assert!(matches!(
        psbt.insert_signature(InputIndex(0), &[0u8; 63]),
        Err(Error::SignatureEncoding { len: 63, .. })
    ));
    let mut typed = signer.sign(&sighashes[0]);
    typed.push(TapSighashType::All as u8);
    assert!(matches!(
        psbt.insert_signature(InputIndex(0), &typed),
        Err(Error::SighashTypeMismatch { .. })
    ));
    // An input the wallet does not sign.
    assert!(matches!(
        psbt.insert_signature(InputIndex(7), &misplaced),
        Err(Error::NotWalletInput { .. })
    ));

    // One of two inputs signed: finalization names the missing one.
    psbt.insert_signature(InputIndex(0), &signer.sign(&sighashes[0]))
        .unwrap();
    assert!(matches!(
        psbt.clone().finalize(),
        Err(Error::MissingSignature {
            input: InputIndex(1)
        })
    ));
    psbt.insert_signature(InputIndex(1), &signer.sign(&sighashes[1]))
        .unwrap();
    let finalized = psbt.finalize().unwrap();
    assert!(
        finalized
            .inputs
            .iter()
            .all(|i| i.final_script_witness.is_some() && i.tap_key_sig.is_none())
    );
}

/// Monday 2024-01-01 12:00:00 UTC.
const NOW: UnixTime = UnixTime(1_704_067_200 + 12 * 3600);

fn to_self(w: &TaprootWallet, sat: u64) -> Payment {
    Payment {
        destination: Destination::Script(w.script_pubkey().clone()),
        value: Amount::from_sat(sat),
    }
}

/// `n` wallet outputs of `each` sat spent to one output of `out` sat to the wallet.
fn spend_to_self(w: &TaprootWallet, n: usize, each: u64, out: u64) -> WalletPsbt {
    build_psbt(
        w,
        &funding(w, n, Amount::from_sat(each)),
        &[to_self(w, out)],
        LockTime::ZERO,
    )
    .unwrap()
}

/// What the coordinator sends: the PSBT as bytes, parsed as the signer would.
fn over_the_wire(raw: &Psbt, w: &TaprootWallet) -> WalletPsbt {
    WalletPsbt::from_bytes(&raw.serialize(), w).unwrap()
}

fn capped_at_20_sat_vb() -> Policy {
    Policy::from_toml(
        "max_fee_sat = 150000\nmax_fee_rate_sat_vb = 20",
        Network::Regtest,
        2,
    )
    .unwrap()
}

/// The coordinator pads the `final_script_witness` of an input it owns (a
/// payjoin-style foreign input). The signature does not commit to other
/// inputs' witnesses, so it could swap in its real 64-byte witness after the
/// wallet signs. The fee-rate cap ignores the padding: it refuses, and the
/// transaction the attack would broadcast (Bitcoin Core accepts it) does pay
/// far more than the cap.
#[test]
fn a_padded_foreign_witness_does_not_lower_the_fee_rate_the_policy_sees() {
    let (w, signer) = wallet(20, None);
    let (attacker, attacker_key) = wallet(21, None);
    // 2 x 100 000 in, 100 000 back to the wallet: 100 000 sat of fee.
    let built = spend_to_self(&w, 2, 100_000, 100_000);
    let mut raw = built.psbt().clone();
    raw.inputs[1].witness_utxo.as_mut().unwrap().script_pubkey = attacker.script_pubkey().clone();
    raw.inputs[1].tap_internal_key = None;
    raw.inputs[1].tap_merkle_root = None;
    raw.inputs[1].final_script_witness = Some(Witness::from_slice(&[vec![0u8; 20_000]]));
    let mut psbt = over_the_wire(&raw, &w);
    assert_eq!(psbt.wallet_inputs(), &[InputIndex(0)]);

    let verdict = capped_at_20_sat_vb().check(&psbt, &WalletMode::Active, NOW, &ChargeLog::new());
    let err = verdict.unwrap_err();
    assert_eq!(err.policy_denial().unwrap().rule, Rule::MaxFeeRate);

    // Had it signed, the stripped transaction is valid and pays > 20x the cap.
    sign_all(&mut psbt, &signer);
    let theirs = psbt
        .sighash(InputIndex(1), TapSighashType::Default)
        .unwrap();
    let mut raw = psbt.psbt().clone();
    raw.inputs[1].final_script_witness = Some(Witness::from_slice(&[attacker_key.sign(&theirs)]));
    let psbt = WalletPsbt::from_psbt(raw, &w).unwrap();
    let (prevouts, fee, estimate) = (psbt.prevouts().to_vec(), psbt.fee(), psbt.estimated_vsize());
    let tx = psbt.extract_transaction().unwrap();
    verify_with_core(&tx, &prevouts).unwrap();
    let vsize = u64::try_from(tx.vsize()).unwrap();
    assert!(
        estimate <= vsize,
        "estimate {estimate} above broadcast {vsize}"
    );
    assert!(fee.to_sat() / vsize > 20 * 20);
}

/// A `final_script_sig` on the wallet's own input is dropped by `finalize`;
/// the fee-rate cap does not count it either.
#[test]
fn a_script_sig_on_a_wallet_input_does_not_lower_the_fee_rate_the_policy_sees() {
    let (w, signer) = wallet(22, None);
    let built = spend_to_self(&w, 1, 200_000, 100_000);
    let mut raw = built.psbt().clone();
    raw.inputs[0].final_script_sig = Some(ScriptBuf::from_bytes(vec![0x00; 9_000]));
    let mut psbt = over_the_wire(&raw, &w);
    assert_eq!(psbt.estimated_vsize(), built.estimated_vsize());
    let err = capped_at_20_sat_vb()
        .check(&psbt, &WalletMode::Active, NOW, &ChargeLog::new())
        .unwrap_err();
    assert_eq!(err.policy_denial().unwrap().rule, Rule::MaxFeeRate);

    let estimate = psbt.estimated_vsize();
    sign_all(&mut psbt, &signer);
    let prevouts = psbt.prevouts().to_vec();
    let tx = psbt.extract_transaction().unwrap();
    verify_with_core(&tx, &prevouts).unwrap();
    assert_eq!(estimate, u64::try_from(tx.vsize()).unwrap());
}

/// A `tap_key_sig` that arrives inside the PSBT (from a combiner or another
/// tool) is verified before finalizing, as `insert_signature` does: a wrong
/// key or a wrong sighash type is refused, not handed to the network.
#[test]
fn a_signature_already_in_the_psbt_is_verified_before_finalizing() {
    let (w, signer) = wallet(36, None);
    let (_, stranger) = wallet(37, None);
    let built = spend_to_self(&w, 1, 50_000, 49_000);
    let sighash = built.wallet_sighashes().unwrap()[0];
    let with_sig = |sig: Vec<u8>| {
        let mut raw = built.psbt().clone();
        raw.inputs[0].tap_key_sig = Some(bitcoin::taproot::Signature::from_slice(&sig).unwrap());
        over_the_wire(&raw, &w)
    };
    assert!(matches!(
        with_sig(stranger.sign(&sighash)).extract_transaction(),
        Err(Error::InvalidSignature {
            input: InputIndex(0)
        })
    ));
    let mut all = sighash;
    all.sighash_type = TapSighashType::All;
    assert!(matches!(
        with_sig(signer.sign(&all)).extract_transaction(),
        Err(Error::SighashTypeMismatch {
            input: InputIndex(0),
            ..
        })
    ));
    // The right signature, arriving the same way, finalizes and passes Core.
    let psbt = with_sig(signer.sign(&sighash));
    let prevouts = psbt.prevouts().to_vec();
    verify_with_core(&psbt.extract_transaction().unwrap(), &prevouts).unwrap();
}

/// The smallest spend of a Taproot output is a script path whose leaf is
/// an empty script of an unknown leaf version: BIP341 lets every such spend
/// succeed, so its witness is a count, an empty script and a 33-byte
/// control block (36 bytes). The fee-rate estimate counts exactly that for
/// an input of another party, so the size it sees is never above the size
/// of what can be broadcast.
#[test]
fn the_smallest_foreign_taproot_spend_passes_core_and_the_estimate_counts_it() {
    use bitcoin::secp256k1::SECP256K1;
    use bitcoin::taproot::{LeafVersion, TaprootBuilder};

    let (w, signer) = wallet(23, None);
    let (other, _) = wallet(24, None);
    let version = LeafVersion::from_consensus(0xc2).unwrap();
    let leaf = (ScriptBuf::new(), version);
    let tree = TaprootBuilder::new()
        .add_leaf_with_ver(0, leaf.0.clone(), version)
        .unwrap()
        .finalize(SECP256K1, other.internal_key())
        .unwrap();
    let control = tree.control_block(&leaf).unwrap().serialize();
    let script = ScriptBuf::new_p2tr_tweaked(tree.output_key());
    // Four foreign inputs, so a byte too many in each shows in the vsize.
    let built = spend_to_self(&w, 5, 100_000, 100_000);
    let mut raw = built.psbt().clone();
    for input in raw.inputs.iter_mut().skip(1) {
        input.witness_utxo.as_mut().unwrap().script_pubkey = script.clone();
        input.tap_internal_key = None;
        input.tap_merkle_root = None;
    }
    let mut psbt = over_the_wire(&raw, &w);
    assert_eq!(psbt.wallet_inputs(), &[InputIndex(0)]);
    let estimate = psbt.estimated_vsize();

    sign_all(&mut psbt, &signer);
    let mut raw = psbt.psbt().clone();
    for input in raw.inputs.iter_mut().skip(1) {
        input.final_script_witness = Some(Witness::from_slice(&[Vec::new(), control.clone()]));
    }
    let psbt = WalletPsbt::from_psbt(raw, &w).unwrap();
    let prevouts = psbt.prevouts().to_vec();
    let tx = psbt.extract_transaction().unwrap();
    assert_eq!(tx.input[1].witness.size(), 36);
    verify_with_core(&tx, &prevouts).unwrap();
    assert_eq!(estimate, u64::try_from(tx.vsize()).unwrap());
}
