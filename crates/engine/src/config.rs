//! The signer's own configuration: which wallets it serves, their rosters and
//! thresholds, and its limits.
//!
//! Roster and threshold come from here (or an authenticated registry), never
//! from a coordinator: a request whose signer set does not fit them is
//! refused.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use thresig_crypto::{GroupParams, ScriptTree, Seat};
use thresig_tx::{Network, Policy, PolicyConfig};

use thresig_store::WalletId;

/// A member's Ed25519 identity public key (32 bytes, a valid point).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "IdentityKeyHex", into = "IdentityKeyHex")]
pub struct IdentityKey([u8; 32]);

/// The serialized form of an [`IdentityKey`], checked on the way in.
#[derive(Serialize, Deserialize)]
struct IdentityKeyHex(#[serde(with = "hex::serde")] [u8; 32]);

impl IdentityKey {
    /// Validates an Ed25519 public key.
    ///
    /// # Errors
    /// [`ConfigError::InvalidIdentityKey`] when the bytes are not a point.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, ConfigError> {
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map_err(|_| ConfigError::InvalidIdentityKey)?;
        Ok(Self(bytes))
    }

    /// The key's bytes.
    pub fn to_bytes(self) -> [u8; 32] {
        self.0
    }
}

/// An Ed25519 verifying key is always a valid identity key.
impl From<ed25519_dalek::VerifyingKey> for IdentityKey {
    fn from(key: ed25519_dalek::VerifyingKey) -> Self {
        Self(key.to_bytes())
    }
}

impl TryFrom<IdentityKeyHex> for IdentityKey {
    type Error = ConfigError;
    fn try_from(value: IdentityKeyHex) -> Result<Self, Self::Error> {
        Self::from_bytes(value.0)
    }
}

impl From<IdentityKey> for IdentityKeyHex {
    fn from(value: IdentityKey) -> Self {
        Self(value.0)
    }
}

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdentityKey({})", hex::encode(self.0))
    }
}

/// One wallet as the signer's configuration defines it.
///
/// # Invariants
/// `2 <= threshold <= roster.len() <= MAX_SIGNERS`, the roster keys are
/// distinct valid Ed25519 keys, the signer's own identity holds exactly
/// one seat, the policy validates for the signer's network, and a successor
/// is another wallet of the same configuration (checked by
/// [`SignerConfig::validate`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WalletConfig {
    /// The wallet's id.
    pub id: WalletId,
    /// Signers needed for a signature.
    pub threshold: u16,
    /// The ordered roster: seat `i` (FROST identifier `i`, `i >= 1`) is
    /// `roster[i - 1]`.
    pub roster: Vec<IdentityKey>,
    /// The wallet's signing policy (the `[wallets.policy]` table; every
    /// rule's default applies where the table is silent, see
    /// `docs/policy.md`). Validated into a [`Policy`] when the signer opens.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// The wallet that replaces this one in an emergency rekey: a rekeying
    /// wallet signs only a sweep to it, and only while it is `active` here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successor: Option<WalletId>,
    /// The script tree the wallet's output key commits to
    /// (`script_tree_root`, 32 bytes hex; key path only when absent). The
    /// DKG records it in the wallet's key, which alone decides the tweak;
    /// a record whose tree differs from this one does not load.
    #[serde(
        default = "key_path_only",
        rename = "script_tree_root",
        with = "script_tree_root",
        skip_serializing_if = "is_key_path_only"
    )]
    pub script_tree: ScriptTree,
    /// Seats this member's operator approved removing at the wallet's next
    /// share refresh (`remove = [3]`): a refresh proposal must name exactly
    /// these, so a coordinator cannot split the group by telling members
    /// different removal sets. Empty: a refresh keeps every member.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<Seat>,
}

fn key_path_only() -> ScriptTree {
    ScriptTree::KeyPathOnly
}

fn is_key_path_only(tree: &ScriptTree) -> bool {
    *tree == ScriptTree::KeyPathOnly
}

/// A [`ScriptTree`] as its root in hex, or absent for key path only.
mod script_tree_root {
    use serde::{Deserialize, Deserializer, Serializer};
    use thresig_crypto::{MerkleRoot, ScriptTree};

