//! Strangers, local users and a flooding member against a real cluster of
//! `thresig serve` processes: silent TCP connections, stalled TLS
//! handshakes and idle metrics connections held against one member must not
//! keep the members from signing or reading status, and neither refused
//! handshakes nor a member's flood of cheap requests may fill its log.
//!
//! The members start with a soft open-file limit of 1024, as a service
//! manager's default gives them; each raises its own at start. This test
//! process raises its own soft limit to hold the connections.

mod common;
#[path = "../../daemon/tests/common/raw.rs"]
mod raw;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{ProcessCluster, WALLET, address, scrape, seat};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// What one attack holds: 2,000 silent connections and 2,000 stalled
/// handshakes to the gRPC port, or 1,000 idle metrics connections, plus
/// this process's own descriptors.
const DESCRIPTORS_NEEDED: u64 = 4_000 + 512;

/// A service manager's usual soft limit, which the members start with.
const SERVICE_SOFT_LIMIT: u64 = 1024;

/// The first bytes of a TLS record announcing a 512-byte handshake message
/// that never comes.
const STALLED_CLIENT_HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc];

/// Bounds opening one connection: a listener that stopped accepting
/// leaves it in the kernel's queue.
const CONNECT_BOUND: Duration = Duration::from_secs(10);

/// The soft open-file limit as `(soft, hard)`, or `None` (with the reason
/// printed) when the hard limit is too small for this test.
fn open_file_limits() -> Option<(u64, u64)> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if hard < DESCRIPTORS_NEEDED {
        eprintln!(
            "skipped: the hard open-file limit {hard} is below the {DESCRIPTORS_NEEDED} \
             this test holds; raise it (ulimit -Hn) to run it"
        );
        return None;
    }
    Some((soft, hard))
}

fn set_soft_limit(soft: u64, hard: u64) {
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
}

/// A running 2-of-3 cluster with an active wallet, started with the
/// service manager's soft limit.
struct Attacked {
    cluster: ProcessCluster,
    dir: tempfile::TempDir,
    internal: String,
    output_key: String,
    destination: String,
}

impl Attacked {
    fn start(hard: u64) -> Self {
        let destination = address(5);
        let mut cluster = ProcessCluster::provision(3, 2, std::slice::from_ref(&destination), 9);
        set_soft_limit(SERVICE_SOFT_LIMIT.min(hard), hard);
        cluster.start_all(&tokio::runtime::Runtime::new().unwrap());
        set_soft_limit(hard, hard);
        let dkg = ok_json(&["dkg", "--config", &config(&cluster, 2), "--wallet", WALLET]);
        Self {
            internal: dkg["internal_key"].as_str().unwrap().to_owned(),
            output_key: dkg["output_key"].as_str().unwrap().to_owned(),
            cluster,
            dir: tempfile::tempdir().unwrap(),
            destination,
        }
    }

    fn target(&self) -> SocketAddr {
        self.cluster.node(seat(1)).members[&seat(1)].endpoint
    }

    fn target_metrics(&self) -> SocketAddr {
        self.cluster
            .node(seat(1))
            .daemon
            .expect("a member's configuration has a [daemon] section")
            .metrics_listen
    }

    /// A PSBT spending the synthetic output `n` of the wallet.
    fn psbt(&self, n: u8) -> PathBuf {
        let input = format!("{}:0:60000:5120{}", hex::encode([n; 32]), self.output_key);
        let psbt = ok_json(&[
            "psbt",
            "build",
            "--internal-key",
            &self.internal,
            "--network",
            "regtest",
            "--input",
            &input,
            "--output",
            &format!("{}:59000", self.destination),
        ]);
        let file = self.dir.path().join(format!("{n}.psbt"));
        std::fs::write(&file, psbt["psbt"].as_str().unwrap()).unwrap();
        file
    }

    /// Member `m`'s soft open-file limit, from `/proc/<pid>/limits`.
    fn soft_open_file_limit(&self, m: u16) -> u64 {
        let pid = self.cluster.local.pid(seat(m)).unwrap();
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap();
        line.split_whitespace().nth(3).unwrap().parse().unwrap()
    }

    /// Stops member 3, so that a signature needs the attacked member 1.
    fn stop_third(&mut self) {
        assert!(self.cluster.local.stop(seat(3)).unwrap());
    }

    /// Signs from seat 2's configuration; with seat 3 stopped, the attacked
    /// seat 1 must take part.
    fn sign(&self, psbt: &Path) {
        let signed = ok_json(&[
            "sign",
            "--config",
            &config(&self.cluster, 2),
            "--wallet",
            WALLET,
            "--psbt",
            psbt.to_str().unwrap(),
        ]);
        assert!(signed["txid"].is_string(), "{signed}");
    }

