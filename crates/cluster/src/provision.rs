//! Making members and clusters: `thresig init` and `thresig cluster init`.
//!
//! A member directory holds everything one signer needs:
//!
//! ```text
//! member-3/
//!   signer.toml      the configuration (roster, wallets, daemon, store)
//!   kek              the key-encryption key, hex, mode 0600 (the `file`
//!                    provider; production points `[key_provider]` at a KMS)
//!   store/           the encrypted store, holding the sealed identity key
//!   tls/ca.pem       the cluster CA certificate (the only trust anchor)
//!   tls/signer.pem   this member's certificate, naming `seat-3.<cluster>`
//!   tls/signer.key   its private key, mode 0600
//! ```
//!
//! Every secret file is created with its final mode (never widened and then
//! narrowed), and nothing is overwritten: initializing a directory that
//! already holds a member fails.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use rand_core::{CryptoRng, RngCore};
use serde::Serialize;
use thresig_crypto::Seat;
use thresig_daemon::{ClusterCa, ClusterName, Validity};
use thresig_engine::{IdentityKey, WalletId};
use thresig_store::provider::KeyProvider;
use thresig_store::{EncryptedStore, Store as _, WriteOp};
use thresig_tx::{Network, PolicyConfig};
use zeroize::Zeroizing;

use crate::config::Config;
use crate::identity;

/// The configuration file's name in a member directory.
pub const CONFIG_FILE: &str = "signer.toml";

/// How long member certificates are valid. A year, so that certificate
/// renewal is a yearly operator task rather than a surprise; the CA itself
/// gets ten.
const MEMBER_CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The daemons' request timeout: the daemon's default for small clusters,
/// and three seconds per member beyond (see [`ClusterSpec::new`]).
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT_PER_MEMBER: Duration = Duration::from_secs(3);

/// Why provisioning failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisionError {
    /// A file or directory could not be created or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The path already exists and is not an empty directory of ours
    /// (nothing is overwritten, nothing is written through a link).
    #[error(
        "{} already exists and is not an empty directory of this user; refusing to write there",
        path.display()
    )]
    Exists {
        /// The path that exists.
        path: PathBuf,
    },
    /// Certificates could not be made or written.
    #[error("certificates: {0}")]
    Tls(#[from] thresig_daemon::Error),
    /// The store could not be created or the identity key sealed in it.
    #[error("store: {0}")]
    Store(#[from] thresig_store::Error),
    /// The key provider could not be opened.
    #[error("key provider: {0}")]
    Provider(#[from] thresig_store::provider::ProviderError),
    /// The written configuration does not load (a bug, or bad arguments
    /// such as a threshold above the member count).
    #[error("the generated configuration is invalid: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// An argument is out of range.
    #[error("{0}")]
    Argument(String),
    /// Provisioning failed after it began writing into `dir`: running it
    /// again as is finds the directory in use ([`ProvisionError::Exists`]),
    /// so this is terminal whatever the cause, and the message says to
    /// remove the directory first (nothing in it is in use yet).
    #[error(
        "{source}; {} is left partly made: remove it, or empty it (nothing in it is in use yet), then run the command again",
        dir.display()
    )]
    Partial {
        /// The directory provisioning was writing into.
        dir: PathBuf,
        /// What failed.
        #[source]
        source: Box<ProvisionError>,
    },
}

impl ProvisionError {
    /// `self`, which happened after provisioning began writing into `dir`.
    fn partial(self, dir: &Path) -> Self {
        match self {
            // Refused before anything was written there.
            Self::Exists { .. } => self,
            // Name the outermost directory made, which removing cleans all.
            Self::Partial { source, .. } => Self::Partial {
                dir: dir.to_path_buf(),
                source,
            },
            other => Self::Partial {
                dir: dir.to_path_buf(),
                source: Box::new(other),
            },
        }
    }
}

/// A member that [`init_member`] created.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MemberInit {
    /// Its cluster seat.
    pub seat: Seat,
    /// Its identity public key (for the roster).
    pub identity: IdentityKey,
    /// The SHA-256 of its TLS public key (for the roster's pin).
    pub tls_key_sha256: [u8; 32],
    /// Its directory.
    pub dir: PathBuf,
}

