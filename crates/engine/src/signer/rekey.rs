//! Putting an active wallet in `rekeying`: an operator's action, never a
//! coordinator's.

use thresig_store::Store;

use super::{Signer, lock, store_error};
use crate::durable::rekeying_ops;
use crate::error::Error;
use crate::wallet::WalletState;
use thresig_store::WalletId;

impl<S: Store> Signer<S> {
    /// Puts an active wallet in `rekeying`, durably: from then on it signs
    /// only a sweep whose outputs all pay the successor named in its
    /// configuration (once that successor is `active` here), and refuses
    /// every other spend with `rekey_in_progress`. An operator action; a
    /// coordinator cannot trigger it.
    ///
    /// # Errors
    /// [`Error::UnknownWallet`]; [`Error::RekeyNotPossible`] if the wallet
    /// names no successor or is not `active`; [`Error::Store`] if the
    /// record cannot be written (the wallet then stays `active`).
    pub fn begin_rekey(&self, wallet: &WalletId) -> Result<(), Error> {
        let slot = self.slot(wallet)?;
        let mut shard = lock(&self.store, slot)?;
        let not_possible = || Error::RekeyNotPossible {
            wallet: wallet.clone(),
        };
        if slot.config.successor.is_none() {
            return Err(not_possible());
        }
        if !matches!(shard.state, WalletState::Active(_)) {
            return Err(not_possible());
        }
        let ops = rekeying_ops(&self.store, wallet)?;
        self.store
            .write(ops)
            .map_err(|source| store_error(wallet, source))?;
        let state = std::mem::replace(&mut shard.state, WalletState::Corrupt);
        shard.state = match state {
            WalletState::Active(key) => WalletState::Rekeying(key),
            other => other,
        };
        Ok(())
    }
}
