//! Id newtypes for everything the store keys records by.
//!
//! The store does not interpret wallet ids, DKG session ids or policy keys:
//! the engine chooses them. It only bounds their length, because they are
//! part of record keys and of the associated data of every sealed value.

use std::fmt;

/// An id given to the store that is empty or longer than allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind} must be 1 to {max} bytes")]
pub struct InvalidId {
    /// Which kind of id was refused.
    pub kind: &'static str,
    /// The longest accepted length, in bytes.
    pub max: usize,
}

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
    /// A wallet, as the engine names it.
    WalletId,
    "a wallet id"
);
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
    /// A security epoch. The global counter and every wallet's epoch are
    /// values of this type (DESIGN.md invariant I5).
    Epoch
);
number_id!(
    /// The position of an audit entry; assigned by the writer, gapless from 1.
    AuditSeq
);
number_id!(
    /// Seconds since the Unix epoch. The engine passes time in (it reads no
    /// clock), so marker expiry uses this rather than `SystemTime`.
    Timestamp
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_ids_are_bounded() {
        assert!(WalletId::new(Vec::new()).is_err());
        assert!(WalletId::new(vec![1; 65]).is_err());
        let id = WalletId::new(vec![0xab; 64]).unwrap();
        assert_eq!(id.as_bytes().len(), 64);
        assert_eq!(format!("{}", WalletId::new(vec![1, 2]).unwrap()), "0102");
    }
}
