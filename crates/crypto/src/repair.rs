//! Repair of a lost share by `t` helpers (frost's repairable threshold scheme).
//!
//! Each helper runs [`repair_step1`] and sends one [`RepairDelta`] to every
//! helper (itself included); each helper sums what it received with
//! [`repair_step2`] and sends the [`RepairSigma`] to the member being
//! repaired, who rebuilds its share with [`repair_step3`]. Deltas and sigmas
//! travel encrypted.
//!
//! Every helper also publishes [`RepairCommitments`]: the public image
//! δ_ij·G of each delta it hands out. With helper set H and lost seat ℓ,
//! helper i's deltas sum to ζ_i·s_i (ζ_i its Lagrange coefficient for
//! interpolating at ℓ over H), so their images sum to ζ_i·Y_i, checkable
//! against the verifying share Y_i on record. That lets every check name the
//! liar instead of only noticing a wrong result:
//! - a helper checks each delta it receives against its sender's commitment
//!   ([`Error::BadRepairDelta`] names the sender);
//! - the repaired member checks each helper's commitments against ζ_i·Y_i
//!   ([`Error::BadRepairCommitment`]) and each sigma σ_j against
//!   Σ_i δ_ij·G ([`Error::BadRepairSigma`]), then the rebuilt share against
//!   its own verifying share on record.

use std::collections::BTreeMap;
use std::fmt;

use std::collections::BTreeSet;

use frost_secp256k1_tr::keys::repairable::{
    Delta, Sigma, repair_share_part1, repair_share_part2, repair_share_part3,
};
use frost_secp256k1_tr::keys::{SigningShare, VerifyingShare};
use frost_secp256k1_tr::{Identifier, Secp256K1Sha256TR};
use rand_core::{CryptoRng, RngCore};
use zeroize::{Zeroize as _, Zeroizing};

use crate::{Encoding, Error, KeyShare, Result, Seat, WalletKey};

/// frost's repair values (`Delta`, `Sigma`): `Copy` scalars without `Drop`.
/// They are held here only as wiped-on-drop bytes and turned into frost's
/// type for the moment of each call.
trait RepairScalar: Copy {
    fn to_scalar_bytes(&self) -> Vec<u8>;
    fn from_scalar_bytes(bytes: &[u8]) -> Option<Self>;
}

impl RepairScalar for Delta {
    fn to_scalar_bytes(&self) -> Vec<u8> {
        self.serialize()
    }
    fn from_scalar_bytes(bytes: &[u8]) -> Option<Self> {
        Self::deserialize(bytes).ok()
    }
}

impl RepairScalar for Sigma {
    fn to_scalar_bytes(&self) -> Vec<u8> {
        self.serialize()
    }
    fn from_scalar_bytes(bytes: &[u8]) -> Option<Self> {
        Self::deserialize(bytes).ok()
    }
}

/// A repair value's canonical 32 bytes, wiped on drop.
type ScalarBytes = Zeroizing<[u8; 32]>;

fn to_secret_bytes(value: &impl RepairScalar) -> ScalarBytes {
    let encoded = Zeroizing::new(value.to_scalar_bytes());
    let mut out = Zeroizing::new([0u8; 32]);
    if out.len() == encoded.len() {
        out.copy_from_slice(&encoded);
    }
    out
}

/// Overwrites every frost repair value in `values` with zero, so the
/// container is freed without secrets (best effort: frost's types are `Copy`
/// and may have been copied on the stack by frost itself).
fn wipe<T: RepairScalar>(values: &mut [T]) {
    if let Some(zero) = T::from_scalar_bytes(&[0u8; 32]) {
        for value in values.iter_mut() {
            *value = zero;
        }
    }
    std::hint::black_box(values);
}

/// `to_bytes`/`from_bytes` of a repair value newtype over [`ScalarBytes`].
macro_rules! repair_value {
    ($ty:ident, $inner:ty, $name:literal) => {
        impl $ty {
            /// The 32-byte encoding (secret: send only encrypted).
            ///
            /// # Errors
            /// Never fails; `Result` for symmetry with the other encoders.
            pub fn to_bytes(&self) -> Result<Zeroizing<Vec<u8>>> {
                Ok(Zeroizing::new(self.0.to_vec()))
            }

            /// Decodes the 32-byte encoding of a scalar below the group order.
            ///
            /// # Errors
            /// [`Error::Decode`] for any other bytes.
            pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
                let value = <$inner>::from_scalar_bytes(bytes).ok_or(Error::Decode {
                    what: Encoding::RepairValue,
                })?;
                let out = Self(to_secret_bytes(&value));
                if out.0.as_slice() != bytes {
                    return Err(Error::Decode {
                        what: Encoding::RepairValue,
                    });
                }
                Ok(out)
            }

            fn frost(&self) -> Result<$inner> {
                <$inner>::from_scalar_bytes(self.0.as_slice()).ok_or(Error::Decode {
                    what: Encoding::RepairValue,
                })
            }

            /// The public image (value·G) of this secret value.
            fn image(&self) -> Result<Point> {
                image(&self.0)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!($name, "(<redacted>)"))
            }
        }
    };
}

