//! The signing policy: which transactions a wallet's signer may sign.
//!
//! A [`Policy`] is built from a [`PolicyConfig`] (the `[wallets.policy]` TOML
//! table) and evaluated by pure functions of (policy, PSBT, wallet, wallet
//! mode, current time, rate ledger). [`Policy::evaluate`] reports every rule's
//! outcome (for `psbt inspect`); [`Policy::check`] turns the first refusal
//! into [`Error::PolicyDenied`] naming the [`Rule`] and the offending value.

mod config;
mod rate;
mod rules;
mod time;

use std::collections::BTreeSet;

use bitcoin::{Amount, ScriptBuf, TapSighashType};
use serde::{Deserialize, Serialize};

pub use config::{
    DEFAULT_MAX_FEE_PER_DAY_SAT, DEFAULT_MAX_FEE_RATE_SAT_VB, DEFAULT_MAX_FEE_SAT,
    DEFAULT_MAX_PER_DAY, DEFAULT_MAX_PER_DAY_PER_COORDINATOR, MAX_PER_DAY_CEILING, PolicyConfig,
    PolicyConfigError, SighashTypeName, TimeWindowConfig,
};
pub use rate::{
    ChargeEntry, ChargeKey, ChargeLedger, ChargeLog, CoordinatorId, FUTURE_CHARGE_TOLERANCE_SECS,
    RateCharge, rate_windows,
};
pub use time::{TimeWindow, UnixTime, Weekday};

use crate::sighash::{InputIndex, OutputIndex};
use crate::{Error, TaprootWallet};

/// A policy's version, recorded with the wallet and bumped on every change
/// so that a signature can be traced to the rules it was checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PolicyVersion(pub u32);

/// The name of a policy rule: stable, used in `policy_denied` errors, logs
/// and configuration documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Rule {
    /// Each signed input's sighash type is in `sighash_types`.
    SighashType,
    /// Each signed input spends the wallet's own P2TR scriptPubKey.
    PrevoutScript,
    /// Each external output's script type is in `output_script_types`.
    OutputScriptType,
    /// Each external output pays an address on the `destinations` allowlist.
    DestinationAllowlist,
    /// Each output marked as the wallet's change pays the wallet's output key.
    Change,
    /// Each external output is at most `max_output_sat`.
    MaxOutputValue,
    /// The external outputs together are at most `max_tx_sat`.
    MaxTxValue,
    /// The fee is at most `max_fee_sat`.
    MaxFee,
    /// The fee rate is at most `max_fee_rate_sat_vb`.
    MaxFeeRate,
    /// The current UTC time is inside one of `time_windows`.
    TimeWindow,
    /// At most `max_per_minute` transactions in the last 60 seconds.
    RatePerMinute,
    /// At most `max_per_day` transactions in the last 24 hours.
    RatePerDay,
    /// At most `max_per_minute_per_coordinator` transactions requested by
    /// one coordinator in the last 60 seconds.
    CoordinatorRatePerMinute,
    /// At most `max_per_day_per_coordinator` transactions requested by one
    /// coordinator in the last 24 hours.
    CoordinatorRatePerDay,
    /// The fees of the transactions charged in the last 24 hours, with this
    /// one, are at most `max_fee_per_day_sat`.
    FeePerDay,
    /// The fees of the transactions one coordinator had charged in the last
    /// 24 hours, with this one, are at most
    /// `max_fee_per_day_per_coordinator_sat`.
    CoordinatorFeePerDay,
    /// Raw 32-byte digests are signed only if `allow_raw_digests`.
    RawDigests,
    /// A wallet being rekeyed signs only a sweep to its successor.
    RekeySweep,
}

impl Rule {
    /// Every rule, in evaluation order. A refusal reports the first
    /// terminal rule that refuses, and a retryable one only when no terminal
    /// rule refuses (see [`PolicyReport::first_denial`]).
    pub const ALL: [Self; 18] = [
        Self::SighashType,
        Self::PrevoutScript,
        Self::OutputScriptType,
        Self::DestinationAllowlist,
        Self::Change,
        Self::MaxOutputValue,
        Self::MaxTxValue,
        Self::MaxFee,
        Self::MaxFeeRate,
        Self::TimeWindow,
        Self::RatePerMinute,
        Self::RatePerDay,
        Self::CoordinatorRatePerMinute,
        Self::CoordinatorRatePerDay,
        Self::FeePerDay,
        Self::CoordinatorFeePerDay,
        Self::RawDigests,
        Self::RekeySweep,
    ];

