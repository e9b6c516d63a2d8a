//! Evaluation of each policy rule over a validated PSBT.

use bitcoin::{Amount, TxOut};

use super::rate::rate_windows;
use super::{
    ChargeKey, ChargeLedger, CoordinatorId, Outcome, OutputScriptType, Policy, PolicyReport,
    RateCharge, Rule, UnixTime, Violation, WalletMode,
};
use crate::sighash::OutputIndex;
use crate::{TaprootWallet, WalletPsbt};

/// What one evaluation looks at, gathered once.
struct Subject<'a> {
    psbt: &'a WalletPsbt,
    wallet: &'a TaprootWallet,
    now: UnixTime,
}

impl Subject<'_> {
    fn outputs(&self) -> impl Iterator<Item = (OutputIndex, &TxOut)> {
        self.psbt
            .unsigned_tx()
            .output
            .iter()
            .enumerate()
            .map(|(i, o)| (OutputIndex(i), o))
    }

    /// Outputs that leave the wallet (everything not paying its own script).
    fn external_outputs(&self) -> impl Iterator<Item = (OutputIndex, &TxOut)> {
        self.outputs()
            .filter(|(_, o)| o.script_pubkey != *self.wallet.script_pubkey())
    }
}

fn first(violation: Option<Violation>) -> Outcome {
    violation.map_or(Outcome::Passed, Outcome::Denied)
}

fn output_script(output: OutputIndex, o: &TxOut) -> Violation {
    Violation::OutputScript {
        output,
        script_pubkey: o.script_pubkey.clone(),
    }
}

/// Who asks for the signature, for the per-coordinator limits.
enum Requester<'a> {
    /// A coordinator the engine identified: only its charges count.
    Known(&'a CoordinatorId),
    /// Not named: every charge of the wallet counts (the stricter reading).
    Unidentified,
}

/// A rate limit over the window starting at `since`, given the count there.
/// The same transaction signed again (another ROAST session) is not charged
/// twice, so it passes.
fn rate(limit: Option<u32>, charge: &RateCharge, charged: impl FnOnce() -> u32) -> Outcome {
    match (limit, charge) {
        (None, _) | (Some(_), RateCharge::AlreadyCharged { .. }) => Outcome::Passed,
        (Some(limit), RateCharge::Charge { .. }) => {
            let charged = charged();
            if charged < limit {
                Outcome::Passed
            } else {
                Outcome::Denied(Violation::Rate { charged, limit })
            }
        }
    }
}

/// A daily fee budget: the fees `charged` in the last 24 hours plus `fee`
/// stay within `cap`. The same transaction signed again is not charged
/// twice, so it passes.
fn fee_budget(
    fee: Amount,
    cap: Amount,
    charge: &RateCharge,
    charged: impl FnOnce() -> Amount,
) -> Outcome {
    if let RateCharge::AlreadyCharged { .. } = charge {
        return Outcome::Passed;
    }
    let charged = charged();
    match charged.checked_add(fee) {
        Some(total) if total <= cap => Outcome::Passed,
        _ => Outcome::Denied(Violation::FeeBudget { charged, fee, cap }),
    }
}

/// Whether the zero-value `OP_RETURN` exemption from the allowlist applies.
fn exempt_op_return(policy: &Policy, o: &TxOut) -> bool {
    policy
        .output_script_types
        .contains(&OutputScriptType::OpReturn)
        && o.value == Amount::ZERO
        && OutputScriptType::of(&o.script_pubkey) == OutputScriptType::OpReturn
}

impl Policy {
    /// Evaluates every rule for `psbt` and reports each outcome, in
    /// [`Rule::ALL`] order. Pure: `now` and `ledger` are the caller's.
    ///
    /// The signed inputs are [`WalletPsbt::wallet_inputs`]; *external*
    /// outputs are those not paying the wallet's own scriptPubKey. In
    /// [`WalletMode::Rekeying`] the destination rules (output script type,
    /// allowlist, change, value caps) do not apply and [`Rule::RekeySweep`]
    /// requires every output to pay the successor.
    /// No coordinator is named: the per-coordinator limits count every
    /// charge of the wallet ([`Policy::evaluate_for`] names one).
    #[must_use]
    pub fn evaluate(
        &self,
        psbt: &WalletPsbt,
        mode: &WalletMode,
        now: UnixTime,
        ledger: &impl ChargeLedger,
    ) -> PolicyReport {
        self.report(psbt, mode, now, ledger, Requester::Unidentified)
    }

