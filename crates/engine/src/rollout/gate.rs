//! The health gates of a staged policy rollout: counters of round-2
//! outcomes per (wallet group, coordinator), and the pure function that
//! judges the canary group. No clock and no store: the same counters and
//! thresholds always give the same verdict, so the gate is tested on
//! numbers alone.
//!
//! What counts (docs/policy.md, "Health gates"): only requests that passed
//! every check up to the policy, once per coordinator, wallet and target
//! (a replay, or the same transaction in another ROAST session, counts
//! once); a canary's denial only when the previous version would have
//! signed the same request (denying what the old policy denied too says
//! nothing about the new one). And no coalition smaller than a wallet's
//! threshold decides: the gate judges each coordinator's traffic on its
//! own and fails only when [`quorum`] coordinators see the canary deny, so
//! members too few to sign without the policy (any roster member may
//! coordinate) can neither roll back a tightening aimed at them nor hide
//! the denials others see.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::CoordinatorId;

/// The fewest coordinators that must each see the canary fail before the
/// gate fails: more than any one peer.
pub const QUORUM: u64 = 2;

/// How many coordinators must each see the canary fail for a rollout of
/// wallets with these `thresholds`: the largest threshold, and at least
/// [`QUORUM`]. Members that many could sign without this member's policy
/// anyway; fewer (a 2-member collusion, or two coordinators relaying users'
/// payments) cannot undo a tightening.
#[must_use]
pub fn quorum(thresholds: impl IntoIterator<Item = u16>) -> u64 {
    thresholds
        .into_iter()
        .map(u64::from)
        .max()
        .unwrap_or(0)
        .max(QUORUM)
}

/// Which side of a rollout a wallet is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    /// Already on the staged version.
    Canary,
    /// Still on the previous version.
    Baseline,
}

/// Counted round-2 outcomes of one group (or one coordinator's in it)
/// since the rollout's last step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Counts {
    /// Round-2 requests counted.
    pub requests: u64,
    /// Those that released shares.
    pub released: u64,
    /// Those the policy refused; on a canary, only those the previous
    /// version would have signed.
    pub denied: u64,
}

impl Counts {
    /// Counts one outcome.
    pub fn record(&mut self, outcome: Outcome) {
        self.requests = self.requests.saturating_add(1);
        let counter = match outcome {
            Outcome::Released => &mut self.released,
            Outcome::Denied => &mut self.denied,
        };
        *counter = counter.saturating_add(1);
    }

    /// The sum of two counts.
    #[must_use]
    pub fn plus(self, other: &Self) -> Self {
        Self {
            requests: self.requests.saturating_add(other.requests),
            released: self.released.saturating_add(other.released),
            denied: self.denied.saturating_add(other.denied),
        }
    }

    /// The denials in basis points of the requests (0 without any).
    fn denial_bp(&self) -> u64 {
        let bp = u128::from(self.denied.min(self.requests)) * 10_000;
        bp.checked_div(u128::from(self.requests))
            .and_then(|bp| u64::try_from(bp).ok())
            .unwrap_or(0)
    }
}

/// How one counted round 2 of a rollout wallet ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Shares left (not a replay).
    Released,
    /// The policy refused.
    Denied,
}

/// The counters of the current step, by (group, coordinator).
pub type Counters = BTreeMap<(Group, CoordinatorId), Counts>;

/// When a canary fails its gate. Stored with the rollout, so the gate that
/// judges a step is the one the operator staged it with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Gates {
    /// Counted canary requests one coordinator must send before its
    /// traffic is judged: one refusal among few requests is noise, not
    /// evidence.
    pub min_requests: u64,
    /// The most a coordinator's canary requests may be denied where the
    /// previous version signs them, in percent.
    pub max_denial_increase_pct: u8,
}

impl Default for Gates {
    /// Five requests, five percent: a custody wallet's payments are
    /// rarely refused, so a canary refusing one in twenty of what the old
    /// policy signed is a policy that blocks real traffic.
    fn default() -> Self {
        Self {
            min_requests: 5,
            max_denial_increase_pct: 5,
        }
    }
}

/// What the gate found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// No coordinator has sent enough canary requests to judge.
    Pending {
        /// The most counted canary requests of one coordinator.
        seen: u64,
        /// Needed ([`Gates::min_requests`]).
        needed: u64,
    },
    /// Fewer than [`QUORUM`] coordinators see the canary fail, but one
    /// does: neither a rollback nor a promotion.
    Held(Failure),
    /// Every judged coordinator's traffic is within the limit.
    Pass,
    /// [`QUORUM`] coordinators or more see the canary fail.
    Fail(Failure),
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pending { seen, needed } => write!(
                f,
                "waiting for traffic: {seen} of {needed} canary requests from one coordinator"
            ),
            Self::Held(failure) => write!(
                f,
                "held: {failure}; fewer than {QUORUM} coordinators see it"
            ),
            Self::Pass => f.write_str("passing"),
            Self::Fail(failure) => write!(f, "failing: {failure}"),
        }
    }
}

/// A crossed limit: the canary's denial rate and the limit, in basis
/// points, and how many coordinators saw it crossed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The lowest denial rate among the coordinators that crossed it.
    pub canary_bp: u64,
    /// The limit.
    pub limit_bp: u64,
    /// Coordinators whose canary traffic crossed it.
    pub coordinators: u64,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = |bp: u64| format!("{}.{:02}%", bp / 100, bp % 100);
        write!(
            f,
            "the canary's denial rate of what the previous version signs is at least {} for {} coordinator(s) (limit {})",
            pct(self.canary_bp),
            self.coordinators,
            pct(self.limit_bp)
        )
    }
}

