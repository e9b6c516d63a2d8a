//! `thresig policy`: this member's staged policy rollout (docs/policy.md,
//! "Staged rollout"): `stage` a version the configuration file now holds,
//! `promote` it step by step to 100 %, `rollback` it, or show it.
//!
//! As `thresig wallet` does, a command asks the running signer's admin
//! socket first ([`crate::admin`], which runs [`run_on`] over its engine),
//! and opens the store itself only when no signer answers. Exit codes as
//! `thresig keys`: 0, 1 terminal, 2 retryable.

use crate::MEMBER_CONFIG;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::json;
use thresig_cluster::config::Config;
use thresig_engine::rollout::gate::{Gates, Group};
use thresig_engine::{Phase, RolloutCommand, RolloutStatus, Signer, WalletStatus};
use thresig_store::EncryptedStore;

use crate::keys::{self, KeysError, Output, Report};

/// `thresig policy ...`.
#[derive(Args)]
pub(crate) struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Stage the policy version the file's `[wallets.policy]` tables now
    /// hold: its canary wallets move to it first.
    Stage(StageArgs),
    /// Move the rollout to its next step (10%, 50%, 100%); refused, and
    /// rolled back, if its health gate fails.
    Promote(PromoteArgs),
    /// Put every wallet of the rollout back on its previous version.
    Rollback(StepArgs),
    /// Show the rollout and each wallet's applied policy version.
    Status(StepArgs),
}

#[derive(Args)]
struct PromoteArgs {
    #[command(flatten)]
    step: StepArgs,
    /// Promote while the gate has no verdict yet (too little traffic, or
    /// one coordinator's denials); never while it fails. Audited.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct StageArgs {
    #[command(flatten)]
    step: StepArgs,
    /// The version to roll out, as the file's policies state it.
    #[arg(long)]
    version: u32,
    /// Canary round-2 requests of one coordinator before the gate judges
    /// its traffic.
    #[arg(long, default_value_t = Gates::default().min_requests)]
    min_requests: u64,
    /// The most a coordinator's canary requests may be denied where the
    /// previous version signs them, in percent.
    #[arg(long, default_value_t = Gates::default().max_denial_increase_pct)]
    max_denial_increase: u8,
}

#[derive(Args)]
struct StepArgs {
    /// This member's configuration file.
    #[arg(long, value_name = "FILE", default_value = MEMBER_CONFIG)]
    config: PathBuf,
    /// Refuse unless the rollout is at this step (its `seq`), so a step
    /// decided on what `status` showed never applies to a later one.
    #[arg(long)]
    seq: Option<u64>,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
}

/// A policy call on the admin socket: `{"policy": {"stage": …}}`,
/// `{"policy": {"step": …}}` or `{"policy": "status"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum PolicyCall {
    /// Stage the version the file holds.
    Stage(StageCall),
    /// Promote or roll back.
    Step(RolloutCommand),
    /// The rollout's status.
    Status,
}

/// A stage names the configuration file, whose policies the signer reads
/// itself: the policies of many wallets would not fit in an admin
/// request ([`crate::admin::MAX_REQUEST`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StageCall {
    /// The version to roll out.
    version: u32,
    /// The member's configuration file, as an absolute path (the signer
    /// runs in another directory).
    config: PathBuf,
    /// The gates that judge each step.
    gates: Gates,
    /// The step the operator saw.
    expect_seq: Option<u64>,
}

impl StageCall {
    /// The engine's step: the policies the file holds now.
    fn command(&self) -> Result<RolloutCommand, KeysError> {
        // The signer runs in another directory than the client: a relative
        // path would name another file.
        if !self.config.is_absolute() {
            return Err(KeysError::Config(
                thresig_cluster::config::ConfigError::Read {
                    path: self.config.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "a stage request takes an absolute path",
                    ),
                },
            ));
        }
        let config = Config::load(&self.config)?;
        let policies: BTreeMap<_, _> = config
            .node
            .iter()
            .flat_map(|node| &node.wallets)
            .map(|w| (w.id().clone(), w.config.policy.clone()))
            .collect();
        Ok(RolloutCommand::Stage {
            version: self.version,
            policies,
            gates: self.gates,
            expect_seq: self.expect_seq,
        })
    }
}

/// Runs a `policy` command and returns the process exit code.
pub(crate) fn main(args: PolicyArgs) -> ExitCode {
    let (step, call) = match args.command {
        PolicyCommand::Stage(a) => {
            let call = stage(&a);
            (a.step, call)
        }
        PolicyCommand::Promote(p) => {
            let command = RolloutCommand::Promote {
                expect_seq: p.step.seq,
                force: p.force,
            };
            (p.step, Ok(PolicyCall::Step(command)))
        }
        PolicyCommand::Rollback(s) => {
            let expect_seq = s.seq;
            (
                s,
                Ok(PolicyCall::Step(RolloutCommand::Rollback { expect_seq })),
            )
        }
        PolicyCommand::Status(s) => (s, Ok(PolicyCall::Status)),
    };
    let result = call.and_then(|call| on_engine(&step.config, &call));
    keys::print_outcome(Output::json_if(step.json), result)
}

