//! Staged policy rollout (DESIGN.md §4): a new policy version reaches a
//! member's wallets in steps, canary first, watched by health gates, and
//! goes back to the previous version by itself when a gate fails.
//!
//! - [`Phase`]: the steps, canary (1 %, at least one wallet), 10 %, 50 %,
//!   100 %, or rolled back. Which wallets a share covers is a pure
//!   function of the wallet id and the version ([`canary_bucket`]), so
//!   every member holding the same wallets picks the same ones.
//! - The rollout record (one engine metadata record, `policy-rollout`):
//!   its sequence number, the version, the phase, the gates, and for each
//!   wallet of the rollout its previous and its new policy; the policies
//!   earlier rollouts settled are kept too. Each step is a compare-and-set
//!   from the exact bytes read ([`thresig_store::WriteOp::CasMeta`]) with
//!   its audit entry in the same unit, so a step is durable and audited,
//!   or neither, and a step computed from a record another step replaced
//!   is refused ([`RolloutError::Stale`]). The policies a wallet applies
//!   thus survive restarts without the configuration file staying as it
//!   was; the file decides only for wallets the record does not name
//!   (and the signer's open stores theirs: `Signer::audit_open`).
//! - [`gate`]: the counters and the pure verdict.
//! - `steps.rs`: the signer's side: the applied policy of each wallet,
//!   counting round 2's outcomes, the operator's steps and the automatic
//!   rollback.

mod binding;
pub mod gate;
mod steps;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use thresig_store::{MetaName, Recovery, WalletId};
use thresig_tx::{Policy, PolicyConfig};

use crate::config::ConfigError;
use crate::error::ErrorCode;
pub use binding::{RecordRef, record_hash};
use gate::{Counters, Failure, Gates, Group, Verdict};
pub use steps::{MAX_COUNTED, RolloutCommand, RolloutStatus, RolloutWallet};
pub(crate) use steps::{outcome_of, target_digest};

/// The metadata record's name.
const RECORD: &[u8] = b"policy-rollout";

/// The record's format; a record of another format is refused, never
/// read as empty.
const FORMAT: u8 = 1;

fn record_name() -> Result<MetaName, RolloutError> {
    MetaName::new(RECORD.to_vec()).map_err(|_| RolloutError::Corrupt)
}

/// The step record: the hash of the rollout record, written with every
/// step, so a share release can make its commit conditional on the step
/// it was checked under without reading the whole rollout record.
const STEP: &[u8] = b"policy-rollout-step";

fn step_name() -> Result<MetaName, RolloutError> {
    MetaName::new(STEP.to_vec()).map_err(|_| RolloutError::Corrupt)
}

/// The step record's value for the rollout record `raw` (none without a
/// record).
fn step_value(raw: Option<&[u8]>) -> Option<Vec<u8>> {
    raw.map(|raw| record_hash(raw).into_bytes())
}

/// A rollout's step, named as [`Phase::as_str`] says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Phase {
    /// 1 % of the rollout's wallets, and at least one.
    Canary,
    /// 10 %.
    #[serde(rename = "10%")]
    Ten,
    /// 50 %.
    #[serde(rename = "50%")]
    Fifty,
    /// Every wallet: the rollout is complete.
    #[serde(rename = "100%")]
    Full,
    /// Every wallet back on its previous version.
    RolledBack,
}

impl Phase {
    /// The share of the rollout's wallets on the new version, in basis
    /// points.
    #[must_use]
    pub fn share_bp(self) -> u16 {
        match self {
            Self::Canary => 100,
            Self::Ten => 1_000,
            Self::Fifty => 5_000,
            Self::Full => 10_000,
            Self::RolledBack => 0,
        }
    }

    /// The step `promote` moves to, while one remains.
    #[must_use]
    pub fn next(self) -> Option<Self> {
        match self {
            Self::Canary => Some(Self::Ten),
            Self::Ten => Some(Self::Fifty),
            Self::Fifty => Some(Self::Full),
            Self::Full | Self::RolledBack => None,
        }
    }

    /// Whether the rollout is still being watched (its gates judge it).
    #[must_use]
    pub fn in_progress(self) -> bool {
        self.next().is_some()
    }

    /// Every phase, in rollout order.
    pub const ALL: [Self; 5] = [
        Self::Canary,
        Self::Ten,
        Self::Fifty,
        Self::Full,
        Self::RolledBack,
    ];

