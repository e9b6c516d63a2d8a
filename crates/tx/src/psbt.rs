//! PSBTs validated against a wallet: decoding, structural checks, sighashes.

use std::collections::BTreeMap;

use bitcoin::base64::Engine as _;
use bitcoin::base64::prelude::BASE64_STANDARD;
use bitcoin::psbt::{Input, Psbt, PsbtParseError};
use bitcoin::{Amount, Script, ScriptBuf, TapSighashType, Transaction, TxOut, Txid, Witness};

use crate::sighash::{
    InputIndex, KeySpendSighash, OutputIndex, Sighasher, key_spend_sig_msg, key_spend_sighash,
};
use crate::{AmountOf, Error, TaprootField, TaprootWallet};

/// The most inputs a PSBT may have. Every input weighs at least 164 WU
/// (outpoint, empty scriptSig length and sequence: 41 bytes), so a
/// transaction with more cannot stay within [`MAX_STANDARD_WEIGHT`]; refusing
/// early bounds the work done on a coordinator's request.
pub const MAX_INPUTS: usize = 2_439;

/// The most outputs a PSBT may have. Every output weighs at least 36 WU
/// (amount and an empty script's length: 9 bytes), so a transaction with
/// more cannot stay within [`MAX_STANDARD_WEIGHT`].
pub const MAX_OUTPUTS: usize = 11_111;

/// The most key-value pairs a PSBT's maps may hold in all (about 27 per
/// input at [`MAX_INPUTS`]; a key-path input needs a handful). Each one
/// decodes into about 100 bytes whatever its size on the wire, so the cap
/// bounds what a PSBT of many tiny entries costs to decode.
pub const MAX_PSBT_ENTRIES: usize = 65_536;