/// The stage call, naming the file by its absolute path.
fn stage(args: &StageArgs) -> Result<PolicyCall, KeysError> {
    let config = std::path::absolute(&args.step.config).map_err(|source| {
        KeysError::Config(thresig_cluster::config::ConfigError::Read {
            path: args.step.config.clone(),
            source,
        })
    })?;
    let mut gates = Gates::default();
    gates.min_requests = args.min_requests;
    gates.max_denial_increase_pct = args.max_denial_increase;
    Ok(PolicyCall::Stage(StageCall {
        version: args.version,
        config,
        gates,
        expect_seq: args.step.seq,
    }))
}

/// Runs `call` in the signer answering on the configured admin socket, or
/// on the engine opened here when none does.
fn on_engine(path: &Path, call: &PolicyCall) -> Result<Report, KeysError> {
    crate::wallet::ask_or_open(path, &call.clone().into(), |engine| {
        run_on(call, &engine.signer)
    })
}

/// Runs a policy call on `signer`: the one body of every `policy`
/// command, shared by this process and the signer's admin socket.
///
/// # Errors
/// [`KeysError::Rollout`] with the step's refusal.
pub(crate) fn run_on(
    call: &PolicyCall,
    signer: &Signer<Arc<EncryptedStore>>,
) -> Result<Report, KeysError> {
    let status = match call {
        PolicyCall::Stage(stage) => {
            signer.policy_rollout(thresig_cluster::node::wall_clock(), &stage.command()?)?
        }
        PolicyCall::Step(command) => {
            signer.policy_rollout(thresig_cluster::node::wall_clock(), command)?
        }
        PolicyCall::Status => signer.rollout_status()?,
    };
    Ok(report(&status))
}

/// `status` as JSON and as text.
pub(crate) fn report(status: &RolloutStatus) -> Report {
    let json = serde_json::to_value(status).unwrap_or_default();
    let mut text = match (status.version, status.phase) {
        (Some(version), Some(phase)) => format!(
            "policy rollout (step {}): version {version} at {phase}{}\n",
            status.seq,
            status
                .reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
        _ => "no policy rollout was ever staged on this member\n".to_owned(),
    };
    if let Some(verdict) = &status.verdict {
        let _ = writeln!(
            text,
            "  gate: {verdict}; canary {} released, {} denied of {}; previous version {} released, {} denied of {}",
            status.canary.released,
            status.canary.denied,
            status.canary.requests,
            status.baseline.released,
            status.baseline.denied,
            status.baseline.requests,
        );
    }
    for wallet in &status.wallets {
        let side = match wallet.group {
            Some(Group::Canary) => " (canary: new version)",
            Some(Group::Baseline) => " (not yet: previous version)",
            None => "",
        };
        let _ = writeln!(
            text,
            "  wallet {}: policy version {}{side}",
            wallet.wallet, wallet.policy_version
        );
    }
    Report::clean(json, text)
}

/// A wallet's applied policy in `thresig status --json`: its version and
/// the rollout naming it.
pub(crate) fn wallet_json(w: &WalletStatus) -> serde_json::Value {
    json!({
        "version": w.policy_version,
        "rollout": w.policy_rollout.map(|r| json!({
            "version": r.version,
            "stage": r.phase.as_str(),
            "on_new_version": r.on_new_version,
        })),
    })
}

/// A wallet's applied policy in `thresig status`' text: `, policy v2`,
/// and the rollout naming it (`, policy v1, staging v2 at 10%`).
pub(crate) fn wallet_text(w: &WalletStatus) -> String {
    let Some(version) = w.policy_version else {
        return String::new();
    };
    let rollout = match w.policy_rollout {
        Some(r) if r.phase.in_progress() => format!(", staging v{} at {}", r.version, r.phase),
        Some(r) if r.phase == Phase::RolledBack => format!(", v{} rolled back", r.version),
        _ => String::new(),
    };
    format!(", policy v{version}{rollout}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::{MAX_REQUEST, Request};

    /// A stage request names the file, not its policies, so its size does
    /// not grow with the wallets (40 default policies took 18 451 bytes).
    #[test]
    fn a_stage_naming_a_relative_path_is_refused_before_reading_it() {
        let call = StageCall {
            version: 2,
            config: PathBuf::from("signer.toml"),
            gates: Gates::default(),
            expect_seq: None,
        };
        let err = call.command().unwrap_err();
        assert_eq!(err.code(), "config_invalid", "{err}");
        assert!(err.to_string().contains("absolute path"), "{err}");
    }

    #[test]
    fn a_stage_request_of_many_wallets_fits_the_admin_socket() {
        let call = PolicyCall::Stage(StageCall {
            version: 2,
            config: PathBuf::from("/etc/thresig/".to_owned() + &"d/".repeat(100) + "signer.toml"),
            gates: Gates::default(),
            expect_seq: Some(u64::MAX),
        });
        let bytes = serde_json::to_vec(&Request::from(call.clone())).unwrap();
        assert!(bytes.len() as u64 <= MAX_REQUEST, "{} bytes", bytes.len());
        assert_eq!(
            serde_json::from_slice::<Request>(&bytes).unwrap(),
            Request::from(call)
        );
    }
}
