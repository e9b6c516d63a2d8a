//! Signing round 2's release path: the checked request, the policy and its
//! rate charge, the shares computed once, and the marker commit after which
//! they leave (or the replay of a durable marker).

use rand_core::{CryptoRng, RngCore};
use thresig_crypto::SecretNonce;
use thresig_store::{
    CommitmentHash, Conflict, Marker, OpResult, PackageHash, PendingWrite, Store, WriteOp,
    WriteOutcome,
};
use thresig_tx::{ChargeKey, Policy, TaprootWallet, WalletMode};

use super::pending::PendingShares;
use super::{Member, Shard, Signer, Slot, lock, store_error};
use crate::api::{HexBytes, Round2Request, Round2Response};
use crate::audit::{AuditEvent, append_op as audit_op, message_digest};
use crate::check::{CheckedRound2, check_round2};
use crate::clock::Clock;
use crate::durable::{decode_shares, encode_shares};
use crate::error::{Error, InternalFault};
use crate::ids::{CoordinatorId, WalletEpoch};
use crate::ledger::{Generation, InFlight, StoredLedger};
use crate::pool::{NoncePool, TakeError, Tombstone};
use crate::rollout::{Applied, RolloutError};
use crate::target::{Authority, Spend};
use crate::wallet::{Role, SigningKey, WalletState, WalletStateKind};
use thresig_store::{Timestamp, WalletId};

/// How often a marker commit re-reads the rate ledger after another commit
/// changed it before giving up with a retryable error. Each retry means
/// another transaction of the same wallet was charged in between; eight in
/// a row only happens under a flood, which the rate limits refuse anyway.
const LEDGER_RETRIES: usize = 8;

/// Whether a rekeying wallet's successor can receive its sweep, read
/// before the wallet's own lock is taken so that no two wallet locks are
/// ever held together.
enum Successor {
    /// The configuration names no successor.
    Unnamed,
    /// The successor is not `active` on this signer.
    NotActive(WalletId),
    /// The successor is active with this spend identity.
    Active(TaprootWallet),
}

/// What a round 2 is charged for, and under which rules: the inputs of
/// the policy's approval, which a dry run ([`Signer::policy_allows`])
/// needs alone.
struct Charge<'a> {
    wallet: &'a WalletId,
    coordinator: CoordinatorId,
    policy: &'a Policy,
    mode: WalletMode,
    spend: &'a Spend,
}

/// What a round 2 releases shares for: the inputs of every marker commit
/// attempt.
struct Release<'a> {
    charge: Charge<'a>,
    /// The condition of the marker's unit: the rollout still at the step
    /// that gave the charge's policy.
    guard: &'a WriteOp,
    /// The audit entry committed with the marker (I1: no share leaves
    /// without it).
    audit: AuditEvent,
}

/// The shares of an attempt and the marker that must be durable before
/// they leave.
struct Marking {
    lead: CommitmentHash,
    package: PackageHash,
    shares: Vec<Vec<u8>>,
    marker: WriteOp,
}

/// An attempt's marker with the units submitted for it so far.
struct Attempt {
    marking: Marking,
    /// The units submitted for it so far, at most `LEDGER_RETRIES`.
    units: usize,
    /// Whether the unit in flight changes a ledger record
    /// ([`InFlight::changes`]).
    changes: bool,
    /// The generation of the units in flight it was submitted under.
    generation: Generation,
}

/// A marker unit handed to the store under the wallet's lock, whose
/// outcome is waited for without it.
struct Submitted<'s> {
    pending: PendingWrite<'s>,
    attempt: Attempt,
}

/// The wallet's state when a marker unit's outcome is settled, against
/// which a ledger conflict's new unit is approved as its first was.
struct Recheck<'a> {
    state: &'a WalletState,
    /// The epoch of the key the first attempt signed with.
    epoch: WalletEpoch,
    /// The successor, read before the lock was retaken, if the outcome
    /// was a ledger conflict.
    successor: Option<Result<Successor, Error>>,
}

/// Where a release stands when the wallet's lock is let go.
enum Step<'s> {
    /// The shares to return, and whether they are fresh.
    Done(Vec<Vec<u8>>, bool),
    /// A marker unit in flight; its shares are fresh once it is durable.
    Submitted(Box<Submitted<'s>>),
}

impl<'s> Step<'s> {
    /// `unit` in flight, its attempt's pending shares marked as such
    /// until [`PendingShares::settled`].
    fn in_flight(unit: Submitted<'s>, pending: &mut PendingShares) -> Self {
        pending.submitted(&unit.attempt.marking.lead);
        Self::Submitted(Box::new(unit))
    }
}