/// Creates member `seat`'s directory `dir`: a fresh KEK file, a store with a
/// freshly generated Ed25519 identity key sealed in it, and TLS files from
/// `ca`. Writes a store-only `signer.toml`; [`write_member_config`] later
/// adds the cluster part.
///
/// # Errors
/// [`ProvisionError::Exists`] if `dir` already holds a configuration or
/// store; the I/O, TLS and store errors otherwise.
pub fn init_member(
    dir: &Path,
    seat: Seat,
    ca: &ClusterCa,
    now: SystemTime,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<MemberInit, ProvisionError> {
    fresh_dir(dir)?;
    fill_member(dir, seat, ca, now, rng).map_err(|e| e.partial(dir))
}

/// [`init_member`] after `dir` was made (or found empty and ours).
fn fill_member(
    dir: &Path,
    seat: Seat,
    ca: &ClusterCa,
    now: SystemTime,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<MemberInit, ProvisionError> {
    fresh_dir(&dir.join("tls"))?;
    let mut kek = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(kek.as_mut());
    write_new(
        &dir.join("kek"),
        Zeroizing::new(hex::encode(kek.as_slice())).as_bytes(),
        0o600,
    )?;
    let config_path = dir.join(CONFIG_FILE);
    write_new(&config_path, store_section(dir)?.as_bytes(), 0o600)?;
    let config = Config::load(&config_path)?;
    let provider: Arc<dyn KeyProvider> = Arc::new(config.key_provider.open()?);
    // The one place a store is created; every later start opens it.
    let store = EncryptedStore::create(config.location(), provider, config.options.clone())?;
    let key = ed25519_dalek::SigningKey::generate(rng);
    store.write(vec![WriteOp::PutMeta {
        name: identity::meta_name(),
        value: Zeroizing::new(key.to_bytes().to_vec()).into(),
    }])?;
    store.shutdown();
    let identity = IdentityKey::from_bytes(key.verifying_key().to_bytes())
        .map_err(|e| ProvisionError::Argument(e.to_string()))?;
    let member = ca.issue_member(seat, Validity::starting(now, MEMBER_CERT_LIFETIME))?;
    member.write(&dir.join("tls/signer.pem"), &dir.join("tls/signer.key"))?;
    write_new(&dir.join("tls/ca.pem"), ca.cert_pem().as_bytes(), 0o644)?;
    Ok(MemberInit {
        seat,
        identity,
        tls_key_sha256: member.key_fingerprint(),
        dir: dir.to_path_buf(),
    })
}

/// What `thresig cluster init` makes.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClusterSpec {
    /// The cluster's name (in certificate names).
    pub name: ClusterName,
    /// The network of its wallets.
    pub network: Network,
    /// Each member's gRPC and metrics addresses, seat 1 first.
    pub endpoints: Vec<(SocketAddr, SocketAddr)>,
    /// The wallet every member joins.
    pub wallet: WalletId,
    /// Its threshold.
    pub threshold: u16,
    /// Its signing policy (by default no external destination).
    pub policy: PolicyConfig,
    /// How long a member's daemon may take to answer one request
    /// (`[daemon.limits] request_timeout_ms`); see [`ClusterSpec::new`].
    pub request_timeout: Duration,
}

impl ClusterSpec {
    /// A spec with these members' `(gRPC, metrics)` addresses, seat 1
    /// first, and a policy that allows no external destination.
    ///
    /// The daemons' request timeout grows with the cluster: a member's DKG
    /// part 3 checks a package from every other member, and a whole local
    /// cluster shares one machine's cores, so a hundred members on two cores
    /// need minutes where five need milliseconds.
    #[must_use]
    pub fn new(
        name: ClusterName,
        network: Network,
        endpoints: Vec<(SocketAddr, SocketAddr)>,
        wallet: WalletId,
        threshold: u16,
    ) -> Self {
        let members = endpoints.len();
        Self {
            name,
            network,
            endpoints,
            wallet,
            threshold,
            policy: PolicyConfig::default(),
            request_timeout: REQUEST_TIMEOUT_PER_MEMBER
                .saturating_mul(u32::try_from(members).unwrap_or(u32::MAX))
                .max(MIN_REQUEST_TIMEOUT),
        }
    }

    /// A spec for `members` signers on loopback from `base_port` (signer
    /// `i` at `base_port + i`, its metrics at `base_port + 1000 + i`).
    ///
    /// # Errors
    /// [`ProvisionError::Argument`] if a port would exceed 65535.
    pub fn loopback(
        name: ClusterName,
        network: Network,
        members: u16,
        base_port: u16,
        wallet: WalletId,
        threshold: u16,
    ) -> Result<Self, ProvisionError> {
        let port = |offset: u16, i: u16| {
            base_port
                .checked_add(offset)
                .and_then(|p| p.checked_add(i))
                .ok_or_else(|| {
                    ProvisionError::Argument(format!(
                        "--base-port {base_port} leaves no room for {members} members"
                    ))
                })
        };
        let endpoints = (1..=members)
            .map(|i| {
                let grpc = SocketAddr::from(([127, 0, 0, 1], port(0, i)?));
                let metrics = SocketAddr::from(([127, 0, 0, 1], port(1000, i)?));
                Ok((grpc, metrics))
            })
            .collect::<Result<_, ProvisionError>>()?;
        Ok(Self::new(name, network, endpoints, wallet, threshold))
    }
}

/// The directory of member `seat` in a cluster directory.
#[must_use]
pub fn member_dir(cluster_dir: &Path, seat: Seat) -> PathBuf {
    cluster_dir.join(format!("member-{seat}"))
}

/// Creates a cluster in `dir`: the CA (`dir/ca/`), and one member directory
/// per endpoint ([`init_member`]), each with a configuration holding the
/// shared roster and the wallet. Returns the members in seat order.
///
/// # Errors
/// As [`init_member`]; [`ProvisionError::Argument`] for fewer than two
/// members or a threshold outside `2..=members`.
pub fn init_cluster(
    dir: &Path,
    spec: &ClusterSpec,
    now: SystemTime,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Vec<MemberInit>, ProvisionError> {
    let n = spec.endpoints.len();
    if n < 2 || usize::from(spec.threshold) > n || spec.threshold < 2 {
        return Err(ProvisionError::Argument(format!(
            "a cluster needs at least 2 members and a threshold in 2..={n} (got {})",
            spec.threshold
        )));
    }
    fresh_dir(dir)?;
    fill_cluster(dir, spec, now, rng).map_err(|e| e.partial(dir))
}

/// The `max_member_connections` line a cluster of `members` needs, if the
/// default is too small: every member may hold the default per-seat number
/// of connections, and a configuration whose total is below that is
/// refused at load (the default 256 fits 32 members).
fn member_connections(members: usize) -> String {
    let defaults = thresig_daemon::LimitsSection::default();
    let per_seat = usize::try_from(defaults.max_connections_per_seat).unwrap_or(usize::MAX);
    let needed = members.saturating_mul(per_seat);
    if u64::try_from(needed).unwrap_or(u64::MAX) > defaults.max_member_connections {
        format!("max_member_connections = {needed}\n")
    } else {
        String::new()
    }
}

/// [`init_cluster`] after `dir` was made (or found empty and ours).
fn fill_cluster(
    dir: &Path,
    spec: &ClusterSpec,
    now: SystemTime,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Vec<MemberInit>, ProvisionError> {
    let n = spec.endpoints.len();
    fresh_dir(&dir.join("ca"))?;
    let ca = ClusterCa::generate(spec.name.clone(), Validity::starting(now, CA_LIFETIME))?;
    ca.write(&dir.join("ca/ca.pem"), &dir.join("ca/ca.key"))?;
    let mut members = Vec::with_capacity(n);
    for number in 1..=n {
        let seat = u16::try_from(number)
            .ok()
            .and_then(|s| Seat::try_from(s).ok())
            .ok_or_else(|| ProvisionError::Argument(format!("{n} members is too many")))?;
        members.push(init_member(&member_dir(dir, seat), seat, &ca, now, rng)?);
    }
    for member in &members {
        write_member_config(member, &members, spec)?;
    }
    Ok(members)
}

/// Writes `member`'s full configuration: its store section, the network,
/// the roster of `all`, the wallet of `spec` (every member, seat order),
/// and its daemon section. Replaces the store-only file of
/// [`init_member`], then loads it back to check it.
///
/// # Errors
/// I/O errors, and [`ProvisionError::Config`] if the result does not load.
pub fn write_member_config(
    member: &MemberInit,
    all: &[MemberInit],
    spec: &ClusterSpec,
) -> Result<(), ProvisionError> {
    let endpoint = |seat: Seat| {
        spec.endpoints
            .get(usize::from(seat.get()) - 1)
            .copied()
            .ok_or_else(|| ProvisionError::Argument(format!("no endpoint for seat {seat}")))
    };
    let (listen, metrics) = endpoint(member.seat)?;
    let mut text = format!(
        "# thresig signer {seat} of cluster {cluster}.\n\
         network = \"{network}\"\n\
         member = {seat}\n\n{store}\n\
         [daemon]\n\
         listen = \"{listen}\"\n\
         metrics_listen = \"{metrics}\"\n\
         cluster = \"{cluster}\"\n\n\
         [daemon.tls]\n\
         ca_cert = \"tls/ca.pem\"\n\
         cert = \"tls/signer.pem\"\n\
         key = \"tls/signer.key\"\n\n\
         [daemon.limits]\n\
         request_timeout_ms = {timeout}\n{connections}",
        timeout = spec.request_timeout.as_millis(),
        connections = member_connections(all.len()),
        seat = member.seat,
        cluster = spec.name.as_str(),
        network = spec.network.as_str(),
        store = store_section(&member.dir)?,
    );
    let roster = Roster {
        members: all
            .iter()
            .map(|m| {
                Ok(MemberEntry {
                    seat: m.seat.get(),
                    identity: hex::encode(m.identity.to_bytes()),
                    tls_key_sha256: hex::encode(m.tls_key_sha256),
                    endpoint: endpoint(m.seat)?.0,
                })
            })
            .collect::<Result<_, ProvisionError>>()?,
        wallets: vec![WalletEntry {
            id: spec.wallet.as_str(),
            threshold: spec.threshold,
            members: all.iter().map(|m| m.seat.get()).collect(),
            policy: &spec.policy,
        }],
    };
    text.push('\n');
    text.push_str(
        &toml::to_string(&roster)
            .map_err(|e| ProvisionError::Argument(format!("rendering the roster: {e}")))?,
    );
    let path = member.dir.join(CONFIG_FILE);
    replace_file(&path, text.as_bytes())?;
    Config::load(&path)?;
    Ok(())
}

/// The `[[members]]` and `[[wallets]]` tables as written.
#[derive(Serialize)]
struct Roster<'a> {
    members: Vec<MemberEntry>,
    wallets: Vec<WalletEntry<'a>>,
}

#[derive(Serialize)]
struct MemberEntry {
    seat: u16,
    identity: String,
    tls_key_sha256: String,
    endpoint: SocketAddr,
}

#[derive(Serialize)]
struct WalletEntry<'a> {
    id: &'a str,
    threshold: u16,
    members: Vec<u16>,
    policy: &'a PolicyConfig,
}

/// The store and key-provider sections of the member in `dir`: its store
/// beside the file, and its KEK file by absolute path (a key provider's
/// paths are taken as given, not from the configuration's directory).
fn store_section(dir: &Path) -> Result<String, ProvisionError> {
    let kek = std::path::absolute(dir.join("kek")).map_err(|source| ProvisionError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let kek = toml::Value::String(kek.display().to_string());
    Ok(format!(
        "[store]\ndata_dir = \"store\"\n\n[key_provider]\nkind = \"file\"\npath = {kek}\n"
    ))
}

/// Makes `path` an empty directory of mode 0700 owned by us: creates it
/// (its parents as needed), or takes an existing one only if it is a real
/// directory of ours that is empty once its mode is tightened. The checks
/// and the `chmod` act on the opened directory (`O_NOFOLLOW`), so a symbolic
/// link swapped in is refused, not followed. Nothing is written into a
/// directory that already holds files. (Parents are the operator's: a
/// parent that others may write to is not defended against.)
fn fresh_dir(path: &Path) -> Result<(), ProvisionError> {
    let io = |source| ProvisionError::Io {
        path: path.to_path_buf(),
        source,
    };
    let exists = || ProvisionError::Exists {
        path: path.to_path_buf(),
    };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(parent)
                    .map_err(io)?;
            }
            DirBuilder::new().mode(0o700).create(path).map_err(io)
        }
        Err(e) => Err(io(e)),
        Ok(_) => {
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let dir = nix::fcntl::open(path, flags, Mode::empty()).map_err(|_| exists())?;
            let stat = nix::sys::stat::fstat(&dir).map_err(|e| io(e.into()))?;
            if stat.st_uid != nix::unistd::geteuid().as_raw() {
                return Err(exists());
            }
            nix::sys::stat::fchmod(&dir, Mode::S_IRWXU).map_err(|e| io(e.into()))?;
            // Emptiness is checked after the mode is ours alone, so nothing
            // can be added between the check and the first write.
            let empty = std::fs::read_dir(path).map_err(io)?.next().is_none();
            if empty { Ok(()) } else { Err(exists()) }
        }
    }
}

/// Creates `path` with `mode` from the start; fails if it exists.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), ProvisionError> {
    let io = |source| ProvisionError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Replaces `path` atomically (write a sibling, fsync, rename).
fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), ProvisionError> {
    let temp = path.with_extension("toml.new");
    let _ = std::fs::remove_file(&temp);
    write_new(&temp, bytes, 0o600)?;
    std::fs::rename(&temp, path).map_err(|source| ProvisionError::Io {
        path: path.to_path_buf(),
        source,
    })
}
