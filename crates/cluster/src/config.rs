//! The signer's TOML configuration file.
//!
//! One file per member holds everything that member needs: `[store]` (the
//! store's [`StoreConfig`]) and `[key_provider]` (the store's
//! [`KeyProviderSection`]), each used as its crate defines it; and, for a
//! member of a cluster, `network`, `member` (its own seat), the shared roster
//! (`[[members]]`: seat, identity public key, endpoint), the wallets it may
//! join (`[[wallets]]` with `[wallets.policy]`), `[daemon]` (the daemon
//! crate's [`DaemonSection`]) and `[signer]` (the signer engine's limits an
//! operator may set). Roster and thresholds come from this file
//! only, never from a coordinator.
//!
//! Unknown fields are refused everywhere, and every error names the file and
//! the field. Operators' documentation: `docs/configuration.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thresig_crypto::{MerkleRoot, ScriptTree, Seat};
use thresig_daemon::{DaemonConfig, DaemonSection, TlsPins};
use thresig_engine::{
    ConfigError as EngineConfigError, IdentityKey, Limits, SignerConfig, WalletConfig, WalletId,
};
use thresig_store::provider::{KeyProviderConfig, KeyProviderSection, ProviderError};
use thresig_store::{
    KeyManagerOptions, RecoveryPublicKey, StoreConfig, StoreLocation, StoreOptions,
};
use thresig_tx::{Network, PolicyConfig};

use crate::file::{FileError, read_bounded};
use thresig_store::Recovery;

/// The largest configuration file read. A 100-member roster with a few
/// wallets is under 64 KiB, so anything near this is the wrong file.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The file as written, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    network: Option<Network>,
    member: Option<u16>,
    store: StoreConfig,
    key_provider: KeyProviderSection,
    daemon: Option<DaemonSection>,
    #[serde(default)]
    signer: SignerSection,
    #[serde(default)]
    members: Vec<MemberSection>,
    #[serde(default)]
    wallets: Vec<WalletSection>,
}

/// The `[signer]` table: the signer engine's limits an operator may set;
/// each unset one keeps the engine's default.
#[derive(Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct SignerSection {
    /// How long a DKG session may hold a wallet in memory from its part 1
    /// (`Limits::dkg_session_ttl`).
    dkg_session_ttl_secs: Option<u64>,
    /// Whether a DKG round-1 message must carry its kind-bound signature
    /// (`Limits::require_round1_kind_signature`).
    require_round1_kind_signature: Option<bool>,
}

/// The longest `dkg_session_ttl_secs`: a day. A session holds its wallet
/// (a new one is refused with `dkg_busy`) and its secrets in memory until
/// it expires, so a typo must not make that forever.
const MAX_DKG_SESSION_TTL_SECS: u64 = 24 * 60 * 60;

/// One `[[members]]` entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberSection {
    seat: u16,
    identity: IdentityKey,
    #[serde(with = "hex::serde")]
    tls_key_sha256: [u8; 32],
    endpoint: SocketAddr,
}

/// One `[[wallets]]` entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WalletSection {
    id: WalletId,
    threshold: u16,
    /// Cluster seats in wallet-seat order: wallet seat `i` is `members[i - 1]`.
    members: Vec<u16>,
    #[serde(default)]
    policy: PolicyConfig,
    successor: Option<WalletId>,
    /// The script tree the wallet's output key commits to: its root, 64
    /// hex digits.
    script_tree_root: Option<String>,
    /// Cluster seats the operator approved removing at the next share
    /// refresh (each must be one of `members`).
    #[serde(default)]
    remove: Vec<u16>,
}

/// A validated configuration.
#[derive(Debug)]
#[non_exhaustive]
pub struct Config {
    /// The database directory (absolute; a relative `data_dir` is taken
    /// from the configuration file's directory).
    pub data_dir: PathBuf,
    /// Store settings, the recovery public key included.
    pub options: StoreOptions,
    /// The key manager's settings (`key_poll_interval_secs`).
    pub key_manager: KeyManagerOptions,
    /// The validated `[key_provider]` section.
    pub key_provider: KeyProviderConfig,
    /// The cluster part, present when the file names its `member`.
    pub node: Option<NodeConfig>,
}

