//! Putting an active wallet in `rekeying`: an operator's action, never a
//! coordinator's.

use thresig_store::Store;

use super::{Signer, lock, store_error};
use crate::durable::{rekeying_ops, veto_ops};
use crate::error::Error;
use crate::wallet::WalletState;
use thresig_store::WalletId;

impl<S: Store> Signer<S> {
    /// Puts an active wallet in `rekeying`, durably: from then on it signs
    /// only a sweep whose outputs all pay the successor named in its
    /// configuration (once that successor is `active` here), and refuses
    /// every other spend with `rekey_in_progress`. An operator action; a
    /// coordinator cannot trigger it. A wallet `refreshing` is rekeyed on
    /// its current shares, and the pending refresh is vetoed in the same
    /// commit (its pending shares deleted; this member never switches).
    ///
    /// # Errors
    /// [`Error::UnknownWallet`]; [`Error::RekeyNotPossible`] if the wallet
    /// names no successor or is neither `active` nor `refreshing`; [`Error::Store`] if the
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
        let mut ops = rekeying_ops(&self.store, wallet)?;
        match &shard.state {
            WalletState::Active(_) => {}
            // A stuck refresh must not disable the emergency path: the
            // rekey runs on the current shares and vetoes the refresh in
            // the same commit, so this member never switches to it.
            WalletState::Refreshing(r) => {
                ops.extend(veto_ops(
                    wallet,
                    r.pending.session(),
                    Some(r.pending.epoch()),
                )?);
            }
            _ => return Err(not_possible()),
        }
        self.store
            .write(ops)
            .map_err(|source| store_error(wallet, source))?;
        let state = std::mem::replace(&mut shard.state, WalletState::Corrupt);
        shard.state = match state {
            WalletState::Active(key) => WalletState::Rekeying(key),
            WalletState::Refreshing(r) => WalletState::Rekeying(r.current),
            other => other,
        };
        Ok(())
    }
}
