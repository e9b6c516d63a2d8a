//! Signing round 1: fresh nonces drawn with the wallet's lock released and
//! kept in its pool under the lock again, round 2's next vector, and abort,
//! which destroys a coordinator's vectors.

use std::sync::Arc;

use rand_core::{CryptoRng, RngCore};
use thresig_crypto::{KeyShare, SecretNonce, commit};
use thresig_store::{CommitmentHash, Store};

use super::{Member, Shard, Signer, lock, lock_unloaded};
use crate::api::{AbortRequest, HexBytes, Round1Request, Round1Response};
use crate::check::commitment_hash;
use crate::config::Limits;
use crate::error::{Error, RequestPart};
use crate::ids::{CoordinatorId, WalletEpoch};
use crate::pool::{NoncePool, WalletFull};
use crate::wallet::SigningKey;
use thresig_store::{Timestamp, WalletId};

impl<S: Store> Signer<S> {
    /// Signing round 1: generates one fresh nonce per input, keeps them in
    /// memory only, and returns their commitments.
    ///
    /// The nonces are drawn with the wallet's lock released (a vector at
    /// the input limit costs more than a whole quiet signature, and other
    /// members' requests on the wallet must not wait behind it): the checks
    /// and the pool's admission run under the lock first, the vector enters
    /// the pool under it again, re-admitted by then-current limits.
    ///
    /// # Errors
    /// The wallet-state errors; a zero or too large input count;
    /// [`Error::NonceCapacity`] at the wallet-wide limit (the coordinator's
    /// own oldest vectors are evicted first to fit its quota).
    pub(super) fn round1<R: RngCore + CryptoRng>(
        &self,
        now: Timestamp,
        member: &Member<'_>,
        req: &Round1Request,
        rng: &mut R,
    ) -> Result<Round1Response, Error> {
        let Member { slot, from } = *member;
        let share = {
            let mut guard = lock(&self.store, slot)?;
            let Shard { state, pool, .. } = &mut *guard;
            let (key, _) = state.signing_key(&req.wallet)?;
            if req.inputs == 0 {
                return Err(Error::Malformed {
                    wallet: req.wallet.clone(),
                    part: RequestPart::NoInputs,
                });
            }
            if req.inputs > self.limits.max_inputs {
                return Err(Error::TooManyInputs {
                    wallet: req.wallet.clone(),
                    requested: req.inputs,
                    max: self.limits.max_inputs,
                });
            }
            // Checked before drawing, so a refused round 1 costs no
            // randomness; the check evicts nothing.
            pool.admits(now, from, req.inputs)
                .map_err(|full| nonce_capacity(&req.wallet, from, full, &self.limits))?;
            Arc::clone(&key.share)
        };
        let drawn = draw(&share, req.inputs, rng);
        let mut guard = lock(&self.store, slot)?;
        let (epoch, commitments) =
            guard.keep_drawn(now, from, &req.wallet, &self.limits, &share, drawn, rng)?;
        Ok(Round1Response {
            wallet: req.wallet.clone(),
            seat: slot.seat,
            epoch,
            commitments,
        })
    }

