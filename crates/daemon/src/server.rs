//! [`serve`]: the signer's gRPC server over mutually authenticated TLS 1.3,
//! with health, metrics and graceful shutdown, in mini-redis's shape (the
//! caller binds the sockets and supplies the shutdown future).

use std::future::Future;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Server;
use tracing::info;

use crate::api::SignerHandler;
use crate::config::DaemonConfig;
use crate::conn::raise_open_file_limit;
use crate::error::Error;
use crate::limits::AdmissionLayer;
use crate::metrics::{Metrics, serve_metrics};
use crate::proto::signer_server::SignerServer;
use crate::service::{RequestLines, SignerService};
use crate::tls::{Handshaker, accept_loop, server_config};

/// The sockets [`serve`] listens on, bound by the caller (so it can bind
/// privileged or ephemeral ports and report the addresses first).
#[derive(Debug)]
#[non_exhaustive]
pub struct Listeners {
    /// The gRPC (TLS) listener.
    pub grpc: TcpListener,
    /// The metrics (plain HTTP, loopback) listener.
    pub metrics: TcpListener,
    /// The owner-only Unix socket that also serves metrics, if configured.
    pub metrics_socket: Option<UnixListener>,
}

impl Listeners {
    /// The two TCP listeners, without a metrics socket.
    #[must_use]
    pub fn new(grpc: TcpListener, metrics: TcpListener) -> Self {
        Self {
            grpc,
            metrics,
            metrics_socket: None,
        }
    }

    /// Binds both addresses of `config`, and its metrics socket if any,
    /// first raising the process's open-file limit to what `config`'s
    /// limits need (or refusing them). Every way of starting a configured
    /// daemon binds through here, so none skips that check.
    ///
    /// # Errors
    /// [`Error::OpenFileLimit`] if the hard open-file limit is below what
    /// the configured limits can hold, [`Error::Setup`] if the limit cannot
    /// be read or raised, or an address or the socket cannot be bound,
    /// [`Error::MetricsSocketDirectory`] if the socket's directory is open
    /// to group or others.
    pub async fn bind(config: &DaemonConfig) -> Result<Self, Error> {
        raise_open_file_limit(&config.limits)?;
        let grpc = TcpListener::bind(config.listen)
            .await
            .map_err(Error::Setup)?;
        let metrics = TcpListener::bind(config.metrics_listen)
            .await
            .map_err(Error::Setup)?;
        let metrics_socket = config
            .metrics_socket
            .as_deref()
            .map(bind_owner_only)
            .transpose()?;
        Ok(Self {
            grpc,
            metrics,
            metrics_socket,
        })
    }
}

/// Binds a Unix socket at `path` that only this user can reach: its
/// directory must be this user's and closed to group and others (so nobody
/// else reaches the socket in the moment before its mode is set), a stale
/// socket from an earlier run is replaced, and the socket gets mode 0600.
fn bind_owner_only(path: &Path) -> Result<UnixListener, Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let meta = std::fs::metadata(dir).map_err(Error::Setup)?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 || meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(Error::MetricsSocketDirectory {
            path: dir.to_path_buf(),
            mode,
        });
    }
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        std::fs::remove_file(path).map_err(Error::Setup)?;
    }
    let listener = UnixListener::bind(path).map_err(Error::Setup)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(Error::Setup)?;
    Ok(listener)
}

/// The gRPC health service name whose status is the signer's readiness:
/// `SERVING` while requests are accepted, `NOT_SERVING` once shutdown began.
pub const READINESS_SERVICE: &str = "thresig.v1.Signer";

/// Queue of authenticated connections between the accept loop and the
/// server; small, since connections are taken as soon as they arrive.
const CONNECTION_QUEUE: usize = 64;

/// Bytes a peer may send on one stream before the server reads them: what
/// HTTP/2 buffers for a request still waiting for its slot.
const STREAM_WINDOW: u32 = 256 * 1024;

/// Bytes a peer may send on one connection, over all its streams, before
/// the server reads them.
const CONNECTION_WINDOW: u32 = 1024 * 1024;

/// Largest HTTP/2 frame accepted (the protocol's minimum, 16 KiB).
const MAX_FRAME: u32 = 16 * 1024;

/// Largest header block accepted; gRPC requests send a few hundred bytes.
const MAX_HEADER_LIST: u32 = 16 * 1024;

