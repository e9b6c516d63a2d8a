//! The engine's error type and its stable wire codes.
//!
//! [`Error`] carries structured data (wallet, seat, commitment ids) for logs
//! and tests. [`Error::code`] is the one exhaustive mapping from an error to
//! a stable [`ErrorCode`]; [`ErrorCode::recovery`] gives the code's default
//! recovery class and [`Error::recovery`] the class of one error, which
//! refines the default where the instance knows better (a `policy_denied`
//! under a time or rate rule is retryable). The daemon and the C ABI send
//! only the code, the instance's class and a message built from the
//! structured fields. `docs/errors.md` lists every
//! code with what the operator or caller does about it.

use serde::{Deserialize, Serialize};
use thresig_store::Recovery;

use thresig_crypto::Seat;

use thresig_store::CommitmentHash;
use thresig_tx::PolicyDenial;

use crate::ids::{CoordinatorId, WalletEpoch};
use crate::repair::MAX_APPROVAL_SECS;
use crate::wallet::WalletStateKind;
use thresig_store::WalletId;

/// A stable error code, sent on the wire as [`ErrorCode::as_str`].
///
/// Codes are never renamed or reused; a new failure that callers must handle
/// differently gets a new code. Each code has exactly one recovery class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request is malformed, too large or inconsistent.
    InvalidRequest,
    /// The wallet is not in this signer's configuration.
    UnknownWallet,
    /// A commitment was already used for a different signing package.
    SessionConflict,
    /// No live nonce exists for a commitment (never issued, or dropped by a
    /// restart).
    NonceUnknown,
    /// The signer set does not fit the wallet's roster and threshold.
    RosterMismatch,
    /// The requesting coordinator is not a member of the wallet (or of the
    /// cluster): only members coordinate for a wallet.
    CoordinatorNotMember,
    /// A DKG proposal's threshold or roster differs from this signer's
    /// configuration of the wallet, or a refresh proposal's removal set
    /// differs from its `remove` list.
    DkgMismatch,
    /// The request names a wallet epoch other than this signer's.
    StaleEpoch,
    /// The nonce for a commitment outlived its time to live.
    AttemptExpired,
    /// A nonce limit was reached (signer-wide, or a coordinator's quota
    /// evicted the nonce), or the wallet holds as many pending shares as
    /// it may.
    CapacityExhausted,
    /// The wallet's policy refuses what was asked.
    PolicyDenied,
    /// The wallet is being rekeyed and refuses ordinary spends.
    RekeyInProgress,
    /// The wallet's records fail to authenticate; it refuses to sign.
    WalletCorrupt,
    /// The wallet exists but cannot sign yet (its DKG is not confirmed).
    WalletNotActive,
    /// The wallet is retired and signs nothing.
    WalletRetired,
    /// Durable storage failed transiently (disk full, lock busy, commit
    /// failed).
    StorageUnavailable,
    /// Durable storage failed in a way a retry cannot fix (the writer
    /// stopped, the database latched after a failed fsync or is corrupt).
    StorageFailed,
    /// The key provider could not be reached.
    KeyProviderUnavailable,
    /// Stored state is inconsistent or fails to authenticate.
    StateCorrupt,
    /// The database is older than its witness (a rollback).
    RollbackDetected,
    /// A signature share failed verification.
    InvalidShare,
    /// A DKG check failed and the session stopped.
    DkgFailed,
    /// Another DKG session holds the wallet until it finishes or expires.
    DkgBusy,
    /// A DKG message for a session or phase this signer is not in.
    DkgNotInPhase,
    /// A veto or abort of a share refresh whose confirmation this member
    /// released: the others may switch on it, so it keeps its pending
    /// shares (or switched) and the refresh is finished with `--resume`.
    RefreshConfirmed,
    /// A repair helper's operator has not approved (or no longer approves)
    /// repairing that seat of that wallet on this signer.
    RepairNotApproved,
    /// A repair message for a session or step this signer is not in, or
    /// one that names another helper set or lost seat than its session.
    RepairNotInPhase,
    /// Another member's repair session, still unexpired, holds this
    /// member; a repair started by another coordinator waits for it.
    RepairBusy,
    /// A repair check failed; the member that saw it changed nothing.
    RepairFailed,
    /// A bug in this signer.
    Internal,
}

impl ErrorCode {
    /// Every code, for documentation, exhaustive tests and [`ErrorCode::parse`].
    /// The test `every_variant_is_in_all_and_parses` fails to compile when a
    /// variant is added to the enum, and fails when it is missing here.
    pub const ALL: [ErrorCode; 30] = [
        Self::InvalidRequest,
        Self::UnknownWallet,
        Self::SessionConflict,
        Self::NonceUnknown,
        Self::RosterMismatch,
        Self::CoordinatorNotMember,
        Self::DkgMismatch,
        Self::StaleEpoch,
        Self::AttemptExpired,
        Self::CapacityExhausted,
        Self::PolicyDenied,
        Self::RekeyInProgress,
        Self::WalletCorrupt,
        Self::WalletNotActive,
        Self::WalletRetired,
        Self::StorageUnavailable,
        Self::StorageFailed,
        Self::KeyProviderUnavailable,
        Self::StateCorrupt,
        Self::RollbackDetected,
        Self::InvalidShare,
        Self::DkgFailed,
        Self::DkgBusy,
        Self::DkgNotInPhase,
        Self::RefreshConfirmed,
        Self::RepairNotApproved,
        Self::RepairNotInPhase,
        Self::RepairBusy,
        Self::RepairFailed,
        Self::Internal,
    ];

    /// The code whose wire string is `text`, if this version knows it (a
    /// newer signer may send codes it does not).
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|code| code.as_str() == text)
    }

    /// The stable wire string of this code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::UnknownWallet => "unknown_wallet",
            Self::SessionConflict => "session_conflict",
            Self::NonceUnknown => "nonce_unknown",
            Self::RosterMismatch => "roster_mismatch",
            Self::CoordinatorNotMember => "coordinator_not_member",
            Self::DkgMismatch => "dkg_mismatch",
            Self::StaleEpoch => "stale_epoch",
            Self::AttemptExpired => "attempt_expired",
            Self::CapacityExhausted => "capacity_exhausted",
            Self::PolicyDenied => "policy_denied",
            Self::RekeyInProgress => "rekey_in_progress",
            Self::WalletCorrupt => "wallet_corrupt",
            Self::WalletNotActive => "wallet_not_active",
            Self::WalletRetired => "wallet_retired",
            Self::StorageUnavailable => "storage_unavailable",
            Self::StorageFailed => "storage_failed",
            Self::KeyProviderUnavailable => "key_provider_unavailable",
            Self::StateCorrupt => "state_corrupt",
            Self::RollbackDetected => "rollback_detected",
            Self::InvalidShare => "invalid_share",
            Self::DkgFailed => "dkg_failed",
            Self::DkgBusy => "dkg_busy",
            Self::DkgNotInPhase => "dkg_not_in_phase",
            Self::RefreshConfirmed => "refresh_confirmed",
            Self::RepairNotApproved => "repair_not_approved",
            Self::RepairNotInPhase => "repair_not_in_phase",
            Self::RepairBusy => "repair_busy",
            Self::RepairFailed => "repair_failed",
            Self::Internal => "internal",
        }
    }

    /// The code's default answer to whether the same request can succeed if
    /// sent again unchanged; [`Error::recovery`] refines it per error.
    ///
    /// `retryable` codes are transient conditions of this signer; `terminal`
    /// ones need a different request (a fresh round 1, another epoch) or an
    /// operator. `policy_denied` defaults to terminal: only a denial by a
    /// rule that time can lift is retryable, and that is known only from the
    /// error itself.
    pub fn recovery(self) -> Recovery {
        match self {
            Self::CapacityExhausted
            | Self::WalletNotActive
            | Self::DkgBusy
            | Self::RepairBusy
            | Self::StorageUnavailable
            | Self::KeyProviderUnavailable => Recovery::Retryable,
            Self::InvalidRequest
            | Self::UnknownWallet
            | Self::SessionConflict
            | Self::NonceUnknown
            | Self::RosterMismatch
            | Self::CoordinatorNotMember
            | Self::DkgMismatch
            | Self::StaleEpoch
            | Self::AttemptExpired
            | Self::PolicyDenied
            | Self::RekeyInProgress
            | Self::WalletCorrupt
            | Self::WalletRetired
            | Self::StorageFailed
            | Self::StateCorrupt
            | Self::RollbackDetected
            | Self::InvalidShare
            | Self::DkgFailed
            | Self::DkgNotInPhase
            | Self::RefreshConfirmed
            | Self::RepairNotApproved
            | Self::RepairNotInPhase
            | Self::RepairFailed
            | Self::Internal => Recovery::Terminal,
        }
    }
}

