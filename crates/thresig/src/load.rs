//! `thresig load`: the load generator. Starts a local cluster like the demo,
//! then signs many distinct transactions through ROAST over loopback and
//! reports throughput, time to a signature, the signers' and the
//! coordinator's CPU time, and how much of the run each signer spent
//! waiting for its store's commits.
//!
//! Reproducing the numbers in `docs/BENCHMARKS.md`:
//! `cargo run --release -p thresig -- load --signers 3 --threshold 2`; with
//! a flaky member, with and without quarantine: add `--stall-member 3`
//! (and `--no-quarantine`).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use bitcoin::Amount;
use rand_core::{CryptoRng, RngCore};
use serde_json::json;
use thresig_cluster::config::Config;
use thresig_cluster::local::free_loopback_ports;
use thresig_cluster::scores::scores_path;
use thresig_cluster::{CommitmentPool, SignError, SignOptions, release_kept, sign};
use thresig_crypto::Seat;
use thresig_tx::{Destination, MAX_PER_DAY_CEILING, Payment, PolicyConfig, build_psbt};
use tracing::info;

use crate::because;
use crate::demo::{COORDINATOR, Launched, fresh_address, launch, synthetic_prevouts};
use crate::fault::Misbehavior;
use crate::quarantine::RunScores;

/// Flags of `thresig load`.
#[derive(clap::Args, Debug)]
pub(crate) struct LoadArgs {
    /// Number of members (n).
    #[arg(long, default_value_t = 3)]
    signers: u16,
    /// Members needed to sign (t).
    #[arg(long, default_value_t = 2)]
    threshold: u16,
    /// Members stopped before signing (the highest seats).
    #[arg(long, default_value_t = 0)]
    offline: u16,
    /// Signatures to produce (each a distinct one-input transaction), at
    /// most 10 000 / threshold (the run's one coordinator's daily share).
    /// Default: 200, or that share if smaller.
    #[arg(long)]
    signatures: Option<usize>,
    /// Signing runs in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Start each run of a slot at least this long after that slot's
    /// previous run started (0: back to back). A paced load is how a
    /// custody signer is used, and what shows a flaky member's cost: back
    /// to back, thousands of runs finish while it stalls once.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pace_ms: u64,
    /// A member that answers round 1 at once and every round 2 only after
    /// 15 s, past the coordinator's request timeout (a flaky member, hosted
    /// in this process; docs/quarantine.md).
    #[arg(long, value_name = "SEAT")]
    stall_member: Option<u16>,
    /// Run without the coordinator's quarantine: ask every member every
    /// time and record no scores (to measure what quarantine saves).
    #[arg(long)]
    no_quarantine: bool,
    /// Start every run afresh, as `thresig sign` does: ask every member
    /// for commitments in round 1 and ask them to drop the unused ones at
    /// the end. By default the runs share the coordinator's pool of unused
    /// commitments, as a coordinator that signs one transaction after
    /// another does (docs/BENCHMARKS.md).
    #[arg(long)]
    fresh_runs: bool,
    /// Keep the cluster directory here.
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// Print one JSON object instead of the readable summary.
    #[arg(long)]
    json: bool,
}

/// Signatures a run produces unless `--signatures` says otherwise.
const DEFAULT_SIGNATURES: usize = 200;

/// Linux reports process CPU time in `/proc/<pid>/stat` in ticks of
/// USER_HZ, which is 100 on every Linux ABI.
const TICKS_PER_SECOND: u64 = 100;

