//! The signer: one member's wallets, nonces, pending shares and markers.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use rand_core::{CryptoRng, RngCore};
use thresig_crypto::{KeyShare, Seat, SecretNonce, commit};
use thresig_store::{CommitmentHash, Conflict, Marker, PackageHash, Store, WriteOp, WriteOutcome};

use crate::api::{
    AbortRequest, HexBytes, Request, Response, Round1Request, Round1Response, Round2Request,
    Round2Response, WalletStatus,
};
use crate::check::{CheckedRound2, check_round2, commitment_hash};
use crate::config::{ConfigError, Limits, SignerConfig, WalletConfig};
use crate::dkg::DkgSession;
use crate::dkg_msg::DkgSessionId;
use crate::durable::{decode_shares, encode_shares, load_state, rekeying_ops};
use crate::error::{Error, InternalFault, RequestPart};
use crate::ids::{CoordinatorId, WalletEpoch};
use crate::ledger::StoredLedger;
use crate::pool::{NoncePool, TakeError, Tombstone, WalletFull};
use crate::target::{Authority, Spend, taproot_wallet};
use crate::wallet::{Role, SigningKey, WalletState, WalletStateKind};
use thresig_store::Timestamp;
use thresig_store::WalletId;
use thresig_tx::{Network, Policy, TaprootWallet, WalletMode};

/// Shares computed for an attempt whose marker is not yet durable.
///
/// They were computed once, from nonces that no longer exist; only the
/// byte-identical request may retry their commit.
struct Pending {
    /// The coordinator whose nonces these shares spent: only it may retry
    /// them, and no other coordinator's request can make them be dropped.
    owner: CoordinatorId,
    package: PackageHash,
    shares: Vec<Vec<u8>>,
    /// When these shares may be forgotten (dropping them is always safe:
    /// they were never released and their nonces are gone).
    until: Timestamp,
    /// Insertion order within the wallet, so "oldest" is exact even for
    /// entries created at the same `now`.
    seq: u64,
}

/// A wallet's pending shares by the attempt's first commitment, at most
/// [`Limits::pending_per_wallet`] of them.
#[derive(Default)]
struct PendingShares {
    by_lead: HashMap<CommitmentHash, Pending>,
    next_seq: u64,
}

impl PendingShares {
    fn get(&self, lead: &CommitmentHash) -> Option<&Pending> {
        self.by_lead.get(lead)
    }

    fn remove(&mut self, lead: &CommitmentHash) {
        self.by_lead.remove(lead);
    }

    /// Records the shares of a fresh attempt of `owner` (admitted by
    /// [`Self::admit`]); at the cap, `owner`'s own oldest entry is dropped
    /// first (safe: never released, its nonces are gone), never another
    /// coordinator's.
    fn insert(
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
    fn prune(&mut self, now: Timestamp) {
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
    fn admit(&self, wallet: &WalletId, from: CoordinatorId, max: usize) -> Result<(), Error> {
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
    /// A DKG in progress (memory only: a restart aborts it).
    pub(crate) dkg: Option<DkgSession>,
    /// The session each member last cancelled (at most one per member): a
    /// start of it from that member arrives after the cancel and is
    /// refused.
    pub(crate) dkg_cancelled: BTreeMap<CoordinatorId, DkgSessionId>,
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
            draw(&key.share, drawn.entries.len(), rng)?
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

/// Draws `inputs` fresh nonces of `share`.
///
/// # Errors
/// [`Error::Internal`] if a commitment does not encode (not expected).
fn draw<R: RngCore + CryptoRng>(
    share: &KeyShare,
    inputs: usize,
    rng: &mut R,
) -> Result<Drawn, Error> {
    let mut entries = Vec::with_capacity(inputs);
    let mut commitments = Vec::with_capacity(inputs);
    for _ in 0..inputs {
        let (nonce, commitment) = commit(share, rng);
        let bytes = commitment
            .to_bytes()
            .map_err(|_| Error::Internal(InternalFault::Serialization))?;
        entries.push((commitment_hash(&commitment)?, nonce));
        commitments.push(HexBytes(bytes));
    }
    Ok(Drawn {
        entries,
        commitments,
    })
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

/// One configured wallet.
pub(crate) struct Slot {
    pub(crate) config: WalletConfig,
    /// The wallet's policy, validated from `config.policy` at open.
    policy: Policy,
    pub(crate) seat: Seat,
    shard: Mutex<Shard>,
}

/// One threshold signer: the wallets it serves and its signing state.
///
/// `Signer` is `Sync`: each wallet's state sits behind its own lock, so
/// operations on different wallets never wait on each other; a wallet's
/// lock is held across that wallet's own marker commit only. It reads no
/// clock and creates no randomness: `now` and `rng` are arguments.
///
/// Methods, by kind:
/// - inputs: [`Signer::handle`] (dispatches a [`Request`]), or directly
///   [`Signer::round1`], [`Signer::round2`], [`Signer::abort`];
/// - getters: [`Signer::status`], [`Signer::wallets`];
/// - upkeep: [`Signer::prune`] drops expired nonces, forgotten tombstones
///   and pending shares, and expired markers, of every wallet (a round
///   prunes its own wallet's memory as it goes; idle wallets need the
///   call, which the signer process makes on a timer).
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
    network: Network,
    wallets: BTreeMap<WalletId, Slot>,
}

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

/// What a round 2 releases shares for, and under which rules: the inputs
/// of every marker commit attempt.
struct Release<'a> {
    wallet: &'a WalletId,
    coordinator: CoordinatorId,
    policy: &'a Policy,
    mode: WalletMode,
    spend: &'a Spend,
}

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
                dkg: None,
                dkg_cancelled: BTreeMap::new(),
            };
            wallets.insert(
                wallet.id.clone(),
                Slot {
                    config: wallet,
                    policy,
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
        })
    }

