//! A loopback cluster for the daemon's tests: a CA, member certificates in
//! a temporary directory, and a server started on ephemeral ports with a
//! shutdown the test controls.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, SystemTime};

use thresig_daemon::{
    ClientTls, ClusterCa, ClusterName, DaemonConfig, Listeners, Recovery, Seat, SignerClient,
    SignerError, SignerHandler, TlsPaths, Validity, serve,
};
use thresig_engine::{
    ConfirmationStatus, DkgPayload, DkgSessionId, HexBytes, Request, Response, Round1Response,
    Round2Request, Round2Response, SignedDkgMessage, SigningTarget, WalletEpoch, WalletId,
    WalletStateKind, WalletStatus,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const CLUSTER: &str = "test";

pub use thresig_engine::test_util::cluster::seat;

pub fn validity() -> Validity {
    Validity::starting(SystemTime::now(), Duration::from_secs(86_400))
}

/// Writes a CA into `dir` and returns it.
pub fn make_ca(dir: &Path, cluster: &str) -> ClusterCa {
    let ca = ClusterCa::generate(ClusterName::new(cluster).unwrap(), validity()).unwrap();
    ca.write(&dir.join("ca.pem"), &dir.join("ca.key")).unwrap();
    ca
}

/// Issues `seat`'s certificate from `ca` into `dir/<name>.{pem,key}` and
/// loads it as a client identity of cluster [`CLUSTER`] trusting `ca_cert`.
pub fn member_client(
    ca: &ClusterCa,
    dir: &Path,
    seat: Seat,
    name: &str,
    ca_cert: &Path,
) -> ClientTls {
    let paths = member(ca, dir, seat, name, ca_cert);
    ClientTls::load(&paths, ClusterName::new(CLUSTER).unwrap()).unwrap()
}

/// Issues `seat`'s certificate from `ca` into `dir/<name>.{pem,key}` and
/// returns the TLS paths with `ca_cert` as trust anchor.
pub fn member(ca: &ClusterCa, dir: &Path, seat: Seat, name: &str, ca_cert: &Path) -> TlsPaths {
    let tls = ca.issue_member(seat, validity()).unwrap();
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    tls.write(&cert, &key).unwrap();
    TlsPaths::new(ca_cert.to_path_buf(), cert, key)
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub ca: ClusterCa,
}

impl Cluster {
    /// A CA and the server's (seat 1) and a coordinator's (seat 2) files.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = make_ca(dir.path(), CLUSTER);
        let ca_cert = dir.path().join("ca.pem");
        member(&ca, dir.path(), seat(1), "seat1", &ca_cert);
        member(&ca, dir.path(), seat(2), "seat2", &ca_cert);
        Self { dir, ca }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The server's configuration with `limits` as the `[limits]` table body.
    pub fn config(&self, limits: &str) -> DaemonConfig {
        self.member_config("seat1", limits)
    }

    /// The configuration of a server holding the files `<name>.{pem,key}`.
    pub fn member_config(&self, name: &str, limits: &str) -> DaemonConfig {
        let text = format!(
            r#"
listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
cluster = "{CLUSTER}"

[tls]
ca_cert = "ca.pem"
cert = "{name}.pem"
key = "{name}.key"

[limits]
{limits}
"#
        );
        DaemonConfig::from_toml(&text, self.dir.path()).unwrap()
    }

    /// The cluster's CA as written to disk, loaded for `cluster`'s names.
    pub fn reload_ca(&self, cluster: &str) -> ClusterCa {
        let name = ClusterName::new(cluster).unwrap();
        ClusterCa::load(name, &self.path("ca.pem"), &self.path("ca.key")).unwrap()
    }

    /// The coordinator's (seat 2) client identity.
    pub fn client_tls(&self) -> ClientTls {
        self.tls_of("seat2")
    }

    /// Issues `seat`'s files as `<name>.{pem,key}`.
    pub fn add_member(&self, seat: Seat, name: &str) {
        member(&self.ca, self.dir.path(), seat, name, &self.path("ca.pem"));
    }

    /// The client identity of the files `<name>.{pem,key}`.
    pub fn tls_of(&self, name: &str) -> ClientTls {
        let paths = TlsPaths::new(
            self.path("ca.pem"),
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}.key")),
        );
        ClientTls::load(&paths, ClusterName::new(CLUSTER).unwrap()).unwrap()
    }
}

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub shutdown: Option<oneshot::Sender<()>>,
    /// Fires once `serve` has observed the shutdown signal.
    pub shutdown_seen: Option<oneshot::Receiver<()>>,
    pub task: JoinHandle<Result<(), thresig_daemon::Error>>,
}