/// The wire string of a recovery class: `retryable` or `terminal`.
pub fn recovery_str(recovery: Recovery) -> &'static str {
    match recovery {
        Recovery::Retryable => "retryable",
        Recovery::Terminal => "terminal",
    }
}

/// The part of a request that failed to parse or is inconsistent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestPart {
    /// The signing package of one input.
    SigningPackage {
        /// Index of the input.
        input: usize,
    },
    /// The commitments of an abort request.
    Commitments,
    /// The list of inputs is empty.
    NoInputs,
    /// The number of signing packages differs from the number of messages
    /// the target derives.
    InputCount {
        /// Signing packages in the request.
        packages: usize,
        /// Messages derived from the target.
        messages: usize,
    },
    /// The request's signer set is not the set of identifiers of every
    /// package.
    SignerSet {
        /// Index of the first input whose package disagrees.
        input: usize,
    },
    /// A repair session names another wallet, a seat outside the roster,
    /// helpers that are not ascending and distinct, fewer helpers than the
    /// threshold, or the lost seat among its helpers.
    RepairSession,
}

/// Which internal invariant failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InternalFault {
    /// The crypto layer refused an operation whose inputs passed every
    /// check (signing with a live nonce, starting a DKG for a valid seat).
    CryptoRefused,
    /// A state the code rules out was reached (for example a seat that
    /// passed the roster check failing to convert).
    Invariant,
    /// A value could not be serialized.
    Serialization,
    /// The store skipped a marker insert for a reason other than a present
    /// marker.
    UnexpectedWrite,
    /// A wallet's lock was poisoned by a panic; the wallet refuses work
    /// until the signer restarts.
    Poisoned,
}

/// Which DKG check failed (the accused member is named beside it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DkgFault {
    /// The message's signature does not verify under the sender's roster
    /// key, or it names another session or wallet (a relay fault: no
    /// member is accused).
    BadSignature,
    /// A round-2 payload's echo hash differs from this member's (a relay
    /// fault: the coordinator can hand members different round-1 packages
    /// of one member without any key, by asking it to start twice).
    EchoMismatch,
    /// A round-2 package does not open with this member's HPKE key.
    BadSeal,
    /// A round-2 package is addressed to another member (a relay fault: its
    /// sender signed it for that member, so no member is accused).
    WrongRecipient,
    /// A package fails the crypto layer's checks.
    InvalidPackage,
    /// A round-1 package's length does not fit the wallet's threshold (t
    /// commitments), checked before any of its points is decoded.
    WrongPackageLength,
    /// Two messages of one member for one round (a relay fault: the
    /// coordinator can replay one, or ask the member to start twice).
    DuplicateSender,
    /// A member's message is missing: a relay fault (the coordinator may
    /// have withheld it), so no member is accused; the relay, which sees
    /// what each member sent, names one that sent too few.
    MissingSender,
    /// This member's own message was handed back as a peer's.
    OwnMessageEchoed,
    /// A message of the wrong round (a relay fault: its sender signed it
    /// for the round it belongs to).
    UnexpectedPayload,
    /// A validly signed confirmation of another result.
    ConfirmationMismatch,
    /// A round-1 message without the kind-bound signature this member
    /// requires (`require_round1_kind_signature`): the relay may have
    /// stripped it, so no member is accused; a relay, which received each
    /// round-1 message from its sender, names the senders whose messages
    /// carried none ([`crate::unbound_round1_senders`]).
    MissingKindSignature,
}

impl DkgFault {
    /// A stable snake-case name, as the audit log records the fault.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::BadSignature => "bad_signature",
            Self::EchoMismatch => "echo_mismatch",
            Self::BadSeal => "bad_seal",
            Self::WrongRecipient => "wrong_recipient",
            Self::InvalidPackage => "invalid_package",
            Self::WrongPackageLength => "wrong_package_length",
            Self::DuplicateSender => "duplicate_sender",
            Self::MissingSender => "missing_sender",
            Self::OwnMessageEchoed => "own_message_echoed",
            Self::UnexpectedPayload => "unexpected_payload",
            Self::ConfirmationMismatch => "confirmation_mismatch",
            Self::MissingKindSignature => "missing_kind_signature",
        }
    }
}

/// Which repair check failed (the accused member is named beside it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RepairFault {
    /// A message does not verify under its sender's roster key, names
    /// another session, or comes from outside the helper set (a relay
    /// fault: no member is accused).
    BadSignature,
    /// A helper's message is missing (a relay fault).
    MissingSender,
    /// Two messages of one helper for one step (a relay fault).
    DuplicateSender,
    /// A message of the wrong step (a relay fault).
    UnexpectedPayload,
    /// Helpers signed different wallet keys, or one that does not fit this
    /// member's configuration.
    WalletKeyDisagrees,
    /// A per-session key does not decode, so nothing can be sealed to it.
    BadKey,
    /// A sealed delta or sigma is missing or does not open with this
    /// member's per-session key.
    BadSeal,
    /// A delta does not match its sender's commitment.
    BadDelta,
    /// A helper's commitments do not decode, cover another helper set, or
    /// do not sum to its weighted verifying share on record.
    BadCommitment,
    /// A sigma is not the sum of the deltas committed to its sender.
    BadSigma,
    /// A helper summed over other commitments than the ones relayed here
    /// (a relay fault, or a helper that signed two sets of commitments).
    CommitmentsDisagree,
    /// The rebuilt share does not match this seat's verifying share.
    ShareMismatch,
    /// A message names other earlier messages than the ones this member
    /// holds (its session was replaced and started again, or the relay
    /// mixed two runs): a seal to a key it no longer holds proves nothing
    /// against its sender, so no member is accused.
    InputsDisagree,
    /// A helper signed two different `Dealt` messages over the same
    /// `Opened` list: an honest helper deals once per list (a new list
    /// holds its new per-session key), so the two messages side by side
    /// prove it lied.
    Equivocation,
}

