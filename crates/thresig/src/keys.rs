//! `thresig keys`: the operator's commands over the encrypted store's
//! keyring. Glue only: each command loads the configuration, calls one store
//! operation and prints its result for a person or, with `--json`, for a
//! program.
//!
//! A running signer holds its database's lock, so `status`, `rotate-dek`,
//! `rotate-kek` and `verify` first ask the signer's admin socket
//! ([`crate::admin`]); the signer runs the same [`run_on`] over its open
//! store and the reply is printed as if the command had run here (the JSON
//! says `"via": "daemon"`). Only when no signer answers (no socket, or
//! nothing listening on it) does the command open the store itself
//! (`"via": "store"`). `recover` replaces the keyring under a closed store,
//! so it refuses while a signer answers.
//!
//! Exit codes: 0 success, 1 terminal error (retrying the same command cannot
//! succeed until an operator acts; also usage errors and `verify` finding
//! records that fail), 2 retryable error (a retry may succeed: provider
//! timeout, disk full, database busy). Errors print a stable code, whether a
//! retry can succeed, and a description that never holds key material.

use crate::MEMBER_CONFIG;
use std::io::Read as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc::{RecvTimeoutError, sync_channel};
use std::time::Duration;

use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use thresig_store::provider::{KekId, KeyProvider, ProviderError};
use thresig_store::{
    EncryptedStore, KeyringStatus, MetaName, Recovery, RecoverySecretKey, Store, WriteOp,
};
use zeroize::Zeroizing;

use thresig_cluster::config::{Config, ConfigError};
use thresig_cluster::file::{FileError, open_regular};
use thresig_cluster::node::{NodeError, admin_socket_path, wall_clock};

use thresig_engine::audit::{AuditError, AuditEvent, ExportError, KeyStepAudit, append_op};

use crate::admin::{self, AdminProblem, RemoteError};

/// `thresig keys ...`.
#[derive(Args)]
pub(crate) struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Show DEKs with their terms and states, the KEK ids still needed,
    /// records per DEK, the last rotations and the key provider's health.
    Status(Common),
    /// Rotate the data key: new term, promote, re-seal every record in
    /// batches, retire the old term. Progress goes to stderr (to the
    /// signer's log when a running signer does it).
    RotateDek(Common),
    /// Rewrap every DEK under the provider's current KEK and drop the wraps
    /// under older KEKs.
    RotateKek(Common),
    /// Open and authenticate every record; list those that fail (exit 1 if
    /// any does).
    Verify(Common),
    /// Open the keyring with the offline recovery private key and rewrap
    /// every DEK under the provider's current KEK. Refused while a signer
    /// runs on the store: stop it first.
    Recover(RecoverArgs),
}

/// The arguments every command on one signer takes (`keys`, `audit`).
#[derive(Args)]
pub(crate) struct Common {
    /// The signer's configuration file.
    #[arg(long, value_name = "FILE", default_value = MEMBER_CONFIG)]
    pub(crate) config: PathBuf,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args)]
struct RecoverArgs {
    #[command(flatten)]
    common: Common,
    /// File holding the recovery private key as 64 hex digits; must not be
    /// readable by group or others.
    #[arg(long, value_name = "FILE")]
    recovery_key: PathBuf,
}

/// Meta records where these commands note their last run (the store keeps no
/// rotation timestamps of its own).
const LAST_DEK_ROTATION: &str = "keys.last_dek_rotation";
const LAST_KEK_ROTATION: &str = "keys.last_kek_rotation";

/// How often `rotate-dek` reports progress.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

/// The largest recovery key file read: the key is 64 hex digits.
const MAX_RECOVERY_KEY_FILE: u64 = 256;

