//! Wrapping a DEK under a KEK whose bytes this process holds.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

use super::{KekId, ProviderError};

/// Length of a KEK in bytes.
pub const KEK_LEN: usize = 32;

const NONCE_LEN: usize = 24;

/// Domain separation for KEK wraps, so a wrapped DEK can never be confused
/// with a sealed record even under the same key bytes.
const WRAP_DOMAIN: &[u8] = b"thresig/kek-wrap/v1";

/// A KEK held in memory, zeroized on drop.
///
/// The wrap format is `nonce (24 bytes) || XChaCha20-Poly1305 ciphertext`,
/// with associated data binding the wrap domain and the KEK id, so a DEK
/// wrapped under one id does not unwrap under another id with the same bytes.
pub struct LocalKek {
    id: KekId,
    key: Zeroizing<[u8; KEK_LEN]>,
}

impl LocalKek {
    /// Holds `key` under the name `id`.
    ///
    /// # Errors
    /// [`ProviderError::Misconfigured`] for an all-zero key, which is what
    /// an unset secret usually looks like.
    pub fn new(id: KekId, key: Zeroizing<[u8; KEK_LEN]>) -> Result<Self, ProviderError> {
        if key.iter().all(|&b| b == 0) {
            return Err(ProviderError::Misconfigured {
                reason: format!("key {id} is all zero bytes"),
            });
        }
        Ok(Self { id, key })
    }

    /// This KEK's id.
    pub fn id(&self) -> &KekId {
        &self.id
    }

    fn aad(&self) -> Vec<u8> {
        [WRAP_DOMAIN, b"\0", self.id.as_str().as_bytes()].concat()
    }

    /// Wraps `plaintext` under this KEK with a fresh random nonce.
    ///
    /// # Errors
    /// [`ProviderError::Misconfigured`] only if the AEAD refuses the input
    /// length, which a DEK never reaches.
    pub fn wrap(&self, plaintext: &[u8]) -> Result<Vec<u8>, ProviderError> {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let cipher = XChaCha20Poly1305::new(self.key.as_ref().into());
        let aad = self.aad();
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| ProviderError::Misconfigured {
                reason: "plaintext too long to wrap".to_owned(),
            })?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    /// Unwraps what [`LocalKek::wrap`] returned.
    ///
    /// # Errors
    /// [`ProviderError::WrongKek`] when the bytes are too short or do not
    /// authenticate under this KEK.
    pub fn unwrap(&self, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, ProviderError> {
        let wrong = || ProviderError::WrongKek {
            kek: self.id.clone(),
        };
        let (nonce, sealed) = wrapped.split_at_checked(NONCE_LEN).ok_or_else(wrong)?;
        let cipher = XChaCha20Poly1305::new(self.key.as_ref().into());
        let aad = self.aad();
        cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| wrong())
    }
}

impl std::fmt::Debug for LocalKek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKek")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek(id: &str, byte: u8) -> LocalKek {
        LocalKek::new(KekId::new(id).unwrap(), Zeroizing::new([byte; KEK_LEN])).unwrap()
    }

    #[test]
    fn wrap_round_trips_and_binds_the_id() {
        let a = kek("a", 7);
        let wrapped = a.wrap(b"data key").unwrap();
        assert_eq!(a.unwrap(&wrapped).unwrap().as_slice(), b"data key");
        // Same bytes, other id: the associated data differs, so it must fail.
        assert!(matches!(
            kek("b", 7).unwrap(&wrapped),
            Err(ProviderError::WrongKek { .. })
        ));
        assert!(matches!(
            kek("a", 8).unwrap(&wrapped),
            Err(ProviderError::WrongKek { .. })
        ));
    }

    #[test]
    fn refuses_all_zero_key_and_short_input() {
        let zero = LocalKek::new(KekId::new("z").unwrap(), Zeroizing::new([0; KEK_LEN]));
        assert!(matches!(zero, Err(ProviderError::Misconfigured { .. })));
        assert!(matches!(
            kek("a", 1).unwrap(&[0; 10]),
            Err(ProviderError::WrongKek { .. })
        ));
    }

    #[test]
    fn debug_hides_the_key() {
        let shown = format!("{:?}", kek("a", 0xab));
        assert!(!shown.contains("171") && !shown.contains("ab, "), "{shown}");
    }
}
