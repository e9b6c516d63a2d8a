//! The `[daemon]` configuration section: parsed once at startup with unknown
//! fields refused, then validated into typed values. Nothing below this
//! module reads the environment or raw configuration strings.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{ConfigProblem, Error};
use crate::ids::ClusterName;
use crate::tls::TlsPins;

/// The `[daemon]` table as written in the signer's configuration file.
///
/// The CLI embeds it in its own file type (as a `daemon` field) and hands it
/// to [`DaemonConfig::from_section`]; unknown fields are refused here and in
/// the nested tables.
///
/// ```toml
/// [daemon]
/// listen = "127.0.0.1:7401"
/// metrics_listen = "127.0.0.1:9401"
/// cluster = "demo"
///
/// [daemon.tls]
/// ca_cert = "tls/ca.pem"
/// cert = "tls/signer.pem"
/// key = "tls/signer.key"
///
/// [daemon.limits]
/// max_request_bytes = 4194304
/// max_concurrent_requests = 64
/// request_timeout_ms = 30000
/// max_pending_handshakes = 256
/// max_handshakes_per_source = 32
/// handshake_timeout_ms = 5000
/// max_member_connections = 256
/// max_connections_per_seat = 8
/// max_metrics_connections = 16
/// max_round1_inputs_per_second = 1024
/// max_requests_per_second_per_seat = 1000
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DaemonSection {
    /// The gRPC address (the CLI binds it).
    pub listen: SocketAddr,
    /// The Prometheus metrics address (plain HTTP; must be loopback).
    pub metrics_listen: SocketAddr,
    /// A Unix socket that also serves metrics, reachable only by the
    /// signer's user (its directory must be closed to group and others).
    #[serde(default)]
    pub metrics_socket: Option<PathBuf>,
    /// The cluster name in members' certificate names (`seat-<n>.<cluster>`).
    pub cluster: String,
    /// TLS files.
    pub tls: TlsSection,
    /// Limits; each has a default.
    #[serde(default)]
    pub limits: LimitsSection,
}

/// The `[daemon.tls]` table: paths, relative to the configuration file's
/// directory unless absolute.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TlsSection {
    /// The cluster CA certificate (PEM), the only trust anchor.
    pub ca_cert: PathBuf,
    /// This member's certificate (PEM).
    pub cert: PathBuf,
    /// This member's private key (PEM, mode 0600 or stricter).
    pub key: PathBuf,
}

