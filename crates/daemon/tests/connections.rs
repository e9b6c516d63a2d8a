//! Connection limits over real loopback sockets: strangers holding silent
//! connections or stalled handshakes, one source flooding, one member
//! opening too many connections, and local clients holding the metrics
//! port, must never keep a member from being served.
//!
//! Each wait below is bounded only so that a hang fails the test instead of
//! the suite; the bounds are far above what the calls take when they work.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use thresig_engine::Round1Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

/// Below the 10 s handshake timeout the daemon had before it budgeted
/// handshakes, so a member locked out until the strangers' handshakes
/// expire fails here.
const MEMBER_CALL_BOUND: Duration = Duration::from_secs(8);

/// Bound on waiting for the server to close a connection it should drop.
const CLOSE_BOUND: Duration = Duration::from_secs(20);

/// The first bytes of a TLS record that announces a 512-byte handshake
/// message and never delivers it: a handshake that stalls in the server's
/// read.
const STALLED_CLIENT_HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc];

async fn connect_from(source: IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    socket.connect(addr).await.unwrap()
}

/// `n` connections to `addr` that send nothing.
async fn silent(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    held
}

/// `n` connections to `addr` that start a TLS record and stop.
async fn stalled(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut held = silent(addr, n).await;
    for tcp in &mut held {
        tcp.write_all(STALLED_CLIENT_HELLO).await.unwrap();
    }
    held
}

/// Waits until the server closes `tcp` (end of stream or a reset).
async fn closed_by_server<S: AsyncReadExt + Unpin>(tcp: &mut S) {
    let mut buf = [0u8; 256];
    let read = timeout(CLOSE_BOUND, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server kept the connection open");
}

/// A member's round 1 on a fresh connection completes.
async fn member_is_served(server: &Running, cluster: &Cluster) {
    let call = timeout(MEMBER_CALL_BOUND, async {
        let client = server.client(&cluster.client_tls()).await;
        client.round1(Round1Request::new(vault(), 1)).await
    })
    .await;
    let reply = call.expect("the member was not served while the connections were held");
    assert_eq!(reply.unwrap().commitments, commitments(1));
}

/// `n` connections to `addr` from 127.0.0.2 onwards, `sources` addresses
/// round robin, each having sent `prefix`: strangers apart from the
/// member's 127.0.0.1.
async fn strangers(addr: SocketAddr, n: usize, sources: u8, prefix: &[u8]) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let last = u8::try_from(i % usize::from(sources)).unwrap();
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + last));
        let mut tcp = connect_from(source, addr).await;
        tcp.write_all(prefix).await.unwrap();
        held.push(tcp);
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_and_stalled_handshakes_do_not_lock_members_out() {
    let cluster = Cluster::new();
    let server = start(cluster.config(""), Arc::new(Recorder::default())).await;
    // Sixteen sources at the per-source cap would hold twice the budget:
    // the full budget makes room, from the sources holding the most.
    let addr = server.addr;
    // Opening the connections is bounded too: a listener that stops
    // accepting leaves them, and the member, in the kernel's queue.
    let (mut silent, _stalled) = timeout(MEMBER_CALL_BOUND, async {
        let silent = strangers(addr, 1200, 16, &[]).await;
        let stalled = strangers(addr, 300, 16, STALLED_CLIENT_HELLO).await;
        (silent, stalled)
    })
    .await
    .expect("the listener stopped accepting");
    // The flood goes on while the member connects.
    let flood = tokio::spawn(strangers(addr, 600, 16, &[]));
    member_is_served(&server, &cluster).await;
    flood.abort();
    let budget = r#"thresig_connections_dropped_total{reason="handshake_budget"}"#;
    assert!(series(&scrape(server.metrics_addr).await, budget) > 0);
    // The oldest stranger was dropped to make room, not left to time out.
    closed_by_server(&mut silent[0]).await;
    member_is_served(&server, &cluster).await;
    server.stop().await;
}

