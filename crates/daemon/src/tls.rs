//! TLS 1.3 with mutual authentication: loading the PEM files, building the
//! rustls configurations, the accept loop and the peer's seat.
//!
//! Both sides trust only the cluster CA. The server requires a client
//! certificate chaining to it; the client verifies the server's certificate
//! against it and against the name `seat-<n>.<cluster>` of the signer it
//! meant to reach. A peer's seat is read from its certificate's DNS
//! subject-alternative names (see [`crate::ClusterName::seat_name`]) after
//! rustls has verified the chain, never from a message.

use std::collections::BTreeMap;
use std::future::Future as _;
use std::io::Write;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use sha2::{Digest as _, Sha256};
use thresig_store::file::{FileError, open_regular, read_bounded, read_opened};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;
use tracing::{debug, warn};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
use zeroize::Zeroizing;

use crate::config::{Limits, TlsPaths};
use crate::conn::{Eviction, OldestFirst, WarnLimiter, accept_or_pause};
use crate::error::Error;
use crate::ids::{ClusterName, Seat};
use crate::metrics::Metrics;

/// The protocol negotiated with ALPN: gRPC runs over HTTP/2.
const ALPN_H2: &[u8] = b"h2";

/// The largest TLS file read (a PEM certificate chain or key): a chain of a
/// few certificates is a few KiB, so anything near this is the wrong file.
const MAX_TLS_FILE_BYTES: u64 = 1 << 20;

/// The crypto provider: ring, with its TLS 1.3 suites.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The daemon's error for a TLS file not read: a read error as before,
/// anything else (not a regular file, too large) as [`Error::File`].
fn file_error(err: FileError) -> Error {
    match err {
        FileError::Read { path, source } => Error::ReadFile { path, source },
        other => Error::File(other),
    }
}

/// Reads a TLS file that holds no secret (a certificate), bounded.
pub(crate) fn read_public_file(path: &Path) -> Result<Vec<u8>, Error> {
    read_bounded(path, MAX_TLS_FILE_BYTES).map_err(file_error)
}

/// Reads every certificate of a PEM file.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let bytes = read_public_file(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| Error::Pem {
            path: path.to_path_buf(),
            kind: "certificate",
        })?;
    if certs.is_empty() {
        return Err(Error::Pem {
            path: path.to_path_buf(),
            kind: "certificate",
        });
    }
    Ok(certs)
}

/// Reads a secret file (a private key), bounded, refusing one that group
/// or others may access. The mode is checked on the opened file, so a swap
/// between the check and the read cannot pass a looser file.
///
/// # Errors
/// [`Error::KeyFilePermissions`] for any group/other permission bit,
/// [`Error::File`] for what is not a regular file or too large, and
/// [`Error::ReadFile`].
pub(crate) fn read_secret_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, Error> {
    let (file, meta) = open_regular(path).map_err(file_error)?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(Error::KeyFilePermissions {
            path: path.to_path_buf(),
            mode: mode & 0o7777,
        });
    }
    let mut bytes = Zeroizing::new(Vec::new());
    read_opened(file, path, MAX_TLS_FILE_BYTES, &mut bytes).map_err(file_error)?;
    Ok(bytes)
}

/// Reads a PEM private key with [`read_secret_file`]'s permission check.
fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_slice(&read_secret_file(path)?).map_err(|_| Error::Pem {
        path: path.to_path_buf(),
        kind: "private key",
    })
}

/// Creates `path` with mode 0600 (set at creation, never loosened) and
/// writes `bytes`; an existing file is not overwritten.
///
/// # Errors
/// [`Error::WriteFile`], also when the file exists.
pub(crate) fn write_secret_file(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    write_new_file(path, bytes, 0o600)
}

/// Creates `path` with `mode` and writes `bytes`, durably; an existing file
/// is not overwritten.
pub(crate) fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let write_err = |source| Error::WriteFile {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(write_err)?;
    file.write_all(bytes).map_err(write_err)?;
    file.sync_all().map_err(write_err)
}

