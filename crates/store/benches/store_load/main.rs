//! Load generator for the encrypted store, side by side with an emulation of
//! the single-snapshot design it replaces (DESIGN.md section 8).
//!
//! Everything runs on real files in one temporary directory with fsync on:
//! the machine's raw fsync latency; durable marker inserts per second with
//! 1, 8 and 64 writer threads (and durable commits per insert, from the
//! store's writer counters); the same with a `command` key provider that
//! sleeps one second per call against the `env` provider; and commit cost
//! with 1, 100, 1,000 and 10,000 wallets stored. Every workload also runs
//! against the baseline in `snapshot.rs`, bounded by operation count where
//! it would take minutes.
//!
//! Run: `cargo bench -p thresig-store --bench store_load` (about four
//! minutes on two cores; `TMPDIR` chooses the filesystem). Without `--bench`
//! (as under `cargo test --benches`) it runs a seconds-long smoke pass that
//! skips the one-second provider. Results: `docs/BENCHMARKS.md` (section "Store").

mod snapshot;

use std::io::{Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand_core::{OsRng, RngCore as _};
use sha2::{Digest as _, Sha256};
use thresig_store::provider::{KeyProvider, KeyProviderConfig};
use thresig_store::{
    CommitmentHash, DebugKeyAudit, EncryptedStore, KeyManager, KeyManagerOptions, Marker,
    PackageHash, Store, StoreLocation, StoreOptions, Timestamp, WalletId, WriteOp, WriteOutcome,
};
use zeroize::Zeroizing;

use crate::snapshot::Snapshot;

/// Bytes of a signing-path record: 32-byte package hash, 8-byte expiry and
/// 160 bytes of serialized shares, ~200 bytes as a signer writes per attempt.
const SHARES_LEN: usize = 160;
/// Bytes of a wallet's state record.
const WALLET_STATE_LEN: usize = 200;

/// Sequence numbers for commitments, unique for the whole process so no
/// marker insert ever finds its commitment taken.
static NEXT_SEQ: AtomicU64 = AtomicU64::new(0);

/// Deterministic filler for records.
pub(crate) struct Payload;

impl Payload {
    /// A wallet's state record.
    pub(crate) fn wallet_state(&self, wallet: usize) -> Vec<u8> {
        let mut v = vec![0u8; WALLET_STATE_LEN];
        v.iter_mut()
            .zip((wallet as u64).to_le_bytes().iter().cycle())
            .for_each(|(b, s)| *b = *s ^ 0x5a);
        v
    }

    /// The commitment hash and encoded marker of insert `seq`.
    pub(crate) fn marker(&self, seq: u64) -> ([u8; 32], Vec<u8>) {
        let commitment: [u8; 32] = Sha256::digest(seq.to_be_bytes()).into();
        let package: [u8; 32] = Sha256::digest(commitment).into();
        let mut value = package.to_vec();
        value.extend_from_slice(&u64::MAX.to_be_bytes());
        value.extend(std::iter::repeat_n(0xa5, SHARES_LEN));
        (commitment, value)
    }
}

/// A store under test: something that inserts attempt markers durably.
pub(crate) trait Target: Sync {
    /// Inserts marker `seq` and returns once it is durable.
    fn insert_marker(&self, seq: u64, payload: &Payload);
}

/// The encrypted store and the wallets its markers go to.
struct Thresig {
    store: Arc<EncryptedStore>,
    wallets: Vec<WalletId>,
}

impl Thresig {
    fn create(dir: &Path, provider: Arc<dyn KeyProvider>) -> Self {
        let store = EncryptedStore::create(
            StoreLocation::Directory(dir.to_path_buf()),
            provider,
            StoreOptions::default(),
        )
        .expect("store is created");
        Self {
            store: Arc::new(store),
            wallets: Vec::new(),
        }
    }

    /// Stores wallets until there are `count`, in units of 250 puts.
    fn grow_to(&mut self, count: usize, payload: &Payload) {
        let from = self.wallets.len();
        let new: Vec<usize> = (from..count).collect();
        for chunk in new.chunks(250) {
            let ops = chunk
                .iter()
                .map(|&w| WriteOp::PutWallet {
                    wallet: wallet_id(w),
                    value: payload.wallet_state(w),
                })
                .collect();
            let outcome = self.store.write(ops).expect("wallets stored");
            assert!(matches!(outcome, WriteOutcome::Committed(_)));
        }
        self.wallets.extend((from..count).map(wallet_id));
    }
}

fn wallet_id(w: usize) -> WalletId {
    WalletId::new(format!("wallet-{w:05}")).expect("short id")
}

impl Target for Thresig {
    fn insert_marker(&self, seq: u64, payload: &Payload) {
        let (commitment, value) = payload.marker(seq);
        let marker = Marker {
            package_hash: PackageHash(Sha256::digest(commitment).into()),
            shares: value[40..].to_vec(),
            expires_at: Timestamp(u64::MAX),
        };
        let wallet = self.wallets[seq as usize % self.wallets.len()].clone();
        let outcome = self
            .store
            .write(vec![WriteOp::InsertMarker {
                wallet,
                commitment: CommitmentHash(commitment),
                marker,
            }])
            .expect("marker written");
        assert!(matches!(outcome, WriteOutcome::Committed(_)));
    }
}

/// How long a measurement runs: whichever limit is reached first.
#[derive(Clone, Copy)]
struct Limit {
    time: Duration,
    ops: u64,
}

/// One measurement.
struct Measured {
    ops: u64,
    secs: f64,
}

impl Measured {
    fn per_sec(&self) -> f64 {
        self.ops as f64 / self.secs
    }
}

/// Runs `threads` writers against `target` until `limit`.
fn run(target: &dyn Target, threads: usize, limit: Limit) -> Measured {
    let claimed = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while start.elapsed() < limit.time
                    && claimed.fetch_add(1, Ordering::Relaxed) < limit.ops
                {
                    target.insert_marker(NEXT_SEQ.fetch_add(1, Ordering::Relaxed), &Payload);
                }
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    // A thread stopping on the operation limit claimed one ticket past it;
    // one stopping on time claimed none it did not complete.
    Measured {
        ops: claimed.load(Ordering::Relaxed).min(limit.ops),
        secs,
    }
}

/// Runs against the store and also reports durable commits per insert.
fn run_store(store: &Thresig, threads: usize, limit: Limit) -> (Measured, f64) {
    let before = store.store.writer_stats();
    let m = run(store, threads, limit);
    let after = store.store.writer_stats();
    let per_op = (after.commits - before.commits) as f64 / m.ops.max(1) as f64;
    (m, per_op)
}

/// The `env` provider over a fresh random key.
fn env_provider() -> Arc<dyn KeyProvider> {
    let config =
        KeyProviderConfig::from_toml("[key_provider]\nkind = \"env\"\nvariable = \"BENCH_KEK\"\n")
            .expect("valid section");
    let mut key = [0u8; 32];
    OsRng.fill_bytes(&mut key);
    let key = hex::encode(key);
    let env =
        move |name: &str| (name == "BENCH_KEK").then(|| Zeroizing::new(key.clone().into_bytes()));
    Arc::new(config.open_with(&env).expect("env provider opens"))
}

/// A `command` provider (raw mode) whose program sleeps one second per call.
fn slow_command_provider(dir: &Path) -> Arc<dyn KeyProvider> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut key = [0u8; 32];
    OsRng.fill_bytes(&mut key);
    let script = dir.join("slow-kms");
    std::fs::write(
        &script,
        format!("#!/bin/sh\n/bin/sleep 1\necho {}\n", hex::encode(key)),
    )
    .expect("script written");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let config = KeyProviderConfig::from_toml(&format!(
        "[key_provider]\nkind = \"command\"\ncommand = [\"{}\"]\nmode = \"raw\"\ntimeout_secs = 10\n",
        script.display()
    ))
    .expect("valid section");
    Arc::new(config.open().expect("command provider opens"))
}