/// A connection silent this long is pinged...
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// ...and closed if the ping is not answered in this time, so a vanished
/// peer's connection does not hold its buffers.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the signer until `shutdown` completes, then stops accepting, lets
/// in-flight requests finish and returns.
///
/// Loads the TLS files first, so a bad key file (for example one readable
/// by others) is refused before any connection is accepted. Every request
/// is admitted before its body is read (see `docs/daemon.md`, "Limits":
/// a member's share of the request permits, one of
/// `config.limits.max_concurrent_requests` slots, then the body within
/// `config.limits.body_timeout`, its method's size limit and the byte
/// budget), then decoded and run by `handler` on a blocking thread, all
/// within `config.limits.request_timeout`. Requests above their method's
/// size limit are refused by the transport with `OUT_OF_RANGE`.
///
/// # Errors
/// TLS file and configuration errors ([`Error::KeyFilePermissions`],
/// [`Error::ReadFile`], [`Error::Pem`], [`Error::Tls`], [`Error::Verifier`]),
/// and [`Error::Transport`] if the server fails.
pub async fn serve<H, F>(
    config: &DaemonConfig,
    listeners: Listeners,
    handler: Arc<H>,
    shutdown: F,
) -> Result<(), Error>
where
    H: SignerHandler,
    F: Future<Output = ()> + Send,
{
    let acceptor = TlsAcceptor::from(server_config(&config.tls)?);
    let lifecycle = handler.clone();
    let metrics = Metrics::new().with_lifecycle(Arc::new(move || lifecycle.lifecycle()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let admission_stop = stop_rx.clone();
    let (conn_tx, conn_rx) = mpsc::channel(CONNECTION_QUEUE);

    let handshaker = Handshaker::new(
        acceptor,
        config.cluster.clone(),
        config.pins.clone(),
        config.limits.handshake_timeout,
    );
    let accept = tokio::spawn(accept_loop(
        listeners.grpc,
        handshaker,
        config.limits,
        metrics.clone(),
        conn_tx,
        stop_rx.clone(),
    ));
    let metrics_task = tokio::spawn(serve_metrics(
        listeners.metrics,
        metrics.clone(),
        config.limits.max_metrics_connections,
        stop_rx.clone(),
    ));
    let metrics_socket_task = listeners.metrics_socket.map(|socket| {
        tokio::spawn(serve_metrics(
            socket,
            metrics.clone(),
            config.limits.max_metrics_connections,
            stop_rx,
        ))
    });

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(READINESS_SERVICE, tonic_health::ServingStatus::Serving)
        .await;
    let limits = config.limits;
    let slots = Arc::new(Semaphore::new(limits.max_concurrent_requests));
    let admission = AdmissionLayer::new(limits, slots.clone(), metrics.clone(), admission_stop);
    let service = SignerServer::new(SignerService {
        handler,
        timeout: limits.request_timeout,
        metrics,
        lines: RequestLines::default(),
    })
    .max_decoding_message_size(limits.max_request_bytes);

    let incoming = ReceiverStream::new(conn_rx).map(Ok::<_, std::io::Error>);
    let signal = async move {
        shutdown.await;
        info!("shutdown requested: no new connections; finishing requests in flight");
        // Requests waiting for a slot, and any arriving before their
        // connection is told to go away, are refused (`overloaded`,
        // retryable) instead of waiting for a signer that is stopping;
        // requests holding a slot finish.
        slots.close();
        let _ = stop_tx.send(true);
        health
            .set_service_status(READINESS_SERVICE, tonic_health::ServingStatus::NotServing)
            .await;
    };
    info!(cluster = %config.cluster, "signer daemon serving");
    let served = Server::builder()
        // tonic's default leaves streams per connection unbounded.
        .max_concurrent_streams(limits.max_streams_per_connection)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .http2_max_header_list_size(MAX_HEADER_LIST)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .layer(admission)
        .add_service(health_service)
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, signal)
        .await;
    // Both tasks end on the stop signal, already sent when the server
    // returns normally; on a server error they are stopped here.
    accept.abort();
    metrics_task.abort();
    let _ = accept.await;
    let _ = metrics_task.await;
    if let Some(task) = metrics_socket_task {
        task.abort();
        let _ = task.await;
    }
    served?;
    info!("signer daemon stopped");
    Ok(())
}

/// Runs the daemon as a process's main loop: builds a Tokio runtime, binds
/// the configured addresses ([`Listeners::bind`], which raises the
/// open-file limit), and serves until SIGINT or SIGTERM, then drains
/// in-flight requests and returns.
///
/// This is the glue a binary would write around [`serve`] (mini-redis's
/// `bin/server.rs`), kept here so that the CLI needs no async runtime of
/// its own. Tests and embedders that bind their own sockets or stop on
/// another event call [`serve`].
///
/// # Errors
/// [`Error::OpenFileLimit`] if the hard open-file limit is below what the
/// configured limits can hold, [`Error::Setup`] if the runtime, a listener
/// or a signal handler cannot be set up, and the errors of [`serve`].
pub fn run_until_signal<H: SignerHandler>(
    config: &DaemonConfig,
    handler: Arc<H>,
) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Setup)?;
    runtime.block_on(async {
        let listeners = Listeners::bind(config).await?;
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .map_err(Error::Setup)?;
        let grpc = listeners.grpc.local_addr().map_err(Error::Setup)?;
        let metrics = listeners.metrics.local_addr().map_err(Error::Setup)?;
        info!(%grpc, %metrics, "listening");
        let shutdown = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
                _ = terminate.recv() => info!("SIGTERM received"),
            }
        };
        serve(config, listeners, handler, shutdown).await
    })
}