/// The cluster CA as the only trust anchor.
fn roots(path: &Path) -> Result<Arc<RootCertStore>, Error> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots.add(cert)?;
    }
    Ok(Arc::new(roots))
}

/// The server side: TLS 1.3 only, a client certificate chaining to the
/// cluster CA required.
///
/// # Errors
/// File errors, and [`Error::Tls`] / [`Error::Verifier`] when the key does
/// not match the certificate or the CA certificate is unusable.
pub(crate) fn server_config(paths: &TlsPaths) -> Result<Arc<ServerConfig>, Error> {
    let provider = provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots(&paths.ca_cert)?, provider.clone())
            .build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(read_certs(&paths.cert)?, read_private_key(&paths.key)?)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// The client side: TLS 1.3 only, the server verified against the cluster
/// CA, this member's certificate presented.
///
/// # Errors
/// As [`server_config`].
pub(crate) fn client_config(paths: &TlsPaths) -> Result<Arc<ClientConfig>, Error> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(&paths.ca_cert)?)
        .with_client_auth_cert(read_certs(&paths.cert)?, read_private_key(&paths.key)?)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// The seat an end-entity certificate names in `cluster`: exactly one DNS
/// subject-alternative name of the form `seat-<n>.<cluster>`. A certificate
/// naming no seat, or two, names none.
pub(crate) fn seat_of_certificate(
    cert: &CertificateDer<'_>,
    cluster: &ClusterName,
) -> Option<Seat> {
    let (_, parsed) = X509Certificate::from_der(cert.as_ref()).ok()?;
    let san = parsed.subject_alternative_name().ok()??;
    let mut seats = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => cluster.seat_of(dns),
            _ => None,
        });
    let seat = seats.next()?;
    match seats.next() {
        None => Some(seat),
        Some(_) => None,
    }
}

/// Each member's pinned TLS key: the SHA-256 of the SubjectPublicKeyInfo of
/// the certificate it must present, by seat.
///
/// The cluster CA says a certificate belongs to the cluster; the pin says
/// which key holds which seat. With pins, a certificate the CA issued for a
/// seat to another key (by anyone holding the CA key, such as an operator
/// provisioning a member) is refused, in both directions: a signer refuses
/// such a client, and a coordinator such a signer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsPins(BTreeMap<Seat, [u8; 32]>);

impl TlsPins {
    /// Pins from `(seat, key fingerprint)` pairs (see [`key_fingerprint`]).
    #[must_use]
    pub fn new(pins: BTreeMap<Seat, [u8; 32]>) -> Self {
        Self(pins)
    }

    /// Whether `cert` carries the key pinned for `seat`.
    pub(crate) fn admits(&self, seat: Seat, cert: &CertificateDer<'_>) -> bool {
        match (self.0.get(&seat), key_fingerprint(cert)) {
            (Some(pinned), Some(presented)) => *pinned == presented,
            _ => false,
        }
    }
}

/// The SHA-256 of a certificate's SubjectPublicKeyInfo (the DER of its
/// public key and algorithm): what [`TlsPins`] pin. `None` for bytes that
/// are not a certificate.
#[must_use]
pub fn key_fingerprint(cert: &CertificateDer<'_>) -> Option<[u8; 32]> {
    let (_, parsed) = X509Certificate::from_der(cert.as_ref()).ok()?;
    Some(Sha256::digest(parsed.tbs_certificate.subject_pki.raw).into())
}

/// The key fingerprint (see [`key_fingerprint`]) of the first certificate
/// in the PEM file at `path`: what a member's roster entry must pin.
///
/// # Errors
/// [`Error::ReadFile`] and [`Error::Pem`] for an unreadable file,
/// [`Error::Malformed`] when it holds no certificate.
pub fn certificate_key_fingerprint(path: &Path) -> Result<[u8; 32], Error> {
    read_certs(path)?
        .first()
        .and_then(key_fingerprint)
        .ok_or(Error::Malformed("certificate file without a certificate"))
}