/// Everything that can go wrong in the engine.
///
/// Variants carry ids, never formatted strings; [`Error::code`] maps each to
/// its stable code. No variant contains secret material, but for the
/// session key a failed DKG part 3 reveals on purpose in its accusation
/// (redacted in `Debug`, never in the message).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Part of the request is malformed or inconsistent.
    #[error("malformed request for wallet {wallet}: {part:?}; fix the request")]
    Malformed {
        /// The wallet addressed.
        wallet: WalletId,
        /// What is wrong.
        part: RequestPart,
    },
    /// The request has more inputs than the configured maximum.
    #[error(
        "wallet {wallet}: {requested} inputs requested, at most {max} allowed; send at most {max} inputs in one request"
    )]
    TooManyInputs {
        /// The wallet addressed.
        wallet: WalletId,
        /// Inputs requested.
        requested: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The wallet is not configured on this signer.
    #[error(
        "unknown wallet {wallet}; check the wallet id, or add the wallet to this signer's configuration"
    )]
    UnknownWallet {
        /// The wallet addressed.
        wallet: WalletId,
    },
    /// The wallet's DKG has not been confirmed yet, so it cannot sign.
    #[error(
        "wallet {wallet} is not active yet; run its DKG (`thresig dkg --wallet {wallet}`), or wait until every member confirms it"
    )]
    WalletNotActive {
        /// The wallet addressed.
        wallet: WalletId,
    },
    /// The wallet is being rekeyed; it refuses ordinary spends.
    #[error("wallet {wallet} is being rekeyed; sweep it to its successor, or use the successor")]
    RekeyInProgress {
        /// The wallet addressed.
        wallet: WalletId,
    },
    /// The wallet is retired.
    #[error("wallet {wallet} is retired; use its successor")]
    WalletRetired {
        /// The wallet addressed.
        wallet: WalletId,
    },
    /// The wallet's records failed to authenticate; it refuses to sign until
    /// an operator acts.
    #[error(
        "wallet {wallet} is corrupt (its records fail to authenticate or disagree with the configuration) and signs nothing; run `thresig keys verify` on this signer and restore the wallet's records from a backup"
    )]
    WalletCorrupt {
        /// The wallet addressed.
        wallet: WalletId,
    },
    /// A commitment was already used with a different package (or is pending
    /// for a different one); the pending shares, if any, were dropped.
    #[error(
        "wallet {wallet}: commitment {commitment:?} was used for another package; start a new attempt with fresh round-1 commitments"
    )]
    SessionConflict {
        /// The wallet addressed.
        wallet: WalletId,
        /// The conflicting commitment.
        commitment: CommitmentHash,
    },
    /// One of this signer's commitments appears in two inputs.
    #[error(
        "wallet {wallet}: commitment {commitment:?} used for inputs {first} and {second}; use each round-1 commitment for one input"
    )]
    CommitmentReused {
        /// The wallet addressed.
        wallet: WalletId,
        /// The repeated commitment.
        commitment: CommitmentHash,
        /// The first input using it.
        first: usize,
        /// The second input using it.
        second: usize,
    },
    /// The signer's commitments in the request are not exactly one round-1
    /// vector, in order.
    #[error(
        "wallet {wallet}: the commitments do not form one round-1 vector; use this signer's commitments of one round 1, in the order it issued them"
    )]
    NotOneRound1Vector {
        /// The wallet addressed.
        wallet: WalletId,
    },
    /// This signer's seat has no commitment in an input's package.
    #[error(
        "wallet {wallet}: no commitment of seat {seat} in input {input}; fix the request to include this signer's commitment in every input"
    )]
    OwnCommitmentMissing {
        /// The wallet addressed.
        wallet: WalletId,
        /// This signer's seat.
        seat: Seat,
        /// The input whose package lacks it.
        input: usize,
    },
    /// No live nonce for this commitment (never issued by this process, or
    /// lost in a restart).
    #[error(
        "wallet {wallet}: no nonce for commitment {commitment:?} (never issued to this coordinator, used, aborted or lost in a restart); run round 1 again"
    )]
    NonceUnknown {
        /// The wallet addressed.
        wallet: WalletId,
        /// The commitment.
        commitment: CommitmentHash,
    },
    /// The nonce for this commitment expired.
    #[error(
        "wallet {wallet}: the nonce for commitment {commitment:?} expired; run round 1 again and finish round 2 within the nonce time to live"
    )]
    AttemptExpired {
        /// The wallet addressed.
        wallet: WalletId,
        /// The commitment.
        commitment: CommitmentHash,
    },
    /// The nonce was evicted because its coordinator issued more round-1
    /// requests than its quota of live nonces.
    #[error(
        "wallet {wallet}: the nonce for {commitment:?} was evicted by its coordinator's quota; run round 1 again, with fewer attempts open at once"
    )]
    NonceEvicted {
        /// The wallet addressed.
        wallet: WalletId,
        /// The commitment.
        commitment: CommitmentHash,
    },
    /// Round 1 would exceed the signer-wide limit on live nonces.
    #[error(
        "wallet {wallet}: {live} live nonces, limit {max} (coordinator {coordinator:?}); retry round 1 after finishing or aborting open attempts"
    )]
    NonceCapacity {
        /// The wallet addressed.
        wallet: WalletId,
        /// The requesting coordinator.
        coordinator: CoordinatorId,
        /// Live nonces of the wallet.
        live: usize,
        /// The wallet-wide limit.
        max: usize,
    },
    /// Round 2 would keep more computed-but-not-yet-durable shares than the
    /// wallet's cap (`Limits::pending_per_wallet`) and none of them belongs
    /// to the requesting coordinator (its own oldest would have been
    /// dropped). No nonce was spent; the request can be sent again once
    /// the pending shares are committed or forgotten.
    #[error(
        "wallet {wallet}: {pending} pending share sets, limit {max} (coordinator {coordinator:?}); resend once the pending attempts are committed or forgotten, and check the store if marker commits keep failing"
    )]
    PendingCapacity {
        /// The wallet addressed.
        wallet: WalletId,
        /// The requesting coordinator.
        coordinator: CoordinatorId,
        /// Pending share sets of the wallet.
        pending: usize,
        /// The wallet-wide limit.
        max: usize,
    },
    /// An identifier in a package is not a seat of the wallet's roster.
    #[error(
        "wallet {wallet}: identifier {identifier} is not a seat of the wallet's roster; use signers of the wallet's roster"
    )]
    IdentifierNotInRoster {
        /// The wallet addressed.
        wallet: WalletId,
        /// The seat (FROST identifier) found.
        identifier: Seat,
    },
    /// The requesting coordinator is not a member of the wallet, or the
    /// wallet does not exist: only members may coordinate for a wallet, and
    /// anyone else gets this one answer for both, so a coordinator outside
    /// a wallet cannot learn which wallet ids exist.
    #[error(
        "wallet {wallet}: coordinator {coordinator:?} is not a member of a wallet of that id on this signer; coordinate from a member of the wallet"
    )]
    CoordinatorNotMember {
        /// The wallet addressed.
        wallet: WalletId,
        /// The coordinator's identity.
        coordinator: CoordinatorId,
    },
    /// Fewer signers than the wallet's threshold.
    #[error(
        "wallet {wallet}: {signers} signers, threshold {threshold}; use at least {threshold} signers"
    )]
    TooFewSigners {
        /// The wallet addressed.
        wallet: WalletId,
        /// Signers in the package.
        signers: usize,
        /// The wallet's threshold.
        threshold: u16,
    },
    /// The request names a wallet epoch (key-share generation) other than
    /// this signer's.
    #[error(
        "wallet {wallet}: request for {requested}, this signer is at {current}; use the epoch `thresig status` reports, and check `thresig status` on each member if they disagree"
    )]
    StaleEpoch {
        /// The wallet addressed.
        wallet: WalletId,
        /// The wallet epoch named by the request.
        requested: WalletEpoch,
        /// This signer's wallet epoch.
        current: WalletEpoch,
    },
    /// An input's package message differs from the message this signer
    /// derived itself from the signing target.
    #[error(
        "wallet {wallet}: input {input}'s message is not the one derived from the target; fix the request to sign the messages its target derives"
    )]
    MessageMismatch {
        /// The wallet addressed.
        wallet: WalletId,
        /// The input.
        input: usize,
    },
    /// The wallet's policy refuses the request (`policy_denied`): the rule
    /// and the offending value, as the `tx` crate's policy reports them.
    /// A refusal under a rule that time can lift (the UTC time window, the
    /// per-minute and per-day rate limits, their per-coordinator
    /// sub-limits, the daily fee budgets: [`thresig_tx::Rule::lifts_with_time`])
    /// is retryable ([`Error::recovery`]); a refusal under any other rule is
    /// terminal, as is the code's default.
    #[error(
        "wallet {wallet}: policy rule {} denies the request ({:?}); {}", .denial.rule, .denial.violation, policy_hint(denial)
    )]
    PolicyDenied {
        /// The wallet addressed.
        wallet: WalletId,
        /// The rule and the offending value.
        denial: PolicyDenial,
    },
    /// The PSBT of a signing target does not parse, or cannot be signed
    /// for the wallet (no input of the wallet, missing prevout data, prevout
    /// data that contradicts itself, a non-Taproot input claimed for the
    /// wallet, Taproot fields of another key).
    #[error(
        "wallet {wallet}: the PSBT is refused: {source}; fix the PSBT (`thresig psbt inspect` shows what a signer reads from it)"
    )]
    Transaction {
        /// The wallet addressed.
        wallet: WalletId,
        /// What the `tx` crate found.
        #[source]
        source: thresig_tx::Error,
    },
    /// A rekeying wallet's successor is not `active` on this signer, so no
    /// sweep is signed yet.
    #[error(
        "wallet {wallet}: successor {successor} is not active; run its DKG (`thresig dkg --wallet {successor}`) before the sweep"
    )]
    SuccessorNotActive {
        /// The rekeying wallet.
        wallet: WalletId,
        /// Its successor.
        successor: WalletId,
    },
    /// A rekey was requested for a wallet whose configuration names no
    /// successor, or that is not `active`.
    #[error(
        "wallet {wallet} cannot begin a rekey (no successor configured, or not active); check that the wallet is active and its configuration names a successor"
    )]
    RekeyNotPossible {
        /// The wallet addressed.
        wallet: WalletId,
    },
    /// The wallet's key record commits to another script tree than its
    /// configuration names: a configuration cannot change a wallet's key.
    #[error(
        "wallet {wallet}: its configuration names another script tree than its key record, which has {recorded}; {}",
        if *unconfirmed {
            "the key is an unconfirmed DKG's result: abort that DKG session on this member and run the DKG again"
        } else {
            "restore that `script_tree_root` in the wallet's [[wallets]] entry (a new tree needs a new wallet and a DKG)"
        }
    )]
    ScriptTreeMismatch {
        /// The wallet addressed.
        wallet: WalletId,
        /// The recorded tree, as the configuration would name it.
        recorded: String,
        /// Whether the key is an unconfirmed DKG's result (abortable).
        unconfirmed: bool,
    },
    /// A retire was requested for a wallet that is not `rekeying`: only a
    /// wallet whose sweep the operator has seen through can be retired, so
    /// an active wallet's shares are never deleted by one command.
    #[error(
        "wallet {wallet} is {}, not rekeying, and cannot be retired; {}",
        state.as_str(),
        retire_step(*state)
    )]
    RetireNotPossible {
        /// The wallet addressed.
        wallet: WalletId,
        /// Its state.
        state: WalletStateKind,
    },
    /// A repair approval asked to last no time or longer than
    /// [`MAX_APPROVAL_SECS`]: an approval forgotten on a helper must not
    /// stand for weeks.
    #[error(
        "a repair approval lasts 1 to {MAX_APPROVAL_SECS} seconds (a day), not {secs}; run `thresig repair approve` again with an --expires-in in that range (and again later if the repair needs longer)"
    )]
    ApprovalExpiry {
        /// The duration asked for, in seconds.
        secs: u64,
    },
    /// The wallet's rate ledger kept changing under concurrent commits; the
    /// shares were not released and stay pending for a byte-identical
    /// retry.
    #[error("wallet {wallet}: the rate ledger is contended; resend the byte-identical request")]
    LedgerContended {
        /// The wallet addressed.
        wallet: WalletId,
    },
    /// An active wallet has no key package for its current epoch.
    #[error(
        "wallet {wallet}: no key package for {epoch}; stop the signer and investigate its store (never reset it to empty)"
    )]
    KeyPackageMissing {
        /// The wallet addressed.
        wallet: WalletId,
        /// The epoch.
        epoch: WalletEpoch,
    },
    /// A stored record holds data that does not decode.
    #[error(
        "wallet {wallet}: a stored record does not decode; stop the signer and investigate its store (never reset it to empty)"
    )]
    StoredRecordInvalid {
        /// The wallet addressed.
        wallet: WalletId,
    },
    /// A DKG proposal's threshold or roster differs from the configuration.
    #[error(
        "wallet {wallet}: the DKG proposal's threshold or roster differs from this signer's configuration; reconcile the members' configurations, then propose again"
    )]
    DkgMismatch {
        /// The wallet addressed.
        wallet: WalletId,
    },
    /// A refresh proposal's removal set differs from this member's own
    /// configuration of the wallet (its `remove` list), or removes this
    /// member: removals come from each member's operator, never from a
    /// coordinator.
    #[error(
        "wallet {wallet}: the refresh proposal's removal set differs from this member's `remove` list (or removes this member); reconcile every remaining member's `remove` list with the command's --remove, then refresh again"
    )]
    RefreshMismatch {
        /// The wallet addressed.
        wallet: WalletId,
    },
    /// A refresh whose removal would leave fewer members of the key record
    /// than the threshold (counting the seats earlier refreshes removed):
    /// the new shares could never sign.
    #[error(
        "wallet {wallet}: the refresh would leave {remaining} member(s) of the key record, fewer than its threshold {threshold}; fix the `remove` lists to remove fewer seats, or rekey the wallet to a new key"
    )]
    RefreshLeavesTooFew {
        /// The wallet addressed.
        wallet: WalletId,
        /// The members the refresh would keep.
        remaining: u16,
        /// The wallet's threshold.
        threshold: u16,
    },
    /// A DKG was proposed for a wallet that already signs (or is later in
    /// its lifecycle).
    #[error(
        "wallet {wallet} already has a confirmed key; use it (a DKG never replaces a wallet's key)"
    )]
    WalletAlreadyKeyed {
        /// The wallet addressed.
        wallet: WalletId,
    },
    /// A DKG message arrived for a session or phase this signer is not in
    /// (never started, already failed, or lost in a restart).
    #[error("wallet {wallet}: no DKG in that session and phase; start a new DKG session")]
    DkgNotInPhase {
        /// The wallet addressed.
        wallet: WalletId,
    },
    /// An abort of, or a veto asked for, a refresh whose confirmation this
    /// member already released: the other members may switch on it, so
    /// discarding the pending shares here (or promising never to switch)
    /// could leave no epoch with a threshold of shares.
    #[error(
        "wallet {wallet}: this member released its confirmation of refresh {0}, so the others may switch on it: it keeps its pending shares and neither vetoes nor aborts the refresh; run `thresig refresh --resume {0}` to finish it", hex::encode(session.0)
    )]
    RefreshConfirmed {
        /// The wallet addressed.
        wallet: WalletId,
        /// The refresh session.
        session: crate::dkg_msg::DkgSessionId,
    },
    /// A veto (or a discard) of a refresh this member switched to: the
    /// refresh completed here, and this member holds every confirmation.
    #[error(
        "wallet {wallet}: this member switched to the shares of refresh {0}, so the refresh completed here and it refuses to veto it; run `thresig refresh --resume {0}` to finish it at the other members", hex::encode(session.0)
    )]
    RefreshSwitched {
        /// The wallet addressed.
        wallet: WalletId,
        /// The refresh session.
        session: crate::dkg_msg::DkgSessionId,
    },
    /// A repair asked of a helper that holds a refresh result pending or
    /// still runs a refresh: it (or the member being repaired) may have
    /// released its confirmation, and the member, rebuilt at the old
    /// epoch, would forget its release and veto a refresh the others may
    /// switch on.
    #[error(
        "wallet {wallet}: this member runs or holds refresh {0} pending and helps no repair until it is finished, discarded or its session expires (dkg_session_ttl_secs); run `thresig refresh --resume {0}` (or `--abort {0}` when a threshold of members never released) first, then repair the member at the wallet's epoch", hex::encode(session.0)
    )]
    RepairDuringRefresh {
        /// The wallet addressed.
        wallet: WalletId,
        /// The pending refresh session.
        session: crate::dkg_msg::DkgSessionId,
    },
    /// A veto asked of a member that already holds as many vetoes of
    /// refreshes at its current epoch as one requester may have
    /// (16 divided by the threshold, at least one: each keeps its session
    /// from running here; a switch deletes them).
    #[error(
        "wallet {wallet}: this member already vetoed {cap} refresh sessions at its current epoch that {} asked for, and signs it no more vetoes until the wallet switches; check why that member asked for vetoes of sessions no member's `thresig status` shows, or run --abort from another member", seat_or(*requester, "a coordinator outside the roster")
    )]
    VetoCapacity {
        /// The wallet addressed.
        wallet: WalletId,
        /// The wallet seat of the member that asked (`None`: no member of
        /// the roster).
        requester: Option<Seat>,
        /// The vetoes one requester may have.
        cap: usize,
    },
    /// Another DKG session holds the wallet, or the caller did not start
    /// the session it addresses: a start of a different session is refused
    /// while one runs, and only the member that started a session may
    /// continue or cancel it, so a second coordinator cannot silently reset
    /// or end it.
    #[error(
        "wallet {wallet}: DKG session {} started by {} holds the wallet; retry after it finishes or expires", hex::encode(holder.0), seat_or(*coordinator, "a coordinator outside the roster")
    )]
    DkgBusy {
        /// The wallet addressed.
        wallet: WalletId,
        /// The session holding the wallet.
        holder: crate::dkg_msg::DkgSessionId,
        /// The seat of the member that started it (`None`: its coordinator
        /// is no member of the wallet's roster).
        coordinator: Option<Seat>,
    },
    /// A DKG check failed; the session stopped. The operator decides what
    /// to do about the accused member (no automatic exclusion).
    #[error(
        "wallet {wallet}: DKG {session:?} failed: seat {accuser} accuses {} ({fault:?}); {}", seat_or(*accused, "no member"), dkg_failed_hint(*accused)
    )]
    DkgFailed {
        /// The wallet addressed.
        wallet: WalletId,
        /// The session.
        session: crate::dkg_msg::DkgSessionId,
        /// This member's seat.
        accuser: Seat,
        /// The accused member's seat number, named only for a fault proven
        /// by a message validly signed by that member (or named by the
        /// crypto layer's checks of such a message); `None` when no member
        /// is accused: a message that does not verify, names another session
        /// or wallet, or echoes this member's own proves nothing about its
        /// claimed sender (the coordinator relays every message), so it is
        /// a relay fault; so is a genuine message relayed where it does not
        /// belong (to another recipient, in another round, twice) and an
        /// echo hash that differs, which the coordinator can cause without
        /// any member's key.
        accused: Option<Seat>,
        /// What failed.
        fault: DkgFault,
        /// This member's signed accusation of `accused`, revealing the
        /// session's HPKE key, when the round-2 package `accused` sent it
        /// does not open, decode or verify (a relay builds a blame proof
        /// from it); `None` for every other failure.
        accusation: Option<Box<crate::dkg_msg::SignedDkgMessage>>,
    },
    /// A repair helper's operator has not approved this repair here, or the
    /// approval expired.
    #[error(
        "wallet {wallet}: this signer's operator has not approved repairing seat {lost} (or the approval expired); run `thresig repair approve --wallet {wallet} --member {lost}` on this signer, then start the repair again"
    )]
    RepairNotApproved {
        /// The wallet addressed.
        wallet: WalletId,
        /// The seat to be repaired.
        lost: Seat,
    },
    /// A repair request for a session or step this member is not in (never
    /// started, expired, lost in a restart, or a request naming another
    /// helper set or lost seat than the session it continues).
    #[error("wallet {wallet}: no repair in that session and step; start the repair again")]
    RepairNotInPhase {
        /// The wallet addressed.
        wallet: WalletId,
    },
    /// A repair session started by another member, still unexpired,
    /// holds this member: only the member that started it may replace it,
    /// so no member can reset a repair it does not run.
    #[error(
        "wallet {wallet}: a repair started by {} is running on this member; retry after it finishes or expires (`dkg_session_ttl_secs`)", seat_or(*coordinator, "a coordinator outside the roster")
    )]
    RepairBusy {
        /// The wallet addressed.
        wallet: WalletId,
        /// The seat of the member that started the running repair.
        coordinator: Option<Seat>,
    },
    /// A repair was asked of a member whose store holds the wallet's key
    /// or a record of it: a repair never overwrites one.
    #[error(
        "wallet {wallet} is {} on this member, and a repair never overwrites what its store holds; {}", state.as_str(), keyed_repair_hint(*state)
    )]
    RepairOfKeyedMember {
        /// The wallet addressed.
        wallet: WalletId,
        /// The wallet's state on this member.
        state: crate::wallet::WalletStateKind,
    },
    /// A repair check failed; this member changed nothing.
    #[error(
        "wallet {wallet}: repair check failed: seat {accuser} accuses {} ({fault:?}); {}", seat_or(*accused, "no member"), repair_failed_hint(*accused)
    )]
    RepairFailed {
        /// The wallet addressed.
        wallet: WalletId,
        /// This member's seat.
        accuser: Seat,
        /// The helper whose own signed message proves the fault; `None`
        /// for a relay fault (a message that does not verify, is missing,
        /// repeated or out of place) or one the messages cannot pin on one
        /// member.
        accused: Option<Seat>,
        /// What failed.
        fault: RepairFault,
    },
    /// A key package is already stored for the wallet; a later DKG never
    /// overwrites it.
    #[error(
        "wallet {wallet}: a key package is already stored; use the stored key (a later DKG never overwrites it)"
    )]
    KeyPackagePresent {
        /// The wallet addressed.
        wallet: WalletId,
    },
    /// The store failed; its error says whether a retry can succeed.
    #[error(
        "wallet {wallet}: storage failed ({}); {}",
        store_code(source).as_str(),
        store_step(source)
    )]
    Store {
        /// The wallet addressed.
        wallet: WalletId,
        /// The store's error.
        #[source]
        source: thresig_store::Error,
    },
    /// The store could not purge expired markers (in [`crate::Signer::prune`],
    /// which concerns no one wallet); the next prune tries again.
    #[error(
        "purging expired markers failed ({}); {} (the next prune tries again)",
        store_code(source).as_str(),
        store_step(source)
    )]
    MarkerPurge {
        /// The store's error.
        #[source]
        source: thresig_store::Error,
    },
    /// An internal invariant failed.
    #[error(
        "internal error: {0:?}; report this bug with the signer's logs, and restart the signer"
    )]
    Internal(InternalFault),
    /// The policy rollout record cannot be read or is damaged, so no
    /// wallet's applied policy is known.
    #[error(transparent)]
    Rollout(#[from] crate::rollout::RolloutError),
}

