//! The cryptographic check that a removed member's old share and a
//! remaining member's new share make no signature. Shared by the engine's
//! refresh tests and the process tests of `thresig refresh --remove`
//! (included there by path), which read the shares from the members'
//! stores.

use rand_core::{CryptoRng, RngCore};
use thresig_crypto::{KeyShare, SigningPackage, WalletKey};

/// Checks that `old` (a removed member's share, of the key record
/// `old_key`) and `new` (a remaining member's share after the refresh, of
/// `new_key`) make no signature valid under the output key: `new` signs
/// no package with the removed seat in it under either record, and both
/// shares signing one package under a record that admits both (the old
/// one with `new`'s verifying share swapped in, as a lying coordinator
/// could hand out) aggregate to no valid signature under any of the three.
pub(crate) fn old_and_new_shares_make_no_signature(
    (old, old_key): (&KeyShare, &WalletKey),
    (new, new_key): (&KeyShare, &WalletKey),
    rng: &mut (impl RngCore + CryptoRng),
) {
    let message = [5; 32];
    let mut package = || {
        let (old_nonce, old_commitment) = thresig_crypto::commit(old, rng);
        let (new_nonce, new_commitment) = thresig_crypto::commit(new, rng);
        let commitments = [(new.seat(), new_commitment), (old.seat(), old_commitment)].into();
        let package = SigningPackage::new(&commitments, &message).unwrap();
        (package, old_nonce, new_nonce)
    };
    for key in [new_key, old_key] {
        let (p, _, new_nonce) = package();
        assert!(thresig_crypto::sign(new_nonce, &p, new, key).is_err());
    }
    let hybrid = WalletKey::from_stored_bytes(&with_share_of(
        &old_key.to_bytes().unwrap(),
        &new_key.to_bytes().unwrap(),
        new.seat().get(),
    ))
    .unwrap();
    let (p, old_nonce, new_nonce) = package();
    let shares = [
        (
            new.seat(),
            thresig_crypto::sign(new_nonce, &p, new, &hybrid).unwrap(),
        ),
        (
            old.seat(),
            thresig_crypto::sign(old_nonce, &p, old, &hybrid).unwrap(),
        ),
    ]
    .into();
    let valid = |record: &WalletKey| {
        thresig_crypto::aggregate(record, &p, &shares).is_ok_and(|signature| {
            thresig_crypto::verify(&new_key.output_key(), &message, &signature).is_ok()
        })
    };
    assert!(!valid(&hybrid) && !valid(old_key) && !valid(new_key));
}

/// `record` (a wallet key record's bytes) with seat `s`'s verifying share
/// taken from `from`: each share follows its seat's 32-byte identifier.
fn with_share_of(record: &[u8], from: &[u8], s: u16) -> Vec<u8> {
    let mut id = [0u8; 32];
    id[30..].copy_from_slice(&s.to_be_bytes());
    let at = |bytes: &[u8]| {
        bytes
            .windows(32)
            .position(|w| w == id)
            .map(|i| i + 32)
            .unwrap()
    };
    let (to, src) = (at(record), at(from));
    let mut out = record.to_vec();
    out[to..to + 33].copy_from_slice(&from[src..src + 33]);
    out
}
