//! `thresig refresh`: renews a wallet's key shares (DESIGN.md §4,
//! docs/lifecycle.md), optionally removing members for good.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use serde_json::json;
use thresig_cluster::{resume_refresh, run_refresh};
use thresig_crypto::Seat;
use thresig_engine::DkgSessionId;

use crate::bar::Bar;
use crate::because;
use crate::member::{Coordinating, own, runtime};

/// `thresig refresh`.
#[derive(Args)]
pub(crate) struct RefreshArgs {
    /// The coordinating member's configuration file.
    #[arg(long, value_name = "FILE")]
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
    #[arg(long, value_name = "SESSION")]
    resume: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// The session named by `--resume`.
fn session_of(text: &str) -> Result<DkgSessionId> {
    let bytes = hex::decode(text.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok());
    match bytes {
        Some(id) => Ok(DkgSessionId(id)),
        None => bail!(crate::AfterChange(format!(
            "--resume {text}: not a session id; pass the 64 hex digits a failed `thresig refresh` named"
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
    let (session, expected) = match &args.resume {
        Some(session) => {
            let session = session_of(session)?;
            runtime.block_on(resume_refresh(
                &c.peers,
                wallet,
                (before.epoch, &before.key.members()),
                session,
                &Bar::new(),
            ))?;
            // This member may have switched before the run it resumes
            // failed: its epoch then stays.
            (session, None)
        }
        None => {
            let mut id = [0u8; 32];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
            let outcome = runtime
                .block_on(run_refresh(
                    &c.peers,
                    wallet,
                    (before.epoch, &before.key.members()),
                    DkgSessionId(id),
                    &Bar::new(),
                ))
                .map_err(|e| {
                    because(
                        format!(
                            "refresh session {} (if `thresig status` shows members `refreshing`, \
                             finish it with `thresig refresh --config {} --wallet {} --resume {}`)",
                            hex::encode(id),
                            args.config.display(),
                            wallet.id(),
                            hex::encode(id)
                        ),
                        e,
                    )
                })?;
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
