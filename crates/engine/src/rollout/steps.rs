//! The signer's side of a staged rollout: which policy each wallet
//! applies, the counting of round 2's outcomes, the operator's steps
//! (stage, promote, roll back) and the rollback a failed gate makes by
//! itself, on the next round 2 or the upkeep tick.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, MutexGuard, PoisonError, RwLockWriteGuard, TryLockError};

use sha2::{Digest as _, Sha256};

use serde::{Deserialize, Serialize};
use thresig_store::{Conflict, Store, Timestamp, WalletId, WriteOp, WriteOutcome};
use thresig_tx::PolicyConfig;

use super::gate::{Counts, Gates, Group, Outcome, Verdict};
use super::{
    Applied, Cache, FORMAT, Loaded, Phase, Record, RecordRef, RolloutError, Versions,
    WalletRollout, policy_hash, record_name, step_name, step_value,
};
use crate::audit::{AuditEvent, append_op};
use crate::config::ConfigError;
use crate::error::Error;
use crate::ids::CoordinatorId;
use crate::signer::{Signer, Slot};

/// A step of this member's operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum RolloutCommand {
    /// Stage `version`: every wallet whose policy in `policies` (the
    /// configuration file's) has that version and differs from what the
    /// wallet applies joins the rollout, and its canaries move to it.
    Stage {
        /// The version to roll out.
        version: u32,
        /// Each wallet's `[wallets.policy]` as the file now says.
        policies: BTreeMap<WalletId, PolicyConfig>,
        /// The gates that judge each step.
        #[serde(default)]
        gates: Gates,
        /// The step the operator saw (`None`: whatever is stored).
        #[serde(default)]
        expect_seq: Option<u64>,
    },
    /// Move to the next step once the gate passes.
    Promote {
        /// The step the operator saw.
        #[serde(default)]
        expect_seq: Option<u64>,
        /// Move on while the gate is still pending or held (never while it
        /// fails); the step's audit entry says so.
        #[serde(default)]
        force: bool,
    },
    /// Put every wallet of the rollout back on its previous version.
    Rollback {
        /// The step the operator saw.
        #[serde(default)]
        expect_seq: Option<u64>,
    },
}

impl RolloutCommand {
    fn expect_seq(&self) -> Option<u64> {
        match self {
            Self::Stage { expect_seq, .. }
            | Self::Promote { expect_seq, .. }
            | Self::Rollback { expect_seq } => *expect_seq,
        }
    }
}

/// The rollout as `thresig status` and the policy commands show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RolloutStatus {
    /// The record's sequence (0: no rollout ever).
    pub seq: u64,
    /// The version of the last rollout.
    pub version: Option<u32>,
    /// Its step.
    pub phase: Option<Phase>,
    /// When that step was taken (ms since the Unix epoch).
    pub since_ms: Option<u64>,
    /// Why it was rolled back.
    pub reason: Option<String>,
    /// The gate's verdict on this step so far (while one is watched).
    pub verdict: Option<Verdict>,
    /// Round 2 on the new version since the step.
    pub canary: Counts,
    /// Round 2 on the previous version since the step.
    pub baseline: Counts,
    /// Every wallet's applied policy version.
    pub wallets: Vec<RolloutWallet>,
}

/// One wallet's applied policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RolloutWallet {
    /// The wallet.
    pub wallet: WalletId,
    /// The version it applies.
    pub policy_version: u32,
    /// Its side of the rollout being watched, if it is in one.
    pub group: Option<Group>,
}

/// Proof that the caller holds the steps lock.
type Steps<'a> = MutexGuard<'a, ()>;

/// The most distinct requests one step's window counts from each
/// coordinator: the gate has judged long before, the digests kept stay
/// bounded by this times the wallets' members, and one coordinator filling
/// its share leaves the others counted.
pub const MAX_COUNTED: usize = 1 << 13;

/// The policy version a wallet applies, from its entry in the loaded
/// record (`applied`), or its configuration's (`slot`) where no rollout
/// named it.
fn applied_version(applied: Option<&Applied>, slot: &Slot) -> thresig_tx::PolicyVersion {
    applied.map_or_else(|| slot.policy.version(), |a| a.policy.version())
}

/// Why a rollout was rolled back.
enum Reason<'a> {
    Operator,
    Gate(&'a super::gate::Failure),
}