    /// As [`Policy::evaluate`], for a request from `coordinator`: the
    /// per-coordinator limits count only the charges recorded against it.
    #[must_use]
    pub fn evaluate_for(
        &self,
        psbt: &WalletPsbt,
        mode: &WalletMode,
        now: UnixTime,
        ledger: &impl ChargeLedger,
        coordinator: &CoordinatorId,
    ) -> PolicyReport {
        self.report(psbt, mode, now, ledger, Requester::Known(coordinator))
    }

    fn report(
        &self,
        psbt: &WalletPsbt,
        mode: &WalletMode,
        now: UnixTime,
        ledger: &impl ChargeLedger,
        requester: Requester<'_>,
    ) -> PolicyReport {
        let s = Subject {
            psbt,
            wallet: psbt.wallet(),
            now,
        };
        let (minute, day) = rate_windows(now);
        let key = ChargeKey::of(psbt);
        let charge = if ledger.is_charged(&key, day) {
            RateCharge::AlreadyCharged { key }
        } else {
            RateCharge::Charge { key, at: now }
        };
        let by_requester = |since| match requester {
            Requester::Known(c) => ledger.charged_since_by(c, since),
            Requester::Unidentified => ledger.charged_since(since),
        };
        // Where the ledger does not know every fee, each charge counts with
        // the largest fee `max_fee` allows, an upper bound.
        let at_most = |charges: u32| {
            self.max_fee
                .checked_mul(u64::from(charges))
                .unwrap_or(Amount::MAX)
        };
        let fees = || {
            ledger
                .fees_charged_since(day)
                .unwrap_or_else(|| at_most(ledger.charged_since(day)))
        };
        let fees_by_requester = || match requester {
            Requester::Known(c) => ledger
                .fees_charged_since_by(c, day)
                .unwrap_or_else(|| at_most(ledger.charged_since_by(c, day))),
            Requester::Unidentified => fees(),
        };
        let outcomes = Rule::ALL
            .iter()
            .map(|&rule| {
                let outcome = match (rule, mode) {
                    (
                        Rule::OutputScriptType
                        | Rule::DestinationAllowlist
                        | Rule::Change
                        | Rule::MaxOutputValue
                        | Rule::MaxTxValue,
                        WalletMode::Rekeying { .. },
                    )
                    | (Rule::RekeySweep, WalletMode::Active)
                    | (Rule::RawDigests, _) => Outcome::NotApplicable,
                    (Rule::RekeySweep, WalletMode::Rekeying { successor }) => first(
                        s.outputs()
                            .find(|(_, o)| o.script_pubkey != *successor.script_pubkey())
                            .map(|(i, o)| output_script(i, o)),
                    ),
                    (Rule::RatePerMinute, _) => rate(self.max_per_minute, &charge, || {
                        ledger.charged_since(minute)
                    }),
                    (Rule::RatePerDay, _) => rate(Some(self.max_per_day), &charge, || {
                        ledger.charged_since(day)
                    }),
                    (Rule::CoordinatorRatePerMinute, _) => {
                        rate(self.max_per_minute_per_coordinator, &charge, || {
                            by_requester(minute)
                        })
                    }
                    (Rule::CoordinatorRatePerDay, _) => {
                        rate(Some(self.max_per_day_per_coordinator), &charge, || {
                            by_requester(day)
                        })
                    }
                    (Rule::FeePerDay, _) => {
                        fee_budget(psbt.fee(), self.max_fee_per_day, &charge, fees)
                    }
                    (Rule::CoordinatorFeePerDay, _) => fee_budget(
                        psbt.fee(),
                        self.max_fee_per_day_per_coordinator,
                        &charge,
                        fees_by_requester,
                    ),
                    (rule, _) => self.rule(rule, &s),
                };
                (rule, outcome)
            })
            .collect();
        PolicyReport {
            outcomes,
            charge,
            fee: psbt.fee(),
            coordinator: match requester {
                Requester::Known(c) => Some(c.clone()),
                Requester::Unidentified => None,
            },
        }
    }

