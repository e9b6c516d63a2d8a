//! `thresig refresh`: renews a wallet's key shares (DESIGN.md §4,
//! docs/lifecycle.md), optionally removing members for good.

use crate::MEMBER_CONFIG;
use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use serde_json::json;
use thresig_cluster::{AbortOutcome, DkgError, abort_refresh, resume_refresh, run_refresh};

use crate::blame::write_dkg_proof;
use thresig_crypto::Seat;
use thresig_engine::{DkgSessionId, WalletEpoch, WalletStatus};

use crate::bar::Bar;
use crate::because;
use crate::member::{Coordinating, own, runtime};

/// `thresig refresh`.
#[derive(Args)]
pub(crate) struct RefreshArgs {
    /// The coordinating member's configuration file.
    #[arg(long, value_name = "FILE", default_value = MEMBER_CONFIG)]
    config: PathBuf,
    /// The wallet, as the members' configurations define it.
    #[arg(long)]
    wallet: String,
    /// A member (cluster seat) to remove for good; repeat for several.
    /// Must equal the wallet's `remove` list in every remaining member's
    /// configuration.
    #[arg(long, value_name = "SEAT")]
    remove: Vec<u16>,
    /// Finish the refresh SESSION (hex) that a failed run left members
    /// holding (`refreshing`), instead of starting a new one.
    #[arg(long, value_name = "SESSION", conflicts_with = "abort")]
    resume: Option<String>,
    /// Abandon the refresh SESSION (hex) that cannot complete because a
    /// member holds no result of it: every member that holds one discards
    /// it on that member's signed abandonment, and all keep signing at the
    /// current epoch.
    #[arg(long, value_name = "SESSION")]
    abort: Option<String>,
    /// Where to write the proof against a member whose round-2 package
    /// another member proved invalid, or whose round-1 package fails the
    /// checks under its kind-bound signature (`culprit-<seat>.proof.json`,
    /// checked by `thresig blame verify`).
    #[arg(long, value_name = "DIR", default_value = ".")]
    proof_dir: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// The session named by `--resume` or `--abort` (`flag`).
fn session_of(flag: &str, text: &str) -> Result<DkgSessionId> {
    let bytes = hex::decode(text.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok());
    match bytes {
        Some(id) => Ok(DkgSessionId(id)),
        None => bail!(crate::AfterChange(format!(
            "{flag} {text}: not a session id; pass the 64 hex digits a failed `thresig refresh` or `thresig status` named"
        ))),
    }
}

/// Runs the refresh and prints the wallet, its unchanged output key and
/// its new wallet epoch.
pub(crate) fn main(args: &RefreshArgs) -> Result<()> {
    let c = Coordinating::load(&args.config)?;
    let wallet = c.wallet(&args.wallet)?;
    // The removal must be what this member's operator approved in its
    // configuration: a command line alone never removes anyone.
    let configured: BTreeSet<u16> = wallet
        .config
        .remove
        .iter()
        .filter_map(|s| wallet.cluster_seat(*s).map(Seat::get))
        .collect();
    let asked: BTreeSet<u16> = args.remove.iter().copied().collect();
    if asked != configured || asked.len() != args.remove.len() {
        bail!(crate::AfterChange(format!(
            "--remove {asked:?} differs from the `remove` list of wallet {} in {} ({configured:?}); \
             set the same seats in `remove` in every remaining member's configuration and \
             restart them, then pass exactly those seats to --remove",
            wallet.id(),
            args.config.display()
        )));
    }
    let runtime = runtime()?;
    let before = own(&runtime, &c.peers, &c.node, wallet.id())?;
    if let Some(session) = &args.abort {
        let session = session_of("--abort", session)?;
        let outcome = runtime.block_on(abort_refresh(
            &c.peers,
            wallet,
            (before.epoch, &before.key.members()),
            session,
            &Bar::new(),
        ))?;
        return print_abort(args, wallet.id().as_str(), session, before.epoch, &outcome);
    }
    // A failed run or resume names the session, and how to finish or
    // abandon it: members may hold its new shares.
    let failed = |session: DkgSessionId, e: DkgError| {
        let id = hex::encode(session.0);
        let context = if e.names_refresh_recovery() {
            format!("refresh session {id}")
        } else {
            format!(
                "refresh session {id} (if `thresig status` shows members `refreshing`, \
                 finish it with `thresig refresh --config {config} --wallet {wallet} --resume {id}`, \
                 or, if a threshold of members never released their confirmation, abandon it with `--abort {id}`)",
                config = args.config.display(),
                wallet = wallet.id(),
            )
        };
        because(context, e)
    };
    let (session, expected) = match &args.resume {
        Some(session) => {
            let session = session_of("--resume", session)?;
            runtime
                .block_on(resume_refresh(
                    &c.peers,
                    wallet,
                    (c.node.member, before.epoch, &before.key.members()),
                    session,
                    &Bar::new(),
                ))
                .map_err(|e| failed(session, e))?;
            // This member may have switched before the run it resumes
            // failed: its epoch then stays.
            (session, None)
        }
        None => {
            let mut id = [0u8; 32];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
            let session = DkgSessionId(id);
            let outcome = runtime
                .block_on(run_refresh(
                    &c.peers,
                    wallet,
                    (before.epoch, &before.key.members()),
                    session,
                    &Bar::new(),
                ))
                .inspect_err(|e| write_dkg_proof(&args.proof_dir, e))
                .map_err(|e| failed(session, e))?;
            (outcome.session, Some(outcome.epoch))
        }
    };
    let after = own(&runtime, &c.peers, &c.node, wallet.id())?;
    let output_key = after.spend.output_key().to_x_only_public_key().serialize();
    let unchanged = output_key == before.spend.output_key().to_x_only_public_key().serialize();
    if !unchanged || expected.is_some_and(|epoch| epoch != after.epoch) {
        bail!(crate::AfterChange(format!(
            "the refresh of wallet {} completed, but this member's signer reports epoch {} with \
             another key than expected; check `thresig status --config {}` on every member",
            wallet.id(),
            after.epoch.0,
            args.config.display()
        )));
    }
    let output_key = hex::encode(output_key);
    if args.json {
        println!(
            "{}",
            json!({
                "wallet": wallet.id().as_str(),
                "output_key": output_key,
                "epoch": after.epoch.0,
                "session": hex::encode(session.0),
            })
        );
    } else {
        println!(
            "wallet {} refreshed: every remaining member signs at epoch {}\n  output key: {output_key} (unchanged)",
            wallet.id(),
            after.epoch.0,
        );
    }
    Ok(())
}

/// Prints what `--abort` did.
fn print_abort(
    args: &RefreshArgs,
    wallet: &str,
    session: DkgSessionId,
    epoch: WalletEpoch,
    outcome: &AbortOutcome,
) -> Result<()> {
    let seats = |s: &[Seat]| s.iter().map(|s| s.get()).collect::<Vec<u16>>();
    if args.json {
        println!(
            "{}",
            json!({
                "wallet": wallet,
                "session": hex::encode(session.0),
                "epoch": epoch.0,
                "abandoned_by": seats(&outcome.abandoned_by),
                "discarded": seats(&outcome.discarded),
                "missed": seats(&outcome.missed),
            })
        );
    } else {
        println!(
            "refresh {} of wallet {wallet} abandoned: members {:?} vetoed it (they never released their confirmation); members {:?} discarded their pending shares on those vetoes\n  every member reached signs at epoch {}",
            hex::encode(session.0),
            seats(&outcome.abandoned_by),
            seats(&outcome.discarded),
            epoch.0,
        );
        if !outcome.missed.is_empty() {
            println!(
                "  members {:?} could not be reached or refused the vetoes: run this command again once they are back",
                seats(&outcome.missed)
            );
        }
    }
    Ok(())
}

/// A pending refresh in `thresig status --json`: its session, the wallet
/// seats whose confirmations the member holds, and whether it released
/// its own (null: no refresh pending or running).
pub(crate) fn pending_json(status: &WalletStatus) -> serde_json::Value {
    status
        .refresh
        .as_ref()
        .map_or(serde_json::Value::Null, |r| {
            json!({
                "session": hex::encode(r.session.0),
                "confirmed": r.confirmed.iter().map(|s| s.get()).collect::<Vec<u16>>(),
                "released": r.released,
            })
        })
}

/// A pending refresh in `thresig status`'s text: what to finish or abort.
pub(crate) fn pending_text(status: &WalletStatus) -> String {
    status.refresh.as_ref().map_or_else(String::new, |r| {
        let session = hex::encode(r.session.0);
        if !r.released {
            return format!(
                "; refresh {session} running, confirmation not released (this member may veto it: --abort)"
            );
        }
        let seats: Vec<u16> = r.confirmed.iter().map(|s| s.get()).collect();
        format!(
            "; refresh {session} pending, confirmation released (finish it with --resume), confirmations of wallet seats {seats:?}"
        )
    })
}
