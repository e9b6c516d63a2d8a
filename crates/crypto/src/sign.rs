//! Signing: nonce commitments, signature shares, share verification,
//! aggregation with culprit identification, and BIP340 verification.

use std::collections::BTreeMap;
use std::fmt;

use frost_core::CheaterDetection;
use frost_core::{Ciphersuite as _, Field as _};
use frost_secp256k1_tr::round1::{NonceCommitment, SigningCommitments};
use frost_secp256k1_tr::round2;
use frost_secp256k1_tr::{
    Error as FrostError, Identifier, Secp256K1ScalarField, Secp256K1Sha256TR,
};
use k256::elliptic_curve::ops::MulByGenerator as _;
use k256::{ProjectivePoint, Scalar};
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::session::SessionValues;
use crate::wire::{
    COMMITMENT_LEN, commitment_points, encode_commitment, encode_package, parse_commitment,
    split_package,
};
use crate::{Encoding, Error, KeyShare, Result, Seat, WalletKey, XOnlyKey};

/// A signer's public round-1 commitment to one nonce pair, with its
/// encoding.
///
/// # Invariants
/// `bytes` is the canonical encoding of `frost` (frost's own encoding): it
/// is either made from the points ([`commit`]) or the exact bytes the
/// commitment was parsed from, and parsing accepts only the canonical
/// encoding. So hashing or sending `bytes` is hashing or sending the
/// encoding, without encoding again (each point's encoding costs a field
/// inversion).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Commitment {
    frost: SigningCommitments,
    bytes: [u8; COMMITMENT_LEN],
}

impl Commitment {
    /// The canonical encoding, for sending or hashing.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The canonical encoding, owned.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        self.bytes.to_vec()
    }

    /// Decodes a commitment received from a peer or read from storage;
    /// only the canonical encoding (as [`Self::to_bytes`] writes it) is
    /// accepted, and it is kept as it arrived.
    ///
    /// # Errors
    /// [`Error::Decode`] for malformed or non-canonical bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = || Error::Decode {
            what: Encoding::Commitment,
        };
        let frost = parse_commitment(bytes).ok_or_else(bad)?;
        let bytes = bytes.try_into().map_err(|_| bad())?;
        Ok(Self { frost, bytes })
    }

    /// The hiding and binding points.
    pub(crate) fn points(&self) -> (ProjectivePoint, ProjectivePoint) {
        (self.frost.hiding().value(), self.frost.binding().value())
    }
}

impl fmt::Debug for Commitment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Commitment(")?;
        for byte in &self.bytes {
            write!(f, "{byte:02x}")?;
        }
        f.write_str(")")
    }
}

/// The secret nonce pair behind one [`Commitment`].
///
/// Neither `Clone` nor serializable, zeroized on drop, redacted in `Debug`,
/// and consumed by [`sign`]: a nonce can sign at most once, and a restart
/// loses it (by design).
///
/// The pair lives in a heap block of its own, wiped before it is freed:
/// moving a `SecretNonce` (into a vector, out of it by `into_iter`, into
/// [`sign`]) copies its bytes and runs no `Drop` on the old place, so a
/// pair held inline would be left behind in every buffer it moved out of.
pub struct SecretNonce {
    seat: Seat,
    /// The hiding and binding nonces (d, e).
    pair: Box<Zeroizing<[Scalar; 2]>>,
    commitment: Commitment,
}

impl SecretNonce {
    /// The public commitment of this nonce (an in-memory key to find it by).
    #[must_use]
    pub fn commitment(&self) -> Commitment {
        self.commitment
    }

    /// The seat that made this nonce.
    #[must_use]
    pub fn seat(&self) -> Seat {
        self.seat
    }
}

impl fmt::Debug for SecretNonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretNonce")
            .field("seat", &self.seat)
            .field("commitment", &self.commitment)
            .field("nonces", &"<redacted>")
            .finish()
    }
}

