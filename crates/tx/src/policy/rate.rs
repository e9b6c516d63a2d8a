//! Rate-limit accounting: charged once per transaction id.

use std::collections::BTreeMap;

use bitcoin::Txid;

use super::time::{DAY_SECS, UnixTime};

/// The signer's record of which transactions were charged against the rate
/// limits, and when. The store implements it over its durable counters; the
/// policy only reads it.
///
/// Charging is per transaction id, not per share: ROAST asks a signer for
/// shares of one transaction in several sessions, and charging each would
/// exhaust the limit and stall signing.
pub trait ChargeLedger {
    /// Whether `txid` has already been charged (and is still on record).
    fn is_charged(&self, txid: &Txid) -> bool;
    /// How many distinct transactions were charged at or after `since`.
    fn charged_since(&self, since: UnixTime) -> u32;
}

/// What the caller must record if it releases a share: apply it in the same
/// durable transaction as the share's marker, so a share never leaves uncharged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RateCharge {
    /// First signature for this transaction: record `txid` as charged at `at`.
    Charge {
        /// The transaction charged.
        txid: Txid,
        /// When (the `now` the policy was evaluated with).
        at: UnixTime,
    },
    /// The transaction was already charged; record nothing.
    AlreadyCharged {
        /// The transaction.
        txid: Txid,
    },
}

/// An in-memory [`ChargeLedger`]: the reference implementation, and what the
/// store persists (txid → time of charge).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChargeLog {
    charged: BTreeMap<Txid, UnixTime>,
}

impl ChargeLog {
    /// An empty log.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a charge returned by the policy (nothing for `AlreadyCharged`).
    pub fn apply(&mut self, charge: &RateCharge) {
        if let RateCharge::Charge { txid, at } = *charge {
            self.charged.entry(txid).or_insert(at);
        }
    }

    /// Each charged transaction with the time it was charged, in txid order:
    /// what a durable ledger stores.
    pub fn iter(&self) -> impl Iterator<Item = (Txid, UnixTime)> + '_ {
        self.charged.iter().map(|(txid, at)| (*txid, *at))
    }

    /// Forgets charges older than a day before `now`: they no longer count
    /// towards any limit. A transaction signed again after that is charged
    /// again.
    pub fn prune(&mut self, now: UnixTime) {
        let since = now.minus_secs(DAY_SECS);
        self.charged.retain(|_, at| *at >= since);
    }
}

/// Rebuilds a log from stored `(txid, time of charge)` pairs (the first
/// time wins for a repeated txid, as [`ChargeLog::apply`] keeps it).
impl FromIterator<(Txid, UnixTime)> for ChargeLog {
    fn from_iter<I: IntoIterator<Item = (Txid, UnixTime)>>(iter: I) -> Self {
        let mut log = Self::new();
        for (txid, at) in iter {
            log.charged.entry(txid).or_insert(at);
        }
        log
    }
}

impl ChargeLedger for ChargeLog {
    fn is_charged(&self, txid: &Txid) -> bool {
        self.charged.contains_key(txid)
    }

    fn charged_since(&self, since: UnixTime) -> u32 {
        u32::try_from(self.charged.values().filter(|at| **at >= since).count()).unwrap_or(u32::MAX)
    }
}
