//! Building a PSBT that spends a wallet's P2TR outputs by key path.

use bitcoin::absolute::LockTime;
use bitcoin::psbt::Psbt;
use bitcoin::transaction::Version;
use bitcoin::{Address, Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut};

use crate::sighash::InputIndex;
use crate::{Error, TaprootWallet, WalletPsbt};

/// One output of the wallet to spend: where it is, what it holds, and the
/// scriptPubKey it pays (which must be the wallet's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpendInput {
    /// The output being spent.
    pub outpoint: OutPoint,
    /// Its value (committed to by every DEFAULT/ALL signature).
    pub value: Amount,
    /// Its scriptPubKey.
    pub script_pubkey: ScriptBuf,
}

/// Where an output pays.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Destination {
    /// An address, already checked for the wallet's network
    /// (see [`crate::Network::parse_address`]).
    Address(Address),
    /// A raw scriptPubKey (for example an `OP_RETURN`), taken as given.
    Script(ScriptBuf),
}

/// One output of the transaction to build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    /// Where it pays.
    pub destination: Destination,
    /// How much.
    pub value: Amount,
}

/// Builds a version-2 PSBT that spends `inputs` (all the wallet's own P2TR
/// outputs) to `outputs`, with `witness_utxo`, `tap_internal_key` and
/// `tap_merkle_root` (BIP371) on every input, sequence `0xfffffffd`
/// (replaceable, lock time enabled) and the given lock time.
///
/// The fee is what the inputs hold beyond the outputs; the caller chooses it.
///
/// # Errors
/// [`Error::NoInputs`] / [`Error::NoOutputs`] for an empty side,
/// [`Error::InputNotWallet`] if an input's script is not the wallet's,
/// [`Error::WrongNetwork`] for an address of another network, and any
/// validation error of [`WalletPsbt::from_psbt`] (e.g. outputs exceeding inputs).
pub fn build_psbt(
    wallet: &TaprootWallet,
    inputs: &[SpendInput],
    outputs: &[Payment],
    lock_time: LockTime,
) -> Result<WalletPsbt, Error> {
    if inputs.is_empty() {
        return Err(Error::NoInputs);
    }
    if outputs.is_empty() {
        return Err(Error::NoOutputs);
    }
    if let Some(i) = inputs
        .iter()
        .position(|i| i.script_pubkey != *wallet.script_pubkey())
    {
        return Err(Error::InputNotWallet {
            input: InputIndex(i),
        });
    }
    let output = outputs
        .iter()
        .map(|p| {
            Ok(TxOut {
                value: p.value,
                script_pubkey: destination_script(wallet, &p.destination)?,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let tx = Transaction {
        version: Version::TWO,
        lock_time,
        input: inputs
            .iter()
            .map(|i| TxIn {
                previous_output: i.outpoint,
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                ..TxIn::default()
            })
            .collect(),
        output,
    };
    let mut psbt = Psbt::from_unsigned_tx(tx).map_err(|source| Error::PsbtDecode { source })?;
    for (psbt_input, spend) in psbt.inputs.iter_mut().zip(inputs) {
        psbt_input.witness_utxo = Some(TxOut {
            value: spend.value,
            script_pubkey: spend.script_pubkey.clone(),
        });
        psbt_input.tap_internal_key = Some(wallet.internal_key());
        psbt_input.tap_merkle_root = wallet.merkle_root();
    }
    for (psbt_output, txout) in psbt.outputs.iter_mut().zip(&psbt.unsigned_tx.output) {
        // Mark change (BIP371) so that other tools, and the policy's change
        // rule, recognise it.
        if txout.script_pubkey == *wallet.script_pubkey() {
            psbt_output.tap_internal_key = Some(wallet.internal_key());
        }
    }
    WalletPsbt::from_psbt(psbt, wallet)
}

fn destination_script(
    wallet: &TaprootWallet,
    destination: &Destination,
) -> Result<ScriptBuf, Error> {
    match destination {
        Destination::Address(address) => {
            if address
                .as_unchecked()
                .is_valid_for_network(wallet.network().to_bitcoin())
            {
                Ok(address.script_pubkey())
            } else {
                Err(Error::WrongNetwork {
                    network: wallet.network(),
                    address: address.to_string(),
                })
            }
        }
        Destination::Script(script) => Ok(script.clone()),
    }
}
