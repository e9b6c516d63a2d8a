//! The `[wallets.policy]` configuration table and its validation.

use std::collections::BTreeSet;

use bitcoin::{Amount, TapSighashType};
use serde::{Deserialize, Serialize};

use super::time::{TimeWindow, Weekday, parse_hh_mm};
use super::{OutputScriptType, Policy, PolicyVersion, RawDigests};
use crate::{Error, Network};

/// Default absolute fee cap: 0.01 BTC. Far above any normal fee for the small
/// key-path transactions a custody wallet makes, far below what a
/// fee-siphoning attack would want.
pub const DEFAULT_MAX_FEE_SAT: u64 = 1_000_000;

/// Default fee-rate cap: 500 sat/vB, above the peaks of past fee spikes and
/// well below rust-bitcoin's 25 000 sat/vB "absurd fee" guard.
pub const DEFAULT_MAX_FEE_RATE_SAT_VB: u64 = 500;

/// Default limit on distinct transactions signed per 24 hours: 100. A custody
/// wallet's normal traffic stays far below it, and it bounds what a
/// coordinator can get signed in a day, including transactions that can
/// never be mined (the signer has no view of the chain) and that only
/// consume the limit.
pub const DEFAULT_MAX_PER_DAY: u32 = 100;

/// The fewest transactions a day the default `max_per_day` leaves each
/// coordinator: 10, enough for a day's withdrawals and an emergency-rekey
/// sweep. Where [`DEFAULT_MAX_PER_DAY`] divided by the threshold t would be
/// less, the default `max_per_day` is `10 * t` instead (at most
/// [`MAX_PER_DAY_CEILING`], which still leaves 10 at the largest t).
pub const DEFAULT_MAX_PER_DAY_PER_COORDINATOR: u32 = 10;

/// The largest `max_per_day`: the rate ledger holds at most a day of
/// charges, at most `max_per_day` of them, and every charge rewrites it
/// (about 110 bytes an entry, so about 1.1 MB at the ceiling). A wallet
/// signing more than one transaction every nine seconds all day long is not
/// a custody wallet.
pub const MAX_PER_DAY_CEILING: u32 = 10_000;

/// Default daily fee budget: 0.05 BTC, the fees of all transactions charged
/// in the last 24 hours together. The per-transaction cap alone is no budget
/// (any number of transactions may each pay [`DEFAULT_MAX_FEE_SAT`]); this
/// lets five transactions pay that cap, or a hundred pay 50 000 sat each,
/// and bounds what a coordinator can burn in fees in a day.
pub const DEFAULT_MAX_FEE_PER_DAY_SAT: u64 = 5_000_000;

/// A sighash type as spelled in configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SighashTypeName {
    /// `SIGHASH_DEFAULT` (0x00): commits to everything, 64-byte signature.
    Default,
    /// `SIGHASH_ALL` (0x01).
    All,
    /// `SIGHASH_NONE` (0x02): commits to no output.
    None,
    /// `SIGHASH_SINGLE` (0x03): commits to the output at the input's index only.
    Single,
    /// `SIGHASH_ALL|ANYONECANPAY` (0x81).
    AllAnyonecanpay,
    /// `SIGHASH_NONE|ANYONECANPAY` (0x82).
    NoneAnyonecanpay,
    /// `SIGHASH_SINGLE|ANYONECANPAY` (0x83).
    SingleAnyonecanpay,
}

impl From<SighashTypeName> for TapSighashType {
    fn from(name: SighashTypeName) -> Self {
        match name {
            SighashTypeName::Default => Self::Default,
            SighashTypeName::All => Self::All,
            SighashTypeName::None => Self::None,
            SighashTypeName::Single => Self::Single,
            SighashTypeName::AllAnyonecanpay => Self::AllPlusAnyoneCanPay,
            SighashTypeName::NoneAnyonecanpay => Self::NonePlusAnyoneCanPay,
            SighashTypeName::SingleAnyonecanpay => Self::SinglePlusAnyoneCanPay,
        }
    }
}

/// One weekly UTC window: `{ days = ["mon", "tue"], start = "08:00", end = "18:00" }`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TimeWindowConfig {
    /// Days the window applies to (`mon` … `sun`); at least one.
    pub days: Vec<Weekday>,
    /// Start, `HH:MM` UTC, inclusive.
    pub start: String,
    /// End, `HH:MM` UTC (up to `24:00`), exclusive; after `start`.
    pub end: String,
}