    /// The rules that look only at the transaction and the time.
    fn rule(&self, rule: Rule, s: &Subject<'_>) -> Outcome {
        let psbt = s.psbt;
        match rule {
            Rule::SighashType => {
                first(psbt.signed_inputs().find_map(|(input, sighash_type, _)| {
                    (!self.allows_sighash_type(sighash_type)).then_some(Violation::SighashType {
                        input,
                        sighash_type,
                    })
                }))
            }
            Rule::PrevoutScript => first(psbt.signed_inputs().find_map(|(input, _, prevout)| {
                (prevout.script_pubkey != *s.wallet.script_pubkey()).then(|| {
                    Violation::PrevoutScript {
                        input,
                        script_pubkey: prevout.script_pubkey.clone(),
                    }
                })
            })),
            Rule::OutputScriptType => first(
                s.external_outputs()
                    .find(|(_, o)| {
                        !self
                            .output_script_types
                            .contains(&OutputScriptType::of(&o.script_pubkey))
                    })
                    .map(|(i, o)| output_script(i, o)),
            ),
            Rule::DestinationAllowlist => first(
                s.external_outputs()
                    .find(|(_, o)| {
                        !self.destinations.contains(&o.script_pubkey) && !exempt_op_return(self, o)
                    })
                    .map(|(i, o)| output_script(i, o)),
            ),
            Rule::Change => first(
                s.outputs()
                    .zip(&psbt.psbt().outputs)
                    .find(|((_, o), meta)| {
                        meta.tap_internal_key == Some(s.wallet.internal_key())
                            && o.script_pubkey != *s.wallet.script_pubkey()
                    })
                    .map(|((i, o), _)| output_script(i, o)),
            ),
            Rule::MaxOutputValue => first(self.max_output_value.and_then(|cap| {
                s.external_outputs()
                    .find(|(_, o)| o.value > cap)
                    .map(|(output, o)| Violation::OutputValue {
                        output,
                        value: o.value,
                        cap,
                    })
            })),
            Rule::MaxTxValue => first(self.max_tx_value.and_then(|cap| {
                let value = s
                    .external_outputs()
                    .try_fold(Amount::ZERO, |acc, (_, o)| acc.checked_add(o.value))
                    .unwrap_or(Amount::MAX);
                (value > cap).then_some(Violation::Total { value, cap })
            })),
            Rule::MaxFee => {
                let fee = psbt.fee();
                first((fee > self.max_fee).then_some(Violation::Total {
                    value: fee,
                    cap: self.max_fee,
                }))
            }
            Rule::MaxFeeRate => {
                let (fee, vsize) = (psbt.fee(), psbt.estimated_vsize());
                let cap_sat = u128::from(self.max_fee_rate_sat_per_vb) * u128::from(vsize);
                first(
                    (u128::from(fee.to_sat()) > cap_sat).then_some(Violation::FeeRate {
                        fee,
                        vsize,
                        cap_sat_per_vb: self.max_fee_rate_sat_per_vb,
                    }),
                )
            }
            Rule::TimeWindow => first(
                (!self.time_windows.is_empty()
                    && !self.time_windows.iter().any(|w| w.contains(s.now)))
                .then_some(Violation::Time { now: s.now }),
            ),
            // Mode- and ledger-dependent rules are decided in `evaluate`.
            Rule::RatePerMinute
            | Rule::RatePerDay
            | Rule::CoordinatorRatePerMinute
            | Rule::CoordinatorRatePerDay
            | Rule::FeePerDay
            | Rule::CoordinatorFeePerDay
            | Rule::RawDigests
            | Rule::RekeySweep => Outcome::NotApplicable,
        }
    }
}
