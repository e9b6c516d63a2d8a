//! Running a wallet's share refresh over the network (DESIGN.md §4).
//!
//! A refresh is a DKG session of kind refresh, run by the DKG driver: the
//! same signed, sealed and echo-hashed messages, among the wallet's
//! members minus the seats the operator removes. Every member that takes
//! part must confirm the same new key record and transcript; each switches
//! to the new wallet epoch only when it holds all of their confirmations,
//! so a failed run leaves every member signing with its current shares.

use std::sync::Arc;

use rand_core::{CryptoRng, RngCore};
use thresig_crypto::Seat;
use thresig_engine::{DkgKind, DkgSessionId, WalletEpoch};

use crate::config::NodeWallet;
use crate::dkg::{DkgError, run};
use crate::peers::Peers;
use crate::progress::Progress;

/// A finished refresh: every remaining member switched.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RefreshOutcome {
    /// The session.
    pub session: DkgSessionId,
    /// The wallet epoch of the new shares.
    pub epoch: WalletEpoch,
}

/// Refreshes the shares of `wallet`'s epoch `from` among its members,
/// leaving out the wallet's configured removal set (this member's own
/// `remove` list; every other member checks the proposal against its own).
///
/// # Errors
/// [`DkgError`] as for a DKG: a member that refuses or cannot be reached
/// fails the run, and nobody switches.
pub async fn run_refresh(
    peers: &Arc<Peers>,
    wallet: &NodeWallet,
    from: WalletEpoch,
    rng: &mut (impl RngCore + CryptoRng),
    progress: &dyn Progress,
) -> Result<RefreshOutcome, DkgError> {
    let epoch = from
        .0
        .checked_add(1)
        .map(WalletEpoch)
        .ok_or(DkgError::Aborted("the wallet epoch cannot grow further"))?;
    // Ascending, as every member compares it with its own list (the
    // configuration refuses a seat named twice).
    let removed: Vec<Seat> = {
        let mut seats = wallet.config.remove.clone();
        seats.sort_unstable();
        seats
    };
    let kind = DkgKind::Refresh {
        from_epoch: from,
        removed,
    };
    let (session, _) = run(peers, wallet, kind, rng, progress).await?;
    Ok(RefreshOutcome { session, epoch })
}
