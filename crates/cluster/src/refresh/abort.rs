//! Abandoning a share refresh that cannot complete (`thresig refresh
//! --abort`): a coordinator died or skipped a member after part 3, so some
//! members hold the result pending and no one can finish it.
//!
//! Every participant is asked for its veto ("I have not switched and never
//! will"); a member that switched refuses, and then the refresh completed
//! there and `--resume` finishes it. A member discards its pending result
//! only on the vetoes of every participant (DESIGN.md §4), so the full
//! set goes to every member.

use std::sync::Arc;

use thresig_crypto::Seat;
use thresig_daemon::{Code, Error as DaemonError};
use thresig_engine::{DkgSessionId, ErrorCode, WalletEpoch};

use crate::config::NodeWallet;
use crate::dkg::{DkgError, each, taking_part};
use crate::peers::Peers;
use crate::progress::Progress;

/// An abandoned refresh.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AbortOutcome {
    /// The cluster seats that signed a veto (every participant).
    pub abandoned_by: Vec<Seat>,
    /// The cluster seats that still held the result and discarded it on
    /// the full set of vetoes (a member vetoing discards its own at once).
    pub discarded: Vec<Seat>,
}

/// Abandons the refresh `session` of `wallet` (this member at epoch `at`,
/// whose key record `holders` are its members, with the wallet's
/// configured removal set): asks every member taking part for its veto,
/// then gives the full set to every member. Running it again is harmless.
///
/// # Errors
/// [`DkgError::Aborted`] when a member switched to the session's shares
/// (the refresh completed there: `--resume` finishes it); [`DkgError::Member`]
/// for a member that cannot be reached or refuses otherwise (run it again
/// once it is back: members already discarded stay so).
pub async fn abort_refresh(
    peers: &Arc<Peers>,
    wallet: &NodeWallet,
    (at, holders): (WalletEpoch, &[Seat]),
    session: DkgSessionId,
    progress: &dyn Progress,
) -> Result<AbortOutcome, DkgError> {
    let (kind, _) = super::refresh_of(wallet, at)?;
    let members = taking_part(wallet, &kind, Some(holders));
    let answers = each(peers, &members, "abandon", progress, |client, _| {
        let wallet_id = wallet.id().clone();
        async move {
            match client.refresh_abandon(wallet_id, session).await {
                Ok(signed) => Ok(Some(signed)),
                Err(DaemonError::Refused(e))
                    if *e.code.kind() == Code::Engine(ErrorCode::DkgNotInPhase) =>
                {
                    Ok(None)
                }
                Err(other) => Err(other),
            }
        }
    })
    .await?;
    let cluster = |seat: &Seat| members.iter().find(|(s, _)| s == seat).map(|(_, c)| *c);
    if answers.values().any(Option::is_none) {
        return Err(DkgError::Aborted(
            "a member switched to this refresh's shares and holds every confirmation: finish it with --resume SESSION instead",
        ));
    }
    let proofs = Arc::new(answers.values().flatten().cloned().collect::<Vec<_>>());
    let discarded = each(peers, &members, "discard", progress, |client, _| {
        let (wallet_id, proofs) = (wallet.id().clone(), proofs.clone());
        async move {
            client
                .refresh_discard(wallet_id, session, proofs.to_vec())
                .await
        }
    })
    .await?;
    Ok(AbortOutcome {
        abandoned_by: answers
            .iter()
            .filter(|(_, a)| a.is_some())
            .filter_map(|(seat, _)| cluster(seat))
            .collect(),
        discarded: discarded
            .iter()
            .filter(|(_, d)| **d)
            .filter_map(|(seat, _)| cluster(seat))
            .collect(),
    })
}
