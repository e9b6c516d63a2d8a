//! Import of an existing single key by a trusted-dealer split.

use frost_secp256k1_tr::SigningKey;
use frost_secp256k1_tr::keys::{IdentifierList, KeyPackage, split};
use rand_core::{CryptoRng, RngCore};

use crate::{Encoding, Error, GroupParams, KeyShare, Result, ScriptTree, Seat, WalletKey};

/// Splits an existing secret key into `params.signers()` shares with
/// threshold `params.threshold()`, for moving a single-key wallet into a
/// threshold group. The caller is the dealer: it sees the whole key and every
/// share, so it must run offline and erase the key and the shares it hands
/// out. The wallet's internal key is the key's own public key P and its
/// output key `tweak(P, tree)`.
///
/// Returns the wallet record and one share per seat of `params` (`1..=n`
/// for [`GroupParams::new`]), ascending.
///
/// # Errors
/// [`Error::Decode`] if `secret_key` is zero or not below the group order.
pub fn import_key(
    secret_key: &[u8; 32],
    params: GroupParams,
    tree: ScriptTree,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<(WalletKey, Vec<KeyShare>)> {
    let key = SigningKey::deserialize(secret_key).map_err(|_| Error::Decode {
        what: Encoding::SecretKey,
    })?;
    let ids: Vec<_> = params.seats().map(Seat::identifier).collect();
    let (shares, group) = split(
        &key,
        params.signers(),
        params.threshold(),
        IdentifierList::Custom(&ids),
        rng,
    )?;
    let wallet = WalletKey::from_import(group, tree)?;
    let shares = shares
        .into_values()
        .map(|share| KeyShare::new(KeyPackage::try_from(share)?))
        .collect::<Result<Vec<_>>>()?;
    Ok((wallet, shares))
}