/// The `[wallets.policy]` table, as written. Every field may be left out and
/// then takes the default given here; [`PolicyConfig::validate`] turns it
/// into a [`Policy`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct PolicyConfig {
    /// Policy version, at least 1; bump it on every change. Default `1`.
    pub version: u32,
    /// Sighash types that may be signed. Default `["default", "all"]`: the
    /// others let whoever assembles the transaction change it after signing,
    /// and only these commit to every prevout's amount and script, which the
    /// fee check relies on.
    pub sighash_types: Vec<SighashTypeName>,
    /// Script types external outputs may have. Default
    /// `["p2tr", "p2wpkh", "p2wsh", "p2sh", "p2pkh"]` (no `op_return`, no `other`).
    pub output_script_types: Vec<OutputScriptType>,
    /// Addresses (of the configured network) external outputs may pay.
    /// Default `[]`: no external destination at all, only the wallet itself.
    pub destinations: Vec<String>,
    /// Cap on each external output, in satoshis. Default: none.
    pub max_output_sat: Option<u64>,
    /// Cap on the sum of external outputs per transaction, in satoshis. Default: none.
    pub max_tx_sat: Option<u64>,
    /// Absolute fee cap, in satoshis; at most each coordinator's daily fee
    /// budget. Default: the smaller of [`DEFAULT_MAX_FEE_SAT`] and that
    /// budget, so a transaction that passes the cap always fits an empty day.
    pub max_fee_sat: Option<u64>,
    /// Fee-rate cap in sat/vB, over the vsize with key-path witnesses.
    /// Default [`DEFAULT_MAX_FEE_RATE_SAT_VB`].
    pub max_fee_rate_sat_vb: u64,
    /// UTC windows in which signing is allowed. Default `[]`: any time.
    pub time_windows: Vec<TimeWindowConfig>,
    /// Distinct transactions signed per 60 seconds. Default: no limit.
    pub max_per_minute: Option<u32>,
    /// Distinct transactions signed per 24 hours, at most
    /// [`MAX_PER_DAY_CEILING`] (it bounds the rate ledger). Default: the
    /// larger of [`DEFAULT_MAX_PER_DAY`] and
    /// [`DEFAULT_MAX_PER_DAY_PER_COORDINATOR`] times the threshold, so each
    /// coordinator's default share is at least that many a day.
    pub max_per_day: Option<u32>,
    /// Distinct transactions one coordinator may get signed per 60 seconds,
    /// so that fewer than t coordinators cannot use up the wallet's limit;
    /// at most `max_per_minute` divided by the threshold t. Default: that
    /// quotient where `max_per_minute` is set, else no sub-limit.
    pub max_per_minute_per_coordinator: Option<u32>,
    /// Distinct transactions one coordinator may get signed per 24 hours;
    /// at most `max_per_day` divided by t. Default: that quotient.
    pub max_per_day_per_coordinator: Option<u32>,
    /// Cap on the sum of the fees of the transactions signed in 24 hours,
    /// in satoshis; at least `max_fee_sat`. Default
    /// [`DEFAULT_MAX_FEE_PER_DAY_SAT`].
    pub max_fee_per_day_sat: u64,
    /// Cap on the sum of the fees of the transactions one coordinator may
    /// get signed in 24 hours, in satoshis; at most `max_fee_per_day_sat`
    /// divided by t, and at least `max_fee_sat`. Default: that quotient.
    pub max_fee_per_day_per_coordinator_sat: Option<u64>,
    /// Whether raw 32-byte digests may be signed. Default `false`.
    pub allow_raw_digests: bool,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            version: 1,
            sighash_types: vec![SighashTypeName::Default, SighashTypeName::All],
            output_script_types: vec![
                OutputScriptType::P2tr,
                OutputScriptType::P2wpkh,
                OutputScriptType::P2wsh,
                OutputScriptType::P2sh,
                OutputScriptType::P2pkh,
            ],
            destinations: Vec::new(),
            max_output_sat: None,
            max_tx_sat: None,
            max_fee_sat: None,
            max_fee_rate_sat_vb: DEFAULT_MAX_FEE_RATE_SAT_VB,
            time_windows: Vec::new(),
            max_per_minute: None,
            max_per_day: None,
            max_per_minute_per_coordinator: None,
            max_per_day_per_coordinator: None,
            max_fee_per_day_sat: DEFAULT_MAX_FEE_PER_DAY_SAT,
            max_fee_per_day_per_coordinator_sat: None,
            allow_raw_digests: false,
        }
    }
}