/// Why a `keys` or `wallet` command (a local operator's command on the
/// signer's store or engine) failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeysError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Store(#[from] thresig_store::Error),
    /// The engine refused an operator command (its message names the step).
    #[error(transparent)]
    Engine(#[from] thresig_engine::Error),
    /// The signer's engine could not be opened over its store.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// A policy rollout step was refused (`thresig policy`).
    #[error(transparent)]
    Rollout(#[from] thresig_engine::RolloutError),
    #[error("recovery key file {}: {problem}", path.display())]
    RecoveryKeyFile {
        path: PathBuf,
        problem: RecoveryKeyProblem,
    },
    /// The running signer ran the command and it failed there.
    #[error("in the running signer: {0}")]
    Daemon(RemoteError),
    /// The admin socket of a running signer could not be used.
    #[error("admin socket {}: {problem}", socket.display())]
    Admin {
        socket: PathBuf,
        problem: AdminProblem,
    },
    /// An audit command of the signer failed.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// An audit export did not verify against the roster.
    #[error("{0}; the export is not what the member logged and signed (docs/audit.md)")]
    AuditExport(ExportError),
    /// An audit command's input file could not be used.
    #[error("{}: {problem}", path.display())]
    AuditInput { path: PathBuf, problem: String },
    /// The export's lines could not be written out (a closed pipe, a full
    /// disk): what was printed ends before the closing checkpoint.
    #[error(
        "cannot write the export to standard output ({0}); what was printed is cut short and unsigned: run the export again"
    )]
    AuditOutput(std::io::ErrorKind),
    /// `recover` needs the store closed, and a signer has it open.
    #[error(
        "a signer is running on this store (it answers on {}); stop it, run `thresig keys recover` again, then start it",
        socket.display()
    )]
    DaemonRunning { socket: PathBuf },
}

/// What is wrong with a recovery key file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecoveryKeyProblem {
    #[error("cannot read: {0}")]
    Io(std::io::ErrorKind),
    #[error("not a regular file")]
    NotRegular,
    #[error("mode {mode:04o} lets group or others read it; chmod 600 it")]
    Insecure { mode: u32 },
    #[error("larger than {MAX_RECOVERY_KEY_FILE} bytes")]
    TooLarge,
    #[error("does not hold 64 hex digits")]
    Malformed,
}

impl KeysError {
    /// Whether a retry can succeed.
    pub(crate) fn recovery(&self) -> Recovery {
        match self {
            Self::Config(_)
            | Self::RecoveryKeyFile { .. }
            | Self::DaemonRunning { .. }
            | Self::AuditExport(_)
            | Self::AuditInput { .. } => Recovery::Terminal,
            Self::AuditOutput(_) => Recovery::Retryable,
            Self::Audit(e) => e.recovery(),
            Self::Provider(e) => e.recovery(),
            Self::Store(e) => e.recovery(),
            Self::Engine(e) => e.code().recovery(),
            Self::Node(e) => e.recovery(),
            Self::Rollout(e) => e.recovery(),
            Self::Daemon(e) => e.recovery(),
            Self::Admin { problem, .. } => problem.recovery(),
        }
    }

    /// A stable, code-like name of the failure for scripts and runbooks (a
    /// failure in the running signer keeps the code it had there).
    pub(crate) fn code(&self) -> &str {
        match self {
            Self::Config(_) => "config_invalid",
            Self::RecoveryKeyFile { .. } => "recovery_key_file",
            Self::Provider(e) => e.code(),
            Self::Store(e) => e.code(),
            Self::Engine(e) => e.code().as_str(),
            Self::Node(e) => node_code(e),
            Self::Rollout(e) => e.code(),
            Self::Daemon(e) => &e.code,
            Self::Admin { .. } => "admin_socket",
            Self::DaemonRunning { .. } => "daemon_running",
            Self::Audit(e) => e.code(),
            Self::AuditExport(_) => "audit_export_invalid",
            Self::AuditInput { .. } => "audit_input",
            Self::AuditOutput(_) => "audit_output",
        }
    }
}

/// The code of a signer that could not be opened for a local command:
/// the store's or provider's own code where it has one.
fn node_code(e: &NodeError) -> &str {
    match e {
        NodeError::Config(_) | NodeError::Engine(_) => "config_invalid",
        NodeError::Provider(e) => e.code(),
        NodeError::Store(e) => e.code(),
        NodeError::Audit(e) => e.code(),
        _ => "signer_open",
    }
}

/// How results are printed.
#[derive(Clone, Copy)]
pub(crate) enum Output {
    Text,
    Json,
}

impl Output {
    /// JSON when `--json` was given.
    pub(crate) fn json_if(json: bool) -> Self {
        if json { Self::Json } else { Self::Text }
    }
}

impl From<&Common> for Output {
    fn from(c: &Common) -> Self {
        Self::json_if(c.json)
    }
}

