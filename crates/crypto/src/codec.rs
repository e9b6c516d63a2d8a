//! One byte codec for the frost message types this crate wraps.
//!
//! Encoding writes into a buffer allocated once at its exact final size and
//! wiped on drop, so no reallocation leaves an unwiped copy of a secret in
//! freed memory (postcard's own `to_allocvec`, behind frost's `serialize`,
//! grows its buffer and frees the smaller ones as they are). Decoding accepts
//! only canonical bytes: the value must re-encode to exactly the input, so
//! two different byte strings never decode to the same value (callers hash
//! these bytes to key nonces and retries). A DKG round-1 package is decoded
//! by `wire.rs` instead, which reads frost's layout and refuses the same
//! inputs (and counts of more than 16,383 points) without encoding the
//! package again (a field inversion a point).

use frost_secp256k1_tr::Error as FrostError;
use frost_secp256k1_tr::keys::KeyPackage;
#[cfg(test)]
use frost_secp256k1_tr::keys::dkg::round1;
use frost_secp256k1_tr::keys::dkg::round2;
use zeroize::Zeroizing;

/// postcard encoding (frost's format) into an exact-size wiped-on-drop buffer.
pub(crate) fn encode_exact<T: serde::Serialize>(
    value: &T,
) -> Result<Zeroizing<Vec<u8>>, FrostError> {
    let size = postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default())
        .map_err(|_| FrostError::SerializationError)?;
    let mut out = Zeroizing::new(vec![0u8; size]);
    let written = postcard::to_slice(value, &mut out)
        .map_err(|_| FrostError::SerializationError)?
        .len();
    if written != size {
        return Err(FrostError::SerializationError);
    }
    Ok(out)
}

/// frost's `deserialize`, accepting only bytes that re-encode identically.
pub(crate) trait FrostCodec: Sized + serde::Serialize {
    /// frost's own decoding, which tolerates trailing bytes and repeated map keys.
    fn decode_any(bytes: &[u8]) -> Result<Self, FrostError>;

    /// [`Self::decode_any`], refusing any input but the canonical encoding.
    fn decode(bytes: &[u8]) -> Result<Self, FrostError> {
        let value = Self::decode_any(bytes)?;
        if encode_exact(&value)?.as_slice() != bytes {
            return Err(FrostError::DeserializationError);
        }
        Ok(value)
    }
}

macro_rules! frost_codec {
    ($($inner:ty),*) => {$(
        impl FrostCodec for $inner {
            fn decode_any(bytes: &[u8]) -> Result<Self, FrostError> {
                <$inner>::deserialize(bytes)
            }
        }
    )*};
}
frost_codec!(round2::Package, KeyPackage);
// The reference `wire::parse_round1_package` is tested against.
#[cfg(test)]
frost_codec!(round1::Package);

/// `to_bytes`/`from_bytes` for a newtype over a [`FrostCodec`] type.
macro_rules! codec {
    ($ty:ident, $what:ident, $out:ty, $wrap:expr) => {
        impl $ty {
            /// Encodes the value for sending or storing.
            ///
            /// # Errors
            /// [`Error::Frost`] if frost fails to encode (not expected).
            pub fn to_bytes(&self) -> Result<$out> {
                Ok($wrap(crate::codec::encode_exact(&self.0)?))
            }

            /// Decodes a value received from a peer or read from storage;
            /// only the canonical encoding (as [`Self::to_bytes`] writes it)
            /// is accepted.
            ///
            /// # Errors
            /// [`Error::Decode`] for malformed or non-canonical bytes.
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
