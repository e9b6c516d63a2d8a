//! PSBTs validated against a wallet: decoding, structural checks, sighashes.

use std::str::FromStr;

use bitcoin::psbt::{Input, Psbt};
use bitcoin::{Amount, TapSighashType, Transaction, TxOut, Txid, Witness};

use crate::sighash::{InputIndex, KeySpendSighash, key_spend_sig_msg, key_spend_sighash};
use crate::{Error, TaprootField, TaprootWallet};

/// A PSBT that has passed every structural check against one wallet.
///
/// Only [`WalletPsbt::from_psbt`] (and the parsers and builder that call it)
/// creates this type, so holding one proves:
///
/// # Invariants
/// - every input carries a `witness_utxo` (BIP341 signs all prevouts, so no
///   sighash can be computed without every one of them), and where a
///   `non_witness_utxo` is also given it is the transaction the input spends
///   and agrees with the `witness_utxo`;
/// - every input's declared sighash type, if any, is a valid Taproot type,
///   and a `SINGLE` type has an output at the input's index;
/// - the inputs claimed for the wallet (listed by [`WalletPsbt::wallet_inputs`])
///   are Taproot, and their BIP371 fields, where present, are the wallet's;
///   there is at least one;
/// - input and output totals do not overflow and outputs do not exceed inputs.
///
/// An input is *claimed for the wallet* when its `witness_utxo` pays the
/// wallet's scriptPubKey or its `tap_internal_key` is the wallet's internal
/// key. Whether each claimed input really spends the wallet's output key is
/// the policy's `prevout_script` rule, so that the refusal names it.
#[derive(Clone, Debug, PartialEq)]
pub struct WalletPsbt {
    psbt: Psbt,
    prevouts: Vec<TxOut>,
    /// Declared sighash type of every input (`Default` where left out).
    sighash_types: Vec<TapSighashType>,
    /// Ascending.
    wallet_inputs: Vec<InputIndex>,
    fee: Amount,
    /// The wallet this PSBT was validated against; every later step
    /// (sighashes, policy, signature checks) uses this one.
    wallet: TaprootWallet,
}

impl WalletPsbt {
    /// Parses a base64 PSBT (the text form wallets exchange) and validates it.
    ///
    /// # Errors
    /// [`Error::PsbtText`] if it is not base64 or not a PSBT, then any error of
    /// [`WalletPsbt::from_psbt`].
    pub fn from_base64(text: &str, wallet: &TaprootWallet) -> Result<Self, Error> {
        let psbt = Psbt::from_str(text.trim()).map_err(|source| Error::PsbtText { source })?;
        Self::from_psbt(psbt, wallet)
    }

    /// Parses a binary PSBT (BIP174 serialization) and validates it.
    ///
    /// # Errors
    /// [`Error::PsbtDecode`] if the bytes are not a PSBT, then any error of
    /// [`WalletPsbt::from_psbt`].
    pub fn from_bytes(bytes: &[u8], wallet: &TaprootWallet) -> Result<Self, Error> {
        let psbt = Psbt::deserialize(bytes).map_err(|source| Error::PsbtDecode { source })?;
        Self::from_psbt(psbt, wallet)
    }

    /// Validates a decoded PSBT against `wallet` (see the type's invariants).
    ///
    /// # Errors
    /// [`Error::PsbtMapCount`], [`Error::NoOutputs`],
    /// [`Error::MissingWitnessUtxo`], [`Error::PrevoutMismatch`],
    /// [`Error::InvalidSighashType`], [`Error::SingleWithoutOutput`], [`Error::NonTaprootInput`],
    /// [`Error::TaprootFieldMismatch`], [`Error::NoWalletInputs`],
    /// [`Error::AmountOverflow`], [`Error::OutputsExceedInputs`]; all terminal:
    /// the same PSBT fails the same way again.
    pub fn from_psbt(psbt: Psbt, wallet: &TaprootWallet) -> Result<Self, Error> {
        let tx = &psbt.unsigned_tx;
        if psbt.inputs.len() != tx.input.len() || psbt.outputs.len() != tx.output.len() {
            return Err(Error::PsbtMapCount {
                tx_inputs: tx.input.len(),
                psbt_inputs: psbt.inputs.len(),
                tx_outputs: tx.output.len(),
                psbt_outputs: psbt.outputs.len(),
            });
        }
        if tx.output.is_empty() {
            return Err(Error::NoOutputs);
        }
        let mut prevouts = Vec::with_capacity(psbt.inputs.len());
        let mut sighash_types = Vec::with_capacity(psbt.inputs.len());
        let mut wallet_inputs = Vec::new();
        for (i, (txin, input)) in tx.input.iter().zip(&psbt.inputs).enumerate() {
            let index = InputIndex(i);
            let prevout = checked_prevout(index, txin.previous_output, input)?;
            let declared = declared_sighash_type(index, input)?;
            let single = matches!(
                declared,
                TapSighashType::Single | TapSighashType::SinglePlusAnyoneCanPay
            );
            if single && i >= tx.output.len() {
                return Err(Error::SingleWithoutOutput { input: index });
            }
            if is_claimed(input, &prevout, wallet) {
                check_claimed(index, input, &prevout, wallet)?;
                wallet_inputs.push(index);
            }
            prevouts.push(prevout);
            sighash_types.push(declared);
        }
        if wallet_inputs.is_empty() {
            return Err(Error::NoWalletInputs);
        }
        let inputs = sum(prevouts.iter().map(|p| p.value))?;
        let outputs = sum(tx.output.iter().map(|o| o.value))?;
        let fee = inputs
            .checked_sub(outputs)
            .ok_or(Error::OutputsExceedInputs { inputs, outputs })?;
        Ok(Self {
            psbt,
            prevouts,
            sighash_types,
            wallet_inputs,
            fee,
            wallet: wallet.clone(),
        })
    }

