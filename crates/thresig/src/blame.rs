//! Blame proofs on the command line: the files `thresig sign`, `thresig
//! dkg`, `thresig refresh` and the demo write for each culprit
//! (`culprit-<seat>.proof.json`), and `thresig blame verify`, which checks
//! one of any kind against the roster of a member's configuration alone
//! (docs/blame.md).

use crate::MEMBER_CONFIG;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::json;
use thresig_cluster::DkgError;
use thresig_cluster::config::Config;
use thresig_cluster::file::read_bounded;
use thresig_crypto::Round1Fault;
use thresig_crypto::Seat;
use thresig_engine::{BlameError, BlameFile, DkgShareFault, DkgShareProof};

use crate::because;

/// The largest proof file read. A proof holds one round-2 request, which
/// a signer answered only within its `limits.max_request_bytes` (at most
/// [`thresig_daemon::MAX_REQUEST_BYTES`]), and the answer, smaller than the
/// request (a share and a commitment pair for each of its packages). Hex
/// doubles both, and the JSON around them (field names, quotes, the
/// indentation of one line per package) adds well under a quarter. A DKG
/// proof's round-1 messages are one part-2 request's, read by a member
/// within the same limit, and its other two messages are small.
const MAX_PROOF_FILE_BYTES: u64 = 5 * thresig_daemon::MAX_REQUEST_BYTES;

/// `thresig blame`.
#[derive(Args)]
pub(crate) struct BlameArgs {
    #[command(subcommand)]
    command: BlameCommand,
}

#[derive(Subcommand)]
enum BlameCommand {
    /// Check a culprit proof (`culprit-<seat>.proof.json` of `thresig
    /// sign`, `thresig dkg` or `thresig refresh`) against the roster of a
    /// member's configuration: exit 0 when it proves a fault (an invalid
    /// signature share, DKG round-2 package or DKG round-1 package), 1 when
    /// it does not.
    Verify(VerifyArgs),
}

