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
use thresig_engine::{Request, Response};

/// Whether a failed request can succeed if sent again unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Recovery {
    /// A transient condition (overload, storage busy, key provider down).
    Retryable,
    /// The same request will fail again; a new request or an operator is
    /// needed.
    Terminal,
}

/// A stable, machine-readable error code (`snake_case`), such as the
/// engine's `nonce_unknown` or `policy_denied`.
///
/// # Invariants
/// 1 to 64 bytes of `[a-z0-9_]`. Codes a handler returns are `'static`, so
/// they are a bounded set and can label metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ErrorCode(Cow<'static, str>);

impl ErrorCode {
    /// The request could not be decoded or is malformed.
    pub const INVALID_REQUEST: Self = Self(Cow::Borrowed("invalid_request"));
    /// The signer is at its concurrency limit or shutting down.
    pub const OVERLOADED: Self = Self(Cow::Borrowed("overloaded"));
    /// The request did not finish within the configured timeout (the work
    /// may still complete; a retry of the same request is answered from the
    /// signer's markers).
    pub const TIMEOUT: Self = Self(Cow::Borrowed("timeout"));
    /// The handler failed unexpectedly (a bug; logged).
    pub const INTERNAL: Self = Self(Cow::Borrowed("internal"));

    /// A code known at compile time.
    ///
    /// # Errors
    /// [`crate::Error::InvalidId`] if `code` breaks the invariant.
    pub fn from_static(code: &'static str) -> Result<Self, crate::Error> {
        Self::check(code)?;
        Ok(Self(Cow::Borrowed(code)))
    }

    /// A code received from a peer.
    pub(crate) fn from_wire(code: String) -> Result<Self, crate::Error> {
        Self::check(&code)?;
        Ok(Self(Cow::Owned(code)))
    }

    fn check(code: &str) -> Result<(), crate::Error> {
        let ok = !code.is_empty()
            && code.len() <= 64
            && code
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if ok {
            Ok(())
        } else {
            Err(crate::Error::InvalidId(crate::error::InvalidId::ErrorCode))
        }
    }

    /// The code as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The code as a metric label: static codes as themselves, anything
    /// else as `other`, so peers cannot grow the number of series.
    pub(crate) fn metric_label(&self) -> Cow<'static, str> {
        match &self.0 {
            Cow::Borrowed(code) => Cow::Borrowed(code),
            Cow::Owned(_) => Cow::Borrowed("other"),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
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
}

impl SignerError {
    /// A signer error.
    #[must_use]
    pub fn new(code: ErrorCode, recovery: Recovery, message: impl Into<String>) -> Self {
        Self {
            code,
            recovery,
            message: message.into(),
        }
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
}