    /// Handles one request from the authenticated coordinator `from`.
    ///
    /// Requests that address a wallet are accepted only from one of its
    /// members (DESIGN.md §4: only members coordinate for a wallet); a
    /// listing shows only the wallets `from` is a member of.
    ///
    /// # Errors
    /// [`Error::CoordinatorNotMember`], and as for the method the request
    /// dispatches to.
    pub fn handle<R: RngCore + CryptoRng>(
        &self,
        now: Timestamp,
        from: CoordinatorId,
        request: Request,
        rng: &mut R,
    ) -> Result<Response, Error> {
        if let Some(wallet) = request.wallet() {
            self.member_slot(wallet, from)?;
        }
        let messages = |messages| Response::DkgMessages { messages };
        match request {
            Request::Round1(req) => self.round1(now, from, &req, rng).map(Response::Round1),
            Request::Round2(req) => self.round2(now, from, &req, rng).map(Response::Round2),
            Request::Abort(req) => self
                .abort(now, from, &req)
                .map(|destroyed| Response::Aborted { destroyed }),
            Request::Status { wallet } => self.status(&wallet).map(Response::Status),
            // A coordinator sees only the wallets it is a member of.
            Request::ListWallets => Ok(Response::Wallets {
                wallets: self
                    .wallets
                    .values()
                    .filter(|slot| is_member(slot, from))
                    .map(|slot| status_of(&self.store, slot))
                    .collect::<Result<_, _>>()?,
            }),
            Request::WalletKey { wallet } => {
                let key = self
                    .wallet_key(&wallet)?
                    .to_bytes()
                    .map_err(|_| Error::Internal(InternalFault::Serialization))?;
                Ok(Response::WalletKey { key: HexBytes(key) })
            }
            Request::DkgStart(proposal) => self
                .dkg_start(now, from, &proposal, rng)
                .map(|m| messages(vec![m])),
            Request::DkgRound2 {
                wallet,
                session,
                round1,
            } => self
                .dkg_round2(now, from, &wallet, session, &round1, rng)
                .map(messages),
            Request::DkgFinish {
                wallet,
                session,
                round2,
            } => self
                .dkg_finish(now, from, &wallet, session, &round2)
                .map(|m| messages(vec![m])),
            Request::DkgConfirm {
                wallet,
                confirmation,
            } => self
                .dkg_confirm(&wallet, &confirmation)
                .map(Response::Confirmations),
            Request::DkgCancel { wallet, session } => self
                .dkg_cancel(from, &wallet, session)
                .map(|dropped| Response::DkgCancelled { dropped }),
        }
    }

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
    /// [`Error::CoordinatorNotMember`] (also for an unknown wallet); the
    /// wallet-state errors; a zero or too
    /// large input count; [`Error::NonceCapacity`] at the wallet-wide limit
    /// (the coordinator's own oldest vectors are evicted first to fit its
    /// quota).
    pub fn round1<R: RngCore + CryptoRng>(
        &self,
        now: Timestamp,
        from: CoordinatorId,
        req: &Round1Request,
        rng: &mut R,
    ) -> Result<Round1Response, Error> {
        let slot = self.member_slot(&req.wallet, from)?;
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
        let drawn = draw(&share, req.inputs, rng)?;
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
    fn fresh_vector<R: RngCore + CryptoRng>(
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
        let drawn = draw(&key.share, inputs, rng)?;
        pool.insert(now, from, drawn.entries);
        Ok(drawn.commitments)
    }

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
    /// exhausted the shares are returned without fresh commitments.
    ///
    /// # Errors
    /// [`Error::CoordinatorNotMember`], every check of [`crate::Error`]'s
    /// request variants, [`Error::PolicyDenied`], [`Error::Transaction`],
    /// [`Error::RekeyInProgress`], [`Error::SuccessorNotActive`], the nonce
    /// errors ([`Error::NonceUnknown`], [`Error::AttemptExpired`],
    /// [`Error::NonceEvicted`], [`Error::SessionConflict`]),
    /// [`Error::LedgerContended`] and [`Error::Store`].
    pub fn round2<R: RngCore + CryptoRng>(
        &self,
        now: Timestamp,
        from: CoordinatorId,
        req: &Round2Request,
        rng: &mut R,
    ) -> Result<Round2Response, Error> {
        let slot = self.member_slot(&req.wallet, from)?;
        let successor = self.successor(slot)?;
        let mut guard = lock(&self.store, slot)?;
        let Shard {
            state,
            pool,
            pending,
            ..
        } = &mut *guard;
        pending.prune(now);
        let (key, role) = state.signing_key(&req.wallet)?;
        let wallet = &slot.config.id;
        let authority = Authority {
            policy: &slot.policy,
            role,
            taproot: taproot_wallet(self.network, &key.key)?,
        };
        let checked = check_round2(&slot.config, slot.seat, key, &self.limits, &authority, req)?;
        let release = Release {
            wallet,
            coordinator: from,
            policy: &slot.policy,
            mode: wallet_mode(wallet, role, successor)?,
            spend: checked.spend(),
        };
        let shares = self.release(now, from, &release, &checked, key, pool, pending)?;
        let commitments = match self.fresh_vector(now, from, wallet, pool, key, shares.len(), rng) {
            Ok(fresh) => fresh,
            Err(Error::NonceCapacity { .. }) => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(Round2Response {
            wallet: wallet.clone(),
            seat: slot.seat,
            shares: shares.into_iter().map(HexBytes).collect(),
            commitments,
        })
    }

    /// The shares to release for a checked request: a durable marker's (a
    /// replay), a pending attempt's after its commit, or fresh ones.
    #[allow(
        clippy::too_many_arguments,
        reason = "the pool, pending shares and key are borrowed from the wallet's locked shard"
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
    ) -> Result<Vec<Vec<u8>>, Error> {
        let wallet = release.wallet;
        let lead = checked.lead();
        // A durable marker answers replays and refuses everything else.
        let stored = self
            .store
            .marker(wallet, &lead)
            .map_err(|source| store_error(wallet, source))?;
        if let Some(marker) = stored {
            pending.remove(&lead);
            return replay(wallet, lead, checked.hash(), &marker);
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
            let shares = p.shares.clone();
            return self.commit(now, release, lead, p.package, shares, pending);
        }
        // The policy refuses before any nonce is spent; the commit checks
        // again against the ledger it charges.
        self.charge_op(now, release)?;
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
        self.commit(now, release, lead, checked.hash(), shares, pending)
    }

    /// Puts an active wallet in `rekeying`, durably: from then on it signs
    /// only a sweep whose outputs all pay the successor named in its
    /// configuration (once that successor is `active` here), and refuses
    /// every other spend with `rekey_in_progress`. An operator action; a
    /// coordinator cannot trigger it.
    ///
    /// # Errors
    /// [`Error::UnknownWallet`]; [`Error::RekeyNotPossible`] if the wallet
    /// names no successor or is not `active`; [`Error::Store`] if the
    /// record cannot be written (the wallet then stays `active`).
    pub fn begin_rekey(&self, wallet: &WalletId) -> Result<(), Error> {
        let slot = self.slot(wallet)?;
        let mut shard = lock(&self.store, slot)?;
        let not_possible = || Error::RekeyNotPossible {
            wallet: wallet.clone(),
        };
        if slot.config.successor.is_none() {
            return Err(not_possible());
        }
        if !matches!(shard.state, WalletState::Active(_)) {
            return Err(not_possible());
        }
        let ops = rekeying_ops(&self.store, wallet)?;
        self.store
            .write(ops)
            .map_err(|source| store_error(wallet, source))?;
        let state = std::mem::replace(&mut shard.state, WalletState::Corrupt);
        shard.state = match state {
            WalletState::Active(key) => WalletState::Rekeying(key),
            other => other,
        };
        Ok(())
    }

    /// Destroys the live round-1 vectors of `from` that contain any of the
    /// given commitments. Returns how many nonces were destroyed.
    ///
    /// # Errors
    /// [`Error::UnknownWallet`], or [`Error::Malformed`] for a commitment
    /// that does not decode.
    pub fn abort(
        &self,
        now: Timestamp,
        from: CoordinatorId,
        req: &AbortRequest,
    ) -> Result<usize, Error> {
        let slot = self.slot(&req.wallet)?;
        let hashes = req
            .commitments
            .iter()
            .map(|c| {
                thresig_crypto::Commitment::from_bytes(&c.0)
                    .map_err(|_| Error::Malformed {
                        wallet: req.wallet.clone(),
                        part: RequestPart::Commitments,
                    })
                    .and_then(|c| commitment_hash(&c))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(lock_unloaded(slot)?.pool.abort(now, from, &hashes))
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
    /// tries again).
    pub fn prune(&self, now: Timestamp) -> Result<(), Error> {
        for slot in self.wallets.values() {
            let mut shard = lock_unloaded(slot)?;
            shard.pool.prune(now);
            shard.pending.prune(now);
            crate::dkg::expire(&mut shard, now);
        }
        self.store
            .write(vec![WriteOp::PurgeMarkers { now }])
            .map_err(|source| Error::MarkerPurge { source })?;
        Ok(())
    }

    /// One wallet's status.
    ///
    /// # Errors
    /// [`Error::UnknownWallet`].
    pub fn status(&self, wallet: &WalletId) -> Result<WalletStatus, Error> {
        status_of(&self.store, self.slot(wallet)?)
    }

    /// Every wallet's status, in id order.
    ///
    /// # Errors
    /// [`Error::Internal`] if a wallet's lock is poisoned.
    pub fn wallets(&self) -> Result<Vec<WalletStatus>, Error> {
        self.wallets
            .values()
            .map(|slot| status_of(&self.store, slot))
            .collect()
    }

    /// The public key record of a wallet that holds a key (what share
    /// verification and aggregation use).
    ///
    /// # Errors
    /// [`Error::UnknownWallet`], or [`Error::WalletNotActive`] for a wallet
    /// without a key.
    pub fn wallet_key(&self, wallet: &WalletId) -> Result<thresig_crypto::WalletKey, Error> {
        let shard = lock(&self.store, self.slot(wallet)?)?;
        shard
            .state
            .key()
            .map(|k| k.key.clone())
            .ok_or_else(|| Error::WalletNotActive {
                wallet: wallet.clone(),
            })
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

    /// The wallet's slot, if `from` is a member of it: only members may
    /// coordinate for a wallet. An unknown wallet gets the same answer as a
    /// wallet `from` is not a member of: the caller's own membership
    /// decides, so a cluster member outside a wallet cannot probe for
    /// wallet ids.
    fn member_slot(&self, wallet: &WalletId, from: CoordinatorId) -> Result<&Slot, Error> {
        match self.wallets.get(wallet) {
            Some(slot) if is_member(slot, from) => Ok(slot),
            _ => Err(Error::CoordinatorNotMember {
                wallet: wallet.clone(),
                coordinator: from,
            }),
        }
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
            WalletState::Active(key) => {
                Ok(Successor::Active(taproot_wallet(self.network, &key.key)?))
            }
            _ => Ok(Successor::NotActive(id.clone())),
        }
    }

    /// The rate-ledger write that must commit with the marker of a
    /// transaction (after the policy approved it against the ledger just
    /// read); none for raw digests.
    fn charge_op(&self, now: Timestamp, release: &Release<'_>) -> Result<Option<WriteOp>, Error> {
        let Spend::Transaction(psbt) = release.spend else {
            return Ok(None);
        };
        let wallet = release.wallet;
        let ledger = StoredLedger::read(&self.store, wallet, release.policy, now)?;
        let approval = ledger.approve(
            wallet,
            release.policy,
            &release.mode,
            &release.coordinator,
            psbt,
            now,
        )?;
        ledger.charge_op(wallet, &approval)
    }

    /// Makes the marker of `shares` durable (insert-if-absent) together
    /// with the transaction's rate charge, in one unit, and returns the
    /// shares to release: the new ones if inserted, the stored ones for an
    /// identical earlier (ambiguous) commit. A ledger changed by another
    /// commit skips the whole unit; the policy is then checked again
    /// against the new ledger, never charged twice. On failure the pending
    /// shares stay for a byte-identical retry.
    fn commit(
        &self,
        now: Timestamp,
        release: &Release<'_>,
        lead: CommitmentHash,
        package: PackageHash,
        shares: Vec<Vec<u8>>,
        pending: &mut PendingShares,
    ) -> Result<Vec<Vec<u8>>, Error> {
        let wallet = release.wallet;
        let expires = now
            .saturating_add(self.limits.nonce_ttl)
            .saturating_add(self.limits.replay_window);
        let marker = WriteOp::InsertMarker {
            wallet: wallet.clone(),
            commitment: lead,
            marker: Marker {
                package_hash: package,
                shares: encode_shares(&shares)?,
                expires_at: expires,
            },
        };
        for _ in 0..LEDGER_RETRIES {
            let mut ops: Vec<WriteOp> = self.charge_op(now, release)?.into_iter().collect();
            ops.push(marker.clone());
            let outcome = self
                .store
                .write(ops)
                .map_err(|source| store_error(wallet, source))?;
            match outcome {
                WriteOutcome::Committed(_) => {
                    pending.remove(&lead);
                    return Ok(shares);
                }
                WriteOutcome::Skipped {
                    conflict: Conflict::MarkerPresent(stored),
                    ..
                } => {
                    pending.remove(&lead);
                    return replay(wallet, lead, package, &stored);
                }
                WriteOutcome::Skipped {
                    conflict: Conflict::PolicyMismatch(_),
                    ..
                } => {}
                _ => {
                    pending.remove(&lead);
                    return Err(Error::Internal(InternalFault::UnexpectedWrite));
                }
            }
        }
        Err(Error::LedgerContended {
            wallet: wallet.clone(),
        })
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
            thresig_crypto::sign(nonce, package, &key.share, &key.key)
                .map(|share| share.to_bytes())
                .map_err(|_| Error::Internal(InternalFault::CryptoRefused))
        })
        .collect()
}

fn store_error(wallet: &WalletId, source: thresig_store::Error) -> Error {
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

/// Whether `from` is a member of the slot's wallet.
fn is_member(slot: &Slot, from: CoordinatorId) -> bool {
    slot.config.roster.iter().any(|k| k.to_bytes() == from.0)
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
        output_key: key.map(|k| HexBytes(k.key.output_key().to_bytes().to_vec())),
        live_nonces: shard.pool.live(),
    })
}

impl<S> std::fmt::Debug for Signer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("wallets", &self.wallets.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_chacha::rand_core::SeedableRng;
    use thresig_crypto::{Commitment, GroupParams, ScriptTree};

    use super::*;

    const FROM: CoordinatorId = CoordinatorId([1; 32]);

    fn key(secret: u8, epoch: u64, rng: &mut ChaCha20Rng) -> SigningKey {
        let params = GroupParams::new(2, 3).unwrap();
        let (key, shares) =
            thresig_crypto::import_key(&[secret; 32], params, ScriptTree::KeyPathOnly, rng)
                .unwrap();
        let share = shares.into_iter().next().unwrap();
        SigningKey::new(WalletEpoch(epoch), key, share)
    }

    fn shard(state: WalletState) -> Shard {
        Shard {
            state,
            loaded: true,
            pool: NoncePool::new(Limits::default(), 3),
            pending: PendingShares::default(),
            dkg: None,
            dkg_cancelled: BTreeMap::new(),
        }
    }

    fn hashes(commitments: &[HexBytes]) -> Vec<CommitmentHash> {
        commitments
            .iter()
            .map(|c| commitment_hash(&Commitment::from_bytes(&c.0).unwrap()).unwrap())
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
        let drawn = draw(&share, 2, &mut rng).unwrap();
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
        let drawn = draw(&share, 3, &mut rng).unwrap();
        let expected = hashes(&drawn.commitments);
        let (epoch, commitments) = shard
            .keep_drawn(now, FROM, &wallet, &limits, &share, drawn, &mut rng)
            .unwrap();
        assert_eq!(epoch, WalletEpoch(0));
        assert_eq!(hashes(&commitments), expected, "the drawn vector is kept");
        // A wallet that stopped signing in between keeps nothing.
        let drawn = draw(&share, 1, &mut rng).unwrap();
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
        let first = draw(&share, 2, &mut rng).unwrap();
        shard
            .keep_drawn(now, FROM, &wallet, &limits, &share, first, &mut rng)
            .unwrap();
        let drawn = draw(&share, 2, &mut rng).unwrap();
        let refused = hashes(&drawn.commitments);
        // ... and meanwhile two other coordinators filled it.
        for other in [CoordinatorId([2; 32]), CoordinatorId([3; 32])] {
            let theirs = draw(&share, 2, &mut rng).unwrap();
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