    /// Generates one round-1 vector of `inputs` fresh nonces for `from`
    /// under the wallet's lock (round 2's next vector, sized by shares the
    /// same request already computed), keeps the nonces in the pool and
    /// returns their commitments.
    #[allow(
        clippy::too_many_arguments,
        reason = "the pool and key are borrowed from the wallet's locked shard"
    )]
    pub(super) fn fresh_vector<R: RngCore + CryptoRng>(
        &self,
        now: Timestamp,
        from: CoordinatorId,
        wallet: &WalletId,
        pool: &mut NoncePool<SecretNonce>,
        key: &SigningKey,
        inputs: usize,
        rng: &mut R,
    ) -> Result<Vec<HexBytes>, Error> {
        pool.reserve(now, from, inputs)
            .map_err(|full| nonce_capacity(wallet, from, full, &self.limits))?;
        let drawn = draw(&key.share, inputs, rng);
        pool.insert(now, from, drawn.entries);
        Ok(drawn.commitments)
    }

    /// Destroys the live round-1 vectors of `from` that contain any of the
    /// given commitments. Returns how many nonces were destroyed.
    ///
    /// # Errors
    /// [`Error::Malformed`] for a commitment that does not decode.
    pub(super) fn abort(
        &self,
        now: Timestamp,
        member: &Member<'_>,
        req: &AbortRequest,
    ) -> Result<usize, Error> {
        let Member { slot, from } = *member;
        let hashes = req
            .commitments
            .iter()
            .map(|c| {
                thresig_crypto::Commitment::from_bytes(&c.0)
                    .map_err(|_| Error::Malformed {
                        wallet: req.wallet.clone(),
                        part: RequestPart::Commitments,
                    })
                    .map(|c| commitment_hash(&c))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(lock_unloaded(slot)?.pool.abort(now, from, &hashes))
    }
}

impl Shard {
    /// Round 1's second lock section: keeps a vector drawn with the lock
    /// released from `share`, if the wallet still signs and the pool still
    /// admits it (what ran in between may have used the room; a refused
    /// vector is dropped, its nonces wiped). Returns the key's epoch and
    /// the vector's commitments.
    ///
    /// # Errors
    /// The wallet-state errors, [`Error::NonceCapacity`].
    #[allow(
        clippy::too_many_arguments,
        reason = "round 1's request and its vector drawn outside the lock"
    )]
    fn keep_drawn<R: RngCore + CryptoRng>(
        &mut self,
        now: Timestamp,
        from: CoordinatorId,
        wallet: &WalletId,
        limits: &Limits,
        share: &Arc<KeyShare>,
        drawn: Drawn,
        rng: &mut R,
    ) -> Result<(WalletEpoch, Vec<HexBytes>), Error> {
        let (key, _) = self.state.signing_key(wallet)?;
        // The state may have changed since the first section; only a
        // different key makes the drawn nonces not this key's. The share's
        // allocation identifies the key: `share` keeps it alive, so no
        // other key can have been given the same one. Then the vector is drawn
        // again, under the lock: keys change by an operator's or a DKG's
        // act, never by a member's request, so no member can make other
        // requests wait here.
        let drawn = if Arc::ptr_eq(&key.share, share) {
            drawn
        } else {
            draw(&key.share, drawn.entries.len(), rng)
        };
        self.pool
            .reserve(now, from, drawn.entries.len())
            .map_err(|full| nonce_capacity(wallet, from, full, limits))?;
        self.pool.insert(now, from, drawn.entries);
        Ok((key.epoch, drawn.commitments))
    }
}

/// A round-1 vector drawn but not yet in the pool: its nonces by
/// commitment (wiped on drop, so a vector the pool refuses leaves nothing)
/// and the commitments' encodings, in input order.
struct Drawn {
    entries: Vec<(CommitmentHash, SecretNonce)>,
    commitments: Vec<HexBytes>,
}

/// Draws `inputs` fresh nonces of `share`, each kept under the hash of
/// its commitment's encoding. One at a time, each pushed into a vector
/// allocated once: a vector that grew would free its old buffer with the
/// nonces still in it. `commit` frees no buffer holding a nonce either
/// (`crates/crypto/tests/zeroize_alloc.rs`).
fn draw<R: RngCore + CryptoRng>(share: &KeyShare, inputs: usize, rng: &mut R) -> Drawn {
    let mut entries = Vec::with_capacity(inputs);
    let mut commitments = Vec::with_capacity(inputs);
    for _ in 0..inputs {
        let (nonce, commitment) = commit(share, rng);
        entries.push((commitment_hash(&commitment), nonce));
        commitments.push(HexBytes(commitment.to_bytes()));
    }
    Drawn {
        entries,
        commitments,
    }
}

