//! A coordinator's connections to the members of its cluster.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use thresig_crypto::Seat;
use thresig_daemon::{ClientTls, Error as DaemonError, RpcCode, SignerClient};

use crate::config::NodeConfig;

/// How long connecting to one member may take. Loopback and LAN handshakes
/// take milliseconds; a member that needs longer is treated as down for this
/// request, and asked again on the next.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The daemon's default request timeout (`[daemon.limits]`), for peers made
/// without a configuration.
const DEFAULT_PATIENCE: Duration = Duration::from_secs(35);

/// Added to the members' request timeout before giving up on an answer:
/// transfer and scheduling time around the server's own deadline.
const PATIENCE_MARGIN: Duration = Duration::from_secs(5);

/// Connections to every member, made on first use and remade after a
/// transport failure (a member that restarts is reachable again at its next
/// request).
///
/// Every connection authenticates with this member's client certificate
/// and requires the peer's certificate to name the seat it is asked at.
pub struct Peers {
    tls: ClientTls,
    endpoints: BTreeMap<Seat, SocketAddr>,
    clients: Mutex<BTreeMap<Seat, SignerClient>>,
    patience: Duration,
    /// Whether a DKG run through these connections refuses a member's
    /// round-1 answer without its kind-bound signature (this member's
    /// `[signer] require_round1_kind_signature`).
    require_kind_signature: bool,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl Peers {
    /// Connections as the member `node` describes, with its TLS identity.
    ///
    /// # Errors
    /// [`DaemonError`] when the configuration has no `[daemon]` section (no
    /// TLS files) or its TLS files do not load.
    pub fn new(node: &NodeConfig) -> Result<Self, DaemonError> {
        let daemon = node.daemon.as_ref().ok_or(DaemonError::Malformed(
            "the configuration has no [daemon] section",
        ))?;
        let mut peers = Self::with_tls(
            ClientTls::from_config(daemon)?,
            node.members
                .iter()
                .map(|(seat, m)| (*seat, m.endpoint))
                .collect(),
        );
        peers.patience = daemon
            .limits
            .request_timeout
            .saturating_add(PATIENCE_MARGIN);
        peers.require_kind_signature = node.limits.require_round1_kind_signature;
        Ok(peers)
    }

    /// Connections to `endpoints` with `tls`, waiting for answers as long
    /// as the daemon's default request timeout allows.
    #[must_use]
    pub fn with_tls(tls: ClientTls, endpoints: BTreeMap<Seat, SocketAddr>) -> Self {
        Self {
            tls,
            endpoints,
            clients: Mutex::new(BTreeMap::new()),
            patience: DEFAULT_PATIENCE,
            require_kind_signature: false,
        }
    }

    /// Whether a DKG relay refuses a member's round-1 answer without its
    /// kind-bound signature, naming the member (see [`Peers::new`]).
    #[must_use]
    pub fn requires_kind_signature(&self) -> bool {
        self.require_kind_signature
    }

    /// These connections, waiting `patience` for each answer instead.
    #[must_use]
    pub fn with_patience(mut self, patience: Duration) -> Self {
        self.patience = patience;
        self
    }

    /// How long to wait for one answer: the members' request timeout (from
    /// this member's `[daemon.limits]`, which the cluster shares) plus a
    /// margin. A member that has not answered by then will not: its own
    /// server would have answered `timeout`.
    #[must_use]
    pub fn patience(&self) -> Duration {
        self.patience
    }

    /// Runs `call` with [`Peers::patience`] as its deadline; a call that
    /// outlasts it fails with [`RpcCode::DeadlineExceeded`].
    ///
    /// # Errors
    /// The call's error, or the deadline.
    pub async fn within<T>(
        &self,
        seat: Seat,
        call: impl std::future::Future<Output = Result<T, DaemonError>>,
    ) -> Result<T, DaemonError> {
        tokio::time::timeout(self.patience, call)
            .await
            .unwrap_or_else(|_| {
                Err(DaemonError::Rpc {
                    code: RpcCode::DeadlineExceeded,
                    message: format!("member {seat} gave no answer within {:?}", self.patience),
                })
            })
    }

    /// A connection to `seat`, made now if none is open.
    ///
    /// # Errors
    /// [`DaemonError::Rpc`] with [`RpcCode::Unavailable`] when `seat` has no
    /// endpoint or cannot be reached in time; the connection errors.
    pub async fn client(&self, seat: Seat) -> Result<SignerClient, DaemonError> {
        if let Some(client) = self.lock().get(&seat) {
            return Ok(client.clone());
        }
        let unavailable = |message: String| DaemonError::Rpc {
            code: RpcCode::Unavailable,
            message,
        };
        let addr = *self.endpoints.get(&seat).ok_or_else(|| {
            unavailable(format!(
                "member {seat} has no `endpoint` in [[members]]; add one"
            ))
        })?;
        let client = tokio::time::timeout(
            CONNECT_TIMEOUT,
            SignerClient::connect(&self.tls, addr, seat),
        )
        .await
        .map_err(|_| {
            unavailable(format!(
                "{addr}: no connection within {CONNECT_TIMEOUT:?}; {NOT_SERVING}"
            ))
        })?
        .map_err(|e| connect_failure(&e, addr))?;
        self.lock().insert(seat, client.clone());
        Ok(client)
    }

    /// Drops the connection to `seat` after a transport failure, so the
    /// next request connects again.
    pub fn forget(&self, seat: Seat) {
        self.lock().remove(&seat);
    }

    /// The seats this member knows, ascending.
    pub fn seats(&self) -> impl Iterator<Item = Seat> + '_ {
        self.endpoints.keys().copied()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Seat, SignerClient>> {
        // The map holds only cheap handles; a panic elsewhere cannot leave
        // it half-updated, so a poisoned lock is still usable.
        self.clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What to do about a member that does not answer at its address.
const NOT_SERVING: &str =
    "is its `thresig serve` running? Start it, or fix its `endpoint` in [[members]]";

/// A failed connection to the member at `addr`, as one message naming the
/// address, the cause once and what to do. tonic's transport error says
/// only "transport error" and repeats its cause down its source chain, so
/// the cause is the I/O error found in that chain: the socket's, or the
/// TLS handshake's and the pin check's, which the connector reports as I/O
/// errors.
///
/// Only the message changes with the cause: every connection failure is
/// [`RpcCode::Unavailable`], which the retry predicates ([`reply_lost`],
/// [`is_transport`], [`DaemonError::is_retryable`]) treat exactly as the
/// transport error the connection returned, so a signing round 2 or a DKG
/// part is asked again after it as before.
fn connect_failure(error: &(dyn std::error::Error + 'static), addr: SocketAddr) -> DaemonError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let io = std::iter::from_fn(|| {
        let current = cause?;
        cause = current.source();
        Some(current)
    })
    .find_map(|e| e.downcast_ref::<std::io::Error>());
    let message = match io {
        None => format!("{addr}: {error}; {NOT_SERVING}"),
        // A certificate the CA, the name check or the pin refuses.
        Some(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::InvalidData
            ) =>
        {
            format!(
                "{addr}: TLS refused: {io}; check that its `endpoint` in [[members]] is this member's \
                 address, and that the member's certificate (tls/signer.pem) is signed by the \
                 cluster CA and carries the key whose SHA-256 its `tls_key_sha256` in [[members]] pins"
            )
        }
        Some(io) => format!("{addr}: {io}; {NOT_SERVING}"),
    };
    DaemonError::Rpc {
        code: RpcCode::Unavailable,
        message,
    }
}

/// Whether `error` means the request may have run but its reply did not
/// arrive: the connection failed or was reset, the answer was late (the
/// caller's own deadline, [`Peers::within`], included), or the member's
/// own server answered `timeout` (its work may still complete). A refusal
/// the signer decided is an answer, never a lost one. Both the signing
/// driver and the DKG relay ask again, byte-identically, after a lost
/// reply: the signer answers a repeated request from the state the first
/// one left.
pub(crate) fn reply_lost(error: &DaemonError) -> bool {
    match error {
        DaemonError::Rpc { code, .. } => matches!(
            code,
            RpcCode::Unavailable | RpcCode::DeadlineExceeded | RpcCode::Other
        ),
        DaemonError::Transport(_) => true,
        DaemonError::Refused(refusal) => *refusal.code.kind() == thresig_daemon::Code::Timeout,
        _ => false,
    }
}

/// Whether `error` means the connection should be remade.
pub(crate) fn is_transport(error: &DaemonError) -> bool {
    matches!(error, DaemonError::Rpc { .. } | DaemonError::Transport(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection refused by TLS (a certificate off its pin, or a name
    /// that is not the member's: rustls's NotValidForName) is retried and
    /// classified as the transport error it is, not as an authentication
    /// failure: only its message says what to check.
    #[test]
    fn a_tls_refusal_at_connect_keeps_the_transport_retry_classification() {
        let addr: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        for kind in [
            std::io::ErrorKind::InvalidData,
            std::io::ErrorKind::PermissionDenied,
            std::io::ErrorKind::ConnectionRefused,
        ] {
            let io = std::io::Error::new(kind, "invalid peer certificate: NotValidForName");
            let e = connect_failure(&io, addr);
            assert!(reply_lost(&e), "{kind:?}: {e}");
            assert!(is_transport(&e), "{kind:?}: {e}");
            assert!(e.is_retryable(), "{kind:?}: {e}");
            let text = e.to_string();
            assert!(text.contains("127.0.0.1:7000"), "{text}");
            assert!(text.contains("`endpoint`"), "{text}");
            assert!(!text.contains("run this command again"), "{text}");
        }
        let pin = connect_failure(
            &std::io::Error::new(std::io::ErrorKind::PermissionDenied, "pinned key"),
            addr,
        );
        assert!(pin.to_string().contains("tls_key_sha256"), "{pin}");
    }
}
