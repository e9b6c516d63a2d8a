//! Shares computed for an attempt whose marker is not yet durable, capped
//! per wallet: only their owner's byte-identical request may retry them.

use std::collections::HashMap;

use thresig_store::{CommitmentHash, PackageHash};

use crate::error::Error;
use crate::ids::CoordinatorId;
use thresig_store::{Timestamp, WalletId};

/// Shares computed for an attempt whose marker is not yet durable.
///
/// They were computed once, from nonces that no longer exist; only the
/// byte-identical request may retry their commit.
pub(super) struct Pending {
    /// The coordinator whose nonces these shares spent: only it may retry
    /// them, and no other coordinator's request can make them be dropped.
    pub(super) owner: CoordinatorId,
    pub(super) package: PackageHash,
    pub(super) shares: Vec<Vec<u8>>,
    /// When these shares may be forgotten (dropping them is always safe:
    /// they were never released and their nonces are gone).
    until: Timestamp,
    /// Insertion order within the wallet, so "oldest" is exact even for
    /// entries created at the same `now`.
    seq: u64,
    /// The marker units of this attempt handed to the store and not yet
    /// settled. An entry with one in flight is no failed commit: it
    /// neither counts against the cap nor is dropped to make room, so
    /// that its unit's failure leaves it for the byte-identical retry,
    /// and a coordinator's round 2s in flight refuse no other's.
    inflight: usize,
}

/// A wallet's pending shares by the attempt's first commitment, at most
/// [`crate::Limits::pending_per_wallet`] of them whose units are not in
/// flight (see `Pending::inflight`; those in flight are as many as the
/// wallet's round 2s waiting for the store).
#[derive(Default)]
pub(super) struct PendingShares {
    by_lead: HashMap<CommitmentHash, Pending>,
    next_seq: u64,
}

impl PendingShares {
    pub(super) fn get(&self, lead: &CommitmentHash) -> Option<&Pending> {
        self.by_lead.get(lead)
    }

    pub(super) fn remove(&mut self, lead: &CommitmentHash) {
        self.by_lead.remove(lead);
    }

    /// Notes a marker unit of `lead`'s attempt handed to the store.
    pub(super) fn submitted(&mut self, lead: &CommitmentHash) {
        if let Some(p) = self.by_lead.get_mut(lead) {
            p.inflight = p.inflight.saturating_add(1);
        }
    }

    /// Notes the outcome of a unit [`Self::submitted`] for `lead`.
    pub(super) fn settled(&mut self, lead: &CommitmentHash) {
        if let Some(p) = self.by_lead.get_mut(lead) {
            p.inflight = p.inflight.saturating_sub(1);
        }
    }

    /// The entries counted against the cap: those no unit is in flight for.
    fn held(&self) -> usize {
        self.by_lead.values().filter(|p| p.inflight == 0).count()
    }

    /// Records the shares of a fresh attempt of `owner` (admitted by
    /// [`Self::admit`]); at the cap, `owner`'s own oldest entry with no
    /// unit in flight is dropped first (safe: never released, its nonces
    /// are gone), never another coordinator's.
    pub(super) fn insert(
        &mut self,
        lead: CommitmentHash,
        owner: CoordinatorId,
        package: PackageHash,
        shares: Vec<Vec<u8>>,
        until: Timestamp,
        max: usize,
    ) {
        if self.held() >= max
            && let Some(oldest) = self.oldest_of(owner)
        {
            self.by_lead.remove(&oldest);
        }
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        self.by_lead.insert(
            lead,
            Pending {
                owner,
                package,
                shares,
                until,
                seq,
                inflight: 0,
            },
        );
    }

    /// Forgets shares whose retry window has passed (none whose unit is
    /// in flight: its outcome settles them).
    pub(super) fn prune(&mut self, now: Timestamp) {
        self.by_lead.retain(|_, p| p.until > now || p.inflight > 0);
    }

    /// Whether a fresh attempt of `from` may be recorded under `max`: below
    /// the cap, or holding an entry of its own to drop. Checked before any
    /// nonce is spent; nothing is dropped here, so a request that then
    /// fails (its nonce already consumed) costs no other attempt.
    ///
    /// # Errors
    /// [`Error::PendingCapacity`] when the wallet is at the cap and `from`
    /// holds none of the entries.
    pub(super) fn admit(
        &self,
        wallet: &WalletId,
        from: CoordinatorId,
        max: usize,
    ) -> Result<(), Error> {
        let held = self.held();
        if held < max || self.oldest_of(from).is_some() {
            return Ok(());
        }
        Err(Error::PendingCapacity {
            wallet: wallet.clone(),
            coordinator: from,
            pending: held,
            max,
        })
    }

    /// The first commitment of `owner`'s oldest pending attempt with no
    /// unit in flight.
    fn oldest_of(&self, owner: CoordinatorId) -> Option<CommitmentHash> {
        self.by_lead
            .iter()
            .filter(|(_, p)| p.owner == owner && p.inflight == 0)
            .min_by_key(|(_, p)| p.seq)
            .map(|(lead, _)| *lead)
    }
}
