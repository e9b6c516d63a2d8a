//! BIP341 wallet test vectors (`tests/vectors/bip341-wallet-test-vectors.json`,
//! a byte-exact copy of bitcoin/bips `bip-0341/wallet-test-vectors.json`).

mod common;

use std::str::FromStr;

use bitcoin::consensus::encode::deserialize_hex;
use bitcoin::hashes::Hash;
use bitcoin::key::XOnlyPublicKey;
use bitcoin::psbt::Psbt;
use bitcoin::secp256k1::{Message, SECP256K1, schnorr};
use bitcoin::taproot::TapNodeHash;
use bitcoin::{Amount, ScriptBuf, TapSighashType, Transaction, TxOut};
use serde_json::Value;
use thresig_tx::{
    InputIndex, Network, TaprootWallet, WalletPsbt, key_spend_sig_msg, key_spend_sighash,
};

fn vectors() -> Value {
    serde_json::from_str(include_str!("vectors/bip341-wallet-test-vectors.json")).unwrap()
}

fn x_only(hex_str: &str) -> XOnlyPublicKey {
    XOnlyPublicKey::from_str(hex_str).unwrap()
}

fn merkle_root(v: &Value) -> Option<TapNodeHash> {
    v.as_str().map(|s| TapNodeHash::from_str(s).unwrap())
}

struct KeyPathCase {
    tx: Transaction,
    prevouts: Vec<TxOut>,
    spends: Vec<Value>,
    fully_signed: String,
}

fn key_path_case() -> KeyPathCase {
    let v = vectors();
    let case = &v["keyPathSpending"][0];
    let tx: Transaction =
        deserialize_hex(case["given"]["rawUnsignedTx"].as_str().unwrap()).unwrap();
    let prevouts = case["given"]["utxosSpent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| TxOut {
            value: Amount::from_sat(u["amountSats"].as_u64().unwrap()),
            script_pubkey: ScriptBuf::from_hex(u["scriptPubKey"].as_str().unwrap()).unwrap(),
        })
        .collect();
    KeyPathCase {
        tx,
        prevouts,
        spends: case["inputSpending"].as_array().unwrap().clone(),
        fully_signed: case["auxiliary"]["fullySignedTx"]
            .as_str()
            .unwrap()
            .to_owned(),
    }
}

fn sighash_type(spend: &Value) -> TapSighashType {
    TapSighashType::from_consensus_u8(
        u8::try_from(spend["given"]["hashType"].as_u64().unwrap()).unwrap(),
    )
    .unwrap()
}

#[test]
fn every_key_path_input_reproduces_sig_msg_sighash_and_signature() {
    let case = key_path_case();
    assert_eq!(case.spends.len(), 7);
    for spend in &case.spends {
        let index =
            InputIndex(usize::try_from(spend["given"]["txinIndex"].as_u64().unwrap()).unwrap());
        let ty = sighash_type(spend);
        let inter = &spend["intermediary"];

        let msg = key_spend_sig_msg(&case.tx, &case.prevouts, index, ty).unwrap();
        assert_eq!(
            hex::encode(&msg),
            inter["sigMsg"].as_str().unwrap(),
            "sigMsg of {index}"
        );
        let sighash = key_spend_sighash(&case.tx, &case.prevouts, index, ty).unwrap();
        assert_eq!(
            sighash.sighash.to_string(),
            inter["sigHash"].as_str().unwrap(),
            "sigHash of {index}"
        );
        assert_eq!(
            sighash.sighash,
            bitcoin::TapSighash::hash(&msg),
            "sigHash is the tagged hash of sigMsg"
        );
        assert_eq!((sighash.input, sighash.sighash_type), (index, ty));

        // The wallet derived from the internal key and root pays exactly the spent script.
        let wallet = TaprootWallet::new(
            Network::Bitcoin,
            x_only(inter["internalPubkey"].as_str().unwrap()),
            merkle_root(&spend["given"]["merkleRoot"]),
        );
        assert_eq!(
            wallet.script_pubkey(),
            &case.prevouts[index.0].script_pubkey
        );

        // The expected witness signature verifies under the output key.
        let witness = hex::decode(spend["expected"]["witness"][0].as_str().unwrap()).unwrap();
        let sig = bitcoin::taproot::Signature::from_slice(&witness).unwrap();
        assert_eq!(sig.sighash_type, ty);
        let output_key = wallet.output_key().to_x_only_public_key();
        sig.signature
            .verify(
                &Message::from_digest(sighash.sighash.to_byte_array()),
                &output_key,
            )
            .unwrap();
        // And a flipped message does not verify (the check is live).
        let mut other = sighash.sighash.to_byte_array();
        other[0] ^= 1;
        assert!(
            SECP256K1
                .verify_schnorr(
                    &sig.signature,
                    &Message::from_digest(other),
                    &wallet.output_key().to_x_only_public_key()
                )
                .is_err()
        );
    }
}