/// Bitcoin Core's standardness limit on a transaction's weight
/// (`MAX_STANDARD_TX_WEIGHT`): heavier transactions are not relayed, so a
/// signer refuses them before computing any sighash.
pub const MAX_STANDARD_WEIGHT: u64 = 400_000;

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
    /// [`Error::PsbtText`] if it is not base64, then any error of
    /// [`WalletPsbt::from_bytes`].
    pub fn from_base64(text: &str, wallet: &TaprootWallet) -> Result<Self, Error> {
        let bytes = BASE64_STANDARD
            .decode(text.trim())
            .map_err(|e| Error::PsbtText {
                source: PsbtParseError::Base64Encoding(e),
            })?;
        Self::from_bytes(&bytes, wallet)
    }

    /// Parses a binary PSBT (BIP174 serialization) and validates it.
    ///
    /// The bytes must be exactly one PSBT: data after its last map is refused
    /// (as BIP174 and Bitcoin Core do), so what the signer parsed is all it
    /// was sent.
    ///
    /// The unsigned transaction's input and output counts and the maps'
    /// key-value pairs are counted first, and too many refused before
    /// anything is decoded: decoding allocates about 30 times the size of a
    /// PSBT of empty outputs or of tiny unknown entries.
    ///
    /// # Errors
    /// [`Error::TooManyInputs`] and [`Error::TooManyOutputs`] as read from
    /// the unsigned transaction, [`Error::TooManyPsbtEntries`],
    /// [`Error::PsbtDecode`] if the bytes are not
    /// a PSBT, [`Error::PsbtTrailingBytes`] if bytes follow it, then any
    /// error of [`WalletPsbt::from_psbt`].
    pub fn from_bytes(bytes: &[u8], wallet: &TaprootWallet) -> Result<Self, Error> {
        check_before_decoding(bytes)?;
        let mut reader = bytes;
        let psbt = Psbt::deserialize_from_reader(&mut reader)
            .map_err(|source| Error::PsbtDecode { source })?;
        if !reader.is_empty() {
            return Err(Error::PsbtTrailingBytes {
                trailing: reader.len(),
            });
        }
        Self::from_psbt(psbt, wallet)
    }

    /// Validates a decoded PSBT against `wallet` (see the type's invariants).
    ///
    /// # Errors
    /// [`Error::TooManyInputs`], [`Error::TooManyOutputs`],
    /// [`Error::PsbtMapCount`], [`Error::NoOutputs`],
    /// [`Error::DuplicateOutpoint`],
    /// [`Error::MissingWitnessUtxo`], [`Error::PrevoutMismatch`],
    /// [`Error::InvalidSighashType`], [`Error::SingleWithoutOutput`], [`Error::NonTaprootInput`],
    /// [`Error::TaprootFieldMismatch`], [`Error::NoWalletInputs`],
    /// [`Error::AboveMaxMoney`], [`Error::AmountOverflow`],
    /// [`Error::OutputsExceedInputs`], [`Error::TooHeavy`]; all terminal:
    /// the same PSBT fails the same way again.
    pub fn from_psbt(psbt: Psbt, wallet: &TaprootWallet) -> Result<Self, Error> {
        let tx = &psbt.unsigned_tx;
        if tx.input.len() > MAX_INPUTS {
            return Err(Error::TooManyInputs {
                inputs: tx.input.len(),
                max: MAX_INPUTS,
            });
        }
        if tx.output.len() > MAX_OUTPUTS {
            return Err(Error::TooManyOutputs {
                outputs: tx.output.len(),
                max: MAX_OUTPUTS,
            });
        }
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
        let mut spent = BTreeMap::new();
        for (i, (txin, input)) in tx.input.iter().zip(&psbt.inputs).enumerate() {
            let index = InputIndex(i);
            // Consensus refuses a transaction spending one outpoint twice,
            // and the fee would count that coin twice.
            if let Some(&first) = spent.get(&txin.previous_output) {
                return Err(Error::DuplicateOutpoint {
                    input: index,
                    first,
                });
            }
            spent.insert(txin.previous_output, index);
            let prevout = checked_prevout(index, txin.previous_output, input)?;
            within_max_money(AmountOf::Input(index), prevout.value)?;
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
        for (i, o) in tx.output.iter().enumerate() {
            within_max_money(AmountOf::Output(OutputIndex(i)), o.value)?;
        }
        let inputs = sum(prevouts.iter().map(|p| p.value))?;
        within_max_money(AmountOf::InputTotal, inputs)?;
        let outputs = sum(tx.output.iter().map(|o| o.value))?;
        within_max_money(AmountOf::OutputTotal, outputs)?;
        let fee = inputs
            .checked_sub(outputs)
            .ok_or(Error::OutputsExceedInputs { inputs, outputs })?;
        let checked = Self {
            psbt,
            prevouts,
            sighash_types,
            wallet_inputs,
            fee,
            wallet: wallet.clone(),
        };
        let weight = checked.estimated_weight();
        if weight > MAX_STANDARD_WEIGHT {
            return Err(Error::TooHeavy {
                weight,
                max: MAX_STANDARD_WEIGHT,
            });
        }
        Ok(checked)
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

    /// The id of the transaction being signed (rate limits are charged once
    /// per id and stated prevouts, [`crate::ChargeKey`]).
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
        let mut sighasher = self.sighasher();
        self.signed_inputs()
            .map(|(input, ty, _)| sighasher.key_spend(input, ty))
            .collect()
    }

    /// One sighash cache over this PSBT's transaction and prevouts, for
    /// computing several inputs' sighashes in linear time.
    pub(crate) fn sighasher(&self) -> Sighasher<'_> {
        Sighasher::new(&self.psbt.unsigned_tx, &self.prevouts)
    }

    /// A lower bound on the virtual size of the transaction as it will be
    /// broadcast, for the fee-rate cap.
    ///
    /// It is computed from the unsigned transaction alone and ignores every
    /// `final_script_sig` and `final_script_witness` in the PSBT: the wallet's
    /// signatures do not commit to scriptSigs or witnesses, so whoever
    /// assembles the transaction can pad them while the policy looks and
    /// strip them before broadcast, and a size counted from them would let a
    /// fee rate far above the cap through. Instead each wallet input counts
    /// its key-path witness (a 64-byte signature, 65 with a non-default
    /// sighash type) and every other input the smallest scriptSig and
    /// witness its prevout's script type admits (see `minimum_spend`), none
    /// for a script type not recognised. The size is therefore never above
    /// the real one, and the fee rate derived from it never below the real
    /// one: the safe side for a cap.
    #[must_use]
    pub fn estimated_vsize(&self) -> u64 {
        self.estimated_weight().div_ceil(4)
    }

    /// The weight behind [`WalletPsbt::estimated_vsize`], in weight units.
    fn estimated_weight(&self) -> u64 {
        let mut tx = self.psbt.unsigned_tx.clone();
        for (i, (txin, prevout)) in tx.input.iter_mut().zip(&self.prevouts).enumerate() {
            let index = InputIndex(i);
            let (script_sig, witness) = match self.wallet_inputs.binary_search(&index) {
                Ok(_) => {
                    let ty = self
                        .sighash_types
                        .get(i)
                        .copied()
                        .unwrap_or(TapSighashType::Default);
                    let len = if ty == TapSighashType::Default {
                        64
                    } else {
                        65
                    };
                    (ScriptBuf::new(), Witness::from_slice(&[vec![0u8; len]]))
                }
                Err(_) => minimum_spend(&prevout.script_pubkey),
            };
            txin.script_sig = script_sig;
            txin.witness = witness;
        }
        tx.weight().to_wu()
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
/// Refuses, before anything is decoded, a PSBT whose unsigned transaction
/// declares more than [`MAX_INPUTS`] inputs or [`MAX_OUTPUTS`] outputs, or
/// whose maps hold more than [`MAX_PSBT_ENTRIES`] key-value pairs, reading
/// only compact sizes. Bytes that cannot be read that far are left to the
/// decoder, which refuses them.
fn check_before_decoding(bytes: &[u8]) -> Result<(), Error> {
    let Some(mut rest) = bytes.strip_prefix(b"psbt\xff") else {
        return Ok(());
    };
    let mut entries = 0usize;
    let mut count = || {
        entries += 1;
        if entries > MAX_PSBT_ENTRIES {
            return Err(Error::TooManyPsbtEntries {
                max: MAX_PSBT_ENTRIES,
            });
        }
        Ok(())
    };
    let mut maps = None;
    // The global map; its unsigned transaction (key type 0, no key data)
    // says how many input and output maps follow.
    loop {
        match map_entry(&mut rest) {
            None => return Ok(()),
            Some(None) => break,
            Some(Some((key, tx))) => {
                count()?;
                if key == [0x00] && maps.is_none() {
                    let Some(declared) = declared_counts(tx)? else {
                        return Ok(());
                    };
                    maps = Some(declared);
                }
            }
        }
    }
    let Some(maps) = maps else {
        return Ok(());
    };
    for _ in 0..maps {
        loop {
            match map_entry(&mut rest) {
                None => return Ok(()),
                Some(None) => break,
                Some(Some(_)) => count()?,
            }
        }
    }
    Ok(())
}

/// The inputs plus outputs the unsigned transaction `tx` declares, refusing
/// too many of either; `None` if it cannot be read that far. The inputs (at
/// most [`MAX_INPUTS`]) are skipped to reach the outputs' count.
fn declared_counts(mut tx: &[u8]) -> Result<Option<usize>, Error> {
    let Some(inputs) = take(&mut tx, 4).and_then(|_| compact_size(&mut tx)) else {
        return Ok(None);
    };
    if inputs > MAX_INPUTS {
        return Err(Error::TooManyInputs {
            inputs,
            max: MAX_INPUTS,
        });
    }
    for _ in 0..inputs {
        // Outpoint, scriptSig, sequence.
        let skipped = take(&mut tx, 36)
            .and_then(|_| compact_size(&mut tx))
            .and_then(|script| take(&mut tx, script))
            .and_then(|_| take(&mut tx, 4));
        if skipped.is_none() {
            return Ok(None);
        }
    }
    match compact_size(&mut tx) {
        Some(outputs) if outputs > MAX_OUTPUTS => Err(Error::TooManyOutputs {
            outputs,
            max: MAX_OUTPUTS,
        }),
        Some(outputs) => Ok(Some(inputs + outputs)),
        None => Ok(None),
    }
}

/// One key-value pair of a PSBT map from the front of `bytes`: `Some(None)`
/// at the map's separator, `None` if it cannot be read.
fn map_entry<'a>(bytes: &mut &'a [u8]) -> Option<Option<(&'a [u8], &'a [u8])>> {
    let key_len = compact_size(bytes)?;
    if key_len == 0 {
        return Some(None);
    }
    let key = take(bytes, key_len)?;
    let value_len = compact_size(bytes)?;
    let value = take(bytes, value_len)?;
    Some(Some((key, value)))
}

