//! What `thresig status` and the coordinators ask of members.

use std::sync::Arc;

use thresig_crypto::{Seat, WalletKey};
use thresig_daemon::Error as DaemonError;
use thresig_engine::{HexBytes, WalletEpoch, WalletId, WalletStatus, taproot_wallet};
use thresig_tx::TaprootWallet;
use tokio::task::JoinSet;

use crate::config::NodeConfig;
use crate::peers::Peers;

/// One member as `status` sees it.
#[derive(Debug)]
#[non_exhaustive]
pub struct MemberStatus {
    /// Its cluster seat.
    pub seat: Seat,
    /// Its wallets (those the asking member shares with it), or why it
    /// could not be asked.
    pub wallets: Result<Vec<WalletStatus>, DaemonError>,
}

/// Asks every member for its wallets, concurrently; unreachable members are
/// reported, not skipped.
pub async fn cluster_status(peers: &Arc<Peers>) -> Vec<MemberStatus> {
    let mut tasks = JoinSet::new();
    for seat in peers.seats() {
        let peers = peers.clone();
        tasks.spawn(async move {
            let wallets = match peers.client(seat).await {
                Ok(client) => peers.within(seat, client.status()).await,
                Err(e) => Err(e),
            };
            if wallets.as_ref().is_err_and(crate::peers::is_transport) {
                peers.forget(seat);
            }
            MemberStatus { seat, wallets }
        });
    }
    let mut out = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        out.extend(joined.ok());
    }
    out.sort_by_key(|m| m.seat);
    out
}

/// One wallet as `thresig status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WalletView {
    /// The wallet.
    pub wallet: WalletId,
    /// Its threshold.
    pub threshold: u16,
    /// Its roster size.
    pub members: u16,
    /// The output key as this member's own signer reports it: `None` while
    /// the wallet holds no key there, or when the own signer could not be
    /// asked. Never another member's word: a member that lies or is broken
    /// must not put its key where an operator copies the address from.
    pub output_key: Option<HexBytes>,
    /// Other members whose signer reports a different output key, with
    /// that key: the members disagree, and the wallet must not be funded
    /// until an operator resolves it.
    pub disagreeing: Vec<(Seat, HexBytes)>,
}

/// The wallets `members` report, one view each in id order, with the
/// output key from the member `own` (this member's own signer) and every
/// other member that reports a different one.
#[must_use]
pub fn wallet_views(own: Seat, members: &[MemberStatus]) -> Vec<WalletView> {
    let reports = || {
        members
            .iter()
            .filter_map(|m| Some((m.seat, m.wallets.as_ref().ok()?)))
            .flat_map(|(seat, list)| list.iter().map(move |w| (seat, w)))
    };
    let mut views: std::collections::BTreeMap<&WalletId, WalletView> = Default::default();
    for (seat, w) in reports() {
        let view = views.entry(&w.wallet).or_insert_with(|| WalletView {
            wallet: w.wallet.clone(),
            threshold: w.threshold,
            members: w.members,
            output_key: None,
            disagreeing: Vec::new(),
        });
        if seat == own {
            view.threshold = w.threshold;
            view.members = w.members;
            view.output_key.clone_from(&w.output_key);
        }
    }
    for (seat, w) in reports() {
        let Some(view) = views.get_mut(&w.wallet) else {
            continue;
        };
        if let (Some(mine), Some(theirs)) = (&view.output_key, &w.output_key)
            && mine != theirs
        {
            view.disagreeing.push((seat, theirs.clone()));
        }
    }
    views.into_values().collect()
}

/// A wallet as the coordinating member's own signer holds it: the only
/// source that member trusts for its keys.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OwnWallet {
    /// The public key record (every seat's verifying share, the tweak).
    pub key: WalletKey,
    /// The wallet epoch (the generation of its key shares, the same at
    /// every member).
    pub epoch: WalletEpoch,
    /// The spend identity on the member's network (internal key, root,
    /// output key, scriptPubKey), derived from the record.
    pub spend: TaprootWallet,
}

/// `wallet` as `node`'s own signer (its seat, through `peers`) holds it.
///
/// # Errors
/// The member's refusal or the transport error;
/// [`DaemonError::Malformed`] when the wallet holds no key yet or its
/// record is inconsistent.
pub async fn own_wallet(
    peers: &Peers,
    node: &NodeConfig,
    wallet: &WalletId,
) -> Result<OwnWallet, DaemonError> {
    let own = node.member;
    let client = peers.client(own).await?;
    let key = peers.within(own, client.wallet_key(wallet.clone())).await?;
    let epoch = peers
        .within(own, client.status())
        .await?
        .into_iter()
        .find(|w| &w.wallet == wallet)
        .and_then(|w| w.epoch)
        .ok_or(DaemonError::Malformed("the wallet holds no key yet"))?;
    let spend = taproot_wallet(node.network, &key)
        .map_err(|_| DaemonError::Malformed("the wallet's key record is inconsistent"))?;
    Ok(OwnWallet { key, epoch, spend })
}

#[cfg(test)]
mod tests {
    use thresig_engine::WalletStateKind;

    use thresig_engine::test_util::cluster::seat;

    use super::*;

    /// `wallet` at `member`, active with the output key `[key; 32]`.
    fn reported(member: u16, key: u8) -> MemberStatus {
        let wallet = WalletId::new("w".to_owned()).unwrap();
        let mut status = WalletStatus::new(wallet, WalletStateKind::Active, 2, 3, seat(member));
        status.output_key = Some(HexBytes(vec![key; 32]));
        MemberStatus {
            seat: seat(member),
            wallets: Ok(vec![status]),
        }
    }

    /// The output key shown is the one this member's own signer reports,
    /// whatever the others say (one of them may lie or be broken); a member
    /// that reports another key is named with it.
    #[test]
    fn the_output_key_is_the_own_signers_and_a_disagreeing_member_is_flagged() {
        let members = [reported(1, 0xaa), reported(2, 0xbb), reported(3, 0xbb)];
        let views = wallet_views(seat(2), &members);
        assert_eq!(views.len(), 1);
        assert_eq!(views[0].output_key, Some(HexBytes(vec![0xbb; 32])));
        assert_eq!(
            views[0].disagreeing,
            vec![(seat(1), HexBytes(vec![0xaa; 32]))]
        );
    }

    /// Without an answer from its own signer, no other member's key is
    /// shown as the wallet's.
    #[test]
    fn without_the_own_signer_no_output_key_is_shown() {
        let mut own = reported(2, 0xbb);
        own.wallets = Err(DaemonError::Malformed("unreachable"));
        let views = wallet_views(seat(2), &[reported(1, 0xaa), own]);
        assert_eq!(views.len(), 1);
        assert_eq!(views[0].output_key, None);
    }
}