/// Whether a command that ran found a problem to report (only `verify`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Verdict {
    Clean,
    Findings,
}

/// A command's result, in both forms.
#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) json: Value,
    pub(crate) text: String,
    pub(crate) verdict: Verdict,
}

impl Report {
    /// A result with nothing to flag.
    pub(crate) fn clean(json: Value, text: String) -> Self {
        Self {
            json,
            text,
            verdict: Verdict::Clean,
        }
    }
}

/// A command that runs over an open store, in this process or in the
/// running signer (the admin socket's request names it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StoreCommand {
    Status,
    RotateDek,
    RotateKek,
    Verify,
}

/// Runs a `keys` command and returns the process exit code.
pub(crate) fn main(args: KeysArgs) -> ExitCode {
    let (output, result) = match args.command {
        KeysCommand::Status(c) => (Output::from(&c), on_store(&c, StoreCommand::Status)),
        KeysCommand::RotateDek(c) => (Output::from(&c), on_store(&c, StoreCommand::RotateDek)),
        KeysCommand::RotateKek(c) => (Output::from(&c), on_store(&c, StoreCommand::RotateKek)),
        KeysCommand::Verify(c) => (Output::from(&c), on_store(&c, StoreCommand::Verify)),
        KeysCommand::Recover(r) => (
            Output::from(&r.common),
            recover(&r.common.config, &r.recovery_key),
        ),
    };
    print_outcome(output, result)
}

/// Prints a local operator command's report (or its error, with its code
/// and class) in `output`'s form and returns the exit code: 0, 1 for
/// findings or a terminal error, 2 for a retryable one.
pub(crate) fn print_outcome(output: Output, result: Result<Report, KeysError>) -> ExitCode {
    match result {
        Ok(report) => {
            match output {
                Output::Json => println!("{}", report.json),
                Output::Text => print!("{}", report.text),
            }
            match report.verdict {
                Verdict::Clean => ExitCode::SUCCESS,
                Verdict::Findings => ExitCode::from(1),
            }
        }
        Err(e) => {
            let retryable = e.recovery() == Recovery::Retryable;
            match output {
                Output::Json => println!(
                    "{}",
                    json!({"error": {"code": e.code(), "retryable": retryable, "message": e.to_string()}})
                ),
                Output::Text => {
                    return crate::fail(
                        &format!("error[{}]", e.code()),
                        &e.to_string(),
                        e.recovery(),
                    );
                }
            }
            crate::exit_code(e.recovery())
        }
    }
}

/// Runs `command` in the signer that answers on the configured store's
/// admin socket, or, when none does, over the store opened here.
fn on_store(common: &Common, command: StoreCommand) -> Result<Report, KeysError> {
    let config = Config::load(&common.config)?;
    let socket = admin_socket_path(&config);
    let (mut report, via) = match admin::ask(&socket, &command.into())? {
        Some(report) => {
            if !common.json {
                eprintln!(
                    "keys: the running signer ran this command (admin socket {}){}",
                    socket.display(),
                    if command == StoreCommand::RotateDek {
                        "; its progress is in the signer's log"
                    } else {
                        ""
                    }
                );
            }
            (report, "daemon")
        }
        None => {
            let (provider, store) = open(&config)?;
            let report = run_on(command, &provider, &store, &mut |line| eprintln!("{line}"))?;
            (report, "store")
        }
    };
    report.json["via"] = json!(via);
    Ok(report)
}

/// Runs `command` over an open store: the one body of each command, shared
/// by this process and the signer's admin socket. `progress` receives
/// `rotate-dek`'s progress lines.
///
/// # Errors
/// [`KeysError`]; never holds key material.
pub(crate) fn run_on(
    command: StoreCommand,
    provider: &Arc<dyn KeyProvider>,
    store: &Arc<EncryptedStore>,
    progress: &mut dyn FnMut(&str),
) -> Result<Report, KeysError> {
    match command {
        StoreCommand::Status => status(provider.as_ref(), store),
        StoreCommand::RotateDek => rotate_dek(store, "rotate_dek", progress),
        StoreCommand::RotateKek => rotate_kek(store),
        StoreCommand::Verify => verify(store),
    }
}

