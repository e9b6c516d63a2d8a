//! The seam between the transport and the signer: the [`SignerHandler`]
//! trait the daemon calls, and the error every reply may carry.
//!
//! Requests and replies are the signer engine's own [`Request`] and
//! [`Response`]; the service converts the wire messages to them at the
//! edge, so the engine (or a test double) implements the trait without
//! knowing the wire format.

use std::borrow::Cow;
use std::fmt;

use thresig_crypto::Seat;
use thresig_engine::{ErrorCode as EngineCode, Request, Response};

/// Whether a failed request can succeed if sent again unchanged: the
/// store's retry class, the one the whole workspace uses.
pub use thresig_engine::Recovery;

/// A stable, machine-readable error code (`snake_case`), such as the
/// engine's `nonce_unknown` or `policy_denied`, read once into what this
/// version knows ([`ErrorCode::kind`]).
///
/// # Invariants
/// 1 to 64 bytes of `[a-z0-9_]`. Every code but [`Code::Unknown`] is one
/// of a bounded set, so codes can label metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ErrorCode(Code);

/// What an error code means to this version of the signer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// One of the engine's codes (`docs/errors.md`).
    Engine(EngineCode),
    /// The signer is at its concurrency limit or shutting down.
    Overloaded,
    /// The request did not finish within the configured timeout (the work
    /// may still complete; a retry of the same request is answered from the
    /// signer's markers).
    Timeout,
    /// A well-formed code this version does not know (a newer signer's),
    /// as received.
    Unknown(String),
}

impl ErrorCode {
    /// The request could not be decoded or is malformed.
    pub const INVALID_REQUEST: Self = Self(Code::Engine(EngineCode::InvalidRequest));
    /// The signer is at its concurrency limit or shutting down.
    pub const OVERLOADED: Self = Self(Code::Overloaded);
    /// The request did not finish within the configured timeout.
    pub const TIMEOUT: Self = Self(Code::Timeout);
    /// The handler failed unexpectedly (a bug; logged).
    pub const INTERNAL: Self = Self(Code::Engine(EngineCode::Internal));

    /// A code received from a peer, parsed once.
    pub(crate) fn from_wire(code: String) -> Result<Self, crate::Error> {
        let ok = !code.is_empty()
            && code.len() <= 64
            && code
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !ok {
            return Err(crate::Error::InvalidId(crate::error::InvalidId::ErrorCode));
        }
        if let Some(engine) = EngineCode::parse(&code) {
            return Ok(Self::from(engine));
        }
        let own = [Self::OVERLOADED, Self::TIMEOUT]
            .into_iter()
            .find(|known| known.as_str() == code);
        Ok(own.unwrap_or(Self(Code::Unknown(code))))
    }

    /// What the code means to this version.
    #[must_use]
    pub fn kind(&self) -> &Code {
        &self.0
    }

    /// The code as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Code::Unknown(code) => code,
            _ => self.known_str().unwrap_or_default(),
        }
    }

    /// The code's text, for every code this version knows.
    fn known_str(&self) -> Option<&'static str> {
        match &self.0 {
            Code::Engine(code) => Some(code.as_str()),
            Code::Overloaded => Some("overloaded"),
            Code::Timeout => Some("timeout"),
            Code::Unknown(_) => None,
        }
    }

    /// The code as a metric label: known codes as themselves, anything
    /// else as `other`, so peers cannot grow the number of series.
    pub(crate) fn metric_label(&self) -> Cow<'static, str> {
        Cow::Borrowed(self.known_str().unwrap_or("other"))
    }
}

impl From<EngineCode> for ErrorCode {
    fn from(code: EngineCode) -> Self {
        Self(Code::Engine(code))
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure the signer decided, sent to the caller as the reply's `Error`.
///
/// # Invariants
/// `message` is built from ids and counts, never from secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{code} ({}): {message}",
    if *.recovery == Recovery::Retryable { "retryable" } else { "terminal" }
)]
#[non_exhaustive]
pub struct SignerError {
    /// The stable code.
    pub code: ErrorCode,
    /// Whether the same request can succeed later.
    pub recovery: Recovery,
    /// A human-readable description.
    pub message: String,
    /// A failed DKG part 3's signed accusation of the member whose round-2
    /// package failed, revealing the session's HPKE key
    /// ([`thresig_engine::Error::DkgFailed`]); `None` for every other
    /// refusal. Never part of the message (its key is redacted in
    /// `Debug`).
    pub accusation: Option<Box<thresig_engine::SignedDkgMessage>>,
}

impl SignerError {
    /// A signer error.
    #[must_use]
    pub fn new(code: ErrorCode, recovery: Recovery, message: impl Into<String>) -> Self {
        Self {
            code,
            recovery,
            message: message.into(),
            accusation: None,
        }
    }

    /// This error carrying `accusation` (see the field).
    #[must_use]
    pub fn with_accusation(mut self, accusation: Option<thresig_engine::SignedDkgMessage>) -> Self {
        self.accusation = accusation.map(Box::new);
        self
    }

    /// Whether the same request can succeed if sent again unchanged.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        self.recovery == Recovery::Retryable
    }
}

/// What the daemon calls for each authenticated request: the signer engine
/// implements it ([`crate::EngineHandler`]), and tests and the demo wrap or
/// replace it.
///
/// One method for every kind of request, over the engine's own
/// [`Request`] and [`Response`]: the service converts each wire message to
/// a `Request` once and the `Response` back once, and a wrapper that
/// changes one kind matches that kind and forwards the rest.
///
/// The method is synchronous and may block (store commits, signing math):
/// the daemon runs each call on a blocking thread, bounded by the
/// configured concurrency limit, so an implementation never runs on a
/// runtime worker.
///
/// `peer` is the cluster seat the caller's client certificate names,
/// established by the TLS handshake; it is never taken from a message. A
/// coordinator is trusted for nothing but liveness, so implementations check
/// every request themselves.
pub trait SignerHandler: Send + Sync + 'static {
    /// Runs `request` from the member at `peer`; the answer is of the
    /// request's kind (an answer of another kind is refused as `internal`).
    ///
    /// # Errors
    /// A [`SignerError`] with a stable code (the engine's codes, or
    /// `coordinator_not_member` for a seat outside the cluster).
    fn handle(&self, peer: Seat, request: Request) -> Result<Response, SignerError>;

    /// The lifecycle operations in progress, which the metrics endpoint
    /// reads for a scrape (one read at a time, on a blocking thread), or
    /// `None` when they cannot be read now. A handler that runs none
    /// reports none.
    fn lifecycle(&self) -> Option<crate::metrics::LifecycleInFlight> {
        Some(crate::metrics::LifecycleInFlight::default())
    }
}
