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
    AbortRequest, ConfirmationStatus, DkgProposal, DkgSessionId, ErrorCode as EngineCode,
    Round1Request, Round1Response, Round2Request, Round2Response, SignedDkgMessage, WalletId,
    WalletStatus,
};

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