    pub(super) fn serialize<S: Serializer>(tree: &ScriptTree, s: S) -> Result<S::Ok, S::Error> {
        match tree {
            ScriptTree::Root(root) => s.serialize_str(&hex::encode(root.0)),
            _ => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ScriptTree, D::Error> {
        let text = String::deserialize(d)?;
        let mut root = [0; 32];
        hex::decode_to_slice(&text, &mut root).map_err(|_| {
            serde::de::Error::custom("script_tree_root must be 64 hex digits (a 32-byte root)")
        })?;
        Ok(ScriptTree::Root(MerkleRoot(root)))
    }
}

impl WalletConfig {
    /// A wallet definition with the default policy and no successor
    /// (validated with the rest of the configuration by
    /// [`SignerConfig::validate`]).
    pub fn new(id: WalletId, threshold: u16, roster: Vec<IdentityKey>) -> Self {
        Self {
            id,
            threshold,
            roster,
            policy: PolicyConfig::default(),
            successor: None,
            script_tree: ScriptTree::KeyPathOnly,
            remove: Vec::new(),
        }
    }

    /// This definition with its output key committing to `tree`.
    #[must_use]
    pub fn with_script_tree(mut self, tree: ScriptTree) -> Self {
        self.script_tree = tree;
        self
    }

    /// This definition with `remove` as the seats its next refresh removes.
    #[must_use]
    pub fn with_removal(mut self, remove: Vec<Seat>) -> Self {
        self.remove = remove;
        self
    }

    /// The removal set, ascending (as a refresh proposal names it).
    pub(crate) fn removal(&self) -> Vec<Seat> {
        let set: BTreeSet<Seat> = self.remove.iter().copied().collect();
        set.into_iter().collect()
    }

    /// This definition with `policy` as its signing policy.
    #[must_use]
    pub fn with_policy(mut self, policy: PolicyConfig) -> Self {
        self.policy = policy;
        self
    }

    /// This definition with `successor` as the wallet an emergency rekey
    /// sweeps to.
    #[must_use]
    pub fn with_successor(mut self, successor: WalletId) -> Self {
        self.successor = Some(successor);
        self
    }

    /// The wallet's validated policy on `network`.
    ///
    /// # Errors
    /// [`ConfigError::Policy`] naming the wallet and the rule that does not
    /// validate (for example a destination of another network).
    pub fn validated_policy(&self, network: Network) -> Result<Policy, ConfigError> {
        self.policy
            .validate(network, self.threshold)
            .map_err(|source| ConfigError::Policy {
                wallet: self.id.clone(),
                source: Box::new(source),
            })
    }

    /// The identity key holding `seat`, if the seat is in the roster.
    pub fn member(&self, seat: Seat) -> Option<&IdentityKey> {
        self.roster.get(usize::from(seat.get()).checked_sub(1)?)
    }

    /// The seat held by `identity`, if any (seat `i + 1` is `roster[i]`).
    pub fn seat_of(&self, identity: &IdentityKey) -> Option<Seat> {
        let index = self.roster.iter().position(|k| k == identity)?;
        let number = u16::try_from(index).ok()?.checked_add(1)?;
        Seat::try_from(number).ok()
    }

    /// The wallet's `(t, n)` as the crypto layer checks them.
    ///
    /// # Errors
    /// [`ConfigError::BadThreshold`] unless `2 <= t <= n <= MAX_SIGNERS`.
    pub fn params(&self) -> Result<GroupParams, ConfigError> {
        let bad = || ConfigError::BadThreshold {
            wallet: self.id.clone(),
            threshold: self.threshold,
            members: self.roster.len(),
        };
        let n = u16::try_from(self.roster.len()).map_err(|_| bad())?;
        GroupParams::new(self.threshold, n).map_err(|_| bad())
    }
}

/// Limits that bound what a coordinator can make this signer hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Limits {
    /// Most inputs (nonces) in one round-1 or round-2 request. 256 covers
    /// large consolidation transactions; larger spends are split.
    pub max_inputs: usize,
    /// Live nonces one coordinator may hold per wallet. When a round 1 would
    /// exceed it, that coordinator's oldest unused round-1 vectors are
    /// evicted. ROAST keeps at most one open session per signer plus the
    /// fresh vector returned with the shares, so four full-size vectors
    /// leave ample room.
    pub nonces_per_coordinator: usize,
    /// Live nonces per wallet over all coordinators. Each roster member,
    /// as a coordinator, is always admitted up to its reserved share,
    /// `min(nonces_per_coordinator, nonces_per_wallet / members)`, so
    /// coordinators that fill the wallet within their own quotas cannot
    /// lock another out; a round 1 that takes a coordinator beyond its
    /// share fails with `capacity_exhausted` when it would exceed this cap
    /// (it never evicts another coordinator's nonces). Live nonces stay
    /// below twice this value; setting it to at least `members ×
    /// nonces_per_coordinator` reserves every member its full quota.
    pub nonces_per_wallet: usize,
    /// How long an unused nonce lives. A ROAST session completes in seconds;
    /// five minutes tolerates slow signers while bounding how long a
    /// coordinator can keep nonces parked.
    pub nonce_ttl: Duration,
    /// The replay window: how long a consumed, evicted or expired commitment
    /// is still remembered in memory (to answer `session_conflict` or
    /// `attempt_expired`, or name the eviction, instead of a bare
    /// `nonce_unknown`), how long pending shares wait for a retry, and how
    /// long after the nonce TTL a marker is kept before it may be purged. An
    /// hour covers coordinator retries across a signer restart.
    pub replay_window: Duration,
    /// Most attempts per wallet whose shares are computed but whose marker
    /// is not durable yet (its commit failed, so they wait in memory for a
    /// byte-identical retry until `replay_window` passes). Without a cap a
    /// coordinator could grow memory while commits fail by running round 1
    /// and round 2 over and over. At the cap a fresh round 2 drops the
    /// requesting coordinator's own oldest pending attempt (never
    /// another's); a coordinator holding none gets `capacity_exhausted`
    /// before any nonce is spent. An entry holds at most `max_inputs`
    /// shares of 32 bytes (8 KiB at the default), so 64 bound a wallet to
    /// about 512 KiB, while a ROAST coordinator needs one pending attempt
    /// per open session: 64 leaves room for every member of a large roster
    /// to retry a few. Must be at least 1 (validated).
    #[serde(default = "default_pending_per_wallet")]
    pub pending_per_wallet: usize,
    /// How long a DKG session may hold a wallet in memory from its part 1.
    /// While it runs, a start of another session is refused (`dkg_busy`),
    /// so a second coordinator cannot silently reset it; once it expires
    /// its secret package and HPKE key are dropped (at the next request or
    /// prune) and a new session may start. A DKG over a LAN takes seconds,
    /// at 100 members well under a minute; ten minutes leaves room for slow
    /// members and retries while bounding how long a coordinator that
    /// vanished keeps the wallet busy. Must not be zero (validated).
    #[serde(default = "default_dkg_session_ttl")]
    pub dkg_session_ttl: Duration,
    /// Whether a DKG round-1 message must carry its kind-bound signature
    /// (docs/blame.md, "Round-1 faults"). Off by default, so that members
    /// of earlier versions, which send none, take part; once every member
    /// is upgraded, on makes every round-1 fault provable: a member then
    /// refuses a message without one (accusing nobody: the relay may have
    /// stripped it), and a relay on this member names a member that
    /// answers without one.
    #[serde(default)]
    pub require_round1_kind_signature: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_inputs: 256,
            nonces_per_coordinator: 1024,
            nonces_per_wallet: 8192,
            nonce_ttl: Duration::from_secs(300),
            replay_window: Duration::from_secs(3600),
            pending_per_wallet: default_pending_per_wallet(),
            dkg_session_ttl: default_dkg_session_ttl(),
            require_round1_kind_signature: false,
        }
    }
}

