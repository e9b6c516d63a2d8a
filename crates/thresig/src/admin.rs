//! The signer's local admin socket: how `thresig keys` acts on a running
//! `thresig serve`, whose process holds the store's database lock.
//!
//! [`AdminServer`] listens on a Unix socket at
//! [`admin_socket_path`](thresig_cluster::node::admin_socket_path) and
//! serves each connection on a thread of its own, so a slow or stuck
//! client never holds up signing (the daemon runs on its own runtime) nor
//! another client. It runs [`keys::run_on`] over the signer's open
//! store, and [`wallet::run_on`] over its running engine (the engine's
//! operator commands, [`OperatorCommand`]): the same code as the command
//! run without a signer, so the two paths cannot drift. [`ask`] and
//! [`answers`] are the command line's side.
//!
//! Protocol: one JSON line per connection each way. The request is
//! `{"command": "status" | "rotate_dek" | "rotate_kek" | "verify"}` for a
//! store command, or `{"engine": <OperatorCommand>}` for an engine command
//! (such as `{"engine": {"begin_rekey": {"wallet": "w"}}}`, or
//! `{"engine": {"approve_repair": {"wallet": "w", "seat": 3,
//! "expires_in_secs": 3600}}}` for `thresig repair approve`, which only
//! the signer's own operator can give, never a coordinator), or
//! `{"signed": {"sessions": n}}` or `{"sign_failed": {"retryable": b}}`,
//! `thresig sign` reporting a run it coordinated for the signer's metrics
//! (and `{"culprits": …}` the culprits it named, [`crate::culprits`]),
//! or `{"audit": "verify" | {"export": {"since": 1}} | {"export_page":
//! {"from": …, "through": …}} | {"prune": {"before_ms": …}}}` for
//! `thresig audit` (an export comes one page a reply), or `{"policy":
//! {"stage": {…}} | {"step": <RolloutCommand>} | "status"}` for `thresig
//! policy`; the
//! reply is `{"ok": {"json": …, "text": …, "findings": bool}}` or
//! `{"error": {"code": …, "retryable": bool, "message": …}}`. Replies are
//! the reports `keys` prints, which never hold key material.
//!
//! # Invariants
//! - Only the signer's own user reaches the socket: its directory is 0700,
//!   the socket 0600, and a peer whose uid (`SO_PEERCRED`) differs from
//!   ours is refused before it is read.
//! - At most [`MAX_CLIENTS`] connections are served at once (a further
//!   one is answered `admin_busy` at once); the store serializes the
//!   rotations they ask for.
//! - A request is at most [`MAX_REQUEST`] bytes and must arrive whole
//!   within [`IO_DEADLINE`], and the reply must be taken within another
//!   [`IO_DEADLINE`]: one deadline for each, however the client paces its
//!   bytes, so a client holds its thread only that long besides the
//!   command it asked for.
//! - The socket file is removed when the server stops; a socket left by a
//!   killed signer is removed at start once nothing answers on it.
//! - The server is stopped before the store's writer: once stopping, it
//!   accepts nothing and starts no command (a request still arriving is
//!   answered `admin_stopping`), and waits at most [`STOP_GRACE`] for the
//!   commands running. One still running then is abandoned: the process
//!   exits under it as if killed, which leaves the store consistent
//!   (docs/keys-runbook.md), and its client sees the connection close
//!   ([`ask`] reports that as retryable, as it does a connection still
//!   waiting to be accepted when the server stopped). A command that fails
//!   once the server is stopping is answered `admin_stopping`, retryable:
//!   the failure may be the stop's.

use std::io::{BufRead as _, BufReader, ErrorKind, Read, Write};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{
    DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt as _,
};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::socket::{Shutdown, getsockopt, sockopt::PeerCredentials};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thresig_cluster::node::STOP_GRACE;
use thresig_daemon::EngineHandler;
use thresig_engine::OperatorCommand;
use thresig_store::provider::KeyProvider;
use thresig_store::{EncryptedStore, Recovery};
use tracing::{info, warn};

use crate::audit::{self, AuditCommand};
use crate::keys::{self, KeysError, Report, StoreCommand, Verdict};
use crate::policy::{self, PolicyCall};
use crate::wallet;

/// The engine the daemon serves, which the admin socket's engine commands
/// reach.
pub(crate) type Engine = Arc<EngineHandler<Arc<EncryptedStore>>>;

/// The largest request read: a command name fits in a few dozen bytes.
pub(crate) const MAX_REQUEST: u64 = 4096;

