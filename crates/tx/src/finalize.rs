//! Inserting aggregated signatures, finalizing and extracting the transaction.

use bitcoin::hashes::Hash;
use bitcoin::psbt::Psbt;
use bitcoin::secp256k1::Message;
use bitcoin::{Transaction, Witness, taproot};
use secp256k1::SECP256K1;

use crate::sighash::{InputIndex, Sighasher};
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
        if self.wallet_inputs().binary_search(&input).is_err() {
            return Err(Error::NotWalletInput { input });
        }
        let sig =
            taproot::Signature::from_slice(signature).map_err(|_| Error::SignatureEncoding {
                input,
                len: signature.len(),
            })?;
        self.verify_key_sig(&mut self.sighasher(), input, &sig)?;
        self.input_mut(input)?.tap_key_sig = Some(sig);
        Ok(())
    }

    /// Checks that `sig` carries the sighash type `input` declares and
    /// verifies under the wallet's output key over this PSBT's sighash.
    fn verify_key_sig(
        &self,
        sighasher: &mut Sighasher<'_>,
        input: InputIndex,
        sig: &taproot::Signature,
    ) -> Result<(), Error> {
        let declared = self.sighash_type(input)?;
        if sig.sighash_type != declared {
            return Err(Error::SighashTypeMismatch {
                input,
                declared,
                signature: sig.sighash_type,
            });
        }
        let sighash = sighasher.key_spend(input, declared)?;
        let msg = Message::from_digest(sighash.sighash.to_byte_array());
        SECP256K1
            .verify_schnorr(
                &sig.signature,
                &msg,
                &self.wallet().output_key().to_x_only_public_key(),
            )
            .map_err(|_| Error::InvalidSignature { input })
    }

    /// Verifies the `tap_key_sig` of each of `inputs` that has one, with one
    /// sighash cache for all.
    fn verify_present_signatures(&self, inputs: &[InputIndex]) -> Result<(), Error> {
        let mut sighasher = self.sighasher();
        for &input in inputs {
            if let Some(sig) = self.psbt().inputs.get(input.0).and_then(|i| i.tap_key_sig) {
                self.verify_key_sig(&mut sighasher, input, &sig)?;
            }
        }
        Ok(())
    }

    /// Finalizes every wallet input (BIP174 finalizer: `final_script_witness`
    /// set to the key-path witness, signing fields cleared) and returns the
    /// finalized PSBT. Inputs that are not the wallet's must already be final.
    ///
    /// Every wallet input's `tap_key_sig` is verified first, as
    /// [`WalletPsbt::insert_signature`] does, also one that came inside the
    /// PSBT (from a combiner or another tool): a wrong signature is caught
    /// here and not by the network.
    ///
    /// # Errors
    /// [`Error::MissingSignature`] for a wallet input without `tap_key_sig` or
    /// another input without a final witness or script;
    /// [`Error::SighashTypeMismatch`] or [`Error::InvalidSignature`] for a
    /// `tap_key_sig` that does not verify.
    pub fn finalize(self) -> Result<Psbt, Error> {
        let wallet_inputs = self.wallet_inputs().to_vec();
        self.verify_present_signatures(&wallet_inputs)?;
        let mut psbt = self.into_psbt();
        for (i, input) in psbt.inputs.iter_mut().enumerate() {
            let index = InputIndex(i);
            if wallet_inputs.binary_search(&index).is_ok() {
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