/// The default of [`Limits::pending_per_wallet`] (also for serialized
/// limits written before the field existed).
fn default_pending_per_wallet() -> usize {
    64
}

/// The default of [`Limits::dkg_session_ttl`] (also for serialized limits
/// written before the field existed).
fn default_dkg_session_ttl() -> Duration {
    Duration::from_secs(600)
}

impl Limits {
    /// Limits with explicit values (see the field docs for their meaning).
    pub fn new(
        max_inputs: usize,
        nonces_per_coordinator: usize,
        nonces_per_wallet: usize,
        nonce_ttl: Duration,
    ) -> Self {
        Self {
            max_inputs,
            nonces_per_coordinator,
            nonces_per_wallet,
            nonce_ttl,
            ..Self::default()
        }
    }
}

/// The signer's configuration: its identity, network, wallets and limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SignerConfig {
    /// This signer's Ed25519 identity public key.
    pub identity: IdentityKey,
    /// The Bitcoin network every wallet of this signer is on: policies'
    /// destinations must be addresses of it, and the wallets' addresses
    /// are shown for it.
    pub network: Network,
    /// The wallets it serves.
    pub wallets: Vec<WalletConfig>,
    /// Its limits.
    pub limits: Limits,
}

impl SignerConfig {
    /// A configuration (checked by [`SignerConfig::validate`]).
    pub fn new(
        identity: IdentityKey,
        network: Network,
        wallets: Vec<WalletConfig>,
        limits: Limits,
    ) -> Self {
        Self {
            identity,
            network,
            wallets,
            limits,
        }
    }