impl<S: Store> Signer<S> {
    /// The policy `slot`'s wallet applies now: the rollout record's, or
    /// the configuration's for a wallet no rollout named.
    ///
    /// # Errors
    /// [`RolloutError::Corrupt`] for a damaged record (every wallet
    /// refuses), [`RolloutError::Store`] when it cannot be read.
    pub(crate) fn applied_policy(&self, slot: &Slot) -> Result<Applied, RolloutError> {
        self.with_wallet(slot, |loaded| {
            loaded
                .applied
                .get(&slot.config.id)
                .cloned()
                .unwrap_or_else(|| Applied {
                    policy: slot.policy.clone(),
                    group: None,
                    previous: None,
                    guard: loaded.guard.clone(),
                })
        })
    }

    /// `read` of the loaded record for `slot`'s wallet, if that wallet
    /// applies a policy at all.
    ///
    /// # Errors
    /// As [`Signer::applied_policy`], and [`RolloutError::FileChanged`] for
    /// a wallet the open's settle held back.
    fn with_wallet<T>(
        &self,
        slot: &Slot,
        read: impl FnOnce(&Loaded) -> T,
    ) -> Result<T, RolloutError> {
        self.check_held(&slot.config.id)?;
        self.with_loaded(|loaded| {
            if loaded.damaged.contains(&slot.config.id) {
                return Err(RolloutError::Corrupt);
            }
            Ok(read(loaded))
        })?
    }

    /// Refuses a wallet the open's settle held back.
    fn check_held(&self, wallet: &WalletId) -> Result<(), RolloutError> {
        let cache = self.rollout.read().unwrap_or_else(PoisonError::into_inner);
        match cache.held.get(wallet) {
            Some(&(applied, file)) => Err(RolloutError::FileChanged {
                wallet: wallet.clone(),
                applied,
                file,
            }),
            None => Ok(()),
        }
    }

    /// The version `slot`'s wallet applies, and the rollout naming it.
    ///
    /// # Errors
    /// As [`Signer::applied_policy`].
    pub(crate) fn policy_of(
        &self,
        slot: &Slot,
    ) -> Result<(u32, Option<WalletRollout>), RolloutError> {
        self.with_wallet(slot, |loaded| {
            let id = &slot.config.id;
            let applied = loaded.applied.get(id);
            let version = applied_version(applied, slot);
            let rollout = loaded
                .record
                .as_ref()
                .filter(|r| r.wallets.contains_key(id))
                .map(|r| {
                    let on_new = applied.is_some_and(|a| a.policy.version().0 == r.version);
                    WalletRollout::new(r.version, r.phase, on_new)
                });
            (version.0, rollout)
        })
    }

    /// Counts one round 2 of `wallet` under `applied` (`outcome`: `None`
    /// for one the gate does not count), once per `target` digest (see
    /// [`target_digest`]), and rolls the rollout back when the gate now
    /// fails. An outcome under a policy a step has since replaced belongs
    /// to no window and is dropped.
    pub(crate) fn observe(
        &self,
        now: Timestamp,
        wallet: &WalletId,
        applied: &Applied,
        outcome: Option<Outcome>,
        target: [u8; 32],
        coordinator: CoordinatorId,
    ) -> Result<(), RolloutError> {
        let (Some(group), Some(outcome)) = (applied.group, outcome) else {
            return Ok(());
        };
        let verdict = {
            // Held only to count: never across a store call.
            let mut cache = self.rollout.write().unwrap_or_else(PoisonError::into_inner);
            let Some(loaded) = cache.loaded.as_mut() else {
                return Ok(());
            };
            let current = loaded.applied.get(wallet);
            if !current.is_some_and(|c| Arc::ptr_eq(&c.policy, &applied.policy)) {
                return Ok(());
            }
            let counted = loaded.counted.entry(coordinator).or_default();
            if counted.len() >= MAX_COUNTED || !counted.insert(target) {
                return Ok(());
            }
            loaded
                .counters
                .entry((group, coordinator))
                .or_default()
                .record(outcome);
            loaded.verdict()
        };
        if !matches!(verdict, Some(Verdict::Fail(_))) {
            return Ok(());
        }
        // A step already under way (an operator's, another round 2's
        // rollback) judges the gate itself, and the tick tries again: this
        // round 2 does not wait for it.
        let steps = match self.rollout_steps.try_lock() {
            Ok(steps) => steps,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return Ok(()),
        };
        self.roll_back_if_failed(now, &steps)
    }

