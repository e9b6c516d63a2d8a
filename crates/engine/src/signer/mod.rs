//! The signer: one member's wallets, nonces, pending shares and markers.
//!
//! This file holds the [`Signer`] type and its open, the one entry point
//! [`Signer::handle`] with the membership proof [`Member`] it builds, the
//! status getters and the upkeep. Each concern a request reaches has its
//! own file:
//! - `round1.rs`: round 1's nonces, drawn with the wallet's lock released,
//!   and abort;
//! - `release.rs`: round 2, from its checked request to the marker commit
//!   after which its shares leave;
//! - `pending.rs`: the shares that wait for a durable marker;
//! - `rekey.rs`: the operator's `begin_rekey` and `retire`;
//! - `operator.rs`: the one dispatch of the operator's commands;
//! - `audit.rs`: the audit log's open entry, checkpoints, export and prune.

mod audit;
mod operator;
mod pending;
mod rekey;
mod release;
mod retire;

pub(crate) use retire::mark_due;
mod round1;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};

use rand_core::{CryptoRng, RngCore};
use thresig_crypto::{Seat, SecretNonce};
use thresig_store::{Store, WriteOp};
use thresig_tx::{Network, Policy};

use crate::api::{HexBytes, RefreshStatus, Request, Response, WalletStatus};
use crate::clock::Clock;
use crate::config::{ConfigError, Limits, SignerConfig, WalletConfig};
use crate::dkg::DkgSession;
use crate::dkg_msg::DkgSessionId;
use crate::durable::load_state;
use crate::error::{Error, InternalFault};
use crate::ids::CoordinatorId;
use crate::pool::NoncePool;
use crate::wallet::WalletState;
pub use operator::{OperatorCommand, OperatorOutcome};
use pending::PendingShares;
pub use rekey::Transition;
use thresig_store::{Timestamp, WalletId};

/// The mutable state of one wallet, behind its own lock.
pub(crate) struct Shard {
    /// Meaningful once `loaded`; `Corrupt` before, so that a wallet whose
    /// records were never read can sign nothing.
    pub(crate) state: WalletState,
    /// Whether `state` was read from the store: open reads no wallet's
    /// records (at 100 members a wallet key takes milliseconds to decode,
    /// and a signer may hold thousands); the first [`lock`] does.
    loaded: bool,
    pool: NoncePool<SecretNonce>,
    /// Pending shares by the attempt's first commitment, capped.
    pending: PendingShares,
    /// The ledger records of this wallet's marker units in flight (handed
    /// to the store, not yet answered), read before the store's.
    inflight: crate::ledger::InFlight,
    /// A DKG in progress (memory only: a restart aborts it).
    pub(crate) dkg: Option<DkgSession>,
    /// The session each member last cancelled (at most one per member): a
    /// start of it from that member arrives after the cancel and is
    /// refused.
    pub(crate) dkg_cancelled: BTreeMap<CoordinatorId, DkgSessionId>,
    /// An operator's rekey step whose commit failed, perhaps after becoming
    /// durable: `state` already holds the step's stricter state, and the
    /// step's retry commits again rather than finding it done. It holds the
    /// writes the step committed beside its record (a pending refresh's
    /// veto), which memory no longer shows, so the retry commits them too.
    pub(crate) unacknowledged_step: Option<Vec<WriteOp>>,
    /// The operator's repair approvals and a repair in progress (memory
    /// only).
    pub(crate) repair: crate::repair::RepairSlot,
}

impl Shard {
    /// Replaces the wallet's state with `state`, whose key replaces the one
    /// the pool's nonces were drawn for: they are dropped (DESIGN.md, "Why
    /// does round 1 draw its nonces outside the wallet's lock?").
    pub(crate) fn replace_key(&mut self, state: WalletState) {
        self.state = state;
        self.pool.drop_live();
    }
}