    /// The rule's stable name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::SighashType => "sighash_type",
            Self::PrevoutScript => "prevout_script",
            Self::OutputScriptType => "output_script_type",
            Self::DestinationAllowlist => "destination_allowlist",
            Self::Change => "change",
            Self::MaxOutputValue => "max_output_value",
            Self::MaxTxValue => "max_tx_value",
            Self::MaxFee => "max_fee",
            Self::MaxFeeRate => "max_fee_rate",
            Self::TimeWindow => "time_window",
            Self::RatePerMinute => "rate_per_minute",
            Self::RatePerDay => "rate_per_day",
            Self::CoordinatorRatePerMinute => "coordinator_rate_per_minute",
            Self::CoordinatorRatePerDay => "coordinator_rate_per_day",
            Self::FeePerDay => "fee_per_day",
            Self::CoordinatorFeePerDay => "coordinator_fee_per_day",
            Self::RawDigests => "raw_digests",
            Self::RekeySweep => "rekey_sweep",
        }
    }

    /// Whether a refusal under this rule can turn into an approval later for
    /// the same request as time passes (a caller may retry). The daily fee
    /// budgets lift with time because the configuration keeps them (the
    /// wallet's and each coordinator's) at least `max_fee_sat`: a
    /// transaction that passes `max_fee` fits an empty day.
    #[must_use]
    pub const fn lifts_with_time(self) -> bool {
        matches!(
            self,
            Self::TimeWindow
                | Self::RatePerMinute
                | Self::RatePerDay
                | Self::CoordinatorRatePerMinute
                | Self::CoordinatorRatePerDay
                | Self::FeePerDay
                | Self::CoordinatorFeePerDay
        )
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The value that broke a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// A signed input declares a sighash type the policy does not allow.
    SighashType {
        /// The input.
        input: InputIndex,
        /// Its sighash type.
        sighash_type: TapSighashType,
    },
    /// A signed input spends a script that is not the wallet's.
    PrevoutScript {
        /// The input.
        input: InputIndex,
        /// The scriptPubKey it spends.
        script_pubkey: ScriptBuf,
    },
    /// An output's script is not allowed (type, allowlist, change or sweep).
    OutputScript {
        /// The output.
        output: OutputIndex,
        /// Its scriptPubKey.
        script_pubkey: ScriptBuf,
    },
    /// An output's value is above the cap.
    OutputValue {
        /// The output.
        output: OutputIndex,
        /// Its value.
        value: Amount,
        /// The cap.
        cap: Amount,
    },
    /// A total (external value or fee) is above the cap.
    Total {
        /// The total.
        value: Amount,
        /// The cap.
        cap: Amount,
    },
    /// The fee rate is above the cap.
    FeeRate {
        /// The fee.
        fee: Amount,
        /// The estimated virtual size with key-path witnesses.
        vsize: u64,
        /// The cap in sat/vB.
        cap_sat_per_vb: u64,
    },
    /// The time is outside every window.
    Time {
        /// The evaluated time.
        now: UnixTime,
    },
    /// A daily fee budget (the wallet's or the coordinator's) would be
    /// exceeded.
    FeeBudget {
        /// Fees already charged in the last 24 hours, against the wallet or
        /// the coordinator (an upper bound where the ledger does not know
        /// every fee).
        charged: Amount,
        /// This transaction's fee.
        fee: Amount,
        /// The budget.
        cap: Amount,
    },
    /// A rate limit is reached.
    Rate {
        /// Transactions already charged in the window.
        charged: u32,
        /// The limit.
        limit: u32,
    },
    /// Raw digest signing is not allowed.
    RawDigest,
}

/// A refusal: the rule and the offending value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyDenial {
    /// The rule that refused.
    pub rule: Rule,
    /// What broke it.
    pub violation: Violation,
}

/// One rule's outcome in a [`PolicyReport`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The rule allows the transaction.
    Passed,
    /// The rule refuses it.
    Denied(Violation),
    /// The rule does not apply in this mode or to this kind of request.
    NotApplicable,
}

/// The outcome of every rule for one transaction, in [`Rule::ALL`] order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyReport {
    outcomes: Vec<(Rule, Outcome)>,
    charge: RateCharge,
    fee: bitcoin::Amount,
    coordinator: Option<CoordinatorId>,
}

