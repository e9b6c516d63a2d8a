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
        Ok(Self::with_tls(
            ClientTls::from_config(daemon)?,
            node.members
                .iter()
                .map(|(seat, m)| (*seat, m.endpoint))
                .collect(),
        ))
    }

    /// Connections to `endpoints` with `tls`.
    #[must_use]
    pub fn with_tls(tls: ClientTls, endpoints: BTreeMap<Seat, SocketAddr>) -> Self {
        Self {
            tls,
            endpoints,
            clients: Mutex::new(BTreeMap::new()),
        }
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
        let addr = *self
            .endpoints
            .get(&seat)
            .ok_or_else(|| unavailable(format!("seat {seat} has no endpoint")))?;
        let client = tokio::time::timeout(
            CONNECT_TIMEOUT,
            SignerClient::connect(&self.tls, addr, seat),
        )
        .await
        .map_err(|_| unavailable(format!("seat {seat} at {addr}: connect timed out")))??;
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

/// Whether `error` means the connection should be remade.
pub(crate) fn is_transport(error: &DaemonError) -> bool {
    matches!(error, DaemonError::Rpc { .. } | DaemonError::Transport(_))
}
