//! A signing package's session values, derived once: by a signer for the
//! share it makes, by a coordinator for every share it checks.
//!
//! [`verify_share`](crate::verify_share) recomputes the binding factors, the
//! group commitment and the challenge for every share it checks: O(t) point
//! work per share, O(t²) per signature. A coordinator checks t shares of one
//! package, so it prepares the package once ([`PreparedPackage::new`]) and
//! checks each share with a base-point multiplication and one two-term
//! multi-scalar multiplication ([`PreparedPackage::verify`]), the relation
//! of frost-core's `verify_signature_share_precomputed` with the tr
//! suite's BIP340 even-Y handling: the verdicts are those of
//! [`verify_share`](crate::verify_share).
//! The shares are aggregated against the same values
//! ([`PreparedPackage::aggregate`]): the signature is their sum with the
//! session's group commitment, checked once by BIP340.
//!
//! Both sides derive the values in [`SessionValues`], from the bytes the
//! package arrived as: frost derives them from the decoded points and
//! encodes every commitment again to hash them (see docs/DESIGN.md, "Why
//! does the crypto crate derive a session's values itself?").

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use frost_core::{Ciphersuite as _, Field as _};
use frost_secp256k1_tr::keys::KeyPackage;
use frost_secp256k1_tr::round2;
use frost_secp256k1_tr::{
    Error as FrostError, Identifier, Secp256K1ScalarField, Secp256K1Sha256TR, VerifyingKey,
};
use k256::elliptic_curve::ops::{LinearCombinationExt as _, MulByGenerator as _};
use k256::elliptic_curve::point::AffineCoordinates as _;
use k256::{ProjectivePoint, Scalar};
use zeroize::Zeroizing;

use crate::{
    Error, Result, Seat, Signature, SignatureShare, SigningPackage, WalletKey, XOnlyKey, verify,
};

type Suite = Secp256K1Sha256TR;