/// Signing round 1: a fresh nonce pair for one signature (one PSBT input).
/// The commitments are k256's base-point multiplications from its
/// precomputed tables (frost's `SigningNonces` multiplies the generator as
/// any other point), made affine for encoding in one batch (one field
/// inversion, not two).
#[must_use]
pub fn commit(share: &KeyShare, rng: &mut (impl RngCore + CryptoRng)) -> (SecretNonce, Commitment) {
    let pair = fresh_nonces(share, rng);
    let [hiding, binding] = &**pair;
    let frost = SigningCommitments::new(
        NonceCommitment::new(ProjectivePoint::mul_by_generator(hiding)),
        NonceCommitment::new(ProjectivePoint::mul_by_generator(binding)),
    );
    let commitment = Commitment {
        frost,
        bytes: encode_commitment(&frost),
    };
    let nonce = SecretNonce {
        seat: share.seat(),
        pair,
        commitment,
    };
    (nonce, commitment)
}

/// A fresh nonce pair of `share`: RFC 9591's `nonce_generate` (H3 of 32
/// random bytes and the share's encoding) for the hiding nonce, then for
/// the binding one, as frost's `SigningNonces::new` draws them. Not frost's
/// own: it builds the hash input in vectors it frees unwiped, leaving the
/// signing share behind in the heap at every commitment, and its
/// `round1::commit` also frees a vector with the nonces in it.
fn fresh_nonces(
    share: &KeyShare,
    rng: &mut (impl RngCore + CryptoRng),
) -> Box<Zeroizing<[Scalar; 2]>> {
    let secret = Zeroizing::new(share.package().signing_share().serialize());
    let mut pair = Box::new(Zeroizing::new([Scalar::ZERO; 2]));
    for nonce in pair.iter_mut() {
        let mut input = Zeroizing::new([0u8; 64]);
        let (random, own) = input.split_at_mut(32);
        rng.fill_bytes(random);
        own.copy_from_slice(&secret);
        *nonce = Secp256K1Sha256TR::H3(&input[..]);
    }
    pair
}

/// What the coordinator sends to the chosen signers for one signature: the
/// 32-byte message (a BIP341 sighash) and each chosen signer's commitment.
///
/// # Invariants
/// `commitments` are the commitments of `frost`, by seat; the package's
/// encoding is made from their kept bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningPackage {
    frost: frost_secp256k1_tr::SigningPackage,
    commitments: BTreeMap<Seat, Commitment>,
}

impl SigningPackage {
    /// Builds a package from the chosen signers' commitments.
    ///
    /// # Errors
    /// [`Error::TooFewSigners`] if `commitments` is empty (a wallet's
    /// threshold is checked by [`sign`] and [`aggregate`]).
    pub fn new(commitments: &BTreeMap<Seat, Commitment>, message: &[u8; 32]) -> Result<Self> {
        if commitments.is_empty() {
            return Err(Error::TooFewSigners { needed: 2, got: 0 });
        }
        Ok(Self::from_parts(commitments.clone(), message))
    }

    fn from_parts(commitments: BTreeMap<Seat, Commitment>, message: &[u8]) -> Self {
        let frost = commitments
            .iter()
            .map(|(seat, c)| (seat.identifier(), c.frost))
            .collect();
        Self {
            frost: frost_secp256k1_tr::SigningPackage::new(frost, message),
            commitments,
        }
    }

    /// The message to sign.
    #[must_use]
    pub fn message(&self) -> &[u8] {
        self.frost.message()
    }

    /// The chosen signers, ascending.
    #[must_use]
    pub fn signers(&self) -> Vec<Seat> {
        self.commitments.keys().copied().collect()
    }

    /// The commitment the package holds for `seat`.
    #[must_use]
    pub fn commitment(&self, seat: Seat) -> Option<Commitment> {
        self.commitments.get(&seat).copied()
    }