/// A cluster member's part of the configuration.
///
/// # Invariants
/// `member` is in `members`; seats, identity keys and endpoints are
/// distinct; every wallet's seats are members, distinct, and include
/// `member`; [`NodeConfig::signer_config`] validates.
#[derive(Debug)]
#[non_exhaustive]
pub struct NodeConfig {
    /// The Bitcoin network of every wallet.
    pub network: Network,
    /// This member's cluster seat (its certificate names `seat-<n>`).
    pub member: Seat,
    /// This member's identity key, as its roster entry gives it.
    pub identity: IdentityKey,
    /// The roster: every member's identity key and endpoint, by seat.
    pub members: BTreeMap<Seat, Member>,
    /// The wallets this member may join.
    pub wallets: Vec<NodeWallet>,
    /// The validated `[daemon]` section, if present (`serve` needs it).
    pub daemon: Option<DaemonConfig>,
    /// The signer engine's limits: the defaults, with what `[signer]` sets.
    pub limits: Limits,
}

/// One roster entry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Member {
    /// Its Ed25519 identity public key (signs its DKG messages).
    pub identity: IdentityKey,
    /// The SHA-256 of its TLS certificate's public key: the only key that
    /// may act as this seat, whatever else the cluster CA signed.
    pub tls_key_sha256: [u8; 32],
    /// Where its daemon listens.
    pub endpoint: SocketAddr,
}

/// A wallet as this member's configuration defines it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NodeWallet {
    /// The engine's definition (roster as identity keys, policy, successor).
    pub config: WalletConfig,
    /// The cluster seat of each wallet seat: wallet seat `i` (FROST
    /// identifier `i`) is the member at cluster seat `seats[i - 1]`.
    pub seats: Vec<Seat>,
}

impl NodeWallet {
    /// The wallet's id.
    #[must_use]
    pub fn id(&self) -> &WalletId {
        &self.config.id
    }

    /// The cluster seat holding wallet seat `seat`.
    #[must_use]
    pub fn cluster_seat(&self, seat: Seat) -> Option<Seat> {
        self.seats
            .get(usize::from(seat.get()).checked_sub(1)?)
            .copied()
    }
}

impl NodeConfig {
    /// The engine's configuration for this member, with its limits.
    #[must_use]
    pub fn signer_config(&self) -> SignerConfig {
        SignerConfig::new(
            self.identity,
            self.network,
            self.wallets.iter().map(|w| w.config.clone()).collect(),
            self.limits.clone(),
        )
    }

    /// The wallet `id`, if this member's configuration defines it.
    #[must_use]
    pub fn wallet(&self, id: &WalletId) -> Option<&NodeWallet> {
        self.wallets.iter().find(|w| w.id() == id)
    }

    /// Every member's identity key, by seat (what the daemon maps an
    /// authenticated peer through).
    #[must_use]
    pub fn identities(&self) -> BTreeMap<Seat, IdentityKey> {
        self.members
            .iter()
            .map(|(seat, m)| (*seat, m.identity))
            .collect()
    }
}

/// Why a configuration file was refused. Every variant names the file;
/// none quotes a value from it (a key pasted into the wrong setting must not
/// reach a terminal or a log).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error(
        "configuration {}: cannot read: {source}; check the path (given to --config, or the member directory's signer.toml)",
        path.display()
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The path names something other than a regular file (a directory, a
    /// device such as `/dev/zero`, a FIFO): refused before anything is read
    /// from it.
    #[error(
        "configuration {}: not a regular file; pass the path of the TOML file itself",
        path.display()
    )]
    NotAFile {
        /// The path given.
        path: PathBuf,
    },
    /// The file is larger than any configuration.
    #[error(
        "configuration {}: larger than {MAX_CONFIG_BYTES} bytes; pass the signer's TOML file",
        path.display()
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// TOML syntax, a missing or unknown field, or a value of the wrong type.
    #[error(
        "configuration {}, line {line}: {message}; fix the file (docs/configuration.md)",
        path.display()
    )]
    Parse {
        /// The file.
        path: PathBuf,
        /// The line of the problem (0 when unknown).
        line: usize,
        /// The parser's message, quoted values removed.
        message: String,
    },
    /// A field has a value outside what it accepts.
    #[error(
        "configuration {}: `{field}` {problem}; fix it (docs/configuration.md)",
        path.display()
    )]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field, dotted (`wallets.members`).
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The `[key_provider]` section is invalid (its error names the field).
    #[error("configuration {}: {source}", path.display())]
    KeyProvider {
        /// The file.
        path: PathBuf,
        /// The provider's error.
        #[source]
        source: ProviderError,
    },
}

