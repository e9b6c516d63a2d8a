//! Bitcoin Core's own script interpreter over a finished transaction, for
//! thresig's tests (a dev-dependency only; never linked into a signer).
//!
//! It is a crate of its own, not a feature of `thresig-tx`: a workspace
//! test build unifies features, and a feature of `thresig-tx` would put
//! libbitcoinconsensus (C++) into every crate that links `thresig-tx`,
//! the C library `thresig-ffi` builds for other languages included.
//!
//! libbitcoinconsensus 0.106 is called directly, with every spent output
//! passed so that the Taproot flags apply. rust-bitcoin 0.32's
//! `bitcoinconsensus` feature is not used for this: it links an older
//! library without Taproot checks, under which Taproot witnesses pass
//! unchecked.

use bitcoin::{Transaction, TxOut};

/// An input Bitcoin Core refused, with its error.
#[derive(Debug)]
pub struct CoreRefusal {
    /// The first input refused.
    pub input: usize,
    /// libbitcoinconsensus's error.
    pub error: bitcoinconsensus::Error,
}

/// Runs Bitcoin Core's interpreter on every input of `tx` spending
/// `prevouts` (one per input, in order), with all pre-Taproot and the
/// Taproot verification flags.
///
/// # Errors
/// The first input refused. A prevout amount or script length that does
/// not fit the library's types is refused as
/// `ERR_SPENT_OUTPUTS_MISMATCH` at input 0.
pub fn verify_with_core(tx: &Transaction, prevouts: &[TxOut]) -> Result<(), CoreRefusal> {
    let tx_bytes = bitcoin::consensus::serialize(tx);
    let utxos = prevouts
        .iter()
        .map(|p| {
            Some(bitcoinconsensus::Utxo {
                script_pubkey: p.script_pubkey.as_bytes().as_ptr(),
                script_pubkey_len: u32::try_from(p.script_pubkey.len()).ok()?,
                value: i64::try_from(p.value.to_sat()).ok()?,
            })
        })
        .collect::<Option<Vec<_>>>()
        .ok_or(CoreRefusal {
            input: 0,
            error: bitcoinconsensus::Error::ERR_SPENT_OUTPUTS_MISMATCH,
        })?;
    let flags = bitcoinconsensus::VERIFY_ALL_PRE_TAPROOT | bitcoinconsensus::VERIFY_TAPROOT;
    for (input, p) in prevouts.iter().enumerate() {
        bitcoinconsensus::verify_with_flags(
            p.script_pubkey.as_bytes(),
            p.value.to_sat(),
            &tx_bytes,
            Some(&utxos),
            input,
            flags,
        )
        .map_err(|error| CoreRefusal { input, error })?;
    }
    Ok(())
}
