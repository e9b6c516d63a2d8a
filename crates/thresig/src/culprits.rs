//! The report `thresig sign` gives its own signer of the culprits a run
//! named and the blame proofs it wrote for them, so that the signer's
//! metrics endpoint counts them (`thresig_culprits_named_total`,
//! `thresig_blame_proofs_written_total`, docs/metrics.md): the
//! coordinator's own process serves no metrics.
//!
//! On the admin socket it is `{"culprits": {"reason": "invalid_share",
//! "named": n, "proofs": m}}`.

use serde::{Deserialize, Serialize};
use thresig_daemon::CulpritReason;

/// `{"culprits": …}`: one run's culprits of one reason.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CulpritsRequest {
    culprits: Culprits,
}

/// The culprits of one reason a run named, and the proofs written.
///
/// # Invariants
/// `proofs <= named` and `named >= 1`: a proof is written for a culprit
/// only, and a run that named none reports nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawCulprits")]
pub(crate) struct Culprits {
    reason: CulpritReason,
    named: u16,
    proofs: u16,
}

/// [`Culprits`] as it arrives, before its invariants are checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCulprits {
    reason: CulpritReason,
    named: u16,
    proofs: u16,
}

impl TryFrom<RawCulprits> for Culprits {
    type Error = String;

    fn try_from(raw: RawCulprits) -> Result<Self, Self::Error> {
        if raw.named == 0 || raw.proofs > raw.named {
            return Err(format!(
                "a culprit report names at least one culprit and at most one proof each, not {} culprits with {} proofs",
                raw.named, raw.proofs
            ));
        }
        Ok(Self {
            reason: raw.reason,
            named: raw.named,
            proofs: raw.proofs,
        })
    }
}

impl CulpritsRequest {
    /// The report of `named` culprits for `reason` with `proofs` proof
    /// files written; `None` when the run named none (or more than a
    /// roster can hold, which no run does).
    pub(crate) fn new(reason: CulpritReason, named: usize, proofs: usize) -> Option<Self> {
        let raw = RawCulprits {
            reason,
            named: u16::try_from(named).ok()?,
            proofs: u16::try_from(proofs).ok()?,
        };
        Culprits::try_from(raw)
            .ok()
            .map(|culprits| Self { culprits })
    }

    /// Counts the report in this process's metrics.
    pub(crate) fn record(&self) {
        let Culprits {
            reason,
            named,
            proofs,
        } = self.culprits;
        thresig_daemon::record_culprits(reason, u64::from(named), u64::from(proofs));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::Request;

    #[test]
    fn a_culprit_report_is_its_own_tagged_object() {
        let request: Request =
            serde_json::from_str(r#"{"culprits":{"reason":"invalid_share","named":2,"proofs":1}}"#)
                .unwrap();
        let expected = CulpritsRequest::new(CulpritReason::InvalidShare, 2, 1).unwrap();
        assert_eq!(request, Request::Culprits(expected));
    }

    #[test]
    fn a_culprit_report_that_cannot_be_is_refused() {
        for report in [
            r#"{"culprits":{"reason":"invalid_share","named":0,"proofs":0}}"#,
            r#"{"culprits":{"reason":"invalid_share","named":1,"proofs":2}}"#,
            r#"{"culprits":{"reason":"timeout","named":1,"proofs":0}}"#,
            r#"{"culprits":{"reason":"invalid_share","named":1,"proofs":0,"seat":2}}"#,
        ] {
            assert!(serde_json::from_str::<Request>(report).is_err(), "{report}");
        }
        assert_eq!(
            CulpritsRequest::new(CulpritReason::InvalidShare, 0, 0),
            None
        );
        assert_eq!(
            CulpritsRequest::new(CulpritReason::InvalidShare, 1, 2),
            None
        );
    }
}