/// Proof that a coordinator is a member of a wallet: built only by
/// [`Signer::handle`]'s membership check, and required by every method a
/// coordinator's request reaches, so none of them can run unchecked (as
/// rustls' verified-handshake values).
///
/// # Invariants
/// `from` is in `slot`'s roster. The fields are private to the `signer`
/// module, so no module outside it can build a `Member` without the check
/// (its sub-modules only take one).
#[derive(Clone, Copy)]
pub(crate) struct Member<'a> {
    slot: &'a Slot,
    from: CoordinatorId,
}

impl<'a> Member<'a> {
    /// The wallet the coordinator is a member of.
    pub(crate) fn slot(&self) -> &'a Slot {
        self.slot
    }

    /// The coordinator.
    pub(crate) fn from(&self) -> CoordinatorId {
        self.from
    }
}

/// One configured wallet.
pub(crate) struct Slot {
    pub(crate) config: WalletConfig,
    /// The wallet's policy, validated from `config.policy` at open: the
    /// one it applies unless a rollout record names the wallet
    /// ([`Signer::applied_policy`]).
    pub(crate) policy: Arc<Policy>,
    pub(crate) seat: Seat,
    shard: Mutex<Shard>,
}

/// One threshold signer: the wallets it serves and its signing state.
///
/// `Signer` is `Sync`: each wallet's state sits behind its own lock, so
/// operations on different wallets never wait on each other; a wallet's
/// lock is held across that wallet's own commits only, and a round 2
/// hands its marker unit to the store under it but waits for the commit
/// without it. It reads no clock of its own and creates no randomness:
/// the time (`now`, or a [`Clock`] that round 2 reads once it holds the
/// wallet's lock) and `rng` are arguments.
///
/// Methods, by kind:
/// - inputs: [`Signer::handle`], the one way a coordinator's [`Request`]
///   enters (it checks the coordinator's membership once, then dispatches);
/// - operator commands: [`Signer::operate`] (which dispatches
///   [`Signer::begin_rekey`], [`Signer::retire`] and
///   [`Signer::approve_repair`]), [`Signer::dkg_abort`],
///   [`Signer::policy_rollout`] (a staged policy rollout's steps);
/// - getters, for the local operator: [`Signer::status`],
///   [`Signer::wallets`], [`Signer::wallet_key`], [`Signer::rollout_status`];
/// - upkeep: [`Signer::prune`] drops expired nonces, forgotten tombstones
///   and pending shares, and expired markers, of every wallet (a round
///   prunes its own wallet's memory as it goes; idle wallets need the
///   call, which the signer process makes on a timer), and rolls back a
///   policy rollout whose gate fails ([`Signer::rollout_tick`]).
///
/// Every answer is immediate; nothing is queued. A restart is dropping the
/// `Signer` and opening a new one over the same store: live nonces and
/// pending shares are lost (by design), markers are not.
pub struct Signer<S> {
    pub(crate) store: S,
    /// This member's Ed25519 identity key (zeroized on drop), which signs
    /// its DKG messages.
    pub(crate) identity: ed25519_dalek::SigningKey,
    pub(crate) limits: Limits,
    /// The Bitcoin network of every wallet (from the configuration only).
    pub(crate) network: Network,
    pub(crate) wallets: BTreeMap<WalletId, Slot>,
    /// The policy rollout record as read, and the current step's counters:
    /// held only for in-memory reads and counts.
    pub(crate) rollout: std::sync::RwLock<crate::rollout::Cache>,
    /// Held by each rollout step and load across its store calls, so the
    /// lock above never is.
    pub(crate) rollout_steps: Mutex<()>,
    /// The retirement of deleted shares' data keys, run by
    /// [`Signer::prune`] outside every wallet lock.
    retirement: Mutex<retire::Retirement>,
    /// The audit entry the last periodic or export checkpoint covered or
    /// was claimed at; 0 until this signer writes one, so a long log gets
    /// its first checkpoint at the first entry after a restart.
    pub(crate) audit_checkpointed: AtomicU64,
    /// The budget of the DKG endings logged alone (failed, cancelled,
    /// expired), per wallet and coordinator.
    pub(crate) dkg_endings: crate::dkg::EndingBudget,
    /// Called with a wallet's id right before round 2, or a canary's dry
    /// run, waits for that wallet's lock (see [`Signer::on_wallet_lock`]).
    #[cfg(any(test, feature = "test-util"))]
    lock_hook: Mutex<Option<LockHook>>,
}

