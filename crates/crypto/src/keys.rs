//! A member's secret key share.

use std::fmt;

use frost_secp256k1_tr::keys::{KeyPackage, VerifyingShare};
use zeroize::{Zeroize as _, Zeroizing};

use crate::codec::{FrostCodec as _, encode_exact};
use crate::{Encoding, Error, MAX_SIGNERS, Result, Seat, WalletKey};

/// One member's long-lived secret share of a wallet key (frost `KeyPackage`).
///
/// Zeroized on drop (frost's package is `ZeroizeOnDrop`), not `Clone`, and its
/// `Debug` shows only the seat. Serialize it only into encrypted storage.
pub struct KeyShare {
    seat: Seat,
    package: KeyPackage,
}

impl KeyShare {
    pub(crate) fn new(package: KeyPackage) -> Result<Self> {
        let seat = Seat::from_identifier(package.identifier()).ok_or(Error::Decode {
            what: Encoding::KeyShare,
        })?;
        Ok(Self { seat, package })
    }

    /// The seat this share belongs to.
    #[must_use]
    pub fn seat(&self) -> Seat {
        self.seat
    }

    pub(crate) fn package(&self) -> &KeyPackage {
        &self.package
    }

    /// Checks that this share belongs to `wallet`: same group key and
    /// threshold, and the share's public image is the wallet's verifying
    /// share for its seat.
    ///
    /// # Errors
    /// [`Error::WrongWallet`] otherwise.
    pub fn check_wallet(&self, wallet: &WalletKey) -> Result<()> {
        let group = wallet.group();
        let matches = group.verifying_key() == self.package.verifying_key()
            && *self.package.min_signers() == wallet.threshold()
            && group.verifying_shares().get(self.package.identifier())
                == Some(self.package.verifying_share());
        if matches {
            Ok(())
        } else {
            Err(Error::WrongWallet { seat: self.seat })
        }
    }

    /// Serializes the share (secret) for the encrypted store.
    ///
    /// # Errors
    /// [`Error::Frost`] if frost fails to encode (not expected).
    pub fn to_bytes(&self) -> Result<Zeroizing<Vec<u8>>> {
        Ok(encode_exact(&self.package)?)
    }

    /// Decodes a share written by [`Self::to_bytes`] (only that canonical
    /// encoding is accepted).
    ///
    /// # Errors
    /// [`Error::Decode`] for malformed or non-canonical bytes, an identifier
    /// that is not a seat, a threshold outside `2..=MAX_SIGNERS`, or a secret
    /// share that does not match its verifying share.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = || Error::Decode {
            what: Encoding::KeyShare,
        };
        let package = KeyPackage::decode(bytes).map_err(|_| bad())?;
        if !(2..=MAX_SIGNERS).contains(package.min_signers()) {
            return Err(bad());
        }
        // The secret must match its own public image; the copy is wiped.
        let mut secret = *package.signing_share();
        let image = VerifyingShare::from(secret);
        secret.zeroize();
        if image != *package.verifying_share() {
            return Err(bad());
        }
        Self::new(package)
    }
}

impl fmt::Debug for KeyShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyShare")
            .field("seat", &self.seat)
            .field("secret", &"<redacted>")
            .finish()
    }
}