/// One session's signing package under one wallet, with its encoding and
/// the values share verification and aggregation need, each computed once.
///
/// # Invariants
/// `session` holds the package's values under the wallet's signing group
/// key (the tweaked key the signers sign with), derived as each signer
/// derives them; `verifying_shares` holds that group's verifying share of
/// each signer of the package; `output_key` is the wallet's output key.
#[derive(Clone)]
pub struct PreparedPackage {
    package: SigningPackage,
    bytes: Arc<[u8]>,
    verifying_shares: BTreeMap<Seat, ProjectivePoint>,
    session: SessionValues,
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
    /// [`Error::Frost`] if a commitment or the group commitment is the
    /// identity (decoding refuses the first; the second needs the hash broken).
    pub fn new(wallet: &WalletKey, package: SigningPackage) -> Result<Self> {
        package.check_signers(wallet)?;
        let bytes = Arc::from(package.to_bytes());
        let group = wallet.signing_group();
        let verifying_shares = package
            .commitments()
            .keys()
            .map(|&seat| {
                let share = group
                    .verifying_shares()
                    .get(&seat.identifier())
                    .ok_or(Error::UnknownSeat { seat: seat.get() })?;
                Ok((seat, share.to_element()))
            })
            .collect::<Result<_>>()?;
        let session = SessionValues::new(&package, group.verifying_key())?;
        Ok(Self {
            package,
            bytes,
            verifying_shares,
            session,
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
        let verifying_share = self
            .verifying_shares
            .get(&seat)
            .ok_or(Error::UnknownSeat { seat: seat.get() })?;
        self.session
            .check_share(seat, share.scalar()?, verifying_share)
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
        let signature =
            Signature::from_frost(frost_core::Signature::new(self.session.commitment, z));
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

/// RFC 9591's session values of one package under one group key (the
/// binding factors, the group commitment and the challenge), derived as
/// frost-secp256k1-tr derives them, BIP340's even-Y rules included, but
/// from the package's kept bytes.
///
/// frost's signing derives them from the decoded points: it encodes every
/// commitment again to hash the list (a field inversion a point, 2t for
/// each share), makes the group commitment affine twice and the group key
/// three times, and when the group commitment's Y is odd it negates the
/// nonces by computing their commitments again (two base-point
/// multiplications). Here the list is hashed from the bytes the package
/// arrived as (the canonical encoding by construction, see `wire.rs`),
/// and each point is made affine once.
///
/// # Invariants
/// `signers` holds, for every signer of the package the values were
/// derived from and only for them, its binding factor ρ and commitment
/// points; `identifiers` are those signers' identifiers (the set each
/// Lagrange coefficient is taken over); `commitment` is
/// R = Σ (D_i + ρ_i·E_i), not the identity; `key_odd` and
/// `commitment_odd` are the Y parities of the group key and of R;
/// `challenge` is BIP340's H2(x(R) ‖ x(key) ‖ message).
#[derive(Clone)]
pub(crate) struct SessionValues {
    signers: BTreeMap<Seat, SignerValues>,
    identifiers: BTreeSet<Identifier>,
    commitment: ProjectivePoint,
    key_odd: bool,
    commitment_odd: bool,
    challenge: Scalar,
}

/// One signer's part of a session: its binding factor and its commitment's
/// hiding and binding points.
#[derive(Clone, Copy)]
struct SignerValues {
    rho: Scalar,
    hiding: ProjectivePoint,
    binding: ProjectivePoint,
}

impl SessionValues {
    /// Derives the values of `package` under `key`, the (tweaked) group key
    /// the shares are made under.
    ///
    /// # Errors
    /// [`Error::Frost`] with `IdentityCommitment` if a commitment or the
    /// group commitment is the identity. Decoding refuses the first; frost
    /// would go on to sign the second with an x-coordinate of zero, which
    /// no one can bring about without breaking the hash.
    pub(crate) fn new(package: &SigningPackage, key: &VerifyingKey) -> Result<Self> {
        let identity = || Error::Frost(FrostError::IdentityCommitment);
        let key = key.to_element().to_affine();
        let key_x = key.x();
        // The binding factors' preimage, RFC 9591's `compute_binding_factors`
        // with frost's empty additional prefix: the group key's encoding
        // after BIP340's even-Y negation (so prefix 0x02), H4 of the
        // message, H5 of the encoded commitment list, then each signer's
        // identifier.
        let mut prefix = Vec::with_capacity(1 + 3 * 32);
        prefix.push(0x02);
        prefix.extend_from_slice(&key_x);
        prefix.extend_from_slice(&Suite::H4(package.message()));
        prefix.extend_from_slice(&Suite::H5(&package.encoded_commitment_list()));
        let mut signers = BTreeMap::new();
        let mut hiding_sum = ProjectivePoint::IDENTITY;
        let mut binding_terms = Vec::with_capacity(package.commitments().len());
        for (seat, commitment) in package.commitments() {
            let (hiding, binding) = commitment.points();
            if hiding == ProjectivePoint::IDENTITY || binding == ProjectivePoint::IDENTITY {
                return Err(identity());
            }
            let mut input = Vec::with_capacity(prefix.len() + 32);
            input.extend_from_slice(&prefix);
            input.extend_from_slice(&seat.identifier().serialize());
            let rho = Suite::H1(&input);
            signers.insert(
                *seat,
                SignerValues {
                    rho,
                    hiding,
                    binding,
                },
            );
            hiding_sum += hiding;
            binding_terms.push((binding, rho));
        }
        let commitment = hiding_sum + ProjectivePoint::lincomb_ext(binding_terms.as_slice());
        if commitment == ProjectivePoint::IDENTITY {
            return Err(identity());
        }
        let affine = commitment.to_affine();
        let mut challenge_input = Vec::with_capacity(2 * 32 + package.message().len());
        challenge_input.extend_from_slice(&affine.x());
        challenge_input.extend_from_slice(&key_x);
        challenge_input.extend_from_slice(package.message());
        Ok(Self {
            identifiers: signers.keys().map(|seat| seat.identifier()).collect(),
            signers,
            commitment,
            key_odd: key.y_is_odd().into(),
            commitment_odd: affine.y_is_odd().into(),
            challenge: Suite::H2(&challenge_input),
        })
    }

    /// `seat`'s binding factor ρ, its commitment's points (D, E) and its
    /// Lagrange coefficient over the package's signers.
    fn signer(&self, seat: Seat) -> Result<(Scalar, ProjectivePoint, ProjectivePoint, Scalar)> {
        let values = self
            .signers
            .get(&seat)
            .ok_or(Error::UnknownSeat { seat: seat.get() })?;
        let lambda =
            frost_core::compute_lagrange_coefficient(&self.identifiers, None, seat.identifier())?;
        Ok((values.rho, values.hiding, values.binding, lambda))
    }

    /// The share of `seat` (whose key package under these values' group key
    /// is `key`) for its nonce pair (hiding, binding): RFC 9591's
    /// z = d + e·ρ + λ·s·c, with the signing share negated when the group
    /// key's Y is odd and the nonces when the group commitment's is, as
    /// BIP340 and frost-secp256k1-tr require.
    ///
    /// # Errors
    /// [`Error::UnknownSeat`] if `seat` has no commitment in the package;
    /// [`Error::Frost`] if frost's Lagrange coefficient fails (a repeated
    /// identifier, which a package cannot hold).
    pub(crate) fn share(
        &self,
        seat: Seat,
        [hiding, binding]: &[Scalar; 2],
        key: &KeyPackage,
    ) -> Result<SignatureShare> {
        let (rho, _, _, lambda) = self.signer(seat)?;
        let mut hiding = Zeroizing::new(*hiding);
        let mut binding = Zeroizing::new(*binding);
        if self.commitment_odd {
            *hiding = -*hiding;
            *binding = -*binding;
        }
        let mut secret = Zeroizing::new(key.signing_share().to_scalar());
        if self.key_odd {
            *secret = -*secret;
        }
        let z = *hiding + *binding * rho + lambda * *secret * self.challenge;
        let share = round2::SignatureShare::deserialize(&z.to_bytes())?;
        Ok(SignatureShare::from_frost(share))
    }

    /// Checks `z` as `seat`'s share, `verifying_share` being the seat's
    /// verifying share of the group key: frost's
    /// `verify_signature_share_precomputed` with the tr suite's negations,
    /// z·G = R_i + c·λ·Y_i with R_i = D + ρ·E negated when R's Y is odd and
    /// Y_i negated when the group key's is.
    ///
    /// # Errors
    /// [`Error::InvalidShares`] naming `seat` if the share is invalid;
    /// [`Error::UnknownSeat`] if `seat` has no commitment in the package.
    pub(crate) fn check_share(
        &self,
        seat: Seat,
        z: Scalar,
        verifying_share: &ProjectivePoint,
    ) -> Result<()> {
        let (mut rho, mut hiding, binding, lambda) = self.signer(seat)?;
        if self.commitment_odd {
            hiding = -hiding;
            rho = -rho;
        }
        let mut verifying_share = *verifying_share;
        if self.key_odd {
            verifying_share = -verifying_share;
        }
        let expected = hiding
            + ProjectivePoint::lincomb_ext(&[
                (binding, rho),
                (verifying_share, self.challenge * lambda),
            ]);
        if ProjectivePoint::mul_by_generator(&z) == expected {
            Ok(())
        } else {
            Err(Error::InvalidShares {
                culprits: vec![seat],
            })
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
