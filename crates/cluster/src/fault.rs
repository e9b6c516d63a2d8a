//! Signers that misbehave on purpose, for the demo and the tests that show
//! the coordinator catching them.
//!
//! A faulty signer runs the real engine, so it keeps every signer-side
//! check and its markers; only what leaves it is altered. Nothing selects a
//! fault but the hidden `thresig serve --fault` flag.

use std::sync::Arc;

use thresig_crypto::{Seat, SignatureShare};
use thresig_daemon::{SignerError, SignerHandler};
use thresig_engine::{
    AbortRequest, ConfirmationStatus, DkgProposal, DkgSessionId, HexBytes, Round1Request,
    Round1Response, Round2Request, Round2Response, SignedDkgMessage, WalletId, WalletStatus,
};

/// How a signer misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Every round-2 share it sends is a valid encoding of a wrong share.
    InvalidShares,
}

/// A handler that answers as `inner` does, then applies its fault.
///
/// `inner` is shared, so the process can keep pruning the engine behind it.
#[derive(Debug)]
pub struct Faulty<H> {
    inner: Arc<H>,
    fault: Fault,
}

impl<H> Faulty<H> {
    /// `inner` with `fault`.
    pub fn new(inner: Arc<H>, fault: Fault) -> Self {
        Self { inner, fault }
    }
}

/// A different share with the same encoding length: the share plus one,
/// as a scalar (still canonical unless the share was the largest scalar,
/// in which case the bytes are sent as they are).
fn corrupt(share: &HexBytes) -> HexBytes {
    let mut bytes = share.0.clone();
    for byte in bytes.iter_mut().rev() {
        let (next, carry) = byte.overflowing_add(1);
        *byte = next;
        if !carry {
            break;
        }
    }
    if SignatureShare::from_bytes(&bytes).is_ok() {
        HexBytes(bytes)
    } else {
        share.clone()
    }
}

impl<H: SignerHandler> SignerHandler for Faulty<H> {
    fn round1(&self, peer: Seat, request: Round1Request) -> Result<Round1Response, SignerError> {
        self.inner.round1(peer, request)
    }

    fn round2(&self, peer: Seat, request: Round2Request) -> Result<Round2Response, SignerError> {
        let mut response = self.inner.round2(peer, request)?;
        match self.fault {
            Fault::InvalidShares => {
                response.shares = response.shares.iter().map(corrupt).collect();
            }
        }
        Ok(response)
    }

    fn abort(&self, peer: Seat, request: AbortRequest) -> Result<usize, SignerError> {
        self.inner.abort(peer, request)
    }

    fn dkg_start(
        &self,
        peer: Seat,
        proposal: DkgProposal,
    ) -> Result<SignedDkgMessage, SignerError> {
        self.inner.dkg_start(peer, proposal)
    }

    fn dkg_round2(
        &self,
        peer: Seat,
        wallet: WalletId,
        session: DkgSessionId,
        round1: Vec<SignedDkgMessage>,
    ) -> Result<Vec<SignedDkgMessage>, SignerError> {
        self.inner.dkg_round2(peer, wallet, session, round1)
    }

    fn dkg_finish(
        &self,
        peer: Seat,
        wallet: WalletId,
        session: DkgSessionId,
        round2: Vec<SignedDkgMessage>,
    ) -> Result<SignedDkgMessage, SignerError> {
        self.inner.dkg_finish(peer, wallet, session, round2)
    }

    fn dkg_confirm(
        &self,
        peer: Seat,
        wallet: WalletId,
        confirmation: SignedDkgMessage,
    ) -> Result<ConfirmationStatus, SignerError> {
        self.inner.dkg_confirm(peer, wallet, confirmation)
    }

    fn dkg_cancel(
        &self,
        peer: Seat,
        wallet: WalletId,
        session: DkgSessionId,
    ) -> Result<bool, SignerError> {
        self.inner.dkg_cancel(peer, wallet, session)
    }

    fn status(&self, peer: Seat) -> Result<Vec<WalletStatus>, SignerError> {
        self.inner.status(peer)
    }

    fn wallet_key(&self, peer: Seat, wallet: WalletId) -> Result<Vec<u8>, SignerError> {
        self.inner.wallet_key(peer, wallet)
    }
}