    /// The rollout record an open entry names: the one loaded, or, when it
    /// is refused, the one the log named before, so that the open finding
    /// a refused record never makes it the expected one.
    ///
    /// # Errors
    /// The store's.
    pub(crate) fn rollout_found(&self) -> Result<Option<RecordRef>, thresig_store::Error> {
        match self.with_loaded(|loaded| RecordRef::of(loaded.raw.as_deref())) {
            Ok(found) => Ok(Some(found)),
            Err(RolloutError::Store(e)) => Err(e),
            Err(_) => super::binding::last_bound(&self.store),
        }
    }

    /// The rollout record the audit log must name next (as
    /// [`Signer::rollout_found`]; `None`: a damaged one no entry named), with the steps lock that keeps it so
    /// until the caller's unit commits.
    ///
    /// # Errors
    /// The store's.
    pub(crate) fn rollout_held(
        &self,
    ) -> Result<(Steps<'_>, Option<RecordRef>), thresig_store::Error> {
        let steps = self.rollout_steps();
        let found = match self.refresh(&steps) {
            Ok(()) => {
                let cache = self.rollout.read().unwrap_or_else(PoisonError::into_inner);
                cache
                    .loaded
                    .as_ref()
                    .map(|l| RecordRef::of(l.raw.as_deref()))
            }
            Err(RolloutError::Store(e)) => return Err(e),
            Err(_) => None,
        };
        let found = match found {
            Some(found) => Some(found),
            // A refused record: the one the log named before stays bound.
            None => super::binding::last_bound(&self.store)?,
        };
        Ok((steps, found))
    }

    /// Stores the policy of every wallet this signer serves that has none
    /// stored yet: its configuration file's, as it is at this open. From
    /// then on an edited file changes no applied policy until staged, also
    /// for a member staging while stopped (docs/policy.md, "Staged
    /// rollout"). Nothing is written when every wallet has one.
    ///
    /// # Errors
    /// As [`Signer::policy_rollout`].
    pub(crate) fn settle_policies(&self, now: Timestamp) -> Result<(), RolloutError> {
        let steps = self.rollout_steps();
        self.refresh(&steps)?;
        let current = self.with_loaded(|loaded| loaded.record.clone())?;
        let mut record = current.unwrap_or_else(|| Record {
            format: FORMAT,
            seq: 0,
            version: super::NO_ROLLOUT,
            phase: Phase::Full,
            since_ms: now.0,
            gates: Gates::default(),
            wallets: BTreeMap::new(),
            settled: BTreeMap::new(),
            reason: None,
            known: BTreeMap::new(),
        });
        let new: BTreeSet<WalletId> = self
            .wallets
            .keys()
            .filter(|id| !record.wallets.contains_key(*id) && !record.settled.contains_key(*id))
            .cloned()
            .collect();
        // A store a signer before staged rollouts used: its opens say what
        // each wallet applied. An edited file must not apply at once.
        let before = super::binding::last_opened(&self.store, &new).map_err(RolloutError::Store)?;
        let mut held = BTreeMap::new();
        let mut wallets = Vec::new();
        for (id, slot) in self.wallets.iter().filter(|(id, _)| new.contains(*id)) {
            let policy = &slot.config.policy;
            match before.get(id) {
                Some(&applied) if applied != policy.version => {
                    held.insert(id.clone(), (applied, policy.version));
                }
                _ => {
                    record.settled.insert(id.clone(), policy.clone());
                    wallets.push(id.clone());
                }
            }
        }
        self.rollout_cache().held = held;
        if wallets.is_empty() {
            return Ok(());
        }
        record.seq += 1;
        let event = AuditEvent::PolicySettled {
            seq: record.seq,
            record: record.hash()?,
            wallets,
        };
        self.commit_rollout(&steps, &record, &event, now)
    }

    /// The upkeep tick: rolls back a rollout whose gate fails. Each round
    /// 2 already judges the counters; the tick makes the rollback that a
    /// round 2 could not commit (a store failure keeps the counters, so
    /// the gate still fails here). Harmless at any time.
    ///
    /// # Errors
    /// As [`Signer::policy_rollout`] for the rollback.
    pub fn rollout_tick(&self, now: Timestamp) -> Result<(), RolloutError> {
        let steps = self.rollout_steps();
        self.roll_back_if_failed(now, &steps)
    }

