//! Wallet states, each holding only the data valid in it.

use serde::{Deserialize, Serialize};
use thresig_crypto::{KeyShare, WalletKey};

use crate::error::Error;
use crate::ids::{Epoch, WalletId};

/// The name of a wallet's state, as `status` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WalletStateKind {
    /// Configured, but no confirmed key package yet.
    DkgPending,
    /// Signs.
    Active,
    /// Refuses every spend except the sweep to its successor.
    Rekeying,
    /// Signs nothing; its shares may be deleted.
    Retired,
    /// Its records failed to authenticate; refuses to sign until an
    /// operator acts.
    Corrupt,
}

/// The key material a wallet signs with at one epoch: its public record
/// (which alone decides the tweak) and this signer's share.
pub(crate) struct SigningKey {
    pub(crate) epoch: Epoch,
    pub(crate) key: WalletKey,
    pub(crate) share: KeyShare,
}

/// A wallet's state on this signer.
pub(crate) enum WalletState {
    /// No confirmed key package yet.
    DkgPending,
    /// Signing with this key.
    Active(SigningKey),
    /// Being replaced by a successor wallet; holds its key for the sweep.
    Rekeying(SigningKey),
    /// Retired.
    Retired,
    /// Failed to authenticate.
    Corrupt,
}

impl WalletState {
    /// The state's name.
    pub(crate) fn kind(&self) -> WalletStateKind {
        match self {
            Self::DkgPending => WalletStateKind::DkgPending,
            Self::Active(_) => WalletStateKind::Active,
            Self::Rekeying(_) => WalletStateKind::Rekeying,
            Self::Retired => WalletStateKind::Retired,
            Self::Corrupt => WalletStateKind::Corrupt,
        }
    }

    /// The key material, for states that hold one.
    pub(crate) fn key(&self) -> Option<&SigningKey> {
        match self {
            Self::Active(key) | Self::Rekeying(key) => Some(key),
            Self::DkgPending | Self::Retired | Self::Corrupt => None,
        }
    }

    /// The key to sign an ordinary spend with.
    ///
    /// # Errors
    /// The error naming why the wallet's state refuses to sign. (A rekeying
    /// wallet's successor sweep is allowed once the `tx` crate can check its
    /// outputs; until then it refuses every spend.)
    pub(crate) fn signing_key(&self, wallet: &WalletId) -> Result<&SigningKey, Error> {
        let wallet = wallet.clone();
        match self {
            Self::Active(key) => Ok(key),
            Self::DkgPending => Err(Error::WalletNotActive { wallet }),
            Self::Rekeying(_) => Err(Error::RekeyInProgress { wallet }),
            Self::Retired => Err(Error::WalletRetired { wallet }),
            Self::Corrupt => Err(Error::WalletCorrupt { wallet }),
        }
    }
}