    /// The phase named `text` ([`Phase::as_str`]).
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == text)
    }

    /// The name `thresig status` and the audit log use.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Canary => "canary",
            Self::Ten => "10%",
            Self::Fifty => "50%",
            Self::Full => "100%",
            Self::RolledBack => "rolled_back",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where `wallet` falls for `version`, 0 to 9 999: it is on the new
/// version at a step whose share is above its bucket. SHA-256 of a domain
/// tag, the wallet id and the version, so each version picks its own
/// canaries and every member picks the same ones.
#[must_use]
pub fn canary_bucket(wallet: &WalletId, version: u32) -> u16 {
    let digest = Sha256::new()
        .chain_update(b"thresig/policy-canary/v1\0")
        .chain_update(wallet.as_str().as_bytes())
        .chain_update(b"\0")
        .chain_update(version.to_be_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(digest.get(..8).unwrap_or(&[0; 8]));
    let bucket = (u128::from(u64::from_be_bytes(first)) * 10_000) >> 64;
    u16::try_from(bucket).unwrap_or(u16::MAX)
}

/// The wallets of `wallets` on the new version at `phase`: those whose
/// bucket is below the phase's share, and at the canary step at least the
/// one of the lowest bucket (so a member of few wallets still has a
/// canary).
#[must_use]
pub fn on_new_version<'a>(
    wallets: impl IntoIterator<Item = &'a WalletId>,
    version: u32,
    phase: Phase,
) -> BTreeSet<WalletId> {
    let share = phase.share_bp();
    let ranked: Vec<(u16, &WalletId)> = wallets
        .into_iter()
        .map(|w| (canary_bucket(w, version), w))
        .collect();
    let mut chosen: BTreeSet<WalletId> = ranked
        .iter()
        .filter(|(bucket, _)| *bucket < share)
        .map(|(_, w)| (*w).clone())
        .collect();
    if chosen.is_empty() && share > 0 {
        chosen.extend(ranked.iter().min().map(|(_, w)| (*w).clone()));
    }
    chosen
}

/// The rollout that names a wallet, as `thresig status` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WalletRollout {
    /// The version rolled out.
    pub version: u32,
    /// The rollout's step.
    pub phase: Phase,
    /// Whether the wallet is on that version now.
    pub on_new_version: bool,
}

impl WalletRollout {
    /// The rollout of `version` at `phase`, with the wallet on the new
    /// version or not (as a transport decodes it).
    #[must_use]
    pub fn new(version: u32, phase: Phase, on_new_version: bool) -> Self {
        Self {
            version,
            phase,
            on_new_version,
        }
    }
}

/// A wallet's two policies in a rollout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Versions {
    previous: PolicyConfig,
    next: PolicyConfig,
}

/// The version of a record no rollout has staged yet: it holds only the
/// policies settled at open.
const NO_ROLLOUT: u32 = 0;

/// The stored rollout record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    format: u8,
    /// Bumped by every step.
    seq: u64,
    /// The version rolled out.
    version: u32,
    phase: Phase,
    /// When the current step was taken (ms since the Unix epoch).
    since_ms: u64,
    gates: Gates,
    /// The wallets of this rollout.
    wallets: BTreeMap<WalletId, Versions>,
    /// The policies earlier rollouts left applied, for wallets not in this
    /// one.
    settled: BTreeMap<WalletId, PolicyConfig>,
    /// Why it was rolled back (the operator, or the gate that failed).
    reason: Option<String>,
    /// Every version each wallet was ever staged or settled with, by the
    /// hash of its content ([`policy_hash`]): a version number names one
    /// policy for good.
    #[serde(default)]
    known: BTreeMap<WalletId, BTreeMap<u32, String>>,
}

/// The hex SHA-256 of a policy's content, as the record and the
/// `policy_staged` entry name it.
fn policy_hash(config: &PolicyConfig) -> String {
    // A policy always encodes; an empty hash would only fail to match.
    let bytes = serde_json::to_vec(config).unwrap_or_default();
    hex::encode(Sha256::digest(&bytes))
}

impl Record {
    fn decode(bytes: &[u8]) -> Result<Self, RolloutError> {
        let record: Self = serde_json::from_slice(bytes).map_err(|_| RolloutError::Corrupt)?;
        if record.format != FORMAT {
            return Err(RolloutError::Corrupt);
        }
        Ok(record)
    }

