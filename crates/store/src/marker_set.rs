//! Marker-set digests: a deleted marker row must be an error, never an
//! absent marker (I4), or one commitment could release shares for a second
//! package.
//!
//! Each wallet's markers are summed up by a [`MarkerDigest`] in the
//! `marker_sets` table: how many there are and the XOR of a keyed tag of
//! each marker key. The tag key is derived from the witness key, so nobody
//! without the store's keys can compute a tag, and the XOR of a wallet's
//! tags changes with any row added or removed behind the store's back. The
//! digests of all wallets, combined, live in the generation record, which
//! every commit rewrites and the witness guards (I5): a wallet's digest put
//! back from an older copy no longer combines to it.
//!
//! The combined digest is checked at open (one read of each wallet's
//! digest); a wallet's own digest against its marker rows when its markers
//! are first used after open (one range read of its keys).

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::Error;
use crate::ids::{RecordEpoch, WalletId};
use crate::records::{Raw, Records, WriteCtx};
use crate::schema::{self, RecordTable, sys};
use crate::sync::{Mutex, lock};

const TAG_DOMAIN: &[u8] = b"thresig/marker-set/v1";

/// A set of marker keys: their number and the XOR of their tags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct MarkerDigest {
    count: u64,
    tags: [u8; 32],
}

/// Whether a marker joins or leaves its set.
#[derive(Clone, Copy, Debug)]
pub(crate) enum MarkerChange {
    Inserted,
    Removed,
}

impl MarkerDigest {
    /// Length of the encoding.
    pub(crate) const LEN: usize = 40;

    /// `count (u64 BE) ‖ tags (32)`.
    pub(crate) fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        let (count, tags) = out.split_at_mut(8);
        count.copy_from_slice(&self.count.to_be_bytes());
        tags.copy_from_slice(&self.tags);
        out
    }

    /// The inverse of [`MarkerDigest::encode`].
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let (count, tags) = bytes.split_first_chunk::<8>()?;
        Some(Self {
            count: u64::from_be_bytes(*count),
            tags: tags.try_into().ok()?,
        })
    }

    fn xor(&mut self, tags: &[u8; 32]) {
        for (a, b) in self.tags.iter_mut().zip(tags) {
            *a ^= b;
        }
    }

    fn apply(&mut self, change: MarkerChange, tag: &[u8; 32]) {
        self.count = match change {
            MarkerChange::Inserted => self.count.wrapping_add(1),
            MarkerChange::Removed => self.count.wrapping_sub(1),
        };
        self.xor(tag);
    }

    fn add(&mut self, other: &Self) {
        self.count = self.count.wrapping_add(other.count);
        self.xor(&other.tags);
    }

    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The key of marker tags, derived from the witness key.
pub(crate) struct TagKey(Zeroizing<[u8; 32]>);

impl TagKey {
    fn tag(&self, marker_key: &[u8]) -> Result<[u8; 32], Error> {
        hmac(self.0.as_ref(), marker_key)
    }
}

fn hmac(key: &[u8], msg: &[u8]) -> Result<[u8; 32], Error> {
    // HMAC accepts keys of any length, so this error is never returned.
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key).map_err(|_| Error::metadata_corrupt("witness_key"))?;
    mac.update(msg);
    Ok(mac.finalize().into_bytes().into())
}

