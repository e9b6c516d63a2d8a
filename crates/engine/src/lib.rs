//! One threshold signer's logic, as a sans-IO state machine.
//!
//! # Main types
//! - [`Signer`] holds the wallets one member serves ([`SignerConfig`]: wallet
//!   ids, thresholds, ordered rosters of Ed25519 identity keys, [`Limits`])
//!   over a [`thresig_store::Store`]. Its methods answer immediately. A
//!   coordinator's [`Request`] (signing rounds 1 and 2, abort, status, the
//!   DKG parts) enters only through [`Signer::handle`], which checks once
//!   that the coordinator is a member of the wallet and hands the proof to
//!   the request's own method; [`Signer::status`], [`Signer::wallets`],
//!   [`Signer::wallet_key`], [`Signer::operate`] (an
//!   [`OperatorCommand`]: begin a rekey, retire, approve a repair),
//!   [`Signer::policy_rollout`] and [`Signer::rollout_status`] (a staged
//!   policy rollout, [`rollout`]) and [`Signer::dkg_abort`] serve the local
//!   operator.
//! - The API types ([`Request`], [`Response`]) are what a transport (the
//!   daemon) converts its messages to and from; they define no wire format
//!   of their own. A
//!   [`DkgPayload`] has one canonical byte encoding
//!   ([`DkgPayload::to_bytes`]), which its signature covers and a transport
//!   carries.
//! - [`Error`] names what failed with ids; [`Error::code`] maps it to a
//!   stable [`ErrorCode`] whose [`ErrorCode::recovery`] is `retryable` or
//!   `terminal` (documented in `docs/errors.md`).
//!
//! # Features
//! - `test-util`: exports the `test_util` module for tests (deterministic
//!   member identities, the writes that activate a wallet without a DKG,
//!   the cluster harness of members over in-memory stores). Changes no
//!   signing, policy or verification behaviour.
//!
//! # Invariants (DESIGN.md §4)
//! - No clock reads of its own, no RNG creation, no sockets: the time
//!   (`now`, or a [`Clock`] where a stale reading would count wrongly) and
//!   `rng` are arguments.
//! - Nonces live in memory only, keyed by the hash of their own commitment,
//!   and are taken only as one whole round-1 vector, in order; taking
//!   destroys them, and signing runs outside any store transaction.
//! - A share leaves only after its attempt's marker (keyed by the signer's
//!   first commitment, holding the package hash and every share) is durable;
//!   until then the shares wait in memory and only the byte-identical
//!   request may retry their commit. Any other package for a used
//!   commitment gets `session_conflict`.
//! - Before a share is computed the request passes every check of
//!   [`check`](crate) (roster, threshold, epoch, messages derived by the
//!   signer itself, own commitments distinct and present); the tweak comes
//!   from the wallet record only.
//! - State is sharded per wallet: operations on different wallets never
//!   wait on each other.
//!
//! # Transactions and policy
//! Round 2 signs the messages it derives from the [`SigningTarget`]: for a
//! Taproot PSBT, parsed against the wallet's own record and the configured
//! network, the BIP341 sighash of every input the wallet signs (the
//! request must ask for exactly those, in input order); raw 32-byte digests
//! only where the wallet's policy allows them. The transaction then passes
//! the policy the wallet applies (a staged rollout's, [`rollout`], else
//! `[wallets.policy]` from the configuration), and its rate charge commits in the same store unit as
//! the shares' marker, as a compare-and-set of the wallet's rate ledger, so
//! concurrent requests cannot both pass a limit and a transaction signed in
//! several ROAST sessions is charged once. [`Signer::begin_rekey`] puts a
//! wallet in `rekeying`: it then signs only the sweep to its configured
//! successor, once that successor is `active`; [`Signer::retire`] then
//! deletes its key package and it refuses everything.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod api;
pub mod audit;
mod blame;
mod blame_file;
mod check;
mod clock;
mod config;
mod dkg;
mod dkg_blame;
mod dkg_msg;
mod dkg_round1_blame;
mod durable;
mod error;
mod ids;
mod ledger;
mod pool;
mod refresh;
mod repair;
pub mod rollout;
mod signer;
mod target;
#[cfg(feature = "test-util")]
pub mod test_util;
mod wallet;

pub use api::{
    AbortRequest, HexBytes, RefreshStatus, Request, Response, Round1Request, Round1Response,
    Round2Request, Round2Response, WalletStatus,
};
pub use blame::{BlameError, BlameProof, ProvenFault};
pub use blame_file::{BlameFile, ProofFileError};
pub use check::{commitment_hash, package_hash};
pub use clock::Clock;
pub use dkg::{ConfirmationStatus, DkgProposal};
pub use dkg_blame::{DkgProofKind, DkgShareFault, DkgShareProof, ProvenDkgFault};
pub use dkg_msg::{
    DkgKind, DkgPayload, DkgSessionId, InvalidDkgPayload, RevealedHpkeKey, SignedDkgMessage,
};
pub use dkg_round1_blame::{
    DkgRound1Proof, ProvenRound1Fault, Round1Answer, check_round1_answer, unbound_round1_refusal,
    unbound_round1_senders,
};
pub use durable::decode_shares;
pub use repair::{
    InvalidRepairPayload, MAX_APPROVAL_SECS, RepairPayload, RepairRequest, RepairResponse,
    RepairSession, SignedRepairMessage, seal_repair_value,
};
pub use rollout::{
    Phase, RolloutCommand, RolloutError, RolloutStatus, RolloutWallet, WalletRollout,
};
pub use signer::{OpenError, OperatorCommand, OperatorOutcome, Signer, Transition};
pub use target::{Digest, SigningTarget, taproot_wallet};
pub use wallet::WalletStateKind;

pub use config::{ConfigError, IdentityKey, Limits, SignerConfig, WalletConfig};
pub use error::{
    DkgFault, Error, ErrorCode, InternalFault, RepairFault, RequestPart, recovery_str,
};
pub use ids::{CoordinatorId, WalletEpoch};
pub use thresig_store::{InvalidWalletId, Recovery, Timestamp, WalletId};
