//! Rate-limit accounting: charged once per transaction, that is per
//! transaction id together with every prevout the PSBT states.

use std::collections::BTreeMap;

use bitcoin::Amount;
use bitcoin::hashes::{Hash, HashEngine, sha256};

use super::Approval;
use super::time::{DAY_SECS, MINUTE_SECS, UnixTime};
use crate::WalletPsbt;

/// What a rate charge is keyed by: a hash of the transaction id together
/// with every prevout amount and script the PSBT states.
///
/// The txid alone is not enough: the amounts a PSBT states are the
/// coordinator's word (the signer has no view of the chain), and the fee is
/// computed from them. Keyed by txid, a decoy PSBT of the same unsigned
/// transaction stating a 1-sat fee would be charged at 1 sat, and the real
/// one, paying up to `max_fee`, would then count as already charged. Keyed
/// by what was signed, the real one is a charge of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChargeKey([u8; 32]);

impl ChargeKey {
    /// Domain separation, so a key is never mistaken for a txid or another
    /// hash of the same bytes.
    const TAG: &'static [u8] = b"thresig/charge-key/v1";

    /// The key of what `psbt` asks to sign: its txid and every stated
    /// prevout (amount and script), in input order.
    #[must_use]
    pub fn of(psbt: &WalletPsbt) -> Self {
        let mut engine = sha256::Hash::engine();
        engine.input(Self::TAG);
        engine.input(psbt.txid().as_byte_array());
        // The consensus encoding of the prevouts (count, then each amount
        // and length-prefixed script) is unambiguous.
        engine.input(&bitcoin::consensus::serialize(&psbt.prevouts().to_vec()));
        Self(sha256::Hash::from_engine(engine).to_byte_array())
    }

    /// A key from its stored bytes.
    #[must_use]
    pub const fn from_byte_array(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key's bytes, as a durable ledger stores them.
    #[must_use]
    pub const fn to_byte_array(self) -> [u8; 32] {
        self.0
    }
}

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
/// Charging is per transaction ([`ChargeKey`]), not per share: ROAST asks a
/// signer for shares of one transaction in several sessions, and charging
/// each would exhaust the limit and stall signing.
pub trait ChargeLedger {
    /// Whether `key` was charged at or after `since`. A charge older than
    /// the window no longer counts, so the same transaction is then charged
    /// again, even if the ledger still holds the old charge.
    fn is_charged(&self, key: &ChargeKey, since: UnixTime) -> bool;
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

    /// The sum of the fees of the transactions charged at or after `since`
    /// that `coordinator` requested, or `None` if the ledger does not know
    /// them all.
    ///
    /// The default counts every charge's fee, as if each came from
    /// `coordinator`: stricter, never looser.
    fn fees_charged_since_by(
        &self,
        coordinator: &CoordinatorId,
        since: UnixTime,
    ) -> Option<Amount> {
        let _ = coordinator;
        self.fees_charged_since(since)
    }
}

/// What the caller must record if it releases a share: apply it in the same
/// durable transaction as the share's marker, so a share never leaves uncharged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RateCharge {
    /// First signature for this transaction in the last day: record `key`
    /// as charged at `at`.
    Charge {
        /// The transaction charged.
        key: ChargeKey,
        /// When (the `now` the policy was evaluated with).
        at: UnixTime,
    },
    /// The transaction was already charged in the last day; record nothing.
    AlreadyCharged {
        /// The transaction.
        key: ChargeKey,
    },
}