    /// `thresig status` from seat 2 reaches every running member.
    fn status_reaches(&self, running: &[u16]) {
        let status = ok_json(&["status", "--config", &config(&self.cluster, 2)]);
        for m in status["members"].as_array().unwrap() {
            let member = m["member"].as_u64().unwrap();
            if running.iter().any(|&r| u64::from(r) == member) {
                assert_eq!(m["reachable"], true, "{m}");
            }
        }
    }
}

fn config(cluster: &ProcessCluster, member: u16) -> String {
    cluster.config_arg(seat(member))
}

fn ok_json(args: &[&str]) -> serde_json::Value {
    common::json(args, 0)
}

/// Connections the attacker keeps open: each is reopened this long after
/// the signer closes it, as an attacker that holds its connections would.
const REOPEN_PAUSE: Duration = Duration::from_secs(5);

/// Source addresses of the attack on the gRPC port, apart from the
/// members' 127.0.0.1: more than the handshake budget holds at the
/// per-source cap (16 × 32 = 512 > 256), so the full budget drops
/// handshakes while the members sign.
const ATTACK_SOURCES: u8 = 16;

/// An attack running on its own runtime; dropping it closes every
/// connection it holds.
struct Attack {
    runtime: Option<tokio::runtime::Runtime>,
    /// Connections the signer did not accept within [`CONNECT_BOUND`] the
    /// first time.
    refused: usize,
    n: usize,
}

impl Attack {
    /// Holds `n` connections to `addr` from `sources` (round robin), each
    /// having sent `prefix` and nothing more, reopening any the signer
    /// closes. Returns once every connection was tried once.
    fn hold(addr: SocketAddr, n: usize, prefix: &'static [u8], sources: &[IpAddr]) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (opened_tx, opened_rx) = std::sync::mpsc::channel();
        for i in 0..n {
            let source = sources[i % sources.len()];
            let opened = opened_tx.clone();
            runtime.spawn(async move {
                let mut first = Some(opened);
                loop {
                    let held = open(addr, source, prefix).await;
                    if let Some(opened) = first.take() {
                        opened.send(held.is_ok()).unwrap();
                    }
                    if let Ok(mut tcp) = held {
                        // Nothing ever arrives: this returns when the
                        // signer closes the connection.
                        let mut buf = [0u8; 64];
                        while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
                    }
                    tokio::time::sleep(REOPEN_PAUSE).await;
                }
            });
        }
        drop(opened_tx);
        let refused = opened_rx.iter().filter(|opened| !opened).count();
        Self {
            runtime: Some(runtime),
            refused,
            n,
        }
    }