/// The `[daemon.limits]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct LimitsSection {
    /// Largest encoded request accepted, in bytes.
    pub max_request_bytes: u64,
    /// Requests handled at once across all connections.
    pub max_concurrent_requests: u64,
    /// Time a request may take, waiting for a slot included, in milliseconds.
    pub request_timeout_ms: u64,
    // Connection limits (see docs/daemon.md, "Connection limits").
    /// TLS handshakes in progress at once, from anyone; the oldest is
    /// dropped to make room.
    pub max_pending_handshakes: u64,
    /// TLS handshakes in progress at once from one IP address; that
    /// address's oldest is dropped to make room.
    pub max_handshakes_per_source: u64,
    /// Time a TLS handshake may take, in milliseconds.
    pub handshake_timeout_ms: u64,
    /// Authenticated members' connections held at once; the oldest is
    /// dropped to make room.
    pub max_member_connections: u64,
    /// Connections one seat may hold; the seat's oldest is dropped to make
    /// room.
    pub max_connections_per_seat: u64,
    /// Metrics connections held at once; the oldest is dropped to make room.
    pub max_metrics_connections: u64,
    // Request memory limits (see docs/daemon.md, "Limits").
    /// Requests one member may have queued or in flight at once; unset, 8
    /// or half of `max_concurrent_requests` if less (never more than half,
    /// so `max_concurrent_requests` must be at least 2).
    pub max_requests_per_seat: Option<u64>,
    /// Signing requests (round 1, round 2, abort) one member may have
    /// running at once on one wallet; unset, 4 or `max_requests_per_seat`
    /// if less (never more). Its other requests on a wallet run one at a
    /// time.
    pub max_signing_requests_per_seat_per_wallet: Option<u64>,
    /// HTTP/2 streams one connection may have open at once.
    pub max_streams_per_connection: u64,
    /// Time to receive a request's body once its slot is taken, in
    /// milliseconds.
    pub body_timeout_ms: u64,
    /// Request bytes received and not yet answered, across all connections;
    /// one member may hold at most half.
    pub max_in_flight_bytes: u64,
    /// Round-1 nonces (one per input) one member may have drawn per second,
    /// sustained; a burst of one second's worth, or of one round 1 at the
    /// input limit if more, is allowed.
    pub max_round1_inputs_per_second: u64,
    /// Requests one member may send per second, sustained (a second's
    /// worth at once); beyond that its requests wait their turn.
    pub max_requests_per_second_per_seat: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            // A 100-input PSBT with 100 signing packages of 51 commitments
            // each is about 1 MiB; 4 MiB leaves room without letting one
            // peer make the signer buffer unbounded data.
            max_request_bytes: 4 * 1024 * 1024,
            // Enough to keep two cores busy with signing math while bounding
            // the blocking threads the store and engine may occupy.
            max_concurrent_requests: 64,
            // A round-2 commit waits for one group-commit fsync; 30 s is far
            // above that and below a coordinator's patience.
            request_timeout_ms: 30_000,
            // Connection limits. Handshakes are budgeted apart from
            // members' connections, so strangers never take a member's
            // place; together with the members' and metrics' budgets they
            // fit in the 1024 descriptors a service manager gives by
            // default (see `conn::descriptors_needed`).
            max_pending_handshakes: 256,
            // One source holds at most an eighth of the handshake budget.
            max_handshakes_per_source: 32,
            // A TLS 1.3 handshake takes two round trips; 5 s covers slow
            // links while a silent peer's slot is soon reused.
            handshake_timeout_ms: 5_000,
            // A coordinating process holds one connection per signer, so 8
            // per seat leaves room for concurrent commands and reconnects;
            // 256 fits 32 members at that cap.
            max_member_connections: 256,
            max_connections_per_seat: 8,
            // A scrape takes one connection for a moment.
            max_metrics_connections: 16,
            max_requests_per_seat: None,
            max_signing_requests_per_seat_per_wallet: None,
            // An honest coordinator has a few calls at a time open to one
            // signer; hyper's own default (200) lets one connection park
            // 200 bodies.
            max_streams_per_connection: 32,
            // A 4 MiB body arrives in well under a second on any link a
            // signer should be on; 10 s bounds how long a trickled body
            // holds its slot.
            body_timeout_ms: 10_000,
            // Sixteen 4 MiB round-2 requests at once, far above what a
            // cluster's coordinators send together.
            max_in_flight_bytes: 64 * 1024 * 1024,
            // Drawing a nonce pair costs about 0.1 ms of CPU: 1024 a second
            // is a tenth of a core, while one coordinator signing one-input
            // transactions as fast as a 2-core cluster can (about 300 a
            // second) uses under a third of it.
            max_round1_inputs_per_second: 1024,
            // A signing run sends a member two or three requests, so 1000 a
            // second keeps up with the fastest coordinator measured (300
            // signatures a second on 2 cores, release build), while a flood
            // of cheap requests is held to a tenth of a core or so.
            max_requests_per_second_per_seat: 1000,
        }
    }
}

/// Hard upper bounds on the limits, so a typo cannot disable them.
/// The largest `limits.max_request_bytes` a signer accepts: no request a
/// signer answers is larger (public so that files holding one, such as
/// blame proofs, can be bounded by it).
pub const MAX_REQUEST_BYTES: u64 = 64 * 1024 * 1024;
const MAX_CONCURRENT: u64 = 4096;
const MAX_TIMEOUT_MS: u64 = 10 * 60 * 1000;
const MAX_CONNECTIONS: u64 = 65_536;
const MAX_HANDSHAKE_TIMEOUT_MS: u64 = 60_000;
const MAX_STREAMS: u64 = 1024;