    /// Encodes the package for sending: its commitments' bytes as kept,
    /// so no point is encoded again.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_package(
            self.commitments.iter().map(|(seat, c)| (*seat, &c.bytes)),
            self.message(),
        )
    }

    /// The commitments, by seat.
    pub(crate) fn commitments(&self) -> &BTreeMap<Seat, Commitment> {
        &self.commitments
    }

    /// RFC 9591's `encode_group_commitment_list` of the package, from the
    /// commitments' kept bytes: per signer, ascending, the identifier's 32
    /// bytes and the two compressed points.
    pub(crate) fn encoded_commitment_list(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.commitments.len() * (32 + COMMITMENT_LEN));
        for (seat, commitment) in &self.commitments {
            out.extend_from_slice(&seat.identifier().serialize());
            out.extend_from_slice(commitment_points(&commitment.bytes));
        }
        out
    }

    /// frost's package, for the session values of [`crate::PreparedPackage`].
    pub(crate) fn frost(&self) -> &frost_secp256k1_tr::SigningPackage {
        &self.frost
    }

    /// Decodes a package, refusing identifiers that are not seats, messages
    /// that are not 32 bytes, and any encoding other than the canonical one
    /// (trailing bytes, a seat listed twice). Each commitment keeps the
    /// bytes it arrived as.
    ///
    /// # Errors
    /// [`Error::Decode`] for malformed or non-canonical bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = || Error::Decode {
            what: Encoding::SigningPackage,
        };
        let (split, message) = split_package(bytes).ok_or_else(bad)?;
        let commitments = split
            .into_iter()
            .map(|(seat, c)| Ok((seat, Commitment::from_bytes(c).map_err(|_| bad())?)))
            .collect::<Result<_>>()?;
        Ok(Self::from_parts(commitments, message))
    }

    /// Checks that every signer is a member of `wallet` and that there are
    /// at least its threshold of them.
    pub(crate) fn check_signers(&self, wallet: &WalletKey) -> Result<()> {
        let mut got = 0usize;
        for &seat in self.commitments.keys() {
            wallet.check_member(seat)?;
            got = got.saturating_add(1);
        }
        if got < usize::from(wallet.threshold()) {
            return Err(Error::TooFewSigners {
                needed: wallet.threshold(),
                got,
            });
        }
        Ok(())
    }
}

/// One signer's round-2 contribution to one signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignatureShare(round2::SignatureShare);

impl SignatureShare {
    /// Wraps frost's share, for [`SessionValues::share`].
    pub(crate) fn from_frost(share: round2::SignatureShare) -> Self {
        Self(share)
    }

    /// The share's scalar, for [`crate::PreparedPackage::aggregate`]: frost
    /// keeps its own accessor private, so it is read back from the share's
    /// encoding with frost's scalar decoding.
    ///
    /// # Errors
    /// [`Error::Decode`] if frost's encoding of the share does not decode
    /// (every share is decoded canonically or made by frost, so this
    /// reports a broken dependency, not bad input).
    pub(crate) fn scalar(&self) -> Result<k256::Scalar> {
        let bad = || Error::Decode {
            what: Encoding::SignatureShare,
        };
        let bytes: [u8; 32] = self.0.serialize().try_into().map_err(|_| bad())?;
        Secp256K1ScalarField::deserialize(&bytes).map_err(|_| bad())
    }

    /// The 32-byte encoding.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.serialize()
    }

    /// Decodes a share received from a signer (exactly the 32-byte canonical encoding).
    ///
    /// # Errors
    /// [`Error::Decode`] if the bytes are not the encoding of a scalar.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = Error::Decode {
            what: Encoding::SignatureShare,
        };
        let share = round2::SignatureShare::deserialize(bytes).map_err(|_| bad)?;
        if share.serialize() != bytes {
            return Err(Error::Decode {
                what: Encoding::SignatureShare,
            });
        }
        Ok(Self(share))
    }
}

/// Signing round 2: the share of `share`'s seat over `package`, consuming
/// `nonce` (so a nonce signs at most once; it is destroyed even on error).
/// The tweak comes from `wallet` only.
///
/// # Errors
/// [`Error::WrongWallet`] if the share is not the wallet's,
/// [`Error::UnknownSeat`] naming a signer of `package` that holds no share
/// of the wallet, [`Error::TooFewSigners`] below the wallet's threshold,
/// [`Error::CommitmentMismatch`] if the nonce is not this seat's or its
/// commitment is not the one in `package`.
pub fn sign(
    nonce: SecretNonce,
    package: &SigningPackage,
    share: &KeyShare,
    wallet: &WalletKey,
) -> Result<SignatureShare> {
    share.check_wallet(wallet)?;
    package.check_signers(wallet)?;
    let seat = share.seat();
    if nonce.seat != seat || package.commitment(seat) != Some(nonce.commitment) {
        return Err(Error::CommitmentMismatch { seat });
    }
    let key = wallet.signing_key_package(share.package());
    SessionValues::new(package, key.verifying_key())?.share(seat, &nonce.pair, &key)
}