impl<R: Raw> Records<'_, R> {
    /// The key of marker tags: stable across DEK rotations (the witness key
    /// never changes), and secret to the store.
    pub(crate) fn tag_key(&self) -> Result<TagKey, Error> {
        let witness_key = self.required_sys_record(sys::WITNESS_KEY, "witness_key")?;
        Ok(TagKey(Zeroizing::new(hmac(&witness_key, TAG_DOMAIN)?)))
    }

    /// The sealed digest of `wallet`'s markers (empty if none is stored).
    pub(crate) fn marker_digest(&self, wallet: &WalletId) -> Result<MarkerDigest, Error> {
        let Some(value) = self.get(RecordTable::MarkerSets, &schema::wallet_key(wallet))? else {
            return Ok(MarkerDigest::default());
        };
        MarkerDigest::decode(&value).ok_or(Error::record_tampered(
            RecordTable::MarkerSets,
            Some(wallet.clone()),
        ))
    }

    /// The digest of `wallet`'s marker rows as they are stored.
    fn stored_markers(&self, wallet: &WalletId, key: &TagKey) -> Result<MarkerDigest, Error> {
        let mut found = MarkerDigest::default();
        for (marker_key, _) in self
            .raw
            .raw_prefix(RecordTable::Markers, &schema::wallet_prefix(wallet))?
        {
            found.apply(MarkerChange::Inserted, &key.tag(&marker_key)?);
        }
        Ok(found)
    }

    /// Checks `wallet`'s marker rows against its sealed digest.
    ///
    /// # Errors
    /// [`Error::MarkerSetMismatch`] when a row was deleted or added behind
    /// the store's back; record errors for a digest that fails to
    /// authenticate.
    pub(crate) fn check_marker_set(&self, wallet: &WalletId) -> Result<(), Error> {
        let found = self.stored_markers(wallet, &self.tag_key()?)?;
        if found != self.marker_digest(wallet)? {
            return Err(Error::marker_set_mismatch(wallet));
        }
        Ok(())
    }

    /// Checks that the wallets' digests combine to the one in the
    /// generation record, so none was put back from an older copy.
    /// Returns the wallets whose digest fails to authenticate: each is its
    /// wallet's damage (I4: the other wallets keep serving), and counts in
    /// the combined digest with the marker rows it has, so a digest put
    /// back for another wallet is still caught.
    ///
    /// A digest row whose key holds a wallet id no signer could write was
    /// never counted in the combined digest: it is a tampered record of no
    /// wallet, left out here (`keys verify` reports it) so it refuses
    /// neither the open nor any wallet.
    ///
    /// # Errors
    /// [`Error::MetadataCorrupt`] named `marker_sets` when they do not
    /// combine (a mismatch that names no wallet).
    pub(crate) fn check_marker_sets(&self) -> Result<Vec<WalletId>, Error> {
        let corrupt = || Error::metadata_corrupt("marker_sets");
        let tag_key = self.tag_key()?;
        let mut combined = MarkerDigest::default();
        let mut damaged = Vec::new();
        for (key, sealed) in self.raw.raw_prefix(RecordTable::MarkerSets, &[])? {
            let Some(wallet) = schema::wallet_of(&key) else {
                continue;
            };
            let digest =
                match self.open_bytes(RecordTable::MarkerSets, &key, RecordEpoch(0), &sealed) {
                    Ok(value) => MarkerDigest::decode(&value),
                    Err(e) if e.is_record_corruption() => None,
                    Err(e) => return Err(e),
                };
            let digest = match digest {
                Some(digest) => digest,
                None => {
                    let found = self.stored_markers(&wallet, &tag_key)?;
                    damaged.push(wallet);
                    found
                }
            };
            combined.add(&digest);
        }
        if combined != self.generation_record()?.1 {
            return Err(corrupt());
        }
        Ok(damaged)
    }
}

impl WriteCtx<'_> {
    /// Records in this transaction that the marker `marker_key` joined or
    /// left its wallet's set: updates the wallet's digest and the combined
    /// one in the generation record, both undone with the unit.
    pub(crate) fn marker_changed(
        &mut self,
        marker_key: &[u8],
        change: MarkerChange,
    ) -> Result<(), Error> {
        let wallet = schema::wallet_of(marker_key)
            .ok_or(Error::record_tampered(RecordTable::Markers, None))?;
        let tag = self.records().tag_key()?.tag(marker_key)?;
        let mut digest = self.records().marker_digest(&wallet)?;
        digest.apply(change, &tag);
        let key = schema::wallet_key(&wallet);
        if digest.is_empty() {
            self.delete(RecordTable::MarkerSets, &key)?;
        } else {
            self.put_at(
                RecordTable::MarkerSets,
                &key,
                RecordEpoch(0),
                &digest.encode(),
            )?;
        }
        let (generation, mut combined, audit) = self.records().generation_record()?;
        combined.apply(change, &tag);
        self.put_generation(generation, &combined, &audit)
    }
}

/// The wallets whose marker rows were checked against their digest since
/// open, and whether they matched. The database cannot change behind an
/// open store (redb's file lock) and the store's own writes keep rows and
/// digests in step, so one check per wallet and open is enough, and a
/// mismatch stays one: it is answered again without reading the wallet's
/// marker keys at every lookup.
#[derive(Debug, Default)]
pub(crate) struct CheckedMarkerSets(Mutex<BTreeMap<WalletId, bool>>);

impl CheckedMarkerSets {
    /// Checks `wallet`'s marker set in `records` unless it was already.
    pub(crate) fn ensure<R: Raw>(
        &self,
        records: &Records<'_, R>,
        wallet: &WalletId,
    ) -> Result<(), Error> {
        match lock(&self.0).get(wallet) {
            Some(true) => return Ok(()),
            Some(false) => {
                return Err(Error::marker_set_mismatch(wallet));
            }
            None => {}
        }
        let result = records.check_marker_set(wallet);
        // Other errors (a digest failing to authenticate, storage) are not
        // kept: the wallet is marked corrupt by them, or a retry may pass.
        let matched = match &result {
            Ok(()) => Some(true),
            Err(Error::MarkerSetMismatch { .. }) => Some(false),
            Err(_) => None,
        };
        if let Some(matched) = matched {
            lock(&self.0).insert(wallet.clone(), matched);
        }
        result
    }
}

