//! Rate-limit accounting: charged once per transaction id.

use std::collections::BTreeMap;

use bitcoin::{Amount, Txid};

use super::Approval;
use super::time::{DAY_SECS, UnixTime};

/// The identity of a coordinator asking a signer for shares, as the engine
/// knows it (for example its seat in the roster or its identity key in hex).
/// Opaque to the policy: compared for equality only, to keep per-coordinator
/// rate limits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CoordinatorId(pub String);

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

    /// How many distinct transactions charged at or after `since` were
    /// requested by `coordinator`, for the per-coordinator sub-limits.
    ///
    /// The default counts every charge, as if each came from `coordinator`:
    /// a ledger that does not record coordinators makes a sub-limit act on
    /// the wallet's whole count, which is stricter, never looser.
    fn charged_since_by(&self, coordinator: &CoordinatorId, since: UnixTime) -> u32 {
        let _ = coordinator;
        self.charged_since(since)
    }

    /// The sum of the fees of the transactions charged at or after `since`,
    /// or `None` if the ledger does not know them all.
    ///
    /// The default is `None`: the policy then assumes every charged
    /// transaction paid the largest fee `max_fee_sat` allows, an upper
    /// bound, so the daily fee budget is never looser than configured.
    fn fees_charged_since(&self, since: UnixTime) -> Option<Amount> {
        let _ = since;
        None
    }
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
/// store persists (txid → time of charge, and where known the fee and the
/// requesting coordinator).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChargeLog {
    charged: BTreeMap<Txid, Entry>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    at: UnixTime,
    /// `None` when recorded from a bare [`RateCharge`].
    fee: Option<Amount>,
    /// `None` when recorded from a bare [`RateCharge`] or an approval for
    /// an unidentified requester.
    coordinator: Option<CoordinatorId>,
}

impl ChargeLog {
    /// An empty log.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a charge returned by the policy (nothing for `AlreadyCharged`)
    /// without its fee or coordinator: the per-coordinator limits then count
    /// it against every coordinator and the fee budget assumes its largest
    /// allowed fee. Prefer [`ChargeLog::record`].
    pub fn apply(&mut self, charge: &RateCharge) {
        self.insert(charge, None, None);
    }

    /// Records an approval's charge with its fee and requesting coordinator
    /// (nothing for `AlreadyCharged`).
    pub fn record(&mut self, approval: &Approval) {
        self.insert(
            approval.charge(),
            Some(approval.fee()),
            approval.coordinator().cloned(),
        );
    }

    fn insert(
        &mut self,
        charge: &RateCharge,
        fee: Option<Amount>,
        coordinator: Option<CoordinatorId>,
    ) {
        if let RateCharge::Charge { txid, at } = *charge {
            self.charged.entry(txid).or_insert(Entry {
                at,
                fee,
                coordinator,
            });
        }
    }

    /// Each charge on record, in txid order: what a durable ledger stores.
    pub fn iter(&self) -> impl Iterator<Item = ChargeEntry> + '_ {
        self.charged.iter().map(|(txid, e)| ChargeEntry {
            txid: *txid,
            at: e.at,
            fee: e.fee,
            coordinator: e.coordinator.clone(),
        })
    }

    /// Forgets charges made a day or more before `now`: they no longer count
    /// towards any limit (windows are half-open). A
    /// transaction signed again after that is charged again.
    pub fn prune(&mut self, now: UnixTime) {
        let since = window_start(now, DAY_SECS);
        self.charged.retain(|_, e| e.at >= since);
    }

    fn in_window(&self, since: UnixTime) -> impl Iterator<Item = &Entry> {
        self.charged.values().filter(move |e| e.at >= since)
    }
}

/// The first second of the `secs`-long window ending at `now`: windows are
/// half-open, `(now - secs, now]`, so a charge exactly `secs` old no longer
/// counts (a limit of one per minute allows one every 60 s, not every 61 s).
pub(crate) const fn window_start(now: UnixTime, secs: u64) -> UnixTime {
    now.minus_secs(secs.saturating_sub(1))
}

fn count<T>(items: impl Iterator<Item = T>) -> u32 {
    u32::try_from(items.count()).unwrap_or(u32::MAX)
}

/// One charge on record in a [`ChargeLog`], as a durable ledger stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChargeEntry {
    /// The transaction charged.
    pub txid: Txid,
    /// When it was charged.
    pub at: UnixTime,
    /// Its fee; `None` if unknown (the fee budget then assumes the largest
    /// fee `max_fee_sat` allows).
    pub fee: Option<Amount>,
    /// The coordinator that requested it; `None` if unknown (it then counts
    /// against every coordinator's sub-limits).
    pub coordinator: Option<CoordinatorId>,
}

impl ChargeEntry {
    /// A charge of `txid` at `at`, with its fee and requesting coordinator
    /// where known.
    #[must_use]
    pub const fn new(
        txid: Txid,
        at: UnixTime,
        fee: Option<Amount>,
        coordinator: Option<CoordinatorId>,
    ) -> Self {
        Self {
            txid,
            at,
            fee,
            coordinator,
        }
    }
}

/// Rebuilds a log from stored charges (the first wins for a repeated txid,
/// as [`ChargeLog::apply`] keeps it).
impl FromIterator<ChargeEntry> for ChargeLog {
    fn from_iter<I: IntoIterator<Item = ChargeEntry>>(iter: I) -> Self {
        let mut log = Self::new();
        for e in iter {
            log.charged.entry(e.txid).or_insert(Entry {
                at: e.at,
                fee: e.fee,
                coordinator: e.coordinator,
            });
        }
        log
    }
}

impl ChargeLedger for ChargeLog {
    fn is_charged(&self, txid: &Txid) -> bool {
        self.charged.contains_key(txid)
    }

    fn charged_since(&self, since: UnixTime) -> u32 {
        count(self.in_window(since))
    }

    fn charged_since_by(&self, coordinator: &CoordinatorId, since: UnixTime) -> u32 {
        count(
            self.in_window(since)
                .filter(|e| e.coordinator.as_ref().is_none_or(|c| c == coordinator)),
        )
    }

    fn fees_charged_since(&self, since: UnixTime) -> Option<Amount> {
        self.in_window(since)
            .try_fold(Amount::ZERO, |acc, e| acc.checked_add(e.fee?))
    }
}