    /// The wallet the PSBT was validated against.
    #[must_use]
    pub fn wallet(&self) -> &TaprootWallet {
        &self.wallet
    }

    /// The underlying PSBT.
    #[must_use]
    pub fn psbt(&self) -> &Psbt {
        &self.psbt
    }

    /// The unsigned transaction.
    #[must_use]
    pub fn unsigned_tx(&self) -> &Transaction {
        &self.psbt.unsigned_tx
    }

    /// The id of the transaction being signed; rate limits are charged once per id.
    #[must_use]
    pub fn txid(&self) -> Txid {
        self.psbt.unsigned_tx.compute_txid()
    }

    /// The outputs spent by the inputs, in input order.
    #[must_use]
    pub fn prevouts(&self) -> &[TxOut] {
        &self.prevouts
    }

    /// The inputs claimed for the wallet: exactly the inputs it signs, in order.
    #[must_use]
    pub fn wallet_inputs(&self) -> &[InputIndex] {
        &self.wallet_inputs
    }

    /// Total input value minus total output value.
    #[must_use]
    pub const fn fee(&self) -> Amount {
        self.fee
    }

    /// The sighash type `input` declares (`Default` when the PSBT leaves it out).
    ///
    /// # Errors
    /// [`Error::InputOutOfRange`] for an index past the last input.
    pub fn sighash_type(&self, input: InputIndex) -> Result<TapSighashType, Error> {
        self.sighash_types
            .get(input.0)
            .copied()
            .ok_or(Error::InputOutOfRange {
                input,
                inputs: self.sighash_types.len(),
            })
    }

    /// Each input the wallet signs, with its declared sighash type and the
    /// output it spends. Total: no lookup that could fail (and so no rule
    /// that could pass by default).
    pub(crate) fn signed_inputs(
        &self,
    ) -> impl Iterator<Item = (InputIndex, TapSighashType, &TxOut)> {
        self.prevouts
            .iter()
            .zip(&self.sighash_types)
            .enumerate()
            .map(|(i, (prevout, ty))| (InputIndex(i), *ty, prevout))
            .filter(|(i, _, _)| self.wallet_inputs.binary_search(i).is_ok())
    }

    /// The BIP341 key-path sighash of `input` under `sighash_type`, whatever
    /// the policy says about that type (the policy decides what is signed).
    ///
    /// # Errors
    /// [`Error::Sighash`] for an index out of range or `Single` without a
    /// matching output.
    pub fn sighash(
        &self,
        input: InputIndex,
        sighash_type: TapSighashType,
    ) -> Result<KeySpendSighash, Error> {
        key_spend_sighash(&self.psbt.unsigned_tx, &self.prevouts, input, sighash_type)
    }

    /// BIP341's `SigMsg` (with the epoch byte) of `input` under `sighash_type`.
    ///
    /// # Errors
    /// As [`WalletPsbt::sighash`].
    pub fn sig_msg(
        &self,
        input: InputIndex,
        sighash_type: TapSighashType,
    ) -> Result<Vec<u8>, Error> {
        key_spend_sig_msg(&self.psbt.unsigned_tx, &self.prevouts, input, sighash_type)
    }

