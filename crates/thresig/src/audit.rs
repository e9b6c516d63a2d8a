//! `thresig audit`: the member's audit log (docs/audit.md). Glue only: the
//! store chains and checks the log, the engine writes and signs it.
//!
//! `verify`, `export` and `prune` run in the signer that answers on the
//! admin socket ([`crate::admin`]), or, when none does, on the engine
//! opened here (which records that open in the log, after checking it for
//! `verify`), through the same [`run_on`]. `verify-export` needs no signer
//! and no store: only the export and the audited member's roster key. Exit codes as `thresig keys`: 0, 1 terminal
//! (also a broken chain or an export that does not verify), 2 retryable.

use crate::MEMBER_CONFIG;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::json;
use thresig_cluster::config::Config;
use thresig_cluster::file::open_regular;
use thresig_cluster::node::{LocalEngine, admin_socket_path, wall_clock};
use thresig_engine::audit::{ExportLine, verify_export};
use thresig_engine::{IdentityKey, Signer};
use thresig_store::{AuditSeq, EncryptedStore, Store, Timestamp};

use crate::admin;
use crate::keys::{Common, KeysError, Output, Report, print_outcome};

/// `thresig audit ...`.
#[derive(Args)]
pub(crate) struct AuditArgs {
    #[command(subcommand)]
    command: AuditSubcommand,
}

#[derive(Subcommand)]
enum AuditSubcommand {
    /// Check every link of the log's hash chain; name the first broken
    /// one (exit 1).
    Verify(Common),
    /// Print entries as JSON lines, closed by a checkpoint the member's
    /// identity key signs now.
    Export(ExportArgs),
    /// Check an export offline with only the member's identity key from
    /// the roster.
    VerifyExport(VerifyExportArgs),
    /// Remove entries written before a date (itself logged, with a signed
    /// checkpoint of the pruned head).
    Prune(PruneArgs),
}

#[derive(Args)]
struct ExportArgs {
    /// The signer's configuration file.
    #[arg(long, value_name = "FILE", default_value = MEMBER_CONFIG)]
    config: PathBuf,
    /// The first sequence to print (default: the first kept).
    #[arg(long, value_name = "SEQ", default_value_t = 1)]
    since: u64,
    /// JSON lines on stdout, the only output format (required, so a
    /// script states what it parses).
    #[arg(long, required = true)]
    json: bool,
}

#[derive(Args)]
struct VerifyExportArgs {
    /// A cluster configuration file: the `[[members]]` entry of `--member`
    /// gives the key (any member's file; other sections are not read).
    #[arg(long, value_name = "FILE")]
    roster: PathBuf,
    /// The cluster seat of the member whose log this is: every checkpoint
    /// must carry its identity key, not another member's.
    #[arg(long, value_name = "SEAT")]
    member: u16,
    /// The export, as `thresig audit export --json` printed it.
    export: PathBuf,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct PruneArgs {
    /// The signer's configuration file.
    #[arg(long, value_name = "FILE", default_value = MEMBER_CONFIG)]
    config: PathBuf,
    /// Entries written before this UTC date (YYYY-MM-DD) are removed.
    #[arg(long, value_name = "DATE", value_parser = utc_date)]
    before: Timestamp,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
}

/// An audit command run over the signer's store and engine, here or in
/// the running signer (the admin socket's `{"audit": …}` request).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum AuditCommand {
    Verify,
    /// Appends the export's closing checkpoint and answers its first page.
    Export {
        since: u64,
    },
    /// A further page of the export that `through` (its checkpoint)
    /// closes: one admin reply holds one page, however long the log.
    ExportPage {
        from: u64,
        through: u64,
    },
    Prune {
        before_ms: u64,
    },
}

/// The largest export `verify-export` reads: a million entries of a few
/// hundred bytes each.
const MAX_EXPORT: u64 = 1 << 30;

/// The largest roster file read: a 100-member configuration is a few KiB.
const MAX_ROSTER: u64 = 1 << 20;

