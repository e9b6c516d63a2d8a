//! Key providers: where the key-encryption key (KEK) lives.
//!
//! The store never sees a KEK directly. It asks a [`KeyProvider`] to wrap a
//! data key (DEK) under a named KEK, or to unwrap one, and to name its current
//! KEK. Providers that hold the key bytes themselves (`env`, `file`, and a
//! `command` that prints a key) wrap locally with XChaCha20-Poly1305
//! ([`LocalKek`]); a `command` provider in wrap mode hands the DEK to the KMS,
//! so the KEK never leaves it.
//!
//! Providers are slow or unreachable at times (a KMS outage). The store calls
//! them only at open, from the key manager, and from operator commands, never
//! on the signing path (DESIGN.md invariant I3).
//!
//! Configuration: the `[key_provider]` section deserializes into
//! [`KeyProviderSection`] (unknown fields refused), which
//! [`KeyProviderSection::validate`] turns into a [`KeyProviderConfig`]
//! ([`KeyProviderConfig::from_toml`] does both from a whole document).
//! [`KeyProviderConfig::open`] builds the [`ConfiguredProvider`], reading any
//! environment variables then and never later;
//! [`KeyProviderConfig::open_with`] takes the variables from an
//! [`Environment`] instead, for tests. Every failure is a [`ProviderError`]
//! whose [`ProviderError::recovery`] says whether a retry can succeed
//! (invariant I6). Operators' documentation: `docs/key-providers.md`.
//!
//! With the `test-util` feature, `MemoryProvider` is a scriptable test
//! double and `check_provider` the conformance checks every implementation
//! is tested against.

mod command;
mod config;
#[cfg(any(test, feature = "test-util"))]
#[allow(
    clippy::expect_used,
    clippy::panic,
    reason = "a test helper: a broken rule fails the test that called it"
)]
mod conformance;
mod env;
mod error;
mod file;
mod keytext;
mod local;
#[cfg(any(test, feature = "test-util"))]
#[allow(
    clippy::expect_used,
    reason = "a test double: a bad argument is a bug in the test that set it up"
)]
mod memory;

use std::fmt;

use zeroize::Zeroizing;

pub use config::{
    CommandMode, ConfiguredProvider, Environment, KeyProviderConfig, KeyProviderSection,
    ProcessEnvironment, ProviderKind, RecoveryPublicKey,
};
#[cfg(any(test, feature = "test-util"))]
pub use conformance::check_provider;
pub use error::{
    CommandFailure, ConfigProblem, KeyFileProblem, KeyOrigin, KeyProblem, OutputProblem,
    ProviderError, RefusalCode,
};
pub use local::{KEK_LEN, LocalKek};
#[cfg(any(test, feature = "test-util"))]
pub use memory::MemoryProvider;

/// The name of one version of a key-encryption key, as its provider names it.
///
/// Ids are public (they are stored beside every wrapped DEK and shown by
/// `keys status`); they never contain key material.
///
/// # Invariants
/// Between 1 and [`KekId::MAX_LEN`] bytes of printable ASCII without spaces.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KekId(String);

impl KekId {
    /// The longest id accepted, in bytes.
    pub const MAX_LEN: usize = 128;

    /// Validates a provider's id.
    ///
    /// # Errors
    /// [`InvalidKekId`] when the id is empty, too long, or has a byte outside
    /// printable ASCII (`!` to `~`).
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidKekId> {
        let id = id.into();
        let printable = id.bytes().all(|b| b.is_ascii_graphic());
        if id.is_empty() || id.len() > Self::MAX_LEN || !printable {
            return Err(InvalidKekId);
        }
        Ok(Self(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for KekId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KekId({})", self.0)
    }
}

impl fmt::Display for KekId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A key id that is empty, too long, or not printable ASCII.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a key id must be 1 to 128 bytes of printable ASCII without spaces")]
pub struct InvalidKekId;

/// The source of the store's key-encryption key.
///
/// Implementations must be safe to call from several threads; each call may
/// block (a KMS round trip) and must give up after its configured timeout.
pub trait KeyProvider: Send + Sync {
    /// The id of the provider's current KEK.
    ///
    /// The key manager polls this to notice a rotation, so it should be
    /// cheap and must not reveal key material.
    ///
    /// # Errors
    /// See [`ProviderError`]; every error says whether a retry can succeed.
    fn current_kek_id(&self) -> Result<KekId, ProviderError>;

    /// Wraps `plaintext` (a DEK) under the KEK named `kek`.
    ///
    /// # Errors
    /// [`ProviderError::UnknownKek`] when the provider does not have that
    /// version; otherwise as for [`KeyProvider::current_kek_id`].
    fn wrap(&self, kek: &KekId, plaintext: &[u8]) -> Result<Vec<u8>, ProviderError>;

    /// Unwraps what [`KeyProvider::wrap`] returned under the same `kek`.
    ///
    /// # Errors
    /// [`ProviderError::WrongKek`] when the ciphertext does not authenticate
    /// under that KEK, [`ProviderError::UnknownKek`] when the provider no
    /// longer has that version.
    fn unwrap(&self, kek: &KekId, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, ProviderError>;
}