impl WriteCtx<'_> {
    /// Checks `wallet`'s marker set in this transaction (once per open when
    /// the writer passed its [`CheckedMarkerSets`]).
    pub(crate) fn check_marker_set(&self, wallet: &WalletId) -> Result<(), Error> {
        match self.checked_marker_sets {
            Some(checked) => checked.ensure(&self.records(), wallet),
            None => self.records().check_marker_set(wallet),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use rand_core::OsRng;

    use super::*;
    use crate::ids::DekTerm;
    use crate::keyring::Keyring;
    use crate::seal::Dek;

    /// Tables of one wallet with one marker row and no digest (a marker
    /// inserted, or its digest deleted, behind the store's back), counting
    /// the reads of marker rows.
    struct OneStrayMarker {
        witness_key: Vec<u8>,
        marker_scans: Cell<usize>,
    }

    impl Raw for OneStrayMarker {
        fn raw_get(&self, table: RecordTable, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
            Ok((table == RecordTable::Sys && key == sys::WITNESS_KEY)
                .then(|| self.witness_key.clone()))
        }
        fn raw_prefix(
            &self,
            table: RecordTable,
            prefix: &[u8],
        ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, Error> {
            if table != RecordTable::Markers {
                return Ok(Vec::new());
            }
            self.marker_scans.set(self.marker_scans.get() + 1);
            Ok(vec![([prefix, &[3; 32]].concat(), Vec::new())])
        }
        fn raw_last(&self, _: RecordTable) -> Result<Option<Vec<u8>>, Error> {
            Ok(None)
        }
        fn raw_keys_after(
            &self,
            _: RecordTable,
            _: Option<&[u8]>,
            _: usize,
        ) -> Result<Vec<Vec<u8>>, Error> {
            Ok(Vec::new())
        }
    }

    /// A mismatch cannot heal while the store is open (the file is locked,
    /// and the store's writes keep rows and digest in step), so it is kept
    /// for the wallet instead of reading its marker keys at every lookup.
    #[test]
    fn a_mismatch_is_remembered_for_the_wallet() {
        let dek = Dek::generate(DekTerm(1), &mut OsRng);
        let witness_key = dek.seal(
            RecordTable::Sys,
            sys::WITNESS_KEY,
            RecordEpoch(0),
            &[7; 32],
            &mut OsRng,
        );
        let keyring = Keyring::default();
        keyring.insert(dek);
        let view = keyring.view();
        let raw = OneStrayMarker {
            witness_key,
            marker_scans: Cell::new(0),
        };
        let records = Records::new(&raw, &view);
        let wallet = WalletId::new("w1").unwrap();
        let checked = CheckedMarkerSets::default();
        for _ in 0..3 {
            let r = checked.ensure(&records, &wallet);
            assert!(
                matches!(&r, Err(Error::MarkerSetMismatch { wallet: w, .. }) if *w == wallet),
                "{r:?}"
            );
        }
        assert_eq!(
            raw.marker_scans.get(),
            1,
            "the wallet's keys were read again"
        );
    }

    #[test]
    fn a_digest_depends_on_the_set_only() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let mut ab = MarkerDigest::default();
        ab.apply(MarkerChange::Inserted, &a);
        ab.apply(MarkerChange::Inserted, &b);
        let mut ba = MarkerDigest::default();
        ba.apply(MarkerChange::Inserted, &b);
        ba.apply(MarkerChange::Inserted, &a);
        assert_eq!(ab, ba, "insertion order does not matter");
        assert_eq!(MarkerDigest::decode(&ab.encode()), Some(ab));
        assert_eq!(MarkerDigest::decode(&ab.encode()[1..]), None);
        // Two wallets' digests combine to the digest of the union.
        let (mut only_a, mut only_b) = (MarkerDigest::default(), MarkerDigest::default());
        only_a.apply(MarkerChange::Inserted, &a);
        only_b.apply(MarkerChange::Inserted, &b);
        only_a.add(&only_b);
        assert_eq!(only_a, ab);
        // Removing one marker changes the digest; removing both empties it.
        ba.apply(MarkerChange::Removed, &a);
        assert_ne!(ba, ab);
        assert_eq!(ba, only_b);
        ba.apply(MarkerChange::Removed, &b);
        assert!(ba.is_empty());
    }
}
