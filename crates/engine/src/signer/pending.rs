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
}

/// A wallet's pending shares by the attempt's first commitment, at most
/// [`crate::Limits::pending_per_wallet`] of them.
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

    /// Records the shares of a fresh attempt of `owner` (admitted by
    /// [`Self::admit`]); at the cap, `owner`'s own oldest entry is dropped
    /// first (safe: never released, its nonces are gone), never another
    /// coordinator's.
    pub(super) fn insert(
        &mut self,
        lead: CommitmentHash,
        owner: CoordinatorId,
        package: PackageHash,
        shares: Vec<Vec<u8>>,
        until: Timestamp,
        max: usize,
    ) {
        if self.by_lead.len() >= max
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
            },
        );
    }

    /// Forgets shares whose retry window has passed.
    pub(super) fn prune(&mut self, now: Timestamp) {
        self.by_lead.retain(|_, p| p.until > now);
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
        if self.by_lead.len() < max || self.oldest_of(from).is_some() {
            return Ok(());
        }
        Err(Error::PendingCapacity {
            wallet: wallet.clone(),
            coordinator: from,
            pending: self.by_lead.len(),
            max,
        })
    }

    /// The first commitment of `owner`'s oldest pending attempt.
    fn oldest_of(&self, owner: CoordinatorId) -> Option<CommitmentHash> {
        self.by_lead
            .iter()
            .filter(|(_, p)| p.owner == owner)
            .min_by_key(|(_, p)| p.seq)
            .map(|(lead, _)| *lead)
    }
}
