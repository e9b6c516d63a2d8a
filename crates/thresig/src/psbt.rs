//! `thresig psbt`: build a Taproot key-path PSBT, inspect it against a
//! signing policy, and finalize it with aggregated signatures.
//!
//! Glue only: every check is the `thresig-tx` crate's.

use crate::MEMBER_CONFIG;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result, bail};
use bitcoin::absolute::LockTime;
use bitcoin::hashes::Hash;
use bitcoin::key::XOnlyPublicKey;
use bitcoin::taproot::TapNodeHash;
use bitcoin::{Amount, OutPoint, ScriptBuf, Txid};
use clap::{Args, Subcommand};
use serde::Deserialize;
use thresig_cluster::file::{MAX_TRANSACTION_FILE_BYTES, read_bounded};
use thresig_tx::{
    ChargeLog, Destination, InputIndex, Network, Outcome, Payment, Policy, SpendInput,
    TaprootWallet, UnixTime, WalletMode, WalletPsbt, build_psbt,
};

use crate::because;
use crate::member::{Coordinating, not_a_psbt, own, runtime};

/// `thresig psbt` and its subcommands.
#[derive(Args)]
pub(crate) struct PsbtArgs {
    #[command(subcommand)]
    command: PsbtCommand,
}

#[derive(Subcommand)]
enum PsbtCommand {
    /// Build a PSBT spending the wallet's outputs by key path; prints it in base64.
    Build(BuildArgs),
    /// Summarize a PSBT and the wallet policy's verdict on each rule.
    Inspect(InspectArgs),
    /// Insert aggregated signatures (each checked under the output key) and
    /// print the final transaction in hex.
    Finalize(FinalizeArgs),
}

/// The wallet a PSBT spends from (keys and network from the operator, never
/// from the PSBT).
#[derive(Args)]
struct WalletArgs {
    /// The wallet's BIP341 internal key (x-only, 32 bytes hex).
    #[arg(long, value_name = "HEX")]
    internal_key: String,
    /// The wallet's script-tree root (32 bytes hex), if it has one.
    #[arg(long, value_name = "HEX")]
    merkle_root: Option<String>,
    /// The Bitcoin network: bitcoin, testnet, signet or regtest.
    #[arg(long)]
    network: String,
}

#[derive(Args)]
struct BuildArgs {
    #[command(flatten)]
    wallet: WalletArgs,
    /// An input: `txid:vout:value_sat:script_hex` (repeatable).
    #[arg(long = "input", value_name = "TXID:VOUT:VALUE_SAT:SCRIPT_HEX")]
    inputs: Vec<String>,
    /// A JSON file of inputs: `[{"txid", "vout", "value_sat", "script_pubkey"}]`
    /// (`script_pubkey` defaults to the wallet's own).
    #[arg(long, value_name = "FILE")]
    inputs_file: Option<PathBuf>,
    /// An output: `address:value_sat` (repeatable).
    #[arg(long = "output", value_name = "ADDRESS:VALUE_SAT", required = true)]
    outputs: Vec<String>,
    /// Print `{"psbt": ..., "txid": ...}` instead of the bare base64.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct InspectArgs {
    /// The signer's configuration: the wallet's policy and network come
    /// from it, its keys from the running signer it describes.
    #[arg(long, value_name = "FILE", default_value = MEMBER_CONFIG)]
    config: PathBuf,
    /// The wallet, as the configuration defines it.
    #[arg(long)]
    wallet: String,
    /// A file holding the PSBT in base64.
    #[arg(long, value_name = "FILE")]
    psbt: PathBuf,
    /// The time to evaluate time windows at (Unix seconds; default now).
    #[arg(long, value_name = "UNIX_SECONDS")]
    now: Option<u64>,
    /// Print JSON instead of the human summary.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct FinalizeArgs {
    #[command(flatten)]
    wallet: WalletArgs,
    /// A file holding the PSBT in base64.
    #[arg(long, value_name = "FILE")]
    psbt: PathBuf,
    /// The aggregated signature of each wallet input, in input order
    /// (64 bytes hex, or 65 with a non-default sighash type byte).
    #[arg(long = "signature", value_name = "HEX", required = true)]
    signatures: Vec<String>,
    /// Print `{"txid": ..., "tx": ...}` instead of the bare hex.
    #[arg(long)]
    json: bool,
}

