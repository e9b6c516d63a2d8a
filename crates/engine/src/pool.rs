//! One wallet's live nonces, kept in memory only.
//!
//! A nonce is keyed by the hash of its own commitment, never by an id the
//! coordinator chooses. Nonces are issued in round-1 vectors (one per input)
//! and can only be taken as exactly one whole vector, in order; taking
//! removes them, so a nonce is handed out at most once. Consumed, evicted
//! and expired commitments leave a tombstone for a while so that a later
//! request for them gets a precise error instead of `nonce_unknown`.
//!
//! The pool is generic over the nonce type so its bookkeeping is tested on
//! its own; the signer instantiates it with the crypto crate's secret nonce.

use std::collections::{HashMap, VecDeque};

use crate::config::Limits;
use thresig_store::CommitmentHash;

use crate::error::Error;
use crate::ids::CoordinatorId;
use thresig_store::Timestamp;
use thresig_store::WalletId;

/// Why a commitment has no live nonce any more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tombstone {
    /// Round 2 used it, in the attempt whose first commitment is `lead`.
    Consumed {
        /// The first commitment of the attempt's round-1 vector.
        lead: CommitmentHash,
    },
    /// Its coordinator's quota evicted it.
    Evicted,
    /// Its time to live ran out.
    Expired,
    /// Its coordinator aborted it.
    Aborted,
}

/// Why nonces could not be taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TakeError {
    /// No nonce and no tombstone for this commitment.
    Unknown(CommitmentHash),
    /// The commitment has a tombstone.
    Gone(CommitmentHash, Tombstone),
    /// The commitments are live but not exactly one round-1 vector.
    NotOneVector,
}

/// Issuing nonces would exceed the wallet-wide limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WalletFull {
    /// Live nonces now.
    pub(crate) live: usize,
}

/// One round-1 vector: its commitments in input order and its nonces.
struct Vector<N> {
    coordinator: CoordinatorId,
    expires: Timestamp,
    commitments: Vec<CommitmentHash>,
    nonces: Vec<N>,
}

impl TakeError {
    /// The engine error for this refusal in round 2 of `wallet`.
    pub(crate) fn into_error(self, wallet: &WalletId) -> Error {
        let wallet = wallet.clone();
        match self {
            TakeError::Unknown(commitment) | TakeError::Gone(commitment, Tombstone::Aborted) => {
                Error::NonceUnknown { wallet, commitment }
            }
            TakeError::Gone(commitment, Tombstone::Consumed { .. }) => {
                Error::SessionConflict { wallet, commitment }
            }
            TakeError::Gone(commitment, Tombstone::Evicted) => {
                Error::NonceEvicted { wallet, commitment }
            }
            TakeError::Gone(commitment, Tombstone::Expired) => {
                Error::AttemptExpired { wallet, commitment }
            }
            TakeError::NotOneVector => Error::NotOneRound1Vector { wallet },
        }
    }
}

/// The live nonces of one wallet.
pub(crate) struct NoncePool<N> {
    /// Vectors by their first commitment.
    vectors: HashMap<CommitmentHash, Vector<N>>,
    /// Every live commitment, to its vector's first commitment.
    index: HashMap<CommitmentHash, CommitmentHash>,
    /// Each coordinator's vectors, oldest first.
    by_coordinator: HashMap<CoordinatorId, VecDeque<CommitmentHash>>,
    /// Live nonces in total.
    live: usize,
    tombstones: HashMap<CommitmentHash, (Tombstone, Timestamp)>,
    /// Tombstones in insertion order, for expiry and the size cap.
    tombstone_order: VecDeque<CommitmentHash>,
    limits: Limits,
    /// Members of the wallet (each may coordinate for it).
    members: usize,
}