/// The largest reply read: `verify` lists every failing record, so a badly
/// damaged store makes a long reply; this bounds the client's memory.
const MAX_REPLY: u64 = 64 << 20;

/// How long a client has to deliver its whole request, and then to take
/// the whole reply. A local client writes its one line at once, so this
/// only ends stuck connections. It bounds the whole exchange, not each
/// read: a per-read timeout lets a client that sends one byte just before
/// each read would time out hold its thread for [`MAX_REQUEST`] times as
/// long.
pub(crate) const IO_DEADLINE: Duration = Duration::from_secs(5);

/// Connections served at once. Operator commands are rare; four cover a
/// monitoring `keys status` or two while a rotation runs, and the cap bounds
/// the threads a local client can make the signer hold.
pub(crate) const MAX_CLIENTS: usize = 4;

/// A request on the admin socket: a command over the store, or one of the
/// engine's operator commands. A new engine command needs no change here.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum Request {
    Store(StoreRequest),
    Engine(EngineRequest),
    Signed(SignedRequest),
    SignFailed(SignFailedRequest),
    Audit(AuditRequest),
    Culprits(crate::culprits::CulpritsRequest),
    Policy(PolicyRequest),
}

/// `{"policy": …}`: a `thresig policy` command (a rollout step, or
/// `"status"`).
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyRequest {
    policy: PolicyCall,
}

impl From<PolicyCall> for Request {
    fn from(policy: PolicyCall) -> Self {
        Self::Policy(PolicyRequest { policy })
    }
}

/// `{"signed": {"sessions": n}}`: `thresig sign` reporting a signature it
/// coordinated, so the signer's metrics endpoint counts it (the
/// coordinator's own process serves no metrics).
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignedRequest {
    signed: Signed,
}

/// The most ROAST sessions a `signed` report may give: far above what a
/// run takes (n − t + 1 sessions, plus a bounded few re-asks for members
/// that refuse for now, within the run's deadline).
pub(crate) const MAX_REPORTED_SESSIONS: u32 = 1024;

/// One coordinated signature.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Signed {
    /// The ROAST sessions it took.
    sessions: Sessions,
}

/// A signature's ROAST sessions as a report gives them: 1 to
/// [`MAX_REPORTED_SESSIONS`], so that a report cannot skew the
/// sessions-per-signature mean below what any run takes (the socket is
/// the owner's; one that reports runs that never happened is trusted as
/// it is for every other admin command).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
struct Sessions(u32);

impl TryFrom<u32> for Sessions {
    type Error = String;

    fn try_from(sessions: u32) -> Result<Self, Self::Error> {
        if (1..=MAX_REPORTED_SESSIONS).contains(&sessions) {
            Ok(Self(sessions))
        } else {
            Err(format!(
                "a signature takes 1 to {MAX_REPORTED_SESSIONS} ROAST sessions, not {sessions}"
            ))
        }
    }
}

impl From<Sessions> for u32 {
    fn from(sessions: Sessions) -> Self {
        sessions.0
    }
}

/// `{"sign_failed": {"retryable": bool}}`: `thresig sign` reporting a run
/// it coordinated that ended without a signature.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignFailedRequest {
    sign_failed: SignFailed,
}

/// One signing run that failed.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignFailed {
    /// Whether running it again can succeed.
    retryable: bool,
}

impl Request {
    /// Reports a signing run that failed; `retryable` as its error says.
    pub(crate) fn sign_failed(retryable: bool) -> Self {
        Self::SignFailed(SignFailedRequest {
            sign_failed: SignFailed { retryable },
        })
    }

    /// Reports a signature that took `sessions` ROAST sessions.
    pub(crate) fn signed(sessions: u32) -> Self {
        Self::Signed(SignedRequest {
            signed: Signed {
                sessions: Sessions(sessions),
            },
        })
    }
}

/// `{"audit": …}`: a `thresig audit` command (`verify`, `export`,
/// `prune`).
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditRequest {
    audit: AuditCommand,
}

impl From<AuditCommand> for Request {
    fn from(audit: AuditCommand) -> Self {
        Self::Audit(AuditRequest { audit })
    }
}

/// `{"command": …}`: a `thresig keys` command.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoreRequest {
    command: StoreCommand,
}

/// `{"engine": …}`: an operator command to the running engine.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EngineRequest {
    engine: OperatorCommand,
}

impl From<StoreCommand> for Request {
    fn from(command: StoreCommand) -> Self {
        Self::Store(StoreRequest { command })
    }
}