    /// The messages the wallet signs: one sighash per wallet input, under the
    /// sighash type that input declares. The engine derives these itself and
    /// compares them with the coordinator's messages.
    ///
    /// # Errors
    /// As [`WalletPsbt::sighash`].
    pub fn wallet_sighashes(&self) -> Result<Vec<KeySpendSighash>, Error> {
        self.signed_inputs()
            .map(|(input, ty, _)| self.sighash(input, ty))
            .collect()
    }

    /// The transaction's virtual size once every wallet input carries its
    /// key-path witness (one 64-byte signature, or 65 with a non-default
    /// sighash type). Other inputs count with the witness they already have,
    /// so the size is a lower bound and a fee rate derived from it an upper
    /// bound, which is the safe side for a fee-rate cap.
    #[must_use]
    pub fn estimated_vsize(&self) -> u64 {
        let mut tx = self.psbt.unsigned_tx.clone();
        for (txin, input) in tx.input.iter_mut().zip(&self.psbt.inputs) {
            if let Some(w) = &input.final_script_witness {
                txin.witness = w.clone();
            }
            if let Some(s) = &input.final_script_sig {
                txin.script_sig = s.clone();
            }
        }
        for (input, ty, _) in self.signed_inputs() {
            let len = if ty == TapSighashType::Default {
                64
            } else {
                65
            };
            if let Some(txin) = tx.input.get_mut(input.0) {
                txin.witness = Witness::from_slice(&[vec![0u8; len]]);
            }
        }
        tx.vsize() as u64
    }

    pub(crate) fn input_mut(&mut self, input: InputIndex) -> Result<&mut Input, Error> {
        let inputs = self.psbt.inputs.len();
        self.psbt
            .inputs
            .get_mut(input.0)
            .ok_or(Error::InputOutOfRange { input, inputs })
    }

    pub(crate) fn into_psbt(self) -> Psbt {
        self.psbt
    }

    /// The PSBT in base64.
    #[must_use]
    pub fn to_base64(&self) -> String {
        self.psbt.to_string()
    }

    /// The PSBT in its binary serialization.
    #[must_use]
    pub fn serialize(&self) -> Vec<u8> {
        self.psbt.serialize()
    }
}

/// The output `input` spends, checked against the full previous transaction
/// when the PSBT supplies it.
fn checked_prevout(
    index: InputIndex,
    outpoint: bitcoin::OutPoint,
    input: &Input,
) -> Result<TxOut, Error> {
    let witness_utxo = input
        .witness_utxo
        .clone()
        .ok_or(Error::MissingWitnessUtxo { input: index })?;
    if let Some(prev_tx) = &input.non_witness_utxo {
        let vout = usize::try_from(outpoint.vout).ok();
        let full = vout.and_then(|v| prev_tx.output.get(v));
        if prev_tx.compute_txid() != outpoint.txid || full != Some(&witness_utxo) {
            return Err(Error::PrevoutMismatch { input: index });
        }
    }
    Ok(witness_utxo)
}

fn declared_sighash_type(index: InputIndex, input: &Input) -> Result<TapSighashType, Error> {
    match input.sighash_type {
        None => Ok(TapSighashType::Default),
        Some(ty) => ty.taproot_hash_ty().map_err(|_| Error::InvalidSighashType {
            input: index,
            value: ty.to_u32(),
        }),
    }
}

fn is_claimed(input: &Input, prevout: &TxOut, wallet: &TaprootWallet) -> bool {
    prevout.script_pubkey == *wallet.script_pubkey()
        || input.tap_internal_key == Some(wallet.internal_key())
}

fn check_claimed(
    index: InputIndex,
    input: &Input,
    prevout: &TxOut,
    wallet: &TaprootWallet,
) -> Result<(), Error> {
    if !prevout.script_pubkey.is_p2tr() {
        return Err(Error::NonTaprootInput {
            input: index,
            script_pubkey: prevout.script_pubkey.clone(),
        });
    }
    if input
        .tap_internal_key
        .is_some_and(|k| k != wallet.internal_key())
    {
        return Err(Error::TaprootFieldMismatch {
            input: index,
            field: TaprootField::InternalKey,
        });
    }
    if input.tap_merkle_root.is_some() && input.tap_merkle_root != wallet.merkle_root() {
        return Err(Error::TaprootFieldMismatch {
            input: index,
            field: TaprootField::MerkleRoot,
        });
    }
    Ok(())
}

fn sum(mut amounts: impl Iterator<Item = Amount>) -> Result<Amount, Error> {
    amounts.try_fold(Amount::ZERO, |acc, a| {
        acc.checked_add(a).ok_or(Error::AmountOverflow)
    })
}