    /// Checks every invariant of [`WalletConfig`] and [`Limits`].
    ///
    /// # Errors
    /// The first [`ConfigError`] found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        if l.max_inputs == 0
            || l.nonces_per_coordinator < l.max_inputs
            || l.nonces_per_wallet < l.nonces_per_coordinator
            || l.nonce_ttl.is_zero()
            || l.pending_per_wallet == 0
            || l.dkg_session_ttl.is_zero()
        {
            return Err(ConfigError::InconsistentLimits);
        }
        let mut ids = BTreeSet::new();
        for w in &self.wallets {
            if !ids.insert(&w.id) {
                return Err(ConfigError::DuplicateWallet {
                    wallet: w.id.clone(),
                });
            }
            w.params()?;
            let distinct: BTreeSet<_> = w.roster.iter().collect();
            if distinct.len() != w.roster.len() {
                return Err(ConfigError::DuplicateRosterKey {
                    wallet: w.id.clone(),
                });
            }
            if w.seat_of(&self.identity).is_none() {
                return Err(ConfigError::NotAMember {
                    wallet: w.id.clone(),
                });
            }
            w.validated_policy(self.network)?;
            let mut removed = BTreeSet::new();
            for seat in &w.remove {
                if w.member(*seat).is_none() || !removed.insert(seat) {
                    return Err(ConfigError::UnknownRemovedSeat {
                        wallet: w.id.clone(),
                        seat: *seat,
                    });
                }
            }
            if removed.len() >= usize::from(w.threshold) {
                return Err(ConfigError::RemovesThreshold {
                    wallet: w.id.clone(),
                    removed: removed.len(),
                    threshold: w.threshold,
                });
            }
        }
        for w in &self.wallets {
            if let Some(successor) = &w.successor
                && (successor == &w.id || !ids.contains(successor))
            {
                return Err(ConfigError::BadSuccessor {
                    wallet: w.id.clone(),
                    successor: successor.clone(),
                });
            }
        }
        Ok(())
    }
}

/// A configuration that cannot be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An identity key is not a valid Ed25519 public key.
    #[error("an identity key is not a valid Ed25519 public key")]
    InvalidIdentityKey,
    /// Two wallets share an id.
    #[error("wallet {wallet} is defined twice")]
    DuplicateWallet {
        /// The repeated id.
        wallet: WalletId,
    },
    /// The threshold is below 2 or above the roster size, or the roster is
    /// larger than the crypto layer supports.
    #[error("wallet {wallet}: threshold {threshold} with {members} members")]
    BadThreshold {
        /// The wallet.
        wallet: WalletId,
        /// Its threshold.
        threshold: u16,
        /// Its roster size.
        members: usize,
    },
    /// A seat in the wallet's `remove` list holds no roster key, or is
    /// listed twice (most likely a typo: it would remove nobody).
    #[error(
        "wallet {wallet}: `remove` names seat {seat}, which is not in the roster or is listed twice; fix the list"
    )]
    UnknownRemovedSeat {
        /// The wallet.
        wallet: WalletId,
        /// The seat named.
        seat: Seat,
    },
    /// The wallet's `remove` list names the threshold or more seats: their
    /// old shares together still sign for the key a refresh keeps, so the
    /// removal would protect nothing.
    #[error(
        "wallet {wallet}: `remove` names {removed} seats, at least the threshold {threshold}: their old shares together still sign for the unchanged key, so a refresh cannot remove them; remove fewer than {threshold} seats, or rekey the wallet to a new key"
    )]
    RemovesThreshold {
        /// The wallet.
        wallet: WalletId,
        /// How many seats the list names.
        removed: usize,
        /// The wallet's threshold.
        threshold: u16,
    },
    /// The roster names one key for two seats.
    #[error("wallet {wallet}: a key holds two seats")]
    DuplicateRosterKey {
        /// The wallet.
        wallet: WalletId,
    },
    /// The signer's identity holds no seat in the wallet.
    #[error("wallet {wallet}: this signer holds no seat")]
    NotAMember {
        /// The wallet.
        wallet: WalletId,
    },
    /// The identity signing key given to the signer is not the configured
    /// identity.
    #[error("the identity key does not match the configured identity")]
    IdentityMismatch,
    /// A wallet's `[wallets.policy]` table does not validate.
    #[error("wallet {wallet}: invalid policy: {source}")]
    Policy {
        /// The wallet.
        wallet: WalletId,
        /// The policy's error (which rule, which value).
        #[source]
        source: Box<thresig_tx::Error>,
    },
    /// A wallet names itself, or a wallet this signer does not serve, as
    /// its successor.
    #[error("wallet {wallet}: successor {successor} is not another configured wallet")]
    BadSuccessor {
        /// The wallet.
        wallet: WalletId,
        /// The successor it names.
        successor: WalletId,
    },
    /// The limits contradict each other (a coordinator quota below the
    /// largest request, a wallet cap below one quota, a zero TTL, no room
    /// for a pending attempt).
    #[error("inconsistent limits")]
    InconsistentLimits,
}