#[test]
fn the_same_sighashes_come_out_of_a_psbt_and_its_signatures_insert() {
    let case = key_path_case();
    for spend in &case.spends {
        let index =
            InputIndex(usize::try_from(spend["given"]["txinIndex"].as_u64().unwrap()).unwrap());
        let ty = sighash_type(spend);
        let inter = &spend["intermediary"];
        let wallet = TaprootWallet::new(
            Network::Bitcoin,
            x_only(inter["internalPubkey"].as_str().unwrap()),
            merkle_root(&spend["given"]["merkleRoot"]),
        );
        let mut psbt = Psbt::from_unsigned_tx(case.tx.clone()).unwrap();
        for (input, prevout) in psbt.inputs.iter_mut().zip(&case.prevouts) {
            input.witness_utxo = Some(prevout.clone());
        }
        psbt.inputs[index.0].sighash_type = Some(ty.into());
        // Round-trip through the binary form, as a PSBT from another wallet would arrive.
        let mut wallet_psbt = WalletPsbt::from_bytes(&psbt.serialize(), &wallet).unwrap();
        assert_eq!(wallet_psbt.wallet_inputs(), &[index]);
        let sighashes = wallet_psbt.wallet_sighashes().unwrap();
        assert_eq!(sighashes.len(), 1);
        assert_eq!(
            sighashes[0].sighash.to_string(),
            inter["sigHash"].as_str().unwrap()
        );
        let witness = hex::decode(spend["expected"]["witness"][0].as_str().unwrap()).unwrap();
        wallet_psbt.insert_signature(index, &witness).unwrap();
        assert!(wallet_psbt.psbt().inputs[index.0].tap_key_sig.is_some());
    }
}

#[test]
fn fully_signed_vector_transaction_passes_bitcoin_core() {
    let case = key_path_case();
    let tx: Transaction = deserialize_hex(&case.fully_signed).unwrap();
    common::verify_with_core(&tx, &case.prevouts).unwrap();
}

#[test]
fn script_pub_key_vectors_derive_the_output_key_and_address() {
    let v = vectors();
    for case in v["scriptPubKey"].as_array().unwrap() {
        let wallet = TaprootWallet::new(
            Network::Bitcoin,
            x_only(case["given"]["internalPubkey"].as_str().unwrap()),
            merkle_root(&case["intermediary"]["merkleRoot"]),
        );
        assert_eq!(
            wallet.script_pubkey().to_hex_string(),
            case["expected"]["scriptPubKey"].as_str().unwrap()
        );
        assert_eq!(
            wallet.address().to_string(),
            case["expected"]["bip350Address"].as_str().unwrap()
        );
        assert_eq!(
            wallet.output_key().to_x_only_public_key().to_string(),
            case["intermediary"]["tweakedPubkey"].as_str().unwrap()
        );
    }
}

// Keeps the `schnorr` import meaningful: signatures in the vectors are BIP340.
#[test]
fn vector_signatures_are_64_or_65_bytes() {
    let case = key_path_case();
    for spend in &case.spends {
        let witness = hex::decode(spend["expected"]["witness"][0].as_str().unwrap()).unwrap();
        let ty = sighash_type(spend);
        assert_eq!(
            witness.len(),
            if ty == TapSighashType::Default {
                64
            } else {
                65
            }
        );
        schnorr::Signature::from_slice(&witness[..64]).unwrap();
    }
}