    fn encode(&self) -> Result<Vec<u8>, RolloutError> {
        serde_json::to_vec(self).map_err(|_| RolloutError::Corrupt)
    }

    /// The hash of [`Record::encode`]'s bytes, for the step's audit entry
    /// (the encoding is deterministic: maps are ordered).
    fn hash(&self) -> Result<String, RolloutError> {
        self.encode().map(|bytes| record_hash(&bytes))
    }

    /// The policy `wallet` applies under this record, if the record
    /// decides it, and the group it counts in while the rollout is watched.
    fn applied(
        &self,
        wallet: &WalletId,
        canaries: &BTreeSet<WalletId>,
    ) -> Option<AppliedConfig<'_>> {
        if let Some(versions) = self.wallets.get(wallet) {
            let on_new = match self.phase {
                Phase::Full => true,
                Phase::RolledBack => false,
                _ => canaries.contains(wallet),
            };
            let config = if on_new {
                &versions.next
            } else {
                &versions.previous
            };
            let group = self.phase.in_progress().then_some(if on_new {
                Group::Canary
            } else {
                Group::Baseline
            });
            let previous = (group == Some(Group::Canary)).then_some(&versions.previous);
            return Some(AppliedConfig {
                config,
                group,
                previous,
            });
        }
        self.settled.get(wallet).map(|config| AppliedConfig {
            config,
            group: None,
            previous: None,
        })
    }

    /// The record, if a rollout was ever staged in it.
    fn rollout(&self) -> Option<&Self> {
        (self.version != NO_ROLLOUT).then_some(self)
    }

    fn canaries(&self) -> BTreeSet<WalletId> {
        on_new_version(self.wallets.keys(), self.version, self.phase)
    }
}

struct AppliedConfig<'a> {
    config: &'a PolicyConfig,
    group: Option<Group>,
    /// A canary's previous policy, to tell its denials apart.
    previous: Option<&'a PolicyConfig>,
}

/// The policy a wallet applies now.
#[derive(Clone, Debug)]
pub(crate) struct Applied {
    pub(crate) policy: Arc<Policy>,
    /// The group it counts in while a rollout is watched.
    pub(crate) group: Option<Group>,
    /// On a canary, the version it replaced: a denial counts against the
    /// new version only if this one would have signed.
    pub(crate) previous: Option<Arc<Policy>>,
    /// The condition a share release commits under: the rollout is still
    /// at the step that gave this policy (I1: the marker's unit names the
    /// version actually applied).
    pub(crate) guard: thresig_store::WriteOp,
}

/// What the signer holds of the rollout record: the bytes read, the
/// policies they give each wallet, and the counters of the current step.
/// Loaded on first use (opening a signer reads nothing).
#[derive(Default)]
pub(crate) struct Cache {
    loaded: Option<Loaded>,
    /// A step's commit failed, perhaps after becoming durable: the stored
    /// bytes are read again before the cache is used, and the counters
    /// are kept if they did not change (so the gate that failed still
    /// fails, and the next round 2 or tick rolls back again).
    recheck: bool,
    /// Wallets the open's settle refused ([`RolloutError::FileChanged`]):
    /// each with the version it applied before and the file's.
    held: BTreeMap<WalletId, (u32, u32)>,
}

struct Loaded {
    raw: Option<Vec<u8>>,
    record: Option<Record>,
    applied: BTreeMap<WalletId, Applied>,
    counters: Counters,
    /// The (coordinator, wallet, target) digests counted in this window,
    /// by coordinator: each counts once.
    counted: BTreeMap<crate::ids::CoordinatorId, BTreeSet<[u8; 32]>>,
    /// The condition of every share release under these policies.
    guard: thresig_store::WriteOp,
    /// Wallets whose stored policy no longer validates: each refuses
    /// ([`RolloutError::Corrupt`]), the others sign on.
    damaged: BTreeSet<WalletId>,
    /// The coordinators that must see the canary fail ([`gate::quorum`]
    /// of the rollout's wallets' thresholds).
    quorum: u64,
}

impl Loaded {
    fn verdict(&self) -> Option<Verdict> {
        let record = self.record.as_ref()?;
        if !record.phase.in_progress() {
            return None;
        }
        let canary = self
            .counters
            .iter()
            .filter(|((group, _), _)| *group == Group::Canary)
            .map(|(_, counts)| counts);
        Some(gate::evaluate(canary, &record.gates, self.quorum))
    }
}

