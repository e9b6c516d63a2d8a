//! Memory a member can pin, over real processes: in a 2-of-3 cluster, a
//! client holding member 3's certificate attacks member 1's signer, first
//! with hundreds of streams whose 4 MB bodies never finish, then with
//! thousands of amplifying requests (round 1 at the wallet's largest input
//! count, and status). Member 2 signs throughout, and needs member 1 to do
//! so (member 3's own signer is stopped). The victim's peak resident memory
//! stays under the bound `docs/daemon.md` states for the default limits.
//!
//! Time to a signature with and without each attack (the median of
//! [`SAMPLES`]) and the CPU time the victim and the attacker spent under the
//! amplifying attack are printed (run with `--nocapture`) for
//! `docs/BENCHMARKS.md`; they are not asserted.

mod common;
#[path = "../../daemon/tests/common/raw.rs"]
mod raw;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{ProcessCluster, WALLET, dkg, seat, self_payment};
use raw::{MemberFiles, answer, call, connect, unfinished};

const MEMBERS: u16 = 3;
const VICTIM: u16 = 1;
const COORDINATOR: u16 = 2;
const ATTACKER: u16 = 3;

/// Connections the attacker opens, each with as many streams as the signer
/// allows (32 by default).
const CONNECTIONS: usize = 8;
const STREAMS: usize = 32;

/// Amplifying requests the attacker sends at the least.
const AMPLIFYING: usize = 2_000;

/// What the attack may add to the victim's resident memory at rest, by the
/// bound of `docs/daemon.md` ("Memory under attack") for the default
/// limits: four times the byte budget (64 MiB; the most a request costs per
/// byte while received, decoded and handled), 16 MiB per round 2 the
/// attacker may have running (8) for its PSBT, plus 2.5 MiB per connection
/// (unread window, header blocks and stream state; the attacker's and one
/// per member).
const ADDED_BOUND_KIB: u64 =
    (4 * 64 + 16 * 8) * 1024 + (CONNECTIONS as u64 + MEMBERS as u64) * 5 * 512;

/// Signatures timed in each phase; the median is reported.
const SAMPLES: u8 = 5;

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .unwrap();
    line.trim().trim_end_matches("kB").trim().parse().unwrap()
}

/// Signs `psbt` coordinated by `config`; the time it took.
fn sign(config: &Path, psbt: &Path) -> Duration {
    let started = Instant::now();
    let signed = common::sign_report(config, psbt);
    let took = started.elapsed();
    assert!(signed["txid"].is_string(), "{signed}");
    took
}

/// The median time of [`SAMPLES`] signatures coordinated by `config`, each
/// of a PSBT made from `first` on.
fn median_sign(config: &Path, dir: &Path, made: &common::Made, first: u8) -> Duration {
    let mut took: Vec<Duration> = (first..first + SAMPLES)
        .map(|byte| sign(config, &self_payment(dir, made, byte)))
        .collect();
    took.sort();
    took[took.len() / 2]
}