/// A coordinator has one call at a time open to a signer in each signing
/// run (ROAST waits for every answer), so eight allow eight runs at once
/// (what `thresig load --concurrency 8` drives). On one wallet, its turns
/// there (below) bound how many of its requests run there at once.
const DEFAULT_REQUESTS_PER_SEAT: usize = 8;
/// The engine holds a wallet's lock for a round's CPU work only, not while
/// a round 2 waits for its marker's commit, so a coordinator's round 2s
/// on one wallet overlap and share the store's group commits (measured
/// with `thresig load --concurrency 8`: 315 to 365 signatures a second,
/// where one turn per member and wallet put one unit in every commit).
/// Another member's request then waits behind the short CPU-only lock
/// holds of at most this many of one member's requests (each takes the
/// lock two or more times, and the lock is not first come, first served),
/// and the nonce rate, not behind their commits.
const DEFAULT_SIGNING_REQUESTS_PER_SEAT_PER_WALLET: usize = 4;
const MAX_IN_FLIGHT_BYTES: u64 = 1024 * 1024 * 1024;
/// The largest rate of `max_round1_inputs_per_second` and
/// `max_requests_per_second_per_seat` (one a microsecond).
const MAX_PER_SECOND: u64 = 1_000_000;

/// The validated daemon configuration.
///
/// # Invariants
/// Every limit is positive and within its bound; the metrics address is
/// loopback and differs from the gRPC address; paths are non-empty and
/// resolved against the configuration file's directory.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DaemonConfig {
    /// The gRPC address.
    pub listen: SocketAddr,
    /// The metrics address (loopback).
    pub metrics_listen: SocketAddr,
    /// The owner-only Unix socket that also serves metrics, if any.
    pub metrics_socket: Option<PathBuf>,
    /// The cluster name.
    pub cluster: ClusterName,
    /// TLS files.
    pub tls: TlsPaths,
    /// Limits.
    pub limits: Limits,
    /// Each member's pinned TLS key. `None` (what a parsed `[daemon]`
    /// section gives) trusts every certificate the cluster CA issued for a
    /// seat; a member's full configuration sets the pins of its roster, so
    /// that holding the CA key does not let anyone act as another seat.
    pub pins: Option<TlsPins>,
}

/// Resolved TLS file paths.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsPaths {
    /// The cluster CA certificate.
    pub ca_cert: PathBuf,
    /// This member's certificate.
    pub cert: PathBuf,
    /// This member's private key.
    pub key: PathBuf,
}

impl TlsPaths {
    /// Paths of a member's TLS files.
    #[must_use]
    pub fn new(ca_cert: PathBuf, cert: PathBuf, key: PathBuf) -> Self {
        Self { ca_cert, cert, key }
    }
}

/// Validated limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest encoded request, in bytes.
    pub max_request_bytes: usize,
    /// Requests handled at once.
    pub max_concurrent_requests: usize,
    /// Time a request may take.
    pub request_timeout: Duration,
    // Connection limits.
    /// TLS handshakes in progress at once.
    pub max_pending_handshakes: usize,
    /// TLS handshakes in progress at once from one IP address.
    pub max_handshakes_per_source: usize,
    /// Time a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// Authenticated connections held at once.
    pub max_member_connections: usize,
    /// Authenticated connections one seat may hold.
    pub max_connections_per_seat: usize,
    /// Metrics connections held at once.
    pub max_metrics_connections: usize,
    /// Requests one member may have queued or in flight.
    pub max_requests_per_seat: usize,
    /// Signing requests one member may have running at once on one
    /// wallet; at most `max_requests_per_seat`.
    pub max_signing_requests_per_seat_per_wallet: usize,
    /// HTTP/2 streams per connection.
    pub max_streams_per_connection: u32,
    /// Time to receive a request's body once its slot is taken.
    pub body_timeout: Duration,
    /// Request bytes in flight across all connections; at least twice
    /// `max_request_bytes`, so that one member's share (half) holds a
    /// request of the largest size.
    pub max_in_flight_bytes: usize,
    /// Round-1 nonces one member may have drawn per second, sustained.
    pub max_round1_inputs_per_second: u32,
    /// Requests one member may send per second, sustained.
    pub max_requests_per_second_per_seat: u32,
}