/// A helper's secret contribution to another helper (step 1 output);
/// zeroized on drop.
pub struct RepairDelta(ScalarBytes);

/// A helper's secret sum for the member being repaired (step 2 output);
/// zeroized on drop.
pub struct RepairSigma(ScalarBytes);

repair_value!(RepairDelta, Delta, "RepairDelta");
repair_value!(RepairSigma, Sigma, "RepairSigma");

/// A group element as frost computes it (secp256k1 projective point).
type Point = frost_core::Element<Secp256K1Sha256TR>;

/// The public image s·G of a secret scalar, computed by frost (the way it
/// derives a verifying share from a signing share); the scalar copy is wiped.
fn image(secret: &ScalarBytes) -> Result<Point> {
    let mut share = SigningShare::deserialize(secret.as_slice()).map_err(|_| Error::Decode {
        what: Encoding::RepairValue,
    })?;
    let point = VerifyingShare::from(share).to_element();
    share.zeroize();
    Ok(point)
}

/// The length of one encoded point (compressed SEC1).
const POINT_LEN: usize = 33;

/// One helper's public commitments to the deltas it hands out: δ_ij·G for
/// every helper j (the helper itself included), keyed by recipient seat.
///
/// Public: sent signed beside the sealed deltas, to every helper and to the
/// repaired member. Its canonical encoding is, per recipient in ascending
/// seat order, the seat (2 bytes, big-endian) and the compressed point
/// (33 bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairCommitments(BTreeMap<Seat, [u8; POINT_LEN]>);

impl RepairCommitments {
    /// The recipient seats these commitments cover (the helper set the
    /// helper computed its deltas for), ascending.
    #[must_use]
    pub fn helpers(&self) -> Vec<Seat> {
        self.0.keys().copied().collect()
    }

    /// The canonical encoding (see the type's docs).
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.len() * (2 + POINT_LEN));
        for (seat, point) in &self.0 {
            out.extend_from_slice(&seat.get().to_be_bytes());
            out.extend_from_slice(point);
        }
        out
    }

    /// Decodes what [`Self::to_bytes`] wrote.
    ///
    /// # Errors
    /// [`Error::Decode`] for a truncated entry, a seat that is not a seat,
    /// seats out of ascending order or repeated, a point that is not a valid
    /// non-identity curve point in its canonical encoding, or no entry.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = || Error::Decode {
            what: Encoding::RepairCommitments,
        };
        let mut entries = BTreeMap::new();
        let mut last = None;
        for chunk in bytes.chunks(2 + POINT_LEN) {
            let (seat, point) = chunk.split_first_chunk::<2>().ok_or_else(bad)?;
            let seat = Seat::try_from(u16::from_be_bytes(*seat)).map_err(|_| bad())?;
            let point: [u8; POINT_LEN] = point.try_into().map_err(|_| bad())?;
            if last.is_some_and(|l| l >= seat) {
                return Err(bad());
            }
            let decoded = VerifyingShare::deserialize(&point).map_err(|_| bad())?;
            if decoded.serialize().map_err(|_| bad())?.as_slice() != point {
                return Err(bad());
            }
            last = Some(seat);
            entries.insert(seat, point);
        }
        if entries.is_empty() {
            return Err(bad());
        }
        Ok(Self(entries))
    }

    /// The committed image of the delta for `to`.
    fn point(&self, to: Seat) -> Option<Point> {
        let bytes = self.0.get(&to)?;
        Some(VerifyingShare::deserialize(bytes).ok()?.to_element())
    }
}

/// Encodes a point as frost does for a verifying share. `None` only for the
/// identity, which no honest delta, sigma or share has as its image.
fn encode_point(point: Point) -> Option<[u8; POINT_LEN]> {
    VerifyingShare::new(point).serialize().ok()?.try_into().ok()
}