/// User and system CPU time of process `pid` so far, in clock ticks
/// (fields 14 and 15 of `/proc/<pid>/stat`, after the command's name).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Holds `STREAMS` round-2 calls with unfinished 4 MB bodies open on each
/// connection, opening a new one as each is answered, until `stop`.
async fn unfinished_bodies(
    files: Arc<MemberFiles>,
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CONNECTIONS {
        let files = files.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            let mut send = connect(&files, addr, &format!("seat-{VICTIM}.test")).await;
            while !stop.load(Ordering::Relaxed) {
                let mut pending = Vec::new();
                for _ in 0..STREAMS {
                    let (next, response, body) =
                        unfinished(send, "Round2", 4_000_000, 3_900_000).await;
                    send = next;
                    pending.push((response, body));
                }
                for (response, _body) in pending {
                    let answered = answer(response).await;
                    assert_eq!(answered.status, "0");
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

/// Sends round-1 requests at the wallet's input limit and status requests,
/// `STREAMS` at a time on each connection, until `stop` and at least
/// `AMPLIFYING` were answered (counted in `sent`, results and refusals
/// alike). Each stream reports on `running` once its first call is
/// answered, so a signature can be timed against the attack at full width.
async fn amplifying(
    files: Arc<MemberFiles>,
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    running: tokio::sync::mpsc::UnboundedSender<()>,
) {
    // Round1Request { wallet_id: "w", inputs: 256 }.
    let round1 = [0x0a, 0x01, b'w', 0x10, 0x80, 0x02];
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CONNECTIONS {
        let send = connect(&files, addr, &format!("seat-{VICTIM}.test")).await;
        for stream in 0..STREAMS {
            let mut send = send.clone();
            let stop = stop.clone();
            let sent = sent.clone();
            let mut running = Some(running.clone());
            tasks.spawn(async move {
                while !stop.load(Ordering::Relaxed) || sent.load(Ordering::Relaxed) < AMPLIFYING {
                    let answered = if stream % 2 == 0 {
                        call(&mut send, "Round1", &round1).await
                    } else {
                        call(&mut send, "Status", &[]).await
                    };
                    assert_eq!(answered.status, "0");
                    sent.fetch_add(1, Ordering::Relaxed);
                    if let Some(running) = running.take() {
                        running.send(()).unwrap();
                    }
                }
            });
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

/// Waits for an attack to end once told to stop: every call it made must
/// have been answered. The guard only keeps a signer that never answers
/// from hanging the test.
fn finish(runtime: &tokio::runtime::Runtime, attack: tokio::task::JoinHandle<()>, what: &str) {
    let guard = Duration::from_secs(120);
    runtime
        .block_on(async { tokio::time::timeout(guard, attack).await })
        .unwrap_or_else(|_| panic!("the signer left calls of the {what} attack unanswered"))
        .unwrap();
}

#[test]
fn a_member_pinning_request_memory_leaves_the_signer_bounded_and_others_signing() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut cluster = ProcessCluster::provision(MEMBERS, 2, &[], 53);
    cluster.start_all(&runtime);
    let made = dkg(&cluster.config_path(seat(COORDINATOR)), WALLET);
    // With the attacker's own signer down, every signature needs the victim.
    assert!(cluster.local.stop(seat(ATTACKER)).unwrap());
    let victim = cluster.local.pid(seat(VICTIM)).unwrap();
    let addr = cluster.node(seat(VICTIM)).members[&seat(VICTIM)].endpoint;
    let tls = cluster
        .config_path(seat(ATTACKER))
        .parent()
        .unwrap()
        .join("tls");
    let files = Arc::new(MemberFiles {
        ca_cert: tls.join("ca.pem"),
        cert: tls.join("signer.pem"),
        key: tls.join("signer.key"),
    });
    let coordinator = cluster.config_path(seat(COORDINATOR));
    let dir = tempfile::tempdir().unwrap();

    let (quiet_cpu, started) = (cpu_ticks(victim), Instant::now());
    let quiet = median_sign(&coordinator, dir.path(), &made, 0x10);
    let quiet_ms = started.elapsed().as_millis();
    // Clock ticks are 10 ms on Linux.
    let quiet_cpu_ms = (cpu_ticks(victim) - quiet_cpu) * 10;
    let idle_kib = memory_kib(victim, "VmRSS");

    let stop = Arc::new(AtomicBool::new(false));
    let attack = runtime.spawn(unfinished_bodies(files.clone(), addr, stop.clone()));
    let under_bodies = median_sign(&coordinator, dir.path(), &made, 0x20);
    let bodies_kib = memory_kib(victim, "VmRSS");
    stop.store(true, Ordering::Relaxed);
    finish(&runtime, attack, "unfinished bodies");

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let (running, mut streams) = tokio::sync::mpsc::unbounded_channel();
    let attack = runtime.spawn(amplifying(files, addr, stop.clone(), sent.clone(), running));
    // The signature is timed once every attacking stream has been answered.
    // A stream left unanswered (a deadlock in the signer) fails the test
    // within the same guard as the attacks' end, instead of hanging it.
    let answered = async {
        for _ in 0..CONNECTIONS * STREAMS {
            streams.recv().await.unwrap();
        }
    };
    runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(120), answered).await })
        .expect("every attacking stream is answered within 120 s");
    let (victim_cpu, attacker_cpu, started) = (
        cpu_ticks(victim),
        cpu_ticks(std::process::id()),
        Instant::now(),
    );
    let under_requests = median_sign(&coordinator, dir.path(), &made, 0x30);
    let attack_ms = started.elapsed().as_millis();
    let victim_cpu_ms = (cpu_ticks(victim) - victim_cpu) * 10;
    let attacker_cpu_ms = (cpu_ticks(std::process::id()) - attacker_cpu) * 10;
    let requests_kib = memory_kib(victim, "VmRSS");
    stop.store(true, Ordering::Relaxed);
    finish(&runtime, attack, "amplifying requests");

    let peak_kib = memory_kib(victim, "VmHWM");
    let bound_kib = idle_kib + ADDED_BOUND_KIB;
    eprintln!(
        "time to a signature (median of {SAMPLES}): quiet {quiet:?}, under unfinished bodies \
         {under_bodies:?}, under {} amplifying requests {under_requests:?}; victim CPU over \
         the {quiet_ms} ms of quiet signing {quiet_cpu_ms} ms, over the {attack_ms} ms of \
         signing under the amplifying attack {victim_cpu_ms} ms (attacker, this process, \
         {attacker_cpu_ms} ms); victim RSS idle {idle_kib} KiB, \
         under bodies {bodies_kib} KiB, under requests {requests_kib} KiB, peak {peak_kib} KiB \
         (bound {bound_kib} KiB)",
        sent.load(Ordering::Relaxed)
    );
    assert!(sent.load(Ordering::Relaxed) >= AMPLIFYING);
    assert!(
        peak_kib <= bound_kib,
        "peak resident memory {peak_kib} KiB above the bound {bound_kib} KiB"
    );
}