/// A TLS client that trusts the cluster CA and presents no certificate:
/// its handshake completes only while the server still holds it.
fn anonymous_connector(cluster: &Cluster) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    let ca_pem = std::fs::read(cluster.path("ca.pem")).unwrap();
    for cert in CertificateDer::pem_slice_iter(&ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_source_evicts_only_its_own_handshakes() {
    let cluster = Cluster::new();
    let limits = "max_pending_handshakes = 16\n\
                  max_handshakes_per_source = 4\n\
                  handshake_timeout_ms = 60000";
    let server = start(cluster.config(limits), Arc::new(Recorder::default())).await;
    let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let mut waiting = Vec::new();
    for _ in 0..2 {
        waiting.push(connect_from(other, server.addr).await);
    }
    let mut flood = silent(server.addr, 200).await;
    // The flood's first connection was evicted by its own later ones.
    closed_by_server(&mut flood[0]).await;
    // The other source's handshakes are still held: they complete now.
    let name = ServerName::try_from(format!("seat-1.{CLUSTER}")).unwrap();
    for tcp in waiting {
        let handshake = anonymous_connector(&cluster).connect(name.clone(), tcp);
        timeout(MEMBER_CALL_BOUND, handshake)
            .await
            .expect("handshake hung")
            .expect("the other source's handshake was dropped");
    }
    member_is_served(&server, &cluster).await;
    server.stop().await;
}

/// A TLS client presenting seat 2's certificate, as a member does.
fn member_connector(cluster: &Cluster) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    let ca_pem = std::fs::read(cluster.path("ca.pem")).unwrap();
    for cert in CertificateDer::pem_slice_iter(&ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let cert_pem = std::fs::read(cluster.path("seat2.pem")).unwrap();
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(cluster.path("seat2.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Waits until the metrics say `series` reached `n`.
async fn until_series(metrics: SocketAddr, name_and_labels: &str, n: u64) {
    let waited = timeout(CLOSE_BOUND, async {
        while series(&scrape(metrics).await, name_and_labels) < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "{name_and_labels} never reached {n}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_from_many_sources_filling_the_budget_do_not_drop_a_members_handshake() {
    let cluster = Cluster::new();
    let limits = "max_pending_handshakes = 16\n\
                  max_handshakes_per_source = 4\n\
                  handshake_timeout_ms = 60000";
    let server = start(cluster.config(limits), Arc::new(Recorder::default())).await;
    // The member's connection is accepted first and has sent nothing yet.
    let member = connect_from(IpAddr::V4(Ipv4Addr::LOCALHOST), server.addr).await;
    let mut strangers = Vec::new();
    for n in 2..=6 {
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, n));
        for _ in 0..4 {
            strangers.push(connect_from(source, server.addr).await);
        }
    }
    // 21 connections for 16 places: five were dropped to make room.
    let budget = r#"thresig_connections_dropped_total{reason="handshake_budget"}"#;
    until_series(server.metrics_addr, budget, 5).await;
    // Its pending handshake was kept: it completes, and the server answers
    // HTTP/2 on it.
    let tls = member_connection_over(&cluster, member).await;
    // A graceful stop waits for the member's HTTP/2 connection to end.
    drop(tls);
    server.stop().await;
}

/// A member's (seat 2) TLS connection that has started HTTP/2 and been
/// answered, so the server holds it as an authenticated connection.
async fn member_connection(
    cluster: &Cluster,
    addr: SocketAddr,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    member_connection_over(cluster, TcpStream::connect(addr).await.unwrap()).await
}

/// [`member_connection`] over an open `tcp`.
async fn member_connection_over(
    cluster: &Cluster,
    tcp: TcpStream,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let name = ServerName::try_from(format!("seat-1.{CLUSTER}")).unwrap();
    let mut tls = timeout(
        MEMBER_CALL_BOUND,
        member_connector(cluster).connect(name, tcp),
    )
    .await
    .expect("handshake hung")
    .expect("the member's handshake failed");
    // The HTTP/2 preface and an empty SETTINGS frame.
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let mut frame = [0u8; 9];
    timeout(MEMBER_CALL_BOUND, tls.read_exact(&mut frame))
        .await
        .expect("no answer")
        .expect("the server closed the member's connection");
    assert_eq!(frame[3], 0x04, "a SETTINGS frame");
    tls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seat_above_its_connection_cap_loses_its_oldest_connection() {
    let cluster = Cluster::new();
    let server = start(
        cluster.config("max_connections_per_seat = 2"),
        Arc::new(Recorder::default()),
    )
    .await;
    let mut connections = Vec::new();
    for _ in 0..3 {
        connections.push(member_connection(&cluster, server.addr).await);
    }
    // The oldest is closed by the server, not only uncounted.
    closed_by_server(&mut connections[0]).await;
    let text = scrape(server.metrics_addr).await;
    assert_eq!(series(&text, "thresig_member_connections"), 2, "{text}");
    let dropped = r#"thresig_connections_dropped_total{reason="seat_cap"}"#;
    assert_eq!(series(&text, dropped), 1, "{text}");
    // A graceful stop waits for the members' HTTP/2 connections to end.
    drop(connections);
    // The member is never locked out: a new connection always gets in.
    member_is_served(&server, &cluster).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_metrics_connections_are_capped_and_scrapes_still_answer() {
    let cluster = Cluster::new();
    let server = start(cluster.config(""), Arc::new(Recorder::default())).await;
    let mut idle = silent(server.metrics_addr, 1000).await;
    closed_by_server(&mut idle[0]).await;
    scrape(server.metrics_addr).await;
    member_is_served(&server, &cluster).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_client_trickling_its_headers_is_cut_off() {
    let cluster = Cluster::new();
    let server = start(cluster.config(""), Arc::new(Recorder::default())).await;
    let mut slow = TcpStream::connect(server.metrics_addr).await.unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: local")
        .await
        .unwrap();
    closed_by_server(&mut slow).await;
    scrape(server.metrics_addr).await;
    server.stop().await;
}

/// The configuration of a server that also serves metrics on
/// `<dir>/metrics.sock`.
fn with_metrics_socket(cluster: &Cluster, dir: &std::path::Path) -> thresig_daemon::DaemonConfig {
    let text = format!(
        r#"
listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
metrics_socket = "{}"
cluster = "{CLUSTER}"

[tls]
ca_cert = "ca.pem"
cert = "seat1.pem"
key = "seat1.key"
"#,
        dir.join("metrics.sock").display()
    );
    thresig_daemon::DaemonConfig::from_toml(&text, cluster.dir.path()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_on_an_owner_only_unix_socket() {
    use std::os::unix::fs::PermissionsExt as _;

    let cluster = Cluster::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = with_metrics_socket(&cluster, dir.path());
    // A directory others may enter could let them reach the socket before
    // its mode is set: refused.
    let err = thresig_daemon::Listeners::bind(&config).await.unwrap_err();
    assert!(
        matches!(err, thresig_daemon::Error::MetricsSocketDirectory { .. }),
        "{err}"
    );

    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let listeners = thresig_daemon::Listeners::bind(&config).await.unwrap();
    let socket = dir.path().join("metrics.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let handler = Arc::new(Recorder::default());
        thresig_daemon::serve(&config, listeners, handler, async {
            let _ = stopped.await;
        })
        .await
    });
    let unix = tokio::net::UnixStream::connect(&socket).await.unwrap();
    let response = scrape_over(unix).await;
    assert!(
        response.contains("thresig_requests_in_flight"),
        "{response}"
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

/// Log lines written on this thread, for a test on a current-thread
/// runtime (the server's tasks run on the test's thread).
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn an_impostor_certificate_is_logged_and_counted_while_stalled_handshakes_time_out() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);
    let cluster = Cluster::new();
    // A certificate the CA issued for seat 2 to another key.
    cluster.add_member(seat(2), "impostor");
    let fingerprint =
        |name: &str| thresig_daemon::certificate_key_fingerprint(&cluster.path(name)).unwrap();
    let mut config = cluster.config("handshake_timeout_ms = 100");
    config.pins = Some(thresig_daemon::TlsPins::new(
        [
            (seat(1), fingerprint("seat1.pem")),
            (seat(2), fingerprint("seat2.pem")),
        ]
        .into(),
    ));
    let server = start(config, Arc::new(Recorder::default())).await;
    // A stranger's stalled handshake times out first and is logged.
    let _stalled = stalled(server.addr, 1).await;
    let timed_out = r#"thresig_connections_dropped_total{reason="handshake_timeout"}"#;
    until_series(server.metrics_addr, timed_out, 1).await;
    let impostor =
        thresig_daemon::SignerClient::connect(&cluster.tls_of("impostor"), server.addr, seat(1))
            .await;
    if let Ok(impostor) = impostor {
        let refused = impostor.round1(Round1Request::new(vault(), 1)).await;
        assert!(refused.is_err(), "the impostor was served");
    }
    let not_pinned = r#"thresig_handshakes_refused_total{reason="not_pinned"}"#;
    until_series(server.metrics_addr, not_pinned, 1).await;
    let text = scrape(server.metrics_addr).await;
    assert_eq!(series(&text, not_pinned), 1, "{text}");
    let timeout_refused = r#"thresig_handshakes_refused_total{reason="timeout"}"#;
    assert_eq!(series(&text, timeout_refused), 1, "{text}");
    let logged = logs.text();
    assert!(logged.contains("TLS handshake timed out"), "{logged}");
    assert!(logged.contains("not the one pinned"), "{logged}");
    server.stop().await;
}

/// A handler whose lifecycle read takes 200 ms, as one waiting behind
/// round 2's wallet locks does, and that records how many reads ran at
/// once.
#[derive(Default)]
struct SlowLifecycle {
    inner: Recorder,
    running: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
}

impl thresig_daemon::SignerHandler for SlowLifecycle {
    fn handle(
        &self,
        peer: thresig_crypto::Seat,
        request: thresig_engine::Request,
    ) -> Result<thresig_engine::Response, thresig_daemon::SignerError> {
        self.inner.handle(peer, request)
    }

    fn lifecycle(&self) -> Option<thresig_daemon::LifecycleInFlight> {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.running.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
        // Stands for a read blocked on wallet locks: not synchronization.
        std::thread::sleep(Duration::from_millis(200));
        self.running.fetch_sub(1, SeqCst);
        Some(thresig_daemon::LifecycleInFlight::default())
    }
}

/// Scrapes a client opens and abandons leave no work behind: however many
/// arrive, the slow lifecycle read runs once at a time, and a member is
/// still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_scrapes_never_read_the_lifecycle_more_than_once_at_a_time() {
    let cluster = Cluster::new();
    let handler = Arc::new(SlowLifecycle::default());
    let server = start(cluster.config(""), handler.clone()).await;
    for _ in 0..300 {
        let mut tcp = TcpStream::connect(server.metrics_addr).await.unwrap();
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
    }
    member_is_served(&server, &cluster).await;
    // A full scrape waits for a lifecycle read, by which time every
    // abandoned scrape's read that is going to start has.
    scrape(server.metrics_addr).await;
    let most = handler.most.load(std::sync::atomic::Ordering::SeqCst);
    assert!(most <= 1, "{most} lifecycle reads ran at once");
    server.stop().await;
}