impl<S: Store> Signer<S> {
    /// Signing round 2: checks the request, takes the nonces of exactly one
    /// round-1 vector, computes the shares, makes their marker durable and
    /// only then returns them, with a fresh round-1 vector of as many
    /// commitments for the coordinator's next ROAST session.
    ///
    /// For a PSBT target the transaction passes the wallet's policy before
    /// any nonce is taken, and again inside the marker's commit, where its
    /// rate charge is recorded in the same store unit as the marker (once
    /// per transaction id). A byte-identical replay returns the shares
    /// stored in the marker (also after a restart); a different request for
    /// a used commitment gets [`Error::SessionConflict`]. If the marker
    /// commit fails the shares stay pending in memory, nothing is returned,
    /// and the error is retryable. If the wallet's nonce capacity is
    /// exhausted, or its key was replaced while the marker's unit was in
    /// flight, the shares are returned without fresh commitments.
    ///
    /// The wallet's lock is held up to the marker unit's submission and
    /// again to settle its outcome, not while the store commits it, so the
    /// wallet's round 2s commit together; the next one's charge is read
    /// through the units in flight ([`InFlight`]).
    ///
    /// # Errors
    /// Every check of [`crate::Error`]'s request variants,
    /// [`Error::PolicyDenied`], [`Error::Transaction`],
    /// [`Error::RekeyInProgress`], [`Error::SuccessorNotActive`], the nonce
    /// errors ([`Error::NonceUnknown`], [`Error::AttemptExpired`],
    /// [`Error::NonceEvicted`], [`Error::SessionConflict`]),
    /// [`Error::LedgerContended`] and [`Error::Store`]. With the response,
    /// whether its shares are fresh (false for a replay's).
    pub(super) fn round2<R: RngCore + CryptoRng>(
        &self,
        clock: &dyn Clock,
        member: &Member<'_>,
        req: &Round2Request,
        applied: &Applied,
        rng: &mut R,
    ) -> Result<(Round2Response, bool), Error> {
        let policy = &*applied.policy;
        let Member { slot, from } = *member;
        let successor = self.successor(slot)?;
        let mut guard = self.lock_for_charge(slot)?;
        // Read under the lock: a reading taken before a wait for it would
        // date the charges committed meanwhile ahead of it, and the ledger
        // drops charges dated over a minute ahead.
        let now = clock.now();
        let Shard {
            state,
            pool,
            pending,
            inflight,
            ..
        } = &mut *guard;
        pending.prune(now);
        let (key, role) = state.signing_key(&req.wallet)?;
        let wallet = &slot.config.id;
        let (checked, mode) = self.authorize(slot, key, role, successor, policy, req)?;
        let release = Release {
            charge: Charge {
                wallet,
                coordinator: from,
                policy,
                mode,
                spend: checked.spend(),
            },
            guard: &applied.guard,
            audit: release_event(wallet, key, from, policy, &checked),
        };
        // The record is signed too, so that a proof needs no other copy of
        // it (docs/blame.md). Taken now: the key may be replaced while the
        // marker's unit is in flight, and the answer is for this one.
        let record = key
            .record()
            .map_err(|_| Error::Internal(InternalFault::Serialization))?
            .to_vec();
        let epoch = key.epoch;
        let step = self.release(now, from, &release, &checked, key, pool, pending, inflight)?;
        let (shares, fresh, mut guard, now) = match step {
            Step::Done(shares, fresh) => (shares, fresh, guard, now),
            Step::Submitted(mut unit) => {
                // The commit is waited for without the wallet's lock, so the
                // wallet's next round 2 can submit its unit meanwhile and a
                // group commit gathers both (DESIGN.md, "Why does round 2
                // wait for its marker without the wallet's lock?").
                drop(guard);
                loop {
                    let outcome = unit.pending.wait();
                    // A ledger conflict is approved again under the
                    // wallet's state as it is now, which may have changed
                    // while the lock was let go; a rekeying wallet's
                    // successor is read before its lock is retaken.
                    let successor = matches!(
                        outcome,
                        Ok(WriteOutcome::Skipped {
                            conflict: Conflict::PolicyMismatch(_),
                            ..
                        })
                    )
                    .then(|| self.successor(slot));
                    let mut guard = lock(&self.store, slot)?;
                    // Read again under the lock retaken, for the same reason
                    // as above: a retry's charge read at the first reading
                    // would drop the charges committed while the unit was in
                    // flight, if that lasted over a minute. Its audit entry
                    // and checkpoint carry this reading too; the marker (and
                    // its expiry) keeps the first, as its shares do.
                    let now = clock.now();
                    let Shard {
                        state,
                        pending,
                        inflight,
                        ..
                    } = &mut *guard;
                    let recheck = Recheck {
                        state,
                        epoch,
                        successor,
                    };
                    match self.settle(
                        now,
                        &release,
                        unit.attempt,
                        outcome,
                        recheck,
                        pending,
                        inflight,
                    )? {
                        Step::Done(shares, fresh) => break (shares, fresh, guard, now),
                        Step::Submitted(next) => unit = next,
                    }
                }
            }
        };
        let Shard { state, pool, .. } = &mut *guard;
        // A key replaced while the unit was in flight gets no fresh vector:
        // its commitments would not be for the key this answer is signed
        // with.
        let commitments = match state.signing_key(wallet) {
            Ok((key, _)) if key.epoch == epoch => {
                match self.fresh_vector(now, from, wallet, pool, key, shares.len(), rng) {
                    Ok(fresh) => fresh,
                    Err(Error::NonceCapacity { .. }) => Vec::new(),
                    Err(e) => return Err(e),
                }
            }
            _ => Vec::new(),
        };
        let mut answer = Round2Response::new(
            wallet.clone(),
            slot.seat,
            shares.into_iter().map(HexBytes).collect(),
            commitments,
        );
        answer.sign(&self.identity, &checked.hash(), &record);
        Ok((answer, fresh))
    }

