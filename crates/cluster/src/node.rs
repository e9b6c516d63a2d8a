//! The signer process: `thresig serve`.
//!
//! [`Node::open`] opens the member's store through its key provider, reads
//! the sealed identity key, opens the engine with the wallets of the
//! configuration and starts the key manager beside it; [`Node::run`] serves
//! the engine over the daemon until SIGINT or SIGTERM. Between the two the
//! caller may start the admin socket ([`admin_socket_path`]) over
//! [`Node::store`] and [`Node::provider`], since a running daemon holds the
//! store's database lock and `thresig keys` must act through it. Any DKG in progress lives only in memory, so a
//! restart aborts it (DESIGN.md §6); markers and key shares are durable.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{RecvTimeoutError, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use thresig_crypto::Seat;
pub use thresig_daemon::wall_clock;
use thresig_daemon::{
    DaemonConfig, EngineHandler, Listeners, SignerHandler, run_until_signal, serve,
};
use thresig_engine::{OpenError, Signer};
use thresig_store::provider::{KeyProvider, ProviderError};
use thresig_store::{EncryptedStore, KeyManager};
use tracing::{info, warn};

use crate::config::{Config, ConfigError, NodeConfig};
use crate::identity::{self, IdentityError};
use thresig_store::Recovery;

/// Why the signer could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The configuration has no `[daemon]` section.
    #[error("the configuration has no [daemon] section; `serve` needs one")]
    NoDaemon,
    /// The key provider could not be opened.
    #[error("key provider: {0}")]
    Provider(#[from] ProviderError),
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(#[from] thresig_store::Error),
    /// The identity key could not be read.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The sealed identity key is not the one the roster gives this seat.
    #[error(
        "the store's identity key is not the roster's key for seat {0}; check `member` and that seat's \
         `identity` in [[members]] (as `thresig init` printed it for this member)"
    )]
    IdentityMismatch(thresig_crypto::Seat),
    /// This member's TLS certificate does not carry the key the roster pins
    /// for its seat: every peer would refuse it.
    #[error(
        "the TLS certificate's key is not the one the roster pins for seat {0} \
         (tls_key_sha256 in its [[members]] entry); put there the SHA-256 `thresig init` printed \
         for this member, or configure the certificate whose key it pins"
    )]
    TlsKeyMismatch(thresig_crypto::Seat),
    /// The engine refused to open.
    #[error("signer: {0}")]
    Engine(#[from] OpenError),
    /// The daemon failed.
    #[error("daemon: {0}")]
    Daemon(#[from] thresig_daemon::Error),
    /// The open could not be recorded in the audit log (a broken log
    /// refuses to serve: no share may leave without its entry).
    #[error("audit log: {0}")]
    Audit(#[from] thresig_engine::audit::AuditError),
}

impl NodeError {
    /// Whether starting again unchanged can succeed (a key provider or
    /// store that may come back, a port that may be freed).
    #[must_use]
    pub fn recovery(&self) -> Recovery {
        match self {
            Self::Config(e) => e.recovery(),
            Self::Provider(e) => e.recovery(),
            Self::Store(e) => e.recovery(),
            Self::Audit(e) => e.recovery(),
            Self::Daemon(thresig_daemon::Error::Setup(_)) => Recovery::Retryable,
            _ => Recovery::Terminal,
        }
    }
}

/// Where the admin socket of the store configured in `config` lives:
/// `<data_dir>/admin/admin.sock`.
///
/// One path per store, so a `thresig keys` command finds the daemon that
/// holds the very database it would otherwise open. The server creates the
/// `admin` directory with mode 0700 and the socket with mode 0600: only the
/// signer's own user reaches it (the server also refuses peers of another
/// uid). The path stays well under the 108 bytes a Unix socket address
/// allows as long as `data_dir` is under about 90 bytes.
#[must_use]
pub fn admin_socket_path(config: &Config) -> PathBuf {
    config.data_dir.join("admin").join("admin.sock")
}

/// A member's engine opened over its store without serving it: what an
/// operator's command on a signer that is not running acts on (the same
/// [`Signer`] a running one serves, so a command runs the same code
/// either way). Opening takes the store's database lock, so it fails
/// while a signer runs on the store.
pub struct LocalEngine {
    /// The key provider the store was opened through.
    pub provider: Arc<dyn KeyProvider>,
    /// The open store.
    pub store: Arc<EncryptedStore>,
    /// The engine over it, with the configuration's wallets.
    pub signer: Signer<Arc<EncryptedStore>>,
}

impl LocalEngine {
    /// Opens the engine of the member configuration at `path`, and
    /// records the open in its audit log.
    ///
    /// # Errors
    /// As [`Node::open`], except that no `[daemon]` section is needed.
    pub fn open(path: &Path) -> Result<Self, NodeError> {
        let engine = Self::open_unrecorded(path)?;
        engine.signer.audit_open(wall_clock())?;
        Ok(engine)
    }

    /// [`LocalEngine::open`] without recording the open, for a caller that
    /// must read the audit log as it was first (`thresig audit verify`:
    /// appending checks only the last entry, and would name it instead of
    /// the first broken one) and records the open itself afterwards.
    ///
    /// # Errors
    /// As [`LocalEngine::open`].
    pub fn open_unrecorded(path: &Path) -> Result<Self, NodeError> {
        Self::open_config(Config::load(path)?, path).map(|(_, engine)| engine)
    }

    /// Opens the store of `config` (loaded from `path`) and the engine over
    /// it, after checking the sealed identity key against the roster. The
    /// open is not recorded yet: each caller records it once its own
    /// checks passed.
    fn open_config(config: Config, path: &Path) -> Result<(NodeConfig, Self), NodeError> {
        let provider: Arc<dyn KeyProvider> = Arc::new(config.key_provider.open()?);
        let store = Arc::new(EncryptedStore::open(
            config.location(),
            provider.clone(),
            config.options.clone(),
        )?);
        let node = config.into_node(path)?;
        let identity = identity::load(store.as_ref())?;
        if identity.verifying_key().to_bytes() != node.identity.to_bytes() {
            return Err(NodeError::IdentityMismatch(node.member));
        }
        let signer = Signer::open(node.signer_config(), identity, store.clone())?;
        Ok((
            node,
            Self {
                provider,
                store,
                signer,
            },
        ))
    }
}

/// A signer opened and ready to serve: the store through its key provider,
/// the identity checked against the roster, the key manager running and the
/// engine open. [`Node::run`] serves it; its parts are exposed so the
/// process can run operator commands (`thresig keys`) on the same open
/// store while the daemon runs.
pub struct Node {
    member: Seat,
    wallets: usize,
    daemon: DaemonConfig,
    admin_socket: PathBuf,
    provider: Arc<dyn KeyProvider>,
    store: Arc<EncryptedStore>,
    manager: KeyManager,
    handler: Arc<EngineHandler<Arc<EncryptedStore>>>,
    /// The configuration, read once at open (without its `[daemon]`).
    config: NodeConfig,
    /// Running once the node serves or [`Node::start_pruning`] started it.
    pruner: Option<Pruner>,
}

impl Node {
    /// Opens the signer of the configuration at `path`.
    ///
    /// # Errors
    /// [`NodeError`]: an invalid configuration or one without `[daemon]`,
    /// a key provider or store that does not open, an identity key that is
    /// not the roster's, an engine that refuses its wallets.
    pub fn open(path: &Path) -> Result<Self, NodeError> {
        let config = Config::load(path)?;
        let admin_socket = admin_socket_path(&config);
        let key_manager = config.key_manager;
        let (mut node, engine) = LocalEngine::open_config(config, path)?;
        let daemon = node.daemon.take().ok_or(NodeError::NoDaemon)?;
        let own_pin = node.members.get(&node.member).map(|m| m.tls_key_sha256);
        if own_pin
            != Some(thresig_daemon::certificate_key_fingerprint(
                &daemon.tls.cert,
            )?)
        {
            return Err(NodeError::TlsKeyMismatch(node.member));
        }
        // Only a start that passed every check is logged as serving.
        engine.signer.audit_open(wall_clock())?;
        let LocalEngine {
            provider,
            store,
            signer,
        } = engine;
        let manager = KeyManager::start(
            store.clone(),
            key_manager,
            Arc::new(thresig_engine::audit::KeyManagerAudit::default()),
        );
        let handler = Arc::new(EngineHandler::new(signer, node.identities()));
        Ok(Self {
            member: node.member,
            wallets: node.wallets.len(),
            daemon,
            admin_socket,
            provider,
            store,
            manager,
            handler,
            config: node,
            pruner: None,
        })
    }

    /// The engine behind the daemon's seam: for the local operator's
    /// commands ([`thresig_engine::Signer::operate`]) while it runs, and
    /// for a host that embeds the signer and carries its requests itself
    /// (`thresig-ffi`), since it maps a cluster seat to the coordinator that
    /// member is, as the daemon does.
    #[must_use]
    pub fn engine(&self) -> &Arc<EngineHandler<Arc<EncryptedStore>>> {
        &self.handler
    }

    /// This member's identity key, read from the store where it is sealed
    /// (open already checked it against the roster): for a host that signs
    /// as this member itself, such as the demo's faulty members, which
    /// sign the answers they alter.
    ///
    /// # Errors
    /// [`NodeError::Identity`] if the sealed key cannot be read.
    pub fn identity_key(&self) -> Result<ed25519_dalek::SigningKey, NodeError> {
        Ok(identity::load(self.store.as_ref())?)
    }

    /// The open store, shared with the engine and the key manager.
    #[must_use]
    pub fn store(&self) -> &Arc<EncryptedStore> {
        &self.store
    }

    /// The key provider the store was opened through.
    #[must_use]
    pub fn provider(&self) -> &Arc<dyn KeyProvider> {
        &self.provider
    }

    /// The key manager polling the provider beside the engine, at the
    /// configuration's `key_poll_interval_secs`.
    #[must_use]
    pub fn key_manager(&self) -> &KeyManager {
        &self.manager
    }

    /// The configuration the node was opened from, read once at open (its
    /// `[daemon]` section moved into the daemon).
    #[must_use]
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Prunes the engine every [`PRUNE_INTERVAL`] from now on, as serving
    /// does, for a host that embeds the node instead of serving it; until
    /// the node is closed or dropped. Starting it twice is harmless.
    pub fn start_pruning(&mut self) {
        if self.pruner.is_none() {
            self.pruner = Some(Pruner::start(Arc::clone(&self.handler)));
        }
    }

    /// Has the pruning thread prune once now and waits for that round;
    /// `false` if no pruning thread runs.
    #[must_use]
    pub fn prune_now(&self) -> bool {
        self.pruner.as_ref().is_some_and(Pruner::prune_now)
    }

    /// Closes a node that is not served as serving closes it: the pruner,
    /// the key manager (waited for until [`STOP_GRACE`], then abandoned),
    /// the store's writer.
    pub fn close(self) {
        stop(self.pruner, self.manager, &self.store, || {});
    }

    /// Where this signer's admin socket belongs ([`admin_socket_path`]).
    #[must_use]
    pub fn admin_socket(&self) -> &Path {
        &self.admin_socket
    }

    /// Serves the engine over the daemon until SIGINT or SIGTERM, then calls
    /// `before_close` (where the caller stops its own users of the store,
    /// such as the admin socket, waiting at most [`STOP_GRACE`]) and stops
    /// the key manager and the store's writer. The key manager is told to
    /// stop before `before_close` and waited for until [`STOP_GRACE`] after
    /// that; a manager still inside a tick then (a provider call that
    /// hangs, a rotation waiting for an admin command's) is abandoned like
    /// the admin commands.
    ///
    /// # Errors
    /// [`NodeError::Daemon`].
    pub fn run(self, before_close: impl FnOnce()) -> Result<(), NodeError> {
        self.serve_with(|handler| handler, run_until_signal, before_close)
    }

    /// Serves the engine, behind the handler `wrap` makes of it, on the
    /// configured addresses until `shutdown` completes, in this thread (a
    /// single-threaded runtime of its own; handlers run on its blocking
    /// threads), then closes as [`Node::run`] does. Binding raises the
    /// process's open-file limit, or refuses the configured limits, as
    /// [`Node::run`] does. For a process that
    /// hosts a member beside its own work: the demo wraps a member's
    /// handler in a fault, so that no flag of `thresig serve` can.
    ///
    /// # Errors
    /// [`NodeError::Daemon`].
    pub fn run_until<H, F>(
        self,
        wrap: impl FnOnce(Arc<EngineHandler<Arc<EncryptedStore>>>) -> Arc<H>,
        shutdown: F,
    ) -> Result<(), NodeError>
    where
        H: SignerHandler,
        F: Future<Output = ()> + Send,
    {
        let serve_here = |daemon: &DaemonConfig, handler| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(thresig_daemon::Error::Setup)?
                .block_on(async {
                    let listeners = Listeners::bind(daemon).await?;
                    serve(daemon, listeners, handler, shutdown).await
                })
        };
        self.serve_with(wrap, serve_here, || {})
    }

    /// Serves the engine behind `wrap`'s handler with `serve`, pruning it
    /// meanwhile, then closes: `before_close`, the key manager (waited for
    /// until [`STOP_GRACE`]), the store.
    fn serve_with<H>(
        self,
        wrap: impl FnOnce(Arc<EngineHandler<Arc<EncryptedStore>>>) -> Arc<H>,
        serve: impl FnOnce(&DaemonConfig, Arc<H>) -> Result<(), thresig_daemon::Error>,
        before_close: impl FnOnce(),
    ) -> Result<(), NodeError> {
        info!(member = %self.member, wallets = self.wallets, "signer open");
        let mut node = self;
        node.start_pruning();
        let Self {
            daemon,
            store,
            manager,
            handler,
            pruner,
            ..
        } = node;
        let served = serve(&daemon, wrap(handler));
        stop(pruner, manager, &store, before_close);
        Ok(served?)
    }
}

/// Stops a node's own threads and then its store: the pruner, then the key
/// manager, told to stop before `before_close` and waited for until
/// [`STOP_GRACE`] after that.
fn stop(
    pruner: Option<Pruner>,
    mut manager: KeyManager,
    store: &EncryptedStore,
    before_close: impl FnOnce(),
) {
    drop(pruner);
    let now = Instant::now();
    let deadline = now.checked_add(STOP_GRACE).unwrap_or(now);
    manager.request_stop();
    before_close();
    if !manager.stop_by(deadline) {
        warn!(
            grace_secs = STOP_GRACE.as_secs(),
            "the key manager is still inside a tick (a provider call or a rotation); stopping without it"
        );
    }
    store.shutdown();
}

/// How long a stopping signer waits for its users of the store besides the
/// engine: the key manager's tick, and the admin socket's commands (its
/// caller's `before_close`). A provider call can hang for its whole
/// timeout and a DEK rotation of a large store takes longer; stopping is
/// not held up by them, since either interrupted like a crash leaves the
/// store consistent.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// How often the engine is pruned. Nonces live five minutes and tombstones
/// and markers an hour by default, so a wallet nobody uses drops each within
/// half a minute of its expiry; a prune locks each wallet only briefly and
/// costs one store commit.
const PRUNE_INTERVAL: Duration = Duration::from_secs(30);

/// Prunes the engine every [`PRUNE_INTERVAL`] on its own thread (the engine
/// takes `now` and runs no timer itself), and at once when woken with a
/// sender to acknowledge the round on; stops and joins on drop.
struct Pruner {
    stop: Option<SyncSender<SyncSender<()>>>,
    thread: Option<JoinHandle<()>>,
}

impl Pruner {
    fn start(handler: Arc<EngineHandler<Arc<EncryptedStore>>>) -> Self {
        let (stop, woken) = sync_channel::<SyncSender<()>>(1);
        let thread = std::thread::Builder::new()
            .name("thresig-prune".to_owned())
            .spawn(move || {
                loop {
                    let ack = match woken.recv_timeout(PRUNE_INTERVAL) {
                        Ok(ack) => Some(ack),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => return,
                    };
                    if let Err(error) = handler.prune() {
                        warn!(%error, "pruning the signer failed; the next round tries again");
                    }
                    if let Some(ack) = ack {
                        let _ = ack.send(());
                    }
                }
            });
        let thread = match thread {
            Ok(thread) => Some(thread),
            Err(error) => {
                warn!(%error, "cannot start the pruning thread; idle wallets are not pruned");
                None
            }
        };
        Self {
            stop: Some(stop),
            thread,
        }
    }

    /// Wakes the thread for a round and waits for it to end.
    fn prune_now(&self) -> bool {
        let (ack, acked) = sync_channel(1);
        self.thread.is_some()
            && self.stop.as_ref().is_some_and(|s| s.send(ack).is_ok())
            && acked.recv().is_ok()
    }
}

impl Drop for Pruner {
    fn drop(&mut self) {
        // Dropping the sender ends the wait at once.
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;
    use thresig_daemon::ClusterName;
    use thresig_engine::WalletId;
    use thresig_tx::Network;

    use super::*;
    use crate::local::free_loopback_ports;
    use crate::provision::{self, CONFIG_FILE, ClusterSpec, member_dir};

    /// A provisioned 2-member cluster in `dir`; seat 1's configuration file.
    fn first_member(dir: &Path) -> PathBuf {
        let spec = ClusterSpec::new(
            ClusterName::new("test".to_owned()).unwrap(),
            Network::Regtest,
            free_loopback_ports(2).unwrap(),
            WalletId::new("w".to_owned()).unwrap(),
            2,
        );
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        provision::init_cluster(&dir.join("c"), &spec, SystemTime::now(), &mut rng).unwrap();
        member_dir(&dir.join("c"), Seat::FIRST).join(CONFIG_FILE)
    }

    /// A provisioned cluster's configurations load at every size up to the
    /// largest the benchmarks run: at 100 members the default 256 member
    /// connections were below 100 members times 8 connections each, and
    /// every member's configuration was refused.
    #[test]
    fn a_provisioned_hundred_member_cluster_has_configurations_that_load() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ClusterSpec::new(
            ClusterName::new("test".to_owned()).unwrap(),
            Network::Regtest,
            free_loopback_ports(100).unwrap(),
            WalletId::new("w".to_owned()).unwrap(),
            51,
        );
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        provision::init_cluster(&dir.path().join("c"), &spec, SystemTime::now(), &mut rng).unwrap();
        for seat in [Seat::FIRST, Seat::try_from(100).unwrap()] {
            let path = member_dir(&dir.path().join("c"), seat).join(CONFIG_FILE);
            Config::load(&path).unwrap().into_node(&path).unwrap();
        }
    }

    /// Inserts `lines` at the top of the configuration's `section`.
    fn add_to_section(path: &Path, section: &str, lines: &str) {
        let text = std::fs::read_to_string(path).unwrap();
        let header = format!("[{section}]\n");
        assert!(text.contains(&header), "{text}");
        std::fs::write(path, text.replacen(&header, &format!("{header}{lines}"), 1)).unwrap();
    }

    #[test]
    fn the_configured_key_poll_interval_reaches_the_key_manager() {
        let dir = tempfile::tempdir().unwrap();
        let path = first_member(dir.path());
        add_to_section(&path, "store", "key_poll_interval_secs = 7\n");
        let node = Node::open(&path).unwrap();
        assert_eq!(
            node.key_manager().poll_interval(),
            Some(Duration::from_secs(7))
        );
        node.store().shutdown();
    }

    #[test]
    fn an_embedded_node_prunes_once_started_and_closes() {
        let dir = tempfile::tempdir().unwrap();
        let path = first_member(dir.path());
        let mut node = Node::open(&path).unwrap();
        assert!(!node.prune_now(), "a pruner ran before it was started");
        node.start_pruning();
        assert!(node.prune_now());
        node.close();
    }

    /// A member served in another process's thread checks the open-file
    /// limit as `thresig serve` does.
    #[test]
    fn run_until_refuses_limits_the_hard_open_file_limit_cannot_hold() {
        // Handshakes, members and both metrics listeners at 65,536, plus 256.
        let needed = 4 * 65_536 + 256;
        let (_, hard) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        if hard >= needed {
            eprintln!("skipped: the hard open-file limit {hard} holds even the largest limits");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = first_member(dir.path());
        add_to_section(
            &path,
            "daemon.limits",
            "max_pending_handshakes = 65536\nmax_member_connections = 65536\n\
             max_metrics_connections = 65536\n",
        );
        let node = Node::open(&path).unwrap();
        let served = node.run_until(|handler| handler, async {});
        assert!(
            matches!(
                served,
                Err(NodeError::Daemon(thresig_daemon::Error::OpenFileLimit { needed: n, .. }))
                    if n == needed
            ),
            "{served:?}"
        );
    }
}