/// Runs `thresig psbt …`; `now` is the caller's clock (Unix seconds).
///
/// # Errors
/// Any invalid argument, unreadable file, or refusal by the `tx` crate.
pub(crate) fn main(args: &PsbtArgs, now: u64) -> Result<()> {
    match &args.command {
        PsbtCommand::Build(a) => build(a),
        PsbtCommand::Inspect(a) => {
            let (wallet, policy) = configured_wallet(&a.config, &a.wallet)?;
            let psbt = read_psbt(&a.psbt, &wallet)?;
            let report = inspect(&psbt, &policy, UnixTime(a.now.unwrap_or(now)));
            if a.json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_text());
            }
            Ok(())
        }
        PsbtCommand::Finalize(a) => finalize(a),
    }
}

fn build(a: &BuildArgs) -> Result<()> {
    let wallet = wallet(&a.wallet)?;
    let mut inputs = a
        .inputs
        .iter()
        .map(|s| parse_input(s))
        .collect::<Result<Vec<_>>>()?;
    if let Some(path) = &a.inputs_file {
        inputs.extend(read_inputs_file(path, &wallet)?);
    }
    let outputs = a
        .outputs
        .iter()
        .map(|s| parse_output(s, wallet.network()))
        .collect::<Result<Vec<_>>>()?;
    let psbt = build_psbt(&wallet, &inputs, &outputs, LockTime::ZERO)?;
    if a.json {
        let json = serde_json::json!({
            "psbt": psbt.to_base64(),
            "txid": psbt.txid().to_string(),
        });
        println!("{json}");
    } else {
        println!("{}", psbt.to_base64());
    }
    Ok(())
}

fn finalize(a: &FinalizeArgs) -> Result<()> {
    let wallet = wallet(&a.wallet)?;
    let mut psbt = read_psbt(&a.psbt, &wallet)?;
    let inputs = psbt.wallet_inputs().to_vec();
    if inputs.len() != a.signatures.len() {
        bail!(
            "the PSBT has {} wallet inputs but {} signatures were given",
            inputs.len(),
            a.signatures.len()
        );
    }
    for (input, sig) in inputs.into_iter().zip(&a.signatures) {
        let bytes =
            hex::decode(sig).map_err(|e| because(format!("{input}: signature is not hex"), e))?;
        psbt.insert_signature(input, &bytes)?;
    }
    let tx = psbt.extract_transaction()?;
    let hex = bitcoin::consensus::encode::serialize_hex(&tx);
    if a.json {
        let json = serde_json::json!({ "txid": tx.compute_txid().to_string(), "tx": hex });
        println!("{json}");
    } else {
        println!("{hex}");
    }
    Ok(())
}

/// One input as listed in an `--inputs-file` (docs/lifecycle.md, "The
/// inputs file"): an output of the wallet, its script the wallet's own
/// unless given.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputJson {
    txid: String,
    vout: u32,
    value_sat: u64,
    script_pubkey: Option<String>,
}

/// The inputs listed in the JSON file at `path`, spending outputs of
/// `wallet`: an input without `script_pubkey` pays the wallet's own.
pub(crate) fn read_inputs_file(path: &Path, wallet: &TaprootWallet) -> Result<Vec<SpendInput>> {
    let bytes = read_bounded(path, MAX_TRANSACTION_FILE_BYTES)?;
    let listed: Vec<InputJson> = serde_json::from_slice(&bytes).map_err(|e| {
        because(
            format!(
                "{}: not a JSON list of inputs; write [{{\"txid\", \"vout\", \"value_sat\"}}, ...] (docs/lifecycle.md)",
                path.display()
            ),
            e,
        )
    })?;
    let own = hex::encode(wallet.script_pubkey().as_bytes());
    listed
        .iter()
        .map(|i| {
            let script = i.script_pubkey.as_deref().unwrap_or(&own);
            spend_input(&i.txid, i.vout, i.value_sat, script)
        })
        .collect()
}

