//! The database layout: redb tables, record-key encodings and the schema
//! version bound into every sealed value.
//!
//! `docs/storage-format.md` describes the same layout for operators and for
//! future upgrades; change both together.

use redb::TableDefinition;

use crate::ids::{CommitmentHash, DekTerm, DkgSessionId, KeyEpoch, PolicyKey, Timestamp, WalletId};

/// The schema version this build reads and writes. It is stored in plain in
/// the `format` table (so an upgrade can recognise old databases) and bound
/// into the associated data of every sealed value (so a record cannot be
/// replayed across schema versions).
pub(crate) const SCHEMA_VERSION: u32 = 2;

/// Plain schema information: `"schema_version" -> u32`.
pub(crate) const FORMAT: TableDefinition<&str, u32> = TableDefinition::new("format");
/// The keyring: DEK term -> JSON keyring entry (wraps are authenticated by
/// their KEK, the entry by a check value sealed under the DEK itself).
pub(crate) const KEYRING: TableDefinition<u64, &[u8]> = TableDefinition::new("keyring");
/// The (DEK term, table, record key) index of every sealed record, kept in
/// the same transactions as the records, so retiring a DEK is one range read.
pub(crate) const DEK_INDEX: TableDefinition<&[u8], ()> = TableDefinition::new("dek_index");
/// Marker expiry index: (expires_at, marker key) -> (), plain, so the purge
/// is a range read. Being plain, it only says where to look: the purge
/// deletes a marker only if the marker's own sealed expiry agrees.
pub(crate) const MARKER_EXPIRY: TableDefinition<&[u8], ()> = TableDefinition::new("marker_expiry");

/// A table of sealed records. Part of every record's associated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RecordTable {
    /// The store's own metadata (current DEK, epochs, generation).
    Sys,
    /// Engine metadata records.
    Meta,
    /// Wallet state, sealed with the wallet's epoch.
    Wallets,
    /// Each wallet's security epoch, sealed with the global epoch.
    Epochs,
    /// Key packages by (wallet, epoch).
    KeyPackages,
    /// DKG results awaiting confirmation.
    DkgResults,
    /// Attempt markers by (wallet, commitment hash).
    Markers,
    /// Policy counters, sealed with the wallet's epoch.
    Policy,
    /// Audit entries by sequence.
    Audit,
    /// The check value of a keyring entry (not a redb table of its own).
    KeyringCheck,
    /// Each wallet's marker-set digest (count and keyed tags of its marker
    /// keys), so a deleted marker row is detected (I4).
    MarkerSets,
}

impl RecordTable {
    /// Every table that holds sealed records in redb.
    pub(crate) const STORED: [RecordTable; 10] = [
        Self::Sys,
        Self::Meta,
        Self::Wallets,
        Self::Epochs,
        Self::KeyPackages,
        Self::DkgResults,
        Self::Markers,
        Self::Policy,
        Self::Audit,
        Self::MarkerSets,
    ];

    /// The byte that names the table in envelopes and in the DEK index.
    pub(crate) fn id(self) -> u8 {
        match self {
            Self::Sys => 1,
            Self::Meta => 2,
            Self::Wallets => 3,
            Self::Epochs => 4,
            Self::KeyPackages => 5,
            Self::DkgResults => 6,
            Self::Markers => 7,
            Self::Policy => 8,
            Self::Audit => 9,
            Self::KeyringCheck => 10,
            Self::MarkerSets => 11,
        }
    }

    /// The inverse of [`RecordTable::id`].
    pub(crate) fn from_id(id: u8) -> Option<Self> {
        Self::STORED
            .into_iter()
            .chain([Self::KeyringCheck])
            .find(|t| t.id() == id)
    }

    /// The redb table holding this table's records.
    pub(crate) fn definition(self) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
        TableDefinition::new(match self {
            Self::Sys => "sys",
            Self::Meta => "meta",
            Self::Wallets => "wallets",
            Self::Epochs => "epochs",
            Self::KeyPackages => "key_packages",
            Self::DkgResults => "dkg_results",
            Self::Markers => "markers",
            Self::Policy => "policy",
            Self::Audit => "audit",
            Self::KeyringCheck => "keyring_check",
            Self::MarkerSets => "marker_sets",
        })
    }

    /// Whether records of this table are sealed with the wallet's epoch in
    /// their associated data (wallet state and policy, I5).
    pub(crate) fn wallet_epoch_bound(self) -> bool {
        matches!(self, Self::Wallets | Self::Policy)
    }

    /// Whether the record key starts with a length-prefixed wallet id.
    pub(crate) fn wallet_scoped(self) -> bool {
        matches!(
            self,
            Self::Wallets
                | Self::Epochs
                | Self::KeyPackages
                | Self::DkgResults
                | Self::Markers
                | Self::Policy
                | Self::MarkerSets
        )
    }
}