    /// Asserts that the signer accepted every connection: the attack was
    /// held in full, not left in the kernel's queue.
    fn assert_held(&self) {
        assert_eq!(self.refused, 0, "of {} connections", self.n);
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// One connection from `source` to `addr` that sent `prefix`.
async fn open(
    addr: SocketAddr,
    source: IpAddr,
    prefix: &[u8],
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let mut tcp = tokio::time::timeout(CONNECT_BOUND, socket.connect(addr))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    tcp.write_all(prefix).await?;
    Ok(tcp)
}

/// 2,000 silent connections and 2,000 stalled handshakes to the gRPC port,
/// from addresses other than the members'.
fn hold_handshakes(addr: SocketAddr) -> [Attack; 2] {
    let sources: Vec<IpAddr> = (2..2 + ATTACK_SOURCES)
        .map(|n| IpAddr::V4(Ipv4Addr::new(127, 0, 0, n)))
        .collect();
    [
        Attack::hold(addr, 2_000, &[], &sources),
        Attack::hold(addr, 2_000, STALLED_CLIENT_HELLO, &sources),
    ]
}

/// The value of the series `name{labels}` in an OpenMetrics text, or 0.
fn series(text: &str, name_and_labels: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0)
}

/// 1,000 idle connections to the metrics port, from the members' own
/// address (a local user).
fn hold_metrics(addr: SocketAddr) -> Attack {
    Attack::hold(addr, 1_000, &[], &[IpAddr::V4(Ipv4Addr::LOCALHOST)])
}

#[test]
fn members_sign_and_read_status_while_strangers_hold_connections() {
    let Some((_, hard)) = open_file_limits() else {
        return;
    };
    let mut attacked = Attacked::start(hard);
    // Started with the service manager's soft limit, it raised its own.
    assert_eq!(attacked.soft_open_file_limit(1), hard.min(1 << 20));
    let target = attacked.target();
    let held = hold_handshakes(target);
    attacked.status_reaches(&[1, 2, 3]);
    attacked.stop_third();
    attacked.sign(&attacked.psbt(1));
    attacked.status_reaches(&[1, 2]);
    held.iter().for_each(Attack::assert_held);
    // The signer held at most its budget and made room from the full
    // budget (taking from the sources holding the most, none reaches the
    // per-source cap), while the member got through.
    let text = scrape(attacked.target_metrics());
    assert!(series(&text, "thresig_pending_handshakes") <= 256, "{text}");
    let budget = r#"thresig_connections_dropped_total{reason="handshake_budget"}"#;
    assert!(series(&text, budget) > 0, "the budget never filled: {text}");
    drop(held);

    let held = hold_metrics(attacked.target_metrics());
    attacked.sign(&attacked.psbt(2));
    attacked.status_reaches(&[1, 2]);
    held.assert_held();
    drop(held);
}

#[test]
fn a_signer_whose_hard_open_file_limit_is_below_its_limits_refuses_to_start() {
    // Handshakes, members and both metrics listeners at 65,536, plus 256.
    let needed = 4 * 65_536 + 256;
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if hard >= needed {
        eprintln!("skipped: the hard open-file limit {hard} holds even the largest limits");
        return;
    }
    let cluster = ProcessCluster::provision(3, 2, &[], 10);
    let config = cluster.config_path(seat(1));
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "[daemon.limits]\n",
        "[daemon.limits]\nmax_pending_handshakes = 65536\n\
         max_member_connections = 65536\nmax_metrics_connections = 65536\n",
        1,
    );
    std::fs::write(&config, text).unwrap();
    let serve = common::thresig(&["serve", "--config", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&serve.stderr);
    assert_eq!(serve.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("open_file_limit"), "{stderr}");
    assert!(
        stderr.contains(&format!("need {needed} descriptors")),
        "{stderr}"
    );
}

/// The time to a signature at (2,3), without an attack and under each
/// attack, as recorded in `docs/BENCHMARKS.md`:
/// `cargo build -p thresig && cargo test -p thresig --test attack -- --ignored --nocapture`.
#[test]
#[ignore = "a benchmark: run it on its own, see docs/BENCHMARKS.md"]
fn time_to_a_signature_under_each_attack() {
    const SIGNATURES: u8 = 5;
    let Some((_, hard)) = open_file_limits() else {
        return;
    };
    let mut attacked = Attacked::start(hard);
    attacked.stop_third();
    let mut next = 0u8;
    let mut median = |label: &str| {
        let mut times: Vec<Duration> = (0..SIGNATURES)
            .map(|_| {
                next += 1;
                let psbt = attacked.psbt(next);
                let start = Instant::now();
                attacked.sign(&psbt);
                start.elapsed()
            })
            .collect();
        times.sort();
        let median = times[times.len() / 2];
        println!("{label}: median {median:?} of {SIGNATURES} signatures (all: {times:?})");
        median
    };
    median("no attack");
    let held = hold_handshakes(attacked.target());
    median("2,000 silent connections and 2,000 stalled handshakes kept coming");
    drop(held);
    let held = hold_metrics(attacked.target_metrics());
    median("1,000 idle metrics connections kept coming");
    drop(held);
}

/// A ClientHello (in one TLS record) whose server_name extension carries a
/// `len`-byte host name of 0xff bytes: not a DNS name, so the signer refuses
/// the handshake at once, with no crypto done.
fn client_hello_with_invalid_sni(len: u16) -> Vec<u8> {
    let be = |n: usize| u16::try_from(n).unwrap().to_be_bytes();
    let name = vec![0xffu8; usize::from(len)];
    let mut list = vec![0x00];
    list.extend(be(name.len()));
    list.extend(&name);
    let mut extension = vec![0x00, 0x00];
    extension.extend(be(list.len() + 2));
    extension.extend(be(list.len()));
    extension.extend(&list);
    let mut body = vec![0x03, 0x03];
    body.extend([0x2a; 32]);
    body.push(0);
    body.extend([0x00, 0x02, 0x13, 0x01, 0x01, 0x00]);
    body.extend(be(extension.len()));
    body.extend(&extension);
    let mut handshake = vec![0x01, 0x00];
    handshake.extend(be(body.len()));
    handshake.extend(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend(be(handshake.len()));
    record.extend(&handshake);
    record
}

/// Member 1 of a 3-member cluster, the only one running, with the length
/// of its log when it was ready.
struct LoggingMember {
    cluster: ProcessCluster,
    runtime: tokio::runtime::Runtime,
    log: PathBuf,
    before: u64,
}

impl LoggingMember {
    fn start(seed: u64) -> Self {
        let mut cluster = ProcessCluster::provision(3, 2, &[], seed);
        cluster.local.start(seat(1)).unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(common::wait_ready(&cluster.peers(seat(1)), seat(1)));
        let log = cluster.local.log_path(seat(1)).unwrap();
        let before = std::fs::metadata(&log).unwrap().len();
        Self {
            cluster,
            runtime,
            log,
            before,
        }
    }

    fn target(&self) -> SocketAddr {
        self.cluster.node(seat(1)).members[&seat(1)].endpoint
    }

    /// Asserts that the log grew by less than `bound` bytes since the
    /// member was ready, showing its end if not.
    fn assert_grew_less_than(&self, bound: u64, what: &str) {
        let grown = std::fs::metadata(&self.log).unwrap().len() - self.before;
        let text = std::fs::read(&self.log).unwrap();
        assert!(
            grown < bound,
            "the log grew by {grown} bytes (bound {bound}) for {what}; its end: {}",
            String::from_utf8_lossy(&text[text.len().saturating_sub(600)..])
        );
    }
}

#[test]
fn client_hellos_with_huge_invalid_names_do_not_fill_the_log() {
    let member = LoggingMember::start(11);
    let target = member.target();
    let hello = client_hello_with_invalid_sni(16_000);
    let stranger = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    member.runtime.block_on(async {
        for _ in 0..200 {
            let mut tcp = open(target, stranger, &hello).await.unwrap();
            // The signer refuses the hello and closes: read to the end, so
            // that every hello was handled before the log is measured.
            let mut rest = Vec::new();
            let _ = tokio::time::timeout(CONNECT_BOUND, tcp.read_to_end(&mut rest)).await;
        }
    });
    member.assert_grew_less_than(64 * 1024, "200 refused hellos");
}

/// Cheap requests the flooding member sends (status, and aborts of a
/// wallet that does not exist), a fixed number whatever the machine's speed.
const FLOOD: usize = 6_000;

/// Longest line the signer writes about a request kind (time, level,
/// target, message, method, seat, address, outcome, suppressed count).
const LOG_LINE_MAX: u64 = 400;

/// Request kinds the flood can hit at the signer's log limiter: two
/// methods, each answered with its result or a handler's error (refusals
/// before the handler are counted by the metrics, not logged).
const FLOOD_KINDS: u64 = 2 * 2;

#[test]
fn a_member_flooding_cheap_requests_does_not_fill_the_log() {
    let member = LoggingMember::start(12);
    let (runtime, target) = (&member.runtime, member.target());
    let tls = member
        .cluster
        .config_path(seat(3))
        .parent()
        .unwrap()
        .join("tls");
    let files = raw::MemberFiles {
        ca_cert: tls.join("ca.pem"),
        cert: tls.join("signer.pem"),
        key: tls.join("signer.key"),
    };
    let abort = raw::field(1, b"no-such-wallet");
    let started = Instant::now();
    let answered = runtime.block_on(async {
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut streams = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let send = raw::connect(&files, target, "seat-1.test").await;
            for stream in 0..16 {
                let mut send = send.clone();
                let sent = sent.clone();
                let abort = abort.clone();
                streams.spawn(async move {
                    let mut answered = 0;
                    while sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < FLOOD {
                        let answer = if stream % 2 == 0 {
                            raw::call(&mut send, "Status", &[]).await
                        } else {
                            raw::call(&mut send, "Abort", &abort).await
                        };
                        assert_eq!(answer.status, "0");
                        answered += 1;
                    }
                    answered
                });
            }
        }
        streams.join_all().await.into_iter().sum::<usize>()
    });
    let flooded_for = started.elapsed();
    assert_eq!(answered, FLOOD);
    // The signer still answers, and every request was handled (the log is
    // written before the reply is sent) before the log is measured.
    let status = runtime.block_on(async {
        let mut send = raw::connect(&files, target, "seat-1.test").await;
        raw::call(&mut send, "Status", &[]).await
    });
    assert_eq!(status.status, "0");
    assert_eq!(status.error_code(), None);
    assert!(!status.body.is_empty());
    // At most one line per kind and interval: the bound follows the limiter,
    // not the number of requests (one line each made 440 KB of this flood).
    let intervals = 1 + flooded_for.as_secs() / 10;
    member.assert_grew_less_than(
        FLOOD_KINDS * intervals * LOG_LINE_MAX,
        &format!("{FLOOD} requests"),
    );
}