/// What [`repair_step1`] hands out: one sealed-to-be delta per helper and
/// the public commitments to all of them.
#[derive(Debug)]
pub struct HelperDeltas {
    deltas: Vec<(Seat, RepairDelta)>,
    commitments: RepairCommitments,
}

impl HelperDeltas {
    /// The commitments to publish with the deltas.
    #[must_use]
    pub fn commitments(&self) -> &RepairCommitments {
        &self.commitments
    }

    /// The deltas, keyed by recipient seat (ascending); each travels sealed
    /// to its recipient.
    #[must_use]
    pub fn into_deltas(self) -> Vec<(Seat, RepairDelta)> {
        self.deltas
    }
}

/// Checks the shape of a repair: `lost` and every helper are members,
/// helpers are distinct, at least `t`, and exclude `lost`.
fn check_helpers(wallet: &WalletKey, helpers: &[Seat], lost: Seat) -> Result<BTreeSet<Seat>> {
    wallet.check_member(lost)?;
    for seat in helpers {
        wallet.check_member(*seat)?;
    }
    let distinct: BTreeSet<Seat> = helpers.iter().copied().collect();
    if distinct.len() != helpers.len()
        || distinct.len() < usize::from(wallet.threshold())
        || distinct.contains(&lost)
    {
        return Err(Error::NotEnoughHelpers);
    }
    Ok(distinct)
}

