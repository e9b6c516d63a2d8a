//! One byte codec for every frost message type this crate wraps.

use frost_secp256k1_tr::Error as FrostError;
use frost_secp256k1_tr::keys::dkg::{round1, round2};
use frost_secp256k1_tr::keys::repairable::{Delta, Sigma};
use frost_secp256k1_tr::round1::SigningCommitments;

/// frost's `serialize`/`deserialize`, under one name whatever their signatures.
pub(crate) trait FrostCodec: Sized {
    fn encode(&self) -> Result<Vec<u8>, FrostError>;
    fn decode(bytes: &[u8]) -> Result<Self, FrostError>;
}

macro_rules! fallible {
    ($($inner:ty),*) => {$(
        impl FrostCodec for $inner {
            fn encode(&self) -> Result<Vec<u8>, FrostError> {
                self.serialize()
            }
            fn decode(bytes: &[u8]) -> Result<Self, FrostError> {
                <$inner>::deserialize(bytes)
            }
        }
    )*};
}
fallible!(round1::Package, round2::Package, SigningCommitments);

macro_rules! infallible {
    ($($inner:ty),*) => {$(
        impl FrostCodec for $inner {
            fn encode(&self) -> Result<Vec<u8>, FrostError> {
                Ok(self.serialize())
            }
            fn decode(bytes: &[u8]) -> Result<Self, FrostError> {
                <$inner>::deserialize(bytes)
            }
        }
    )*};
}
infallible!(Delta, Sigma);

/// `to_bytes`/`from_bytes` for a newtype over a [`FrostCodec`] type.
macro_rules! codec {
    ($ty:ident, $what:ident, $out:ty, $wrap:expr) => {
        impl $ty {
            /// Encodes the value for sending or storing.
            ///
            /// # Errors
            /// [`Error::Frost`] if frost fails to encode (not expected).
            pub fn to_bytes(&self) -> Result<$out> {
                Ok($wrap(crate::codec::FrostCodec::encode(&self.0)?))
            }

            /// Decodes a value received from a peer or read from storage.
            ///
            /// # Errors
            /// [`Error::Decode`] for malformed bytes.
            pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
                crate::codec::FrostCodec::decode(bytes)
                    .map(Self)
                    .map_err(|_| Error::Decode {
                        what: Encoding::$what,
                    })
            }
        }
    };
}
pub(crate) use codec;
