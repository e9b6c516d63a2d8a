//! Requests by kind, each sent through [`Signer::handle`] (the signer's one
//! entry point, which checks the coordinator's membership): the tests read
//! as calls of one kind and answer with that kind's result.

use rand_core::{CryptoRng, RngCore};
use thresig_store::Store;

use super::coordinator;
use crate::{
    AbortRequest, Clock, ConfirmationStatus, CoordinatorId, DkgProposal, DkgSessionId, Error,
    Request, Response, Round1Request, Round1Response, Round2Request, Round2Response,
    SignedDkgMessage, Signer, Timestamp, WalletId,
};

/// Sends `request` from `from` and takes the answer `kind` picks (a
/// different kind of answer is an engine bug: the test fails).
fn ask<S: Store, T>(
    signer: &Signer<S>,
    clock: impl Clock,
    from: CoordinatorId,
    request: Request,
    rng: &mut (impl RngCore + CryptoRng),
    kind: impl FnOnce(Response) -> Option<T>,
) -> Result<T, Error> {
    let response = signer.handle(clock, from, request, rng)?;
    let shown = format!("{response:?}");
    Ok(kind(response).unwrap_or_else(|| panic!("an answer of another kind: {shown}")))
}

/// The one message a DKG part 1 or 3 answers with.
fn one(response: Response) -> Option<SignedDkgMessage> {
    match response {
        Response::DkgMessages { mut messages } if messages.len() == 1 => messages.pop(),
        _ => None,
    }
}

/// Requests that draw no randomness still take an RNG through `handle`.
fn no_rng() -> rand_chacha::ChaCha20Rng {
    rand_core::SeedableRng::seed_from_u64(0)
}

/// A signer, with the requests of a coordinator by kind, each sent
/// through [`Signer::handle`]; everything else of the signer through
/// `Deref`.
pub struct Via<'a, S>(pub &'a Signer<S>);

// Not derived: a derive would ask `S: Copy` of the store.
impl<S> Clone for Via<'_, S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for Via<'_, S> {}

impl<S> std::ops::Deref for Via<'_, S> {
    type Target = Signer<S>;

    fn deref(&self) -> &Signer<S> {
        self.0
    }
}

