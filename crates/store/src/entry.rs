//! Keyring entries as stored: a DEK wrapped under one or more KEKs, and
//! optionally to the offline recovery public key.
//!
//! An entry is JSON (`docs/storage-format.md`). Its wraps are authenticated
//! by their KEK (or by HPKE), and the entry as a whole by `check`: a value
//! sealed under the DEK itself, with the term in its associated data. So a
//! wrap moved from another entry, or bytes altered in any field, make the
//! entry fail to authenticate after unwrapping, which refuses the open (I4).

use hpke::aead::ChaCha20Poly1305 as HpkeAead;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{Error, Recovery};
use crate::ids::{DekTerm, RecordEpoch};
use crate::provider::{KekId, KeyProvider, ProviderError};
use crate::schema::RecordTable;
use crate::seal::{DEK_LEN, Dek, open};

const RECOVERY_INFO: &[u8] = b"thresig/recovery-wrap/v1";

/// The offline recovery public key (X25519), set at init. Every DEK is also
/// wrapped to it, so a lost KEK is not a lost signer.
#[derive(Clone, PartialEq, Eq)]
pub struct RecoveryPublicKey([u8; 32]);

impl RecoveryPublicKey {
    /// Validates 32 bytes as an X25519 public key.
    ///
    /// # Errors
    /// [`InvalidRecoveryKey`] when the bytes are not a usable key.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, InvalidRecoveryKey> {
        <X25519HkdfSha256 as hpke::Kem>::PublicKey::from_bytes(&bytes)
            .map_err(|_| InvalidRecoveryKey)?;
        Ok(Self(bytes))
    }

    /// The key's bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }
}

impl std::fmt::Debug for RecoveryPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecoveryPublicKey({})", hex::encode(self.0))
    }
}

/// The offline recovery private key, used only by `keys recover`.
/// Zeroized on drop; `Debug` hides it.
pub struct RecoverySecretKey(Zeroizing<[u8; 32]>);

impl RecoverySecretKey {
    /// Wraps 32 secret bytes.
    pub fn from_bytes(bytes: Zeroizing<[u8; 32]>) -> Self {
        Self(bytes)
    }

    /// Generates a fresh recovery key pair (for `init` and tests).
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> (Self, RecoveryPublicKey) {
        let (sk, pk) = X25519HkdfSha256::gen_keypair(rng);
        let sk_bytes = Zeroizing::new(<[u8; 32]>::from(sk.to_bytes()));
        (Self(sk_bytes), RecoveryPublicKey(pk.to_bytes().into()))
    }
}

impl std::fmt::Debug for RecoverySecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecoverySecretKey(..)")
    }
}

/// Bytes that are not an X25519 public key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a valid X25519 recovery public key")]
pub struct InvalidRecoveryKey;

/// Whether a DEK may still be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DekState {
    /// Unwrapped at open; may be current.
    Active,
    /// No record names it; its wraps are deleted.
    Retired,
}

/// One wrap of a DEK under a KEK.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct StoredWrap {
    pub(crate) kek: String,
    pub(crate) wrapped: String,
}

/// An HPKE wrap of a DEK to the recovery public key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct StoredRecovery {
    pub(crate) enc: String,
    pub(crate) ct: String,
}

/// A keyring entry as stored in the `keyring` table.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoredEntry {
    pub(crate) term: u64,
    pub(crate) state: DekState,
    pub(crate) wraps: Vec<StoredWrap>,
    pub(crate) recovery: Option<StoredRecovery>,
    pub(crate) check: String,
}

impl StoredEntry {
    /// A new active entry for `dek`, with the given wraps already made.
    pub(crate) fn new<R: RngCore + CryptoRng>(
        dek: &Dek,
        wraps: Vec<(KekId, Vec<u8>)>,
        recovery: Option<&RecoveryPublicKey>,
        rng: &mut R,
    ) -> Result<Self, Error> {
        let recovery = recovery.map(|pk| recovery_wrap(dek, pk, rng)).transpose()?;
        let check = dek.seal(
            RecordTable::KeyringCheck,
            &dek.term().0.to_be_bytes(),
            RecordEpoch(0),
            &[],
            rng,
        );
        Ok(Self {
            term: dek.term().0,
            state: DekState::Active,
            wraps: wraps
                .into_iter()
                .map(|(kek, w)| StoredWrap {
                    kek: kek.as_str().to_owned(),
                    wrapped: hex::encode(w),
                })
                .collect(),
            recovery,
            check: hex::encode(check),
        })
    }

