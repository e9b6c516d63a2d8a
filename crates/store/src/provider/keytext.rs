//! Reading key values: text decoding (hex or base64), derived key ids and
//! size-capped reads into zeroized buffers.

use std::io::{self, Read};

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{KEK_LEN, KekId, KeyOrigin, KeyProblem, LocalKek, ProviderError};

/// Standard-alphabet base64 that accepts the value with or without `=`
/// padding, since operators paste keys both ways.
pub(crate) const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes a key from its text form.
///
/// Surrounding ASCII whitespace (a trailing newline) is ignored. A value made
/// only of hex digits, of even length, is hex; anything else is standard
/// base64. A valid 32-byte key is never ambiguous: its hex form has 64
/// characters, its base64 form 43 (odd) or 44 ending in `=` (not hex).
///
/// # Errors
/// [`ProviderError::BadKey`] with [`KeyProblem::Empty`], `TooShort`,
/// `TooLong`, `Malformed` or `AllZero`; never containing the value.
pub(crate) fn decode_key(
    text: &[u8],
    origin: impl FnOnce() -> KeyOrigin,
) -> Result<Zeroizing<[u8; KEK_LEN]>, ProviderError> {
    decode_key_bytes(text).map_err(|problem| ProviderError::BadKey {
        origin: origin(),
        problem,
    })
}

fn decode_key_bytes(text: &[u8]) -> Result<Zeroizing<[u8; KEK_LEN]>, KeyProblem> {
    let text = text.trim_ascii();
    if text.is_empty() {
        return Err(KeyProblem::Empty);
    }
    let mut key = Zeroizing::new([0u8; KEK_LEN]);
    if text.len().is_multiple_of(2) && text.iter().all(u8::is_ascii_hexdigit) {
        let len = text.len() / 2;
        check_len(len)?;
        hex::decode_to_slice(text, key.as_mut_slice()).map_err(|_| KeyProblem::Malformed)?;
    } else {
        // Room for any decoding of `text`, so the decoder never reallocates
        // (a reallocation would leave an unzeroized copy behind).
        let mut buf = Zeroizing::new(vec![0u8; text.len().div_ceil(4) * 3]);
        let len = BASE64
            .decode_slice(text, buf.as_mut_slice())
            .map_err(|_| KeyProblem::Malformed)?;
        check_len(len)?;
        let decoded = buf.get(..KEK_LEN).ok_or(KeyProblem::Malformed)?;
        key.copy_from_slice(decoded);
    }
    if key.iter().all(|&b| b == 0) {
        return Err(KeyProblem::AllZero);
    }
    Ok(key)
}

fn check_len(len: usize) -> Result<(), KeyProblem> {
    match len.cmp(&KEK_LEN) {
        std::cmp::Ordering::Less => Err(KeyProblem::TooShort { len }),
        std::cmp::Ordering::Greater => Err(KeyProblem::TooLong { len }),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

impl KekId {
    /// The default id of a key: `sha256:` followed by the lowercase hex
    /// SHA-256 of its bytes. A one-way function of a 256-bit random key
    /// reveals nothing about it, and the id changes whenever the key does.
    pub(crate) fn of_key(key: &[u8; KEK_LEN]) -> Self {
        // 7 + 64 printable ASCII bytes: within `KekId`'s invariant.
        Self(format!("sha256:{}", hex::encode(Sha256::digest(key))))
    }
}

/// A [`LocalKek`] from decoded key bytes, named `id` or, without one, by
/// [`KekId::of_key`].
pub(crate) fn local_kek(
    id: Option<&KekId>,
    key: Zeroizing<[u8; KEK_LEN]>,
) -> Result<LocalKek, ProviderError> {
    let id = id.cloned().unwrap_or_else(|| KekId::of_key(&key));
    LocalKek::new(id, key)
}

/// What [`read_capped`] can fail with.
#[derive(Debug)]
pub(crate) enum CappedReadError {
    /// More than the cap was available.
    TooLarge,
    /// The read failed.
    Io(io::ErrorKind),
}

/// Reads all of `reader`, at most `cap` bytes, into a zeroized buffer
/// allocated once (growing a `Vec` would leave copies of secrets in freed
/// memory).
///
/// # Errors
/// [`CappedReadError::TooLarge`] as soon as byte `cap + 1` arrives (the rest
/// is not read); [`CappedReadError::Io`] when a read fails.
pub(crate) fn read_capped(
    mut reader: impl Read,
    cap: usize,
) -> Result<Zeroizing<Vec<u8>>, CappedReadError> {
    let mut buf = Zeroizing::new(vec![0u8; cap.saturating_add(1)]);
    let mut filled = 0;
    while let Some(space) = buf.get_mut(filled..) {
        if space.is_empty() {
            break;
        }
        match reader.read(space) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(CappedReadError::Io(e.kind())),
        }
    }
    if filled > cap {
        return Err(CappedReadError::TooLarge);
    }
    buf.truncate(filled);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(text: &str) -> Result<[u8; KEK_LEN], KeyProblem> {
        decode_key_bytes(text.as_bytes()).map(|k| *k)
    }

    #[test]
    fn hex_and_base64_decode_to_the_same_key() {
        let key: [u8; KEK_LEN] = std::array::from_fn(|i| i as u8 + 1);
        let hex_text = hex::encode(key);
        let b64 = base64::engine::general_purpose::STANDARD.encode(key);
        assert_eq!(decode(&hex_text).unwrap(), key);
        assert_eq!(decode(&hex_text.to_uppercase()).unwrap(), key);
        assert_eq!(decode(&format!("{hex_text}\n")).unwrap(), key);
        assert_eq!(decode(&b64).unwrap(), key);
        assert_eq!(decode(b64.trim_end_matches('=')).unwrap(), key);
    }

    #[test]
    fn each_bad_value_has_its_own_problem() {
        assert_eq!(decode(" \n"), Err(KeyProblem::Empty));
        assert_eq!(
            decode(&"ab".repeat(31)),
            Err(KeyProblem::TooShort { len: 31 })
        );
        assert_eq!(
            decode(&"ab".repeat(33)),
            Err(KeyProblem::TooLong { len: 33 })
        );
        let short_b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        assert_eq!(decode(&short_b64), Err(KeyProblem::TooShort { len: 16 }));
        assert_eq!(decode("not a key!"), Err(KeyProblem::Malformed));
        assert_eq!(decode(&"00".repeat(32)), Err(KeyProblem::AllZero));
    }

    #[test]
    fn derived_id_is_sha256_of_the_key() {
        let id = KekId::of_key(&[0u8; KEK_LEN]);
        // SHA-256 of 32 zero bytes (a published constant).
        assert_eq!(
            id.as_str(),
            "sha256:66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
        assert!(KekId::new(id.as_str()).is_ok());
    }

    #[test]
    fn capped_read_refuses_one_byte_more() {
        assert_eq!(read_capped(&[1u8; 8][..], 8).unwrap().as_slice(), &[1u8; 8]);
        assert!(matches!(
            read_capped(&[1u8; 9][..], 8),
            Err(CappedReadError::TooLarge)
        ));
    }
}
