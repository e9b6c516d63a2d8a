//! The health gates of a staged policy rollout: counters of round-2
//! outcomes per (wallet group, policy version), and the pure function that
//! judges the canary group against the wallets still on the previous
//! version. No clock and no store: the same counters and thresholds always
//! give the same verdict, so the gate is tested on numbers alone.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Which side of a rollout a wallet is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    /// Already on the staged version.
    Canary,
    /// Still on the previous version.
    Baseline,
}

/// Round-2 outcomes of one group since the rollout's last step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Counts {
    /// Round-2 requests answered.
    pub requests: u64,
    /// Those that released shares.
    pub released: u64,
    /// Those the policy refused (`policy_denied`).
    pub denied: u64,
    /// Those refused for any other reason.
    pub errors: u64,
}

impl Counts {
    /// Counts one outcome.
    pub fn record(&mut self, outcome: Outcome) {
        self.requests = self.requests.saturating_add(1);
        let counter = match outcome {
            Outcome::Released => &mut self.released,
            Outcome::Denied => &mut self.denied,
            Outcome::Error => &mut self.errors,
        };
        *counter = counter.saturating_add(1);
    }

    /// The sum of two counts (the counts of one group's versions).
    #[must_use]
    pub fn plus(self, other: &Self) -> Self {
        Self {
            requests: self.requests.saturating_add(other.requests),
            released: self.released.saturating_add(other.released),
            denied: self.denied.saturating_add(other.denied),
            errors: self.errors.saturating_add(other.errors),
        }
    }

    /// `part` of the requests in basis points (0 to 10 000); `None`
    /// without requests.
    fn rate(&self, part: u64) -> Option<u64> {
        let part = u128::from(part.min(self.requests));
        let bp = part
            .checked_mul(10_000)?
            .checked_div(u128::from(self.requests))?;
        u64::try_from(bp).ok()
    }
}

/// How one round 2 of a rollout wallet ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Shares left.
    Released,
    /// The policy refused.
    Denied,
    /// Any other refusal.
    Error,
}

/// The counters of the current step, by (group, policy version).
pub type Counters = BTreeMap<(Group, u32), Counts>;

/// When a canary fails its gate. Stored with the rollout, so the gate that
/// judges a step is the one the operator staged it with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Gates {
    /// Canary round-2 requests needed before the gate judges at all: one
    /// refusal among few requests is noise, not evidence.
    pub min_requests: u64,
    /// The most the canary's denial rate may exceed the baseline's, in
    /// percentage points.
    pub max_denial_increase_pct: u8,
    /// The most the canary's error rate may exceed the baseline's, in
    /// percentage points.
    pub max_error_increase_pct: u8,
    /// The most the canary's success rate may fall below the baseline's,
    /// in percentage points.
    pub max_success_drop_pct: u8,
}

impl Default for Gates {
    /// Five requests, five points each: a custody wallet's payments are
    /// rarely refused, so a canary refusing one in twenty more than the
    /// rest is a policy that blocks real traffic.
    fn default() -> Self {
        Self {
            min_requests: 5,
            max_denial_increase_pct: 5,
            max_error_increase_pct: 5,
            max_success_drop_pct: 5,
        }
    }
}

/// The measure a gate failed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// Policy denials rose.
    Denials,
    /// Other errors rose.
    Errors,
    /// Released shares fell.
    Success,
}

impl std::fmt::Display for Measure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Denials => "denial rate",
            Self::Errors => "error rate",
            Self::Success => "success rate",
        })
    }
}

/// What the gate found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Too few canary requests to judge.
    Pending {
        /// Canary requests so far.
        seen: u64,
        /// Needed ([`Gates::min_requests`]).
        needed: u64,
    },
    /// Within every limit.
    Pass,
    /// A limit was crossed.
    Fail(Failure),
}

/// A crossed limit: the measure, the canary's and the baseline's rates
/// and the limit, in basis points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// What was measured.
    pub measure: Measure,
    /// The canary's rate.
    pub canary_bp: u64,
    /// The baseline's rate (without baseline traffic: no denials, no
    /// errors, every request released).
    pub baseline_bp: u64,
    /// The limit the canary crossed.
    pub limit_bp: u64,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = |bp: u64| format!("{}.{:02}%", bp / 100, bp % 100);
        write!(
            f,
            "the canary's {} is {} against {} on the previous version (limit {})",
            self.measure,
            pct(self.canary_bp),
            pct(self.baseline_bp),
            pct(self.limit_bp)
        )
    }
}