pub(crate) fn main(args: &LoadArgs, rng: &mut (impl RngCore + CryptoRng)) -> Result<()> {
    if args.offline >= args.signers || args.signers - args.offline < args.threshold {
        bail!(
            "--offline {} leaves fewer than --threshold members",
            args.offline
        );
    }
    let signatures = args.signatures()?;
    let stalled: Vec<(Seat, Misbehavior)> = match args.stall_member {
        None => Vec::new(),
        Some(member) => match Seat::try_from(member) {
            Ok(seat) if member <= args.signers - args.offline => {
                vec![(seat, Misbehavior::StallsSigning)]
            }
            _ => bail!(
                "--stall-member {member} is not one of the members that run (1 to {})",
                args.signers - args.offline
            ),
        },
    };
    let destination = fresh_address(rng)?;
    let mut policy = PolicyConfig::default();
    policy.destinations = vec![destination.to_string()];
    // A load run signs far more than the default daily limits allow; each
    // coordinator gets its share of the most a wallet may have.
    policy.max_per_day = Some(MAX_PER_DAY_CEILING);
    // Every bitcoin there will ever be: no budget, but a TOML integer.
    policy.max_fee_per_day_sat = 21_000_000 * 100_000_000;
    let Launched {
        mut cluster,
        peers,
        runtime,
        wallet,
        key,
        epoch,
        spend,
        temp: _temp,
        // Served in this process until the run ends: a stalling member.
        faulty: _faulty,
        ..
    } = launch(
        args.signers,
        args.threshold,
        policy,
        &stalled,
        args.keep.as_ref(),
        rng,
        free_loopback_ports,
    )?;
    let scores = Arc::new(if args.no_quarantine {
        RunScores::off()
    } else {
        RunScores::open(&scores_path(&Config::load(
            &cluster.config_path(COORDINATOR)?,
        )?))
    });
    let offline: Vec<Seat> = (args.signers - args.offline + 1..=args.signers)
        .filter_map(|s| Seat::try_from(s).ok())
        .collect();
    for seat in &offline {
        cluster.stop(*seat)?;
    }
    let online: Vec<(Seat, u32)> = cluster
        .members()
        .iter()
        .filter_map(|m| Some((m.seat, cluster.pid(m.seat)?)))
        .collect();
    let psbts = (0..signatures)
        .map(|_| {
            let input = synthetic_prevouts(&spend, 1, rng);
            let total = input.iter().map(|i| i.value.to_sat()).sum::<u64>();
            let payment = Payment {
                destination: Destination::Address(destination.clone()),
                value: Amount::from_sat(total - 1_000),
            };
            build_psbt(
                &spend,
                &input,
                &[payment],
                bitcoin::absolute::LockTime::ZERO,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let metrics = online
        .iter()
        .map(|(seat, _)| {
            let node = cluster.node(*seat)?;
            let daemon = node
                .daemon
                .with_context(|| format!("member {seat}'s configuration has no [daemon]"))?;
            Ok((*seat, daemon.metrics_listen))
        })
        .collect::<Result<Vec<_>>>()?;
    let wait_before = store_waits(&metrics)?;
    let coordinator = [(Party::Coordinator, std::process::id())];
    let coordinator_before = cpu_times(&coordinator)?;
    let cpu_before = cpu_times(&online)?;
    info!(signatures, concurrency = args.concurrency, "signing");
    let psbts = Arc::new(psbts);
    let next = Arc::new(AtomicUsize::new(0));
    let pace = Duration::from_millis(args.pace_ms);
    let pool = (!args.fresh_runs).then(|| Arc::new(CommitmentPool::default()));
    let started = Instant::now();
    let signed = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..args.concurrency {
            let (psbts, next, peers) = (psbts.clone(), next.clone(), peers.clone());
            let (wallet, key, scores) = (wallet.clone(), key.clone(), scores.clone());
            let pool = pool.clone();
            tasks.spawn(async move {
                let mut latencies = Vec::new();
                let mut options = SignOptions::default();
                options.pool = pool;
                let mut due = tokio::time::Instant::now();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(psbt) = psbts.get(i) else {
                        return Ok::<_, anyhow::Error>(latencies);
                    };
                    tokio::time::sleep_until(due).await;
                    due = tokio::time::Instant::now() + pace;
                    let one = Instant::now();
                    options.deferred = scores.deferred_async().await;
                    let signed = sign(&peers, &wallet, &key, epoch, psbt, &options).await;
                    let observed = match &signed {
                        Ok(outcome) => Some(&outcome.observed),
                        Err(SignError::Failed { observed, .. }) => Some(observed),
                        Err(_) => None,
                    };
                    if let Some(observed) = observed {
                        scores.record_async(observed.clone()).await;
                    }
                    signed?;
                    latencies.push(one.elapsed());
                }
            });
        }
        let mut all = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            all.extend(joined??);
        }
        Ok::<_, anyhow::Error>(all)
    });
    let elapsed = started.elapsed();
    // Released on failure too: the members need not hold the kept nonces
    // until they expire.
    if let Some(pool) = &pool {
        runtime.block_on(release_kept(&peers, &wallet, pool));
    }
    let latencies = signed?;
    let cpu_after = cpu_times(&online)?;
    let coordinator_after = cpu_times(&coordinator)?;
    let wait_after = store_waits(&metrics)?;
    let failed = cluster.stop_all()?;
    if !failed.is_empty() {
        bail!("members {failed:?} did not shut down cleanly");
    }
    let cpu_total: Duration = cpu_after
        .iter()
        .zip(&cpu_before)
        .map(|(after, before)| after.saturating_sub(*before))
        .sum();
    let coordinator_cpu: Duration = coordinator_after
        .iter()
        .zip(&coordinator_before)
        .map(|(after, before)| after.saturating_sub(*before))
        .sum();
    // The part of the run each signer had a request blocked on a commit
    // (the metric counts requests waiting together once, so at most 1).
    let store_wait: serde_json::Map<String, serde_json::Value> = wait_after
        .iter()
        .zip(&wait_before)
        .zip(&metrics)
        .map(|((after, before), (seat, _))| {
            (
                seat.to_string(),
                json!((after - before) / elapsed.as_secs_f64()),
            )
        })
        .collect();
    let mut sorted = latencies.clone();
    sorted.sort();
    let quantile = |q: f64| {
        let at = ((sorted.len() as f64 - 1.0) * q).round() as usize;
        sorted.get(at).copied().unwrap_or_default()
    };
    let count = latencies.len() as f64;
    let report = json!({
        "signers": args.signers,
        "threshold": args.threshold,
        "offline": args.offline,
        "stalled_member": args.stall_member,
        "quarantine": !args.no_quarantine,
        "kept_commitments": !args.fresh_runs,
        "signatures": latencies.len(),
        "concurrency": args.concurrency,
        "pace_ms": args.pace_ms,
        "seconds": elapsed.as_secs_f64(),
        "signatures_per_second": count / elapsed.as_secs_f64(),
        "latency_ms_mean": ms(latencies.iter().sum::<Duration>()) / count,
        "latency_ms_p50": ms(quantile(0.5)),
        "latency_ms_p90": ms(quantile(0.9)),
        "latency_ms_p99": ms(quantile(0.99)),
        "latency_ms_max": ms(quantile(1.0)),
        "signer_cpu_ms_per_signature": ms(cpu_total) / count,
        "signer_cpu_ms_per_signature_per_signer": ms(cpu_total) / count / online.len() as f64,
        "coordinator_cpu_ms_per_signature": ms(coordinator_cpu) / count,
        "store_wait_fraction_by_signer": store_wait,
    });
    if args.json {
        println!("{report}");
    } else {
        for (name, value) in report.as_object().context("a JSON object")? {
            println!("{name:>40}: {value}");
        }
    }
    Ok(())
}

