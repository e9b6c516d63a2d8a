//! Finishing a share refresh whose confirmations did not all arrive
//! (`thresig refresh --resume`): its coordinator died or lost them, or a
//! member was down while they were delivered.
//!
//! Every member keeps the signed confirmations it counted, with its
//! pending result or with the result it switched on, and returns them on
//! request with its own. The driver gathers them from every reachable
//! member; each is self-proving (signed by its member's identity key over
//! the same new key record), so nothing is taken on the coordinator's word.
//! Once the union holds every participant's, it goes to every member.

use std::collections::BTreeMap;
use std::sync::Arc;

use thresig_crypto::Seat;
use thresig_engine::{DkgPayload, DkgSessionId, SignedDkgMessage, WalletEpoch};
use tracing::info;

use crate::config::NodeWallet;
use crate::dkg::{DkgError, agree, deliver, taking_part};
use crate::peers::Peers;
use crate::progress::Progress;

/// Finishes the refresh `session` of `wallet` whose members stored their
/// results but did not all get the confirmations: the confirmations every
/// reachable member holds are gathered, and once they include every
/// participant's, delivered to every member. `member` is the cluster seat
/// running it, `at` its wallet epoch (either side of the switch) and
/// `holders` the members of its key record; only the wallet's removal set
/// is taken from the refresh it names.
///
/// # Errors
/// [`DkgError::Unconfirmed`] naming a member whose confirmation no
/// reachable member holds; [`DkgError::Protocol`] for confirmations of
/// different results; [`DkgError`] naming a member that cannot be reached
/// or does not switch when they are delivered.
pub async fn resume_refresh(
    peers: &Arc<Peers>,
    wallet: &NodeWallet,
    (member, at, holders): (Seat, WalletEpoch, &[Seat]),
    session: DkgSessionId,
    progress: &dyn Progress,
) -> Result<(), DkgError> {
    let (kind, _) = super::refresh_of(wallet, at)?;
    let members = taking_part(wallet, &kind, Some(holders));
    let held = gather(peers, wallet, &members, (member, session, at)).await;
    let mut confirmations = BTreeMap::new();
    for (seat, cluster) in &members {
        let confirmation = held
            .get(seat)
            .ok_or(DkgError::Unconfirmed { seat: *cluster })?;
        confirmations.insert(*seat, confirmation.clone());
    }
    agree(wallet, (&kind, session), &confirmations)?;
    deliver(
        peers,
        wallet,
        &members,
        (&kind, session),
        confirmations,
        progress,
    )
    .await
}

/// The confirmations of `session` the reachable ones of `members` hold,
/// one per participant, all of the run the running member (cluster seat
/// `member`, at wallet epoch `at`) took part in. A member that cannot be
/// reached, or holds no result of the session, adds none: another member
/// may hold its confirmation.
///
/// A session id may run again once a switch deleted its vetoes, so a
/// member may hand back an honest member's genuine confirmation of an
/// earlier run to blame it. The running member's own confirmation names
/// the epoch its run starts from (`at` if it holds the result pending,
/// the epoch before if it switched on it; `at` if it holds none); only
/// confirmations from that epoch count, and of those, one agreeing with
/// its own is kept before any other.
async fn gather(
    peers: &Arc<Peers>,
    wallet: &NodeWallet,
    members: &[(Seat, Seat)],
    (member, session, at): (Seat, DkgSessionId, WalletEpoch),
) -> BTreeMap<Seat, SignedDkgMessage> {
    let answers = held_by_each(peers, wallet, members, session).await;
    let genuine = |m: &SignedDkgMessage| {
        m.session == session
            && m.wallet == *wallet.id()
            && members.iter().any(|(seat, _)| *seat == m.sender)
            && m.verify(&wallet.config)
    };
    let own = members
        .iter()
        .find(|(_, c)| *c == member)
        .and_then(|(own, _)| {
            let held = answers.get(own)?.as_ref().ok()?;
            held.iter()
                .find(|m| m.sender == *own && genuine(m))
                .map(|m| m.payload.clone())
        });
    let from = match &own {
        Some(DkgPayload::RefreshConfirm { from_epoch, .. }) => *from_epoch,
        _ => at,
    };
    let mut held: BTreeMap<Seat, SignedDkgMessage> = BTreeMap::new();
    for (seat, answer) in answers {
        let messages = match answer {
            Ok(messages) => messages,
            Err(error) => {
                info!(%seat, %error, "a member's confirmations are not available");
                continue;
            }
        };
        for m in messages {
            let this_run = matches!(
                m.payload,
                DkgPayload::RefreshConfirm { from_epoch, .. } if from_epoch == from
            );
            if !this_run || !genuine(&m) {
                continue;
            }
            let agrees = own.as_ref() == Some(&m.payload);
            match held.get(&m.sender) {
                Some(kept) if !agrees || own.as_ref() == Some(&kept.payload) => {}
                _ => {
                    held.insert(m.sender, m);
                }
            }
        }
    }
    held
}

/// Each of `members`' answer to a request for the confirmations of
/// `session` it holds (a read: it writes nothing). A member that holds
/// none never released its own and answers `dkg_not_in_phase`.
pub(super) async fn held_by_each(
    peers: &Arc<Peers>,
    wallet: &NodeWallet,
    members: &[(Seat, Seat)],
    session: DkgSessionId,
) -> BTreeMap<Seat, Result<Vec<SignedDkgMessage>, thresig_daemon::Error>> {
    super::each_reachable(peers, members, |client| {
        let wallet_id = wallet.id().clone();
        async move { client.refresh_confirmations(wallet_id, session).await }
    })
    .await
}