/// Whether a peer's leaf certificate may act as `seat`: always when no pins
/// are configured (the CA alone decides), else only with the pinned key.
pub(crate) fn pinned(pins: Option<&TlsPins>, seat: Seat, leaf: &CertificateDer<'_>) -> bool {
    pins.is_none_or(|pins| pins.admits(seat, leaf))
}

/// The authenticated identity of a connection's peer, as request extensions
/// carry it to the service.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerIdentity {
    /// The peer's seat, from its verified certificate.
    pub(crate) seat: Seat,
    /// The peer's socket address (for logs).
    pub(crate) addr: SocketAddr,
}

/// A TLS connection whose peer has been authenticated as a seat. It holds
/// its place among the seat's connections until it is dropped, and fails
/// its reads and writes once a newer connection took that place.
pub(crate) struct AuthenticatedStream {
    inner: TlsStream<TcpStream>,
    peer: PeerIdentity,
    place: MemberPlace,
}

impl AuthenticatedStream {
    /// An error once the connection was dropped to make room (see
    /// [`MemberConnections`]), so the server closes it.
    fn check_place(&mut self, cx: &mut Context<'_>) -> std::io::Result<()> {
        if let Some(dropped) = &mut self.place.dropped {
            match Pin::new(dropped).poll(cx) {
                Poll::Ready(Ok(())) => self.place.evicted = true,
                // The registry is gone (the accept loop ended): nothing can
                // drop this connection any more.
                Poll::Ready(Err(_)) => self.place.dropped = None,
                Poll::Pending => {}
            }
        }
        if self.place.evicted {
            self.place.dropped = None;
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "dropped for a newer connection (max_connections_per_seat, max_member_connections)",
            ));
        }
        Ok(())
    }
}

impl Connected for AuthenticatedStream {
    type ConnectInfo = PeerIdentity;

    fn connect_info(&self) -> PeerIdentity {
        self.peer
    }
}

impl AsyncRead for AuthenticatedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        this.check_place(cx)?;
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for AuthenticatedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        this.check_place(cx)?;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The authenticated connections held, by seat: at most
/// `max_connections_per_seat` per seat and `max_member_connections` in
/// all, the oldest dropped to make room. Dropping the oldest, not refusing
/// the newest, is what lets a member that reconnects after a network blip
/// (its old connections still open on this side) get back in.
#[derive(Clone)]
struct MemberConnections {
    held: Arc<Mutex<OldestFirst<Seat, u64, oneshot::Sender<()>>>>,
    next_id: Arc<AtomicU64>,
    metrics: Metrics,
}

/// A connection's place in [`MemberConnections`]; leaves it on drop.
struct MemberPlace {
    id: u64,
    members: MemberConnections,
    /// Fires when the place was taken by a newer connection.
    dropped: Option<oneshot::Receiver<()>>,
    evicted: bool,
}

impl MemberConnections {
    fn new(limits: &Limits, metrics: Metrics) -> Self {
        Self {
            held: Arc::new(Mutex::new(OldestFirst::new(
                limits.max_member_connections,
                limits.max_connections_per_seat,
            ))),
            next_id: Arc::new(AtomicU64::new(0)),
            metrics,
        }
    }

    fn held(&self) -> MutexGuard<'_, OldestFirst<Seat, u64, oneshot::Sender<()>>> {
        // The set stays consistent through a panic elsewhere: every
        // operation on it completes under the lock.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Gives `seat`'s new connection a place, dropping the connection whose
    /// place it takes.
    fn admit(&self, seat: Seat) -> MemberPlace {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let mut held = self.held();
        if let Some((why, oldest)) = held.insert(seat, id, tx) {
            // The receiver may be gone with its connection already.
            let _ = oldest.send(());
            self.metrics.dropped(match why {
                Eviction::KeyFull => "seat_cap",
                Eviction::SetFull => "member_capacity",
            });
        }
        self.metrics.set_member_connections(held.len());
        MemberPlace {
            id,
            members: self.clone(),
            dropped: Some(rx),
            evicted: false,
        }
    }
}