fn wallet(a: &WalletArgs) -> Result<TaprootWallet> {
    let network = Network::from_str(&a.network)?;
    let internal = XOnlyPublicKey::from_slice(&hex32(&a.internal_key, "--internal-key")?)
        .map_err(|e| because("--internal-key is not a valid x-only key", e))?;
    let root = a
        .merkle_root
        .as_deref()
        .map(|r| hex32(r, "--merkle-root").map(TapNodeHash::from_byte_array))
        .transpose()?;
    Ok(TaprootWallet::new(network, internal, root))
}

/// The wallet `id` as the member configuration at `path` defines it: its
/// keys from the member's running signer (the only source this member
/// trusts for them), its policy and network from the file.
fn configured_wallet(path: &Path, id: &str) -> Result<(TaprootWallet, Policy)> {
    let c = Coordinating::load(path)?;
    let wallet = c.wallet(id)?;
    let policy = wallet.config.validated_policy(c.node.network)?;
    let own = own(&runtime()?, &c.peers, &c.node, wallet.id())?;
    Ok((own.spend, policy))
}

fn hex32(text: &str, what: &str) -> Result<[u8; 32]> {
    let bytes = hex::decode(text).map_err(|e| because(format!("{what} is not hex"), e))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("{what} must be 32 bytes"))
}

fn read_psbt(path: &Path, wallet: &TaprootWallet) -> Result<WalletPsbt> {
    let bytes = read_bounded(path, MAX_TRANSACTION_FILE_BYTES)?;
    let text = String::from_utf8(bytes).map_err(|_| {
        anyhow::anyhow!(
            "{}: not base64 text; pass a PSBT in base64, as `thresig psbt build` writes it",
            path.display()
        )
    })?;
    WalletPsbt::from_base64(&text, wallet).map_err(|e| not_a_psbt(path, e))
}

fn parse_input(text: &str) -> Result<SpendInput> {
    let parts: Vec<&str> = text.split(':').collect();
    let [txid, vout, value, script] = parts.as_slice() else {
        bail!("input {text:?} is not txid:vout:value_sat:script_hex");
    };
    let vout = vout
        .parse()
        .map_err(|e| because(format!("input {text:?}: bad vout"), e))?;
    let value = value
        .parse()
        .map_err(|e| because(format!("input {text:?}: bad value"), e))?;
    spend_input(txid, vout, value, script)
}

fn spend_input(txid: &str, vout: u32, value_sat: u64, script_hex: &str) -> Result<SpendInput> {
    let txid = Txid::from_str(txid).map_err(|e| because(format!("bad txid {txid:?}"), e))?;
    let script =
        hex::decode(script_hex).map_err(|e| because(format!("bad script {script_hex:?}"), e))?;
    Ok(SpendInput {
        outpoint: OutPoint { txid, vout },
        value: Amount::from_sat(value_sat),
        script_pubkey: ScriptBuf::from_bytes(script),
    })
}

fn parse_output(text: &str, network: Network) -> Result<Payment> {
    let (address, value) = text
        .rsplit_once(':')
        .with_context(|| format!("output {text:?} is not address:value_sat"))?;
    let value: u64 = value
        .parse()
        .map_err(|e| because(format!("output {text:?}: bad value"), e))?;
    Ok(Payment {
        destination: Destination::Address(network.parse_address(address)?),
        value: Amount::from_sat(value),
    })
}