impl From<OperatorCommand> for Request {
    fn from(engine: OperatorCommand) -> Self {
        Self::Engine(EngineRequest { engine })
    }
}

/// A reply on the admin socket.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Reply {
    Ok {
        json: Value,
        text: String,
        findings: bool,
    },
    Error(RemoteError),
}

/// A failure the running signer reported: its stable code, whether a retry
/// can succeed, and its description (which holds no key material).
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
#[error("[{code}] {message}")]
pub(crate) struct RemoteError {
    pub(crate) code: String,
    pub(crate) retryable: bool,
    pub(crate) message: String,
}

impl RemoteError {
    fn new(code: &str, recovery: Recovery, message: String) -> Self {
        Self {
            code: code.to_owned(),
            retryable: recovery == Recovery::Retryable,
            message,
        }
    }

    pub(crate) fn recovery(&self) -> Recovery {
        if self.retryable {
            Recovery::Retryable
        } else {
            Recovery::Terminal
        }
    }
}

/// What went wrong talking to a signer's admin socket.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdminProblem {
    /// Connecting, writing or reading failed (other than "nothing there").
    #[error("{0}")]
    Io(std::io::ErrorKind),
    /// The signer closed the connection before its whole reply: it was
    /// stopping, and refused or abandoned the command.
    #[error(
        "the signer closed the connection without a reply (it is stopping or has stopped); run the command again"
    )]
    Closed,
    /// The signer sent something that is not a reply.
    #[error("the signer's reply is not a valid admin reply")]
    BadReply,
}

impl AdminProblem {
    /// An I/O failure or a closed connection may be a signer starting or
    /// stopping (the command run again then opens the store, or reaches
    /// the restarted signer); a bad reply is a signer of another version.
    pub(crate) fn recovery(&self) -> Recovery {
        match self {
            Self::Io(_) | Self::Closed => Recovery::Retryable,
            Self::BadReply => Recovery::Terminal,
        }
    }
}

/// Why the admin socket could not be started.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    /// A directory or socket operation failed.
    #[error("admin socket {}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    /// The admin directory is not a directory we own (a symlink, or
    /// another user's).
    #[error("admin directory {} is not a directory owned by this user", path.display())]
    UntrustedDirectory { path: PathBuf },
    /// Something other than a socket sits at the socket's path.
    #[error("{} exists and is not a socket; remove it", path.display())]
    NotASocket { path: PathBuf },
    /// Another process answers on the socket.
    #[error("another process answers on {}; is a second signer running on this store?", path.display())]
    InUse { path: PathBuf },
}

/// A peer of another user.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("peer uid {peer} is not the signer's uid {ours}")]
pub(crate) struct PeerRefused {
    peer: u32,
    ours: u32,
}

/// Accepts only a peer running as our own uid. The socket's modes already
/// keep other users out; this also refuses root and anyone who was handed
/// a descriptor, since only the signer's operator may rotate its keys.
fn check_peer(peer: u32, ours: u32) -> Result<(), PeerRefused> {
    if peer == ours {
        Ok(())
    } else {
        Err(PeerRefused { peer, ours })
    }
}