    /// Runs one rollout step of this member's operator at `now`: a
    /// compare-and-set of the rollout record from the bytes stored, with
    /// its audit entry (`policy_staged`, `policy_promoted`,
    /// `policy_rolled_back`) in the same unit.
    ///
    /// # Errors
    /// [`RolloutError::Stale`] when `expect_seq` is not the stored step or
    /// another step committed first; [`RolloutError::GateFailed`] for a
    /// promote whose gate fails (the rollout is then rolled back);
    /// [`RolloutError::InProgress`], [`RolloutError::NotInProgress`],
    /// [`RolloutError::NothingToStage`], [`RolloutError::VersionNotBumped`],
    /// [`RolloutError::UnknownWallet`], [`RolloutError::InvalidPolicy`] for
    /// a step that does not apply; [`RolloutError::Corrupt`] and
    /// [`RolloutError::Store`].
    pub fn policy_rollout(
        &self,
        now: Timestamp,
        command: &RolloutCommand,
    ) -> Result<RolloutStatus, RolloutError> {
        let steps = self.rollout_steps();
        // The stored bytes decide, not the cache: a step is computed from
        // exactly what its compare-and-set expects (read again here, the
        // counters kept if they did not change).
        self.rollout_cache().recheck = true;
        self.refresh(&steps)?;
        let (current, verdict) =
            self.with_loaded(|loaded| (loaded.record.clone(), loaded.verdict()))?;
        let seq = current.as_ref().map_or(0, |r| r.seq);
        if let Some(expected) = command.expect_seq()
            && expected != seq
        {
            return Err(RolloutError::Stale {
                expected,
                found: seq,
            });
        }
        let state = current.as_ref().and_then(Record::rollout).map_or_else(
            || "none was ever staged".to_owned(),
            |r| format!("version {} is at {}", r.version, r.phase),
        );
        let not_in_progress = |step| RolloutError::NotInProgress { step, state };
        let (record, event) = match command {
            RolloutCommand::Stage {
                version,
                policies,
                gates,
                ..
            } => {
                let record = self.staged(now, current.as_ref(), *version, policies, *gates)?;
                let event = AuditEvent::PolicyStaged {
                    seq: record.seq,
                    record: record.hash()?,
                    policies: record
                        .wallets
                        .iter()
                        .map(|(w, v)| (w.clone(), policy_hash(&v.next)))
                        .collect(),
                    version: record.version,
                    stage: record.phase.as_str().to_owned(),
                    wallets: record.canaries().into_iter().collect(),
                    rollout_wallets: record.wallets.len() as u64,
                };
                (record, event)
            }
            RolloutCommand::Promote { force, .. } => {
                let Some(mut record) = current.filter(|r| r.phase.in_progress()) else {
                    return Err(not_in_progress("promote"));
                };
                match verdict {
                    Some(Verdict::Fail(failure)) => {
                        let phase = record.phase;
                        self.roll_back(now, &steps, Reason::Gate(&failure))?;
                        return Err(RolloutError::GateFailed {
                            version: record.version,
                            phase,
                            failure,
                        });
                    }
                    // A step with no verdict yet has shown nothing: the
                    // operator forces it knowingly, and the log says so.
                    Some(verdict @ (Verdict::Pending { .. } | Verdict::Held(_))) if !force => {
                        return Err(RolloutError::GatePending {
                            version: record.version,
                            phase: record.phase,
                            verdict,
                        });
                    }
                    _ => {}
                }
                record.phase = record.phase.next().unwrap_or(Phase::Full);
                record.seq = seq + 1;
                record.since_ms = now.0;
                let event = AuditEvent::PolicyPromoted {
                    seq: record.seq,
                    record: record.hash()?,
                    forced: *force && verdict != Some(Verdict::Pass),
                    version: record.version,
                    stage: record.phase.as_str().to_owned(),
                    wallets: record.canaries().into_iter().collect(),
                };
                (record, event)
            }
            RolloutCommand::Rollback { .. } => {
                if !current
                    .as_ref()
                    .and_then(Record::rollout)
                    .is_some_and(|r| r.phase != Phase::RolledBack)
                {
                    return Err(not_in_progress("roll back"));
                }
                self.roll_back(now, &steps, Reason::Operator)?;
                return self.rollout_status();
            }
        };
        self.commit_rollout(&steps, &record, &event, now)?;
        self.rollout_status()
    }

