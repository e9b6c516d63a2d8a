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
use crate::dkg::{DkgError, retryable, taking_part};
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
/// Judged from every member the abort missed (see `Missing::failure`):
/// [`DkgError::AbortMember`] (retryable) naming a member out of reach or
/// refusing for now, or [`DkgError::RefreshRunning`] (retryable) naming
/// the members still running the session, when their answers could bring
/// the vetoes (or the members that never released) to the threshold;
/// [`DkgError::AbortMember`] (terminal) naming a member that refused for
/// good, when only its veto could have; otherwise
/// [`DkgError::Released`] (too few never released) or
/// [`DkgError::TooFewVetoes`] (the others released meanwhile), both
/// terminal: only `--resume` can finish the refresh.
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
    let (mut unreleased, mut missing) = (Vec::new(), Missing::default());
    for (seat, answer) in super::resume::held_by_each(peers, wallet, &members, session).await {
        match answer {
            Ok(_) => {}
            Err(DaemonError::Refused(e))
                if *e.code.kind() == Code::Engine(ErrorCode::DkgNotInPhase) =>
            {
                unreleased.extend(members.iter().filter(|(s, _)| *s == seat));
            }
            Err(DaemonError::Refused(e)) if *e.code.kind() == Code::Engine(ErrorCode::DkgBusy) => {
                missing.running.extend(cluster(&seat));
            }
            Err(error) => missing.failed(cluster(&seat), error),
        }
    }
    progress.step("unreleased", unreleased.len(), members.len());
    if unreleased.len() < threshold {
        return Err(missing.failure(unreleased.len(), threshold, DkgError::Released));
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
            Err(error) => missing.failed(cluster(&seat), error),
        }
    }
    progress.step("veto", vetoes.len(), unreleased.len());
    if vetoes.len() < threshold {
        let vetoed = abandoned_by;
        return Err(missing.failure(vetoes.len(), threshold, DkgError::TooFewVetoes { vetoed }));
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

/// The members whose veto an abort could not get and that did not
/// release their confirmation, by whether asking again can succeed.
#[derive(Default)]
struct Missing {
    /// Members still running the session: they may release, or veto once
    /// their sessions end.
    running: Vec<Seat>,
    /// Members out of reach, or refusing for now.
    unreachable: Vec<(Seat, DaemonError)>,
    /// Members refusing for good (at their veto cap for this coordinator,
    /// say).
    refused: Vec<(Seat, DaemonError)>,
}

impl Missing {
    /// Records member `seat`'s failed answer.
    fn failed(&mut self, seat: Option<Seat>, error: DaemonError) {
        let Some(seat) = seat else { return };
        if retryable(&error) {
            self.unreachable.push((seat, error));
        } else {
            self.refused.push((seat, error));
        }
    }

    /// The failure of an abort that has `got` of the `threshold` vetoes (or
    /// members that never released) it needs, judged from every member it
    /// missed: retryable exactly when the members that may still answer
    /// (out of reach, refusing for now, or running the session) could
    /// bring it to the threshold, naming one of them; otherwise a member
    /// that refused for good, if its veto could have done it; otherwise
    /// `otherwise` (too many members released their confirmation).
    fn failure(self, got: usize, threshold: usize, otherwise: DkgError) -> DkgError {
        let Self {
            running,
            unreachable,
            refused,
        } = self;
        let reachable_later = got + unreachable.len();
        let after_the_sessions = reachable_later + running.len();
        let with_the_refusals = after_the_sessions + refused.len();
        // `got` is below the threshold: each case names a member of its own.
        if reachable_later >= threshold
            && let Some((seat, error)) = unreachable.into_iter().next()
        {
            DkgError::AbortMember {
                seat,
                error,
                retryable: true,
            }
        } else if after_the_sessions >= threshold {
            DkgError::RefreshRunning { running }
        } else if with_the_refusals >= threshold
            && let Some((seat, error)) = refused.into_iter().next()
        {
            DkgError::AbortMember {
                seat,
                error,
                retryable: false,
            }
        } else {
            otherwise
        }
    }
}

#[cfg(test)]
mod tests {
    use thresig_daemon::{Recovery, RpcCode, SignerError};
    use thresig_engine::test_util::cluster::seat;

    use super::*;

    fn unreachable() -> DaemonError {
        DaemonError::Rpc {
            code: RpcCode::Unavailable,
            message: "127.0.0.1:1: Connection refused".to_owned(),
        }
    }

    fn at_its_cap() -> DaemonError {
        DaemonError::Refused(SignerError::new(
            thresig_daemon::ErrorCode::from(ErrorCode::CapacityExhausted),
            Recovery::Terminal,
            "no more vetoes until the wallet switches; run --abort from another member",
        ))
    }

    /// A failed `--abort` speaks of the refresh and its `--abort` and
    /// `--resume`, never of a DKG or `thresig dkg`, whichever way it fails;
    /// it is retryable, and says to run `--abort` again, exactly when the
    /// members it missed could bring it to the threshold (2 here).
    #[test]
    fn a_failed_abort_is_retryable_exactly_when_the_members_it_missed_could_complete_it() {
        let missing = |out_of_reach: u16, running: u16, refused: u16| Missing {
            running: (0..running).map(|i| seat(7 + i)).collect(),
            unreachable: (0..out_of_reach)
                .map(|i| (seat(3 + i), unreachable()))
                .collect(),
            refused: (0..refused).map(|i| (seat(5 + i), at_its_cap())).collect(),
        };
        let released = || DkgError::Released;
        let cases = [
            // One veto, a member out of reach: it may bring the second.
            (missing(1, 0, 0).failure(1, 2, released()), true, "member 3"),
            // One veto and a member at its cap, another out of reach.
            (missing(1, 0, 1).failure(1, 2, released()), true, "member 3"),
            // A member running the session may veto once it ends.
            (
                missing(0, 1, 1).failure(1, 2, released()),
                true,
                "[Seat(7)]",
            ),
            // Nothing to wait for: the refusal stands.
            (
                missing(0, 0, 1).failure(1, 2, released()),
                false,
                "member 5",
            ),
            // Even the member out of reach could not make two.
            (
                missing(1, 0, 0).failure(0, 2, released()),
                false,
                "never released",
            ),
            (
                missing(0, 1, 0).failure(0, 2, released()),
                false,
                "never released",
            ),
            (
                missing(0, 0, 0).failure(
                    1,
                    2,
                    DkgError::TooFewVetoes {
                        vetoed: vec![seat(2)],
                    },
                ),
                false,
                "[Seat(2)]",
            ),
        ];
        for (failure, retryable, names) in cases {
            let message = failure.to_string();
            let class = if retryable {
                Recovery::Retryable
            } else {
                Recovery::Terminal
            };
            assert_eq!(failure.recovery(), class, "{message}");
            assert!(
                message.starts_with("refresh abort: ") && message.contains(names),
                "{message}"
            );
            assert_eq!(
                message.contains("run --abort again"),
                retryable,
                "{message}"
            );
            assert!(
                retryable || message.contains("--resume SESSION"),
                "{message}"
            );
            assert!(
                !message.contains("DKG") && !message.contains("dkg "),
                "{message}"
            );
        }
    }
}