impl ConfigError {
    /// Whether reading the file again can succeed without editing it: only
    /// when the file could not be read.
    #[must_use]
    pub fn recovery(&self) -> Recovery {
        match self {
            Self::Read { .. } => Recovery::Retryable,
            _ => Recovery::Terminal,
        }
    }
}

impl Config {
    /// Reads and validates the configuration file at `path`.
    ///
    /// # Errors
    /// [`ConfigError`], naming the file and the field.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let bytes = read_bounded(path, MAX_CONFIG_BYTES).map_err(|e| match e {
            FileError::Read { path, source } => ConfigError::Read { path, source },
            FileError::NotAFile { path } => ConfigError::NotAFile { path },
            FileError::TooLarge { path, .. } => ConfigError::TooLarge { path },
        })?;
        let text = String::from_utf8(bytes).map_err(|_| ConfigError::Parse {
            path: path.to_path_buf(),
            line: 0,
            message: "the file is not UTF-8 text".to_owned(),
        })?;
        Self::parse(path, &text)
    }

    /// Validates `text`, read from `path`.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            line: e.span().map_or(0, |span| {
                text.get(..span.start).unwrap_or(text).matches('\n').count() + 1
            }),
            message: without_quoted_values(e.message()),
        })?;
        let invalid = |field: &str, problem: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            field: field.to_owned(),
            problem,
        };
        let key_provider =
            file.key_provider
                .validate()
                .map_err(|source| ConfigError::KeyProvider {
                    path: path.to_path_buf(),
                    source,
                })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut store = file.store;
        if store.data_dir.as_os_str().is_empty() {
            return Err(invalid("store.data_dir", "must not be empty".to_owned()));
        }
        if store.data_dir.is_relative() {
            store.data_dir = base.join(&store.data_dir);
        }
        let store_invalid = |e| match e {
            thresig_store::Error::InvalidConfig { field } => invalid(
                &format!("store.{field}"),
                "is out of range (see docs/configuration.md)".to_owned(),
            ),
            other => invalid("store", other.to_string()),
        };
        let mut options = store.options().map_err(store_invalid)?;
        let key_manager = store.key_manager_options().map_err(store_invalid)?;
        // The provider section checked the hex; the store checks the point.
        options.recovery_key = key_provider
            .recovery_public_key()
            .map(|k| RecoveryPublicKey::from_bytes(*k.as_bytes()))
            .transpose()
            .map_err(|_| {
                invalid(
                    "key_provider.recovery_public_key",
                    "is not a usable X25519 public key".to_owned(),
                )
            })?;
        let node = match file.member {
            Some(member) => {
                let mut node = validate_node(
                    member,
                    file.network,
                    file.members,
                    file.wallets,
                    file.daemon,
                    base,
                    &invalid,
                )?;
                node.limits = signer_limits(&file.signer, &invalid)?;
                Some(node)
            }
            None if !file.members.is_empty() || !file.wallets.is_empty() => {
                return Err(invalid(
                    "member",
                    "is required with [[members]] and [[wallets]]".to_owned(),
                ));
            }
            None if file.daemon.is_some() => {
                return Err(invalid("member", "is required with [daemon]".to_owned()));
            }
            None if file.signer != SignerSection::default() => {
                return Err(invalid("member", "is required with [signer]".to_owned()));
            }
            None => None,
        };
        Ok(Self {
            data_dir: store.data_dir,
            options,
            key_manager,
            key_provider,
            node,
        })
    }

    /// Where the store lives.
    #[must_use]
    pub fn location(&self) -> StoreLocation {
        StoreLocation::Directory(self.data_dir.clone())
    }

    /// The cluster part, or an error saying the file has none.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming `member` when the file is a
    /// store-only configuration.
    pub fn node(&self, path: &Path) -> Result<&NodeConfig, ConfigError> {
        self.node.as_ref().ok_or_else(|| no_member(path))
    }

    /// The cluster part, owned; as [`Config::node`].
    ///
    /// # Errors
    /// As [`Config::node`].
    pub fn into_node(self, path: &Path) -> Result<NodeConfig, ConfigError> {
        self.node.ok_or_else(|| no_member(path))
    }
}