    /// Whether `policy` would let round 2 release shares for `req`: every
    /// check up to the policy and its rate charge, with nothing taken or
    /// written. A staged rollout asks it of a canary's previous version
    /// for a request the new one denied.
    pub(crate) fn policy_allows(
        &self,
        clock: &dyn Clock,
        member: &Member<'_>,
        req: &Round2Request,
        policy: &Policy,
    ) -> bool {
        let Member { slot, from } = *member;
        let allows = || -> Result<(), Error> {
            let successor = self.successor(slot)?;
            let guard = self.lock_for_charge(slot)?;
            let now = clock.now();
            let (key, role) = guard.state.signing_key(&req.wallet)?;
            let (checked, mode) = self.authorize(slot, key, role, successor, policy, req)?;
            let charge = Charge {
                wallet: &slot.config.id,
                coordinator: from,
                policy,
                mode,
                spend: checked.spend(),
            };
            self.charge_ops(now, &charge, &guard.inflight).map(drop)
        };
        allows().is_ok()
    }

    /// The checks of a round-2 request under `policy` before any nonce:
    /// the checked request and the wallet's mode for its rate charge.
    fn authorize(
        &self,
        slot: &Slot,
        key: &SigningKey,
        role: Role,
        successor: Successor,
        policy: &Policy,
        req: &Round2Request,
    ) -> Result<(CheckedRound2, WalletMode), Error> {
        let authority = Authority {
            policy,
            role,
            taproot: key.taproot(self.network)?,
        };
        let checked = check_round2(&slot.config, slot.seat, key, &self.limits, &authority, req)?;
        Ok((checked, wallet_mode(&slot.config.id, role, successor)?))
    }