impl Running {
    pub async fn client(&self, tls: &ClientTls) -> SignerClient {
        SignerClient::connect(tls, self.addr, seat(1))
            .await
            .unwrap()
    }

    /// Signals shutdown and waits until `serve` returns.
    pub async fn stop(mut self) {
        self.shutdown.take().unwrap().send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

pub async fn start<H: SignerHandler>(config: DaemonConfig, handler: Arc<H>) -> Running {
    let grpc = TcpListener::bind(config.listen).await.unwrap();
    let metrics = TcpListener::bind(config.metrics_listen).await.unwrap();
    let addr = grpc.local_addr().unwrap();
    let metrics_addr = metrics.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let (seen_tx, seen_rx) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = rx.await;
        let _ = seen_tx.send(());
    };
    let task = tokio::spawn(async move {
        serve(&config, Listeners::new(grpc, metrics), handler, shutdown).await
    });
    Running {
        addr,
        metrics_addr,
        shutdown: Some(tx),
        shutdown_seen: Some(seen_rx),
        task,
    }
}

/// A handler that records the peers it saw and answers from the request:
/// round 1 returns one commitment `[input index; 33]` per input; round 2
/// fails with the configured error, or echoes the packages as shares.
#[derive(Default)]
pub struct Recorder {
    pub peers: Mutex<Vec<Seat>>,
    pub round2_error: Option<SignerError>,
    /// Wallets a status reply lists (one when 0).
    pub status_wallets: usize,
}

impl Recorder {
    pub fn failing(code: thresig_engine::ErrorCode, recovery: Recovery) -> Self {
        Self {
            peers: Mutex::default(),
            status_wallets: 0,
            round2_error: Some(SignerError::new(
                code.into(),
                recovery,
                "refused by the test handler",
            )),
        }
    }

