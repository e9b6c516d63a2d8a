//! Running a thresig cluster: everything between the command line and the
//! layers below it that needs a configuration file, a process or a network.
//!
//! - [`config`]: the signer's TOML file (store, key provider, network, its
//!   seat, the roster, the wallets with their policies, the daemon), parsed
//!   with unknown fields refused and validated with errors naming the file
//!   and the field.
//! - [`file`]: reading any other file the command line names (a PSBT, a
//!   list of inputs): a regular file, with a size limit.
//! - [`provision`]: `thresig init` (a member directory: KEK file, store with
//!   the sealed identity key, TLS files) and `thresig cluster init` (a CA
//!   and N members sharing one roster).
//! - [`node`]: `thresig serve`, the signer process (store, key manager,
//!   engine, daemon), opened by [`node::Node::open`] and served by
//!   [`node::Node::run`]; [`node::admin_socket_path`] names the local
//!   socket through which `thresig keys` reaches a running signer.
//! - [`scores`]: the coordinator's per-member scores and quarantine, in a
//!   file of its own beside the member's store (docs/quarantine.md).
//! - [`Peers`], [`run_dkg`], [`sign`](sign()), [`cluster_status`]: the
//!   coordinator's side. Any member of a wallet can coordinate with its own
//!   configuration and TLS identity; signers trust it for liveness only and
//!   check everything themselves.
//!
//! # Invariants
//! - Roster and thresholds come from the member's own configuration, never
//!   from a peer.
//! - The coordinator blames only on proof: a culprit is a member whose share
//!   failed to decode or verify against the wallet's own key record;
//!   timeouts and refusals make a member unresponsive, never malicious.
//! - Secret files are created with their final mode and never overwritten.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod config;
mod dkg;
pub mod file;
mod identity;
mod kept;
pub mod local;
pub mod node;
mod peers;
mod pool;
mod progress;
pub mod provision;
mod refresh;
mod repair;
pub mod scores;
mod sign;
mod status;

#[cfg(test)]
mod adversarial_tests;

pub use dkg::{DkgError, DkgOutcome, DkgPhase, run_dkg};
pub use identity::IdentityError;
pub use kept::{CheckedAnswer, KeptAnswers};
pub use peers::Peers;
pub use pool::CommitmentPool;
pub use progress::{Progress, Silent};
pub use refresh::{AbortOutcome, RefreshOutcome, abort_refresh, resume_refresh, run_refresh};
pub use repair::{RepairError, RepairOutcome, run_repair};
pub use sign::{
    Handed, Round2Journal, SignError, SignOptions, SignOutcome, WireScheme,
    describe as describe_failure, failure_recovery, refusal_of, release_kept, round2_request, sign,
    unsigned_answers,
};
pub use status::{MemberStatus, OwnWallet, WalletView, cluster_status, own_wallet, wallet_views};