impl PolicyReport {
    /// Each rule with its outcome.
    #[must_use]
    pub fn outcomes(&self) -> &[(Rule, Outcome)] {
        &self.outcomes
    }

    /// The refusal to report, if any: the first terminal one in
    /// [`Rule::ALL`] order, else the first retryable one. A transaction that
    /// can never pass is thus never reported as retryable.
    #[must_use]
    pub fn first_denial(&self) -> Option<PolicyDenial> {
        let mut denials = self
            .outcomes
            .iter()
            .filter_map(|(rule, outcome)| match outcome {
                Outcome::Denied(v) => Some(PolicyDenial {
                    rule: *rule,
                    violation: v.clone(),
                }),
                Outcome::Passed | Outcome::NotApplicable => None,
            });
        let first = denials.next()?;
        if first.rule.lifts_with_time() {
            Some(denials.find(|d| !d.rule.lifts_with_time()).unwrap_or(first))
        } else {
            Some(first)
        }
    }

    /// The approval if every rule passed.
    ///
    /// # Errors
    /// [`Error::PolicyDenied`] with the first refusing rule.
    pub fn into_result(self) -> Result<Approval, Error> {
        match self.first_denial() {
            Some(denial) => Err(Error::PolicyDenied(denial)),
            None => Ok(Approval {
                charge: self.charge,
                fee: self.fee,
                coordinator: self.coordinator,
            }),
        }
    }
}

/// Proof that the policy allowed a transaction, with the rate charge the
/// caller must record durably together with the share's marker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approval {
    charge: RateCharge,
    fee: Amount,
    coordinator: Option<CoordinatorId>,
}

impl Approval {
    /// The rate charge to record.
    #[must_use]
    pub const fn charge(&self) -> &RateCharge {
        &self.charge
    }

    /// The approved transaction's fee, to record with the charge for the
    /// daily fee budget ([`ChargeLog::record`] does).
    #[must_use]
    pub const fn fee(&self) -> Amount {
        self.fee
    }

    /// The coordinator the approval was evaluated for, to record with the
    /// charge for the per-coordinator limits (`None` after
    /// [`Policy::check`], which names no coordinator).
    #[must_use]
    pub const fn coordinator(&self) -> Option<&CoordinatorId> {
        self.coordinator.as_ref()
    }
}

/// The wallet's state as far as the policy cares.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WalletMode {
    /// Normal operation: all rules apply.
    Active,
    /// Emergency rekey: only a sweep whose every output pays the successor's
    /// output key is signed (with sighash, prevout, fee, time and rate rules
    /// still applying; destination rules do not, a sweep has none).
    Rekeying {
        /// The successor wallet (named in the signer's own configuration,
        /// `active` before any sweep is signed: the engine's check).
        successor: TaprootWallet,
    },
}

/// The kind of an output's scriptPubKey, for `output_script_types`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OutputScriptType {
    /// Pay to Taproot (segwit v1).
    P2tr,
    /// Pay to witness public key hash.
    P2wpkh,
    /// Pay to witness script hash.
    P2wsh,
    /// Pay to script hash.
    P2sh,
    /// Pay to public key hash.
    P2pkh,
    /// `OP_RETURN` data carrier. When allowed, a zero-value `OP_RETURN`
    /// output is exempt from the destination allowlist (it pays no one and
    /// has no address); one carrying value is not.
    OpReturn,
    /// Every script not classified above: bare scripts (P2PK, bare
    /// multisig, arbitrary scripts), witness programs of versions 2 to 16,
    /// witness version 1 programs of another length than 32 bytes (such as
    /// pay-to-anchor) and malformed witness programs. An `other` output must
    /// still be on the destination allowlist, which holds addresses, so in
    /// practice only the ones that have an address (witness programs of
    /// versions 1 to 16 with 2 to 40 bytes) can ever be signed; bare
    /// scripts never can.
    Other,
}

impl OutputScriptType {
    /// Classifies a scriptPubKey.
    #[must_use]
    pub fn of(script: &bitcoin::Script) -> Self {
        if script.is_p2tr() {
            Self::P2tr
        } else if script.is_p2wpkh() {
            Self::P2wpkh
        } else if script.is_p2wsh() {
            Self::P2wsh
        } else if script.is_p2sh() {
            Self::P2sh
        } else if script.is_p2pkh() {
            Self::P2pkh
        } else if script.is_op_return() {
            Self::OpReturn
        } else {
            Self::Other
        }
    }
}

