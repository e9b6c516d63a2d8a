//! Sealing record values with XChaCha20-Poly1305 under a DEK.
//!
//! A sealed value is `header || nonce || ciphertext`. The header names, in
//! clear, what the value claims to be: table, DEK term, epoch, and the hash
//! of its record key. The associated data is the schema version followed by
//! the header, so the AEAD tag authenticates all of it. Opening compares the
//! header with what the reader expects (table, key, epoch) before decrypting;
//! when that or the decryption fails, the header tells the three failures
//! apart: a value moved from another key, an older ciphertext put back, or
//! altered bytes.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::ids::{DekTerm, RecordEpoch};
use crate::schema::{RecordTable, SCHEMA_VERSION};

/// Length of a DEK in bytes.
pub(crate) const DEK_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const ENVELOPE_VERSION: u8 = 1;
const HEADER_LEN: usize = 1 + 1 + 8 + 8 + 32;
const DOMAIN: &[u8] = b"thresig/record/v1\0";

/// A data-encryption key: 32 random bytes and the term that names it.
///
/// Zeroized on drop; `Debug` shows only the term.
pub(crate) struct Dek {
    term: DekTerm,
    key: Zeroizing<[u8; DEK_LEN]>,
}

impl std::fmt::Debug for Dek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dek")
            .field("term", &self.term)
            .finish_non_exhaustive()
    }
}

/// What the header of a sealed value claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) table: u8,
    pub(crate) term: DekTerm,
    pub(crate) epoch: RecordEpoch,
    pub(crate) key_hash: [u8; 32],
}

impl Header {
    fn new(table: RecordTable, term: DekTerm, epoch: RecordEpoch, key: &[u8]) -> Self {
        Self {
            table: table.id(),
            term,
            epoch,
            key_hash: Sha256::digest(key).into(),
        }
    }

    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let parts: [&[u8]; 5] = [
            &[ENVELOPE_VERSION],
            &[self.table],
            &self.term.0.to_be_bytes(),
            &self.epoch.0.to_be_bytes(),
            &self.key_hash,
        ];
        let mut at = 0;
        for part in parts {
            if let Some(dst) = out.get_mut(at..at + part.len()) {
                dst.copy_from_slice(part);
            }
            at += part.len();
        }
        out
    }

    /// Parses the header and splits off nonce and ciphertext.
    pub(crate) fn parse(sealed: &[u8]) -> Option<(Self, &[u8], &[u8])> {
        let (&version, rest) = sealed.split_first()?;
        if version != ENVELOPE_VERSION {
            return None;
        }
        let (&table, rest) = rest.split_first()?;
        let (term, rest) = rest.split_first_chunk::<8>()?;
        let (epoch, rest) = rest.split_first_chunk::<8>()?;
        let (key_hash, rest) = rest.split_first_chunk::<32>()?;
        let (nonce, ct) = rest.split_at_checked(NONCE_LEN)?;
        Some((
            Self {
                table,
                term: DekTerm(u64::from_be_bytes(*term)),
                epoch: RecordEpoch(u64::from_be_bytes(*epoch)),
                key_hash: *key_hash,
            },
            nonce,
            ct,
        ))
    }

    fn aad(&self) -> Vec<u8> {
        [DOMAIN, &SCHEMA_VERSION.to_be_bytes(), &self.encode()].concat()
    }
}

/// Why a sealed value did not open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpenFailure {
    /// Bytes altered, truncated, or sealed under another key.
    Tampered,
    /// A valid value belonging to another record key or table.
    Moved,
    /// A valid value from an older epoch.
    Stale { found: RecordEpoch },
    /// The value names a DEK the keyring does not hold.
    DekMissing { term: DekTerm },
}

impl Dek {
    /// A fresh random DEK.
    pub(crate) fn generate<R: RngCore + CryptoRng>(term: DekTerm, rng: &mut R) -> Self {
        let mut key = Zeroizing::new([0u8; DEK_LEN]);
        rng.fill_bytes(key.as_mut());
        Self { term, key }
    }

    /// A DEK from unwrapped bytes; `None` if they are not [`DEK_LEN`] long.
    pub(crate) fn from_bytes(term: DekTerm, bytes: &[u8]) -> Option<Self> {
        let mut key = Zeroizing::new([0u8; DEK_LEN]);
        key.as_mut().copy_from_slice(bytes.get(..DEK_LEN)?);
        (bytes.len() == DEK_LEN).then_some(Self { term, key })
    }

    /// This DEK's term.
    pub(crate) fn term(&self) -> DekTerm {
        self.term
    }