/// The admin socket's server: a listener and the thread that serves it.
/// Stopped by [`AdminServer::stop`] or on drop.
pub(crate) struct AdminServer {
    path: PathBuf,
    /// The listening socket, shared with the thread, to wake its accept.
    listener: UnixListener,
    stopping: Arc<AtomicBool>,
    clients: Arc<Clients>,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Binds the socket at `path` (its directory created 0700, the socket
    /// chmod 0600, a stale socket of a killed signer removed) and serves
    /// the `keys` commands over `store`, and the operator's commands for
    /// `engine`, on a new thread.
    ///
    /// # Errors
    /// [`StartError`]: the directory cannot be made private, something
    /// else sits at the path, or another process answers on it.
    pub(crate) fn start(
        path: &Path,
        provider: Arc<dyn KeyProvider>,
        store: Arc<EncryptedStore>,
        engine: Engine,
    ) -> Result<Self, StartError> {
        let io = |what: &'static str| {
            move |source| StartError::Io {
                path: path.to_path_buf(),
                what,
                source,
            }
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        private_dir(dir)?;
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(StartError::NotASocket {
                    path: path.to_path_buf(),
                });
            }
            Ok(_) => match UnixStream::connect(path) {
                Ok(_) => {
                    return Err(StartError::InUse {
                        path: path.to_path_buf(),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    info!(socket = %path.display(), "removing the stale admin socket of a stopped signer");
                    std::fs::remove_file(path).map_err(io("removing a stale socket"))?;
                }
                Err(e) => return Err(io("probing an existing socket")(e)),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("inspecting the path")(e)),
        }
        let listener = UnixListener::bind(path).map_err(io("binding"))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(io("setting mode 0600"))?;
        let stopping = Arc::new(AtomicBool::new(false));
        let clients = Arc::new(Clients::default());
        let thread = {
            let (stopping, clients) = (stopping.clone(), clients.clone());
            let listener = listener.try_clone().map_err(io("sharing the listener"))?;
            std::thread::Builder::new()
                .name("admin".to_owned())
                .spawn(move || {
                    let target = Target {
                        provider,
                        store,
                        engine,
                    };
                    serve(&listener, &stopping, &clients, &target);
                })
                .map_err(io("starting its thread"))?
        };
        info!(socket = %path.display(), "admin socket listening");
        Ok(Self {
            path: path.to_path_buf(),
            listener,
            stopping,
            clients,
            thread: Some(thread),
        })
    }

    /// Stops accepting, waits at most [`STOP_GRACE`] for the commands
    /// running, and removes the socket file. Call it before the store's
    /// writer stops.
    pub(crate) fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stopping.store(true, Ordering::SeqCst);
        // Wakes the blocking accept with a connection; the thread sees the
        // flag and returns. Should the path be gone, shutting the listening
        // socket down wakes it instead (Linux fails the accept with EINVAL).
        if UnixStream::connect(&self.path).is_err() {
            let _ = nix::sys::socket::shutdown(self.listener.as_raw_fd(), Shutdown::Both);
        }
        let _ = thread.join();
        let left = self.clients.wait_idle(STOP_GRACE);
        if left > 0 {
            warn!(
                connections = left,
                "admin socket: stopping without waiting longer for the commands still running"
            );
        }
        if let Err(e) = std::fs::remove_file(&self.path) {
            warn!(socket = %self.path.display(), error = %e, "could not remove the admin socket");
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.shut();
    }
}

/// Creates `dir` with mode 0700 if absent; an existing one must be a real
/// directory of ours, and is set to 0700.
fn private_dir(dir: &Path) -> Result<(), StartError> {
    let io = |what: &'static str| {
        move |source| StartError::Io {
            path: dir.to_path_buf(),
            what,
            source,
        }
    };
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io("creating the directory")(e)),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(io("inspecting the directory"))?;
    if !meta.is_dir() || meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(StartError::UntrustedDirectory {
            path: dir.to_path_buf(),
        });
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io("setting mode 0700"))
}

/// The accept loop: each connection on its own thread, at most
/// [`MAX_CLIENTS`] at once, until stopped. Returns without waiting for the
/// connection threads ([`AdminServer::stop`] waits for them, bounded).
fn serve(
    listener: &UnixListener,
    stopping: &Arc<AtomicBool>,
    clients: &Arc<Clients>,
    target: &Target,
) {
    for stream in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                warn!(error = %e, "admin socket: accept failed");
                continue;
            }
        };
        // A peer of another user is refused before anything else, so it
        // learns nothing of the signer's load either.
        if !peer_admitted(&stream) {
            continue;
        }
        let Some(slot) = Slot::take(clients) else {
            warn!("admin socket: {MAX_CLIENTS} connections in hand; refusing another");
            let busy = RemoteError::new(
                "admin_busy",
                Recovery::Retryable,
                format!(
                    "the signer already serves {MAX_CLIENTS} admin connections; retry once one has finished"
                ),
            );
            send(&stream, &Reply::Error(busy));
            continue;
        };
        let (stopping, target) = (stopping.clone(), target.clone());
        let spawned = std::thread::Builder::new()
            .name("admin-client".to_owned())
            .spawn(move || {
                handle(&stream, &stopping, &target);
                drop(slot);
            });
        if let Err(e) = spawned {
            warn!(error = %e, "admin socket: cannot start a connection thread");
        }
    }
}

/// The connections in hand, which [`AdminServer::stop`] waits on.
#[derive(Default)]
struct Clients {
    count: Mutex<usize>,
    idle: Condvar,
}

impl Clients {
    /// Waits until no connection is in hand, at most `grace`; returns how
    /// many still are.
    fn wait_idle(&self, grace: Duration) -> usize {
        let count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        let (count, _) = self
            .idle
            .wait_timeout_while(count, grace, |n| *n > 0)
            .unwrap_or_else(PoisonError::into_inner);
        *count
    }
}

