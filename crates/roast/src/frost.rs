//! The real [`Scheme`]: FROST over secp256k1 with the wallet's Taproot tweak.

use std::collections::BTreeMap;

use thresig_crypto::{
    Commitment, Error as CryptoError, PreparedPackage, Signature, SignatureShare, SigningPackage,
    WalletKey,
};

use crate::{Scheme, Seat, Verdict};

/// A wallet's public key record is the coordinator's scheme: it holds every
/// seat's verifying share and the wallet's key convention, so shares are
/// verified, and signatures aggregated, under exactly the tweaked key the
/// signers sign with (DESIGN.md, section 2).
///
/// A package is prepared once per session ([`PreparedPackage`]): encoded
/// once for every signer it is sent to, and with the session's binding
/// factors and group commitment computed once, so checking a share costs
/// three scalar multiplications instead of O(t) point work, and the
/// aggregate is the shares' sum with that group commitment, checked once.
impl Scheme for WalletKey {
    /// The input's BIP341 sighash.
    type Message = [u8; 32];
    type Commitment = Commitment;
    type Package = PreparedPackage;
    type Share = SignatureShare;
    /// A BIP340 signature, verified under the wallet's output key.
    type Signature = Signature;
    type Error = CryptoError;

    fn package(
        &self,
        message: &[u8; 32],
        commitments: &BTreeMap<Seat, Commitment>,
    ) -> Result<PreparedPackage, CryptoError> {
        PreparedPackage::new(self, SigningPackage::new(commitments, message)?)
    }

    fn verify_share(
        &self,
        package: &PreparedPackage,
        seat: Seat,
        share: &SignatureShare,
    ) -> Result<Verdict, CryptoError> {
        match package.verify(seat, share) {
            Ok(()) => Ok(Verdict::Valid),
            Err(CryptoError::InvalidShares { .. }) => Ok(Verdict::Invalid),
            Err(other) => Err(other),
        }
    }

    fn aggregate(
        &self,
        package: &PreparedPackage,
        shares: &BTreeMap<Seat, SignatureShare>,
    ) -> Result<Signature, CryptoError> {
        package.aggregate(shares)
    }
}