/// Names of the store's own metadata records in [`RecordTable::Sys`].
pub(crate) mod sys {
    /// The store's identity, which every store has: 16 random bytes naming
    /// this database (bound into the witness), whether a witness was
    /// written, and the offline recovery public key set at init. Held in
    /// one required record, so none of them can be deleted on its own.
    pub(crate) const STORE_ID: &[u8] = b"store_id";
    /// The current DEK term and the keyring digest, sealed under that DEK
    /// at the global epoch.
    pub(crate) const CURRENT_DEK: &[u8] = b"current_dek";
    /// The global security epoch.
    pub(crate) const GLOBAL_EPOCH: &[u8] = b"global_epoch";
    /// The commit generation, incremented by every writer commit, and the
    /// marker-set digests of all wallets combined (checked at open).
    pub(crate) const GENERATION: &[u8] = b"generation";
    /// The key of the witness MAC (and, derived from it, of marker tags).
    pub(crate) const WITNESS_KEY: &[u8] = b"witness_key";
    /// The audit log's head: last sequence and hash, first kept sequence
    /// and the hash it chains from (`audit.rs`).
    pub(crate) const AUDIT_HEAD: &[u8] = b"audit_head";
}

/// The key prefix of every record of `wallet`: its length, then its bytes.
pub(crate) fn wallet_prefix(wallet: &WalletId) -> Vec<u8> {
    let bytes = wallet.as_bytes();
    // WalletId::MAX_LEN is 64, so the length always fits one byte.
    let len = u8::try_from(bytes.len()).unwrap_or(u8::MAX);
    [&[len][..], bytes].concat()
}

/// Splits the wallet id off a wallet-scoped record key; `None` when the key
/// is too short or holds an id no signer could have written (damage).
pub(crate) fn wallet_of(key: &[u8]) -> Option<WalletId> {
    let (&len, rest) = key.split_first()?;
    WalletId::from_stored(rest.get(..usize::from(len))?)
}

/// Key of a wallet record or of its epoch record.
pub(crate) fn wallet_key(wallet: &WalletId) -> Vec<u8> {
    wallet_prefix(wallet)
}

/// Key of a key package: wallet, then epoch (big-endian, so they sort).
pub(crate) fn key_package_key(wallet: &WalletId, epoch: KeyEpoch) -> Vec<u8> {
    [wallet_prefix(wallet), epoch.0.to_be_bytes().to_vec()].concat()
}

/// Key of a DKG result: wallet, then session id.
pub(crate) fn dkg_key(wallet: &WalletId, session: &DkgSessionId) -> Vec<u8> {
    [wallet_prefix(wallet), session.as_bytes().to_vec()].concat()
}

/// Key of an attempt marker: wallet, then commitment hash.
pub(crate) fn marker_key(wallet: &WalletId, commitment: &CommitmentHash) -> Vec<u8> {
    [wallet_prefix(wallet), commitment.0.to_vec()].concat()
}

/// Key of a policy counter: wallet, then counter name.
pub(crate) fn policy_key(wallet: &WalletId, key: &PolicyKey) -> Vec<u8> {
    [wallet_prefix(wallet), key.as_bytes().to_vec()].concat()
}

/// Key of a marker-expiry index entry: the expiry in whole seconds, then
/// the marker's key.
pub(crate) fn expiry_key(expires_at: Timestamp, marker_key: &[u8]) -> Vec<u8> {
    [&expires_at.whole_secs().to_be_bytes()[..], marker_key].concat()
}

/// The first marker-expiry index key after every entry due at `now`: the
/// index holds whole seconds, so that is the start of the next second.
pub(crate) fn expiry_index_end(now: Timestamp) -> Vec<u8> {
    now.whole_secs().saturating_add(1).to_be_bytes().to_vec()
}

/// Key of a DEK index entry.
pub(crate) fn index_key(term: DekTerm, table: RecordTable, key: &[u8]) -> Vec<u8> {
    [&term.0.to_be_bytes()[..], &[table.id()], key].concat()
}

/// Decodes a DEK index key into (table, record key).
pub(crate) fn parse_index_key(bytes: &[u8]) -> Option<(DekTerm, RecordTable, Vec<u8>)> {
    let (term, rest) = bytes.split_first_chunk::<8>()?;
    let (&table, key) = rest.split_first()?;
    Some((
        DekTerm(u64::from_be_bytes(*term)),
        RecordTable::from_id(table)?,
        key.to_vec(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expiry_index_ends_after_the_second_now_falls_in() {
        let end = expiry_index_end(Timestamp(1_500));
        assert!(expiry_key(Timestamp(1_999), b"k") < end);
        assert!(expiry_key(Timestamp(2_000), b"k") >= end);
        assert_eq!(expiry_key(Timestamp(1_999), b""), 1u64.to_be_bytes());
    }

    #[test]
    fn keys_round_trip() {
        let w = WalletId::new("w-9").unwrap();
        let k = key_package_key(&w, KeyEpoch(3));
        assert_eq!(wallet_of(&k), Some(w.clone()));
        let idx = index_key(DekTerm(7), RecordTable::Policy, &k);
        assert_eq!(
            parse_index_key(&idx),
            Some((DekTerm(7), RecordTable::Policy, k))
        );
        for t in RecordTable::STORED {
            assert_eq!(RecordTable::from_id(t.id()), Some(t));
        }
    }
}
