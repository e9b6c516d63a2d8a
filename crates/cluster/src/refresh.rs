//! Running a wallet's share refresh over the network (DESIGN.md §4).
//!
//! A refresh is a DKG session of kind refresh, run by the DKG driver: the
//! same signed, sealed and echo-hashed messages, among the wallet's
//! members minus the seats the operator removes. Every member that takes
//! part must confirm the same new key record and transcript; each switches
//! to the new wallet epoch only when it holds all of their confirmations,
//! so a failed run leaves every member signing with its current shares.

mod abort;
mod resume;

use std::collections::BTreeMap;
use std::sync::Arc;

use thresig_crypto::Seat;
use thresig_daemon::Error as DaemonError;
use thresig_engine::{DkgKind, DkgSessionId, WalletEpoch};
use tokio::task::JoinSet;

use crate::config::NodeWallet;
use crate::dkg::{DkgError, run};
use crate::peers::Peers;
use crate::progress::Progress;

pub use abort::{AbortOutcome, abort_refresh};
pub use resume::resume_refresh;

/// A finished refresh: every remaining member switched.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RefreshOutcome {
    /// The session.
    pub session: DkgSessionId,
    /// The wallet epoch of the new shares.
    pub epoch: WalletEpoch,
}

/// Refreshes the shares of `wallet`'s epoch `from` among `holders` (the
/// members of that epoch's key record), leaving out the wallet's
/// configured removal set (this member's own
/// `remove` list; every other member checks the proposal against its own).
/// `session` is fresh random bytes, chosen by the caller so that it can
/// name it: a run that fails from part 3 on may leave members
/// `refreshing`, and [`resume_refresh`] of that session finishes it.
///
/// # Errors
/// [`DkgError`] as for a DKG: a member that refuses or cannot be reached
/// fails the run, and nobody switches unless every member confirmed.
pub async fn run_refresh(
    peers: &Arc<Peers>,
    wallet: &NodeWallet,
    (from, holders): (WalletEpoch, &[Seat]),
    session: DkgSessionId,
    progress: &dyn Progress,
) -> Result<RefreshOutcome, DkgError> {
    let (kind, epoch) = refresh_of(wallet, from)?;
    run(peers, wallet, session, kind, Some(holders), progress).await?;
    Ok(RefreshOutcome { session, epoch })
}

/// Runs `call` against every one of `members` at once (each within the
/// members' patience) and returns every answer by wallet seat, a failure
/// included: finishing or abandoning a stuck refresh must not stop at a
/// member that is gone, when the others' answers may be enough.
async fn each_reachable<T, F, Fut>(
    peers: &Arc<Peers>,
    members: &[(Seat, Seat)],
    call: F,
) -> BTreeMap<Seat, Result<T, DaemonError>>
where
    T: Send + 'static,
    F: Fn(thresig_daemon::SignerClient) -> Fut,
    Fut: std::future::Future<Output = Result<T, DaemonError>> + Send + 'static,
{
    let mut tasks = JoinSet::new();
    for (seat, cluster) in members {
        let (peers, seat, cluster) = (peers.clone(), *seat, *cluster);
        let answer = match peers.client(cluster).await {
            Ok(client) => Ok(call(client)),
            Err(error) => Err(error),
        };
        tasks.spawn(async move {
            let answer = match answer {
                Ok(call) => peers.within(cluster, call).await,
                Err(error) => Err(error),
            };
            (seat, answer)
        });
    }
    let mut answers = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        if let Ok((seat, answer)) = joined {
            answers.insert(seat, answer);
        }
    }
    answers
}

/// The refresh of epoch `from` with the wallet's configured removal set,
/// and the epoch it makes.
fn refresh_of(wallet: &NodeWallet, from: WalletEpoch) -> Result<(DkgKind, WalletEpoch), DkgError> {
    let epoch = from
        .0
        .checked_add(1)
        .map(WalletEpoch)
        .ok_or(DkgError::Aborted {
            refresh: true,
            problem: "the wallet epoch cannot grow further",
        })?;
    // Ascending, as every member compares it with its own list (the
    // configuration refuses a seat named twice).
    let mut removed = wallet.config.remove.clone();
    removed.sort_unstable();
    let kind = DkgKind::Refresh {
        from_epoch: from,
        removed,
    };
    Ok((kind, epoch))
}

#[cfg(test)]
mod tests {
    use thresig_engine::WalletConfig;
    use thresig_engine::test_util::cluster::wid;

    use super::*;

    /// A wallet at the last epoch cannot be refreshed, and the refusal
    /// speaks of the refresh, never of a DKG.
    #[test]
    fn a_wallet_at_the_last_epoch_refuses_a_refresh_without_speaking_of_a_dkg() {
        let wallet = NodeWallet {
            config: WalletConfig::new(wid("w"), 2, Vec::new()),
            seats: Vec::new(),
        };
        let e = refresh_of(&wallet, WalletEpoch(u64::MAX)).unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("refresh aborted: "), "{text}");
        assert!(!text.contains("DKG"), "{text}");
    }
}
