//! `thresig sweep`: the emergency rekey's one spend. Builds the PSBT that
//! pays every listed output of a `rekeying` wallet to its configured
//! successor's output key, less the fee, and signs it through ROAST as
//! `thresig sign` does (the same code). Each signer checks for itself that
//! every output pays the successor it has `active` and that the fee is
//! within the wallet's policy; this command only builds what they accept.

use crate::MEMBER_CONFIG;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use bitcoin::Amount;
use bitcoin::absolute::LockTime;
use clap::{ArgGroup, Args};
use thresig_tx::{Destination, Payment, SpendInput, TaprootWallet, WalletPsbt, build_psbt};

use crate::AfterChange;
use crate::member::{Coordinating, Outputs, keyed, own, runtime, sign_and_write, with_suffix};
use crate::psbt::read_inputs_file;

/// `thresig sweep`.
#[derive(Args)]
#[command(group(ArgGroup::new("fee_choice").required(true).args(["fee", "fee_rate"])))]
pub(crate) struct SweepArgs {
    /// The coordinating member's configuration file.
    #[arg(long, value_name = "FILE", default_value = MEMBER_CONFIG)]
    config: PathBuf,
    /// The rekeying wallet; its configuration names the successor.
    #[arg(long)]
    wallet: String,
    /// The wallet's outputs to sweep, as JSON: `[{"txid", "vout",
    /// "value_sat"}]` (docs/lifecycle.md, "The inputs file").
    #[arg(long, value_name = "FILE")]
    inputs_file: PathBuf,
    /// The fee, in satoshis.
    #[arg(long, value_name = "SAT")]
    fee: Option<u64>,
    /// The fee rate, in satoshis per virtual byte of the signed sweep.
    #[arg(long, value_name = "SAT_PER_VB")]
    fee_rate: Option<u64>,
    /// Where to write the final transaction (hex); default
    /// `<INPUTS_FILE>.sweep.tx`, and the signed PSBT beside it
    /// (`<OUT>.psbt`).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// The smallest output a standard relay policy forwards for a P2TR
/// script (Bitcoin Core's dust threshold at its default dust relay fee).
const P2TR_DUST: Amount = Amount::from_sat(330);

/// Runs `thresig sweep`.
///
/// # Errors
/// A wallet without a successor, a successor without a key on this member,
/// an unreadable inputs file, a fee that leaves nothing worth sending, and
/// the refusals of the signing run.
pub(crate) fn main(args: &SweepArgs) -> Result<()> {
    let c = Coordinating::load(&args.config)?;
    let wallet = c.wallet(&args.wallet)?;
    let successor = wallet.config.successor.clone().with_context(|| {
        format!(
            "wallet {} names no successor in {}; add `successor = \"<wallet>\"` to its [[wallets]] entry in every member's configuration",
            wallet.id(),
            args.config.display()
        )
    })?;
    let runtime = runtime()?;
    let old = keyed(own(&runtime, &c.peers, &c.node, wallet.id()))?;
    let new = keyed(own(&runtime, &c.peers, &c.node, &successor)).map_err(|e| {
        // No key yet (`keyed` made it terminal): say which wallet needs it.
        if e.is::<AfterChange>() {
            anyhow::Error::new(AfterChange(format!(
                "the successor {successor} has no key on this member ({e}); run `thresig dkg --config {} --wallet {successor}` before the sweep",
                args.config.display()
            )))
        } else {
            e
        }
    })?;
    let inputs = read_inputs_file(&args.inputs_file, &old.spend)?;
    if inputs.is_empty() {
        bail!(
            "{} lists no outputs; list every output of wallet {} still unspent",
            args.inputs_file.display(),
            wallet.id()
        );
    }
    let psbt = sweep_psbt(&old.spend, &inputs, &new.spend, Fee::from_args(args)?)?;
    let tx = args
        .out
        .clone()
        .unwrap_or_else(|| with_suffix(&args.inputs_file, "sweep.tx"));
    let out = Outputs {
        psbt: with_suffix(&tx, "psbt"),
        tx,
        json: args.json,
    };
    sign_and_write(&runtime, &c, wallet, &old, psbt, &out)
}

/// How the sweep's fee is set.
#[derive(Clone, Copy, Debug)]
enum Fee {
    Absolute(Amount),
    /// Satoshis per virtual byte of the signed transaction.
    Rate(u64),
}

impl Fee {
    fn from_args(args: &SweepArgs) -> Result<Self> {
        match (args.fee, args.fee_rate) {
            (Some(fee), None) => Ok(Self::Absolute(Amount::from_sat(fee))),
            (None, Some(rate)) => Ok(Self::Rate(rate)),
            _ => bail!("pass exactly one of --fee and --fee-rate"),
        }
    }
}

/// The PSBT spending every input of `old` to `new`'s output key alone:
/// one output of the inputs' total less the fee.
fn sweep_psbt(
    old: &TaprootWallet,
    inputs: &[SpendInput],
    new: &TaprootWallet,
    fee: Fee,
) -> Result<WalletPsbt> {
    let total = inputs
        .iter()
        .try_fold(Amount::ZERO, |sum, i| sum.checked_add(i.value))
        .context("the inputs' values overflow; check the inputs file")?;
    let pay = |value| {
        build_psbt(
            old,
            inputs,
            &[Payment {
                destination: Destination::Address(new.address()),
                value,
            }],
            LockTime::ZERO,
        )
    };
    let fee = match fee {
        Fee::Absolute(fee) => fee,
        // The size does not depend on the output's value: measure a draft.
        Fee::Rate(rate) => Amount::from_sat(rate)
            .checked_mul(pay(total)?.estimated_vsize())
            .context("the fee overflows; check --fee-rate")?,
    };
    let value = total
        .checked_sub(fee)
        .filter(|v| *v >= P2TR_DUST)
        .with_context(|| {
            format!(
                "the fee {fee} leaves less than {P2TR_DUST} of the inputs' {total}; use a lower fee or sweep more outputs"
            )
        })?;
    Ok(pay(value)?)
}

#[cfg(test)]
mod tests {
    use bitcoin::key::XOnlyPublicKey;
    use bitcoin::{OutPoint, Txid};
    use thresig_tx::Network;