/// Raw fsync latency: write 4 KiB at offset 0 and fsync, `n` times.
fn fsync_latency(dir: &Path, n: usize) -> Vec<Duration> {
    let mut f = std::fs::File::create(dir.join("fsync-probe")).expect("probe file");
    let block = [0x42u8; 4096];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f.seek(SeekFrom::Start(0)).expect("seek");
        f.write_all(&block).expect("write");
        f.sync_all().expect("fsync");
        out.push(t.elapsed());
    }
    out.sort();
    out
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The filesystem type holding `path`, from /proc/mounts.
fn filesystem(path: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, mount, fstype) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(mount)
                .then(|| (mount.len(), fstype.to_owned()))
        })
        .max()
        .map_or_else(|| "unknown".to_owned(), |(_, t)| t)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

fn subdir(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("bench directory");
    dir
}

/// Sizes of one run: the full benchmark, or a smoke pass.
struct Plan {
    fsyncs: usize,
    writers_time: Duration,
    wallets: &'static [usize],
    wallets_time: Duration,
    baseline_ops: u64,
    slow_provider: bool,
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let plan = if full {
        Plan {
            fsyncs: 500,
            writers_time: Duration::from_secs(8),
            wallets: &[1, 100, 1_000, 10_000],
            wallets_time: Duration::from_secs(5),
            baseline_ops: 100_000,
            slow_provider: true,
        }
    } else {
        Plan {
            fsyncs: 10,
            writers_time: Duration::from_millis(100),
            wallets: &[1, 100],
            wallets_time: Duration::from_millis(100),
            baseline_ops: 20,
            slow_provider: false,
        }
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path();
    let unlimited = |time| Limit {
        time,
        ops: u64::MAX,
    };

    println!("## Machine\n");
    println!(
        "- nproc: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("- CPU: {}", cpu_model());
    println!("- temp dir filesystem: {}", filesystem(root));

    let lat = fsync_latency(root, plan.fsyncs);
    let mean = lat.iter().sum::<Duration>() / lat.len() as u32;
    let pct = |p: usize| lat[(lat.len() * p / 100).min(lat.len() - 1)];
    println!(
        "- raw fsync (4 KiB write + fsync, {} runs): mean {:.2} ms, p50 {:.2} ms, p99 {:.2} ms (at most {:.0} fsyncs/s in sequence)\n",
        lat.len(),
        ms(mean),
        ms(pct(50)),
        ms(pct(99)),
        1.0 / mean.as_secs_f64()
    );

    // Concurrent writers, 100 wallets, env provider.
    println!("## Durable marker inserts by writer threads (100 wallets, env provider)\n");
    println!(
        "| writers | raw fsync p50 ms | thresig ops/s | commits per op | baseline ops/s | ratio |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    let mut store = Thresig::create(&subdir(root, "writers"), env_provider());
    store.grow_to(100, &Payload);
    for threads in [1, 8, 64] {
        let fsync = fsync_now(root);
        let (t, per_op) = run_store(&store, threads, unlimited(plan.writers_time));
        let base = Snapshot::new(
            subdir(root, &format!("base-writers-{threads}")),
            env_provider(),
            100,
            &Payload,
        );
        let b = run(
            &base,
            threads,
            Limit {
                time: plan.writers_time,
                ops: plan.baseline_ops,
            },
        );
        println!(
            "| {threads} | {fsync:.2} | {:.0} | {per_op:.3} | {:.1} | {:.1} |",
            t.per_sec(),
            b.per_sec(),
            t.per_sec() / b.per_sec()
        );
    }
    drop(store);

    if plan.slow_provider {
        slow_provider(root, &plan);
    }

    println!("\n## Commit cost by wallets stored (env provider)\n");
    println!(
        "| wallets | raw fsync p50 ms | thresig 1 writer ops/s | thresig 64 writers ops/s | commits per op (64) | baseline 1 writer ops/s | baseline 64 writers ops/s | ratio (64) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut store = Thresig::create(&subdir(root, "wallets"), env_provider());
    let mut last_ratio = 0.0;
    for &n in plan.wallets {
        store.grow_to(n, &Payload);
        let fsync = fsync_now(root);
        let (one, _) = run_store(&store, 1, unlimited(plan.wallets_time));
        let (many, per_op) = run_store(&store, 64, unlimited(plan.wallets_time));
        // The baseline rewrites O(wallets) bytes per write: bound it by count.
        let ops = if n >= 10_000 { 32 } else { plan.baseline_ops };
        let base_limit = Limit {
            time: plan.wallets_time,
            ops,
        };
        let [b1, b64] = [1, 64].map(|threads| {
            let dir = subdir(root, &format!("base-w{n}-{threads}"));
            run(
                &Snapshot::new(dir, env_provider(), n, &Payload),
                threads,
                base_limit,
            )
        });
        last_ratio = many.per_sec() / b64.per_sec();
        println!(
            "| {n} | {fsync:.2} | {:.0} | {:.0} | {per_op:.3} | {:.1} | {:.1} | {last_ratio:.0} |",
            one.per_sec(),
            many.per_sec(),
            b1.per_sec(),
            b64.per_sec()
        );
    }
    if plan.wallets.last() == Some(&10_000) {
        println!("\nsnapshot-design ratio at 10,000 wallets: {last_ratio:.0}");
    }
}

/// The raw fsync p50 now (50 runs), in milliseconds: printed in each row
/// so that it shows the disk as it was when the row ran (other tenants'
/// I/O moves it a lot).
fn fsync_now(root: &Path) -> f64 {
    let lat = fsync_latency(root, 50);
    ms(lat[lat.len() / 2])
}

/// Signing-path inserts with a `command` provider that takes one second
/// per call against the `env` provider.
///
/// Every store but one runs a key manager polling its provider every
/// second, as a running signer does (every minute by default): the slow
/// provider's calls happen beside the writes, never in front of them. The
/// machine is shared and its disk latency drifts by several times within
/// seconds, so the stores run in many short rounds, in rotating order, and
/// two controls give the noise floor and the manager's own cost: a second
/// managed `env` store, and an `env` store without a manager.
fn slow_provider(root: &Path, plan: &Plan) {
    const ROUNDS: usize = 24;
    let round = plan.writers_time / 16;
    println!("\n## Slow key provider (8 writers, 100 wallets)\n");
    let open = |name: &str, provider| {
        let mut store = Thresig::create(&subdir(root, name), provider);
        store.grow_to(100, &Payload);
        store
    };
    let env_store = open("env", env_provider());
    let control_store = open("env-control", env_provider());
    let unmanaged_store = open("env-unmanaged", env_provider());
    let opened = Instant::now();
    let cmd_store = open("command", slow_command_provider(root));
    let open_secs = opened.elapsed().as_secs_f64();
    let mut options = KeyManagerOptions::default();
    options.poll_interval = Duration::from_secs(1);
    let managers: Vec<KeyManager> = [&env_store, &control_store, &cmd_store]
        .iter()
        .map(|s| KeyManager::start(s.store.clone(), options, Arc::new(DebugKeyAudit)))
        .collect();
    let zero = || Measured { ops: 0, secs: 0.0 };
    let (mut env, mut cmd, mut control, mut unmanaged) = (zero(), zero(), zero(), zero());
    let limit = Limit {
        time: round,
        ops: u64::MAX,
    };
    for r in 0..ROUNDS {
        let mut order = [
            (&env_store, &mut env),
            (&cmd_store, &mut cmd),
            (&control_store, &mut control),
            (&unmanaged_store, &mut unmanaged),
        ];
        // Each store takes each position in turn, so whatever favours the
        // first (or last) run of a round falls on all alike.
        order.rotate_left(r % 4);
        for (store, total) in order {
            let (m, _) = run_store(store, 8, limit);
            (total.ops, total.secs) = (total.ops + m.ops, total.secs + m.secs);
        }
    }
    let health = managers.get(2).map(KeyManager::health).unwrap_or_default();
    drop(managers);
    let env_base = run(
        &Snapshot::new(subdir(root, "base-env"), env_provider(), 100, &Payload),
        8,
        Limit {
            time: plan.writers_time,
            ops: plan.baseline_ops,
        },
    );
    let cmd_base = run(
        &Snapshot::new(
            subdir(root, "base-command"),
            slow_command_provider(root),
            100,
            &Payload,
        ),
        8,
        Limit {
            time: Duration::from_secs(10),
            ops: 5,
        },
    );
    // The two managed env stores pooled: the reference the command store is
    // compared with (either alone differs from the other by the noise floor).
    let pooled = Measured {
        ops: env.ops + control.ops,
        secs: env.secs + control.secs,
    };
    println!("| store | key manager | thresig ops/s | baseline ops/s (ops run) |");
    println!("|---|---|---:|---:|");
    println!(
        "| env A | every 1 s | {:.0} | {:.1} ({}) |",
        env.per_sec(),
        env_base.per_sec(),
        env_base.ops
    );
    println!("| env B | every 1 s | {:.0} | |", control.per_sec());
    println!("| env C | none | {:.0} | |", unmanaged.per_sec());
    println!(
        "| command, 1 s per call | every 1 s | {:.0} | {:.2} ({}) |",
        cmd.per_sec(),
        cmd_base.per_sec(),
        cmd_base.ops
    );
    println!(
        "\nthresig: {ROUNDS} rounds of {:.2} s per store, in rotating order. Noise floor \
         (env B / env A): {:.3}. Key manager cost (env C / env A+B): {:.3}. Opening the \
         store through the command provider took {open_secs:.1} s; its key manager \
         completed {} ticks ({} failed) during the rounds.",
        round.as_secs_f64(),
        control.per_sec() / env.per_sec(),
        unmanaged.per_sec() / pooled.per_sec(),
        health.ticks,
        health.consecutive_failures,
    );
    println!(
        "\nslow-provider ratio (command 1 s / env): {:.3}",
        cmd.per_sec() / pooled.per_sec()
    );
    println!(
        "baseline slow-provider ratio (command 1 s / env): {:.5}",
        cmd_base.per_sec() / env_base.per_sec()
    );
}