/// One of the [`MAX_CLIENTS`] connection slots, given back on drop.
struct Slot(Arc<Clients>);

impl Slot {
    fn take(clients: &Arc<Clients>) -> Option<Self> {
        let mut count = clients.count.lock().unwrap_or_else(PoisonError::into_inner);
        (*count < MAX_CLIENTS).then(|| {
            *count += 1;
            Self(clients.clone())
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut count = self.0.count.lock().unwrap_or_else(PoisonError::into_inner);
        *count -= 1;
        if *count == 0 {
            self.0.idle.notify_all();
        }
    }
}

/// A connection whose reads (or writes) all end by one instant: each call
/// waits at most the time left, so the deadline holds for the whole
/// request (or reply) however the peer paces its bytes.
struct Until<'a> {
    stream: &'a UnixStream,
    deadline: Instant,
}

impl<'a> Until<'a> {
    /// `stream` until [`IO_DEADLINE`] from now.
    fn new(stream: &'a UnixStream) -> Self {
        let now = Instant::now();
        Self {
            stream,
            deadline: now.checked_add(IO_DEADLINE).unwrap_or(now),
        }
    }

    /// The time left, or `TimedOut` once the deadline has passed.
    fn left(&self) -> std::io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(ErrorKind::TimedOut.into())
        } else {
            Ok(left)
        }
    }
}

impl Read for Until<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.stream.set_read_timeout(Some(self.left()?))?;
        let mut stream = self.stream;
        stream.read(buf)
    }
}