impl<N> NoncePool<N> {
    /// An empty pool for a wallet of `members` members.
    pub(crate) fn new(limits: Limits, members: usize) -> Self {
        Self {
            vectors: HashMap::new(),
            index: HashMap::new(),
            by_coordinator: HashMap::new(),
            live: 0,
            tombstones: HashMap::new(),
            tombstone_order: VecDeque::new(),
            limits,
            members,
        }
    }

    /// Drops every live nonce (wiped on drop), keeping the tombstones: for
    /// a key replaced at run time, whose pool was drawn for the old key.
    pub(crate) fn drop_live(&mut self) {
        self.vectors.clear();
        self.index.clear();
        self.by_coordinator.clear();
        self.live = 0;
    }

    /// Live nonces of `coordinator`.
    pub(crate) fn live_for(&self, coordinator: &CoordinatorId) -> usize {
        self.by_coordinator.get(coordinator).map_or(0, |leads| {
            leads
                .iter()
                .filter_map(|l| self.vectors.get(l))
                .map(|v| v.nonces.len())
                .sum()
        })
    }

    /// Live nonces in the pool.
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// Makes room for `count` new nonces of `coordinator`: drops expired
    /// vectors, decides whether the request fits, and only then evicts the
    /// coordinator's oldest vectors beyond its quota (a refused request
    /// evicts nothing).
    ///
    /// The wallet-wide limit cannot be used by some coordinators to lock
    /// others out: each coordinator is always admitted up to its reserved
    /// share, `min(nonces_per_coordinator, nonces_per_wallet / members)`;
    /// only nonces beyond that share need room under `nonces_per_wallet`.
    /// Live nonces therefore stay below twice `nonces_per_wallet`.
    ///
    /// Call it right before inserting the vector, in the same lock section,
    /// so that the limits hold whatever ran since [`NoncePool::admits`].
    /// `count` must not exceed the coordinator quota (the request size
    /// limit is checked first).
    pub(crate) fn reserve(
        &mut self,
        now: Timestamp,
        coordinator: CoordinatorId,
        count: usize,
    ) -> Result<(), WalletFull> {
        self.prune(now);
        for lead in self.evictions(coordinator, count)? {
            self.remove_vector(lead, Tombstone::Evicted, now);
        }
        Ok(())
    }

    /// Whether [`NoncePool::reserve`] would admit `count` new nonces of
    /// `coordinator` now. Evicts nothing (it drops only expired vectors,
    /// which no request can use any more), so a round 1 checks it before
    /// drawing nonces and a refused one costs no randomness and no other
    /// vector.
    pub(crate) fn admits(
        &mut self,
        now: Timestamp,
        coordinator: CoordinatorId,
        count: usize,
    ) -> Result<(), WalletFull> {
        self.prune(now);
        self.evictions(coordinator, count).map(drop)
    }

    /// The coordinator's oldest vectors that must go for `count` new nonces
    /// to fit its quota, or the refusal if they would not fit the wallet.
    fn evictions(
        &self,
        coordinator: CoordinatorId,
        count: usize,
    ) -> Result<Vec<CommitmentHash>, WalletFull> {
        let quota = self.limits.nonces_per_coordinator;
        let mut own = self.live_for(&coordinator);
        let mut freed = 0;
        let mut evict = Vec::new();
        for lead in self.by_coordinator.get(&coordinator).into_iter().flatten() {
            if own + count <= quota {
                break;
            }
            let size = self.vectors.get(lead).map_or(0, |v| v.nonces.len());
            own -= size;
            freed += size;
            evict.push(*lead);
        }
        let total = self.live - freed + count;
        let reserved = quota.min(self.limits.nonces_per_wallet / self.members.max(1));
        if own + count > reserved && total > self.limits.nonces_per_wallet {
            return Err(WalletFull { live: self.live });
        }
        Ok(evict)
    }