/// Verifies one signer's share as it arrives, against the same tweaked key
/// package signing used.
///
/// # Errors
/// [`Error::InvalidShares`] naming `seat` if the share is invalid;
/// [`Error::UnknownSeat`] if `seat` (or any signer of `package`) holds no
/// share of the wallet, or `seat` has no commitment in `package`;
/// [`Error::TooFewSigners`] if `package` names fewer members than the threshold.
pub fn verify_share(
    wallet: &WalletKey,
    package: &SigningPackage,
    seat: Seat,
    share: &SignatureShare,
) -> Result<()> {
    package.check_signers(wallet)?;
    let group = wallet.signing_group();
    let id = seat.identifier();
    let verifying_share = group
        .verifying_shares()
        .get(&id)
        .ok_or(Error::UnknownSeat { seat: seat.get() })?;
    if package.commitment(seat).is_none() {
        return Err(Error::UnknownSeat { seat: seat.get() });
    }
    frost_core::verify_signature_share(
        id,
        verifying_share,
        &share.0,
        package.frost(),
        group.verifying_key(),
    )
    .map_err(|err| culprits(err, &[seat]))
}

/// Aggregates the shares of every signer in `package` into a BIP340
/// signature under the wallet's output key.
///
/// The aggregate is verified under the tweaked group key; if it fails, every
/// share is verified and all invalid ones are reported (frost's
/// `CheaterDetection::AllCheaters`). A valid aggregate is not re-checked
/// share by share: a coordinator that needs blame as shares arrive (ROAST)
/// calls [`verify_share`] on each. The result is verified once more, by BIP340,
/// under [`WalletKey::output_key`].
///
/// # Errors
/// [`Error::InvalidShares`] listing every seat whose share is invalid;
/// [`Error::SharesMismatch`] if the shares' seats differ from the package's
/// signers; [`Error::UnknownSeat`] naming a signer of `package` that holds no
/// share of the wallet; [`Error::TooFewSigners`] below the threshold.
pub fn aggregate(
    wallet: &WalletKey,
    package: &SigningPackage,
    shares: &BTreeMap<Seat, SignatureShare>,
) -> Result<Signature> {
    package.check_signers(wallet)?;
    if shares.keys().copied().ne(package.signers()) {
        return Err(Error::SharesMismatch);
    }
    let by_id: BTreeMap<Identifier, round2::SignatureShare> = shares
        .iter()
        .map(|(seat, share)| (seat.identifier(), share.0))
        .collect();
    let signature = frost_core::aggregate_custom(
        package.frost(),
        &by_id,
        wallet.signing_group(),
        CheaterDetection::AllCheaters,
    )
    .map_err(|err| culprits(err, &[]))?;
    let signature = Signature(signature);
    verify(&wallet.output_key(), package.message(), &signature)?;
    Ok(signature)
}

/// Maps frost's share-verification failure to seats; `fallback` is blamed
/// when frost reports no identifiable culprit.
pub(crate) fn culprits(err: FrostError, fallback: &[Seat]) -> Error {
    match err {
        FrostError::InvalidSignatureShare { culprits } => {
            let mut seats: Vec<Seat> = culprits.iter().filter_map(Seat::from_identifier).collect();
            if seats.is_empty() {
                seats = fallback.to_vec();
            }
            seats.sort_unstable();
            Error::InvalidShares { culprits: seats }
        }
        FrostError::UnknownIdentifier | FrostError::MissingCommitment => Error::SharesMismatch,
        other => Error::Frost(other),
    }
}

/// A BIP340 Schnorr signature (64 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature(frost_core::Signature<Secp256K1Sha256TR>);

