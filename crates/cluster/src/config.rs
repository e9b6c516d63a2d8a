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
use thresig_crypto::Seat;
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
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignerSection {
    /// How long a DKG session may hold a wallet in memory from its part 1
    /// (`Limits::dkg_session_ttl`).
    dkg_session_ttl_secs: Option<u64>,
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
            None if file.signer.dkg_session_ttl_secs.is_some() => {
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
        problem: "is missing: this command needs a cluster member's configuration".to_owned(),
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
        let mut config = WalletConfig::new(w.id, w.threshold, keys).with_policy(w.policy);
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
    Ok(limits)
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
mod tests {
    use super::*;

    use std::time::Duration;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/thresig/signer.toml"), text)
    }

    const PROVIDER: &str = "[key_provider]\nkind = \"env\"\nvariable = \"KEK\"\n";

    #[test]
    fn minimal_config_uses_store_defaults_and_resolves_relative_dir() {
        let c = parse(&format!("[store]\ndata_dir = \"state\"\n{PROVIDER}")).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/etc/thresig/state"));
        assert_eq!(c.options.max_batch, StoreOptions::default().max_batch);
        assert!(c.options.recovery_key.is_none());
    }

    #[test]
    fn batch_settings_are_applied_and_bounded() {
        let c = parse(&format!(
            "[store]\ndata_dir = \"/var/lib/thresig\"\nmax_batch = 8\nreseal_batch = 3\n{PROVIDER}"
        ))
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/thresig"));
        assert_eq!((c.options.max_batch, c.options.reseal_batch), (8, 3));
        let e = parse(&format!(
            "[store]\ndata_dir = \"d\"\nmax_batch = 0\n{PROVIDER}"
        ))
        .unwrap_err();
        assert!(
            matches!(&e, ConfigError::Invalid { field, .. } if field == "store.max_batch"),
            "{e}"
        );
    }

    #[test]
    fn unknown_fields_are_refused_with_file_and_line() {
        let e = parse(&format!("[store]\ndata_dir = \"d\"\ncache = 1\n{PROVIDER}")).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, ConfigError::Parse { line: 3, .. }), "{text}");
        assert!(
            text.contains("signer.toml") && text.contains("`cache`"),
            "{text}"
        );
        let e =
            parse("[store]\ndata_dir = \"d\"\n[key_provider]\nkind = \"env\"\nvarible = \"K\"\n")
                .unwrap_err();
        assert!(e.to_string().contains("`varible`"), "{e}");
    }

    #[test]
    fn wrong_typed_values_are_not_echoed() {
        let e = parse(&format!(
            "[store]\ndata_dir = \"d\"\nmax_batch = \"c0ffeec0ffee\"\n{PROVIDER}"
        ))
        .unwrap_err();
        assert!(!e.to_string().contains("c0ffee"), "{e}");
        assert!(matches!(e, ConfigError::Parse { line: 3, .. }), "{e}");
    }

    #[test]
    fn provider_problems_name_the_file() {
        let e = parse("[store]\ndata_dir = \"d\"\n[key_provider]\nkind = \"env\"\n").unwrap_err();
        assert!(matches!(e, ConfigError::KeyProvider { .. }), "{e}");
        assert!(e.to_string().contains("signer.toml"), "{e}");
    }

    #[test]
    fn recovery_key_reaches_store_options() {
        let (_, pk) = thresig_store::RecoverySecretKey::generate(&mut rand_core::OsRng);
        let c = parse(&format!(
            "[store]\ndata_dir = \"d\"\n{PROVIDER}recovery_public_key = \"{}\"\n",
            hex::encode(pk.to_bytes())
        ))
        .unwrap();
        assert_eq!(c.options.recovery_key, Some(pk));
    }

    #[test]
    fn a_key_poll_interval_out_of_range_is_refused_naming_it() {
        for value in ["0", "86401", "9223372036854775807"] {
            let e = parse(&format!(
                "[store]\ndata_dir = \"d\"\nkey_poll_interval_secs = {value}\n{PROVIDER}"
            ))
            .unwrap_err();
            assert!(
                matches!(&e, ConfigError::Invalid { field, .. }
                    if field == "store.key_poll_interval_secs"),
                "{value}: {e}"
            );
            assert_eq!(e.recovery(), Recovery::Terminal, "{e}");
        }
    }

    #[test]
    fn the_key_poll_interval_is_kept_for_the_key_manager() {
        let c = parse(&format!(
            "[store]\ndata_dir = \"d\"\nkey_poll_interval_secs = 7\n{PROVIDER}"
        ))
        .unwrap();
        assert_eq!(c.key_manager.poll_interval, Duration::from_secs(7));
        let c = parse(&format!("[store]\ndata_dir = \"d\"\n{PROVIDER}")).unwrap();
        assert_eq!(c.key_manager, KeyManagerOptions::default());
    }

    #[test]
    fn a_config_path_that_is_not_a_regular_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("admin.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRUSR).unwrap();
        for path in [dir.path(), Path::new("/dev/zero"), &socket, &fifo] {
            let e = Config::load(path).unwrap_err();
            assert!(matches!(e, ConfigError::NotAFile { .. }), "{e}");
            assert_eq!(e.recovery(), Recovery::Terminal, "{e}");
            assert!(e.to_string().contains("not a regular file"), "{e}");
        }
    }

    #[test]
    fn a_config_file_larger_than_the_cap_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signer.toml");
        let padding = "#".repeat(usize::try_from(MAX_CONFIG_BYTES).unwrap());
        std::fs::write(&path, format!("{padding}\n")).unwrap();
        assert!(matches!(
            Config::load(&path),
            Err(ConfigError::TooLarge { .. })
        ));
    }

    /// The identity public key of cluster seat `i`, as hex.
    fn key_hex(i: u8) -> String {
        let key = ed25519_dalek::SigningKey::from_bytes(&[i; 32]).verifying_key();
        hex::encode(key.to_bytes())
    }

    fn key(i: u8) -> IdentityKey {
        IdentityKey::from_bytes(
            ed25519_dalek::SigningKey::from_bytes(&[i; 32])
                .verifying_key()
                .to_bytes(),
        )
        .unwrap()
    }

    fn seat(n: u16) -> Seat {
        Seat::try_from(n).unwrap()
    }

    /// A P2WSH address (of an empty script) on `network`.
    fn address(network: bitcoin::Network) -> String {
        bitcoin::Address::p2wsh(&bitcoin::ScriptBuf::new(), network).to_string()
    }

    /// A valid file for member 2 of a 4-member regtest cluster: "treasury"
    /// (2 of cluster seats 4, 2, 1, with a policy and a successor) and
    /// "reserve" (3 of seats 1, 2, 3).
    fn valid() -> String {
        let members: String = (1..=4u8)
            .map(|i| {
                format!(
                    "[[members]]\nseat = {i}\nidentity = \"{}\"\n\
                     tls_key_sha256 = \"{}\"\nendpoint = \"127.0.0.1:740{i}\"\n\n",
                    key_hex(i),
                    hex::encode([i; 32])
                )
            })
            .collect();
        format!(
            "network = \"regtest\"\nmember = 2\n\n[store]\ndata_dir = \"state\"\n\n{PROVIDER}\n\
             [daemon]\nlisten = \"127.0.0.1:7502\"\nmetrics_listen = \"127.0.0.1:9402\"\n\
             cluster = \"vault\"\n\n[daemon.tls]\nca_cert = \"tls/ca.pem\"\n\
             cert = \"tls/signer.pem\"\nkey = \"tls/signer.key\"\n\n{members}\
             [[wallets]]\nid = \"treasury\"\nthreshold = 2\nmembers = [4, 2, 1]\n\
             successor = \"reserve\"\n\n[wallets.policy]\ndestinations = [\"{}\"]\n\n\
             [[wallets]]\nid = \"reserve\"\nthreshold = 3\nmembers = [1, 2, 3]\n",
            address(bitcoin::Network::Regtest)
        )
    }

    /// [`valid`] with `from` (which must occur) replaced by `to`.
    fn edited(from: &str, to: &str) -> String {
        let text = valid();
        assert!(text.contains(from), "the fixture has no {from:?}");
        text.replacen(from, to, 1)
    }

    /// The field an [`ConfigError::Invalid`] names.
    fn invalid_field(text: &str) -> String {
        match parse(text) {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn the_dkg_session_ttl_is_read_from_the_signer_table_and_bounded() {
        let node = parse(&valid()).unwrap().node.unwrap();
        assert_eq!(
            node.signer_config().limits.dkg_session_ttl,
            Duration::from_secs(600)
        );
        let text = edited(
            "[[wallets]]",
            "[signer]\ndkg_session_ttl_secs = 45\n\n[[wallets]]",
        );
        let node = parse(&text).unwrap().node.unwrap();
        assert_eq!(
            node.signer_config().limits.dkg_session_ttl,
            Duration::from_secs(45)
        );
        for value in ["0", "86401"] {
            let text = edited(
                "[[wallets]]",
                &format!("[signer]\ndkg_session_ttl_secs = {value}\n\n[[wallets]]"),
            );
            assert_eq!(
                invalid_field(&text),
                "signer.dkg_session_ttl_secs",
                "{value}"
            );
        }
    }

    #[test]
    fn a_full_member_file_loads_with_wallet_seats_identities_and_policy() {
        let config = parse(&valid()).unwrap();
        let node = config.node.unwrap();
        assert_eq!(node.network, Network::Regtest);
        assert_eq!(node.member, seat(2));
        assert_eq!(node.identity, key(2));
        assert_eq!(node.members.len(), 4);
        for i in 1..=4u8 {
            let m = &node.members[&seat(u16::from(i))];
            assert_eq!(m.identity, key(i));
            assert_eq!(m.endpoint, format!("127.0.0.1:740{i}").parse().unwrap());
        }
        let treasury = node.wallet(&WalletId::new("treasury").unwrap()).unwrap();
        assert_eq!(treasury.seats, vec![seat(4), seat(2), seat(1)]);
        // Wallet seat i is cluster seat members[i - 1], identity included.
        assert_eq!(treasury.cluster_seat(seat(1)), Some(seat(4)));
        assert_eq!(treasury.cluster_seat(seat(3)), Some(seat(1)));
        assert_eq!(treasury.cluster_seat(seat(4)), None);
        assert_eq!(treasury.config.roster, vec![key(4), key(2), key(1)]);
        assert_eq!(treasury.config.threshold, 2);
        assert_eq!(
            treasury.config.policy.destinations,
            vec![address(bitcoin::Network::Regtest)]
        );
        assert_eq!(
            treasury.config.successor,
            Some(WalletId::new("reserve").unwrap())
        );
        let reserve = node.wallet(&WalletId::new("reserve").unwrap()).unwrap();
        assert_eq!(reserve.config.roster, vec![key(1), key(2), key(3)]);
        assert_eq!(reserve.config.policy, PolicyConfig::default());
        let daemon = node.daemon.as_ref().unwrap();
        assert_eq!(daemon.cluster.as_str(), "vault");
        assert_eq!(
            daemon.tls.cert,
            PathBuf::from("/etc/thresig/tls/signer.pem")
        );
        assert!(node.signer_config().validate().is_ok());
    }

    #[test]
    fn member_connections_below_the_roster_times_the_seat_cap_are_refused() {
        let limits = |total: u32| {
            edited(
                "key = \"tls/signer.key\"\n",
                &format!(
                    "key = \"tls/signer.key\"\n\n[daemon.limits]\n\
                     max_member_connections = {total}\nmax_connections_per_seat = 2\n"
                ),
            )
        };
        // Four members at two connections each need eight places.
        assert_eq!(
            invalid_field(&limits(7)),
            "daemon.limits.max_member_connections"
        );
        let node = parse(&limits(8)).unwrap().node.unwrap();
        assert_eq!(node.daemon.unwrap().limits.max_member_connections, 8);
    }

    #[test]
    fn a_member_missing_from_the_roster_is_refused() {
        assert_eq!(invalid_field(&edited("member = 2", "member = 5")), "member");
    }

    #[test]
    fn a_duplicate_seat_is_refused() {
        let text = edited("seat = 3", "seat = 1");
        assert_eq!(invalid_field(&text), "members.seat");
    }

    #[test]
    fn a_duplicate_identity_is_refused() {
        let text = edited(&key_hex(3), &key_hex(1));
        assert_eq!(invalid_field(&text), "members.identity");
    }

    #[test]
    fn a_duplicate_endpoint_is_refused() {
        let text = edited("127.0.0.1:7403", "127.0.0.1:7401");
        assert_eq!(invalid_field(&text), "members.endpoint");
    }

    #[test]
    fn a_wallet_naming_an_unknown_seat_is_refused() {
        let text = edited("members = [4, 2, 1]", "members = [5, 2, 1]");
        assert_eq!(invalid_field(&text), "wallets.members");
        let text = edited("members = [4, 2, 1]", "members = [0, 2, 1]");
        assert_eq!(invalid_field(&text), "wallets.members");
    }

    #[test]
    fn a_wallet_naming_a_seat_twice_is_refused() {
        let text = edited("members = [4, 2, 1]", "members = [4, 2, 2]");
        assert_eq!(invalid_field(&text), "wallets.members");
    }

    #[test]
    fn a_wallet_without_this_member_is_refused() {
        let text = edited("members = [1, 2, 3]", "members = [1, 3, 4]");
        assert_eq!(invalid_field(&text), "wallets.members");
    }

    #[test]
    fn a_threshold_out_of_range_is_refused() {
        for threshold in ["0", "1", "4", "65535"] {
            let text = edited("threshold = 2", &format!("threshold = {threshold}"));
            assert_eq!(
                invalid_field(&text),
                "wallets.threshold",
                "threshold {threshold}"
            );
        }
    }

    #[test]
    fn a_policy_destination_of_another_network_is_refused() {
        let text = edited(
            &address(bitcoin::Network::Regtest),
            &address(bitcoin::Network::Bitcoin),
        );
        let e = parse(&text).unwrap_err();
        assert!(
            matches!(&e, ConfigError::Invalid { field, problem, .. }
                if field == "wallets.policy" && problem.contains("destinations[0]")),
            "{e}"
        );
        // The refused address is not quoted.
        assert!(!e.to_string().contains("bc1"), "{e}");
    }

    /// Unknown fields are refused by the parser, so they are a
    /// [`ConfigError::Parse`] naming the field and its line, not `Invalid`.
    #[test]
    fn an_unknown_field_in_members_is_refused_naming_it() {
        let text = edited("seat = 3\n", "seat = 3\nport = 7403\n");
        let line = text.lines().position(|l| l == "port = 7403").unwrap() + 1;
        let e = parse(&text).unwrap_err();
        assert!(
            matches!(&e, ConfigError::Parse { line: l, message, .. }
                if *l == line && message.contains("unknown field `port`")),
            "{e:?}"
        );
    }

    #[test]
    fn wallets_without_member_are_refused() {
        let text = edited("member = 2\n", "");
        assert_eq!(invalid_field(&text), "member");
    }

    /// The invariants [`NodeConfig`] promises.
    fn assert_node_invariants(node: &NodeConfig) {
        assert_eq!(
            node.members.get(&node.member).unwrap().identity,
            node.identity
        );
        let identities: BTreeSet<_> = node.members.values().map(|m| m.identity).collect();
        let endpoints: BTreeSet<_> = node.members.values().map(|m| m.endpoint).collect();
        assert_eq!(identities.len(), node.members.len());
        assert_eq!(endpoints.len(), node.members.len());
        for w in &node.wallets {
            let distinct: BTreeSet<_> = w.seats.iter().collect();
            assert_eq!(distinct.len(), w.seats.len());
            assert!(w.seats.contains(&node.member));
            let roster: Vec<_> = w.seats.iter().map(|s| node.members[s].identity).collect();
            assert_eq!(roster, w.config.roster);
        }
        assert!(node.signer_config().validate().is_ok());
    }

    /// A mutation of the valid file.
    #[derive(Debug, Clone)]
    enum Mutation {
        /// Remove the chars in `[start, start + len)`.
        Delete(proptest::sample::Index, usize),
        /// Insert text at a char position.
        Insert(proptest::sample::Index, String),
        /// Replace one line with a copy of another.
        CopyLine(proptest::sample::Index, proptest::sample::Index),
        /// Replace one ASCII digit with another.
        Digit(proptest::sample::Index, char),
    }

    fn mutate(text: &str, mutations: &[Mutation]) -> String {
        let mut chars: Vec<char> = text.chars().collect();
        for m in mutations {
            match m {
                Mutation::Delete(at, len) if !chars.is_empty() => {
                    let start = at.index(chars.len());
                    let end = (start + len).min(chars.len());
                    chars.drain(start..end);
                }
                Mutation::Insert(at, s) => {
                    let at = at.index(chars.len() + 1);
                    chars.splice(at..at, s.chars());
                }
                Mutation::CopyLine(to, from) => {
                    let text: String = chars.iter().collect();
                    let mut lines: Vec<&str> = text.lines().collect();
                    if !lines.is_empty() {
                        let from = lines[from.index(lines.len())];
                        let to = to.index(lines.len());
                        lines[to] = from;
                    }
                    chars = lines.join("\n").chars().collect();
                }
                Mutation::Digit(at, d) => {
                    let digits: Vec<usize> = (0..chars.len())
                        .filter(|i| chars[*i].is_ascii_digit())
                        .collect();
                    if !digits.is_empty() {
                        chars[digits[at.index(digits.len())]] = *d;
                    }
                }
                Mutation::Delete(..) => {}
            }
        }
        chars.into_iter().collect()
    }

    fn mutation() -> impl proptest::strategy::Strategy<Value = Mutation> {
        use proptest::prelude::*;
        let index = any::<proptest::sample::Index>;
        prop_oneof![
            (index(), 1..40usize).prop_map(|(a, n)| Mutation::Delete(a, n)),
            (index(), ".{0,12}").prop_map(|(a, s)| Mutation::Insert(a, s)),
            (
                index(),
                prop::sample::select(vec![
                    "\n",
                    "[[members]]\n",
                    "[[wallets]]\n",
                    "\"",
                    "=",
                    "[",
                    "]"
                ])
            )
                .prop_map(|(a, s)| Mutation::Insert(a, s.to_owned())),
            (index(), index()).prop_map(|(a, b)| Mutation::CopyLine(a, b)),
            (index(), prop::char::range('0', '9')).prop_map(|(a, d)| Mutation::Digit(a, d)),
        ]
    }

    /// Whatever the outcome, it is a typed error that displays, or a
    /// configuration that keeps every invariant.
    fn check(text: &str) {
        match parse(text) {
            Ok(config) => {
                if let Some(node) = &config.node {
                    assert_node_invariants(node);
                }
            }
            Err(e) => {
                assert_eq!(e.recovery(), Recovery::Terminal, "{e:?}");
                assert!(e.to_string().contains("signer.toml"), "{e}");
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,400}") {
            check(&text);
        }

        #[test]
        fn mutations_of_a_valid_file_give_a_typed_error_or_a_valid_config(
            mutations in proptest::collection::vec(mutation(), 1..4),
        ) {
            check(&mutate(&valid(), &mutations));
        }
    }
}
