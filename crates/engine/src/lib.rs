//! One threshold signer's logic, as a sans-IO state machine.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod config;
mod error;
mod ids;
mod pool;

pub use config::{ConfigError, IdentityKey, Limits, RawDigestPolicy, SignerConfig, WalletConfig};
pub use error::{Error, ErrorCode, InternalFault, PolicyReason, RequestPart, recovery_str};
pub use ids::{
    CommitmentHash, CoordinatorId, Epoch, InvalidWalletId, PackageHash, Timestamp, WalletId,
};
