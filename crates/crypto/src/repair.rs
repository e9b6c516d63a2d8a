//! Repair of a lost share by `t` helpers (frost's repairable threshold scheme).
//!
//! Each helper runs [`repair_step1`] and sends one [`RepairDelta`] to every
//! helper (itself included); each helper sums what it received with
//! [`repair_step2`] and sends the [`RepairSigma`] to the member being
//! repaired, who rebuilds its share with [`repair_step3`]. All values travel
//! encrypted. The rebuilt share is checked against the wallet's verifying
//! share for the seat, so a wrong sigma is detected (not located).

use std::fmt;

use frost_secp256k1_tr::Secp256K1Sha256TR;
use frost_secp256k1_tr::keys::repairable::{
    Delta, Sigma, repair_share_part1, repair_share_part2, repair_share_part3,
};
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::codec::codec;
use crate::{Encoding, Error, KeyShare, Result, Seat, WalletKey};

/// A helper's secret contribution to another helper (step 1 output).
pub struct RepairDelta(Delta);

/// A helper's secret sum for the member being repaired (step 2 output).
pub struct RepairSigma(Sigma);

codec!(RepairDelta, RepairValue, Zeroizing<Vec<u8>>, Zeroizing::new);
codec!(RepairSigma, RepairValue, Zeroizing<Vec<u8>>, Zeroizing::new);

impl fmt::Debug for RepairDelta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RepairDelta(<redacted>)")
    }
}

impl fmt::Debug for RepairSigma {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RepairSigma(<redacted>)")
    }
}

/// Step 1, at each helper: deltas for every helper (keyed by recipient seat)
/// towards rebuilding `lost`'s share.
///
/// # Errors
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
    let deltas =
        repair_share_part1::<Secp256K1Sha256TR, _>(&ids, helper.package(), rng, lost.identifier())?;
    Ok(deltas
        .into_iter()
        .filter_map(|(id, d)| Some((Seat::from_identifier(&id)?, RepairDelta(d))))
        .collect())
}

/// Step 2, at each helper: the sum of the deltas it received from all helpers.
#[must_use]
pub fn repair_step2(deltas: Vec<RepairDelta>) -> RepairSigma {
    let deltas: Vec<Delta> = deltas.into_iter().map(|d| d.0).collect();
    RepairSigma(repair_share_part2(&deltas))
}

/// Step 3, at the member being repaired: its share from every helper's sigma.
///
/// # Errors
/// [`Error::WrongWallet`] if the rebuilt share's public image is not the
/// wallet's verifying share for `lost` (a helper sent a wrong value, or too
/// few sigmas were given).
pub fn repair_step3(sigmas: Vec<RepairSigma>, lost: Seat, wallet: &WalletKey) -> Result<KeyShare> {
    let sigmas: Vec<Sigma> = sigmas.into_iter().map(|s| s.0).collect();
    let package = repair_share_part3(&sigmas, lost.identifier(), wallet.group())?;
    let share = KeyShare::new(package)?;
    share.check_wallet(wallet)?;
    Ok(share)
}