impl Limits {
    /// Validates a `[limits]` table: every value positive and within its
    /// hard bound, and each per-source or per-seat cap within its total.
    pub(crate) fn from_section(l: LimitsSection) -> Result<Self, Error> {
        let bad = |field, problem| Error::ConfigValue { field, problem };
        let max_concurrent_requests = bounded_size(
            "limits.max_concurrent_requests",
            l.max_concurrent_requests,
            MAX_CONCURRENT,
        )?;
        // At most half of the slots, so that one member never holds
        // them all: a single slot is refused.
        let max_requests_per_seat = match l.max_requests_per_seat {
            _ if max_concurrent_requests < 2 => {
                return Err(bad(
                    "limits.max_concurrent_requests",
                    ConfigProblem::BelowTwice {
                        other: "limits.max_requests_per_seat",
                        min: 2,
                    },
                ));
            }
            Some(per_seat) => bounded_size(
                "limits.max_requests_per_seat",
                per_seat,
                l.max_concurrent_requests / 2,
            )?,
            None => DEFAULT_REQUESTS_PER_SEAT.min(max_concurrent_requests / 2),
        };
        let limits = Self {
            max_request_bytes: bounded_size(
                "limits.max_request_bytes",
                l.max_request_bytes,
                MAX_REQUEST_BYTES,
            )?,
            max_concurrent_requests,
            request_timeout: Duration::from_millis(bounded(
                "limits.request_timeout_ms",
                l.request_timeout_ms,
                MAX_TIMEOUT_MS,
            )?),
            max_pending_handshakes: bounded_size(
                "limits.max_pending_handshakes",
                l.max_pending_handshakes,
                MAX_CONNECTIONS,
            )?,
            max_handshakes_per_source: bounded_size(
                "limits.max_handshakes_per_source",
                l.max_handshakes_per_source,
                l.max_pending_handshakes,
            )?,
            handshake_timeout: Duration::from_millis(bounded(
                "limits.handshake_timeout_ms",
                l.handshake_timeout_ms,
                MAX_HANDSHAKE_TIMEOUT_MS,
            )?),
            max_member_connections: bounded_size(
                "limits.max_member_connections",
                l.max_member_connections,
                MAX_CONNECTIONS,
            )?,
            max_connections_per_seat: bounded_size(
                "limits.max_connections_per_seat",
                l.max_connections_per_seat,
                l.max_member_connections,
            )?,
            max_metrics_connections: bounded_size(
                "limits.max_metrics_connections",
                l.max_metrics_connections,
                MAX_CONNECTIONS,
            )?,
            max_requests_per_seat,
            max_signing_requests_per_seat_per_wallet: match l
                .max_signing_requests_per_seat_per_wallet
            {
                Some(per_wallet) => bounded_size(
                    "limits.max_signing_requests_per_seat_per_wallet",
                    per_wallet,
                    u64::try_from(max_requests_per_seat).unwrap_or(u64::MAX),
                )?,
                None => DEFAULT_SIGNING_REQUESTS_PER_SEAT_PER_WALLET.min(max_requests_per_seat),
            },
            max_streams_per_connection: bounded_u32(
                "limits.max_streams_per_connection",
                l.max_streams_per_connection,
                MAX_STREAMS,
            )?,
            body_timeout: Duration::from_millis(bounded(
                "limits.body_timeout_ms",
                l.body_timeout_ms,
                MAX_TIMEOUT_MS,
            )?),
            max_in_flight_bytes: bounded_size(
                "limits.max_in_flight_bytes",
                l.max_in_flight_bytes,
                MAX_IN_FLIGHT_BYTES,
            )?,
            max_round1_inputs_per_second: bounded_u32(
                "limits.max_round1_inputs_per_second",
                l.max_round1_inputs_per_second,
                MAX_PER_SECOND,
            )?,
            max_requests_per_second_per_seat: bounded_u32(
                "limits.max_requests_per_second_per_seat",
                l.max_requests_per_second_per_seat,
                MAX_PER_SECOND,
            )?,
        };
        if l.max_in_flight_bytes / 2 < l.max_request_bytes {
            return Err(bad(
                "limits.max_in_flight_bytes",
                ConfigProblem::BelowTwice {
                    other: "limits.max_request_bytes",
                    min: l.max_request_bytes.saturating_mul(2),
                },
            ));
        }
        Ok(limits)
    }
}