    /// The shares to release for a checked request: a durable marker's (a
    /// replay), with whether they are fresh (not a replay's); or the marker
    /// unit submitted for a pending attempt's or fresh ones.
    #[allow(
        clippy::too_many_arguments,
        reason = "the pool, pending shares, units in flight and key are borrowed from the wallet's locked shard"
    )]
    fn release(
        &self,
        now: Timestamp,
        from: CoordinatorId,
        release: &Release<'_>,
        checked: &CheckedRound2,
        key: &SigningKey,
        pool: &mut NoncePool<SecretNonce>,
        pending: &mut PendingShares,
        inflight: &mut InFlight,
    ) -> Result<Step<'_>, Error> {
        let wallet = release.charge.wallet;
        let lead = checked.lead();
        // A durable marker answers replays and refuses everything else.
        let stored = self
            .store
            .marker(wallet, &lead)
            .map_err(|source| store_error(wallet, source))?;
        if let Some(marker) = stored {
            pending.remove(&lead);
            return replay(wallet, lead, checked.hash(), &marker)
                .map(|shares| Step::Done(shares, false));
        }
        // Pending shares are retried only by the byte-identical request of
        // the coordinator that owns them; anyone else learns nothing.
        if let Some(p) = pending.get(&lead) {
            if p.owner != from {
                return Err(Error::NonceUnknown {
                    wallet: wallet.clone(),
                    commitment: lead,
                });
            }
            if p.package != checked.hash() {
                pending.remove(&lead);
                return Err(Error::SessionConflict {
                    wallet: wallet.clone(),
                    commitment: lead,
                });
            }
            // Its first attempt failed, or is still in flight: then this
            // unit's marker is found present and its shares replayed, and
            // the charge read through the units in flight is the first's.
            // Both answers are fresh, though the first attempt's may be
            // counted too (its unit still in flight commits): harmless, as
            // the rollout gate counts a coordinator's target once
            // ([`crate::rollout::steps::target_digest`]).
            let marking = self.marking(now, release, lead, p.package, p.shares.clone())?;
            let charge = self.charge_ops(now, &release.charge, inflight)?;
            let unit = self.submit(now, release, marking, charge, 0, inflight)?;
            return Ok(Step::in_flight(unit, pending));
        }
        // The policy refuses before any nonce is spent. Its charge is the
        // unit's first compare-and-set, against the ledger as read here
        // under the wallet's lock (through the units in flight, which the
        // store applies first), so the ledger, which grows with every
        // signature of the day, is read and decoded once.
        let charge = self.charge_ops(now, &release.charge, inflight)?;
        // Room for its shares is made before any nonce is spent, so a
        // refusal destroys nothing.
        pending.admit(wallet, from, self.limits.pending_per_wallet)?;
        // Fresh attempt: take the nonces (they leave the pool for good),
        // sign outside any store transaction, then commit the marker.
        let (lead, nonces) = pool.take(now, from, checked.own()).map_err(|e| {
            if let TakeError::Gone(_, Tombstone::Consumed { lead }) = e
                && pending.get(&lead).is_some_and(|p| p.owner == from)
            {
                pending.remove(&lead);
            }
            e.into_error(wallet)
        })?;
        let shares = sign_all(checked, nonces, key)?;
        pending.insert(
            lead,
            from,
            checked.hash(),
            shares.clone(),
            now.saturating_add(self.limits.replay_window),
            self.limits.pending_per_wallet,
        );
        let marking = self.marking(now, release, lead, checked.hash(), shares)?;
        let unit = self.submit(now, release, marking, charge, 0, inflight)?;
        Ok(Step::in_flight(unit, pending))
    }

    /// The successor's state, for a rekeying wallet whose configuration
    /// names one. Holds one wallet lock at a time, each only while reading,
    /// and reads the successor only while the wallet is rekeying (rare), so
    /// an active wallet never waits on another.
    fn successor(&self, slot: &Slot) -> Result<Successor, Error> {
        let Some(id) = &slot.config.successor else {
            return Ok(Successor::Unnamed);
        };
        if lock(&self.store, slot)?.state.kind() != WalletStateKind::Rekeying {
            return Ok(Successor::Unnamed);
        }
        let next = self.slot(id)?;
        let shard = lock(&self.store, next)?;
        match &shard.state {
            WalletState::Active(key) => Ok(Successor::Active(key.taproot(self.network)?.clone())),
            _ => Ok(Successor::NotActive(id.clone())),
        }
    }

    /// The rate-ledger writes that must commit with the marker of a
    /// transaction (after the policy approved it against the ledger just
    /// read); none for raw digests.
    fn charge_ops(
        &self,
        now: Timestamp,
        charge: &Charge<'_>,
        inflight: &InFlight,
    ) -> Result<Vec<WriteOp>, Error> {
        let Spend::Transaction(psbt) = charge.spend else {
            return Ok(Vec::new());
        };
        let wallet = charge.wallet;
        let key = ChargeKey::of(psbt);
        let ledger = StoredLedger::read(&self.store, inflight, wallet, charge.policy, now, key)?;
        let approval = match ledger.approve(
            wallet,
            charge.policy,
            &charge.mode,
            &charge.coordinator,
            psbt,
            now,
        ) {
            Ok(approval) => approval,
            Err(denied) => {
                // Stores the windows as read, so the next request does not
                // walk over the charges that left them again (at most once
                // per charge and window, however many requests are denied).
                // Only work is saved: a write that fails or loses a race
                // leaves it to the next read, and the denial stands. Not
                // while any unit of the wallet is in flight (whether or not
                // this read used its records): it would wait for them
                // under the wallet's lock, and change the ledger behind
                // their records.
                let prune = ledger.prune_ops(wallet)?;
                if !prune.is_empty() && inflight.is_empty() {
                    let _ = self.store.write(prune);
                }
                return Err(denied);
            }
        };
        ledger.charge_ops(&self.store, inflight, wallet, &approval)
    }

    /// The marker of `shares`, for their attempt `lead` of request
    /// `package`.
    fn marking(
        &self,
        now: Timestamp,
        release: &Release<'_>,
        lead: CommitmentHash,
        package: PackageHash,
        shares: Vec<Vec<u8>>,
    ) -> Result<Marking, Error> {
        let expires = now
            .saturating_add(self.limits.nonce_ttl)
            .saturating_add(self.limits.replay_window);
        let marker = WriteOp::InsertMarker {
            wallet: release.charge.wallet.clone(),
            commitment: lead,
            marker: Marker {
                package_hash: package,
                shares: encode_shares(&shares)?,
                expires_at: expires,
            },
        };
        Ok(Marking {
            lead,
            package,
            shares,
            marker,
        })
    }

    /// Hands the marker unit to the store, under the wallet's lock: the
    /// marker (insert-if-absent) with the transaction's rate charge
    /// (`charge`, approved against the ledger as last read), the
    /// rollout's guard and the audit entry. Its ledger writes join the
    /// units in flight, which the wallet's next reads see first. After
    /// `tried` units of this attempt, [`Error::LedgerContended`].
    fn submit(
        &self,
        now: Timestamp,
        release: &Release<'_>,
        marking: Marking,
        charge: Vec<WriteOp>,
        tried: usize,
        inflight: &mut InFlight,
    ) -> Result<Submitted<'_>, Error> {
        let wallet = release.charge.wallet;
        if tried >= LEDGER_RETRIES {
            return Err(Error::LedgerContended {
                wallet: wallet.clone(),
            });
        }
        let mut ops: Vec<WriteOp> = vec![release.guard.clone()];
        ops.extend(charge.iter().cloned());
        ops.push(marking.marker.clone());
        ops.push(audit_op(now, &release.audit));
        let pending = self
            .store
            .submit(ops)
            .map_err(|source| store_error(wallet, source))?;
        let generation = inflight.submitted(&charge);
        Ok(Submitted {
            pending,
            attempt: Attempt {
                marking,
                units: tried.saturating_add(1),
                changes: InFlight::changes(&charge),
                generation,
            },
        })
    }

    /// Settles a marker unit's outcome, under the wallet's lock again: the
    /// shares to release (the new ones if inserted, the stored ones for an
    /// identical earlier, perhaps ambiguous, commit), or the next unit. A
    /// ledger changed by another commit skips the whole unit; the policy
    /// is then checked again against the new ledger, and the wallet's
    /// state (`recheck`) against the first attempt's, and a new unit
    /// submitted, never charged twice. On failure the pending shares stay
    /// for a byte-identical retry.
    #[allow(
        clippy::too_many_arguments,
        reason = "the wallet's state, pending shares and units in flight are borrowed from the wallet's locked shard"
    )]
    fn settle<'s>(
        &'s self,
        now: Timestamp,
        release: &Release<'_>,
        attempt: Attempt,
        outcome: Result<WriteOutcome, thresig_store::Error>,
        recheck: Recheck<'_>,
        pending: &mut PendingShares,
        inflight: &mut InFlight,
    ) -> Result<Step<'s>, Error> {
        let committed = matches!(outcome, Ok(WriteOutcome::Committed(_)));
        inflight.answered(attempt.generation, attempt.changes && !committed);
        let wallet = release.charge.wallet;
        let Attempt { marking, units, .. } = attempt;
        let lead = marking.lead;
        pending.settled(&lead);
        match outcome.map_err(|source| store_error(wallet, source))? {
            WriteOutcome::Committed(results) => {
                pending.remove(&lead);
                if let Some(OpResult::Appended(seq)) = results.last() {
                    self.checkpoint_due(now, *seq);
                }
                Ok(Step::Done(marking.shares, true))
            }
            WriteOutcome::Skipped {
                conflict: Conflict::MarkerPresent(stored),
                ..
            } => {
                pending.remove(&lead);
                replay(wallet, lead, marking.package, &stored)
                    .map(|shares| Step::Done(shares, true))
            }
            WriteOutcome::Skipped {
                conflict: Conflict::PolicyMismatch(_),
                ..
            } => {
                // The first attempt's checks of the wallet's state, made
                // again: a rekey, retirement or refresh switch may have
                // committed since, and the new unit commits after it. A
                // refusal leaves the shares pending, as a failed commit.
                let mode = recheck.mode(wallet)?;
                let charge = Charge {
                    mode,
                    ..release.charge
                };
                let charge = self.charge_ops(now, &charge, inflight)?;
                let unit = self.submit(now, release, marking, charge, units, inflight)?;
                Ok(Step::in_flight(unit, pending))
            }
            // A rollout step changed the wallet's policy since the
            // request was checked: the shares stay pending, and the
            // byte-identical retry is checked under the new one.
            WriteOutcome::Skipped {
                conflict: Conflict::MetaMismatch(_),
                ..
            } => Err(Error::Rollout(RolloutError::Moved {
                wallet: wallet.clone(),
            })),
            _ => {
                pending.remove(&lead);
                Err(Error::Internal(InternalFault::UnexpectedWrite))
            }
        }
    }
}

