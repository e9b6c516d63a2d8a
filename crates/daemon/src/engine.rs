//! [`EngineHandler`]: the signer engine behind the daemon's
//! [`SignerHandler`] seam.
//!
//! This is the engine's I/O edge: it reads the system clock and draws
//! randomness from the operating system, both of which the sans-IO engine
//! takes as arguments. It maps the caller's cluster seat (from its client
//! certificate) to that member's identity key, which the engine knows the
//! coordinator by, and every request goes through [`Signer::handle`], so
//! the engine's membership check ("only members coordinate for a wallet")
//! applies to all of them.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use rand_core::OsRng;
use thresig_crypto::Seat;
use thresig_engine::{
    AbortRequest, ConfirmationStatus, CoordinatorId, DkgProposal, DkgSessionId, IdentityKey,
    Request, Response, Round1Request, Round1Response, Round2Request, Round2Response,
    SignedDkgMessage, Signer, Timestamp, WalletId, WalletStatus,
};
use thresig_store::Store;

use crate::api::{ErrorCode, Recovery, SignerError, SignerHandler};

/// Serves one member's [`Signer`] to the cluster.
///
/// # Invariants
/// A request reaches the engine only from a seat in `roster`, and always as
/// the coordinator that seat's identity key names; error messages are the
/// engine's, built from ids and counts, never from secret material.
pub struct EngineHandler<S> {
    signer: Signer<S>,
    roster: BTreeMap<Seat, IdentityKey>,
}

impl<S> std::fmt::Debug for EngineHandler<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandler")
            .field("signer", &self.signer)
            .field("roster", &self.roster)
            .finish()
    }
}

impl<S: Store> EngineHandler<S> {
    /// Serves `signer`. `roster` is the cluster: each member's seat (as its
    /// certificate names it) and Ed25519 identity key (as the wallets'
    /// rosters list it).
    #[must_use]
    pub fn new(signer: Signer<S>, roster: BTreeMap<Seat, IdentityKey>) -> Self {
        Self { signer, roster }
    }

    /// The engine, for the process's own housekeeping (pruning, rekeys).
    #[must_use]
    pub fn signer(&self) -> &Signer<S> {
        &self.signer
    }

    /// Prunes the engine at the current time ([`Signer::prune`]): the signer
    /// process calls it on a timer, so that wallets nobody uses drop their
    /// expired nonces, tombstones and markers.
    ///
    /// # Errors
    /// The engine's refusal, or `internal` if the clock is before 1970.
    pub fn prune(&self) -> Result<(), SignerError> {
        self.signer.prune(now()?).map_err(|err| refusal(&err))
    }

    /// Runs `request` for the member at `peer`.
    fn handle(&self, peer: Seat, request: Request) -> Result<Response, SignerError> {
        let identity = self.roster.get(&peer).ok_or_else(|| {
            SignerError::new(
                thresig_engine::ErrorCode::CoordinatorNotMember.into(),
                Recovery::Terminal,
                format!("seat {} is not a member of this cluster", peer.get()),
            )
        })?;
        let from = CoordinatorId(identity.to_bytes());
        self.signer
            .handle(now()?, from, request, &mut OsRng)
            .map_err(|err| refusal(&err))
    }
}

/// The current time as the engine counts it (milliseconds since the Unix
/// epoch).
fn now() -> Result<Timestamp, SignerError> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_millis()).ok())
        .map(Timestamp)
        .ok_or_else(|| {
            SignerError::new(
                ErrorCode::INTERNAL,
                Recovery::Terminal,
                "the system clock is before 1970",
            )
        })
}

/// The refusal sent for an engine error: its stable code, recovery class
/// and message (the engine builds messages from ids and counts only).
fn refusal(err: &thresig_engine::Error) -> SignerError {
    SignerError::new(err.code().into(), err.recovery(), err.to_string())
}

/// The refusal for an engine answer of the wrong kind (an engine bug).
fn unexpected(method: &str) -> SignerError {
    SignerError::new(
        ErrorCode::INTERNAL,
        Recovery::Terminal,
        format!("the engine answered {method} with another response"),
    )
}

/// The one signed message a DKG part answers with.
fn single(messages: Vec<SignedDkgMessage>, method: &str) -> Result<SignedDkgMessage, SignerError> {
    let mut messages = messages.into_iter();
    match (messages.next(), messages.next()) {
        (Some(message), None) => Ok(message),
        _ => Err(unexpected(method)),
    }
}