/// What [`Signer::on_wallet_lock`] calls.
#[cfg(any(test, feature = "test-util"))]
type LockHook = Arc<dyn Fn(&WalletId) + Send + Sync>;

/// Why a signer could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
}

impl<S: Store> Signer<S> {
    /// Opens the signer: validates `config` and sets up each wallet, reading
    /// nothing from `store`. A wallet's state is loaded by the first request
    /// that locks it, under that wallet's own lock; a wallet whose records
    /// then fail to authenticate, or disagree with the configuration, is
    /// `corrupt`, and the others serve.
    /// `identity` is this member's Ed25519 identity key (the daemon keeps it
    /// sealed in the store); its public key must be `config.identity`.
    ///
    /// # Errors
    /// [`OpenError::Config`] for an invalid configuration or an identity
    /// key that is not the configured one.
    pub fn open(
        config: SignerConfig,
        identity: ed25519_dalek::SigningKey,
        store: S,
    ) -> Result<Self, OpenError> {
        config.validate()?;
        if identity.verifying_key().to_bytes() != config.identity.to_bytes() {
            return Err(ConfigError::IdentityMismatch.into());
        }
        let mut wallets = BTreeMap::new();
        for wallet in config.wallets {
            let policy = wallet.validated_policy(config.network)?;
            let seat = wallet
                .seat_of(&config.identity)
                .ok_or_else(|| ConfigError::NotAMember {
                    wallet: wallet.id.clone(),
                })?;
            let shard = Shard {
                state: WalletState::Corrupt,
                loaded: false,
                pool: NoncePool::new(config.limits.clone(), wallet.roster.len()),
                pending: PendingShares::default(),
                inflight: crate::ledger::InFlight::default(),
                dkg: None,
                dkg_cancelled: BTreeMap::new(),
                unacknowledged_step: None,
                repair: crate::repair::RepairSlot::default(),
            };
            wallets.insert(
                wallet.id.clone(),
                Slot {
                    config: wallet,
                    policy: Arc::new(policy),
                    seat,
                    shard: Mutex::new(shard),
                },
            );
        }
        Ok(Self {
            store,
            identity,
            limits: config.limits,
            network: config.network,
            wallets,
            rollout: std::sync::RwLock::new(crate::rollout::Cache::default()),
            rollout_steps: Mutex::new(()),
            retirement: Mutex::new(retire::Retirement::default()),
            audit_checkpointed: AtomicU64::new(0),
            dkg_endings: crate::dkg::EndingBudget::default(),
            #[cfg(any(test, feature = "test-util"))]
            lock_hook: Mutex::new(None),
        })
    }

    /// From now on, round 2 and a canary's dry run call `hook` with the
    /// wallet's id right before they wait for its lock (under which they
    /// read the clock), until `None`: a test can then have another
    /// request's charge made while one is at the lock. Test-only.
    #[cfg(any(test, feature = "test-util"))]
    #[doc(hidden)]
    pub fn on_wallet_lock(&self, hook: Option<LockHook>) {
        if let Ok(mut slot) = self.lock_hook.lock() {
            *slot = hook;
        }
    }