/// The configured provider and the store opened through it.
fn open(config: &Config) -> Result<(Arc<dyn KeyProvider>, Arc<EncryptedStore>), KeysError> {
    let provider: Arc<dyn KeyProvider> = Arc::new(config.key_provider.open()?);
    let store = EncryptedStore::open(config.location(), provider.clone(), config.options.clone())?;
    Ok((provider, Arc::new(store)))
}

fn status(provider: &dyn KeyProvider, store: &EncryptedStore) -> Result<Report, KeysError> {
    let keyring = store.keyring_status()?;
    let current_kek = provider.current_kek_id();
    // Pending when some DEK lacks a wrap under the provider's current KEK
    // or still has one under an older KEK.
    let kek_rotation_pending = current_kek.as_ref().is_ok_and(|kek| {
        keyring
            .deks
            .iter()
            .any(|d| d.keks.as_slice() != std::slice::from_ref(kek))
    });
    let health = match current_kek {
        Ok(kek) => json!({"ok": true, "current_kek": kek.as_str()}),
        Err(e) => json!({
            "ok": false,
            "code": e.code(),
            "retryable": e.recovery() == Recovery::Retryable,
            "message": e.to_string(),
        }),
    };
    let last_dek = last_rotation(store, LAST_DEK_ROTATION)?;
    let last_kek = last_rotation(store, LAST_KEK_ROTATION)?;
    let mut json = keyring_json(&keyring);
    json["provider"] = health.clone();
    json["last_dek_rotation"] = last_dek.clone();
    json["last_kek_rotation"] = last_kek.clone();
    json["kek_rotation_pending"] = json!(kek_rotation_pending);
    // Every key change commits with its audit entry: a broken log blocks
    // them all, the key manager's included, so it is shown here rather
    // than a rotation the operator would run in vain.
    let broken = store.audit_verify().err();
    json["audit_log"] = match &broken {
        None => json!({"ok": true}),
        Some(e) => json!({"ok": false, "code": e.code(), "message": e.to_string()}),
    };
    let mut text = keyring_text(&keyring);
    match &broken {
        Some(e) => text.push_str(&format!(
            "audit log: BROKEN [{}]: {e}\n  no key change can commit{}: run `thresig audit verify` (docs/audit.md, \"When verify fails\")\n",
            e.code(),
            if kek_rotation_pending {
                ", and the pending KEK rotation waits for it"
            } else {
                ""
            }
        )),
        None if kek_rotation_pending => {
            text.push_str("KEK rotation pending: run `thresig keys rotate-kek`\n");
        }
        None => {}
    }
    text.push_str(&match health.get("current_kek").and_then(Value::as_str) {
        Some(kek) => format!("provider: healthy, current KEK {kek}\n"),
        None => format!(
            "provider: FAILING [{}]: {}\n",
            health["code"].as_str().unwrap_or_default(),
            health["message"].as_str().unwrap_or_default()
        ),
    });
    text.push_str(&format!(
        "last DEK rotation: {}\nlast KEK rotation: {}\n",
        rotation_text(&last_dek),
        rotation_text(&last_kek)
    ));
    Ok(Report::clean(json, text))
}

/// Rotates the DEK for the operator's `command` (`rotate_dek`, or
/// `retire` after a wallet's retire), each key change committing with its
/// `key_step` entry (docs/audit.md), and notes the rotation.
pub(crate) fn rotate_dek(
    store: &Arc<EncryptedStore>,
    command: &'static str,
    progress: &mut dyn FnMut(&str),
) -> Result<Report, KeysError> {
    let (done, result) = sync_channel(1);
    let rotating = store.clone();
    let worker = std::thread::spawn(move || {
        let steps = KeyStepAudit::new(command);
        let _ = done.send(rotating.rotate_dek_audited(&steps, wall_clock()));
    });
    // The store reports no progress itself: poll the records per DEK (a
    // read, which never waits for the writer) while the rotation runs.
    let mut last = String::new();
    let outcome = loop {
        match result.recv_timeout(PROGRESS_INTERVAL) {
            Ok(outcome) => break outcome,
            Err(RecvTimeoutError::Timeout) => {
                if let Ok(s) = store.keyring_status() {
                    let line = s
                        .deks
                        .iter()
                        .map(|d| format!("DEK {}: {} records", d.term.0, d.records))
                        .collect::<Vec<_>>()
                        .join(", ");
                    if line != last {
                        progress(&format!("rotate-dek: current DEK {}; {line}", s.current.0));
                        last = line;
                    }
                }
            }
            Err(RecvTimeoutError::Disconnected) => break Err(thresig_store::Error::WriterStopped),
        }
    };
    let _ = worker.join();
    let term = outcome?;
    note_rotation(
        store,
        LAST_DEK_ROTATION,
        "rotate_dek",
        json!({"term": term.0}),
    )?;
    let keyring = store.keyring_status()?;
    let mut json = keyring_json(&keyring);
    json["rotated_to"] = json!(term.0);
    let text = format!(
        "DEK rotated: current term {}\n{}",
        term.0,
        keyring_text(&keyring)
    );
    Ok(Report::clean(json, text))
}

