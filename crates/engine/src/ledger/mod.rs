//! The wallet's rate ledger in the store, charged in the marker's unit.
//!
//! The ledger holds the transactions charged against the rate limits in the
//! last day (each by its charge key: the txid with every stated prevout),
//! each with the time of its charge, its fee (for the daily fee budgets)
//! and the requesting coordinator (for the per-coordinator sub-limits). It
//! is kept as running counts per window, a ring of charge records and an
//! index of charge keys ([`ring`]), so a signature reads and writes a few
//! small records however many charges the day holds; stores written in
//! the earlier formats, one record of every charge ([`legacy`]), are read
//! as they are and laid out in the current format at their first charge.
//!
//! A release of shares for a transaction commits, in the same store unit
//! as the shares' marker, a compare-and-set of the ledger's summary record
//! from the bytes the policy was checked against to the summary with the
//! charge (and of the charge's record and index bucket from the bytes they
//! held). If another commit changed the ledger in between, the unit is
//! skipped as a whole (no marker, no charge) and the signer reads the
//! ledger again and re-checks: two requests can never both pass a limit
//! that admits one of them, and a transaction is charged once however many
//! ROAST sessions sign it. A ledger record that does not decode, or that
//! contradicts the others, is an error and never read as empty: an empty
//! ledger would lift every rate limit.
//!
//! A wallet's round 2 waits for its unit without the wallet's lock, so the
//! next one may read the ledger while an earlier unit is still in flight.
//! It reads through [`InFlight`], the ledger records those units will
//! write, so that its compare-and-sets expect the ledger as they leave it.
//! Safety does not rest on that prediction: every compare-and-set is
//! checked against the committed bytes, and a unit that relies on a
//! predicted record it does not rewrite carries a condition on it too
//! ([`StoredLedger::charge_ops`]), so the committed ledger is always a
//! chain of approvals, each made against exactly the ledger it replaced.

mod legacy;
mod ring;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::collections::BTreeMap;

use bitcoin::Amount;
use thresig_store::{PolicyKey, Store, Timestamp, WalletId, WriteOp};
use thresig_tx::{
    Approval, ChargeEntry, ChargeKey, ChargeLedger, ChargeLog, CoordinatorId as PolicyCoordinator,
    FUTURE_CHARGE_TOLERANCE_SECS, Policy, RateCharge, Rule, UnixTime, WalletMode, WalletPsbt,
    rate_windows,
};

use crate::error::{Error, InternalFault};
use crate::ids::CoordinatorId;
use crate::target::tx_error;
use ring::{Index, SUMMARY_VERSION, Slot, Slots, Summary, Tally, Window};

/// The policy record holding a wallet's ledger: the summary of the
/// current format, or the whole ledger of an earlier one.
const LEDGER_KEY: &[u8] = b"rate-ledger";

/// A record as read, with the exact bytes a compare-and-set expects.
#[derive(Debug)]
struct Read<T> {
    bytes: Option<Vec<u8>>,
    value: T,
}

/// What the ledger holds as of the time it was read.
#[derive(Debug)]
enum State {
    /// The current format, its windows moved to the time read (`moved` if
    /// that moved charges out of them), the index bucket of the transaction
    /// being checked, and the charges re-dated to the time read (dated
    /// after it, by at most a minute).
    Ring {
        summary: Summary,
        moved: bool,
        index: Read<Index>,
        redated: Vec<Slot>,
    },
    /// Every charge of the day, from a record of an earlier format or from
    /// the ring read more than a minute before its last write (the clock
    /// was set back); the next charge lays the ring out from `base` on.
    Log { log: ChargeLog, base: u64 },
}

/// A wallet's rate ledger as read from the store for one transaction, with
/// the bytes the compare-and-set expects.
#[derive(Debug)]
pub(crate) struct StoredLedger {
    summary: Option<Vec<u8>>,
    key: ChargeKey,
    state: State,
    /// The records the read took from units still in flight, as taken.
    predicted: Vec<(PolicyKey, Vec<u8>)>,
}