    /// Locks the wallet's shard for a charge, whose time is read under
    /// the lock; calls the test hook first, if any.
    fn lock_for_charge<'a>(&self, slot: &'a Slot) -> Result<MutexGuard<'a, Shard>, Error> {
        #[cfg(any(test, feature = "test-util"))]
        {
            // Called outside its mutex: another request's lock may call it
            // while this one waits in it.
            let hook = self.lock_hook.lock().ok().and_then(|h| h.clone());
            if let Some(hook) = hook {
                hook(&slot.config.id);
            }
        }
        lock(&self.store, slot)
    }

    /// Handles one request from the authenticated coordinator `from`: the
    /// one way a coordinator's request enters the signer.
    ///
    /// Requests that address a wallet are accepted only from one of its
    /// members (DESIGN.md §4: only members coordinate for a wallet),
    /// checked here once; the per-kind methods take the `Member` proof
    /// that check returns, so none of them can run for a non-member. A
    /// listing shows only the wallets `from` is a member of.
    ///
    /// `clock` gives the time: it is read when the request arrives, and
    /// round 2 reads it again once it holds the wallet's lock, for
    /// everything it does under it (the policy, the rate ledger and its
    /// charge, the nonces, the marker and its audit entry), and each time
    /// it retakes the lock to settle its marker unit, so that the charges
    /// committed while it waited are never dated ahead of its time. Pass a
    /// clock to read (the daemon passes the function `wall_clock`, not a
    /// reading of it): a [`Timestamp`] is a clock that never moves, for
    /// tests and for callers with no clock of their own, and gives round 2
    /// the stale reading the lock is there to avoid.
    ///
    /// # Errors
    /// [`Error::CoordinatorNotMember`] (also for an unknown wallet), and
    /// as for the kind of request:
    /// - round 1: the wallet-state errors; a zero or too large input count;
    ///   [`Error::NonceCapacity`] at the wallet-wide limit;
    /// - round 2: every check of [`crate::Error`]'s request variants,
    ///   [`Error::PolicyDenied`], [`Error::Transaction`],
    ///   [`Error::RekeyInProgress`], [`Error::SuccessorNotActive`], the
    ///   nonce errors ([`Error::NonceUnknown`], [`Error::AttemptExpired`],
    ///   [`Error::NonceEvicted`], [`Error::SessionConflict`]),
    ///   [`Error::LedgerContended`] and [`Error::Store`];
    /// - abort: [`Error::Malformed`] for a commitment that does not decode;
    /// - wallet key: [`Error::WalletNotActive`] for a wallet without a key;
    /// - the DKG parts (a refresh is a DKG session of kind refresh, also
    ///   refused with [`Error::RefreshMismatch`], [`Error::StaleEpoch`] or
    ///   [`Error::WalletNotActive`]): [`Error::DkgMismatch`], [`Error::WalletAlreadyKeyed`],
    ///   [`Error::DkgBusy`], [`Error::DkgNotInPhase`], [`Error::DkgFailed`]
    ///   naming the accused seat, [`Error::KeyPackagePresent`] and
    ///   [`Error::Store`].
    pub fn handle<R: RngCore + CryptoRng>(
        &self,
        clock: impl Clock,
        from: CoordinatorId,
        request: Request,
        rng: &mut R,
    ) -> Result<Response, Error> {
        let now = clock.now();
        // Only a listing addresses no wallet.
        let Some(wallet) = request.wallet() else {
            return self.listing(from);
        };
        let member = self.member(wallet, from)?;
        let messages = |messages| Response::DkgMessages { messages };
        match request {
            Request::Round1(req) => self.round1(now, &member, &req, rng).map(Response::Round1),
            Request::Round2(req) => self
                .round2_applied(now, &clock, &member, &req, rng)
                .map(Response::Round2),
            Request::Abort(req) => self
                .abort(now, &member, &req)
                .map(|destroyed| Response::Aborted { destroyed }),
            Request::Status { .. } => self.wallet_status(member.slot).map(Response::Status),
            // Answered above (it addresses no wallet); listed so that the
            // match names every kind.
            Request::ListWallets => self.listing(from),
            Request::WalletKey { .. } => {
                let key = key_of(&self.store, member.slot)?
                    .to_bytes()
                    .map_err(|_| Error::Internal(InternalFault::Serialization))?;
                Ok(Response::WalletKey { key: HexBytes(key) })
            }
            Request::DkgStart(proposal) => self
                .dkg_start(now, &member, &proposal, rng)
                .map(|m| messages(vec![m])),
            Request::DkgRound2 {
                session, round1, ..
            } => {
                let kind = self.running_kind(&member, session);
                self.dkg_round2(now, &member, session, &round1, rng)
                    .inspect_err(|e| {
                        self.audit_dkg_failure(now, (&member, session), kind.as_ref(), e)
                    })
                    .map(messages)
            }
            Request::DkgFinish {
                session, round2, ..
            } => {
                let kind = self.running_kind(&member, session);
                self.dkg_finish(now, &member, session, &round2)
                    .inspect_err(|e| {
                        self.audit_dkg_failure(now, (&member, session), kind.as_ref(), e)
                    })
                    .map(|m| messages(vec![m]))
            }
            Request::DkgConfirm { confirmation, .. } => self
                .dkg_confirm(now, &member, &confirmation)
                .map(Response::Confirmations),
            Request::DkgCancel {
                session,
                abandon,
                abandonments,
                ..
            } => self.cancel(now, &member, session, abandon, &abandonments),
            Request::RefreshConfirmations { session, .. } => self
                .refresh_confirmations(now, member.slot(), session)
                .map(messages),
            Request::Repair(req) => self.repair(now, &member, req, rng).map(Response::Repair),
        }
    }

    /// Round 2 under the policy the wallet applies now, its outcome
    /// counted for a rollout's gate (which may roll the rollout back) at
    /// the request's arrival `now`; round 2 and the gate's dry run read
    /// `clock` under the wallet's lock.
    fn round2_applied<R: RngCore + CryptoRng>(
        &self,
        now: Timestamp,
        clock: &dyn Clock,
        member: &Member<'_>,
        req: &crate::api::Round2Request,
        rng: &mut R,
    ) -> Result<crate::api::Round2Response, Error> {
        let applied = self.applied_policy(member.slot)?;
        let result = self.round2(clock, member, req, &applied, rng);
        if applied.group.is_some() {
            let outcome = crate::rollout::outcome_of(&result, || {
                applied
                    .previous
                    .as_ref()
                    .is_none_or(|previous| self.policy_allows(clock, member, req, previous))
            });
            let target = crate::rollout::target_digest(member.from, &req.wallet, &req.target);
            // The answer stands whether or not the gate's rollback commits;
            // a rollback that failed is tried again by the next round 2 or
            // tick.
            let _ = self.observe(
                now,
                &member.slot.config.id,
                &applied,
                outcome,
                target,
                member.from,
            );
        }
        result.map(|(response, _)| response)
    }

    /// The status of every wallet `from` is a member of: a coordinator sees
    /// only those.
    fn listing(&self, from: CoordinatorId) -> Result<Response, Error> {
        Ok(Response::Wallets {
            wallets: self
                .wallets
                .values()
                .filter(|slot| is_member(&self.store, slot, from))
                .map(|slot| self.wallet_status(slot))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Drops what no request can use any more, in every wallet, whether it
    /// still gets requests or not: expired nonces, tombstones and pending
    /// shares past the replay window, DKG sessions past their lifetime
    /// (with their secrets), and the markers that expired (purged from the
    /// store in one commit). Rounds prune their own wallet as they
    /// go; an idle wallet is pruned only here, so a running signer calls it
    /// on a timer. Harmless to call at any time.
    ///
    /// # Errors
    /// [`Error::Internal`] if a wallet's lock is poisoned,
    /// [`Error::MarkerPurge`] if the store cannot purge (the next call
    /// tries again; the rollout's tick runs all the same);
    /// [`Error::Rollout`] if the rollout record cannot be read or a
    /// failing rollout's rollback cannot commit (the next call, or round
    /// 2, tries again).
    pub fn prune(&self, now: Timestamp) -> Result<(), Error> {
        for slot in self.wallets.values() {
            let mut shard = lock_unloaded(slot)?;
            shard.pool.prune(now);
            shard.pending.prune(now);
            self.expire_dkg(now, slot, &mut shard);
            shard.repair.expire(now);
        }
        self.audit_unlogged_endings(now);
        self.retire_if_due(&self.retirement, now);
        let purged = self
            .store
            .write(vec![WriteOp::PurgeMarkers { now }])
            .map_err(|source| Error::MarkerPurge { source });
        // A failing gate's rollback is retried even while purges fail.
        let ticked = self.rollout_tick(now);
        purged?;
        ticked?;
        Ok(())
    }

    /// One wallet's status.
    ///
    /// # Errors
    /// [`Error::UnknownWallet`].
    pub fn status(&self, wallet: &WalletId) -> Result<WalletStatus, Error> {
        self.wallet_status(self.slot(wallet)?)
    }

    /// Every wallet's status, in id order.
    ///
    /// # Errors
    /// [`Error::Internal`] if a wallet's lock is poisoned.
    pub fn wallets(&self) -> Result<Vec<WalletStatus>, Error> {
        self.wallets
            .values()
            .map(|slot| self.wallet_status(slot))
            .collect()
    }

    /// The public key record of a wallet that holds a key (what share
    /// verification and aggregation use).
    ///
    /// # Errors
    /// [`Error::UnknownWallet`], or [`Error::WalletNotActive`] for a wallet
    /// without a key.
    pub fn wallet_key(&self, wallet: &WalletId) -> Result<thresig_crypto::WalletKey, Error> {
        key_of(&self.store, self.slot(wallet)?)
    }

    /// The wallet's status with the policy it applies. An unreadable
    /// rollout record leaves the version unknown here; round 2 refuses
    /// with its error.
    fn wallet_status(&self, slot: &Slot) -> Result<WalletStatus, Error> {
        let mut status = status_of(&self.store, slot)?;
        if let Ok((version, rollout)) = self.policy_of(slot) {
            status.policy_version = Some(version);
            status.policy_rollout = rollout;
        }
        Ok(status)
    }

    /// The store the signer runs on.
    pub fn store(&self) -> &S {
        &self.store
    }

    pub(crate) fn slot(&self, wallet: &WalletId) -> Result<&Slot, Error> {
        self.wallets
            .get(wallet)
            .ok_or_else(|| Error::UnknownWallet {
                wallet: wallet.clone(),
            })
    }

    /// The proof that `from` is a member of `wallet`: only members may
    /// coordinate for a wallet. An unknown wallet gets the same answer as a
    /// wallet `from` is not a member of: the caller's own membership
    /// decides, so a cluster member outside a wallet cannot probe for
    /// wallet ids.
    fn member(&self, wallet: &WalletId, from: CoordinatorId) -> Result<Member<'_>, Error> {
        match self.wallets.get(wallet) {
            Some(slot) if is_member(&self.store, slot, from) => Ok(Member { slot, from }),
            _ => Err(Error::CoordinatorNotMember {
                wallet: wallet.clone(),
                coordinator: from,
            }),
        }
    }
}

pub(crate) fn store_error(wallet: &WalletId, source: thresig_store::Error) -> Error {
    Error::Store {
        wallet: wallet.clone(),
        source,
    }
}

/// Locks the wallet's shard, loading its state from `store` first if no
/// request has yet. The load runs under this wallet's lock only, so wallets
/// load on first use without waiting on each other.
///
/// # Errors
/// [`Error::Internal`] if the lock is poisoned; [`Error::Store`] if the
/// records cannot be read (retryable: the wallet stays unloaded and the
/// next request reads again).
pub(crate) fn lock<'a, S: Store>(
    store: &S,
    slot: &'a Slot,
) -> Result<MutexGuard<'a, Shard>, Error> {
    let mut shard = lock_unloaded(slot)?;
    if !shard.loaded {
        shard.state = load_state(store, &slot.config, slot.seat)
            .map_err(|source| store_error(&slot.config.id, source))?;
        shard.loaded = true;
    }
    Ok(shard)
}

