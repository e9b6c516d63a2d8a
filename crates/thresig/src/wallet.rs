//! `thresig wallet`: the local operator's lifecycle steps on this member's
//! own signer (DESIGN.md §4, emergency rekey). Never a coordinator's: each
//! member's operator runs them on that member.
//!
//! As `thresig keys` does, a command first asks the running signer's admin
//! socket ([`crate::admin`]), which runs [`run_on`] over the engine it
//! serves; only when no signer answers does the command open the store and
//! the engine itself and run the same [`run_on`] (the JSON says `"via":
//! "daemon"` or `"via": "store"`). Exit codes as `thresig keys`: 0, 1
//! terminal, 2 retryable.

use crate::MEMBER_CONFIG;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand};
use serde_json::json;
use thresig_cluster::config::Config;
use thresig_cluster::node::{LocalEngine, admin_socket_path};
use thresig_engine::{OperatorCommand, Signer, Transition, WalletId, WalletStateKind};
use thresig_store::EncryptedStore;

use crate::admin;
use crate::keys::{self, KeysError, Output, Report};

/// `thresig wallet ...`.
#[derive(Args)]
pub(crate) struct WalletArgs {
    #[command(subcommand)]
    command: WalletCommand,
}

#[derive(Subcommand)]
enum WalletCommand {
    /// Put the wallet in `rekeying` on this member: from then on this
    /// member signs only the sweep of its outputs to the configured
    /// successor. Run it on every member.
    Rekey(Target),
    /// Retire a `rekeying` wallet on this member once no output of it
    /// remains: it then refuses everything, its key package is deleted and
    /// the DEK that sealed it is rotated out.
    Retire(Target),
}

#[derive(Args)]
struct Target {
    /// This member's configuration file.
    #[arg(long, value_name = "FILE", default_value = MEMBER_CONFIG)]
    config: PathBuf,
    /// The wallet, as the configuration names it.
    #[arg(long, value_parser = wallet_id)]
    wallet: WalletId,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
}

fn wallet_id(text: &str) -> Result<WalletId, String> {
    WalletId::new(text).map_err(|e| e.to_string())
}

/// Runs a `wallet` command and returns the process exit code.
pub(crate) fn main(args: WalletArgs) -> ExitCode {
    let (target, command) = match args.command {
        WalletCommand::Rekey(t) => {
            let wallet = t.wallet.clone();
            (t, OperatorCommand::BeginRekey { wallet })
        }
        WalletCommand::Retire(t) => {
            let wallet = t.wallet.clone();
            (t, OperatorCommand::Retire { wallet })
        }
    };
    let result = on_engine(&target.config, command);
    keys::print_outcome(Output::json_if(target.json), result)
}

/// Runs `command` in the signer that answers on the configured store's
/// admin socket, or, when none does, on the engine opened here.
fn on_engine(path: &Path, command: OperatorCommand) -> Result<Report, KeysError> {
    ask_or_open(path, &command.clone().into(), |engine| {
        run_on(&command, &engine.signer, &engine.store, &mut |line| {
            eprintln!("{line}");
        })
    })
}

/// Sends `request` to the signer that answers on the configured store's
/// admin socket, or, when none does, opens the engine here and runs
/// `local` on it; the report's JSON says which (`"via"`).
///
/// # Errors
/// The configuration's, the admin socket's, the open's or `local`'s.
pub(crate) fn ask_or_open(
    path: &Path,
    request: &admin::Request,
    local: impl FnOnce(&LocalEngine) -> Result<Report, KeysError>,
) -> Result<Report, KeysError> {
    ask_or_run(path, request, || local(&LocalEngine::open(path)?))
}

/// Sends `request` to the signer that answers on the configured store's
/// admin socket, or, when none does, runs `local` (which opens the engine
/// as its command needs); the report's JSON says which ([`say_via`]).
///
/// # Errors
/// The configuration's, the admin socket's or `local`'s.
pub(crate) fn ask_or_run(
    path: &Path,
    request: &admin::Request,
    local: impl FnOnce() -> Result<Report, KeysError>,
) -> Result<Report, KeysError> {
    let config = Config::load(path)?;
    let socket = admin_socket_path(&config);
    let (mut report, via) = match admin::ask(&socket, request)? {
        Some(report) => (report, "daemon"),
        None => (local()?, "store"),
    };
    say_via(&mut report.json, via);
    Ok(report)
}