impl LoadArgs {
    /// The number of signatures to produce. Every run signs as the same
    /// coordinator, so its wallet's per-coordinator daily sub-limit (the
    /// largest `max_per_day` divided by t) bounds a run; a larger one is
    /// refused here rather than failing part-way with `policy_denied`.
    fn signatures(&self) -> Result<usize> {
        if self.threshold == 0 {
            bail!("--threshold must be at least 1");
        }
        let share = usize::try_from(MAX_PER_DAY_CEILING / u32::from(self.threshold))?;
        let signatures = self.signatures.unwrap_or(DEFAULT_SIGNATURES.min(share));
        if signatures == 0 || self.concurrency == 0 {
            bail!("--signatures and --concurrency must be at least 1");
        }
        if signatures > share {
            bail!(
                "--signatures {signatures} is above {share}, the most one coordinator may get \
                 signed in a day at --threshold {} ({MAX_PER_DAY_CEILING} / {}); run at most {share}",
                self.threshold,
                self.threshold
            );
        }
        Ok(signatures)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Whose CPU time is read: a member's process or this one.
#[derive(Clone, Copy)]
enum Party {
    Member(Seat),
    /// This process, which runs the coordinator of every run.
    Coordinator,
}

impl From<Seat> for Party {
    fn from(seat: Seat) -> Self {
        Self::Member(seat)
    }
}

impl std::fmt::Display for Party {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Member(seat) => write!(f, "member {seat}"),
            Self::Coordinator => f.write_str("the coordinator"),
        }
    }
}

