//! The coordinator's quarantine on the command line (docs/quarantine.md):
//! what a coordinating command (`sign`, `sweep`, `load`) reads before a run
//! and records after it, and `thresig quarantine show|release`.

use crate::MEMBER_CONFIG;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::json;
use thresig_cluster::config::Config;
use thresig_cluster::scores::{
    self, Observed, Policy, Score, ScoreError, ScoreStore, Scores, quarantined, scores_path,
};
use thresig_crypto::Seat;

use crate::because;

/// `thresig quarantine`.
#[derive(Args)]
pub(crate) struct QuarantineArgs {
    #[command(subcommand)]
    command: QuarantineCommand,
}

#[derive(Subcommand)]
enum QuarantineCommand {
    /// Show each member's score and quarantine as this member's
    /// coordinator keeps them (no signer is asked).
    Show(ShowArgs),
    /// End a member's quarantine now (its points start afresh; a member
    /// that fails again gets the next, longer cool-down).
    Release(ReleaseArgs),
}

/// `thresig quarantine show`.
#[derive(Args)]
struct ShowArgs {
    /// The coordinating member's configuration file.
    #[arg(long, value_name = "FILE", default_value = MEMBER_CONFIG)]
    config: PathBuf,
    /// Print JSON.
    #[arg(long, conflicts_with = "prometheus")]
    json: bool,
    /// Print the Prometheus text format, for node_exporter's textfile
    /// collector (docs/metrics.md).
    #[arg(long)]
    prometheus: bool,
}

/// `thresig quarantine release`.
#[derive(Args)]
struct ReleaseArgs {
    /// The coordinating member's configuration file.
    #[arg(long, value_name = "FILE", default_value = MEMBER_CONFIG)]
    config: PathBuf,
    /// The member (cluster seat) to release.
    #[arg(long, value_name = "SEAT")]
    member: u16,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn main(args: &QuarantineArgs) -> Result<()> {
    match &args.command {
        QuarantineCommand::Show(args) => show(args),
        QuarantineCommand::Release(args) => release(args),
    }
}

/// The score file and roster of the member whose configuration is at
/// `path`.
fn load(path: &Path) -> Result<(PathBuf, Vec<Seat>)> {
    let config = Config::load(path)?;
    let file = scores_path(&config);
    let node = config.into_node(path)?;
    Ok((file, node.members.keys().copied().collect()))
}

fn show(args: &ShowArgs) -> Result<()> {
    let (file, roster) = load(&args.config)?;
    let scores = ScoreStore::read_file(&file).map_err(|e| because("quarantine", e))?;
    let now = SystemTime::now();
    if args.prometheus {
        print!("{}", prometheus(&roster, &scores, now));
    } else if args.json {
        println!("{}", json!({ "members": json_rows(&roster, &scores, now) }));
    } else {
        print!("{}", text_rows(&roster, &scores, now));
    }
    Ok(())
}

fn release(args: &ReleaseArgs) -> Result<()> {
    let (file, roster) = load(&args.config)?;
    let now = SystemTime::now();
    let score = scores::release(&file, &roster, args.member, now, &Policy::default())
        .map_err(|e| because("quarantine release", e))?;
    tracing::info!(member = args.member, "quarantine released by the operator");
    if args.json {
        println!(
            "{}",
            json!({ "member": args.member, "score": score_json(&score, now) })
        );
    } else {
        println!(
            "member {}: released; {}",
            args.member,
            describe(&score, now)
        );
    }
    Ok(())
}

/// The score file a coordinating command runs with: who to ask last, and
/// where each run is recorded.
///
/// Quarantine must never cost a signature: a file that cannot be used,
/// damaged or not, only costs the run its quarantine. The run asks every
/// member, records nothing and leaves the file as it is, with a warning
/// (for a damaged file, naming it and how to move it aside; `thresig
/// status` and `quarantine show` keep reporting it).
#[derive(Default)]
pub(crate) struct RunScores {
    store: Option<ScoreStore>,
}

impl RunScores {
    /// Opens the member's score file.
    pub(crate) fn open(file: &Path) -> Self {
        match ScoreStore::open(file) {
            Ok(store) => Self { store: Some(store) },
            Err(e) => Self::without(&e),
        }
    }