impl Write for Until<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.stream.set_write_timeout(Some(self.left()?))?;
        let mut stream = self.stream;
        stream.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether an I/O error is a timeout (a socket timeout shows as
/// `WouldBlock` on Linux).
fn timed_out(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Whether the peer on `stream` runs as our uid; a refused one is told so.
fn peer_admitted(stream: &UnixStream) -> bool {
    let ours = nix::unistd::geteuid().as_raw();
    let peer = match getsockopt(stream, PeerCredentials) {
        Ok(cred) => cred.uid(),
        Err(e) => {
            warn!(error = %e, "admin socket: cannot read the peer's credentials");
            return false;
        }
    };
    if let Err(e) = check_peer(peer, ours) {
        warn!(error = %e, "admin socket: peer refused");
        let refused = RemoteError::new("admin_peer_refused", Recovery::Terminal, e.to_string());
        send(stream, &Reply::Error(refused));
        return false;
    }
    true
}

/// Serves one admitted connection: reads one request, runs it (unless the
/// server is stopping) and writes the reply. Failures are logged; none
/// stops the server.
fn handle(stream: &UnixStream, stopping: &AtomicBool, target: &Target) {
    let mut line = Vec::new();
    match BufReader::new(Until::new(stream).take(MAX_REQUEST + 1)).read_until(b'\n', &mut line) {
        // A probe (`keys recover` asking whether a signer runs).
        Ok(0) => return,
        Ok(_) => {}
        Err(e) if timed_out(&e) => {
            warn!("admin socket: the request did not arrive in time");
            let late = RemoteError::new(
                "admin_timeout",
                Recovery::Retryable,
                format!(
                    "the request did not arrive whole within {} s; send it as one line at once",
                    IO_DEADLINE.as_secs()
                ),
            );
            send(stream, &Reply::Error(late));
            return;
        }
        Err(e) => {
            warn!(error = %e, "admin socket: reading the request failed");
            return;
        }
    }
    let reply = if u64::try_from(line.len()).map_or(true, |n| n > MAX_REQUEST) {
        Reply::Error(RemoteError::new(
            "admin_bad_request",
            Recovery::Terminal,
            format!("request longer than {MAX_REQUEST} bytes"),
        ))
    } else {
        match serde_json::from_slice::<Request>(&line) {
            // The store's writer may already be stopping.
            Ok(_) if stopping.load(Ordering::SeqCst) => Reply::Error(RemoteError::new(
                "admin_stopping",
                Recovery::Retryable,
                "the signer is stopping; retry once it has stopped (the command then opens the store) or restarted".to_owned(),
            )),
            Ok(request) => settle(
                run(request, target),
                stopping.load(Ordering::SeqCst),
            ),
            Err(e) => Reply::Error(RemoteError::new(
                "admin_bad_request",
                Recovery::Terminal,
                format!("not an admin request: {e}"),
            )),
        }
    };
    send(stream, &reply);
}

/// Runs one command over the open store or the running engine, logging
/// what it did.
fn run(request: Request, target: &Target) -> Reply {
    info!(?request, "admin socket: running");
    let mut progress = |line: &str| info!("{line}");
    let result = match &request {
        Request::Store(r) => {
            keys::run_on(r.command, &target.provider, &target.store, &mut progress)
        }
        Request::Engine(r) => wallet::run_on(
            &r.engine,
            target.engine.signer(),
            &target.store,
            &mut progress,
        ),
        Request::Signed(r) => {
            thresig_daemon::record_signature(r.signed.sessions.0);
            Ok(Report::clean(Value::Null, String::new()))
        }
        Request::SignFailed(r) => {
            thresig_daemon::record_signing_failure(r.sign_failed.retryable);
            Ok(Report::clean(Value::Null, String::new()))
        }
        Request::Audit(r) => audit::run_on(r.audit, target.engine.signer(), &target.store),
        Request::Culprits(r) => {
            r.record();
            Ok(Report::clean(Value::Null, String::new()))
        }
        Request::Policy(r) => policy::run_on(&r.policy, target.engine.signer()),
    };
    match result {
        Ok(Report {
            json,
            text,
            verdict,
        }) => Reply::Ok {
            json,
            text,
            findings: verdict == Verdict::Findings,
        },
        Err(e) => {
            warn!(?request, code = e.code(), error = %e.to_string(), "admin socket: command failed");
            Reply::Error(RemoteError::new(e.code(), e.recovery(), e.to_string()))
        }
    }
}

/// What the admin socket's commands act on: the signer's open store and
/// its running engine.
#[derive(Clone)]
struct Target {
    provider: Arc<dyn KeyProvider>,
    store: Arc<EncryptedStore>,
    engine: Engine,
}

/// The reply to a command that has run: as it is, unless it failed once
/// the server was `stopping`. The failure may then come from the stop
/// itself (the store's writer stopped under an abandoned rotation, which
/// reports `writer_stopped`, terminal), so the client is told to retry,
/// the command's own error kept in the message.
fn settle(reply: Reply, stopping: bool) -> Reply {
    match reply {
        Reply::Error(e) if stopping => Reply::Error(RemoteError::new(
            "admin_stopping",
            Recovery::Retryable,
            format!(
                "the signer stopped while the command ran, which then failed ({e}); retry once it has stopped (the command then opens the store) or restarted"
            ),
        )),
        reply => reply,
    }
}

/// Writes `reply`, which the client must take within [`IO_DEADLINE`].
fn send(stream: &UnixStream, reply: &Reply) {
    let written = serde_json::to_vec(reply)
        .map_err(std::io::Error::from)
        .and_then(|mut bytes| {
            bytes.push(b'\n');
            Until::new(stream).write_all(&bytes)
        });
    if let Err(e) = written {
        warn!(error = %e, "admin socket: writing the reply failed");
    }
}

/// Connects to the admin socket at `path`: `None` when no signer is there
/// (no socket file or data directory, nothing listening on it: a stopped
/// signer, or a path too long to be a socket address, which no signer
/// could have bound either).
fn connect(path: &Path) -> Result<Option<UnixStream>, KeysError> {
    use std::io::ErrorKind as K;
    match UnixStream::connect(path) {
        Ok(stream) => Ok(Some(stream)),
        Err(e)
            if matches!(
                e.kind(),
                K::NotFound | K::ConnectionRefused | K::NotADirectory | K::InvalidInput
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(admin_error(path, AdminProblem::Io(e.kind()))),
    }
}

fn admin_error(path: &Path, problem: AdminProblem) -> KeysError {
    KeysError::Admin {
        socket: path.to_path_buf(),
        problem,
    }
}

/// Whether a signer answers on the admin socket at `path`.
///
/// # Errors
/// [`KeysError::Admin`] when the socket exists but cannot be reached.
pub(crate) fn answers(path: &Path) -> Result<bool, KeysError> {
    Ok(connect(path)?.is_some())
}

/// Asks the signer on the admin socket at `path` to run `command`: `None`
/// when no signer answers, else its report. The reply is awaited without a
/// timeout, since a DEK rotation of a large store takes as long as it
/// takes; an interrupted client leaves the rotation running in the signer.
///
/// # Errors
/// [`KeysError::Daemon`] with the signer's own error, or
/// [`KeysError::Admin`] when the exchange fails.
pub(crate) fn ask(path: &Path, request: &Request) -> Result<Option<Report>, KeysError> {
    exchange(path, request, None)
}

/// How long `thresig sign` waits for its own signer to take a run's report:
/// recording it takes microseconds, and a signer that does not answer in
/// this time must not hold up the command, whose outputs are written.
pub(crate) const REPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// [`ask`] for a request the signer answers at once: a reply that does not
/// come within `timeout` fails with [`KeysError::Admin`].
///
/// # Errors
/// As [`ask`].
pub(crate) fn ask_within(
    path: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Option<Report>, KeysError> {
    exchange(path, request, Some(timeout))
}

/// One request and its reply on the admin socket at `path`, each socket
/// read and write bounded by `timeout` if given.
fn exchange(
    path: &Path,
    request: &Request,
    timeout: Option<Duration>,
) -> Result<Option<Report>, KeysError> {
    let Some(mut stream) = connect(path)? else {
        return Ok(None);
    };
    let io = |e: std::io::Error| admin_error(path, AdminProblem::Io(e.kind()));
    stream.set_read_timeout(timeout).map_err(io)?;
    stream.set_write_timeout(timeout).map_err(io)?;
    let mut request =
        serde_json::to_vec(request).map_err(|_| admin_error(path, AdminProblem::BadReply))?;
    request.push(b'\n');
    stream.write_all(&request).map_err(io)?;
    let mut line = Vec::new();
    BufReader::new((&stream).take(MAX_REPLY))
        .read_until(b'\n', &mut line)
        .map_err(io)?;
    // A reply ends its line; the stream ending first (short of the size
    // limit) is the signer closing it: stopping, it refused a connection
    // still waiting to be accepted, or exited under the command.
    if line.last() != Some(&b'\n') && u64::try_from(line.len()).is_ok_and(|n| n < MAX_REPLY) {
        return Err(admin_error(path, AdminProblem::Closed));
    }
    match serde_json::from_slice::<Reply>(&line) {
        Ok(Reply::Ok {
            json,
            text,
            findings,
        }) => Ok(Some(Report {
            json,
            text,
            verdict: if findings {
                Verdict::Findings
            } else {
                Verdict::Clean
            },
        })),
        Ok(Reply::Error(e)) => Err(KeysError::Daemon(e)),
        Err(_) => Err(admin_error(path, AdminProblem::BadReply)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_of_another_uid_is_refused() {
        assert_eq!(check_peer(1000, 1000), Ok(()));
        assert_eq!(
            check_peer(0, 1000),
            Err(PeerRefused {
                peer: 0,
                ours: 1000
            })
        );
        assert!(check_peer(1001, 1000).is_err());
    }

    #[test]
    fn only_a_listening_socket_counts_as_a_running_signer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        assert!(!answers(&path).unwrap(), "no socket file");
        assert!(!answers(&dir.path().join("no/such/dir/admin.sock")).unwrap());
        let long = dir.path().join("x".repeat(200)).join("admin.sock");
        assert!(!answers(&long).unwrap(), "too long to be bound");
        let listener = UnixListener::bind(&path).unwrap();
        assert!(answers(&path).unwrap(), "listening");
        drop(listener);
        assert!(
            !answers(&path).unwrap(),
            "stale: the file outlived its listener"
        );
    }

    /// A command that fails once the server is stopping may have failed
    /// because of the stop (the store's writer stopped under a rotation):
    /// its client is told to retry, with the command's own error kept.
    #[test]
    fn a_command_failing_while_the_server_stops_is_retryable() {
        let stopped = Reply::Error(RemoteError::new(
            "writer_stopped",
            Recovery::Terminal,
            "the store's writer has stopped".to_owned(),
        ));
        let Reply::Error(e) = settle(stopped, true) else {
            panic!("not an error")
        };
        assert_eq!(e.code, "admin_stopping");
        assert!(e.retryable);
        assert!(e.message.contains("writer_stopped"), "{}", e.message);
        let failed = Reply::Error(RemoteError::new(
            "kek_unavailable",
            Recovery::Terminal,
            "m".to_owned(),
        ));
        let Reply::Error(e) = settle(failed, false) else {
            panic!("not an error")
        };
        assert_eq!(e.code, "kek_unavailable", "kept while serving");
        let ok = Reply::Ok {
            json: Value::Null,
            text: String::new(),
            findings: false,
        };
        assert!(matches!(settle(ok, true), Reply::Ok { .. }));
    }

    #[test]
    fn the_wire_format_is_one_tagged_json_object() {
        let request: Request = serde_json::from_str(r#"{"command":"rotate_dek"}"#).unwrap();
        assert_eq!(request, Request::from(StoreCommand::RotateDek));
        let request: Request =
            serde_json::from_str(r#"{"engine":{"begin_rekey":{"wallet":"w"}}}"#).unwrap();
        let wallet = thresig_engine::WalletId::new("w").unwrap();
        assert_eq!(
            request,
            Request::from(OperatorCommand::BeginRekey { wallet })
        );
        assert!(
            serde_json::from_str::<Request>(r#"{"engine":{"retire":{"wallet":"w"}},"x":1}"#)
                .is_err()
        );
        assert!(
            serde_json::from_str::<Request>(
                r#"{"command":"status","engine":{"retire":{"wallet":"w"}}}"#
            )
            .is_err()
        );
        let approve: Request = serde_json::from_str(
            r#"{"engine":{"approve_repair":{"wallet":"w","seat":3,"expires_in_secs":60}}}"#,
        )
        .unwrap();
        assert_eq!(
            approve,
            Request::from(OperatorCommand::ApproveRepair {
                wallet: thresig_engine::WalletId::new("w").unwrap(),
                seat: thresig_crypto::Seat::try_from(3).unwrap(),
                expires_in_secs: 60,
            })
        );
        assert!(
            serde_json::from_str::<Request>(
                r#"{"engine":{"approve_repair":{"wallet":"w","seat":3,"expires_in_secs":60,"lost":2}}}"#,
            )
            .is_err(),
            "an unknown field of an approval is refused"
        );
        assert!(serde_json::from_str::<Request>(r#"{"command":"recover"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"command":"status","x":1}"#).is_err());
        let ok = serde_json::to_value(Reply::Ok {
            json: serde_json::json!({"current_dek": 1}),
            text: "t\n".to_owned(),
            findings: false,
        })
        .unwrap();
        assert_eq!(ok["ok"]["json"]["current_dek"], 1);
        assert_eq!(ok["ok"]["findings"], false);
        let err = serde_json::to_value(Reply::Error(RemoteError::new(
            "storage",
            Recovery::Retryable,
            "m".to_owned(),
        )))
        .unwrap();
        assert_eq!(err["error"]["code"], "storage");
        assert_eq!(err["error"]["retryable"], true);
    }

    #[test]
    fn a_policy_call_is_its_own_tagged_object() {
        let status: Request = serde_json::from_str(r#"{"policy":"status"}"#).unwrap();
        assert_eq!(status, Request::from(PolicyCall::Status));
        let promote: Request =
            serde_json::from_str(r#"{"policy":{"step":{"promote":{"expect_seq":3}}}}"#).unwrap();
        assert_eq!(
            promote,
            Request::from(PolicyCall::Step(thresig_engine::RolloutCommand::Promote {
                expect_seq: Some(3),
                force: false,
            }))
        );
        assert!(
            serde_json::from_str::<Request>(r#"{"policy":{"step":{"promote":{"seq":3}}}}"#)
                .is_err(),
            "an unknown field of a step is refused"
        );
    }

    #[test]
    fn a_signature_report_is_its_own_tagged_object() {
        let request: Request = serde_json::from_str(r#"{"signed":{"sessions":2}}"#).unwrap();
        assert_eq!(request, Request::signed(2));
        assert!(
            serde_json::from_str::<Request>(r#"{"signed":{"sessions":2,"wallet":"w"}}"#).is_err()
        );
        assert!(serde_json::from_str::<Request>(r#"{"signed":{"sessions":-1}}"#).is_err());
        // No run takes no session, nor more than the bound: such a report
        // would only skew the sessions-per-signature mean.
        for sessions in [0, MAX_REPORTED_SESSIONS + 1, u32::MAX] {
            let report = format!(r#"{{"signed":{{"sessions":{sessions}}}}}"#);
            assert!(
                serde_json::from_str::<Request>(&report).is_err(),
                "{report}"
            );
        }
        let most = format!(r#"{{"signed":{{"sessions":{MAX_REPORTED_SESSIONS}}}}}"#);
        assert_eq!(
            serde_json::from_str::<Request>(&most).unwrap(),
            Request::signed(MAX_REPORTED_SESSIONS)
        );
        let request: Request =
            serde_json::from_str(r#"{"sign_failed":{"retryable":true}}"#).unwrap();
        assert_eq!(request, Request::sign_failed(true));
    }
}