/// The audit entry of releasing shares for `checked`: public data and
/// hashes only.
fn release_event(
    wallet: &WalletId,
    key: &SigningKey,
    coordinator: CoordinatorId,
    policy: &Policy,
    checked: &CheckedRound2,
) -> AuditEvent {
    let (txid, verdict) = match checked.spend() {
        Spend::Transaction(psbt) => (Some(psbt.txid().to_string()), "approved"),
        Spend::RawDigests => (None, "raw_digests_allowed"),
    };
    AuditEvent::ShareReleased {
        wallet: wallet.clone(),
        epoch: key.epoch.0,
        coordinator: hex::encode(coordinator.0),
        commitment: hex::encode(checked.lead().0),
        package: hex::encode(checked.hash().0),
        txid,
        messages: checked
            .packages()
            .iter()
            .map(|p| message_digest(p.message()))
            .collect(),
        policy_version: policy.version().0,
        verdict: verdict.to_owned(),
    }
}

/// The policy's view of a wallet in `role`.
///
/// # Errors
/// For a rekeying wallet: [`Error::RekeyInProgress`] without a successor,
/// [`Error::SuccessorNotActive`] while the successor is not active.
fn wallet_mode(wallet: &WalletId, role: Role, successor: Successor) -> Result<WalletMode, Error> {
    match (role, successor) {
        (Role::Active, _) => Ok(WalletMode::Active),
        (Role::Rekeying, Successor::Active(successor)) => Ok(WalletMode::Rekeying { successor }),
        (Role::Rekeying, Successor::NotActive(successor)) => Err(Error::SuccessorNotActive {
            wallet: wallet.clone(),
            successor,
        }),
        (Role::Rekeying, Successor::Unnamed) => Err(Error::RekeyInProgress {
            wallet: wallet.clone(),
        }),
    }
}

