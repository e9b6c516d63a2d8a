//! The `thresig` command line: argument parsing, output (readable or
//! `--json`) and glue over the library crates, with no protocol logic.
//!
//! A failed command prints its error's message, which carries its causes
//! and what to do, and exits 1 when someone must act first or 2 when
//! running it again may succeed (docs/cluster.md, "Exit codes").
#![forbid(unsafe_code)]

mod admin;
mod audit;
mod bar;
mod blame;
mod culprits;
mod demo;
mod fault;
mod keys;
mod lifecycle;
mod load;
mod member;
mod policy;
mod psbt;
mod quarantine;
mod refresh;
mod repair;
mod sweep;
mod wallet;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use thresig_store::Recovery;

/// Threshold Schnorr (FROST) signer for Bitcoin Taproot custody.
#[derive(Parser)]
#[command(name = "thresig", version, about)]
struct Cli {
    /// Log format on standard error: `text` for people, `json` (one object
    /// per event) for log collectors. The level comes from `RUST_LOG`
    /// (default `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// See [`Cli::log_format`].
#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Start a local cluster of signer processes, run a DKG and sign a
    /// Taproot transaction through ROAST.
    Demo(demo::DemoArgs),
    /// Create a member directory: identity key sealed in a new store, TLS
    /// key and certificate.
    Init(member::InitArgs),
    /// Create a local cluster: a CA and N member directories.
    Cluster(member::ClusterArgs),
    /// Run a signer daemon.
    Serve(member::ServeArgs),
    /// Run a wallet's DKG among its members.
    Dkg(member::DkgArgs),
    /// Renew a wallet's key shares (same output key, next wallet epoch),
    /// optionally removing members for good.
    Refresh(refresh::RefreshArgs),
    /// Sign a PSBT through ROAST.
    Sign(member::SignArgs),
    /// Sweep a rekeying wallet's outputs to its successor: build the PSBT
    /// and sign it through ROAST.
    Sweep(sweep::SweepArgs),
    /// Rebuild a member's lost share with t helpers (`repair approve`: a
    /// helper's operator approves that on its running signer).
    Repair(repair::RepairArgs),
    /// Show the cluster: members, reachability, wallets.
    Status(member::StatusArgs),
    /// Measure signing over loopback: a local cluster signs many
    /// transactions (docs/BENCHMARKS.md).
    Load(load::LoadArgs),
    /// Build, inspect and finalize Taproot key-path PSBTs.
    Psbt(psbt::PsbtArgs),
    /// Inspect, rotate, verify and recover the encrypted store's keys.
    Keys(keys::KeysArgs),
    /// A wallet's lifecycle steps on this member: emergency rekey, retire.
    Wallet(wallet::WalletArgs),
    /// Check the proof `thresig sign` keeps of a member that sent an
    /// invalid share (docs/blame.md).
    Blame(blame::BlameArgs),
    /// The member's tamper-evident audit log: verify its hash chain,
    /// export it as JSON lines, check an export offline with only the
    /// roster, prune old entries (docs/audit.md).
    Audit(audit::AuditArgs),
    /// Staged policy rollout on this member: stage a version, promote it
    /// to 10%, 50%, 100%, roll it back (docs/policy.md).
    Policy(policy::PolicyArgs),
    /// The coordinator's per-member scores and quarantine: show them, or
    /// end a member's quarantine early (docs/quarantine.md).
    Quarantine(quarantine::QuarantineArgs),
}

