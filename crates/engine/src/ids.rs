//! Identifier newtypes and the engine's notion of time.
//!
//! Every id the engine handles has its own type, so a seat can never be
//! passed where an epoch is expected, and hashes of different things cannot
//! be confused. Wallet ids and time are the store's
//! ([`thresig_store::WalletId`], [`thresig_store::Timestamp`]), re-exported
//! by the crate root: the store is the lowest crate that holds them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A wallet epoch, as requests carry it: the generation of the wallet's key
/// shares (DESIGN.md §4), [`WalletEpoch::INITIAL`] after the DKG. Only group
/// protocols change it (a refresh switch or a rekey step adds one), so it is
/// the same at every member, and a request of another epoch is recognised
/// as stale.
///
/// It is not the store's record epoch of the wallet
/// ([`thresig_store::RecordEpoch`]): that one moves with each member's own
/// key rotations and policy changes, seals the member's records against
/// rollback, and never crosses the wire. Nor is it the number its key
/// package is kept under ([`thresig_store::KeyEpoch`], this epoch + 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WalletEpoch(pub u64);

impl WalletEpoch {
    /// The epoch of the key shares a DKG (or an imported key) makes.
    pub const INITIAL: Self = Self(0);
}

impl fmt::Display for WalletEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "epoch {}", self.0)
    }
}

/// The authenticated identity of whoever sent a request (a coordinator),
/// as the transport layer established it (its Ed25519 identity key).
///
/// The engine uses it only to account for live nonces per coordinator; it
/// never trusts a coordinator for safety.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CoordinatorId(#[serde(with = "hex::serde")] pub [u8; 32]);

impl fmt::Debug for CoordinatorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CoordinatorId({})", short_hex(&self.0))
    }
}

/// The first eight bytes of `bytes` in hex, for `Debug` output.
fn short_hex(bytes: &[u8]) -> String {
    hex::encode(bytes.get(..8).unwrap_or(bytes))
}