    /// The rollout and every wallet's applied policy version.
    ///
    /// # Errors
    /// [`RolloutError::Corrupt`], [`RolloutError::Store`].
    pub fn rollout_status(&self) -> Result<RolloutStatus, RolloutError> {
        let held = self.rollout_cache().held.clone();
        self.with_loaded(|loaded| self.status_of(loaded, &held))
    }

    fn status_of(&self, loaded: &Loaded, held: &BTreeMap<WalletId, (u32, u32)>) -> RolloutStatus {
        let record = loaded.record.as_ref();
        let rollout = record.and_then(Record::rollout);
        let sum = |group| {
            loaded
                .counters
                .iter()
                .filter(|((g, _), _)| *g == group)
                .fold(Counts::default(), |sum, (_, c)| sum.plus(c))
        };
        // A wallet whose stored policy is damaged, or that the settle held
        // back, applies none: not listed.
        let wallets = self
            .wallets
            .iter()
            .filter(|(id, _)| !loaded.damaged.contains(*id) && !held.contains_key(*id))
            .map(|(id, slot)| {
                let applied = loaded.applied.get(id);
                RolloutWallet {
                    wallet: id.clone(),
                    policy_version: applied_version(applied, slot).0,
                    group: applied.and_then(|a| a.group),
                }
            })
            .collect();
        RolloutStatus {
            seq: record.map_or(0, |r| r.seq),
            version: rollout.map(|r| r.version),
            phase: rollout.map(|r| r.phase),
            since_ms: rollout.map(|r| r.since_ms),
            reason: rollout.and_then(|r| r.reason.clone()),
            verdict: loaded.verdict(),
            canary: sum(Group::Canary),
            baseline: sum(Group::Baseline),
            wallets,
        }
    }

    /// The new rollout record of staging `version`.
    fn staged(
        &self,
        now: Timestamp,
        current: Option<&Record>,
        version: u32,
        policies: &BTreeMap<WalletId, PolicyConfig>,
        gates: Gates,
    ) -> Result<Record, RolloutError> {
        if let Some(r) = current.filter(|r| r.phase.in_progress()) {
            return Err(RolloutError::InProgress {
                version: r.version,
                phase: r.phase,
            });
        }
        // What every wallet a rollout named applies now, and every version
        // each wallet ever had.
        let mut settled = current.map(|r| r.settled.clone()).unwrap_or_default();
        let mut known = current.map(|r| r.known.clone()).unwrap_or_default();
        let mut learn = |wallet: &WalletId, config: &PolicyConfig| {
            known
                .entry(wallet.clone())
                .or_default()
                .entry(config.version)
                .or_insert_with(|| policy_hash(config))
                .clone()
        };
        for (wallet, versions) in current.map(|r| &r.wallets).into_iter().flatten() {
            learn(wallet, &versions.previous);
            learn(wallet, &versions.next);
            let applied = match current.map(|r| r.phase) {
                Some(Phase::Full) => &versions.next,
                _ => &versions.previous,
            };
            settled.insert(wallet.clone(), applied.clone());
        }
        for (wallet, config) in &settled {
            learn(wallet, config);
        }
        let mut wallets = BTreeMap::new();
        for (wallet, next) in policies.iter().filter(|(_, p)| p.version == version) {
            let slot = self
                .wallets
                .get(wallet)
                .ok_or_else(|| RolloutError::UnknownWallet {
                    wallet: wallet.clone(),
                })?;
            let previous = settled
                .get(wallet)
                .cloned()
                .unwrap_or_else(|| slot.config.policy.clone());
            if previous == *next {
                continue;
            }
            if previous.version == next.version {
                return Err(RolloutError::VersionNotBumped {
                    wallet: wallet.clone(),
                    version,
                });
            }
            if learn(wallet, next) != policy_hash(next) {
                return Err(RolloutError::VersionReused {
                    wallet: wallet.clone(),
                    version,
                });
            }
            next.validate(self.network, slot.config.threshold)
                .map_err(|source| {
                    RolloutError::InvalidPolicy(Box::new(ConfigError::Policy {
                        wallet: wallet.clone(),
                        source: Box::new(source),
                    }))
                })?;
            settled.remove(wallet);
            wallets.insert(
                wallet.clone(),
                Versions {
                    previous,
                    next: next.clone(),
                },
            );
        }
        if wallets.is_empty() {
            return Err(RolloutError::NothingToStage { version });
        }
        Ok(Record {
            format: FORMAT,
            seq: current.map_or(0, |r| r.seq) + 1,
            version,
            phase: Phase::Canary,
            since_ms: now.0,
            gates,
            wallets,
            settled,
            reason: None,
            known,
        })
    }