/// What an operator does before a wallet in `state` can be retired.
fn retire_step(state: WalletStateKind) -> &'static str {
    match state {
        WalletStateKind::Active | WalletStateKind::Refreshing => {
            "run `thresig wallet rekey` and sweep its outputs first"
        }
        WalletStateKind::DkgPending => "it holds no key to retire (its DKG never completed)",
        WalletStateKind::Corrupt => {
            "a corrupt wallet is not retired: run `thresig keys verify` and restore its records first"
        }
        // A retired wallet answers that nothing changed; never refused.
        WalletStateKind::Rekeying | WalletStateKind::Retired => "run the command again",
    }
}

impl Error {
    /// The signed accusation a failed DKG part 3 carries (see
    /// [`Error::DkgFailed`]), for the reply that reports the failure.
    #[must_use]
    pub fn accusation(&self) -> Option<&crate::dkg_msg::SignedDkgMessage> {
        match self {
            Self::DkgFailed { accusation, .. } => accusation.as_deref(),
            _ => None,
        }
    }

    /// The stable code of this error: one exhaustive mapping, so every new
    /// variant forces a decision.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Malformed { .. }
            | Self::TooManyInputs { .. }
            | Self::CommitmentReused { .. }
            | Self::NotOneRound1Vector { .. }
            | Self::OwnCommitmentMissing { .. }
            | Self::MessageMismatch { .. }
            | Self::Transaction { .. }
            | Self::RekeyNotPossible { .. }
            | Self::RetireNotPossible { .. }
            | Self::ApprovalExpiry { .. } => ErrorCode::InvalidRequest,
            Self::UnknownWallet { .. } => ErrorCode::UnknownWallet,
            Self::WalletNotActive { .. } => ErrorCode::WalletNotActive,
            Self::RekeyInProgress { .. } | Self::SuccessorNotActive { .. } => {
                ErrorCode::RekeyInProgress
            }
            Self::LedgerContended { .. } => ErrorCode::StorageUnavailable,
            Self::WalletRetired { .. } => ErrorCode::WalletRetired,
            Self::WalletCorrupt { .. } | Self::ScriptTreeMismatch { .. } => {
                ErrorCode::WalletCorrupt
            }
            Self::SessionConflict { .. } => ErrorCode::SessionConflict,
            // An evicted nonce is gone for good: no retry of round 2 can
            // succeed (round 1's refusal stays `capacity_exhausted`).
            Self::NonceUnknown { .. } | Self::NonceEvicted { .. } => ErrorCode::NonceUnknown,
            Self::AttemptExpired { .. } => ErrorCode::AttemptExpired,
            Self::NonceCapacity { .. }
            | Self::PendingCapacity { .. }
            | Self::VetoCapacity { .. } => ErrorCode::CapacityExhausted,
            Self::IdentifierNotInRoster { .. } | Self::TooFewSigners { .. } => {
                ErrorCode::RosterMismatch
            }
            Self::CoordinatorNotMember { .. } => ErrorCode::CoordinatorNotMember,
            Self::StaleEpoch { .. } => ErrorCode::StaleEpoch,
            Self::PolicyDenied { .. } => ErrorCode::PolicyDenied,
            Self::KeyPackageMissing { .. } | Self::StoredRecordInvalid { .. } => {
                ErrorCode::StateCorrupt
            }
            Self::Store { source, .. } | Self::MarkerPurge { source } => store_code(source),
            Self::Rollout(e) => e.engine_code(),
            Self::DkgMismatch { .. }
            | Self::RefreshMismatch { .. }
            | Self::RefreshLeavesTooFew { .. } => ErrorCode::DkgMismatch,
            Self::WalletAlreadyKeyed { .. }
            | Self::KeyPackagePresent { .. }
            | Self::RepairOfKeyedMember { .. } => ErrorCode::SessionConflict,
            Self::DkgNotInPhase { .. } => ErrorCode::DkgNotInPhase,
            Self::RefreshConfirmed { .. }
            | Self::RefreshSwitched { .. }
            | Self::RepairDuringRefresh { .. } => ErrorCode::RefreshConfirmed,
            Self::DkgBusy { .. } => ErrorCode::DkgBusy,
            Self::DkgFailed { .. } => ErrorCode::DkgFailed,
            Self::RepairNotApproved { .. } => ErrorCode::RepairNotApproved,
            Self::RepairNotInPhase { .. } => ErrorCode::RepairNotInPhase,
            Self::RepairBusy { .. } => ErrorCode::RepairBusy,
            Self::RepairFailed { .. } => ErrorCode::RepairFailed,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    /// Whether the same request can succeed if sent again unchanged: the
    /// code's default ([`ErrorCode::recovery`]) refined by what this error
    /// knows. A `policy_denied` is retryable exactly when its rule can pass
    /// with time; the `tx` policy reports a retryable rule only when no
    /// terminal rule refuses, so a request that can never pass is never
    /// called retryable; for the same reason a veto beyond the asking
    /// member's cap (`capacity_exhausted`) is terminal.
    pub fn recovery(&self) -> Recovery {
        match self {
            Self::PolicyDenied { denial, .. } if denial.rule.lifts_with_time() => {
                Recovery::Retryable
            }
            // Unlike a nonce or pending-share limit, the vetoes a member
            // holds are freed only by the wallet's next switch: asking the
            // same member again never succeeds before that.
            Self::VetoCapacity { .. } => Recovery::Terminal,
            _ => self.code().recovery(),
        }
    }
}