/// The ledger records a wallet's units will write that were handed to the
/// store and not yet answered, kept in the wallet's shard: reads under the
/// wallet's lock see them before the store, since the store applies units
/// in the order they were submitted ([`Store::submit`]).
///
/// # Invariants
/// Only a prediction: whatever it holds, a unit built on it commits only
/// if the bytes it expects are the committed ones. It is emptied when the
/// last unit in flight is answered, and as soon as a unit of the current
/// generation that changes a record is answered with anything but a
/// commit (a conflict, an error: the records it predicted never were), so
/// that later reads go to the store; that starts the next generation.
/// Units submitted on top of what it held then fail their
/// compare-and-sets and are charged again. Their answers, of an older
/// generation, clear nothing: what they predicted is already gone, and
/// the retries submitted since were built on the store's records and on
/// each other, so clearing those predictions again would fail each retry
/// in turn.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    records: BTreeMap<PolicyKey, Vec<u8>>,
    /// The units in flight, of every generation.
    units: usize,
    generation: u64,
}

/// The generation of [`InFlight`] a unit was submitted under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Generation(u64);

impl InFlight {
    /// Notes a unit handed to the store: the ledger records it writes.
    /// Returns the generation its answer is noted under.
    pub(crate) fn submitted(&mut self, ops: &[WriteOp]) -> Generation {
        self.units = self.units.saturating_add(1);
        for op in ops {
            if let WriteOp::CasPolicy { key, new, .. } = op {
                self.records.insert(key.clone(), new.clone());
            }
        }
        Generation(self.generation)
    }

    /// Whether the ledger writes `ops` would change a record: a unit
    /// whose compare-and-sets all rewrite a record to the bytes it holds
    /// (or that has none) predicts nothing that its loss would falsify.
    pub(crate) fn changes(ops: &[WriteOp]) -> bool {
        ops.iter().any(|op| {
            matches!(op, WriteOp::CasPolicy { expected, new, .. } if expected.as_ref() != Some(new))
        })
    }

    /// Notes the answer of a unit [`InFlight::submitted`] under
    /// `generation`: `stale` if the records it predicted never were (it
    /// changed a record, see [`InFlight::changes`], and was skipped,
    /// failed, or is of unknown outcome).
    pub(crate) fn answered(&mut self, generation: Generation, stale: bool) {
        self.units = self.units.saturating_sub(1);
        if stale && generation.0 == self.generation {
            self.records.clear();
            self.generation = self.generation.wrapping_add(1);
        }
        if self.units == 0 {
            self.records.clear();
        }
    }

    /// Whether no unit is in flight.
    pub(crate) fn is_empty(&self) -> bool {
        self.units == 0
    }
}

fn policy_key(name: Vec<u8>) -> Result<PolicyKey, Error> {
    PolicyKey::new(name).map_err(|_| Error::Internal(InternalFault::Serialization))
}

/// The policy's view of the time `now`.
pub(crate) fn unix_time(now: Timestamp) -> UnixTime {
    UnixTime(now.whole_secs())
}

/// Reads a wallet's ledger records, those its units in flight will write
/// first.
struct Records<'a, S> {
    store: &'a S,
    inflight: &'a InFlight,
    wallet: &'a WalletId,
    /// The records taken from `inflight`, as taken.
    predicted: RefCell<Vec<(PolicyKey, Vec<u8>)>>,
}

impl<'a, S: Store> Records<'a, S> {
    fn new(store: &'a S, inflight: &'a InFlight, wallet: &'a WalletId) -> Self {
        Self {
            store,
            inflight,
            wallet,
            predicted: RefCell::new(Vec::new()),
        }
    }

    fn get(&self, name: Vec<u8>) -> Result<Option<Vec<u8>>, Error> {
        let key = policy_key(name)?;
        if let Some(bytes) = self.inflight.records.get(&key) {
            self.predicted.borrow_mut().push((key, bytes.clone()));
            return Ok(Some(bytes.clone()));
        }
        let record = self
            .store
            .policy(self.wallet, &key)
            .map_err(|source| Error::Store {
                wallet: self.wallet.clone(),
                source,
            })?;
        Ok(record.map(|r| r.to_vec()))
    }

    fn damaged(&self) -> Error {
        Error::StoredRecordInvalid {
            wallet: self.wallet.clone(),
        }
    }

    fn index(&self, key: &ChargeKey) -> Result<Read<Index>, Error> {
        let bytes = self.get(ring::bucket_name(key))?;
        let value = match &bytes {
            None => Index::default(),
            Some(b) => Index::decode(b).ok_or_else(|| self.damaged())?,
        };
        Ok(Read { bytes, value })
    }

    /// A compare-and-set of record `name` from what it holds now to `new`.
    fn replace(&self, name: Vec<u8>, new: Vec<u8>) -> Result<WriteOp, Error> {
        Ok(WriteOp::CasPolicy {
            wallet: self.wallet.clone(),
            expected: self.get(name.clone())?,
            key: policy_key(name)?,
            new,
        })
    }
}