    /// The key bytes, for wrapping under a KEK or the recovery key only.
    pub(crate) fn key_bytes(&self) -> &[u8] {
        self.key.as_ref()
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.key.as_ref().into())
    }

    /// Seals `plaintext` as the value of `key` in `table` at `epoch`.
    pub(crate) fn seal<R: RngCore + CryptoRng>(
        &self,
        table: RecordTable,
        key: &[u8],
        epoch: RecordEpoch,
        plaintext: &[u8],
        rng: &mut R,
    ) -> Vec<u8> {
        let header = Header::new(table, self.term, epoch, key);
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let aad = header.aad();
        // XChaCha20-Poly1305 fails only for inputs beyond 2^38 bytes; record
        // values are far smaller, so an empty ciphertext (which would fail to
        // open, never silently pass) is unreachable.
        let ct = self
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        [&header.encode()[..], &nonce, &ct].concat()
    }

    fn decrypt(&self, header: &Header, nonce: &[u8], ct: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let aad = header.aad();
        self.cipher()
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
            .ok()
            .map(Zeroizing::new)
    }
}

/// Opens `sealed`, the stored value of `key` in `table`, expected at
/// `epoch`, with the DEK its header names (looked up through `dek`).
pub(crate) fn open<D: AsRef<Dek>>(
    dek: impl Fn(DekTerm) -> Option<D>,
    table: RecordTable,
    key: &[u8],
    epoch: RecordEpoch,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, OpenFailure> {
    let (claimed, nonce, ct) = Header::parse(sealed).ok_or(OpenFailure::Tampered)?;
    let dek = dek(claimed.term).ok_or(OpenFailure::DekMissing { term: claimed.term })?;
    let dek = dek.as_ref();
    let expected = Header::new(table, claimed.term, epoch, key);
    if claimed == expected {
        return dek
            .decrypt(&expected, nonce, ct)
            .ok_or(OpenFailure::Tampered);
    }
    // The header differs from what this record must be. If it authenticates
    // as written, it is a genuine value from elsewhere: say where.
    if dek.decrypt(&claimed, nonce, ct).is_none() {
        return Err(OpenFailure::Tampered);
    }
    if claimed.table == expected.table
        && claimed.key_hash == expected.key_hash
        && claimed.epoch < epoch
    {
        return Err(OpenFailure::Stale {
            found: claimed.epoch,
        });
    }
    Err(OpenFailure::Moved)
}

/// The DEK term a sealed value names, if its header parses.
pub(crate) fn sealed_term(sealed: &[u8]) -> Option<DekTerm> {
    Header::parse(sealed).map(|(h, _, _)| h.term)
}

impl AsRef<Dek> for Dek {
    fn as_ref(&self) -> &Dek {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    fn dek(term: u64) -> Dek {
        Dek::generate(DekTerm(term), &mut OsRng)
    }

    #[test]
    fn seal_open_and_diagnose() {
        let d = dek(1);
        let lookup = |t: DekTerm| (t == DekTerm(1)).then_some(&d);
        let s = d.seal(RecordTable::Wallets, b"k", RecordEpoch(5), b"v", &mut OsRng);
        let v = open(lookup, RecordTable::Wallets, b"k", RecordEpoch(5), &s).unwrap();
        assert_eq!(v.as_slice(), b"v");
        assert_eq!(
            open(lookup, RecordTable::Wallets, b"other", RecordEpoch(5), &s),
            Err(OpenFailure::Moved)
        );
        assert_eq!(
            open(lookup, RecordTable::Policy, b"k", RecordEpoch(5), &s),
            Err(OpenFailure::Moved)
        );
        assert_eq!(
            open(lookup, RecordTable::Wallets, b"k", RecordEpoch(6), &s),
            Err(OpenFailure::Stale {
                found: RecordEpoch(5)
            })
        );
        let mut bad = s.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(
            open(lookup, RecordTable::Wallets, b"k", RecordEpoch(5), &bad),
            Err(OpenFailure::Tampered)
        );
        let other = dek(2);
        let s2 = other.seal(RecordTable::Wallets, b"k", RecordEpoch(5), b"v", &mut OsRng);
        assert_eq!(
            open(lookup, RecordTable::Wallets, b"k", RecordEpoch(5), &s2),
            Err(OpenFailure::DekMissing { term: DekTerm(2) })
        );
        // A header rewritten to claim another DEK does not authenticate.
        let wrong_key = dek(1);
        let lookup2 = |t: DekTerm| (t == DekTerm(1)).then_some(&wrong_key);
        assert_eq!(
            open(lookup2, RecordTable::Wallets, b"k", RecordEpoch(5), &s),
            Err(OpenFailure::Tampered)
        );
    }

    #[test]
    fn debug_hides_key() {
        let shown = format!("{:?}", dek(3));
        assert_eq!(shown, "Dek { term: DekTerm(3), .. }");
    }
}