/// Adds `"via"` to a report's JSON: an object gets the field, a report
/// with no JSON (null) becomes an object of it alone; any other JSON (an
/// array) is left as it is.
fn say_via(json: &mut serde_json::Value, via: &str) {
    if json.is_object() || json.is_null() {
        json["via"] = json!(via);
    }
}

/// Runs an operator command on the engine over `store`: the one body of
/// each `wallet` command and of `repair approve`, shared by this process
/// and the signer's admin socket. A retire then rotates the DEK, so the live keyring no longer
/// holds the key of the deleted key package's ciphertext (the bytes stay in
/// freed pages: docs/lifecycle.md says what does destroy them); it runs
/// again with every retire, so a rotation a crash interrupted is finished
/// by running the command again. `progress` receives the rotation's
/// progress lines.
///
/// # Errors
/// [`KeysError::Engine`] for the engine's refusal, the store's errors for
/// the rotation.
pub(crate) fn run_on(
    command: &OperatorCommand,
    signer: &Signer<Arc<EncryptedStore>>,
    store: &Arc<EncryptedStore>,
    progress: &mut dyn FnMut(&str),
) -> Result<Report, KeysError> {
    let outcome = signer.operate(thresig_cluster::node::wall_clock(), command)?;
    let status = &outcome.status;
    if let OperatorCommand::ApproveRepair {
        seat,
        expires_in_secs,
        ..
    } = command
    {
        let json = json!({
            "wallet": status.wallet.as_str(),
            "seat": seat.get(),
            "expires_unix_ms": outcome.expires.map(|t| t.0),
        });
        let text = format!(
            "this signer helps repair seat {seat} of wallet {} for the next {expires_in_secs} s (until it restarts)\n",
            status.wallet
        );
        return Ok(Report::clean(json, text));
    }
    let changed = outcome.transition == Transition::Done;
    let mut json = json!({
        "wallet": status.wallet.as_str(),
        "seat": status.seat.get(),
        "state": status.state,
        "epoch": status.epoch.map(|e| e.0),
        "changed": changed,
    });
    let (now, next) = match status.state {
        WalletStateKind::Rekeying => (
            "rekeying: it signs only the sweep to its configured successor",
            "once every member's operator has run this, run `thresig dkg` for the successor if it \
             has no key yet, then `thresig sweep`",
        ),
        _ => (
            "retired: it signs nothing and its key package is deleted",
            "check that every member's operator has retired it (`thresig status`)",
        ),
    };
    let mut text = format!(
        "wallet {} is {now} on this member (seat {}){}\n  next: {next}\n",
        status.wallet,
        status.seat,
        if changed {
            ""
        } else {
            "; it already was, nothing changed"
        },
    );
    if matches!(command, OperatorCommand::Retire { .. }) {
        let rotated = keys::rotate_dek(store, "retire", progress)?;
        json["dek_rotated_to"] = rotated.json["rotated_to"].clone();
        text.push_str(&format!(
            "  the DEK that sealed its key package was rotated out (current DEK term {})\n",
            rotated.json["rotated_to"]
        ));
    }
    Ok(Report::clean(json, text))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::say_via;

    /// A report with no JSON still says which path answered it; an array
    /// is left as it is, with no panic.
    #[test]
    fn via_is_added_to_an_object_and_to_a_null_report() {
        let mut object = json!({"wallet": "w"});
        say_via(&mut object, "store");
        assert_eq!(object, json!({"wallet": "w", "via": "store"}));
        let mut null = serde_json::Value::Null;
        say_via(&mut null, "daemon");
        assert_eq!(null, json!({"via": "daemon"}));
        let mut array = json!([1]);
        say_via(&mut array, "store");
        assert_eq!(array, json!([1]));
    }
}
