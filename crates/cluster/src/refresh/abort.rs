//! Abandoning a share refresh that cannot complete (`thresig refresh
//! --abort`): a coordinator died or skipped a member before every member
//! released its confirmation, so no one can finish it.
//!
//! Every participant is first asked, without writing anything, whether
//! it released its confirmation (it holds a result of the session), still
//! runs the session (`dkg_busy`: it may yet release), or neither (it
//! refuses the session's part 3 from then on, so it can never release).
//! A veto ("I never released my confirmation and never will") is stored
//! for good and ends the member's session, so vetoes are asked for only
//! once at least a threshold answer neither, and only of those: asked of
//! a member still running the session, a veto could race a slow
//! coordinator's part 3 reaching the others and leave the refresh neither
//! finishable nor discarded. A member holding the result pending discards it
//! only on the vetoes of a threshold of participants (DESIGN.md §4), so
//! the set goes to every member once it is that large. A member that
//! cannot be reached is skipped in each step: the others' answers may be
//! enough, and running the command again reaches it later.

use std::sync::Arc;

use thresig_crypto::Seat;
use thresig_daemon::{Code, Error as DaemonError};
use thresig_engine::{DkgSessionId, ErrorCode, WalletEpoch};
use tracing::info;

use crate::config::NodeWallet;
use crate::dkg::{DkgError, taking_part};
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
    /// The cluster seats that could not be reached, or refused, when the
    /// vetoes were delivered: run `--abort` again once they are back (the
    /// others stay as they are).
    pub missed: Vec<Seat>,
}

/// Abandons the refresh `session` of `wallet` (this member at epoch `at`,
/// whose key record `holders` are its members, with the wallet's
/// configured removal set): asks every member taking part for its veto,
/// then, once a threshold of them is in, gives them to every member it
/// can reach. Members that cannot be reached are skipped: the others'
/// vetoes may be enough. Running it again is harmless.
///
/// # Errors
/// [`DkgError::AbortMember`] naming a member that could not be reached or
/// refused otherwise, when fewer than the threshold vetoed without it;
/// [`DkgError::RefreshRunning`] when fewer than the threshold can never
/// release while others still run the session (nobody was asked for a
/// veto); [`DkgError::TooFewVetoes`] naming the members that vetoed when
/// fewer than the threshold did; [`DkgError::Released`] when fewer than
/// the threshold of members never released their confirmation and none
/// runs the session any more.
pub async fn abort_refresh(
    peers: &Arc<Peers>,
    wallet: &NodeWallet,
    (at, holders): (WalletEpoch, &[Seat]),
    session: DkgSessionId,
    progress: &dyn Progress,
) -> Result<AbortOutcome, DkgError> {
    let (kind, _) = super::refresh_of(wallet, at)?;
    let members = taking_part(wallet, &kind, Some(holders));
    let cluster = |seat: &Seat| members.iter().find(|(s, _)| s == seat).map(|(_, c)| *c);
    let threshold = usize::from(wallet.config.threshold);
    let (mut unreleased, mut running, mut failed) = (Vec::new(), Vec::new(), None);
    for (seat, answer) in super::resume::held_by_each(peers, wallet, &members, session).await {
        match answer {
            Ok(_) => {}
            Err(DaemonError::Refused(e))
                if *e.code.kind() == Code::Engine(ErrorCode::DkgNotInPhase) =>
            {
                unreleased.extend(members.iter().filter(|(s, _)| *s == seat));
            }
            Err(DaemonError::Refused(e)) if *e.code.kind() == Code::Engine(ErrorCode::DkgBusy) => {
                running.extend(cluster(&seat));
            }
            Err(error) => failed = failed.or(cluster(&seat).map(|seat| (seat, error))),
        }
    }
    progress.step("unreleased", unreleased.len(), members.len());
    if unreleased.len() < threshold {
        return Err(if running.is_empty() {
            too_few(failed)
        } else {
            DkgError::RefreshRunning { running }
        });
    }
    let answers = super::each_reachable(peers, &unreleased, |client| {
        let wallet_id = wallet.id().clone();
        async move { client.refresh_abandon(wallet_id, session).await }
    })
    .await;
    let (mut vetoes, mut abandoned_by) = (Vec::new(), Vec::new());
    for (seat, answer) in answers {
        match answer {
            Ok(signed) => {
                vetoes.push(signed);
                abandoned_by.extend(cluster(&seat));
            }
            // It released its confirmation: the refresh may switch.
            Err(DaemonError::Refused(e))
                if *e.code.kind() == Code::Engine(ErrorCode::RefreshConfirmed) => {}
            Err(error) => {
                failed = failed.or(cluster(&seat).map(|seat| (seat, error)));
            }
        }
    }
    progress.step("veto", vetoes.len(), unreleased.len());
    if vetoes.len() < threshold {
        return Err(match failed {
            Some(failed) => too_few(Some(failed)),
            None => DkgError::TooFewVetoes {
                vetoed: abandoned_by,
            },
        });
    }
    let proofs = Arc::new(vetoes);
    let answers = super::each_reachable(peers, &members, |client| {
        let (wallet_id, proofs) = (wallet.id().clone(), proofs.clone());
        async move {
            client
                .refresh_discard(wallet_id, session, proofs.to_vec())
                .await
        }
    })
    .await;
    let (mut discarded, mut missed) = (Vec::new(), Vec::new());
    for (seat, answer) in answers {
        match answer {
            Ok(true) => discarded.extend(cluster(&seat)),
            Ok(false) => {}
            Err(error) => {
                info!(%seat, %error, "a member did not take the vetoes");
                missed.extend(cluster(&seat));
            }
        }
    }
    progress.step("discard", members.len() - missed.len(), members.len());
    Ok(AbortOutcome {
        abandoned_by,
        discarded,
        missed,
    })
}

/// The failure of an abort that found fewer than the threshold of members
/// that never released (or that veto): the first member that could not be
/// reached or refused otherwise, whose answer might have been enough.
fn too_few(failed: Option<(Seat, DaemonError)>) -> DkgError {
    match failed {
        Some((seat, error)) => DkgError::AbortMember { seat, error },
        None => DkgError::Released,
    }
}

#[cfg(test)]
mod tests {
    use thresig_daemon::{Recovery, RpcCode};
    use thresig_engine::test_util::cluster::seat;

    use super::*;

    /// A failed `--abort` speaks of the refresh and its `--abort` and
    /// `--resume`, never of a DKG or `thresig dkg`, whichever way it fails;
    /// a member out of reach is worth running `--abort` again for.
    #[test]
    fn a_failed_abort_speaks_of_the_refresh_not_of_a_dkg() {
        let unreachable = DaemonError::Rpc {
            code: RpcCode::Unavailable,
            message: "127.0.0.1:1: Connection refused".to_owned(),
        };
        let missing = too_few(Some((seat(2), unreachable)));
        assert_eq!(missing.recovery(), Recovery::Retryable);
        let missing = missing.to_string();
        assert!(
            missing.starts_with("refresh abort: member 2") && missing.contains("run --abort again"),
            "{missing}"
        );
        let released = too_few(None);
        assert_eq!(released.recovery(), Recovery::Terminal);
        let released = released.to_string();
        assert!(
            released.starts_with("refresh abort: ") && released.contains("--resume SESSION"),
            "{released}"
        );
        for message in [missing, released] {
            assert!(
                !message.contains("DKG") && !message.contains("dkg"),
                "{message}"
            );
        }
    }
}