    /// A tombstone for a retired DEK: no key material remains.
    pub(crate) fn retired(term: DekTerm) -> Self {
        Self {
            term: term.0,
            state: DekState::Retired,
            wraps: Vec::new(),
            recovery: None,
            check: String::new(),
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        // Serializing these plain structs to JSON cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub(crate) fn decode(term: DekTerm, bytes: &[u8]) -> Result<Self, Error> {
        let entry: Self =
            serde_json::from_slice(bytes).map_err(|_| Error::keyring_corrupt(term))?;
        if entry.term != term.0 {
            return Err(Error::keyring_corrupt(term));
        }
        Ok(entry)
    }

    pub(crate) fn term(&self) -> DekTerm {
        DekTerm(self.term)
    }

    /// The KEKs this entry is wrapped under.
    pub(crate) fn keks(&self) -> Result<Vec<KekId>, Error> {
        self.wraps
            .iter()
            .map(|w| KekId::new(w.kek.clone()).map_err(|_| Error::keyring_corrupt(self.term())))
            .collect()
    }

    /// Whether a wrap under `kek` exists.
    pub(crate) fn has_wrap(&self, kek: &KekId) -> bool {
        self.wraps.iter().any(|w| w.kek == kek.as_str())
    }

    /// Unwraps the DEK through the provider, preferring `preferred`, and
    /// authenticates the entry.
    ///
    /// # Errors
    /// [`Error::WrongKek`], [`Error::KekUnavailable`], [`Error::Provider`]
    /// (retryable when the provider is unreachable; terminal when it unwraps
    /// to a key of the wrong length), [`Error::KeyringCorrupt`].
    pub(crate) fn unwrap_with(
        &self,
        provider: &dyn KeyProvider,
        preferred: Option<&KekId>,
    ) -> Result<Dek, Error> {
        let term = self.term();
        let corrupt = || Error::keyring_corrupt(term);
        let mut wraps = self.wraps.clone();
        wraps.sort_by_key(|w| Some(w.kek.as_str()) != preferred.map(KekId::as_str));
        let mut last = None;
        // A retryable failure on any wrap wins over a terminal one on
        // another: a retry may succeed through that wrap (I6).
        let mut retryable = None;
        for wrap in &wraps {
            let kek = KekId::new(wrap.kek.clone()).map_err(|_| corrupt())?;
            let bytes = hex::decode(&wrap.wrapped).map_err(|_| corrupt())?;
            match provider.unwrap(&kek, &bytes) {
                // Every wrap holds a DEK_LEN-byte key: another length is the
                // provider's answer gone wrong, not a corrupt entry.
                Ok(plain) if plain.len() != DEK_LEN => {
                    last = Some(ProviderError::UnwrappedLength {
                        kek,
                        len: plain.len(),
                    });
                }
                Ok(plain) => return self.authenticate(&plain),
                Err(e) if e.recovery() == Recovery::Retryable => retryable = Some(e),
                Err(e) => last = Some(e),
            }
        }
        if let Some(e) = retryable {
            return Err(Error::Provider(e));
        }
        Err(match last {
            Some(ProviderError::WrongKek { kek }) => Error::WrongKek { term, kek },
            Some(ProviderError::UnknownKek { .. }) | None => Error::KekUnavailable {
                term,
                keks: self.keks()?,
            },
            Some(other) => Error::Provider(other),
        })
    }

    /// Unwraps the DEK with the offline recovery key.
    ///
    /// # Errors
    /// [`Error::RecoveryFailed`] when the entry has no recovery wrap or it
    /// does not open; [`Error::KeyringCorrupt`] when the entry fails its check.
    pub(crate) fn unwrap_recovery(&self, sk: &RecoverySecretKey) -> Result<Dek, Error> {
        let term = self.term();
        let failed = || Error::RecoveryFailed { term };
        let rec = self.recovery.as_ref().ok_or_else(failed)?;
        let enc = hex::decode(&rec.enc).map_err(|_| failed())?;
        let ct = hex::decode(&rec.ct).map_err(|_| failed())?;
        let sk = <X25519HkdfSha256 as hpke::Kem>::PrivateKey::from_bytes(sk.0.as_ref())
            .map_err(|_| failed())?;
        let enc =
            <X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(&enc).map_err(|_| failed())?;
        let plain = hpke::single_shot_open::<HpkeAead, HkdfSha256, X25519HkdfSha256>(
            &OpModeR::Base,
            &sk,
            &enc,
            RECOVERY_INFO,
            &ct,
            &term.0.to_be_bytes(),
        )
        .map_err(|_| failed())?;
        self.authenticate(&Zeroizing::new(plain))
    }

    fn authenticate(&self, plain: &[u8]) -> Result<Dek, Error> {
        let term = self.term();
        let corrupt = || Error::keyring_corrupt(term);
        let dek = Dek::from_bytes(term, plain).ok_or_else(corrupt)?;
        let check = hex::decode(&self.check).map_err(|_| corrupt())?;
        open(
            |t| (t == term).then_some(&dek),
            RecordTable::KeyringCheck,
            &term.0.to_be_bytes(),
            RecordEpoch(0),
            &check,
        )
        .map_err(|_| corrupt())?;
        Ok(dek)
    }

    /// Adds a wrap under `kek` (replacing one under the same id).
    pub(crate) fn add_wrap(&mut self, kek: &KekId, wrapped: &[u8]) {
        self.wraps.retain(|w| w.kek != kek.as_str());
        self.wraps.push(StoredWrap {
            kek: kek.as_str().to_owned(),
            wrapped: hex::encode(wrapped),
        });
    }

    /// Removes every wrap not under `keep`.
    pub(crate) fn keep_only(&mut self, keep: &KekId) {
        self.wraps.retain(|w| w.kek == keep.as_str());
    }
}

fn recovery_wrap<R: RngCore + CryptoRng>(
    dek: &Dek,
    pk: &RecoveryPublicKey,
    rng: &mut R,
) -> Result<StoredRecovery, Error> {
    let failed = || Error::RecoveryFailed { term: dek.term() };
    let pk = <X25519HkdfSha256 as hpke::Kem>::PublicKey::from_bytes(&pk.0).map_err(|_| failed())?;
    let (enc, ct) = hpke::single_shot_seal::<HpkeAead, HkdfSha256, X25519HkdfSha256, R>(
        &OpModeS::Base,
        &pk,
        RECOVERY_INFO,
        dek.key_bytes(),
        &dek.term().0.to_be_bytes(),
        rng,
    )
    .map_err(|_| failed())?;
    debug_assert_eq!(dek.key_bytes().len(), DEK_LEN);
    Ok(StoredRecovery {
        enc: hex::encode(enc.to_bytes()),
        ct: hex::encode(ct),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::MemoryProvider;
    use rand_core::OsRng;

    fn entry(provider: &MemoryProvider, pk: Option<&RecoveryPublicKey>) -> (Dek, StoredEntry) {
        let dek = Dek::generate(DekTerm(4), &mut OsRng);
        let kek = provider.current_kek_id().unwrap();
        let w = provider.wrap(&kek, dek.key_bytes()).unwrap();
        let e = StoredEntry::new(&dek, vec![(kek, w)], pk, &mut OsRng).unwrap();
        (dek, e)
    }

    #[test]
    fn unwraps_through_provider_and_recovery() {
        let provider = MemoryProvider::with_key("k1", 1);
        let (sk, pk) = RecoverySecretKey::generate(&mut OsRng);
        let (dek, e) = entry(&provider, Some(&pk));
        let e = StoredEntry::decode(DekTerm(4), &e.encode()).unwrap();
        let a = e.unwrap_with(&provider, None).unwrap();
        assert_eq!(a.key_bytes(), dek.key_bytes());
        let b = e.unwrap_recovery(&sk).unwrap();
        assert_eq!(b.key_bytes(), dek.key_bytes());
        let (other_sk, _) = RecoverySecretKey::generate(&mut OsRng);
        assert!(matches!(
            e.unwrap_recovery(&other_sk),
            Err(Error::RecoveryFailed { .. })
        ));
    }

    #[test]
    fn wrong_and_missing_keks_are_distinct() {
        let provider = MemoryProvider::with_key("k1", 1);
        let (_, e) = entry(&provider, None);
        let wrong = MemoryProvider::with_key("k1", 2);
        assert!(matches!(
            e.unwrap_with(&wrong, None),
            Err(Error::WrongKek { .. })
        ));
        let gone = MemoryProvider::with_key("k2", 2);
        assert!(matches!(
            gone_result(&e, &gone),
            Err(Error::KekUnavailable { .. })
        ));
    }

    fn gone_result(e: &StoredEntry, p: &MemoryProvider) -> Result<Dek, Error> {
        e.unwrap_with(p, None)
    }

    /// A provider whose unwrap hands back the DEK cut or padded to `len`
    /// bytes, as a broken KMS program might.
    struct MisSized {
        inner: MemoryProvider,
        len: usize,
    }

    impl KeyProvider for MisSized {
        fn current_kek_id(&self) -> Result<KekId, ProviderError> {
            self.inner.current_kek_id()
        }
        fn wrap(&self, kek: &KekId, plaintext: &[u8]) -> Result<Vec<u8>, ProviderError> {
            self.inner.wrap(kek, plaintext)
        }
        fn unwrap(&self, kek: &KekId, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, ProviderError> {
            let mut plain = self.inner.unwrap(kek, wrapped)?;
            plain.resize(self.len, 0);
            Ok(plain)
        }
    }

    #[test]
    fn an_unwrap_of_the_wrong_length_is_the_providers_fault() {
        let provider = MemoryProvider::with_key("k1", 1);
        let (_, e) = entry(&provider, None);
        for len in [0, 31, 33] {
            let broken = MisSized {
                inner: MemoryProvider::with_key("k1", 1),
                len,
            };
            let err = e.unwrap_with(&broken, None).err().unwrap();
            match &err {
                Error::Provider(ProviderError::UnwrappedLength { kek, len: got }) => {
                    assert_eq!(kek.as_str(), "k1");
                    assert_eq!(*got, len);
                }
                other => panic!("expected a provider error, got {other:?}"),
            }
            assert_eq!(err.recovery(), Recovery::Terminal);
        }
    }

    #[test]
    fn swapped_wrap_fails_the_check() {
        let provider = MemoryProvider::with_key("k1", 1);
        let (_, a) = entry(&provider, None);
        let (_, b) = entry(&provider, None);
        let mut mixed = a.clone();
        mixed.wraps = b.wraps.clone();
        assert!(matches!(
            mixed.unwrap_with(&provider, None),
            Err(Error::KeyringCorrupt { .. })
        ));
    }
}
