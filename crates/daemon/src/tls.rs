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
use std::fs::File;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;
use tracing::{debug, warn};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
use zeroize::Zeroizing;

use crate::config::TlsPaths;
use crate::error::Error;
use crate::ids::{ClusterName, Seat};

/// A handshake that has not finished in this time is dropped, so a peer
/// that opens connections and stays silent cannot hold slots.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections held open at once. A signer is reached by one connection per
/// coordinating member, so even a 100-member cluster uses a tenth of this;
/// at the bound, the accept loop stops accepting until one closes.
const MAX_CONNECTIONS: usize = 1024;

/// Pause after a failed accept (see [`accept_with_slot`]).
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The protocol negotiated with ALPN: gRPC runs over HTTP/2.
const ALPN_H2: &[u8] = b"h2";

/// The crypto provider: ring, with its TLS 1.3 suites.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
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

/// Reads a secret file (a private key), refusing one that group or others
/// may access. The mode is checked on the opened file, so a swap between the
/// check and the read cannot pass a looser file.
///
/// # Errors
/// [`Error::KeyFilePermissions`] for any group/other permission bit, and
/// [`Error::ReadFile`].
pub(crate) fn read_secret_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, Error> {
    let read_err = |source| Error::ReadFile {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let mode = file.metadata().map_err(read_err)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(Error::KeyFilePermissions {
            path: path.to_path_buf(),
            mode: mode & 0o7777,
        });
    }
    let mut bytes = Zeroizing::new(Vec::new());
    file.read_to_end(&mut bytes).map_err(read_err)?;
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

/// A TLS connection whose peer has been authenticated as a seat. It holds a
/// connection slot until it is dropped.
pub(crate) struct AuthenticatedStream {
    inner: TlsStream<TcpStream>,
    peer: PeerIdentity,
    _slot: OwnedSemaphorePermit,
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
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for AuthenticatedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Accepts TCP connections, runs the TLS handshakes concurrently and sends
/// each authenticated connection to the gRPC server, until `stop` fires or
/// the server drops its end. Dropping the listener on return refuses new
/// connections.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    cluster: ClusterName,
    pins: Option<TlsPins>,
    out: mpsc::Sender<AuthenticatedStream>,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut handshakes = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => break,
            () = out.closed() => break,
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => continue,
            accepted = accept_with_slot(&listener, &slots) => accepted,
        };
        let Some((tcp, addr, slot)) = accepted else {
            continue;
        };
        let acceptor = acceptor.clone();
        let cluster = cluster.clone();
        let pins = pins.clone();
        let out = out.clone();
        handshakes.spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let leaf = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first());
                    let seat = leaf.and_then(|leaf| seat_of_certificate(leaf, &cluster));
                    let (Some(seat), Some(leaf)) = (seat, leaf) else {
                        warn!(%addr, "refused a client certificate that names no seat of this cluster");
                        return;
                    };
                    if !pinned(pins.as_ref(), seat, leaf) {
                        warn!(%addr, seat = seat.get(), "refused a client certificate whose key is not the one pinned for its seat");
                        return;
                    }
                    debug!(%addr, seat = seat.get(), "peer authenticated");
                    let stream = AuthenticatedStream {
                        inner: tls,
                        peer: PeerIdentity { seat, addr },
                        _slot: slot,
                    };
                    // The server may be shutting down; the connection is then dropped.
                    let _ = out.send(stream).await;
                }
                Ok(Err(err)) => warn!(%addr, error = %err, "TLS handshake failed"),
                Err(_) => warn!(%addr, "TLS handshake timed out"),
            }
        });
    }
}

/// Waits for a connection slot, then accepts one connection. A failed accept
/// (out of file descriptors, a reset before accept) is logged and skipped
/// after a short pause, so a persistent failure such as `EMFILE` does not
/// spin the loop (the pause mini-redis's accept loop takes, without its
/// doubling: the daemon must come back as soon as descriptors free up).
async fn accept_with_slot(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    let slot = slots.clone().acquire_owned().await.ok()?;
    match listener.accept().await {
        Ok((tcp, addr)) => {
            // Requests and replies are small and answered at once: Nagle's
            // algorithm would hold each reply for the peer's delayed ACK.
            if let Err(err) = tcp.set_nodelay(true) {
                warn!(error = %err, "cannot disable Nagle's algorithm");
            }
            Some((tcp, addr, slot))
        }
        Err(err) => {
            warn!(error = %err, "accept failed");
            tokio::time::sleep(ACCEPT_RETRY_PAUSE).await;
            None
        }
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