impl Drop for MemberPlace {
    fn drop(&mut self) {
        let mut held = self.members.held();
        held.remove(&self.id);
        self.members.metrics.set_member_connections(held.len());
    }
}

/// Why a handshake gave no authenticated connection.
enum Refusal {
    /// TLS failed (no client certificate, another CA, a protocol error).
    Tls(std::io::Error),
    /// The handshake did not finish within `handshake_timeout`.
    TimedOut,
    /// The certificate names no seat of this cluster.
    NoSeat,
    /// The certificate's key is not the one pinned for its seat.
    NotPinned(Seat),
}

/// What a finished handshake gives: the TLS stream and its peer.
type Authenticated = (TlsStream<TcpStream>, PeerIdentity);

/// What the server needs to run a handshake and name the peer's seat.
#[derive(Clone)]
pub(crate) struct Handshaker {
    acceptor: TlsAcceptor,
    cluster: ClusterName,
    pins: Option<TlsPins>,
    timeout: Duration,
}

impl Handshaker {
    /// Handshakes with `acceptor`'s configuration, each within `timeout`,
    /// accepting the seats of `cluster` (with their `pins`, if any).
    pub(crate) fn new(
        acceptor: TlsAcceptor,
        cluster: ClusterName,
        pins: Option<TlsPins>,
        timeout: Duration,
    ) -> Self {
        Self {
            acceptor,
            cluster,
            pins,
            timeout,
        }
    }

    /// Runs one handshake and reads the peer's seat from its certificate.
    async fn run(self, tcp: TcpStream, addr: SocketAddr) -> Result<Authenticated, Refusal> {
        let tls = match tokio::time::timeout(self.timeout, self.acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(err)) => return Err(Refusal::Tls(err)),
            Err(_) => return Err(Refusal::TimedOut),
        };
        let leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first());
        let seat = leaf.and_then(|leaf| seat_of_certificate(leaf, &self.cluster));
        let (Some(seat), Some(leaf)) = (seat, leaf) else {
            return Err(Refusal::NoSeat);
        };
        if !pinned(self.pins.as_ref(), seat, leaf) {
            return Err(Refusal::NotPinned(seat));
        }
        Ok((tls, PeerIdentity { seat, addr }))
    }
}

impl Refusal {
    /// The `reason` label of `thresig_handshakes_refused_total`.
    fn reason(&self) -> &'static str {
        match self {
            Self::Tls(_) => "tls_error",
            Self::TimedOut => "timeout",
            Self::NoSeat => "no_seat",
            Self::NotPinned(_) => "not_pinned",
        }
    }
}

/// One warning limiter per kind of refusal, so that a flood of one kind
/// (stalled handshakes timing out) cannot hide a line of another (an
/// impostor certificate).
#[derive(Default)]
struct RefusalWarnings {
    tls: WarnLimiter,
    timed_out: WarnLimiter,
    no_seat: WarnLimiter,
    not_pinned: WarnLimiter,
}

impl RefusalWarnings {
    fn of(&mut self, refusal: &Refusal) -> &mut WarnLimiter {
        match refusal {
            Refusal::Tls(_) => &mut self.tls,
            Refusal::TimedOut => &mut self.timed_out,
            Refusal::NoSeat => &mut self.no_seat,
            Refusal::NotPinned(_) => &mut self.not_pinned,
        }
    }
}

/// Counts a refused handshake and logs it, at most one line per interval
/// and kind.
fn log_refusal(
    refusal: &Refusal,
    addr: SocketAddr,
    warnings: &mut RefusalWarnings,
    metrics: &Metrics,
) {
    if matches!(refusal, Refusal::TimedOut) {
        metrics.dropped("handshake_timeout");
    }
    metrics.refused(refusal.reason());
    let Some(suppressed) = warnings.of(refusal).allow(Instant::now()) else {
        return;
    };
    match refusal {
        Refusal::Tls(err) => warn!(%addr, error = %err, suppressed, "TLS handshake failed"),
        Refusal::TimedOut => warn!(%addr, suppressed, "TLS handshake timed out"),
        Refusal::NoSeat => {
            warn!(%addr, suppressed, "refused a client certificate that names no seat of this cluster")
        }
        Refusal::NotPinned(seat) => {
            warn!(%addr, seat = seat.get(), suppressed, "refused a client certificate whose key is not the one pinned for its seat")
        }
    }
}