/// What to do about a policy refusal: wait for a rule that time lifts,
/// otherwise change the request.
fn policy_hint(denial: &PolicyDenial) -> &'static str {
    if denial.rule.lifts_with_time() {
        "retry later, once the time window opens or the rate or fee budget frees up"
    } else {
        "fix the request to fit the wallet's policy, or have its operator review the rule"
    }
}

/// What to do about a failed DKG: the accused member, or the relay when
/// no member is accused; a new session either way.
fn dkg_failed_hint(accused: Option<Seat>) -> &'static str {
    if accused.is_some() {
        "investigate the accused member, then start a new DKG session"
    } else {
        "check the coordinator and the network, then start a new DKG session"
    }
}

/// What to do about a failed repair check.
fn keyed_repair_hint(state: crate::wallet::WalletStateKind) -> &'static str {
    match state {
        crate::wallet::WalletStateKind::Corrupt => {
            "run `thresig keys verify` and restore its records from a backup, or move the member onto a fresh store and repair it there"
        }
        _ => "repair only a member that lost the wallet's key (a fresh or restored store)",
    }
}

fn repair_failed_hint(accused: Option<Seat>) -> &'static str {
    match accused {
        Some(_) => {
            "investigate the accused helper (its own signed message proves the fault), then start the repair again without it"
        }
        None => "start the repair again, through another coordinator if it happens again",
    }
}