impl<S: Store> Slots for Records<'_, S> {
    type Error = Error;
    fn slot(&mut self, seq: u64) -> Result<Slot, Error> {
        self.get(ring::slot_name(seq))?
            .and_then(|b| Slot::decode(&b))
            .filter(|s| s.seq == seq)
            .ok_or_else(|| Records::damaged(self))
    }
    fn damaged(&self) -> Error {
        Records::damaged(self)
    }
}

impl StoredLedger {
    /// Reads the ledger of `wallet` as of `now`, for a request to sign the
    /// transaction of charge key `key`: the charges that left a window by
    /// `now` no longer count in it, and charges dated after `now` count as
    /// made at `now` ([`ChargeLog::prune`], which the earlier formats and a
    /// ring written more than a minute after `now` go through), so a
    /// ledger written while the clock ran ahead cannot fill a limit until
    /// the clock reaches its dates; the compare-and-sets still expect the
    /// bytes as stored.
    ///
    /// # Errors
    /// [`Error::Store`] if the store fails, [`Error::StoredRecordInvalid`]
    /// if a record does not decode or contradicts the others.
    pub(crate) fn read<S: Store>(
        store: &S,
        inflight: &InFlight,
        wallet: &WalletId,
        policy: &Policy,
        now: Timestamp,
        key: ChargeKey,
    ) -> Result<Self, Error> {
        let mut records = Records::new(store, inflight, wallet);
        let summary = records.get(LEDGER_KEY.to_vec())?;
        let now = unix_time(now);
        let state = match summary.as_deref() {
            None => {
                // The first charge writes the summary, slot 0 and a bucket
                // in one unit: either of those without the summary is a
                // summary lost, not a wallet never charged.
                let index = records.index(&key)?;
                if index.bytes.is_some() || records.get(ring::slot_name(0))?.is_some() {
                    return Err(records.damaged());
                }
                State::Ring {
                    summary: Summary::default(),
                    moved: false,
                    index,
                    redated: Vec::new(),
                }
            }
            Some(bytes) if bytes.first() == Some(&SUMMARY_VERSION) => {
                let mut ring = Summary::decode(bytes).ok_or_else(|| records.damaged())?;
                let behind = ring.seen.0.saturating_sub(now.0);
                if behind <= FUTURE_CHARGE_TOLERANCE_SECS {
                    let mut moved = false;
                    let redated = if behind == 0 {
                        let stored = ring.clone();
                        ring.prune(&mut records, now)?;
                        if ring != stored {
                            // Stored as read, the summary was written now.
                            ring.seen = now;
                            moved = true;
                        }
                        Vec::new()
                    } else {
                        ring.rewind(&mut records, now)?
                    };
                    State::Ring {
                        index: records.index(&key)?,
                        summary: ring,
                        moved,
                        redated,
                    }
                } else {
                    let mut log = (ring.head..ring.next)
                        .map(|seq| records.slot(seq).map(|s| s.entry))
                        .collect::<Result<ChargeLog, Error>>()?;
                    log.prune(now);
                    State::Log {
                        log,
                        base: ring.next,
                    }
                }
            }
            Some(bytes) => {
                let mut log =
                    legacy::decode(bytes, policy.max_fee()).ok_or_else(|| records.damaged())?;
                log.prune(now);
                State::Log { log, base: 0 }
            }
        };
        Ok(Self {
            summary,
            key,
            state,
            predicted: records.predicted.into_inner(),
        })
    }

    /// Checks `psbt` against `policy` with this ledger, for a request from
    /// `coordinator` (its per-coordinator sub-limits apply).
    ///
    /// # Errors
    /// [`Error::PolicyDenied`] naming the rule and the value; for a
    /// rekeying wallet a spend that is not the sweep to its successor is
    /// [`Error::RekeyInProgress`].
    pub(crate) fn approve(
        &self,
        wallet: &WalletId,
        policy: &Policy,
        mode: &WalletMode,
        coordinator: &CoordinatorId,
        psbt: &WalletPsbt,
        now: Timestamp,
    ) -> Result<Approval, Error> {
        let now = unix_time(now);
        policy
            .check_for(
                psbt,
                mode,
                now,
                &self.view(now),
                &policy_coordinator(coordinator),
            )
            .map_err(|e| match tx_error(wallet, e) {
                Error::PolicyDenied { wallet, denial } if denial.rule == Rule::RekeySweep => {
                    Error::RekeyInProgress { wallet }
                }
                other => other,
            })
    }