    /// Adds a round-1 vector (after [`NoncePool::reserve`]). The caller
    /// generated the nonces freshly, so their commitments are new.
    pub(crate) fn insert(
        &mut self,
        now: Timestamp,
        coordinator: CoordinatorId,
        entries: Vec<(CommitmentHash, N)>,
    ) {
        let (commitments, nonces): (Vec<_>, Vec<_>) = entries.into_iter().unzip();
        let Some(&lead) = commitments.first() else {
            return;
        };
        for c in &commitments {
            self.index.insert(*c, lead);
        }
        self.live += nonces.len();
        self.by_coordinator
            .entry(coordinator)
            .or_default()
            .push_back(lead);
        let expires = now.saturating_add(self.limits.nonce_ttl);
        self.vectors.insert(
            lead,
            Vector {
                coordinator,
                expires,
                commitments,
                nonces,
            },
        );
    }

    /// Why `commitment` has no live nonce, if it has a tombstone.
    pub(crate) fn tombstone(&self, commitment: &CommitmentHash) -> Option<Tombstone> {
        self.tombstones.get(commitment).map(|(t, _)| *t)
    }

    /// Takes the nonces of `commitments` if they are exactly one live
    /// round-1 vector, in order, leaving `Consumed` tombstones. Returns the
    /// vector's first commitment and the nonces in input order.
    ///
    /// # Errors
    /// [`TakeError::Gone`] for a commitment with a tombstone (the first
    /// found), [`TakeError::Unknown`] for one never seen,
    /// [`TakeError::NotOneVector`] when they are live but not one whole
    /// vector, `Unknown` when the vector was issued to a coordinator other
    /// than `owner` (nonces are spent only by the coordinator they were
    /// issued to), and `Gone(_, Expired)` when the vector's TTL has run out
    /// (the vector is then dropped). Nothing is taken on error.
    pub(crate) fn take(
        &mut self,
        now: Timestamp,
        owner: CoordinatorId,
        commitments: &[CommitmentHash],
    ) -> Result<(CommitmentHash, Vec<N>), TakeError> {
        for c in commitments {
            if !self.index.contains_key(c) {
                return Err(match self.tombstone(c) {
                    Some(t) => TakeError::Gone(*c, t),
                    None => TakeError::Unknown(*c),
                });
            }
        }
        let lead = commitments
            .first()
            .and_then(|c| self.index.get(c))
            .copied()
            .ok_or(TakeError::NotOneVector)?;
        let vector = self.vectors.get(&lead).ok_or(TakeError::NotOneVector)?;
        if vector.commitments != commitments {
            return Err(TakeError::NotOneVector);
        }
        if vector.coordinator != owner {
            return Err(TakeError::Unknown(lead));
        }
        if vector.expires <= now {
            self.remove_vector(lead, Tombstone::Expired, now);
            return Err(TakeError::Gone(lead, Tombstone::Expired));
        }
        let vector = self.detach(lead).ok_or(TakeError::NotOneVector)?;
        self.bury(&vector.commitments, Tombstone::Consumed { lead }, now);
        Ok((lead, vector.nonces))
    }

    /// Drops the live vectors of `coordinator` that contain any of
    /// `commitments` (an abort). Returns how many nonces were destroyed.
    pub(crate) fn abort(
        &mut self,
        now: Timestamp,
        coordinator: CoordinatorId,
        commitments: &[CommitmentHash],
    ) -> usize {
        let leads: Vec<CommitmentHash> = commitments
            .iter()
            .filter_map(|c| self.index.get(c).copied())
            .filter(|lead| {
                self.vectors
                    .get(lead)
                    .is_some_and(|v| v.coordinator == coordinator)
            })
            .collect();
        let mut destroyed = 0;
        for lead in leads {
            destroyed += self.remove_vector(lead, Tombstone::Aborted, now);
        }
        destroyed
    }

    /// Drops every expired vector and every tombstone past its time.
    pub(crate) fn prune(&mut self, now: Timestamp) {
        let expired: Vec<CommitmentHash> = self
            .vectors
            .iter()
            .filter(|(_, v)| v.expires <= now)
            .map(|(lead, _)| *lead)
            .collect();
        for lead in expired {
            self.remove_vector(lead, Tombstone::Expired, now);
        }
        while let Some(oldest) = self.tombstone_order.front().copied() {
            match self.tombstones.get(&oldest) {
                Some((_, until)) if *until > now => break,
                _ => {
                    self.tombstones.remove(&oldest);
                    self.tombstone_order.pop_front();
                }
            }
        }
    }