/// `seat N`, or `none` when there is no seat.
fn seat_or(seat: Option<Seat>, none: &str) -> String {
    seat.map_or_else(|| none.to_owned(), |s| format!("seat {s}"))
}

/// The code of a store error on the wire, where the store's finer codes
/// ([`thresig_store::Error::code`]) fold into six: provider and rollback
/// failures have their own codes, a wallet's damage is `wallet_corrupt`
/// exactly when the store counts it so
/// ([`thresig_store::Error::marks_wallet_corrupt`]), a damaged record of no
/// wallet is `state_corrupt`, and anything else is `storage_unavailable`
/// when the store says a retry can succeed and `storage_failed` when it
/// cannot.
/// What to do about a store failure, as docs/errors.md's row for its code
/// says (the store's own error, which may name files, stays off the wire).
fn store_step(e: &thresig_store::Error) -> &'static str {
    match store_code(e) {
        ErrorCode::WalletCorrupt => {
            "run `thresig keys verify` on this signer and restore the wallet from a backup"
        }
        ErrorCode::RollbackDetected => {
            "do not override unless the restore was deliberate (keys runbook, \"Rollback and the witness\")"
        }
        ErrorCode::KeyProviderUnavailable => "check the key provider (KMS, HSM or key file)",
        ErrorCode::StorageUnavailable => "resend the byte-identical request",
        ErrorCode::StateCorrupt => "stop the signer and investigate (never reset state to empty)",
        _ => "stop the signer, check its disk and restart it (never reset the database)",
    }
}