/// What `psbt inspect` shows: the transaction and the policy's verdict on
/// each rule.
pub(crate) struct Inspection {
    txid: String,
    inputs: Vec<(String, u64, bool)>,
    outputs: Vec<(String, u64, bool)>,
    fee: u64,
    vsize: u64,
    verdicts: Vec<(&'static str, String)>,
    approved: bool,
}

/// Evaluates `psbt` under `policy` at `now` for an active wallet. The rate
/// rules see an empty ledger (this command has no view of the signer's):
/// their verdict says whether one more transaction fits the limit at all.
pub(crate) fn inspect(psbt: &WalletPsbt, policy: &Policy, now: UnixTime) -> Inspection {
    let wallet = psbt.wallet();
    let tx = psbt.unsigned_tx();
    let inputs = tx
        .input
        .iter()
        .zip(psbt.prevouts())
        .enumerate()
        .map(|(i, (txin, prevout))| {
            let mine = psbt.wallet_inputs().contains(&InputIndex(i));
            (
                txin.previous_output.to_string(),
                prevout.value.to_sat(),
                mine,
            )
        })
        .collect();
    let outputs = tx
        .output
        .iter()
        .map(|o| {
            let to = bitcoin::Address::from_script(&o.script_pubkey, wallet.network().to_bitcoin())
                .map_or_else(|_| o.script_pubkey.to_hex_string(), |a| a.to_string());
            (
                to,
                o.value.to_sat(),
                o.script_pubkey == *wallet.script_pubkey(),
            )
        })
        .collect();
    let report = policy.evaluate(psbt, &WalletMode::Active, now, &ChargeLog::new());
    let verdicts = report
        .outcomes()
        .iter()
        .map(|(rule, outcome)| {
            let verdict = match outcome {
                Outcome::Passed => "pass".to_owned(),
                Outcome::Denied(v) => format!("DENIED {v:?}"),
                Outcome::NotApplicable => "n/a".to_owned(),
                _ => "unknown".to_owned(),
            };
            (rule.as_str(), verdict)
        })
        .collect();
    Inspection {
        txid: psbt.txid().to_string(),
        inputs,
        outputs,
        fee: psbt.fee().to_sat(),
        vsize: psbt.estimated_vsize(),
        verdicts,
        approved: report.first_denial().is_none(),
    }
}

impl Inspection {
    /// The human summary.
    pub(crate) fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "txid {}", self.txid);
        let _ = writeln!(out, "inputs:");
        for (outpoint, value, mine) in &self.inputs {
            let tag = if *mine { "wallet" } else { "foreign" };
            let _ = writeln!(out, "  {outpoint}  {value} sat  ({tag})");
        }
        let _ = writeln!(out, "outputs:");
        for (to, value, change) in &self.outputs {
            let tag = if *change { " (wallet)" } else { "" };
            let _ = writeln!(out, "  {to}  {value} sat{tag}");
        }
        let rate = self.fee as f64 / self.vsize.max(1) as f64;
        let _ = writeln!(
            out,
            "fee {} sat, {} vB estimated, {rate:.2} sat/vB",
            self.fee, self.vsize
        );
        let _ = writeln!(out, "policy:");
        for (rule, verdict) in &self.verdicts {
            let _ = writeln!(out, "  {rule:<22} {verdict}");
        }
        let verdict = if self.approved { "APPROVED" } else { "DENIED" };
        let _ = writeln!(
            out,
            "verdict: {verdict} (rate rules against an empty ledger)"
        );
        out
    }

    /// The same as one JSON object.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let rows = |v: &[(String, u64, bool)], flag: &str| -> Vec<serde_json::Value> {
            v.iter()
                .map(|(a, value, f)| serde_json::json!({ "id": a, "value_sat": value, flag: f }))
                .collect()
        };
        let rules: serde_json::Map<String, serde_json::Value> = self
            .verdicts
            .iter()
            .map(|(r, v)| ((*r).to_owned(), serde_json::Value::String(v.clone())))
            .collect();
        serde_json::json!({
            "txid": self.txid,
            "inputs": rows(&self.inputs, "wallet"),
            "outputs": rows(&self.outputs, "wallet"),
            "fee_sat": self.fee,
            "vsize": self.vsize,
            "rules": rules,
            "approved": self.approved,
        })
    }
}