/// Why a rollout step or the policy lookup failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RolloutError {
    /// A step moved the wallet's policy while its round 2 was being
    /// committed: nothing was released.
    #[error(
        "wallet {wallet}: a policy rollout step changed its policy while this request was being signed; nothing was released; resend the byte-identical request"
    )]
    Moved {
        /// The wallet.
        wallet: WalletId,
    },
    /// The step was computed from another record than the one stored.
    #[error(
        "the rollout is at step {found}, not {expected}: another step (perhaps an automatic rollback) came first; check `thresig status` and run the step again if it still applies"
    )]
    Stale {
        /// The sequence the step expected.
        expected: u64,
        /// The sequence stored.
        found: u64,
    },
    /// Promote refused: the gate failed, and the rollout was rolled back.
    #[error(
        "version {version} failed its health gate at step {phase}: {failure}; every wallet is back on its previous version; fix the policy, bump its version and stage it again"
    )]
    GateFailed {
        /// The version.
        version: u32,
        /// The step it failed at.
        phase: Phase,
        /// The measure that failed.
        failure: Failure,
    },
    /// Promote refused: the gate has not passed yet (too little traffic,
    /// or held by one coordinator's denials).
    #[error(
        "version {version} at step {phase} has not passed its health gate yet ({verdict}); wait for traffic and run promote again, or promote with --force to move on without a verdict"
    )]
    GatePending {
        /// The version.
        version: u32,
        /// Its step.
        phase: Phase,
        /// What the gate says.
        verdict: Verdict,
    },
    /// No wallet's policy in the file has `version` and a different
    /// applied version.
    #[error(
        "no wallet of the file has policy version {version} where this signer applies another; fix the file: give the wallets' [wallets.policy] tables version {version} first"
    )]
    NothingToStage {
        /// The version asked for.
        version: u32,
    },
    /// A version number is staged again with other content than it had.
    #[error(
        "wallet {wallet}: policy version {version} was already staged or applied with other content; give the new policy a version never used"
    )]
    VersionReused {
        /// The wallet.
        wallet: WalletId,
        /// The version.
        version: u32,
    },
    /// A wallet's policy changed in the file without a version bump.
    #[error(
        "wallet {wallet}: its policy in the file differs from the applied one but both say version {version}; bump `version`"
    )]
    VersionNotBumped {
        /// The wallet.
        wallet: WalletId,
        /// The version both say.
        version: u32,
    },
    /// Stage refused: another rollout is still watched.
    #[error(
        "version {version} is being rolled out (step {phase}); promote it to 100% or roll it back first"
    )]
    InProgress {
        /// Its version.
        version: u32,
        /// Its step.
        phase: Phase,
    },
    /// Promote or roll back without a rollout to act on.
    #[error("no rollout to {step}: {state}; stage a version first")]
    NotInProgress {
        /// `promote` or `roll back`.
        step: &'static str,
        /// What the record says.
        state: String,
    },
    /// The file names a wallet the signer does not serve.
    #[error(
        "wallet {wallet} is not served by this signer; restart it with the file before staging"
    )]
    UnknownWallet {
        /// The wallet.
        wallet: WalletId,
    },
    /// A staged policy does not validate.
    #[error("{0}")]
    InvalidPolicy(Box<ConfigError>),
    /// The rollout record does not decode, is of an unknown format, or
    /// holds a policy that does not validate.
    #[error(
        "the policy rollout record is damaged, so no wallet signs (deleting it would silently move wallets to the file's policies); stop the signer, run `thresig keys verify` and restore the record from a backup"
    )]
    Corrupt,
    /// The record is not the one the audit log's last policy step or open
    /// names: an older copy was put back, or it was deleted.
    #[error(
        "the policy rollout record is not the one this member's audit log last recorded (an older copy was put back, or it was deleted), so no wallet signs; stop the signer, run `thresig keys verify` and restore the store from a backup"
    )]
    Replaced,
    /// A store that a signer before staged rollouts used is opened with a
    /// file whose policy version for a wallet differs from the one that
    /// signer last applied: taking the file would apply it to the wallet
    /// at once, past any canary, so the wallet does not sign.
    #[error(
        "wallet {wallet}: the file says policy version {file} but this member last applied version {applied}, and it keeps no copy of that policy; restart once with the file that says version {applied}, then stage version {file} (`thresig policy stage`)"
    )]
    FileChanged {
        /// The wallet.
        wallet: WalletId,
        /// The version it last applied.
        applied: u32,
        /// The file's version.
        file: u32,
    },
    /// The store failed.
    #[error("the policy rollout record: storage failed: {0}")]
    Store(#[source] thresig_store::Error),
}