    pub fn peers(&self) -> Vec<Seat> {
        self.peers.lock().unwrap().clone()
    }
}

/// The signer's refusal inside `err`.
pub fn refusal(err: &thresig_daemon::Error) -> &SignerError {
    match err {
        thresig_daemon::Error::Refused(refusal) => refusal,
        other => panic!("expected a refusal, got {other}"),
    }
}

pub fn vault() -> WalletId {
    WalletId::new("vault-1").unwrap()
}

/// A round-2 request of wallet `vault-1` over `target` with one package.
pub fn round2(target: SigningTarget) -> Round2Request {
    Round2Request::new(
        vault(),
        WalletEpoch(1),
        vec![Seat::FIRST, seat(2)],
        target,
        vec![HexBytes(vec![1; 100])],
    )
}

pub fn commitments(inputs: usize) -> Vec<HexBytes> {
    (0..inputs).map(|i| HexBytes(vec![i as u8; 33])).collect()
}

/// A DKG confirmation from `sender` (its signature is not checked here).
pub fn confirmation(sender: u16) -> SignedDkgMessage {
    let payload = DkgPayload::Confirm {
        output_key: HexBytes(vec![0xab; 32]),
        transcript: HexBytes(vec![0xcd; 32]),
    };
    SignedDkgMessage::new(
        DkgSessionId([9; 32]),
        vault(),
        thresig_crypto::Seat::try_from(sender).unwrap(),
        payload,
        HexBytes(vec![1; 64]),
    )
}

/// What a [`Recorder`]'s `wallet_key` answers: bytes that are not a key
/// record, so the client's decoding refuses them.
pub const NOT_A_KEY: [u8; 4] = [1, 2, 3, 4];

impl SignerHandler for Recorder {
    fn handle(&self, peer: Seat, request: Request) -> Result<Response, SignerError> {
        self.peers.lock().unwrap().push(peer);
        let messages = |messages| Response::DkgMessages { messages };
        Ok(match request {
            Request::Round1(request) => Response::Round1(Round1Response::new(
                request.wallet,
                Seat::FIRST,
                WalletEpoch(7),
                commitments(request.inputs),
            )),
            Request::Round2(request) => match &self.round2_error {
                Some(err) => return Err(err.clone()),
                None => Response::Round2(Round2Response::new(
                    request.wallet,
                    Seat::FIRST,
                    request.packages,
                    commitments(1),
                )),
            },
            Request::Abort(request) => Response::Aborted {
                destroyed: request.commitments.len(),
            },
            Request::DkgStart(_) | Request::DkgFinish { .. } => messages(vec![confirmation(1)]),
            Request::DkgRound2 { round1, .. } => messages(round1),
            Request::DkgConfirm { .. } => {
                Response::Confirmations(ConfirmationStatus::new(1, 3, false))
            }
            Request::DkgCancel { .. } => Response::DkgCancelled {
                dropped: true,
                abandonment: None,
            },
            Request::ListWallets => {
                let mut status =
                    WalletStatus::new(vault(), WalletStateKind::Active, 2, 3, Seat::FIRST);
                status.epoch = Some(WalletEpoch(4));
                status.output_key = Some(HexBytes(vec![0xab; 32]));
                status.live_nonces = 5;
                Response::Wallets {
                    wallets: vec![status; self.status_wallets.max(1)],
                }
            }
            Request::WalletKey { .. } => Response::WalletKey {
                key: HexBytes(NOT_A_KEY.to_vec()),
            },
            other => unreachable!("a request kind the recorder does not know: {other:?}"),
        })
    }
}

/// A handler whose round 1 and wallet key report that they started, then
/// wait for the test's go-ahead (one per call).
pub struct Gate {
    pub entered: Mutex<mpsc::Sender<()>>,
    pub release: Mutex<mpsc::Receiver<()>>,
}

/// The test's ends of a [`Gate`].
pub struct GateControl {
    pub entered: mpsc::Receiver<()>,
    pub release: mpsc::Sender<()>,
}

impl GateControl {
    /// Waits until a call is inside the handler; the guard only keeps a
    /// call that never enters from hanging the test.
    pub async fn wait_entered(&self) -> &Self {
        tokio::task::block_in_place(|| {
            self.entered
                .recv_timeout(Duration::from_secs(30))
                .expect("no call entered the handler")
        });
        self
    }
}

impl Gate {
    pub fn new() -> (Arc<Self>, GateControl) {
        let (entered_tx, entered_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel();
        let gate = Arc::new(Self {
            entered: Mutex::new(entered_tx),
            release: Mutex::new(release_rx),
        });
        (
            gate,
            GateControl {
                entered: entered_rx,
                release: release_tx,
            },
        )
    }
}

impl SignerHandler for Gate {
    fn handle(&self, _: Seat, request: Request) -> Result<Response, SignerError> {
        self.entered.lock().unwrap().send(()).unwrap();
        self.release.lock().unwrap().recv().unwrap();
        Ok(match request {
            Request::Round1(request) => Response::Round1(Round1Response::new(
                request.wallet,
                Seat::FIRST,
                WalletEpoch(1),
                commitments(request.inputs),
            )),
            Request::WalletKey { .. } => Response::WalletKey {
                key: HexBytes(NOT_A_KEY.to_vec()),
            },
            other => unreachable!("the gate serves round 1 and wallet keys only: {other:?}"),
        })
    }
}

/// How long a scrape may take before the test fails (the server closes
/// each metrics connection after one answer).
const SCRAPE_BOUND: Duration = Duration::from_secs(20);

/// The value of the series `name{labels}` in an OpenMetrics text, or 0.
pub fn series(text: &str, name_and_labels: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0)
}

/// One scrape on a new connection, read to the server's close.
pub async fn scrape(addr: SocketAddr) -> String {
    scrape_over(tokio::net::TcpStream::connect(addr).await.unwrap()).await
}

/// One scrape on `stream`, read to the server's close.
pub async fn scrape_over<S: tokio::io::AsyncReadExt + tokio::io::AsyncWriteExt + Unpin>(
    mut stream: S,
) -> String {
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(SCRAPE_BOUND, stream.read_to_string(&mut response))
        .await
        .expect("the metrics server kept the connection open after answering")
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}