/// The refusal of `from`'s new nonces on a full wallet.
fn nonce_capacity(
    wallet: &WalletId,
    from: CoordinatorId,
    full: WalletFull,
    limits: &Limits,
) -> Error {
    Error::NonceCapacity {
        wallet: wallet.clone(),
        coordinator: from,
        live: full.live,
        max: limits.nonces_per_wallet,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand_chacha::ChaCha20Rng;
    use rand_chacha::rand_core::SeedableRng;
    use thresig_crypto::Commitment;

    use super::*;
    use crate::signer::pending::PendingShares;
    use crate::wallet::WalletState;
    use crate::wallet::tests::key;

    const FROM: CoordinatorId = CoordinatorId([1; 32]);

    fn shard(state: WalletState) -> Shard {
        Shard {
            state,
            loaded: true,
            pool: NoncePool::new(Limits::default(), 3),
            pending: PendingShares::default(),
            inflight: crate::ledger::InFlight::default(),
            dkg: None,
            dkg_cancelled: BTreeMap::new(),
            unacknowledged_step: None,
            repair: crate::repair::RepairSlot::default(),
        }
    }

    fn hashes(commitments: &[HexBytes]) -> Vec<CommitmentHash> {
        commitments
            .iter()
            .map(|c| commitment_hash(&Commitment::from_bytes(&c.0).unwrap()))
            .collect()
    }

    #[test]
    fn a_vector_drawn_from_a_replaced_key_is_drawn_again_from_the_current_one() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let wallet = WalletId::new("w").unwrap();
        let now = Timestamp(1);
        let mut shard = shard(WalletState::Active(key(1, 0, &mut rng)));
        let limits = Limits::default();
        // Round 1's first section took this share, then the lock was
        // released for the draw.
        let share = Arc::clone(&shard.state.key().unwrap().share);
        let drawn = draw(&share, 2, &mut rng);
        let stale = hashes(&drawn.commitments);
        // Meanwhile the wallet's key was replaced by another at the same
        // epoch: only the share's identity tells them apart.
        shard.state = WalletState::Active(key(2, 0, &mut rng));
        let (epoch, commitments) = shard
            .keep_drawn(now, FROM, &wallet, &limits, &share, drawn, &mut rng)
            .unwrap();
        assert_eq!(epoch, WalletEpoch(0), "the current key's epoch");
        let kept = hashes(&commitments);
        assert_eq!(kept.len(), 2);
        assert!(kept.iter().all(|c| !stale.contains(c)), "drawn again");
        assert_eq!(shard.pool.live(), 2);
        assert!(
            shard.pool.take(now, FROM, &stale).is_err(),
            "stale not kept"
        );
        assert!(shard.pool.take(now, FROM, &kept).is_ok());
    }

    #[test]
    fn a_vector_drawn_for_an_unchanged_key_is_kept_and_one_for_a_key_gone_is_dropped() {
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        let wallet = WalletId::new("w").unwrap();
        let now = Timestamp(1);
        let limits = Limits::default();
        let mut shard = shard(WalletState::Active(key(1, 0, &mut rng)));
        let share = Arc::clone(&shard.state.key().unwrap().share);
        let drawn = draw(&share, 3, &mut rng);
        let expected = hashes(&drawn.commitments);
        let (epoch, commitments) = shard
            .keep_drawn(now, FROM, &wallet, &limits, &share, drawn, &mut rng)
            .unwrap();
        assert_eq!(epoch, WalletEpoch(0));
        assert_eq!(hashes(&commitments), expected, "the drawn vector is kept");
        // A wallet that stopped signing in between keeps nothing.
        let drawn = draw(&share, 1, &mut rng);
        shard.state = WalletState::Retired;
        let err = shard
            .keep_drawn(now, FROM, &wallet, &limits, &share, drawn, &mut rng)
            .unwrap_err();
        assert!(matches!(err, Error::WalletRetired { .. }), "{err:?}");
        assert_eq!(shard.pool.live(), 3);
    }

    /// The per-wallet limit is decided again at insertion: round 1s admitted
    /// together cannot all be kept once the others have filled the wallet.
    #[test]
    fn a_vector_the_wallet_has_no_room_for_at_insertion_is_refused_and_not_kept() {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let wallet = WalletId::new("w").unwrap();
        let now = Timestamp(1);
        let limits = Limits::new(2, 4, 6, std::time::Duration::from_secs(60));
        let mut shard = shard(WalletState::Active(key(1, 0, &mut rng)));
        shard.pool = NoncePool::new(limits.clone(), 3);
        let share = Arc::clone(&shard.state.key().unwrap().share);
        // FROM's reserved share is min(4, 6 / 3) = 2; beyond it, room comes
        // from the wallet's 6. Its draw of 2 beyond its first 2 was admitted
        // while the wallet had room...
        let first = draw(&share, 2, &mut rng);
        shard
            .keep_drawn(now, FROM, &wallet, &limits, &share, first, &mut rng)
            .unwrap();
        let drawn = draw(&share, 2, &mut rng);
        let refused = hashes(&drawn.commitments);
        // ... and meanwhile two other coordinators filled it.
        for other in [CoordinatorId([2; 32]), CoordinatorId([3; 32])] {
            let theirs = draw(&share, 2, &mut rng);
            shard.pool.reserve(now, other, 2).unwrap();
            shard.pool.insert(now, other, theirs.entries);
        }
        assert_eq!(shard.pool.live(), 6);
        let err = shard
            .keep_drawn(now, FROM, &wallet, &limits, &share, drawn, &mut rng)
            .unwrap_err();
        assert!(matches!(err, Error::NonceCapacity { .. }), "{err:?}");
        assert_eq!(shard.pool.live(), 6, "nothing kept");
        assert!(shard.pool.take(now, FROM, &refused).is_err());
    }
}