    use super::*;

    fn wallet(byte: u8) -> TaprootWallet {
        let secret = bitcoin::secp256k1::SecretKey::from_slice(&[byte; 32]).unwrap();
        let (x, _): (XOnlyPublicKey, _) = secret
            .public_key(bitcoin::secp256k1::SECP256K1)
            .x_only_public_key();
        TaprootWallet::new(Network::Regtest, x, None)
    }

    fn inputs(w: &TaprootWallet, values: &[u64]) -> Vec<SpendInput> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| SpendInput {
                outpoint: OutPoint {
                    txid: <Txid as bitcoin::hashes::Hash>::from_byte_array([7; 32]),
                    vout: u32::try_from(i).unwrap(),
                },
                value: Amount::from_sat(*v),
                script_pubkey: w.script_pubkey().clone(),
            })
            .collect()
    }

    #[test]
    fn the_sweep_pays_everything_less_the_fee_to_the_successor_alone() {
        let (old, new) = (wallet(1), wallet(2));
        let ins = inputs(&old, &[50_000, 70_000]);
        let psbt = sweep_psbt(&old, &ins, &new, Fee::Rate(3)).unwrap();
        let tx = psbt.unsigned_tx();
        assert_eq!(tx.output.len(), 1);
        assert_eq!(&tx.output[0].script_pubkey, new.script_pubkey());
        let fee = 120_000 - tx.output[0].value.to_sat();
        assert_eq!(fee, 3 * psbt.estimated_vsize());
        let fixed = sweep_psbt(&old, &ins, &new, Fee::Absolute(Amount::from_sat(999))).unwrap();
        assert_eq!(fixed.unsigned_tx().output[0].value.to_sat(), 120_000 - 999);
    }

    #[test]
    fn a_fee_that_leaves_dust_is_refused() {
        let (old, new) = (wallet(1), wallet(2));
        let ins = inputs(&old, &[1_000]);
        let err = sweep_psbt(&old, &ins, &new, Fee::Absolute(Amount::from_sat(700))).unwrap_err();
        assert!(err.to_string().contains("lower fee"), "{err}");
        assert!(sweep_psbt(&old, &ins, &new, Fee::Absolute(Amount::from_sat(670))).is_ok());
    }
}