    /// No scores: every member is asked and nothing is recorded (`thresig
    /// load --no-quarantine`, to measure without it).
    pub(crate) fn off() -> Self {
        Self::default()
    }

    /// What a run gets when the file cannot be used: the empty value, with
    /// a warning.
    fn without<T: Default>(e: &ScoreError) -> T {
        eprintln!("warning: {e} (this run asks every member and records no scores)");
        T::default()
    }

    /// The members quarantined now; none when the file cannot be read.
    pub(crate) fn deferred(&self) -> BTreeSet<Seat> {
        let Some(store) = &self.store else {
            return BTreeSet::new();
        };
        match store.read() {
            Ok(scores) => quarantined(&scores, SystemTime::now(), &Policy::default()),
            Err(e) => Self::without(&e),
        }
    }

    /// Records what the run saw of each member; says which members it
    /// quarantined. A failure is only reported: the run's result stands.
    pub(crate) fn record(&self, observed: &Observed) {
        let Some(store) = &self.store else {
            return;
        };
        let now = SystemTime::now();
        let policy = Policy::default();
        match store.update(|scores| {
            let newly = observed.apply(scores, now, &policy);
            newly
                .into_iter()
                .filter_map(|seat| Some((seat, scores.get(&seat)?.clone())))
                .collect::<Vec<_>>()
        }) {
            Ok(newly) => {
                for (seat, score) in newly {
                    eprintln!(
                        "note: member {seat} is quarantined ({}); `thresig quarantine release \
                         --member {seat}` ends it early",
                        describe(&score, now)
                    );
                }
            }
            Err(e) => eprintln!("warning: this run's member scores were not recorded: {e}"),
        }
    }
}

/// For runs on an async runtime that others share (`thresig load`'s
/// slots): the file's calls wait for a lock (up to 2 s) and sync to disk, so
/// they run on the runtime's blocking threads, not on one that other runs'
/// requests and timers need.
impl RunScores {
    /// [`RunScores::deferred`], off the async threads.
    pub(crate) async fn deferred_async(self: &std::sync::Arc<Self>) -> BTreeSet<Seat> {
        let scores = self.clone();
        // Only a panic in `deferred` fails the join: then ask every member.
        tokio::task::spawn_blocking(move || scores.deferred())
            .await
            .unwrap_or_default()
    }

    /// [`RunScores::record`], off the async threads.
    pub(crate) async fn record_async(self: &std::sync::Arc<Self>, observed: Observed) {
        let scores = self.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || scores.record(&observed)).await {
            eprintln!("warning: this run's member scores were not recorded: {e}");
        }
    }
}

fn unix(now: SystemTime) -> u64 {
    now.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `3 timeouts, 0 refusals, 0 invalid shares; quarantined until ... (in
/// 299 s)`, or `... not quarantined`.
pub(crate) fn describe(score: &Score, now: SystemTime) -> String {
    let mut text = format!(
        "{} timeouts, {} refusals, {} invalid shares, {} points",
        score.timeouts, score.refusals, score.invalid_shares, score.points
    );
    match score
        .until
        .filter(|_| score.is_quarantined(now, &Policy::default()))
    {
        Some(until) => {
            let left = until.saturating_sub(unix(now));
            let _ = write!(text, "; quarantined until {until} (Unix time, in {left} s)");
        }
        None => text.push_str("; not quarantined"),
    }
    text
}

fn score_json(score: &Score, now: SystemTime) -> serde_json::Value {
    let quarantined = score.is_quarantined(now, &Policy::default());
    json!({
        "timeouts": score.timeouts,
        "refusals": score.refusals,
        "invalid_shares": score.invalid_shares,
        "points": score.points,
        "quarantines": score.strikes,
        "good_runs_in_a_row": score.good_streak,
        "quarantined": quarantined,
        "quarantined_until": score.until.filter(|_| quarantined),
    })
}

/// Each roster member's score as JSON, in seat order (a member without a
/// score has a clean one).
pub(crate) fn json_rows(
    roster: &[Seat],
    scores: &Scores,
    now: SystemTime,
) -> Vec<serde_json::Value> {
    roster
        .iter()
        .map(|seat| {
            let score = scores.get(seat).cloned().unwrap_or_default();
            json!({ "member": seat.get(), "score": score_json(&score, now) })
        })
        .collect()
}

/// Each roster member's score as text, one line each.
pub(crate) fn text_rows(roster: &[Seat], scores: &Scores, now: SystemTime) -> String {
    let mut text = String::new();
    for seat in roster {
        let score = scores.get(seat).cloned().unwrap_or_default();
        let _ = writeln!(text, "member {seat:>3}  {}", describe(&score, now));
    }
    text
}

/// A gauge family of [`prometheus`]: name, type, help, and its value for
/// one member's score.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Score, SystemTime) -> u64,
);