/// Runs an `audit` command and returns the process exit code.
pub(crate) fn main(args: AuditArgs) -> ExitCode {
    match args.command {
        AuditSubcommand::Verify(c) => print_outcome(
            Output::json_if(c.json),
            on_engine(&c.config, AuditCommand::Verify),
        ),
        AuditSubcommand::Export(a) => {
            // The lines are the output, printed page by page.
            print_outcome(Output::Text, export(&a.config, a.since))
        }
        AuditSubcommand::VerifyExport(a) => {
            let outcome = check_export(&a.roster, a.member, &a.export);
            print_outcome(Output::json_if(a.json), outcome)
        }
        AuditSubcommand::Prune(a) => print_outcome(
            Output::json_if(a.json),
            on_engine(
                &a.config,
                AuditCommand::Prune {
                    before_ms: a.before.0,
                },
            ),
        ),
    }
}

/// Runs `command` in the signer answering on the configured admin socket,
/// or, when none does, on the engine opened here.
fn on_engine(path: &Path, command: AuditCommand) -> Result<Report, KeysError> {
    crate::wallet::ask_or_run(path, &command.into(), || {
        if command == AuditCommand::Verify {
            // The log is checked before this open is appended to it: the
            // append checks only the last entry, and would name that one
            // rather than the first broken entry.
            let engine = LocalEngine::open_unrecorded(path)?;
            let report = run_on(command, &engine.signer, &engine.store)?;
            engine.signer.audit_open(wall_clock())?;
            Ok(report)
        } else {
            let engine = LocalEngine::open(path)?;
            run_on(command, &engine.signer, &engine.store)
        }
    })
}

/// `export`: asks for the first page (which appends the closing
/// checkpoint), then for each next page, printing each as it comes, from
/// the running signer or the engine opened here.
fn export(path: &Path, since: u64) -> Result<Report, KeysError> {
    let config = Config::load(path)?;
    let socket = admin_socket_path(&config);
    let mut local: Option<LocalEngine> = None;
    let mut command = AuditCommand::Export { since };
    let mut total = 0u64;
    loop {
        let report = match &local {
            Some(engine) => run_on(command, &engine.signer, &engine.store)?,
            None => match admin::ask(&socket, &command.into())? {
                Some(report) => report,
                None => {
                    let engine = LocalEngine::open(path)?;
                    let report = run_on(command, &engine.signer, &engine.store)?;
                    local = Some(engine);
                    report
                }
            },
        };
        let mut out = std::io::stdout().lock();
        out.write_all(report.text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| KeysError::AuditOutput(e.kind()))?;
        total = total.saturating_add(report.json["lines"].as_u64().unwrap_or(0));
        let through = report.json["through"].as_u64().unwrap_or(0);
        match report.json["next"].as_u64() {
            Some(from) => command = AuditCommand::ExportPage { from, through },
            None => return Ok(Report::clean(json!({"lines": total}), String::new())),
        }
    }
}

/// One page of an export closed at `through`, as a report: its lines as
/// text, and where the next page starts (none after the last).
fn export_page(
    signer: &Signer<Arc<EncryptedStore>>,
    from: AuditSeq,
    through: AuditSeq,
) -> Result<Report, KeysError> {
    // Printed as the engine encoded and measured it.
    let page = signer.audit_export_page(from, through)?;
    let json = json!({"lines": page.lines, "through": through.0, "next": page.next.map(|s| s.0)});
    Ok(Report::clean(json, page.text))
}

/// Runs one audit command over `store` and the engine `signer` over it:
/// the one body shared by this process and the signer's admin socket.
///
/// # Errors
/// The store's (`audit_broken` naming the first broken link) and the
/// engine's [`thresig_engine::audit::AuditError`].
pub(crate) fn run_on(
    command: AuditCommand,
    signer: &Signer<Arc<EncryptedStore>>,
    store: &Arc<EncryptedStore>,
) -> Result<Report, KeysError> {
    match command {
        AuditCommand::Verify => {
            let report = store.audit_verify()?;
            let head = report.head;
            let json = json!({
                "entries": report.entries,
                "first": head.first.0,
                "last": head.seq.0,
                "head": hex::encode(head.hash),
            });
            let text = format!(
                "audit log verified: {} entries, {} to {}, head {}\n",
                report.entries,
                head.first,
                head.seq,
                hex::encode(head.hash)
            );
            Ok(Report::clean(json, text))
        }
        AuditCommand::Export { since } => {
            let end = signer.audit_checkpoint(wall_clock())?;
            export_page(signer, AuditSeq(since), end)
        }
        AuditCommand::ExportPage { from, through } => {
            export_page(signer, AuditSeq(from), AuditSeq(through))
        }
        AuditCommand::Prune { before_ms } => {
            let removed = signer.audit_prune(wall_clock(), Timestamp(before_ms))?;
            let head = store.audit_head()?;
            let json = json!({"removed": removed, "first": head.first.0, "last": head.seq.0});
            let text = format!(
                "pruned {removed} audit entries; the log now runs from {} to {} and a signed checkpoint covers the pruned head\n",
                head.first, head.seq
            );
            Ok(Report::clean(json, text))
        }
    }
}