/// The first `n` bytes of `bytes`, advancing past them.
fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if bytes.len() < n {
        return None;
    }
    let (front, rest) = bytes.split_at(n);
    *bytes = rest;
    Some(front)
}

/// A Bitcoin compact size from the front of `bytes` (saturated to `usize`).
fn compact_size(bytes: &mut &[u8]) -> Option<usize> {
    let (&first, _) = bytes.split_first()?;
    let width = match first {
        0xfd => 2,
        0xfe => 4,
        0xff => 8,
        small => {
            take(bytes, 1)?;
            return Some(usize::from(small));
        }
    };
    let data = take(bytes, 1 + width)?;
    let mut le = [0u8; 8];
    for (to, from) in le.iter_mut().zip(data.iter().skip(1)) {
        *to = *from;
    }
    Some(usize::try_from(u64::from_le_bytes(le)).unwrap_or(usize::MAX))
}

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

/// The smallest scriptSig and witness that can spend an output with
/// `script_pubkey`, by script type, so that the size estimate is a lower
/// bound whatever the spender chooses:
/// - P2TR: a script-path spend of an empty leaf script with a 33-byte
///   control block (36 witness bytes, smaller than a 64-byte key-path
///   signature): under a leaf version BIP341 does not define, every
///   script succeeds, so consensus accepts it;
/// - P2WPKH: the smallest DER signature with its sighash byte (9 bytes) and a
///   33-byte compressed key;
/// - P2WSH: a one-byte witness script (`OP_1`) and nothing else;
/// - P2SH: a scriptSig pushing a one-byte redeem script (`OP_1`), no witness;
/// - P2PKH: a scriptSig pushing a 9-byte signature and a 33-byte key;
/// - anything else (bare scripts, future witness versions, unknown forms):
///   an empty scriptSig and no witness.
fn minimum_spend(script_pubkey: &Script) -> (ScriptBuf, Witness) {
    const OP_1: u8 = 0x51;
    const MIN_SIG: usize = 9;
    const KEY: usize = 33;
    let push = |len: usize| {
        let mut bytes = vec![u8::try_from(len).unwrap_or(u8::MAX)];
        bytes.resize(len + 1, 0);
        bytes
    };
    if script_pubkey.is_p2tr() {
        (
            ScriptBuf::new(),
            Witness::from_slice(&[Vec::new(), vec![0u8; 33]]),
        )
    } else if script_pubkey.is_p2wpkh() {
        (
            ScriptBuf::new(),
            Witness::from_slice(&[vec![0u8; MIN_SIG], vec![0u8; KEY]]),
        )
    } else if script_pubkey.is_p2wsh() {
        (ScriptBuf::new(), Witness::from_slice(&[vec![OP_1]]))
    } else if script_pubkey.is_p2sh() {
        (ScriptBuf::from_bytes(vec![0x01, OP_1]), Witness::new())
    } else if script_pubkey.is_p2pkh() {
        let mut script_sig = push(MIN_SIG);
        script_sig.extend(push(KEY));
        (ScriptBuf::from_bytes(script_sig), Witness::new())
    } else {
        (ScriptBuf::new(), Witness::new())
    }
}

/// Refuses an amount above 21 million BTC, which consensus refuses too.
fn within_max_money(amount: AmountOf, value: Amount) -> Result<(), Error> {
    if value > Amount::MAX_MONEY {
        Err(Error::AboveMaxMoney { amount, value })
    } else {
        Ok(())
    }
}

fn sum(mut amounts: impl Iterator<Item = Amount>) -> Result<Amount, Error> {
    amounts.try_fold(Amount::ZERO, |acc, a| {
        acc.checked_add(a).ok_or(Error::AmountOverflow)
    })
}
