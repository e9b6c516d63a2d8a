//! The crate's error type.

use std::io;
use std::path::PathBuf;

use thresig_store::file::FileError;

use crate::api::{Recovery, SignerError};

/// Everything that can go wrong in the daemon's transport, configuration and
/// certificate tooling.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The `[daemon]` section is not valid TOML or has an unknown field.
    #[error("invalid [daemon] configuration: {0}")]
    ConfigSyntax(#[from] toml::de::Error),
    /// A configuration value is out of range.
    #[error("invalid [daemon] configuration: `{field}` {problem}")]
    ConfigValue {
        /// The offending field, as written in the file.
        field: &'static str,
        /// What is wrong with it.
        problem: ConfigProblem,
    },
    /// An id or code is malformed.
    #[error("invalid {0}")]
    InvalidId(InvalidId),
    /// A TLS private key file may be read by group or others.
    #[error(
        "TLS key file {path} has mode {mode:o}; it must not be readable by group or others (0600)"
    )]
    KeyFilePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A TLS file (certificate, key, CA) is not a regular file (a FIFO, a
    /// device, a directory) or is larger than any such file: refused
    /// unread, instead of blocking the signer's start or filling its memory.
    #[error("TLS file {0}")]
    File(FileError),
    /// A file could not be written (or already exists).
    #[error("cannot write {path}: {source}")]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A PEM file holds no usable item of the expected kind.
    #[error("{path} holds no PEM {kind}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was expected: `certificate` or `private key`.
        kind: &'static str,
    },
    /// Building a TLS configuration failed (bad key, bad CA certificate).
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The CA certificate cannot anchor client verification.
    #[error("TLS client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// Creating a key or certificate failed.
    #[error("certificate generation: {0}")]
    Certificate(#[from] rcgen::Error),
    /// Setting up the process's resources failed: binding a listener,
    /// reading its address, creating the runtime or a signal handler.
    #[error("setup: {0}")]
    Setup(io::Error),
    /// The metrics socket's directory may be entered or changed by group or
    /// others, or is not the signer's own (code `metrics_socket_directory`).
    #[error(
        "metrics_socket_directory: the directory of metrics_socket, {path}, has mode {mode:o} or another owner; \
         it must be the signer user's own with mode 0700"
    )]
    MetricsSocketDirectory {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The hard open-file limit is below what the configured connection
    /// limits can hold at once (code `open_file_limit`).
    #[error(
        "open_file_limit: the hard open-file limit is {hard} but the [daemon.limits] need {needed} descriptors; \
         raise it (LimitNOFILE= in the service unit, or ulimit -Hn) or lower the connection limits"
    )]
    OpenFileLimit {
        /// Descriptors the limits need.
        needed: u64,
        /// The hard limit in force.
        hard: u64,
    },
    /// The gRPC server or channel failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A call failed below the signer: refused by TLS, too large, timed out
    /// at the transport or the signer unreachable.
    #[error("{}: {message}", code.what())]
    Rpc {
        /// The failure class.
        code: RpcCode,
        /// The transport's description.
        message: String,
    },
    /// The signer answered with an error.
    #[error("refused: {0}")]
    Refused(SignerError),
    /// A request or reply is malformed (missing oneof, out-of-range field).
    #[error("malformed message: {0}")]
    Malformed(&'static str),
}

impl Error {
    /// Whether the operation can succeed if tried again unchanged:
    /// retryable for unreachable or overloaded signers and retryable signer
    /// errors.
    #[must_use]
    pub fn recovery(&self) -> Recovery {
        match self {
            Self::Rpc { code, .. } => match code {
                RpcCode::Unavailable | RpcCode::DeadlineExceeded | RpcCode::ResourceExhausted => {
                    Recovery::Retryable
                }
                _ => Recovery::Terminal,
            },
            Self::Refused(err) => err.recovery,
            Self::Setup(_) | Self::Transport(_) => Recovery::Retryable,
            Self::ConfigSyntax(_)
            | Self::ConfigValue { .. }
            | Self::InvalidId(_)
            | Self::KeyFilePermissions { .. }
            | Self::ReadFile { .. }
            | Self::File(_)
            | Self::WriteFile { .. }
            | Self::Pem { .. }
            | Self::Tls(_)
            | Self::Verifier(_)
            | Self::Certificate(_)
            | Self::OpenFileLimit { .. }
            | Self::MetricsSocketDirectory { .. }
            | Self::Malformed(_) => Recovery::Terminal,
        }
    }