/// The source a handshake is counted under for `max_handshakes_per_source`:
/// an IPv4 address, or an IPv6 address's /64 prefix (one host is usually
/// given a whole /64, so each of its addresses is not a source of its own).
/// An IPv4-mapped IPv6 address counts as its IPv4 address.
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

/// Accepts TCP connections, runs the TLS handshakes concurrently and sends
/// each authenticated connection to the gRPC server, until `stop` fires or
/// the server drops its end. Dropping the listener on return refuses new
/// connections.
///
/// The loop never stops accepting. Handshakes in progress have their own
/// budget (`max_pending_handshakes`, at most `max_handshakes_per_source`
/// from one IP address, each within the handshaker's timeout), apart from the
/// members' authenticated connections, and at its bound the oldest pending
/// handshake (of the same source first) is dropped: strangers holding
/// silent connections or stalled handshakes only ever push each other out,
/// while a member's handshake, which finishes in milliseconds, gets through.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    handshaker: Handshaker,
    limits: Limits,
    metrics: Metrics,
    out: mpsc::Sender<AuthenticatedStream>,
    mut stop: watch::Receiver<bool>,
) {
    let members = MemberConnections::new(&limits, metrics.clone());
    let mut pending = OldestFirst::new(
        limits.max_pending_handshakes,
        limits.max_handshakes_per_source,
    );
    let mut handshakes: JoinSet<(SocketAddr, Result<Authenticated, Refusal>)> = JoinSet::new();
    let mut accept_warnings = WarnLimiter::new();
    let mut refusal_warnings = RefusalWarnings::default();
    let mut queue_warnings = WarnLimiter::new();
    loop {
        let (tcp, addr) = tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => break,
            () = out.closed() => break,
            Some(joined) = handshakes.join_next_with_id(), if !handshakes.is_empty() => {
                let (id, outcome) = match joined {
                    Ok((id, outcome)) => (id, Some(outcome)),
                    // Aborted (its place taken, already counted) or panicked.
                    Err(err) => (err.id(), None),
                };
                pending.remove(&id);
                metrics.set_pending_handshakes(pending.len());
                match outcome {
                    Some((addr, Ok((inner, peer)))) => {
                        debug!(%addr, seat = peer.seat.get(), "peer authenticated");
                        // The server takes connections as they come; a full
                        // queue means it is shutting down or far behind, and
                        // the member reconnects. The place is taken only once
                        // the queue has room, so a connection the server
                        // never gets pushes out none of the seat's.
                        match out.try_reserve() {
                            Ok(room) => {
                                let place = members.admit(peer.seat);
                                room.send(AuthenticatedStream { inner, peer, place });
                            }
                            Err(_) => {
                                if let Some(suppressed) = queue_warnings.allow(Instant::now()) {
                                    warn!(%addr, suppressed, "the server took no connection; dropped it");
                                }
                            }
                        }
                    }
                    Some((addr, Err(refusal))) => {
                        log_refusal(&refusal, addr, &mut refusal_warnings, &metrics);
                    }
                    None => {}
                }
                continue;
            }
            accepted = accept_or_pause(&listener, &mut accept_warnings, "grpc") => match accepted {
                Some(accepted) => accepted,
                None => continue,
            },
        };
        // Requests and replies are small and answered at once: Nagle's
        // algorithm would hold each reply for the peer's delayed ACK.
        if let Err(err) = tcp.set_nodelay(true) {
            debug!(error = %err, "cannot disable Nagle's algorithm");
        }
        let task = handshaker.clone().run(tcp, addr);
        let handle = handshakes.spawn(async move { (addr, task.await) });
        if let Some((why, oldest)) = pending.insert(source_of(addr.ip()), handle.id(), handle) {
            oldest.abort();
            metrics.refused("evicted");
            metrics.dropped(match why {
                Eviction::KeyFull => "source_cap",
                Eviction::SetFull => "handshake_budget",
            });
        }
        metrics.set_pending_handshakes(pending.len());
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair};

    use super::*;

    fn cert_with_names(names: &[&str]) -> CertificateDer<'static> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let key = KeyPair::generate().unwrap();
        CertificateParams::new(names)
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .der()
            .clone()
    }

    #[test]
    fn a_certificate_names_a_seat_only_with_exactly_one_seat_name() {
        let cluster = ClusterName::new("demo").unwrap();
        let seat = |n| Seat::try_from(n).unwrap();
        let cases: [(&[&str], Option<Seat>); 6] = [
            (&["seat-3.demo"], Some(seat(3))),
            (&["localhost", "seat-3.demo", "seat-3.other"], Some(seat(3))),
            (&["seat-3.demo", "seat-4.demo"], None),
            (&["seat-3.demo", "seat-3.demo"], None),
            (&["seat-3.other", "localhost"], None),
            (&["demo"], None),
        ];
        for (names, expected) in cases {
            assert_eq!(
                seat_of_certificate(&cert_with_names(names), &cluster),
                expected,
                "{names:?}"
            );
        }
        assert_eq!(
            seat_of_certificate(&CertificateDer::from(vec![0x30, 0x00]), &cluster),
            None
        );
    }

    #[test]
    fn an_ipv6_source_is_its_64_prefix_and_a_mapped_ipv4_address_its_ipv4_one() {
        let v6 = |s: &str| IpAddr::V6(s.parse().unwrap());
        assert_eq!(
            source_of(v6("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            v6("2001:db8:1:2::")
        );
        assert_eq!(
            source_of(v6("2001:db8:1:2::1")),
            source_of(v6("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            source_of(v6("2001:db8:1:2::1")),
            source_of(v6("2001:db8:1:3::1"))
        );
        let v4 = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));
        assert_eq!(source_of(v4), v4);
        assert_eq!(source_of(v6("::ffff:192.0.2.7")), v4);
    }

    /// Runs `read` on another thread; its result, or a failure once it has
    /// not returned within a bound (a read blocked on a FIFO).
    fn read_within<T: Send + 'static>(
        path: &Path,
        read: fn(&Path) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let (tx, rx) = std::sync::mpsc::channel();
        let path = path.to_path_buf();
        std::thread::spawn(move || tx.send(read(&path)));
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the read returns instead of blocking")
    }

    #[test]
    fn tls_files_that_are_not_regular_files_or_too_large_are_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let huge = dir.path().join("huge.pem");
        write_secret_file(
            &huge,
            &vec![b'#'; 2 * usize::try_from(MAX_TLS_FILE_BYTES).unwrap()],
        )
        .unwrap();
        for path in [fifo.as_path(), Path::new("/dev/zero"), dir.path(), &huge] {
            for err in [
                read_within(path, read_certs).unwrap_err(),
                read_within(path, |p| read_secret_file(p).map(|_| ())).unwrap_err(),
            ] {
                let text = err.to_string();
                assert!(matches!(err, Error::File(_)), "{path:?}: {text}");
                assert!(text.contains(&path.display().to_string()), "{text}");
                assert!(!err.is_retryable(), "{text}");
            }
        }
    }

    #[test]
    fn secret_files_are_created_0600_and_loose_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        write_secret_file(&path, b"secret").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(&*read_secret_file(&path).unwrap(), b"secret");
        for loose in [0o640, 0o604, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(loose)).unwrap();
            let err = read_secret_file(&path).unwrap_err();
            assert!(matches!(err, Error::KeyFilePermissions { mode, .. } if mode == loose));
        }
        assert!(matches!(
            write_secret_file(&path, b"x"),
            Err(Error::WriteFile { .. })
        ));
    }
}