/// The scores in the Prometheus text format (docs/metrics.md lists each
/// family).
fn prometheus(roster: &[Seat], scores: &Scores, now: SystemTime) -> String {
    let mut out = String::new();
    let families: [Family; 3] = [
        (
            "thresig_coordinator_member_quarantined",
            "gauge",
            "1 while this coordinator keeps the member in quarantine.",
            |score, now| u64::from(score.is_quarantined(now, &Policy::default())),
        ),
        (
            "thresig_coordinator_member_quarantined_until_seconds",
            "gauge",
            "Unix time the member's quarantine ends (0 when not quarantined).",
            |score, now| {
                score
                    .until
                    .filter(|_| score.is_quarantined(now, &Policy::default()))
                    .unwrap_or(0)
            },
        ),
        (
            "thresig_coordinator_member_quarantines",
            "gauge",
            "Quarantines counting towards the member's next cool-down.",
            |score, _| u64::from(score.strikes),
        ),
    ];
    for (name, kind, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for seat in roster {
            let score = scores.get(seat).cloned().unwrap_or_default();
            let _ = writeln!(out, "{name}{{member=\"{seat}\"}} {}", value(&score, now));
        }
    }
    let faults = "thresig_coordinator_member_faults_total";
    let _ = writeln!(
        out,
        "# HELP {faults} Faults this coordinator counted against the member, by kind.\n# TYPE {faults} counter"
    );
    for seat in roster {
        let score = scores.get(seat).cloned().unwrap_or_default();
        for (kind, count) in [
            ("timeout", score.timeouts),
            ("refusal", score.refusals),
            ("invalid_share", score.invalid_shares),
        ] {
            let _ = writeln!(out, "{faults}{{member=\"{seat}\",kind=\"{kind}\"}} {count}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use thresig_cluster::scores::Fault;

    use super::*;

    fn seat(n: u16) -> Seat {
        Seat::try_from(n).unwrap()
    }

    /// A slot recording its run while another slot's write holds the file
    /// must not stop the runtime: the other slot (here the task that ends
    /// that write) has to run, or the record waits out its patience and is
    /// lost, on a runtime of one thread as on a busy one of many.
    #[test]
    fn recording_a_run_leaves_the_runtime_free_for_other_runs() {
        let dir = tempfile::tempdir().unwrap();
        let scores = Arc::new(RunScores::open(&dir.path().join("scores.redb")));
        let (held_tx, held) = std::sync::mpsc::channel();
        let (end_tx, end) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn({
            let scores = scores.clone();
            move || {
                let store = scores.store.as_ref().unwrap();
                store
                    .update(|_| {
                        held_tx.send(()).unwrap();
                        // Until the other run's task ends it.
                        let _ = end.recv();
                    })
                    .unwrap();
            }
        });
        held.recv().unwrap();
        let mut observed = Observed::default();
        observed.asked.insert(seat(2));
        observed.fault(seat(2), Fault::Timeout);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let record = tokio::spawn({
                let scores = scores.clone();
                async move { scores.record_async(observed).await }
            });
            // The record's task runs first, then this one ends the write.
            tokio::task::yield_now().await;
            end_tx.send(()).unwrap();
            record.await.unwrap();
        });
        holder.join().unwrap();
        let recorded = scores.store.as_ref().unwrap().read().unwrap();
        assert_eq!(
            recorded.get(&seat(2)).map(|s| s.timeouts),
            Some(1),
            "{recorded:?}"
        );
    }
}
