//! What `thresig status` and the coordinators ask of members.

use std::sync::Arc;

use thresig_crypto::{Seat, WalletKey};
use thresig_daemon::Error as DaemonError;
use thresig_engine::{Epoch, WalletId, WalletStatus, taproot_wallet};
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

/// A wallet as the coordinating member's own signer holds it: the only
/// source that member trusts for its keys.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OwnWallet {
    /// The public key record (every seat's verifying share, the tweak).
    pub key: WalletKey,
    /// The wallet epoch (the generation of its key shares, the same at
    /// every member).
    pub epoch: Epoch,
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