fn rotate_kek(store: &EncryptedStore) -> Result<Report, KeysError> {
    let kek = store.rotate_kek_audited(&KeyStepAudit::new("rotate_kek"), wall_clock())?;
    kek_rotated(store, &kek, "rotate_kek", "KEK rotated")
}

fn recover(path: &Path, key_file: &Path) -> Result<Report, KeysError> {
    let config = Config::load(path)?;
    // Recovery rewrites the keyring of a closed store: a running signer
    // holds it open (and would keep its old keyring in memory).
    let socket = admin_socket_path(&config);
    if admin::answers(&socket)? {
        return Err(KeysError::DaemonRunning { socket });
    }
    // The key file is checked before anything else is touched.
    let secret = read_recovery_key(key_file)?;
    let provider: Arc<dyn KeyProvider> = Arc::new(config.key_provider.open()?);
    let store = EncryptedStore::recover(
        config.location(),
        provider.clone(),
        &secret,
        config.options.clone(),
    )?;
    drop(secret);
    let kek = provider.current_kek_id()?;
    kek_rotated(
        &store,
        &kek,
        "recover",
        "Recovered with the offline key; DEKs rewrapped",
    )
}

/// Notes a KEK rotation and reports the keyring after it.
fn kek_rotated(
    store: &EncryptedStore,
    kek: &KekId,
    command: &str,
    what: &str,
) -> Result<Report, KeysError> {
    note_rotation(
        store,
        LAST_KEK_ROTATION,
        command,
        json!({"kek": kek.as_str()}),
    )?;
    let keyring = store.keyring_status()?;
    let mut json = keyring_json(&keyring);
    json["kek"] = json!(kek.as_str());
    let text = format!("{what}: current KEK {kek}\n{}", keyring_text(&keyring));
    Ok(Report::clean(json, text))
}

fn verify(store: &EncryptedStore) -> Result<Report, KeysError> {
    let report = store.verify()?;
    let failures: Vec<Value> = report
        .failures
        .iter()
        .map(|e| json!({"code": e.code(), "message": e.to_string()}))
        .collect();
    let mut text = format!(
        "records verified: {}\nrecords failing: {}\n",
        report.ok,
        report.failures.len()
    );
    for e in &report.failures {
        text.push_str(&format!("  [{}] {}\n", e.code(), e));
    }
    let corrupt: Vec<String> = store
        .corrupt_wallets()
        .iter()
        .map(ToString::to_string)
        .collect();
    if !corrupt.is_empty() {
        text.push_str(&format!("wallets marked corrupt: {}\n", corrupt.join(", ")));
    }
    Ok(Report {
        json: json!({"ok": report.ok, "failures": failures, "corrupt_wallets": corrupt}),
        text,
        verdict: if report.failures.is_empty() {
            Verdict::Clean
        } else {
            Verdict::Findings
        },
    })
}

/// The KEK ids some active DEK is wrapped under: the KMS versions that must
/// not be destroyed yet.
fn keks_needed(s: &KeyringStatus) -> Vec<&str> {
    let mut needed: Vec<&str> = s
        .deks
        .iter()
        .flat_map(|d| d.keks.iter().map(KekId::as_str))
        .collect();
    needed.sort_unstable();
    needed.dedup();
    needed
}