/// Whether raw 32-byte digests (not derived from a PSBT) may be signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RawDigests {
    /// Refused: every signature must come from a checked PSBT (default).
    Refused,
    /// Allowed: the signer cannot know what such a digest authorizes.
    Allowed,
}

/// A validated signing policy (see [`PolicyConfig`] for each rule's meaning
/// and default).
///
/// # Invariants
/// Built only by [`PolicyConfig::validate`]: `sighash_types` is not empty,
/// destinations are scriptPubKeys of the configured network, time windows
/// are well formed, `max_per_day` is at most [`MAX_PER_DAY_CEILING`], each
/// per-coordinator sub-limit is at most its wallet budget divided by the
/// threshold, and `max_fee <= max_fee_per_day_per_coordinator <=
/// max_fee_per_day`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub(crate) version: PolicyVersion,
    pub(crate) sighash_types: BTreeSet<TapSighashType>,
    pub(crate) output_script_types: BTreeSet<OutputScriptType>,
    pub(crate) destinations: BTreeSet<ScriptBuf>,
    pub(crate) max_output_value: Option<Amount>,
    pub(crate) max_tx_value: Option<Amount>,
    pub(crate) max_fee: Amount,
    pub(crate) max_fee_rate_sat_per_vb: u64,
    pub(crate) time_windows: Vec<TimeWindow>,
    pub(crate) max_per_minute: Option<u32>,
    pub(crate) max_per_day: u32,
    pub(crate) max_per_minute_per_coordinator: Option<u32>,
    pub(crate) max_per_day_per_coordinator: u32,
    pub(crate) max_fee_per_day: Amount,
    pub(crate) max_fee_per_day_per_coordinator: Amount,
    pub(crate) raw_digests: RawDigests,
}

impl Policy {
    /// The policy's version.
    #[must_use]
    pub const fn version(&self) -> PolicyVersion {
        self.version
    }

    /// The largest fee one transaction may pay (`max_fee_sat`): what a
    /// ledger assumes for a charge whose fee it does not know.
    #[must_use]
    pub const fn max_fee(&self) -> Amount {
        self.max_fee
    }

    /// Whether `sighash_type` may be signed under this policy.
    #[must_use]
    pub fn allows_sighash_type(&self, sighash_type: TapSighashType) -> bool {
        self.sighash_types.contains(&sighash_type)
    }

    /// Checks that raw 32-byte digests may be signed at all.
    ///
    /// # Errors
    /// [`Error::PolicyDenied`] under [`Rule::RawDigests`] unless
    /// `allow_raw_digests = true`.
    pub fn check_raw_digests(&self) -> Result<(), Error> {
        match self.raw_digests {
            RawDigests::Allowed => Ok(()),
            RawDigests::Refused => Err(Error::PolicyDenied(PolicyDenial {
                rule: Rule::RawDigests,
                violation: Violation::RawDigest,
            })),
        }
    }

    /// Checks a PSBT against every rule and returns the approval (with the
    /// rate charge to record) or the refusal to report
    /// ([`PolicyReport::first_denial`]).
    ///
    /// No coordinator is named, so the per-coordinator limits count every
    /// charge of the wallet (stricter than [`Policy::check_for`]).
    ///
    /// # Errors
    /// [`Error::PolicyDenied`] naming the rule and the offending value.
    pub fn check(
        &self,
        psbt: &crate::WalletPsbt,
        mode: &WalletMode,
        now: UnixTime,
        ledger: &impl ChargeLedger,
    ) -> Result<Approval, Error> {
        self.evaluate(psbt, mode, now, ledger).into_result()
    }

    /// As [`Policy::check`], for a request from `coordinator`: the
    /// per-coordinator limits count only its charges, and the approval names
    /// it so that the charge is recorded against it.
    ///
    /// # Errors
    /// [`Error::PolicyDenied`] naming the rule and the offending value.
    pub fn check_for(
        &self,
        psbt: &crate::WalletPsbt,
        mode: &WalletMode,
        now: UnixTime,
        ledger: &impl ChargeLedger,
        coordinator: &CoordinatorId,
    ) -> Result<Approval, Error> {
        self.evaluate_for(psbt, mode, now, ledger, coordinator)
            .into_result()
    }
}
