//! The seam between the transport and the signer: domain requests and
//! replies, the error every reply may carry, and the [`SignerHandler`]
//! trait the daemon calls.
//!
//! These types hold no protobuf or tonic types; the service converts at the
//! edge, so the engine (or a test double) implements the trait without
//! knowing the wire format.

use std::borrow::Cow;
use std::fmt;

use crate::ids::{DkgSessionId, Epoch, Seat, WalletId};

/// Signing round 1: fresh nonce commitments of `wallet`, one per input.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Round1Request {
    /// The wallet.
    pub wallet: WalletId,
    /// Number of inputs, so of commitments wanted; the server refuses a
    /// request outside `1..=MAX_INPUTS` before calling the handler.
    pub inputs: u32,
}

impl Round1Request {
    /// The most inputs one request may sign. A standard transaction (at
    /// most 100,000 vbytes) holds under 1,750 Taproot key-path inputs of
    /// 57.5 vbytes each; the bound keeps one request from asking a signer
    /// for an unbounded number of nonces.
    pub const MAX_INPUTS: u32 = 2048;

    /// A round-1 request for `inputs` commitments of `wallet`.
    #[must_use]
    pub fn new(wallet: WalletId, inputs: u32) -> Self {
        Self { wallet, inputs }
    }
}

/// The answer to round 1.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Round1Reply {
    /// The wallet's current epoch.
    pub epoch: Epoch,
    /// Encoded commitments, one per input (the engine owns the encoding).
    pub commitments: Vec<Vec<u8>>,
}

impl Round1Reply {
    /// A round-1 reply.
    #[must_use]
    pub fn new(epoch: Epoch, commitments: Vec<Vec<u8>>) -> Self {
        Self { epoch, commitments }
    }
}

/// What a round-2 request signs; the signer derives each input's message
/// from it and never signs a message because the coordinator sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SigningTarget {
    /// A binary BIP174 PSBT.
    Psbt(Vec<u8>),
    /// Raw 32-byte digests, one per input (only where policy allows).
    Digests(Vec<[u8; 32]>),
}

/// Signing round 2: one share per input.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Round2Request {
    /// The wallet.
    pub wallet: WalletId,
    /// The epoch the coordinator believes current.
    pub epoch: Epoch,
    /// Seats of the signer set.
    pub signers: Vec<Seat>,
    /// What is signed.
    pub target: SigningTarget,
    /// One encoded FROST signing package per input, in input order.
    pub packages: Vec<Vec<u8>>,
}

impl Round2Request {
    /// A round-2 request (see the field docs).
    #[must_use]
    pub fn new(
        wallet: WalletId,
        epoch: Epoch,
        signers: Vec<Seat>,
        target: SigningTarget,
        packages: Vec<Vec<u8>>,
    ) -> Self {
        Self {
            wallet,
            epoch,
            signers,
            target,
            packages,
        }
    }
}

/// The answer to round 2.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Round2Reply {
    /// Encoded signature shares, one per input.
    pub shares: Vec<Vec<u8>>,
    /// Fresh commitments for the coordinator's next session, one per input.
    pub commitments: Vec<Vec<u8>>,
}

impl Round2Reply {
    /// A round-2 reply.
    #[must_use]
    pub fn new(shares: Vec<Vec<u8>>, commitments: Vec<Vec<u8>>) -> Self {
        Self {
            shares,
            commitments,
        }
    }
}

/// A DKG message signed by its author's identity key over
/// (session, wallet, sender, payload). The transport does not check the
/// signature: the engine does, against the sender's key in its own roster.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DkgMessage {
    /// The DKG run.
    pub session: DkgSessionId,
    /// The wallet being created.
    pub wallet: WalletId,
    /// The author's seat (not the relaying coordinator's).
    pub sender: Seat,
    /// The engine-encoded payload.
    pub payload: Vec<u8>,
    /// Ed25519 signature by the sender's identity key.
    pub signature: Vec<u8>,
}