impl<S: Store + 'static> SignerHandler for EngineHandler<S> {
    fn round1(&self, peer: Seat, request: Round1Request) -> Result<Round1Response, SignerError> {
        match self.handle(peer, Request::Round1(request))? {
            Response::Round1(response) => Ok(response),
            _ => Err(unexpected("round1")),
        }
    }

    fn round2(&self, peer: Seat, request: Round2Request) -> Result<Round2Response, SignerError> {
        match self.handle(peer, Request::Round2(request))? {
            Response::Round2(response) => Ok(response),
            _ => Err(unexpected("round2")),
        }
    }

    fn abort(&self, peer: Seat, request: AbortRequest) -> Result<usize, SignerError> {
        match self.handle(peer, Request::Abort(request))? {
            Response::Aborted { destroyed } => Ok(destroyed),
            _ => Err(unexpected("abort")),
        }
    }

    fn dkg_start(
        &self,
        peer: Seat,
        proposal: DkgProposal,
    ) -> Result<SignedDkgMessage, SignerError> {
        match self.handle(peer, Request::DkgStart(proposal))? {
            Response::DkgMessages { messages } => single(messages, "dkg_start"),
            _ => Err(unexpected("dkg_start")),
        }
    }

    fn dkg_round2(
        &self,
        peer: Seat,
        wallet: WalletId,
        session: DkgSessionId,
        round1: Vec<SignedDkgMessage>,
    ) -> Result<Vec<SignedDkgMessage>, SignerError> {
        let request = Request::DkgRound2 {
            wallet,
            session,
            round1,
        };
        match self.handle(peer, request)? {
            Response::DkgMessages { messages } => Ok(messages),
            _ => Err(unexpected("dkg_round2")),
        }
    }

    fn dkg_finish(
        &self,
        peer: Seat,
        wallet: WalletId,
        session: DkgSessionId,
        round2: Vec<SignedDkgMessage>,
    ) -> Result<SignedDkgMessage, SignerError> {
        let request = Request::DkgFinish {
            wallet,
            session,
            round2,
        };
        match self.handle(peer, request)? {
            Response::DkgMessages { messages } => single(messages, "dkg_finish"),
            _ => Err(unexpected("dkg_finish")),
        }
    }

    fn dkg_confirm(
        &self,
        peer: Seat,
        wallet: WalletId,
        confirmation: SignedDkgMessage,
    ) -> Result<ConfirmationStatus, SignerError> {
        let request = Request::DkgConfirm {
            wallet,
            confirmation,
        };
        match self.handle(peer, request)? {
            Response::Confirmations(status) => Ok(status),
            _ => Err(unexpected("dkg_confirm")),
        }
    }

    fn dkg_cancel(
        &self,
        peer: Seat,
        wallet: WalletId,
        session: DkgSessionId,
    ) -> Result<bool, SignerError> {
        match self.handle(peer, Request::DkgCancel { wallet, session })? {
            Response::DkgCancelled { dropped } => Ok(dropped),
            _ => Err(unexpected("dkg_cancel")),
        }
    }

    fn status(&self, peer: Seat) -> Result<Vec<WalletStatus>, SignerError> {
        match self.handle(peer, Request::ListWallets)? {
            Response::Wallets { wallets } => Ok(wallets),
            _ => Err(unexpected("status")),
        }
    }

    fn wallet_key(&self, peer: Seat, wallet: WalletId) -> Result<Vec<u8>, SignerError> {
        match self.handle(peer, Request::WalletKey { wallet })? {
            Response::WalletKey { key } => Ok(key.0),
            _ => Err(unexpected("wallet_key")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_engine_code_is_a_static_daemon_code_with_its_recovery() {
        for engine_code in thresig_engine::ErrorCode::ALL {
            let daemon_code = ErrorCode::from(engine_code);
            assert_eq!(daemon_code.as_str(), engine_code.as_str());
            assert_eq!(daemon_code.metric_label(), engine_code.as_str());
        }
        let wallet = WalletId::new("vault-1").unwrap();
        let busy = thresig_engine::Error::WalletNotActive {
            wallet: wallet.clone(),
        };
        let refused = refusal(&busy);
        assert_eq!(refused.code.as_str(), "wallet_not_active");
        assert!(refused.is_retryable());
        let unknown = thresig_engine::Error::UnknownWallet { wallet };
        let refused = refusal(&unknown);
        assert_eq!(refused.code.as_str(), "unknown_wallet");
        assert_eq!(refused.recovery, Recovery::Terminal);
        assert!(refused.message.contains("vault-1"), "{}", refused.message);
    }
}
