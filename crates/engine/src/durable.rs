//! What the engine needs from durable storage, and the records it keeps.
//!
//! The engine reaches the disk only through [`SignerStore`]. A marker is the
//! durable proof that an attempt's shares were released: keyed by the first
//! of this signer's commitments in the attempt, it holds the package hash and
//! every share of the attempt, and is inserted only if absent inside the
//! committing write transaction.

use zeroize::Zeroizing;

use crate::ids::{CommitmentHash, Epoch, PackageHash, WalletId};

/// The durable record of one released attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Marker {
    /// The hash of the request the shares answer.
    pub package: PackageHash,
    /// The encoded signature shares, one per input.
    pub shares: Vec<Vec<u8>>,
}

impl Marker {
    /// A marker for `shares` answering the request hashed to `package`.
    pub fn new(package: PackageHash, shares: Vec<Vec<u8>>) -> Self {
        Self { package, shares }
    }
}

/// The outcome of an insert-if-absent of a marker.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MarkerInsert {
    /// The marker is now durable.
    Inserted,
    /// A marker was already there (from an earlier, possibly ambiguous,
    /// commit); it is returned unchanged.
    Existing(Marker),
}

/// A wallet's key material at one epoch, as stored.
#[non_exhaustive]
pub struct StoredKey {
    /// The epoch of this key package.
    pub epoch: Epoch,
    /// The encoded `WalletKey` (the public record: keys and tweak).
    pub wallet_key: Vec<u8>,
    /// This signer's encoded `KeyShare` (secret).
    pub share: Zeroizing<Vec<u8>>,
}

impl StoredKey {
    /// Key material read from the store.
    pub fn new(epoch: Epoch, wallet_key: Vec<u8>, share: Zeroizing<Vec<u8>>) -> Self {
        Self {
            epoch,
            wallet_key,
            share,
        }
    }
}

/// A wallet's durable record as the engine needs it to sign.
#[non_exhaustive]
pub enum StoredWallet {
    /// No confirmed key package: the wallet waits for its DKG.
    Absent,
    /// The wallet signs with this key.
    Active(StoredKey),
    /// The wallet is being rekeyed; it keeps its key for the sweep.
    Rekeying(StoredKey),
    /// The wallet is retired.
    Retired,
    /// The wallet's records failed to authenticate.
    Corrupt,
}

/// Why a storage operation failed, in the terms the engine maps to codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageFault {
    /// A transient failure: the write did not (or may not) commit; retry.
    Unavailable,
    /// The key provider is needed and cannot be reached.
    KeyProviderUnavailable,
    /// A record fails to authenticate or decode.
    Corrupt,
    /// The database is older than its witness.
    Rollback,
}

/// The durable storage a [`crate::Signer`] runs on.
///
/// Implementations must be safe to call from several threads at once; calls
/// for different wallets must not wait on each other beyond the store's own
/// group commit.
pub trait SignerStore: Send + Sync {
    /// Loads a wallet's record.
    ///
    /// # Errors
    /// A [`StorageFault`] when the store cannot answer.
    fn load_wallet(&self, wallet: &WalletId) -> Result<StoredWallet, StorageFault>;

    /// Reads the marker keyed by `commitment`, if any.
    ///
    /// # Errors
    /// A [`StorageFault`] when the store cannot answer.
    fn marker(
        &self,
        wallet: &WalletId,
        commitment: &CommitmentHash,
    ) -> Result<Option<Marker>, StorageFault>;

    /// Inserts `marker` under `commitment` if no marker is there, durably,
    /// in one write transaction.
    ///
    /// # Errors
    /// A [`StorageFault`] when the commit fails; the marker may or may not
    /// be durable (an ambiguous commit), so the caller releases nothing.
    fn insert_marker(
        &self,
        wallet: &WalletId,
        commitment: &CommitmentHash,
        marker: &Marker,
    ) -> Result<MarkerInsert, StorageFault>;
}

impl<T: SignerStore + ?Sized> SignerStore for std::sync::Arc<T> {
    fn load_wallet(&self, wallet: &WalletId) -> Result<StoredWallet, StorageFault> {
        (**self).load_wallet(wallet)
    }

    fn marker(
        &self,
        wallet: &WalletId,
        commitment: &CommitmentHash,
    ) -> Result<Option<Marker>, StorageFault> {
        (**self).marker(wallet, commitment)
    }

    fn insert_marker(
        &self,
        wallet: &WalletId,
        commitment: &CommitmentHash,
        marker: &Marker,
    ) -> Result<MarkerInsert, StorageFault> {
        (**self).insert_marker(wallet, commitment, marker)
    }
}