fn no_member(path: &Path) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_path_buf(),
        field: "member".to_owned(),
        problem: "is missing: this command needs a cluster member's configuration (a member's \
                  signer.toml, as `thresig init` writes it)"
            .to_owned(),
    }
}

/// Checks the cluster part of a file against the invariants of
/// [`NodeConfig`].
fn validate_node(
    member: u16,
    network: Option<Network>,
    members: Vec<MemberSection>,
    wallets: Vec<WalletSection>,
    daemon: Option<DaemonSection>,
    base: &Path,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<NodeConfig, ConfigError> {
    let seat = |field: &str, n: u16| {
        Seat::try_from(n).map_err(|_| {
            invalid(
                field,
                format!("has seat {n}, not in 1..={}", thresig_crypto::MAX_SIGNERS),
            )
        })
    };
    let network = network.ok_or_else(|| invalid("network", "is required".to_owned()))?;
    let own = seat("member", member)?;
    let mut roster = BTreeMap::new();
    let mut identities = BTreeSet::new();
    let mut endpoints = BTreeSet::new();
    for m in members {
        let at = seat("members.seat", m.seat)?;
        if !identities.insert(m.identity) {
            return Err(invalid(
                "members.identity",
                format!("of seat {at} is also another member's"),
            ));
        }
        if !endpoints.insert(m.endpoint) {
            return Err(invalid(
                "members.endpoint",
                format!("of seat {at} is also another member's"),
            ));
        }
        let entry = Member {
            identity: m.identity,
            tls_key_sha256: m.tls_key_sha256,
            endpoint: m.endpoint,
        };
        if roster.insert(at, entry).is_some() {
            return Err(invalid("members.seat", format!("{at} appears twice")));
        }
    }
    let identity = roster
        .get(&own)
        .map(|m| m.identity)
        .ok_or_else(|| invalid("member", format!("seat {own} has no [[members]] entry")))?;
    let mut node_wallets = Vec::with_capacity(wallets.len());
    for w in wallets {
        let mut seats = Vec::with_capacity(w.members.len());
        let mut keys = Vec::with_capacity(w.members.len());
        for n in w.members {
            let at = seat("wallets.members", n)?;
            let m = roster.get(&at).ok_or_else(|| {
                invalid(
                    "wallets.members",
                    format!(
                        "of wallet {} names seat {at}, which has no [[members]] entry",
                        w.id
                    ),
                )
            })?;
            if seats.contains(&at) {
                return Err(invalid(
                    "wallets.members",
                    format!("of wallet {} names seat {at} twice", w.id),
                ));
            }
            seats.push(at);
            keys.push(m.identity);
        }
        let tree = match &w.script_tree_root {
            None => ScriptTree::KeyPathOnly,
            Some(text) => {
                let mut root = [0; 32];
                hex::decode_to_slice(text, &mut root).map_err(|_| {
                    invalid(
                        "wallets.script_tree_root",
                        format!(
                            "of wallet {} is not 64 hex digits (a 32-byte script-tree root)",
                            w.id
                        ),
                    )
                })?;
                ScriptTree::Root(MerkleRoot(root))
            }
        };
        let remove = removal(&w.id, &w.remove, &seats, &invalid)?;
        let mut config = WalletConfig::new(w.id, w.threshold, keys)
            .with_policy(w.policy)
            .with_script_tree(tree)
            .with_removal(remove);
        if let Some(successor) = w.successor {
            config = config.with_successor(successor);
        }
        node_wallets.push(NodeWallet { config, seats });
    }
    let mut daemon = daemon
        .map(|section| DaemonConfig::from_section(section, base))
        .transpose()
        .map_err(|e| invalid("daemon", e.to_string()))?;
    if let Some(daemon) = &mut daemon {
        // A full set of member connections takes its room from the seat
        // holding the most; sized for the roster, honest members holding
        // their cap never fill it.
        let limits = &daemon.limits;
        let needed = roster.len().saturating_mul(limits.max_connections_per_seat);
        if limits.max_member_connections < needed {
            return Err(invalid(
                "daemon.limits.max_member_connections",
                format!(
                    "is {}, below the {} members times max_connections_per_seat {} = {needed}",
                    limits.max_member_connections,
                    roster.len(),
                    limits.max_connections_per_seat
                ),
            ));
        }
        daemon.pins = Some(TlsPins::new(
            roster
                .iter()
                .map(|(seat, m)| (*seat, m.tls_key_sha256))
                .collect(),
        ));
    }
    let node = NodeConfig {
        network,
        member: own,
        identity,
        members: roster,
        wallets: node_wallets,
        daemon,
        limits: Limits::default(),
    };
    node.signer_config()
        .validate()
        .map_err(|e| invalid(wallet_field(&e), e.to_string()))?;
    Ok(node)
}

/// The engine's limits: the defaults, with what `[signer]` sets (each value
/// within its bound; every bound keeps the engine's limits valid).
fn signer_limits(
    signer: &SignerSection,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Limits, ConfigError> {
    let mut limits = Limits::default();
    if let Some(secs) = signer.dkg_session_ttl_secs {
        if !(1..=MAX_DKG_SESSION_TTL_SECS).contains(&secs) {
            return Err(invalid(
                "signer.dkg_session_ttl_secs",
                format!("must be 1 to {MAX_DKG_SESSION_TTL_SECS} seconds"),
            ));
        }
        limits.dkg_session_ttl = Duration::from_secs(secs);
    }
    if let Some(required) = signer.require_round1_kind_signature {
        limits.require_round1_kind_signature = required;
    }
    Ok(limits)
}

/// A wallet's `remove` list (cluster seats) as wallet seats: each must be
/// one of the wallet's members (a repeated one the engine refuses).
fn removal(
    wallet: &WalletId,
    remove: &[u16],
    members: &[Seat],
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Vec<Seat>, ConfigError> {
    remove
        .iter()
        .map(|n| {
            let position = members.iter().position(|m| m.get() == *n);
            position
                .and_then(|i| u16::try_from(i + 1).ok())
                .and_then(|i| Seat::try_from(i).ok())
                .ok_or_else(|| {
                    invalid(
                        "wallets.remove",
                        format!(
                            "of wallet {wallet} names seat {n}, which is not one of its members"
                        ),
                    )
                })
        })
        .collect()
}

/// The `[[wallets]]` field a wallet the engine refuses gets wrong.
fn wallet_field(e: &EngineConfigError) -> &'static str {
    match e {
        EngineConfigError::DuplicateWallet { .. } => "wallets.id",
        EngineConfigError::BadThreshold { .. } => "wallets.threshold",
        EngineConfigError::DuplicateRosterKey { .. } | EngineConfigError::NotAMember { .. } => {
            "wallets.members"
        }
        EngineConfigError::Policy { .. } => "wallets.policy",
        EngineConfigError::BadSuccessor { .. } => "wallets.successor",
        EngineConfigError::UnknownRemovedSeat { .. }
        | EngineConfigError::RemovesThreshold { .. } => "wallets.remove",
        _ => "wallets",
    }
}

/// The parser's message with quoted values removed: serde quotes the
/// offending value (`invalid type: string "…"`, ``unknown variant `…` ``),
/// and that value could be a key pasted into the wrong setting. Field names
/// are kept only in the messages that are about fields.
fn without_quoted_values(message: &str) -> String {
    let about_fields = ["unknown field", "missing field", "duplicate key"]
        .iter()
        .any(|p| message.starts_with(p));
    if about_fields {
        return message.to_owned();
    }
    let mut out = String::with_capacity(message.len());
    let mut quote = None;
    for c in message.chars() {
        match (quote, c) {
            (None, '"' | '`') => {
                quote = Some(c);
                out.push_str("(value not shown)");
            }
            (Some(q), _) if c == q => quote = None,
            (Some(_), _) => {}
            (None, _) => out.push(c),
        }
    }
    // The parser spreads its message over lines; a message is one line.
    out.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(": ")
}

#[cfg(test)]
mod tests;