    /// Whether [`Self::recovery`] is retryable.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        self.recovery() == Recovery::Retryable
    }
}

/// Which kind of id or code was malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidId {
    /// A seat outside `1..=1000`.
    #[error("seat (must be 1 to 1000)")]
    Seat,
    /// A wallet id.
    #[error("wallet id (1 to 64 characters of [A-Za-z0-9._-])")]
    Wallet,
    /// A DKG session id.
    #[error("DKG session id (must be 32 bytes)")]
    DkgSession,
    /// A member's Ed25519 identity key.
    #[error("identity key (must be a 32-byte Ed25519 public key)")]
    IdentityKey,
    /// A cluster name.
    #[error("cluster name (one lowercase DNS label)")]
    Cluster,
    /// An error code.
    #[error("error code (1 to 64 characters of [a-z0-9_])")]
    ErrorCode,
    /// A raw digest that is not 32 bytes.
    #[error("digest (must be 32 bytes)")]
    Digest,
    /// A repair session nonce that is not 32 bytes.
    #[error("repair session nonce (must be 32 bytes)")]
    RepairSession,
}

/// What is wrong with a configuration value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigProblem {
    /// Zero where a positive number is needed.
    #[error("must be greater than zero")]
    Zero,
    /// Above the accepted maximum.
    #[error("must be at most {max}")]
    TooLarge {
        /// The maximum.
        max: u64,
    },
    /// The metrics endpoint must not be reachable from other hosts.
    #[error("must be a loopback address (metrics are served without TLS)")]
    NotLoopback,
    /// Both endpoints on one address.
    #[error("must differ from `listen`")]
    SameAddress,
    /// The cluster name is not one lowercase DNS label.
    #[error("must be one lowercase DNS label ([a-z0-9-], at most 63 characters)")]
    BadClusterName,
    /// An empty path.
    #[error("must not be empty")]
    EmptyPath,
    /// Below twice another limit, so that one member's half of this budget
    /// could not hold a request of the other limit's size.
    #[error("must be at least twice `{other}` ({min}); raise it or lower `{other}`")]
    BelowTwice {
        /// The other limit, as written in the file.
        other: &'static str,
        /// The smallest accepted value.
        min: u64,
    },
}

/// The transport-level failure class of an RPC (the gRPC status, without
/// exposing tonic's types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RpcCode {
    /// The signer is unreachable, or the connection to it failed (a TLS
    /// handshake refused, a certificate off its pin, or this member's
    /// certificate refused after the handshake, included): a coordinator
    /// asks again after it, as after a dropped connection.
    Unavailable,
    /// The caller was not authenticated (no seat in its certificate).
    Unauthenticated,
    /// The request or reply exceeds the message size limit.
    MessageTooLarge,
    /// The transport deadline passed.
    DeadlineExceeded,
    /// The server is out of a resource.
    ResourceExhausted,
    /// Any other status.
    Other,
}

impl RpcCode {
    /// The failure in a few words, for messages.
    fn what(self) -> &'static str {
        match self {
            Self::Unavailable => "unreachable",
            Self::Unauthenticated => "not authenticated",
            Self::MessageTooLarge => "message too large",
            Self::DeadlineExceeded => "no answer in time",
            Self::ResourceExhausted => "out of resources",
            Self::Other => "call failed",
        }
    }
}