/// `verify-export`: reads the member's key from the roster and the
/// export, and checks it.
fn check_export(roster: &Path, member: u16, export: &Path) -> Result<Report, KeysError> {
    let key = read_roster(roster, member)?;
    let text = read_text(export, MAX_EXPORT)?;
    let mut lines = Vec::new();
    for (i, raw) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let line: ExportLine = serde_json::from_str(raw).map_err(|e| KeysError::AuditInput {
            path: export.to_path_buf(),
            problem: format!("line {}: not an export line ({e})", i + 1),
        })?;
        lines.push(line);
    }
    let report = verify_export(&lines, &key).map_err(KeysError::AuditExport)?;
    let json = json!({
        "member": member,
        "identity": report.member,
        "first": report.first,
        "last": report.last,
        "checkpoints": report.checkpoints,
        "signed_at_ms": report.signed_at_ms,
    });
    let text = format!(
        "export verified: entries {} to {} of seat {member}'s log, {} checkpoint(s) signed by its key {}; the last, signed at {} ms since the epoch, covers every entry before it\n",
        report.first,
        report.last,
        report.checkpoints,
        hex::encode(report.member.to_bytes()),
        report.signed_at_ms
    );
    Ok(Report::clean(json, text))
}

/// Seat `seat`'s identity key in the `[[members]]` of a cluster
/// configuration.
fn read_roster(path: &Path, seat: u16) -> Result<IdentityKey, KeysError> {
    #[derive(Deserialize)]
    struct File {
        #[serde(default)]
        members: Vec<Member>,
    }
    #[derive(Deserialize)]
    struct Member {
        seat: u16,
        identity: IdentityKey,
    }
    let text = read_text(path, MAX_ROSTER)?;
    let file: File = toml::from_str(&text).map_err(|e| KeysError::AuditInput {
        path: path.to_path_buf(),
        problem: format!("not a cluster configuration with [[members]] identity keys: {e}"),
    })?;
    file.members
        .into_iter()
        .find(|m| m.seat == seat)
        .map(|m| m.identity)
        .ok_or_else(|| KeysError::AuditInput {
            path: path.to_path_buf(),
            problem: format!(
                "lists no [[members]] entry with seat {seat}; give the cluster configuration and the audited member's seat"
            ),
        })
}

fn read_text(path: &Path, max: u64) -> Result<String, KeysError> {
    let input = |problem: String| KeysError::AuditInput {
        path: path.to_path_buf(),
        problem,
    };
    let (file, _) = open_regular(path).map_err(|e| input(e.to_string()))?;
    let mut text = String::new();
    file.take(max.saturating_add(1))
        .read_to_string(&mut text)
        .map_err(|e| input(format!("cannot read: {e}")))?;
    if text.len() as u64 > max {
        return Err(input(format!("larger than {max} bytes")));
    }
    Ok(text)
}

/// Parses `YYYY-MM-DD` as midnight UTC.
fn utc_date(text: &str) -> Result<Timestamp, String> {
    let bad = || format!("expected a date as YYYY-MM-DD, found {text:?}");
    let mut parts = text.splitn(3, '-').map(str::parse::<i64>);
    let (Some(Ok(y)), Some(Ok(m)), Some(Ok(d))) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days)
        .ok()
        .and_then(|d| d.checked_mul(86_400_000))
        .map(Timestamp)
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_midnight_utc() {
        assert_eq!(utc_date("1970-01-01"), Ok(Timestamp(0)));
        assert_eq!(utc_date("2026-12-06"), Ok(Timestamp(1_796_515_200_000)));
        assert_eq!(utc_date("2000-03-01"), Ok(Timestamp(951_868_800_000)));
        for bad in ["", "2026-13-01", "2026-1", "yesterday", "1969-12-31"] {
            assert!(utc_date(bad).is_err(), "{bad}");
        }
    }
}
