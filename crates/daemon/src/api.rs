//! The seam between the transport and the signer: the [`SignerHandler`]
//! trait the daemon calls, and the error every reply may carry.
//!
//! Requests and replies are the signer engine's own types
//! ([`thresig_engine::Round1Request`] and the rest); the service converts
//! the wire messages to them at the edge, so the engine (or a test double)
//! implements the trait without knowing the wire format.

use std::borrow::Cow;
use std::fmt;

use thresig_crypto::Seat;
use thresig_engine::{
    AbortRequest, ConfirmationStatus, DkgProposal, DkgSessionId, Round1Request, Round1Response,
    Round2Request, Round2Response, SignedDkgMessage, WalletId, WalletStatus,
};

/// Whether a failed request can succeed if sent again unchanged: the
/// store's retry class, the one the whole workspace uses.
pub use thresig_engine::Recovery;

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
#[error("{code} ({recovery:?}): {message}")]
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
/// implements it ([`crate::EngineHandler`]), and tests implement it with
/// doubles.
///
/// Methods are synchronous and may block (store commits, signing math): the
/// daemon runs each call on a blocking thread, bounded by the configured
/// concurrency limit, so an implementation never runs on a runtime worker.
///
/// `peer` is the cluster seat the caller's client certificate names,
/// established by the TLS handshake; it is never taken from a message. A
/// coordinator is trusted for nothing but liveness, so implementations check
/// every request themselves.
///
/// # Errors
/// Every method returns a [`SignerError`] with a stable code (the engine's
/// codes, or `coordinator_not_member` for a seat outside the cluster).
pub trait SignerHandler: Send + Sync + 'static {
    /// Signing round 1: fresh nonce commitments, one per input.
    fn round1(&self, peer: Seat, request: Round1Request) -> Result<Round1Response, SignerError>;

    /// Signing round 2: one share per input, plus fresh commitments.
    fn round2(&self, peer: Seat, request: Round2Request) -> Result<Round2Response, SignerError>;

    /// Destroys the peer's round-1 vectors holding the request's
    /// commitments; returns how many nonces were destroyed.
    fn abort(&self, peer: Seat, request: AbortRequest) -> Result<usize, SignerError>;

    /// DKG part 1: this signer's signed round-1 message for `proposal`.
    fn dkg_start(&self, peer: Seat, proposal: DkgProposal)
    -> Result<SignedDkgMessage, SignerError>;

    /// DKG part 2: the other members' round-1 messages in, one sealed
    /// round-2 message per other member out.
    fn dkg_round2(
        &self,
        peer: Seat,
        wallet: WalletId,
        session: DkgSessionId,
        round1: Vec<SignedDkgMessage>,
    ) -> Result<Vec<SignedDkgMessage>, SignerError>;

    /// DKG part 3: the round-2 messages addressed to this signer in, its
    /// signed confirmation out.
    fn dkg_finish(
        &self,
        peer: Seat,
        wallet: WalletId,
        session: DkgSessionId,
        round2: Vec<SignedDkgMessage>,
    ) -> Result<SignedDkgMessage, SignerError>;

    /// One member's signed confirmation of a finished DKG.
    fn dkg_confirm(
        &self,
        peer: Seat,
        wallet: WalletId,
        confirmation: SignedDkgMessage,
    ) -> Result<ConfirmationStatus, SignerError>;

    /// A relay's cancel of its failed DKG `session`: dropped if still in
    /// part 1 or 2; whether it was.
    fn dkg_cancel(
        &self,
        peer: Seat,
        wallet: WalletId,
        session: DkgSessionId,
    ) -> Result<bool, SignerError>;

    /// The wallets `peer` is a member of, in id order.
    fn status(&self, peer: Seat) -> Result<Vec<WalletStatus>, SignerError>;

    /// A wallet's public key record, in the crypto crate's canonical
    /// encoding (`thresig_crypto::WalletKey::to_bytes`).
    fn wallet_key(&self, peer: Seat, wallet: WalletId) -> Result<Vec<u8>, SignerError>;
}