fn keyring_json(s: &KeyringStatus) -> Value {
    let needed = keks_needed(s);
    let deks: Vec<Value> = s
        .deks
        .iter()
        .map(|d| {
            json!({
                "term": d.term.0,
                "state": if d.term == s.current { "current" } else { "active" },
                "keks": d.keks.iter().map(KekId::as_str).collect::<Vec<_>>(),
                "recoverable": d.recoverable,
                "records": d.records,
            })
        })
        .chain(
            s.retired
                .iter()
                .map(|t| json!({"term": t.0, "state": "retired", "records": 0})),
        )
        .collect();
    json!({"current_dek": s.current.0, "deks": deks, "keks_needed": needed})
}

fn keyring_text(s: &KeyringStatus) -> String {
    let mut text = format!("current DEK: term {}\n", s.current.0);
    for d in &s.deks {
        let keks: Vec<&str> = d.keks.iter().map(KekId::as_str).collect();
        text.push_str(&format!(
            "  DEK {} {}: {} records, wrapped under [{}]{}\n",
            d.term.0,
            if d.term == s.current {
                "current"
            } else {
                "active"
            },
            d.records,
            keks.join(", "),
            if d.recoverable { ", recovery wrap" } else { "" }
        ));
    }
    if !s.retired.is_empty() {
        let retired: Vec<String> = s.retired.iter().map(|t| t.0.to_string()).collect();
        text.push_str(&format!("  retired DEKs: {}\n", retired.join(", ")));
    }
    text.push_str(&format!(
        "KEK ids still needed: {}\n",
        keks_needed(s).join(", ")
    ));
    text
}

fn meta_name(name: &'static str) -> MetaName {
    #[allow(
        clippy::expect_used,
        reason = "the names are constants of this module, 1 to 64 bytes"
    )]
    MetaName::new(name.as_bytes().to_vec()).expect("a constant meta name is valid")
}

/// Records that a rotation finished now.
fn note_rotation(
    store: &EncryptedStore,
    name: &'static str,
    command: &str,
    mut detail: Value,
) -> Result<(), KeysError> {
    // One reading dates the note and its audit entry.
    let now = wall_clock();
    detail["at_unix"] = json!(now.whole_secs());
    // The audit entry commits with the note: a rotation or recovery is a
    // lifecycle event of the member's keys (docs/audit.md).
    let entry = AuditEvent::Keys {
        command: command.to_owned(),
        dek_term: store.keyring_status()?.current.0,
    };
    store.write(vec![
        WriteOp::PutMeta {
            name: meta_name(name),
            value: detail.to_string().into_bytes().into(),
        },
        append_op(now, &entry),
    ])?;
    Ok(())
}

fn last_rotation(store: &EncryptedStore, name: &'static str) -> Result<Value, KeysError> {
    Ok(store
        .meta(&meta_name(name))?
        .and_then(|v| serde_json::from_slice(&v).ok())
        .unwrap_or(Value::Null))
}

fn rotation_text(v: &Value) -> String {
    match v.get("at_unix").and_then(Value::as_u64) {
        Some(at) => format!("at unix time {at}"),
        None => "none recorded by these commands".to_owned(),
    }
}

/// Reads the recovery private key: a regular file, mode 0600 or stricter
/// (checked on the opened file), holding 64 hex digits.
fn read_recovery_key(path: &Path) -> Result<RecoverySecretKey, KeysError> {
    let fail = |problem| KeysError::RecoveryKeyFile {
        path: path.to_path_buf(),
        problem,
    };
    let io = |e: std::io::Error| fail(RecoveryKeyProblem::Io(e.kind()));
    // Read through the shared check, not `read_bounded`: the mode is
    // checked on the opened file before any byte is read, and the key is
    // read into memory that is wiped.
    let (file, meta) = open_regular(path).map_err(|e| match e {
        FileError::Read { source, .. } => io(source),
        _ => fail(RecoveryKeyProblem::NotRegular),
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(fail(RecoveryKeyProblem::Insecure { mode }));
    }
    if meta.size() > MAX_RECOVERY_KEY_FILE {
        return Err(fail(RecoveryKeyProblem::TooLarge));
    }
    let mut text = Zeroizing::new(String::new());
    file.take(MAX_RECOVERY_KEY_FILE)
        .read_to_string(&mut text)
        .map_err(io)?;
    let mut key = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.trim(), key.as_mut())
        .map_err(|_| fail(RecoveryKeyProblem::Malformed))?;
    Ok(RecoverySecretKey::from_bytes(key))
}
