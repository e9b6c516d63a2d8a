//! The signer process: `thresig serve`.
//!
//! Opens the member's store through its key provider, reads the sealed
//! identity key, opens the engine with the wallets of the configuration,
//! starts the key manager beside it, and serves the engine over the daemon
//! until SIGINT or SIGTERM. Any DKG in progress lives only in memory, so a
//! restart aborts it (DESIGN.md §6); markers and key shares are durable.

use std::path::Path;
use std::sync::Arc;

use thresig_daemon::{EngineHandler, SignerHandler, run_until_signal};
use thresig_engine::{OpenError, Signer};
use thresig_store::provider::{KeyProvider, ProviderError};
use thresig_store::{EncryptedStore, KeyManager, KeyManagerOptions};
use tracing::info;

use crate::config::{Config, ConfigError};
use crate::fault::{Fault, Faulty};
use crate::identity::{self, IdentityError};

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
    #[error("the store's identity key is not the roster's key for seat {0}")]
    IdentityMismatch(thresig_crypto::Seat),
    /// The engine refused to open.
    #[error("signer: {0}")]
    Engine(#[from] OpenError),
    /// The daemon failed.
    #[error("daemon: {0}")]
    Daemon(#[from] thresig_daemon::Error),
}

impl NodeError {
    /// Whether starting again unchanged can succeed (a key provider or
    /// store that may come back, a port that may be freed).
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Config(e) => e.is_retryable(),
            Self::Provider(e) => e.recovery() == thresig_store::Recovery::Retryable,
            Self::Store(e) => e.recovery() == thresig_store::Recovery::Retryable,
            Self::Daemon(thresig_daemon::Error::Setup(_)) => true,
            _ => false,
        }
    }
}

/// Runs the signer of the configuration at `path` until SIGINT or SIGTERM.
/// `fault` makes it misbehave on purpose (the demo's malicious signers).
///
/// # Errors
/// [`NodeError`].
pub fn serve(path: &Path, fault: Option<Fault>) -> Result<(), NodeError> {
    let config = Config::load(path)?;
    let node = config.node(path)?;
    let daemon = node.daemon.as_ref().ok_or(NodeError::NoDaemon)?;
    let provider: Arc<dyn KeyProvider> = Arc::new(config.key_provider.open()?);
    let store = Arc::new(EncryptedStore::open(
        config.location(),
        provider,
        config.options.clone(),
    )?);
    let identity = identity::load(store.as_ref())?;
    if identity.verifying_key().to_bytes() != node.identity.to_bytes() {
        return Err(NodeError::IdentityMismatch(node.member));
    }
    let manager = KeyManager::start(store.clone(), KeyManagerOptions::default());
    let signer = Signer::open(node.signer_config(), identity, store.clone())?;
    let handler = EngineHandler::new(signer, node.identities());
    info!(member = %node.member, wallets = node.wallets.len(), "signer open");
    let served = match fault {
        None => run(daemon, handler),
        Some(fault) => run(daemon, Faulty::new(handler, fault)),
    };
    drop(manager);
    store.shutdown();
    served
}

fn run<H: SignerHandler>(
    daemon: &thresig_daemon::DaemonConfig,
    handler: H,
) -> Result<(), NodeError> {
    Ok(run_until_signal(daemon, Arc::new(handler))?)
}