/// Why a policy configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyConfigError {
    /// The TOML text does not parse or has unknown or mistyped fields.
    #[error("policy is not valid TOML for [wallets.policy]: {source}")]
    Toml {
        /// The parser's error.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// `version` is 0.
    #[error("policy version must be at least 1")]
    VersionZero,
    /// `sighash_types` is empty, so nothing could ever be signed.
    #[error("sighash_types is empty")]
    NoSighashTypes,
    /// A destination is not an address of the configured network.
    #[error("destinations[{index}] is not an address of the configured network")]
    Destination {
        /// Position in `destinations`.
        index: usize,
        /// Why ([`Error::AddressParse`] or [`Error::WrongNetwork`]).
        #[source]
        source: Box<Error>,
    },
    /// `max_fee_per_day_sat` is below `max_fee_sat`: a transaction could
    /// pass the fee cap and never fit the daily budget.
    #[error("max_fee_per_day_sat {budget} is below max_fee_sat {cap}")]
    FeeBudgetBelowFeeCap {
        /// The daily budget.
        budget: u64,
        /// The per-transaction cap.
        cap: u64,
    },
    /// The wallet's threshold is 0: the per-coordinator sub-limits are the
    /// wallet's budgets divided by it.
    #[error("the wallet's threshold is 0; a wallet needs at least one signer")]
    ThresholdZero,
    /// `max_per_day` is above [`MAX_PER_DAY_CEILING`].
    #[error(
        "max_per_day {value} is above {ceiling}, the most the rate ledger is sized for; lower it"
    )]
    MaxPerDayAboveCeiling {
        /// The configured value.
        value: u32,
        /// [`MAX_PER_DAY_CEILING`].
        ceiling: u32,
    },
    /// A per-coordinator sub-limit is above its wallet budget divided by
    /// the threshold: fewer than t coordinators could use up the budget.
    #[error(
        "{field} {value} is above {budget_field} {budget} divided by the threshold {threshold}, \
         so fewer than {threshold} coordinators could use up the wallet's budget; \
         set it to at most {most}, or leave it out to get that"
    )]
    SubLimitAboveShare {
        /// The sub-limit's field.
        field: &'static str,
        /// Its configured value.
        value: u64,
        /// The wallet budget's field.
        budget_field: &'static str,
        /// The budget.
        budget: u64,
        /// The wallet's threshold.
        threshold: u16,
        /// The largest value allowed, `budget / threshold`.
        most: u64,
    },
    /// A budget is below the threshold, so each coordinator's default share
    /// of it would be 0 and nothing could ever be signed.
    #[error(
        "{budget_field} {budget} is below the threshold {threshold}, so each coordinator's \
         share of it would be 0; raise it to at least {threshold}"
    )]
    BudgetBelowThreshold {
        /// The wallet budget's field.
        budget_field: &'static str,
        /// The budget.
        budget: u64,
        /// The wallet's threshold.
        threshold: u16,
    },
    /// `max_fee_sat` is above each coordinator's daily fee budget: a
    /// transaction could pass the fee cap and never fit.
    #[error(
        "max_fee_sat {cap} is above {share}, the daily fee budget of each coordinator \
         (max_fee_per_day_per_coordinator_sat, by default max_fee_per_day_sat divided by the \
         threshold); lower max_fee_sat or raise the budget"
    )]
    FeeCapAboveShare {
        /// The per-transaction cap.
        cap: u64,
        /// Each coordinator's daily fee budget.
        share: u64,
    },
    /// An explicit count sub-limit is 0: every request would be refused as
    /// retryable, and coordinators would retry forever.
    #[error(
        "{field} is 0, so every request would be refused while coordinators retry; \
         set it to at least 1, or leave it out to get the wallet budget divided by the threshold"
    )]
    ZeroSubLimit {
        /// The sub-limit's field.
        field: &'static str,
    },
    /// A time window is malformed (bad `HH:MM`, no days, or `start >= end`).
    #[error("time_windows[{index}] is malformed")]
    TimeWindow {
        /// Position in `time_windows`.
        index: usize,
    },
}

impl PolicyConfig {
    /// Parses a `[wallets.policy]` table given as TOML text.
    ///
    /// # Errors
    /// [`PolicyConfigError::Toml`] (inside [`Error::PolicyConfig`]).
    pub fn from_toml(text: &str) -> Result<Self, Error> {
        toml::from_str(text).map_err(|e| {
            PolicyConfigError::Toml {
                source: Box::new(e),
            }
            .into()
        })
    }

