//! Repair of a lost share by `t` helpers (frost's repairable threshold scheme).
//!
//! Each helper runs [`repair_step1`] and sends one [`RepairDelta`] to every
//! helper (itself included); each helper sums what it received with
//! [`repair_step2`] and sends the [`RepairSigma`] to the member being
//! repaired, who rebuilds its share with [`repair_step3`]. All values travel
//! encrypted. The rebuilt share is checked against the wallet's verifying
//! share for the seat, so a wrong sigma is detected (not located).

use std::collections::BTreeMap;
use std::fmt;

use frost_secp256k1_tr::keys::repairable::{
    Delta, Sigma, repair_share_part1, repair_share_part2, repair_share_part3,
};
use frost_secp256k1_tr::{Identifier, Secp256K1Sha256TR};
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

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

/// Step 1, at each helper: deltas for every helper (keyed by recipient seat)
/// towards rebuilding `lost`'s share.
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
) -> Result<Vec<(Seat, RepairDelta)>> {
    helper.check_wallet(wallet)?;
    wallet.check_member(lost)?;
    for seat in helpers {
        wallet.check_member(*seat)?;
    }
    let mut distinct = helpers.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() != helpers.len()
        || distinct.len() < usize::from(wallet.threshold())
        || distinct.contains(&lost)
        || !distinct.contains(&helper.seat())
    {
        return Err(Error::NotEnoughHelpers);
    }
    let ids: Vec<_> = distinct.iter().map(|s| s.identifier()).collect();
    let mut deltas: BTreeMap<Identifier, Delta> =
        repair_share_part1::<Secp256K1Sha256TR, _>(&ids, helper.package(), rng, lost.identifier())?;
    let out = deltas
        .iter()
        .filter_map(|(id, d)| Some((Seat::from_identifier(id)?, RepairDelta(to_secret_bytes(d)))))
        .collect();
    for delta in deltas.values_mut() {
        wipe(std::slice::from_mut(delta));
    }
    Ok(out)
}

/// Step 2, at each helper: the sum of the deltas it received from all helpers.
#[must_use]
pub fn repair_step2(deltas: Vec<RepairDelta>) -> RepairSigma {
    // A `RepairDelta` only ever holds the bytes of a valid scalar, so none is skipped.
    let mut frost: Vec<Delta> = deltas.iter().filter_map(|d| d.frost().ok()).collect();
    let mut sigma = repair_share_part2(&frost);
    wipe(&mut frost);
    let out = RepairSigma(to_secret_bytes(&sigma));
    wipe(std::slice::from_mut(&mut sigma));
    out
}

/// Step 3, at the member being repaired: its share from every helper's sigma.
///
/// # Errors
/// [`Error::UnknownSeat`] if `lost` holds no share of `wallet`;
/// [`Error::WrongWallet`] if the rebuilt share's public image is not the
/// wallet's verifying share for `lost` (a helper sent a wrong value, or too
/// few sigmas were given).
pub fn repair_step3(sigmas: Vec<RepairSigma>, lost: Seat, wallet: &WalletKey) -> Result<KeyShare> {
    wallet.check_member(lost)?;
    let mut frost = sigmas
        .iter()
        .map(RepairSigma::frost)
        .collect::<Result<Vec<Sigma>>>()?;
    let package = repair_share_part3(&frost, lost.identifier(), wallet.group());
    wipe(&mut frost);
    let share = KeyShare::new(package?)?;
    share.check_wallet(wallet)?;
    Ok(share)
}