/// An in-memory [`ChargeLedger`]: the reference implementation, and what the
/// store persists (charge key → time of charge, and where known the fee and
/// the requesting coordinator).
///
/// # Invariants
/// One entry per key, added only by a `Charge`: pruned at every charge, as
/// the signer's ledger is, a log holds at most a day of charges, so no more
/// than the policy's `max_per_day`, and each approval adds one entry at most.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChargeLog {
    charged: BTreeMap<ChargeKey, Entry>,
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
        // A charge replaces an expired entry of the same key: the policy
        // charges a key again only once its old charge left the window.
        if let RateCharge::Charge { key, at } = *charge {
            self.charged.insert(
                key,
                Entry {
                    at,
                    fee,
                    coordinator,
                },
            );
        }
    }

    /// Each charge on record, in key order: what a durable ledger stores.
    pub fn iter(&self) -> impl Iterator<Item = ChargeEntry> + '_ {
        self.charged.iter().map(|(key, e)| ChargeEntry {
            key: *key,
            at: e.at,
            fee: e.fee,
            coordinator: e.coordinator.clone(),
        })
    }

    /// Forgets charges made a day or more before `now`: they no longer count
    /// towards any limit (windows are half-open). A
    /// transaction signed again after that is charged again.
    ///
    /// A charge dated up to [`FUTURE_CHARGE_TOLERANCE_SECS`] after `now` (a
    /// concurrent request read the clock a little later) is dated `now`,
    /// so it counts and leaves the window a day from now. One dated
    /// further ahead was dated by a clock that ran ahead and has since been
    /// set right; when it was really made is unknown, and kept it would
    /// fill the limits until the clock reaches its date, so it is
    /// forgotten. That loosens nothing a clock can't: moving the clock a
    /// day ahead expires every charge anyway.
    pub fn prune(&mut self, now: UnixTime) {
        let since = window_start(now, DAY_SECS);
        let latest = UnixTime(now.0.saturating_add(FUTURE_CHARGE_TOLERANCE_SECS));
        self.charged.retain(|_, e| {
            let kept = e.at <= latest;
            e.at = e.at.min(now);
            kept && e.at >= since
        });
    }

    fn in_window(&self, since: UnixTime) -> impl Iterator<Item = &Entry> {
        self.charged.values().filter(move |e| e.at >= since)
    }

    fn in_window_by<'a>(
        &'a self,
        coordinator: &'a CoordinatorId,
        since: UnixTime,
    ) -> impl Iterator<Item = &'a Entry> {
        self.in_window(since)
            .filter(move |e| e.coordinator.as_ref().is_none_or(|c| c == coordinator))
    }
}

fn fees<'a>(mut entries: impl Iterator<Item = &'a Entry>) -> Option<Amount> {
    entries.try_fold(Amount::ZERO, |acc, e| acc.checked_add(e.fee?))
}

/// How far after `now` a charge may be dated and still count, as made at
/// `now`, when a ledger is pruned: a minute, far more than two concurrent
/// requests' clock readings differ by.
pub const FUTURE_CHARGE_TOLERANCE_SECS: u64 = 60;

/// The first second of the `secs`-long window ending at `now`: windows are
/// half-open, `(now - secs, now]`, so a charge exactly `secs` old no longer
/// counts (a limit of one per minute allows one every 60 s, not every 61 s).
pub(crate) const fn window_start(now: UnixTime, secs: u64) -> UnixTime {
    now.minus_secs(secs.saturating_sub(1))
}

/// The first seconds of the minute and of the day windows the rate rules
/// count over at `now`, in that order: a ledger that keeps running counts
/// per window moves its charges out of each at these times.
#[must_use]
pub const fn rate_windows(now: UnixTime) -> (UnixTime, UnixTime) {
    (window_start(now, MINUTE_SECS), window_start(now, DAY_SECS))
}

fn count<T>(items: impl Iterator<Item = T>) -> u32 {
    u32::try_from(items.count()).unwrap_or(u32::MAX)
}

/// One charge on record in a [`ChargeLog`], as a durable ledger stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChargeEntry {
    /// The transaction charged.
    pub key: ChargeKey,
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
    /// A charge of `key` at `at`, with its fee and requesting coordinator
    /// where known.
    #[must_use]
    pub const fn new(
        key: ChargeKey,
        at: UnixTime,
        fee: Option<Amount>,
        coordinator: Option<CoordinatorId>,
    ) -> Self {
        Self {
            key,
            at,
            fee,
            coordinator,
        }
    }
}

/// Rebuilds a log from stored charges (the first wins for a repeated key;
/// a stored ledger never repeats one).
impl FromIterator<ChargeEntry> for ChargeLog {
    fn from_iter<I: IntoIterator<Item = ChargeEntry>>(iter: I) -> Self {
        let mut log = Self::new();
        for e in iter {
            log.charged.entry(e.key).or_insert(Entry {
                at: e.at,
                fee: e.fee,
                coordinator: e.coordinator,
            });
        }
        log
    }
}

impl ChargeLedger for ChargeLog {
    fn is_charged(&self, key: &ChargeKey, since: UnixTime) -> bool {
        self.charged.get(key).is_some_and(|e| e.at >= since)
    }

    fn charged_since(&self, since: UnixTime) -> u32 {
        count(self.in_window(since))
    }

    fn charged_since_by(&self, coordinator: &CoordinatorId, since: UnixTime) -> u32 {
        count(self.in_window_by(coordinator, since))
    }

    fn fees_charged_since(&self, since: UnixTime) -> Option<Amount> {
        fees(self.in_window(since))
    }

    fn fees_charged_since_by(
        &self,
        coordinator: &CoordinatorId,
        since: UnixTime,
    ) -> Option<Amount> {
        fees(self.in_window_by(coordinator, since))
    }
}