    fn roll_back_if_failed(&self, now: Timestamp, steps: &Steps<'_>) -> Result<(), RolloutError> {
        self.refresh(steps)?;
        if let Some(Verdict::Fail(failure)) = self.with_loaded(Loaded::verdict)? {
            self.roll_back(now, steps, Reason::Gate(&failure))?;
        }
        Ok(())
    }

    /// Rolls the loaded record back (every wallet of it to its previous
    /// version).
    fn roll_back(
        &self,
        now: Timestamp,
        steps: &Steps<'_>,
        reason: Reason<'_>,
    ) -> Result<(), RolloutError> {
        let Some(mut record) = self.with_loaded(|loaded| loaded.record.clone())? else {
            return Ok(());
        };
        record.reason = Some(match reason {
            Reason::Operator => "the operator rolled it back".to_owned(),
            Reason::Gate(failure) => format!("health gate at {}: {failure}", record.phase),
        });
        record.phase = Phase::RolledBack;
        record.seq += 1;
        record.since_ms = now.0;
        let event = AuditEvent::PolicyRolledBack {
            seq: record.seq,
            record: record.hash()?,
            version: record.version,
            reason: record.reason.clone().unwrap_or_default(),
            wallets: record.wallets.keys().cloned().collect(),
        };
        self.commit_rollout(steps, &record, &event, now)
    }

    /// Commits `record` with its audit entry, as a compare-and-set from the
    /// bytes the cache was built from; the cache then holds it, its
    /// counters reset (a new step opens a new window). Only the steps
    /// lock is held across the commit: round 2 of every wallet goes on
    /// reading the cache meanwhile.
    fn commit_rollout(
        &self,
        _steps: &Steps<'_>,
        record: &Record,
        event: &AuditEvent,
        now: Timestamp,
    ) -> Result<(), RolloutError> {
        let expected = self.with_loaded(|loaded| loaded.raw.clone())?;
        let new = record.encode()?;
        let unit = vec![
            WriteOp::CasMeta {
                name: record_name()?,
                expected,
                new: new.clone().into(),
            },
            WriteOp::PutMeta {
                name: step_name()?,
                value: step_value(Some(&new)).unwrap_or_default().into(),
            },
            append_op(now, event),
        ];
        match self.store.write(unit) {
            Ok(WriteOutcome::Committed(_)) => {
                let built = self.build(Some(new));
                self.rollout_cache().loaded = built.ok();
                Ok(())
            }
            Ok(WriteOutcome::Skipped {
                conflict: Conflict::MetaMismatch(found),
                ..
            }) => {
                self.rollout_cache().loaded = None;
                let found = found
                    .as_deref()
                    .map(Record::decode)
                    .transpose()?
                    .map_or(0, |r| r.seq);
                Err(RolloutError::Stale {
                    expected: record.seq.saturating_sub(1),
                    found,
                })
            }
            // No other conditional write is in the unit.
            Ok(_) => Err(RolloutError::Corrupt),
            Err(source) => {
                // The unit may have committed: read the record again
                // before the cache is used.
                self.rollout_cache().recheck = true;
                Err(RolloutError::Store(source))
            }
        }
    }

    /// The cache, for a change made in memory only (never held across a
    /// store call). The cache is rebuilt from the store on demand, so a
    /// panic while it was held leaves nothing to distrust but the counters.
    fn rollout_cache(&self) -> RwLockWriteGuard<'_, Cache> {
        self.rollout.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The lock every step and every load of the record holds, across its
    /// store calls; a round 2 takes it only to load the record the first
    /// time (or again after a step's commit failed).
    fn rollout_steps(&self) -> Steps<'_> {
        self.rollout_steps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// `read` of the loaded cache: under a shared lock held only for the
    /// read, so wallets never wait on each other, nor on a step's commit;
    /// loading it first if needed.
    fn with_loaded<T>(&self, read: impl FnOnce(&Loaded) -> T) -> Result<T, RolloutError> {
        {
            let cache = self.rollout.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(loaded) = cache.loaded.as_ref().filter(|_| !cache.recheck) {
                return Ok(read(loaded));
            }
        }
        let steps = self.rollout_steps();
        self.refresh(&steps)?;
        let cache = self.rollout.read().unwrap_or_else(PoisonError::into_inner);
        cache.loaded.as_ref().map(read).ok_or(RolloutError::Corrupt)
    }