impl DkgMessage {
    /// A signed DKG message (see the field docs).
    #[must_use]
    pub fn new(
        session: DkgSessionId,
        wallet: WalletId,
        sender: Seat,
        payload: Vec<u8>,
        signature: Vec<u8>,
    ) -> Self {
        Self {
            session,
            wallet,
            sender,
            payload,
            signature,
        }
    }
}

/// A wallet's lifecycle state, as `status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WalletState {
    /// Its DKG has not completed with all confirmations.
    DkgPending,
    /// It signs.
    Active,
    /// It signs only the sweep to its successor.
    Rekeying,
    /// It signs nothing; its shares may be deleted.
    Retired,
    /// Its records failed to authenticate; it refuses to sign.
    Corrupt,
}

impl WalletState {
    const ALL: [Self; 5] = [
        Self::DkgPending,
        Self::Active,
        Self::Rekeying,
        Self::Retired,
        Self::Corrupt,
    ];

    /// The state's wire name (`dkg_pending`, `active`, ...).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DkgPending => "dkg_pending",
            Self::Active => "active",
            Self::Rekeying => "rekeying",
            Self::Retired => "retired",
            Self::Corrupt => "corrupt",
        }
    }

    /// The state a wire name stands for.
    pub(crate) fn from_wire(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == name)
    }
}

/// One wallet as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WalletStatus {
    /// The wallet.
    pub wallet: WalletId,
    /// Its state.
    pub state: WalletState,
    /// Its threshold.
    pub threshold: u16,
    /// Its roster size.
    pub members: u16,
    /// The current epoch, for wallets that hold a key.
    pub epoch: Option<Epoch>,
    /// The x-only output key, for wallets that hold a key (else empty).
    pub output_key: Vec<u8>,
    /// Live nonces held for this wallet.
    pub live_nonces: u64,
}

impl WalletStatus {
    /// A wallet's status (see the field docs).
    #[must_use]
    pub fn new(wallet: WalletId, state: WalletState, threshold: u16, members: u16) -> Self {
        Self {
            wallet,
            state,
            threshold,
            members,
            epoch: None,
            output_key: Vec::new(),
            live_nonces: 0,
        }
    }
}

/// The answer to `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatusReply {
    /// The answering signer's seat.
    pub seat: Seat,
    /// Its wallets, in id order.
    pub wallets: Vec<WalletStatus>,
}

impl StatusReply {
    /// A status reply.
    #[must_use]
    pub fn new(seat: Seat, wallets: Vec<WalletStatus>) -> Self {
        Self { seat, wallets }
    }
}

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
}

/// What the daemon calls for each authenticated request: the signer engine
/// implements it (and tests implement it with doubles).
///
/// Methods are synchronous and may block (store commits, signing math): the
/// daemon runs each call on a blocking thread, bounded by the configured
/// concurrency limit, so an implementation never runs on a runtime worker.
///
/// `peer` is the seat the caller's client certificate names, established by
/// the TLS handshake; it is never taken from a message. A coordinator is
/// trusted for nothing but liveness, so implementations check every request
/// themselves.
pub trait SignerHandler: Send + Sync + 'static {
    /// Signing round 1.
    ///
    /// # Errors
    /// A [`SignerError`] with the engine's stable code.
    fn round1(&self, peer: Seat, request: Round1Request) -> Result<Round1Reply, SignerError>;

    /// Signing round 2.
    ///
    /// # Errors
    /// A [`SignerError`] with the engine's stable code.
    fn round2(&self, peer: Seat, request: Round2Request) -> Result<Round2Reply, SignerError>;

    /// One relayed DKG message; returns the messages this signer emits.
    ///
    /// # Errors
    /// A [`SignerError`] with the engine's stable code.
    fn dkg(&self, peer: Seat, message: DkgMessage) -> Result<Vec<DkgMessage>, SignerError>;

    /// This signer's wallets.
    ///
    /// # Errors
    /// A [`SignerError`] with the engine's stable code.
    fn status(&self, peer: Seat) -> Result<StatusReply, SignerError>;
}