/// `thresig blame verify`.
#[derive(Args)]
struct VerifyArgs {
    /// A member's configuration file (its roster's identity keys are what
    /// the proof is checked against; no store or running signer is needed).
    #[arg(long, value_name = "FILE", default_value = MEMBER_CONFIG)]
    config: PathBuf,
    /// The proof file.
    #[arg(value_name = "PROOF")]
    proof: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// How many names one member's proofs take in one directory before
/// writing gives up: `culprit-<seat>.proof.json`, then
/// `culprit-<seat>-2.proof.json` and on.
const MAX_PROOF_NAMES: u32 = 1000;

/// The name of a culprit's `n`th proof file in a directory (from 1): by
/// cluster seat, as `thresig sign` reports culprits.
fn proof_file(member: Seat, n: u32) -> String {
    if n == 1 {
        format!("culprit-{member}.proof.json")
    } else {
        format!("culprit-{member}-{n}.proof.json")
    }
}

/// The proof files of one run: those written, and why each other was not.
#[derive(Debug, Default)]
pub(crate) struct ProofFiles {
    /// The files written.
    pub(crate) paths: Vec<PathBuf>,
    /// One message for each proof not written.
    pub(crate) failures: Vec<String>,
}

impl ProofFiles {
    /// Prints each failure as a warning on standard error.
    pub(crate) fn warn(&self) {
        for failure in &self.failures {
            eprintln!("warning: {failure}");
        }
    }
}

/// Writes each proof into `dir`, as `culprit-<seat>.proof.json` or, when a
/// file of that name exists (an earlier run's evidence), the first free
/// `culprit-<seat>-<n>.proof.json`: a proof never replaces another. Each
/// file appears whole or not at all (written to a temporary file, synced,
/// then linked under its name). A proof that cannot be written is reported
/// in the result, never an error: the caller's signatures must not be lost
/// for it.
pub(crate) fn write_proofs<P: Serialize>(dir: &Path, proofs: &BTreeMap<Seat, P>) -> ProofFiles {
    let mut files = ProofFiles::default();
    for (member, proof) in proofs {
        match write_proof(dir, *member, proof) {
            Ok(path) => files.paths.push(path),
            Err(e) => files.failures.push(format!(
                "the proof against member {member} was not written: {e}; free the directory {} \
                 (space, permissions, old proofs) before the next run",
                dir.display()
            )),
        }
    }
    files
}

fn write_proof(dir: &Path, member: Seat, proof: &impl Serialize) -> Result<PathBuf> {
    let text = serde_json::to_string_pretty(proof)? + "\n";
    let in_dir = |e| because(format!("writing a proof in {}", dir.display()), e);
    let mut temp = tempfile::Builder::new()
        .prefix(".culprit-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(in_dir)?;
    temp.write_all(text.as_bytes()).map_err(in_dir)?;
    temp.as_file().sync_all().map_err(in_dir)?;
    for n in 1..=MAX_PROOF_NAMES {
        let path = dir.join(proof_file(member, n));
        match temp.persist_noclobber(&path) {
            Ok(_) => {
                // The new name is durable only once the directory is.
                std::fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(in_dir)?;
                return Ok(path);
            }
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => temp = e.file,
            Err(e) => return Err(because(format!("writing {}", path.display()), e.error)),
        }
    }
    anyhow::bail!(
        "{} and {} more names for member {member} are taken; move older proofs away",
        proof_file(member, 1),
        MAX_PROOF_NAMES - 1
    )
}

/// Writes the proofs a failed DKG or refresh run holds against members
/// (one per accused member, if it holds any) into `dir` as
/// [`write_proofs`] does, and prints `culprit proof: <path>` on standard
/// error for the error that follows (or a warning when one could not be
/// written).
pub(crate) fn write_dkg_proof(dir: &Path, error: &DkgError) {
    let files = if let Some((seat, proof)) = error.round1_proof() {
        write_proofs(dir, &BTreeMap::from([(seat, proof)]))
    } else {
        let proofs: BTreeMap<Seat, &DkgShareProof> = error.proofs().into_iter().collect();
        if proofs.is_empty() {
            return;
        }
        write_proofs(dir, &proofs)
    };
    files.warn();
    print_proof_paths(&files.paths);
}

/// `culprit proof: <path>` on standard error for each of `paths`, before a
/// failed run's error.
pub(crate) fn print_proof_paths(paths: &[PathBuf]) {
    for path in paths {
        eprintln!("culprit proof: {} (`thresig blame verify`)", path.display());
    }
}

/// Runs `thresig blame`.
pub(crate) fn main(args: &BlameArgs) -> Result<()> {
    match &args.command {
        BlameCommand::Verify(args) => verify(args),
    }
}

fn verify(args: &VerifyArgs) -> Result<()> {
    let bytes = read_bounded(&args.proof, MAX_PROOF_FILE_BYTES)?;
    let proof = BlameFile::from_json(&bytes).map_err(|e| {
        because(
            format!(
                "{}: not a blame proof; pass a culprit-<seat>.proof.json as `thresig sign`, \
                 `thresig dkg` or `thresig refresh` writes it",
                args.proof.display()
            ),
            e,
        )
    })?;
    let config = Config::load(&args.config)?;
    let node = config.node(&args.config)?;
    let id = match &proof {
        BlameFile::Signing(p) => &p.request.wallet,
        BlameFile::DkgShare(p) => &p.wallet,
        BlameFile::DkgRound1(p) => &p.wallet,
    };
    let wallet = node.wallet(id).with_context(|| {
        format!(
            "the proof is for wallet {id}, which is not in {}; verify it with the configuration \
             of a member of {id}",
            args.config.display()
        )
    })?;
    let refused = |e: BlameError| because(format!("{}: {}", args.proof.display(), e.code()), e);
    let member = |seat: Seat| wallet.cluster_seat(seat).unwrap_or(seat);
    let (line, json) = match &proof {
        BlameFile::DkgShare(p) => {
            let fault = p.verify(&wallet.config).map_err(refused)?;
            let (accused, accuser) = (member(fault.accused), member(fault.accuser));
            let session = hex::encode(fault.session.0);
            (
                format!(
                    "proof verified: member {accused} (wallet seat {}) sent member {accuser} \
                     (wallet seat {}) an invalid DKG share ({}) in session {session} of wallet {}",
                    fault.accused,
                    fault.accuser,
                    dkg_fault_text(fault.fault),
                    fault.wallet
                ),
                json!({
                    "verified": true,
                    "kind": "dkg_share",
                    "wallet": fault.wallet.as_str(),
                    "member": accused.get(),
                    "wallet_seat": fault.accused.get(),
                    "recipient": accuser.get(),
                    "recipient_wallet_seat": fault.accuser.get(),
                    "session": session,
                    "fault": fault.fault.name(),
                }),
            )
        }
        BlameFile::DkgRound1(p) => {
            let fault = p.verify(&wallet.config).map_err(refused)?;
            let accused = member(fault.accused);
            let session = hex::encode(fault.session.0);
            (
                format!(
                    "proof verified: member {accused} (wallet seat {}) sent a round-1 package \
                     that {} in session {session} of wallet {}",
                    fault.accused,
                    round1_fault_text(fault.fault),
                    fault.wallet
                ),
                json!({
                    "verified": true,
                    "kind": "dkg_round1",
                    "wallet": fault.wallet.as_str(),
                    "member": accused.get(),
                    "wallet_seat": fault.accused.get(),
                    "session": session,
                    "fault": round1_fault_name(fault.fault),
                }),
            )
        }
        BlameFile::Signing(p) => {
            let fault = p.verify(&wallet.config).map_err(refused)?;
            let accused = member(fault.seat);
            (
                format!(
                    "proof verified: member {accused} (wallet seat {}) signed an invalid share \
                     for input {} of wallet {}",
                    fault.seat, fault.input, fault.wallet
                ),
                json!({
                    "verified": true,
                    "wallet": fault.wallet.as_str(),
                    "member": accused.get(),
                    "wallet_seat": fault.seat.get(),
                    "input": fault.input,
                }),
            )
        }
    };
    if args.json {
        println!("{json}");
    } else {
        println!("{line}");
    }
    Ok(())
}

/// How a verified DKG share proof's fault reads in `blame verify`'s line.
fn dkg_fault_text(fault: DkgShareFault) -> &'static str {
    match fault {
        DkgShareFault::Unopened => "it does not open with the recipient's session key",
        DkgShareFault::Undecodable => "it opens to no round-2 package",
        DkgShareFault::Invalid => "its share does not verify against the sender's commitments",
        // A fault this build does not know: named as such, not as another.
        _ => "it fails the recipient's part 3 checks",
    }
}

/// How a verified round-1 proof's fault reads in `blame verify`'s line.
fn round1_fault_text(fault: Round1Fault) -> &'static str {
    match fault {
        Round1Fault::Undecodable => "does not decode",
        Round1Fault::WrongCommitmentLength => "carries the wrong number of commitments",
        Round1Fault::BadProofOfKnowledge => "has a proof of knowledge that does not verify",
        // A fault this build does not know: named as such, not as another.
        _ => "fails part 2's checks",
    }
}