/// The wall clock in Unix seconds, as the engine reads it
/// ([`thresig_cluster::node::wall_clock`]).
fn unix_now() -> u64 {
    thresig_cluster::node::wall_clock().whole_secs()
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Usage errors exit 1 (terminal), not clap's 2: `keys` reserves 2
            // for errors a retry can fix.
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match cli.log_format {
        // Colour codes only for a person at a terminal, not in log files.
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }
    let result = match cli.command {
        Command::Demo(args) => demo::main(&args, &mut rand_core::OsRng),
        Command::Init(args) => member::init(&args),
        Command::Cluster(args) => member::cluster(&args),
        Command::Serve(args) => member::serve(&args),
        Command::Dkg(args) => member::dkg(&args),
        Command::Refresh(args) => refresh::main(&args),
        Command::Sign(args) => member::sign_psbt(&args),
        Command::Sweep(args) => sweep::main(&args),
        Command::Repair(args) => repair::main(&args),
        Command::Status(args) => member::status(&args),
        Command::Load(args) => load::main(&args, &mut rand_core::OsRng),
        Command::Psbt(args) => psbt::main(&args, unix_now()),
        Command::Keys(args) => return keys::main(args),
        Command::Wallet(args) => return wallet::main(args),
        Command::Blame(args) => blame::main(&args),
        Command::Audit(args) => return audit::main(args),
        Command::Policy(args) => return policy::main(args),
        Command::Quarantine(args) => quarantine::main(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail("error", &err.to_string(), recovery(&err)),
    }
}

/// Prints a failed command's message under `label`, then whether running
/// the command again can succeed, and returns the exit code that says the
/// same: 2 retryable, 1 terminal (`thresig keys` labels the message with
/// its stable code).
///
/// The message is the error's `Display` alone: every error this binary
/// prints carries its cause in its own message, so walking `source()` as
/// well would name each cause twice.
pub(crate) fn fail(label: &str, message: &str, recovery: Recovery) -> ExitCode {
    eprintln!(
        "{label}: {message}\n{}",
        match recovery {
            Recovery::Retryable => "retryable: running the command again may succeed",
            Recovery::Terminal => "terminal: a retry cannot succeed until an operator acts",
        }
    );
    exit_code(recovery)
}

/// The exit code of a failed command: 2 when running it again may succeed,
/// 1 when someone must act first.
pub(crate) fn exit_code(recovery: Recovery) -> ExitCode {
    match recovery {
        Recovery::Retryable => ExitCode::from(2),
        Recovery::Terminal => ExitCode::FAILURE,
    }
}

/// Whether running the command again can succeed, as the first error in
/// the chain whose kind says so. A configuration that does not load is the
/// operator's to fix, whatever the cause (as for `thresig keys`, which
/// reports it as `config_invalid`); an error of no kind known here (an
/// argument, a file written, a bug) is terminal.
fn recovery(err: &anyhow::Error) -> Recovery {
    use thresig_cluster::config::ConfigError;
    use thresig_cluster::file::FileError;
    use thresig_cluster::node::NodeError;
    use thresig_cluster::provision::ProvisionError;
    use thresig_cluster::{DkgError, SignError};
    for cause in err.chain() {
        if cause.is::<AfterChange>() {
            return Recovery::Terminal;
        }
        if let Some(ProvisionError::Partial { .. }) = cause.downcast_ref::<ProvisionError>() {
            return Recovery::Terminal;
        }
        if cause.is::<ConfigError>() {
            return Recovery::Terminal;
        }
        if let Some(e) = cause.downcast_ref::<NodeError>() {
            return match e {
                NodeError::Config(_) => Recovery::Terminal,
                other => other.recovery(),
            };
        }
        if let Some(e) = cause.downcast_ref::<DkgError>() {
            return e.recovery();
        }
        if let Some(e) = cause.downcast_ref::<SignError>() {
            return e.recovery();
        }
        if let Some(e) = cause.downcast_ref::<thresig_cluster::RepairError>() {
            return e.recovery();
        }
        if let Some(e) = cause.downcast_ref::<crate::keys::KeysError>() {
            return e.recovery();
        }
        if let Some(e) = cause.downcast_ref::<thresig_daemon::Error>() {
            return e.recovery();
        }
        if let Some(e) = cause.downcast_ref::<thresig_cluster::scores::ScoreError>() {
            return e.recovery();
        }
        if let Some(e) = cause.downcast_ref::<FileError>() {
            return e.recovery();
        }
        if let Some(e) = cause.downcast_ref::<thresig_cluster::local::LocalError>() {
            return e.recovery();
        }
        if let Some(e) = cause.downcast_ref::<thresig_store::Error>() {
            return e.recovery();
        }
        if let Some(e) = cause.downcast_ref::<thresig_store::provider::ProviderError>() {
            return e.recovery();
        }
    }
    Recovery::Terminal
}

/// A failure that running the same command again cannot fix, whatever
/// its cause: the command already changed state (a DKG that completed), or
/// what it found is the operator's to change (a wallet with no key). Its
/// message says what to do instead; [`recovery`] calls it terminal.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct AfterChange(pub(crate) String);

/// The member configuration every `--config` names when it is left out:
/// the file `thresig init` writes in a member's directory, so commands run
/// from that directory need no flag.
pub(crate) const MEMBER_CONFIG: &str = thresig_cluster::provision::CONFIG_FILE;

/// `error` with `what` in front, as one message (`what: error`): this
/// binary prints an error's message alone, never its source chain, so a
/// context must carry its cause's text itself. The typed error stays in the
/// chain for [`recovery`].
pub(crate) fn because<E>(what: impl std::fmt::Display, error: E) -> anyhow::Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    let message = format!("{what}: {error}");
    anyhow::Error::new(error).context(message)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use thresig_cluster::provision::ProvisionError;
    use thresig_daemon::{Error as DaemonError, RpcCode};

    use super::*;

    /// A store failure that may pass, as provisioning can meet it.
    fn store_busy() -> thresig_store::Error {
        thresig_store::Error::WitnessIo {
            witness: PathBuf::from("/m/store/witness"),
            source: std::io::Error::from(std::io::ErrorKind::Interrupted),
        }
    }

    #[test]
    fn a_provisioning_failure_after_its_first_write_is_terminal() {
        let before = anyhow::Error::from(ProvisionError::Store(store_busy()));
        assert!(matches!(recovery(&before), Recovery::Retryable));
        let partial = ProvisionError::Partial {
            dir: PathBuf::from("/m"),
            source: Box::new(ProvisionError::Store(store_busy())),
        };
        let text = partial.to_string();
        assert!(text.contains("/m is left partly made: remove it"), "{text}");
        assert!(matches!(
            recovery(&anyhow::Error::from(partial)),
            Recovery::Terminal
        ));
    }

    #[test]
    fn a_completed_dkg_whose_own_confirmation_failed_is_terminal() {
        let unreachable = DaemonError::Rpc {
            code: RpcCode::Unavailable,
            message: "127.0.0.1:1: Connection refused".to_owned(),
        };
        let lost = because("member 1 (this member's own signer)", unreachable);
        assert!(matches!(recovery(&lost), Recovery::Retryable));
        let config = PathBuf::from("/m/signer.toml");
        let e = member::dkg_completed(lost, "w", &[7; 32], &config);
        let text = e.to_string();
        assert!(text.contains("the DKG of wallet w completed"), "{text}");
        assert!(
            text.contains("thresig status --config /m/signer.toml"),
            "{text}"
        );
        assert!(text.contains("Connection refused"), "{text}");
        assert!(matches!(recovery(&e), Recovery::Terminal));
    }

    #[test]
    fn commands_spelled_without_config_read_the_member_directorys_file() {
        for args in [
            &["thresig", "quarantine", "release", "--member", "2"][..],
            &["thresig", "quarantine", "show"],
            &["thresig", "policy", "promote"],
            &["thresig", "policy", "rollback"],
            &["thresig", "policy", "stage", "--version", "2"],
            &["thresig", "status"],
            &["thresig", "audit", "verify"],
        ] {
            if let Err(e) = Cli::try_parse_from(args) {
                panic!("{args:?}: {e}");
            }
        }
    }
}
