//! Id newtypes for everything the store keys records by.
//!
//! The store does not interpret DKG session ids or policy keys: the engine
//! chooses them. It only bounds their length, because they are part of
//! record keys and of the associated data of every sealed value. Wallet ids
//! are defined here, with the rules the whole workspace applies to them,
//! because the store is the lowest crate that holds them.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// An id given to the store that is empty or longer than allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind} must be 1 to {max} bytes")]
pub struct InvalidId {
    /// Which kind of id was refused.
    pub kind: &'static str,
    /// The longest accepted length, in bytes.
    pub max: usize,
}

/// The id of a wallet, as the signer's configuration names it.
///
/// # Invariants
/// Between 1 and [`WalletId::MAX_LEN`] bytes of `[A-Za-z0-9._-]`, so it is
/// safe in logs, file names and metric labels. Its bytes are its key in
/// every record of the wallet.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WalletId(String);

impl WalletId {
    /// The longest wallet id accepted, in bytes. One length byte prefixes
    /// the id inside record keys, so it must stay below 256.
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

    /// Validates a wallet id read back from a record key.
    pub(crate) fn from_stored(bytes: &[u8]) -> Option<Self> {
        Self::new(std::str::from_utf8(bytes).ok()?).ok()
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id's bytes, as record keys hold them.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
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

/// Defines a newtype over a bounded, non-empty byte string.
macro_rules! byte_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        ///
        /// # Invariants
        /// Between 1 and [`Self::MAX_LEN`] bytes.
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Vec<u8>);

        impl $name {
            /// The longest id accepted, in bytes. One length byte prefixes
            /// the id inside record keys, so it must stay below 256.
            pub const MAX_LEN: usize = 64;

            /// Validates an id.
            ///
            /// # Errors
            /// [`InvalidId`] when `bytes` is empty or longer than
            /// [`Self::MAX_LEN`].
            pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, InvalidId> {
                let bytes = bytes.into();
                if bytes.is_empty() || bytes.len() > Self::MAX_LEN {
                    return Err(InvalidId { kind: $kind, max: Self::MAX_LEN });
                }
                Ok(Self(bytes))
            }

            /// The id's bytes.
            pub fn as_bytes(&self) -> &[u8] {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), hex::encode(&self.0))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(&self.0))
            }
        }
    };
}

byte_id!(
    /// A DKG session whose result awaits confirmation.
    DkgSessionId,
    "a DKG session id"
);
byte_id!(
    /// The name of one policy counter of a wallet (for example a rate-limit
    /// window).
    PolicyKey,
    "a policy key"
);
byte_id!(
    /// The name of an engine metadata record.
    MetaName,
    "a metadata name"
);

/// Defines a newtype over a 32-byte hash.
macro_rules! hash_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), hex::encode(self.0))
            }
        }
    };
}

hash_id!(
    /// The hash of a signer's round-1 commitment vector: the key of an
    /// attempt marker.
    CommitmentHash
);
hash_id!(
    /// The hash of the signing package a marker's shares answered.
    PackageHash
);

/// Defines a newtype over a `u64` counter.
macro_rules! number_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

number_id!(
    /// The term of a data-encryption key: DEKs are numbered 1, 2, … in the
    /// order they were created. The term is the DEK's id.
    DekTerm
);
number_id!(
    /// An epoch of this member's own records (DESIGN.md invariant I5): the
    /// global counter and every wallet's record epoch are values of this
    /// type, and records are sealed under them against rollback. It moves
    /// with the member's own key rotations and policy changes, so it differs
    /// between members and never crosses the wire; it is not the wallet
    /// epoch requests carry (the engine's `WalletEpoch`), nor the number a
    /// key package is kept under ([`KeyEpoch`]).
    RecordEpoch
);
number_id!(
    /// The number a wallet's key package is kept under. The engine keeps
    /// the key package of wallet epoch `e` at `e + 1` (the DKG's at 1); it
    /// is neither the wallet epoch itself nor this member's [`RecordEpoch`],
    /// and its own type keeps it from being swapped with either. On disk it
    /// is the same big-endian `u64` suffix of the key-package key as before.
    KeyEpoch
);
number_id!(
    /// The position of an audit entry; assigned by the writer, gapless from 1.
    AuditSeq
);

/// A point in time, in milliseconds since the Unix epoch, as the caller's
/// clock reports it.
///
/// The engine never reads a clock: every operation that depends on time
/// takes `now` as an argument, so tests drive a virtual clock. The store
/// keeps marker expiry times in whole seconds on disk (the format since
/// schema 1); [`Timestamp::whole_secs`] and
/// [`Timestamp::from_stored_secs`] are its conversions, at the store's
/// encoding boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// This time plus `d`, saturating at the end of time.
    pub fn saturating_add(self, d: Duration) -> Self {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(ms))
    }

    /// This time in whole seconds (rounded down): as records and the
    /// marker-expiry index hold it, and as a policy or a log line counts
    /// Unix time.
    #[must_use]
    pub fn whole_secs(self) -> u64 {
        self.0 / 1000
    }

    /// The time a record's whole seconds name.
    pub(crate) fn from_stored_secs(secs: u64) -> Self {
        Self(secs.saturating_mul(1000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_secs_round_down() {
        assert_eq!(Timestamp(1_999).whole_secs(), 1);
        assert_eq!(Timestamp(2_000).whole_secs(), 2);
        assert_eq!(Timestamp::from_stored_secs(7).whole_secs(), 7);
    }

    #[test]
    fn byte_ids_are_bounded() {
        assert!(PolicyKey::new(Vec::new()).is_err());
        assert!(PolicyKey::new(vec![1; 65]).is_err());
        let id = PolicyKey::new(vec![0xab; 64]).unwrap();
        assert_eq!(id.as_bytes().len(), 64);
        assert_eq!(format!("{}", PolicyKey::new(vec![1, 2]).unwrap()), "0102");
    }

    #[test]
    fn wallet_ids_are_bounded_printable_names() {
        assert!(WalletId::new("").is_err());
        assert!(WalletId::new("a".repeat(65)).is_err());
        assert!(WalletId::new("w 1").is_err());
        assert_eq!(WalletId::new("a".repeat(64)).unwrap().as_bytes().len(), 64);
        assert_eq!(
            WalletId::from_stored(b"w-1.a_B").unwrap().as_str(),
            "w-1.a_B"
        );
        assert_eq!(WalletId::from_stored(&[b'w', 1]), None);
        assert_eq!(WalletId::from_stored(&[0xff]), None);
    }
}
