//! `thresig repair`: rebuild a member's lost share with `t` helpers, and
//! `thresig repair approve`: a helper's operator approving that, on the
//! running signer through its admin socket.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use serde_json::json;
use thresig_cluster::config::{Config, NodeWallet};
use thresig_cluster::node::admin_socket_path;
use thresig_cluster::run_repair;
use thresig_crypto::Seat;
use thresig_engine::OperatorCommand;

use crate::admin;
use crate::member::{Coordinating, runtime};

/// `thresig repair`.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct RepairArgs {
    #[command(subcommand)]
    approve: Option<RepairCommand>,
    #[command(flatten)]
    target: Target,
    /// The helpers (cluster members, comma-separated): at least the
    /// wallet's threshold, each with its operator's unexpired approval.
    /// By default the wallet's first `t` members other than `--member`.
    #[arg(long, value_delimiter = ',', value_name = "SEATS")]
    helpers: Vec<u16>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// The member repaired, of which wallet, as one member's configuration
/// names them.
#[derive(Args)]
struct Target {
    /// This member's configuration file (the coordinator's for a repair,
    /// the helper's own for an approval).
    #[arg(long, value_name = "FILE", required = true)]
    config: Option<PathBuf>,
    /// The wallet.
    #[arg(long, required = true)]
    wallet: Option<String>,
    /// The member (cluster seat) whose share is rebuilt.
    #[arg(long, value_name = "SEAT", required = true)]
    member: Option<u16>,
}

#[derive(Subcommand)]
enum RepairCommand {
    /// Approve, on this member's running signer, helping to repair a
    /// member's share (held in the signer's memory until it expires or the
    /// signer restarts).
    Approve(ApproveArgs),
}

/// `thresig repair approve`.
#[derive(Args)]
struct ApproveArgs {
    #[command(flatten)]
    target: Target,
    /// How long the approval lasts, in seconds (default one hour, at most
    /// a day).
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    expires_in: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl Target {
    fn parts(&self) -> Result<(&PathBuf, &str, u16)> {
        match (&self.config, &self.wallet, self.member) {
            (Some(config), Some(wallet), Some(member)) => Ok((config, wallet, member)),
            _ => bail!("--config, --wallet and --member are required"),
        }
    }
}

/// The wallet seat held by cluster member `member`.
fn wallet_seat(wallet: &NodeWallet, member: u16) -> Result<Seat> {
    let index = wallet
        .seats
        .iter()
        .position(|s| s.get() == member)
        .with_context(|| {
            format!(
                "member {member} holds no seat of wallet {}; pass one of its members to --member",
                wallet.id()
            )
        })?;
    Ok(Seat::try_from(u16::try_from(index + 1)?)?)
}

pub(crate) fn main(args: &RepairArgs) -> Result<()> {
    if let Some(RepairCommand::Approve(approve)) = &args.approve {
        return approve_repair(approve);
    }
    let (config, wallet, member) = args.target.parts()?;
    let c = Coordinating::load(config)?;
    let wallet = c.wallet(wallet)?;
    let lost = wallet_seat(wallet, member)?;
    let helpers = if args.helpers.is_empty() {
        wallet
            .seats
            .iter()
            .filter(|s| s.get() != member)
            .take(usize::from(wallet.config.threshold))
            .map(|s| wallet_seat(wallet, s.get()))
            .collect::<Result<Vec<_>>>()?
    } else {
        args.helpers
            .iter()
            .map(|h| wallet_seat(wallet, *h))
            .collect::<Result<Vec<_>>>()?
    };
    let runtime = runtime()?;
    let outcome = runtime.block_on(run_repair(
        &c.peers,
        wallet,
        lost,
        &helpers,
        &mut rand_core::OsRng,
    ))?;
    let helpers: Vec<u16> = outcome
        .helpers
        .iter()
        .filter_map(|s| wallet.cluster_seat(*s).map(|c| c.get()))
        .collect();
    if args.json {
        println!(
            "{}",
            json!({
                "wallet": wallet.id().as_str(),
                "member": member,
                "helpers": helpers,
                "epoch": outcome.epoch.0,
            })
        );
    } else {
        println!(
            "member {member}'s share of wallet {} is rebuilt, checked and stored (helpers {helpers:?}, wallet epoch {})",
            wallet.id(),
            outcome.epoch.0
        );
    }
    Ok(())
}

fn approve_repair(args: &ApproveArgs) -> Result<()> {
    let (path, wallet_id, member) = args.target.parts()?;
    let config = Config::load(path)?;
    // The approval is the helper's own: its operator's file, not the
    // repaired member's or the coordinator's.
    let node = config.node(path).map_err(|e| {
        let message = format!("{e}; pass the helper's own signer.toml");
        anyhow::Error::new(e).context(message)
    })?;
    let id = thresig_engine::WalletId::new(wallet_id.to_owned())
        .map_err(|e| crate::because("--wallet", e))?;
    let wallet = node.wallet(&id).with_context(|| {
        format!("wallet {id} is not in this member's configuration; pass one of its wallets")
    })?;
    let seat = wallet_seat(wallet, member)?;
    let socket = admin_socket_path(&config);
    let command = OperatorCommand::ApproveRepair {
        wallet: id.clone(),
        seat,
        expires_in_secs: args.expires_in,
    };
    let Some(report) = admin::ask(&socket, &command.into())? else {
        bail!(
            "no signer answers on {}: an approval lives in the running signer's memory; start `thresig serve --config {}` first",
            socket.display(),
            path.display()
        );
    };
    if args.json {
        println!("{}", report.json);
    } else {
        print!("{}", report.text);
    }
    Ok(())
}