    /// The ledger as the policy sees it at `now` (the time it was read at).
    fn view(&self, now: UnixTime) -> View<'_> {
        match &self.state {
            State::Ring { summary, index, .. } => View::Ring(RingView::new(
                summary,
                self.key,
                index.value.charged_at(&self.key, summary),
                now,
            )),
            State::Log { log, .. } => View::Log(log),
        }
    }

    /// The compare-and-set storing the summary as read, when reading it
    /// moved charges out of a window, for a request that charges nothing
    /// (denied, or already charged): so the next read does not walk over
    /// the same charges again. At most one per charge and window, however
    /// many requests a peer sends.
    ///
    /// # Errors
    /// An internal error if the summary's key is not a valid policy key.
    pub(crate) fn prune_ops(&self, wallet: &WalletId) -> Result<Vec<WriteOp>, Error> {
        match &self.state {
            State::Ring {
                summary,
                moved: true,
                ..
            } => Ok(vec![WriteOp::CasPolicy {
                wallet: wallet.clone(),
                key: policy_key(LEDGER_KEY.to_vec())?,
                expected: self.summary.clone(),
                new: summary.encode(),
            }]),
            _ => Ok(Vec::new()),
        }
    }

    /// The compare-and-sets recording `approval`'s charge with its fee and
    /// coordinator, the summary's first: from the bytes read to the ledger
    /// as read with the charge applied. For an approval that charges nothing
    /// (already charged in the last day), only what
    /// [`StoredLedger::prune_ops`] stores: a limit a new charge could
    /// tighten does not apply to it, so the ledger is not rewritten for
    /// every ROAST session of a transaction.
    ///
    /// A record the read took from a unit in flight and that these writes
    /// do not replace gets a compare-and-set to the bytes taken: without
    /// it, a transaction found charged by a unit that then failed would
    /// commit its marker with no charge at all.
    ///
    /// # Errors
    /// [`Error::Store`] reading the records the charge replaces,
    /// [`Error::StoredRecordInvalid`] if one does not decode; an internal
    /// error for an approval of another transaction than the one read for,
    /// or a day of more charges than the ring holds (the policy caps a day
    /// below it).
    pub(crate) fn charge_ops<S: Store>(
        &self,
        store: &S,
        inflight: &InFlight,
        wallet: &WalletId,
        approval: &Approval,
    ) -> Result<Vec<WriteOp>, Error> {
        let mut ops = match *approval.charge() {
            RateCharge::Charge { key, at } => {
                let entry = ChargeEntry::new(
                    key,
                    at,
                    Some(approval.fee()),
                    approval.coordinator().cloned(),
                );
                self.record_ops(store, inflight, wallet, entry)?
            }
            _ => self.prune_ops(wallet)?,
        };
        for (key, bytes) in &self.predicted {
            let replaced = ops
                .iter()
                .any(|op| matches!(op, WriteOp::CasPolicy { key: k, .. } if k == key));
            if !replaced {
                ops.push(WriteOp::CasPolicy {
                    wallet: wallet.clone(),
                    key: key.clone(),
                    expected: Some(bytes.clone()),
                    new: bytes.clone(),
                });
            }
        }
        Ok(ops)
    }

    /// The compare-and-sets recording the charge `entry` (of this
    /// transaction, dated at the time read): [`StoredLedger::charge_ops`].
    fn record_ops<S: Store>(
        &self,
        store: &S,
        inflight: &InFlight,
        wallet: &WalletId,
        entry: ChargeEntry,
    ) -> Result<Vec<WriteOp>, Error> {
        let (key, at) = (entry.key, entry.at);
        if key != self.key {
            return Err(Error::Internal(InternalFault::Invariant));
        }
        let full = || Error::Internal(InternalFault::Invariant);
        let records = Records::new(store, inflight, wallet);
        let (summary, slots, indexes) = match &self.state {
            State::Ring {
                summary,
                index,
                redated,
                ..
            } => {
                let mut summary = summary.clone();
                let slot = summary.append(entry).ok_or_else(full)?;
                let bucket = index.value.with(&summary, std::iter::once(&slot));
                let indexes = vec![(ring::bucket_name(&key), index.bytes.clone(), bucket)];
                let mut slots = redated.clone();
                slots.push(slot);
                (summary, slots, indexes)
            }
            State::Log { log, base } => {
                let log: ChargeLog = log.iter().chain(std::iter::once(entry)).collect();
                let (summary, slots) = ring::rebuild(&log, *base, at).ok_or_else(full)?;
                let mut buckets: BTreeMap<Vec<u8>, Vec<&Slot>> = BTreeMap::new();
                for slot in &slots {
                    buckets
                        .entry(ring::bucket_name(&slot.entry.key))
                        .or_default()
                        .push(slot);
                }
                let indexes = buckets
                    .into_iter()
                    .map(|(name, new)| {
                        let bytes = records.get(name.clone())?;
                        let old = match &bytes {
                            None => Index::default(),
                            Some(b) => Index::decode(b).ok_or_else(|| records.damaged())?,
                        };
                        let bucket = old.with(&summary, new.into_iter());
                        Ok((name, bytes, bucket))
                    })
                    .collect::<Result<Vec<_>, Error>>()?;
                (summary, slots, indexes)
            }
        };
        let mut ops = vec![WriteOp::CasPolicy {
            wallet: wallet.clone(),
            key: policy_key(LEDGER_KEY.to_vec())?,
            expected: self.summary.clone(),
            new: summary.encode(),
        }];
        for slot in &slots {
            ops.push(records.replace(ring::slot_name(slot.seq), slot.encode())?);
        }
        for (name, expected, bucket) in indexes {
            ops.push(WriteOp::CasPolicy {
                wallet: wallet.clone(),
                key: policy_key(name)?,
                expected,
                new: bucket.encode(),
            });
        }
        Ok(ops)
    }
}

