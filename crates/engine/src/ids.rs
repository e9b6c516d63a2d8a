//! Identifier newtypes and the engine's notion of time.
//!
//! Every id the engine handles has its own type, so a seat can never be
//! passed where an epoch is expected, and hashes of different things cannot
//! be confused.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The id of a wallet, as the signer's configuration names it.
///
/// # Invariants
/// Between 1 and [`WalletId::MAX_LEN`] bytes of `[A-Za-z0-9._-]`, so it is
/// safe in logs, file names and metric labels.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WalletId(String);

impl WalletId {
    /// The longest wallet id accepted, in bytes.
    pub const MAX_LEN: usize = 64;

    /// Validates a wallet id.
    ///
    /// # Errors
    /// [`InvalidWalletId`] when the id is empty, too long or has a character
    /// outside `[A-Za-z0-9._-]`.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidWalletId> {
        let id = id.into();
        let allowed = id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if id.is_empty() || id.len() > Self::MAX_LEN || !allowed {
            return Err(InvalidWalletId);
        }
        Ok(Self(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The store's key for this wallet (the id's bytes; both bound ids to
    /// 64 bytes, so the conversion cannot fail for a valid id).
    pub(crate) fn store_id(&self) -> Result<thresig_store::WalletId, crate::Error> {
        thresig_store::WalletId::new(self.0.as_bytes())
            .map_err(|_| crate::Error::Internal(crate::InternalFault::Serialization))
    }
}

impl TryFrom<String> for WalletId {
    type Error = InvalidWalletId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<WalletId> for String {
    fn from(value: WalletId) -> Self {
        value.0
    }
}

impl fmt::Debug for WalletId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WalletId({})", self.0)
    }
}

impl fmt::Display for WalletId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A wallet id that is empty, too long or has a disallowed character.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a wallet id must be 1 to 64 characters of [A-Za-z0-9._-]")]
pub struct InvalidWalletId;

/// A wallet epoch, as requests carry it: the generation of the wallet's key
/// shares (DESIGN.md §4), [`Epoch::INITIAL`] after the DKG. Only group
/// protocols change it (a refresh switch or a rekey step adds one), so it is
/// the same at every member, and a request of another epoch is recognised
/// as stale.
///
/// It is not the store's epoch of the wallet ([`thresig_store::Epoch`]):
/// that one moves with each member's own key rotations and policy changes,
/// seals the member's records against rollback, and never crosses the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Epoch(pub u64);

impl Epoch {
    /// The epoch of the key shares a DKG (or an imported key) makes.
    pub const INITIAL: Self = Self(0);
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "epoch {}", self.0)
    }
}

/// The authenticated identity of whoever sent a request (a coordinator),
/// as the transport layer established it (its Ed25519 identity key).
///
/// The engine uses it only to account for live nonces per coordinator; it
/// never trusts a coordinator for safety.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CoordinatorId(#[serde(with = "hex::serde")] pub [u8; 32]);

impl fmt::Debug for CoordinatorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CoordinatorId({})", short_hex(&self.0))
    }
}

/// The first eight bytes of `bytes` in hex, for `Debug` output.
fn short_hex(bytes: &[u8]) -> String {
    hex::encode(bytes.get(..8).unwrap_or(bytes))
}

/// A point in time, in milliseconds since the Unix epoch, as the caller's
/// clock reports it.
///
/// The engine never reads a clock: every operation that depends on time
/// takes `now` as an argument, so tests drive a virtual clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// This time in whole seconds, as the store keeps expiry times.
    pub fn to_store(self) -> thresig_store::Timestamp {
        thresig_store::Timestamp(self.0 / 1000)
    }

    /// This time plus `d`, saturating at the end of time.
    pub fn saturating_add(self, d: Duration) -> Self {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(ms))
    }
}