impl RolloutError {
    /// The stable code the operator sees (docs/errors.md, "Policy
    /// rollout").
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Stale { .. } => "rollout_stale",
            Self::Moved { .. } => "storage_unavailable",
            Self::GateFailed { .. } => "rollout_gate_failed",
            Self::GatePending { .. } => "rollout_gate_pending",
            Self::NothingToStage { .. } | Self::VersionNotBumped { .. } => {
                "rollout_nothing_to_stage"
            }
            Self::InProgress { .. } => "rollout_in_progress",
            Self::VersionReused { .. } => "rollout_version_reused",
            Self::NotInProgress { .. } => "rollout_not_in_progress",
            Self::UnknownWallet { .. } => "unknown_wallet",
            Self::InvalidPolicy(_) => "config_invalid",
            Self::Corrupt => "rollout_corrupt",
            Self::Replaced => "rollout_replaced",
            Self::FileChanged { .. } => "rollout_file_changed",
            Self::Store(source) => crate::error::store_code(source).as_str(),
        }
    }

    /// Whether running the same command again can succeed.
    #[must_use]
    pub fn recovery(&self) -> Recovery {
        match self {
            Self::Store(source) => crate::error::store_code(source).recovery(),
            Self::Moved { .. } | Self::GatePending { .. } => Recovery::Retryable,
            _ => Recovery::Terminal,
        }
    }

    /// The code a coordinator sees when a wallet's policy cannot be looked
    /// up or moved under its round 2 (only [`RolloutError::Corrupt`],
    /// [`RolloutError::Replaced`], [`RolloutError::FileChanged`],
    /// [`RolloutError::Moved`] and
    /// [`RolloutError::Store`] reach round 2).
    pub(crate) fn engine_code(&self) -> ErrorCode {
        match self {
            Self::Store(source) => crate::error::store_code(source),
            Self::Corrupt | Self::Replaced => ErrorCode::StateCorrupt,
            Self::FileChanged { .. } => ErrorCode::WalletNotActive,
            Self::Moved { .. } => ErrorCode::StorageUnavailable,
            _ => ErrorCode::InvalidRequest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operator_code_is_documented_with_its_class() {
        let doc = include_str!("../../../../docs/errors.md");
        let wallet = WalletId::new("w").unwrap();
        let failure = Failure {
            canary_bp: 1,
            limit_bp: 0,
            coordinators: 2,
        };
        let all = [
            RolloutError::Stale {
                expected: 1,
                found: 2,
            },
            RolloutError::GateFailed {
                version: 2,
                phase: Phase::Canary,
                failure,
            },
            RolloutError::NothingToStage { version: 2 },
            RolloutError::VersionNotBumped {
                wallet: wallet.clone(),
                version: 2,
            },
            RolloutError::InProgress {
                version: 2,
                phase: Phase::Ten,
            },
            RolloutError::NotInProgress {
                step: "promote",
                state: String::new(),
            },
            RolloutError::VersionReused {
                wallet: wallet.clone(),
                version: 2,
            },
            RolloutError::FileChanged {
                wallet: wallet.clone(),
                applied: 1,
                file: 2,
            },
            RolloutError::UnknownWallet { wallet },
            RolloutError::InvalidPolicy(Box::new(ConfigError::IdentityMismatch)),
            RolloutError::Corrupt,
            RolloutError::Replaced,
        ];
        for e in all {
            assert_eq!(e.recovery(), Recovery::Terminal, "{e}");
            let row = format!("| `{}` | terminal |", e.code());
            assert!(doc.contains(&row), "docs/errors.md lacks {row}");
        }
    }

    #[test]
    fn a_phase_is_named_alike_in_json_and_text() {
        for phase in Phase::ALL {
            let json = serde_json::to_string(&phase).unwrap();
            assert_eq!(json, format!("\"{}\"", phase.as_str()));
            assert_eq!(Phase::parse(phase.as_str()), Some(phase));
        }
        assert_eq!(Phase::parse("25%"), None);
    }
}