impl DaemonConfig {
    /// Parses the body of a `[daemon]` table (its keys and its `[tls]` and
    /// `[limits]` sub-tables, as in a file holding only this section) and
    /// validates it. A CLI whose file holds other sections embeds
    /// [`DaemonSection`] instead and calls [`DaemonConfig::from_section`].
    ///
    /// # Errors
    /// [`Error::ConfigSyntax`] for bad TOML or an unknown field, and the
    /// errors of [`DaemonConfig::from_section`].
    pub fn from_toml(text: &str, base_dir: &Path) -> Result<Self, Error> {
        let section: DaemonSection = toml::from_str(text)?;
        Self::from_section(section, base_dir)
    }

    /// Validates a parsed section; relative paths are resolved against
    /// `base_dir` (the configuration file's directory).
    ///
    /// # Errors
    /// [`Error::ConfigValue`] naming the field and the problem.
    pub fn from_section(section: DaemonSection, base_dir: &Path) -> Result<Self, Error> {
        let bad = |field, problem| Error::ConfigValue { field, problem };
        if !section.metrics_listen.ip().is_loopback() {
            return Err(bad("metrics_listen", ConfigProblem::NotLoopback));
        }
        if section.metrics_listen == section.listen && section.listen.port() != 0 {
            return Err(bad("metrics_listen", ConfigProblem::SameAddress));
        }
        let cluster = ClusterName::new(section.cluster)
            .map_err(|_| bad("cluster", ConfigProblem::BadClusterName))?;
        let path = |field, p: PathBuf| {
            if p.as_os_str().is_empty() {
                Err(bad(field, ConfigProblem::EmptyPath))
            } else {
                Ok(base_dir.join(p))
            }
        };
        let tls = TlsPaths {
            ca_cert: path("tls.ca_cert", section.tls.ca_cert)?,
            cert: path("tls.cert", section.tls.cert)?,
            key: path("tls.key", section.tls.key)?,
        };
        let metrics_socket = section
            .metrics_socket
            .map(|p| path("metrics_socket", p))
            .transpose()?;
        let limits = Limits::from_section(section.limits)?;
        Ok(Self {
            listen: section.listen,
            metrics_listen: section.metrics_listen,
            metrics_socket,
            cluster,
            tls,
            limits,
            pins: None,
        })
    }
}

/// `value` if it is in `1..=max`.
fn bounded(field: &'static str, value: u64, max: u64) -> Result<u64, Error> {
    let problem = match value {
        0 => ConfigProblem::Zero,
        v if v > max => ConfigProblem::TooLarge { max },
        v => return Ok(v),
    };
    Err(Error::ConfigValue { field, problem })
}

/// `value` as a `usize` if it is in `1..=max`.
fn bounded_size(field: &'static str, value: u64, max: u64) -> Result<usize, Error> {
    bounded_as(field, value, max)
}

/// `value` as a `u32` if it is in `1..=max`.
fn bounded_u32(field: &'static str, value: u64, max: u64) -> Result<u32, Error> {
    bounded_as(field, value, max)
}

/// `value` as a `T` if it is in `1..=max` and fits.
fn bounded_as<T: TryFrom<u64>>(field: &'static str, value: u64, max: u64) -> Result<T, Error> {
    T::try_from(bounded(field, value, max)?).map_err(|_| Error::ConfigValue {
        field,
        problem: ConfigProblem::TooLarge { max },
    })
}