/// A round-1 fault's stable snake-case name (`--json` output).
fn round1_fault_name(fault: Round1Fault) -> &'static str {
    match fault {
        Round1Fault::Undecodable => "undecodable",
        Round1Fault::WrongCommitmentLength => "wrong_commitment_length",
        Round1Fault::BadProofOfKnowledge => "bad_proof_of_knowledge",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use thresig_engine::{
        BlameProof, HexBytes, Round2Request, Round2Response, SigningTarget, WalletEpoch,
    };

    use super::*;

    /// Every round-1 fault this build knows has a name of its own; an
    /// unknown one (the enum is non-exhaustive) is named `other`.
    #[test]
    fn each_known_round1_fault_is_named_as_itself() {
        let names: Vec<_> = [
            Round1Fault::Undecodable,
            Round1Fault::WrongCommitmentLength,
            Round1Fault::BadProofOfKnowledge,
        ]
        .map(|f| (round1_fault_name(f), round1_fault_text(f)))
        .to_vec();
        assert_eq!(
            names.iter().map(|n| n.0).collect::<Vec<_>>(),
            [
                "undecodable",
                "wrong_commitment_length",
                "bad_proof_of_knowledge"
            ]
        );
        assert!(names.iter().all(|n| n.1 != "fails part 2's checks"));
    }

    fn seat(n: u16) -> Seat {
        Seat::try_from(n).unwrap()
    }

    /// A proof whose answer carries `mark` as its one share (the content
    /// does not matter to the files, only that proofs differ).
    fn proof(mark: u8) -> BlameProof {
        let wallet = thresig_engine::WalletId::new("w".to_owned()).unwrap();
        let request = Round2Request::new(
            wallet.clone(),
            WalletEpoch(0),
            vec![seat(1), seat(2)],
            SigningTarget::psbt(vec![mark]),
            vec![HexBytes(vec![mark])],
        );
        let answer = Round2Response::new(wallet, seat(2), vec![HexBytes(vec![mark])], Vec::new());
        BlameProof::new(&[mark], request, answer)
    }

    fn read(path: &Path) -> BlameProof {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    /// A name taken by something else (here a directory) does not stop a
    /// proof: it goes under the next free name, and the others are written.
    #[test]
    fn a_taken_name_does_not_stop_a_proof_or_the_others() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("culprit-2.proof.json")).unwrap();
        let proofs = BTreeMap::from([(seat(2), proof(2)), (seat(3), proof(3))]);
        let written = write_proofs(dir.path(), &proofs);
        assert!(written.failures.is_empty(), "{:?}", written.failures);
        assert_eq!(
            written.paths,
            vec![
                dir.path().join("culprit-2-2.proof.json"),
                dir.path().join("culprit-3.proof.json")
            ]
        );
        assert_eq!(read(&written.paths[0]), proof(2));
        assert_eq!(read(&written.paths[1]), proof(3));
    }

    /// A directory that cannot be written is reported, not an error.
    #[test]
    fn an_unwritable_directory_is_reported_for_every_proof() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let proofs = BTreeMap::from([(seat(2), proof(2)), (seat(3), proof(3))]);
        let written = write_proofs(&missing, &proofs);
        assert!(written.paths.is_empty());
        assert_eq!(written.failures.len(), 2, "{:?}", written.failures);
        assert!(
            written.failures[0].contains("member 2") && written.failures[0].contains("missing"),
            "{:?}",
            written.failures
        );
        // The operating system's cause once, though the error also keeps
        // it as its source.
        assert_eq!(
            written.failures[0].matches("(os error").count(),
            1,
            "{:?}",
            written.failures
        );
    }

    /// A second run into the same directory keeps the first run's proof
    /// against the same member and writes its own beside it.
    #[test]
    fn a_second_proof_against_one_member_keeps_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let first = write_proofs(dir.path(), &BTreeMap::from([(seat(2), proof(1))]));
        let second = write_proofs(dir.path(), &BTreeMap::from([(seat(2), proof(2))]));
        assert_eq!(first.paths, vec![dir.path().join("culprit-2.proof.json")]);
        assert_eq!(second.paths.len(), 1);
        assert_ne!(second.paths, first.paths);
        assert_eq!(read(&first.paths[0]), proof(1));
        assert_eq!(read(&second.paths[0]), proof(2));
        // No temporary file is left behind.
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| !n.to_string_lossy().ends_with(".proof.json"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