impl<S: Store> Via<'_, S> {
    /// Signing round 1.
    ///
    /// # Errors
    /// The signer's refusal.
    pub fn round1(
        &self,
        now: Timestamp,
        from: CoordinatorId,
        req: &Round1Request,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Round1Response, Error> {
        ask(
            self,
            now,
            from,
            Request::Round1(req.clone()),
            rng,
            |r| match r {
                Response::Round1(r) => Some(r),
                _ => None,
            },
        )
    }

    /// Signing round 2, at `clock`'s time (a [`Timestamp`] for a fixed
    /// one).
    ///
    /// # Errors
    /// The signer's refusal.
    pub fn round2(
        &self,
        clock: impl Clock,
        from: CoordinatorId,
        req: &Round2Request,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Round2Response, Error> {
        ask(
            self,
            clock,
            from,
            Request::Round2(req.clone()),
            rng,
            |r| match r {
                Response::Round2(r) => Some(r),
                _ => None,
            },
        )
    }

    /// An abort: how many nonces it destroyed.
    ///
    /// # Errors
    /// The signer's refusal.
    pub fn abort(
        &self,
        now: Timestamp,
        from: CoordinatorId,
        req: &AbortRequest,
    ) -> Result<usize, Error> {
        let request = Request::Abort(req.clone());
        ask(self.0, now, from, request, &mut no_rng(), |r| match r {
            Response::Aborted { destroyed } => Some(destroyed),
            _ => None,
        })
    }

    /// DKG part 1: the member's round-1 message.
    ///
    /// # Errors
    /// The signer's refusal.
    pub fn dkg_start(
        &self,
        now: Timestamp,
        from: CoordinatorId,
        proposal: &DkgProposal,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<SignedDkgMessage, Error> {
        ask(
            self,
            now,
            from,
            Request::DkgStart(proposal.clone()),
            rng,
            one,
        )
    }

    /// DKG part 2: the member's round-2 messages.
    ///
    /// # Errors
    /// The signer's refusal.
    pub fn dkg_round2(
        &self,
        now: Timestamp,
        from: CoordinatorId,
        wallet: &WalletId,
        session: DkgSessionId,
        round1: &[SignedDkgMessage],
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Vec<SignedDkgMessage>, Error> {
        let request = Request::DkgRound2 {
            wallet: wallet.clone(),
            session,
            round1: round1.to_vec(),
        };
        ask(self.0, now, from, request, rng, |r| match r {
            Response::DkgMessages { messages } => Some(messages),
            _ => None,
        })
    }

    /// DKG part 3: the member's confirmation.
    ///
    /// # Errors
    /// The signer's refusal.
    pub fn dkg_finish(
        &self,
        now: Timestamp,
        from: CoordinatorId,
        wallet: &WalletId,
        session: DkgSessionId,
        round2: &[SignedDkgMessage],
    ) -> Result<SignedDkgMessage, Error> {
        let request = Request::DkgFinish {
            wallet: wallet.clone(),
            session,
            round2: round2.to_vec(),
        };
        ask(self.0, now, from, request, &mut no_rng(), one)
    }

    /// A confirmation relayed by member 1 (any member may relay one).
    pub fn dkg_confirm(
        &self,
        wallet: &WalletId,
        confirmation: &SignedDkgMessage,
    ) -> Result<ConfirmationStatus, Error> {
        let request = Request::DkgConfirm {
            wallet: wallet.clone(),
            confirmation: confirmation.clone(),
        };
        self.relayed(request, |r| match r {
            Response::Confirmations(status) => Some(status),
            _ => None,
        })
    }

    /// `request` relayed by member 1, answered by `pick`: confirmations
    /// and the confirmations held take no time, so any `now` answers alike.
    fn relayed<T>(
        &self,
        request: Request,
        pick: impl FnOnce(Response) -> Option<T>,
    ) -> Result<T, Error> {
        ask(
            self,
            Timestamp(0),
            coordinator(1),
            request,
            &mut no_rng(),
            pick,
        )
    }

    /// A refresh abort's first step: this member's signed abandonment of
    /// `session`.
    ///
    /// # Errors
    /// The signer's refusal.
    pub fn refresh_abandon(
        &self,
        from: CoordinatorId,
        wallet: &WalletId,
        session: DkgSessionId,
    ) -> Result<SignedDkgMessage, Error> {
        self.cancel_with(from, wallet, session, true, Vec::new())
            .map(|(_, signed)| signed.expect("an abandonment"))
    }

    /// A refresh abort's second step: `abandonments` delivered; whether a
    /// pending result was discarded.
    ///
    /// # Errors
    /// The signer's refusal.
    pub fn refresh_discard(
        &self,
        from: CoordinatorId,
        wallet: &WalletId,
        session: DkgSessionId,
        abandonments: Vec<SignedDkgMessage>,
    ) -> Result<bool, Error> {
        self.cancel_with(from, wallet, session, false, abandonments)
            .map(|(dropped, _)| dropped)
    }

    fn cancel_with(
        &self,
        from: CoordinatorId,
        wallet: &WalletId,
        session: DkgSessionId,
        abandon: bool,
        abandonments: Vec<SignedDkgMessage>,
    ) -> Result<(bool, Option<SignedDkgMessage>), Error> {
        let request = Request::DkgCancel {
            wallet: wallet.clone(),
            session,
            abandon,
            abandonments,
        };
        ask(
            self,
            Timestamp(0),
            from,
            request,
            &mut no_rng(),
            |r| match r {
                Response::DkgCancelled {
                    dropped,
                    abandonment,
                } => Some((dropped, abandonment)),
                _ => None,
            },
        )
    }

    /// The signed confirmations of refresh `session` this member holds
    /// (asked by member 1, as `--resume` from any member does).
    ///
    /// # Errors
    /// The signer's refusal.
    pub fn refresh_confirmations(
        &self,
        wallet: &WalletId,
        session: DkgSessionId,
    ) -> Result<Vec<SignedDkgMessage>, Error> {
        let request = Request::RefreshConfirmations {
            wallet: wallet.clone(),
            session,
        };
        self.relayed(request, |r| match r {
            Response::DkgMessages { messages } => Some(messages),
            _ => None,
        })
    }

    /// A DKG cancel: whether a session was dropped.
    ///
    /// # Errors
    /// The signer's refusal.
    pub fn dkg_cancel(
        &self,
        from: CoordinatorId,
        wallet: &WalletId,
        session: DkgSessionId,
    ) -> Result<bool, Error> {
        self.cancel_with(from, wallet, session, false, Vec::new())
            .map(|(dropped, _)| dropped)
    }
}