/// How long a metrics scrape may take before the run gives up on it.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// Each member's `thresig_store_write_wait_seconds`, scraped from its
/// metrics listener.
fn store_waits(members: &[(Seat, std::net::SocketAddr)]) -> Result<Vec<f64>> {
    members
        .iter()
        .map(|(seat, addr)| {
            let text = scrape(*addr)
                .map_err(|e| because(format!("scraping member {seat}'s metrics at {addr}"), e))?;
            metric(&text, "thresig_store_write_wait_seconds").with_context(|| {
                format!("member {seat}'s metrics at {addr} have no store write wait")
            })
        })
        .collect()
}

/// One `GET /metrics` over plain HTTP (the daemon closes after answering).
fn scrape(addr: std::net::SocketAddr) -> std::io::Result<String> {
    use std::io::{Read as _, Write as _};
    let mut tcp = std::net::TcpStream::connect_timeout(&addr, SCRAPE_TIMEOUT)?;
    tcp.set_read_timeout(Some(SCRAPE_TIMEOUT))?;
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    let mut response = String::new();
    tcp.read_to_string(&mut response)?;
    Ok(response)
}

/// The value of the unlabelled sample `name` in OpenMetrics text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok())?
    })
}

/// User plus system CPU time of each process so far.
fn cpu_times<P: Copy + Into<Party>>(processes: &[(P, u32)]) -> Result<Vec<Duration>> {
    processes
        .iter()
        .map(|(party, pid)| {
            let party: Party = (*party).into();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map_err(|e| because(format!("reading {party}'s CPU time"), e))?;
            // The command name (field 2) may contain spaces; fields after it
            // are counted from its closing parenthesis.
            let after = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest)
                .context("malformed /proc stat")?;
            let fields: Vec<&str> = after.split_whitespace().collect();
            // utime and stime are fields 14 and 15: indices 11 and 12 here.
            let ticks = |i: usize| -> Result<u64> {
                Ok(fields.get(i).context("short /proc stat")?.parse()?)
            };
            let total = ticks(11)? + ticks(12)?;
            Ok(Duration::from_millis(total * 1000 / TICKS_PER_SECOND))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(threshold: u16, signatures: Option<usize>) -> LoadArgs {
        LoadArgs {
            signers: 100,
            threshold,
            offline: 0,
            stall_member: None,
            no_quarantine: false,
            fresh_runs: false,
            signatures,
            concurrency: 1,
            pace_ms: 0,
            keep: None,
            json: false,
        }
    }

    /// The load run signs as one coordinator, so it may sign at most that
    /// coordinator's share of the largest `max_per_day`: the default run
    /// fits it at every threshold, and a larger explicit run is refused
    /// before any member starts.
    #[test]
    fn a_load_run_fits_one_coordinators_daily_share() {
        for t in [2, 11, 51, 100, 1000] {
            let n = args(t, None).signatures().unwrap();
            assert!((1..=200).contains(&n), "t = {t}: {n}");
            assert!(
                n <= (MAX_PER_DAY_CEILING / u32::from(t)) as usize,
                "t = {t}: {n}"
            );
        }
        assert_eq!(args(51, Some(20)).signatures().unwrap(), 20);
        assert_eq!(args(51, Some(196)).signatures().unwrap(), 196);
        let err = args(51, Some(197)).signatures().unwrap_err().to_string();
        assert!(
            err.contains("--signatures 197") && err.contains("196"),
            "{err}"
        );
        assert!(args(51, Some(0)).signatures().is_err());
    }

    /// The store wait is read from the exact sample, not from a metric
    /// whose name it starts, nor from the HELP and TYPE lines.
    #[test]
    fn the_store_wait_is_read_from_its_own_sample() {
        let text = "HTTP/1.1 200 OK\r\n\r\n\
            # HELP thresig_store_write_wait_seconds Time blocked.\n\
            # TYPE thresig_store_write_wait_seconds gauge\n\
            thresig_store_write_wait_seconds_other 9.0\n\
            thresig_store_write_wait_seconds 1.25\n\
            # EOF\n";
        assert_eq!(metric(text, "thresig_store_write_wait_seconds"), Some(1.25));
        assert_eq!(metric(text, "thresig_store_rollbacks_accepted"), None);
    }
}