/// The policy's opaque name for `coordinator`: the hex of its Ed25519
/// identity key.
fn policy_coordinator(coordinator: &CoordinatorId) -> PolicyCoordinator {
    PolicyCoordinator(hex::encode(coordinator.0))
}

/// The ledger as the policy sees it.
enum View<'a> {
    Ring(RingView<'a>),
    Log(&'a ChargeLog),
}

/// The current format's running counts at one time, for one transaction.
///
/// Exact for what the policy asks: whether its transaction was charged,
/// and the counts and fees since the start of the minute and of the day
/// windows at that time. Asked for another start, it answers with the
/// count of the smallest of the two windows that holds it (more charges,
/// never fewer: stricter, never looser), and for another transaction that
/// it was not charged (so it would be charged again).
struct RingView<'a> {
    summary: &'a Summary,
    key: ChargeKey,
    charged: Option<UnixTime>,
    minute: UnixTime,
}

impl<'a> RingView<'a> {
    fn new(summary: &'a Summary, key: ChargeKey, charged: Option<UnixTime>, now: UnixTime) -> Self {
        Self {
            summary,
            key,
            charged,
            minute: rate_windows(now).0,
        }
    }

    fn window(&self, since: UnixTime) -> Window {
        if since >= self.minute {
            Window::Minute
        } else {
            Window::Day
        }
    }
}

fn fees(tally: Tally) -> Option<Amount> {
    (tally.unknown == 0).then(|| Amount::from_sat(tally.fee))
}

impl ChargeLedger for View<'_> {
    fn is_charged(&self, key: &ChargeKey, since: UnixTime) -> bool {
        match self {
            Self::Ring(v) => *key == v.key && v.charged.is_some_and(|at| at >= since),
            Self::Log(log) => log.is_charged(key, since),
        }
    }

    fn charged_since(&self, since: UnixTime) -> u32 {
        match self {
            Self::Ring(v) => v.summary.total().count(v.window(since)),
            Self::Log(log) => log.charged_since(since),
        }
    }

    fn charged_since_by(&self, coordinator: &PolicyCoordinator, since: UnixTime) -> u32 {
        match self {
            Self::Ring(v) => v.summary.tally_of(Some(coordinator)).count(v.window(since)),
            Self::Log(log) => log.charged_since_by(coordinator, since),
        }
    }

    fn fees_charged_since(&self, since: UnixTime) -> Option<Amount> {
        match self {
            Self::Ring(v) => fees(v.summary.total()),
            Self::Log(log) => log.fees_charged_since(since),
        }
    }

    fn fees_charged_since_by(
        &self,
        coordinator: &PolicyCoordinator,
        since: UnixTime,
    ) -> Option<Amount> {
        match self {
            Self::Ring(v) => fees(v.summary.tally_of(Some(coordinator))),
            Self::Log(log) => log.fees_charged_since_by(coordinator, since),
        }
    }
}
