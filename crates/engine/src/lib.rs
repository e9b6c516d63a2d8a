//! One threshold signer's logic, as a sans-IO state machine.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod api;
mod check;
mod config;
mod dkg;
mod dkg_msg;
mod durable;
mod error;
mod ids;
mod pool;
mod signer;
mod target;
mod wallet;

pub use api::{
    API_VERSION, AbortRequest, Envelope, ErrorBody, HexBytes, Reply, Request, Response,
    Round1Request, Round1Response, Round2Request, Round2Response, WalletStatus, decode_request,
    encode_reply,
};
pub use check::commitment_hash;
pub use dkg::{ConfirmationStatus, DkgProposal};
pub use dkg_msg::{DkgPayload, DkgSessionId, SignedDkgMessage};
pub use durable::{activation_ops, decode_shares};
pub use signer::{OpenError, Signer};
pub use target::{Digest, SigningTarget};
pub use wallet::WalletStateKind;

pub use config::{ConfigError, IdentityKey, Limits, RawDigestPolicy, SignerConfig, WalletConfig};
pub use error::{
    DkgFault, Error, ErrorCode, InternalFault, PolicyReason, RequestPart, recovery_str,
};
pub use ids::{CoordinatorId, Epoch, InvalidWalletId, Timestamp, WalletId};
