//! A signing package prepared once per session: its wire bytes and the
//! session values every share is verified against.
//!
//! [`verify_share`](crate::verify_share) recomputes the binding factors, the
//! group commitment and the challenge for every share it checks: O(t) point
//! work per share, O(t²) per signature. A coordinator checks t shares of one
//! package, so it prepares the package once ([`PreparedPackage::new`]) and
//! checks each share with three scalar multiplications
//! ([`PreparedPackage::verify`]), following frost-core's own
//! `verify_signature_share_precomputed` (exposed by its `internals`
//! feature) step for step, with the same BIP340 even-Y handling: the
//! verdicts are those of [`verify_share`](crate::verify_share). The shares
//! are aggregated against the same values ([`PreparedPackage::aggregate`]):
//! the signature is their sum with the session's group commitment, checked
//! once by BIP340.

use std::collections::BTreeMap;
use std::sync::Arc;

use frost_core::{BindingFactorList, Challenge, Ciphersuite as _, Field as _, GroupCommitment};
use frost_secp256k1_tr::keys::PublicKeyPackage;
use frost_secp256k1_tr::{Secp256K1ScalarField, Secp256K1Sha256TR};

use crate::sign::culprits;
use crate::{
    Error, Result, Seat, Signature, SignatureShare, SigningPackage, WalletKey, XOnlyKey, verify,
};

type Suite = Secp256K1Sha256TR;

/// One session's signing package under one wallet, with its encoding and
/// the values share verification and aggregation need, each computed once.
///
/// # Invariants
/// The session values come from the wallet's signing group (the tweaked key
/// the signers sign with) after frost's `pre_aggregate` hook (BIP340's
/// even-Y negation), exactly as frost's per-share verification and
/// aggregation derive them; `output_key` is that wallet's output key.
#[derive(Clone)]
pub struct PreparedPackage {
    package: SigningPackage,
    bytes: Arc<[u8]>,
    /// The signing group after `pre_aggregate`: verifying shares negated
    /// when the group key has odd Y.
    group: PublicKeyPackage,
    binding: BindingFactorList<Suite>,
    commitment: GroupCommitment<Suite>,
    challenge: Challenge<Suite>,
    /// The key the aggregate signature verifies under (BIP340).
    output_key: XOnlyKey,
}

impl PreparedPackage {
    /// Prepares `package` for signing under `wallet`: encodes it once and
    /// computes the session's binding factors, group commitment and challenge.
    ///
    /// # Errors
    /// [`Error::UnknownSeat`] naming a signer of `package` that holds no share
    /// of the wallet; [`Error::TooFewSigners`] below the threshold;
    /// [`Error::Frost`] if frost cannot derive the session values (a
    /// commitment that is the identity, which decoding already refuses).
    pub fn new(wallet: &WalletKey, package: SigningPackage) -> Result<Self> {
        package.check_signers(wallet)?;
        let bytes = Arc::from(package.to_bytes());
        // The tr suite's hook reads only the key package (the shares are
        // not known yet): it negates the verifying shares when the group
        // key has odd Y, as BIP340 verification assumes.
        let no_shares = BTreeMap::new();
        let (_, _, group) =
            Suite::pre_aggregate(package.frost(), &no_shares, wallet.signing_group())
                .map_err(|err| culprits(err, &[]))?;
        let group = group.into_owned();
        let binding =
            frost_core::compute_binding_factor_list(package.frost(), group.verifying_key(), &[])?;
        let committed = Suite::pre_commitment_aggregate(package.frost(), &binding)?;
        let commitment = frost_core::compute_group_commitment(&committed, &binding)?;
        let challenge = Suite::challenge(
            &commitment.clone().to_element(),
            group.verifying_key(),
            committed.message(),
        )?;
        Ok(Self {
            package,
            bytes,
            group,
            binding,
            commitment,
            challenge,
            output_key: wallet.output_key(),
        })
    }

    /// The package.
    #[must_use]
    pub fn package(&self) -> &SigningPackage {
        &self.package
    }

    /// The package's encoding, made once and shared by every send.
    #[must_use]
    pub fn bytes(&self) -> &Arc<[u8]> {
        &self.bytes
    }

    /// Verifies `seat`'s share against the session values: what
    /// [`verify_share`](crate::verify_share) answers for the same wallet,
    /// package, seat and share.
    ///
    /// # Errors
    /// [`Error::InvalidShares`] naming `seat` if the share is invalid;
    /// [`Error::UnknownSeat`] if `seat` holds no share of the wallet or has
    /// no commitment in the package.
    pub fn verify(&self, seat: Seat, share: &SignatureShare) -> Result<()> {
        let id = seat.identifier();
        let verifying_share = self
            .group
            .verifying_shares()
            .get(&id)
            .ok_or(Error::UnknownSeat { seat: seat.get() })?;
        if self.package.commitment(seat).is_none() {
            return Err(Error::UnknownSeat { seat: seat.get() });
        }
        frost_core::verify_signature_share_precomputed(
            id,
            self.package.frost(),
            &self.binding,
            &self.commitment,
            share.frost(),
            verifying_share,
            self.challenge,
        )
        .map_err(|err| culprits(err, &[seat]))
    }

    /// Aggregates `shares`, one per signer of the package, into the
    /// signature: their sum with the session's group commitment (frost's
    /// aggregation without deriving the session again), verified once by
    /// BIP340 under the wallet's output key. For the wallet it was
    /// prepared under, it gives the signature, or names the culprits, that
    /// [`aggregate`](crate::aggregate) gives for the same package and
    /// shares.
    ///
    /// # Errors
    /// [`Error::SharesMismatch`] if the shares' seats differ from the
    /// package's signers; [`Error::InvalidShares`] listing every seat whose
    /// share is invalid (each share is checked only when the signature
    /// fails).
    pub fn aggregate(&self, shares: &BTreeMap<Seat, SignatureShare>) -> Result<Signature> {
        if shares.keys().copied().ne(self.package.signers()) {
            return Err(Error::SharesMismatch);
        }
        // RFC 9591's aggregation step, as frost's `aggregate` takes it: the
        // shares' sum. Nothing is returned that BIP340 has not accepted.
        let mut z = Secp256K1ScalarField::zero();
        for share in shares.values() {
            z += share.scalar()?;
        }
        let signature = Signature::from_frost(frost_core::Signature::new(
            self.commitment.clone().to_element(),
            z,
        ));
        let Err(invalid) = verify(&self.output_key, self.package.message(), &signature) else {
            return Ok(signature);
        };
        let mut culprits = Vec::new();
        for (&seat, share) in shares {
            match self.verify(seat, share) {
                Ok(()) => {}
                Err(Error::InvalidShares { .. }) => culprits.push(seat),
                Err(other) => return Err(other),
            }
        }
        // Valid shares always sum to a valid signature: with none to blame,
        // the signature's own failure is reported.
        if culprits.is_empty() {
            Err(invalid)
        } else {
            Err(Error::InvalidShares { culprits })
        }
    }
}

impl std::fmt::Debug for PreparedPackage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedPackage")
            .field("package", &self.package)
            .field("bytes", &self.bytes.len())
            .finish_non_exhaustive()
    }
}
