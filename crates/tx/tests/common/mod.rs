//! Shared helpers for the integration tests: wallets, funding, a signer
//! callback and Bitcoin Core's script interpreter.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use bitcoin::hashes::Hash;
use bitcoin::key::{Keypair, TapTweak};
use bitcoin::secp256k1::{Message, SECP256K1, SecretKey};
use bitcoin::taproot::TapNodeHash;
use bitcoin::{Amount, OutPoint, Transaction, TxOut, Txid};
use thresig_tx::{KeySpendSighash, Network, SpendInput, TaprootWallet, WalletPsbt};

/// Produces the aggregated signature for one input's sighash. A single key
/// implements it here; a threshold signing group implements it the same way
/// (run FROST over `sighash.sighash` and return the 64- or 65-byte signature).
pub(crate) trait KeySpendSigner {
    /// The BIP340 signature (with the sighash type byte if not `Default`).
    fn sign(&self, sighash: &KeySpendSighash) -> Vec<u8>;
}

/// A single secret key that signs with the BIP341 key-path tweak applied.
pub(crate) struct SingleKey {
    tweaked: Keypair,
}

impl KeySpendSigner for SingleKey {
    fn sign(&self, sighash: &KeySpendSighash) -> Vec<u8> {
        let msg = Message::from_digest(sighash.sighash.to_byte_array());
        let signature = SECP256K1.sign_schnorr_no_aux_rand(&msg, &self.tweaked);
        bitcoin::taproot::Signature {
            signature,
            sighash_type: sighash.sighash_type,
        }
        .to_vec()
    }
}

/// A wallet on regtest from a one-byte seed, and its single-key signer.
pub(crate) fn wallet(seed: u8, merkle_root: Option<TapNodeHash>) -> (TaprootWallet, SingleKey) {
    let sk = SecretKey::from_slice(&[seed; 32]).unwrap();
    let keypair = Keypair::from_secret_key(SECP256K1, &sk);
    let wallet = TaprootWallet::new(Network::Regtest, keypair.x_only_public_key().0, merkle_root);
    let tweaked = keypair.tap_tweak(SECP256K1, merkle_root).to_keypair();
    assert_eq!(
        tweaked.x_only_public_key().0,
        wallet.output_key().to_x_only_public_key()
    );
    (wallet, SingleKey { tweaked })
}

/// A script-tree root for tests (any 32 bytes serve for a key-path spend).
pub(crate) fn root(byte: u8) -> TapNodeHash {
    TapNodeHash::from_byte_array([byte; 32])
}

/// `n` made-up outputs of the wallet, each holding `value`.
pub(crate) fn funding(wallet: &TaprootWallet, n: usize, value: Amount) -> Vec<SpendInput> {
    (0..n)
        .map(|i| SpendInput {
            outpoint: OutPoint {
                txid: Txid::from_byte_array([u8::try_from(i).unwrap() + 1; 32]),
                vout: 1,
            },
            value,
            script_pubkey: wallet.script_pubkey().clone(),
        })
        .collect()
}

/// Signs every wallet input through `signer` and inserts the signatures.
pub(crate) fn sign_all(psbt: &mut WalletPsbt, signer: &impl KeySpendSigner) {
    for sighash in psbt.wallet_sighashes().unwrap() {
        psbt.insert_signature(sighash.input, &signer.sign(&sighash))
            .unwrap();
    }
}

/// Runs Bitcoin Core's script interpreter (libbitcoinconsensus 0.106, with the
/// Taproot flags, since every spent output is passed) on every input.
pub(crate) fn verify_with_core(
    tx: &Transaction,
    prevouts: &[TxOut],
) -> Result<(), (usize, bitcoinconsensus::Error)> {
    thresig_consensus::verify_with_core(tx, prevouts).map_err(|r| (r.input, r.error))
}