pub(crate) fn store_code(e: &thresig_store::Error) -> ErrorCode {
    use thresig_store::Error as S;
    if e.marks_wallet_corrupt() {
        return ErrorCode::WalletCorrupt;
    }
    match e {
        S::RecordTampered { .. }
        | S::RecordMoved { .. }
        | S::RecordStale { .. }
        | S::DekMissing { .. }
        | S::AuditBroken { .. } => ErrorCode::StateCorrupt,
        S::Provider(_) if e.recovery() == Recovery::Retryable => ErrorCode::KeyProviderUnavailable,
        S::RollbackDetected { .. } => ErrorCode::RollbackDetected,
        _ => match e.recovery() {
            Recovery::Retryable => ErrorCode::StorageUnavailable,
            Recovery::Terminal => ErrorCode::StorageFailed,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const DOC: &str = include_str!("../../../docs/errors.md");

    /// One error of every variant, in the order the enum declares them; the
    /// exhaustive `match` stops compiling when a variant is added until it
    /// is listed here.
    fn one_of_every_variant() -> Vec<Error> {
        use thresig_tx::{Rule, UnixTime, Violation};
        let wallet = || WalletId::new("w").unwrap();
        let commitment = CommitmentHash([1; 32]);
        let coordinator = CoordinatorId([2; 32]);
        let session = crate::dkg_msg::DkgSessionId([3; 32]);
        let seat = Seat::FIRST;
        let all = vec![
            Error::Malformed {
                wallet: wallet(),
                part: RequestPart::NoInputs,
            },
            Error::TooManyInputs {
                wallet: wallet(),
                requested: 9,
                max: 8,
            },
            Error::UnknownWallet { wallet: wallet() },
            Error::WalletNotActive { wallet: wallet() },
            Error::RekeyInProgress { wallet: wallet() },
            Error::WalletRetired { wallet: wallet() },
            Error::WalletCorrupt { wallet: wallet() },
            Error::SessionConflict {
                wallet: wallet(),
                commitment,
            },
            Error::CommitmentReused {
                wallet: wallet(),
                commitment,
                first: 0,
                second: 1,
            },
            Error::NotOneRound1Vector { wallet: wallet() },
            Error::OwnCommitmentMissing {
                wallet: wallet(),
                seat,
                input: 0,
            },
            Error::NonceUnknown {
                wallet: wallet(),
                commitment,
            },
            Error::AttemptExpired {
                wallet: wallet(),
                commitment,
            },
            Error::NonceEvicted {
                wallet: wallet(),
                commitment,
            },
            Error::NonceCapacity {
                wallet: wallet(),
                coordinator,
                live: 8,
                max: 8,
            },
            Error::PendingCapacity {
                wallet: wallet(),
                coordinator,
                pending: 64,
                max: 64,
            },
            Error::IdentifierNotInRoster {
                wallet: wallet(),
                identifier: seat,
            },
            Error::CoordinatorNotMember {
                wallet: wallet(),
                coordinator,
            },
            Error::TooFewSigners {
                wallet: wallet(),
                signers: 1,
                threshold: 2,
            },
            Error::StaleEpoch {
                wallet: wallet(),
                requested: WalletEpoch(1),
                current: WalletEpoch(0),
            },
            Error::MessageMismatch {
                wallet: wallet(),
                input: 0,
            },
            Error::PolicyDenied {
                wallet: wallet(),
                denial: PolicyDenial {
                    rule: Rule::TimeWindow,
                    violation: Violation::Time { now: UnixTime(0) },
                },
            },
            Error::Transaction {
                wallet: wallet(),
                source: thresig_tx::Error::PsbtTrailingBytes { trailing: 1 },
            },
            Error::SuccessorNotActive {
                wallet: wallet(),
                successor: WalletId::new("w2").unwrap(),
            },
            Error::RekeyNotPossible { wallet: wallet() },
            Error::ScriptTreeMismatch {
                wallet: wallet(),
                recorded: "no script_tree_root".to_owned(),
                unconfirmed: false,
            },
            Error::RetireNotPossible {
                wallet: wallet(),
                state: WalletStateKind::Active,
            },
            Error::ApprovalExpiry { secs: 0 },
            Error::LedgerContended { wallet: wallet() },
            Error::KeyPackageMissing {
                wallet: wallet(),
                epoch: WalletEpoch(0),
            },
            Error::StoredRecordInvalid { wallet: wallet() },
            Error::DkgMismatch { wallet: wallet() },
            Error::RefreshMismatch { wallet: wallet() },
            Error::RefreshLeavesTooFew {
                wallet: wallet(),
                remaining: 1,
                threshold: 2,
            },
            Error::WalletAlreadyKeyed { wallet: wallet() },
            Error::DkgNotInPhase { wallet: wallet() },
            Error::RefreshConfirmed {
                wallet: wallet(),
                session,
            },
            Error::RefreshSwitched {
                wallet: wallet(),
                session,
            },
            Error::RepairDuringRefresh {
                wallet: wallet(),
                session,
            },
            Error::VetoCapacity {
                wallet: wallet(),
                requester: Some(seat),
                cap: 8,
            },
            Error::DkgBusy {
                wallet: wallet(),
                holder: session,
                coordinator: Some(seat),
            },
            Error::DkgBusy {
                wallet: wallet(),
                holder: session,
                coordinator: None,
            },
            Error::DkgFailed {
                wallet: wallet(),
                session,
                accuser: seat,
                accused: None,
                fault: DkgFault::BadSignature,
                accusation: None,
            },
            Error::DkgFailed {
                wallet: wallet(),
                session,
                accuser: seat,
                accused: Some(Seat::try_from(2).unwrap()),
                fault: DkgFault::InvalidPackage,
                accusation: None,
            },
            Error::RepairNotApproved {
                wallet: wallet(),
                lost: seat,
            },
            Error::RepairNotInPhase { wallet: wallet() },
            Error::RepairBusy {
                wallet: wallet(),
                coordinator: Some(seat),
            },
            Error::RepairOfKeyedMember {
                wallet: wallet(),
                state: crate::wallet::WalletStateKind::Corrupt,
            },
            Error::RepairFailed {
                wallet: wallet(),
                accuser: seat,
                accused: None,
                fault: RepairFault::BadSignature,
            },
            Error::RepairFailed {
                wallet: wallet(),
                accuser: seat,
                accused: Some(Seat::try_from(2).unwrap()),
                fault: RepairFault::BadSigma,
            },
            Error::KeyPackagePresent { wallet: wallet() },
            Error::Store {
                wallet: wallet(),
                source: thresig_store::Error::WriterStopped,
            },
            Error::MarkerPurge {
                source: thresig_store::Error::WriterStopped,
            },
            Error::Internal(InternalFault::Invariant),
            Error::Rollout(crate::rollout::RolloutError::Corrupt),
        ];
        for e in &all {
            match e {
                Error::Malformed { .. }
                | Error::TooManyInputs { .. }
                | Error::UnknownWallet { .. }
                | Error::WalletNotActive { .. }
                | Error::RekeyInProgress { .. }
                | Error::WalletRetired { .. }
                | Error::WalletCorrupt { .. }
                | Error::SessionConflict { .. }
                | Error::CommitmentReused { .. }
                | Error::NotOneRound1Vector { .. }
                | Error::OwnCommitmentMissing { .. }
                | Error::NonceUnknown { .. }
                | Error::AttemptExpired { .. }
                | Error::NonceEvicted { .. }
                | Error::NonceCapacity { .. }
                | Error::PendingCapacity { .. }
                | Error::IdentifierNotInRoster { .. }
                | Error::CoordinatorNotMember { .. }
                | Error::TooFewSigners { .. }
                | Error::StaleEpoch { .. }
                | Error::MessageMismatch { .. }
                | Error::PolicyDenied { .. }
                | Error::Transaction { .. }
                | Error::SuccessorNotActive { .. }
                | Error::RekeyNotPossible { .. }
                | Error::RetireNotPossible { .. }
                | Error::ApprovalExpiry { .. }
                | Error::ScriptTreeMismatch { .. }
                | Error::LedgerContended { .. }
                | Error::KeyPackageMissing { .. }
                | Error::StoredRecordInvalid { .. }
                | Error::DkgMismatch { .. }
                | Error::RefreshMismatch { .. }
                | Error::RefreshLeavesTooFew { .. }
                | Error::WalletAlreadyKeyed { .. }
                | Error::DkgNotInPhase { .. }
                | Error::RefreshConfirmed { .. }
                | Error::RefreshSwitched { .. }
                | Error::RepairDuringRefresh { .. }
                | Error::VetoCapacity { .. }
                | Error::DkgBusy { .. }
                | Error::DkgFailed { .. }
                | Error::RepairNotApproved { .. }
                | Error::RepairNotInPhase { .. }
                | Error::RepairBusy { .. }
                | Error::RepairOfKeyedMember { .. }
                | Error::RepairFailed { .. }
                | Error::KeyPackagePresent { .. }
                | Error::Store { .. }
                | Error::MarkerPurge { .. }
                | Error::Internal(_)
                | Error::Rollout(_) => {}
            }
        }
        all
    }

    /// What a hint may begin with: each is an instruction to the caller or
    /// the operator, as in docs/errors.md's "What to do" column.
    const HINTS: [&str; 16] = [
        "run ",
        "retry ",
        "resend ",
        "fix ",
        "use ",
        "send ",
        "coordinate ",
        "start ",
        "sweep ",
        "reconcile ",
        "restore ",
        "check ",
        "investigate ",
        "stop ",
        "report ",
        "wait ",
    ];

    /// Every message an operator or a coordinator reads ends with what to
    /// do: after its last "; " comes an instruction, and nothing else
    /// follows that sentence.
    #[test]
    fn every_message_ends_with_what_to_do() {
        for e in one_of_every_variant() {
            let text = e.to_string();
            let (cause, hint) = text
                .rsplit_once("; ")
                .unwrap_or_else(|| panic!("no hint after \"; \": {text}"));
            assert!(!cause.is_empty(), "{text}");
            assert!(
                HINTS.iter().any(|h| hint.starts_with(h)),
                "the hint of {:?} is not an instruction: {text}",
                e.code()
            );
        }
    }

    #[test]
    fn every_code_parses_back_from_its_text_and_nothing_else_does() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
        assert_eq!(ErrorCode::parse("overloaded"), None);
        assert_eq!(ErrorCode::parse("NONCE_UNKNOWN"), None);
    }

    /// `ALL` is written by hand, so this walks every variant: the list
    /// below feeds an exhaustive `match`, which stops compiling when a
    /// variant is added to [`ErrorCode`] until the variant is listed here,
    /// and then each listed variant must be in `ALL` (else `parse` would
    /// call its wire text unknown).
    #[test]
    fn every_variant_is_in_all_and_parses() {
        macro_rules! every_variant {
            ($($variant:ident),* $(,)?) => {{
                let exhaustive = |code: ErrorCode| match code {
                    $(ErrorCode::$variant => ()),*
                };
                let listed = [$(ErrorCode::$variant),*];
                listed.into_iter().for_each(exhaustive);
                listed
            }};
        }
        let listed = every_variant!(
            InvalidRequest,
            UnknownWallet,
            SessionConflict,
            NonceUnknown,
            RosterMismatch,
            CoordinatorNotMember,
            DkgMismatch,
            StaleEpoch,
            AttemptExpired,
            CapacityExhausted,
            PolicyDenied,
            RekeyInProgress,
            WalletCorrupt,
            WalletNotActive,
            WalletRetired,
            StorageUnavailable,
            StorageFailed,
            KeyProviderUnavailable,
            StateCorrupt,
            RollbackDetected,
            InvalidShare,
            DkgFailed,
            DkgBusy,
            DkgNotInPhase,
            RefreshConfirmed,
            RepairNotApproved,
            RepairNotInPhase,
            RepairBusy,
            RepairFailed,
            Internal,
        );
        for code in listed {
            assert!(
                ErrorCode::ALL.contains(&code),
                "ErrorCode::ALL lacks {code:?}"
            );
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
        assert_eq!(listed.len(), ErrorCode::ALL.len());
    }

    #[test]
    fn codes_are_unique_stable_and_documented_with_their_class() {
        let strings: BTreeSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(strings.len(), ErrorCode::ALL.len());
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let row = format!(
                "| `{}` | {} |",
                code.as_str(),
                recovery_str(code.recovery())
            );
            assert!(DOC.contains(&row), "docs/errors.md lacks the row {row}");
        }
    }

    #[test]
    fn a_policy_denial_is_retryable_exactly_for_rules_time_can_lift() {
        use thresig_tx::{Rule, UnixTime, Violation};

        let wallet = WalletId::new("w").unwrap();
        // Spelled out rather than derived from `Rule::lifts_with_time`, so a
        // change to either side shows up here.
        let table = [
            (Rule::SighashType, Recovery::Terminal),
            (Rule::PrevoutScript, Recovery::Terminal),
            (Rule::OutputScriptType, Recovery::Terminal),
            (Rule::DestinationAllowlist, Recovery::Terminal),
            (Rule::Change, Recovery::Terminal),
            (Rule::MaxOutputValue, Recovery::Terminal),
            (Rule::MaxTxValue, Recovery::Terminal),
            (Rule::MaxFee, Recovery::Terminal),
            (Rule::MaxFeeRate, Recovery::Terminal),
            (Rule::TimeWindow, Recovery::Retryable),
            (Rule::RatePerMinute, Recovery::Retryable),
            (Rule::RatePerDay, Recovery::Retryable),
            (Rule::CoordinatorRatePerMinute, Recovery::Retryable),
            (Rule::CoordinatorRatePerDay, Recovery::Retryable),
            (Rule::FeePerDay, Recovery::Retryable),
            (Rule::CoordinatorFeePerDay, Recovery::Retryable),
            (Rule::RawDigests, Recovery::Terminal),
            (Rule::RekeySweep, Recovery::Terminal),
        ];
        assert_eq!(
            table.iter().map(|(rule, _)| *rule).collect::<Vec<_>>(),
            Rule::ALL.to_vec(),
            "the table covers every rule"
        );
        let policy_doc = include_str!("../../../docs/policy.md");
        for (rule, expected) in table {
            let err = Error::PolicyDenied {
                wallet: wallet.clone(),
                denial: PolicyDenial {
                    rule,
                    violation: Violation::Time { now: UnixTime(0) },
                },
            };
            assert_eq!(err.code(), ErrorCode::PolicyDenied, "{rule}");
            assert_eq!(err.recovery(), expected, "{rule}");
            if expected == Recovery::Retryable {
                let named = format!("`{rule}`");
                assert!(DOC.contains(&named), "docs/errors.md lacks {named}");
                assert!(policy_doc.contains(&named), "docs/policy.md lacks {named}");
            }
        }
        // The code's default stays terminal.
        assert_eq!(ErrorCode::PolicyDenied.recovery(), Recovery::Terminal);
    }

    #[test]
    fn a_storage_failure_says_the_step_of_its_own_code() {
        let wallet = WalletId::new("w").unwrap();
        let io = || redb::Error::Io(std::io::Error::other("injected"));
        let provider = thresig_store::provider::ProviderError::Unavailable {
            reason: "down".into(),
        };
        let corrupt = thresig_store::Error::WalletCorrupt {
            wallet: thresig_store::WalletId::new("w").unwrap(),
        };
        let cases: [(thresig_store::Error, &str); 4] = [
            (io().into(), "resend the byte-identical request"),
            (
                thresig_store::Error::WriterStopped,
                "never reset the database",
            ),
            (
                thresig_store::Error::Provider(provider),
                "check the key provider",
            ),
            (corrupt, "thresig keys verify"),
        ];
        for (source, step) in cases {
            let err = Error::Store {
                wallet: wallet.clone(),
                source,
            };
            let text = err.to_string();
            assert!(text.contains(err.code().as_str()), "{text}");
            assert!(text.contains(step), "{text}");
            assert!(!text.contains("log, which names"), "{text}");
        }
        let purge = Error::MarkerPurge {
            source: io().into(),
        };
        assert!(
            purge.to_string().contains("the next prune tries again"),
            "{purge}"
        );
    }

    #[test]
    fn store_errors_map_to_their_codes() {
        let wallet = WalletId::new("w").unwrap();
        let code = |source: thresig_store::Error| {
            Error::Store {
                wallet: wallet.clone(),
                source,
            }
            .code()
        };
        let io = || redb::Error::Io(std::io::Error::other("injected"));
        assert_eq!(code(io().into()), ErrorCode::StorageUnavailable);
        assert_eq!(
            code(redb::Error::Corrupted("x".into()).into()),
            ErrorCode::StorageFailed
        );
        assert_eq!(
            code(thresig_store::Error::WriterStopped),
            ErrorCode::StorageFailed
        );
        let provider = thresig_store::provider::ProviderError::Unavailable {
            reason: "down".into(),
        };
        assert_eq!(
            code(thresig_store::Error::Provider(provider)),
            ErrorCode::KeyProviderUnavailable
        );
        let corrupt = thresig_store::Error::WalletCorrupt {
            wallet: thresig_store::WalletId::new("w").unwrap(),
        };
        assert_eq!(code(corrupt), ErrorCode::WalletCorrupt);
        // Every failure the store counts as a wallet's damage is
        // `wallet_corrupt` on the wire, as the store classifies it: a
        // record under a DEK the keyring lacks too.
        let dek_missing = |wallet| thresig_store::Error::DekMissing {
            table: thresig_store::RecordTable::Wallets,
            wallet,
            term: thresig_store::DekTerm(2),
            file: None,
        };
        let w = thresig_store::WalletId::new("w").unwrap();
        assert!(dek_missing(Some(w.clone())).marks_wallet_corrupt());
        assert_eq!(code(dek_missing(Some(w))), ErrorCode::WalletCorrupt);
        // A damaged record of no wallet is damaged state, not one wallet's.
        assert!(!dek_missing(None).marks_wallet_corrupt());
        assert_eq!(code(dek_missing(None)), ErrorCode::StateCorrupt);
        let tampered = thresig_store::Error::RecordTampered {
            table: thresig_store::RecordTable::Meta,
            wallet: None,
            file: None,
        };
        assert_eq!(code(tampered), ErrorCode::StateCorrupt);
    }
}
