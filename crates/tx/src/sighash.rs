//! BIP341 key-path signature hashes, computed by rust-bitcoin's `SighashCache`.

use std::fmt;

use bitcoin::sighash::{Prevouts, SighashCache};
use bitcoin::{TapSighash, TapSighashType, Transaction, TxOut};

use crate::Error;

/// The position of an input in a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InputIndex(pub usize);

/// The position of an output in a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OutputIndex(pub usize);

impl fmt::Display for InputIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "input {}", self.0)
    }
}

impl fmt::Display for OutputIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "output {}", self.0)
    }
}

/// The message a signer signs for one input: the BIP341 key-path sighash
/// under a given sighash type.
///
/// The engine compares the coordinator's message for each input with this
/// value, computed by the signer itself, before it releases a share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeySpendSighash {
    /// The input this sighash signs.
    pub input: InputIndex,
    /// The sighash type it commits to (a 65-byte signature carries it when it
    /// is not `Default`).
    pub sighash_type: TapSighashType,
    /// The 32-byte tagged hash `TapSighash(SigMsg)` that is signed.
    pub sighash: TapSighash,
}

/// Computes the BIP341 key-path sighash of `input` of `tx`, given every
/// output it spends (`prevouts[i]` is spent by input `i`; BIP341 commits to all
/// of them for `Default`/`All`).
///
/// # Errors
/// [`Error::Sighash`] if the input index is out of range, `prevouts` does not
/// have one entry per input, or `Single` is asked for an input without a
/// matching output.
pub fn key_spend_sighash(
    tx: &Transaction,
    prevouts: &[TxOut],
    input: InputIndex,
    sighash_type: TapSighashType,
) -> Result<KeySpendSighash, Error> {
    Sighasher::new(tx, prevouts).key_spend(input, sighash_type)
}

/// Computes the key-path sighashes of several inputs of one transaction with
/// one `SighashCache`, so the hashes over all prevouts, amounts, scripts,
/// sequences and outputs that BIP341 shares between inputs are computed once:
/// the cost is linear in the transaction's size, not quadratic.
pub(crate) struct Sighasher<'a> {
    cache: SighashCache<&'a Transaction>,
    prevouts: &'a [TxOut],
}

impl<'a> Sighasher<'a> {
    pub(crate) fn new(tx: &'a Transaction, prevouts: &'a [TxOut]) -> Self {
        Self {
            cache: SighashCache::new(tx),
            prevouts,
        }
    }

    /// The key-path sighash of `input` under `sighash_type`.
    pub(crate) fn key_spend(
        &mut self,
        input: InputIndex,
        sighash_type: TapSighashType,
    ) -> Result<KeySpendSighash, Error> {
        let sighash = self
            .cache
            .taproot_key_spend_signature_hash(input.0, &Prevouts::All(self.prevouts), sighash_type)
            .map_err(|source| Error::Sighash { input, source })?;
        Ok(KeySpendSighash {
            input,
            sighash_type,
            sighash,
        })
    }
}

/// Returns BIP341's `SigMsg` for a key-path spend of `input`, prefixed with the
/// epoch byte `0x00` (the form the BIP341 wallet vectors list as `sigMsg`);
/// its `TapSighash` tagged hash is [`key_spend_sighash`]'s value.
///
/// This exists for inspection and for the vector tests, which check that the
/// signed message, not only its hash, is what BIP341 specifies.
///
/// # Errors
/// As [`key_spend_sighash`].
pub fn key_spend_sig_msg(
    tx: &Transaction,
    prevouts: &[TxOut],
    input: InputIndex,
    sighash_type: TapSighashType,
) -> Result<Vec<u8>, Error> {
    let mut msg = Vec::new();
    SighashCache::new(tx)
        .taproot_encode_signing_data_to(
            &mut msg,
            input.0,
            &Prevouts::All(prevouts),
            None,
            None,
            sighash_type,
        )
        .map_err(|e| match e {
            bitcoin::sighash::SigningDataError::Sighash(source) => Error::Sighash { input, source },
            // Writing to a Vec cannot fail; keep the variant total anyway.
            bitcoin::sighash::SigningDataError::Io(_) => Error::SighashEncoding { input },
        })?;
    Ok(msg)
}