/// Step 1, at each helper: deltas for every helper (keyed by recipient seat)
/// towards rebuilding `lost`'s share, and the commitments to them.
///
/// Only a current member of the wallet can be repaired, and only members
/// help: a seat removed by a refresh must not be handed a share of the new
/// sharing.
///
/// # Errors
/// [`Error::UnknownSeat`] if `lost` or a helper holds no share of `wallet`;
/// [`Error::NotEnoughHelpers`] if `helpers` has fewer than `t` distinct
/// seats, includes `lost`, or omits this helper; [`Error::WrongWallet`].
pub fn repair_step1(
    helper: &KeyShare,
    wallet: &WalletKey,
    helpers: &[Seat],
    lost: Seat,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<HelperDeltas> {
    helper.check_wallet(wallet)?;
    let distinct = check_helpers(wallet, helpers, lost)?;
    if !distinct.contains(&helper.seat()) {
        return Err(Error::NotEnoughHelpers);
    }
    let ids: Vec<_> = distinct.iter().map(|s| s.identifier()).collect();
    let mut frost: BTreeMap<Identifier, Delta> =
        repair_share_part1::<Secp256K1Sha256TR, _>(&ids, helper.package(), rng, lost.identifier())?;
    let deltas: Vec<(Seat, RepairDelta)> = frost
        .iter()
        .filter_map(|(id, d)| Some((Seat::from_identifier(id)?, RepairDelta(to_secret_bytes(d)))))
        .collect();
    for delta in frost.values_mut() {
        wipe(std::slice::from_mut(delta));
    }
    let mut commitments = BTreeMap::new();
    for (to, delta) in &deltas {
        // A zero delta (probability 2^-256) has no encodable image; the
        // caller retries with fresh randomness.
        let point = encode_point(delta.image()?).ok_or(Error::NotEnoughHelpers)?;
        commitments.insert(*to, point);
    }
    Ok(HelperDeltas {
        deltas,
        commitments: RepairCommitments(commitments),
    })
}

/// Step 2, at helper `me`: checks each received delta against its sender's
/// commitment, then sums them into the sigma for the repaired member.
///
/// `received` holds one delta per sender and `commitments` every helper's
/// commitments, both keyed by sender seat; the helper set is the set of
/// senders.
///
/// # Errors
/// [`Error::NotEnoughHelpers`] if the senders of `received` are not exactly
/// the helpers in `commitments`, or `me` is not among them;
/// [`Error::BadRepairCommitment`] naming a helper whose commitments do not
/// cover exactly the helper set; [`Error::BadRepairDelta`] naming the sender
/// of a delta whose image is not its commitment for `me`.
pub fn repair_step2(
    me: Seat,
    received: Vec<(Seat, RepairDelta)>,
    commitments: &BTreeMap<Seat, RepairCommitments>,
) -> Result<RepairSigma> {
    let senders: BTreeSet<Seat> = received.iter().map(|(s, _)| *s).collect();
    if senders.len() != received.len()
        || !senders.iter().eq(commitments.keys())
        || !senders.contains(&me)
    {
        return Err(Error::NotEnoughHelpers);
    }
    check_commitment_sets(commitments)?;
    for (from, delta) in &received {
        let committed = commitments.get(from).and_then(|c| c.point(me));
        if committed != Some(delta.image()?) {
            return Err(Error::BadRepairDelta { culprit: *from });
        }
    }
    // A `RepairDelta` only ever holds the bytes of a valid scalar, so none is skipped.
    let mut frost: Vec<Delta> = received
        .iter()
        .filter_map(|(_, d)| d.frost().ok())
        .collect();
    let mut sigma = repair_share_part2(&frost);
    wipe(&mut frost);
    let out = RepairSigma(to_secret_bytes(&sigma));
    wipe(std::slice::from_mut(&mut sigma));
    Ok(out)
}

/// Every helper's commitments cover exactly the helper set (the keys of
/// `commitments`); names the first helper whose do not.
fn check_commitment_sets(commitments: &BTreeMap<Seat, RepairCommitments>) -> Result<()> {
    for (helper, set) in commitments {
        if !set.0.keys().eq(commitments.keys()) {
            return Err(Error::BadRepairCommitment { culprit: *helper });
        }
    }
    Ok(())
}

/// Step 3, at the member being repaired: its share from every helper's
/// sigma, after checking every helper's commitments and sigma.
///
/// `sigmas` and `commitments` are keyed by helper seat and must name the
/// same helpers. Checks, in order, each naming the liar: every helper's
/// commitments sum to ζ_i·Y_i for its verifying share Y_i on record; every
/// sigma's image is the sum of the commitments made to its sender; the
/// rebuilt share's image is `lost`'s verifying share on record.
///
/// # Errors
/// [`Error::UnknownSeat`] if `lost` or a helper is not a member of
/// `wallet`; [`Error::NotEnoughHelpers`] for a helper set that is not at
/// least `t` distinct members other than `lost`, or sigmas and commitments
/// from different helpers; [`Error::BadRepairCommitment`] and
/// [`Error::BadRepairSigma`] naming the helper at fault;
/// [`Error::WrongWallet`] if the rebuilt share still does not match.
pub fn repair_step3(
    sigmas: Vec<(Seat, RepairSigma)>,
    commitments: &BTreeMap<Seat, RepairCommitments>,
    lost: Seat,
    wallet: &WalletKey,
) -> Result<KeyShare> {
    let helpers: Vec<Seat> = sigmas.iter().map(|(s, _)| *s).collect();
    let distinct = check_helpers(wallet, &helpers, lost)?;
    if !distinct.iter().eq(commitments.keys()) {
        return Err(Error::NotEnoughHelpers);
    }
    check_commitment_sets(commitments)?;
    let ids: BTreeSet<Identifier> = distinct.iter().map(|s| s.identifier()).collect();
    for (helper, set) in commitments {
        let zeta = frost_core::compute_lagrange_coefficient(
            &ids,
            Some(lost.identifier()),
            helper.identifier(),
        )?;
        let on_record = wallet
            .group()
            .verifying_shares()
            .get(&helper.identifier())
            .ok_or(Error::UnknownSeat { seat: helper.get() })?
            .to_element();
        if sum(set.0.keys().map(|to| set.point(*to))) != Some(on_record * zeta) {
            return Err(Error::BadRepairCommitment { culprit: *helper });
        }
    }
    for (helper, sigma) in &sigmas {
        let expected = sum(commitments.values().map(|set| set.point(*helper)));
        if expected != Some(sigma.image()?) {
            return Err(Error::BadRepairSigma { culprit: *helper });
        }
    }
    let mut frost = sigmas
        .iter()
        .map(|(_, s)| s.frost())
        .collect::<Result<Vec<Sigma>>>()?;
    let package = repair_share_part3(&frost, lost.identifier(), wallet.group());
    wipe(&mut frost);
    let share = KeyShare::new(package?)?;
    share.check_wallet(wallet)?;
    Ok(share)
}

/// The sum of committed points (`None` if one is missing or fails to
/// decode; [`RepairCommitments::from_bytes`] rules out the latter).
fn sum(mut points: impl Iterator<Item = Option<Point>>) -> Option<Point> {
    let identity = <frost_secp256k1_tr::Secp256K1Group as frost_core::Group>::identity();
    points.try_fold(identity, |acc, p| Some(acc + p?))
}