impl Recheck<'_> {
    /// The wallet's mode for a new unit of an attempt whose first was
    /// approved under the key of `epoch`: the error its first attempt
    /// would get now if the wallet's state changed.
    fn mode(self, wallet: &WalletId) -> Result<WalletMode, Error> {
        let (key, role) = self.state.signing_key(wallet)?;
        if key.epoch != self.epoch {
            return Err(Error::StaleEpoch {
                wallet: wallet.clone(),
                requested: self.epoch,
                current: key.epoch,
            });
        }
        let successor = self.successor.unwrap_or(Ok(Successor::Unnamed))?;
        wallet_mode(wallet, role, successor)
    }
}

/// The shares of a durable marker if it answers `package`, else a conflict.
fn replay(
    wallet: &WalletId,
    lead: CommitmentHash,
    package: PackageHash,
    marker: &Marker,
) -> Result<Vec<Vec<u8>>, Error> {
    if marker.package_hash == package {
        decode_shares(marker).ok_or_else(|| Error::StoredRecordInvalid {
            wallet: wallet.clone(),
        })
    } else {
        Err(Error::SessionConflict {
            wallet: wallet.clone(),
            commitment: lead,
        })
    }
}

/// Computes one share per input, consuming the nonces (each is destroyed as
/// soon as its share exists).
fn sign_all(
    checked: &CheckedRound2,
    nonces: Vec<SecretNonce>,
    key: &SigningKey,
) -> Result<Vec<Vec<u8>>, Error> {
    checked
        .packages()
        .iter()
        .zip(nonces)
        .map(|(package, nonce)| {
            thresig_crypto::sign(nonce, package, &key.share, key.key())
                .map(|share| share.to_bytes())
                .map_err(|_| Error::Internal(InternalFault::CryptoRefused))
        })
        .collect()
}