    /// Loads the stored record into the cache if it never was, or must be
    /// read again (the counters kept if it did not change). The store is
    /// read with only the steps lock held.
    fn refresh(&self, _steps: &Steps<'_>) -> Result<(), RolloutError> {
        let current = {
            let cache = self.rollout.read().unwrap_or_else(PoisonError::into_inner);
            match &cache.loaded {
                Some(_) if !cache.recheck => return Ok(()),
                Some(loaded) => Some(loaded.raw.clone()),
                None => None,
            }
        };
        let raw = self.read_raw()?;
        if current.as_ref() != Some(&raw) {
            let built = self.build(raw)?;
            super::binding::check_bound(&self.store, built.raw.as_deref())?;
            self.rollout_cache().loaded = Some(built);
        }
        self.rollout_cache().recheck = false;
        Ok(())
    }

    fn read_raw(&self) -> Result<Option<Vec<u8>>, RolloutError> {
        Ok(self
            .store
            .meta(&record_name()?)
            .map_err(RolloutError::Store)?
            .map(|p| p.to_vec()))
    }

    /// The cache of the stored bytes `raw`: each wallet's applied policy,
    /// validated again (a record holding a policy that no longer validates
    /// is damaged, not ignored).
    fn build(&self, raw: Option<Vec<u8>>) -> Result<Loaded, RolloutError> {
        let record = raw.as_deref().map(Record::decode).transpose()?;
        let guard = WriteOp::ExpectMeta {
            name: step_name()?,
            expected: step_value(raw.as_deref()),
        };
        let mut applied = BTreeMap::new();
        let mut damaged = BTreeSet::new();
        if let Some(record) = &record {
            let canaries = record.canaries();
            for (id, slot) in &self.wallets {
                if let Some(a) = record.applied(id, &canaries) {
                    let validate = |config: &PolicyConfig| {
                        config
                            .validate(self.network, slot.config.threshold)
                            .map(Arc::new)
                            .map_err(|_| RolloutError::Corrupt)
                    };
                    match (validate(a.config), a.previous.map(validate).transpose()) {
                        (Ok(policy), Ok(previous)) => {
                            applied.insert(
                                id.clone(),
                                Applied {
                                    policy,
                                    group: a.group,
                                    previous,
                                    guard: guard.clone(),
                                },
                            );
                        }
                        // This wallet's policy is damaged, not the record:
                        // only it refuses.
                        _ => {
                            damaged.insert(id.clone());
                        }
                    }
                }
            }
        }
        let quorum = super::gate::quorum(record.iter().flat_map(|r| {
            r.wallets
                .keys()
                .filter_map(|id| self.wallets.get(id).map(|s| s.config.threshold))
        }));
        Ok(Loaded {
            raw,
            record,
            applied,
            counters: BTreeMap::new(),
            counted: BTreeMap::new(),
            guard,
            damaged,
            quorum,
        })
    }
}

/// How a round 2 counts for the gate: a fresh release, or a policy denial
/// the wallet's previous version would not have made (`previous_allows`,
/// asked only then); nothing else (a replay, a request refused before or
/// after the policy) says anything about the version.
pub(crate) fn outcome_of<T>(
    result: &Result<(T, bool), Error>,
    previous_allows: impl FnOnce() -> bool,
) -> Option<Outcome> {
    match result {
        Ok((_, true)) => Some(Outcome::Released),
        Err(Error::PolicyDenied { .. }) if previous_allows() => Some(Outcome::Denied),
        Ok((_, false)) | Err(_) => None,
    }
}

/// What makes two round 2s the same request for the gate: the
/// coordinator, the wallet and what is signed.
pub(crate) fn target_digest(
    coordinator: CoordinatorId,
    wallet: &WalletId,
    target: &crate::SigningTarget,
) -> [u8; 32] {
    let mut hash = Sha256::new()
        .chain_update(b"thresig/rollout-count/v1\0")
        .chain_update(coordinator.0)
        .chain_update(wallet.as_str().as_bytes())
        .chain_update(b"\0");
    // A target that does not encode is counted under the empty one.
    hash.update(serde_json::to_vec(target).unwrap_or_default());
    hash.finalize().into()
}
