//! Blame proofs on the command line: the files `thresig sign` and the demo
//! write for each culprit (`culprit-<seat>.proof.json`), and `thresig
//! blame verify`, which checks one against the roster of a member's
//! configuration alone (docs/blame.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use serde_json::json;
use thresig_cluster::config::Config;
use thresig_cluster::file::read_bounded;
use thresig_crypto::Seat;
use thresig_engine::BlameProof;

use crate::because;

/// The largest proof file read: a proof holds one round-2 request (its
/// PSBT within `MAX_TRANSACTION_FILE_BYTES` and its packages), hex-encoded,
/// so twice the transaction cap bounds it.
const MAX_PROOF_FILE_BYTES: u64 = 2 * thresig_cluster::file::MAX_TRANSACTION_FILE_BYTES;

/// `thresig blame`.
#[derive(Args)]
pub(crate) struct BlameArgs {
    #[command(subcommand)]
    command: BlameCommand,
}

#[derive(Subcommand)]
enum BlameCommand {
    /// Check a culprit proof (`culprit-<seat>.proof.json`) against the
    /// roster of a member's configuration: exit 0 when it proves an
    /// invalid share, 1 when it does not.
    Verify(VerifyArgs),
}

/// `thresig blame verify`.
#[derive(Args)]
struct VerifyArgs {
    /// A member's configuration file (its roster's identity keys are what
    /// the proof is checked against; no store or running signer is needed).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The proof file.
    #[arg(value_name = "PROOF")]
    proof: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// The name of a culprit's proof file: by cluster seat, as `thresig sign`
/// reports culprits.
fn proof_file(member: Seat) -> String {
    format!("culprit-{member}.proof.json")
}

/// Writes each proof into `dir` as `culprit-<seat>.proof.json` and returns
/// the paths written.
///
/// # Errors
/// A proof that does not serialize or a file that cannot be written.
pub(crate) fn write_proofs(
    dir: &Path,
    proofs: &BTreeMap<Seat, BlameProof>,
) -> Result<Vec<PathBuf>> {
    proofs
        .iter()
        .map(|(member, proof)| {
            let path = dir.join(proof_file(*member));
            let text = serde_json::to_string_pretty(proof)?;
            std::fs::write(&path, text + "\n")
                .map_err(|e| because(format!("writing {}", path.display()), e))?;
            Ok(path)
        })
        .collect()
}

/// Runs `thresig blame`.
pub(crate) fn main(args: &BlameArgs) -> Result<()> {
    match &args.command {
        BlameCommand::Verify(args) => verify(args),
    }
}

fn verify(args: &VerifyArgs) -> Result<()> {
    let bytes = read_bounded(&args.proof, MAX_PROOF_FILE_BYTES)?;
    let proof: BlameProof = serde_json::from_slice(&bytes).map_err(|e| {
        because(
            format!(
                "{}: not a blame proof; pass a culprit-<seat>.proof.json as `thresig sign` writes it",
                args.proof.display()
            ),
            e,
        )
    })?;
    let config = Config::load(&args.config)?;
    let node = config.node.as_ref().with_context(|| {
        format!(
            "{}: not a cluster member's configuration (no `member` and [[members]]); pass a \
             member's signer.toml",
            args.config.display()
        )
    })?;
    let id = &proof.request.wallet;
    let wallet = node.wallet(id).with_context(|| {
        format!(
            "the proof is for wallet {id}, which is not in {}; verify it with the configuration \
             of a member of {id}",
            args.config.display()
        )
    })?;
    let fault = proof
        .verify(&wallet.config)
        .map_err(|e| because(format!("{}: {}", args.proof.display(), e.code()), e))?;
    let member = wallet.cluster_seat(fault.seat).unwrap_or(fault.seat);
    if args.json {
        println!(
            "{}",
            json!({
                "verified": true,
                "wallet": fault.wallet.as_str(),
                "member": member.get(),
                "wallet_seat": fault.seat.get(),
                "input": fault.input,
            })
        );
    } else {
        println!(
            "proof verified: member {member} (wallet seat {}) signed an invalid share for input {} \
             of wallet {}",
            fault.seat, fault.input, fault.wallet
        );
    }
    Ok(())
}