/// Locks the wallet's shard without loading its state, for what does not
/// depend on it (the nonce pool and pending shares: an unloaded wallet has
/// none).
fn lock_unloaded(slot: &Slot) -> Result<MutexGuard<'_, Shard>, Error> {
    slot.shard
        .lock()
        .map_err(|_| Error::Internal(InternalFault::Poisoned))
}

/// Whether `from` is a member of the slot's wallet: its roster key, at a
/// seat that holds a share of the wallet's current key record (a seat a
/// refresh removed stays in the roster, whose seats are positions, but is
/// a member of the wallet for nothing). Before the wallet has a key, the
/// roster decides.
fn is_member<S: Store>(store: &S, slot: &Slot, from: CoordinatorId) -> bool {
    let Some(seat) = slot
        .config
        .roster
        .iter()
        .position(|k| k.to_bytes() == from.0)
        .and_then(|i| u16::try_from(i + 1).ok())
        .and_then(|n| Seat::try_from(n).ok())
    else {
        return false;
    };
    // A wallet whose state does not load answers every member with that
    // error, so membership falls back to the roster there.
    lock(store, slot).map_or(true, |shard| {
        shard
            .state
            .key()
            .is_none_or(|key| key.key().check_member(seat).is_ok())
    })
}

/// The public key record of the slot's wallet.
///
/// # Errors
/// [`Error::WalletNotActive`] for a wallet without a key yet,
/// [`Error::WalletRetired`] and [`Error::WalletCorrupt`].
fn key_of<S: Store>(store: &S, slot: &Slot) -> Result<thresig_crypto::WalletKey, Error> {
    let shard = lock(store, slot)?;
    // The state's own refusal: a retired wallet says so, not "not active".
    let (key, _) = shard.state.signing_key(&slot.config.id)?;
    Ok(key.key().clone())
}

