//! Abandoning a share refresh that cannot complete (`thresig refresh
//! --abort`): a coordinator died or skipped a member before every member
//! released its confirmation, so no one can finish it.
//!
//! Every participant is asked for its veto ("I never released my
//! confirmation and never will"). A member that released refuses with
//! `refresh_confirmed`: the others may switch on its confirmation, and
//! `--resume` finishes the refresh. A member holding the result pending
//! discards it only on the vetoes of a threshold of participants
//! (DESIGN.md §4), so the set goes to every member once it is that large.

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
    /// The cluster seats that signed a veto (they never released their
    /// confirmation).
    pub abandoned_by: Vec<Seat>,
    /// The cluster seats that held the result pending and discarded it on
    /// the vetoes.
    pub discarded: Vec<Seat>,
}

/// Abandons the refresh `session` of `wallet` (this member at epoch `at`,
/// whose key record `holders` are its members, with the wallet's
/// configured removal set): asks every member taking part for its veto,
/// then gives the vetoes to every member once a threshold of them is in.
/// Running it again is harmless.
///
/// # Errors
/// [`DkgError::Aborted`] when fewer than the threshold of members never
/// released their confirmation (those that released keep the result
/// pending: `--resume` finishes it); [`DkgError::Member`] for a member
/// that cannot be reached or refuses otherwise (run it again once it is
/// back: members already discarded stay so).
pub async fn abort_refresh(
    peers: &Arc<Peers>,
    wallet: &NodeWallet,
    (at, holders): (WalletEpoch, &[Seat]),
    session: DkgSessionId,
    progress: &dyn Progress,
) -> Result<AbortOutcome, DkgError> {
    let (kind, _) = super::refresh_of(wallet, at)?;
    let members = taking_part(wallet, &kind, Some(holders));
    let answers = each(peers, &members, "veto", progress, |client, _| {
        let wallet_id = wallet.id().clone();
        async move {
            match client.refresh_abandon(wallet_id, session).await {
                Ok(signed) => Ok(Some(signed)),
                Err(DaemonError::Refused(e))
                    if *e.code.kind() == Code::Engine(ErrorCode::RefreshConfirmed) =>
                {
                    Ok(None)
                }
                Err(other) => Err(other),
            }
        }
    })
    .await?;
    let cluster = |seat: &Seat| members.iter().find(|(s, _)| s == seat).map(|(_, c)| *c);
    let vetoes: Vec<_> = answers.values().flatten().cloned().collect();
    if vetoes.len() < usize::from(wallet.config.threshold) {
        return Err(DkgError::Aborted(
            "fewer than the threshold of members never released their confirmation, so the members that released keep the refresh pending (signing at the old epoch): finish it with --resume SESSION",
        ));
    }
    let proofs = Arc::new(vetoes);
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