impl Signature {
    /// Wraps frost's signature, for [`crate::PreparedPackage::aggregate`].
    pub(crate) fn from_frost(signature: frost_core::Signature<Secp256K1Sha256TR>) -> Self {
        Self(signature)
    }

    /// The 64-byte BIP340 encoding `x(R) || s`.
    ///
    /// # Errors
    /// [`Error::Frost`] if frost fails to encode (not expected).
    pub fn to_bytes(&self) -> Result<[u8; 64]> {
        self.0.serialize()?.try_into().map_err(|_| Error::Decode {
            what: Encoding::Signature,
        })
    }

    /// Decodes a 64-byte BIP340 signature.
    ///
    /// # Errors
    /// [`Error::Decode`] if `x(R)` is not on the curve or `s` is not below the group order.
    pub fn from_bytes(bytes: &[u8; 64]) -> Result<Self> {
        let bad = || Error::Decode {
            what: Encoding::Signature,
        };
        let signature = frost_core::Signature::deserialize(bytes).map_err(|_| bad())?;
        if signature.serialize().map_err(|_| bad())? != bytes {
            return Err(bad());
        }
        Ok(Self(signature))
    }
}

/// BIP340 verification of `signature` over `message` (any length) under `key`.
///
/// # Errors
/// [`Error::InvalidSignature`] if it does not verify.
pub fn verify(key: &XOnlyKey, message: &[u8], signature: &Signature) -> Result<()> {
    key.to_verifying_key()?
        .verify(message, &signature.0)
        .map_err(|_| Error::InvalidSignature)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use std::collections::BTreeSet;

    use frost_secp256k1_tr::keys::{EvenY as _, KeyPackage};
    use frost_secp256k1_tr::round1::SigningNonces;
    use k256::elliptic_curve::point::AffineCoordinates as _;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng as _;

    use super::*;
    use crate::{GroupParams, LocalGroup, MerkleRoot, ScriptTree, dkg_in_process, import_key};

    type Nonce = frost_core::round1::Nonce<Secp256K1Sha256TR>;

    /// Whether frost's group commitment of `package` under `key` has odd Y.
    fn commitment_is_odd(package: &SigningPackage, key: &KeyPackage) -> bool {
        let even = key.clone().into_even_y(None);
        let binding =
            frost_core::compute_binding_factor_list(package.frost(), even.verifying_key(), &[])
                .unwrap();
        let commitment = frost_core::compute_group_commitment(package.frost(), &binding).unwrap();
        commitment.to_element().to_affine().y_is_odd().into()
    }

    /// A wallet of `params` with `tree`, imported or from a DKG.
    fn wallet(
        params: GroupParams,
        tree: ScriptTree,
        imported: bool,
        rng: &mut ChaCha20Rng,
    ) -> LocalGroup {
        if imported {
            let mut secret = [0u8; 32];
            rng.fill_bytes(&mut secret);
            secret[0] &= 0x7f;
            let (wallet, shares) = import_key(&secret, params, tree, rng).unwrap();
            (shares.into_iter().map(|s| (s.seat(), s)).collect(), wallet)
        } else {
            dkg_in_process(params, tree, rng).unwrap()
        }
    }

    /// Signs with `signers` of `group`, requiring of every share the one
    /// frost's `round2::sign` makes from the same nonce pair, package and
    /// key package (and of every commitment frost's from that pair), and
    /// notes the parities of the signing key and of R in `seen`.
    fn sign_as_frost_does(
        (shares, wallet): &LocalGroup,
        signers: &[Seat],
        rng: &mut ChaCha20Rng,
        seen: &mut BTreeSet<(bool, bool)>,
    ) {
        let (nonces, commitments): (Vec<_>, BTreeMap<_, _>) = signers
            .iter()
            .map(|seat| {
                let (nonce, commitment) = commit(&shares[seat], rng);
                (nonce, (*seat, commitment))
            })
            .unzip();
        let mut message = [0u8; 32];
        rng.fill_bytes(&mut message);
        let package = SigningPackage::new(&commitments, &message).unwrap();
        for nonce in nonces {
            let share = &shares[&nonce.seat];
            let key = wallet.signing_key_package(share.package());
            let nonces = SigningNonces::from_nonces(
                Nonce::from_scalar(nonce.pair[0]),
                Nonce::from_scalar(nonce.pair[1]),
            );
            assert_eq!(*nonces.commitments(), nonce.commitment.frost);
            let frosts = round2::sign(package.frost(), &nonces, &key).unwrap();
            let ours = sign(nonce, &package, share, wallet).unwrap();
            assert_eq!(ours.to_bytes(), frosts.serialize(), "{signers:?}");
            seen.insert((!key.has_even_y(), commitment_is_odd(&package, &key)));
        }
    }

    fn seats(numbers: &[u16]) -> Vec<Seat> {
        numbers
            .iter()
            .map(|&n| Seat::try_from(n).unwrap())
            .collect()
    }

    /// Every share [`sign`] makes is the share frost makes, for generated
    /// and imported keys with and without a script tree, for t = n, for
    /// more signers than t and for scattered seats, with either parity of
    /// the signing key and of the group commitment under each convention.
    #[test]
    fn every_share_is_the_one_frost_makes() {
        let shapes: [(u16, u16, &[u16]); 6] = [
            (2, 2, &[1, 2]),
            (3, 3, &[1, 2, 3]),
            (2, 5, &[2, 5]),
            (2, 5, &[1, 3, 4, 5]),
            (3, 5, &[1, 2, 3, 4, 5]),
            (4, 6, &[2, 3, 4, 6]),
        ];
        for tree in [
            ScriptTree::KeyPathOnly,
            ScriptTree::Root(MerkleRoot([0x5b; 32])),
        ] {
            for imported in [false, true] {
                let mut seen = BTreeSet::new();
                for seed in 0..4u64 {
                    for (t, n, signers) in shapes {
                        let rng = &mut ChaCha20Rng::seed_from_u64(seed * 64 + u64::from(n));
                        let group = wallet(GroupParams::new(t, n).unwrap(), tree, imported, rng);
                        sign_as_frost_does(&group, &seats(signers), rng, &mut seen);
                    }
                }
                assert_eq!(
                    seen.len(),
                    4,
                    "{tree:?}, imported {imported}: either parity of the key and of R: {seen:?}"
                );
            }
        }
    }

    /// The same at seats whose identifiers have two nonzero bytes.
    #[test]
    fn shares_at_high_seats_are_the_ones_frost_makes() {
        let rng = &mut ChaCha20Rng::seed_from_u64(77);
        let group = wallet(
            GroupParams::new(3, 1000).unwrap(),
            ScriptTree::KeyPathOnly,
            true,
            rng,
        );
        let mut seen = BTreeSet::new();
        for signers in [
            &[255, 256, 1000][..],
            &[1, 256, 257, 512, 999, 1000],
            &[254, 255, 256, 257],
        ] {
            for _ in 0..3 {
                sign_as_frost_does(&group, &seats(signers), rng, &mut seen);
            }
        }
        assert!(!seen.is_empty());
    }

    /// The commitment list hashed into the binding factors, made from the
    /// kept bytes, is frost's encoding of the decoded commitments.
    #[test]
    fn the_commitment_list_is_frosts_encoding() {
        let rng = &mut ChaCha20Rng::seed_from_u64(5);
        let (shares, _) = wallet(
            GroupParams::new(3, 300).unwrap(),
            ScriptTree::KeyPathOnly,
            true,
            rng,
        );
        for signers in [&[1, 2, 3][..], &[7, 255, 256, 300]] {
            let commitments = seats(signers)
                .into_iter()
                .map(|seat| (seat, commit(&shares[&seat], rng).1))
                .collect();
            let package = SigningPackage::from_bytes(
                &SigningPackage::new(&commitments, &[3; 32])
                    .unwrap()
                    .to_bytes(),
            )
            .unwrap();
            assert_eq!(
                package.encoded_commitment_list(),
                frost_core::round1::encode_group_commitments(package.frost().signing_commitments())
                    .unwrap()
            );
        }
    }
}