/// Judges the canary group from each coordinator's counts: a coordinator
/// with [`Gates::min_requests`] counted requests is judged on its own, the
/// gate fails when `quorum` of them (see [`quorum`]) see the denial rate above the limit,
/// is held when one does, and passes when every judged one is within it.
#[must_use]
pub fn evaluate<'a>(
    canary: impl IntoIterator<Item = &'a Counts>,
    gates: &Gates,
    quorum: u64,
) -> Verdict {
    let needed = gates.min_requests.max(1);
    let limit_bp = u64::from(gates.max_denial_increase_pct).min(100) * 100;
    let (mut seen, mut judged) = (0, 0u64);
    let mut failing: Vec<u64> = Vec::new();
    for counts in canary {
        seen = seen.max(counts.requests);
        if counts.requests < needed {
            continue;
        }
        judged += 1;
        let bp = counts.denial_bp();
        if bp > limit_bp {
            failing.push(bp);
        }
    }
    let Some(&lowest) = failing.iter().min() else {
        return if judged == 0 {
            Verdict::Pending { seen, needed }
        } else {
            Verdict::Pass
        };
    };
    let failure = Failure {
        canary_bp: lowest,
        limit_bp,
        coordinators: failing.len() as u64,
    };
    if failure.coordinators >= quorum {
        Verdict::Fail(failure)
    } else {
        Verdict::Held(failure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(released: u64, denied: u64) -> Counts {
        Counts {
            requests: released + denied,
            released,
            denied,
        }
    }

    #[test]
    fn too_few_canary_requests_are_not_judged() {
        let gates = Gates::default();
        assert_eq!(
            evaluate(&[counts(0, 4), counts(0, 3)], &gates, QUORUM),
            Verdict::Pending { seen: 4, needed: 5 },
            "no coordinator alone sent five"
        );
        // A gate of zero still needs one request: no traffic is no verdict.
        let zero = Gates {
            min_requests: 0,
            ..gates
        };
        assert_eq!(
            evaluate(&[], &zero, QUORUM),
            Verdict::Pending { seen: 0, needed: 1 }
        );
    }

    #[test]
    fn denials_seen_by_two_coordinators_fail_the_gate() {
        let verdict = evaluate(&[counts(3, 2), counts(1, 4)], &Gates::default(), QUORUM);
        assert_eq!(
            verdict,
            Verdict::Fail(Failure {
                canary_bp: 4_000,
                limit_bp: 500,
                coordinators: 2,
            })
        );
    }

    #[test]
    fn one_coordinator_alone_neither_fails_nor_hides_a_failure() {
        let gates = Gates::default();
        let attacker = counts(0, 50);
        let honest = counts(100, 0);
        assert!(matches!(
            evaluate(&[attacker], &gates, QUORUM),
            Verdict::Held(Failure {
                coordinators: 1,
                ..
            })
        ));
        assert!(matches!(
            evaluate(&[attacker, honest], &gates, QUORUM),
            Verdict::Held(_)
        ));
        // Two honest coordinators' denials fail, whatever a third sends.
        assert!(matches!(
            evaluate(
                &[counts(10, 5), counts(10, 5), counts(1_000, 0)],
                &gates,
                QUORUM
            ),
            Verdict::Fail(_)
        ));
    }

    #[test]
    fn a_canary_within_the_limit_passes() {
        let gates = Gates::default();
        // Exactly at the limit passes; above it fails.
        assert_eq!(
            evaluate(&[counts(19, 1), counts(20, 0)], &gates, QUORUM),
            Verdict::Pass
        );
        assert!(matches!(
            evaluate(&[counts(18, 2), counts(18, 2)], &gates, QUORUM),
            Verdict::Fail(_)
        ));
    }

    #[test]
    fn a_failure_names_the_rate_the_limit_and_the_coordinators() {
        let failure = Failure {
            canary_bp: 4_000,
            limit_bp: 500,
            coordinators: 2,
        };
        assert_eq!(
            failure.to_string(),
            "the canary's denial rate of what the previous version signs is at least 40.00% for 2 coordinator(s) (limit 5.00%)"
        );
    }

    #[test]
    fn the_quorum_is_the_largest_threshold_and_at_least_two() {
        assert_eq!(quorum([]), QUORUM);
        assert_eq!(quorum([1, 2]), QUORUM);
        assert_eq!(quorum([2, 5, 3]), 5);
        let failing = [counts(0, 5), counts(0, 5)];
        assert!(matches!(
            evaluate(&failing, &Gates::default(), 3),
            Verdict::Held(_)
        ));
        assert!(matches!(
            evaluate(&failing, &Gates::default(), 2),
            Verdict::Fail(_)
        ));
    }

    #[test]
    fn a_gate_allowing_every_denial_never_fails() {
        let gates = Gates {
            max_denial_increase_pct: 100,
            ..Gates::default()
        };
        let denied = [counts(0, 9), counts(0, 9), counts(0, 9)];
        assert_eq!(evaluate(&denied, &gates, QUORUM), Verdict::Pass);
    }
}