fn status_of<S: Store>(store: &S, slot: &Slot) -> Result<WalletStatus, Error> {
    let shard = lock(store, slot)?;
    let key = shard.state.key();
    Ok(WalletStatus {
        wallet: slot.config.id.clone(),
        state: shard.state.kind(),
        threshold: slot.config.threshold,
        members: u16::try_from(slot.config.roster.len()).unwrap_or(u16::MAX),
        seat: slot.seat,
        epoch: key.map(|k| k.epoch),
        output_key: key.map(|k| HexBytes(k.key().output_key().to_bytes().to_vec())),
        live_nonces: shard.pool.live(),
        repair_approvals: shard.repair.approvals(),
        repairing: shard.repair.repairing(),
        refresh: match (&shard.state, &shard.dkg) {
            // Released at its part-3 commit (see `Refreshing`).
            (WalletState::Refreshing(r), _) => Some(
                RefreshStatus::new(r.pending.session(), r.pending.confirmed().collect())
                    .released(true),
            ),
            // A refresh running here whose confirmation has not left: a
            // veto of it is still this member's to sign.
            (_, run) => run
                .as_ref()
                .and_then(|run| run.refresh())
                .map(|session| RefreshStatus::new(session, Vec::new())),
        },
        // Filled in by `Signer::wallet_status`, which reads the rollout.
        policy_version: None,
        policy_rollout: None,
    })
}

impl<S> std::fmt::Debug for Signer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("wallets", &self.wallets.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}