    /// Validates the table into a [`Policy`] for a wallet on `network`
    /// whose signatures need `threshold` signers (from the wallet's own
    /// configuration).
    ///
    /// # Errors
    /// [`Error::PolicyConfig`] with the offending field.
    pub fn validate(&self, network: Network, threshold: u16) -> Result<Policy, Error> {
        if threshold == 0 {
            return Err(PolicyConfigError::ThresholdZero.into());
        }
        if self.version == 0 {
            return Err(PolicyConfigError::VersionZero.into());
        }
        if self.sighash_types.is_empty() {
            return Err(PolicyConfigError::NoSighashTypes.into());
        }
        let max_per_day = self
            .max_per_day
            .unwrap_or_else(|| default_max_per_day(threshold));
        if max_per_day > MAX_PER_DAY_CEILING {
            return Err(PolicyConfigError::MaxPerDayAboveCeiling {
                value: max_per_day,
                ceiling: MAX_PER_DAY_CEILING,
            }
            .into());
        }
        for (field, value) in [
            (
                "max_per_minute_per_coordinator",
                self.max_per_minute_per_coordinator,
            ),
            (
                "max_per_day_per_coordinator",
                self.max_per_day_per_coordinator,
            ),
        ] {
            if value == Some(0) {
                return Err(PolicyConfigError::ZeroSubLimit { field }.into());
            }
        }
        let max_per_minute_per_coordinator = match self.max_per_minute {
            Some(budget) => Some(sub_limit(
                ("max_per_minute", budget),
                (
                    "max_per_minute_per_coordinator",
                    self.max_per_minute_per_coordinator,
                ),
                threshold,
            )?),
            None => self.max_per_minute_per_coordinator,
        };
        let max_per_day_per_coordinator = sub_limit(
            ("max_per_day", max_per_day),
            (
                "max_per_day_per_coordinator",
                self.max_per_day_per_coordinator,
            ),
            threshold,
        )?;
        let fee_share = sub_limit(
            ("max_fee_per_day_sat", self.max_fee_per_day_sat),
            (
                "max_fee_per_day_per_coordinator_sat",
                self.max_fee_per_day_per_coordinator_sat,
            ),
            threshold,
        )?;
        let max_fee = self
            .max_fee_sat
            .unwrap_or(DEFAULT_MAX_FEE_SAT.min(fee_share));
        if self.max_fee_per_day_sat < max_fee {
            return Err(PolicyConfigError::FeeBudgetBelowFeeCap {
                budget: self.max_fee_per_day_sat,
                cap: max_fee,
            }
            .into());
        }
        if fee_share < max_fee {
            return Err(PolicyConfigError::FeeCapAboveShare {
                cap: max_fee,
                share: fee_share,
            }
            .into());
        }
        let destinations = self
            .destinations
            .iter()
            .enumerate()
            .map(|(index, a)| {
                network.address_script(a).map_err(|e| {
                    Error::from(PolicyConfigError::Destination {
                        index,
                        source: Box::new(e),
                    })
                })
            })
            .collect::<Result<_, _>>()?;
        let time_windows = self
            .time_windows
            .iter()
            .enumerate()
            .map(|(index, w)| window(w).ok_or(Error::from(PolicyConfigError::TimeWindow { index })))
            .collect::<Result<_, _>>()?;
        Ok(Policy {
            version: PolicyVersion(self.version),
            sighash_types: self.sighash_types.iter().map(|&t| t.into()).collect(),
            output_script_types: self.output_script_types.iter().copied().collect(),
            destinations,
            max_output_value: self.max_output_sat.map(Amount::from_sat),
            max_tx_value: self.max_tx_sat.map(Amount::from_sat),
            max_fee: Amount::from_sat(max_fee),
            max_fee_rate_sat_per_vb: self.max_fee_rate_sat_vb,
            time_windows,
            max_per_minute: self.max_per_minute,
            max_per_day,
            max_per_minute_per_coordinator,
            max_per_day_per_coordinator,
            max_fee_per_day: Amount::from_sat(self.max_fee_per_day_sat),
            max_fee_per_day_per_coordinator: Amount::from_sat(fee_share),
            raw_digests: if self.allow_raw_digests {
                RawDigests::Allowed
            } else {
                RawDigests::Refused
            },
        })
    }
}

/// The default `max_per_day` for a wallet of `threshold` signers: at least
/// [`DEFAULT_MAX_PER_DAY_PER_COORDINATOR`] for each coordinator's share, so
/// a large threshold does not leave a coordinator one transaction a day (or
/// none, refusing the default policy at load).
fn default_max_per_day(threshold: u16) -> u32 {
    (DEFAULT_MAX_PER_DAY_PER_COORDINATOR * u32::from(threshold))
        .clamp(DEFAULT_MAX_PER_DAY, MAX_PER_DAY_CEILING)
}

