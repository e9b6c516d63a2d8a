//! Abandoning a share refresh that cannot complete (`thresig refresh
//! --abort`): a coordinator died or skipped a member after part 3, so some
//! members hold the result pending and no one can finish it.
//!
//! A member that released its confirmation keeps its pending shares until
//! it sees proof that nobody can ever switch: a signed abandonment of the
//! session by a member holding no result of it (DESIGN.md §4; the engine
//! refuses to sign one otherwise, and drops the session as it signs).

use std::sync::Arc;

use thresig_crypto::Seat;
use thresig_daemon::{Code, Error as DaemonError};
use thresig_engine::{DkgSessionId, ErrorCode, SignedDkgMessage, WalletEpoch};

use crate::config::NodeWallet;
use crate::dkg::{DkgError, each, taking_part};
use crate::peers::Peers;
use crate::progress::Progress;

/// An abandoned refresh.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AbortOutcome {
    /// The cluster seats that signed an abandonment (held no result).
    pub abandoned_by: Vec<Seat>,
    /// The cluster seats that held the result pending and discarded it.
    pub discarded: Vec<Seat>,
}

/// Abandons the refresh `session` of `wallet` (this member at epoch `at`,
/// whose key record `holders` are its members, with the wallet's
/// configured removal set): asks every member taking
/// part for its abandonment, then gives those to the members that hold
/// the session's result, which discard it. Running it again is harmless.
///
/// # Errors
/// [`DkgError::Aborted`] when every member holds a result of the session
/// (the refresh can complete: `--resume` finishes it); [`DkgError::Member`]
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
    let abandonments: Vec<SignedDkgMessage> = answers.values().flatten().cloned().collect();
    if abandonments.is_empty() {
        return Err(DkgError::Aborted(
            "every member holds a result of this refresh, so it can complete: finish it with --resume SESSION instead",
        ));
    }
    let holding: Vec<(Seat, Seat)> = members
        .iter()
        .filter(|(seat, _)| answers.get(seat).is_some_and(Option::is_none))
        .copied()
        .collect();
    let proofs = Arc::new(abandonments);
    let discarded = each(peers, &holding, "discard", progress, |client, _| {
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