    /// Removes a vector and its index entries, returning it.
    fn detach(&mut self, lead: CommitmentHash) -> Option<Vector<N>> {
        let vector = self.vectors.remove(&lead)?;
        for c in &vector.commitments {
            self.index.remove(c);
        }
        self.live -= vector.nonces.len();
        if let Some(leads) = self.by_coordinator.get_mut(&vector.coordinator) {
            leads.retain(|l| *l != lead);
            if leads.is_empty() {
                self.by_coordinator.remove(&vector.coordinator);
            }
        }
        Some(vector)
    }

    /// Removes a vector, destroying its nonces, and buries its commitments.
    fn remove_vector(&mut self, lead: CommitmentHash, why: Tombstone, now: Timestamp) -> usize {
        let Some(vector) = self.detach(lead) else {
            return 0;
        };
        self.bury(&vector.commitments, why, now);
        vector.nonces.len()
    }

    /// Records tombstones, keeping at most `nonces_per_wallet` of them (the
    /// oldest are forgotten first; a forgotten one answers `nonce_unknown`).
    fn bury(&mut self, commitments: &[CommitmentHash], why: Tombstone, now: Timestamp) {
        let until = now.saturating_add(self.limits.replay_window);
        for c in commitments {
            if self.tombstones.insert(*c, (why, until)).is_none() {
                self.tombstone_order.push_back(*c);
            }
        }
        while self.tombstone_order.len() > self.limits.nonces_per_wallet {
            if let Some(old) = self.tombstone_order.pop_front() {
                self.tombstones.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn c(i: u8) -> CommitmentHash {
        CommitmentHash([i; 32])
    }

    const A: CoordinatorId = CoordinatorId([1; 32]);
    const B: CoordinatorId = CoordinatorId([2; 32]);

    fn pool() -> NoncePool<u8> {
        NoncePool::new(Limits::new(2, 4, 6, Duration::from_secs(10)), 3)
    }

    fn issue(p: &mut NoncePool<u8>, now: u64, who: CoordinatorId, ids: &[u8]) {
        p.reserve(Timestamp(now), who, ids.len()).unwrap();
        p.insert(
            Timestamp(now),
            who,
            ids.iter().map(|i| (c(*i), *i)).collect(),
        );
    }

    #[test]
    fn takes_exactly_one_whole_vector_once() {
        let mut p = pool();
        issue(&mut p, 0, A, &[1, 2]);
        issue(&mut p, 0, A, &[3]);
        let t = Timestamp(1);
        assert_eq!(p.take(t, A, &[c(1)]), Err(TakeError::NotOneVector));
        assert_eq!(p.take(t, A, &[c(2), c(1)]), Err(TakeError::NotOneVector));
        assert_eq!(p.take(t, A, &[c(1), c(3)]), Err(TakeError::NotOneVector));
        assert_eq!(p.live(), 3, "a refused take takes nothing");
        assert_eq!(p.take(t, A, &[c(1), c(2)]), Ok((c(1), vec![1, 2])));
        assert_eq!(p.live(), 1);
        assert_eq!(
            p.take(t, A, &[c(1), c(2)]),
            Err(TakeError::Gone(c(1), Tombstone::Consumed { lead: c(1) }))
        );
        assert_eq!(
            p.take(t, A, &[c(2)]),
            Err(TakeError::Gone(c(2), Tombstone::Consumed { lead: c(1) }))
        );
        assert_eq!(p.take(t, A, &[c(9)]), Err(TakeError::Unknown(c(9))));
    }

    #[test]
    fn quota_evicts_the_coordinators_oldest_and_spares_others() {
        let mut p = pool();
        issue(&mut p, 0, A, &[1, 2]);
        issue(&mut p, 0, B, &[10]);
        issue(&mut p, 1, A, &[3, 4]);
        issue(&mut p, 2, A, &[5]);
        assert_eq!(p.tombstone(&c(1)), Some(Tombstone::Evicted));
        assert_eq!(p.tombstone(&c(2)), Some(Tombstone::Evicted));
        assert_eq!(p.live_for(&A), 3);
        assert_eq!(p.take(Timestamp(3), B, &[c(10)]), Ok((c(10), vec![10])));
        assert!(p.take(Timestamp(3), A, &[c(1), c(2)]).is_err());
        issue(&mut p, 3, B, &[13]);
        issue(&mut p, 3, B, &[11, 12]);
        assert_eq!(p.live(), 6, "the wallet-wide cap is reached");
        // A third coordinator still gets its reserved share (6 / 3 members).
        let c3 = CoordinatorId([3; 32]);
        issue(&mut p, 3, c3, &[20, 21]);
        assert_eq!(p.live(), 8);
        // Beyond its share it needs room under the cap, and there is none.
        assert_eq!(p.reserve(Timestamp(3), c3, 1), Err(WalletFull { live: 8 }));
        // A refused reserve evicts nothing, not even the caller's own.
        assert_eq!(p.reserve(Timestamp(3), A, 2), Err(WalletFull { live: 8 }));
        assert_eq!(p.live_for(&A), 3, "a refused reserve evicts nobody");
        assert_eq!(p.tombstone(&c(3)), None);
    }

    #[test]
    fn admits_answers_as_reserve_would_and_evicts_nothing() {
        let mut p = pool();
        issue(&mut p, 0, A, &[1, 2]);
        issue(&mut p, 0, A, &[3, 4]);
        // A at its quota: admitted (its oldest vector would go), and the
        // check leaves that vector live.
        assert_eq!(p.admits(Timestamp(1), A, 2), Ok(()));
        assert_eq!(p.live_for(&A), 4);
        assert_eq!(p.tombstone(&c(1)), None);
        // B beyond its reserved share (6 / 3) with the wallet full: refused
        // by both, and nothing changes.
        issue(&mut p, 1, B, &[10, 11]);
        assert_eq!(p.admits(Timestamp(1), B, 1), Err(WalletFull { live: 6 }));
        assert_eq!(p.reserve(Timestamp(1), B, 1), Err(WalletFull { live: 6 }));
        assert_eq!(p.live(), 6);
    }

    #[test]
    fn nonces_are_taken_only_by_the_coordinator_they_were_issued_to() {
        let mut p = pool();
        issue(&mut p, 0, A, &[1, 2]);
        assert_eq!(
            p.take(Timestamp(1), B, &[c(1), c(2)]),
            Err(TakeError::Unknown(c(1)))
        );
        assert_eq!(p.live_for(&A), 2, "a refused take takes nothing");
        assert_eq!(
            p.take(Timestamp(1), A, &[c(1), c(2)]),
            Ok((c(1), vec![1, 2]))
        );
    }

    #[test]
    fn expiry_and_abort_leave_tombstones() {
        let mut p = pool();
        issue(&mut p, 0, A, &[1]);
        issue(&mut p, 0, B, &[2]);
        assert_eq!(
            p.take(Timestamp(10_000), A, &[c(1)]),
            Err(TakeError::Gone(c(1), Tombstone::Expired))
        );
        assert_eq!(p.abort(Timestamp(1), A, &[c(2)]), 0, "not A's nonce");
        assert_eq!(p.abort(Timestamp(1), B, &[c(2)]), 1);
        assert_eq!(p.tombstone(&c(2)), Some(Tombstone::Aborted));
        assert_eq!(p.live(), 0);
        p.prune(Timestamp(10_000_000));
        assert_eq!(p.tombstone(&c(2)), None);
    }
}
