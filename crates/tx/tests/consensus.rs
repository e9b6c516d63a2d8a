//! Transactions built and signed through this crate pass Bitcoin Core's
//! script interpreter; a tampered signature does not.

mod common;

use bitcoin::absolute::LockTime;
use bitcoin::{Amount, TapSighashType, TxOut};
use common::{KeySpendSigner, funding, root, sign_all, verify_with_core, wallet};
use thresig_tx::{Destination, Error, InputIndex, Payment, WalletPsbt, build_psbt};

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