/// Judges the canary group's counts against the baseline's. Without
/// baseline traffic the canary is held to a perfect record (no denials,
/// no errors), so a policy that refuses what the old one signed fails even
/// when every wallet is a canary.
#[must_use]
pub fn evaluate(canary: &Counts, baseline: &Counts, gates: &Gates) -> Verdict {
    if canary.requests < gates.min_requests.max(1) {
        return Verdict::Pending {
            seen: canary.requests,
            needed: gates.min_requests.max(1),
        };
    }
    let reference = |part: u64, perfect: u64| baseline.rate(part).unwrap_or(perfect);
    let points = |pct: u8| u64::from(pct) * 100;
    let rising = [
        (
            Measure::Denials,
            canary.denied,
            reference(baseline.denied, 0),
            gates.max_denial_increase_pct,
        ),
        (
            Measure::Errors,
            canary.errors,
            reference(baseline.errors, 0),
            gates.max_error_increase_pct,
        ),
    ];
    for (measure, part, baseline_bp, pct) in rising {
        let canary_bp = canary.rate(part).unwrap_or(0);
        let limit_bp = baseline_bp.saturating_add(points(pct)).min(10_000);
        if canary_bp > limit_bp {
            return Verdict::Fail(Failure {
                measure,
                canary_bp,
                baseline_bp,
                limit_bp,
            });
        }
    }
    let canary_bp = canary.rate(canary.released).unwrap_or(0);
    let baseline_bp = reference(baseline.released, 10_000);
    let limit_bp = baseline_bp.saturating_sub(points(gates.max_success_drop_pct));
    if canary_bp < limit_bp {
        return Verdict::Fail(Failure {
            measure: Measure::Success,
            canary_bp,
            baseline_bp,
            limit_bp,
        });
    }
    Verdict::Pass
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(released: u64, denied: u64, errors: u64) -> Counts {
        Counts {
            requests: released + denied + errors,
            released,
            denied,
            errors,
        }
    }

    #[test]
    fn too_few_canary_requests_are_not_judged() {
        let gates = Gates::default();
        assert_eq!(
            evaluate(&counts(0, 4, 0), &counts(100, 0, 0), &gates),
            Verdict::Pending { seen: 4, needed: 5 }
        );
        // A gate of zero still needs one request: no traffic is no verdict.
        let zero = Gates {
            min_requests: 0,
            ..gates
        };
        assert_eq!(
            evaluate(&Counts::default(), &Counts::default(), &zero),
            Verdict::Pending { seen: 0, needed: 1 }
        );
    }

    #[test]
    fn a_canary_that_denies_what_the_baseline_signs_fails_on_denials() {
        let verdict = evaluate(&counts(3, 2, 0), &counts(50, 0, 0), &Gates::default());
        assert_eq!(
            verdict,
            Verdict::Fail(Failure {
                measure: Measure::Denials,
                canary_bp: 4_000,
                baseline_bp: 0,
                limit_bp: 500,
            })
        );
    }

    #[test]
    fn a_canary_as_healthy_as_the_baseline_passes() {
        let gates = Gates::default();
        assert_eq!(
            evaluate(&counts(19, 1, 0), &counts(18, 2, 0), &gates),
            Verdict::Pass,
            "fewer denials than the baseline"
        );
        // Exactly at the limit passes; one point over fails.
        assert_eq!(
            evaluate(&counts(19, 1, 0), &counts(20, 0, 0), &gates),
            Verdict::Pass
        );
        assert!(matches!(
            evaluate(&counts(18, 2, 0), &counts(20, 0, 0), &gates),
            Verdict::Fail(Failure {
                measure: Measure::Denials,
                ..
            })
        ));
    }

    #[test]
    fn errors_and_success_are_judged_against_the_baseline() {
        let gates = Gates::default();
        assert!(matches!(
            evaluate(&counts(8, 0, 2), &counts(10, 0, 0), &gates),
            Verdict::Fail(Failure {
                measure: Measure::Errors,
                canary_bp: 2_000,
                ..
            })
        ));
        // Denials and errors each within their limit, success not.
        let loose = Gates {
            max_denial_increase_pct: 10,
            max_error_increase_pct: 10,
            ..gates
        };
        assert_eq!(
            evaluate(&counts(16, 2, 2), &counts(20, 0, 0), &loose),
            Verdict::Fail(Failure {
                measure: Measure::Success,
                canary_bp: 8_000,
                baseline_bp: 10_000,
                limit_bp: 9_500,
            })
        );
    }

    #[test]
    fn without_baseline_traffic_the_canary_is_held_to_a_perfect_record() {
        let gates = Gates::default();
        assert_eq!(
            evaluate(&counts(5, 0, 0), &Counts::default(), &gates),
            Verdict::Pass
        );
        assert!(matches!(
            evaluate(&counts(4, 1, 0), &Counts::default(), &gates),
            Verdict::Fail(Failure {
                measure: Measure::Denials,
                baseline_bp: 0,
                ..
            })
        ));
    }

    #[test]
    fn a_failure_names_the_measure_and_both_rates() {
        let failure = Failure {
            measure: Measure::Denials,
            canary_bp: 4_000,
            baseline_bp: 25,
            limit_bp: 525,
        };
        assert_eq!(
            failure.to_string(),
            "the canary's denial rate is 40.00% against 0.25% on the previous version (limit 5.25%)"
        );
    }
}
