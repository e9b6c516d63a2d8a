//! The signer's encrypted state: small sealed records in one database, an
//! envelope-encryption keyring, and the key providers that hold its KEK.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod error;
pub mod provider;

pub use error::Recovery;