/// A per-coordinator sub-limit of the wallet budget `(field, value)`: the
/// configured `(field, value)` if it is at most the budget divided by
/// `threshold`, else a refusal; left out, that quotient. So t − 1
/// coordinators together use at most `budget - budget / t` and leave every
/// other coordinator its whole share. A non-zero budget whose quotient is 0
/// is refused: no coordinator could sign, which is never what was meant.
fn sub_limit<T>(
    (budget_field, budget): (&'static str, T),
    (field, value): (&'static str, Option<T>),
    threshold: u16,
) -> Result<T, PolicyConfigError>
where
    T: Copy + Ord + Into<u64> + From<u16> + std::ops::Div<Output = T>,
{
    let zero = T::from(0);
    // `validate` refused a threshold of 0 first.
    let most = budget / T::from(threshold.max(1));
    match value {
        Some(value) if value > most => Err(PolicyConfigError::SubLimitAboveShare {
            field,
            value: value.into(),
            budget_field,
            budget: budget.into(),
            threshold,
            most: most.into(),
        }),
        Some(value) => Ok(value),
        None if most == zero && budget != zero => Err(PolicyConfigError::BudgetBelowThreshold {
            budget_field,
            budget: budget.into(),
            threshold,
        }),
        None => Ok(most),
    }
}

fn window(config: &TimeWindowConfig) -> Option<TimeWindow> {
    let (start, end) = (parse_hh_mm(&config.start)?, parse_hh_mm(&config.end)?);
    let days: BTreeSet<Weekday> = config.days.iter().copied().collect();
    (start < end && !days.is_empty()).then_some(TimeWindow { days, start, end })
}

impl Policy {
    /// Parses and validates a `[wallets.policy]` table in one step, for a
    /// wallet of `threshold` signers.
    ///
    /// # Errors
    /// As [`PolicyConfig::from_toml`] and [`PolicyConfig::validate`].
    pub fn from_toml(text: &str, network: Network, threshold: u16) -> Result<Self, Error> {
        PolicyConfig::from_toml(text)?.validate(network, threshold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_table_is_the_default() {
        let from_text = PolicyConfig::from_toml("").unwrap();
        assert_eq!(from_text, PolicyConfig::default());
        let p = from_text.validate(Network::Regtest, 2).unwrap();
        assert!(p.allows_sighash_type(TapSighashType::Default));
        assert!(p.allows_sighash_type(TapSighashType::All));
        assert!(!p.allows_sighash_type(TapSighashType::None));
        assert!(!p.allows_sighash_type(TapSighashType::AllPlusAnyoneCanPay));
        assert!(p.destinations.is_empty());
        assert!(p.check_raw_digests().is_err());
    }

    #[test]
    fn bad_tables_give_typed_errors() {
        type IsExpected = fn(&Error) -> bool;
        let cases: &[(&str, IsExpected)] = &[
            ("unknown = 1", |e| {
                matches!(e, Error::PolicyConfig(PolicyConfigError::Toml { .. }))
            }),
            ("version = 0", |e| {
                matches!(e, Error::PolicyConfig(PolicyConfigError::VersionZero))
            }),
            ("sighash_types = []", |e| {
                matches!(e, Error::PolicyConfig(PolicyConfigError::NoSighashTypes))
            }),
            ("sighash_types = [\"bogus\"]", |e| {
                matches!(e, Error::PolicyConfig(PolicyConfigError::Toml { .. }))
            }),
            (
                "destinations = [\"bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0\"]",
                |e| {
                    matches!(
                        e,
                        Error::PolicyConfig(PolicyConfigError::Destination { index: 0, .. })
                    )
                },
            ),
            (
                "time_windows = [{ days = [\"mon\"], start = \"18:00\", end = \"08:00\" }]",
                |e| {
                    matches!(
                        e,
                        Error::PolicyConfig(PolicyConfigError::TimeWindow { index: 0 })
                    )
                },
            ),
            (
                "time_windows = [{ days = [], start = \"08:00\", end = \"18:00\" }]",
                |e| {
                    matches!(
                        e,
                        Error::PolicyConfig(PolicyConfigError::TimeWindow { index: 0 })
                    )
                },
            ),
        ];
        for (text, is_expected) in cases {
            let err = Policy::from_toml(text, Network::Regtest, 2).unwrap_err();
            assert!(is_expected(&err), "{text}: {err:?}");
        }
    }
}
