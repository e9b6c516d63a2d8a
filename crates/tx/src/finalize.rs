//! Inserting aggregated signatures, finalizing and extracting the transaction.

use bitcoin::hashes::Hash;
use bitcoin::psbt::Psbt;
use bitcoin::secp256k1::Message;
use bitcoin::{Transaction, Witness, taproot};
use secp256k1::SECP256K1;

use crate::sighash::InputIndex;
use crate::{Error, WalletPsbt};

impl WalletPsbt {
    /// Puts an aggregated BIP340 signature (64 bytes, or 65 with the sighash
    /// type byte) for wallet input `input` into its `tap_key_sig`.
    ///
    /// The signature must carry the sighash type the input declares and must
    /// verify under the wallet's output key over the sighash this PSBT
    /// yields, so a wrong or misplaced signature is caught here and not by the
    /// network.
    ///
    /// # Errors
    /// [`Error::NotWalletInput`], [`Error::SignatureEncoding`],
    /// [`Error::SighashTypeMismatch`], [`Error::InvalidSignature`].
    pub fn insert_signature(&mut self, input: InputIndex, signature: &[u8]) -> Result<(), Error> {
        if !self.wallet_inputs().contains(&input) {
            return Err(Error::NotWalletInput { input });
        }
        let sig =
            taproot::Signature::from_slice(signature).map_err(|_| Error::SignatureEncoding {
                input,
                len: signature.len(),
            })?;
        let declared = self.sighash_type(input)?;
        if sig.sighash_type != declared {
            return Err(Error::SighashTypeMismatch {
                input,
                declared,
                signature: sig.sighash_type,
            });
        }
        let sighash = self.sighash(input, declared)?;
        let msg = Message::from_digest(sighash.sighash.to_byte_array());
        SECP256K1
            .verify_schnorr(
                &sig.signature,
                &msg,
                &self.wallet().output_key().to_x_only_public_key(),
            )
            .map_err(|_| Error::InvalidSignature { input })?;
        self.input_mut(input)?.tap_key_sig = Some(sig);
        Ok(())
    }

    /// Finalizes every wallet input (BIP174 finalizer: `final_script_witness`
    /// set to the key-path witness, signing fields cleared) and returns the
    /// finalized PSBT. Inputs that are not the wallet's must already be final.
    ///
    /// # Errors
    /// [`Error::MissingSignature`] for a wallet input without `tap_key_sig` or
    /// another input without a final witness or script.
    pub fn finalize(self) -> Result<Psbt, Error> {
        let wallet_inputs = self.wallet_inputs().to_vec();
        let mut psbt = self.into_psbt();
        for (i, input) in psbt.inputs.iter_mut().enumerate() {
            let index = InputIndex(i);
            if wallet_inputs.contains(&index) {
                let sig = input
                    .tap_key_sig
                    .ok_or(Error::MissingSignature { input: index })?;
                let witness_utxo = input.witness_utxo.take();
                let non_witness_utxo = input.non_witness_utxo.take();
                *input = bitcoin::psbt::Input {
                    final_script_witness: Some(Witness::p2tr_key_spend(&sig)),
                    witness_utxo,
                    non_witness_utxo,
                    ..Default::default()
                };
            } else if input.final_script_witness.is_none() && input.final_script_sig.is_none() {
                return Err(Error::MissingSignature { input: index });
            }
        }
        Ok(psbt)
    }

    /// Finalizes (see [`WalletPsbt::finalize`]) and extracts the network
    /// transaction.
    ///
    /// The fee was checked by the signing policy before any signature was
    /// made, so extraction applies no second fee-rate limit of its own.
    ///
    /// # Errors
    /// As [`WalletPsbt::finalize`].
    pub fn extract_transaction(self) -> Result<Transaction, Error> {
        Ok(self.finalize()?.extract_tx_unchecked_fee_rate())
    }
}
