//! The member's Ed25519 identity key, sealed in its own store.
//!
//! `thresig init` generates it and writes it as the store metadata record
//! `identity`; the signer reads it at start. It never exists in a file of
//! its own, so it is exactly as protected as the key shares.

use thresig_store::{MetaName, Store};
use zeroize::Zeroizing;

/// The metadata record holding the identity key.
const IDENTITY: &[u8] = b"identity";

/// The name of the identity key's metadata record.
pub(crate) fn meta_name() -> MetaName {
    #[allow(
        clippy::expect_used,
        reason = "a constant of 8 bytes, within MetaName's 1 to 64"
    )]
    MetaName::new(IDENTITY.to_vec()).expect("a constant meta name is valid")
}

/// Why the identity key could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The store holds no identity key: the directory was not made by
    /// `thresig init`.
    #[error("the store holds no identity key (run `thresig init` for this member)")]
    Missing,
    /// The record is not a 32-byte key.
    #[error("the stored identity key record is malformed")]
    Malformed,
    /// The store could not be read.
    #[error("reading the identity key: {0}")]
    Store(#[from] thresig_store::Error),
}

/// Reads the identity key from `store`.
///
/// # Errors
/// [`IdentityError`].
pub(crate) fn load(store: &dyn Store) -> Result<ed25519_dalek::SigningKey, IdentityError> {
    let record = store.meta(&meta_name())?.ok_or(IdentityError::Missing)?;
    let bytes: Zeroizing<[u8; 32]> = Zeroizing::new(
        record
            .as_slice()
            .try_into()
            .map_err(|_| IdentityError::Malformed)?,
    );
    Ok(ed25519_dalek::SigningKey::from_bytes(&bytes))
}
